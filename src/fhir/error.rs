//! Why a FHIR request gave no data.

use super::egress::EgressRefusal;
use super::outcome::Outcome;

/// A FHIR read or search that failed. None of these panics or hangs: each is what a service
/// reports (412 for required data) or counts (optional data).
#[derive(Debug, thiserror::Error)]
pub enum FhirError {
    /// The egress policy refused the server or a link; nothing was sent.
    #[error("refused by the egress policy: {0}")]
    Refused(#[from] EgressRefusal),
    /// The hook's time budget ran out (connect, response or paging).
    #[error("no answer within the time budget")]
    Timeout,
    /// The server answered with an error status; `outcome` when it sent an OperationOutcome.
    #[error("HTTP {status}{}", outcome.as_ref().map(|o| format!(" ({o})")).unwrap_or_default())]
    Status {
        status: u16,
        outcome: Option<Outcome>,
    },
    /// A 200 whose body is an OperationOutcome instead of the resource asked for.
    #[error("the server sent an OperationOutcome: {0}")]
    Outcome(Outcome),
    /// A body that is not a FHIR JSON resource (HTML error page, truncated JSON, XML…).
    #[error("not a FHIR JSON resource: {0}")]
    NotFhir(String),
    /// A body larger than `fhir.max_response_bytes`; reading stopped at the cap.
    #[error("response larger than the {limit}-byte cap")]
    TooLarge { limit: usize },
    /// A search past `fhir.max_pages` pages or `fhir.max_fetch_bytes` bytes across its
    /// pages; paging stopped there and the partial result is not used.
    #[error("search stopped at the cap of {limit} {unit} (fhir.max_pages / fhir.max_fetch_bytes)")]
    PagingCap { limit: usize, unit: &'static str },
    /// A redirect that leaves the server's origin (or too many redirects).
    #[error("redirect refused: {0}")]
    Redirect(String),
    /// Connection refused or reset, DNS failure, TLS failure.
    #[error("transport: {0}")]
    Transport(String),
}

impl FhirError {
    /// Short stable label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Refused(_) => "refused",
            Self::Timeout => "timeout",
            Self::Status { .. } => "status",
            Self::Outcome(_) => "outcome",
            Self::NotFhir(_) => "not_fhir",
            Self::TooLarge { .. } => "too_large",
            Self::PagingCap { .. } => "paging_cap",
            Self::Redirect(_) => "redirect",
            Self::Transport(_) => "transport",
        }
    }

    /// A description safe for logs: kinds, HTTP status and issue codes only. The `Display`
    /// form can quote a server's diagnostics or a query, which may name the patient.
    pub fn log_summary(&self) -> String {
        match self {
            Self::Status { status, outcome } => match outcome {
                Some(o) => format!("status {status} ({})", o.codes().join(",")),
                None => format!("status {status}"),
            },
            Self::Outcome(o) => format!("outcome ({})", o.codes().join(",")),
            Self::Refused(r) => format!("refused ({})", r.kind()),
            Self::TooLarge { limit } => format!("too_large (cap {limit} bytes)"),
            Self::PagingCap { limit, unit } => format!("paging_cap ({limit} {unit})"),
            other => other.kind().to_owned(),
        }
    }

    /// The OperationOutcome the server sent, if any.
    pub fn outcome(&self) -> Option<&Outcome> {
        match self {
            Self::Status { outcome, .. } => outcome.as_ref(),
            Self::Outcome(o) => Some(o),
            _ => None,
        }
    }
}
