//! Declarative features: FHIR Observations → the model's input tensor, plus a record of which
//! resources fed each value (for card explanations and, later, Provenance).
//!
//! Pure functions over [`crate::fhir::ObservationView`]s and a [`FeatureSpec`] read from the
//! `features.toml` beside each model, which the Python training code reads too, so training
//! and serving share one definition. NEWS2 is computed from the same measurements.
//!
//! The deterministic bedside baselines shown beside a model's risk — NEWS2 ([`news2`]), qSOFA
//! ([`qsofa`]), SIRS ([`sirs`]) and KDIGO creatinine staging ([`kdigo`]) — are pure functions
//! of their inputs, each ported to `models/baselines.py` and held equal to it by
//! `tests/models/baselines_parity.rs`.

pub mod explain;
mod extract;
mod grid;
pub mod kdigo;
pub mod news2;
pub mod oxygen;
pub mod qsofa;
pub mod sirs;
mod spec;
pub mod terminology;
pub mod tokens;
pub mod units;

pub use extract::{measurements, Measurement, Rejection, IMPLAUSIBLE};
pub use grid::{FeatureMatrix, Normalisation};
pub use spec::{Aggregate, FeatureDef, FeatureSpec, FeatureSpecError, RequireRecent, Transform};
