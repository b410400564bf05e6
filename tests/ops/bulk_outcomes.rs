//! Outcomes from a FHIR Bulk Data export, as a site joins them: a real FHIR server holds three
//! stays (one moved to an ICU bed, one whose creatinine rose by KDIGO, one that stayed well);
//! `models.bulk_outcomes` kicks off `Patient/$export`, polls, downloads the NDJSON files and
//! reads the outcomes with the rules the models were trained on; `bedside outcomes` imports them
//! pseudonymised. Exactly the two outcomes are stored, each at its recorded onset.

use std::process::Command;

use chrono::{Duration, SecondsFormat, Utc};
use serde_json::{json, Value};

use crate::common::fhir_server::{put_entry, FhirServer, FHIR_TOKEN};
use crate::common::process::{self, free_port};
use crate::common::{copy_models, repo};

fn creatinine(id: &str, patient: &str, at: &str, value: f64) -> Value {
    json!({"resourceType": "Observation", "id": id, "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "2160-0"}]},
        "subject": {"reference": format!("Patient/{patient}")}, "effectiveDateTime": at,
        "valueQuantity": {"value": value, "unit": "mg/dL", "system": "http://unitsofmeasure.org", "code": "mg/dL"}})
}

fn stay(id: &str, patient: &str, start: &str, icu: Option<&str>) -> Value {
    let mut locations =
        vec![json!({"location": {"display": "Ward 4B"}, "period": {"start": start}})];
    if let Some(at) = icu {
        locations
            .push(json!({"location": {"display": "Intensive Care Unit"}, "period": {"start": at}}));
    }
    json!({"resourceType": "Encounter", "id": id, "status": "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "subject": {"reference": format!("Patient/{patient}")}, "period": {"start": start},
        "location": locations})
}

#[tokio::test]
async fn outcomes_read_from_a_bulk_data_export_are_imported_pseudonymised() {
    let fhir = FhirServer::start().await;
    let t0 = Utc::now() - Duration::days(3);
    let at = |hours: i64| (t0 + Duration::hours(hours)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let mut resources = Vec::new();
    for p in ["bulk-icu", "bulk-aki", "bulk-well"] {
        resources.push(json!({"resourceType": "Patient", "id": p, "gender": "female", "birthDate": "1950-01-01"}));
    }
    resources.push(stay("enc-icu", "bulk-icu", &at(0), Some(&at(30))));
    resources.push(stay("enc-aki", "bulk-aki", &at(0), None));
    resources.push(stay("enc-well", "bulk-well", &at(0), None));
    for (i, (h, v)) in [(2, 0.9), (20, 1.0), (40, 1.4)].into_iter().enumerate() {
        resources.push(creatinine(&format!("cr-aki-{i}"), "bulk-aki", &at(h), v));
    }
    for (i, (h, v)) in [(2, 0.9), (40, 0.95)].into_iter().enumerate() {
        resources.push(creatinine(&format!("cr-well-{i}"), "bulk-well", &at(h), v));
    }
    fhir.transaction(&json!({"resourceType": "Bundle", "type": "transaction",
        "entry": resources.iter().map(put_entry).collect::<Vec<_>>()}))
        .await;

    let dir = tempfile::tempdir().unwrap();
    let outcomes = dir.path().join("outcomes.ndjson");
    let run = Command::new(repo().join(".venv/bin/python"))
        .args([
            "-m",
            "models.bulk_outcomes",
            "--kick-off",
            &fhir.base,
            "--out",
        ])
        .arg(&outcomes)
        .env("BULK_TOKEN", FHIR_TOKEN)
        .current_dir(repo())
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary: Value = serde_json::from_str(printed.trim()).unwrap();
    assert_eq!(summary["patients"], 3, "{summary}");
    assert_eq!(
        summary["outcomes"],
        json!({"aki": 1, "deterioration": 1}),
        "{summary}"
    );
    let through = summary["transactionTime"].as_str().unwrap().to_owned();
    let written = std::fs::read_to_string(&outcomes).unwrap();
    assert!(!printed.contains("bulk-icu"), "no patient id printed");

    let models = copy_models(dir.path());
    let db = dir.path().join("b.db");
    let config = process::config_with_models(dir.path(), free_port(), &db, &models, "");
    let out = Command::new(env!("CARGO_BIN_EXE_bedside"))
        .args(["outcomes", "-c"])
        .arg(&config)
        .arg("--file")
        .arg(&outcomes)
        .args(["--through", &through])
        .args([
            "--event",
            "deterioration",
            "--event",
            "sepsis",
            "--event",
            "aki",
        ])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{written}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = bedside::store::Store::open(&db).await.unwrap();
    let (stored, feeds) = store.export_outcomes().await.unwrap();
    let base = bedside::store::fhir_base(&fhir.base);
    let icu = store.pseudonym(&base, "bulk-icu").await.unwrap();
    let aki = store.pseudonym(&base, "bulk-aki").await.unwrap();
    let mut found: Vec<(String, String, String)> = stored
        .into_iter()
        .map(|(event, hash, when)| (event, hash, when.to_rfc3339_opts(SecondsFormat::Secs, true)))
        .collect();
    found.sort();
    assert_eq!(
        found,
        vec![
            ("aki".to_owned(), aki, at(40)),
            ("deterioration".to_owned(), icu, at(30)),
        ]
    );
    assert_eq!(
        feeds.len(),
        3,
        "deterioration, sepsis and aki are complete through the export"
    );
    store.close().await;
}
