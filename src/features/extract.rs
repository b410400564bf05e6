//! Observations → measurements of declared features, in canonical units.

use chrono::{DateTime, Utc};

use super::spec::{FeatureDef, FeatureSpec};
use super::units;
use crate::fhir::projection::{CodeableConceptView, ObservationView, QuantityView, LOINC};
use crate::fhir::time::parse_instant;

const UCUM: &str = "http://unitsofmeasure.org";

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

/// Extracts every measurement of a feature in `spec` from `observations`.
/// Observations of codes no feature declares are ignored, not rejected.
pub fn measurements(
    spec: &FeatureSpec,
    observations: &[ObservationView<'_>],
) -> (Vec<Measurement>, Vec<Rejection>) {
    let mut found = Vec::new();
    let mut rejected = Vec::new();
    for obs in observations {
        let id = obs.id.as_deref().unwrap_or("").to_owned();
        for (f, def) in spec.features.iter().enumerate() {
            let top_level = obs
                .code
                .as_ref()
                .is_some_and(|c| c.has_code(LOINC, &def.loinc));
            let components = obs.component.iter().filter(|c| {
                c.code
                    .as_ref()
                    .is_some_and(|c| c.has_code(LOINC, &def.loinc))
            });
            let mut values: Vec<Result<f64, &'static str>> = components
                .map(|c| {
                    value_of(
                        def,
                        c.value_quantity.as_ref(),
                        c.value_codeable_concept.as_ref(),
                    )
                })
                .collect();
            if top_level {
                values.push(value_of(
                    def,
                    obs.value_quantity.as_ref(),
                    obs.value_codeable_concept.as_ref(),
                ));
            }
            if values.is_empty() {
                continue;
            }
            if !obs.is_usable_status() {
                rejected.push(Rejection {
                    resource_id: id.clone(),
                    reason: "status is not final, amended or corrected",
                });
                continue;
            }
            let Some(time) = obs.effective_text().and_then(parse_instant) else {
                rejected.push(Rejection {
                    resource_id: id.clone(),
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
                        resource_id: id.clone(),
                    }),
                    Err(reason) => rejected.push(Rejection {
                        resource_id: id.clone(),
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
    def: &FeatureDef,
    quantity: Option<&QuantityView<'_>>,
    concept: Option<&CodeableConceptView<'_>>,
) -> Result<f64, &'static str> {
    if let Some(q) = quantity {
        let value = q.value.ok_or("quantity without a value")?;
        let unit = match q.system.as_deref() {
            Some(UCUM) | None => q.code.as_deref().or(q.unit.as_deref()),
            Some(_) => q.unit.as_deref(),
        }
        .unwrap_or("");
        return units::convert(value, unit, &def.unit, def.molar_mass)
            .ok_or("unit not convertible to the feature's unit");
    }
    if let Some(c) = concept {
        return c
            .coding
            .iter()
            .find_map(|coding| coding.code.as_deref().and_then(|k| def.coded_values.get(k)))
            .copied()
            .ok_or("coded value not in the feature's coded_values");
    }
    Err("no value")
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
}
