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
