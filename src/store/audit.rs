//! Audit records: who called which service about which (pseudonymised) patient, and what
//! came of it. Security reviewers ask for this; it carries no PHI.

use sha2::{Digest, Sha256};

use super::{Store, StoreError};

/// One call, as audited.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditRecord {
    /// `hook` or `feedback`.
    pub action: &'static str,
    pub service_id: String,
    pub hook_instance: Option<String>,
    pub client_iss: Option<String>,
    pub tenant: Option<String>,
    /// `context.userId` (the clinician, e.g. `Practitioner/123`).
    pub user_id: Option<String>,
    /// `context.patientId`, hashed with the store's secret salt before it is written.
    pub patient_id: Option<String>,
    /// `answered`, or the error code the caller got.
    pub outcome: String,
    pub http_status: u16,
    pub cards: usize,
    pub elapsed_ms: f64,
}

impl Store {
    /// Writes audit records in one transaction (the patient ids hashed first).
    pub async fn record_audits(&self, records: &[AuditRecord]) -> Result<(), StoreError> {
        let salt = self.audit_salt().await?;
        let at = super::timestamp(chrono::Utc::now());
        let mut tx = self.pool.begin().await?;
        for record in records {
            sqlx::query(
                "INSERT INTO audit (at, action, service_id, hook_instance, client_iss, tenant,
                    user_id, patient_hash, outcome, http_status, cards, elapsed_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .bind(&at)
            .bind(record.action)
            .bind(&record.service_id)
            .bind(&record.hook_instance)
            .bind(&record.client_iss)
            .bind(&record.tenant)
            .bind(&record.user_id)
            .bind(record.patient_id.as_deref().map(|id| keyed_hash(salt, id)))
            .bind(&record.outcome)
            .bind(record.http_status as i64)
            .bind(record.cards as i64)
            .bind(record.elapsed_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The stable pseudonym of a patient id in this deployment: sha256(salt ‖ 0 ‖ id), hex.
    /// Audit and prediction rows use the same one, so a patient can be followed across both
    /// without the database ever holding the id.
    pub async fn pseudonym(&self, patient_id: &str) -> Result<String, StoreError> {
        Ok(keyed_hash(self.audit_salt().await?, patient_id))
    }

    /// The deployment's secret salt: created by the first caller on a new database (several
    /// gateways on one PostgreSQL database agree on whichever insert won), then cached.
    async fn audit_salt(&self) -> Result<&str, StoreError> {
        let salt = self
            .salt
            .get_or_try_init(|| async {
                let fresh = format!(
                    "{}{}",
                    uuid::Uuid::new_v4().simple(),
                    uuid::Uuid::new_v4().simple()
                );
                sqlx::query(
                    "INSERT INTO meta (key, value) VALUES ('audit_salt', $1) ON CONFLICT DO NOTHING",
                )
                .bind(fresh)
                .execute(&self.pool)
                .await?;
                sqlx::query_scalar::<_, String>("SELECT value FROM meta WHERE key = 'audit_salt'")
                    .fetch_one(&self.pool)
                    .await
            })
            .await?;
        Ok(salt)
    }

    /// Audit rows, oldest first (tests, reports).
    pub async fn audit_rows(&self) -> Result<Vec<StoredAudit>, StoreError> {
        self.audit_after(0, i64::MAX).await
    }

    /// Up to `limit` audit rows with an id above `after`, oldest first: the AuditEvent export
    /// pages with the last id it returned.
    pub async fn audit_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<StoredAudit>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, at, action, service_id, hook_instance, client_iss, tenant, user_id,
                    patient_hash, outcome, http_status, cards
             FROM audit WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }
}

pub(super) fn keyed_hash(salt: &str, patient_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update([0]);
    h.update(patient_id.as_bytes());
    hex::encode(h.finalize())
}

/// Hands audit records to one background writer through a bounded queue, so a hook answer
/// never waits for the disk and a store slower than the traffic cannot grow memory without
/// bound: records that find the queue full are dropped and counted
/// (`bedside_audit_dropped_total`). The writer commits what has queued up as one transaction.
pub struct AuditWriter {
    tx: tokio::sync::mpsc::Sender<AuditRecord>,
    pub dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Records per transaction at most.
const AUDIT_BATCH: usize = 256;

impl AuditWriter {
    /// Starts the writer task on `store`, with room for `capacity` queued records.
    pub fn start(store: Store, capacity: usize) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<AuditRecord>(capacity);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(AUDIT_BATCH);
            while rx.recv_many(&mut batch, AUDIT_BATCH).await > 0 {
                if let Err(e) = store.record_audits(&batch).await {
                    tracing::warn!(error = %e, records = batch.len(), "audit records not written");
                }
                batch.clear();
            }
        });
        Self {
            tx,
            dropped: std::sync::Arc::default(),
        }
    }

    /// Queues one record (never waits).
    pub fn record(&self, record: AuditRecord) {
        if self.tx.try_send(record).is_err() {
            crate::metrics::inc(&self.dropped);
        }
    }
}

/// An audit row as read back.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredAudit {
    /// Row number: increasing, so `after` pages through the trail without gaps.
    pub id: i64,
    /// When it was recorded (RFC 3339, milliseconds, `Z`).
    pub at: String,
    pub action: String,
    pub service_id: String,
    pub hook_instance: Option<String>,
    pub client_iss: Option<String>,
    pub tenant: Option<String>,
    pub user_id: Option<String>,
    pub patient_hash: Option<String>,
    pub outcome: String,
    pub http_status: i64,
    pub cards: i64,
}
