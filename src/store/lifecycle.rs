//! Model lifecycle records: evaluations of a model version on this site's own predictions,
//! and the decisions (promote, retire) that change a version's status — who, when, why, on
//! which evaluation. The newest decision per version is its status; [`crate::governance`]
//! decides what may be recorded, this module only keeps it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{parse_timestamp, timestamp, Store, StoreError};

/// An evaluation as stored.
#[derive(Debug, Clone, Serialize)]
pub struct StoredEvaluation {
    pub id: i64,
    pub model: String,
    pub version: String,
    pub at: DateTime<Utc>,
    /// Whether it met the promotion criteria in force when it was made.
    pub passed: bool,
    /// What was measured (see `governance::Evaluation`), as JSON.
    pub evaluation: serde_json::Value,
}

/// A status change to record.
#[derive(Debug, Clone)]
pub struct NewDecision {
    pub model: String,
    pub version: String,
    /// `active`, `shadow` or `retired`.
    pub status: String,
    /// The status it replaces.
    pub previous: String,
    pub at: DateTime<Utc>,
    /// Who decided: an admin token's name or the operator named on the command line.
    pub actor: String,
    /// `cli`, `admin-api`, or `bedside` for a change bedside reverted.
    pub via: String,
    /// The operator's reason (free text: never logged).
    pub reason: String,
    /// The evaluation a promotion rests on.
    pub evaluation_id: Option<i64>,
}

/// A decision as stored.
#[derive(Debug, Clone, Serialize)]
pub struct StoredDecision {
    pub id: i64,
    pub model: String,
    pub version: String,
    pub status: String,
    pub previous: String,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub via: String,
    pub reason: String,
    pub evaluation_id: Option<i64>,
}

/// One shadow score of a version with, when the same call's active version scored too, that
/// score: the unit of an evaluation.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ShadowScore {
    pub patient_hash: Option<String>,
    pub at: String,
    pub risk: f64,
    pub indicator: Option<String>,
    pub active_version: Option<String>,
    pub active_risk: Option<f64>,
    pub active_indicator: Option<String>,
}

/// Most shadow scores one evaluation reads (the newest are kept).
pub const MAX_EVALUATED: i64 = 200_000;

#[derive(sqlx::FromRow)]
struct EvaluationRow {
    id: i64,
    model: String,
    version: String,
    at: String,
    passed: i64,
    evaluation: String,
}

#[derive(sqlx::FromRow)]
struct DecisionRow {
    id: i64,
    model: String,
    version: String,
    status: String,
    previous: String,
    at: String,
    actor: String,
    via: String,
    reason: String,
    evaluation_id: Option<i64>,
}

impl TryFrom<EvaluationRow> for StoredEvaluation {
    type Error = StoreError;
    fn try_from(r: EvaluationRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: r.id,
            model: r.model,
            version: r.version,
            at: parse_timestamp(&r.at)?,
            passed: r.passed != 0,
            evaluation: serde_json::from_str(&r.evaluation)
                .map_err(|e| StoreError::Malformed(format!("evaluation {}: {e}", r.id)))?,
        })
    }
}

impl TryFrom<DecisionRow> for StoredDecision {
    type Error = StoreError;
    fn try_from(r: DecisionRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: r.id,
            model: r.model,
            version: r.version,
            status: r.status,
            previous: r.previous,
            at: parse_timestamp(&r.at)?,
            actor: r.actor,
            via: r.via,
            reason: r.reason,
            evaluation_id: r.evaluation_id,
        })
    }
}

impl Store {
    /// Keeps an evaluation; returns its id.
    pub async fn record_evaluation(
        &self,
        model: &str,
        version: &str,
        at: DateTime<Utc>,
        passed: bool,
        evaluation: &serde_json::Value,
    ) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "INSERT INTO model_evaluations (model, version, at, passed, evaluation)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(model)
        .bind(version)
        .bind(timestamp(at))
        .bind(i64::from(passed))
        .bind(evaluation.to_string())
        .fetch_one(&self.pool)
        .await?)
    }

    /// The newest evaluation of `model` `version`.
    pub async fn latest_evaluation(
        &self,
        model: &str,
        version: &str,
    ) -> Result<Option<StoredEvaluation>, StoreError> {
        let row: Option<EvaluationRow> = sqlx::query_as(
            "SELECT id, model, version, at, passed, evaluation FROM model_evaluations
             WHERE model = $1 AND version = $2 ORDER BY id DESC LIMIT 1",
        )
        .bind(model)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?;
        row.map(StoredEvaluation::try_from).transpose()
    }

    /// The evaluation `id`.
    pub async fn evaluation(&self, id: i64) -> Result<Option<StoredEvaluation>, StoreError> {
        let row: Option<EvaluationRow> = sqlx::query_as(
            "SELECT id, model, version, at, passed, evaluation FROM model_evaluations
             WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(StoredEvaluation::try_from).transpose()
    }

    /// Records status changes together (a promotion and the demotion it causes), in order;
    /// returns their ids.
    pub async fn record_decisions(
        &self,
        decisions: &[NewDecision],
    ) -> Result<Vec<i64>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut ids = Vec::with_capacity(decisions.len());
        for d in decisions {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO model_decisions
                   (model, version, status, previous, at, actor, via, reason, evaluation_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
            )
            .bind(&d.model)
            .bind(&d.version)
            .bind(&d.status)
            .bind(&d.previous)
            .bind(timestamp(d.at))
            .bind(&d.actor)
            .bind(&d.via)
            .bind(&d.reason)
            .bind(d.evaluation_id)
            .fetch_one(&mut *tx)
            .await?;
            ids.push(id);
        }
        tx.commit().await?;
        Ok(ids)
    }

    /// Every decision about `model` (all models when `None`), oldest first.
    pub async fn decisions(&self, model: Option<&str>) -> Result<Vec<StoredDecision>, StoreError> {
        let rows: Vec<DecisionRow> = sqlx::query_as(
            "SELECT id, model, version, status, previous, at, actor, via, reason, evaluation_id
             FROM model_decisions WHERE ($1 = '' OR model = $1) ORDER BY id",
        )
        .bind(model.unwrap_or(""))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(StoredDecision::try_from).collect()
    }

    /// The decided status (`active`, `shadow`, `retired`) of every version a decision was
    /// recorded for: its newest decision.
    pub async fn decided_statuses(&self) -> Result<BTreeMap<(String, String), String>, StoreError> {
        Ok(self
            .decisions(None)
            .await?
            .into_iter()
            .map(|d| ((d.model, d.version), d.status))
            .collect())
    }

    /// The shadow scores of `model` `version` since `since`, newest first (at most
    /// [`MAX_EVALUATED`]), each with the same call's active score when there is one.
    pub async fn shadow_scores(
        &self,
        model: &str,
        version: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<ShadowScore>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT s.patient_hash, s.at, s.risk, s.indicator,
                    a.model_version AS active_version, a.risk AS active_risk,
                    a.indicator AS active_indicator
             FROM predictions s
             LEFT JOIN predictions a
               ON a.hook_instance = s.hook_instance AND a.service_id = s.service_id
              AND a.model = s.model AND a.mode = 'active' AND a.risk IS NOT NULL
              AND a.client_iss = s.client_iss AND a.tenant = s.tenant
             WHERE s.model = $1 AND s.model_version = $2 AND s.mode = 'shadow'
               AND s.risk IS NOT NULL AND s.at >= $3
             ORDER BY s.at DESC LIMIT $4",
        )
        .bind(model)
        .bind(version)
        .bind(timestamp(since))
        .bind(MAX_EVALUATED)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records outcomes of `event` (`(patient pseudonym, when)`; the same one twice is kept
    /// once) and that the feed is complete through `through` (never moved back).
    pub async fn record_outcomes(
        &self,
        event: &str,
        outcomes: &[(String, DateTime<Utc>)],
        through: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut added = 0;
        for (hash, at) in outcomes {
            added += sqlx::query(
                "INSERT INTO outcomes (event, patient_hash, at, received_at)
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .bind(event)
            .bind(hash)
            .bind(timestamp(*at))
            .bind(timestamp(now))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        sqlx::query(
            "INSERT INTO outcome_feeds (event, through) VALUES ($1, $2)
             ON CONFLICT (event) DO UPDATE SET through = excluded.through
             WHERE outcome_feeds.through < excluded.through",
        )
        .bind(event)
        .bind(timestamp(through))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(added)
    }

    /// Until when outcomes of `event` are complete, if a feed was ever imported.
    pub async fn outcomes_through(&self, event: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let through: Option<String> =
            sqlx::query_scalar("SELECT through FROM outcome_feeds WHERE event = $1")
                .bind(event)
                .fetch_optional(&self.pool)
                .await?;
        through.as_deref().map(parse_timestamp).transpose()
    }

    /// Outcomes of `event` at or after `since`: `(patient pseudonym, when)`, in time order.
    pub async fn outcomes_since(
        &self,
        event: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT patient_hash, at FROM outcomes WHERE event = $1 AND at >= $2 ORDER BY at",
        )
        .bind(event)
        .bind(timestamp(since))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(hash, at)| Ok((hash, parse_timestamp(&at)?)))
            .collect()
    }
}
