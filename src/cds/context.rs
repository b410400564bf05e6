//! What each standard hook's `context` must contain (the hook definitions published with
//! CDS Hooks: patient-view 1.0, order-select 1.0, order-sign 1.1, encounter-start 1.0).
//!
//! A call missing one of these is a client error (400 naming `context.<field>`), found before
//! any service logic runs. Hooks not listed here are not checked.

use serde_json::{Map, Value};

/// Required context fields of the hooks bedside knows.
fn required(hook: &str) -> &'static [&'static str] {
    match hook {
        "patient-view" => &["userId", "patientId"],
        "order-select" => &["userId", "patientId", "selections", "draftOrders"],
        "order-sign" => &["userId", "patientId", "draftOrders"],
        "encounter-start" | "encounter-discharge" => &["userId", "patientId", "encounterId"],
        _ => &[],
    }
}

/// The first required field of `hook` that `context` lacks (absent, null or empty string).
pub fn missing_field(hook: &str, context: &Map<String, Value>) -> Option<&'static str> {
    required(hook)
        .iter()
        .copied()
        .find(|field| match context.get(*field) {
            None | Some(Value::Null) => true,
            Some(Value::String(s)) => s.trim().is_empty(),
            Some(_) => false,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn patient_view_needs_user_and_patient() {
        let ok = json!({"userId": "Practitioner/1", "patientId": "p1"});
        assert_eq!(missing_field("patient-view", ok.as_object().unwrap()), None);
        let no_patient = json!({"userId": "Practitioner/1", "patientId": ""});
        assert_eq!(
            missing_field("patient-view", no_patient.as_object().unwrap()),
            Some("patientId")
        );
        let sign = json!({"userId": "Practitioner/1", "patientId": "p1"});
        assert_eq!(
            missing_field("order-sign", sign.as_object().unwrap()),
            Some("draftOrders")
        );
        assert_eq!(missing_field("some-custom-hook", &Map::new()), None);
    }
}
