//! CDS services: one `cds-services/*.toml` definition each. A call runs in stages, one file
//! each, read top to bottom from [`CdsService::invoke`] (`service.rs`): `gather` → `scoring`
//! → `decide` (with `guardrails`) → `record` → `card`.

pub mod abstain;
pub mod baselines;
mod call;
mod card;
mod decide;
mod definition;
mod error;
mod gather;
pub mod guardrails;
pub mod inputs;
mod orders;
pub mod policy;
mod record;
pub mod review;
mod runtime;
pub mod scoring;
mod service;
mod shadow;
mod suggestions;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, RwLock};

pub use call::CdsService;
pub use definition::{
    load_all, model_refs, DefinitionErrors, Guardrails, ModelRef, PrefetchSpec, ServiceDef,
    Thresholds, FOLLOWS_ACTIVE,
};
pub use error::ServiceError;
pub use runtime::{Runtime, RuntimeHandle};

use crate::fhir::FhirClient;
use crate::inference::{Manifest, ModelRegistry, ModelStatus};
use crate::store::Store;
use guardrails::ShownInCalls;

/// The FHIR client services query through, and how much of each deadline they keep for
/// scoring after the queries.
pub struct FhirAccess {
    pub client: FhirClient,
    pub scoring_reserve: std::time::Duration,
}

/// Services switched off at run time (`POST /admin/services/{id}/disable`): kept across
/// configuration reloads and, through the store, across restarts; on a shared store every
/// replica follows the others' switches within a second (`server::follow_switches`).
#[derive(Default)]
pub struct KillSwitch {
    disabled: RwLock<BTreeSet<String>>,
}

impl KillSwitch {
    /// Turns service `id` off (`true`) or back on.
    pub fn set_disabled(&self, id: &str, disabled: bool) {
        let mut set = match self.disabled.write() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        if disabled {
            set.insert(id.to_owned());
        } else {
            set.remove(id);
        }
    }

    /// Makes `disabled` the whole set of services switched off (as the store has it).
    pub fn replace(&self, disabled: BTreeSet<String>) {
        let mut set = match self.disabled.write() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        *set = disabled;
    }

    /// Whether service `id` was switched off.
    pub fn is_disabled(&self, id: &str) -> bool {
        match self.disabled.read() {
            Ok(s) => s.contains(id),
            Err(poisoned) => poisoned.into_inner().contains(id),
        }
    }
}

/// What every service shares besides its definition and model.
pub struct ServiceEnv {
    /// Base URL for links on cards (no trailing slash).
    pub public_base: Arc<str>,
    pub fhir: Arc<FhirAccess>,
    /// The prediction record, which the guardrails read.
    pub store: Store,
    pub switches: Arc<KillSwitch>,
    pub dedup: ShownInCalls,
    /// bedside's own FHIR token source (`[backend_services]`) for calls without
    /// `fhirAuthorization`; `None` when not configured.
    pub backend: Option<Arc<dyn crate::fhir::TokenSource>>,
    /// `(service id, dedup group, model manifest)` of every loaded service.
    groups: RwLock<Vec<(String, String, Manifest)>>,
}

impl ServiceEnv {
    /// A new environment; services join their dedup groups when loaded.
    pub fn new(
        public_base: &str,
        fhir: Arc<FhirAccess>,
        store: Store,
        switches: Arc<KillSwitch>,
    ) -> Self {
        Self {
            public_base: Arc::from(public_base),
            fhir,
            store,
            switches,
            dedup: ShownInCalls::default(),
            backend: None,
            groups: RwLock::new(Vec::new()),
        }
    }

    /// The other services of dedup group `group`, with their model manifests.
    pub fn peers(&self, group: &str, except: &str) -> Vec<(String, Manifest)> {
        let groups = match self.groups.read() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        groups
            .iter()
            .filter(|(id, g, _)| g == group && id != except)
            .map(|(id, _, m)| (id.clone(), m.clone()))
            .collect()
    }
}

/// All services, by id, in definition order.
pub struct ServiceRegistry {
    services: Vec<CdsService>,
}

impl ServiceRegistry {
    /// Loads every definition in `dir` and binds each to its model and that model's shadow
    /// versions.
    pub fn load(
        dir: &Path,
        models: &ModelRegistry,
        env: Arc<ServiceEnv>,
    ) -> Result<Self, DefinitionErrors> {
        let defs = load_all(dir, models)?;
        let mut services = Vec::new();
        let mut groups = Vec::new();
        for def in defs {
            // `load_all` checked the model exists.
            let Some(model) = models.get(&def.model_name, &def.model_version) else {
                return Err(DefinitionErrors(vec![(
                    def.id.clone(),
                    "model vanished".into(),
                )]));
            };
            let shadows: Vec<_> = models
                .versions(&def.model_name)
                .into_iter()
                .filter(|m| {
                    m.manifest.status == ModelStatus::Shadow
                        && m.manifest.version != def.model_version
                })
                .collect();
            if let Some(group) = &def.alerts.dedup_group {
                groups.push((def.id.clone(), group.clone(), model.manifest.clone()));
            }
            services.push(CdsService::new(def, model, shadows, env.clone()));
        }
        match env.groups.write() {
            Ok(mut g) => *g = groups,
            Err(poisoned) => *poisoned.into_inner() = groups,
        }
        Ok(Self { services })
    }

    /// The service with this id.
    pub fn get(&self, id: &str) -> Option<&CdsService> {
        self.services.iter().find(|s| s.id() == id)
    }

    /// All services.
    pub fn iter(&self) -> impl Iterator<Item = &CdsService> {
        self.services.iter()
    }
}
