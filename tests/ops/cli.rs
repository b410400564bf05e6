//! The real binary: start-up checks, configuration errors, and the README's demo flow.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};

use crate::common::{config_text, copy_models, repo, GatewayOptions};

fn bedside(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bedside"))
        .args(args)
        .current_dir(repo())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn write_config(dir: &Path, opts: &GatewayOptions) -> String {
    let path = dir.join("bedside.toml");
    std::fs::write(&path, config_text(opts, &dir.join("db.sqlite"))).unwrap();
    path.display().to_string()
}

fn trusted() -> GatewayOptions {
    GatewayOptions {
        jwks_url: Some("https://ehr.test/jwks.json".into()),
        ..Default::default()
    }
}

#[test]
fn check_accepts_the_shipped_services_and_models() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &trusted());
    let out = bedside(&["check", "--config", &config]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("model   deterioration 4.0.1"), "{stdout}");
    assert!(stdout.contains("sha256 ok"), "{stdout}");
    assert!(stdout.contains("configuration ok"), "{stdout}");
}

#[test]
fn invalid_configuration_names_each_key_and_exits_nonzero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "listen = 'localhost'\npublic_url = 'not a url'\n[limits]\nmax_body_bytes = 0\n[inference]\ndevice = 'tpu'\n",
    )
    .unwrap();
    let out = bedside(&["serve", "--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for key in [
        "listen:",
        "public_url:",
        "limits.max_body_bytes:",
        "inference.device:",
    ] {
        assert!(stderr.contains(key), "missing {key} in: {stderr}");
    }

    std::fs::write(
        &path,
        "listen = '127.0.0.1:0'\npublic_url = 'http://x'\n[storage]\npath = 3\n",
    )
    .unwrap();
    let out = bedside(&["check", "--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("storage.path"));

    let out = bedside(&["serve", "--config", "/no/such/file.toml"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[test]
fn env_overrides_are_validated_like_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &trusted());
    let out = Command::new(env!("CARGO_BIN_EXE_bedside"))
        .args(["check", "--config", &config])
        .env("BEDSIDE_LIMITS__MAX_BODY_BYTES", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("limits.max_body_bytes"));
}

#[test]
fn serving_without_trusted_clients_needs_the_explicit_insecure_flag() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &GatewayOptions::default());
    let out = bedside(&["serve", "--config", &config]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--insecure-no-auth"));
}

#[test]
fn a_model_whose_sha256_does_not_match_its_manifest_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let models = copy_models(dir.path());
    let pt = models.join("deterioration/2.0.0/model.pt");
    let mut bytes = std::fs::read(&pt).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&pt, bytes).unwrap();
    let config = write_config(
        dir.path(),
        &GatewayOptions {
            models_dir: models,
            ..trusted()
        },
    );
    for command in ["check", "serve"] {
        let out = bedside(&[command, "--config", &config]);
        assert!(
            !out.status.success(),
            "{command} started with a tampered model"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("sha256 mismatch"), "{command}: {stderr}");
        assert!(
            stderr.contains("deterioration 2.0.0"),
            "{command}: {stderr}"
        );
    }
}

#[test]
fn a_manifest_that_disagrees_with_the_model_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let models = copy_models(dir.path());
    let manifest = models.join("deterioration/2.0.0/manifest.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replace("shape = [48, 12]", "shape = [24, 12]"),
    )
    .unwrap();
    let config = write_config(
        dir.path(),
        &GatewayOptions {
            models_dir: models,
            ..trusted()
        },
    );
    let out = bedside(&["check", "--config", &config]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("input.shape"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn the_demo_prints_a_curl_that_returns_a_model_card() {
    let demo = crate::common::demo::Demo::start(&[]);
    let printed = &demo.printed;
    let ehr_listen = demo.ehr.trim_start_matches("http://");
    let curl = printed
        .lines()
        .find(|l| l.trim_start().starts_with("curl "))
        .map(str::to_owned);
    // It says where to point a browser, and that authentication is on.
    assert!(
        printed.contains(&format!("http://{ehr_listen}/")) && printed.contains("authentication ON"),
        "{printed}"
    );
    let curl = curl.expect("the demo printed a curl command");
    let url = curl
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_owned();
    assert!(
        url.starts_with(&format!("http://{ehr_listen}/api/patients/"))
            && url.ends_with("/hooks/patient-view"),
        "{url}"
    );
    // The demo EHR calls bedside with a signed JWT; bedside itself refuses an unsigned call.
    let http = reqwest::Client::new();
    let resp = http.post(&url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let json: serde_json::Value = resp.json().await.unwrap();
    let call = json["calls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["service"] == "deterioration")
        .unwrap_or_else(|| panic!("{json}"));
    assert_eq!(call["status"], 200, "{json}");
    let card = &call["cards"][0];
    assert!(
        card["summary"]
            .as_str()
            .unwrap_or_default()
            .contains("deterioration v4.0.1"),
        "{json}"
    );
    assert!(
        ["warning", "critical"].contains(&card["indicator"].as_str().unwrap()),
        "{json}"
    );
    let unsigned = http
        .post(format!("{}/cds-services/deterioration", demo.gateway))
        .json(&serde_json::json!({"hook": "patient-view", "hookInstance": "x", "context": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status().as_u16(), 401);

    // The governance commands run on the demo's own files, as it printed them; its admin token
    // may promote (an unknown version: 404, not 403).
    let config = demo.data_dir.join("bedside.toml");
    let secret = demo.data_dir.join("export-secret");
    assert!(printed.contains(&format!("bedside export -c {}", config.display())));
    let out_dir = demo.data_dir.join("export");
    let out = bedside(&[
        "export",
        "-c",
        config.to_str().unwrap(),
        "--secret-file",
        secret.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--export-id",
        "demo-1",
        "--k",
        "1",
    ]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && said.contains("exported 1 subjects"),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = bedside(&["models", "-c", config.to_str().unwrap()]);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("deterioration"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let promote = http
        .post(format!(
            "{}/admin/models/deterioration/9.9.9/promote",
            demo.gateway
        ))
        .bearer_auth(&demo.admin_token)
        .json(&serde_json::json!({"reason": "demo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(promote.status().as_u16(), 404);
}

#[test]
fn the_documented_example_configuration_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bedside"))
        .args([
            "check",
            "--config",
            "tests/fixtures/config/bedside.example.toml",
        ])
        .current_dir(repo())
        .env("BEDSIDE_STORAGE__PATH", dir.path().join("db.sqlite"))
        .env("BEDSIDE_INFERENCE__DEVICE", "cpu")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `tch::Cuda::is_available()` is only true if `libtorch_cuda.so` is loaded; the linker drops
/// it under `--as-needed` unless build.rs forces it. Guard that the binary keeps it.
#[test]
fn the_binary_keeps_libtorch_cuda_linked_when_libtorch_has_it() {
    let ldd = Command::new("ldd")
        .arg(env!("CARGO_BIN_EXE_bedside"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&ldd.stdout);
    let torch_dir = text
        .lines()
        .find(|l| l.contains("libtorch_cpu.so"))
        .and_then(|l| l.split("=>").nth(1))
        .and_then(|p| p.split_whitespace().next())
        .map(|p| Path::new(p).parent().unwrap().to_path_buf())
        .expect("bedside links libtorch_cpu.so and ldd resolves it (rpath)");
    if torch_dir.join("libtorch_cuda.so").exists() {
        let readelf = Command::new("readelf")
            .args(["-d", env!("CARGO_BIN_EXE_bedside")])
            .output()
            .unwrap();
        let dynamic = String::from_utf8_lossy(&readelf.stdout);
        assert!(
            dynamic.contains("[libtorch_cuda.so]"),
            "libtorch_cuda.so is not NEEDED:\n{dynamic}"
        );
    }
    assert!(!text.contains("not found"), "{text}");
}

#[tokio::test]
async fn report_prints_what_the_store_recorded() {
    let keys = common::KeyServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db.sqlite");
    let gw = common::Gateway::start(GatewayOptions {
        jwks_url: Some(keys.jwks_url()),
        db: Some(db.clone()),
        ..Default::default()
    })
    .await;
    let resp = common::http()
        .post(gw.service("deterioration"))
        .header(
            "Authorization",
            common::bearer("deterioration", common::Key::Rs384),
        )
        .json(&common::patient("deteriorating"))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = resp.json().await.unwrap();
    let uuid = body["cards"][0]["uuid"].as_str().unwrap().to_owned();
    let feedback = serde_json::json!({"feedback": [{"card": uuid, "outcome": "accepted",
        "outcomeTimestamp": chrono::Utc::now().to_rfc3339()}]});
    let resp = common::http()
        .post(format!("{}/feedback", gw.service("deterioration")))
        .header(
            "Authorization",
            common::bearer("deterioration", common::Key::Rs384),
        )
        .json(&feedback)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    gw.stop().await;
    let config = write_config(dir.path(), &trusted());
    let out = bedside(&["report", "--config", &config, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = report["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["service_id"] == "deterioration" && r["mode"] == "active")
        .unwrap();
    assert_eq!(
        (row["shown"].as_i64(), row["accepted"].as_i64()),
        (Some(1), Some(1))
    );
    let table = bedside(&["report", "--config", &config]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("deterioration ") && l.contains("100%")),
        "{text}"
    );
}

/// `bedside outcomes`, `evaluate`, `promote` and `models` on the store a gateway filled: the
/// outcome feed holds pseudonyms only, the evaluation is stored and printed, a promotion needs
/// a reason and a passing evaluation, and is listed with who made it.
#[tokio::test]
async fn governance_commands_evaluate_promote_and_keep_patient_ids_out() {
    let keys = common::KeyServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db.sqlite");
    let options = |jwks: Option<String>| GatewayOptions {
        jwks_url: jwks,
        db: Some(db.clone()),
        extra_toml: "[governance]\nmin_shadow_scores = 3\n".into(),
        ..Default::default()
    };
    let gw = common::Gateway::start(options(Some(keys.jwks_url()))).await;
    for i in 0..3 {
        let mut request = common::patient("deteriorating");
        request["context"]["patientId"] = format!("cli-patient-{i}").into();
        let resp = common::http()
            .post(gw.service("deterioration"))
            .header(
                "Authorization",
                common::bearer("deterioration", common::Key::Rs384),
            )
            .json(&request)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        // Two shadow versions (2.0.0 and the foundation head 5.0.0) score after each answer:
        // one call at a time into the shadow lane, so that none is skipped.
        let line = format!(
            "bedside_service_shadow_total{{service=\"deterioration\"}} {}",
            2 * (i + 1)
        );
        assert!(common::metrics_showing(&gw, &line).await.contains(&line));
    }
    gw.stop().await;
    let path = dir.path().join("bedside.toml");
    std::fs::write(
        &path,
        config_text(&options(Some("https://ehr.test/jwks.json".into())), &db),
    )
    .unwrap();
    let config = path.display().to_string();

    let now = chrono::Utc::now();
    let outcomes = dir.path().join("outcomes.ndjson");
    std::fs::write(
        &outcomes,
        format!(
            "{}\n{}\n",
            serde_json::json!({"patient": "Patient/cli-patient-0", "fhirServer": "", "event": "deterioration", "at": now.to_rfc3339()}),
            serde_json::json!({"patient": "cli-patient-1", "fhirServer": "", "event": "deterioration", "at": now.to_rfc3339()}),
        ),
    )
    .unwrap();
    let out = bedside(&[
        "outcomes",
        "--config",
        &config,
        "--file",
        outcomes.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("deterioration: 2 read, 2 new"), "{text}");
    let stored = std::fs::read(&db).unwrap();
    assert!(
        !stored
            .windows(b"cli-patient".len())
            .any(|w| w == b"cli-patient"),
        "the store holds pseudonyms, never the patient ids"
    );
    // A feed cannot be complete in the future.
    let out = bedside(&[
        "outcomes",
        "--config",
        &config,
        "--file",
        outcomes.to_str().unwrap(),
        "--through",
        "2999-01-01T00:00:00Z",
    ]);
    assert!(!out.status.success());

    let out = bedside(&[
        "evaluate",
        "--config",
        &config,
        "deterioration",
        "2.0.0",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stored: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let e = &stored["evaluation"];
    assert_eq!(e["shadow_scores"], 3, "{e}");
    assert_eq!(e["comparison"]["pairs"], 3, "{e}");
    // Outcomes are known only through now: no 12 h horizon has ended, nothing is labelled.
    assert_eq!(e["outcomes"]["labelled"], 0, "{e}");
    let text = bedside(&["evaluate", "--config", &config, "deterioration", "2.0.0"]);
    let summary = String::from_utf8_lossy(&text.stdout);
    assert!(summary.contains("[met] shadow scores: 3"), "{summary}");
    assert!(summary.contains("passed: may be promoted"), "{summary}");

    let out = bedside(&[
        "promote",
        "--config",
        &config,
        "deterioration",
        "2.0.0",
        "--by",
        "dr-cli",
        "--reason",
        " ",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("a reason is required"));
    let out = bedside(&[
        "promote",
        "--config",
        &config,
        "deterioration",
        "2.0.0",
        "--by",
        "dr-cli",
        "--reason",
        "shadow evidence on our wards",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("deterioration 2.0.0 shadow -> active (by dr-cli)"),
        "{text}"
    );
    assert!(
        text.contains("deterioration 4.0.1 active -> shadow (by dr-cli)"),
        "{text}"
    );
    let out = bedside(&["models", "--config", &config]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("deterioration  2.0.0    active")),
        "{text}"
    );
    // The same version again: refused, it is already active.
    let out = bedside(&[
        "promote",
        "--config",
        &config,
        "deterioration",
        "2.0.0",
        "--by",
        "dr-cli",
        "--reason",
        "again",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("already active"));
}

/// `--log-format json`: every log line of a serving gateway is one JSON object (level,
/// message and fields, the call's span with its service and hookInstance), for a log pipeline.
#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::process::free_port();
    let config = common::process::config_with_models(
        dir.path(),
        port,
        &dir.path().join("db.sqlite"),
        &repo().join("models"),
        "",
    );
    let log = dir.path().join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_bedside"))
        .args([
            "serve",
            "--insecure-no-auth",
            "--log-format",
            "json",
            "--config",
        ])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let started = std::time::Instant::now();
    while common::http()
        .get(format!("{url}/health/ready"))
        .send()
        .await
        .is_err()
    {
        assert!(started.elapsed() < std::time::Duration::from_secs(60));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let r = common::http()
        .post(format!("{url}/cds-services/deterioration"))
        .json(&common::patient("sparse"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines
        .iter()
        .all(|l| l["level"].is_string() && l["fields"].is_object()));
    // The abstention is logged inside the call's span, with its ids.
    let abstained = lines
        .iter()
        .find(|l| l["fields"]["message"] == "abstained")
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(abstained["span"]["service"], "deterioration", "{abstained}");
    assert!(
        abstained["span"]["hook_instance"].is_string(),
        "{abstained}"
    );
}
