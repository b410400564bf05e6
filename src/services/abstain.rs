//! Whether a model may score this patient at all, and if not, the reason in words.
//!
//! Two sources, both data: the model's manifest declares what it was trained on (minimum
//! data, required inputs, value ranges seen in training); the service definition may be
//! stricter (its `[guardrails]`). A patient outside either gets no score: an extrapolated
//! probability looks as confident as a real one.

use chrono::{DateTime, Duration as ChronoDuration, Utc};

use super::Guardrails;
use crate::features::{FeatureMatrix, FeatureSpec};
use crate::inference::Validity;

/// The first reason this patient cannot be scored, or `None` when the data are adequate.
/// `guardrails`: the service's own, stricter limits (none for the prediction API).
pub fn reason(
    validity: &Validity,
    guardrails: Option<&Guardrails>,
    spec: &FeatureSpec,
    matrix: &FeatureMatrix,
    now: DateTime<Utc>,
) -> Option<String> {
    let n = matrix.measurements.len();
    let hours = (matrix.window_end - matrix.window_start).num_hours();
    let needed = validity
        .min_measurements
        .max(guardrails.map_or(1, |g| g.min_observations));
    if n < needed {
        return Some(format!(
            "only {n} usable measurements in the last {hours} h (needs {needed})"
        ));
    }
    let missing: Vec<&str> = validity
        .required
        .iter()
        .filter_map(|name| {
            let f = spec.index_of(name)?;
            (matrix.count(f) == 0).then_some(spec.features[f].display.as_str())
        })
        .collect();
    if !missing.is_empty() {
        return Some(format!(
            "no {} in the last {hours} h",
            missing.join(", ").to_lowercase()
        ));
    }
    let newest = matrix.measurements.last().map(|m| m.time)?;
    let staleness = [
        guardrails.map(|g| g.max_staleness),
        validity
            .max_staleness_hours
            .map(|h| std::time::Duration::from_secs_f64(h.max(0.0) * 3600.0)),
    ]
    .into_iter()
    .flatten()
    .min()
    .and_then(|d| ChronoDuration::from_std(d).ok());
    if let Some(max_age) = staleness {
        if now - newest > max_age {
            return Some(format!(
                "newest measurement is {} h old (limit {} h)",
                (now - newest).num_hours(),
                max_age.num_hours()
            ));
        }
    }
    out_of_range(validity, spec, matrix)
}

/// The first in-window value outside the range the model saw in training.
fn out_of_range(validity: &Validity, spec: &FeatureSpec, matrix: &FeatureMatrix) -> Option<String> {
    matrix.measurements.iter().find_map(|m| {
        let def = &spec.features[m.feature];
        let [lo, hi] = *validity.range.get(&def.name)?;
        (m.value < lo || m.value > hi).then(|| {
            format!(
                "{} {} is outside the range the model was trained on ({}–{}); Observation/{}",
                def.display.to_lowercase(),
                def.show(m.value),
                round_for_words(lo),
                round_for_words(hi),
                m.resource_id
            )
        })
    })
}

fn round_for_words(v: f64) -> String {
    let r = (v * 10.0).round() / 10.0;
    if r.fract() == 0.0 {
        format!("{r:.0}")
    } else {
        format!("{r:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{Measurement, Normalisation};
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn spec() -> FeatureSpec {
        FeatureSpec::parse(
            "window_hours = 24\nstep_minutes = 60\n[[feature]]\nname='heart_rate'\ndisplay='Heart rate'\nloinc=['8867-4']\nunit='/min'\n[[feature]]\nname='creatinine'\ndisplay='Creatinine'\nloinc=['2160-0']\nunit='mg/dL'\n",
        )
        .unwrap()
    }

    fn matrix(values: &[(usize, i64, f64)], now: DateTime<Utc>) -> FeatureMatrix {
        let ms: Vec<Measurement> = values
            .iter()
            .map(|&(feature, minutes, value)| Measurement {
                feature,
                time: now - ChronoDuration::minutes(minutes),
                value,
                resource_id: format!("obs-{feature}-{minutes}"),
            })
            .collect();
        let norm = Normalisation {
            mean: vec![0.0, 0.0],
            std: vec![1.0, 1.0],
        };
        FeatureMatrix::build(&spec(), &norm, &ms, now)
    }

    fn guardrails() -> Guardrails {
        Guardrails {
            min_observations: 2,
            max_staleness: Duration::from_secs(6 * 3600),
            abstain_card: true,
        }
    }

    #[test]
    fn abstains_on_missing_required_input_staleness_and_out_of_range_values() {
        let now = "2026-02-01T12:00:00Z".parse().unwrap();
        let validity = Validity {
            min_measurements: 3,
            required: vec!["creatinine".into()],
            max_staleness_hours: Some(4.0),
            range: BTreeMap::from([("heart_rate".to_owned(), [30.0, 200.0])]),
        };
        let spec = spec();
        let g = guardrails();
        let few = matrix(&[(0, 60, 80.0), (0, 30, 82.0)], now);
        assert_eq!(
            reason(&validity, Some(&g), &spec, &few, now).unwrap(),
            "only 2 usable measurements in the last 24 h (needs 3)"
        );
        let no_creatinine = matrix(&[(0, 90, 80.0), (0, 60, 80.0), (0, 30, 82.0)], now);
        assert_eq!(
            reason(&validity, Some(&g), &spec, &no_creatinine, now).unwrap(),
            "no creatinine in the last 24 h"
        );
        // The manifest's 4 h is stricter than the service's 6 h.
        let stale = matrix(&[(0, 400, 80.0), (0, 320, 80.0), (1, 300, 1.0)], now);
        assert_eq!(
            reason(&validity, Some(&g), &spec, &stale, now).unwrap(),
            "newest measurement is 5 h old (limit 4 h)"
        );
        let odd = matrix(&[(0, 90, 80.0), (0, 60, 250.0), (1, 30, 1.0)], now);
        assert_eq!(
            reason(&validity, Some(&g), &spec, &odd, now).unwrap(),
            "heart rate 250/min is outside the range the model was trained on (30–200); Observation/obs-0-60"
        );
        let fine = matrix(&[(0, 90, 80.0), (0, 60, 95.0), (1, 30, 1.04)], now);
        assert_eq!(reason(&validity, Some(&g), &spec, &fine, now), None);
    }
}
