//! `[smart]`, validated: what SMART App Launch runs with.

use std::time::Duration;

/// Validated `[smart]` settings.
#[derive(Debug, Clone)]
pub struct SmartSettings {
    pub client_id: String,
    /// Read from `client_secret_env` at start-up; `Debug` redacts it.
    pub client_secret: Option<oauth2::ClientSecret>,
    /// Starts with `/`; appended to `public_url`.
    pub redirect_path: String,
    pub scopes: String,
    pub standalone_scopes: String,
    pub session_ttl: Duration,
    /// Without a trailing slash; a launch `iss` must equal one (after trimming its own).
    pub allowed_issuers: Vec<String>,
    /// At least 1.
    pub max_pending_launches: usize,
    /// At least 1, at most `max_pending_launches`.
    pub max_pending_launches_per_source: usize,
    /// Between 1 s and 24 h.
    pub discovery_ttl: Duration,
    /// At most 24 h (0: failures are not remembered).
    pub discovery_failure_ttl: Duration,
}
