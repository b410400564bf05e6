//! One CDS service answering one hook call, read top to bottom in [`CdsService::invoke`]:
//! gather ([`super::gather`]) → score ([`super::scoring`]) → decide ([`super::decide`]) →
//! record ([`super::record`]) → card ([`super::card`]). Every outcome (shown, below threshold,
//! abstained, suppressed, downgraded, deduplicated, shadow, disabled) is written to the
//! prediction record. One tracing span per call carries the service and hookInstance.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use tracing::Instrument as _;

use super::abstain;
use super::call::{Call, CallFacts, CdsService, Entry};
use super::definition::ServiceDef;
use super::orders;
use super::scoring;
use super::{ServiceEnv, ServiceError};
use crate::cds::wire::{CdsResponse, HookRequest};
use crate::cds::Caller;
use crate::inference::LoadedModel;
use crate::metrics::{inc, ServiceMetrics};
use crate::store::{Outcome, QuasiIdentifiers, Scope};

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
            shadow_lane: super::shadow::lane(),
            env,
            metrics: Arc::new(ServiceMetrics::default()),
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
    pub fn descriptor(&self) -> crate::cds::wire::ServiceDescriptor {
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
        client: Option<&Caller>,
    ) -> Result<CdsResponse, ServiceError> {
        let span = tracing::info_span!(
            "call",
            service = %self.def.id,
            hook_instance = %request.hook_instance
        );
        let started = Instant::now();
        let answer = self.answer(request, client).instrument(span).await;
        self.metrics.call_seconds.observe(started.elapsed());
        answer
    }

    async fn answer(
        &self,
        request: &HookRequest<'_>,
        client: Option<&Caller>,
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
            quasi: QuasiIdentifiers::default(),
        };
        if !self.is_enabled() {
            inc(&self.metrics.disabled);
            self.record(
                &facts,
                &self.model,
                Entry {
                    outcome: Outcome::Disabled,
                    risk: None,
                    indicator: None,
                    reason: None,
                },
                None,
            )
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
        let supplies = self
            .fulfil(request, &wants, client, deadline)
            .instrument(tracing::info_span!("fhir"))
            .await;
        let gathered = self
            .gather(&wants, &supplies)
            .inspect_err(|_| inc(&self.metrics.prefetch_missing))?;
        if let Some(unit) = self.unit(&supplies) {
            facts.unit = unit;
        }
        if self.def.learning.store_inputs {
            facts.quasi = self.quasi_identifiers(&supplies, facts.now);
        }
        let spec = &self.model.features;
        let now = facts.now;
        let prepared = tracing::info_span!("features").in_scope(|| {
            scoring::prepare(
                &self.model,
                &gathered.observations,
                gathered.unreadable,
                now,
            )
        });
        let matrix = &prepared.matrix;

        if let Some(reason) = abstain::reason(
            &self.model.manifest.validity,
            Some(&self.def.guardrails),
            spec,
            matrix,
            now,
        ) {
            tracing::info!(reason = %reason, "abstained");
            inc(&self.metrics.abstained);
            self.record(
                &facts,
                &self.model,
                Entry {
                    outcome: Outcome::Abstained,
                    risk: None,
                    indicator: None,
                    reason: Some(&reason),
                },
                Some(&prepared),
            )
            .await;
            return Ok(self.abstain(&facts, &supplies, reason, matrix, &gathered.observations));
        }

        // Shadow versions score after this answer, never before it ([`super::shadow`]).
        self.score_shadows_later(&facts, &gathered, now);
        let active = scoring::risk(&self.model, &prepared, deadline)
            .instrument(tracing::info_span!("inference"))
            .await;
        self.decide(
            Call {
                facts: &facts,
                supplies: &supplies,
                gathered: &gathered,
                prepared: &prepared,
                drafts: &drafts,
                deadline,
            },
            active,
        )
        .instrument(tracing::info_span!("decision"))
        .await
    }
}
