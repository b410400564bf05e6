//! Where a FHIR query's token comes from when the EHR sent none.

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use super::FhirServer;

/// bedside's own source of access tokens for FHIR servers (SMART Backend Services implements
/// it). Services ask it only for a call that brought no `fhirAuthorization`, after the egress
/// policy admitted the server; it decides whether the caller is granted a token at all.
pub trait TokenSource: Send + Sync {
    /// A token for `caller`'s (`(iss, tenant)`) queries on `server`, obtained before
    /// `deadline`; `None` when no grant covers them or none could be had (the query then goes
    /// without a token and the server decides).
    fn token_for<'a>(
        &'a self,
        server: &'a FhirServer<'a>,
        caller: (Option<&'a str>, Option<&'a str>),
        deadline: Instant,
    ) -> Pin<Box<dyn Future<Output = Option<String>> + Send + 'a>>;
}
