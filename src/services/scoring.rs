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

/// Most measurements occluded one at a time per prediction (the newest that feed the input):
/// bounds the explanation's cost at `1 + features + OCCLUDED` samples per call.
pub const OCCLUDED: usize = 96;

/// A model's answer for one patient.
pub struct Scored {
    pub risk: f32,
    /// Per feature: the risk had that signal been absent from the window.
    pub risk_without: Vec<f32>,
    /// Per occluded measurement (index into the matrix's measurements): risk minus the risk
    /// without it, largest first. Positive: it raised the risk.
    pub contributions: Vec<(usize, f32)>,
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

/// Scores prepared features in one batch: the input, one counterfactual per feature, and one
/// per recent measurement (occlusion), so the explanation costs no extra round trip.
pub async fn score(
    model: &LoadedModel,
    prepared: &Prepared,
    deadline: Instant,
) -> Result<Scored, InferenceError> {
    let matrix = &prepared.matrix;
    let occluded = matrix.occludable(OCCLUDED);
    let mut batch = matrix.with_each_feature_removed();
    batch.extend(matrix.with_each_measurement_removed(
        &model.features,
        &model.normalisation,
        &occluded,
    ));
    let samples = 1 + matrix.features + occluded.len();
    let scores = model.handle.score(batch, samples, deadline).await?;
    // `score` returns one value per sample; the first is the patient's risk.
    let Some((&risk, rest)) = scores.split_first() else {
        return Err(InferenceError::Torch("model returned no values".into()));
    };
    let (without_feature, without_measurement) = rest.split_at(matrix.features.min(rest.len()));
    let mut contributions: Vec<(usize, f32)> = occluded
        .iter()
        .zip(without_measurement)
        .map(|(&i, &without)| (i, risk - without))
        .collect();
    contributions.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok(Scored {
        risk,
        risk_without: without_feature.to_vec(),
        contributions,
    })
}
