//! Observations → features → one batched forward pass → risk and per-feature counterfactuals.
//!
//! Shared by CDS services and the prediction API, so a card and an API answer for the same
//! data and reference time are the same numbers.

use std::time::Instant;

use chrono::{DateTime, Utc};

use crate::features::{measurements, FeatureMatrix};
use crate::fhir::ObservationView;
use crate::inference::{InferenceError, LoadedModel};

/// Features of one patient at one reference time, before the model runs.
pub struct Prepared {
    pub matrix: FeatureMatrix,
    /// Observations of model inputs that could not be used (unit, status, time, shape).
    pub rejected: usize,
}

/// A model's answer for one patient.
pub struct Scored {
    pub risk: f32,
    /// Per feature: the risk had that signal been absent from the window.
    pub risk_without: Vec<f32>,
}

/// Builds the model input at reference time `now` from `observations`; `unreadable` counts
/// entries the projection already had to skip.
pub fn prepare(
    model: &LoadedModel,
    observations: &[ObservationView<'_>],
    unreadable: usize,
    now: DateTime<Utc>,
) -> Prepared {
    let (found, rejected) = measurements(&model.features, observations);
    Prepared {
        matrix: FeatureMatrix::build(&model.features, &model.normalisation, &found, now),
        rejected: rejected.len() + unreadable,
    }
}

/// Scores prepared features: the input and one counterfactual per feature in one batch.
pub async fn score(
    model: &LoadedModel,
    prepared: &Prepared,
    deadline: Instant,
) -> Result<Scored, InferenceError> {
    let matrix = &prepared.matrix;
    let batch = matrix.with_each_feature_removed();
    let scores = model
        .handle
        .score(batch, matrix.features + 1, deadline)
        .await?;
    // `score` returns one value per sample; the first is the patient's risk.
    match scores.split_first() {
        Some((&risk, without)) => Ok(Scored {
            risk,
            risk_without: without.to_vec(),
        }),
        None => Err(InferenceError::Torch("model returned no values".into())),
    }
}
