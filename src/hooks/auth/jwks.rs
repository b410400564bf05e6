//! Cached JWK sets of trusted clients.
//!
//! Keys are fetched only from allowlisted URLs (the caller checked), refreshed after
//! `jwks_refresh`, re-fetched early when an unknown `kid` appears (a client rotated keys) but
//! at most once per `jwks_min_refetch`, and trusted at most `jwks_max_age` when the endpoint is
//! down: then verification fails closed, never open.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{JwkSet, KeyAlgorithm};
use jsonwebtoken::DecodingKey;
use url::Url;

use super::AuthError;
use crate::config::AuthSettings;

/// Largest JWK set accepted (bytes). Real sets are a few KB.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// A usable verification key from a JWK set, built once per fetch (building an RSA key from
/// its JWK components on every request would cost more than the signature check).
pub struct VerifyKey {
    /// The JWK's `alg`, when it declares one.
    pub alg: Option<KeyAlgorithm>,
    pub key: DecodingKey,
}

struct Entry {
    keys: HashMap<String, Arc<VerifyKey>>,
    fetched: Instant,
}

/// JWK sets by URL.
pub struct JwksCache {
    http: reqwest::Client,
    entries: RwLock<HashMap<Url, Entry>>,
    last_attempt: RwLock<HashMap<Url, Instant>>,
    /// One lock per URL: a burst of requests after expiry fetches once, and a slow endpoint
    /// delays only its own client.
    fetching: std::sync::Mutex<HashMap<Url, Arc<tokio::sync::Mutex<()>>>>,
    refresh: Duration,
    max_age: Duration,
    min_refetch: Duration,
}

impl JwksCache {
    /// An empty cache with its own HTTP client (no redirects, bounded time).
    pub fn new(settings: &AuthSettings) -> Result<Self, AuthError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy() // a proxy would resolve the JWKS host itself (issue 14 item 10)
            .connect_timeout(settings.jwks_timeout)
            .timeout(settings.jwks_timeout)
            .build()
            .map_err(|_| AuthError::Setup)?;
        Ok(Self {
            http,
            entries: RwLock::default(),
            last_attempt: RwLock::default(),
            fetching: std::sync::Mutex::default(),
            refresh: settings.jwks_refresh,
            max_age: settings.jwks_max_age,
            min_refetch: settings.jwks_min_refetch,
        })
    }

    /// The key `kid` from the set at `url`.
    pub async fn key(&self, url: &Url, kid: &str) -> Result<Arc<VerifyKey>, AuthError> {
        if let Some(found) = self.cached(url, kid, self.refresh) {
            return Ok(found);
        }
        let lock = self
            .fetching
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(url.clone())
            .or_default()
            .clone();
        let _guard = lock.lock().await;
        // Another request may have fetched while this one waited.
        if let Some(found) = self.cached(url, kid, self.refresh) {
            return Ok(found);
        }
        // Reaching here means: no set yet, a set due for refresh, or an unknown `kid`.
        let recently_tried = self
            .last_attempt
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(url)
            .is_some_and(|t| t.elapsed() < self.min_refetch);
        if !recently_tried {
            self.last_attempt
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(url.clone(), Instant::now());
            match self.fetch(url).await {
                Ok(set) => {
                    let entry = Entry {
                        keys: usable_keys(&set),
                        fetched: Instant::now(),
                    };
                    self.entries
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(url.clone(), entry);
                }
                Err(()) => tracing::warn!(
                    jwks_url = %url,
                    "JWKS fetch failed; cached keys stay in use until jwks_max_age"
                ),
            }
        }
        match self.age(url) {
            None => Err(AuthError::JwksUnavailable),
            Some(age) if age >= self.max_age => Err(AuthError::JwksUnavailable),
            Some(_) => self
                .cached(url, kid, self.max_age)
                .ok_or(AuthError::UnknownKid),
        }
    }

    fn age(&self, url: &Url) -> Option<Duration> {
        self.entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(url)
            .map(|e| e.fetched.elapsed())
    }

    fn cached(&self, url: &Url, kid: &str, max_age: Duration) -> Option<Arc<VerifyKey>> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let entry = entries.get(url)?;
        if entry.fetched.elapsed() >= max_age {
            return None;
        }
        entry.keys.get(kid).cloned()
    }

    async fn fetch(&self, url: &Url) -> Result<JwkSet, ()> {
        let mut response = self
            .http
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|_| ())?;
        if !response.status().is_success() {
            return Err(());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|_| ())? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(());
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|_| ())
    }
}

/// Keys with a `kid` that `jsonwebtoken` can verify with; others (encryption keys, unknown key
/// types) are left out, so a token naming them fails as an unknown `kid`.
fn usable_keys(set: &JwkSet) -> HashMap<String, Arc<VerifyKey>> {
    set.keys
        .iter()
        .filter_map(|jwk| {
            let kid = jwk.common.key_id.clone()?;
            let key = DecodingKey::from_jwk(jwk).ok()?;
            Some((
                kid,
                Arc::new(VerifyKey {
                    alg: jwk.common.key_algorithm,
                    key,
                }),
            ))
        })
        .collect()
}
