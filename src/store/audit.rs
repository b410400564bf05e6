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
    /// Writes one audit record.
    pub async fn record_audit(&self, record: &AuditRecord) -> Result<(), StoreError> {
        let patient_hash = match &record.patient_id {
            Some(id) => Some(self.pseudonym(id).await?),
            None => None,
        };
        sqlx::query(
            "INSERT INTO audit (at, action, service_id, hook_instance, client_iss, tenant, user_id,
                patient_hash, outcome, http_status, cards, elapsed_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .bind(record.action)
        .bind(&record.service_id)
        .bind(&record.hook_instance)
        .bind(&record.client_iss)
        .bind(&record.tenant)
        .bind(&record.user_id)
        .bind(patient_hash)
        .bind(&record.outcome)
        .bind(record.http_status as i64)
        .bind(record.cards as i64)
        .bind(record.elapsed_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Writes the record in the background: the caller's answer does not wait for the disk.
    pub fn spawn_audit(&self, record: AuditRecord) {
        let store = self.clone();
        tokio::spawn(async move {
            if let Err(e) = store.record_audit(&record).await {
                tracing::warn!(error = %e, service = %record.service_id, "audit record not written");
            }
        });
    }

    /// The stable pseudonym of a patient id in this deployment: sha256(salt ‖ 0 ‖ id), hex.
    pub async fn pseudonym(&self, patient_id: &str) -> Result<String, StoreError> {
        let salt = self.audit_salt().await?;
        let mut h = Sha256::new();
        h.update(salt.as_bytes());
        h.update([0]);
        h.update(patient_id.as_bytes());
        Ok(hex::encode(h.finalize()))
    }

    async fn audit_salt(&self) -> Result<String, StoreError> {
        let fresh = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        sqlx::query("INSERT OR IGNORE INTO meta (key, value) VALUES ('audit_salt', ?)")
            .bind(fresh)
            .execute(&self.pool)
            .await?;
        Ok(
            sqlx::query_scalar("SELECT value FROM meta WHERE key = 'audit_salt'")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Audit rows, oldest first (tests, reports).
    pub async fn audit_rows(&self) -> Result<Vec<StoredAudit>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT action, service_id, hook_instance, client_iss, tenant, user_id, patient_hash,
                    outcome, http_status, cards FROM audit ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?)
    }
}

/// An audit row as read back.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredAudit {
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
