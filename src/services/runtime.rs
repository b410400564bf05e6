//! The swappable part of a running gateway: the loaded models and the services bound to them.
//!
//! A reload (SIGHUP) builds a whole new [`Runtime`] and swaps it in; every HTTP surface holds
//! the same [`RuntimeHandle`] and takes one `Arc<Runtime>` per request, so a request never sees
//! half of an old and half of a new set.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

use super::ServiceRegistry;
use crate::inference::ModelRegistry;
use crate::metrics::inc;

/// Models and the services bound to them: what a reload swaps.
pub struct Runtime {
    pub models: ModelRegistry,
    pub services: ServiceRegistry,
    /// The patient-timeline encoder behind `/api/v1/embed`, when `models_dir/foundation/` has
    /// one: loaded, checked (sha256, signature) and reloaded together with the task models.
    pub foundation: Option<Arc<crate::inference::FoundationModel>>,
}

/// Where the [`Runtime`] in force is found, and how many reloads took effect or were refused
/// (`/metrics`).
pub struct RuntimeHandle {
    current: RwLock<Arc<Runtime>>,
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
}

impl RuntimeHandle {
    /// A handle serving `runtime` until the first reload.
    pub fn new(runtime: Runtime) -> Self {
        Self {
            current: RwLock::new(Arc::new(runtime)),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
        }
    }

    /// The models and services now in force.
    pub fn current(&self) -> Arc<Runtime> {
        match self.current.read() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts `runtime` in force for every request that starts from now on.
    pub fn replace(&self, runtime: Runtime) {
        let mut slot = match self.current.write() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        };
        *slot = Arc::new(runtime);
        inc(&self.reloads);
    }

    /// Counts a reload that was refused (the running set kept serving).
    pub fn refused(&self) {
        inc(&self.reload_failures);
    }
}
