//! Predictions: one row per service call that reached a model decision, whether a card was
//! shown or not. The audit trail behind each card, and the state that suppression (the last
//! card shown, the last override) and per-unit alert budgets are computed from.

use chrono::{DateTime, Utc};

use super::inputs::{insert_input, ModelInput, PreparedInput};
use super::{parse_timestamp, timestamp, DataQuality, Mode, Outcome, Scope, Store, StoreError};

/// Every scored, abstained, suppressed or shadow call of a service: the audit trail behind each
/// card. One type as written ([`Store::record_prediction`], with the raw `patient_id`) and as
/// read back ([`StoredPrediction`], with the pseudonym in `patient_hash`); its JSON (the admin
/// API) never carries the raw id.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
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
    /// Whether its card may be shown, or it was scored and recorded only.
    pub mode: Mode,
    /// Whose call it was: client, tenant, FHIR server. Every later read about the patient
    /// (suppression, budgets, the SMART app, feedback) is limited to the same scope.
    #[serde(flatten)]
    pub scope: Scope,
    /// The raw `context.patientId` of a record being written; stored ONLY as the salted
    /// pseudonym (the same as audit's), so a record read back has none. Never serialised.
    #[serde(skip)]
    pub patient_id: Option<String>,
    /// The salted pseudonym of `context.patientId` (see [`Store::pseudonym`]) of a record read
    /// back; ignored when writing (the store computes it).
    pub patient_hash: Option<String>,
    /// The ward/unit the alert budget counts against.
    pub unit: Option<String>,
    /// The model's risk; `None` when it abstained or there was no score.
    pub risk: Option<f64>,
    /// `"info" | "warning" | "critical"` as shown (after any downgrade); for a shadow
    /// prediction, what it would have shown.
    pub indicator: Option<String>,
    /// What the service did with the call.
    pub outcome: Outcome,
    /// Why it abstained, was suppressed or downgraded (no PHI).
    pub reason: Option<String>,
    /// The resources the input tensor came from (`"Observation/abc"`), stored as a JSON array.
    pub input_refs: Vec<String>,
    /// sha256 of the input tensor: the same inputs can be shown to have given the same risk.
    pub tensor_sha256: Option<String>,
    /// What the prediction was made from: measurements used, observations left out by reason.
    /// `None` when nothing was scored (the service was switched off).
    pub data_quality: Option<DataQuality>,
    /// Time the service took for this decision.
    pub latency_ms: f64,
    /// The model input itself, kept (in `prediction_inputs`) only for services with
    /// `[learning] store_inputs`; never read back with the record.
    #[serde(skip)]
    pub inputs: Option<Box<ModelInput>>,
}

/// A prediction as read back: the same record, with `patient_id` empty (the id itself is
/// never stored) and `patient_hash` holding its pseudonym.
pub type StoredPrediction = PredictionRecord;

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
    client_iss: String,
    tenant: String,
    fhir_server: String,
    patient_hash: Option<String>,
    unit: Option<String>,
    risk: Option<f64>,
    indicator: Option<String>,
    outcome: String,
    reason: Option<String>,
    input_refs: String,
    tensor_sha256: Option<String>,
    latency_ms: f64,
    data_quality: Option<String>,
}

/// The columns of [`PredictionRow`], for every `SELECT` of predictions.
const COLUMNS: &str = "id, at, service_id, hook, hook_instance, model, model_version, mode,
    client_iss, tenant, fhir_server, patient_hash, unit, risk, indicator, outcome, reason, input_refs, tensor_sha256, latency_ms,
    data_quality";

impl TryFrom<PredictionRow> for StoredPrediction {
    type Error = StoreError;

    fn try_from(row: PredictionRow) -> Result<Self, StoreError> {
        let input_refs = serde_json::from_str(&row.input_refs).map_err(|e| {
            StoreError::Malformed(format!("input_refs of prediction `{}`: {e}", row.id))
        })?;
        let mode = Mode::parse(&row.mode).ok_or_else(|| {
            StoreError::Malformed(format!("mode of prediction `{}`: `{}`", row.id, row.mode))
        })?;
        let outcome = Outcome::parse(&row.outcome).ok_or_else(|| {
            StoreError::Malformed(format!(
                "outcome of prediction `{}`: `{}`",
                row.id, row.outcome
            ))
        })?;
        let data_quality = row
            .data_quality
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| {
                StoreError::Malformed(format!("data_quality of prediction `{}`: {e}", row.id))
            })?;
        Ok(Self {
            at: parse_timestamp(&row.at)?,
            input_refs,
            mode,
            outcome,
            data_quality,
            id: row.id,
            service_id: row.service_id,
            hook: row.hook,
            hook_instance: row.hook_instance,
            model: row.model,
            model_version: row.model_version,
            scope: Scope {
                client_iss: row.client_iss,
                tenant: row.tenant,
                fhir_server: row.fhir_server,
            },
            patient_id: None,
            patient_hash: row.patient_hash,
            unit: row.unit,
            risk: row.risk,
            indicator: row.indicator,
            reason: row.reason,
            tensor_sha256: row.tensor_sha256,
            latency_ms: row.latency_ms,
            inputs: None,
        })
    }
}

/// A record ready to insert: the patient already pseudonymised, the references serialised.
pub(super) struct PreparedRecord {
    /// `data_quality` as JSON.
    data_quality: Option<String>,
    record: PredictionRecord,
    patient_hash: Option<String>,
    input_refs: String,
    /// The model input, when the service keeps it.
    inputs: Option<PreparedInput>,
}

impl super::group_commit::Row for PreparedRecord {
    fn insert<'t, 'c: 't>(
        &'t self,
        tx: &'t mut sqlx::Transaction<'c, sqlx::Any>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), StoreError>> + Send + 't>>
    {
        Box::pin(insert_prediction(tx, self))
    }
}

/// Inserts one record within `tx`. A repeat of an id already stored is ignored.
async fn insert_prediction(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    r: &PreparedRecord,
) -> Result<(), StoreError> {
    let p = &r.record;
    sqlx::query(
        "INSERT INTO predictions (id, at, service_id, hook, hook_instance, model,
            model_version, mode, patient_hash, unit, risk, indicator, outcome, reason,
            input_refs, tensor_sha256, latency_ms, client_iss, tenant, fhir_server, data_quality)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
            $18, $19, $20, $21)
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
    .bind(p.mode.as_str())
    .bind(&r.patient_hash)
    .bind(&p.unit)
    .bind(p.risk)
    .bind(&p.indicator)
    .bind(p.outcome.as_str())
    .bind(&p.reason)
    .bind(&r.input_refs)
    .bind(&p.tensor_sha256)
    .bind(p.latency_ms)
    .bind(&p.scope.client_iss)
    .bind(&p.scope.tenant)
    .bind(&p.scope.fhir_server)
    .bind(&r.data_quality)
    .execute(&mut **tx)
    .await?;
    if let Some(input) = &r.inputs {
        insert_input(tx, &p.id, &timestamp(p.at), input).await?;
    }
    Ok(())
}

impl Store {
    /// Records a prediction (the patient id pseudonymised first) and returns once it is
    /// committed. Concurrent calls share one transaction ([`super::group_commit`]). A repeat
    /// of an id already stored is ignored: the first record of a card stands.
    pub async fn record_prediction(&self, p: &PredictionRecord) -> Result<(), StoreError> {
        let patient_hash = match &p.patient_id {
            Some(id) => Some(self.pseudonym(&p.scope.fhir_server, id).await?),
            None => None,
        };
        let input_refs = serde_json::to_string(&p.input_refs)
            .map_err(|e| StoreError::Malformed(format!("input_refs: {e}")))?;
        let data_quality = p
            .data_quality
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StoreError::Malformed(format!("data_quality: {e}")))?;
        let inputs = p.inputs.as_deref().map(PreparedInput::new).transpose()?;
        let record = PreparedRecord {
            inputs,
            data_quality,
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

    /// Most recent `shown` or `downgraded` active prediction of `service_id` for this patient
    /// of this scope since `since`.
    pub async fn last_shown(
        &self,
        scope: &Scope,
        service_id: &str,
        patient_id: &str,
        since: DateTime<Utc>,
    ) -> Result<Option<StoredPrediction>, StoreError> {
        let patient_hash = self.pseudonym(&scope.fhir_server, patient_id).await?;
        sqlx::query_as::<_, PredictionRow>(&format!(
            "SELECT {COLUMNS} FROM predictions
             WHERE service_id = $1 AND patient_hash = $2 AND at >= $3
               AND client_iss = $4 AND tenant = $5
               AND mode = 'active' AND outcome IN ('shown', 'downgraded')
             ORDER BY at DESC, id DESC
             LIMIT 1"
        ))
        .bind(service_id)
        .bind(patient_hash)
        .bind(timestamp(since))
        .bind(&scope.client_iss)
        .bind(&scope.tenant)
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
        scope: &Scope,
        service_id: &str,
        patient_id: &str,
        reason_code: &str,
        since: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let patient_hash = self.pseudonym(&scope.fhir_server, patient_id).await?;
        // The time returned is at most `received_at`, so `received_at >= since` loses nothing.
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT f.outcome_timestamp, f.received_at
             FROM predictions p JOIN feedback f ON f.card_uuid = p.id
             WHERE p.service_id = $1 AND p.patient_hash = $2
               AND p.client_iss = $5 AND p.tenant = $6
               AND f.outcome = 'overridden' AND f.override_reason_code = $3
               AND f.received_at >= $4",
        )
        .bind(service_id)
        .bind(patient_hash)
        .bind(reason_code)
        .bind(timestamp(since))
        .bind(&scope.client_iss)
        .bind(&scope.tenant)
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

    /// Warning/critical cards actually shown (outcome "shown", indicator warning|critical,
    /// mode active) for `unit` of this client and tenant since `since`: "Ward 5" of one
    /// hospital is not "Ward 5" of another.
    pub async fn alerts_shown(
        &self,
        scope: &Scope,
        unit: &str,
        since: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM predictions
             WHERE client_iss = $3 AND tenant = $4 AND unit = $1 AND at >= $2
               AND mode = 'active' AND outcome = 'shown' AND indicator IN ('warning', 'critical')",
        )
        .bind(unit)
        .bind(timestamp(since))
        .bind(&scope.client_iss)
        .bind(&scope.tenant)
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
    /// Every prediction about this patient of `view` since `since`, oldest first: the SMART
    /// app's trajectories. The id is pseudonymised first, as when it was recorded.
    pub async fn predictions_for_patient(
        &self,
        view: &PatientView,
        patient_id: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<StoredPrediction>, StoreError> {
        let mut found = Vec::new();
        for fhir_server in &view.fhir_servers {
            let patient_hash = self.pseudonym(fhir_server, patient_id).await?;
            let rows = sqlx::query_as::<_, PredictionRow>(&format!(
                "SELECT {COLUMNS} FROM predictions
                 WHERE patient_hash = $1 AND fhir_server = $2 AND at >= $3
                 ORDER BY at, id"
            ))
            .bind(patient_hash)
            .bind(fhir_server)
            .bind(timestamp(since))
            .fetch_all(&self.pool)
            .await?;
            for row in rows {
                let p = StoredPrediction::try_from(row)?;
                if view.admits(&p) {
                    found.push(p);
                }
            }
        }
        found.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));
        Ok(found)
    }

    /// Feedback on the cards of this patient of `view` received since `since` (CDS Hooks
    /// feedback and the SMART app's alike), oldest first.
    pub async fn feedback_for_patient(
        &self,
        view: &PatientView,
        patient_id: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<FeedbackMark>, StoreError> {
        type Row = (
            i64,
            String,
            String,
            Option<String>,
            String,
            String,
            String,
            String,
        );
        let mut rows: Vec<Row> = Vec::new();
        for fhir_server in &view.fhir_servers {
            let patient_hash = self.pseudonym(fhir_server, patient_id).await?;
            let found: Vec<Row> = sqlx::query_as(
                "SELECT f.id, f.card_uuid, f.outcome, f.override_reason_code, f.outcome_timestamp,
                        f.received_at, p.client_iss, p.tenant
                 FROM predictions p JOIN feedback f ON f.card_uuid = p.id
                 WHERE p.patient_hash = $1 AND p.fhir_server = $2 AND f.received_at >= $3
                 ORDER BY f.id",
            )
            .bind(patient_hash)
            .bind(fhir_server)
            .bind(timestamp(since))
            .fetch_all(&self.pool)
            .await?;
            rows.extend(found.into_iter().filter(|r| view.admits_client(&r.6, &r.7)));
        }
        rows.sort_by_key(|r| r.0);
        let mut marks = Vec::with_capacity(rows.len());
        for (_, card_uuid, outcome, reason_code, outcome_timestamp, received_at, _, _) in rows {
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

    /// The prediction `id` if it is about this patient of `view`, else `None`: the app takes
    /// feedback only on the launched patient's own cards.
    pub async fn prediction_about(
        &self,
        id: &str,
        view: &PatientView,
        patient_id: &str,
    ) -> Result<Option<StoredPrediction>, StoreError> {
        let Some(p) = self.prediction(id).await? else {
            return Ok(None);
        };
        if !view.fhir_servers.contains(&p.scope.fhir_server) || !view.admits(&p) {
            return Ok(None);
        }
        let hash = self.pseudonym(&p.scope.fhir_server, patient_id).await?;
        Ok((p.patient_hash.as_deref() == Some(hash.as_str())).then_some(p))
    }

    /// Which of `cards` were not given to this client and tenant (unknown cards included):
    /// CDS Hooks feedback is taken only on the caller's own cards, so one EHR cannot mark
    /// another's card "already aware" and silence its patient.
    pub async fn cards_not_given_to(
        &self,
        scope: &Scope,
        cards: &[&str],
    ) -> Result<Vec<usize>, StoreError> {
        let mut foreign = Vec::new();
        for (i, card) in cards.iter().enumerate() {
            let owner: Option<(String, String)> =
                sqlx::query_as("SELECT client_iss, tenant FROM predictions WHERE id = $1")
                    .bind(*card)
                    .fetch_optional(&self.pool)
                    .await?;
            if owner.is_none_or(|(iss, tenant)| iss != scope.client_iss || tenant != scope.tenant) {
                foreign.push(i);
            }
        }
        Ok(foreign)
    }
}

/// Which recorded scopes a SMART session may see for its patient: the FHIR servers the patient
/// id belongs to (the session's issuer; with client authentication off, also calls that named
/// no FHIR server), and the clients whose allowlists reach that issuer (a rule for one tenant
/// admits that tenant only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatientView {
    /// Normalised FHIR bases (see [`super::scope::fhir_base`]).
    pub fhir_servers: Vec<String>,
    /// `(client iss, Some(tenant))` admits that tenant only; `None` any tenant of the client.
    pub clients: Vec<(String, Option<String>)>,
}

impl PatientView {
    /// Whether `p` was recorded for a client this view admits.
    pub fn admits(&self, p: &StoredPrediction) -> bool {
        self.admits_client(&p.scope.client_iss, &p.scope.tenant)
    }

    /// Whether records of client `iss` for `tenant` are visible in this view.
    pub fn admits_client(&self, iss: &str, tenant: &str) -> bool {
        self.clients
            .iter()
            .any(|(c, t)| c == iss && t.as_deref().is_none_or(|t| t == tenant))
    }
}
