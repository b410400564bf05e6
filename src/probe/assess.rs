//! Step 3 of a probe: what a service would make of the server's answers. The Observations of
//! the service's input keys go through the gateway's own projection, feature extraction
//! ([`crate::features::measurements`]), model input ([`crate::services::scoring::prepare`],
//! with its data-quality record) and abstention rules ([`crate::services::abstain::reason`],
//! the service's guardrails included): which codes and units were recognised, how dense the
//! data are in the model's window, and whether the model would score or abstain, and why.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::queries::QueryRun;
use super::report::{ServiceReport, Severity, Verdict};
use crate::features::{measurements, FeatureSpec};
use crate::fhir::projection::{self, ObservationView};
use crate::inference::LoadedModel;
use crate::services::{abstain, scoring, ServiceDef};

/// Rejection reasons that mean a code or unit bedside does not know how to read (the rest —
/// status, time, implausible values — are data quality, counted under `density.dropped`).
const TERMINOLOGY_REASONS: [&str; 3] = [
    "unit not convertible to the feature's unit",
    "coded value not in the feature's coded_values",
    "score outside the bands read as answers",
];

/// Which codes and units the model's feature spec and terminology map read.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TerminologyReport {
    /// Per channel (feature name): measurements read, in or out of the window.
    pub recognised: BTreeMap<String, usize>,
    /// Observations (of the input keys) the model cannot read, grouped by code, unit and why.
    pub unrecognised: Vec<Unrecognised>,
    /// Observations of a concept the terminology map knows but this model does not use (per
    /// concept): not a problem, said so that they are not mistaken for unknown codes.
    pub not_used: BTreeMap<String, usize>,
}

/// A group of Observations the model cannot read.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Unrecognised {
    /// `system|code` of each coding, space-separated (`(uncoded)` without codings).
    pub code: String,
    /// `valueQuantity.code` (or `.unit`), when the value is a quantity.
    pub unit: Option<String>,
    /// `no concept in the terminology map reads this code`, or the extraction's reason (an
    /// unknown unit…).
    pub reason: String,
    pub count: usize,
}

/// How much of the model's window the data fill.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Density {
    /// The model's look-back window.
    pub window_hours: f64,
    /// Per channel (feature name): measurements in the window and the newest one's age.
    pub channels: BTreeMap<String, ChannelDensity>,
    /// Measurements in the window, all channels (the prediction record's `data_quality.used`).
    pub used: usize,
    /// Observations of the inputs left out, by reason (`data_quality.dropped`).
    pub dropped: BTreeMap<String, usize>,
    /// Age of the newest in-window measurement, in minutes.
    pub newest_age_minutes: Option<i64>,
}

/// One channel's density.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChannelDensity {
    pub in_window: usize,
    pub newest_age_minutes: Option<i64>,
}

/// Judges one service from its queries' results at reference time `now`.
pub fn assess(
    def: &ServiceDef,
    model: &LoadedModel,
    runs: Vec<QueryRun>,
    now: DateTime<Utc>,
) -> ServiceReport {
    let mut reasons = Vec::new();
    let mut severity = runs
        .iter()
        .map(|r| r.report.severity)
        .max()
        .unwrap_or(Severity::Ok);
    let mut cannot_run = false;
    for run in &runs {
        let q = &run.report;
        if !q.required {
            continue;
        }
        if let Some(why) = &q.skipped {
            cannot_run = true;
            reasons.push(format!("required prefetch `{}` {why}", q.key));
        } else if run.fetched.is_none() {
            cannot_run = true;
            severity = Severity::Error;
            reasons.push(format!(
                "required prefetch `{}` failed: {}",
                q.key,
                q.error.as_deref().unwrap_or("no data")
            ));
        }
    }

    let mut observations: Vec<ObservationView<'_>> = Vec::new();
    let mut unreadable = 0;
    for run in runs.iter().filter(|r| r.report.input) {
        let Some(fetched) = &run.fetched else {
            continue;
        };
        for page in &fetched.pages {
            match projection::observations(page) {
                Ok(p) => {
                    unreadable += p.unreadable;
                    observations.extend(p.observations);
                }
                Err(e) => {
                    // The gateway answers 412 here: the server's data are unusable.
                    cannot_run = true;
                    severity = Severity::Error;
                    reasons.push(format!(
                        "input `{}`: the server returned unusable data: {e}",
                        run.report.key
                    ));
                }
            }
        }
    }

    let spec = &model.features;
    let terminology = terminology(spec, &observations);
    if !terminology.unrecognised.is_empty() {
        severity = severity.max(Severity::Warning);
    }
    let prepared = scoring::prepare(model, &observations, unreadable, now);
    let matrix = &prepared.matrix;
    let age = |t: DateTime<Utc>| (now - t).num_minutes();
    let density = Density {
        window_hours: spec.window.as_secs_f64() / 3600.0,
        channels: spec
            .features
            .iter()
            .enumerate()
            .map(|(f, def)| {
                (
                    def.name.clone(),
                    ChannelDensity {
                        in_window: matrix.count(f),
                        newest_age_minutes: matrix.latest(f).map(|m| age(m.time)),
                    },
                )
            })
            .collect(),
        used: prepared.quality.used,
        dropped: prepared.quality.dropped.clone(),
        newest_age_minutes: matrix.measurements.last().map(|m| age(m.time)),
    };

    // The views borrow the pages held by `runs`, which the report takes next.
    drop(observations);
    let verdict = if cannot_run {
        severity = severity.max(Severity::Warning);
        Verdict::CannotRun
    } else {
        match abstain::reason(
            &model.manifest.validity,
            Some(&def.guardrails),
            spec,
            matrix,
            now,
        ) {
            Some(reason) => {
                severity = severity.max(Severity::Warning);
                reasons.push(reason);
                Verdict::WouldAbstain
            }
            None => Verdict::WouldScore,
        }
    };
    ServiceReport {
        id: def.id.clone(),
        hook: def.hook.clone(),
        model: format!("{} {}", def.model_name, def.model_version),
        queries: runs.into_iter().map(|r| r.report).collect(),
        terminology,
        density,
        verdict,
        reasons,
        severity,
    }
}

/// Recognised measurements per channel, and the Observations no feature reads (each
/// observation put through the real extraction on its own).
pub fn terminology(spec: &FeatureSpec, observations: &[ObservationView<'_>]) -> TerminologyReport {
    let mut recognised: BTreeMap<String, usize> = BTreeMap::new();
    let (found, _) = measurements(spec, observations);
    for m in &found {
        if let Some(def) = spec.features.get(m.feature) {
            *recognised.entry(def.name.clone()).or_default() += 1;
        }
    }
    let mut groups: BTreeMap<(String, Option<String>, String), usize> = BTreeMap::new();
    let mut not_used: BTreeMap<String, usize> = BTreeMap::new();
    for obs in observations {
        let (found, rejected) = measurements(spec, std::slice::from_ref(obs));
        let reason = if found.is_empty() && rejected.is_empty() {
            if let Some(concept) = known_concept(obs) {
                *not_used.entry(concept.to_owned()).or_default() += 1;
                continue;
            }
            "no concept in the terminology map reads this code"
        } else if let Some(r) = rejected
            .iter()
            .find(|r| TERMINOLOGY_REASONS.contains(&r.reason))
        {
            r.reason
        } else {
            continue;
        };
        *groups
            .entry((code_of(obs), unit_of(obs), reason.to_owned()))
            .or_default() += 1;
    }
    TerminologyReport {
        recognised,
        not_used,
        unrecognised: groups
            .into_iter()
            .map(|((code, unit, reason), count)| Unrecognised {
                code,
                unit,
                reason,
                count,
            })
            .collect(),
    }
}

/// The terminology concept one of the Observation's LOINC codings (or its components') carries.
fn known_concept(obs: &ObservationView<'_>) -> Option<&'static str> {
    let map = crate::features::terminology::terminology();
    let codeable = obs
        .code
        .iter()
        .chain(obs.component.iter().filter_map(|c| c.code.as_ref()));
    codeable
        .flat_map(|c| c.coding.iter())
        .filter(|c| {
            c.system.as_deref().and_then(|s| map.system(s))
                == Some(crate::features::terminology::System::Loinc)
        })
        .find_map(|c| {
            c.code
                .as_deref()
                .and_then(|code| map.concept_for_loinc(code))
        })
}

fn code_of(obs: &ObservationView<'_>) -> String {
    let codes: Vec<String> = obs
        .code
        .iter()
        .flat_map(|c| c.coding.iter())
        .map(|c| {
            format!(
                "{}|{}",
                c.system.as_deref().unwrap_or(""),
                c.code.as_deref().unwrap_or("")
            )
        })
        .collect();
    if codes.is_empty() {
        "(uncoded)".to_owned()
    } else {
        codes.join(" ")
    }
}

fn unit_of(obs: &ObservationView<'_>) -> Option<String> {
    let q = obs.value_quantity.as_ref()?;
    q.code.as_deref().or(q.unit.as_deref()).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    #[test]
    fn unknown_codes_and_units_are_grouped_with_the_reason() {
        let spec = FeatureSpec::parse(
            "window_hours = 24\nstep_minutes = 60\n[[feature]]\nname='heart_rate'\nloinc=['8867-4']\nunit='/min'\n",
        )
        .unwrap();
        let obs = |id: &str, code: &str, unit: &str| {
            format!(
                r#"{{"resource":{{"resourceType":"Observation","id":"{id}","status":"final","code":{{"coding":[{{"system":"http://loinc.org","code":"{code}"}}]}},"effectiveDateTime":"2026-01-01T10:00:00Z","valueQuantity":{{"value":80,"system":"http://unitsofmeasure.org","code":"{unit}"}}}}}}"#
            )
        };
        let bundle = format!(
            r#"{{"resourceType":"Bundle","type":"searchset","entry":[{},{},{},{},{}]}}"#,
            obs("e", "9279-1", "/min"),
            obs("a", "8867-4", "/min"),
            obs("b", "8867-4", "kg"),
            obs("c", "29463-7", "kg"),
            obs("d", "29463-7", "kg"),
        );
        let raw = RawValue::from_string(bundle).unwrap();
        let projected = projection::observations(&raw).unwrap();
        let t = terminology(&spec, &projected.observations);
        assert_eq!(t.recognised.get("heart_rate"), Some(&1));
        // Respiratory rate: known to the terminology map, just not an input of this spec.
        assert_eq!(
            t.not_used.get("respiratory_rate"),
            Some(&1),
            "{:?}",
            t.not_used
        );
        assert_eq!(t.unrecognised.len(), 2, "{:?}", t.unrecognised);
        let weight = t
            .unrecognised
            .iter()
            .find(|u| u.code == "http://loinc.org|29463-7")
            .unwrap();
        assert_eq!((weight.count, weight.unit.as_deref()), (2, Some("kg")));
        assert_eq!(
            weight.reason,
            "no concept in the terminology map reads this code"
        );
        let bad_unit = t
            .unrecognised
            .iter()
            .find(|u| u.code == "http://loinc.org|8867-4")
            .unwrap();
        assert_eq!(
            bad_unit.reason,
            "unit not convertible to the feature's unit"
        );
    }
}
