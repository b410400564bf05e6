//! Everything a call to bedside's JSON APIs (CDS Hooks, prediction) can fail with, mapped to
//! HTTP in one place.
//!
//! Client mistakes are described to the client (status + [`ErrorBody`]); internal causes go to
//! the log with the hookInstance and the EHR gets a generic message.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};

use super::auth::AuthError;
use super::wire::ErrorBody;
use crate::services::ServiceError;
use crate::store::StoreError;

/// A failed CDS Hooks call.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("unknown CDS service `{0}`")]
    UnknownService(String),
    #[error("{0}")]
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
    #[error("unknown model `{0}`")]
    UnknownModel(String),
    /// The data hold too little to score (prediction API; hooks abstain with 200 instead).
    #[error("cannot score: {0}")]
    InsufficientData(String),
    /// The model gave no answer in time, or its queue is full.
    #[error("model unavailable: {0}")]
    ModelUnavailable(#[from] crate::inference::InferenceError),
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
            Self::UnknownModel(_) => "unknown_model",
            Self::InsufficientData(_) => "insufficient_data",
            Self::ModelUnavailable(_) => "model_unavailable",
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
        let mut deserializer = serde_json::Deserializer::from_slice(body);
        let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            Self::from_json(inner, &path)
        })?;
        deserializer.end().map_err(|e| Self::from_json(e, "."))?;
        Ok(value)
    }

    /// A `serde_json` failure at JSON `path` (`.` for the root) as a 400.
    pub fn from_json(e: serde_json::Error, path: &str) -> Self {
        use serde_json::error::Category;
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => Self::MalformedJson(e.to_string()),
            Category::Data => {
                let text = e.to_string();
                // A missing member is reported at its parent; name the member itself.
                let missing = text
                    .strip_prefix("missing field `")
                    .and_then(|rest| rest.split('`').next());
                let field = match (path, missing) {
                    (".", Some(m)) => Some(m.to_owned()),
                    (p, Some(m)) => Some(format!("{p}.{m}")),
                    (".", None) => None,
                    (p, None) => Some(p.to_owned()),
                };
                Self::InvalidRequest {
                    field,
                    message: format!("not a valid request: {text}"),
                }
            }
        }
    }
}

impl ResponseError for HookError {
    fn status_code(&self) -> StatusCode {
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
            Self::Service(e) => e.status_code(),
            Self::StoreUnavailable(_) | Self::ModelUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::UnknownModel(_) | Self::UnknownCard { .. } => StatusCode::NOT_FOUND,
            Self::InsufficientData(_) => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let message = if status.is_server_error()
            && !matches!(self, Self::StoreUnavailable(_) | Self::ModelUnavailable(_))
        {
            "internal error".to_owned()
        } else {
            self.to_string()
        };
        let mut response = HttpResponse::build(status);
        if let Self::Unauthorized(e) = self {
            // A fixed description per code: the message may quote client text, and header
            // values must not carry it (a newline would break the response).
            response.insert_header((
                header::WWW_AUTHENTICATE,
                format!(
                    "Bearer error=\"invalid_token\", error_description=\"{}\"",
                    e.code()
                ),
            ));
        }
        if matches!(self, Self::StoreUnavailable(_) | Self::ModelUnavailable(_)) {
            response.insert_header((header::RETRY_AFTER, "5"));
        }
        response.json(ErrorBody {
            error: self.code().to_owned(),
            message,
            field: self.field(),
        })
    }
}
