//! The launch → authorize → callback → session flow, and logout.

use std::fmt;
use std::time::Instant;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use jsonwebtoken::{Algorithm, Validation};
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, CsrfToken, EndpointNotSet, EndpointSet, ExtraTokenFields,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope,
    StandardRevocableToken, StandardTokenResponse, TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::discovery::Endpoints;
use super::error::SmartError;
use super::pending::{Refused, Source};
use super::session::{self, SmartSession};
use super::{html_page, log_text, oauth_error_code, token_error_reason, SmartState};

/// The SMART launch context and OpenID fields of a token response, beside the OAuth ones.
#[derive(Clone, Default, Serialize, Deserialize)]
pub(crate) struct SmartTokenFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    patient: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    encounter: Option<String>,
    #[serde(default, rename = "fhirUser", skip_serializing_if = "Option::is_none")]
    fhir_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    need_patient_banner: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    smart_style_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    intent: Option<String>,
    /// CDS Hooks SMART links deliver the card's `appContext` here (a string, or JSON).
    #[serde(
        default,
        rename = "appContext",
        skip_serializing_if = "Option::is_none"
    )]
    app_context: Option<Value>,
}

// Tokens and patient context must never reach a log through `{:?}`.
impl fmt::Debug for SmartTokenFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmartTokenFields")
            .field("id_token", &self.id_token.as_ref().map(|_| "[redacted]"))
            .field("patient", &self.patient.as_ref().map(|_| "[redacted]"))
            .finish_non_exhaustive()
    }
}
impl ExtraTokenFields for SmartTokenFields {}

impl SmartTokenFields {
    /// `need_patient_banner` as sent (a boolean, or the string some servers send); absent = true.
    pub(crate) fn needs_patient_banner(&self) -> bool {
        match &self.need_patient_banner {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => s != "false",
            // Not said: the app cannot know the EHR shows one, so it does.
            _ => true,
        }
    }

    /// `appContext` as the string the app reads (JSON objects are kept as their text).
    pub(crate) fn app_context_text(&self) -> Option<String> {
        match &self.app_context {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Null) | None => None,
            Some(other) => Some(other.to_string()),
        }
    }
}

/// What an authorization server sends back: the callback's query parameters (first line) and
/// the token response (the rest), read as the callback reads them. The fuzz target's entry point.
pub fn read_callback_and_token_response(data: &[u8]) {
    let (query, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    for (k, v) in url::form_urlencoded::parse(query) {
        if k == "error" {
            let _: String = v.chars().take(64).collect();
        }
    }
    if let Ok(token) = serde_json::from_slice::<SmartTokenResponse>(body) {
        let extra = token.extra_fields();
        let _ = (extra.needs_patient_banner(), extra.app_context_text());
        let _ = token.scopes().map(|s| s.len());
    }
}

pub(crate) type SmartTokenResponse = StandardTokenResponse<SmartTokenFields, BasicTokenType>;
pub(crate) type SmartClient = oauth2::Client<
    BasicErrorResponse,
    SmartTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// A launch waiting for the authorization server's redirect back, keyed by `state`.
pub(crate) struct Pending {
    /// The FHIR base (no trailing slash).
    iss: String,
    endpoints: Endpoints,
    verifier: String,
    nonce: String,
    scope: String,
    /// sha256 of the pre-auth cookie set in the browser that started the launch: the callback
    /// is taken only from that browser (SMART App Launch: `state` bound to the user agent).
    binding: String,
}

impl SmartState {
    /// An `oauth2` client for one authorization server, with bedside's id, secret (when
    /// confidential) and redirect URI.
    pub(crate) fn oauth_client(&self, endpoints: &Endpoints) -> Result<SmartClient, String> {
        let redirect = RedirectUrl::new(self.redirect_uri.clone()).map_err(|e| e.to_string())?;
        let client = oauth2::Client::new(ClientId::new(self.settings.client_id.clone()))
            .set_auth_uri(AuthUrl::from_url(endpoints.authorization.clone()))
            .set_token_uri(TokenUrl::from_url(endpoints.token.clone()))
            .set_redirect_uri(redirect);
        Ok(match &self.settings.client_secret {
            Some(secret) => client.set_client_secret(secret.clone()),
            None => client,
        })
    }
}

fn query(req: &HttpRequest, name: &str) -> Option<String> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty())
}

/// `GET /smart/launch?iss=…&launch=…`: the EHR opens bedside in a patient's context.
pub(crate) async fn ehr_launch(state: web::Data<SmartState>, req: HttpRequest) -> HttpResponse {
    let Some(launch) = query(&req, "launch") else {
        return SmartError::NoLaunch.page();
    };
    begin(&state, &req, query(&req, "iss"), Some(launch)).await
}

/// `GET /smart/standalone?iss=…`: bedside opened on its own; the EHR asks for the patient.
pub(crate) async fn standalone_launch(
    state: web::Data<SmartState>,
    req: HttpRequest,
) -> HttpResponse {
    begin(&state, &req, query(&req, "iss"), None).await
}

/// 429 (this source) or 503 (everyone) with `Retry-After`: too many sign-ins waiting.
fn busy(refused: Refused) -> HttpResponse {
    let error = match refused {
        Refused::SourceFull { retry_after } => SmartError::Busy {
            per_source: true,
            retry_after,
        },
        Refused::Full { retry_after } => SmartError::Busy {
            per_source: false,
            retry_after,
        },
    };
    let page = error.page();
    tracing::warn!(
        status = page.status().as_u16(),
        "SMART launch refused: too many pending sign-ins"
    );
    page
}

async fn begin(
    smart: &SmartState,
    req: &HttpRequest,
    iss: Option<String>,
    launch: Option<String>,
) -> HttpResponse {
    let Some(iss_raw) = iss else {
        return SmartError::NoIssuer.page();
    };
    // The allowlist is checked before any network call: an unknown `iss` is never contacted.
    let iss = iss_raw.trim_end_matches('/');
    if !smart.settings.allowed_issuers.iter().any(|a| a == iss) {
        tracing::warn!(iss = %log_text(iss), "SMART launch refused: iss not in [smart] allowed_issuers");
        return SmartError::IssuerNotAllowed.page();
    }
    // Before discovery: a client over its cap costs no request to the EHR.
    let source = Source::of(req.peer_addr());
    if let Err(refused) = smart.pending.admit(source, Instant::now()) {
        return busy(refused);
    }
    let endpoints = match smart.discovery.endpoints(iss).await {
        Ok(e) => e,
        Err(why) => {
            tracing::warn!(iss = %log_text(iss), why, "SMART discovery failed");
            return SmartError::DiscoveryFailed(why).page();
        }
    };
    let client = match smart.oauth_client(&endpoints) {
        Ok(c) => c,
        Err(why) => {
            tracing::error!(why, "SMART client setup failed");
            return SmartError::RedirectUri { signing_in: false }.page();
        }
    };
    let scope = if launch.is_some() {
        &smart.settings.scopes
    } else {
        &smart.settings.standalone_scopes
    };
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let nonce = CsrfToken::new_random_len(32);
    let mut request = client
        .authorize_url(|| CsrfToken::new_random_len(32))
        .add_scopes(scope.split(' ').map(|s| Scope::new(s.to_owned())))
        .set_pkce_challenge(challenge)
        .add_extra_param("aud", iss_raw.clone())
        .add_extra_param("nonce", nonce.secret().clone());
    if let Some(launch) = &launch {
        request = request.add_extra_param("launch", launch.clone());
    }
    let (url, csrf_state) = request.url();
    let binding = CsrfToken::new_random_len(32).secret().clone();
    let pending = Pending {
        iss: iss.to_owned(),
        endpoints,
        verifier: verifier.secret().clone(),
        nonce: nonce.secret().clone(),
        scope: scope.clone(),
        binding: session::digest(&binding),
    };
    let state_value = csrf_state.secret();
    if let Err(refused) = smart
        .pending
        .insert(source, state_value.clone(), pending, Instant::now())
    {
        return busy(refused);
    }
    tracing::info!(
        iss = %log_text(iss),
        ehr_launch = launch.is_some(),
        "SMART launch redirected to the authorization server"
    );
    HttpResponse::Found()
        .insert_header((header::LOCATION, url.to_string()))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((
            header::SET_COOKIE,
            smart.launch_cookie(state_value, &binding),
        ))
        .finish()
}

/// `GET {redirect_path}?code=…&state=…`: the authorization server sends the browser back.
///
/// The launch is taken (used up) first, then its pre-auth cookie is checked: a `code` and
/// `state` opened in a browser other than the one that started the launch (login CSRF: an
/// attacker's sign-in planted in a clinician's browser) are refused, and cannot be retried.
pub(crate) async fn callback(state: web::Data<SmartState>, req: HttpRequest) -> HttpResponse {
    let smart = &**state;
    let Some(csrf_state) = query(&req, "state") else {
        tracing::warn!("SMART callback without a state");
        return SmartError::SignInExpired.page();
    };
    let Some(pending) = smart.pending.take(&csrf_state, Instant::now()) else {
        tracing::warn!("SMART callback with an unknown, expired or reused state");
        return SmartError::SignInExpired.page();
    };
    let cookie = super::cookie::value(&req, &super::launch_cookie_name(&csrf_state));
    let bound = cookie
        .as_deref()
        .is_some_and(|v| session::constant_time_eq(&session::digest(v), &pending.binding));
    let mut response = if bound {
        redeem(smart, &req, pending).await
    } else {
        tracing::warn!(
            has_cookie = cookie.is_some(),
            "SMART callback refused: the sign-in was not started in this browser (pre-auth cookie missing or wrong); launch discarded"
        );
        SmartError::NotStartedHere.page()
    };
    // The pre-auth cookie has done its job, whatever the outcome.
    if cookie.is_some() {
        if let Ok(value) = header::HeaderValue::from_str(&smart.launch_cookie(&csrf_state, "")) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

/// The rest of the callback, for a launch taken and bound to this browser: the code is
/// exchanged (with the PKCE verifier), the `id_token` checked and the session started.
async fn redeem(smart: &SmartState, req: &HttpRequest, pending: Pending) -> HttpResponse {
    if let Some(error) = query(req, "error") {
        let error = oauth_error_code(&error);
        tracing::warn!(error, "SMART authorization refused by the EHR");
        return SmartError::RefusedByEhr(error.to_owned()).page();
    }
    let Some(code) = query(req, "code") else {
        return SmartError::NoCode.page();
    };
    let client = match smart.oauth_client(&pending.endpoints) {
        Ok(c) => c,
        Err(_) => return SmartError::RedirectUri { signing_in: true }.page(),
    };
    let token = match client
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier.clone()))
        .request_async(&smart.http)
        .await
    {
        Ok(t) => t,
        Err(e @ RequestTokenError::ServerResponse(_)) => {
            let code = token_error_reason(&e);
            tracing::warn!(error = code, "SMART token request refused");
            return SmartError::TokenRefused(code.to_owned()).page();
        }
        Err(e) => {
            tracing::warn!(error = token_error_reason(&e), "SMART token request failed");
            return SmartError::TokenUnreachable.page();
        }
    };
    let extra = token.extra_fields();
    let mut fhir_user = extra.fhir_user.clone();
    if let Some(id_token) = &extra.id_token {
        match verify_id_token(smart, &pending, id_token).await {
            Ok(claims) => fhir_user = fhir_user.or(claims.fhir_user),
            Err(why) => {
                tracing::warn!(why, "SMART id_token rejected; no session created");
                return SmartError::NotVerified.page();
            }
        }
    }
    let scope = token
        .scopes()
        .map(|s| s.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| pending.scope.clone());
    let id = CsrfToken::new_random_len(32).secret().clone();
    let smart_session = SmartSession {
        id_hash: session::id_hash(&id),
        iss: pending.iss.clone(),
        access_token: token.access_token().secret().clone(),
        expires_at: session::token_expiry(token.expires_in()),
        refresh_token: token.refresh_token().map(|t| t.secret().clone()),
        patient: extra.patient.clone(),
        encounter: extra.encounter.clone(),
        fhir_user,
        need_patient_banner: extra.needs_patient_banner(),
        smart_style_url: extra.smart_style_url.clone(),
        app_context: extra.app_context_text(),
        csrf_token: CsrfToken::new_random_len(32).secret().clone(),
        scope,
    };
    let ttl = smart.settings.session_ttl;
    tracing::info!(
        session = %smart_session.id_hash,
        has_patient = smart_session.patient.is_some(),
        intent = extra.intent.as_deref().unwrap_or(""),
        "SMART session started"
    );
    smart
        .sessions
        .insert(&id, smart_session, pending.endpoints.clone(), ttl);
    HttpResponse::Found()
        .insert_header((header::LOCATION, smart.app_path()))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::SET_COOKIE, smart.cookie(&id, ttl.as_secs())))
        .finish()
}

#[derive(Deserialize)]
struct IdClaims {
    nonce: Option<String>,
    #[serde(rename = "fhirUser")]
    fhir_user: Option<String>,
}

/// Checks an OpenID Connect `id_token`: signature by a key from the discovered `jwks_uri`,
/// `iss` = the discovered issuer, `aud` = bedside's client id, `exp`, and `nonce` = the one
/// sent with this launch.
///
/// The key: by `kid` when the header has one; without `kid` (the SMART launcher's RS256
/// tokens) the set's only key that fits the algorithm, as jose libraries choose — OpenID
/// Connect Core §10.1 asks for a `kid` only when the set holds several keys. Several fitting
/// keys and no `kid`: refused, never guessed.
async fn verify_id_token(
    smart: &SmartState,
    pending: &Pending,
    id_token: &str,
) -> Result<IdClaims, &'static str> {
    let header = jsonwebtoken::decode_header(id_token).map_err(|_| "malformed header")?;
    if !matches!(
        header.alg,
        Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512
            | Algorithm::ES256
            | Algorithm::ES384
    ) {
        return Err("algorithm not allowed");
    }
    let jwks_uri = pending
        .endpoints
        .jwks_uri
        .as_ref()
        .ok_or("EHR publishes no jwks_uri")?;
    let issuer = pending
        .endpoints
        .issuer
        .as_deref()
        .ok_or("EHR publishes no issuer")?;
    let key = match header.kid.as_deref() {
        Some(kid) => smart.jwks.key(jwks_uri, kid).await,
        None => smart.jwks.sole_key(jwks_uri, header.alg).await,
    }
    .map_err(|e| {
        use crate::http::auth::AuthError as E;
        match e {
            E::AmbiguousKey => "no kid, and several published keys fit its algorithm",
            E::NoFittingKey => "no kid, and no published key fits its algorithm",
            E::UnknownKid => "no published key has its kid",
            _ => "signing key unavailable",
        }
    })?;
    if !key.fits(header.alg) {
        return Err("key is for another algorithm");
    }
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[smart.settings.client_id.as_str()]);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    validation.leeway = smart.clock_skew.as_secs();
    let data = jsonwebtoken::decode::<IdClaims>(id_token, &key.key, &validation)
        .map_err(|_| "signature or claims invalid")?;
    match &data.claims.nonce {
        Some(nonce) if session::constant_time_eq(nonce, &pending.nonce) => Ok(data.claims),
        _ => Err("nonce does not match"),
    }
}

#[derive(Deserialize)]
pub(crate) struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /smart/logout` (form field `csrf`): ends the session and expires the cookie.
pub(crate) async fn logout(
    state: web::Data<SmartState>,
    req: HttpRequest,
    form: web::Form<LogoutForm>,
) -> HttpResponse {
    let smart = &**state;
    if let Some(id) = session::cookie_value(&req) {
        if let Some(existing) = smart.sessions.peek(&id) {
            if !session::csrf_ok(&existing, &form.csrf) {
                tracing::warn!(session = %existing.id_hash, "SMART logout refused: CSRF token mismatch");
                return SmartError::SignOutStale.page();
            }
            smart.sessions.remove(&id);
            tracing::info!(session = %existing.id_hash, "SMART session ended (logout)");
        }
    }
    let mut response = html_page(
        StatusCode::OK,
        "Signed out",
        "<p>You are signed out of bedside. Open it again from the EHR to continue.</p>",
    );
    if let Ok(value) = header::HeaderValue::from_str(&smart.cookie("", 0)) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}
