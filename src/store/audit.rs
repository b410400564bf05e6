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
    /// The call's `fhirServer` (normalised, see [`super::scope::fhir_base`]): part of the
    /// patient's pseudonym, as in the prediction record.
    pub fhir_server: Option<String>,
    /// `answered`, or the error code the caller got.
    pub outcome: String,
    pub http_status: u16,
    pub cards: usize,
    pub elapsed_ms: f64,
}

/// Longest client-supplied text an audit column keeps (`hookInstance`, `userId`, `tenant`…):
/// real values are ids of a few dozen characters; a caller cannot grow the table with more.
pub const MAX_AUDIT_TEXT: usize = 256;

/// `text` cut to [`MAX_AUDIT_TEXT`] bytes at a character boundary.
fn bound(text: &str) -> &str {
    let mut end = text.len().min(MAX_AUDIT_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl Store {
    /// Writes audit records in one transaction (the patient ids hashed first, client text
    /// bounded to [`MAX_AUDIT_TEXT`]).
    pub async fn record_audits(&self, records: &[AuditRecord]) -> Result<(), StoreError> {
        self.record_audit_rows(records.iter().map(|r| (r, 1))).await
    }

    /// Writes `(record, calls)` rows: `calls` > 1 for an aggregate of identical refusals.
    async fn record_audit_rows<'r>(
        &self,
        rows: impl Iterator<Item = (&'r AuditRecord, u64)>,
    ) -> Result<(), StoreError> {
        let salt = self.audit_salt().await?;
        let at = super::timestamp(chrono::Utc::now());
        let mut tx = self.pool.begin().await?;
        for (record, calls) in rows {
            let fhir_server = record.fhir_server.as_deref();
            sqlx::query(
                "INSERT INTO audit (at, action, service_id, hook_instance, client_iss, tenant,
                    user_id, patient_hash, outcome, http_status, cards, elapsed_ms, calls,
                    fhir_server)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            )
            .bind(&at)
            .bind(record.action)
            .bind(bound(&record.service_id))
            .bind(record.hook_instance.as_deref().map(bound))
            .bind(record.client_iss.as_deref().map(bound))
            .bind(record.tenant.as_deref().map(bound))
            .bind(record.user_id.as_deref().map(bound))
            .bind(
                record
                    .patient_id
                    .as_deref()
                    .map(|id| keyed_hash(salt, fhir_server.unwrap_or_default(), id)),
            )
            .bind(bound(&record.outcome))
            .bind(record.http_status as i64)
            .bind(record.cards as i64)
            .bind(record.elapsed_ms)
            .bind(i64::try_from(calls).unwrap_or(i64::MAX))
            .bind(fhir_server.map(bound))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The stable pseudonym of a patient id of the FHIR server `fhir_server` (normalised; empty
    /// when the call named none) in this deployment: sha256(salt ‖ 0 ‖ [fhir_server ‖ 0 ‖] id),
    /// hex. The same id on two FHIR servers is two patients. Audit and prediction rows use the
    /// same pseudonym, so a patient can be followed across both without the database ever
    /// holding the id.
    pub async fn pseudonym(
        &self,
        fhir_server: &str,
        patient_id: &str,
    ) -> Result<String, StoreError> {
        Ok(keyed_hash(
            self.audit_salt().await?,
            fhir_server,
            patient_id,
        ))
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
                    patient_hash, outcome, http_status, cards, calls
             FROM audit WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }
}

pub(super) fn keyed_hash(salt: &str, fhir_server: &str, patient_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update([0]);
    // A normalised URL holds no NUL byte, so the two parts cannot run into each other.
    if !fhir_server.is_empty() {
        h.update(fhir_server.as_bytes());
        h.update([0]);
    }
    h.update(patient_id.as_bytes());
    hex::encode(h.finalize())
}

/// Hands audit records to one background writer through a bounded queue, so a hook answer
/// never waits for the disk and a store slower than the traffic cannot grow memory without
/// bound: records that find the queue full are dropped and counted
/// (`bedside_audit_dropped_total`). The writer commits what has queued up as one transaction.
///
/// Calls refused before their request was read and without a verified client (a bad or missing
/// JWT, an unknown service, an unreadable body) are what anyone on the network can send: they
/// are not written one row each but counted per (action, service, outcome, status) and written
/// as one row with `calls` = the count every [`REFUSAL_FLUSH`], so a flood of them costs a
/// few rows a minute, not a row a call.
#[derive(Clone)]
pub struct AuditWriter {
    tx: tokio::sync::mpsc::Sender<AuditRecord>,
    refusals: std::sync::Arc<std::sync::Mutex<Refusals>>,
    pub dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Records per transaction at most.
const AUDIT_BATCH: usize = 256;
/// How often aggregated refusals are written.
pub const REFUSAL_FLUSH: std::time::Duration = std::time::Duration::from_secs(5);
/// Distinct refusal kinds kept between flushes; more are counted under one overflow row.
const MAX_REFUSAL_KINDS: usize = 256;

/// Unauthenticated refusals since the last flush: `(action, service, outcome, status)` → calls.
#[derive(Default)]
struct Refusals {
    counts: std::collections::HashMap<(&'static str, String, String, u16), u64>,
}

impl Refusals {
    fn add(&mut self, r: &AuditRecord) {
        let mut key = (
            r.action,
            bound(&r.service_id).to_owned(),
            bound(&r.outcome).to_owned(),
            r.http_status,
        );
        if !self.counts.contains_key(&key) && self.counts.len() >= MAX_REFUSAL_KINDS {
            key = (r.action, "*".to_owned(), "refused".to_owned(), 0);
        }
        let n = self.counts.entry(key).or_default();
        *n = n.saturating_add(1);
    }

    fn take(&mut self) -> Vec<(AuditRecord, u64)> {
        self.counts
            .drain()
            .map(|((action, service_id, outcome, http_status), calls)| {
                (
                    AuditRecord {
                        action,
                        service_id,
                        outcome,
                        http_status,
                        ..Default::default()
                    },
                    calls,
                )
            })
            .collect()
    }
}

/// Whether `r` is aggregated rather than written as its own row (see [`AuditWriter`]).
fn is_anonymous_refusal(r: &AuditRecord) -> bool {
    r.client_iss.is_none() && r.hook_instance.is_none() && r.http_status >= 400
}

impl AuditWriter {
    /// Starts the writer task on `store`, with room for `capacity` queued records.
    pub fn start(store: Store, capacity: usize) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<AuditRecord>(capacity);
        let refusals = std::sync::Arc::new(std::sync::Mutex::new(Refusals::default()));
        let pending = refusals.clone();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(AUDIT_BATCH);
            let mut tick = tokio::time::interval(REFUSAL_FLUSH);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let open = tokio::select! {
                    n = rx.recv_many(&mut batch, AUDIT_BATCH) => n > 0,
                    _ = tick.tick() => true,
                };
                let aggregated = pending.lock().unwrap_or_else(|p| p.into_inner()).take();
                let rows = batch
                    .iter()
                    .map(|r| (r, 1))
                    .chain(aggregated.iter().map(|(r, n)| (r, *n)));
                if !batch.is_empty() || !aggregated.is_empty() {
                    if let Err(e) = store.record_audit_rows(rows).await {
                        tracing::warn!(error = %e, records = batch.len() + aggregated.len(), "audit records not written");
                    }
                }
                batch.clear();
                if !open {
                    break;
                }
            }
        });
        Self {
            tx,
            refusals,
            dropped: std::sync::Arc::default(),
        }
    }

    /// Queues one record (never waits); an unauthenticated refusal is only counted.
    pub fn record(&self, record: AuditRecord) {
        if is_anonymous_refusal(&record) {
            self.refusals
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .add(&record);
            return;
        }
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
    /// How many calls the row stands for: 1, or more for aggregated unauthenticated refusals.
    pub calls: i64,
}
