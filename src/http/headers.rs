//! What every response carries for browsers, and the header-size limit.
//!
//! Hook responses hold PHI, so nothing is cached (`no-store`) and nothing is sniffed; pages may
//! be framed only by the EHR origins configured in `[http] frame_ancestors` (the SMART app runs
//! inside the EHR); HSTS whenever bedside is reached over https.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::{DefaultHeaders, Next};

/// The EHR origins allowed to frame bedside's pages (`[http] frame_ancestors`), and whether
/// bedside is reached over https (then HSTS is sent).
#[derive(Debug, Clone, Default)]
pub struct BrowserPolicy {
    pub frame_ancestors: Vec<String>,
    pub https: bool,
}

/// The most header bytes a request may carry (`[limits] max_header_bytes`), registered as
/// app data for [`header_limit`].
#[derive(Debug, Clone, Copy)]
pub struct MaxHeaderBytes(pub usize);

/// The security headers for every response (handlers may override any of them).
pub fn default_headers(policy: &BrowserPolicy) -> DefaultHeaders {
    let ancestors = frame_ancestors(policy);
    let mut headers = DefaultHeaders::new()
        .add(("X-Content-Type-Options", "nosniff"))
        .add((
            "Content-Security-Policy",
            format!("default-src 'none'; frame-ancestors {ancestors}"),
        ))
        .add(("Referrer-Policy", "no-referrer"))
        .add(("Cache-Control", "no-store"));
    if policy.https {
        headers = headers.add(("Strict-Transport-Security", "max-age=31536000"));
    }
    headers
}

/// The EHR origins allowed to frame bedside's pages (`'none'` unless configured).
fn frame_ancestors(policy: &BrowserPolicy) -> String {
    if policy.frame_ancestors.is_empty() {
        "'none'".to_owned()
    } else {
        policy.frame_ancestors.join(" ")
    }
}

/// The SMART app page's policy: its own style sheet and forms, nothing else (no script, no
/// third-party origin), framed only by the configured EHR origins.
pub fn app_page_csp(policy: &BrowserPolicy) -> String {
    format!(
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors {}",
        frame_ancestors(policy)
    )
}

/// Refuses (431, JSON) a request whose header fields together exceed `limits.max_header_bytes`
/// before any handler or token check runs. actix itself stops at 128 KB of head; a CDS call
/// needs a few KB (the client JWT is the largest header).
pub async fn header_limit(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let max = req
        .app_data::<actix_web::web::Data<MaxHeaderBytes>>()
        .map(|m| m.0)
        .unwrap_or(usize::MAX);
    let size: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if size > max {
        let response = super::error_response(
            actix_web::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("request headers exceed {max} bytes"),
            None,
        );
        return Ok(req.into_response(response));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}
