//! Retention: how long each kind of record is kept, and the purge that removes what is older.
//! Prediction records, their stored model inputs, feedback and audit events each have their
//! own period (`[retention]`); an input never outlives its prediction;
//! without one a kind is kept. The gateway purges at start-up and then on a schedule
//! ([`crate::server`]); rows are compared by the time they were written, so a purge removes
//! exactly the rows past their period and nothing else.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{timestamp, Store, StoreError};

/// How long each kind of record is kept (`None`: kept).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Prediction records (scores, cards shown or held back, their inputs' references).
    pub predictions: Option<Duration>,
    /// Model inputs kept for learning (`[learning] store_inputs`): usually shorter.
    pub inputs: Option<Duration>,
    /// Clinicians' feedback on cards.
    pub feedback: Option<Duration>,
    /// Audit events.
    pub audit: Option<Duration>,
}

impl Retention {
    /// Whether any kind has a period (else there is nothing to schedule).
    pub fn is_set(&self) -> bool {
        self.predictions.is_some()
            || self.inputs.is_some()
            || self.feedback.is_some()
            || self.audit.is_some()
    }
}

/// Rows one purge removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Purged {
    pub predictions: u64,
    pub inputs: u64,
    pub feedback: u64,
    pub audit: u64,
}

/// `(table, time column)` of each kind, the column holding when the row was written.
const PREDICTIONS: (&str, &str) = ("predictions", "at");
const FEEDBACK: (&str, &str) = ("feedback", "received_at");
const AUDIT: (&str, &str) = ("audit", "at");
const INPUTS: (&str, &str) = ("prediction_inputs", "at");
const OUTCOMES: (&str, &str) = ("outcomes", "at");

impl Store {
    /// Deletes every row older than its kind's retention at `now`.
    pub async fn purge(
        &self,
        retention: &Retention,
        now: DateTime<Utc>,
    ) -> Result<Purged, StoreError> {
        // Outcomes exist to label predictions: they are kept as long as predictions are.
        self.purge_table(OUTCOMES, retention.predictions, now)
            .await?;
        let inputs = self.purge_table(INPUTS, retention.inputs, now).await?;
        let predictions = self
            .purge_table(PREDICTIONS, retention.predictions, now)
            .await?;
        // An input whose prediction is gone has nothing left to explain.
        let orphans = sqlx::query(
            "DELETE FROM prediction_inputs WHERE NOT EXISTS
                (SELECT 1 FROM predictions p WHERE p.id = prediction_inputs.prediction_id)",
        )
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(Purged {
            predictions,
            inputs: inputs + orphans,
            feedback: self.purge_table(FEEDBACK, retention.feedback, now).await?,
            audit: self.purge_table(AUDIT, retention.audit, now).await?,
        })
    }

    async fn purge_table(
        &self,
        (table, column): (&str, &str),
        keep: Option<Duration>,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let Some(keep) = keep else { return Ok(0) };
        let Ok(keep) = chrono::Duration::from_std(keep) else {
            return Ok(0);
        };
        let Some(cutoff) = now.checked_sub_signed(keep) else {
            return Ok(0);
        };
        // Both backends store these instants as RFC 3339 UTC text with milliseconds
        // ([`timestamp`]), which sorts as time.
        let sql = format!("DELETE FROM {table} WHERE {column} < $1");
        let done = sqlx::query(&sql)
            .bind(timestamp(cutoff))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
