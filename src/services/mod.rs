//! CDS services: one `cds-services/*.toml` definition each, orchestrating
//! prefetch → features → inference → cards, with the guardrails that decide whether a card
//! is shown at all.

pub mod abstain;
pub mod baselines;
mod definition;
mod error;
pub mod scoring;
mod service;

use std::path::Path;
use std::sync::Arc;

pub use definition::{
    load_all, DefinitionErrors, Guardrails, PrefetchSpec, ServiceDef, Thresholds,
};
pub use error::ServiceError;
pub use service::CdsService;

use crate::fhir::FhirClient;
use crate::inference::ModelRegistry;

/// The FHIR client services query through, and how much of each deadline they keep for
/// scoring after the queries.
pub struct FhirAccess {
    pub client: FhirClient,
    pub scoring_reserve: std::time::Duration,
}

/// All services, by id, in definition order.
pub struct ServiceRegistry {
    services: Vec<CdsService>,
}

impl ServiceRegistry {
    /// Loads every definition in `dir` and binds each to its model.
    pub fn load(
        dir: &Path,
        models: &ModelRegistry,
        public_base: &str,
        fhir: Arc<FhirAccess>,
    ) -> Result<Self, DefinitionErrors> {
        let defs = load_all(dir, models)?;
        let mut services = Vec::new();
        for def in defs {
            // `load_all` checked the model exists.
            let Some(model) = models.get(&def.model_name, &def.model_version) else {
                return Err(DefinitionErrors(vec![(
                    def.id.clone(),
                    "model vanished".into(),
                )]));
            };
            services.push(CdsService::new(
                def,
                model,
                Arc::from(public_base),
                fhir.clone(),
            ));
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
