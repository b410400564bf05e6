//! SMART Backend Services (hl7.org/fhir/smart-app-launch/backend-services.html): bedside's own
//! access token for FHIR queries when a hook call carries no `fhirAuthorization`.
//!
//! bedside authenticates with a signed JWT (`private_key_jwt`, RS384 or ES384) in a
//! `client_credentials` grant; the EHR verifies it against bedside's public key, which bedside
//! publishes at `GET /.well-known/jwks.json` ([`configure`]). The token endpoint comes from the
//! FHIR server's `/.well-known/smart-configuration` unless configured. Tokens are cached per
//! (token endpoint, scope) until 60 s before they expire; concurrent callers wait for one
//! in-flight request. Only FHIR servers listed in `[backend_services] fhir_servers` ever get
//! bedside's token. Neither tokens nor assertions are logged or put into error messages.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, HttpResponse};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Deserialize;
use serde_json::{json, Value};
use url::Url;

use crate::fhir::FhirError;
use crate::server::AppState;

/// Scopes requested when `[backend_services] scopes` is not set: read and search of what the
/// services query.
pub const DEFAULT_SCOPES: &[&str] = &[
    "system/Patient.rs",
    "system/Observation.rs",
    "system/Condition.rs",
    "system/MedicationRequest.rs",
    "system/Encounter.rs",
];

/// `client_assertion_type` of a JWT client assertion (RFC 7523).
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Lifetime of a client assertion; the profile allows at most 5 minutes.
const ASSERTION_LIFETIME: Duration = Duration::from_secs(240);
/// A cached token is replaced this long before it expires.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// A discovered token endpoint is looked up again after this long.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// Cap on a discovery document or token response body.
const MAX_BODY: usize = 64 * 1024;

/// Why bedside could not obtain its own token. `Display` never contains a token, an
/// assertion or a private key: it is safe to log.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    /// The FHIR server is not in `[backend_services] fhir_servers`: no token is ever sent there.
    #[error("{0} is not in [backend_services] fhir_servers")]
    NotEnabled(String),
    /// The FHIR server's `/.well-known/smart-configuration` was unusable.
    #[error("SMART configuration: {0}")]
    Discovery(String),
    /// The token endpoint does not accept `private_key_jwt` client authentication.
    #[error(
        "the token endpoint does not list private_key_jwt in token_endpoint_auth_methods_supported"
    )]
    NoPrivateKeyJwt,
    /// No answer within the call's timeout (or the hook's deadline).
    #[error("no answer within the time budget")]
    Timeout,
    /// The token endpoint refused the request (OAuth `error` code when it sent one).
    #[error("token endpoint answered HTTP {status} ({error})")]
    Refused {
        /// HTTP status.
        status: u16,
        /// OAuth 2.0 `error` code, or `-`.
        error: String,
    },
    /// The token endpoint's answer was not a usable token response.
    #[error("unusable token response: {0}")]
    BadResponse(String),
    /// Connection-level failure.
    #[error("transport: {0}")]
    Transport(String),
    /// The client assertion could not be signed.
    #[error("signing the client assertion: {0}")]
    Signing(String),
}

impl BackendError {
    /// A short, log-safe label with the detail that helps an operator (never a secret).
    pub fn log_summary(&self) -> String {
        match self {
            Self::NotEnabled(_) => "not_enabled".into(),
            Self::Discovery(why) => format!("discovery ({why})"),
            Self::NoPrivateKeyJwt => "no_private_key_jwt".into(),
            Self::Timeout => "timeout".into(),
            Self::Refused { status, error } => format!("refused (HTTP {status}, {error})"),
            Self::BadResponse(why) => format!("bad_response ({why})"),
            Self::Transport(why) => format!("transport ({why})"),
            Self::Signing(why) => format!("signing ({why})"),
        }
    }
}

// === key ===

/// bedside's signing key: the private half for assertions, the public half as a JWK for
/// `/.well-known/jwks.json`. `Debug` shows only the algorithm and `kid`.
#[derive(Clone)]
pub struct SigningKey {
    algorithm: Algorithm,
    kid: String,
    encoding: EncodingKey,
    /// The public JWK (with `kid`, `alg`, `use`).
    jwk: Value,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({:?}, kid {})", self.algorithm, self.kid)
    }
}

const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_SECP384R1: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

impl SigningKey {
    /// Reads a PKCS#8 PEM (`BEGIN PRIVATE KEY`: EC P-384 for ES384, RSA ≥ 2048 bits for
    /// RS384). `kid` defaults to the key's RFC 7638 thumbprint. Errors never quote the key.
    pub fn load(path: &Path, algorithm: Algorithm, kid: Option<&str>) -> Result<Self, String> {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        Self::from_pem(&pem, algorithm, kid)
    }

    /// As [`SigningKey::load`], from PEM text.
    pub fn from_pem(pem: &str, algorithm: Algorithm, kid: Option<&str>) -> Result<Self, String> {
        let der = pkcs8_der(pem)?;
        let bad = |what: &str| format!("not a PKCS#8 private key ({what})");
        let (_, info, _) = tlv(&der, 0x30).map_err(|_| bad("outer SEQUENCE"))?;
        let (_, _version, rest) = tlv(info, 0x02).map_err(|_| bad("version"))?;
        let (_, alg_id, rest) = tlv(rest, 0x30).map_err(|_| bad("algorithm"))?;
        let (_, private, _) = tlv(rest, 0x04).map_err(|_| bad("privateKey"))?;
        let (_, oid, params) = tlv(alg_id, 0x06).map_err(|_| bad("algorithm OID"))?;
        let (encoding, public) = if oid == OID_EC_PUBLIC_KEY {
            let curve = tlv(params, 0x06).map(|(_, c, _)| c).unwrap_or_default();
            if curve != OID_SECP384R1 {
                return Err("EC key is not on P-384 (ES384 needs secp384r1)".into());
            }
            if algorithm != Algorithm::ES384 {
                return Err(format!(
                    "the key is EC P-384 but the algorithm is {algorithm:?} (use ES384)"
                ));
            }
            let point = ec_public_point(private).ok_or_else(|| {
                "the EC key has no public key inside; regenerate it with `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384`".to_owned()
            })?;
            let (x, y) = point.split_at(48);
            let public = json!({
                "kty": "EC",
                "crv": "P-384",
                "x": URL_SAFE_NO_PAD.encode(x),
                "y": URL_SAFE_NO_PAD.encode(y),
            });
            (EncodingKey::from_ec_der(&der), public)
        } else if oid == OID_RSA_ENCRYPTION {
            if algorithm != Algorithm::RS384 {
                return Err(format!(
                    "the key is RSA but the algorithm is {algorithm:?} (use RS384)"
                ));
            }
            let (_, rsa, _) = tlv(private, 0x30).map_err(|_| bad("RSAPrivateKey"))?;
            let (_, _v, rest) = tlv(rsa, 0x02).map_err(|_| bad("RSA version"))?;
            let (_, n, rest) = tlv(rest, 0x02).map_err(|_| bad("RSA modulus"))?;
            let (_, e, _) = tlv(rest, 0x02).map_err(|_| bad("RSA exponent"))?;
            let n = strip_zeros(n);
            if n.len() < 256 {
                return Err(format!(
                    "RSA key of {} bits; at least 2048 are required",
                    n.len() * 8
                ));
            }
            let public = json!({
                "kty": "RSA",
                "n": URL_SAFE_NO_PAD.encode(n),
                "e": URL_SAFE_NO_PAD.encode(strip_zeros(e)),
            });
            // ring signs RSA from the PKCS#1 structure inside the PKCS#8 wrapper.
            (EncodingKey::from_rsa_der(private), public)
        } else {
            return Err("unsupported key type (EC P-384 or RSA in PKCS#8 expected)".into());
        };
        let kid = match kid {
            Some(k) if !k.trim().is_empty() => k.to_owned(),
            _ => thumbprint(&public),
        };
        let mut jwk = public;
        jwk["kid"] = kid.clone().into();
        jwk["alg"] = format!("{algorithm:?}").into();
        jwk["use"] = "sig".into();
        let key = Self {
            algorithm,
            kid,
            encoding,
            jwk,
        };
        // Fail at start-up, not at the first hook call, if ring refuses the key.
        key.sign(&json!({"probe": true}))
            .map_err(|e| format!("the key cannot sign: {e}"))?;
        Ok(key)
    }

    /// The public JWK, as the EHR registers it.
    pub fn public_jwk(&self) -> &Value {
        &self.jwk
    }

    /// The key id every assertion names in its header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    fn sign(&self, claims: &Value) -> Result<String, String> {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".into());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(|e| e.to_string())
    }
}

/// The body of the first `BEGIN PRIVATE KEY` block.
fn pkcs8_der(pem: &str) -> Result<Vec<u8>, String> {
    if pem.contains("BEGIN EC PRIVATE KEY") || pem.contains("BEGIN RSA PRIVATE KEY") {
        return Err("a PKCS#8 key (`BEGIN PRIVATE KEY`) is required; convert it with `openssl pkcs8 -topk8 -nocrypt`".into());
    }
    let start = pem
        .find("-----BEGIN PRIVATE KEY-----")
        .ok_or("no `-----BEGIN PRIVATE KEY-----` block (an unencrypted PKCS#8 PEM is required)")?;
    let body = &pem[start + "-----BEGIN PRIVATE KEY-----".len()..];
    let end = body
        .find("-----END PRIVATE KEY-----")
        .ok_or("unterminated PEM block")?;
    let b64: String = body[..end].chars().filter(|c| !c.is_whitespace()).collect();
    STANDARD
        .decode(b64)
        .map_err(|_| "the PEM block is not base64".to_owned())
}

/// One DER element with the expected tag: `(tag, content, rest)`.
fn tlv(input: &[u8], tag: u8) -> Result<(u8, &[u8], &[u8]), ()> {
    let (&t, rest) = input.split_first().ok_or(())?;
    if t != tag {
        return Err(());
    }
    let (&first, rest) = rest.split_first().ok_or(())?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return Err(());
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return Err(());
    }
    Ok((t, &rest[..len], &rest[len..]))
}

/// The 96 bytes `X || Y` of the public point in an `ECPrivateKey` (its `[1] publicKey`).
fn ec_public_point(ec_private_key: &[u8]) -> Option<&[u8]> {
    let (_, seq, _) = tlv(ec_private_key, 0x30).ok()?;
    let (_, _version, mut rest) = tlv(seq, 0x02).ok()?;
    let (_, _d, r) = tlv(rest, 0x04).ok()?;
    rest = r;
    if let Ok((_, _params, r)) = tlv(rest, 0xa0) {
        rest = r;
    }
    let (_, wrapped, _) = tlv(rest, 0xa1).ok()?;
    let (_, bits, _) = tlv(wrapped, 0x03).ok()?;
    // Zero unused bits, then an uncompressed point: 0x04 || X || Y.
    match bits {
        [0, 4, point @ ..] if point.len() == 96 => Some(point),
        _ => None,
    }
}

fn strip_zeros(mut int: &[u8]) -> &[u8] {
    while let [0, rest @ ..] = int {
        if rest.is_empty() {
            break;
        }
        int = rest;
    }
    int
}

/// RFC 7638 JWK thumbprint (SHA-256, base64url) of a public EC or RSA key.
fn thumbprint(public: &Value) -> String {
    use sha2::Digest;
    let canonical = match public["kty"].as_str() {
        Some("EC") => format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            public["crv"].as_str().unwrap_or_default(),
            public["x"].as_str().unwrap_or_default(),
            public["y"].as_str().unwrap_or_default()
        ),
        _ => format!(
            r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
            public["e"].as_str().unwrap_or_default(),
            public["n"].as_str().unwrap_or_default()
        ),
    };
    URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(canonical.as_bytes()))
}

// === configuration ===

/// Validated `[backend_services]`: who bedside is to the EHR's authorization server and which
/// FHIR servers get its token.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// The client id the EHR registered for bedside (`iss` and `sub` of every assertion).
    pub client_id: String,
    /// The signing key (public half served at `/.well-known/jwks.json`).
    pub key: SigningKey,
    /// Space-separated scopes requested.
    pub scope: String,
    /// Token endpoint to use instead of discovering it.
    pub token_endpoint: Option<Url>,
    /// Origins (`https://fhir.hospital.example`) that get bedside's token; no other does.
    pub fhir_servers: Vec<String>,
    /// Cap on one discovery or token request (the hook's deadline may cut it shorter).
    pub timeout: Duration,
}

/// The origin of `url` as configured origins are written, if it is an http(s) URL.
pub fn origin_of(url: &str) -> Option<String> {
    let url = Url::parse(url).ok()?;
    matches!(url.scheme(), "http" | "https")
        .then(|| url.origin().ascii_serialization())
        .filter(|o| o != "null")
}

// === client ===

#[derive(Clone)]
struct Cached {
    token: String,
    refresh_at: Instant,
}

/// One slot per cache key: its mutex is what makes concurrent callers share one request.
type Slot<T> = Arc<tokio::sync::Mutex<Option<T>>>;

/// The backend-services client: signs assertions, discovers token endpoints, caches tokens.
/// One per gateway, shared by every service.
pub struct BackendClient {
    http: reqwest::Client,
    config: BackendConfig,
    /// FHIR base → discovered token endpoint (with when to look again).
    endpoints: Mutex<HashMap<String, Slot<(Url, Instant)>>>,
    /// (token endpoint, scope) → token.
    tokens: Mutex<HashMap<(String, String), Slot<Cached>>>,
}

impl BackendClient {
    /// The client for `config`. Redirects are not followed: a token endpoint that redirects
    /// is misconfigured, and the assertion must not travel elsewhere.
    pub fn new(config: BackendConfig) -> Result<Self, FhirError> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("bedside/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| FhirError::Transport(format!("SMART backend services client: {e}")))?;
        Ok(Self {
            http,
            config,
            endpoints: Mutex::default(),
            tokens: Mutex::default(),
        })
    }

    /// The client when `[backend_services]` is configured, `None` otherwise.
    pub fn from_config(config: &crate::config::Config) -> Result<Option<Arc<Self>>, FhirError> {
        config
            .backend_services
            .clone()
            .map(|c| Self::new(c).map(Arc::new))
            .transpose()
    }

    /// bedside's public keys as a JWKS (what `/.well-known/jwks.json` serves).
    pub fn jwks(&self) -> Value {
        json!({"keys": [self.config.key.public_jwk()]})
    }

    /// Whether `fhir_base` is on a server listed in `[backend_services] fhir_servers`.
    pub fn enabled_for(&self, fhir_base: &str) -> bool {
        origin_of(fhir_base).is_some_and(|o| self.config.fhir_servers.contains(&o))
    }

    /// An access token for queries on `fhir_base`: cached, or requested now within
    /// `deadline` (and the configured timeout). Refused unless the server is listed.
    pub async fn access_token(
        &self,
        fhir_base: &str,
        deadline: Instant,
    ) -> Result<String, BackendError> {
        if !self.enabled_for(fhir_base) {
            return Err(BackendError::NotEnabled(
                origin_of(fhir_base).unwrap_or_else(|| "(not an http(s) URL)".into()),
            ));
        }
        let endpoint = match &self.config.token_endpoint {
            Some(url) => url.clone(),
            None => self.discover(fhir_base, deadline).await?,
        };
        let key = (endpoint.to_string(), self.config.scope.clone());
        let slot = slot(&self.tokens, key);
        let mut cached = tokio::time::timeout_at(deadline.into(), slot.lock())
            .await
            .map_err(|_| BackendError::Timeout)?;
        if let Some(c) = cached.as_ref().filter(|c| Instant::now() < c.refresh_at) {
            return Ok(c.token.clone());
        }
        let (token, lifetime) = self.request_token(&endpoint, deadline).await?;
        *cached = lifetime
            .checked_sub(REFRESH_MARGIN)
            .filter(|d| !d.is_zero())
            .map(|keep| Cached {
                token: token.clone(),
                refresh_at: Instant::now() + keep,
            });
        Ok(token)
    }

    /// The token endpoint named by `{fhir_base}/.well-known/smart-configuration`.
    async fn discover(&self, fhir_base: &str, deadline: Instant) -> Result<Url, BackendError> {
        let base = fhir_base.trim_end_matches('/').to_owned();
        let slot = slot(&self.endpoints, base.clone());
        let mut cached = tokio::time::timeout_at(deadline.into(), slot.lock())
            .await
            .map_err(|_| BackendError::Timeout)?;
        if let Some((url, _)) = cached.as_ref().filter(|(_, until)| Instant::now() < *until) {
            return Ok(url.clone());
        }
        let url = format!("{base}/.well-known/smart-configuration");
        let request = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json");
        let (status, body) = self.send(request, deadline).await?;
        if status != 200 {
            return Err(BackendError::Discovery(format!("HTTP {status}")));
        }
        #[derive(Deserialize)]
        struct SmartConfiguration {
            token_endpoint: Option<String>,
            token_endpoint_auth_methods_supported: Option<Vec<String>>,
        }
        let doc: SmartConfiguration = serde_json::from_slice(&body)
            .map_err(|e| BackendError::Discovery(format!("not JSON: {e}")))?;
        if let Some(methods) = &doc.token_endpoint_auth_methods_supported {
            if !methods.iter().any(|m| m == "private_key_jwt") {
                return Err(BackendError::NoPrivateKeyJwt);
            }
        }
        let endpoint = doc
            .token_endpoint
            .as_deref()
            .ok_or_else(|| BackendError::Discovery("no token_endpoint".into()))
            .and_then(|t| {
                Url::parse(t)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https"))
                    .ok_or_else(|| {
                        BackendError::Discovery("token_endpoint is not an http(s) URL".into())
                    })
            })?;
        *cached = Some((endpoint.clone(), Instant::now() + DISCOVERY_TTL));
        Ok(endpoint)
    }

    /// A signed client assertion for `token_endpoint` (its `aud`).
    fn assertion(&self, token_endpoint: &Url) -> Result<String, BackendError> {
        let now = chrono::Utc::now().timestamp();
        let claims = json!({
            "iss": self.config.client_id,
            "sub": self.config.client_id,
            "aud": token_endpoint.as_str(),
            "exp": now + ASSERTION_LIFETIME.as_secs() as i64,
            "iat": now,
            "jti": uuid::Uuid::new_v4().to_string(),
        });
        self.config.key.sign(&claims).map_err(BackendError::Signing)
    }

    /// `client_credentials` grant with a JWT client assertion: the token and its lifetime.
    async fn request_token(
        &self,
        endpoint: &Url,
        deadline: Instant,
    ) -> Result<(String, Duration), BackendError> {
        let assertion = self.assertion(endpoint)?;
        let form = [
            ("grant_type", "client_credentials"),
            ("scope", self.config.scope.as_str()),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", assertion.as_str()),
        ];
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let request = self
            .http
            .post(endpoint.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body);
        let (status, body) = self.send(request, deadline).await?;
        if !(200..300).contains(&status) {
            // Only the OAuth error code: a description could echo what was sent.
            let error = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(safe_code))
                .unwrap_or_else(|| "-".into());
            return Err(BackendError::Refused { status, error });
        }
        #[derive(Deserialize)]
        struct TokenResponse {
            access_token: Option<String>,
            token_type: Option<String>,
            expires_in: Option<Value>,
        }
        let answer: TokenResponse = serde_json::from_slice(&body)
            .map_err(|_| BackendError::BadResponse("not a JSON object".into()))?;
        let token = answer
            .access_token
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| BackendError::BadResponse("no usable access_token".into()))?;
        if !answer
            .token_type
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("bearer"))
        {
            return Err(BackendError::BadResponse("token_type is not bearer".into()));
        }
        // The profile requires expires_in; without it the token is used once, not cached.
        let lifetime = answer
            .expires_in
            .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
            .map(Duration::from_secs)
            .unwrap_or(Duration::ZERO);
        Ok((token, lifetime))
    }

    /// Sends with the smaller of the configured timeout and what is left of `deadline`;
    /// returns the status and a capped body.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        deadline: Instant,
    ) -> Result<(u16, Vec<u8>), BackendError> {
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or(BackendError::Timeout)?;
        let limit = left.min(self.config.timeout);
        tokio::time::timeout(limit, async {
            let transport = |e: reqwest::Error| {
                if e.is_timeout() {
                    BackendError::Timeout
                } else {
                    BackendError::Transport(e.without_url().to_string())
                }
            };
            let mut response = request.timeout(limit).send().await.map_err(transport)?;
            let status = response.status().as_u16();
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(transport)? {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(BackendError::BadResponse(format!(
                        "body over {MAX_BODY} bytes"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            Ok((status, body))
        })
        .await
        .map_err(|_| BackendError::Timeout)?
    }
}

/// An OAuth error code as logged: short, and only the characters RFC 6749 allows.
fn safe_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(40)
        .collect()
}

fn slot<K: std::hash::Hash + Eq, T>(map: &Mutex<HashMap<K, Slot<T>>>, key: K) -> Slot<T> {
    let mut map = match map.lock() {
        Ok(m) => m,
        Err(poisoned) => poisoned.into_inner(),
    };
    map.entry(key).or_default().clone()
}

/// bedside's own token for a hook call to `fhir_base` that brought none: `None` when
/// backend services are off, the server is not listed, or obtaining a token failed (logged
/// without secrets) — the query then goes without a token and the server decides.
pub async fn token_for(
    client: Option<&BackendClient>,
    fhir_base: &str,
    deadline: Instant,
) -> Option<String> {
    let client = client?;
    if !client.enabled_for(fhir_base) {
        return None;
    }
    match client.access_token(fhir_base, deadline).await {
        Ok(token) => Some(token),
        Err(e) => {
            tracing::warn!(
                fhir_server = %origin_of(fhir_base).unwrap_or_default(),
                error = %e.log_summary(),
                "SMART backend services: no token; querying without one"
            );
            None
        }
    }
}

// === JWKS endpoint ===

/// Registers `GET /.well-known/jwks.json`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/.well-known/jwks.json", web::get().to(jwks));
}

/// bedside's public key set, which the EHR registers for bedside's client id. 404 when
/// `[backend_services]` is not configured.
async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    match &state.backend {
        Some(client) => HttpResponse::Ok().json(client.jwks()),
        None => HttpResponse::NotFound().json(json!({
            "error": "not_found",
            "message": "SMART backend services are not configured ([backend_services])",
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("conformance/keys")
                .join(name),
        )
        .unwrap()
    }

    #[test]
    fn public_keys_match_the_published_jwks() {
        let published: Value = serde_json::from_str(&fixture("jwks.json")).unwrap();
        let ec = SigningKey::from_pem(&fixture("ec384.pem"), Algorithm::ES384, Some("test-es384"))
            .unwrap();
        let rsa = SigningKey::from_pem(&fixture("rsa.pem"), Algorithm::RS384, Some("test-rs384"))
            .unwrap();
        for key in [ec, rsa] {
            let want = published["keys"]
                .as_array()
                .unwrap()
                .iter()
                .find(|k| k["kid"] == key.kid())
                .unwrap();
            assert_eq!(key.public_jwk(), want);
        }
    }

    #[test]
    fn wrong_algorithm_or_format_is_refused_without_quoting_the_key() {
        let ec = fixture("ec384.pem");
        let e = SigningKey::from_pem(&ec, Algorithm::RS384, None).unwrap_err();
        assert!(e.contains("use ES384"), "{e}");
        let e = SigningKey::from_pem("junk", Algorithm::ES384, None).unwrap_err();
        assert!(e.contains("BEGIN PRIVATE KEY"), "{e}");
        let default_kid = SigningKey::from_pem(&ec, Algorithm::ES384, None).unwrap();
        assert_eq!(default_kid.kid().len(), 43, "a SHA-256 thumbprint");
    }

    #[test]
    fn origins_compare_without_path_or_default_port() {
        assert_eq!(
            origin_of("https://fhir.example:443/r4/").as_deref(),
            Some("https://fhir.example")
        );
        assert_eq!(origin_of("file:///etc/passwd"), None);
    }
}
