//! Observations → features → one batched forward pass → risk and per-feature counterfactuals.
//!
//! Shared by CDS services and the prediction API, so a card and an API answer for the same
//! data and reference time are the same numbers.

use std::time::Instant;

use chrono::{DateTime, Utc};

use crate::features::{measurements, FeatureMatrix};
use crate::fhir::ObservationView;
use crate::inference::{InferenceError, LoadedModel};
use crate::store::DataQuality;

/// Features of one patient at one reference time, before the model runs.
pub struct Prepared {
    pub matrix: FeatureMatrix,
    /// Observations of model inputs that could not be used (unit, status, time, shape).
    pub rejected: usize,
    /// Measurements used and observations left out by reason, for the prediction record.
    pub quality: DataQuality,
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
    let matrix = FeatureMatrix::build(&model.features, &model.normalisation, &found, now);
    let mut quality = DataQuality {
        used: matrix.measurements.len(),
        ..DataQuality::default()
    };
    for r in &rejected {
        *quality.dropped.entry(r.reason.to_owned()).or_default() += 1;
    }
    if unreadable > 0 {
        quality
            .dropped
            .insert("not a readable Observation".to_owned(), unreadable);
    }
    Prepared {
        matrix,
        rejected: rejected.len() + unreadable,
        quality,
    }
}

/// The patient's risk alone: one sample. What every hook call needs; the explanation's
/// occlusions ([`contributions`]) are computed only for a card that will be shown, so calls
/// that end below threshold, suppressed or in shadow cost one sample, not `1 + OCCLUDED`.
pub async fn risk(
    model: &LoadedModel,
    prepared: &Prepared,
    deadline: Instant,
) -> Result<f32, InferenceError> {
    let scores = model
        .handle
        .score(prepared.matrix.values.clone(), 1, deadline)
        .await?;
    scores
        .first()
        .copied()
        .ok_or_else(|| InferenceError::Torch("model returned no values".into()))
}

/// Per recent measurement (index into the matrix's measurements): `risk` minus the risk
/// without it, largest first. One batch of occlusions.
pub async fn contributions(
    model: &LoadedModel,
    prepared: &Prepared,
    risk: f32,
    deadline: Instant,
) -> Result<Vec<(usize, f32)>, InferenceError> {
    let matrix = &prepared.matrix;
    let occluded = matrix.occludable(OCCLUDED);
    if occluded.is_empty() {
        return Ok(Vec::new());
    }
    let batch =
        matrix.with_each_measurement_removed(&model.features, &model.normalisation, &occluded);
    let without = model.handle.score(batch, occluded.len(), deadline).await?;
    Ok(ranked(&occluded, &without, risk))
}

/// `(measurement, risk − risk without it)`, largest first.
fn ranked(occluded: &[usize], without: &[f32], risk: f32) -> Vec<(usize, f32)> {
    let mut out: Vec<(usize, f32)> = occluded
        .iter()
        .zip(without)
        .map(|(&i, &w)| (i, risk - w))
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
}

/// Scores prepared features in one batch: the input, one counterfactual per feature, and one
/// per recent measurement (occlusion), for the prediction API and the SMART app, which show
/// the explanation with every score.
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
    Ok(Scored {
        risk,
        risk_without: without_feature.to_vec(),
        contributions: ranked(&occluded, without_measurement, risk),
    })
}
