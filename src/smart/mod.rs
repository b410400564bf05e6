//! SMART App Launch 2.x: bedside's clinician-facing pages, launched from the EHR (EHR launch,
//! `/smart/launch?iss=…&launch=…`) or opened on their own (standalone launch,
//! `/smart/standalone?iss=…`).
//!
//! The authorization code flow runs server-side with PKCE S256 (the `oauth2` crate): the
//! EHR's endpoints come from `{iss}/.well-known/smart-configuration`, but only for an `iss`
//! listed in `[smart] allowed_issuers` (any other is refused before it is contacted, so a
//! crafted launch link cannot make bedside call arbitrary hosts). Tokens stay on the server
//! ([`session`]); the browser only holds an opaque, HttpOnly session cookie, and while a
//! sign-in is under way a pre-auth cookie binding its `state` to the browser ([`cookie`]).

pub mod app;
pub mod backend;
pub mod chart;
mod cookie;
mod discovery;
mod error;
mod launch;
mod pending;
mod render;
pub mod session;
mod settings;
mod view;

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{guard, web, HttpResponse};
use sha2::{Digest, Sha256};
use url::Url;

use crate::http::auth::{AuthError, AuthSettings, ClientAuth, JwksCache, TrustedClient};
use crate::http::BrowserPolicy;
use crate::services::{FhirAccess, RuntimeHandle};
use crate::store::{AuditWriter, Store};

pub use launch::read_callback_and_token_response;
pub use session::{csrf_ok, current, SmartSession};
pub use settings::SmartSettings;

/// Name of the session cookie (an opaque random id; tokens never reach the browser).
pub const SESSION_COOKIE: &str = "bedside_session";
/// Prefix of the pre-auth cookies (one per launch in progress, named after its `state`).
const LAUNCH_COOKIE_PREFIX: &str = "bedside_launch_";
/// How long a started launch waits for the authorization server's redirect back.
const PENDING_TTL: Duration = Duration::from_secs(600);
/// Time allowed for discovery and token requests to the EHR.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// What the SMART surface needs of the rest of the gateway; the composition root builds it.
pub struct SmartDeps {
    /// `public_url` as configured.
    pub public_url: Url,
    /// Whether browsers reach bedside over https (`public_url` or TLS on the listener).
    pub https: bool,
    /// Clock skew, JWKS fetch limits: for `id_token`s, as for client JWTs.
    pub auth: AuthSettings,
    pub browser: BrowserPolicy,
    pub runtime: Arc<RuntimeHandle>,
    pub store: Store,
    pub audit: AuditWriter,
    pub fhir: Arc<FhirAccess>,
    /// The trusted CDS clients, whose FHIR allowlists decide which records a session sees.
    pub clients: Vec<TrustedClient>,
    pub client_auth: Arc<ClientAuth>,
    /// SMART Backend Services, when configured: its key is served at `/.well-known/jwks.json`.
    pub backend: Option<Arc<backend::BackendClient>>,
}

/// SMART state of a running gateway (its own `web::Data`): settings, the HTTP client used
/// towards the EHR's authorization server, launches in progress and signed-in sessions, and
/// what the app pages read (services, records, the FHIR client).
pub struct SmartState {
    pub(crate) settings: SmartSettings,
    /// `public_url` + `redirect_path`: the `redirect_uri` sent to the authorization server.
    pub(crate) redirect_uri: String,
    /// Path of the callback as requests reach bedside (the path of `redirect_uri`).
    pub(crate) callback_path: String,
    /// Public path prefix + `/smart`: where the session cookie is sent.
    pub(crate) cookie_path: String,
    /// SameSite / Secure / Partitioned for the way bedside is served.
    cookies: cookie::CookiePolicy,
    /// No redirects followed, bounded time: discovery and token calls.
    pub(crate) http: reqwest::Client,
    /// The allowed issuers' `.well-known/smart-configuration`, cached.
    discovery: discovery::Discovery,
    /// The authorization servers' signing keys, for `id_token`s.
    pub(crate) jwks: JwksCache,
    pub(crate) clock_skew: Duration,
    pending: pending::PendingTable<launch::Pending>,
    pub(crate) sessions: session::SessionStore,
    /// The app page's Content-Security-Policy.
    pub(crate) app_csp: String,
    pub(crate) runtime: Arc<RuntimeHandle>,
    pub(crate) store: Store,
    pub(crate) audit: AuditWriter,
    pub(crate) fhir: Arc<FhirAccess>,
    pub(crate) clients: Vec<TrustedClient>,
    pub(crate) client_auth: Arc<ClientAuth>,
    pub(crate) backend: Option<Arc<backend::BackendClient>>,
}

impl SmartState {
    /// Builds the state from the validated `[smart]` settings (no network access).
    pub fn new(settings: SmartSettings, deps: SmartDeps) -> Result<Self, AuthError> {
        let public = &deps.public_url;
        let base = public.as_str().trim_end_matches('/');
        let redirect_uri = format!("{base}{}", settings.redirect_path);
        let callback_path = Url::parse(&redirect_uri)
            .map(|u| u.path().to_owned())
            .unwrap_or_else(|_| settings.redirect_path.clone());
        let prefix = public.path().trim_end_matches('/');
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy() // connect directly, as every outbound client of the gateway does
            .connect_timeout(HTTP_TIMEOUT)
            .timeout(HTTP_TIMEOUT)
            .build()
            .map_err(|_| AuthError::Setup)?;
        Ok(Self {
            redirect_uri,
            callback_path,
            cookie_path: format!("{prefix}/smart"),
            cookies: cookie::CookiePolicy::new(public, deps.https),
            discovery: discovery::Discovery::new(
                http.clone(),
                &settings.allowed_issuers,
                settings.discovery_ttl,
                settings.discovery_failure_ttl,
            ),
            http,
            jwks: JwksCache::new(&deps.auth)?,
            clock_skew: deps.auth.clock_skew,
            pending: pending::PendingTable::new(
                PENDING_TTL,
                settings.max_pending_launches,
                settings.max_pending_launches_per_source,
            ),
            sessions: session::SessionStore::default(),
            settings,
            app_csp: crate::http::headers::app_page_csp(&deps.browser),
            runtime: deps.runtime,
            store: deps.store,
            audit: deps.audit,
            fhir: deps.fhir,
            clients: deps.clients,
            client_auth: deps.client_auth,
            backend: deps.backend,
        })
    }

    /// The app page's public path, where a successful launch lands.
    pub(crate) fn app_path(&self) -> String {
        let prefix = self.cookie_path.trim_end_matches("/smart");
        format!("{prefix}/smart/app")
    }

    /// The session cookie's `Set-Cookie` value (`max_age` 0 expires it).
    fn cookie(&self, value: &str, max_age: u64) -> String {
        self.cookies
            .set_cookie(SESSION_COOKIE, value, &self.cookie_path, max_age)
    }

    /// The pre-auth cookie's `Set-Cookie` value for the launch started with `state`: sent
    /// only to the callback, for as long as the launch may wait (`value` empty: expired).
    fn launch_cookie(&self, state: &str, value: &str) -> String {
        let max_age = if value.is_empty() {
            0
        } else {
            PENDING_TTL.as_secs()
        };
        self.cookies.set_cookie(
            &launch_cookie_name(state),
            value,
            &self.callback_path,
            max_age,
        )
    }
}

/// The pre-auth cookie's name for the launch started with `state`: one per launch, so two
/// sign-ins under way in one browser (two tabs) do not overwrite each other's binding; a hash,
/// so the name does not carry the `state` itself.
fn launch_cookie_name(state: &str) -> String {
    let digest = Sha256::digest(format!("bedside-launch-cookie:{state}").as_bytes());
    format!("{LAUNCH_COOKIE_PREFIX}{}", &hex::encode(digest)[..16])
}

/// Client-supplied text (a launch's `iss`, an authorization server's error code) made safe for
/// one log line: control characters, quotes and backslashes escaped (`\n`, `\u{2028}`), at
/// most 200 characters kept, so no one can forge or flood lines through it.
pub(crate) fn log_text(text: &str) -> String {
    text.chars()
        .take(200)
        .flat_map(char::escape_debug)
        .collect()
}

/// An OAuth 2.0 / OpenID Connect error code as an authorization server sent it, if it is one
/// the specs define (RFC 6749 §4.1.2.1 and §5.2, OpenID Connect Core §3.1.2.6); anything else
/// is "other", so neither a log line nor the sign-in page repeats text from outside.
pub(crate) fn oauth_error_code(text: &str) -> &'static str {
    const CODES: [&str; 16] = [
        "invalid_request",
        "unauthorized_client",
        "access_denied",
        "unsupported_response_type",
        "invalid_scope",
        "server_error",
        "temporarily_unavailable",
        "invalid_client",
        "invalid_grant",
        "unsupported_grant_type",
        "interaction_required",
        "login_required",
        "account_selection_required",
        "consent_required",
        "invalid_request_uri",
        "invalid_request_object",
    ];
    CODES
        .into_iter()
        .find(|c| *c == text.trim())
        .unwrap_or("other")
}

/// Why a token request failed, in words that carry nothing the server sent but a known
/// error code (a parse error's text can quote the response body).
pub(crate) fn token_error_reason<RE, T>(
    e: &oauth2::RequestTokenError<RE, oauth2::StandardErrorResponse<T>>,
) -> &'static str
where
    RE: std::error::Error + 'static,
    T: oauth2::ErrorResponseType + std::fmt::Display,
{
    match e {
        oauth2::RequestTokenError::ServerResponse(r) => oauth_error_code(&r.error().to_string()),
        oauth2::RequestTokenError::Request(_) => "the token endpoint could not be reached",
        oauth2::RequestTokenError::Parse(..) => "the token response was unreadable",
        oauth2::RequestTokenError::Other(_) => "the token request failed",
    }
}

/// Registers the SMART routes: launch (EHR and standalone), the OAuth callback (at
/// `[smart] redirect_path`), logout, and the app pages in [`app`].
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/smart/launch", web::get().to(launch::ehr_launch))
        .route(
            "/smart/standalone",
            web::get().to(launch::standalone_launch),
        )
        .route("/smart/logout", web::post().to(launch::logout))
        .route("/.well-known/jwks.json", web::get().to(backend::jwks))
        .route("/smart/app", web::get().to(crate::smart::app::page))
        .route(
            "/smart/assets/app.css",
            web::get().to(crate::smart::app::style),
        )
        .route(
            "/smart/feedback",
            web::post().to(crate::smart::app::feedback),
        )
        .service(
            // The callback path is configurable: match it against the running configuration.
            web::resource("/{callback:.*}")
                .guard(guard::fn_guard(|ctx| {
                    ctx.app_data::<web::Data<SmartState>>()
                        .is_some_and(|s| ctx.head().uri.path() == s.callback_path)
                }))
                .route(web::get().to(launch::callback)),
        );
}

/// A small self-contained HTML page (no scripts, never cached): SMART pages carry patient
/// context, so no proxy or browser cache may keep them. `body` must already be escaped.
pub fn html_page(status: actix_web::http::StatusCode, title: &str, body: &str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} – bedside</title></head>\n<body><main><h1>{}</h1>\n{body}\n</main></body></html>\n",
            crate::html::escape(title),
            crate::html::escape(title)
        ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_text_escapes_line_breaks_and_is_bounded() {
        let forged = "http://x\n2026-01-01T00:00:00Z  INFO forged\r\u{2028}";
        let safe = log_text(forged);
        assert!(!safe.contains(['\n', '\r', '\u{2028}']), "{safe}");
        assert!(safe.contains("\\n2026"));
        assert_eq!(log_text(&"a".repeat(1000)).len(), 200);
    }

    #[test]
    fn oauth_error_codes_are_the_specs_or_other() {
        assert_eq!(oauth_error_code("access_denied"), "access_denied");
        assert_eq!(oauth_error_code(" login_required "), "login_required");
        assert_eq!(oauth_error_code("Patient Jane Doe not found"), "other");
        assert_eq!(oauth_error_code(""), "other");
    }

    #[test]
    fn launch_cookie_names_differ_per_state_and_hide_it() {
        let a = launch_cookie_name("state-a");
        assert!(a.starts_with(LAUNCH_COOKIE_PREFIX) && !a.contains("state-a"));
        assert_ne!(a, launch_cookie_name("state-b"));
        assert_eq!(a, launch_cookie_name("state-a"));
    }
}
