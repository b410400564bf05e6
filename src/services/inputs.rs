//! The model reads values inside the range it was trained on: a plausible value beyond it is
//! read as the nearest edge of that range (the manifest's `[validity.range]`) and counted,
//! instead of blocking the whole window. Artefacts outside physiological limits never get
//! here: feature extraction drops them with their reason.

use super::scoring::Prepared;
use crate::inference::LoadedModel;

/// The reason clamped measurements are counted under in the prediction's data quality.
pub const CLAMPED: &str = "outside training range, clamped";

/// Clamps `prepared`'s model input to the model's training ranges and counts the measurements
/// that were, per feature, in its data-quality summary (`"outside training range, clamped:
/// <feature>"`). Measurements, cards and bedside scores keep the values as measured.
pub fn clamp_to_training_range(model: &LoadedModel, prepared: &mut Prepared) {
    let spec = &model.features;
    let limits: Vec<Option<[f64; 2]>> = spec
        .features
        .iter()
        .map(|f| model.manifest.validity.range.get(&f.name).copied())
        .collect();
    if limits.iter().all(Option::is_none) {
        return;
    }
    let counts = prepared.matrix.clamp_to(spec, &model.normalisation, limits);
    for (f, n) in counts.into_iter().enumerate() {
        if n > 0 {
            let key = format!("{CLAMPED}: {}", spec.features[f].name);
            *prepared.quality.clamped.entry(key).or_default() += n;
        }
    }
}
