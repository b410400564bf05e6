//! Where the store lives (`[storage]`), validated.

use std::fmt;
use std::path::PathBuf;

use url::Url;

/// A database URL. It may carry a password, so `Debug` shows only its scheme and host.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Wraps a URL the configuration validated.
    pub fn new(url: String) -> Self {
        Self(url)
    }

    /// The full URL, password included: for connecting, never for logs.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Url::parse(&self.0) {
            Ok(url) => write!(
                f,
                "DatabaseUrl({}://{})",
                url.scheme(),
                url.host_str().unwrap_or("")
            ),
            Err(_) => f.write_str("DatabaseUrl(..)"),
        }
    }
}

/// `[storage]`: PostgreSQL when `url` is set, else the SQLite file `path`.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub path: PathBuf,
    pub url: Option<DatabaseUrl>,
    /// `max_size_mb` in bytes (SQLite).
    pub max_bytes: Option<u64>,
}
