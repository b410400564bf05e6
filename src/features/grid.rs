//! Measurements → the `[steps, 2 × features]` input of a sequence model.
//!
//! Contract (shared with `models/*/train.py` through `features.toml`): step `t` covers
//! `[start + t·step, start + (t+1)·step)` with `start = now − window`; a step's value is the
//! last measurement in it; empty steps carry the previous value forward; steps before a
//! feature's first measurement hold its mean (0 after normalisation); mask channels say
//! whether the step had a measurement.

use chrono::{DateTime, Duration as ChronoDuration, Utc};

use super::extract::Measurement;
use super::spec::FeatureSpec;

/// Per-feature normalisation constants from the model's manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalisation {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

/// The model input for one patient and where each value came from.
#[derive(Debug, Clone)]
pub struct FeatureMatrix {
    pub steps: usize,
    pub features: usize,
    /// Row-major `[steps][2 × features]`: normalised values, then observed masks.
    pub values: Vec<f32>,
    /// `[steps][features]` → index into `measurements` of the value in that cell.
    pub sources: Vec<Option<usize>>,
    /// Measurements inside the window, oldest first.
    pub measurements: Vec<Measurement>,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
}

impl FeatureMatrix {
    /// Builds the matrix for scoring at `now`. `measurements` must be sorted by time.
    pub fn build(
        spec: &FeatureSpec,
        norm: &Normalisation,
        measurements: &[Measurement],
        now: DateTime<Utc>,
    ) -> Self {
        let steps = spec.steps();
        let nf = spec.features.len();
        let channels = nf * 2;
        let step_secs = spec.step.as_secs() as i64;
        let window_start = now - ChronoDuration::seconds(spec.window.as_secs() as i64);
        // `[now - window, now)`, exactly as training reads it: a measurement stamped after the
        // scoring time (clock skew between EHR and bedside) is left out, not guessed into a step.
        let in_window: Vec<Measurement> = measurements
            .iter()
            .filter(|m| m.time >= window_start && m.time < now)
            .cloned()
            .collect();
        let mut sources = vec![None; steps * nf];
        let mut observed = vec![false; steps * nf];
        for (i, m) in in_window.iter().enumerate() {
            let offset = (m.time - window_start).num_seconds() / step_secs;
            let t = (offset.max(0) as usize).min(steps - 1);
            // Sorted by time: a later measurement in the same step replaces an earlier one.
            sources[t * nf + m.feature] = Some(i);
            observed[t * nf + m.feature] = true;
        }
        for f in 0..nf {
            for t in 1..steps {
                if sources[t * nf + f].is_none() {
                    sources[t * nf + f] = sources[(t - 1) * nf + f];
                }
            }
        }
        let mut values = vec![0.0f32; steps * channels];
        for t in 0..steps {
            for f in 0..nf {
                if let Some(i) = sources[t * nf + f] {
                    // In f64 (constants too) then cast, as training does: parity to 1e-6 depends on it.
                    let std = norm.std[f];
                    values[t * channels + f] = if std > 0.0 {
                        ((in_window[i].value - norm.mean[f]) / std) as f32
                    } else {
                        0.0
                    };
                }
                if observed[t * nf + f] {
                    values[t * channels + nf + f] = 1.0;
                }
            }
        }
        Self {
            steps,
            features: nf,
            values,
            sources,
            measurements: in_window,
            window_start,
            window_end: now,
        }
    }

    /// `1 + features` samples in one buffer: this input, then the input with each feature in
    /// turn removed (never observed). One batched forward pass over it gives the score and,
    /// per feature, the counterfactual score that says how much that signal moved it.
    pub fn with_each_feature_removed(&self) -> Vec<f32> {
        let channels = self.features * 2;
        let mut batch = Vec::with_capacity(self.values.len() * (self.features + 1));
        batch.extend_from_slice(&self.values);
        for f in 0..self.features {
            let start = batch.len();
            batch.extend_from_slice(&self.values);
            for t in 0..self.steps {
                batch[start + t * channels + f] = 0.0;
                batch[start + t * channels + self.features + f] = 0.0;
            }
        }
        batch
    }

    /// The most recent in-window measurement of feature `f`.
    pub fn latest(&self, f: usize) -> Option<&Measurement> {
        self.measurements.iter().rev().find(|m| m.feature == f)
    }

    /// The oldest in-window measurement of feature `f`.
    pub fn earliest(&self, f: usize) -> Option<&Measurement> {
        self.measurements.iter().find(|m| m.feature == f)
    }

    /// In-window measurements of feature `f`.
    pub fn count(&self, f: usize) -> usize {
        self.measurements.iter().filter(|m| m.feature == f).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> FeatureSpec {
        FeatureSpec::parse(
            "window_hours = 4\nstep_minutes = 60\n[[feature]]\nname='hr'\nloinc=['8867-4']\nunit='/min'\n[[feature]]\nname='rr'\nloinc=['9279-1']\nunit='/min'\n",
        )
        .unwrap()
    }

    fn m(feature: usize, minutes_before_now: i64, value: f64, now: DateTime<Utc>) -> Measurement {
        Measurement {
            feature,
            time: now - ChronoDuration::minutes(minutes_before_now),
            value,
            resource_id: format!("o{feature}-{minutes_before_now}"),
        }
    }

    #[test]
    fn bins_forward_fill_mask_and_normalise_per_the_contract() {
        let now = "2026-01-01T12:00:00Z".parse().unwrap();
        let norm = Normalisation {
            mean: vec![80.0, 16.0],
            std: vec![10.0, 4.0],
        };
        let ms = vec![
            m(0, 300, 999.0, now), // before the window: ignored
            m(0, 170, 90.0, now),  // step 1
            m(0, 150, 100.0, now), // step 1, later: wins
            m(1, 30, 24.0, now),   // step 3
        ];
        let x = FeatureMatrix::build(&spec(), &norm, &ms, now);
        assert_eq!((x.steps, x.features, x.values.len()), (4, 2, 16));
        let row = |t: usize| &x.values[t * 4..t * 4 + 4];
        assert_eq!(row(0), [0.0, 0.0, 0.0, 0.0]); // before first: mean, unobserved
        assert_eq!(row(1), [2.0, 0.0, 1.0, 0.0]);
        assert_eq!(row(2), [2.0, 0.0, 0.0, 0.0]); // carried forward, mask 0
        assert_eq!(row(3), [2.0, 2.0, 0.0, 1.0]);
        assert_eq!(x.latest(0).unwrap().resource_id, "o0-150");
        assert_eq!(x.count(0), 2);
        let batch = x.with_each_feature_removed();
        assert_eq!(batch.len(), 3 * 16);
        assert_eq!(&batch[..16], x.values.as_slice());
        assert_eq!(&batch[16 + 12..16 + 16], [0.0, 2.0, 0.0, 1.0]); // hr removed
        assert_eq!(&batch[32 + 12..32 + 16], [2.0, 0.0, 0.0, 0.0]); // rr removed
    }
}
