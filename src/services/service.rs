//! One CDS service answering one hook call.

use std::sync::Arc;
use std::time::Instant;

use chrono::{Duration as ChronoDuration, Utc};

use serde_json::value::RawValue;

use super::abstain;
use super::baselines;
use super::definition::{PrefetchSpec, ServiceDef};
use super::scoring::{self, Scored};
use super::FhirAccess;
use super::ServiceError;
use crate::cards::{self, Abstention, RiskAssessment};
use crate::features::explain;
use crate::features::news2::SpO2Scale;
use crate::features::FeatureMatrix;
use crate::fhir::fulfil::{self, Supply, Want};
use crate::fhir::projection::{self, ObservationView};
use crate::hooks::auth::VerifiedClient;
use crate::hooks::wire::{Card, CdsResponse, HookRequest, Indicator};
use crate::inference::{LoadedModel, ModelStatus};
use crate::metrics::{inc, ServiceMetrics};

/// Contributing observations listed on a card.
const DRIVERS_SHOWN: usize = 4;

/// A service bound to its model.
pub struct CdsService {
    def: ServiceDef,
    model: Arc<LoadedModel>,
    public_base: Arc<str>,
    fhir: Arc<FhirAccess>,
    metrics: ServiceMetrics,
}

impl CdsService {
    pub(super) fn new(
        def: ServiceDef,
        model: Arc<LoadedModel>,
        public_base: Arc<str>,
        fhir: Arc<FhirAccess>,
    ) -> Self {
        Self {
            def,
            model,
            public_base,
            fhir,
            metrics: ServiceMetrics::default(),
        }
    }

    /// Outcome counters of this service.
    pub fn metrics(&self) -> &ServiceMetrics {
        &self.metrics
    }

    /// The service id (the `{id}` of its URL).
    pub fn id(&self) -> &str {
        &self.def.id
    }

    /// The hook this service answers.
    pub fn hook(&self) -> &str {
        &self.def.hook
    }

    /// Its discovery entry.
    pub fn descriptor(&self) -> crate::hooks::wire::ServiceDescriptor {
        self.def.descriptor()
    }

    /// Answers one hook call within the service's deadline. Insufficient data or a late model
    /// give fewer cards, not an error; missing required prefetch is a 412.
    pub async fn invoke(
        &self,
        request: &HookRequest<'_>,
        client: Option<&VerifiedClient>,
    ) -> Result<CdsResponse, ServiceError> {
        let deadline = Instant::now() + self.def.deadline;
        let now = Utc::now();
        inc(&self.metrics.calls);
        let wants = self.wants(request);
        let supplies = self.fulfil(request, &wants, client, deadline).await;
        let (observations, unreadable) = self
            .gather(request, &wants, &supplies)
            .inspect_err(|_| inc(&self.metrics.prefetch_missing))?;
        let spec = &self.model.features;
        let prepared = scoring::prepare(&self.model, &observations, unreadable, now);
        let matrix = &prepared.matrix;

        if let Some(reason) = abstain::reason(
            &self.model.manifest.validity,
            Some(&self.def.guardrails),
            spec,
            matrix,
            now,
        ) {
            tracing::info!(service = %self.def.id, hook_instance = %request.hook_instance, reason = %reason, "abstained");
            inc(&self.metrics.abstained);
            return Ok(self.abstain(request, reason, matrix));
        }

        let Scored {
            risk,
            contributions,
            ..
        } = match scoring::score(&self.model, &prepared, deadline).await {
            Ok(scored) => scored,
            Err(e) => {
                // Answer on time without this model's card rather than late or with an error.
                inc(&self.metrics.no_score);
                tracing::warn!(service = %self.def.id, hook_instance = %request.hook_instance, error = %e, "no score");
                return Ok(CdsResponse::default());
            }
        };
        if self.model.manifest.status == ModelStatus::Shadow {
            // Shadow models score but never reach a clinician (recording the score for
            // comparison arrives with the services issue's prediction store).
            tracing::info!(service = %self.def.id, hook_instance = %request.hook_instance, risk, "shadow score, no card");
            return Ok(CdsResponse::default());
        }
        let Some(indicator) = self.indicator(risk) else {
            return Ok(CdsResponse::default());
        };
        // NEWS2 describes the patient now: parameters older than the staleness limit count
        // as not recorded rather than scoring an old value.
        let recent = now
            - ChronoDuration::from_std(self.def.guardrails.max_staleness)
                .unwrap_or(ChronoDuration::MAX);
        let baselines = baselines::compute(
            &self.def.baselines,
            spec,
            matrix,
            recent,
            self.spo2_scale(request, &supplies),
        );
        let card = cards::risk_card(
            &RiskAssessment {
                service_id: &self.def.id,
                hook_instance: &request.hook_instance,
                manifest: &self.model.manifest,
                matrix,
                risk,
                indicator,
                baselines: &baselines,
                explanation: &explain::explain(spec, matrix, &contributions, DRIVERS_SHOWN),
                rejected: prepared.rejected,
                public_base: &self.public_base,
            },
            &self.def.card,
        );
        inc(&self.metrics.cards);
        Ok(CdsResponse {
            cards: vec![checked(card)],
            system_actions: Vec::new(),
        })
    }

    /// The service's prefetch keys as wants: each rendered for this request, and queried on
    /// `fhirServer` when missing if it feeds the model or is required.
    fn wants<'r>(&'r self, request: &'r HookRequest<'_>) -> Vec<Want<'r>> {
        self.def
            .prefetch
            .iter()
            .map(|p| Want {
                key: &p.key,
                query: p
                    .template
                    .render(&request.context)
                    .map_err(|e| e.to_string()),
                prefetched: request
                    .prefetch
                    .as_ref()
                    .and_then(|m| m.get(&p.key))
                    .copied(),
                // Optional context (labs, conditions) is used when the EHR prefetched it, not
                // fetched: it must not add a query to every call.
                fetch_if_missing: p.required || self.def.inputs.contains(&p.key),
            })
            .collect()
    }

    /// Fulfils the prefetch: what the EHR sent is used, what it did not send (or answered
    /// with an OperationOutcome) is queried on `fhirServer` in parallel, within the deadline
    /// less the scoring reserve. Refused servers are never contacted.
    async fn fulfil<'r>(
        &self,
        request: &'r HookRequest<'_>,
        wants: &[Want<'r>],
        client: Option<&VerifiedClient>,
        deadline: Instant,
    ) -> Vec<Supply<'r>> {
        let token = request
            .fhir_authorization
            .as_ref()
            .filter(|a| a.token_type.eq_ignore_ascii_case("bearer"))
            .map(|a| a.access_token.as_str());
        let fetch_deadline = deadline
            .checked_sub(self.fhir.scoring_reserve)
            .unwrap_or(deadline);
        // The server is looked at (and the egress policy asked) only when data must be fetched.
        let server = match request.fhir_server.as_deref() {
            _ if !fulfil::needs_server(wants) => Err("no query needed".to_owned()),
            None => Err("the request has no fhirServer to query".to_owned()),
            Some(base) => {
                let caller = (
                    client.map(|c| c.iss.as_str()),
                    client.and_then(|c| c.tenant.as_deref()),
                );
                self.fhir
                    .client
                    .server(base, caller, token, fetch_deadline)
                    .map_err(|e| {
                        tracing::warn!(service = %self.def.id, hook_instance = %request.hook_instance, error = %e.log_summary(), "fhirServer refused, not contacted");
                        format!("fhirServer {e}")
                    })
            }
        };
        fulfil::fulfil(wants, server.as_ref().map_err(String::as_str)).await
    }

    /// Projects every supplied input into Observations (one pass each). A required key
    /// without data fails with 412 (spec: "Prefetch Template"), naming the key and why.
    fn gather<'s>(
        &self,
        request: &HookRequest<'_>,
        wants: &[Want<'_>],
        supplies: &'s [Supply<'s>],
    ) -> Result<(Vec<ObservationView<'s>>, usize), ServiceError> {
        let mut observations = Vec::new();
        let mut unreadable = 0;
        for (p, (want, supply)) in self.def.prefetch.iter().zip(wants.iter().zip(supplies)) {
            let is_input = self.def.inputs.contains(&p.key);
            let (pages, fetched): (Vec<&RawValue>, bool) = match supply {
                Supply::Prefetched(v) => (vec![*v], false),
                Supply::Fetched(f) => (f.pages.iter().map(|b| &**b).collect(), true),
                Supply::NoData => (Vec::new(), false),
                Supply::Missing(why) if p.required => return Err(missing(p, want, why.clone())),
                Supply::Missing(why) => {
                    tracing::info!(service = %self.def.id, hook_instance = %request.hook_instance, key = %p.key, reason = %why, "optional prefetch unavailable");
                    (Vec::new(), false)
                }
                Supply::Failed(e) => {
                    tracing::warn!(service = %self.def.id, hook_instance = %request.hook_instance, key = %p.key, error = %e.log_summary(), "FHIR query failed");
                    if p.required {
                        return Err(missing(p, want, format!("querying fhirServer failed: {e}")));
                    }
                    (Vec::new(), false)
                }
            };
            if !is_input {
                continue;
            }
            for page in pages {
                match projection::observations(page) {
                    Ok(projected) => {
                        unreadable += projected.unreadable;
                        observations.extend(projected.observations);
                    }
                    Err(e) if fetched => {
                        return Err(missing(
                            p,
                            want,
                            format!("fhirServer returned unusable data: {e}"),
                        ))
                    }
                    Err(e) => {
                        return Err(ServiceError::InvalidPrefetch {
                            key: p.key.clone(),
                            reason: e.to_string(),
                        })
                    }
                }
            }
        }
        Ok((observations, unreadable))
    }

    fn abstain(
        &self,
        request: &HookRequest<'_>,
        reason: String,
        matrix: &FeatureMatrix,
    ) -> CdsResponse {
        if !self.def.guardrails.abstain_card {
            return CdsResponse::default();
        }
        let card = cards::abstain_card(
            &Abstention {
                service_id: &self.def.id,
                hook_instance: &request.hook_instance,
                manifest: &self.model.manifest,
                reason,
                window_start: matrix.window_start,
                window_end: matrix.window_end,
                public_base: &self.public_base,
            },
            &self.def.card,
        );
        CdsResponse {
            cards: vec![checked(card)],
            system_actions: Vec::new(),
        }
    }

    /// SpO2 scale 2 when the conditions prefetch holds an active hypercapnic respiratory failure
    /// (the codes are the service's `[news2] scale2_conditions`), else scale 1.
    fn spo2_scale(&self, request: &HookRequest<'_>, supplies: &[Supply<'_>]) -> SpO2Scale {
        let opts = &self.def.news2;
        let Some(key) = &opts.conditions_prefetch else {
            return SpO2Scale::Scale1;
        };
        let found =
            self.def
                .prefetch
                .iter()
                .zip(supplies)
                .filter(|(p, _)| &p.key == key)
                .any(|(_, supply)| match supply {
                    Supply::Prefetched(v) => {
                        projection::has_active_condition(v, &opts.scale2_conditions)
                    }
                    Supply::Fetched(f) => f.pages.iter().any(|page| {
                        projection::has_active_condition(page, &opts.scale2_conditions)
                    }),
                    _ => false,
                });
        if found {
            tracing::debug!(service = %self.def.id, hook_instance = %request.hook_instance, "NEWS2 on SpO2 scale 2");
            SpO2Scale::Scale2
        } else {
            SpO2Scale::Scale1
        }
    }

    fn indicator(&self, risk: f32) -> Option<Indicator> {
        let t = &self.def.thresholds;
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
}

fn missing(p: &PrefetchSpec, want: &Want<'_>, why: String) -> ServiceError {
    ServiceError::PrefetchMissing {
        key: p.key.clone(),
        query: want
            .query
            .clone()
            .unwrap_or_else(|_| p.template.as_str().to_owned()),
        why,
    }
}

/// Last line of defence for the spec's card rules: a summary that grew too long (a long
/// abstention reason) is shortened rather than sent invalid; other problems are logged.
fn checked(mut card: Card) -> Card {
    if card.summary.chars().count() >= 140 {
        card.summary = card.summary.chars().take(138).collect::<String>() + "…";
    }
    for problem in cards::validate::card_problems(&card) {
        tracing::error!(%problem, "card breaks a CDS Hooks rule");
    }
    card
}
