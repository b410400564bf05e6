//! SMART discovery: `{iss}/.well-known/smart-configuration`, read once per allowed issuer and
//! reused for `[smart] discovery_ttl`; a failure is remembered for `discovery_failure_ttl`.
//!
//! Without the cache every unauthenticated launch made bedside call the EHR (an amplifier, and a
//! way to make a slow EHR slower). The cache has one slot per configured issuer, made at
//! start-up, so it cannot grow; a slot's lock is held while it is fetched, so launches arriving
//! together wait for one request instead of each sending its own. The fetch itself is bounded
//! as before: the SMART client's timeouts, no redirects, at most 64 KB.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix_web::http::header;
use serde::Deserialize;
use url::Url;

/// What the EHR's `.well-known/smart-configuration` says, as far as bedside uses it.
#[derive(Debug, Clone)]
pub(crate) struct Endpoints {
    pub authorization: Url,
    pub token: Url,
    pub jwks_uri: Option<Url>,
    /// The OpenID issuer `id_token`s must name.
    pub issuer: Option<String>,
}

/// Largest `.well-known/smart-configuration` accepted (bytes); real ones are a few KB.
const MAX_DISCOVERY_BYTES: usize = 64 * 1024;

/// What a fetch gave, until when it may be reused.
struct Cached {
    result: Result<Endpoints, &'static str>,
    until: Instant,
}

/// The discovery cache (see the module doc).
pub(crate) struct Discovery {
    http: reqwest::Client,
    ttl: Duration,
    failure_ttl: Duration,
    /// One slot per allowed issuer (no trailing slash).
    slots: HashMap<String, tokio::sync::Mutex<Option<Cached>>>,
}

impl Discovery {
    /// A cache for `issuers` (the `[smart] allowed_issuers`), fetching with `http`.
    pub(crate) fn new(
        http: reqwest::Client,
        issuers: &[String],
        ttl: Duration,
        failure_ttl: Duration,
    ) -> Self {
        Self {
            http,
            ttl,
            failure_ttl,
            slots: issuers
                .iter()
                .map(|iss| (iss.clone(), tokio::sync::Mutex::new(None)))
                .collect(),
        }
    }

    /// The endpoints `iss` publishes, from the cache while fresh; the reason when they cannot
    /// be had (a short phrase for the error page). `iss` must be an allowed issuer.
    pub(crate) async fn endpoints(&self, iss: &str) -> Result<Endpoints, &'static str> {
        let slot = self.slots.get(iss).ok_or("it is not an allowed issuer")?;
        let mut cached = slot.lock().await;
        if let Some(hit) = cached.as_ref().filter(|c| c.until > Instant::now()) {
            return hit.result.clone();
        }
        let result = fetch(&self.http, iss).await;
        let keep = if result.is_ok() {
            self.ttl
        } else {
            self.failure_ttl
        };
        *cached = Instant::now().checked_add(keep).map(|until| Cached {
            result: result.clone(),
            until,
        });
        result
    }
}

#[derive(Deserialize)]
struct RawDiscovery {
    authorization_endpoint: Option<String>,
    token_endpoint: Option<String>,
    jwks_uri: Option<String>,
    issuer: Option<String>,
    code_challenge_methods_supported: Option<Vec<String>>,
}

/// Reads `{iss}/.well-known/smart-configuration` (bounded size and time, no redirects).
async fn fetch(http: &reqwest::Client, iss: &str) -> Result<Endpoints, &'static str> {
    let url = format!("{iss}/.well-known/smart-configuration");
    let mut response = http
        .get(&url)
        .header(header::ACCEPT.as_str(), "application/json")
        .send()
        .await
        .map_err(|_| "the request failed")?;
    if !response.status().is_success() {
        return Err("it did not answer 200");
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|_| "the body was cut off")? {
        if body.len().saturating_add(chunk.len()) > MAX_DISCOVERY_BYTES {
            return Err("the document is too large");
        }
        body.extend_from_slice(&chunk);
    }
    let raw: RawDiscovery = serde_json::from_slice(&body).map_err(|_| "it is not valid JSON")?;
    if let Some(methods) = &raw.code_challenge_methods_supported {
        if !methods.iter().any(|m| m == "S256") {
            return Err("it does not support PKCE S256");
        }
    }
    let endpoint = |v: &Option<String>| {
        v.as_deref()
            .and_then(|u| Url::parse(u).ok())
            .filter(|u| matches!(u.scheme(), "http" | "https"))
    };
    Ok(Endpoints {
        authorization: endpoint(&raw.authorization_endpoint)
            .ok_or("it has no valid authorization_endpoint")?,
        token: endpoint(&raw.token_endpoint).ok_or("it has no valid token_endpoint")?,
        jwks_uri: endpoint(&raw.jwks_uri),
        issuer: raw.issuer,
    })
}
