//! Step 1 of a probe: the server's CapabilityStatement (`GET [base]/metadata`) against what
//! bedside's services will ask of it — FHIR R4, each queried resource type, each search
//! parameter the prefetch templates use, and whether `_sort` and `_count` are declared.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use super::queries::Prober;
use super::report::Severity;
use crate::fhir::FhirError;
use crate::services::ServiceDef;

/// What the CapabilityStatement says about one resource type the services query.
#[derive(Debug, Clone, Serialize)]
pub struct ResourceSupport {
    /// The resource type (`Observation`).
    #[serde(rename = "type")]
    pub resource_type: String,
    /// Listed in `rest[mode=server].resource`.
    pub supported: bool,
    /// The search parameters the templates use on this type (`_`-parameters left out).
    pub used_params: Vec<String>,
    /// Of those, the ones the server does not declare.
    pub undeclared_params: Vec<String>,
    /// `_sort` declared (on the resource or the rest level).
    pub sort_declared: bool,
    /// `_count` declared (on the resource or the rest level).
    pub count_declared: bool,
}

/// The capability part of a probe's report.
#[derive(Debug, Clone, Serialize)]
pub struct Capability {
    /// Whether the server answered at all (any HTTP status). `false`: nothing else was tried.
    pub reachable: bool,
    /// HTTP status of `GET metadata` (`None` when there was no answer).
    pub status: Option<u16>,
    /// `CapabilityStatement.fhirVersion`.
    pub fhir_version: Option<String>,
    /// `software.name` and `software.version`, when given.
    pub software: Option<String>,
    /// `fhirVersion` is 4.0.x (R4).
    pub fhir_r4: bool,
    /// One entry per resource type the services query, by type.
    pub resources: Vec<ResourceSupport>,
    /// What was wrong (unreachable, not a CapabilityStatement, not R4).
    pub error: Option<String>,
    /// Findings that lower confidence without stopping anything.
    pub notes: Vec<String>,
    pub severity: Severity,
}

/// The resource types and search parameters every service's prefetch templates use, plus the
/// probe's own Encounter look-up.
pub fn wanted(defs: &[ServiceDef]) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let lookup = ("Encounter", ["patient", "date"]);
    out.entry(lookup.0.into())
        .or_default()
        .extend(lookup.1.iter().map(|p| p.to_string()));
    for def in defs {
        for p in &def.prefetch {
            let (kind, params) = query_parts(p.template.as_str());
            out.entry(kind).or_default().extend(params);
        }
    }
    out
}

/// `Observation?patient=…&category=x&_sort=-date` → (`Observation`, [`patient`, `category`]);
/// `Patient/{{…}}` → (`Patient`, []). Modifiers (`code:text`) are cut off.
fn query_parts(query: &str) -> (String, Vec<String>) {
    let (path, q) = query.split_once('?').unwrap_or((query, ""));
    let kind = path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let params = q
        .split('&')
        .filter_map(|kv| kv.split('=').next())
        .map(|k| k.split(':').next().unwrap_or(k).to_owned())
        .filter(|k| !k.is_empty() && !k.starts_with('_'))
        .collect();
    (kind, params)
}

/// Reads `metadata` and compares it with `wanted`.
pub async fn check(probe: &Prober<'_>, wanted: &BTreeMap<String, BTreeSet<String>>) -> Capability {
    let mut cap = Capability {
        reachable: true,
        status: None,
        fhir_version: None,
        software: None,
        fhir_r4: false,
        resources: Vec::new(),
        error: None,
        notes: Vec::new(),
        severity: Severity::Ok,
    };
    let statement = match probe.fetch_json("metadata").await {
        Ok(v) => {
            cap.status = Some(200);
            v
        }
        Err(e) => {
            match &e {
                FhirError::Status { status, .. } => cap.status = Some(*status),
                FhirError::Outcome(_) => cap.status = Some(200),
                FhirError::NotFhir(_) => {}
                _ => {
                    cap.reachable = false;
                    cap.error = Some(format!(
                        "cannot reach the FHIR server at {}: {e}",
                        probe.base
                    ));
                    cap.severity = Severity::Error;
                    return cap;
                }
            }
            cap.error = Some(format!(
                "GET metadata did not give a CapabilityStatement: {e}"
            ));
            cap.severity = Severity::Error;
            return cap;
        }
    };
    if statement["resourceType"] != "CapabilityStatement" {
        cap.error = Some(format!(
            "GET metadata answered a {} instead of a CapabilityStatement",
            statement["resourceType"]
                .as_str()
                .unwrap_or("body without resourceType")
        ));
        cap.severity = Severity::Error;
        return cap;
    }
    cap.fhir_version = statement["fhirVersion"].as_str().map(str::to_owned);
    cap.fhir_r4 = cap
        .fhir_version
        .as_deref()
        .is_some_and(|v| v.starts_with("4.0."));
    cap.software = statement["software"]["name"].as_str().map(|name| {
        match statement["software"]["version"].as_str() {
            Some(v) => format!("{name} {v}"),
            None => name.to_owned(),
        }
    });
    if !cap.fhir_r4 {
        cap.error = Some(format!(
            "fhirVersion is {}, not 4.0.x (FHIR R4): bedside reads R4",
            cap.fhir_version.as_deref().unwrap_or("absent")
        ));
        cap.severity = Severity::Error;
    }
    let rest = statement["rest"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["mode"] == "server"));
    let rest_params = names(rest.map(|r| &r["searchParam"]));
    for (kind, used) in wanted {
        let resource = rest
            .and_then(|r| r["resource"].as_array())
            .and_then(|rs| rs.iter().find(|r| r["type"] == kind.as_str()));
        let declared = names(resource.map(|r| &r["searchParam"]));
        let any = |name: &str| declared.contains(name) || rest_params.contains(name);
        let support = ResourceSupport {
            resource_type: kind.clone(),
            supported: resource.is_some(),
            used_params: used.iter().cloned().collect(),
            undeclared_params: if resource.is_some() {
                used.iter().filter(|p| !any(p)).cloned().collect()
            } else {
                Vec::new()
            },
            sort_declared: any("_sort"),
            count_declared: any("_count"),
        };
        if !support.supported {
            cap.notes.push(format!(
                "{kind} is not listed in the CapabilityStatement; the services query it"
            ));
            cap.severity = cap.severity.max(Severity::Warning);
        } else if !support.undeclared_params.is_empty() {
            cap.notes.push(format!(
                "{kind} does not declare the search parameter(s) {} the services use",
                support.undeclared_params.join(", ")
            ));
            cap.severity = cap.severity.max(Severity::Warning);
        }
        cap.resources.push(support);
    }
    if cap
        .resources
        .iter()
        .any(|r| r.supported && !r.sort_declared)
    {
        // Many servers sort without declaring it: the queries below show what they do.
        cap.notes.push(
            "_sort is not declared for every queried type; the answers below show whether it is honoured"
                .into(),
        );
    }
    cap
}

fn names(params: Option<&Value>) -> BTreeSet<String> {
    params
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .filter_map(|p| p["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parts_names_the_type_and_its_search_parameters() {
        assert_eq!(
            query_parts("Observation?patient={{context.patientId}}&category=vital-signs&_sort=-date&code:text=x"),
            ("Observation".into(), vec!["patient".into(), "category".into(), "code".into()])
        );
        assert_eq!(
            query_parts("Patient/{{context.patientId}}"),
            ("Patient".into(), vec![])
        );
    }
}
