//! bedside's records rendered as FHIR R4, for a hospital's audit repository and model
//! governance: the audit trail as `AuditEvent`s, each prediction as a `RiskAssessment` with the
//! `Provenance` that names the model version and every input Observation, and errors as
//! `OperationOutcome`. The records themselves live in `store/`.
//!
//! De-identified by construction: the store never holds a patient id, so patients appear only
//! as the deployment's pseudonym (an `identifier` in the [`PSEUDONYM_SYSTEM`]), never as a
//! reference that could be resolved to a chart.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

use crate::store::{StoredAudit, StoredDecision, StoredPrediction};

/// Identifier system of the store's salted patient pseudonyms.
pub const PSEUDONYM_SYSTEM: &str = "urn:bedside:patient-pseudonym";
/// Identifier system of CDS Hooks `hookInstance`s.
const HOOK_INSTANCE_SYSTEM: &str = "urn:bedside:hook-instance";
/// Identifier system of CDS clients (their JWT `iss`).
const CLIENT_SYSTEM: &str = "urn:bedside:cds-client";
/// bedside's own action names (`hook`, `feedback`, `smart-view`, `smart-feedback`).
const ACTION_SYSTEM: &str = "urn:bedside:audit-action";

/// One audit row as an `AuditEvent` (type `rest`, the action as subtype).
pub fn audit_event(row: &StoredAudit) -> Value {
    let action = match row.action.as_str() {
        "hook" => "E",
        "feedback" | "smart-feedback" => "C",
        _ => "R",
    };
    // 0 success, 4 minor failure (the caller's request), 8 serious failure (bedside's).
    let outcome = match row.http_status {
        s if s < 400 => "0",
        s if s < 500 => "4",
        _ => "8",
    };
    let mut agents = Vec::new();
    if let Some(iss) = &row.client_iss {
        let mut who = json!({"identifier": {"system": CLIENT_SYSTEM, "value": iss}});
        if let Some(tenant) = &row.tenant {
            who["display"] = format!("tenant {tenant}").into();
        }
        agents.push(json!({
            "type": {"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110150", "display": "Application"}]},
            "who": who,
            "requestor": false,
        }));
    }
    if let Some(user) = &row.user_id {
        agents.push(json!({
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "AUT", "display": "author (originator)"}]},
            "who": {"reference": user},
            "requestor": true,
        }));
    }
    if agents.is_empty() {
        // AuditEvent.agent is 1..*: an unauthenticated caller is still an agent.
        agents.push(json!({"who": {"display": "unauthenticated caller"}, "requestor": true}));
    }
    let mut entities = Vec::new();
    if let Some(hash) = &row.patient_hash {
        entities.push(json!({
            "what": {"identifier": {"system": PSEUDONYM_SYSTEM, "value": hash}},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1", "display": "Person"},
            "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient"},
        }));
    }
    if let Some(instance) = &row.hook_instance {
        entities.push(json!({
            "what": {"identifier": {"system": HOOK_INSTANCE_SYSTEM, "value": instance}},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object"},
            "name": row.service_id,
        }));
    }
    let mut event = json!({
        "resourceType": "AuditEvent",
        "id": format!("audit-{}", row.id),
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation"},
        "subtype": [{"system": ACTION_SYSTEM, "code": row.action}],
        "action": action,
        "recorded": row.at,
        "outcome": outcome,
        "outcomeDesc": if row.calls > 1 {
            format!("{} (HTTP {}) for service {}: {} unauthenticated calls, aggregated", row.outcome, row.http_status, row.service_id, row.calls)
        } else {
            format!("{} (HTTP {}, {} cards) for service {}", row.outcome, row.http_status, row.cards, row.service_id)
        },
        "agent": agents,
        "source": {
            "observer": {"display": "bedside gateway"},
            "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4", "display": "Application Server"}],
        },
    });
    if !entities.is_empty() {
        event["entity"] = entities.into();
    }
    event
}

/// A prediction as a `RiskAssessment`: the model, its version, the risk (when it scored), the
/// input Observations as `basis`, and why it abstained or was held back as a note.
pub fn risk_assessment(p: &StoredPrediction, meaning: Option<&str>) -> Value {
    let mut r = json!({
        "resourceType": "RiskAssessment",
        "id": p.id,
        "status": if p.risk.is_some() { "final" } else { "cancelled" },
        "method": {"text": format!("bedside model {} v{} ({})", p.model, p.model_version, p.mode)},
        "subject": subject(p),
        "occurrenceDateTime": instant(p.at),
        "performer": {"display": format!("bedside service {}", p.service_id)},
    });
    if let Some(risk) = p.risk {
        let mut prediction = Map::new();
        prediction.insert("probabilityDecimal".into(), json!(risk));
        if let Some(m) = meaning {
            prediction.insert("outcome".into(), json!({"text": m}));
        }
        r["prediction"] = json!([prediction]);
    }
    if !p.input_refs.is_empty() {
        r["basis"] = p
            .input_refs
            .iter()
            .map(|reference| json!({"reference": reference}))
            .collect::<Vec<_>>()
            .into();
    }
    let mut note = format!("Outcome: {}", p.outcome.as_str().replace('_', " "));
    if let Some(reason) = &p.reason {
        note.push_str(&format!(": {reason}"));
    }
    note.push_str(". Model trained on synthetic data; decision support only.");
    r["note"] = json!([{"text": note}]);
    r
}

/// Who and what stand behind a prediction: the model version as the performing agent, bedside
/// as the assembler, every input Observation as a source entity, the input tensor's hash.
pub fn provenance(p: &StoredPrediction) -> Value {
    let mut prov = json!({
        "resourceType": "Provenance",
        "id": format!("{}-provenance", p.id),
        "target": [{"reference": format!("RiskAssessment/{}", p.id)}],
        "recorded": instant(p.at),
        "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "CREATE", "display": "create"}]},
        "agent": [
            {
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "code": "performer", "display": "Performer"}]},
                "who": {"display": format!("model {} v{}", p.model, p.model_version)},
            },
            {
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "code": "assembler", "display": "Assembler"}]},
                "who": {"display": format!("bedside gateway, service {} ({})", p.service_id, p.hook)},
            },
        ],
    });
    let mut entities: Vec<Value> = p
        .input_refs
        .iter()
        .map(|reference| json!({"role": "source", "what": {"reference": reference}}))
        .collect();
    if let Some(sha) = &p.tensor_sha256 {
        entities.push(json!({
            "role": "derivation",
            "what": {"identifier": {"system": "urn:bedside:input-tensor-sha256", "value": sha}, "display": "the model's input tensor"},
        }));
    }
    entities.push(json!({
        "role": "source",
        "what": {"identifier": {"system": HOOK_INSTANCE_SYSTEM, "value": p.hook_instance}, "display": "the CDS Hooks call"},
    }));
    prov["entity"] = entities.into();
    prov
}

/// Identifier system of model versions (`<model>|<version>`).
const MODEL_VERSION_SYSTEM: &str = "urn:bedside:model-version";
/// Identifier system of stored model evaluations.
const EVALUATION_SYSTEM: &str = "urn:bedside:model-evaluation";

/// The model version a decision is about, as a Reference by identifier.
fn model_version_ref(d: &StoredDecision) -> Value {
    json!({
        "identifier": {"system": MODEL_VERSION_SYSTEM, "value": format!("{}|{}", d.model, d.version)},
        "display": format!("model {} version {}", d.model, d.version),
    })
}

/// A lifecycle decision (promotion, retirement, a reverted change) as the `Provenance` of the
/// model version's new status: who decided, when, why, on which evaluation.
pub fn decision_provenance(d: &StoredDecision) -> Value {
    let mut prov = json!({
        "resourceType": "Provenance",
        "id": format!("model-decision-{}", d.id),
        "target": [model_version_ref(d)],
        "occurredDateTime": instant(d.at),
        "recorded": instant(d.at),
        "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "UPDATE", "display": "revise"}],
                     "text": format!("status {} -> {}", d.previous, d.status)},
        "reason": [{"text": d.reason}],
        "agent": [{
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "code": "author", "display": "Author"}]},
            "who": {"display": format!("{} (via {})", d.actor, d.via)},
        }],
    });
    if let Some(id) = d.evaluation_id {
        prov["entity"] = json!([{
            "role": "source",
            "what": {"identifier": {"system": EVALUATION_SYSTEM, "value": id.to_string()}, "display": "the evaluation the promotion rests on"},
        }]);
    }
    prov
}

/// The same decision as an `AuditEvent` for the hospital's audit repository.
pub fn decision_audit_event(d: &StoredDecision) -> Value {
    let subtype = match d.status.as_str() {
        "active" => "model-promote",
        "retired" => "model-retire",
        _ => "model-demote",
    };
    let mut entity = json!({
        "what": model_version_ref(d),
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object"},
        "detail": [
            {"type": "previous-status", "valueString": d.previous},
            {"type": "status", "valueString": d.status},
        ],
    });
    if let Some(id) = d.evaluation_id {
        if let Some(details) = entity["detail"].as_array_mut() {
            details.push(json!({"type": "evaluation", "valueString": id.to_string()}));
        }
    }
    json!({
        "resourceType": "AuditEvent",
        "id": format!("model-decision-{}", d.id),
        "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110100", "display": "Application Activity"},
        "subtype": [{"system": ACTION_SYSTEM, "code": subtype}],
        "action": "U",
        "recorded": instant(d.at),
        "outcome": "0",
        "outcomeDesc": format!("{} {}: {} -> {}", d.model, d.version, d.previous, d.status),
        "purposeOfEvent": [{"text": d.reason}],
        "agent": [{
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "AUT", "display": "author (originator)"}]},
            "who": {"display": d.actor},
            "altId": d.via,
            "requestor": true,
        }],
        "source": {"observer": {"display": "bedside gateway"}, "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4", "display": "Application Server"}]},
        "entity": [entity],
    })
}

/// An `OperationOutcome` with one issue (FHIR-shaped endpoints answer errors with it).
pub fn operation_outcome(severity: &str, code: &str, diagnostics: &str) -> Value {
    json!({
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}],
    })
}

/// A `collection` Bundle of `resources`, with a `next` link when there may be more.
pub fn bundle(resources: Vec<Value>, next: Option<String>, now: DateTime<Utc>) -> Value {
    let mut b = json!({
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": instant(now),
        "entry": resources.into_iter().map(|r| json!({"resource": r})).collect::<Vec<_>>(),
    });
    if let Some(url) = next {
        b["link"] = json!([{"relation": "next", "url": url}]);
    }
    b
}

fn subject(p: &StoredPrediction) -> Value {
    match &p.patient_hash {
        Some(hash) => json!({"identifier": {"system": PSEUDONYM_SYSTEM, "value": hash}}),
        None => json!({"display": "patient not given in the call"}),
    }
}

fn instant(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(action: &str, status: i64) -> StoredAudit {
        StoredAudit {
            id: 7,
            at: "2026-11-26T10:00:00.000Z".into(),
            action: action.into(),
            service_id: "sepsis-screen".into(),
            hook_instance: Some("hi-1".into()),
            client_iss: Some("https://ehr.example".into()),
            tenant: None,
            user_id: Some("Practitioner/1".into()),
            patient_hash: Some("ab12".into()),
            outcome: "answered".into(),
            http_status: status,
            cards: 1,
            calls: 1,
        }
    }

    #[test]
    fn audit_events_say_who_what_and_how_it_ended_without_the_patient_id() {
        let e = audit_event(&row("hook", 200));
        assert_eq!(e["action"], "E");
        assert_eq!(e["outcome"], "0");
        assert_eq!(e["agent"].as_array().unwrap().len(), 2);
        assert_eq!(
            e["entity"][0]["what"]["identifier"]["system"],
            PSEUDONYM_SYSTEM
        );
        assert_eq!(audit_event(&row("feedback", 401))["outcome"], "4");
        assert_eq!(audit_event(&row("feedback", 503))["action"], "C");
        assert_eq!(audit_event(&row("smart-view", 503))["outcome"], "8");
        let mut anonymous = row("hook", 401);
        anonymous.client_iss = None;
        anonymous.user_id = None;
        assert_eq!(audit_event(&anonymous)["agent"][0]["requestor"], true);
    }
}
