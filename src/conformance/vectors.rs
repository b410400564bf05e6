//! Request vectors, embedded so the runner works from the binary alone: EHR-shaped requests
//! (`conformance/vectors/`) for every service of their hook, and bedside's synthetic patients
//! (times moved to now) for the services that score them.

use serde::Deserialize;
use serde_json::Value;

use super::client::JwtShape;

const FILES: &[(&str, &str)] = &[
    (
        "spec-patient-view",
        include_str!("../../conformance/vectors/spec-patient-view.json"),
    ),
    (
        "epic-patient-view",
        include_str!("../../conformance/vectors/epic-patient-view.json"),
    ),
    (
        "epic-order-select",
        include_str!("../../conformance/vectors/epic-order-select.json"),
    ),
    (
        "epic-order-sign",
        include_str!("../../conformance/vectors/epic-order-sign.json"),
    ),
    (
        "oracle-health-patient-view",
        include_str!("../../conformance/vectors/oracle-health-patient-view.json"),
    ),
    (
        "sandbox-patient-view",
        include_str!("../../conformance/vectors/sandbox-patient-view.json"),
    ),
    (
        "sandbox-order-select",
        include_str!("../../conformance/vectors/sandbox-order-select.json"),
    ),
    (
        "no-prefetch-no-server",
        include_str!("../../conformance/vectors/no-prefetch-no-server.json"),
    ),
];

/// One request to send, with the token shape of the client it stands for and the statuses a
/// conforming service may answer.
#[derive(Debug, Clone, Deserialize)]
pub struct Vector {
    pub name: String,
    pub jwt: JwtShape,
    pub expect: Vec<u16>,
    pub request: Value,
}

/// The vectors for a service: every EHR vector of its hook (fresh `hookInstance`), and for
/// bedside's `deterioration` service its four synthetic patients with full prefetch.
pub fn for_service(id: &str, hook: &str) -> Vec<Vector> {
    let mut out: Vec<Vector> = FILES
        .iter()
        .filter_map(|(_, text)| serde_json::from_str::<Vector>(text).ok())
        .filter(|v| v.request["hook"] == hook)
        .collect();
    if id == "deterioration" {
        let now = chrono::Utc::now();
        for (name, _, json) in crate::demo::PATIENTS {
            if let Ok(request) = crate::demo::patient_request(json, now) {
                out.push(Vector {
                    name: format!("bedside-{name}"),
                    jwt: JwtShape::EPIC,
                    expect: vec![200],
                    request,
                });
            }
        }
    }
    for v in &mut out {
        v.request["hookInstance"] = Value::String(uuid::Uuid::new_v4().to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_embedded_vector_parses() {
        for (name, text) in super::FILES {
            let v: super::Vector =
                serde_json::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(&v.name, name);
        }
    }
}
