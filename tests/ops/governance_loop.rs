//! The governance loop end to end, as a site's data scientist runs it with the real binary:
//! the gateway scores in the shadow and records feedback; outcomes are imported; a
//! de-identified MEDS export goes out (no identifier planted in any FHIR field type of the
//! chart or in a clinician's comment reaches any byte, the same export twice is the same bytes,
//! another series cannot be joined to it, small quasi-identifier classes are left out, stored
//! model inputs come with it); `models.recalibrate` fits a new
//! version on the export alone; the site signs it; it scores in the shadow, is evaluated, and is
//! promoted; after a reload its cards show.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::process::{self, free_port, BedsideProcess};
use crate::common::{http, patient, repo};
use serde_json::{json, Value};

/// Planted identifiers: none may appear in an export.
const PATIENT_PREFIX: &str = "MRN-4471-SMITH-";
const COMMENT: &str = "Spoke to John Smith (555-0143) at 12 Elm Street";
const FHIR_SERVER: &str = "https://ehr.stmary-private.example/fhir";
const SECRET: &str = "a site secret of at least thirty-two bytes, kept out of the config";
/// Planted in every kind of field a FHIR chart allows: none may appear in an export.
const PLANTED: [&str; 16] = [
    "Okonkwo-Villanueva",
    "Perpetua",
    "+1-617-555-0188",
    "perpetua.ov@example.net",
    "742 Evergreen Terrace",
    "Springfield-Heights",
    "02139-4307",
    "SSN-078-05-1120",
    "MRN-ZX-99812",
    "1931-02-03",
    "mothers-maiden-Quillfeather",
    "Dr Xanthippe Marlowe",
    "bed 14 next to window, daughter Imogen",
    "INS-PLAN-44-0917",
    "VIN-1HGCM82633A004352",
    "http://perpetua-home.example",
];

/// Plants [`PLANTED`] in the Patient (names, telecom, address, identifiers, birth date,
/// extensions, narrative) and in every Observation (notes, performer, extensions, value
/// strings) of `request`; patients 38 and 39 live in ZIP areas nobody else does.
fn plant_phi(request: &mut Value, i: usize) {
    let zip = match i {
        38 => "94110",
        39 => "10001",
        _ => "02139-4307",
    };
    let [family, given, phone, email, street, city, _, ssn, mrn, born, maiden, doctor, note, plan, vin, url] =
        PLANTED;
    let patient = &mut request["prefetch"]["patient"];
    patient["name"] =
        json!([{"family": family, "given": [given], "text": format!("{given} {family}")}]);
    patient["telecom"] = json!([{"system": "phone", "value": phone}, {"system": "email", "value": email}, {"system": "url", "value": url}]);
    patient["address"] =
        json!([{"use": "home", "line": [street], "city": city, "postalCode": zip}]);
    patient["identifier"] = json!([{"system": "http://hl7.org/fhir/sid/us-ssn", "value": ssn}, {"system": "urn:mrn", "value": mrn}, {"system": "urn:plan", "value": plan}]);
    patient["birthDate"] = born.into();
    patient["gender"] = "female".into();
    patient["extension"] = json!([{"url": "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName", "valueString": maiden}, {"url": "urn:vehicle", "valueString": vin}]);
    patient["text"] = json!({"status": "generated", "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">{given} {family}, {street}</div>")});
    for bundle in ["vitals", "labs"] {
        if let Some(entries) = request["prefetch"][bundle]["entry"].as_array_mut() {
            for e in entries {
                let o = &mut e["resource"];
                o["note"] = json!([{"text": note, "authorString": doctor}]);
                o["performer"] = json!([{"display": doctor}]);
                o["extension"] = json!([{"url": "urn:comment", "valueString": note}]);
            }
        }
    }
}

fn bedside(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_bedside"))
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Whether `/metrics` shows exactly the line `line` within a minute.
async fn metric_reaches(url: &str, line: &str) -> bool {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        if let Ok(r) = http().get(format!("{url}/metrics")).send().await {
            if r.text()
                .await
                .unwrap_or_default()
                .lines()
                .any(|l| l == line)
            {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The deterioration service's shadow counter at `n`.
fn shadow_line(n: usize) -> String {
    format!("bedside_service_shadow_total{{service=\"deterioration\"}} {n}")
}

/// One deterioration call for `patient_id` with the `fixture`'s chart (PHI planted when
/// `plant` names the patient's number); the answer.
async fn call(url: &str, fixture: &str, patient_id: &str, plant: Option<usize>) -> Value {
    let mut request = patient(fixture);
    if let Some(i) = plant {
        plant_phi(&mut request, i);
    }
    request["context"]["patientId"] = patient_id.into();
    request["fhirServer"] = FHIR_SERVER.into();
    let r = http()
        .post(format!("{url}/cds-services/deterioration"))
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn every_file(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(every_file(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out.sort();
    out
}

fn events(export: &Path) -> Vec<Value> {
    ndjson(&export.join("data/data.ndjson"))
}

fn ndjson(file: &Path) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn shadow_to_export_to_recalibration_to_promotion_with_no_identifier_leaving() {
    let dir = tempfile::tempdir().unwrap();
    let models = common::copy_models(dir.path());
    let db = dir.path().join("b.db");
    let key = dir.path().join("site.pk8");
    let (ok, printed) = bedside(
        &["keygen", "--out", key.to_str().unwrap(), "--key-id", "site"],
        &[],
    );
    assert!(ok, "{printed}");
    let trusted = printed[printed.find("[[inference.trusted_keys]]").unwrap()..].to_owned();
    let sign = |versions: Vec<PathBuf>| {
        let mut args = vec![
            "sign".to_owned(),
            "--key".into(),
            key.display().to_string(),
            "--key-id".into(),
            "site".into(),
        ];
        args.extend(versions.iter().map(|v| v.display().to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, printed) = bedside(&args, &[]);
        assert!(ok, "{printed}");
    };
    // Every model version the gateway loads, the foundation model's folder included.
    let all_versions: Vec<PathBuf> = std::fs::read_dir(&models)
        .unwrap()
        .flatten()
        .flat_map(|m| std::fs::read_dir(m.path()).unwrap().flatten())
        .map(|v| v.path())
        .filter(|v| v.join("manifest.toml").is_file() || v.join("foundation.toml").is_file())
        .collect();
    sign(all_versions);
    let port = free_port();
    let config = process::config_with_models(
        dir.path(),
        port,
        &db,
        &models,
        &format!("{trusted}\n[governance]\nmin_shadow_scores = 10\n"),
    );
    // The deterioration service keeps its model inputs for learning (`[learning]`).
    let services = dir.path().join("cds-services");
    common::copy_dir(&repo().join("cds-services"), &services);
    let deterioration = services.join("deterioration.toml");
    let mut definition = std::fs::read_to_string(&deterioration).unwrap();
    definition.push_str("\n[learning]\nstore_inputs = true\n");
    std::fs::write(&deterioration, definition).unwrap();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &repo().join("cds-services").display().to_string(),
        &services.display().to_string(),
    );
    std::fs::write(&config, text).unwrap();
    let cfg = config.to_str().unwrap();

    // 1. Live calls: 20 deteriorating and 20 stable charts; feedback with a free-text comment.
    let gw = BedsideProcess::start(&config, port, "warn");
    let mut first_card = None;
    for i in 0..40 {
        let fixture = if i < 20 { "deteriorating" } else { "stable" };
        let body = call(&gw.url, fixture, &format!("{PATIENT_PREFIX}{i}"), Some(i)).await;
        if first_card.is_none() {
            first_card = body["cards"][0]["uuid"].as_str().map(str::to_owned);
        }
        // One call at a time into the shadow lane, so that none is skipped (2.0.0 and the
        // foundation head 5.0.0 score each call).
        assert!(metric_reaches(&gw.url, &shadow_line(2 * (i + 1))).await);
    }
    let card = first_card.expect("a deteriorating chart shows a card");
    let feedback = json!({"feedback": [{"card": card, "outcome": "overridden",
        "overrideReason": {"reason": {"code": "already-aware", "system": "https://bedside.example.org/CodeSystem/override-reason", "display": "Already aware"}, "userComment": COMMENT},
        "outcomeTimestamp": chrono::Utc::now().to_rfc3339()}]});
    let r = http()
        .post(format!("{}/cds-services/deterioration/feedback", gw.url))
        .json(&feedback)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // 2. Outcomes: 15 of the deteriorating patients and 2 of the stable ones, a minute later.
    let soon = chrono::Utc::now() + chrono::Duration::minutes(1);
    let lines: String = (0..15)
        .chain([20, 21])
        .map(|i| {
            json!({"patient": format!("Patient/{PATIENT_PREFIX}{i}"), "fhirServer": FHIR_SERVER, "event": "deterioration", "at": soon.to_rfc3339()}).to_string() + "\n"
        })
        .collect();
    let outcomes = dir.path().join("outcomes.ndjson");
    std::fs::write(&outcomes, lines).unwrap();
    let through = (soon + chrono::Duration::seconds(30)).to_rfc3339();
    let (ok, printed) = bedside(
        &[
            "outcomes",
            "-c",
            cfg,
            "--file",
            outcomes.to_str().unwrap(),
            "--through",
            &through,
        ],
        &[],
    );
    assert!(ok, "{printed}");

    // 3. The de-identified export, twice, once in another series and once in the same series
    // under another id; comments scrubbed; k = 1 (k-anonymity has its own export below).
    let export = |out: &Path, id: &str, more: &[&str]| {
        let mut args = vec![
            "export",
            "-c",
            cfg,
            "--out",
            out.to_str().unwrap(),
            "--export-id",
            id,
            "--free-text",
            "scrub",
        ];
        args.extend(more);
        bedside(&args, &[("BEDSIDE_EXPORT_SECRET", SECRET)])
    };
    let (a, b, c, d) = (
        dir.path().join("export-a"),
        dir.path().join("export-b"),
        dir.path().join("export-c"),
        dir.path().join("export-d"),
    );
    for (out, id, more) in [
        (&a, "2026-12", &["--k", "1"][..]),
        (&b, "2026-12", &["--k", "1"]),
        (&c, "2027-01", &["--k", "1"]),
        (&d, "2027-02", &["--k", "1", "--series", "2026-12"]),
    ] {
        let (ok, printed) = export(out, id, more);
        assert!(ok, "{printed}");
    }
    let (ok, printed) = export(&a, "2026-12", &[]);
    assert!(!ok && printed.contains("never overwrites"), "{printed}");
    let (ok, printed) = bedside(
        &[
            "export",
            "-c",
            cfg,
            "--out",
            dir.path().join("x").to_str().unwrap(),
            "--export-id",
            "x",
        ],
        &[],
    );
    assert!(
        !ok && printed.contains("BEDSIDE_EXPORT_SECRET"),
        "{printed}"
    );
    // No planted identifier, no raw time and no card id in any byte of any export.
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let files = every_file(&a);
    assert!(files.len() >= 6, "{files:?}");
    for export in [&a, &c, &d] {
        for f in every_file(export) {
            let bytes = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
            for planted in PLANTED.iter().chain(&[
                PATIENT_PREFIX,
                "John Smith",
                "555-0143",
                "Elm Street",
                "stmary-private",
                "Already aware",
                card.as_str(),
            ]) {
                assert!(!bytes.contains(planted), "{planted} in {}", f.display());
            }
            // Every event happened today: none may say so. (An input's window began days
            // before, so only its prediction time is checked.)
            if f.ends_with("data.ndjson") {
                assert!(
                    !bytes.contains(&today),
                    "an unshifted date in {}",
                    f.display()
                );
            }
            if f.ends_with("inputs.ndjson") {
                for input in ndjson(&f) {
                    assert!(!input["time"].as_str().unwrap().starts_with(&today));
                }
            }
        }
    }
    for f in &files {
        let twin = b.join(f.strip_prefix(&a).unwrap());
        assert_eq!(
            std::fs::read(f).unwrap(),
            std::fs::read(&twin).unwrap(),
            "{} differs",
            f.display()
        );
    }
    let (ea, ec, ed) = (events(&a), events(&c), events(&d));
    assert_eq!(ea.len(), ec.len());
    let subjects = |e: &[Value]| {
        e.iter()
            .map(|x| x["subject_id"].as_i64().unwrap())
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(subjects(&ea).len(), 40);
    assert!(
        subjects(&ea).is_disjoint(&subjects(&ec)),
        "another series: no subject id in common, nothing to join on"
    );
    let times = |e: &[Value]| {
        e.iter()
            .filter_map(|x| x["time"].as_str().map(str::to_owned))
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_ne!(times(&ea), times(&ec), "another series, other date shifts");
    assert_eq!(
        (subjects(&ea), times(&ea)),
        (subjects(&ed), times(&ed)),
        "the same series: the same ids and shifts"
    );
    // The Parquet files validate against the MEDS reference package's schemas and hold exactly
    // the NDJSON's events.
    let check = Command::new(repo().join(".venv/bin/python"))
        .arg(repo().join("tests/fixtures/meds/check_export.py"))
        .arg(&a)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let checked: Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(checked["rows"], ea.len(), "{checked}");
    assert!(checked["static"].as_u64().unwrap() >= 80, "{checked}");
    // No subject id is the store's pseudonym or the patient id.
    let store = bedside::store::Store::open(&db).await.unwrap();
    let hash = store
        .pseudonym(
            &bedside::store::fhir_base(FHIR_SERVER),
            &format!("{PATIENT_PREFIX}0"),
        )
        .await
        .unwrap();
    store.close().await;
    assert!(
        !String::from_utf8_lossy(&std::fs::read(a.join("data/data.ndjson")).unwrap())
            .contains(&hash)
    );
    let feedback_event = ea
        .iter()
        .find(|e| e["code"] == "BEDSIDE//FEEDBACK//overridden")
        .unwrap();
    assert_eq!(
        feedback_event["text_value"],
        "https://bedside.example.org/CodeSystem/override-reason|already-aware"
    );
    let comment = ea
        .iter()
        .find(|e| e["code"] == "BEDSIDE//FEEDBACK_COMMENT")
        .unwrap();
    assert_eq!(comment["prediction"], feedback_event["prediction"]);
    assert!(
        comment["text_value"]
            .as_str()
            .unwrap()
            .contains("[REDACTED]"),
        "{comment}"
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("deid_report.json")).unwrap())
            .unwrap();
    let comments = report["identifiers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["class"].as_str().unwrap().contains("override comments"))
        .unwrap();
    assert_eq!(comments["count"], 1, "{report}");
    assert!(comments["action"].as_str().unwrap().starts_with("scrubbed"));
    assert_eq!(
        ea.iter()
            .filter(|e| e["code"] == "BEDSIDE//OUTCOME//deterioration")
            .count(),
        17
    );
    // Generalised quasi-identifiers: every planted patient is over 89 and lives in 021xx.
    let statics: Vec<&str> = ea
        .iter()
        .filter(|e| e["time"].is_null())
        .map(|e| e["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        statics
            .iter()
            .filter(|c| **c == "BEDSIDE//AGE_BAND//90+")
            .count(),
        40
    );
    assert_eq!(
        statics
            .iter()
            .filter(|c| **c == "BEDSIDE//ZIP3//021")
            .count(),
        38
    );
    // The model inputs of every deterioration prediction (active and shadow), on the
    // prediction's shifted time; the foundation head's (token input, 5.0.0) are identified by
    // their tensor hash only, not exported as grid rows.
    let inputs = ndjson(&a.join("inputs/inputs.ndjson"));
    let predictions: Vec<&Value> = ea
        .iter()
        .filter(|e| {
            let code = e["code"].as_str().unwrap();
            code.starts_with("BEDSIDE//PREDICTION//deterioration")
                && code != "BEDSIDE//PREDICTION//deterioration//5.0.0"
        })
        .collect();
    assert!(
        ea.iter()
            .any(|e| e["code"] == "BEDSIDE//PREDICTION//deterioration//5.0.0"),
        "the head's shadow predictions are exported"
    );
    assert_eq!(inputs.len(), predictions.len(), "{}", report);
    for input in &inputs {
        let p = predictions
            .iter()
            .find(|p| p["prediction"] == input["prediction"])
            .unwrap();
        assert_eq!(p["time"], input["time"]);
        let features = input["features"].as_array().unwrap().len();
        let rows = input["values"].as_array().unwrap();
        assert!(features > 0 && !rows.is_empty());
        assert_eq!(rows.len(), input["observed"].as_array().unwrap().len());
        assert!(rows.iter().all(|r| r.as_array().unwrap().len() == features));
    }

    // k-anonymity: with k = 2 the two patients alone in their ZIP area are left out, and every
    // class that remains holds at least two subjects.
    let e = dir.path().join("export-e");
    let (ok, printed) = export(&e, "2027-03", &["--k", "2"]);
    assert!(ok, "{printed}");
    let ee = events(&e);
    assert!(ee
        .iter()
        .all(|x| x["code"] != "BEDSIDE//ZIP3//941" && x["code"] != "BEDSIDE//ZIP3//100"));
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(e.join("deid_report.json")).unwrap())
            .unwrap();
    let suppressed = report["quasi_identifiers"]["subjects_suppressed"]
        .as_u64()
        .unwrap();
    assert!(suppressed >= 2, "{report}");
    assert_eq!(subjects(&ee).len() as u64, 40 - suppressed);
    let mut classes: std::collections::BTreeMap<Vec<String>, u64> = Default::default();
    for subject in subjects(&ee) {
        let mine: Vec<&Value> = ee.iter().filter(|x| x["subject_id"] == subject).collect();
        let mut key: Vec<String> = mine
            .iter()
            .filter(|x| x["time"].is_null())
            .map(|x| x["code"].as_str().unwrap().to_owned())
            .collect();
        key.sort();
        key.push(
            mine.iter()
                .filter_map(|x| x["time"].as_str())
                .min()
                .unwrap()[..7]
                .to_owned(),
        );
        *classes.entry(key).or_default() += 1;
    }
    assert!(classes.values().all(|n| *n >= 2), "{classes:?}");

    // 4. A new version recalibrated on the export alone; the site signs it; reload.
    let run = Command::new(repo().join(".venv/bin/python"))
        .args([
            "-m",
            "models.recalibrate",
            "deterioration",
            "--from-version",
            "4.0.1",
            "--to-version",
            "4.0.2",
            "--meds",
        ])
        .arg(&a)
        .arg("--root")
        .arg(&models)
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let printed = String::from_utf8_lossy(&run.stdout);
    assert!(printed.contains("40 records, 17 outcomes"), "{printed}");
    sign(vec![models.join("deterioration/4.0.2")]);
    gw.signal("HUP");
    assert!(metric_reaches(&gw.url, "bedside_reloads_total 1").await);

    // 5. It scores in the shadow; evaluated on those scores; promoted; reloaded: its cards show.
    // (Service counters start again with a reload: 2.0.0, 4.0.2 and 5.0.0 score each call.)
    for i in 0..12 {
        call(
            &gw.url,
            "deteriorating",
            &format!("{PATIENT_PREFIX}after-{i}"),
            None,
        )
        .await;
        assert!(metric_reaches(&gw.url, &shadow_line(3 * (i + 1))).await);
    }
    let (ok, printed) = bedside(&["evaluate", "-c", cfg, "deterioration", "4.0.2"], &[]);
    assert!(ok, "{printed}");
    assert!(printed.contains("[met] shadow scores: 12"), "{printed}");
    let (ok, printed) = bedside(
        &[
            "promote",
            "-c",
            cfg,
            "deterioration",
            "4.0.2",
            "--by",
            "data-science",
            "--reason",
            "recalibrated on our own outcomes",
        ],
        &[],
    );
    assert!(ok, "{printed}");
    gw.signal("HUP");
    assert!(metric_reaches(&gw.url, "bedside_reloads_total 2").await);
    let body = call(&gw.url, "deteriorating", "after-promotion", None).await;
    let summary = body["cards"][0]["summary"].as_str().unwrap_or_default();
    assert!(summary.contains("v4.0.2"), "{body}");

    // 6. Monitoring: two fixed charts are nothing like the training population; a restarted
    // gateway's first monitoring run raises the drift alerts of this week in /metrics.
    drop(gw);
    let gw = BedsideProcess::start(&config, port, "warn");
    let started = Instant::now();
    let mut text = String::new();
    while started.elapsed() < Duration::from_secs(30) {
        text = http()
            .get(format!("{}/metrics", gw.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains("bedside_monitoring_alerts{") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        text.lines().any(|l| l.starts_with(
            "bedside_monitoring_alerts{model=\"deterioration\",version=\"4.0.1\",mode=\"active\",metric=\"psi:"
        )),
        "{text}"
    );
}
