//! Model runtime: manifests, sha256-verified TorchScript loading, device choice, a dedicated
//! batching inference thread per local model, and remote models over the Open Inference
//! Protocol.
//!
//! LibTorch never runs on actix workers: each model is loaded, put in eval mode and warmed up
//! on its own OS thread, which owns the `CModule` and serves jobs from a bounded queue. Each
//! job carries the deadline of the hook that asked; expired jobs are dropped, not computed.

mod device;
mod error;
pub mod foundation;
mod handle;
mod lifecycle;
mod manifest;
pub mod oip;
mod registry;
mod remote;
pub mod settings;
pub mod signature;
mod worker;

pub use device::{cuda_is_available, select_device};
pub use error::{InferenceError, LoadError};
pub use foundation::{FoundationManifest, FoundationModel};
pub use handle::ModelHandle;
pub use lifecycle::Lifecycle;
pub use manifest::{ExplanationMethod, Manifest, ModelStatus, SuggestedThresholds, Validity};
pub use registry::{LoadedModel, ModelRegistry};
pub use settings::{DevicePreference, InferenceSettings, ModelSettings};
