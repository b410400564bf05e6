//! Feedback analytics: per service, model version and mode, what the predictions came to,
//! what clinicians did with the cards, how many alerts a patient-day got, and how often a
//! shadow version agreed with the active one. Counts are exact integers; rates are computed
//! from them here, in one place, the same for both backends.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{timestamp, Store, StoreError};

/// The feedback-analytics report over the predictions made since `since`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The window's start (`None`: everything stored).
    pub since: Option<DateTime<Utc>>,
    /// One entry per (service, model, model version, mode), sorted by those.
    pub services: Vec<ServiceReport>,
    /// Shadow versus active agreement per model and pair of versions, sorted.
    pub shadow_agreement: Vec<ShadowAgreement>,
    /// Everything in the window together.
    pub totals: Tally,
}

/// The predictions of one model version in one service and mode, and the feedback on them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceReport {
    /// The CDS service.
    pub service_id: String,
    /// Model name.
    pub model: String,
    /// Model version.
    pub model_version: String,
    /// `active` or `shadow`.
    pub mode: String,
    /// What its predictions came to.
    #[serde(flatten)]
    pub tally: Tally,
}

/// Counts of predictions by outcome and of the feedback on their cards, with the rates
/// derived from them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Tally {
    /// Predictions recorded.
    pub predictions: i64,
    /// Cards shown as scored.
    pub shown: i64,
    /// Scored below the service's threshold: no card.
    pub below_threshold: i64,
    /// The model abstained (inputs outside its validity).
    pub abstained: i64,
    /// A card the policy withheld (recent override, alert budget…).
    pub suppressed: i64,
    /// Cards shown with a lower indicator than the score called for.
    pub downgraded: i64,
    /// Not shown because the same card was shown recently.
    pub deduplicated: i64,
    /// Shadow predictions (never shown).
    pub shadow: i64,
    /// No score could be computed.
    pub no_score: i64,
    /// The service was disabled.
    pub disabled: i64,
    /// Cards the clinician saw: `shown + downgraded`. The denominator of the rates.
    pub cards_shown: i64,
    /// Feedback items "accepted" on these cards.
    pub accepted: i64,
    /// Feedback items "overridden" on these cards.
    pub overridden: i64,
    /// Overrides by reason code (overrides without a coded reason are only in `overridden`).
    pub override_reasons: BTreeMap<String, i64>,
    /// Suggestions accepted, summed over the accepted feedback items.
    pub suggestions_accepted: i64,
    /// Distinct (patient pseudonym, UTC date) pairs among the predictions.
    pub patient_days: i64,
    /// `accepted / cards_shown`; `None` when no card was shown.
    pub acceptance_rate: Option<f64>,
    /// `overridden / cards_shown`; `None` when no card was shown.
    pub override_rate: Option<f64>,
    /// `cards_shown / patient_days`; `None` when there are no patient-days.
    pub alerts_per_patient_day: Option<f64>,
}

/// How often a shadow version of a model would have alerted exactly when the active
/// version did, over the hook calls that both scored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShadowAgreement {
    /// Model name.
    pub model: String,
    /// The version whose cards were shown.
    pub active_version: String,
    /// The version scored in the shadow.
    pub shadow_version: String,
    /// (active, shadow) prediction pairs of the same service and hook call, both scored.
    pub pairs: i64,
    /// Pairs where both alert (indicator warning or critical) or neither does.
    pub agreed: i64,
    /// `agreed / pairs` (there is always at least one pair).
    pub agreement: f64,
}

/// The outcome counts of a set of predictions, computed by the database.
const COUNTS: &str = "COUNT(*) AS predictions,
    COUNT(CASE WHEN outcome = 'shown' THEN 1 END) AS shown,
    COUNT(CASE WHEN outcome = 'below_threshold' THEN 1 END) AS below_threshold,
    COUNT(CASE WHEN outcome = 'abstained' THEN 1 END) AS abstained,
    COUNT(CASE WHEN outcome = 'suppressed' THEN 1 END) AS suppressed,
    COUNT(CASE WHEN outcome = 'downgraded' THEN 1 END) AS downgraded,
    COUNT(CASE WHEN outcome = 'deduplicated' THEN 1 END) AS deduplicated,
    COUNT(CASE WHEN outcome = 'shadow' THEN 1 END) AS shadow,
    COUNT(CASE WHEN outcome = 'no_score' THEN 1 END) AS no_score,
    COUNT(CASE WHEN outcome = 'disabled' THEN 1 END) AS disabled,
    COUNT(DISTINCT patient_hash || ' ' || substr(at, 1, 10)) AS patient_days";

/// [`COUNTS`] as read back.
#[derive(sqlx::FromRow)]
struct CountsRow {
    predictions: i64,
    shown: i64,
    below_threshold: i64,
    abstained: i64,
    suppressed: i64,
    downgraded: i64,
    deduplicated: i64,
    shadow: i64,
    no_score: i64,
    disabled: i64,
    patient_days: i64,
}

/// [`COUNTS`] of one (service, model, version, mode).
#[derive(sqlx::FromRow)]
struct GroupRow {
    service_id: String,
    model: String,
    model_version: String,
    mode: String,
    #[sqlx(flatten)]
    counts: CountsRow,
}

/// Feedback items of one group with the same outcome, reason and accepted suggestions.
#[derive(sqlx::FromRow)]
struct FeedbackRow {
    service_id: String,
    model: String,
    model_version: String,
    mode: String,
    outcome: String,
    override_reason_code: Option<String>,
    accepted_suggestions: String,
    n: i64,
}

/// Active/shadow pairs with the same indicators.
#[derive(sqlx::FromRow)]
struct PairRow {
    model: String,
    active_version: String,
    shadow_version: String,
    active_indicator: Option<String>,
    shadow_indicator: Option<String>,
    n: i64,
}

type GroupKey = (String, String, String, String);

impl Tally {
    fn from_counts(c: CountsRow) -> Self {
        Self {
            predictions: c.predictions,
            shown: c.shown,
            below_threshold: c.below_threshold,
            abstained: c.abstained,
            suppressed: c.suppressed,
            downgraded: c.downgraded,
            deduplicated: c.deduplicated,
            shadow: c.shadow,
            no_score: c.no_score,
            disabled: c.disabled,
            cards_shown: c.shown + c.downgraded,
            patient_days: c.patient_days,
            ..Self::default()
        }
    }

    /// Adds `n` feedback items alike.
    fn add_feedback(
        &mut self,
        outcome: &str,
        reason: Option<&str>,
        suggestions: i64,
        n: i64,
    ) -> Result<(), StoreError> {
        match outcome {
            "accepted" => self.accepted += n,
            "overridden" => {
                self.overridden += n;
                if let Some(code) = reason {
                    *self.override_reasons.entry(code.to_owned()).or_default() += n;
                }
            }
            other => return Err(StoreError::Malformed(format!("feedback outcome `{other}`"))),
        }
        self.suggestions_accepted += suggestions * n;
        Ok(())
    }

    /// Computes the rates from the counts.
    fn finish(mut self) -> Self {
        let ratio = |num: i64, den: i64| (den > 0).then(|| num as f64 / den as f64);
        self.acceptance_rate = ratio(self.accepted, self.cards_shown);
        self.override_rate = ratio(self.overridden, self.cards_shown);
        self.alerts_per_patient_day = ratio(self.cards_shown, self.patient_days);
        self
    }
}

/// Whether an indicator is an alert (worth interrupting for), for shadow agreement.
fn alerts(indicator: Option<&str>) -> bool {
    matches!(indicator, Some("warning" | "critical"))
}

impl Store {
    /// Feedback-analytics report over the predictions made since `since` (all when `None`),
    /// and the feedback on their cards whenever it came.
    pub async fn report(&self, since: Option<DateTime<Utc>>) -> Result<Report, StoreError> {
        // Every stored timestamp sorts after the empty string.
        let from = since.map(timestamp).unwrap_or_default();

        let groups: Vec<GroupRow> = sqlx::query_as(&format!(
            "SELECT service_id, model, model_version, mode, {COUNTS}
             FROM predictions WHERE at >= $1
             GROUP BY service_id, model, model_version, mode"
        ))
        .bind(&from)
        .fetch_all(&self.pool)
        .await?;
        let mut tallies: BTreeMap<GroupKey, Tally> = groups
            .into_iter()
            .map(|g| {
                let key = (g.service_id, g.model, g.model_version, g.mode);
                (key, Tally::from_counts(g.counts))
            })
            .collect();

        let totals: CountsRow =
            sqlx::query_as(&format!("SELECT {COUNTS} FROM predictions WHERE at >= $1"))
                .bind(&from)
                .fetch_one(&self.pool)
                .await?;
        let mut totals = Tally::from_counts(totals);

        let feedback: Vec<FeedbackRow> = sqlx::query_as(
            "SELECT p.service_id, p.model, p.model_version, p.mode, f.outcome,
                    f.override_reason_code, f.accepted_suggestions, COUNT(*) AS n
             FROM predictions p JOIN feedback f ON f.card_uuid = p.id
             WHERE p.at >= $1
             GROUP BY p.service_id, p.model, p.model_version, p.mode, f.outcome,
                      f.override_reason_code, f.accepted_suggestions",
        )
        .bind(&from)
        .fetch_all(&self.pool)
        .await?;
        for f in feedback {
            let suggestions =
                serde_json::from_str::<Vec<serde_json::Value>>(&f.accepted_suggestions)
                    .map_err(|e| StoreError::Malformed(format!("accepted_suggestions: {e}")))?
                    .len() as i64;
            let reason = f.override_reason_code.as_deref();
            totals.add_feedback(&f.outcome, reason, suggestions, f.n)?;
            let key = (f.service_id, f.model, f.model_version, f.mode);
            tallies
                .entry(key)
                .or_default()
                .add_feedback(&f.outcome, reason, suggestions, f.n)?;
        }

        let pairs: Vec<PairRow> = sqlx::query_as(
            "SELECT a.model, a.model_version AS active_version, s.model_version AS shadow_version,
                    a.indicator AS active_indicator, s.indicator AS shadow_indicator,
                    COUNT(*) AS n
             FROM predictions a JOIN predictions s
               ON s.hook_instance = a.hook_instance AND s.service_id = a.service_id
              AND s.model = a.model
             WHERE a.mode = 'active' AND s.mode = 'shadow'
               AND a.risk IS NOT NULL AND s.risk IS NOT NULL AND a.at >= $1
             GROUP BY a.model, a.model_version, s.model_version, a.indicator, s.indicator",
        )
        .bind(&from)
        .fetch_all(&self.pool)
        .await?;
        let mut agreement: BTreeMap<(String, String, String), (i64, i64)> = BTreeMap::new();
        for p in pairs {
            let agree =
                alerts(p.active_indicator.as_deref()) == alerts(p.shadow_indicator.as_deref());
            let entry = agreement
                .entry((p.model, p.active_version, p.shadow_version))
                .or_default();
            entry.0 += p.n;
            if agree {
                entry.1 += p.n;
            }
        }

        Ok(Report {
            since,
            services: tallies
                .into_iter()
                .map(
                    |((service_id, model, model_version, mode), tally)| ServiceReport {
                        service_id,
                        model,
                        model_version,
                        mode,
                        tally: tally.finish(),
                    },
                )
                .collect(),
            shadow_agreement: agreement
                .into_iter()
                .map(
                    |((model, active_version, shadow_version), (pairs, agreed))| ShadowAgreement {
                        model,
                        active_version,
                        shadow_version,
                        pairs,
                        agreed,
                        agreement: agreed as f64 / pairs as f64,
                    },
                )
                .collect(),
            totals: totals.finish(),
        })
    }
}
