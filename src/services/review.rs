//! A service's assessment of one patient for the SMART app: the same data, features, model,
//! explanation and bedside scores as a hook call, read with the signed-in clinician's token,
//! but nothing recorded and no card. The app shows it as "now" beside the recorded history.

use std::time::{Duration, Instant};

use chrono::{DateTime, Duration as ChronoDuration, Utc};

use super::abstain;
use super::baselines;
use super::call::CdsService;
use super::scoring;
use super::ServiceError;
use crate::cards::BaselineReport;
use crate::cds::wire::{HookRequest, Indicator};
use crate::features::explain::{self, Explanation};
use crate::features::{oxygen, FeatureMatrix};
use crate::fhir::fulfil;
use crate::fhir::FhirServer;

/// Time the app allows one service to read and score (a page, not a hook deadline).
pub const REVIEW_BUDGET: Duration = Duration::from_secs(10);
/// Contributing observations the app lists (a card shows fewer).
const DRIVERS_LISTED: usize = 6;

/// What the model says now, or why it says nothing.
#[derive(Debug)]
pub enum Verdict {
    /// Scored: the risk, the card it would raise (`None`: below every threshold) and why.
    Scored {
        risk: f32,
        indicator: Option<Indicator>,
        explanation: Explanation,
    },
    /// Declined to score: outside the model's validity, or too little data.
    Abstained(String),
    /// The model gave no score in time (inference failed or was late).
    NoScore(String),
}

/// One service's assessment of the launched patient, for the app page.
#[derive(Debug)]
pub struct Review {
    /// The reference time it was computed for.
    pub now: DateTime<Utc>,
    /// The model input (with every measurement and its source Observation).
    pub matrix: FeatureMatrix,
    /// Observations of model inputs that could not be used.
    pub rejected: usize,
    pub verdict: Verdict,
    /// NEWS2 / qSOFA / SIRS / KDIGO from the same data, as the card shows them.
    pub baselines: BaselineReport,
}

impl CdsService {
    /// Assesses the patient of `request` (context only, no prefetch) from `server`: what a hook
    /// call would score now. Fails like a hook call when required data cannot be read.
    pub async fn review(
        &self,
        request: &HookRequest<'_>,
        server: Result<&FhirServer<'_>, &str>,
    ) -> Result<Review, ServiceError> {
        use tracing::Instrument as _;
        let span = tracing::info_span!("review", service = %self.id(), hook_instance = %request.hook_instance);
        self.assess(request, server).instrument(span).await
    }

    async fn assess(
        &self,
        request: &HookRequest<'_>,
        server: Result<&FhirServer<'_>, &str>,
    ) -> Result<Review, ServiceError> {
        let now = Utc::now();
        let deadline = Instant::now() + REVIEW_BUDGET;
        let model = self.model();
        let def = self.definition();
        let wants = self.wants(request);
        let supplies = fulfil::fulfil(&wants, server).await;
        let gathered = self.gather(&wants, &supplies)?;
        let prepared = scoring::prepare(model, &gathered.observations, gathered.unreadable, now);
        let recent = now
            - ChronoDuration::from_std(def.guardrails.max_staleness).unwrap_or(ChronoDuration::MAX);
        let baselines = baselines::compute(
            &def.baselines,
            &model.features,
            &prepared.matrix,
            recent,
            self.spo2_scale(&supplies),
            oxygen::on_oxygen(
                &gathered.observations,
                recent.max(prepared.matrix.window_start),
                now,
            ),
        );
        let verdict = match abstain::reason(
            &model.manifest.validity,
            Some(&def.guardrails),
            &model.features,
            &prepared.matrix,
            now,
        ) {
            Some(reason) => Verdict::Abstained(reason),
            None => match scoring::score(model, &prepared, deadline).await {
                Ok(scored) => Verdict::Scored {
                    risk: scored.risk,
                    indicator: self.indicator(scored.risk),
                    explanation: explain::explain(
                        &model.features,
                        &prepared.matrix,
                        &scored.contributions,
                        DRIVERS_LISTED,
                    ),
                },
                Err(e) => Verdict::NoScore(e.to_string()),
            },
        };
        Ok(Review {
            now,
            matrix: prepared.matrix,
            rejected: prepared.rejected,
            verdict,
            baselines,
        })
    }
}
