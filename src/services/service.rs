//! One CDS service answering one hook call: data → features → model → guardrails → card,
//! with every outcome (shown, below threshold, abstained, suppressed, downgraded,
//! deduplicated, shadow, disabled) written to the prediction record.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::abstain;
use super::baselines;
use super::definition::{PrefetchSpec, ServiceDef};
use super::guardrails::{self, Subject, Verdict};
use super::orders::{self, DraftOrder};
use super::policy::Mode;
use super::scoring::{self, Prepared};
use super::suggestions;
use super::{ServiceEnv, ServiceError};
use crate::cards::{self, Abstention, RiskAssessment};
use crate::features::explain;
use crate::features::kdigo;
use crate::features::news2::SpO2Scale;
use crate::features::FeatureMatrix;
use crate::fhir::fulfil::{self, Supply, Want};
use crate::fhir::projection::{self, ObservationView, LOINC};
use crate::fhir::time::parse_instant;
use crate::hooks::auth::VerifiedClient;
use crate::hooks::wire::{Card, CdsResponse, HookRequest, Indicator};
use crate::inference::{InferenceError, LoadedModel, ModelStatus};
use crate::metrics::{inc, ServiceMetrics};
use crate::store::{PredictionRecord, Scope};

/// Contributing observations listed on a card.
const DRIVERS_SHOWN: usize = 4;

/// A service bound to its model (and that model's shadow versions, scored alongside).
pub struct CdsService {
    def: ServiceDef,
    model: Arc<LoadedModel>,
    shadows: Vec<Arc<LoadedModel>>,
    env: Arc<ServiceEnv>,
    metrics: ServiceMetrics,
}

/// Data gathered for one call.
pub(super) struct Gathered<'s> {
    pub(super) observations: Vec<ObservationView<'s>>,
    pub(super) unreadable: usize,
    /// `(LOINC code, effective time)` of every prefetched Observation, inputs or not.
    resulted: Vec<(String, DateTime<Utc>)>,
}

/// Who and where one call is about.
struct CallFacts<'r> {
    request: &'r HookRequest<'r>,
    /// Whose patient this is (client, tenant, FHIR server): every stored state is keyed by it.
    scope: Scope,
    /// The call's key within its scope ([`Scope::call_key`]): card uuids derive from it.
    call_key: String,
    patient_id: Option<&'r str>,
    unit: String,
    now: DateTime<Utc>,
    started: Instant,
}

/// What the decision after scoring works from.
struct Call<'a> {
    facts: &'a CallFacts<'a>,
    supplies: &'a [Supply<'a>],
    gathered: &'a Gathered<'a>,
    prepared: &'a Prepared,
    drafts: &'a [DraftOrder],
    deadline: Instant,
}

impl CdsService {
    pub(super) fn new(
        def: ServiceDef,
        model: Arc<LoadedModel>,
        shadows: Vec<Arc<LoadedModel>>,
        env: Arc<ServiceEnv>,
    ) -> Self {
        Self {
            def,
            model,
            shadows,
            env,
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

    /// Its definition (thresholds, guardrails), for the SMART app and reports.
    pub fn definition(&self) -> &ServiceDef {
        &self.def
    }

    /// The model it scores with.
    pub fn model(&self) -> &Arc<LoadedModel> {
        &self.model
    }

    /// Whether it answers at all: its TOML's `enabled` and the run-time kill switch.
    pub fn is_enabled(&self) -> bool {
        self.def.enabled && !self.env.switches.is_disabled(&self.def.id)
    }

    /// Answers one hook call within the service's deadline. Insufficient data or a late model
    /// give fewer cards, not an error; missing required prefetch is a 412.
    pub async fn invoke(
        &self,
        request: &HookRequest<'_>,
        client: Option<&VerifiedClient>,
    ) -> Result<CdsResponse, ServiceError> {
        let started = Instant::now();
        let deadline = started + self.def.deadline;
        inc(&self.metrics.calls);
        let scope = Scope::new(
            client.map(|c| c.iss.as_str()),
            client.and_then(|c| c.tenant.as_deref()),
            request.fhir_server.as_deref(),
        );
        let mut facts = CallFacts {
            request,
            call_key: scope.call_key(&request.hook_instance),
            scope,
            patient_id: request.context.get("patientId").and_then(|v| v.as_str()),
            unit: client
                .and_then(|c| c.tenant.clone())
                .unwrap_or_else(|| "unassigned".into()),
            now: Utc::now(),
            started,
        };
        if !self.is_enabled() {
            inc(&self.metrics.disabled);
            self.record(&facts, &self.model, "disabled", None, None, None, None)
                .await;
            return Ok(CdsResponse::default());
        }
        // Order checks are about listed drugs in the draft orders; without one there is nothing
        // to say (and nothing to record).
        let drafts = match &self.def.orders {
            Some((_, list)) => {
                let found = orders::matching(request, list);
                if found.is_empty() {
                    return Ok(CdsResponse::default());
                }
                found
            }
            None => Vec::new(),
        };
        let wants = self.wants(request);
        let supplies = self.fulfil(request, &wants, client, deadline).await;
        let gathered = self
            .gather(request, &wants, &supplies)
            .inspect_err(|_| inc(&self.metrics.prefetch_missing))?;
        if let Some(unit) = self.unit(&supplies) {
            facts.unit = unit;
        }
        let spec = &self.model.features;
        let now = facts.now;
        let prepared = scoring::prepare(
            &self.model,
            &gathered.observations,
            gathered.unreadable,
            now,
        );
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
            self.record(
                &facts,
                &self.model,
                "abstained",
                None,
                None,
                Some(&reason),
                Some(&prepared),
            )
            .await;
            return Ok(self.abstain(&facts.call_key, reason, matrix));
        }

        let (active, shadow_scores) = tokio::join!(
            scoring::risk(&self.model, &prepared, deadline),
            self.score_shadows(&gathered, now, deadline)
        );
        // Shadow versions' records are written while the active model's decision is made:
        // neither waits for the other's commit.
        let shadows_recorded = async {
            for (model, prepared, risk) in &shadow_scores {
                let would = self.indicator(*risk).map(indicator_name);
                inc(&self.metrics.shadow);
                self.record(
                    &facts,
                    model,
                    "shadow",
                    Some(*risk),
                    would,
                    None,
                    Some(prepared),
                )
                .await;
            }
        };
        let decided = self.decide(
            Call {
                facts: &facts,
                supplies: &supplies,
                gathered: &gathered,
                prepared: &prepared,
                drafts: &drafts,
                deadline,
            },
            active,
        );
        let ((), answer) = tokio::join!(shadows_recorded, decided);
        answer
    }

    /// The active model's answer once it has scored: thresholds, shadow mode, guardrails
    /// (dedup, suppression, budget), then, for a card that will be shown, its explanation.
    /// Every outcome is recorded.
    async fn decide(
        &self,
        call: Call<'_>,
        active: Result<f32, InferenceError>,
    ) -> Result<CdsResponse, ServiceError> {
        let Call {
            facts,
            supplies,
            gathered,
            prepared,
            drafts,
            deadline,
        } = call;
        let request = facts.request;
        let spec = &self.model.features;
        let matrix = &prepared.matrix;
        let risk = match active {
            Ok(risk) => risk,
            Err(e) => {
                // Answer on time without this model's card rather than late or with an error.
                inc(&self.metrics.no_score);
                tracing::warn!(service = %self.def.id, hook_instance = %request.hook_instance, error = %e, "no score");
                self.record(
                    facts,
                    &self.model,
                    "no_score",
                    None,
                    None,
                    Some(&e.to_string()),
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
            .and_then(|_| rising_creatinine(spec, matrix));
        let indicator = match (self.indicator(risk), &rising) {
            (Some(i), _) => Some(i),
            (None, Some(_)) => Some(Indicator::Warning),
            (None, None) => None,
        };
        let Some(indicator) = indicator else {
            self.record(
                facts,
                &self.model,
                "below_threshold",
                Some(risk),
                None,
                None,
                Some(prepared),
            )
            .await;
            return Ok(CdsResponse::default());
        };
        if self.def.mode == Mode::Shadow || self.model.manifest.status == ModelStatus::Shadow {
            inc(&self.metrics.shadow);
            tracing::info!(service = %self.def.id, hook_instance = %request.hook_instance, "shadow: scored and recorded, no card");
            self.record(
                facts,
                &self.model,
                "shadow",
                Some(risk),
                Some(indicator_name(indicator)),
                None,
                Some(prepared),
            )
            .await;
            return Ok(CdsResponse::default());
        }
        let (shown, notes) = {
            // One decision at a time per call within a dedup group (see DedupLocks).
            let lock = self.def.alerts.dedup_group.as_deref().map(|g| {
                self.env
                    .dedup
                    .lock_for(g, &facts.scope, &request.hook_instance)
            });
            let _held = match &lock {
                Some(l) => Some(l.lock().await),
                None => None,
            };
            let verdict = match self.duplicate_of(facts, prepared).await {
                Some(reason) => Verdict::Deduplicate { reason },
                None => self.verdict(facts, indicator).await,
            };
            let (shown, outcome, reason) = match verdict {
                Verdict::Show(i) => (Some(i), "shown", None),
                Verdict::Downgrade { reason } => {
                    (Some(Indicator::Info), "downgraded", Some(reason))
                }
                Verdict::Suppress { reason } => (None, "suppressed", Some(reason)),
                Verdict::Deduplicate { reason } => (None, "deduplicated", Some(reason)),
            };
            let counter = match outcome {
                "downgraded" => Some(&self.metrics.downgraded),
                "suppressed" => Some(&self.metrics.suppressed),
                "deduplicated" => Some(&self.metrics.deduplicated),
                _ => None,
            };
            if let Some(c) = counter {
                inc(c);
                tracing::info!(service = %self.def.id, hook_instance = %request.hook_instance, outcome, "card held back by a guardrail");
            }
            let shown_name = shown.map(indicator_name);
            self.record(
                facts,
                &self.model,
                outcome,
                Some(risk),
                shown_name,
                reason.as_deref(),
                Some(prepared),
            )
            .await;
            let Some(shown) = shown else {
                return Ok(CdsResponse::default());
            };
            let mut notes: Vec<String> = reason.into_iter().map(|r| format!("_{r}._")).collect();
            if let Some(words) = &rising {
                notes.push(words.clone());
            }
            (shown, notes)
        };
        // The explanation, only now that a card will be shown (outside the dedup lock). Late or
        // failed, the card still goes, with its trends and the app link but no drivers.
        let contributions = scoring::contributions(&self.model, prepared, risk, deadline)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(service = %self.def.id, hook_instance = %request.hook_instance, error = %e, "no explanation in time; card without drivers");
                Vec::new()
            });
        let card = self.card(
            facts,
            supplies,
            prepared,
            gathered,
            risk,
            shown,
            &contributions,
            drafts,
            notes,
        );
        inc(&self.metrics.cards);
        Ok(CdsResponse {
            cards: vec![checked(card)],
            system_actions: Vec::new(),
        })
    }

    /// Scores every shadow version of the model on the same observations.
    async fn score_shadows(
        &self,
        gathered: &Gathered<'_>,
        now: DateTime<Utc>,
        deadline: Instant,
    ) -> Vec<(Arc<LoadedModel>, Prepared, f32)> {
        let mut out = Vec::new();
        for model in &self.shadows {
            let prepared =
                scoring::prepare(model, &gathered.observations, gathered.unreadable, now);
            match scoring::risk(model, &prepared, deadline).await {
                Ok(risk) => out.push((model.clone(), prepared, risk)),
                Err(e) => {
                    tracing::info!(service = %self.def.id, model = %model.manifest.name, version = %model.manifest.version, error = %e, "shadow model gave no score");
                }
            }
        }
        out
    }

    /// Suppression and alert budget, read from the prediction record. A store that cannot
    /// answer lets the card through: a missed suppression is noise, a missed alert is harm.
    async fn verdict(&self, facts: &CallFacts<'_>, indicator: Indicator) -> Verdict {
        let who = Subject {
            scope: &facts.scope,
            service_id: &self.def.id,
            patient_id: facts.patient_id,
            unit: &facts.unit,
            now: facts.now,
        };
        match guardrails::decide(&self.def.alerts, &self.env.store, &who, indicator).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(service = %self.def.id, hook_instance = %facts.request.hook_instance, error = %e, "guardrail store check failed; card shown");
                Verdict::Show(indicator)
            }
        }
    }

    /// Another service of the same dedup group already showed a card in this call on the same
    /// inputs (the same Observations fed both models).
    async fn duplicate_of(&self, facts: &CallFacts<'_>, prepared: &Prepared) -> Option<String> {
        let group = self.def.alerts.dedup_group.as_deref()?;
        let mine: Vec<String> = input_refs(prepared);
        let runtime_peers = self.env.peers(group, &self.def.id);
        for (peer_id, manifest) in runtime_peers {
            let id = cards::card_uuid(&peer_id, &facts.call_key, &manifest);
            let Ok(Some(p)) = self.env.store.prediction(&id).await else {
                continue;
            };
            let shown = matches!(p.outcome.as_str(), "shown" | "downgraded");
            if shown && p.input_refs.iter().any(|r| mine.contains(r)) {
                return Some(format!(
                    "the {peer_id} card on the same observations was already shown in this call"
                ));
            }
        }
        None
    }

    #[allow(clippy::too_many_arguments)]
    fn card(
        &self,
        facts: &CallFacts<'_>,
        supplies: &[Supply<'_>],
        prepared: &Prepared,
        gathered: &Gathered<'_>,
        risk: f32,
        indicator: Indicator,
        contributions: &[(usize, f32)],
        drafts: &[DraftOrder],
        notes: Vec<String>,
    ) -> Card {
        let request = facts.request;
        let spec = &self.model.features;
        let matrix = &prepared.matrix;
        // Bedside scores describe the patient now: parameters older than the staleness limit
        // count as not recorded rather than scoring an old value.
        let recent = facts.now
            - ChronoDuration::from_std(self.def.guardrails.max_staleness)
                .unwrap_or(ChronoDuration::MAX);
        let baselines = baselines::compute(
            &self.def.baselines,
            spec,
            matrix,
            recent,
            self.spo2_scale(request, supplies),
        );
        let resulted: Vec<String> = gathered
            .resulted
            .iter()
            .filter(|(_, t)| *t >= matrix.window_start)
            .map(|(c, _)| c.clone())
            .collect();
        let uuid = cards::card_uuid(&self.def.id, &facts.call_key, &self.model.manifest);
        let order = drafts.first();
        let suggestions = suggestions::build(
            &self.def.suggestions,
            &uuid,
            indicator,
            request,
            order,
            &resulted,
        );
        let extra_values = order
            .map(|o| vec![("drug", o.drug.clone())])
            .unwrap_or_default();
        cards::risk_card(
            &RiskAssessment {
                service_id: &self.def.id,
                hook_instance: &facts.call_key,
                manifest: &self.model.manifest,
                matrix,
                risk,
                indicator,
                baselines: &baselines,
                explanation: &explain::explain(spec, matrix, contributions, DRIVERS_SHOWN),
                rejected: prepared.rejected,
                public_base: &self.env.public_base,
                suggestions,
                extra_values,
                notes,
            },
            &self.def.card,
        )
    }

    /// Writes one prediction record; a failure is logged and counted, the answer still goes.
    #[allow(clippy::too_many_arguments)]
    async fn record(
        &self,
        facts: &CallFacts<'_>,
        model: &LoadedModel,
        outcome: &'static str,
        risk: Option<f32>,
        indicator: Option<&'static str>,
        reason: Option<&str>,
        prepared: Option<&Prepared>,
    ) {
        let m = &model.manifest;
        let record = PredictionRecord {
            id: cards::card_uuid(&self.def.id, &facts.call_key, m),
            at: facts.now,
            service_id: self.def.id.clone(),
            hook: self.def.hook.clone(),
            hook_instance: facts.request.hook_instance.clone(),
            model: m.name.clone(),
            model_version: m.version.clone(),
            mode: if outcome == "shadow" {
                "shadow"
            } else {
                "active"
            },
            scope: facts.scope.clone(),
            patient_id: facts.patient_id.map(str::to_owned),
            unit: Some(facts.unit.clone()),
            risk: risk.map(f64::from),
            indicator: indicator.map(str::to_owned),
            outcome,
            reason: reason.map(str::to_owned),
            input_refs: prepared.map(input_refs).unwrap_or_default(),
            tensor_sha256: prepared.map(|p| tensor_hash(&p.matrix)),
            latency_ms: facts.started.elapsed().as_secs_f64() * 1e3,
        };
        if let Err(e) = self.env.store.record_prediction(&record).await {
            inc(&self.metrics.record_failed);
            tracing::error!(service = %self.def.id, hook_instance = %facts.request.hook_instance, error = %e, "prediction not recorded");
        }
    }

    /// The unit the alert budget counts against: the Encounter's location, if prefetched.
    fn unit(&self, supplies: &[Supply<'_>]) -> Option<String> {
        let key = self.def.alerts.unit_from.as_ref()?;
        let (_, supply) = self
            .def
            .prefetch
            .iter()
            .zip(supplies)
            .find(|(p, _)| &p.key == key)?;
        let raw: &RawValue = match supply {
            Supply::Prefetched(v) => v,
            Supply::Fetched(f) => f.pages.first()?,
            _ => return None,
        };
        let v: serde_json::Value = serde_json::from_str(raw.get()).ok()?;
        let location = &v["location"][0]["location"];
        location["display"]
            .as_str()
            .or_else(|| location["reference"].as_str())
            .map(str::to_owned)
    }

    /// The service's prefetch keys as wants: each rendered for this request, and queried on
    /// `fhirServer` when missing if it feeds the model or is required.
    pub(super) fn wants<'r>(&'r self, request: &'r HookRequest<'_>) -> Vec<Want<'r>> {
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
            .checked_sub(self.env.fhir.scoring_reserve)
            .unwrap_or(deadline);
        let caller = (
            client.map(|c| c.iss.as_str()),
            client.and_then(|c| c.tenant.as_deref()),
        );
        // The server is looked at (and the egress policy asked) only when data must be fetched.
        let server = match request.fhir_server.as_deref() {
            _ if !fulfil::needs_server(wants) => Err("no query needed".to_owned()),
            None => Err("the request has no fhirServer to query".to_owned()),
            Some(base) => {
                self.env.fhir
                    .client
                    .server(base, caller, token, fetch_deadline)
                    .map_err(|e| {
                        tracing::warn!(service = %self.def.id, hook_instance = %request.hook_instance, error = %e.log_summary(), "fhirServer refused, not contacted");
                        format!("fhirServer {e}")
                    })
            }
        };
        // No token from the EHR: bedside's own (SMART Backend Services), asked for only after
        // the caller's egress check passed, and only where this caller is granted it.
        let server = match server {
            Ok(s) if token.is_none() => {
                let backend = self.env.backend.as_deref();
                match crate::smart_backend::token_for(backend, &s, caller, fetch_deadline).await {
                    Some(own) => Ok(s.with_token(own)),
                    None => Ok(s),
                }
            }
            other => other,
        };
        fulfil::fulfil(wants, server.as_ref().map_err(String::as_str)).await
    }

    /// Projects every supplied input into Observations (one pass each). A required key
    /// without data fails with 412 (spec: "Prefetch Template"), naming the key and why.
    pub(super) fn gather<'s>(
        &self,
        request: &HookRequest<'_>,
        wants: &[Want<'_>],
        supplies: &'s [Supply<'s>],
    ) -> Result<Gathered<'s>, ServiceError> {
        let mut observations = Vec::new();
        let mut unreadable = 0;
        let mut resulted = Vec::new();
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
            for page in pages {
                // Non-input keys are read only for which results are in (suggestion rules);
                // something that is not Observations there is simply not such a result.
                if !is_input {
                    if let Ok(projected) = projection::observations(page) {
                        resulted.extend(projected.observations.iter().flat_map(resulted_codes));
                    }
                    continue;
                }
                match projection::observations(page) {
                    Ok(projected) => {
                        unreadable += projected.unreadable;
                        resulted.extend(projected.observations.iter().flat_map(resulted_codes));
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
        Ok(Gathered {
            observations,
            unreadable,
            resulted,
        })
    }

    fn abstain(&self, call_key: &str, reason: String, matrix: &FeatureMatrix) -> CdsResponse {
        if !self.def.guardrails.abstain_card {
            return CdsResponse::default();
        }
        let card = cards::abstain_card(
            &Abstention {
                service_id: &self.def.id,
                hook_instance: call_key,
                manifest: &self.model.manifest,
                reason,
                window_start: matrix.window_start,
                window_end: matrix.window_end,
                public_base: &self.env.public_base,
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
    pub(super) fn spo2_scale(
        &self,
        request: &HookRequest<'_>,
        supplies: &[Supply<'_>],
    ) -> SpO2Scale {
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

    pub(super) fn indicator(&self, risk: f32) -> Option<Indicator> {
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

/// `(LOINC code, time)` of a final result, for "unless already resulted" rules.
fn resulted_codes(obs: &ObservationView<'_>) -> Vec<(String, DateTime<Utc>)> {
    let Some(time) = obs
        .is_usable_status()
        .then(|| obs.effective_text().and_then(parse_instant))
        .flatten()
    else {
        return Vec::new();
    };
    obs.code
        .iter()
        .flat_map(|c| c.coding.iter())
        .filter(|c| c.system.as_deref() == Some(LOINC))
        .filter_map(|c| c.code.as_deref().map(|code| (code.to_owned(), time)))
        .collect()
}

/// The FHIR references of every measurement the tensor holds.
fn input_refs(prepared: &Prepared) -> Vec<String> {
    let mut refs: Vec<String> = prepared
        .matrix
        .measurements
        .iter()
        .map(|m| format!("Observation/{}", m.resource_id))
        .collect();
    refs.sort();
    refs.dedup();
    refs
}

/// sha256 of the input tensor's bytes: says later exactly what the model saw.
fn tensor_hash(matrix: &FeatureMatrix) -> String {
    let mut h = Sha256::new();
    for v in &matrix.values {
        h.update(v.to_le_bytes());
    }
    hex::encode(h.finalize())
}

fn indicator_name(i: Indicator) -> &'static str {
    match i {
        Indicator::Info => "info",
        Indicator::Warning => "warning",
        Indicator::Critical => "critical",
    }
}

/// Card words when creatinine already meets a KDIGO criterion, else `None`.
fn rising_creatinine(
    spec: &crate::features::FeatureSpec,
    matrix: &FeatureMatrix,
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
    Some(format!(
        "**Creatinine is rising:** KDIGO stage {stage} ({}).",
        criteria.join(", ")
    ))
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
