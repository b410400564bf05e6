//! What a learning-data export reads: predictions with their pseudonymised patient, the
//! feedback on their cards (with the clinician's comment, which the export drops or scrubs),
//! the model inputs kept, and imported outcomes — never a client, tenant, FHIR server or unit. `governance::export`
//! de-identifies and writes them.

use chrono::{DateTime, Utc};

use super::{parse_timestamp, timestamp, Store, StoreError};

/// A prediction as an export reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ExportPrediction {
    pub id: String,
    pub at: String,
    pub service_id: String,
    pub model: String,
    pub model_version: String,
    pub mode: String,
    pub patient_hash: String,
    pub risk: Option<f64>,
    pub indicator: Option<String>,
    pub outcome: String,
}

/// Feedback on a card as an export reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ExportFeedback {
    /// The prediction (card) it is about.
    pub card_uuid: String,
    pub patient_hash: String,
    pub outcome: String,
    pub override_reason_system: Option<String>,
    pub override_reason_code: Option<String>,
    /// JSON array of accepted suggestion uuids (only their number is exported).
    pub accepted_suggestions: String,
    pub outcome_timestamp: String,
    /// The clinician's comment: dropped by an export, or scrubbed where the site opts in.
    pub comment: Option<String>,
}

impl Store {
    /// Predictions about a known patient made at or after `since`, oldest first.
    pub async fn export_predictions(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<ExportPrediction>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, at, service_id, model, model_version, mode, patient_hash, risk,
                    indicator, outcome
             FROM predictions WHERE at >= $1 AND patient_hash IS NOT NULL ORDER BY at, id",
        )
        .bind(timestamp(since))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Feedback on the cards of those predictions.
    pub async fn export_feedback(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<ExportFeedback>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT f.card_uuid, p.patient_hash, f.outcome, f.override_reason_system,
                    f.override_reason_code, f.accepted_suggestions, f.outcome_timestamp,
                    f.override_user_comment AS comment
             FROM feedback f JOIN predictions p ON p.id = f.card_uuid
             WHERE p.at >= $1 AND p.patient_hash IS NOT NULL ORDER BY f.id",
        )
        .bind(timestamp(since))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Every imported outcome `(event, patient pseudonym, when)` and each event's feed
    /// completeness `(event, through)`.
    #[allow(clippy::type_complexity)]
    pub async fn export_outcomes(
        &self,
    ) -> Result<
        (
            Vec<(String, String, DateTime<Utc>)>,
            Vec<(String, DateTime<Utc>)>,
        ),
        StoreError,
    > {
        let rows: Vec<(String, String, String)> =
            sqlx::query_as("SELECT event, patient_hash, at FROM outcomes ORDER BY id")
                .fetch_all(&self.pool)
                .await?;
        let feeds: Vec<(String, String)> =
            sqlx::query_as("SELECT event, through FROM outcome_feeds ORDER BY event")
                .fetch_all(&self.pool)
                .await?;
        let outcomes = rows
            .into_iter()
            .map(|(e, h, at)| Ok((e, h, parse_timestamp(&at)?)))
            .collect::<Result<_, StoreError>>()?;
        let feeds = feeds
            .into_iter()
            .map(|(e, t)| Ok((e, parse_timestamp(&t)?)))
            .collect::<Result<_, StoreError>>()?;
        Ok((outcomes, feeds))
    }
}
