//! Reading a JSON request body within limits, before anything parses it.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpRequest};
use futures_util::StreamExt as _;

/// Why a body was not read. Each HTTP surface maps it to its own error (same status and
/// code everywhere).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("content type must be application/json (got `{0}`)")]
    UnsupportedMediaType(String),
    #[error("request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the request body could not be read")]
    Read,
    #[error("the request body did not arrive in time")]
    Timeout,
}

/// How much of a body bedside reads, and for how long (`[limits]`).
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: usize,
    /// A client that has sent its headers but trickles the body is cut off after this (408),
    /// so slow clients cannot hold workers.
    pub timeout: Duration,
}

/// Checks the content type (415), the declared and actual size (413), and returns the bytes.
pub async fn read_json_body(
    req: &HttpRequest,
    payload: web::Payload,
    limits: BodyLimits,
) -> Result<web::BytesMut, BodyError> {
    read_body(req, payload, limits, &["application/json"]).await
}

/// As [`read_json_body`], accepting any of `content_types` (e.g. `application/fhir+json`).
pub async fn read_body(
    req: &HttpRequest,
    payload: web::Payload,
    limits: BodyLimits,
    content_types: &[&str],
) -> Result<web::BytesMut, BodyError> {
    tokio::time::timeout(
        limits.timeout,
        read_within(req, payload, limits.max_bytes, content_types),
    )
    .await
    .map_err(|_| BodyError::Timeout)?
}

async fn read_within(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
    content_types: &[&str],
) -> Result<web::BytesMut, BodyError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !content_types
        .iter()
        .any(|t| essence.eq_ignore_ascii_case(t))
    {
        return Err(BodyError::UnsupportedMediaType(essence.to_owned()));
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(BodyError::PayloadTooLarge { limit });
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(8 * 1024).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| BodyError::Read)?;
        if body.len() + chunk.len() > limit {
            return Err(BodyError::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
