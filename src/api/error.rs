//! Everything a prediction-API call can fail with, mapped to HTTP in one place (the same JSON
//! error body and codes as CDS Hooks calls).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::http::auth::AuthError;
use crate::http::{BodyError, JsonError};
use crate::inference::InferenceError;

/// A failed prediction-API call.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Unauthorized(#[from] AuthError),
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error(transparent)]
    Json(#[from] JsonError),
    #[error("unknown model `{0}`")]
    UnknownModel(String),
    /// The data hold too little to score (hooks abstain with 200 instead).
    #[error("cannot score: {0}")]
    InsufficientData(String),
    /// The model gave no answer in time, or its queue is full.
    #[error("model unavailable: {0}")]
    ModelUnavailable(#[from] InferenceError),
}

impl ApiError {
    /// Valid JSON that is not a valid request: `field` names the member at fault.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Json(JsonError::Invalid {
            field: Some(field.to_owned()),
            message: message.into(),
        })
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized(e) => e.code(),
            Self::Body(BodyError::UnsupportedMediaType(_)) => "unsupported_media_type",
            Self::Body(BodyError::PayloadTooLarge { .. }) => "payload_too_large",
            Self::Body(BodyError::Read) => "body_read_error",
            Self::Body(BodyError::Timeout) => "request_timeout",
            Self::Json(JsonError::Malformed(_)) => "malformed_json",
            Self::Json(JsonError::Invalid { .. }) => "invalid_request",
            Self::UnknownModel(_) => "unknown_model",
            Self::InsufficientData(_) => "insufficient_data",
            Self::ModelUnavailable(_) => "model_unavailable",
        }
    }

    fn field(&self) -> Option<String> {
        match self {
            Self::Json(JsonError::Invalid { field, .. }) => field.clone(),
            _ => None,
        }
    }
}

impl crate::http::json::ErrorAnswer for ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized(AuthError::Setup) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Body(BodyError::UnsupportedMediaType(_)) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Body(BodyError::PayloadTooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Body(BodyError::Read) | Self::Json(_) => StatusCode::BAD_REQUEST,
            Self::Body(BodyError::Timeout) => StatusCode::REQUEST_TIMEOUT,
            Self::UnknownModel(_) => StatusCode::NOT_FOUND,
            Self::InsufficientData(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::ModelUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn code(&self) -> &'static str {
        ApiError::code(self)
    }

    fn field(&self) -> Option<String> {
        ApiError::field(self)
    }

    fn refused_token(&self) -> Option<&AuthError> {
        match self {
            Self::Unauthorized(e) => Some(e),
            _ => None,
        }
    }

    fn retry_later(&self) -> bool {
        matches!(self, Self::ModelUnavailable(_))
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        crate::http::json::ErrorAnswer::status(self)
    }

    fn error_response(&self) -> HttpResponse {
        crate::http::json::answer(self)
    }
}
