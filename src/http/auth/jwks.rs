//! Cached JWK sets of trusted clients (and of SMART authorization servers, for `id_token`s).
//!
//! Keys are fetched only from URLs the caller vetted (a client's allowlist, an allowed
//! issuer's discovery), refreshed after `jwks_refresh`, and trusted at most `jwks_max_age` when
//! the endpoint is down: then verification fails closed, never open.
//!
//! A key missing from a fresh set (a client rotated, or someone sent a made-up `kid`) triggers
//! a re-fetch, under three rules that keep both failure modes out — probes blocking a real
//! rotation, and probes turning bedside into a load generator against an EHR:
//! - **single flight** per URL: misses arriving while a fetch runs wait for it and use its
//!   result instead of fetching again;
//! - **back-off**: two fetches of one URL are at least `jwks_min_refetch` apart (seconds); a
//!   miss inside the back-off *waits it out* and then fetches, rather than being refused, so a
//!   trickle of bogus `kid`s cannot keep a rotated key out;
//! - **negative cache** per (URL, `kid`): a `kid` just looked up in a set fetched for it and
//!   absent is refused without a fetch for `jwks_unknown_kid_ttl` (bounded, see `negative`),
//!   while a *different* unknown `kid` still gets its fetch.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;
use url::Url;

use super::keys::{pick, usable_keys, Pick, Wanted};
use super::negative::NegativeCache;
use super::AuthError;
use super::AuthSettings;

pub use super::keys::VerifyKey;

/// Largest JWK set accepted (bytes). Real sets are a few KB.
const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Most (URL, `kid`) misses remembered at once; beyond it the oldest are forgotten.
const MAX_REMEMBERED_MISSES: usize = 1024;

struct Entry {
    keys: Vec<Arc<VerifyKey>>,
    fetched: Instant,
}

/// One URL's fetch history; its mutex is the single-flight lock.
#[derive(Default)]
struct Flight {
    /// When the last fetch started (the back-off counts from here).
    started: Option<Instant>,
    /// When the last fetch ended, successful or not.
    finished: Option<Instant>,
}

/// JWK sets by URL.
pub struct JwksCache {
    http: reqwest::Client,
    entries: RwLock<HashMap<Url, Entry>>,
    /// One lock per URL: a burst of misses fetches once, and a slow endpoint delays only its
    /// own client.
    flights: std::sync::Mutex<HashMap<Url, Arc<tokio::sync::Mutex<Flight>>>>,
    misses: NegativeCache,
    refresh: Duration,
    max_age: Duration,
    backoff: Duration,
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
            flights: std::sync::Mutex::default(),
            misses: NegativeCache::new(settings.jwks_unknown_kid_ttl, MAX_REMEMBERED_MISSES),
            refresh: settings.jwks_refresh,
            max_age: settings.jwks_max_age,
            backoff: settings.jwks_min_refetch,
        })
    }

    /// The key `kid` from the set at `url`.
    pub async fn key(&self, url: &Url, kid: &str) -> Result<Arc<VerifyKey>, AuthError> {
        self.select(url, Wanted::Kid(kid)).await
    }

    /// For a token without `kid`: the set's only key that fits `alg` (see `keys` for the
    /// rule). Several → [`AuthError::AmbiguousKey`]; none → [`AuthError::NoFittingKey`].
    pub async fn sole_key(&self, url: &Url, alg: Algorithm) -> Result<Arc<VerifyKey>, AuthError> {
        self.select(url, Wanted::SoleFit(alg)).await
    }

    async fn select(&self, url: &Url, wanted: Wanted<'_>) -> Result<Arc<VerifyKey>, AuthError> {
        let arrived = Instant::now();
        match self.cached(url, wanted, self.refresh) {
            Some(Pick::Found(key)) => return Ok(key),
            Some(Pick::Ambiguous) => return Err(AuthError::AmbiguousKey),
            Some(Pick::Absent) if self.misses.is_recent(url, wanted) => return Err(absent(wanted)),
            // No set yet, a set due for refresh, or a miss not looked up lately.
            _ => {}
        }
        let lock = self.flight(url);
        let mut flight = match lock.try_lock() {
            Ok(guard) => guard,
            Err(_) => {
                // A fetch (or a back-off wait) is under way. A request whose key the set
                // still holds, due for refresh but within `jwks_max_age`, need not wait.
                if let Some(Pick::Found(key)) = self.cached(url, wanted, self.max_age) {
                    return Ok(key);
                }
                lock.lock().await
            }
        };
        // A fetch that ended after this request arrived is the answer: no second fetch.
        let shared = flight.finished.is_some_and(|t| t >= arrived);
        if !shared {
            let since_last = flight.started.map(|t| t.elapsed());
            match self.cached(url, wanted, self.refresh) {
                Some(Pick::Found(key)) => return Ok(key),
                Some(Pick::Ambiguous) => return Err(AuthError::AmbiguousKey),
                Some(Pick::Absent) => {
                    // A fresh set without the key: a rotation, or a probe. Wait out the rest
                    // of the back-off, then look.
                    if let Some(rest) = since_last.and_then(|e| self.backoff.checked_sub(e)) {
                        tokio::time::sleep(rest).await;
                    }
                    self.fetch_into_cache(url, &mut flight).await;
                }
                // No set, or one due for refresh: fetch unless one was tried within the
                // back-off (an endpoint that is down is not hammered; cached keys serve).
                None if since_last.is_none_or(|e| e >= self.backoff) => {
                    self.fetch_into_cache(url, &mut flight).await;
                }
                None => {}
            }
        }
        drop(flight);
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let entry = entries
            .get(url)
            .filter(|e| e.fetched.elapsed() < self.max_age)
            .ok_or(AuthError::JwksUnavailable)?;
        match pick(&entry.keys, wanted) {
            Pick::Found(key) => Ok(key),
            Pick::Ambiguous => Err(AuthError::AmbiguousKey),
            Pick::Absent => {
                // Only a set fetched after this request arrived proves the key absent; an
                // older one (the fetch failed) may predate a rotation.
                if entry.fetched >= arrived {
                    self.misses.insert(url, wanted);
                }
                Err(absent(wanted))
            }
        }
    }

    fn flight(&self, url: &Url) -> Arc<tokio::sync::Mutex<Flight>> {
        self.flights
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(url.clone())
            .or_default()
            .clone()
    }

    /// What the set at `url` gives for `wanted`, if a set younger than `max_age` is cached.
    fn cached(&self, url: &Url, wanted: Wanted<'_>, max_age: Duration) -> Option<Pick> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let entry = entries.get(url)?;
        if entry.fetched.elapsed() >= max_age {
            return None;
        }
        Some(pick(&entry.keys, wanted))
    }

    async fn fetch_into_cache(&self, url: &Url, flight: &mut Flight) {
        flight.started = Some(Instant::now());
        match self.fetch(url).await {
            Some(keys) => {
                let entry = Entry {
                    keys,
                    fetched: Instant::now(),
                };
                self.entries
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(url.clone(), entry);
            }
            None => tracing::warn!(
                jwks_url = %url,
                "JWKS fetch failed; cached keys stay in use until jwks_max_age"
            ),
        }
        flight.finished = Some(Instant::now());
    }

    async fn fetch(&self, url: &Url) -> Option<Vec<Arc<VerifyKey>>> {
        let mut response = self
            .http
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.ok()? {
            if body.len().saturating_add(chunk.len()) > MAX_JWKS_BYTES {
                return None;
            }
            body.extend_from_slice(&chunk);
        }
        usable_keys(&body)
    }
}

fn absent(wanted: Wanted<'_>) -> AuthError {
    match wanted {
        Wanted::Kid(_) => AuthError::UnknownKid,
        Wanted::SoleFit(_) => AuthError::NoFittingKey,
    }
}
