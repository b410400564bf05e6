//! Durable state: clinician feedback, audit records, predictions (the trail behind each card,
//! and what suppression and alert budgets read), and the feedback-analytics report.
//!
//! One API over two backends through `sqlx::AnyPool`: SQLite (the default, a file next to
//! the gateway) and PostgreSQL (`[storage] url = "postgres://…"`, for several gateways sharing
//! one database). Every statement is written once and runs on both: `$1…` placeholders,
//! `ON CONFLICT … DO NOTHING`, timestamps as RFC 3339 text with milliseconds and `Z` (which
//! sorts chronologically as text), integers as 64-bit, reals as doubles. Each backend has its
//! own migration folder with the same schema in its own types.
//!
//! SQLite runs in WAL mode with `synchronous = FULL`: a feedback call is answered 200 only
//! after its transaction is committed and fsynced, so a crash or power loss right after the
//! answer loses nothing. PostgreSQL gives the same guarantee with its defaults
//! (`synchronous_commit = on`). Everything else in bedside is stateless.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::AnyPool;

mod audit;
mod decision_lock;
mod export;
mod group_commit;
mod inputs;
mod lifecycle;
mod monitoring;
mod outcome;
mod predictions;
mod report;
mod retention;
mod scope;
mod settings;
mod shared;

pub use audit::{AuditRecord, AuditWriter, StoredAudit};
pub use decision_lock::DecisionGuard;
pub use export::{ExportFeedback, ExportPrediction};
pub use inputs::{ExportInput, ModelInput, QuasiIdentifiers};
pub use lifecycle::{NewDecision, ShadowScore, StoredDecision, StoredEvaluation, MAX_EVALUATED};
pub use monitoring::{MonitoredPrediction, MAX_MONITORED};
pub use outcome::{DataQuality, Mode, Outcome};
pub use predictions::{FeedbackMark, PatientView, PredictionRecord, StoredPrediction};
pub use report::{Report, ServiceReport, ShadowAgreement, Tally};
pub use retention::{Purged, Retention};
pub use scope::{fhir_base, Scope};
pub use settings::{DatabaseUrl, StoreSettings};

use crate::cds::wire::Feedback;
use crate::cds::Caller;

/// Migrations of a SQLite database. The first two files predate PostgreSQL support and
/// must never change: their checksums are recorded in every existing database.
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("src/store/migrations/sqlite");
/// The same schema in PostgreSQL types, version for version.
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("src/store/migrations/postgres");

/// PostgreSQL connections for decision locks per process: each card decision that holds keys
/// keeps one until its record is committed (a few milliseconds).
const LOCK_CONNECTIONS: u32 = 16;

/// How long a statement waits for a SQLite lock, and a caller for a pooled connection,
/// before the store gives up (and the caller answers 503).
const WAIT: Duration = Duration::from_secs(5);

/// Why the store could not do its job. Callers answer 503: the EHR may retry.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The SQLite file's folder is missing and cannot be made (permissions, read-only disk).
    #[error("cannot create the database folder `{path}`: {source}")]
    CreateDir {
        path: String,
        source: std::io::Error,
    },
    /// The database URL names no backend bedside has (only the scheme is kept: the rest
    /// may hold a password).
    #[error("unsupported database URL scheme `{0}`: use `sqlite:` or `postgres://`")]
    UnsupportedUrl(String),
    /// SQLite URLs are UTF-8; a path that is not cannot be opened.
    #[error("the database path `{0}` is not valid UTF-8")]
    NonUtf8Path(String),
    /// The database refused or failed: unreachable, locked past the busy timeout, full.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The schema could not be brought up to date (or a migration already applied changed).
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// The transaction that held this write (with others committed together) failed.
    #[error("database error (group commit): {0}")]
    Batch(String),
    /// A stored value bedside wrote cannot be read back (a timestamp, a JSON array):
    /// someone edited the database by hand, or a bug.
    #[error("malformed stored value: {0}")]
    Malformed(String),
    /// Another decision on the same patient, unit or call held its lock past the wait.
    #[error("another decision on the same patient, unit or call took too long")]
    Busy,
}

/// The database behind a [`Store`]: decides the migrations and the connection set-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend a URL names, by its scheme.
    fn of(url: &str) -> Result<Self, StoreError> {
        let scheme = url.split_once(':').map_or("", |(s, _)| s);
        match scheme.to_ascii_lowercase().as_str() {
            "sqlite" => Ok(Self::Sqlite),
            "postgres" | "postgresql" => Ok(Self::Postgres),
            _ => Err(StoreError::UnsupportedUrl(scheme.to_owned())),
        }
    }
}

/// A handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// The pseudonym salt, read (or created) once: every audit and prediction row needs it.
    salt: Arc<tokio::sync::OnceCell<String>>,
    /// The group-commit writer of prediction records, started by the first record.
    prediction_queue: Arc<
        tokio::sync::OnceCell<
            tokio::sync::mpsc::Sender<group_commit::Queued<predictions::PreparedRecord>>,
        >,
    >,
    /// In-process decision locks (see [`decision_lock`]).
    decision_locks: Arc<decision_lock::LocalLocks>,
    /// PostgreSQL only: connections that hold decisions' advisory locks until their records
    /// are committed (apart from `pool`, which commits them).
    lock_pool: Option<AnyPool>,
}

/// One stored feedback row, as read back (tests, analytics).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredFeedback {
    pub service_id: String,
    pub card_uuid: String,
    pub outcome: String,
    pub override_reason_code: Option<String>,
    pub outcome_timestamp: String,
    pub client_iss: Option<String>,
    pub tenant: Option<String>,
    pub raw_json: String,
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path` and applies migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_capped(path, None).await
    }

    /// [`Store::open`] with the database capped at `max_bytes`: beyond it writes fail with
    /// SQLite's "database or disk is full" — exactly as on a full disk — and callers answer 503
    /// with nothing half-written, while the disk itself keeps room for everything else.
    pub async fn open_capped(path: &Path, max_bytes: Option<u64>) -> Result<Self, StoreError> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.display().to_string(),
            source,
        })?;
        // An absolute path: a relative one would read as the URL's host.
        let dir = std::fs::canonicalize(dir).map_err(|source| StoreError::CreateDir {
            path: dir.display().to_string(),
            source,
        })?;
        let file = match path.file_name() {
            Some(name) => dir.join(name),
            None => dir,
        };
        let text = file
            .to_str()
            .ok_or_else(|| StoreError::NonUtf8Path(file.display().to_string()))?;
        let max_pages = max_bytes.map(|b| (b / SQLITE_PAGE_BYTES).max(1));
        Self::connect_with(&format!("sqlite://{}?mode=rwc", url_path(text)), max_pages).await
    }

    /// Connects to the database at `url` and applies migrations: `postgres://user@host/db`
    /// (any libpq-style URL sqlx accepts) or `sqlite:///abs/path.db?mode=rwc` (`mode=rwc`
    /// creates a missing file).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, None).await
    }

    async fn connect_with(url: &str, max_pages: Option<u64>) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of(url)?;
        let options: AnyConnectOptions = url.parse()?;
        let pool = match backend {
            Backend::Sqlite => AnyPoolOptions::new()
                .max_connections(4)
                .acquire_timeout(WAIT)
                .after_connect(move |conn, _meta| Box::pin(sqlite_pragmas(conn, max_pages))),
            Backend::Postgres => AnyPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(WAIT),
        }
        .connect_with(options)
        .await?;
        let migrations = match backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrations.run(&pool).await?;
        let lock_pool = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(
                AnyPoolOptions::new()
                    .max_connections(LOCK_CONNECTIONS)
                    .acquire_timeout(WAIT)
                    .connect_lazy_with(url.parse()?),
            ),
        };
        Ok(Self {
            pool,
            backend,
            salt: Arc::default(),
            prediction_queue: Arc::default(),
            decision_locks: Arc::default(),
            lock_pool,
        })
    }

    /// The configured store: `[storage] url` when set, else the SQLite file `[storage] path`.
    pub async fn open_configured(settings: &StoreSettings) -> Result<Self, StoreError> {
        match &settings.url {
            Some(url) => Self::connect(url.expose()).await,
            None => Self::open_capped(&settings.path, settings.max_bytes).await,
        }
    }

    /// Whether other gateway processes may write this store too (PostgreSQL). A SQLite file
    /// belongs to one process: whatever it recorded went through that process's memory first.
    pub fn is_shared(&self) -> bool {
        self.backend == Backend::Postgres
    }

    /// `sqlite` or `postgres`, for logs and metrics.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// Stores feedback items (each with its raw JSON) in one transaction. Returns how many
    /// were new; repeats of already-stored items are accepted and ignored.
    pub async fn record_feedback(
        &self,
        service_id: &str,
        client: Option<&Caller>,
        items: &[(Feedback, &str)],
    ) -> Result<u64, StoreError> {
        let received_at = timestamp(chrono::Utc::now());
        let mut tx = self.pool.begin().await?;
        let mut inserted = 0;
        for (item, raw) in items {
            let accepted = serde_json::to_string(
                &item
                    .accepted_suggestions
                    .iter()
                    .map(|s| s.id.as_str())
                    .collect::<Vec<_>>(),
            )
            .unwrap_or_else(|_| "[]".to_owned());
            let reason = item.override_reason.as_ref();
            let coding = reason.and_then(|r| r.reason.as_ref());
            let result = sqlx::query(
                "INSERT INTO feedback (service_id, card_uuid, outcome, accepted_suggestions,
                    override_reason_system, override_reason_code, override_reason_display,
                    override_user_comment, outcome_timestamp, client_iss, tenant, received_at, raw_json)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                 ON CONFLICT DO NOTHING",
            )
            .bind(service_id)
            .bind(&item.card)
            .bind(item.outcome.as_str())
            .bind(accepted)
            .bind(coding.map(|c| c.system.as_str()))
            .bind(coding.map(|c| c.code.as_str()))
            .bind(coding.and_then(|c| c.display.as_deref()))
            .bind(reason.and_then(|r| r.user_comment.as_deref()))
            .bind(&item.outcome_timestamp)
            .bind(client.map(|c| c.iss.as_str()))
            .bind(client.and_then(|c| c.tenant.as_deref()))
            .bind(&received_at)
            .bind(*raw)
            .execute(&mut *tx)
            .await?;
            inserted += result.rows_affected();
        }
        tx.commit().await?;
        Ok(inserted)
    }

    /// Feedback stored for a card, oldest first.
    pub async fn feedback_for_card(
        &self,
        card_uuid: &str,
    ) -> Result<Vec<StoredFeedback>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT service_id, card_uuid, outcome, override_reason_code, outcome_timestamp,
                    client_iss, tenant, raw_json
             FROM feedback WHERE card_uuid = $1 ORDER BY id",
        )
        .bind(card_uuid)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Number of stored feedback rows.
    pub async fn feedback_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM feedback")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Closes the pool (for SQLite, checkpointing the WAL).
    pub async fn close(&self) {
        self.pool.close().await;
        if let Some(locks) = &self.lock_pool {
            locks.close().await;
        }
    }
}

/// SQLite's default page size, which `max_page_count` counts in.
const SQLITE_PAGE_BYTES: u64 = 4096;

/// Per SQLite connection: the lock wait, durability and integrity settings, and the size cap.
async fn sqlite_pragmas(
    conn: &mut sqlx::AnyConnection,
    max_pages: Option<u64>,
) -> Result<(), sqlx::Error> {
    // `Executor::execute` on the connection: its boxed future is `Send` for every lifetime,
    // which `after_connect` needs (a generic `raw_sql(..).execute(conn)` is not, to rustc).
    sqlx::Executor::execute(
        &mut *conn,
        "PRAGMA busy_timeout = 5000;
         PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;",
    )
    .await?;
    if let Some(pages) = max_pages {
        let pragma = format!("PRAGMA max_page_count = {pages};");
        sqlx::Executor::execute(&mut *conn, pragma.as_str()).await?;
    }
    Ok(())
}

/// How every instant is stored: RFC 3339 in UTC with milliseconds and `Z`, fixed width, so
/// text order is time order on both backends.
fn timestamp(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Reads back an instant written by [`timestamp`] (or any RFC 3339 text).
fn parse_timestamp(text: &str) -> Result<chrono::DateTime<chrono::Utc>, StoreError> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| StoreError::Malformed(format!("timestamp `{text}`: {e}")))
}

/// `path` percent-encoded for a `sqlite://` URL: everything but unreserved characters and
/// `/`, so `?`, `#`, `%` and spaces in a folder name survive the round trip.
fn url_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for byte in path.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn migrations_apply_once_and_a_reopen_finds_them_applied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested folder/with ?#% chars/bedside.db");
        let store = Store::open(&path).await.unwrap();
        assert_eq!(store.backend_name(), "sqlite");
        assert_eq!(store.feedback_count().await.unwrap(), 0);
        let pseudonym = store.pseudonym("", "p1").await.unwrap();
        store.close().await;
        assert!(path.is_file(), "the file is where it was asked for");

        let reopened = Store::open(&path).await.unwrap();
        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
                .fetch_all(&reopened.pool)
                .await
                .unwrap();
        assert_eq!(applied, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            reopened.pseudonym("", "p1").await.unwrap(),
            pseudonym,
            "the salt survives a reopen"
        );
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&reopened.pool)
            .await
            .unwrap();
        assert_eq!(journal, "wal");
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&reopened.pool)
            .await
            .unwrap();
        assert_eq!(synchronous, 2, "FULL");
        reopened.close().await;
    }

    #[test]
    fn both_backends_have_the_same_migration_versions() {
        let versions = |m: &Migrator| {
            m.iter()
                .map(|m| (m.version, m.description.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(versions(&SQLITE_MIGRATIONS), versions(&POSTGRES_MIGRATIONS));
    }

    #[test]
    fn urls_name_their_backend() {
        assert_eq!(Backend::of("sqlite:x.db").unwrap(), Backend::Sqlite);
        assert_eq!(Backend::of("postgres://u@h/db").unwrap(), Backend::Postgres);
        assert_eq!(
            Backend::of("postgresql://u@h/db").unwrap(),
            Backend::Postgres
        );
        let err = Backend::of("mysql://u:secret@h/db").unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn url_paths_escape_what_a_url_would_misread() {
        assert_eq!(url_path("/a b/c?d#e%f.db"), "/a%20b/c%3Fd%23e%25f.db");
    }
}
