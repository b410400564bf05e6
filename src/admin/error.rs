//! Everything an operator call can fail with, answered in the form the endpoint speaks: the
//! one JSON error body (kill switch, records, report) or a FHIR `OperationOutcome` (the FHIR
//! exports).

use actix_web::http::StatusCode;
use actix_web::HttpResponse;

/// A failed admin call.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("an admin bearer token ([[admin_tokens]]) is required")]
    Unauthorized,
    #[error("this admin token lacks the `{}` role", .0.as_str())]
    Forbidden(super::AdminRole),
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the state (a refused promotion, a reload that failed).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    /// Logged where it happened; the caller is told to retry.
    #[error("the store could not be read; retry")]
    StoreUnavailable,
}

impl AdminError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The JSON error answer.
    pub fn json(&self) -> HttpResponse {
        let code = match self {
            Self::Unauthorized => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::Invalid(_) => "invalid_request",
            Self::StoreUnavailable => "store_unavailable",
        };
        crate::http::error_response(self.status(), code, self.to_string(), None)
    }

    /// The FHIR answer: an `OperationOutcome` with one issue.
    pub fn fhir(&self) -> HttpResponse {
        let code = match self {
            Self::Unauthorized => "login",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not-found",
            Self::Conflict(_) => "conflict",
            Self::Invalid(_) => "invalid",
            Self::StoreUnavailable => "transient",
        };
        super::fhir(
            self.status(),
            &crate::audit::operation_outcome("error", code, &self.to_string()),
        )
    }
}
