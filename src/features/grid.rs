//! Measurements → the `[steps, 2 × features]` input of a sequence model.
//!
//! Contract (shared with `models/featurize.py` through `features.toml`): step `t` covers
//! `[start + t·step, start + (t+1)·step)` with `start = now − window`; a step's value is the
//! feature's `aggregate` (last, mean, min, max) of its measurements in it; empty steps carry
//! the previous value forward while `step end − source time ≤ max_age`; steps with no value
//! hold the feature's mean (0 after normalisation); mask channels say whether the step had a
//! measurement.

use chrono::{DateTime, Duration as ChronoDuration, Utc};

use super::extract::Measurement;
use super::spec::{Aggregate, FeatureSpec};

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
    /// Per feature, `[low, high]` the model reads values within (see
    /// [`FeatureMatrix::clamp_to`]); empty: values as measured.
    pub limits: Vec<Option<[f64; 2]>>,
}

impl FeatureMatrix {
    /// Builds the matrix for scoring at `now`. `measurements` must be sorted by time.
    pub fn build(
        spec: &FeatureSpec,
        norm: &Normalisation,
        measurements: &[Measurement],
        now: DateTime<Utc>,
    ) -> Self {
        let window_start = now - ChronoDuration::seconds(spec.window.as_secs() as i64);
        // `[now - window, now)`, exactly as training reads it: a measurement stamped after the
        // scoring time (clock skew between EHR and bedside) is left out, not guessed into a step.
        let in_window: Vec<Measurement> = measurements
            .iter()
            .filter(|m| m.time >= window_start && m.time < now)
            .cloned()
            .collect();
        let (values, sources) = fill(spec, norm, &in_window, window_start, None, &[]);
        Self {
            steps: spec.steps(),
            features: spec.features.len(),
            values,
            sources,
            measurements: in_window,
            window_start,
            window_end: now,
            limits: Vec::new(),
        }
    }

    /// Keeps the model's input inside `limits` (per feature, `[low, high]` in its unit: the
    /// range seen in training): a measurement outside is read as the nearest limit, in the
    /// input and in every occlusion, while [`Self::measurements`] keep the value as measured
    /// (cards show what was charted). Returns, per feature, how many in-window measurements
    /// were clamped. A value the model never saw is not extrapolated, and the patient is
    /// still scored.
    pub fn clamp_to(
        &mut self,
        spec: &FeatureSpec,
        norm: &Normalisation,
        limits: Vec<Option<[f64; 2]>>,
    ) -> Vec<usize> {
        let mut clamped = vec![0; self.features];
        for m in &self.measurements {
            if let Some(Some([lo, hi])) = limits.get(m.feature) {
                if m.value < *lo || m.value > *hi {
                    clamped[m.feature] += 1;
                }
            }
        }
        self.limits = limits;
        if clamped.iter().all(|&n| n == 0) {
            // Nothing beyond a limit: the grid already built is the clamped one.
            return clamped;
        }
        let (values, sources) = fill(
            spec,
            norm,
            &self.measurements,
            self.window_start,
            None,
            &self.limits,
        );
        self.values = values;
        self.sources = sources;
        clamped
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

    /// Indices (into [`Self::measurements`]) of the measurements worth occluding one at a
    /// time: the newest `limit` that feed at least one cell. Bounded so that a patient with
    /// thousands of results costs a fixed batch, and the newest are where changes show.
    pub fn occludable(&self, limit: usize) -> Vec<usize> {
        let mut used = vec![false; self.measurements.len()];
        for i in self.sources.iter().flatten() {
            used[*i] = true;
        }
        let mut picked: Vec<usize> = (0..self.measurements.len())
            .rev()
            .filter(|i| used[*i])
            .take(limit)
            .collect();
        picked.reverse();
        picked
    }

    /// The inputs with each of `which` (measurement indices) removed in turn, rebuilt by the
    /// same rules (the step falls back to its other measurements or the carried value). The
    /// model's score on each, against the full input's, is that measurement's contribution:
    /// occlusion over the input grid, the same for local and remote models.
    pub fn with_each_measurement_removed(
        &self,
        spec: &FeatureSpec,
        norm: &Normalisation,
        which: &[usize],
    ) -> Vec<f32> {
        let mut batch = Vec::with_capacity(self.values.len() * which.len());
        for &i in which {
            let (values, _) = fill(
                spec,
                norm,
                &self.measurements,
                self.window_start,
                Some(i),
                &self.limits,
            );
            batch.extend(values);
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

/// Fills the grid from in-window measurements (sorted by time), leaving out `skip`, each value
/// read within its feature's `limits` (none: as measured).
/// Returns the row-major `[steps][2 × features]` values and the `[steps][features]` source
/// measurement of each value cell.
fn fill(
    spec: &FeatureSpec,
    norm: &Normalisation,
    in_window: &[Measurement],
    window_start: DateTime<Utc>,
    skip: Option<usize>,
    limits: &[Option<[f64; 2]>],
) -> (Vec<f32>, Vec<Option<usize>>) {
    let steps = spec.steps();
    let nf = spec.features.len();
    let channels = nf * 2;
    let step_secs = spec.step.as_secs() as i64;
    // Per cell: the aggregated value (canonical unit) and the measurement it is attributed to.
    let mut cell: Vec<Option<(f64, usize)>> = vec![None; steps * nf];
    let mut count = vec![0u32; steps * nf];
    for (i, m) in in_window.iter().enumerate() {
        if skip == Some(i) {
            continue;
        }
        let offset = (m.time - window_start).num_seconds() / step_secs;
        let k = (offset.max(0) as usize).min(steps - 1) * nf + m.feature;
        count[k] += 1;
        let value = match limits.get(m.feature) {
            Some(Some([lo, hi])) => m.value.max(*lo).min(*hi),
            _ => m.value,
        };
        // Sorted by time: "last" is the latest; min/max keep the first extreme; mean keeps a
        // running sum (divided below) attributed to the latest measurement.
        cell[k] = Some(match (cell[k], spec.features[m.feature].aggregate) {
            (None, _) | (Some(_), Aggregate::Last) => (value, i),
            (Some((sum, _)), Aggregate::Mean) => (sum + value, i),
            (Some((v, j)), Aggregate::Min) => {
                if value < v {
                    (value, i)
                } else {
                    (v, j)
                }
            }
            (Some((v, j)), Aggregate::Max) => {
                if value > v {
                    (value, i)
                } else {
                    (v, j)
                }
            }
        });
    }
    let mut values = vec![0.0f32; steps * channels];
    let mut sources = vec![None; steps * nf];
    for (f, def) in spec.features.iter().enumerate() {
        let max_age = def
            .max_age
            .map(|a| ChronoDuration::milliseconds(a.as_millis() as i64));
        let mut carried: Option<(f64, usize)> = None;
        for t in 0..steps {
            let k = t * nf + f;
            let here = cell[k].map(|(v, i)| match def.aggregate {
                Aggregate::Mean => (v / f64::from(count[k]), i),
                _ => (v, i),
            });
            let value = match here {
                Some(v) => {
                    values[t * channels + nf + f] = 1.0;
                    Some(v)
                }
                None => {
                    let step_end =
                        window_start + ChronoDuration::seconds((t as i64 + 1) * step_secs);
                    carried.filter(|(_, i)| {
                        max_age.is_none_or(|age| step_end - in_window[*i].time <= age)
                    })
                }
            };
            carried = value;
            if let Some((v, i)) = value {
                sources[k] = Some(i);
                // In f64 (constants too) then cast, as training does: parity to 1e-6 depends on it.
                let std = norm.std[f];
                values[t * channels + f] = match def.transform.apply(v) {
                    Some(v) if std > 0.0 => ((v - norm.mean[f]) / std) as f32,
                    _ => 0.0,
                };
            }
        }
    }
    (values, sources)
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

        // Occluding one measurement rebuilds by the same rules: without the 100 at step 1 the
        // 90 in the same step is the value; without the only rr, rr is never observed.
        let which = x.occludable(10);
        assert_eq!(which, vec![1, 2]); // the 90 at step 1 is superseded, feeds no cell
        let spec = spec();
        let occluded = x.with_each_measurement_removed(&spec, &norm, &[1, 2]);
        assert_eq!(&occluded[4..8], [1.0, 0.0, 1.0, 0.0]);
        assert_eq!(&occluded[16 + 12..16 + 16], [2.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn aggregates_and_stops_carrying_values_older_than_max_age() {
        let spec = FeatureSpec::parse(
            "window_hours = 4\nstep_minutes = 60\n[[feature]]\nname='lactate'\nloinc=['2524-7']\nunit='mmol/L'\naggregate='max'\nmax_age_hours=2\n[[feature]]\nname='hr'\nloinc=['8867-4']\nunit='/min'\naggregate='mean'\n",
        )
        .unwrap();
        let now = "2026-01-01T12:00:00Z".parse().unwrap();
        let norm = Normalisation {
            mean: vec![0.0, 0.0],
            std: vec![1.0, 1.0],
        };
        let ms = vec![
            m(0, 230, 4.0, now), // step 0
            m(1, 225, 80.0, now),
            m(0, 220, 2.0, now), // step 0: max keeps 4.0
            m(1, 200, 90.0, now),
        ];
        let x = FeatureMatrix::build(&spec, &norm, &ms, now);
        let lactate: Vec<f32> = (0..4).map(|t| x.values[t * 4]).collect();
        // Carried into step 1 (ends 80 min after the 4.0), not into step 2 (140 min > 2 h).
        assert_eq!(lactate, [4.0, 4.0, 0.0, 0.0]);
        assert_eq!(x.sources[0], Some(0));
        let hr: Vec<f32> = (0..4).map(|t| x.values[t * 4 + 1]).collect();
        assert_eq!(hr, [85.0, 85.0, 85.0, 85.0]); // mean, carried without an age limit
        assert_eq!(x.sources[1], Some(3)); // the mean is attributed to the latest
    }

    #[test]
    fn clamping_reads_values_at_the_training_edge_and_keeps_the_measured_ones() {
        let now = "2026-01-01T12:00:00Z".parse().unwrap();
        let norm = Normalisation {
            mean: vec![0.0, 0.0],
            std: vec![1.0, 1.0],
        };
        let ms = vec![
            m(0, 170, 250.0, now),
            m(0, 30, 90.0, now),
            m(1, 30, 2.0, now),
        ];
        let spec = spec();
        let mut x = FeatureMatrix::build(&spec, &norm, &ms, now);
        let counts = x.clamp_to(&spec, &norm, vec![Some([30.0, 200.0]), Some([6.0, 40.0])]);
        assert_eq!(counts, [1, 1]);
        let hr: Vec<f32> = (0..4).map(|t| x.values[t * 4]).collect();
        assert_eq!(hr, [0.0, 200.0, 200.0, 90.0]);
        assert_eq!(x.values[3 * 4 + 1], 6.0);
        assert_eq!(
            x.measurements[0].value, 250.0,
            "cards show what was charted"
        );
        // Occlusions read the same clamped values.
        let occluded = x.with_each_measurement_removed(&spec, &norm, &[1]);
        assert_eq!(occluded[3 * 4], 200.0);
    }
}
