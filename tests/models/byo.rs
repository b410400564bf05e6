//! "Bring your own model" as the README walks it: `models/byo_example.py` fits a model of the
//! user's own on a small synthetic cohort and writes a complete models folder with it in shadow
//! (`deterioration 9.0.0-byo`); `bedside check` loads it (sha256, warm-up); `bedside demo
//! --models-dir` scores it beside the active version on every patient-view; the feedback report
//! counts its predictions and its agreement with the active version.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::demo::Demo;
use crate::common::repo;

const VERSION: &str = "9.0.0-byo";
const PATIENTS: [&str; 3] = ["demo-deteriorating", "demo-early-warning", "demo-stable"];

fn byo_example(out: &Path) -> String {
    let repo = repo();
    let run = Command::new(repo.join(".venv/bin/python"))
        .args(["-m", "models.byo_example", "--out"])
        .arg(out)
        .current_dir(&repo)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "models.byo_example failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    stdout
}

fn shadow_row(report: &Value) -> Option<&Value> {
    report["services"].as_array()?.iter().find(|r| {
        r["service_id"] == "deterioration" && r["model_version"] == VERSION && r["mode"] == "shadow"
    })
}

#[tokio::test]
async fn a_model_of_your_own_runs_in_shadow_and_shows_its_agreement_in_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");

    // 1. Fit and export: a complete models folder, the user's model in shadow.
    let printed = byo_example(&models);
    assert!(printed.contains("TEST AUROC"), "{printed}");
    let version_dir = models.join("deterioration").join(VERSION);
    for f in ["model.pt", "manifest.toml", "MODEL_CARD.md"] {
        assert!(version_dir.join(f).is_file(), "{f} missing: {printed}");
    }
    let manifest: toml::Table =
        toml::from_str(&std::fs::read_to_string(version_dir.join("manifest.toml")).unwrap())
            .unwrap();
    assert_eq!(manifest["status"].as_str(), Some("shadow"));
    assert_eq!(manifest["features"].as_str(), Some("../features.toml"));
    assert!(manifest["training_data"]
        .as_str()
        .unwrap()
        .contains("synthetic"));
    let auroc = manifest["metrics"]["auroc"].as_float().unwrap();
    assert!((0.5..=1.0).contains(&auroc), "held-out AUROC {auroc}");
    assert!(std::fs::read_to_string(version_dir.join("MODEL_CARD.md"))
        .unwrap()
        .contains("Not for clinical use"));
    // Only the shipped active versions come with it; no retired or other shadow version.
    assert!(models.join("deterioration/4.0.1/manifest.toml").is_file());
    assert!(!models.join("deterioration/2.0.0").exists());
    assert!(models.join("sepsis/features.toml").is_file());
    assert!(models.join("aki/features.toml").is_file());

    // 2. `bedside check` loads it: sha256 and warm-up.
    let config = dir.path().join("bedside.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\npublic_url = \"https://bedside.example\"\n\
             models_dir = '{}'\nservices_dir = '{}'\n[storage]\npath = '{}'\n\
             [[clients]]\niss = \"https://ehr.example/cds-client\"\n\
             jwks_urls = [\"https://ehr.example/.well-known/jwks.json\"]\n",
            models.display(),
            repo().join("cds-services").display(),
            dir.path().join("check.db").display(),
        ),
    )
    .unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_bedside"))
        .args(["check", "--config"])
        .arg(&config)
        .current_dir(repo())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("deterioration 9.0.0-byo (Shadow)")
                && l.contains("sha256 ok, warm-up ok")),
        "{stdout}"
    );
    assert!(stdout.contains("configuration ok"), "{stdout}");

    // 3. The demo with these models: patient-view through the demo EHR.
    let demo = Demo::start(&["--models-dir".into(), models.clone().into_os_string()]);
    let http = reqwest::Client::new();
    for patient in PATIENTS {
        let answer = demo.fire(patient, "patient-view").await;
        let deterioration = answer["calls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["service"] == "deterioration")
            .unwrap_or_else(|| panic!("{answer}"));
        assert_eq!(deterioration["status"], 200, "{answer}");
        // A shadow version never shows a card.
        assert!(!answer.to_string().contains(VERSION), "{answer}");
    }

    // 4. The report: shadow scores are recorded after each answer, so poll.
    let until = Instant::now() + Duration::from_secs(20);
    let report = loop {
        let report = demo.report().await;
        let done = shadow_row(&report)
            .is_some_and(|r| r["predictions"].as_u64() == Some(PATIENTS.len() as u64));
        if done || Instant::now() > until {
            break report;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let row = shadow_row(&report).unwrap_or_else(|| panic!("no {VERSION} shadow row: {report}"));
    assert_eq!(row["predictions"], PATIENTS.len(), "{row}");
    assert_eq!(row["shadow"], PATIENTS.len(), "{row}");
    assert_eq!(row["cards_shown"], 0, "{row}");
    let agreement = report["shadow_agreement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["model"] == "deterioration" && a["shadow_version"] == VERSION)
        .unwrap_or_else(|| panic!("no agreement for {VERSION}: {report}"));
    assert_eq!(agreement["active_version"], "4.0.1", "{agreement}");
    let pairs = agreement["pairs"].as_i64().unwrap();
    let agreed = agreement["agreed"].as_i64().unwrap();
    let rate = agreement["agreement"].as_f64().unwrap();
    assert!((1..=PATIENTS.len() as i64).contains(&pairs), "{agreement}");
    assert!((0..=pairs).contains(&agreed), "{agreement}");
    assert!((0.0..=1.0).contains(&rate), "{agreement}");
    assert!(
        (rate - agreed as f64 / pairs as f64).abs() < 1e-12,
        "{agreement}"
    );

    // The demo EHR's HTML report says the same in words.
    let html = http
        .get(format!("{}/report", demo.ehr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("v9.0.0-byo"), "{html}");
}
