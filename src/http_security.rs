//! What every response carries for browsers, and TLS on the listener.
//!
//! Hook responses hold PHI, so nothing is cached (`no-store`) and nothing is sniffed; pages may
//! be framed only by the EHR origins configured in `[http] frame_ancestors` (the SMART app runs
//! inside the EHR); HSTS whenever bedside is reached over https.

use std::path::Path;
use std::sync::Arc;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::{DefaultHeaders, Next};
use actix_web::HttpResponse;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Config;
use crate::server::StartupError;

/// The security headers for every response (handlers may override any of them).
pub fn default_headers(config: &Config) -> DefaultHeaders {
    let ancestors = frame_ancestors(config);
    let mut headers = DefaultHeaders::new()
        .add(("X-Content-Type-Options", "nosniff"))
        .add((
            "Content-Security-Policy",
            format!("default-src 'none'; frame-ancestors {ancestors}"),
        ))
        .add(("Referrer-Policy", "no-referrer"))
        .add(("Cache-Control", "no-store"));
    if config.public_url.scheme() == "https" || config.http.tls.is_some() {
        headers = headers.add(("Strict-Transport-Security", "max-age=31536000"));
    }
    headers
}

/// The EHR origins allowed to frame bedside's pages (`'none'` unless configured).
fn frame_ancestors(config: &Config) -> String {
    if config.http.frame_ancestors.is_empty() {
        "'none'".to_owned()
    } else {
        config.http.frame_ancestors.join(" ")
    }
}

/// The SMART app page's policy: its own style sheet and forms, nothing else (no script, no
/// third-party origin), framed only by the configured EHR origins.
pub fn app_page_csp(config: &Config) -> String {
    format!(
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors {}",
        frame_ancestors(config)
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
        .app_data::<actix_web::web::Data<crate::server::AppState>>()
        .map(|s| s.config.max_header_bytes)
        .unwrap_or(usize::MAX);
    let size: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if size > max {
        let response = HttpResponse::build(
            actix_web::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        )
        .json(crate::hooks::wire::ErrorBody {
            error: "headers_too_large".into(),
            message: format!("request headers exceed {max} bytes"),
            field: None,
        });
        return Ok(req.into_response(response));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// A rustls server configuration from PEM files (ring provider, TLS 1.2 and 1.3).
pub fn tls_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, StartupError> {
    let tls = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
        StartupError::Tls(format!("{what} `{}`: {e}", path.display()))
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| tls("certificate", cert, &e))?;
    if chain.is_empty() {
        return Err(tls("certificate", cert, &"no certificate in the file"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| tls("private key", key, &e))?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| tls("protocol versions", cert, &e))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| tls("certificate/key pair", cert, &e))
}

/// The holder named in `tokens` (`(name, sha256)` pairs from the configuration) of the bearer
/// token `req` carries, if any. Every configured hash is compared in full, so the timing says
/// nothing about which (if any) matched. Used by the prediction API and the admin endpoints.
pub fn static_token_holder<'t>(
    tokens: &'t [(String, [u8; 32])],
    req: &actix_web::HttpRequest,
) -> Option<&'t str> {
    use sha2::Digest as _;
    let token = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .filter(|_| !tokens.is_empty())?;
    let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
    tokens.iter().fold(None, |found, (name, hash)| {
        let same = hash
            .iter()
            .zip(&digest)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
        found.or(same.then_some(name.as_str()))
    })
}
