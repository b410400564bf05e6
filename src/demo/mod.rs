//! The demo: synthetic patients embedded in the binary, their times moved to "now", and the
//! demo EHR that `bedside demo` runs beside the gateway ([`run`]).
//!
//! Fixture observations are stored at fixed times; the model scores the 48 h before the
//! moment of the call, so the demo (and tests) shift every timestamp so that the newest
//! observation is a few minutes old.

pub mod authz;
pub mod client;
pub mod ehr;
pub mod fhir;
pub mod record;
pub mod run;

use chrono::{DateTime, Duration as ChronoDuration, SecondsFormat, Utc};
use serde_json::Value;

/// Synthetic patient-view requests: `(name, what it shows, JSON)`.
pub const PATIENTS: &[(&str, &str, &str)] = &[
    (
        "deteriorating",
        "clear deterioration over the last 12 h: warning/critical card",
        include_str!("../../tests/fixtures/patients/deteriorating.json"),
    ),
    (
        "early-warning",
        "subtle drift the model sees before NEWS2 does",
        include_str!("../../tests/fixtures/patients/early-warning.json"),
    ),
    (
        "stable",
        "stable vitals: no card",
        include_str!("../../tests/fixtures/patients/stable.json"),
    ),
    (
        "sparse",
        "too few observations: the service abstains",
        include_str!("../../tests/fixtures/patients/sparse.json"),
    ),
];

/// FHIR elements holding points in time that the demo shifts.
const TIME_KEYS: &[&str] = &[
    "effectiveDateTime",
    "effectiveInstant",
    "issued",
    "start",
    "end",
    "lastUpdated",
    "authoredOn",
];

/// Shifts every timestamp in `request` so the newest one equals `newest`. Returns how many
/// values moved. Dates without a time (birthDate) are left alone.
pub fn rebase_times(request: &mut Value, newest: DateTime<Utc>) -> usize {
    let mut latest: Option<DateTime<Utc>> = None;
    visit(request, &mut |t| {
        latest = Some(latest.map_or(t, |l| l.max(t)));
        None
    });
    let Some(latest) = latest else { return 0 };
    let shift = newest - latest;
    let mut moved = 0;
    visit(request, &mut |t| {
        moved += 1;
        Some(t + shift)
    });
    moved
}

fn visit(value: &mut Value, f: &mut dyn FnMut(DateTime<Utc>) -> Option<DateTime<Utc>>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if let Value::String(s) = v {
                    if TIME_KEYS.contains(&key.as_str()) {
                        if let Some(t) = crate::fhir::time::parse_instant(s) {
                            if let Some(new) = f(t) {
                                *s = new.to_rfc3339_opts(SecondsFormat::Secs, true);
                            }
                        }
                    }
                } else {
                    visit(v, f);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| visit(v, f)),
        _ => {}
    }
}

/// A demo patient's request with times moved so its newest observation is 10 minutes old and
/// a fresh `hookInstance`.
pub fn patient_request(json: &str, now: DateTime<Utc>) -> Result<Value, serde_json::Error> {
    let mut request: Value = serde_json::from_str(json)?;
    rebase_times(&mut request, now - ChronoDuration::minutes(10));
    if let Some(obj) = request.as_object_mut() {
        obj.insert(
            "hookInstance".into(),
            Value::String(uuid::Uuid::new_v4().to_string()),
        );
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_newest_time_lands_on_target_and_gaps_are_kept() {
        let mut v = json!({"prefetch": {"a": {"entry": [
            {"resource": {"effectiveDateTime": "2026-01-01T10:00:00Z", "birthDate": "1950-01-01"}},
            {"resource": {"effectiveDateTime": "2026-01-01T11:50:00Z"}}
        ]}}});
        let target: DateTime<Utc> = "2030-06-01T08:00:00Z".parse().unwrap();
        assert_eq!(rebase_times(&mut v, target), 2);
        let e = &v["prefetch"]["a"]["entry"];
        assert_eq!(
            e[1]["resource"]["effectiveDateTime"],
            "2030-06-01T08:00:00Z"
        );
        assert_eq!(
            e[0]["resource"]["effectiveDateTime"],
            "2030-06-01T06:10:00Z"
        );
        assert_eq!(e[0]["resource"]["birthDate"], "1950-01-01");
    }
}
