//! JSON in and out, the same way on every surface: request bodies parsed with the path of the
//! member at fault, and the one JSON error body (`{"error", "message", "field"?}`) every error
//! answer carries.

use actix_web::http::{header, StatusCode};
use actix_web::HttpResponse;

use super::auth::AuthError;

use crate::cds::wire::ErrorBody;

/// A body that is not JSON, or not the JSON a request must be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    #[error("malformed JSON: {0}")]
    Malformed(String),
    /// Valid JSON that is not a valid request; `field` names the offending member.
    #[error("{message}")]
    Invalid {
        field: Option<String>,
        message: String,
    },
}

/// Parses a request body, mapping failures to the JSON path of the member at fault
/// (`fhirAuthorization.subject`, `feedback[1].card`).
///
/// A valid body is parsed once without tracking paths (path tracking was about 9 % of a request
/// worker's time under load, `perf`); only a body that fails is parsed again, with paths, to say
/// where.
pub fn parse_json<'de, T: serde::Deserialize<'de>>(body: &'de [u8]) -> Result<T, JsonError> {
    if let Ok(value) = serde_json::from_slice(body) {
        return Ok(value);
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        from_serde(inner, &path)
    })?;
    deserializer.end().map_err(|e| from_serde(e, "."))?;
    Ok(value)
}

/// A `serde_json` failure at JSON `path` (`.` for the root).
pub fn from_serde(e: serde_json::Error, path: &str) -> JsonError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => JsonError::Malformed(e.to_string()),
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
            JsonError::Invalid {
                field,
                message: format!("not a valid request: {text}"),
            }
        }
    }
}

/// The JSON error answer: `status` with `{"error": code, "message", "field"?}`.
pub fn error_response(
    status: StatusCode,
    code: &str,
    message: impl Into<String>,
    field: Option<String>,
) -> HttpResponse {
    HttpResponse::build(status).json(ErrorBody {
        error: code.to_owned(),
        message: message.into(),
        field,
    })
}

/// What an HTTP surface's error type says about itself; [`answer`] turns it into the one JSON
/// error answer, with the headers its kind calls for.
pub trait ErrorAnswer: std::fmt::Display {
    fn status(&self) -> StatusCode;
    /// The stable `error` code.
    fn code(&self) -> &'static str;
    /// The request member at fault.
    fn field(&self) -> Option<String> {
        None
    }
    /// The refused credential: answered with a `WWW-Authenticate` challenge.
    fn refused_token(&self) -> Option<&AuthError> {
        None
    }
    /// Temporarily unavailable (store, model): the message is shown, `Retry-After: 5` sent.
    fn retry_later(&self) -> bool {
        false
    }
}

/// The JSON error answer for `e`. Internal causes of a 5xx are not described to the caller
/// ("internal error"); they are logged where they happen.
pub fn answer(e: &impl ErrorAnswer) -> HttpResponse {
    let status = e.status();
    let message = if status.is_server_error() && !e.retry_later() {
        "internal error".to_owned()
    } else {
        e.to_string()
    };
    let mut response = error_response(status, e.code(), message, e.field());
    let headers = response.headers_mut();
    if let Some(refused) = e.refused_token() {
        headers.insert(header::WWW_AUTHENTICATE, super::auth::challenge(refused));
    }
    if e.retry_later() {
        headers.insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
    }
    response
}
