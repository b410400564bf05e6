//! Durable state: clinician feedback, audit records (later: suppression state, shadow scores).
//!
//! SQLite in WAL mode with `synchronous = FULL`: a feedback call is answered 200 only after its
//! transaction is committed and fsynced, so a crash or power loss right after the answer loses
//! nothing. Everything else in bedside is stateless.

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

mod audit;

pub use audit::{AuditRecord, AuditWriter, StoredAudit};

use crate::hooks::auth::VerifiedClient;
use crate::hooks::wire::Feedback;

/// Why the store could not do its job. Callers answer 503: the EHR may retry.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the database folder `{path}`: {source}")]
    CreateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
}

/// A handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
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
    /// Opens (creating if needed) the database at `path` and applies migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        sqlx::migrate!("src/store/migrations").run(&pool).await?;
        Ok(Self { pool })
    }

    /// Stores feedback items (each with its raw JSON) in one transaction. Returns how many
    /// were new; repeats of already-stored items are accepted and ignored.
    pub async fn record_feedback(
        &self,
        service_id: &str,
        client: Option<&VerifiedClient>,
        items: &[(Feedback, &str)],
    ) -> Result<u64, StoreError> {
        let received_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
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
                "INSERT OR IGNORE INTO feedback (service_id, card_uuid, outcome, accepted_suggestions,
                    override_reason_system, override_reason_code, override_reason_display,
                    override_user_comment, outcome_timestamp, client_iss, tenant, received_at, raw_json)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
             FROM feedback WHERE card_uuid = ? ORDER BY id",
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

    /// Closes the pool, checkpointing the WAL.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}
