//! No PHI in logs: the real binary, debug logging, demo traffic through every path (prefetch,
//! FHIR fetch, 404 from the FHIR server, 412, bad input, feedback with free text); every log
//! line is scanned for the patients' names, identifiers, ids, birth dates and free text. The
//! audit trail of the same traffic is in the store, with the patient pseudonymised.

use std::time::Duration;

use crate::common::fhir_server::{aimed_at, FhirServer};
use crate::common::process::{self, free_port, BedsideProcess};
use crate::common::{http, patient};
use bedside::store::Store;
use serde_json::{json, Value};

const FREE_TEXT: &str = "Dora looked pale at the bedside, daughter worried";

/// Strings that identify a patient in a request's prefetch and context.
fn phi_of(request: &Value) -> Vec<String> {
    let mut out = vec![request["context"]["patientId"].as_str().unwrap().to_owned()];
    let p = &request["prefetch"]["patient"];
    for name in p["name"].as_array().into_iter().flatten() {
        out.extend(name["family"].as_str().map(str::to_owned));
        out.extend(name["text"].as_str().map(str::to_owned));
        for given in name["given"].as_array().into_iter().flatten() {
            out.extend(given.as_str().map(str::to_owned));
        }
    }
    for id in p["identifier"].as_array().into_iter().flatten() {
        out.extend(id["value"].as_str().map(str::to_owned));
    }
    out.extend(p["birthDate"].as_str().map(str::to_owned));
    out.retain(|s| s.len() >= 4);
    out
}

#[tokio::test]
async fn debug_logs_of_demo_traffic_hold_no_phi_and_the_audit_trail_is_pseudonymised() {
    let fhir = FhirServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let db = dir.path().join("bedside.db");
    let extra = format!("[fhir]\nallowed_servers = ['{}']\n", fhir.origin());
    let config = process::config(dir.path(), port, &db, &extra);
    let mut bedside = BedsideProcess::start(&config, port, "debug");
    let base = format!("http://127.0.0.1:{port}");
    let service = format!("{base}/cds-services/deterioration");
    let mut phi = Vec::new();
    let mut statuses = Vec::new();
    let send = |body: Value| {
        let service = service.clone();
        async move {
            let r = http().post(&service).json(&body).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let mut card_uuid = None;
    for name in ["deteriorating", "early-warning", "stable", "sparse"] {
        let mut request = patient(name);
        phi.extend(phi_of(&request));
        // Free text in a resource the model does not read.
        request["prefetch"]["vitals"]["entry"][0]["resource"]["note"] =
            json!([{"text": FREE_TEXT}]);
        let (status, body) = send(request.clone()).await;
        statuses.push(status);
        if card_uuid.is_none() {
            card_uuid = body["cards"][0]["uuid"].as_str().map(str::to_owned);
        }
        // The same patient fetched from the FHIR server, and from one that does not know them.
        fhir.load_prefetch(&request).await;
        let mut fetched = aimed_at(request.clone(), &fhir);
        fetched.as_object_mut().unwrap().remove("prefetch");
        statuses.push(send(fetched.clone()).await.0);
        fetched["context"]["patientId"] = json!(format!(
            "{}-unknown",
            request["context"]["patientId"].as_str().unwrap()
        ));
        statuses.push(send(fetched).await.0);
        // No server at all: 412.
        let mut bare = request.clone();
        bare.as_object_mut().unwrap().remove("prefetch");
        statuses.push(send(bare).await.0);
        // Bad input that quotes patient data.
        let mut bad = request.clone();
        bad["hook"] = json!(request["prefetch"]["patient"]["name"][0]["text"]);
        statuses.push(send(bad).await.0);
    }
    phi.push(FREE_TEXT.to_owned());
    assert!(
        statuses.contains(&200) && statuses.contains(&412) && statuses.contains(&400),
        "{statuses:?}"
    );
    let feedback = json!({"feedback": [{"card": card_uuid.expect("a card"), "outcome": "overridden",
        "outcomeTimestamp": "2026-11-26T10:00:00Z",
        "overrideReason": {"reason": {"system": "https://bedside.example.org/CodeSystem/override-reason",
            "code": "already-aware", "display": "Already aware"}, "userComment": FREE_TEXT}}]});
    let r = http()
        .post(format!("{service}/feedback"))
        .json(&feedback)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    bedside.kill();

    let logs = std::fs::read_to_string(&bedside.log).unwrap() + &bedside.stdout.join("\n");
    let lines: Vec<&str> = logs.lines().collect();
    assert!(
        lines.len() > 40,
        "debug logging produced only {} lines",
        lines.len()
    );
    assert!(
        logs.contains("hook answered") && logs.contains("FHIR query failed"),
        "{logs}"
    );
    for needle in &phi {
        for line in &lines {
            assert!(
                !line.contains(needle.as_str()),
                "PHI `{needle}` in log line: {line}"
            );
        }
    }

    // The audit trail: every call, pseudonymised.
    let store = Store::open(&db).await.unwrap();
    let rows = store.audit_rows().await.unwrap();
    assert_eq!(rows.len(), statuses.len() + 1, "{rows:?}");
    // Records are written in the background, so their order is not the calls' order.
    // The pseudonym covers the FHIR server the patient is from (the request's `fhirServer`).
    let server = patient("deteriorating")["fhirServer"]
        .as_str()
        .map(bedside::store::fhir_base)
        .unwrap_or_default();
    let expected_hash = store
        .pseudonym(&server, "demo-deteriorating")
        .await
        .unwrap();
    assert_eq!(expected_hash.len(), 64);
    let answered = rows
        .iter()
        .filter(|r| r.patient_hash.as_deref() == Some(expected_hash.as_str()))
        .find(|r| r.outcome == "answered" && r.cards == 1)
        .expect("the deteriorating patient's card is audited");
    assert_eq!(answered.user_id.as_deref(), Some("Practitioner/example"));
    assert_eq!(answered.action, "hook");
    assert!(rows
        .iter()
        .any(|r| r.outcome == "prefetch_missing" && r.http_status == 412));
    assert!(rows
        .iter()
        .any(|r| r.outcome == "invalid_request" || r.outcome == "wrong_hook"));
    assert_eq!(rows.iter().filter(|r| r.action == "feedback").count(), 1);
    for row in &rows {
        let text = format!("{row:?}");
        for needle in &phi {
            assert!(
                !text.contains(needle.as_str()),
                "PHI `{needle}` in audit row {text}"
            );
        }
    }
}
