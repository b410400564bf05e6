//! The values a call's stages hand each other, and the service they run in: what
//! `service.rs` (the pipeline) and every stage (`gather`, `decide`, `record`, `card`) share.
//! It imports none of them.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};

use super::definition::ServiceDef;
use super::orders::DraftOrder;
use super::scoring::Prepared;
use super::ServiceEnv;
use crate::cds::wire::HookRequest;
use crate::fhir::fulfil::Supply;
use crate::fhir::projection::ObservationView;
use crate::inference::LoadedModel;
use crate::metrics::ServiceMetrics;
use crate::store::{Outcome, QuasiIdentifiers, Scope};

/// A service bound to its model (and that model's shadow versions, scored after each answer).
pub struct CdsService {
    pub(super) def: ServiceDef,
    pub(super) model: Arc<LoadedModel>,
    pub(super) shadows: Vec<Arc<LoadedModel>>,
    /// Bounds the shadow scores pending after answers ([`super::shadow`]).
    pub(super) shadow_lane: Arc<tokio::sync::Semaphore>,
    pub(super) env: Arc<ServiceEnv>,
    /// Shared with the shadow scores that finish after the answer.
    pub(super) metrics: Arc<ServiceMetrics>,
}

/// Who and where one call is about.
pub(super) struct CallFacts<'r> {
    pub(super) request: &'r HookRequest<'r>,
    /// Whose patient this is (client, tenant, FHIR server): every stored state is keyed by it.
    pub(super) scope: Scope,
    /// The call's key within its scope ([`Scope::call_key`]): card uuids derive from it.
    pub(super) call_key: String,
    pub(super) patient_id: Option<&'r str>,
    pub(super) unit: String,
    pub(super) now: DateTime<Utc>,
    pub(super) started: Instant,
    /// The patient's generalised quasi-identifiers, kept with the model input
    /// (`[learning] store_inputs` only; else empty).
    pub(super) quasi: QuasiIdentifiers,
}

/// What the decision after scoring works from.
#[derive(Clone, Copy)]
pub(super) struct Call<'a> {
    pub(super) facts: &'a CallFacts<'a>,
    pub(super) supplies: &'a [Supply<'a>],
    pub(super) gathered: &'a Gathered<'a>,
    pub(super) prepared: &'a Prepared,
    pub(super) drafts: &'a [DraftOrder],
    pub(super) deadline: Instant,
}

/// Data gathered for one call.
pub(super) struct Gathered<'s> {
    pub(super) observations: Vec<ObservationView<'s>>,
    pub(super) unreadable: usize,
    /// `(LOINC code, effective time)` of every prefetched Observation, inputs or not.
    pub(super) resulted: Vec<(String, DateTime<Utc>)>,
}

/// What one prediction record says about a call: what became of it, the model's risk (when
/// it scored), the indicator shown (or, for a shadow, the one it would have shown) and why it
/// abstained or was held back.
pub(super) struct Entry<'a> {
    pub(super) outcome: Outcome,
    pub(super) risk: Option<f32>,
    pub(super) indicator: Option<&'static str>,
    pub(super) reason: Option<&'a str>,
}
