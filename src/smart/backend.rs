//! SMART Backend Services (hl7.org/fhir/smart-app-launch/backend-services.html): bedside's own
//! access token for FHIR queries when a hook call carries no `fhirAuthorization`.
//!
//! bedside authenticates with a signed JWT (`private_key_jwt`, RS384 or ES384) in a
//! `client_credentials` grant; the EHR verifies it against bedside's public key, which bedside
//! publishes at `GET /.well-known/jwks.json` (routed by `smart::configure`). The token endpoint comes from the
//! FHIR server's `/.well-known/smart-configuration` unless configured. Tokens are cached per
//! (token endpoint, scope) until 60 s before they expire (an hour at most); concurrent callers
//! wait for one in-flight request.
//!
//! bedside's token is a capability of bedside, not of the caller, so using it on a caller's
//! behalf is a grant ([`BackendGrant`], `backend_services` on a `[[clients]]` or
//! `[[clients.tenants]]` entry): only a trusted client's calls (that tenant's, when the grant is
//! on a tenant) get it, only for the FHIR origins granted to them, and only after that caller's
//! own egress check passed (the API takes a [`FhirServer`], which exists only then). The
//! discovered token endpoint must pass the same caller's egress policy, and every connection
//! goes through the egress pools (no proxy). Discovery is cached per origin, both caches are
//! bounded. Neither tokens nor assertions are logged or put into error messages.

use std::collections::{HashMap, HashSet};
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

use super::SmartState;
use crate::fhir::connect::Pools;
use crate::fhir::{EgressPolicy, EgressRefusal, FhirError, FhirServer, Reach};

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
/// Longest a token is cached, whatever its `expires_in` says (the profile suggests 5 min).
const MAX_TOKEN_CACHE: Duration = Duration::from_secs(3600);
/// Entries per cache (discovered endpoints, tokens): beyond it, entries not in use are
/// dropped, and if all are in use the request goes uncached.
const MAX_CACHED: usize = 256;

/// Why bedside could not obtain its own token. `Display` never contains a token, an
/// assertion or a private key: it is safe to log.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    /// No `backend_services` grant covers this caller and FHIR server: no token is requested.
    #[error("no backend_services grant for this client and {0}")]
    NotGranted(String),
    /// The token endpoint (discovered, or its connection's resolved address) is refused by
    /// the caller's egress policy: nothing was sent there.
    #[error("token endpoint refused by the egress policy: {0}")]
    EgressRefused(EgressRefusal),
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
            Self::NotGranted(_) => "not_granted".into(),
            Self::EgressRefused(r) => format!("egress_refused ({})", r.kind()),
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

impl SigningKey {
    /// Reads a PKCS#8 PEM (`BEGIN PRIVATE KEY`: EC P-384 for ES384, RSA ≥ 2048 bits for
    /// RS384). `kid` defaults to the key's RFC 7638 thumbprint. Errors never quote the key.
    pub fn load(path: &Path, algorithm: Algorithm, kid: Option<&str>) -> Result<Self, String> {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        Self::from_pem(&pem, algorithm, kid)
    }

    /// As [`SigningKey::load`], from PEM text. The key is parsed by `ring` (the same library
    /// that signs with it): its PKCS#8 reader checks the structure, the curve and the RSA key
    /// size; bedside reads only the public half it needs for the JWK.
    pub fn from_pem(pem: &str, algorithm: Algorithm, kid: Option<&str>) -> Result<Self, String> {
        let der = pkcs8_der(pem)?;
        let ec = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            &der,
            &ring::rand::SystemRandom::new(),
        );
        let rsa = ring::rsa::KeyPair::from_pkcs8(&der);
        let (encoding, public) = match (algorithm, ec, rsa) {
            (Algorithm::ES384, Ok(pair), _) => {
                use ring::signature::KeyPair as _;
                // An uncompressed point: 0x04 || X || Y.
                let Some(xy) = pair
                    .public_key()
                    .as_ref()
                    .strip_prefix(&[4u8])
                    .filter(|xy| xy.len() == 96)
                else {
                    return Err("the EC key's public point is not an uncompressed P-384 point".into());
                };
                let (x, y) = xy.split_at(48);
                let public = json!({
                    "kty": "EC",
                    "crv": "P-384",
                    "x": URL_SAFE_NO_PAD.encode(x),
                    "y": URL_SAFE_NO_PAD.encode(y),
                });
                let encoding = EncodingKey::from_ec_pem(pem.as_bytes())
                    .map_err(|e| format!("the EC key cannot be used to sign: {e}"))?;
                (encoding, public)
            }
            (Algorithm::RS384, _, Ok(pair)) => {
                let parts = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(pair.public());
                let public = json!({
                    "kty": "RSA",
                    "n": URL_SAFE_NO_PAD.encode(&parts.n),
                    "e": URL_SAFE_NO_PAD.encode(&parts.e),
                });
                let encoding = EncodingKey::from_rsa_pem(pem.as_bytes())
                    .map_err(|e| format!("the RSA key cannot be used to sign: {e}"))?;
                (encoding, public)
            }
            (Algorithm::RS384, Ok(_), _) => {
                return Err(format!(
                    "the key is EC P-384 but the algorithm is {algorithm:?} (use ES384)"
                ))
            }
            (Algorithm::ES384, _, Ok(_)) => {
                return Err(format!(
                    "the key is RSA but the algorithm is {algorithm:?} (use RS384)"
                ))
            }
            (Algorithm::ES384, Err(e), _) => {
                return Err(format!(
                    "not an EC P-384 PKCS#8 private key ({e}); ES384 needs one: `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384`"
                ))
            }
            (Algorithm::RS384, _, Err(e)) => {
                return Err(format!(
                    "not an RSA PKCS#8 private key of at least 2048 bits ({e})"
                ))
            }
            _ => return Err(format!("unsupported algorithm {algorithm:?} (ES384 or RS384)")),
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

/// Validated `[backend_services]`: who bedside is to the EHR's authorization server, and the
/// grants collected from the client entries.
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
    /// Who may have bedside's token used for which FHIR servers; nobody else does.
    pub grants: Vec<BackendGrant>,
    /// Cap on one discovery or token request (the hook's deadline may cut it shorter).
    pub timeout: Duration,
}

/// One `backend_services` list of a `[[clients]]` or `[[clients.tenants]]` entry: calls by
/// this client (for this tenant) may have bedside's own token used on these FHIR servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendGrant {
    /// The trusted client's JWT `iss`.
    pub iss: String,
    /// `None`: every call of the client; `Some(t)`: only calls whose JWT has `tenant = t`.
    pub tenant: Option<String>,
    /// Exact origins (`https://fhir.hospital.example`), each on the same entry's allowlist.
    pub fhir_servers: Vec<String>,
}

impl BackendGrant {
    fn covers(&self, (iss, tenant): (Option<&str>, Option<&str>), origin: &str) -> bool {
        Some(self.iss.as_str()) == iss
            && self.tenant.as_deref().is_none_or(|t| Some(t) == tenant)
            && self.fhir_servers.iter().any(|o| o == origin)
    }
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

/// A discovered token endpoint, how far its connections may reach, and when to look again.
#[derive(Clone)]
struct Discovered {
    endpoint: Url,
    reach: Reach,
    until: Instant,
}

/// The backend-services client: signs assertions, discovers token endpoints, caches tokens.
/// One per gateway, shared by every service.
pub struct BackendClient {
    pools: Pools,
    config: BackendConfig,
    /// FHIR origin → discovered token endpoint. Keys are granted origins only.
    endpoints: Mutex<HashMap<String, Slot<Discovered>>>,
    /// (token endpoint, scope) → token.
    tokens: Mutex<HashMap<(String, String), Slot<Cached>>>,
}

impl BackendClient {
    /// The client for `config`, connecting through the egress pools of `policy` (the
    /// configured `token_endpoint`'s host counts as exactly allowlisted: the operator named
    /// it). Redirects are not followed: a token endpoint that redirects is misconfigured, and
    /// the assertion must not travel elsewhere.
    pub fn new(config: BackendConfig, policy: &EgressPolicy) -> Result<Self, FhirError> {
        let mut exact: HashSet<String> = policy.exact_hosts();
        if let Some(host) = config.token_endpoint.as_ref().and_then(Url::host_str) {
            exact.insert(host.to_ascii_lowercase());
        }
        let timeout = config.timeout;
        let pools = Pools::build(exact, |builder| {
            builder
                .connect_timeout(timeout)
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("bedside/", env!("CARGO_PKG_VERSION")))
        })
        .map_err(|e| FhirError::Transport(format!("SMART backend services client: {e}")))?;
        Ok(Self {
            pools,
            config,
            endpoints: Mutex::default(),
            tokens: Mutex::default(),
        })
    }

    /// bedside's public keys as a JWKS (what `/.well-known/jwks.json` serves).
    pub fn jwks(&self) -> Value {
        json!({"keys": [self.config.key.public_jwk()]})
    }

    /// Whether a grant lets calls by `caller` (`(iss, tenant)`; `iss` is `None` when client
    /// authentication is off, which never has a grant) use bedside's token on `fhir_base`.
    pub fn granted(&self, caller: (Option<&str>, Option<&str>), fhir_base: &Url) -> bool {
        let origin = fhir_base.origin().ascii_serialization();
        self.config.grants.iter().any(|g| g.covers(caller, &origin))
    }

    /// An access token for `caller`'s queries on `server` (whose egress check passed):
    /// cached, or requested now within `deadline` (and the configured timeout). Refused
    /// unless a grant covers the caller and server, or when the token endpoint is not on the
    /// caller's allowlist.
    pub async fn access_token(
        &self,
        server: &FhirServer<'_>,
        caller: (Option<&str>, Option<&str>),
        deadline: Instant,
    ) -> Result<String, BackendError> {
        if !self.granted(caller, server.base()) {
            return Err(BackendError::NotGranted(
                server.base().origin().ascii_serialization(),
            ));
        }
        let (endpoint, reach) = match &self.config.token_endpoint {
            Some(url) => (url.clone(), Reach::Exact),
            None => self.discover(server, deadline).await?,
        };
        let key = (endpoint.to_string(), self.config.scope.clone());
        let slot = slot(&self.tokens, key);
        let mut cached = tokio::time::timeout_at(deadline.into(), slot.lock())
            .await
            .map_err(|_| BackendError::Timeout)?;
        if let Some(c) = cached.as_ref().filter(|c| Instant::now() < c.refresh_at) {
            return Ok(c.token.clone());
        }
        let (token, lifetime) = self.request_token(&endpoint, reach, deadline).await?;
        // `expires_in` is the server's number: capped, and added with `checked_add`.
        *cached = lifetime
            .min(MAX_TOKEN_CACHE)
            .checked_sub(REFRESH_MARGIN)
            .filter(|d| !d.is_zero())
            .and_then(|keep| Instant::now().checked_add(keep))
            .map(|refresh_at| Cached {
                token: token.clone(),
                refresh_at,
            });
        Ok(token)
    }

    /// The token endpoint named by `{base}/.well-known/smart-configuration` of `server`,
    /// cached per origin (the first base asked on that origin answers for the TTL). The
    /// endpoint must pass the caller's egress policy.
    async fn discover(
        &self,
        server: &FhirServer<'_>,
        deadline: Instant,
    ) -> Result<(Url, Reach), BackendError> {
        let origin = server.base().origin().ascii_serialization();
        let slot = slot(&self.endpoints, origin);
        let mut cached = tokio::time::timeout_at(deadline.into(), slot.lock())
            .await
            .map_err(|_| BackendError::Timeout)?;
        if let Some(d) = cached.as_ref().filter(|d| Instant::now() < d.until) {
            return Ok((d.endpoint.clone(), d.reach));
        }
        let url = server
            .base()
            .join(".well-known/smart-configuration")
            .map_err(|e| BackendError::Discovery(format!("discovery URL: {e}")))?;
        let request = self
            .pools
            .for_reach(server.reach())
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
        // The server names where bedside sends its signed assertion: the caller's allowlist
        // decides, as for any URL bedside calls on a caller's behalf.
        let reach = server
            .allows(&endpoint)
            .map_err(BackendError::EgressRefused)?;
        *cached = Some(Discovered {
            endpoint: endpoint.clone(),
            reach,
            until: Instant::now() + DISCOVERY_TTL,
        });
        Ok((endpoint, reach))
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
        reach: Reach,
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
            .pools
            .for_reach(reach)
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

/// A transport error; an egress refusal raised inside the resolver travels as its source.
fn transport(e: reqwest::Error) -> BackendError {
    if e.is_timeout() {
        return BackendError::Timeout;
    }
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        if let Some(refusal) = s.downcast_ref::<EgressRefusal>() {
            return BackendError::EgressRefused(refusal.clone());
        }
        source = s.source();
    }
    BackendError::Transport(e.without_url().to_string())
}

/// An OAuth error code as logged: short, and only the characters RFC 6749 allows.
fn safe_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(40)
        .collect()
}

/// The shared slot for `key`, in a map of at most [`MAX_CACHED`] entries: when full, entries
/// nobody holds are dropped first; if every entry is in use the caller gets a slot of its own
/// (not cached, not shared).
fn slot<K: std::hash::Hash + Eq, T>(map: &Mutex<HashMap<K, Slot<T>>>, key: K) -> Slot<T> {
    let mut map = match map.lock() {
        Ok(m) => m,
        Err(poisoned) => poisoned.into_inner(),
    };
    if !map.contains_key(&key) && map.len() >= MAX_CACHED {
        map.retain(|_, s| Arc::strong_count(s) > 1);
        if map.len() >= MAX_CACHED {
            return Slot::default();
        }
    }
    map.entry(key).or_default().clone()
}

/// bedside's own token for a hook call that brought none: `None` when no grant covers the
/// caller and server, or obtaining a token failed (logged without secrets).
impl crate::fhir::TokenSource for BackendClient {
    fn token_for<'a>(
        &'a self,
        server: &'a FhirServer<'a>,
        caller: (Option<&'a str>, Option<&'a str>),
        deadline: Instant,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<String>> + Send + 'a>> {
        Box::pin(async move {
            if !self.granted(caller, server.base()) {
                return None;
            }
            match self.access_token(server, caller, deadline).await {
                Ok(token) => Some(token),
                Err(e) => {
                    tracing::warn!(
                        fhir_server = %server.base().origin().ascii_serialization(),
                        error = %e.log_summary(),
                        "SMART backend services: no token; querying without one"
                    );
                    None
                }
            }
        })
    }
}

// === JWKS endpoint ===

/// bedside's public key set, which the EHR registers for bedside's client id. 404 when
/// `[backend_services]` is not configured.
pub(super) async fn jwks(state: web::Data<SmartState>) -> HttpResponse {
    match &state.backend {
        Some(client) => HttpResponse::Ok().json(client.jwks()),
        None => crate::http::error_response(
            actix_web::http::StatusCode::NOT_FOUND,
            "not_found",
            "SMART backend services are not configured ([backend_services])",
            None,
        ),
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

    /// Item 11: the caches hold at most `MAX_CACHED` entries, however many keys are asked.
    #[test]
    fn caches_are_bounded() {
        let map: Mutex<HashMap<String, Slot<u8>>> = Mutex::default();
        let held: Vec<Slot<u8>> = (0..MAX_CACHED)
            .map(|i| slot(&map, format!("https://h{i}.example")))
            .collect();
        // Full and every slot held: a new key gets its own slot, the map does not grow.
        let extra = slot(&map, "https://extra.example".to_owned());
        assert_eq!(map.lock().unwrap().len(), MAX_CACHED);
        assert_eq!(Arc::strong_count(&extra), 1, "not cached");
        // Released slots make room.
        drop(held);
        for i in 0..10 * MAX_CACHED {
            slot(&map, format!("https://n{i}.example"));
        }
        assert!(map.lock().unwrap().len() <= MAX_CACHED);
    }

    #[test]
    fn grants_are_per_client_tenant_and_origin() {
        let grant = |tenant: Option<&str>| BackendGrant {
            iss: "https://ehr.example".into(),
            tenant: tenant.map(str::to_owned),
            fhir_servers: vec!["https://fhir.example".into()],
        };
        let all = grant(None);
        assert!(all.covers((Some("https://ehr.example"), None), "https://fhir.example"));
        assert!(all.covers(
            (Some("https://ehr.example"), Some("t")),
            "https://fhir.example"
        ));
        assert!(!all.covers(
            (Some("https://other.example"), None),
            "https://fhir.example"
        ));
        assert!(!all.covers((None, None), "https://fhir.example"));
        assert!(!all.covers(
            (Some("https://ehr.example"), None),
            "https://fhir.example:8443"
        ));
        let tenant = grant(Some("a"));
        assert!(tenant.covers(
            (Some("https://ehr.example"), Some("a")),
            "https://fhir.example"
        ));
        assert!(!tenant.covers(
            (Some("https://ehr.example"), Some("b")),
            "https://fhir.example"
        ));
        assert!(!tenant.covers((Some("https://ehr.example"), None), "https://fhir.example"));
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
