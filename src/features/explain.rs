//! Why a score is what it is, in the words a clinician reads on a card.
//!
//! Input: per measurement, how much the risk dropped when that one measurement was occluded
//! (see [`FeatureMatrix::with_each_measurement_removed`]). Output: the top contributing
//! observations, each tied to its FHIR resource and told as a change over time
//! ("respiratory rate rose 16 → 28/min over 6 h"), and a one-line trend per signal.
//!
//! Values are told in display units with each feature's clinical rounding ("39.2 °C", not
//! "39.17 Cel"; see [`super::units`]), and coded signals in the words their `features.toml`
//! gives ("new confusion or reduced consciousness (ACVPU: not alert)", not "rose 0 → 1 1").
//! The FHIR reference stays on the [`Driver`] for the app, the API and the record; the words
//! never carry it.

use chrono::Duration as ChronoDuration;

use super::{units, FeatureMatrix, FeatureSpec, Measurement};

/// Contributions below this (probability points: 0.05 percentage points) are noise, not a
/// reason. Small because calibrated risks on a ward are small: at a 1 % warning threshold a
/// measurement that adds 0.3 points is a third of the risk.
const MIN_CONTRIBUTION: f32 = 0.0005;
/// A change is described against the value this long before (or the window's first).
const TREND_LOOKBACK_HOURS: i64 = 6;

/// One observation that raised the risk.
#[derive(Debug, Clone, PartialEq)]
pub struct Driver {
    pub feature: String,
    /// `Observation/{id}` it came from.
    pub reference: String,
    /// Risk points it added (risk − risk without it).
    pub contribution: f32,
    /// Plain words: "respiratory rate rose 16 → 28/min over 6 h".
    pub words: String,
}

/// A signal's course over the window.
#[derive(Debug, Clone, PartialEq)]
pub struct Trend {
    pub feature: String,
    /// "Respiratory rate 28/min (range 14–28 over 48 h, 40 values)".
    pub words: String,
}

/// What the card and the API say about a score.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Explanation {
    pub drivers: Vec<Driver>,
    pub trends: Vec<Trend>,
}

/// Builds the explanation from occlusion `contributions` (measurement index, risk delta),
/// keeping the `top` largest positive ones.
pub fn explain(
    spec: &FeatureSpec,
    matrix: &FeatureMatrix,
    contributions: &[(usize, f32)],
    top: usize,
) -> Explanation {
    let mut ranked: Vec<&(usize, f32)> = contributions
        .iter()
        .filter(|(i, c)| *c >= MIN_CONTRIBUTION && *i < matrix.measurements.len())
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    let drivers = ranked
        .into_iter()
        .take(top)
        .map(|&(i, contribution)| {
            let m = &matrix.measurements[i];
            Driver {
                feature: spec.features[m.feature].name.clone(),
                reference: format!("Observation/{}", m.resource_id),
                contribution,
                words: change_words(spec, matrix, m),
            }
        })
        .collect();
    let hours = (matrix.window_end - matrix.window_start).num_hours();
    let trends = spec
        .features
        .iter()
        .enumerate()
        .filter_map(|(f, def)| {
            let latest = matrix.latest(f)?;
            let values = matrix.measurements.iter().filter(|m| m.feature == f);
            let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), m| {
                (lo.min(m.value), hi.max(m.value))
            });
            let n = matrix.count(f);
            let words = if def.words_for(latest.value).is_some() {
                format!(
                    "{}: {} ({n} values over {hours} h)",
                    def.display,
                    def.show(latest.value)
                )
            } else if n == 1 {
                format!(
                    "{} {} (one value in {hours} h)",
                    def.display,
                    def.show(latest.value)
                )
            } else {
                format!(
                    "{} {} (range {}–{} over {hours} h, {n} values)",
                    def.display,
                    def.show(latest.value),
                    units::display_number(lo, def.decimals),
                    units::display_number(hi, def.decimals)
                )
            };
            Some(Trend {
                feature: def.name.clone(),
                words,
            })
        })
        .collect();
    Explanation { drivers, trends }
}

/// "respiratory rate rose 16 → 28/min over 6 h": `m` against the latest value of its
/// signal at least [`TREND_LOOKBACK_HOURS`] earlier, else the window's first. A coded signal
/// is told in its words: "new confusion … (ACVPU: not alert); alert 5 h before".
fn change_words(spec: &FeatureSpec, matrix: &FeatureMatrix, m: &Measurement) -> String {
    let def = &spec.features[m.feature];
    let name = def.display.to_lowercase();
    let before = m.time - ChronoDuration::hours(TREND_LOOKBACK_HOURS);
    let same: Vec<&Measurement> = matrix
        .measurements
        .iter()
        .filter(|x| x.feature == m.feature && x.time < m.time)
        .collect();
    let reference = same
        .iter()
        .rev()
        .find(|x| x.time <= before)
        .or_else(|| same.first())
        .copied();
    let coded = def.words_for(m.value).is_some();
    let Some(r) = reference else {
        return if coded {
            format!("{} (first record in the window)", def.show(m.value))
        } else {
            format!("{name} {} (first value in the window)", def.show(m.value))
        };
    };
    let span = m.time - r.time;
    let over = if span.num_minutes() < 90 {
        format!("{} min", span.num_minutes())
    } else {
        format!("{} h", (span.num_minutes() as f64 / 60.0).round())
    };
    let (a, b) = (
        units::display_number(r.value, def.decimals),
        units::display_number(m.value, def.decimals),
    );
    if coded {
        if a == b {
            format!("{}, unchanged over {over}", def.show(m.value))
        } else {
            format!("{}; {} {over} before", def.show(m.value), def.show(r.value))
        }
    } else if a == b {
        format!("{name} unchanged at {} over {over}", def.show(m.value))
    } else {
        let verb = if m.value > r.value { "rose" } else { "fell" };
        format!("{name} {verb} {a} → {} over {over}", def.show(m.value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::Normalisation;
    use chrono::{DateTime, Utc};

    #[test]
    fn drivers_are_told_as_changes_and_trends_as_ranges() {
        let spec = FeatureSpec::parse(
            "window_hours = 12\nstep_minutes = 60\n[[feature]]\nname='respiratory_rate'\ndisplay='Respiratory rate'\nloinc=['9279-1']\nunit='/min'\n",
        )
        .unwrap();
        let now: DateTime<Utc> = "2026-01-01T12:00:00Z".parse().unwrap();
        let ms: Vec<Measurement> = [(600, 16.0), (420, 18.0), (60, 28.0)]
            .iter()
            .map(|&(minutes, value)| Measurement {
                feature: 0,
                time: now - ChronoDuration::minutes(minutes),
                value,
                resource_id: format!("rr-{minutes}"),
            })
            .collect();
        let norm = Normalisation {
            mean: vec![16.0],
            std: vec![3.0],
        };
        let x = FeatureMatrix::build(&spec, &norm, &ms, now);
        let e = explain(&spec, &x, &[(2, 0.2), (0, 0.0001), (1, 0.01)], 3);
        assert_eq!(e.drivers.len(), 2);
        assert_eq!(e.drivers[0].reference, "Observation/rr-60");
        assert_eq!(
            e.drivers[0].words,
            "respiratory rate rose 18 → 28/min over 6 h"
        );
        assert_eq!(
            e.drivers[1].words,
            "respiratory rate rose 16 → 18/min over 3 h"
        );
        assert_eq!(
            e.trends[0].words,
            "Respiratory rate 28/min (range 16–28 over 12 h, 3 values)"
        );
    }

    /// Issue 14: "39.17 Cel" and "consciousness (not alert) rose 0 → 1 1" on cards.
    #[test]
    fn values_are_told_in_display_units_and_coded_signals_in_words() {
        let spec = FeatureSpec::parse(
            "window_hours = 12\nstep_minutes = 60\n\
             [[feature]]\nname='temperature'\ndisplay='Temperature'\nloinc=['8310-5']\nunit='Cel'\n\
             [[feature]]\nname='consciousness_not_alert'\ndisplay='Consciousness (not alert)'\nloinc=['67775-7']\nunit='1'\n\
             [feature.coded_values]\n'248234008' = 0.0\n'300202002' = 1.0\n\
             [feature.value_words]\n'0' = 'alert'\n'1' = 'new confusion (ACVPU: not alert)'\n\
             [[feature]]\nname='creatinine'\ndisplay='Creatinine'\nloinc=['2160-0']\nunit='mg/dL'\ndecimals=2\n",
        )
        .unwrap();
        let now: DateTime<Utc> = "2026-01-01T12:00:00Z".parse().unwrap();
        let ms: Vec<Measurement> = [
            (0, 600, 37.04),
            (0, 60, 39.17),
            (1, 480, 0.0),
            (1, 60, 1.0),
            (2, 600, 0.9),
            (2, 60, 1.234),
        ]
        .iter()
        .map(|&(feature, minutes, value)| Measurement {
            feature,
            time: now - ChronoDuration::minutes(minutes),
            value,
            resource_id: format!("obs-{feature}-{minutes}"),
        })
        .collect();
        let norm = Normalisation {
            mean: vec![37.0, 0.0, 1.0],
            std: vec![1.0, 1.0, 1.0],
        };
        let x = FeatureMatrix::build(&spec, &norm, &ms, now);
        let e = explain(&spec, &x, &[(1, 0.3), (3, 0.2), (5, 0.1)], 3);
        let words: Vec<&str> = e.drivers.iter().map(|d| d.words.as_str()).collect();
        assert_eq!(
            words,
            [
                "temperature rose 37.0 → 39.2 °C over 9 h",
                "new confusion (ACVPU: not alert); alert 7 h before",
                "creatinine rose 0.90 → 1.23 mg/dL over 9 h",
            ]
        );
        assert_eq!(e.drivers[1].reference, "Observation/obs-1-60");
        let trends: Vec<&str> = e.trends.iter().map(|t| t.words.as_str()).collect();
        assert_eq!(
            trends,
            [
                "Temperature 39.2 °C (range 37.0–39.2 over 12 h, 2 values)",
                "Consciousness (not alert): new confusion (ACVPU: not alert) (2 values over 12 h)",
                "Creatinine 1.23 mg/dL (range 0.90–1.23 over 12 h, 2 values)",
            ]
        );
        for w in words.iter().chain(&trends) {
            assert!(!w.contains("Cel") && !w.contains("Observation/"), "{w}");
        }
    }
}
