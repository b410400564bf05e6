//! Prefetch fulfilment: use what the EHR prefetched, query what it did not, in parallel.
//!
//! CDS Hooks 2.0 lets a client satisfy any subset of a service's prefetch. Per key:
//! - a value that is a resource or Bundle is used as sent;
//! - JSON `null` means "the EHR has no such data" and is not queried again;
//! - an absent key, or an `OperationOutcome` (the EHR's own fetch failed), is queried on
//!   `fhirServer` with the hook's access token — every such key at once, within the budget.

use serde_json::value::RawValue;

use super::client::{Fetched, FhirServer};
use super::error::FhirError;
use super::projection;

/// One prefetch key as a service needs it.
pub struct Want<'r> {
    pub key: &'r str,
    /// The rendered query, or why it could not be rendered (a context field is missing).
    pub query: Result<String, String>,
    /// What the client sent for this key, if anything.
    pub prefetched: Option<&'r RawValue>,
    /// Whether to query the server when the client did not supply the key.
    pub fetch_if_missing: bool,
}

/// Where a key's data came from.
#[derive(Debug)]
pub enum Supply<'r> {
    Prefetched(&'r RawValue),
    Fetched(Fetched),
    /// The client said there is none (`null`).
    NoData,
    /// Not supplied and not queried: no `fhirServer`, or the service does not need it.
    Missing(String),
    /// Queried and failed.
    Failed(FhirError),
}

/// Whether this want's data must come from the server: the client did not send it (or sent
/// an OperationOutcome) and the service needs it.
fn must_query(want: &Want<'_>) -> bool {
    want.fetch_if_missing
        && want
            .prefetched
            .is_none_or(|v| v.get() != "null" && projection::is_operation_outcome(v))
}

/// Whether any want needs the FHIR server (so the caller looks for one only then).
pub fn needs_server(wants: &[Want<'_>]) -> bool {
    wants.iter().any(must_query)
}

/// Fulfils every want: queries run concurrently on `server`, each bounded by its deadline.
/// `server` is `Err(why)` when there is none to query (no `fhirServer`, or it was refused):
/// wants that needed it are `Missing(why)`.
pub async fn fulfil<'r>(
    wants: &[Want<'r>],
    server: Result<&FhirServer<'_>, &str>,
) -> Vec<Supply<'r>> {
    let mut out: Vec<Option<Supply<'r>>> = Vec::with_capacity(wants.len());
    let mut queries = Vec::new();
    for (i, want) in wants.iter().enumerate() {
        let supply = match want.prefetched {
            Some(v) if v.get() == "null" => Some(Supply::NoData),
            Some(v) if !projection::is_operation_outcome(v) => Some(Supply::Prefetched(v)),
            _ if !must_query(want) => Some(Supply::Missing("not needed by this service".into())),
            _ => match (&want.query, server) {
                (Err(e), _) => Some(Supply::Missing(format!(
                    "its query cannot be rendered: {e}"
                ))),
                (Ok(_), Err(why)) => Some(Supply::Missing(why.to_owned())),
                (Ok(q), Ok(s)) => {
                    queries.push((i, s.fetch(q)));
                    None
                }
            },
        };
        out.push(supply);
    }
    let (indices, futures): (Vec<usize>, Vec<_>) = queries.into_iter().unzip();
    let results = futures_util::future::join_all(futures).await;
    for (i, result) in indices.into_iter().zip(results) {
        out[i] = Some(match result {
            Ok(fetched) => Supply::Fetched(fetched),
            Err(e) => Supply::Failed(e),
        });
    }
    out.into_iter()
        .map(|s| s.unwrap_or_else(|| Supply::Missing("not fulfilled".into())))
        .collect()
}
