//! CDS client authentication: the JWT an EHR presents on every call ("Trusting CDS Clients").
//!
//! Order of checks, cheapest and least trusting first: bearer syntax → header (`alg`, `kid`,
//! `jku`) → unverified `iss` picks the trusted client → `jku` must be on that client's
//! allowlist (an unlisted URL is never fetched: that would be SSRF on demand) → key by `kid`
//! from the cached JWKS → signature, `aud`, `iss`, `exp`/`nbf` with skew → `iat`, lifetime →
//! `jti` replay. The `jti` is remembered only after the signature verified, so forged tokens
//! cannot poison the replay memory.

mod error;
mod jwks;
mod keys;
mod negative;
mod replay;
mod settings;

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use url::Url;

pub use error::AuthError;

use crate::cds::Caller;
pub use jwks::JwksCache;
pub use replay::ReplayCache;
pub use settings::{AuthSettings, TrustedClient};

/// A caller whose token verified: who it is (passed on to services, the record and logs) and
/// the token's `jti` (kept here for replay checks only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedClient {
    pub caller: Caller,
    pub jti: String,
}

/// The `WWW-Authenticate` challenge for a refused token: a fixed description per code (the
/// error's message may quote client text, and header values must not carry it — a newline
/// would break the response).
pub fn challenge(e: &AuthError) -> actix_web::http::header::HeaderValue {
    let text = format!(
        "Bearer error=\"invalid_token\", error_description=\"{}\"",
        e.code()
    );
    actix_web::http::header::HeaderValue::from_str(&text)
        .unwrap_or_else(|_| actix_web::http::header::HeaderValue::from_static("Bearer"))
}

/// Whether calls must carry a client JWT.
pub enum ClientAuth {
    /// Every call needs a valid token from a trusted client.
    Required(Box<JwtVerifier>),
    /// `--insecure-no-auth`: anyone may call. Only for the local demo; logged at start-up.
    Disabled,
}

impl ClientAuth {
    /// [`Self::verify`] on the request's `Authorization` header; a refusal is logged (its
    /// code, and its detail escaped) before it is returned.
    pub async fn verify_request(
        &self,
        req: &actix_web::HttpRequest,
        audiences: &[String],
    ) -> Result<Option<VerifiedClient>, AuthError> {
        let authorization = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        self.verify(authorization, audiences)
            .await
            .inspect_err(|e| {
                tracing::warn!(reason = e.code(), detail = ?e.to_string(), "client JWT refused");
            })
    }

    /// Verifies `authorization` (the raw header) for a call whose `aud` must be one of
    /// `audiences`. `Ok(None)` only when authentication is disabled.
    pub async fn verify(
        &self,
        authorization: Option<&str>,
        audiences: &[String],
    ) -> Result<Option<VerifiedClient>, AuthError> {
        match self {
            Self::Required(v) => v.verify(authorization, audiences).await.map(Some),
            Self::Disabled => Ok(None),
        }
    }
}

/// Verifies client JWTs against the configured trusted clients.
pub struct JwtVerifier {
    clients: HashMap<String, TrustedClient>,
    jwks: JwksCache,
    replay: ReplayCache,
    settings: AuthSettings,
}

#[derive(Deserialize)]
struct UnverifiedClaims {
    iss: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    exp: i64,
    iat: Option<i64>,
    jti: Option<String>,
    tenant: Option<String>,
}

impl JwtVerifier {
    /// A verifier for `clients`. JWKS are fetched lazily, on the first token that needs them.
    /// Token ids are remembered in memory (a new verifier per test or tool).
    pub fn new(clients: &[TrustedClient], settings: AuthSettings) -> Result<Self, AuthError> {
        Self::with_replay(clients, settings, ReplayCache::default())
    }

    /// [`Self::new`] with the replay memory the gateway shares between replicas.
    pub fn with_replay(
        clients: &[TrustedClient],
        settings: AuthSettings,
        replay: ReplayCache,
    ) -> Result<Self, AuthError> {
        Ok(Self {
            clients: clients.iter().map(|c| (c.iss.clone(), c.clone())).collect(),
            jwks: JwksCache::new(&settings)?,
            replay,
            settings,
        })
    }

    async fn verify(
        &self,
        authorization: Option<&str>,
        audiences: &[String],
    ) -> Result<VerifiedClient, AuthError> {
        let Unverified { token, header, iss } = inspect(authorization)?;
        let kid = header.kid.as_deref().ok_or(AuthError::MissingKid)?;
        let client = self
            .clients
            .get(&iss)
            .ok_or_else(|| AuthError::UnknownIssuer(printable(&iss)))?;
        if !client.algorithms.contains(&header.alg) {
            return Err(AuthError::AlgorithmNotAllowed(format!("{:?}", header.alg)));
        }
        let jwks_url = match header.jku.as_deref() {
            Some(jku) => client
                .jwks_urls
                .iter()
                .find(|allowed| {
                    allowed.as_str() == jku || Url::parse(jku).ok().as_ref() == Some(allowed)
                })
                .ok_or(AuthError::JkuNotAllowed)?,
            None => client.jwks_urls.first().ok_or(AuthError::JkuNotAllowed)?,
        };
        let verify_key = self.jwks.key(jwks_url, kid).await?;
        if !verify_key.fits(header.alg) {
            return Err(AuthError::AlgorithmNotAllowed(format!(
                "{:?} (key `{}` is not for it)",
                header.alg,
                printable(kid)
            )));
        }
        let claims =
            self.check_signature_and_claims(token, &verify_key.key, header.alg, &iss, audiences)?;
        let iat = claims.iat.ok_or(AuthError::MissingClaim("iat"))?;
        let forget_after = check_times(
            iat,
            claims.exp,
            unix_now(),
            seconds(self.settings.clock_skew),
            seconds(self.settings.max_token_lifetime),
        )?;
        let jti = claims
            .jti
            .filter(|j| !j.is_empty())
            .ok_or(AuthError::MissingClaim("jti"))?;
        self.replay
            .remember(&iss, &jti, forget_after, unix_now())
            .await?;
        Ok(VerifiedClient {
            caller: Caller {
                iss,
                tenant: claims.tenant,
            },
            jti,
        })
    }

    fn check_signature_and_claims(
        &self,
        token: &str,
        key: &DecodingKey,
        alg: Algorithm,
        iss: &str,
        audiences: &[String],
    ) -> Result<Claims, AuthError> {
        let mut validation = Validation::new(alg);
        validation.leeway = self.settings.clock_skew.as_secs();
        validation.validate_nbf = true;
        validation.set_audience(audiences);
        validation.set_issuer(&[iss]);
        validation.set_required_spec_claims(&["exp", "aud", "iss"]);
        jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(AuthError::from_jwt)
    }
}

/// Checks a verified token's `iat` and `exp` (Unix seconds; both attacker-chosen until the
/// signature is, and a trusted key can still sign nonsense) against `now`: `iat` not in the
/// future beyond `skew`, `exp - iat` at most `max_lifetime`, and both no further from now than
/// `max_lifetime` plus `skew`. All in checked/saturating arithmetic: `exp = i64::MAX, iat = -1`
/// must not wrap into a short lifetime and a replay memory that forgets at once. Returns when
/// the token's `jti` may be forgotten (`exp + skew`).
fn check_times(
    iat: i64,
    exp: i64,
    now: i64,
    skew: i64,
    max_lifetime: i64,
) -> Result<i64, AuthError> {
    if iat > now.saturating_add(skew) {
        return Err(AuthError::IssuedInFuture);
    }
    let reach = max_lifetime.saturating_add(skew);
    if iat < now.saturating_sub(reach) || exp > now.saturating_add(reach) {
        return Err(AuthError::OutsideLifetimeWindow);
    }
    match exp.checked_sub(iat) {
        Some(lifetime) if lifetime <= max_lifetime => Ok(exp.saturating_add(skew)),
        _ => Err(AuthError::LifetimeTooLong),
    }
}

/// A configured duration in whole seconds, as the signed arithmetic of JWT times needs it.
fn seconds(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// A token's parts read before any key is chosen: what an attacker controls completely.
pub struct Unverified<'a> {
    pub token: &'a str,
    pub header: jsonwebtoken::Header,
    pub iss: String,
}

/// Reads the `Authorization` header's JWT without verifying it: bearer scheme, header
/// (`typ` = JWT and `kid` both required), unverified `iss` to pick the client.
pub fn inspect(authorization: Option<&str>) -> Result<Unverified<'_>, AuthError> {
    let token = bearer_token(authorization)?;
    let header = jsonwebtoken::decode_header(token)
        .map_err(|e| AuthError::Malformed(format!("bad JWT header: {e}")))?;
    // CDS Hooks 2.0 "Trusting CDS Clients": `typ` is REQUIRED, fixed value "JWT" (compared
    // case-insensitively, as RFC 7515 §4.1.9 advises). Absent, or anything else (a JWE, an
    // access token of another profile), is refused.
    if !header
        .typ
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case("JWT"))
    {
        return Err(AuthError::WrongType);
    }
    // `kid` is REQUIRED there too, so the kid-less key selection SMART `id_token`s get
    // (`JwksCache::sole_key`) is not offered to CDS clients.
    if header.kid.is_none() {
        return Err(AuthError::MissingKid);
    }
    let iss = unverified_issuer(token)?;
    Ok(Unverified { token, header, iss })
}

fn bearer_token(authorization: Option<&str>) -> Result<&str, AuthError> {
    let value = authorization.ok_or(AuthError::MissingToken)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::NotBearer);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::MissingToken);
    }
    Ok(token)
}

/// Reads `iss` before verification, only to pick which client's keys to verify with.
fn unverified_issuer(token: &str) -> Result<String, AuthError> {
    let payload = token
        .split('.')
        .nth(1)
        .ok_or_else(|| AuthError::Malformed("not a JWS compact serialization".into()))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| AuthError::Malformed("payload is not base64url".into()))?;
    let claims: UnverifiedClaims = serde_json::from_slice(&bytes)
        .map_err(|_| AuthError::Malformed("payload is not a JSON object".into()))?;
    claims.iss.ok_or(AuthError::MissingClaim("iss"))
}

/// Client-controlled text made safe to echo in a message or log: printable ASCII, at most
/// 100 characters (an unverified `iss` could carry newlines to forge log lines).
fn printable(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(100)
        .collect()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive_and_required() {
        assert_eq!(bearer_token(Some("bearer abc")).unwrap(), "abc");
        assert_eq!(bearer_token(Some("Bearer  abc ")).unwrap(), "abc");
        assert!(matches!(
            bearer_token(Some("Basic abc")),
            Err(AuthError::NotBearer)
        ));
        assert!(matches!(bearer_token(None), Err(AuthError::MissingToken)));
        assert!(matches!(
            bearer_token(Some("Bearer ")),
            Err(AuthError::MissingToken)
        ));
    }

    #[test]
    fn issuer_is_read_from_the_spec_example_token() {
        // The CDS Hooks 2.0 example token (tests/fixtures/spec/SOURCE.md).
        let token = "eyJhbGciOiJFUzM4NCIsInR5cCI6IkpXVCIsImtpZCI6ImV4YW1wbGUta2lkIiwiamt1IjoiaHR0cHM6Ly9maGlyLWVoci5leGFtcGxlLmNvbS9qd2tfdXJpIn0.eyJpc3MiOiJodHRwczovL2ZoaXItZWhyLmV4YW1wbGUuY29tLyIsImF1ZCI6Imh0dHBzOi8vY2RzLmV4YW1wbGUub3JnL2Nkcy1zZXJ2aWNlcy9zb21lLXNlcnZpY2UiLCJleHAiOjE0MjI1Njg4NjAsImlhdCI6MTMxMTI4MDk3MCwianRpIjoiZWUyMmIwMjEtZTFiNy00NjExLWJhNWItOGVlYzZhMzNhYzFlIiwidGVuYW50IjoiMmRkZDZjM2EtOGU5YS00NGM2LWEzMDUtNTIxMTFhZDMwMmEyIn0.sig";
        assert_eq!(
            unverified_issuer(token).unwrap(),
            "https://fhir-ehr.example.com/"
        );
    }

    #[test]
    fn client_text_is_made_printable() {
        assert_eq!(
            printable("https://a\nfake log line\r"),
            "https://afake log line"
        );
        assert_eq!(printable(&"x".repeat(500)).len(), 100);
    }

    #[test]
    fn token_times_are_checked_without_overflow() {
        let (now, skew, life) = (1_800_000_000, 60, 3600);
        let check = |iat, exp| check_times(iat, exp, now, skew, life);
        assert_eq!(check(now, now + 300).unwrap(), now + 360);
        // The review's token: exp - iat overflows i64 and used to pass as a short lifetime.
        assert!(matches!(
            check(-1, i64::MAX),
            Err(AuthError::OutsideLifetimeWindow)
        ));
        assert!(matches!(
            check(i64::MIN, now + 300),
            Err(AuthError::OutsideLifetimeWindow)
        ));
        assert!(matches!(
            check(now, i64::MAX),
            Err(AuthError::OutsideLifetimeWindow)
        ));
        assert!(matches!(
            check(i64::MAX, i64::MAX),
            Err(AuthError::IssuedInFuture)
        ));
        assert!(matches!(
            check(now, now + life + 1),
            Err(AuthError::LifetimeTooLong)
        ));
        assert!(check(now, now - 10).is_ok(), "exp is jsonwebtoken's check");
        // Extreme settings saturate instead of wrapping.
        assert!(check_times(now, now + 10, now, i64::MAX, i64::MAX).is_ok());
        assert!(check_times(i64::MIN, i64::MAX, i64::MAX, i64::MAX, i64::MAX).is_err());
    }

    #[test]
    fn typ_is_required_and_kid_too() {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let payload = b64(r#"{"iss":"https://ehr.test"}"#);
        let token = |header: &str| format!("Bearer {}.{payload}.c2ln", b64(header));
        let inspect_header = |header: &str| inspect(Some(&token(header))).map(|_| ());
        assert!(inspect_header(r#"{"alg":"ES384","typ":"JWT","kid":"k"}"#).is_ok());
        assert!(inspect_header(r#"{"alg":"ES384","typ":"jwt","kid":"k"}"#).is_ok());
        assert!(matches!(
            inspect_header(r#"{"alg":"ES384","kid":"k"}"#),
            Err(AuthError::WrongType)
        ));
        assert!(matches!(
            inspect_header(r#"{"alg":"ES384","typ":"at+jwt","kid":"k"}"#),
            Err(AuthError::WrongType)
        ));
        assert!(matches!(
            inspect_header(r#"{"alg":"ES384","typ":"JWT"}"#),
            Err(AuthError::MissingKid)
        ));
    }

    #[test]
    fn garbage_payloads_are_malformed_not_panics() {
        for t in ["", "a", "a.b", "a.!!!.c", "a.e30.c"] {
            assert!(unverified_issuer(t).is_err(), "{t}");
        }
    }
}
