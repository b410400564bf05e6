//! Predictions: one row per service call that reached a model decision, whether a card was
//! shown or not. The audit trail behind each card, and the state that suppression (the last
//! card shown, the last override) and per-unit alert budgets are computed from.

use chrono::{DateTime, Utc};

use super::{parse_timestamp, timestamp, Store, StoreError};

/// Every scored, abstained, suppressed or shadow call of a service: the audit trail behind each card.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictionRecord {
    /// Prediction id = the card uuid (unique), so feedback on a card finds its prediction.
    pub id: String,
    /// When the service decided (stored to the millisecond).
    pub at: DateTime<Utc>,
    /// The CDS service that was called.
    pub service_id: String,
    /// The hook it was called for (`patient-view`, …).
    pub hook: String,
    /// The EHR's `hookInstance`: pairs the active and shadow predictions of one call.
    pub hook_instance: String,
    /// Model name, as in `models/<name>/`.
    pub model: String,
    /// Model version, as in `models/<name>/<version>/`.
    pub model_version: String,
    /// `"active"` (its card may be shown) or `"shadow"` (scored and recorded only).
    pub mode: &'static str,
    /// The raw `context.patientId`; stored ONLY as the salted pseudonym (the same as audit's).
    pub patient_id: Option<String>,
    /// The ward/unit the alert budget counts against.
    pub unit: Option<String>,
    /// The model's risk; `None` when it abstained or there was no score.
    pub risk: Option<f64>,
    /// `"info" | "warning" | "critical"` as shown (after any downgrade); for a shadow
    /// prediction, what it would have shown.
    pub indicator: Option<String>,
    /// `"shown" | "below_threshold" | "abstained" | "suppressed" | "downgraded" |
    /// "deduplicated" | "shadow" | "no_score" | "disabled"`.
    pub outcome: &'static str,
    /// Why it abstained, was suppressed or downgraded (no PHI).
    pub reason: Option<String>,
    /// The resources the input tensor came from (`"Observation/abc"`), stored as a JSON array.
    pub input_refs: Vec<String>,
    /// sha256 of the input tensor: the same inputs can be shown to have given the same risk.
    pub tensor_sha256: Option<String>,
    /// Time the service took for this decision.
    pub latency_ms: f64,
}

/// A prediction as read back (tests, the SMART app): [`PredictionRecord`]'s fields, with the
/// patient's pseudonym where the record had the id.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredPrediction {
    /// The card uuid.
    pub id: String,
    /// When the service decided, to the millisecond.
    pub at: DateTime<Utc>,
    /// The CDS service.
    pub service_id: String,
    /// The hook.
    pub hook: String,
    /// The EHR's `hookInstance`.
    pub hook_instance: String,
    /// Model name.
    pub model: String,
    /// Model version.
    pub model_version: String,
    /// `active` or `shadow`.
    pub mode: String,
    /// The salted pseudonym of `context.patientId` (see [`Store::pseudonym`]).
    pub patient_hash: Option<String>,
    /// The ward/unit.
    pub unit: Option<String>,
    /// The model's risk, if it scored.
    pub risk: Option<f64>,
    /// The card's indicator (or the shadow's would-be indicator).
    pub indicator: Option<String>,
    /// What became of the prediction (`shown`, `suppressed`, …).
    pub outcome: String,
    /// Why it abstained, was suppressed or downgraded.
    pub reason: Option<String>,
    /// The input resources (`"Observation/abc"`).
    pub input_refs: Vec<String>,
    /// sha256 of the input tensor.
    pub tensor_sha256: Option<String>,
    /// Time the service took.
    pub latency_ms: f64,
}

/// The row as the database returns it; [`StoredPrediction`] after parsing `at` and `input_refs`.
#[derive(sqlx::FromRow)]
struct PredictionRow {
    id: String,
    at: String,
    service_id: String,
    hook: String,
    hook_instance: String,
    model: String,
    model_version: String,
    mode: String,
    patient_hash: Option<String>,
    unit: Option<String>,
    risk: Option<f64>,
    indicator: Option<String>,
    outcome: String,
    reason: Option<String>,
    input_refs: String,
    tensor_sha256: Option<String>,
    latency_ms: f64,
}

/// The columns of [`PredictionRow`], for every `SELECT` of predictions.
const COLUMNS: &str = "id, at, service_id, hook, hook_instance, model, model_version, mode,
    patient_hash, unit, risk, indicator, outcome, reason, input_refs, tensor_sha256, latency_ms";

impl TryFrom<PredictionRow> for StoredPrediction {
    type Error = StoreError;

    fn try_from(row: PredictionRow) -> Result<Self, StoreError> {
        let input_refs = serde_json::from_str(&row.input_refs).map_err(|e| {
            StoreError::Malformed(format!("input_refs of prediction `{}`: {e}", row.id))
        })?;
        Ok(Self {
            at: parse_timestamp(&row.at)?,
            input_refs,
            id: row.id,
            service_id: row.service_id,
            hook: row.hook,
            hook_instance: row.hook_instance,
            model: row.model,
            model_version: row.model_version,
            mode: row.mode,
            patient_hash: row.patient_hash,
            unit: row.unit,
            risk: row.risk,
            indicator: row.indicator,
            outcome: row.outcome,
            reason: row.reason,
            tensor_sha256: row.tensor_sha256,
            latency_ms: row.latency_ms,
        })
    }
}

/// A record ready to insert: the patient already pseudonymised, the references serialised.
pub(super) struct PreparedRecord {
    record: PredictionRecord,
    patient_hash: Option<String>,
    input_refs: String,
}

/// Inserts one record within `tx`. A repeat of an id already stored is ignored.
pub(super) async fn insert_prediction(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    r: &PreparedRecord,
) -> Result<(), StoreError> {
    let p = &r.record;
    sqlx::query(
        "INSERT INTO predictions (id, at, service_id, hook, hook_instance, model,
            model_version, mode, patient_hash, unit, risk, indicator, outcome, reason,
            input_refs, tensor_sha256, latency_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
         ON CONFLICT (id) DO NOTHING",
    )
    // Not a cached prepared statement: sqlx 0.8's Any driver sends a NULL f64 to
    // PostgreSQL typed float4, and a statement prepared with that `risk` would refuse
    // every later 8-byte score on the connection ("incorrect binary data format"; sqlx
    // issue #4284, fixed after 0.8.6).
    // Parsed per call, each insert gets the types of its own arguments.
    .persistent(false)
    .bind(&p.id)
    .bind(timestamp(p.at))
    .bind(&p.service_id)
    .bind(&p.hook)
    .bind(&p.hook_instance)
    .bind(&p.model)
    .bind(&p.model_version)
    .bind(p.mode)
    .bind(&r.patient_hash)
    .bind(&p.unit)
    .bind(p.risk)
    .bind(&p.indicator)
    .bind(p.outcome)
    .bind(&p.reason)
    .bind(&r.input_refs)
    .bind(&p.tensor_sha256)
    .bind(p.latency_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// Records a prediction (the patient id pseudonymised first) and returns once it is
    /// committed. Concurrent calls share one transaction ([`super::group_commit`]). A repeat
    /// of an id already stored is ignored: the first record of a card stands.
    pub async fn record_prediction(&self, p: &PredictionRecord) -> Result<(), StoreError> {
        let patient_hash = match &p.patient_id {
            Some(id) => Some(self.pseudonym(id).await?),
            None => None,
        };
        let input_refs = serde_json::to_string(&p.input_refs)
            .map_err(|e| StoreError::Malformed(format!("input_refs: {e}")))?;
        let record = PreparedRecord {
            record: p.clone(),
            patient_hash,
            input_refs,
        };
        let queue = self
            .prediction_queue
            .get_or_init(|| async { super::group_commit::start(self.pool.clone()) })
            .await;
        let (done, committed) = tokio::sync::oneshot::channel();
        match queue
            .send(super::group_commit::Queued { record, done })
            .await
        {
            Ok(()) => match committed.await {
                Ok(result) => result.map_err(StoreError::Batch),
                Err(_) => Err(StoreError::Batch("the prediction writer stopped".into())),
            },
            // The writer's runtime is gone (a server that was stopped): write directly.
            Err(mpsc_error) => {
                let mut tx = self.pool.begin().await?;
                insert_prediction(&mut tx, &mpsc_error.0.record).await?;
                tx.commit().await?;
                Ok(())
            }
        }
    }

    /// The prediction behind card `id`, if recorded.
    pub async fn prediction(&self, id: &str) -> Result<Option<StoredPrediction>, StoreError> {
        sqlx::query_as::<_, PredictionRow>(&format!(
            "SELECT {COLUMNS} FROM predictions WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .map(StoredPrediction::try_from)
        .transpose()
    }

    /// Most recent `shown` or `downgraded` active prediction of `service_id` for this patient since `since`.
    pub async fn last_shown(
        &self,
        service_id: &str,
        patient_id: &str,
        since: DateTime<Utc>,
    ) -> Result<Option<StoredPrediction>, StoreError> {
        let patient_hash = self.pseudonym(patient_id).await?;
        sqlx::query_as::<_, PredictionRow>(&format!(
            "SELECT {COLUMNS} FROM predictions
             WHERE service_id = $1 AND patient_hash = $2 AND at >= $3
               AND mode = 'active' AND outcome IN ('shown', 'downgraded')
             ORDER BY at DESC, id DESC
             LIMIT 1"
        ))
        .bind(service_id)
        .bind(patient_hash)
        .bind(timestamp(since))
        .fetch_optional(&self.pool)
        .await?
        .map(StoredPrediction::try_from)
        .transpose()
    }

    /// Most recent override (feedback outcome "overridden") with `reason_code` on a card (prediction) of this service and patient since `since`: its outcome_timestamp / received time.
    ///
    /// The time is the clinician's `outcomeTimestamp`, but never later than when bedside
    /// received the feedback: an EHR clock running fast cannot stretch a suppression.
    pub async fn last_override(
        &self,
        service_id: &str,
        patient_id: &str,
        reason_code: &str,
        since: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let patient_hash = self.pseudonym(patient_id).await?;
        // The time returned is at most `received_at`, so `received_at >= since` loses nothing.
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT f.outcome_timestamp, f.received_at
             FROM predictions p JOIN feedback f ON f.card_uuid = p.id
             WHERE p.service_id = $1 AND p.patient_hash = $2
               AND f.outcome = 'overridden' AND f.override_reason_code = $3
               AND f.received_at >= $4",
        )
        .bind(service_id)
        .bind(patient_hash)
        .bind(reason_code)
        .bind(timestamp(since))
        .fetch_all(&self.pool)
        .await?;
        let mut latest = None;
        for (outcome_timestamp, received_at) in rows {
            let received = parse_timestamp(&received_at)?;
            // Validated as RFC 3339 when it arrived; if not, the receipt time stands in.
            let at = parse_timestamp(&outcome_timestamp).map_or(received, |t| t.min(received));
            if at >= since && latest.is_none_or(|l| at > l) {
                latest = Some(at);
            }
        }
        Ok(latest)
    }

    /// Warning/critical cards actually shown (outcome "shown", indicator warning|critical, mode active) for `unit` since `since`.
    pub async fn alerts_shown(&self, unit: &str, since: DateTime<Utc>) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM predictions
             WHERE unit = $1 AND at >= $2
               AND mode = 'active' AND outcome = 'shown' AND indicator IN ('warning', 'critical')",
        )
        .bind(unit)
        .bind(timestamp(since))
        .fetch_one(&self.pool)
        .await?)
    }
}

/// A clinician's answer on one card, placed on the SMART app's risk trajectory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedbackMark {
    /// The card (= prediction) it answers.
    pub card_uuid: String,
    /// `accepted` or `overridden`.
    pub outcome: String,
    /// The override reason's code, if one was given.
    pub reason_code: Option<String>,
    /// The clinician's `outcomeTimestamp`, never later than its receipt.
    pub at: DateTime<Utc>,
}

impl Store {
    /// Every prediction about this patient since `since`, oldest first: the SMART app's
    /// trajectories. The id is pseudonymised first, as when it was recorded.
    pub async fn predictions_for_patient(
        &self,
        patient_id: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<StoredPrediction>, StoreError> {
        let patient_hash = self.pseudonym(patient_id).await?;
        sqlx::query_as::<_, PredictionRow>(&format!(
            "SELECT {COLUMNS} FROM predictions
             WHERE patient_hash = $1 AND at >= $2
             ORDER BY at, id"
        ))
        .bind(patient_hash)
        .bind(timestamp(since))
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(StoredPrediction::try_from)
        .collect()
    }

    /// Feedback on this patient's cards received since `since` (CDS Hooks feedback and the
    /// SMART app's alike), oldest first.
    pub async fn feedback_for_patient(
        &self,
        patient_id: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<FeedbackMark>, StoreError> {
        let patient_hash = self.pseudonym(patient_id).await?;
        let rows: Vec<(String, String, Option<String>, String, String)> = sqlx::query_as(
            "SELECT f.card_uuid, f.outcome, f.override_reason_code, f.outcome_timestamp, f.received_at
             FROM predictions p JOIN feedback f ON f.card_uuid = p.id
             WHERE p.patient_hash = $1 AND f.received_at >= $2
             ORDER BY f.id",
        )
        .bind(patient_hash)
        .bind(timestamp(since))
        .fetch_all(&self.pool)
        .await?;
        let mut marks = Vec::with_capacity(rows.len());
        for (card_uuid, outcome, reason_code, outcome_timestamp, received_at) in rows {
            let received = parse_timestamp(&received_at)?;
            let at = parse_timestamp(&outcome_timestamp).map_or(received, |t| t.min(received));
            marks.push(FeedbackMark {
                card_uuid,
                outcome,
                reason_code,
                at,
            });
        }
        Ok(marks)
    }

    /// The prediction `id` if it is about this patient, else `None`: the app takes feedback
    /// only on the launched patient's own cards.
    pub async fn prediction_about(
        &self,
        id: &str,
        patient_id: &str,
    ) -> Result<Option<StoredPrediction>, StoreError> {
        let Some(p) = self.prediction(id).await? else {
            return Ok(None);
        };
        let hash = self.pseudonym(patient_id).await?;
        Ok((p.patient_hash.as_deref() == Some(hash.as_str())).then_some(p))
    }
}
