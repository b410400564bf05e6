//! Observations → features → one batched forward pass → risk and per-feature counterfactuals.
//!
//! Shared by CDS services and the prediction API, so a card and an API answer for the same
//! data and reference time are the same numbers.
//!
//! A measurement's contribution is "risk minus the risk without it". Models that export
//! `attribute` give it in one pass (per-cell logit contributions summed onto the measurement
//! each cell came from, then turned into risk points); others by occlusion (the input
//! re-scored with each recent measurement left out).

use std::time::Instant;

use chrono::{DateTime, Utc};

use crate::features::tokens::token_matrix;
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

/// Builds the model input at reference time `now` from `observations`, read within the model's
/// training ranges ([`super::inputs`]); `unreadable` counts entries the projection already had
/// to skip.
pub fn prepare(
    model: &LoadedModel,
    observations: &[ObservationView<'_>],
    unreadable: usize,
    now: DateTime<Utc>,
) -> Prepared {
    let (found, rejected) = measurements(&model.features, observations);
    let matrix = match &model.vocab {
        Some(vocab) => token_matrix(vocab, &model.features, &found, now),
        None => FeatureMatrix::build(&model.features, &model.normalisation, &found, now),
    };
    let mut quality = DataQuality {
        used: matrix.measurements.len(),
        ..DataQuality::default()
    };
    for r in &rejected {
        *quality.dropped.entry(r.reason.to_owned()).or_default() += 1;
    }
    // Oldest first: the last write per feature is its newest value.
    for m in &matrix.measurements {
        if let Some(f) = model.features.features.get(m.feature) {
            quality.latest.insert(f.name.clone(), m.value);
        }
    }
    if unreadable > 0 {
        quality
            .dropped
            .insert("not a readable Observation".to_owned(), unreadable);
    }
    let mut prepared = Prepared {
        matrix,
        rejected: rejected.len() + unreadable,
        quality,
    };
    super::inputs::clamp_to_training_range(model, &mut prepared);
    prepared
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
    if model.handle.can_attribute() {
        let cells = model
            .handle
            .attribute(matrix.values.clone(), deadline)
            .await?;
        return Ok(attributed(matrix, risk, &cells));
    }
    let occluded = matrix.occludable(OCCLUDED);
    if occluded.is_empty() {
        return Ok(Vec::new());
    }
    let batch =
        matrix.with_each_measurement_removed(&model.features, &model.normalisation, &occluded);
    let without = model.handle.score(batch, occluded.len(), deadline).await?;
    Ok(ranked(&occluded, &without, risk))
}

/// Per measurement that feeds a cell: `(measurement, risk − risk without its contribution)`,
/// largest first, from a one-pass attribution (`cells`: per-cell logit contributions of the
/// sample whose calibrated risk is `risk`). A measurement's logit contribution is the sum of
/// its cells (its value cells, carried-forward copies included, and its mask cells).
pub fn attributed(matrix: &FeatureMatrix, risk: f32, cells: &[f32]) -> Vec<(usize, f32)> {
    let features = matrix.features;
    let channels = 2 * features;
    let mut logit_part = vec![0.0f64; matrix.measurements.len()];
    let mut fed = vec![false; matrix.measurements.len()];
    for t in 0..matrix.steps {
        for f in 0..features {
            let Some(Some(i)) = matrix.sources.get(t * features + f) else {
                continue;
            };
            let Some(slot) = logit_part.get_mut(*i) else {
                continue;
            };
            let value = cells.get(t * channels + f).copied();
            let mask = cells.get(t * channels + features + f).copied();
            *slot += f64::from(value.unwrap_or(0.0)) + f64::from(mask.unwrap_or(0.0));
            fed[*i] = true;
        }
    }
    let risk = f64::from(risk).clamp(1e-7, 1.0 - 1e-7);
    let logit = (risk / (1.0 - risk)).ln();
    let mut out: Vec<(usize, f32)> = logit_part
        .iter()
        .enumerate()
        .filter(|(i, c)| fed[*i] && c.is_finite())
        .map(|(i, c)| {
            let without = 1.0 / (1.0 + (-(logit - c)).exp());
            (i, (risk - without) as f32)
        })
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
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
    if model.vocab.is_some() {
        // A token model: its risk and, in one attribution pass, each reading's contribution.
        // No per-feature counterfactual (a feature is not a column of its input).
        let risk = risk(model, prepared, deadline).await?;
        return Ok(Scored {
            risk,
            risk_without: Vec::new(),
            contributions: contributions(model, prepared, risk, deadline).await?,
        });
    }
    if model.handle.can_attribute() {
        // The risk and its per-feature counterfactuals in one small batch, the per-measurement
        // contributions in one attribution pass.
        let batch = matrix.with_each_feature_removed();
        let scores = model
            .handle
            .score(batch, 1 + matrix.features, deadline)
            .await?;
        let Some((&risk, without_feature)) = scores.split_first() else {
            return Err(InferenceError::Torch("model returned no values".into()));
        };
        return Ok(Scored {
            risk,
            risk_without: without_feature.to_vec(),
            contributions: contributions(model, prepared, risk, deadline).await?,
        });
    }
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

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::features::Measurement;

    /// Two features, three steps: feature 0 measured at step 0 (carried into 1 and 2), feature
    /// 1 measured at step 2.
    fn matrix() -> FeatureMatrix {
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let m = |feature, h| Measurement {
            feature,
            time: t0 + chrono::Duration::hours(h),
            value: 1.0,
            resource_id: format!("obs-{feature}-{h}"),
        };
        FeatureMatrix {
            steps: 3,
            features: 2,
            values: vec![0.0; 12],
            sources: vec![Some(0), None, Some(0), None, Some(0), Some(1)],
            measurements: vec![m(0, 0), m(1, 2)],
            window_start: t0,
            window_end: t0 + chrono::Duration::hours(3),
            limits: Vec::new(),
        }
    }

    #[test]
    fn a_measurement_collects_its_carried_cells_and_masks() {
        let matrix = matrix();
        // [step][value0, value1, mask0, mask1]
        let cells = vec![
            0.5, 0.0, 0.25, 0.0, //
            0.5, 9.0, 0.0, 9.0, // feature 1 has no source at step 1: ignored
            0.5, 1.0, 0.0, 0.5,
        ];
        let risk = 0.5f32;
        let out = attributed(&matrix, risk, &cells);
        assert_eq!(out.len(), 2);
        // Measurement 0: logit part 1.75; measurement 1: 1.5. Largest first.
        assert_eq!(out[0].0, 0);
        let expected0 = 0.5 - 1.0 / (1.0 + 1.75f64.exp());
        assert!((f64::from(out[0].1) - expected0).abs() < 1e-6, "{out:?}");
        assert_eq!(out[1].0, 1);
        assert!(out[0].1 > out[1].1);
    }

    #[test]
    fn a_lowering_measurement_has_a_negative_contribution() {
        let matrix = matrix();
        let cells = vec![
            -0.4, 0.0, 0.0, 0.0, -0.4, 0.0, 0.0, 0.0, -0.4, 0.0, 0.0, 0.0,
        ];
        let out = attributed(&matrix, 0.2, &cells);
        let (_, c) = out.iter().find(|(i, _)| *i == 0).copied().unwrap();
        assert!(c < 0.0);
    }
}
