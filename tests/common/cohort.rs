//! The synthetic cohort (`models/cohort/generate.py`) as test data: FHIR Bundles of simulated
//! inpatients with known sepsis / AKI / deterioration onsets, turned into hook requests as an
//! EHR would send them at a chosen moment of the stay.

use std::path::Path;
use std::process::Command;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::{json, Value};

use super::repo;

/// A generated cohort in a temporary folder.
pub struct Cohort {
    pub dir: tempfile::TempDir,
    /// One `index.jsonl` row per patient (id, admit, discharge, onsets, split, …).
    pub index: Vec<Value>,
}

impl Cohort {
    /// Generates `n` patients with `seed` (deterministic).
    pub fn generate(n: usize, seed: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        generate_into(dir.path(), n, seed);
        let index = std::fs::read_to_string(dir.path().join("index.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        Self { dir, index }
    }

    /// The patient's Bundle.
    pub fn bundle(&self, patient: &Value) -> Value {
        let path = self
            .dir
            .path()
            .join(format!("{}.json", patient["id"].as_str().unwrap()));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// Patients with an onset of `outcome` (and none without it when `with` is false).
    pub fn with_onset(&self, outcome: &str) -> Vec<&Value> {
        self.index
            .iter()
            .filter(|p| !p["onsets"][outcome].is_null())
            .collect()
    }

    /// Patients with no event at all.
    pub fn without_events(&self) -> Vec<&Value> {
        self.index
            .iter()
            .filter(|p| {
                p["onsets"]
                    .as_object()
                    .unwrap()
                    .values()
                    .all(Value::is_null)
            })
            .collect()
    }

    /// A `hook` request about `patient` as the EHR would send it at cohort time `at`: the
    /// record up to `at`, every time moved so that `at` is now, prefetched as `patient`,
    /// `vitals`, `labs` (searchset Bundles, newest first) and `encounter`.
    pub fn request(&self, patient: &Value, at: DateTime<Utc>, hook: &str) -> Value {
        let bundle = self.bundle(patient);
        let shift = Utc::now() - at;
        let moved = |t: &str| -> Option<String> {
            let t: DateTime<Utc> = t.parse().ok()?;
            (t < at).then(|| (t + shift).to_rfc3339_opts(SecondsFormat::Secs, true))
        };
        let mut vitals = Vec::new();
        let mut labs = Vec::new();
        let (mut pat, mut encounter) = (Value::Null, Value::Null);
        for entry in bundle["entry"].as_array().unwrap() {
            let mut r = entry["resource"].clone();
            match r["resourceType"].as_str() {
                Some("Patient") => pat = r,
                Some("Encounter") => encounter = r,
                Some("Observation") => {
                    let Some(t) = r["effectiveDateTime"].as_str().and_then(&moved) else {
                        continue;
                    };
                    r["effectiveDateTime"] = t.into();
                    let category = r["category"][0]["coding"][0]["code"].as_str();
                    if category == Some("vital-signs") {
                        vitals.push(r);
                    } else {
                        labs.push(r);
                    }
                }
                _ => {}
            }
        }
        let searchset = |mut rs: Vec<Value>| {
            rs.sort_by(|a, b| {
                b["effectiveDateTime"]
                    .as_str()
                    .cmp(&a["effectiveDateTime"].as_str())
            });
            json!({"resourceType": "Bundle", "type": "searchset", "total": rs.len(),
                   "entry": rs.into_iter().map(|r| json!({"resource": r, "search": {"mode": "match"}})).collect::<Vec<_>>()})
        };
        let patient_id = pat["id"].as_str().unwrap().to_owned();
        let encounter_id = encounter["id"].as_str().unwrap_or("enc").to_owned();
        json!({
            "hook": hook,
            "hookInstance": uuid::Uuid::new_v4().to_string(),
            "context": {"userId": "Practitioner/cohort-nurse", "patientId": patient_id, "encounterId": encounter_id},
            "prefetch": {"patient": pat, "vitals": searchset(vitals), "labs": searchset(labs), "encounter": encounter},
        })
    }
}

/// A cohort time: admission + `hours`.
pub fn admit_plus(patient: &Value, hours: f64) -> DateTime<Utc> {
    let admit: DateTime<Utc> = patient["admit"].as_str().unwrap().parse().unwrap();
    admit + Duration::seconds((hours * 3600.0) as i64)
}

/// A cohort time: the patient's `outcome` onset minus `hours`.
pub fn before_onset(patient: &Value, outcome: &str, hours: f64) -> DateTime<Utc> {
    let onset: DateTime<Utc> = patient["onsets"][outcome]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    onset - Duration::seconds((hours * 3600.0) as i64)
}

fn generate_into(dir: &Path, n: usize, seed: u64) {
    let out = Command::new(repo().join(".venv/bin/python"))
        .arg(repo().join("models/cohort/generate.py"))
        .args(["--n", &n.to_string(), "--seed", &seed.to_string(), "--out"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cohort generation failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
