//! What weekly monitoring (`governance::monitor`) reads: recent predictions with their
//! data-quality summary, and the feedback on their cards.

use chrono::{DateTime, Utc};

use super::{timestamp, Store, StoreError};

/// A prediction as monitoring reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MonitoredPrediction {
    pub id: String,
    pub at: String,
    pub model: String,
    pub model_version: String,
    pub mode: String,
    pub unit: Option<String>,
    pub patient_hash: Option<String>,
    pub risk: Option<f64>,
    pub outcome: String,
    /// JSON of [`super::DataQuality`].
    pub data_quality: Option<String>,
}

/// Most predictions one monitoring run reads (the newest).
pub const MAX_MONITORED: i64 = 500_000;

impl Store {
    /// Predictions since `since`, newest first (at most [`MAX_MONITORED`]), and the feedback
    /// on their cards: `(card, outcome, override reason code)`.
    #[allow(clippy::type_complexity)]
    pub async fn monitoring_rows(
        &self,
        since: DateTime<Utc>,
    ) -> Result<
        (
            Vec<MonitoredPrediction>,
            Vec<(String, String, Option<String>)>,
        ),
        StoreError,
    > {
        let predictions = sqlx::query_as(
            "SELECT id, at, model, model_version, mode, unit, patient_hash, risk, outcome,
                    data_quality
             FROM predictions WHERE at >= $1 ORDER BY at DESC LIMIT $2",
        )
        .bind(timestamp(since))
        .bind(MAX_MONITORED)
        .fetch_all(&self.pool)
        .await?;
        let feedback = sqlx::query_as(
            "SELECT f.card_uuid, f.outcome, f.override_reason_code
             FROM feedback f JOIN predictions p ON p.id = f.card_uuid WHERE p.at >= $1",
        )
        .bind(timestamp(since))
        .fetch_all(&self.pool)
        .await?;
        Ok((predictions, feedback))
    }
}
