//! How models are served (`[inference]`, `[inference.models.<name>]`), validated.

use std::collections::BTreeMap;
use std::time::Duration;

/// Jobs a model's queue holds by default.
pub const DEFAULT_QUEUE: usize = 64;
/// Samples per batch by default.
pub const DEFAULT_MAX_BATCH: usize = 64;

/// Validated inference settings.
#[derive(Debug, Clone)]
pub struct InferenceSettings {
    pub threads: usize,
    /// Defaults for every model.
    pub defaults: ModelSettings,
    /// Per model name.
    pub models: BTreeMap<String, ModelSettings>,
    /// Keys whose signatures models must carry ([`super::signature`]); empty: not checked.
    pub trusted_keys: Vec<super::signature::TrustedKey>,
}

/// How one model is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelSettings {
    pub device: DevicePreference,
    pub queue_capacity: usize,
    pub max_batch: usize,
    pub max_wait: Duration,
}

impl InferenceSettings {
    /// Settings for the model called `name`.
    pub fn for_model(&self, name: &str) -> ModelSettings {
        self.models.get(name).copied().unwrap_or(self.defaults)
    }

    /// CPU, defaults otherwise: for tools and tests that load models outside a gateway.
    pub fn cpu() -> Self {
        Self {
            threads: 0,
            defaults: ModelSettings {
                device: DevicePreference::Cpu,
                queue_capacity: DEFAULT_QUEUE,
                max_batch: DEFAULT_MAX_BATCH,
                max_wait: Duration::ZERO,
            },
            models: BTreeMap::new(),
            trusted_keys: Vec::new(),
        }
    }
}

/// Which device models are placed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevicePreference {
    /// CUDA when `tch::Cuda::is_available()`, else CPU.
    Auto,
    Cpu,
    /// CUDA; on a node without a usable GPU, CPU with a warning in the log.
    Cuda,
}
