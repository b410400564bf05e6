//! The demo EHR's patient record: a dozen synthetic patients (`tests/fixtures/demo/patients.json`,
//! made by `models/cohort/demo_patients.py`) held in memory, each moved so that its newest
//! observation is ten minutes old, and searched the way a FHIR server searches them.
//!
//! Only the demo uses it. Suggestions the clinician accepts change it (a draft order deleted, a
//! lab order created); what one browser may add is bounded ([`MAX_CREATED`] per patient).

use std::collections::BTreeMap;
use std::sync::RwLock;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

/// The embedded patients, as generated.
const PATIENTS_JSON: &str = include_str!("../../tests/fixtures/demo/patients.json");

/// Resources a suggestion may create per patient before further creates are refused.
pub const MAX_CREATED: usize = 32;

/// What suggestions may create or update on a demo chart.
const ORDER_TYPES: &[&str] = &["MedicationRequest", "ServiceRequest"];

#[derive(Deserialize)]
struct File {
    patients: Vec<FilePatient>,
}

#[derive(Deserialize)]
struct FilePatient {
    id: String,
    label: String,
    what: String,
    #[serde(default)]
    draft_order: Option<Value>,
    resources: Vec<Value>,
}

/// One patient in the demo EHR.
pub struct DemoPatient {
    /// `Patient.id`.
    pub id: String,
    /// Shown in the patient list ("Sepsis developing").
    pub label: String,
    /// What a clinician should see on this chart.
    pub what: String,
    /// Every resource of the chart, times moved to now; orders change as suggestions apply.
    resources: Vec<Value>,
    /// How many resources suggestions created (bounded by [`MAX_CREATED`]).
    created: usize,
}

/// Why a change to the record was refused.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("no patient `{0}` in the demo")]
    UnknownPatient(String),
    #[error("{0}")]
    BadAction(String),
    #[error("at most {MAX_CREATED} resources may be created per demo patient")]
    Full,
}

/// What one applied action did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Applied {
    /// `create`, `update` or `delete`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(rename = "resourceType")]
    pub resource_type: String,
    pub id: String,
}

/// The demo EHR's patients.
pub struct DemoRecord {
    patients: RwLock<Vec<DemoPatient>>,
}

impl DemoRecord {
    /// Loads the embedded patients with each newest observation ten minutes before `now`.
    pub fn load(now: DateTime<Utc>) -> Result<Self, serde_json::Error> {
        let file: File = serde_json::from_str(PATIENTS_JSON)?;
        let patients = file
            .patients
            .into_iter()
            .map(|p| {
                let mut resources = p.resources;
                resources.extend(p.draft_order);
                let mut all = Value::Array(resources);
                super::rebase_times(&mut all, now - ChronoDuration::minutes(10));
                let Value::Array(resources) = all else {
                    unreachable!("an array stays an array")
                };
                DemoPatient {
                    id: p.id,
                    label: p.label,
                    what: p.what,
                    resources,
                    created: 0,
                }
            })
            .collect();
        Ok(Self {
            patients: RwLock::new(patients),
        })
    }

    /// The patient list: id, name, gender, birth date, label, what.
    pub fn list(&self) -> Vec<Value> {
        let patients = self.read();
        patients
            .iter()
            .map(|p| {
                let patient = p
                    .resources
                    .iter()
                    .find(|r| r["resourceType"] == "Patient")
                    .cloned()
                    .unwrap_or(Value::Null);
                json!({
                    "id": p.id, "name": display_name(&patient), "gender": patient["gender"],
                    "birthDate": patient["birthDate"], "label": p.label, "what": p.what,
                })
            })
            .collect()
    }

    /// Whether `id` is one of the demo's patients.
    pub fn has(&self, id: &str) -> bool {
        self.read().iter().any(|p| p.id == id)
    }

    /// One resource by type and id (any patient's).
    pub fn read_resource(&self, resource_type: &str, id: &str) -> Option<Value> {
        self.read()
            .iter()
            .flat_map(|p| p.resources.iter())
            .find(|r| r["resourceType"] == resource_type && r["id"] == id)
            .cloned()
    }

    /// The patient's resources of `resource_type` matching `filters`, newest first (by
    /// effective / authored / recorded time). `filters`: FHIR search parameters the demo
    /// understands (`category`, `clinical-status`, `status`, `code`); others are ignored, as
    /// a server ignores what it does not support (and says so in its CapabilityStatement).
    pub fn search(
        &self,
        patient: &str,
        resource_type: &str,
        filters: &BTreeMap<String, String>,
    ) -> Vec<Value> {
        let patients = self.read();
        let Some(p) = patients.iter().find(|p| p.id == patient) else {
            return Vec::new();
        };
        let mut found: Vec<Value> = p
            .resources
            .iter()
            .filter(|r| r["resourceType"] == resource_type)
            .filter(|r| resource_type == "Patient" || about(r, patient))
            .filter(|r| filters.iter().all(|(k, v)| matches(r, k, v)))
            .cloned()
            .collect();
        found.sort_by_key(|r| std::cmp::Reverse(when(r)));
        found
    }

    /// The patient's draft orders (what order-select / order-sign carry).
    pub fn drafts(&self, patient: &str) -> Vec<Value> {
        let mut filters = BTreeMap::new();
        filters.insert("status".to_owned(), "draft".to_owned());
        let mut drafts = self.search(patient, "MedicationRequest", &filters);
        drafts.extend(self.search(patient, "ServiceRequest", &filters));
        drafts
    }

    /// The patient's orders of any status.
    pub fn orders(&self, patient: &str) -> Vec<Value> {
        let none = BTreeMap::new();
        let mut orders = self.search(patient, "MedicationRequest", &none);
        orders.extend(self.search(patient, "ServiceRequest", &none));
        orders
    }

    /// Applies CDS Hooks card actions (`create`, `update`, `delete`) to `patient`'s chart, as
    /// an EHR does when a clinician accepts a suggestion. All or nothing.
    pub fn apply(&self, patient: &str, actions: &[Value]) -> Result<Vec<Applied>, RecordError> {
        let mut patients = self.write();
        let p = patients
            .iter_mut()
            .find(|p| p.id == patient)
            .ok_or_else(|| RecordError::UnknownPatient(patient.to_owned()))?;
        let mut resources = p.resources.clone();
        let mut created = p.created;
        let mut applied = Vec::new();
        for (i, action) in actions.iter().enumerate() {
            let kind = action["type"].as_str().unwrap_or_default();
            match kind {
                "create" | "update" => {
                    let mut resource = action["resource"].clone();
                    let Some(resource_type) = resource["resourceType"].as_str().map(str::to_owned)
                    else {
                        return Err(RecordError::BadAction(format!(
                            "actions[{i}]: `resource` with a resourceType is required for {kind}"
                        )));
                    };
                    // Suggestions order or change orders, on this chart only.
                    if !ORDER_TYPES.contains(&resource_type.as_str()) {
                        return Err(RecordError::BadAction(format!(
                            "actions[{i}]: the demo applies orders only ({}), not {resource_type}",
                            ORDER_TYPES.join(", ")
                        )));
                    }
                    let own = format!("Patient/{patient}");
                    match resource["subject"]["reference"].as_str() {
                        None => resource["subject"] = json!({"reference": own}),
                        Some(s) if s == own => {}
                        Some(_) => {
                            return Err(RecordError::BadAction(format!(
                                "actions[{i}]: the resource is about another patient"
                            )))
                        }
                    }
                    let id = match resource["id"].as_str() {
                        Some(id) => id.to_owned(),
                        None => uuid::Uuid::new_v4().to_string(),
                    };
                    resource["id"] = Value::String(id.clone());
                    let before = resources.len();
                    resources.retain(|r| !(r["resourceType"] == *resource_type && r["id"] == *id));
                    // An update of nothing adds a resource, as a create does: both are bounded.
                    if kind == "create" || resources.len() == before {
                        created += 1;
                        if created > MAX_CREATED {
                            return Err(RecordError::Full);
                        }
                    }
                    resources.push(resource);
                    applied.push(Applied {
                        kind: kind.to_owned(),
                        resource_type,
                        id,
                    });
                }
                "delete" => {
                    let ids: Vec<&str> = match &action["resourceId"] {
                        Value::Array(ids) => ids.iter().filter_map(Value::as_str).collect(),
                        Value::String(id) => vec![id.as_str()],
                        _ => Vec::new(),
                    };
                    if ids.is_empty() {
                        return Err(RecordError::BadAction(format!(
                            "actions[{i}]: `resourceId` (Type/id) is required for delete"
                        )));
                    }
                    for reference in ids {
                        let Some((resource_type, id)) = reference.split_once('/') else {
                            return Err(RecordError::BadAction(format!(
                                "actions[{i}]: `{reference}` is not Type/id"
                            )));
                        };
                        let before = resources.len();
                        resources
                            .retain(|r| !(r["resourceType"] == resource_type && r["id"] == id));
                        if resources.len() == before {
                            return Err(RecordError::BadAction(format!(
                                "actions[{i}]: {reference} is not on this chart"
                            )));
                        }
                        applied.push(Applied {
                            kind: "delete".into(),
                            resource_type: resource_type.to_owned(),
                            id: id.to_owned(),
                        });
                    }
                }
                other => {
                    return Err(RecordError::BadAction(format!(
                        "actions[{i}]: unknown action type `{other}`"
                    )))
                }
            }
        }
        p.resources = resources;
        p.created = created;
        Ok(applied)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<DemoPatient>> {
        self.patients
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<DemoPatient>> {
        self.patients
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// "Given Family" from the first `Patient.name`.
pub fn display_name(patient: &Value) -> String {
    let name = &patient["name"][0];
    if let Some(text) = name["text"].as_str() {
        return text.to_owned();
    }
    let given: Vec<&str> = name["given"]
        .as_array()
        .map(|g| g.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let family = name["family"].as_str().unwrap_or_default();
    let full = format!("{} {family}", given.join(" "));
    match full.trim() {
        "" => "(no name)".to_owned(),
        n => n.to_owned(),
    }
}

/// Whether `r` is about `patient` (`subject` or `patient` reference).
fn about(r: &Value, patient: &str) -> bool {
    let wanted = format!("Patient/{patient}");
    [&r["subject"]["reference"], &r["patient"]["reference"]]
        .iter()
        .any(|reference| reference.as_str() == Some(wanted.as_str()))
}

/// Whether `r` matches one search parameter (token parameters: any coding's code, or
/// `system|code`; comma-separated values are alternatives).
fn matches(r: &Value, name: &str, wanted: &str) -> bool {
    let codings: Vec<&Value> = match name {
        "category" => r["category"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| c["coding"].as_array().into_iter().flatten())
            .collect(),
        "clinical-status" => r["clinicalStatus"]["coding"]
            .as_array()
            .into_iter()
            .flatten()
            .collect(),
        "code" => r["code"]["coding"]
            .as_array()
            .into_iter()
            .flatten()
            .collect(),
        "status" => {
            return wanted.split(',').any(|w| r["status"].as_str() == Some(w));
        }
        "date" => return date_matches(r, wanted),
        _ => return true,
    };
    wanted.split(',').any(|w| {
        let (system, code) = match w.split_once('|') {
            Some((s, c)) => (Some(s), c),
            None => (None, w),
        };
        codings.iter().any(|c| {
            c["code"].as_str() == Some(code)
                && system.is_none_or(|s| s.is_empty() || c["system"].as_str() == Some(s))
        })
    })
}

/// FHIR `date` search with a prefix (`ge`, `gt`, `le`, `lt`, `eq`; none = `eq` to the second):
/// resources without a time do not match.
fn date_matches(r: &Value, wanted: &str) -> bool {
    let (prefix, value) = match wanted.get(..2) {
        Some(p @ ("ge" | "gt" | "le" | "lt" | "eq")) => (p, &wanted[2..]),
        _ => ("eq", wanted),
    };
    let bound = crate::fhir::time::parse_instant(value).or_else(|| {
        chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc())
    });
    let (Some(t), Some(bound)) = (when(r), bound) else {
        return false;
    };
    match prefix {
        "ge" => t >= bound,
        "gt" => t > bound,
        "le" => t <= bound,
        "lt" => t < bound,
        _ => t == bound,
    }
}

/// A resource's clinically relevant time, for `_sort=-date`.
fn when(r: &Value) -> Option<DateTime<Utc>> {
    [
        &r["effectiveDateTime"],
        &r["effectiveInstant"],
        &r["effectivePeriod"]["start"],
        &r["authoredOn"],
        &r["recordedDate"],
        &r["onsetDateTime"],
        &r["period"]["start"],
    ]
    .iter()
    .find_map(|v| v.as_str().and_then(crate::fhir::time::parse_instant))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_loads_moves_times_and_searches() {
        let now = Utc::now();
        let record = DemoRecord::load(now).unwrap();
        let list = record.list();
        assert!(list.len() >= 4, "{list:?}");
        let id = list[0]["id"].as_str().unwrap().to_owned();
        let mut filters = BTreeMap::new();
        filters.insert("category".to_owned(), "vital-signs".to_owned());
        let vitals = record.search(&id, "Observation", &filters);
        assert!(!vitals.is_empty());
        let newest = when(&vitals[0]).unwrap();
        assert!(now - newest <= ChronoDuration::minutes(11), "{newest}");
        assert!(when(&vitals[0]) >= when(&vitals[vitals.len() - 1]));
        assert!(record.search("nobody", "Observation", &filters).is_empty());
        let newest_text = vitals[0]["effectiveDateTime"].as_str().unwrap().to_owned();
        filters.insert("date".to_owned(), format!("ge{newest_text}"));
        let newest_only = record.search(&id, "Observation", &filters);
        assert!(!newest_only.is_empty() && newest_only.len() < vitals.len());
    }

    #[test]
    fn actions_apply_all_or_nothing_and_creates_are_bounded() {
        let record = DemoRecord::load(Utc::now()).unwrap();
        let id = record.list()[0]["id"].as_str().unwrap().to_owned();
        let create = json!({"type": "create", "resource": {"resourceType": "ServiceRequest", "status": "draft", "subject": {"reference": format!("Patient/{id}")}}});
        let missing = json!({"type": "delete", "resourceId": ["MedicationRequest/none"]});
        assert!(record.apply(&id, &[create.clone(), missing]).is_err());
        assert!(record
            .drafts(&id)
            .iter()
            .all(|r| r["resourceType"] != "ServiceRequest"));
        let applied = record.apply(&id, std::slice::from_ref(&create)).unwrap();
        assert_eq!(applied[0].resource_type, "ServiceRequest");
        assert!(record
            .drafts(&id)
            .iter()
            .any(|r| r["id"] == applied[0].id.as_str()));
        // Updates of nothing count as creates; other patients' and non-order resources are refused.
        let update = json!({"type": "update", "resource": {"resourceType": "ServiceRequest", "status": "draft"}});
        record.apply(&id, std::slice::from_ref(&update)).unwrap();
        let foreign = json!({"type": "create", "resource": {"resourceType": "ServiceRequest", "subject": {"reference": "Patient/someone-else"}}});
        assert!(record.apply(&id, &[foreign]).is_err());
        let patient = json!({"type": "create", "resource": {"resourceType": "Patient"}});
        assert!(record.apply(&id, &[patient]).is_err());
        for _ in 2..MAX_CREATED {
            record.apply(&id, std::slice::from_ref(&create)).unwrap();
        }
        assert!(matches!(
            record.apply(&id, &[create]),
            Err(RecordError::Full)
        ));
    }
}
