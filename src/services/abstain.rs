//! Whether a model may score this patient at all, and if not, the reason in words.
//!
//! A model abstains only where a clinician would not judge the patient either: a required input
//! absent (the manifest's `required`, e.g. creatinine for AKI), data too old, or no complete set
//! of core observations recently (the feature spec's `[require_recent]`), in that order. Single odd
//! values never block a window: an implausible one is dropped at extraction (and counted), a
//! plausible one beyond the training range is clamped into it ([`super::inputs`], counted).
//! The service definition may add its own minimum (`[guardrails] min_observations`); an old
//! manifest's `min_measurements` is still honoured, 0 or absent meaning no minimum.
//! `models/featurize.py` (`abstain_reason`) words and orders the reasons the same way.

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
        .max(guardrails.map_or(0, |g| g.min_observations))
        .max(1);
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
    incomplete(spec, matrix, now)
}

/// Which of the spec's core observations (`[require_recent]`) were not measured within its
/// hours before `now`, in words.
fn incomplete(spec: &FeatureSpec, matrix: &FeatureMatrix, now: DateTime<Utc>) -> Option<String> {
    let r = spec.require_recent.as_ref()?;
    let since = now - ChronoDuration::from_std(r.within).unwrap_or(ChronoDuration::MAX);
    let name = |f: usize| spec.features[f].display.to_lowercase();
    let missing: Vec<String> = r
        .features
        .iter()
        .filter(|&&f| {
            !matrix
                .measurements
                .iter()
                .any(|m| m.feature == f && m.time >= since)
        })
        .map(|&f| name(f))
        .collect();
    if missing.is_empty() {
        return None;
    }
    let hours = round_for_words(r.within.as_secs_f64() / 3600.0);
    let all: Vec<String> = r.features.iter().map(|&f| name(f)).collect();
    Some(format!(
        "no complete set of core observations in the last {hours} h: no {} (a score needs {} each measured within {hours} h)",
        words(&missing),
        words(&all)
    ))
}

/// "a", "a and b", "a, b and c".
fn words(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
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
    fn abstains_on_too_few_data_missing_required_input_and_staleness_only() {
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
        // Changed: a value outside the training range no longer blocks the window (the model
        // reads it clamped, see services::inputs).
        let odd = matrix(&[(0, 90, 80.0), (0, 60, 250.0), (1, 30, 1.0)], now);
        assert_eq!(reason(&validity, Some(&g), &spec, &odd, now), None);
        let fine = matrix(&[(0, 90, 80.0), (0, 60, 95.0), (1, 30, 1.04)], now);
        assert_eq!(reason(&validity, Some(&g), &spec, &fine, now), None);
    }

    #[test]
    fn no_minimum_when_the_manifest_declares_none() {
        let now = "2026-02-01T12:00:00Z".parse().unwrap();
        let validity = Validity::default();
        let one = matrix(&[(0, 30, 80.0)], now);
        assert_eq!(reason(&validity, None, &spec(), &one, now), None);
        let none = matrix(&[], now);
        assert!(reason(&validity, None, &spec(), &none, now).is_some());
    }

    #[test]
    fn abstains_without_a_complete_set_of_core_observations_in_12_h() {
        let spec = FeatureSpec::parse(
            "window_hours = 24\nstep_minutes = 60\n[require_recent]\nhours = 12\nfeatures = ['heart_rate', 'creatinine']\n[[feature]]\nname='heart_rate'\ndisplay='Heart rate'\nloinc=['8867-4']\nunit='/min'\n[[feature]]\nname='creatinine'\ndisplay='Creatinine'\nloinc=['2160-0']\nunit='mg/dL'\n",
        )
        .unwrap();
        let now: DateTime<Utc> = "2026-02-01T12:00:00Z".parse().unwrap();
        let norm = Normalisation {
            mean: vec![0.0, 0.0],
            std: vec![1.0, 1.0],
        };
        let build = |values: &[(usize, i64)]| {
            let ms: Vec<Measurement> = values
                .iter()
                .map(|&(feature, minutes)| Measurement {
                    feature,
                    time: now - ChronoDuration::minutes(minutes),
                    value: 1.0,
                    resource_id: String::new(),
                })
                .collect();
            FeatureMatrix::build(&spec, &norm, &ms, now)
        };
        let v = Validity::default();
        // 12-hourly vitals: a heart rate 11 h ago and a creatinine 2 h ago is a complete set.
        assert_eq!(
            reason(&v, None, &spec, &build(&[(0, 660), (1, 120)]), now),
            None
        );
        assert_eq!(
            reason(&v, None, &spec, &build(&[(0, 780), (0, 800), (1, 120)]), now).unwrap(),
            "no complete set of core observations in the last 12 h: no heart rate (a score needs heart rate and creatinine each measured within 12 h)"
        );
    }
}
