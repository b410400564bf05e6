//! Everything a CDS Hooks call can fail with, mapped to HTTP in one place.
//!
//! Client mistakes are described to the client (status + [`ErrorBody`]); internal causes go to
//! the log with the hookInstance and the EHR gets a generic message.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::http::auth::AuthError;
use crate::services::ServiceError;
use crate::store::StoreError;

/// A failed CDS Hooks call.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("unknown CDS service `{0}`")]
    UnknownService(String),
    #[error(transparent)]
    Unauthorized(#[from] AuthError),
    #[error("content type must be application/json (got `{0}`)")]
    UnsupportedMediaType(String),
    #[error("request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// Valid JSON that is not a valid request; `field` names the offending member.
    #[error("{message}")]
    InvalidRequest {
        field: Option<String>,
        message: String,
    },
    #[error("service `{service}` answers the `{expected}` hook, not `{got}`")]
    WrongHook {
        service: String,
        expected: String,
        got: String,
    },
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// Feedback about a card bedside did not give this client (another EHR's, or none).
    #[error("no card `{card}` was given to this client")]
    UnknownCard { field: String, card: String },
    #[error("feedback could not be stored; retry later")]
    StoreUnavailable(#[from] StoreError),
    #[error("the request body could not be read")]
    BodyRead,
    #[error("the request body did not arrive in time")]
    BodyTimeout,
}

impl From<crate::http::BodyError> for HookError {
    fn from(e: crate::http::BodyError) -> Self {
        use crate::http::BodyError;
        match e {
            BodyError::UnsupportedMediaType(t) => Self::UnsupportedMediaType(t),
            BodyError::PayloadTooLarge { limit } => Self::PayloadTooLarge { limit },
            BodyError::Read => Self::BodyRead,
            BodyError::Timeout => Self::BodyTimeout,
        }
    }
}

impl HookError {
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::UnknownService(_) => "unknown_service",
            Self::Unauthorized(e) => e.code(),
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::MalformedJson(_) => "malformed_json",
            Self::InvalidRequest { .. } => "invalid_request",
            Self::WrongHook { .. } => "wrong_hook",
            Self::Service(e) => e.code(),
            Self::UnknownCard { .. } => "unknown_card",
            Self::StoreUnavailable(_) => "store_unavailable",
            Self::BodyRead => "body_read_error",
            Self::BodyTimeout => "request_timeout",
        }
    }

    fn field(&self) -> Option<String> {
        match self {
            Self::InvalidRequest { field, .. } => field.clone(),
            Self::WrongHook { .. } => Some("hook".to_owned()),
            Self::UnknownCard { field, .. } => Some(field.clone()),
            Self::Service(e) => e.field(),
            _ => None,
        }
    }

    /// Parses a request body, mapping failures to 400 with the JSON path of the member at
    /// fault (`fhirAuthorization.subject`, `feedback[1].card`).
    pub fn parse_body<'de, T: serde::Deserialize<'de>>(body: &'de [u8]) -> Result<T, Self> {
        Ok(crate::http::parse_json(body)?)
    }
}

impl From<crate::http::JsonError> for HookError {
    fn from(e: crate::http::JsonError) -> Self {
        match e {
            crate::http::JsonError::Malformed(m) => Self::MalformedJson(m),
            crate::http::JsonError::Invalid { field, message } => {
                Self::InvalidRequest { field, message }
            }
        }
    }
}

impl crate::http::json::ErrorAnswer for HookError {
    fn status(&self) -> StatusCode {
        match self {
            Self::UnknownService(_) => StatusCode::NOT_FOUND,
            Self::Unauthorized(AuthError::Setup) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::MalformedJson(_) | Self::InvalidRequest { .. } | Self::WrongHook { .. } => {
                StatusCode::BAD_REQUEST
            }
            Self::BodyRead => StatusCode::BAD_REQUEST,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Service(ServiceError::PrefetchMissing { .. }) => StatusCode::PRECONDITION_FAILED,
            Self::Service(ServiceError::InvalidPrefetch { .. }) => StatusCode::BAD_REQUEST,
            Self::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::UnknownCard { .. } => StatusCode::NOT_FOUND,
        }
    }

    fn code(&self) -> &'static str {
        HookError::code(self)
    }

    fn field(&self) -> Option<String> {
        HookError::field(self)
    }

    fn refused_token(&self) -> Option<&AuthError> {
        match self {
            Self::Unauthorized(e) => Some(e),
            _ => None,
        }
    }

    fn retry_later(&self) -> bool {
        matches!(self, Self::StoreUnavailable(_))
    }
}

impl ResponseError for HookError {
    fn status_code(&self) -> StatusCode {
        crate::http::json::ErrorAnswer::status(self)
    }

    fn error_response(&self) -> HttpResponse {
        crate::http::json::answer(self)
    }
}
