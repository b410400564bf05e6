//! NEWS2 "air or oxygen" from the observations: inhaled O2 flow and FiO2 (`[oxygen]` of
//! `models/terminology.toml`).
//!
//! No model has oxygen as an input, so this reads the observations themselves, by the same
//! codes, systems, units and plausibility limits the features use. `models/baselines.py`
//! (`on_oxygen`) is the Python port; `tests/models/feature_parity.rs` holds the two equal.

use chrono::{DateTime, Utc};

use super::terminology::{terminology, Concept, System, Terminology};
use super::units;
use crate::fhir::projection::{CodeableConceptView, ObservationView, QuantityView};
use crate::fhir::time::parse_instant;

/// Whether the patient was on supplemental oxygen at the latest O2 flow or FiO2 reading taken
/// in `[not_before, now)`: flow above the map's threshold (0 L/min) or FiO2 above 21 %. Readings
/// taken at the same time: oxygen if any says so. `None`: nothing recorded (NEWS2 scores air
/// and lists the parameter as missing).
pub fn on_oxygen(
    observations: &[ObservationView<'_>],
    not_before: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<bool> {
    let t = terminology();
    let flow = t.concept(&t.oxygen.flow_concept)?;
    let fio2 = t.concept(&t.oxygen.fio2_concept)?;
    let mut latest: Option<(DateTime<Utc>, bool)> = None;
    for obs in observations.iter().filter(|o| o.is_usable_status()) {
        let parts = std::iter::once((obs.code.as_ref(), obs.value_quantity.as_ref())).chain(
            obs.component
                .iter()
                .map(|c| (c.code.as_ref(), c.value_quantity.as_ref())),
        );
        // The codes first: most observations are other vital signs, and reading their time
        // (an RFC 3339 parse) cost more than the rest of this loop on a card call.
        let mut on = None;
        for (code, quantity) in parts {
            let (Some(code), Some(q)) = (code, quantity) else {
                continue;
            };
            let reading = if has_loinc(t, code, flow) {
                flow_l_min(t, q, flow).map(|v| v > t.oxygen.flow_above_l_min)
            } else if has_loinc(t, code, fio2) {
                fio2_percent(t, q, fio2).map(|v| v > t.oxygen.fio2_above_percent)
            } else {
                None
            };
            if let Some(reading) = reading {
                on = Some(on.unwrap_or(false) || reading);
            }
        }
        let Some(on) = on else {
            continue;
        };
        let Some(time) = obs.effective_text().and_then(parse_instant) else {
            continue;
        };
        if time < not_before || time >= now {
            continue;
        }
        latest = match latest {
            Some((at, was)) if at > time => Some((at, was)),
            Some((at, was)) if at == time => Some((at, was || on)),
            _ => Some((time, on)),
        };
    }
    latest.map(|(_, on)| on)
}

fn has_loinc(t: &Terminology, code: &CodeableConceptView<'_>, concept: &Concept) -> bool {
    t.loinc_codes(code)
        .any(|k| concept.loinc.iter().any(|l| l == k))
}

/// The quantity's unit as UCUM (its code when the system is UCUM or absent, else its text).
fn unit_of<'a>(t: &Terminology, q: &'a QuantityView<'_>) -> &'a str {
    let ucum = q
        .system
        .as_deref()
        .is_none_or(|s| t.system(s) == Some(System::Ucum));
    if ucum {
        q.code.as_deref().or(q.unit.as_deref())
    } else {
        q.unit.as_deref()
    }
    .unwrap_or("")
}

fn plausible(concept: &Concept, v: f64) -> Option<f64> {
    match concept.plausible {
        Some([lo, hi]) if !(lo..=hi).contains(&v) => None,
        _ => Some(v),
    }
}

fn flow_l_min(t: &Terminology, q: &QuantityView<'_>, concept: &Concept) -> Option<f64> {
    let v = units::convert(q.value?, unit_of(t, q), &concept.unit, None)?;
    plausible(concept, v)
}

/// FiO2 in %: a fraction (unit "1", "{ratio}" or none) is multiplied by 100.
fn fio2_percent(t: &Terminology, q: &QuantityView<'_>, concept: &Concept) -> Option<f64> {
    let value = q.value?;
    let unit = unit_of(t, q);
    let v = match t.ucum(unit.trim()) {
        "1" | "" if value <= 1.0 => value * 100.0,
        _ => units::convert(value, unit, &concept.unit, None)?,
    };
    plausible(concept, v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fhir::projection;
    use serde_json::value::RawValue;

    fn obs(code: &str, at: &str, value: f64, unit: &str) -> String {
        format!(
            r#"{{"resource":{{"resourceType":"Observation","status":"final","code":{{"coding":[{{"system":"http://loinc.org","code":"{code}"}}]}},"effectiveDateTime":"{at}","valueQuantity":{{"value":{value},"unit":"{unit}"}}}}}}"#
        )
    }

    fn read(entries: &[String]) -> Option<bool> {
        let bundle = format!(
            r#"{{"resourceType":"Bundle","entry":[{}]}}"#,
            entries.join(",")
        );
        let raw: Box<RawValue> = serde_json::from_str(&bundle).unwrap();
        let p = projection::observations(&raw).unwrap();
        let now = "2026-01-01T12:00:00Z".parse().unwrap();
        let not_before = "2026-01-01T00:00:00Z".parse().unwrap();
        on_oxygen(&p.observations, not_before, now)
    }

    #[test]
    fn flow_and_fio2_say_oxygen_and_the_latest_reading_decides() {
        assert_eq!(read(&[]), None);
        assert_eq!(
            read(&[obs("3151-8", "2026-01-01T10:00:00Z", 2.0, "L/min")]),
            Some(true)
        );
        assert_eq!(
            read(&[
                obs("3151-8", "2026-01-01T09:00:00Z", 2.0, "L/min"),
                obs("3151-8", "2026-01-01T10:00:00Z", 0.0, "l/min"),
            ]),
            Some(false),
            "oxygen stopped"
        );
        // FiO2 as a fraction or in %; 21 % is room air.
        assert_eq!(
            read(&[obs("3150-0", "2026-01-01T10:00:00Z", 0.4, "1")]),
            Some(true)
        );
        assert_eq!(
            read(&[obs("3150-0", "2026-01-01T10:00:00Z", 21.0, "%")]),
            Some(false)
        );
        // Before the window or implausible: not read.
        assert_eq!(
            read(&[obs("3151-8", "2025-12-31T10:00:00Z", 2.0, "L/min")]),
            None
        );
        assert_eq!(
            read(&[obs("3151-8", "2026-01-01T10:00:00Z", 500.0, "L/min")]),
            None
        );
    }
}
