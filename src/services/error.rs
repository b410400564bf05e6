//! Why a service could not answer a hook call with guidance.

/// A hook call the service cannot answer. Guardrail outcomes (too little data, model late) are
/// not errors: the service answers 200 with fewer cards.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Spec: "If the CDS Service is unable to obtain required data … the service SHALL respond
    /// with an HTTP 412 Precondition Failed status code."
    #[error("required prefetch `{key}` was not supplied and could not be fetched: {why}; expected the result of `{query}`")]
    PrefetchMissing {
        key: String,
        query: String,
        why: String,
    },
    #[error("prefetch `{key}` is not usable: {reason}")]
    InvalidPrefetch { key: String, reason: String },
}

impl ServiceError {
    /// Stable error code for the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::PrefetchMissing { .. } => "prefetch_missing",
            Self::InvalidPrefetch { .. } => "invalid_prefetch",
        }
    }

    /// The request member at fault.
    pub fn field(&self) -> Option<String> {
        match self {
            Self::PrefetchMissing { key, .. } | Self::InvalidPrefetch { key, .. } => {
                Some(format!("prefetch.{key}"))
            }
        }
    }
}
