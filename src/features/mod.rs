//! Declarative features: FHIR Observations → the model's input tensor, plus a record of which
//! resources fed each value (for card explanations and, later, Provenance).
//!
//! Pure functions over [`crate::fhir::ObservationView`]s and a [`FeatureSpec`] read from the
//! `features.toml` beside each model, which the Python training code reads too, so training
//! and serving share one definition. NEWS2 is computed from the same measurements.

mod extract;
mod grid;
pub mod news2;
mod spec;
pub mod units;

pub use extract::{measurements, Measurement, Rejection};
pub use grid::{FeatureMatrix, Normalisation};
pub use spec::{FeatureDef, FeatureSpec, FeatureSpecError};
