//! Observations → measurements of declared features, in canonical units.

use std::ops::Range;

use chrono::{DateTime, Utc};

use super::spec::{FeatureDef, FeatureSpec};
use super::terminology::{terminology, System, Terminology};
use super::units;
use crate::fhir::projection::{CodeableConceptView, ObservationView, QuantityView};
use crate::fhir::time::parse_instant;

/// Why a value outside its concept's physiological limits was not used.
pub const IMPLAUSIBLE: &str = "implausible value (outside physiological limits), dropped";

/// One usable value of one feature.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// Index into [`FeatureSpec::features`].
    pub feature: usize,
    pub time: DateTime<Utc>,
    /// In the feature's canonical unit.
    pub value: f64,
    /// `Observation.id` it came from (empty if the resource had none).
    pub resource_id: String,
}

/// An observation of a declared feature that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub resource_id: String,
    pub reason: &'static str,
}

/// How a code matched a feature: as the feature itself, or as a score read as its answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Matched {
    Direct,
    Score,
}

/// Whether one of `codes` (a concept's LOINC codes) is one of `def`'s; the first that is
/// decides how it matched.
fn matched(def: &FeatureDef, codes: &[&str]) -> Option<Matched> {
    let code = codes
        .iter()
        .find(|code| def.loinc.iter().any(|k| k == *code))?;
    let by_score = def
        .from_score
        .as_ref()
        .is_some_and(|s| s.loinc.iter().any(|k| k == code));
    Some(if by_score {
        Matched::Score
    } else {
        Matched::Direct
    })
}

/// Extracts every measurement of a feature in `spec` from `observations`.
/// Observations of codes no feature declares are ignored, not rejected.
pub fn measurements(
    spec: &FeatureSpec,
    observations: &[ObservationView<'_>],
) -> (Vec<Measurement>, Vec<Rejection>) {
    let t = terminology();
    let mut found = Vec::new();
    let mut rejected = Vec::new();
    // One observation's LOINC codes, read once rather than once per feature (the system lookup
    // was the loop's main cost): its own code's, then each component's; `spans[0]` marks the
    // own ones, `spans[1 + i]` component i's. Reused from one observation to the next.
    let mut codes: Vec<&str> = Vec::new();
    let mut spans: Vec<Range<usize>> = Vec::new();
    for obs in observations {
        codes.clear();
        spans.clear();
        for concept in
            std::iter::once(obs.code.as_ref()).chain(obs.component.iter().map(|c| c.code.as_ref()))
        {
            let start = codes.len();
            if let Some(concept) = concept {
                codes.extend(t.loinc_codes(concept));
            }
            spans.push(start..codes.len());
        }
        if codes.is_empty() {
            continue;
        }
        let id = obs.id.as_deref().unwrap_or("");
        // Parsed at the first feature the observation feeds (a panel feeds several).
        let mut when = None;
        for (f, def) in spec.features.iter().enumerate() {
            let mut values: Vec<Result<f64, &'static str>> = obs
                .component
                .iter()
                .zip(&spans[1..])
                .filter_map(|(c, span)| {
                    let how = matched(def, &codes[span.clone()])?;
                    Some(value_of(
                        t,
                        def,
                        how,
                        c.value_quantity.as_ref(),
                        c.value_codeable_concept.as_ref(),
                    ))
                })
                .collect();
            if let Some(how) = matched(def, &codes[spans[0].clone()]) {
                values.push(value_of(
                    t,
                    def,
                    how,
                    obs.value_quantity.as_ref(),
                    obs.value_codeable_concept.as_ref(),
                ));
            }
            if values.is_empty() {
                continue;
            }
            if !obs.is_usable_status() {
                rejected.push(Rejection {
                    resource_id: id.to_owned(),
                    reason: "status is not final, amended or corrected",
                });
                continue;
            }
            let Some(time) =
                *when.get_or_insert_with(|| obs.effective_text().and_then(parse_instant))
            else {
                rejected.push(Rejection {
                    resource_id: id.to_owned(),
                    reason: "no effective date-time with a time zone",
                });
                continue;
            };
            for value in values {
                match value {
                    Ok(value) => found.push(Measurement {
                        feature: f,
                        time,
                        value,
                        resource_id: id.to_owned(),
                    }),
                    Err(reason) => rejected.push(Rejection {
                        resource_id: id.to_owned(),
                        reason,
                    }),
                }
            }
        }
    }
    found.sort_by_key(|m| m.time);
    (found, rejected)
}

fn value_of(
    t: &Terminology,
    def: &FeatureDef,
    how: Matched,
    quantity: Option<&QuantityView<'_>>,
    concept: Option<&CodeableConceptView<'_>>,
) -> Result<f64, &'static str> {
    if let Some(q) = quantity {
        let value = q.value.ok_or("quantity without a value")?;
        if how == Matched::Score {
            // A score (GCS total) read as the feature's coded answer.
            let answer = def
                .from_score
                .as_ref()
                .and_then(|s| s.answer(value))
                .ok_or("score outside the bands read as answers")?;
            return def
                .coded_values
                .get(answer)
                .copied()
                .ok_or("coded value not in the feature's coded_values");
        }
        let ucum = q
            .system
            .as_deref()
            .is_none_or(|s| t.system(s) == Some(System::Ucum));
        let unit = if ucum {
            q.code.as_deref().or(q.unit.as_deref())
        } else {
            q.unit.as_deref()
        }
        .unwrap_or("");
        let value = units::convert(value, unit, &def.unit, def.molar_mass)
            .ok_or("unit not convertible to the feature's unit")?;
        return match def.plausible {
            Some([lo, hi]) if !(lo..=hi).contains(&value) => Err(IMPLAUSIBLE),
            _ => Ok(value),
        };
    }
    if let Some(c) = concept {
        return coded(def, c).ok_or("coded value not in the feature's coded_values");
    }
    Err("no value")
}

/// The value of a coded answer: its code as `coded_values` lists it, else the code, display
/// or text the concept's `answers` map to a listed code.
fn coded(def: &FeatureDef, c: &CodeableConceptView<'_>) -> Option<f64> {
    let direct = c
        .coding
        .iter()
        .find_map(|coding| coding.code.as_deref().and_then(|k| def.coded_values.get(k)));
    if direct.is_some() {
        return direct.copied();
    }
    let words = c
        .coding
        .iter()
        .flat_map(|coding| [coding.code.as_deref(), coding.display.as_deref()])
        .chain([c.text.as_deref()])
        .flatten();
    words.into_iter().find_map(|w| {
        let canonical = def
            .answers
            .get(w)
            .or_else(|| def.answers.get(w.trim().to_lowercase().as_str()))?;
        def.coded_values.get(canonical).copied()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fhir::projection;
    use serde_json::value::RawValue;

    fn obs(id: &str, code: &str, value: f64, ucum: &str) -> String {
        format!(
            r#"{{"resource":{{"resourceType":"Observation","id":"{id}","status":"final","code":{{"coding":[{{"system":"http://loinc.org","code":"{code}"}}]}},"effectiveDateTime":"2026-01-01T10:00:00Z","valueQuantity":{{"value":{value},"system":"http://unitsofmeasure.org","code":"{ucum}"}}}}}}"#
        )
    }

    #[test]
    fn converts_declared_units_and_rejects_the_rest_with_the_reason() {
        let spec = FeatureSpec::parse(
            "window_hours = 24\nstep_minutes = 60\n[[feature]]\nname='creatinine'\nloinc=['2160-0','14682-9']\nunit='mg/dL'\nmolar_mass=113.12\n[[feature]]\nname='temperature'\nloinc=['8310-5']\nunit='Cel'\n",
        )
        .unwrap();
        let entries = [
            obs("cr-mg", "2160-0", 1.2, "mg/dL"),
            obs("cr-umol", "14682-9", 176.8, "umol/L"),
            obs("cr-bad", "2160-0", 1.2, "mg"),
            obs("t-f", "8310-5", 101.3, "[degF]"),
            obs("t-bad", "8310-5", 38.5, "Kel"),
        ];
        let bundle = format!(
            r#"{{"resourceType":"Bundle","type":"searchset","entry":[{}]}}"#,
            entries.join(",")
        );
        let raw: Box<RawValue> = serde_json::from_str(&bundle).unwrap();
        let projected = projection::observations(&raw).unwrap();
        let (found, rejected) = measurements(&spec, &projected.observations);
        let values: Vec<(&str, f64)> = found
            .iter()
            .map(|m| (m.resource_id.as_str(), (m.value * 100.0).round() / 100.0))
            .collect();
        assert_eq!(
            values,
            [("cr-mg", 1.2), ("cr-umol", 2.0), ("t-f", 38.5)],
            "µmol/L and °F converted"
        );
        let reasons: Vec<(&str, &str)> = rejected
            .iter()
            .map(|r| (r.resource_id.as_str(), r.reason))
            .collect();
        assert_eq!(
            reasons,
            [
                ("cr-bad", "unit not convertible to the feature's unit"),
                ("t-bad", "unit not convertible to the feature's unit")
            ]
        );
    }

    #[test]
    fn concepts_read_variant_codes_systems_answers_and_drop_artefacts() {
        let spec = FeatureSpec::parse(
            "window_hours = 24\nstep_minutes = 60\n[[feature]]\nname='spo2'\nconcept='spo2'\nunit='%'\n[[feature]]\nname='loc'\nconcept='consciousness'\nunit='1'\n[feature.coded_values]\n'248234008' = 0.0\n'300202002' = 1.0\n'450847001' = 1.0\n'450848006' = 1.0\n'422768004' = 1.0\n",
        )
        .unwrap();
        let entries = [
            r#"{"resource":{"resourceType":"Observation","id":"s1","status":"final","code":{"coding":[{"system":"urn:oid:2.16.840.1.113883.6.1","code":"2708-6"}]},"effectiveDateTime":"2026-01-01T10:00:00.123456+02:00","valueQuantity":{"value":93,"unit":"%"}}}"#,
            r#"{"resource":{"resourceType":"Observation","id":"s2","status":"final","code":{"coding":[{"system":"http://loinc.org/","code":"20564-1"}]},"effectiveDateTime":"2026-01-01T10:00:00Z","valueQuantity":{"value":12,"unit":"%"}}}"#,
            r#"{"resource":{"resourceType":"Observation","id":"g","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"9269-2"}]},"effectiveDateTime":"2026-01-01T10:00:00Z","valueQuantity":{"value":14}}}"#,
            r#"{"resource":{"resourceType":"Observation","id":"t","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"80288-4"}]},"effectiveDateTime":"2026-01-01T10:00:00Z","valueCodeableConcept":{"text":"Alert"}}}"#,
            r#"{"resource":{"resourceType":"Observation","id":"x","status":"final","code":{"coding":[{"system":"http://example.org","code":"2708-6"}]},"effectiveDateTime":"2026-01-01T10:00:00Z","valueQuantity":{"value":90,"unit":"%"}}}"#,
        ];
        let bundle = format!(
            r#"{{"resourceType":"Bundle","type":"searchset","entry":[{}]}}"#,
            entries.join(",")
        );
        let raw: Box<RawValue> = serde_json::from_str(&bundle).unwrap();
        let projected = projection::observations(&raw).unwrap();
        let (found, rejected) = measurements(&spec, &projected.observations);
        let mut values: Vec<(&str, f64)> = found
            .iter()
            .map(|m| (m.resource_id.as_str(), m.value))
            .collect();
        values.sort_by(|a, b| a.0.cmp(b.0));
        // GCS 14 reads as new confusion (not alert); "Alert" as text; 2708-6 under the OID.
        assert_eq!(values, [("g", 1.0), ("s1", 93.0), ("t", 0.0)]);
        assert_eq!(
            rejected,
            [Rejection {
                resource_id: "s2".into(),
                reason: IMPLAUSIBLE
            }]
        );
    }
}
