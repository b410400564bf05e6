//! Stage 3 of a call: what to do with a score. Thresholds, shadow mode, the dedup group and
//! the guardrails (suppression, alert budget) decide whether a card is shown, and at which
//! indicator; only then is the explanation computed.

use chrono::{DateTime, Utc};
use tracing::Instrument as _;

use super::call::{Call, CallFacts, CdsService, Entry};
use super::card::checked;
use super::definition::Thresholds;
use super::guardrails::{self, Subject, Verdict};
use super::policy::Mode;
use super::record::input_refs;
use super::scoring;
use super::ServiceError;
use crate::cards;
use crate::cds::wire::{CdsResponse, Indicator};
use crate::features::kdigo;
use crate::features::FeatureMatrix;
use crate::inference::{InferenceError, ModelStatus};
use crate::metrics::inc;
use crate::store::{DecisionGuard, Outcome};

/// Longest a decision waits for another on the same patient, unit or call.
const DECISION_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// Shortest: what a call past its deadline still waits.
const DECISION_WAIT_MIN: std::time::Duration = std::time::Duration::from_millis(100);

impl CdsService {
    /// The active model's answer once it has scored: thresholds, shadow mode, guardrails
    /// (dedup, suppression, budget), then, for a card that will be shown, its explanation.
    /// Every outcome is recorded.
    pub(super) async fn decide(
        &self,
        call: Call<'_>,
        active: Result<f32, InferenceError>,
    ) -> Result<CdsResponse, ServiceError> {
        let Call {
            facts,
            prepared,
            deadline,
            ..
        } = call;
        let spec = &self.model.features;
        let matrix = &prepared.matrix;
        let risk = match active {
            Ok(risk) => risk,
            Err(e) => {
                // Answer on time without this model's card rather than late or with an error.
                inc(&self.metrics.no_score);
                tracing::warn!(error = %e, "no score");
                self.record(
                    facts,
                    &self.model,
                    Entry {
                        outcome: Outcome::NoScore,
                        risk: None,
                        indicator: None,
                        reason: Some(&e.to_string()),
                    },
                    Some(prepared),
                )
                .await;
                return Ok(CdsResponse::default());
            }
        };
        // An order check also fires when creatinine is already rising (KDIGO stage ≥ 1).
        let rising = self
            .def
            .orders
            .as_ref()
            .filter(|(o, _)| o.fire_on_rising_creatinine)
            .and_then(|(o, _)| rising_creatinine(spec, matrix, &o.rising_creatinine_note));
        let indicator = match (self.indicator(risk), &rising) {
            (Some(i), _) => Some(i),
            (None, Some(_)) => Some(Indicator::Warning),
            (None, None) => None,
        };
        let Some(indicator) = indicator else {
            self.record(
                facts,
                &self.model,
                Entry {
                    outcome: Outcome::BelowThreshold,
                    risk: Some(risk),
                    indicator: None,
                    reason: None,
                },
                Some(prepared),
            )
            .await;
            return Ok(CdsResponse::default());
        };
        if self.def.mode == Mode::Shadow || self.model.manifest.status == ModelStatus::Shadow {
            inc(&self.metrics.shadow);
            tracing::info!("shadow: scored and recorded, no card");
            self.record(
                facts,
                &self.model,
                Entry {
                    outcome: Outcome::Shadow,
                    risk: Some(risk),
                    indicator: Some(indicator.as_str()),
                    reason: None,
                },
                Some(prepared),
            )
            .await;
            return Ok(CdsResponse::default());
        }
        // One decision at a time per patient, unit and call (in this process and, on a shared
        // store, across replicas), held until its record is committed.
        let mut held = self.lock_decision(facts, indicator, deadline).await;
        // A grouped service builds its tensor's references for the dedup decision; the record
        // reuses them.
        let (verdict, refs) = match self.def.alerts.dedup_group.as_deref() {
            Some(group) => {
                let decided = self
                    .verdict_in_group(group, facts, prepared, indicator)
                    .await;
                // The group's other services read this card from memory: in a process of its
                // own, the call need not wait for the record (a repeated hookInstance would
                // otherwise queue behind each commit).
                if let Some(held) = held.as_mut() {
                    let key = guardrails::call_lock_key(
                        &facts.scope,
                        group,
                        &facts.request.hook_instance,
                    );
                    held.release_early(&key);
                }
                decided
            }
            None => (self.verdict(facts, indicator).await, input_refs(prepared)),
        };
        let (shown, outcome, reason) = match verdict {
            Verdict::Show(i) => (Some(i), Outcome::Shown, None),
            Verdict::Downgrade { reason } => {
                (Some(Indicator::Info), Outcome::Downgraded, Some(reason))
            }
            Verdict::Suppress { reason } => (None, Outcome::Suppressed, Some(reason)),
            Verdict::Deduplicate { reason } => (None, Outcome::Deduplicated, Some(reason)),
        };
        let counter = match outcome {
            Outcome::Downgraded => Some(&self.metrics.downgraded),
            Outcome::Suppressed => Some(&self.metrics.suppressed),
            Outcome::Deduplicated => Some(&self.metrics.deduplicated),
            _ => None,
        };
        if let Some(c) = counter {
            inc(c);
            tracing::info!(outcome = outcome.as_str(), "card held back by a guardrail");
        }
        let recorded = async {
            self.record_with_refs(
                facts,
                &self.model,
                Entry {
                    outcome,
                    risk: Some(risk),
                    indicator: shown.map(Indicator::as_str),
                    reason: reason.as_deref(),
                },
                Some(prepared),
                refs,
            )
            .await;
            if let Some(held) = held {
                held.release().await;
            }
        };
        let Some(shown) = shown else {
            recorded.await;
            return Ok(CdsResponse::default());
        };
        let mut notes: Vec<String> = reason.iter().map(|r| format!("_{r}._")).collect();
        if let Some(words) = &rising {
            notes.push(words.clone());
        }
        // The explanation, only now that a card will be shown, computed while the record is
        // committed. Late or failed, the card still goes, with its trends and the app link but
        // no drivers.
        let explained = async {
            scoring::contributions(&self.model, prepared, risk, deadline)
                .instrument(tracing::info_span!("explanation"))
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "no explanation in time; card without drivers");
                    Vec::new()
                })
        };
        let ((), contributions) = tokio::join!(recorded, explained);
        let card = self.card(&call, risk, shown, &contributions, notes);
        inc(&self.metrics.cards);
        Ok(CdsResponse {
            cards: vec![checked(card)],
            system_actions: Vec::new(),
        })
    }

    /// Whom this call's decision is about: the guardrails' view of it.
    fn subject<'a>(&'a self, facts: &'a CallFacts<'_>) -> Subject<'a> {
        Subject {
            scope: &facts.scope,
            service_id: &self.def.id,
            patient_id: facts.patient_id,
            unit: &facts.unit,
            now: facts.now,
        }
    }

    /// Suppression and alert budget, read from the prediction record. A store that cannot
    /// answer lets the card through: a missed suppression is noise, a missed alert is harm.
    pub(super) async fn verdict(&self, facts: &CallFacts<'_>, indicator: Indicator) -> Verdict {
        let who = self.subject(facts);
        match guardrails::decide(&self.def.alerts, &self.env.store, &who, indicator).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "guardrail store check failed; card shown");
                Verdict::Show(indicator)
            }
        }
    }

    /// The decision keys of this call ([`guardrails::decision_keys`]), held; `None` when
    /// there are none or they could not be had in time (the card is then decided without
    /// them: a missed suppression is noise, a missed alert is harm).
    async fn lock_decision(
        &self,
        facts: &CallFacts<'_>,
        indicator: Indicator,
        deadline: std::time::Instant,
    ) -> Option<DecisionGuard> {
        let who = self.subject(facts);
        let group_call = self
            .def
            .alerts
            .dedup_group
            .as_deref()
            .map(|g| (g, facts.request.hook_instance.as_str()));
        let keys = guardrails::decision_keys(&self.def.alerts, &who, indicator, group_call);
        if keys.is_empty() {
            return None;
        }
        // A call at its deadline still gets a short wait: deciding without the lock risks a
        // second card, a few more milliseconds do not.
        let wait = deadline
            .saturating_duration_since(std::time::Instant::now())
            .clamp(DECISION_WAIT_MIN, DECISION_WAIT);
        match self.env.store.lock_decision(&keys, wait).await {
            Ok(held) => Some(held),
            Err(e) => {
                inc(&self.metrics.decided_unlocked);
                tracing::warn!(error = %e, "decision lock not had; deciding without it");
                None
            }
        }
    }

    /// The verdict of a service in a dedup group (its decision lock held); a card it lets
    /// through is remembered in memory for the group's other services. Also returns the
    /// tensor's FHIR references it decided on.
    async fn verdict_in_group(
        &self,
        group: &str,
        facts: &CallFacts<'_>,
        prepared: &scoring::Prepared,
        indicator: Indicator,
    ) -> (Verdict, Vec<String>) {
        let hook_instance = &facts.request.hook_instance;
        let mine = input_refs(prepared);
        let verdict = match self.duplicate_of(group, facts, &mine).await {
            Some(reason) => Verdict::Deduplicate { reason },
            None => self.verdict(facts, indicator).await,
        };
        if matches!(verdict, Verdict::Show(_) | Verdict::Downgrade { .. }) {
            self.env.dedup.remember_shown(
                group,
                &facts.scope,
                hook_instance,
                &self.def.id,
                mine.clone(),
            );
        }
        (verdict, mine)
    }

    /// Another service of `group` already showed a card in this call on the same inputs (the
    /// same Observations fed both models).
    async fn duplicate_of(
        &self,
        group: &str,
        facts: &CallFacts<'_>,
        mine: &[String],
    ) -> Option<String> {
        let request = facts.request;
        let in_memory = self.env.dedup.shown_by_peer(
            group,
            &facts.scope,
            &request.hook_instance,
            &self.def.id,
            mine,
        );
        let peer = match in_memory {
            Some(peer) => Some(peer),
            // Only another process can have shown a card this one does not remember.
            None if self.env.store.is_shared() => {
                self.shown_by_peer_in_store(group, facts, mine).await
            }
            None => None,
        }?;
        Some(format!(
            "the {peer} card on the same observations was already shown in this call"
        ))
    }

    /// [`Self::duplicate_of`] read from a store that other gateway processes write too.
    async fn shown_by_peer_in_store(
        &self,
        group: &str,
        facts: &CallFacts<'_>,
        mine: &[String],
    ) -> Option<String> {
        for (peer_id, manifest) in self.env.peers(group, &self.def.id) {
            let id = cards::card_uuid(&peer_id, &facts.call_key, &manifest);
            let Ok(Some(p)) = self.env.store.prediction(&id).await else {
                continue;
            };
            if p.outcome.card_shown() && p.input_refs.iter().any(|r| mine.contains(r)) {
                return Some(peer_id);
            }
        }
        None
    }

    pub(super) fn indicator(&self, risk: f32) -> Option<Indicator> {
        indicator_for(&self.def.thresholds, risk)
    }
}

/// The card `risk` would earn under `t`, if any (also what a shadow version would have shown).
pub(super) fn indicator_for(t: &Thresholds, risk: f32) -> Option<Indicator> {
    if risk >= t.critical {
        Some(Indicator::Critical)
    } else if risk >= t.warning {
        Some(Indicator::Warning)
    } else if t.info.is_some_and(|i| risk >= i) {
        Some(Indicator::Info)
    } else {
        None
    }
}

/// The service's words (`note`, with `{stage}` and `{criteria}`) when creatinine already
/// meets a KDIGO criterion, else `None`.
fn rising_creatinine(
    spec: &crate::features::FeatureSpec,
    matrix: &FeatureMatrix,
    note: &str,
) -> Option<String> {
    let f = spec.index_of("creatinine")?;
    let series: Vec<(DateTime<Utc>, f64)> = matrix
        .measurements
        .iter()
        .filter(|m| m.feature == f)
        .map(|m| (m.time, m.value))
        .collect();
    let k = kdigo::stage(&series, matrix.window_end, false);
    let stage = k.stage.filter(|s| *s >= 1)?;
    let criteria: Vec<&str> = k.criteria.iter().map(|c| c.as_str()).collect();
    Some(
        note.replace("{stage}", &stage.to_string())
            .replace("{criteria}", &criteria.join(", ")),
    )
}
