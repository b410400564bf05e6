//! The governance loop end to end, as a site's data scientist runs it with the real binary:
//! the gateway scores in the shadow and records feedback; outcomes are imported; a
//! de-identified MEDS export goes out (no planted identifier in any byte, the same export twice
//! is the same bytes, another export id moves the dates); `models.recalibrate` fits a new
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

/// One deterioration call for `patient_id` with the `fixture`'s chart; the answer.
async fn call(url: &str, fixture: &str, patient_id: &str) -> Value {
    let mut request = patient(fixture);
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
    std::fs::read_to_string(export.join("data/data.ndjson"))
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
    let all_versions: Vec<PathBuf> = std::fs::read_dir(&models)
        .unwrap()
        .flatten()
        .flat_map(|m| std::fs::read_dir(m.path()).unwrap().flatten())
        .map(|v| v.path())
        .filter(|v| v.join("manifest.toml").is_file())
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
    let cfg = config.to_str().unwrap();

    // 1. Live calls: 20 deteriorating and 20 stable charts; feedback with a free-text comment.
    let gw = BedsideProcess::start(&config, port, "warn");
    let mut first_card = None;
    for i in 0..40 {
        let fixture = if i < 20 { "deteriorating" } else { "stable" };
        let body = call(&gw.url, fixture, &format!("{PATIENT_PREFIX}{i}")).await;
        if first_card.is_none() {
            first_card = body["cards"][0]["uuid"].as_str().map(str::to_owned);
        }
        // One call at a time into the shadow lane, so that none is skipped.
        assert!(metric_reaches(&gw.url, &shadow_line(i + 1)).await);
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

    // 3. The de-identified export, twice, and once under another export id.
    let export = |out: &Path, id: &str| {
        bedside(
            &[
                "export",
                "-c",
                cfg,
                "--out",
                out.to_str().unwrap(),
                "--export-id",
                id,
            ],
            &[("BEDSIDE_EXPORT_SECRET", SECRET)],
        )
    };
    let (a, b, c) = (
        dir.path().join("export-a"),
        dir.path().join("export-b"),
        dir.path().join("export-c"),
    );
    for (out, id) in [(&a, "2026-12"), (&b, "2026-12"), (&c, "2027-01")] {
        let (ok, printed) = export(out, id);
        assert!(ok, "{printed}");
    }
    let (ok, printed) = export(&a, "2026-12");
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
    let files = every_file(&a);
    assert!(files.len() >= 5, "{files:?}");
    for f in &files {
        let twin = b.join(f.strip_prefix(&a).unwrap());
        assert_eq!(
            std::fs::read(f).unwrap(),
            std::fs::read(&twin).unwrap(),
            "{} differs",
            f.display()
        );
        let bytes = String::from_utf8_lossy(&std::fs::read(f).unwrap()).into_owned();
        for planted in [
            PATIENT_PREFIX,
            "John Smith",
            "555-0143",
            "Elm Street",
            "stmary-private",
            "Already aware",
            card.as_str(),
        ] {
            assert!(!bytes.contains(planted), "{planted} in {}", f.display());
        }
    }
    let (ea, ec) = (events(&a), events(&c));
    assert_eq!(ea.len(), ec.len());
    let subjects = |e: &[Value]| {
        e.iter()
            .map(|x| x["subject_id"].as_i64().unwrap())
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(
        subjects(&ea),
        subjects(&ec),
        "the site's subject ids are stable across exports"
    );
    assert_eq!(subjects(&ea).len(), 40);
    let times = |e: &[Value]| {
        e.iter()
            .map(|x| x["time"].as_str().unwrap().to_owned())
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_ne!(
        times(&ea),
        times(&ec),
        "another export id, other date shifts"
    );
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
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("deid_report.json")).unwrap())
            .unwrap();
    let comments = report["identifiers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["class"].as_str().unwrap().starts_with("free text"))
        .unwrap();
    assert_eq!(comments["count"], 1, "{report}");
    assert_eq!(
        ea.iter()
            .filter(|e| e["code"] == "BEDSIDE//OUTCOME//deterioration")
            .count(),
        17
    );

    // 4. A new version recalibrated on the export alone; the site signs it; reload.
    let run = Command::new(repo().join(".venv/bin/python"))
        .args([
            "-m",
            "models.recalibrate",
            "deterioration",
            "--from-version",
            "3.0.0",
            "--to-version",
            "3.0.1",
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
    sign(vec![models.join("deterioration/3.0.1")]);
    gw.signal("HUP");
    assert!(metric_reaches(&gw.url, "bedside_reloads_total 1").await);

    // 5. It scores in the shadow; evaluated on those scores; promoted; reloaded: its cards show.
    // (Service counters start again with a reload: 2.0.0 and 3.0.1 score each call.)
    for i in 0..12 {
        call(
            &gw.url,
            "deteriorating",
            &format!("{PATIENT_PREFIX}after-{i}"),
        )
        .await;
        assert!(metric_reaches(&gw.url, &shadow_line(2 * (i + 1))).await);
    }
    let (ok, printed) = bedside(&["evaluate", "-c", cfg, "deterioration", "3.0.1"], &[]);
    assert!(ok, "{printed}");
    assert!(printed.contains("[met] shadow scores: 12"), "{printed}");
    let (ok, printed) = bedside(
        &[
            "promote",
            "-c",
            cfg,
            "deterioration",
            "3.0.1",
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
    let body = call(&gw.url, "deteriorating", "after-promotion").await;
    let summary = body["cards"][0]["summary"].as_str().unwrap_or_default();
    assert!(summary.contains("v3.0.1"), "{body}");

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
            "bedside_monitoring_alerts{model=\"deterioration\",version=\"3.0.0\",mode=\"active\",metric=\"psi:"
        )),
        "{text}"
    );
}
