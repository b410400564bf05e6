//! Signed-in SMART sessions, held in memory on the server.
//!
//! The browser holds only `bedside_session` (256 random bits); the map is keyed by that id's
//! sha256, so a memory dump does not hand out usable cookies. Sessions end at `session_ttl`
//! whatever the tokens say; an access token about to expire is refreshed with the refresh
//! token (one refresh at a time, as refresh tokens may rotate).

use std::collections::HashMap;
use std::fmt;
use std::sync::RwLock;
use std::time::Duration;

use actix_web::HttpRequest;
use chrono::{DateTime, Utc};
use oauth2::{RefreshToken, TokenResponse};
use sha2::{Digest, Sha256};

use super::discovery::Endpoints;
use super::{SmartState, SESSION_COOKIE};

/// A signed-in clinician's SMART context: what the app pages need to call the EHR's FHIR
/// server for the launched patient. Tokens are server-side only; `Debug` redacts them.
#[derive(Clone)]
pub struct SmartSession {
    /// Short hash of the session id, for logs (never log the id or tokens).
    pub id_hash: String,
    /// The FHIR base URL the tokens are for (the launch `iss`, without trailing slash).
    pub iss: String,
    /// Bearer token for `iss`.
    pub access_token: String,
    /// When `access_token` expires (per `expires_in`).
    pub expires_at: DateTime<Utc>,
    /// Lets [`current`] renew the access token without a new launch.
    pub refresh_token: Option<String>,
    /// Launch context: the patient in context, if any.
    pub patient: Option<String>,
    /// Launch context: the encounter in context, if any.
    pub encounter: Option<String>,
    /// The signed-in user as a FHIR reference (e.g. `Practitioner/123`).
    pub fhir_user: Option<String>,
    /// Whether the app must show its own patient banner (the EHR does not).
    pub need_patient_banner: bool,
    /// The EHR's style sheet for embedded apps.
    pub smart_style_url: Option<String>,
    /// A CDS Hooks card's `appContext` (e.g. which prediction the clinician opened).
    pub app_context: Option<String>,
    /// Expected in every form the app pages post (see [`csrf_ok`]).
    pub csrf_token: String,
    /// Scopes granted.
    pub scope: String,
}

impl fmt::Debug for SmartSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmartSession")
            .field("id_hash", &self.id_hash)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

struct Entry {
    session: SmartSession,
    endpoints: Endpoints,
    /// Hard end of the session (`session_ttl` after sign-in).
    ends: DateTime<Utc>,
}

/// In-memory sessions keyed by sha256(session id).
#[derive(Default)]
pub(crate) struct SessionStore {
    map: RwLock<HashMap<String, Entry>>,
    /// Serialises refreshes: a rotated refresh token must not be used twice.
    refreshing: tokio::sync::Mutex<()>,
}

fn key(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

/// The log-safe name of a session id: the first 16 hex digits of a hash of it.
pub(crate) fn id_hash(id: &str) -> String {
    hex::encode(Sha256::digest(
        format!("bedside-session-log:{id}").as_bytes(),
    ))[..16]
        .to_owned()
}

impl SessionStore {
    pub(crate) fn insert(
        &self,
        id: &str,
        session: SmartSession,
        endpoints: Endpoints,
        ttl: Duration,
    ) {
        let ends = Utc::now()
            + chrono::Duration::from_std(ttl).unwrap_or_else(|_| chrono::Duration::hours(8));
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        let now = Utc::now();
        map.retain(|_, e| e.ends > now);
        map.insert(
            key(id),
            Entry {
                session,
                endpoints,
                ends,
            },
        );
    }

    /// The session as stored (no refresh), if it has not ended.
    pub(crate) fn peek(&self, id: &str) -> Option<SmartSession> {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        map.get(&key(id))
            .filter(|e| e.ends > Utc::now())
            .map(|e| e.session.clone())
    }

    pub(crate) fn remove(&self, id: &str) {
        self.map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key(id));
    }

    fn get(&self, id: &str) -> Option<(SmartSession, Endpoints, DateTime<Utc>)> {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        map.get(&key(id))
            .map(|e| (e.session.clone(), e.endpoints.clone(), e.ends))
    }

    fn update(&self, id: &str, session: SmartSession) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = map.get_mut(&key(id)) {
            entry.session = session;
        }
    }
}

/// The `bedside_session` cookie's value, if the request carries one.
pub(crate) fn cookie_value(req: &HttpRequest) -> Option<String> {
    super::cookie::value(req, SESSION_COOKIE)
}

/// The caller's session (cookie), refreshed with the refresh token when the access token
/// expires within 60 s; None when absent/expired/unrefreshable (the page then asks to
/// relaunch).
pub async fn current(smart: &SmartState, req: &HttpRequest) -> Option<SmartSession> {
    let id = cookie_value(req)?;
    let store = &smart.sessions;
    let fresh = |s: &SmartSession| s.expires_at - chrono::Duration::seconds(60) > Utc::now();
    let (session, _, ends) = store.get(&id)?;
    if ends <= Utc::now() {
        store.remove(&id);
        return None;
    }
    if fresh(&session) {
        return Some(session);
    }
    let _guard = store.refreshing.lock().await;
    // Another request may have refreshed (or ended) it while this one waited.
    let (session, endpoints, _) = store.get(&id)?;
    if fresh(&session) {
        return Some(session);
    }
    let Some(refresh) = session.refresh_token.clone() else {
        tracing::info!(session = %session.id_hash, "SMART access token expired and no refresh token; session ended");
        store.remove(&id);
        return None;
    };
    let client = smart.oauth_client(&endpoints).ok()?;
    let refresh = RefreshToken::new(refresh);
    match client
        .exchange_refresh_token(&refresh)
        .request_async(&smart.http)
        .await
    {
        Ok(token) => {
            let mut renewed = session;
            renewed.access_token = token.access_token().secret().clone();
            renewed.expires_at = token_expiry(token.expires_in());
            if let Some(next) = token.refresh_token() {
                renewed.refresh_token = Some(next.secret().clone());
            }
            if let Some(scopes) = token.scopes() {
                renewed.scope = scopes
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" ");
            }
            tracing::info!(session = %renewed.id_hash, "SMART access token refreshed");
            store.update(&id, renewed.clone());
            Some(renewed)
        }
        Err(e) => {
            tracing::warn!(session = %session.id_hash, error = super::token_error_reason(&e), "SMART token refresh failed; session ended");
            store.remove(&id);
            None
        }
    }
}

/// sha256 of `secret`, hex: what the server keeps of a value the browser holds.
pub(crate) fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compares two strings in time independent of where they differ.
pub(crate) fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks a form's `csrf` field against the session (constant-time).
pub fn csrf_ok(session: &SmartSession, token: &str) -> bool {
    !session.csrf_token.is_empty() && constant_time_eq(&session.csrf_token, token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "abcd"));
        assert!(!constant_time_eq("", "a"));
    }

    #[test]
    fn id_hash_is_short_and_not_the_id() {
        let h = id_hash("secret-session-id");
        assert_eq!(h.len(), 16);
        assert!(!h.contains("secret"));
        assert_eq!(h, id_hash("secret-session-id"));
    }
}

/// Longest access-token lifetime believed: an authorization server's `expires_in` is its own
/// number (u64 seconds), and `Utc::now() + u64::MAX s` would overflow.
const MAX_TOKEN_LIFETIME: chrono::Duration = chrono::Duration::hours(24);
/// Lifetime assumed when a token response has no `expires_in`.
const DEFAULT_TOKEN_LIFETIME: chrono::Duration = chrono::Duration::hours(1);

/// When an access token with `expires_in` (as the token response gave it) expires, capped at
/// [`MAX_TOKEN_LIFETIME`] so no server-supplied number can overflow the clock arithmetic.
pub(crate) fn token_expiry(expires_in: Option<std::time::Duration>) -> chrono::DateTime<Utc> {
    let lifetime = expires_in
        .map(|d| {
            chrono::Duration::from_std(d).map_or(MAX_TOKEN_LIFETIME, |d| d.min(MAX_TOKEN_LIFETIME))
        })
        .unwrap_or(DEFAULT_TOKEN_LIFETIME);
    Utc::now()
        .checked_add_signed(lifetime)
        .unwrap_or(chrono::DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod expiry_tests {
    use super::*;

    #[test]
    fn a_huge_expires_in_is_capped_not_an_overflow() {
        let capped = token_expiry(Some(std::time::Duration::from_secs(u64::MAX)));
        assert!(capped <= Utc::now() + MAX_TOKEN_LIFETIME);
        assert!(capped > Utc::now() + chrono::Duration::hours(23));
        let plain = token_expiry(Some(std::time::Duration::from_secs(300)));
        assert!(plain <= Utc::now() + chrono::Duration::seconds(300));
        assert!(token_expiry(None) > Utc::now() + chrono::Duration::minutes(59));
    }
}
