//! Shadow versions of a service's model, scored off the answer's path.
//!
//! A shadow version is evaluated silently: it scores the same observations as the active
//! model and its would-be card is recorded, never shown. Nothing of it may delay or slow the
//! answer, so it runs after the answer went out, on its model's inference thread at the lowest
//! scheduling priority ([`crate::inference`] lowers it for shadow versions), and at most
//! [`SHADOW_IN_FLIGHT`] scores per service are pending at once: a call that finds them all
//! busy skips its shadow scores and counts them (`bedside_service_shadow_skipped_total`), so
//! under load the evaluation becomes a sample of the calls, and memory stays bounded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use tracing::Instrument as _;

use super::call::{CallFacts, CdsService, Entry, Gathered};
use super::decide::indicator_for;
use super::scoring;
use crate::metrics::inc;
use crate::store::Outcome;

/// Shadow scores pending at once, per service.
pub(super) const SHADOW_IN_FLIGHT: usize = 4;

/// How long a queued shadow score may wait for the (low-priority) inference thread before
/// it is dropped.
const SHADOW_DEADLINE: Duration = Duration::from_secs(10);

/// The bound on a service's pending shadow scores.
pub(super) fn lane() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(SHADOW_IN_FLIGHT))
}

impl CdsService {
    /// Starts scoring every shadow version on this call's observations and returns at once;
    /// each score is recorded when it arrives.
    pub(super) fn score_shadows_later(
        &self,
        facts: &CallFacts<'_>,
        gathered: &Gathered<'_>,
        now: DateTime<Utc>,
    ) {
        for model in &self.shadows {
            let Ok(permit) = self.shadow_lane.clone().try_acquire_owned() else {
                inc(&self.metrics.shadow_skipped);
                continue;
            };
            let prepared =
                scoring::prepare(model, &gathered.observations, gathered.unreadable, now);
            let entry = Entry {
                outcome: Outcome::Shadow,
                risk: None,
                indicator: None,
                reason: None,
            };
            let mut record = self.prediction_record(facts, model, entry, Some(&prepared));
            let (model, store, metrics) =
                (model.clone(), self.env.store.clone(), self.metrics.clone());
            let thresholds = self.def.thresholds;
            let started = facts.started;
            let scored = async move {
                let _permit = permit;
                let deadline = Instant::now() + SHADOW_DEADLINE;
                let risk = match scoring::risk(&model, &prepared, deadline).await {
                    Ok(risk) => risk,
                    Err(e) => {
                        inc(&metrics.shadow_skipped);
                        tracing::info!(model = %model.manifest.name, version = %model.manifest.version, error = %e, "shadow model gave no score");
                        return;
                    }
                };
                record.risk = Some(f64::from(risk));
                record.indicator = indicator_for(&thresholds, risk).map(|i| i.as_str().to_owned());
                record.latency_ms = started.elapsed().as_secs_f64() * 1e3;
                // Counted once recorded, so the metric never runs ahead of the report.
                match store.record_prediction(&record).await {
                    Ok(()) => inc(&metrics.shadow),
                    Err(e) => {
                        inc(&metrics.record_failed);
                        tracing::error!(error = %e, "shadow prediction not recorded");
                    }
                }
            };
            tokio::spawn(scored.instrument(tracing::Span::current()));
        }
    }
}
