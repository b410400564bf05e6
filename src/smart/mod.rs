//! SMART App Launch 2.x: bedside's clinician-facing pages, launched from the EHR (EHR launch,
//! `/smart/launch?iss=…&launch=…`) or opened on their own (standalone launch,
//! `/smart/standalone?iss=…`).
//!
//! The authorization code flow runs server-side with PKCE S256 (the `oauth2` crate): the
//! EHR's endpoints come from `{iss}/.well-known/smart-configuration`, but only for an `iss`
//! listed in `[smart] allowed_issuers` (any other is refused before it is contacted, so a
//! crafted launch link cannot make bedside call arbitrary hosts). Tokens stay on the server
//! ([`session`]); the browser only holds an opaque, HttpOnly session cookie.

pub mod app;
mod chart;
mod launch;
mod render;
pub mod session;
mod view;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{guard, web, HttpResponse};
use url::Url;

use crate::config::{Config, SmartSettings};
use crate::hooks::auth::{AuthError, JwksCache};
use crate::server::AppState;

pub use launch::read_callback_and_token_response;
pub use session::{csrf_ok, current, SmartSession};

/// Name of the session cookie (an opaque random id; tokens never reach the browser).
pub const SESSION_COOKIE: &str = "bedside_session";
/// How long a started launch waits for the authorization server's redirect back.
const PENDING_TTL: Duration = Duration::from_secs(600);
/// Most launches waiting at once: bounds memory when someone opens launch links in a loop.
const MAX_PENDING: usize = 10_000;
/// Time allowed for discovery and token requests to the EHR.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// SMART launch state of a running gateway: settings, the HTTP client used towards the EHR's
/// authorization server, launches in progress and signed-in sessions. Lives in
/// [`AppState::smart`] so every worker sees the same sessions.
pub struct SmartState {
    pub(crate) settings: SmartSettings,
    /// `public_url` + `redirect_path`: the `redirect_uri` sent to the authorization server.
    pub(crate) redirect_uri: String,
    /// Path of the callback as requests reach bedside (the path of `redirect_uri`).
    pub(crate) callback_path: String,
    /// Public path prefix + `/smart`: where the session cookie is sent.
    pub(crate) cookie_path: String,
    /// `Secure` on the cookie unless bedside is served as plain http on localhost.
    pub(crate) cookie_secure: bool,
    /// No redirects followed, bounded time: discovery and token calls.
    pub(crate) http: reqwest::Client,
    /// The authorization servers' signing keys, for `id_token`s.
    pub(crate) jwks: JwksCache,
    pub(crate) clock_skew: Duration,
    pending: Mutex<HashMap<String, launch::Pending>>,
    pub(crate) sessions: session::SessionStore,
}

impl SmartState {
    /// Builds the state from the validated configuration (no network access).
    pub fn new(config: &Config) -> Result<Self, AuthError> {
        let settings = config.smart.clone();
        let public = &config.public_url;
        let base = config.public_base();
        let redirect_uri = format!("{base}{}", settings.redirect_path);
        let callback_path = Url::parse(&redirect_uri)
            .map(|u| u.path().to_owned())
            .unwrap_or_else(|_| settings.redirect_path.clone());
        let prefix = public.path().trim_end_matches('/');
        let local_http = public.scheme() == "http"
            && matches!(public.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(HTTP_TIMEOUT)
            .timeout(HTTP_TIMEOUT)
            .build()
            .map_err(|_| AuthError::Setup)?;
        Ok(Self {
            redirect_uri,
            callback_path,
            cookie_path: format!("{prefix}/smart"),
            cookie_secure: !local_http,
            http,
            jwks: JwksCache::new(&config.auth)?,
            clock_skew: config.auth.clock_skew,
            pending: Mutex::default(),
            sessions: session::SessionStore::default(),
            settings,
        })
    }

    /// The app page's public path, where a successful launch lands.
    pub(crate) fn app_path(&self) -> String {
        let prefix = self.cookie_path.trim_end_matches("/smart");
        format!("{prefix}/smart/app")
    }

    /// Remembers a started launch under its `state`; false when too many are waiting.
    fn add_pending(&self, state: String, pending: launch::Pending) -> bool {
        let mut map = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_PENDING {
            map.retain(|_, p| p.created.elapsed() < PENDING_TTL);
        }
        if map.len() >= MAX_PENDING {
            return false;
        }
        map.insert(state, pending);
        true
    }

    /// Takes a launch by `state` (single use): None when unknown, used or expired.
    fn take_pending(&self, state: &str) -> Option<launch::Pending> {
        let mut map = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let pending = map.remove(state)?;
        (pending.created.elapsed() < PENDING_TTL).then_some(pending)
    }

    fn cookie(&self, value: &str, max_age: u64) -> String {
        format!(
            "{SESSION_COOKIE}={value}; Path={}; Max-Age={max_age}; HttpOnly; SameSite=Lax{}",
            self.cookie_path,
            if self.cookie_secure { "; Secure" } else { "" }
        )
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
                    ctx.app_data::<web::Data<AppState>>()
                        .is_some_and(|s| ctx.head().uri.path() == s.smart.callback_path)
                }))
                .route(web::get().to(launch::callback)),
        );
}

/// Escapes text for HTML element content and attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A small self-contained HTML page (no scripts, never cached): SMART pages carry patient
/// context, so no proxy or browser cache may keep them. `body` must already be escaped.
pub fn html_page(status: actix_web::http::StatusCode, title: &str, body: &str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} – bedside</title></head>\n<body><main><h1>{}</h1>\n{body}\n</main></body></html>\n",
            escape_html(title),
            escape_html(title)
        ))
}
