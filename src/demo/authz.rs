//! The demo EHR's authorization server: just enough SMART App Launch 2.x (EHR launch,
//! authorization code with PKCE S256, launch context in the token response) for bedside's app
//! to open from a card in the demo. **For the demo only**: it approves every request of the
//! registered client without asking anyone (the demo's user is already "logged in" to the EHR).
//!
//! Every map is bounded and entries expire, so a browser cannot grow it without limit.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::{web, HttpResponse};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::ehr::DemoEhr;

/// Launch contexts, codes and tokens kept at most (oldest dropped first).
const CAPACITY: usize = 2048;
/// How long a launch id may wait for its authorization request.
const LAUNCH_TTL: Duration = Duration::from_secs(600);
/// How long an authorization code may wait for its exchange.
const CODE_TTL: Duration = Duration::from_secs(120);
/// Access tokens' lifetime.
pub const TOKEN_TTL: Duration = Duration::from_secs(3600);

/// What an EHR launch is about: set when the EHR opens the app, handed over in the token response.
#[derive(Clone)]
pub struct LaunchContext {
    pub patient: String,
    /// The card's `appContext`, passed through unchanged.
    pub app_context: Option<String>,
}

#[derive(Clone)]
struct CodeGrant {
    context: LaunchContext,
    challenge: String,
    redirect_uri: String,
    scope: String,
}

/// What an access token lets its holder read.
#[derive(Clone)]
pub struct Grant {
    /// The one patient whose data the token opens.
    pub patient: String,
}

/// A map with a capacity and a time to live per entry.
struct Expiring<V> {
    /// Key → (expires at, value).
    entries: HashMap<String, (Instant, V)>,
    order: VecDeque<String>,
    ttl: Duration,
}

impl<V: Clone> Expiring<V> {
    fn new(ttl: Duration) -> Self {
        Self {
            entries: HashMap::new(),
            order: VecDeque::new(),
            ttl,
        }
    }

    fn insert(&mut self, key: String, value: V) {
        let ttl = self.ttl;
        self.insert_for(key, value, ttl);
    }

    fn insert_for(&mut self, key: String, value: V, ttl: Duration) {
        while self.entries.len() >= CAPACITY {
            match self.order.pop_front() {
                Some(old) => {
                    self.entries.remove(&old);
                }
                None => break,
            }
        }
        if self.order.len() >= 2 * CAPACITY {
            // Keys taken earlier linger in `order`; drop them so it stays bounded too.
            let entries = &self.entries;
            self.order.retain(|k| entries.contains_key(k));
        }
        self.order.push_back(key.clone());
        self.entries.insert(key, (Instant::now() + ttl, value));
    }

    fn get(&self, key: &str) -> Option<V> {
        let (until, value) = self.entries.get(key)?;
        (Instant::now() < *until).then(|| value.clone())
    }

    fn take(&mut self, key: &str) -> Option<V> {
        let (until, value) = self.entries.remove(key)?;
        (Instant::now() < until).then_some(value)
    }
}

/// The authorization server's state.
pub struct Authz {
    /// The one client it knows (bedside's `[smart] client_id`).
    pub client_id: String,
    /// The only redirect URI it sends codes to (bedside's callback).
    pub redirect_uri: String,
    /// The FHIR base tokens are for (`aud`).
    pub fhir_base: String,
    launches: Mutex<Expiring<LaunchContext>>,
    codes: Mutex<Expiring<CodeGrant>>,
    tokens: Mutex<Expiring<Grant>>,
}

impl Authz {
    /// An authorization server for `client_id`, redirecting only to `redirect_uri`.
    pub fn new(client_id: &str, redirect_uri: &str, fhir_base: &str) -> Self {
        Self {
            client_id: client_id.to_owned(),
            redirect_uri: redirect_uri.to_owned(),
            fhir_base: fhir_base.to_owned(),
            launches: Mutex::new(Expiring::new(LAUNCH_TTL)),
            codes: Mutex::new(Expiring::new(CODE_TTL)),
            tokens: Mutex::new(Expiring::new(TOKEN_TTL)),
        }
    }

    /// Registers an EHR launch and returns its opaque `launch` value.
    pub fn launch(&self, context: LaunchContext) -> String {
        let id = random_token();
        lock(&self.launches).insert(id.clone(), context);
        id
    }

    /// A fresh access token for `patient`, valid for `ttl` (hook calls' `fhirAuthorization`
    /// tokens live as long as they say they do).
    pub fn issue(&self, patient: &str, ttl: Duration) -> String {
        let token = random_token();
        lock(&self.tokens).insert_for(
            token.clone(),
            Grant {
                patient: patient.to_owned(),
            },
            ttl,
        );
        token
    }

    /// The grant behind a bearer token, if it is one this server issued and it has not expired.
    pub fn grant(&self, token: &str) -> Option<Grant> {
        lock(&self.tokens).get(token)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// 256 random bits, URL-safe.
pub fn random_token() -> String {
    let a = uuid::Uuid::new_v4();
    let b = uuid::Uuid::new_v4();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode([a.as_bytes().as_slice(), b.as_bytes().as_slice()].concat())
}

/// Routes: `/auth/authorize`, `/auth/token`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/auth/authorize", web::get().to(authorize))
        .route("/auth/token", web::post().to(token));
}

/// The SMART configuration document for the demo's FHIR base.
pub fn smart_configuration(ehr_origin: &str) -> Value {
    json!({
        "issuer": format!("{ehr_origin}/fhir"),
        "authorization_endpoint": format!("{ehr_origin}/auth/authorize"),
        "token_endpoint": format!("{ehr_origin}/auth/token"),
        "grant_types_supported": ["authorization_code"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none"],
        "scopes_supported": ["launch", "patient/*.rs"],
        "response_types_supported": ["code"],
        "capabilities": ["launch-ehr", "client-public", "context-ehr-patient", "permission-patient", "permission-v2"],
    })
}

#[derive(Deserialize)]
struct AuthorizeQuery {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    launch: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    aud: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

fn oauth_error(status: u16, error: &str, description: &str) -> HttpResponse {
    HttpResponse::build(
        actix_web::http::StatusCode::from_u16(status)
            .unwrap_or(actix_web::http::StatusCode::BAD_REQUEST),
    )
    .insert_header(("Cache-Control", "no-store"))
    .json(json!({"error": error, "error_description": description}))
}

/// `GET /auth/authorize`: checks the request and redirects to bedside with a code (no consent
/// screen: the demo approves its one client).
async fn authorize(ehr: web::Data<DemoEhr>, q: web::Query<AuthorizeQuery>) -> HttpResponse {
    let authz = &ehr.authz;
    // Errors before the redirect URI is trusted are shown here, never redirected.
    if q.client_id.as_deref() != Some(authz.client_id.as_str()) {
        return oauth_error(400, "unauthorized_client", "unknown client_id");
    }
    if q.redirect_uri.as_deref() != Some(authz.redirect_uri.as_str()) {
        return oauth_error(400, "invalid_request", "redirect_uri is not registered");
    }
    let problem = if q.response_type.as_deref() != Some("code") {
        Some(("unsupported_response_type", "response_type must be code"))
    } else if q.code_challenge_method.as_deref() != Some("S256") || q.code_challenge.is_none() {
        Some(("invalid_request", "PKCE with S256 is required"))
    } else if q.aud.as_deref().map(|a| a.trim_end_matches('/'))
        != Some(authz.fhir_base.trim_end_matches('/'))
    {
        Some(("invalid_request", "aud must be this EHR's FHIR base"))
    } else if q.state.as_deref().is_some_and(|s| s.len() > 512)
        || q.scope.as_deref().is_some_and(|s| s.len() > 2048)
    {
        Some(("invalid_request", "state or scope too long"))
    } else {
        None
    };
    let context = q
        .launch
        .as_deref()
        .and_then(|l| lock(&authz.launches).take(l));
    let mut redirect = match url::Url::parse(&authz.redirect_uri) {
        Ok(u) => u,
        Err(_) => return oauth_error(500, "server_error", "redirect_uri unusable"),
    };
    {
        let mut pairs = redirect.query_pairs_mut();
        match (problem, context) {
            (Some((code, why)), _) => {
                pairs.append_pair("error", code);
                pairs.append_pair("error_description", why);
            }
            (None, None) => {
                pairs.append_pair("error", "invalid_request");
                pairs.append_pair(
                    "error_description",
                    "open the app from the demo EHR (an EHR launch with a current `launch`)",
                );
            }
            (None, Some(context)) => {
                let code = random_token();
                lock(&authz.codes).insert(
                    code.clone(),
                    CodeGrant {
                        context,
                        challenge: q.code_challenge.clone().unwrap_or_default(),
                        redirect_uri: authz.redirect_uri.clone(),
                        scope: granted_scopes(q.scope.as_deref().unwrap_or_default()),
                    },
                );
                pairs.append_pair("code", &code);
            }
        }
        if let Some(state) = &q.state {
            pairs.append_pair("state", state);
        }
    }
    HttpResponse::Found()
        .insert_header(("Location", redirect.to_string()))
        .insert_header(("Cache-Control", "no-store"))
        .finish()
}

/// The requested scopes this server grants: `launch` and patient-level reads. `openid`,
/// `fhirUser` and `offline_access` are not granted (no id_token, no refresh token), so the
/// token response does not claim them.
fn granted_scopes(requested: &str) -> String {
    requested
        .split_whitespace()
        .filter(|s| {
            *s == "launch"
                || s.strip_prefix("patient/").is_some_and(|rest| {
                    rest.ends_with(".r") || rest.ends_with(".rs") || rest.ends_with(".read")
                })
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    client_id: Option<String>,
}

/// `POST /auth/token`: exchanges a code once, for the verifier of its challenge.
async fn token(ehr: web::Data<DemoEhr>, form: web::Form<TokenForm>) -> HttpResponse {
    let authz = &ehr.authz;
    if form.grant_type.as_deref() != Some("authorization_code") {
        return oauth_error(400, "unsupported_grant_type", "authorization_code only");
    }
    // A public client identifies itself with client_id (RFC 6749 §4.1.3).
    if form.client_id.as_deref() != Some(authz.client_id.as_str()) {
        return oauth_error(401, "invalid_client", "unknown or missing client_id");
    }
    let Some(grant) = form
        .code
        .as_deref()
        .and_then(|c| lock(&authz.codes).take(c))
    else {
        return oauth_error(400, "invalid_grant", "unknown, used or expired code");
    };
    if form.redirect_uri.as_deref() != Some(grant.redirect_uri.as_str()) {
        return oauth_error(
            400,
            "invalid_grant",
            "redirect_uri differs from the authorization request",
        );
    }
    let verifier = form.code_verifier.as_deref().unwrap_or_default();
    let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    if verifier.is_empty() || computed != grant.challenge {
        return oauth_error(
            400,
            "invalid_grant",
            "code_verifier does not match the challenge",
        );
    }
    let access_token = authz.issue(&grant.context.patient, TOKEN_TTL);
    let mut body = json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": TOKEN_TTL.as_secs(),
        "scope": grant.scope,
        "patient": grant.context.patient,
        "need_patient_banner": false,
    });
    if let Some(app_context) = grant.context.app_context.filter(|c| !c.is_empty()) {
        body["appContext"] = Value::String(app_context);
    }
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .insert_header(("Pragma", "no-cache"))
        .json(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiring_maps_stay_bounded_and_forget_old_entries() {
        let mut m = Expiring::new(Duration::from_secs(60));
        for i in 0..(CAPACITY + 10) {
            m.insert(i.to_string(), i);
        }
        assert_eq!(m.entries.len(), CAPACITY);
        assert!(m.get("0").is_none());
        assert_eq!(m.get(&(CAPACITY + 9).to_string()), Some(CAPACITY + 9));
        assert_eq!(m.take("100"), Some(100));
        assert_eq!(m.take("100"), None);
        let mut short = Expiring::new(Duration::ZERO);
        short.insert("a".into(), 1);
        assert_eq!(short.get("a"), None);
        short.insert_for("b".into(), 2, Duration::from_secs(60));
        assert_eq!(short.get("b"), Some(2));
    }

    #[test]
    fn only_supported_scopes_are_granted() {
        assert_eq!(
            granted_scopes("launch openid fhirUser patient/Observation.rs patient/Patient.r offline_access user/*.cruds patient/Observation.c"),
            "launch patient/Observation.rs patient/Patient.r"
        );
    }
}
