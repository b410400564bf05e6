//! Faults with real processes, on loopback, in bounded loops: bedside keeps answering, loses
//! nothing it acknowledged, never fails open.

use crate::common;

use std::time::{Duration, Instant};

use crate::common::fhir_server::{aimed_at, FhirServer};
use crate::common::process::{self, free_port, BedsideProcess};
use crate::common::{bearer, http, patient, Gateway, GatewayOptions, Key, KeyServer};
use bedside::store::Store;
use serde_json::{json, Value};
use sqlx::Connection as _;

fn feedback_item(card: &str) -> Value {
    json!({"feedback": [{"card": card, "outcome": "overridden", "outcomeTimestamp": "2026-11-26T10:00:00Z"}]})
}

#[tokio::test]
async fn a_fhir_server_killed_mid_request_gives_a_prompt_412_not_a_5xx() {
    let fhir = FhirServer::start().await;
    let keys = KeyServer::start().await;
    let gw = Gateway::with_fhir(&keys, vec![fhir.origin()]).await;
    let mut request = aimed_at(patient("deteriorating"), &fhir);
    fhir.load_prefetch(&request).await;
    request.as_object_mut().unwrap().remove("prefetch");
    // Frozen: connections are accepted by the kernel, nothing answers.
    fhir.signal("STOP");
    let call = http()
        .post(gw.service("deterioration"))
        .header("Authorization", bearer("deterioration", Key::Es384))
        .json(&request)
        .send();
    let started = Instant::now();
    let (response, ()) = tokio::join!(call, async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        fhir.signal("KILL");
    });
    let took = started.elapsed();
    let response = response.unwrap();
    assert_eq!(response.status(), 412);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "prefetch_missing", "{body}");
    // The reset, not the deadline, ended both queries (Patient, vitals): transport errors, before the
    // 1250 ms the fetch may take (scheduling slack on a loaded CI machine allowed).
    assert!(took < Duration::from_millis(2000), "{took:?}");
    let metrics = common::metrics(&gw).await;
    assert!(
        metrics.contains("bedside_fhir_errors_total{kind=\"transport\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("bedside_fhir_errors_total{kind=\"timeout\"} 0"),
        "{metrics}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_locked_store_answers_feedback_503_and_writes_nothing_then_recovers() {
    let keys = KeyServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bedside.db");
    common::seed_cards(
        &db,
        &common::test_client_scope(),
        &["locked-card".to_owned()],
    )
    .await;
    let gw = Gateway::start(GatewayOptions {
        jwks_url: Some(keys.jwks_url()),
        db: Some(db.clone()),
        ..Default::default()
    })
    .await;
    // Another process holds the write lock (a backup tool, an operator's sqlite3 shell).
    let mut locker = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut locker)
        .await
        .unwrap();
    let post = |body: Value| {
        http()
            .post(format!("{}/feedback", gw.service("deterioration")))
            .header("Authorization", bearer("deterioration", Key::Rs384))
            .json(&body)
            .send()
    };
    let refused = post(feedback_item("locked-card")).await.unwrap();
    assert_eq!(refused.status(), 503);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "store_unavailable");
    // Hooks do not need the store: still answered while it is locked.
    let card = http()
        .post(gw.service("deterioration"))
        .header("Authorization", bearer("deterioration", Key::Rs384))
        .json(&patient("deteriorating"))
        .send()
        .await
        .unwrap();
    assert_eq!(card.status(), 200);
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    drop(locker);

    let store = Store::open(&db).await.unwrap();
    assert!(store
        .feedback_for_card("locked-card")
        .await
        .unwrap()
        .is_empty());
    let retried = post(feedback_item("locked-card")).await.unwrap();
    assert_eq!(retried.status(), 200, "the EHR's retry succeeds");
    assert_eq!(
        store.feedback_for_card("locked-card").await.unwrap().len(),
        1
    );
    gw.stop().await;
}

#[tokio::test]
async fn every_acknowledged_feedback_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bedside.db");
    // The cards, as the gateway (authentication off: the unnamed client) gave them.
    const CARDS_PER_CLIENT: usize = 4000;
    let ids: Vec<String> = (0..4)
        .flat_map(|c| (0..CARDS_PER_CLIENT).map(move |i| format!("kill9-{c}-{i}")))
        .collect();
    common::seed_cards(&db, &bedside::store::Scope::default(), &ids).await;
    let port = free_port();
    let config = process::config(dir.path(), port, &db, "");
    let mut bedside = BedsideProcess::start(&config, port, "warn");
    let url = format!("{}/cds-services/deterioration/feedback", bedside.url);
    // Four clients post as fast as they can; bedside is killed under them.
    let deadline = Instant::now() + Duration::from_millis(1500);
    let mut clients = Vec::new();
    for c in 0..4 {
        let url = url.clone();
        clients.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let client = http();
            for i in 0..CARDS_PER_CLIENT {
                let card = format!("kill9-{c}-{i}");
                match client.post(&url).json(&feedback_item(&card)).send().await {
                    Ok(r) if r.status() == 200 => acknowledged.push(card),
                    Ok(_) => {}
                    Err(_) => break,
                }
                if Instant::now() > deadline + Duration::from_secs(5) {
                    break;
                }
            }
            acknowledged
        }));
    }
    tokio::time::sleep_until(deadline.into()).await;
    bedside.kill();
    let mut acknowledged = Vec::new();
    for c in clients {
        acknowledged.extend(c.await.unwrap());
    }
    assert!(
        acknowledged.len() > 20,
        "only {} acknowledged",
        acknowledged.len()
    );

    // Restart on the same database: every 200 is there.
    let port = free_port();
    let config = process::config(dir.path(), port, &db, "");
    let restarted = BedsideProcess::start(&config, port, "warn");
    let store = Store::open(&db).await.unwrap();
    let mut missing = Vec::new();
    for card in &acknowledged {
        if store.feedback_for_card(card).await.unwrap().is_empty() {
            missing.push(card.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged feedback lost: {missing:?}",
        missing.len(),
        acknowledged.len()
    );
    println!(
        "{} acknowledged feedback items, all present after kill -9",
        acknowledged.len()
    );
    drop(restarted);
}

/// The summary of the card the gateway at `url` shows for the deteriorating demo patient.
async fn deterioration_card_summary(url: &str) -> String {
    let r = http()
        .post(format!("{url}/cds-services/deterioration"))
        .json(&patient("deteriorating"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    body["cards"][0]["summary"].as_str().unwrap().to_owned()
}

async fn metric_reaches(url: &str, line: &str) -> bool {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        if let Ok(r) = http().get(format!("{url}/metrics")).send().await {
            if r.text().await.unwrap_or_default().contains(line) {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

#[tokio::test]
async fn a_corrupted_model_file_is_refused_on_reload_and_the_previous_one_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let models = common::copy_models(dir.path());
    let port = free_port();
    let config =
        process::config_with_models(dir.path(), port, &dir.path().join("b.db"), &models, "");
    let bedside = BedsideProcess::start(&config, port, "info");
    let card = || deterioration_card_summary(&bedside.url);
    let before = card().await;

    let model = models.join("deterioration/4.0.1/model.pt");
    let good = std::fs::read(&model).unwrap();
    let mut bad = good.clone();
    let middle = bad.len() / 2;
    bad[middle..middle + 64].fill(0);
    std::fs::write(&model, &bad).unwrap();
    bedside.signal("HUP");
    assert!(metric_reaches(&bedside.url, "bedside_reload_failures_total 1").await);
    assert_eq!(card().await, before, "the previous model still answers");
    let log = std::fs::read_to_string(&bedside.log).unwrap();
    assert!(
        log.contains("reload refused") && log.contains("sha256"),
        "{log}"
    );

    std::fs::write(&model, &good).unwrap();
    bedside.signal("HUP");
    assert!(metric_reaches(&bedside.url, "bedside_reloads_total 1").await);
    assert_eq!(card().await, before);
}

#[tokio::test]
async fn a_full_database_answers_feedback_503_and_keeps_every_acknowledged_item() {
    // `[storage] max_size_mb` caps the SQLite file: past it SQLite fails writes with
    // SQLITE_FULL, the error a full disk gives, without filling this machine's disk.
    let keys = KeyServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bedside.db");
    // The cards feedback is about, as the gateway recorded them when it gave them to this
    // client (feedback is taken only on the caller's own cards).
    let ids: Vec<String> = (0..60)
        .flat_map(|i| (0..2).map(move |k| format!("card-{i}-{k}")))
        .collect();
    common::seed_cards(&db, &common::test_client_scope(), &ids).await;
    let gw = Gateway::start(GatewayOptions {
        jwks_url: Some(keys.jwks_url()),
        db: Some(db.clone()),
        storage_toml: "max_size_mb = 1\n".into(),
        ..Default::default()
    })
    .await;
    let comment = "x".repeat(60_000); // stored verbatim in raw_json: ~60 KB per item
    let (mut acknowledged, mut full) = (0usize, None);
    for i in 0..60 {
        let items: Vec<Value> = (0..2)
            .map(|k| {
                json!({"card": format!("card-{i}-{k}"), "outcome": "overridden",
                       "overrideReason": {"userComment": comment},
                       "outcomeTimestamp": "2026-11-26T12:00:00Z"})
            })
            .collect();
        let resp = http()
            .post(format!("{}/feedback", gw.service("deterioration")))
            .header("Authorization", bearer("deterioration", Key::Rs384))
            .json(&json!({"feedback": items}))
            .send()
            .await
            .unwrap();
        match resp.status().as_u16() {
            200 => acknowledged += 2,
            503 => {
                full = Some(resp.json::<Value>().await.unwrap());
                break;
            }
            other => panic!("feedback {i}: status {other}"),
        }
    }
    let full = full.expect("the 1 MB cap was never reached");
    assert_eq!(full["error"], "store_unavailable", "{full}");
    assert!(acknowledged >= 4, "only {acknowledged} items fitted");
    gw.stop().await;
    // Every acknowledged item is there; the refused batch left nothing behind.
    let store = Store::open(&db).await.unwrap();
    assert_eq!(store.feedback_count().await.unwrap(), acknowledged as i64);
    store.close().await;
}

/// Runs the `bedside` binary with `args`; (success, stdout + stderr).
fn bedside_cli(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bedside"))
        .args(args)
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

#[tokio::test]
async fn with_trusted_keys_only_signed_models_load_and_a_changed_manifest_is_refused_on_reload() {
    let dir = tempfile::tempdir().unwrap();
    let models = common::copy_models(dir.path());
    // A site key: private part to a file (offline), public part printed for the configuration.
    let key = dir.path().join("site.pk8");
    let (ok, printed) = bedside_cli(&[
        "keygen".as_ref(),
        "--out".as_ref(),
        key.as_os_str(),
        "--key-id".as_ref(),
        "site-2026".as_ref(),
    ]);
    assert!(ok, "{printed}");
    let trusted = &printed[printed.find("[[inference.trusted_keys]]").unwrap()..];
    // keygen never overwrites a key.
    let (again, _) = bedside_cli(&["keygen".as_ref(), "--out".as_ref(), key.as_os_str()]);
    assert!(!again);
    let versions: Vec<std::path::PathBuf> = std::fs::read_dir(&models)
        .unwrap()
        .flatten()
        .flat_map(|m| std::fs::read_dir(m.path()).unwrap().flatten())
        .map(|v| v.path())
        .filter(|v| v.join("manifest.toml").is_file())
        .collect();
    let foundation: Vec<std::path::PathBuf> = std::fs::read_dir(models.join("foundation"))
        .unwrap()
        .flatten()
        .map(|v| v.path())
        .filter(|v| v.join("foundation.toml").is_file())
        .collect();
    assert!(!foundation.is_empty());
    let port = free_port();
    // `bedside check` wants a trusted client; the process below runs with auth off.
    let extra = format!(
        "{trusted}\n[[clients]]\niss = 'https://ehr.example'\njwks_urls = ['https://ehr.example/jwks']\n"
    );
    let config =
        process::config_with_models(dir.path(), port, &dir.path().join("b.db"), &models, &extra);
    // Unsigned models are refused with a reason naming the model.
    let check = |config: &std::path::Path| {
        bedside_cli(&["check".as_ref(), "--config".as_ref(), config.as_os_str()])
    };
    let (ok, printed) = check(&config);
    assert!(
        !ok && printed.contains("signature refused") && printed.contains("unsigned"),
        "{printed}"
    );
    // Signed with the site key: they load.
    let mut sign: Vec<&std::ffi::OsStr> = vec![
        "sign".as_ref(),
        "--key".as_ref(),
        key.as_os_str(),
        "--key-id".as_ref(),
        "site-2026".as_ref(),
    ];
    sign.extend(versions.iter().map(|v| v.as_os_str()));
    let (ok, printed) = bedside_cli(&sign);
    assert!(ok, "{printed}");
    // The task models are signed, the foundation model is not: it is refused too.
    let (ok, printed) = check(&config);
    assert!(
        !ok && printed.contains("foundation") && printed.contains("unsigned"),
        "{printed}"
    );
    let mut sign_foundation = sign[..5].to_vec();
    sign_foundation.extend(foundation.iter().map(|v| v.as_os_str()));
    let (ok, printed) = bedside_cli(&sign_foundation);
    assert!(ok, "{printed}");
    let (ok, printed) = check(&config);
    assert!(ok, "{printed}");

    let bedside = BedsideProcess::start(&config, port, "info");
    let card = || deterioration_card_summary(&bedside.url);
    let before = card().await;
    // The active model's manifest edited after signing (a threshold, a path…): refused on
    // reload, the running set keeps serving.
    let manifest = models.join("deterioration/4.0.1/manifest.toml");
    let good = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, format!("{good}\n# edited after signing\n")).unwrap();
    bedside.signal("HUP");
    assert!(metric_reaches(&bedside.url, "bedside_reload_failures_total 1").await);
    assert_eq!(card().await, before, "the previous model still answers");
    let log = std::fs::read_to_string(&bedside.log).unwrap();
    assert!(
        log.contains("reload refused") && log.contains("signature does not match"),
        "{log}"
    );
    std::fs::write(&manifest, &good).unwrap();
    bedside.signal("HUP");
    assert!(metric_reaches(&bedside.url, "bedside_reloads_total 1").await);
    assert_eq!(card().await, before);

    // The foundation model is reloaded with the task models and checked the same way: its
    // manifest edited after signing refuses the whole reload.
    let fm_manifest = foundation[0].join("foundation.toml");
    let fm_good = std::fs::read_to_string(&fm_manifest).unwrap();
    std::fs::write(&fm_manifest, format!("{fm_good}\n# edited after signing\n")).unwrap();
    bedside.signal("HUP");
    assert!(metric_reaches(&bedside.url, "bedside_reload_failures_total 2").await);
    let log = std::fs::read_to_string(&bedside.log).unwrap();
    assert!(
        log.contains("model foundation") && log.matches("signature does not match").count() >= 2,
        "{log}"
    );
    assert_eq!(card().await, before, "the previous set still answers");
    std::fs::write(&fm_manifest, &fm_good).unwrap();
    bedside.signal("HUP");
    assert!(metric_reaches(&bedside.url, "bedside_reloads_total 2").await);
}

#[tokio::test]
async fn the_retention_purge_runs_on_schedule_and_removes_only_expired_records() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("b.db");
    let store = Store::open(&db).await.unwrap();
    let now = chrono::Utc::now();
    let old = common::prediction_record("card-old", now - chrono::Duration::days(400));
    let recent = common::prediction_record("card-recent", now - chrono::Duration::days(10));
    store.record_prediction(&old).await.unwrap();
    store.record_prediction(&recent).await.unwrap();
    store.close().await;
    let port = free_port();
    let config = process::config(
        dir.path(),
        port,
        &db,
        "[retention]\npredictions = \"365days\"\nfeedback = \"2years\"\n",
    );
    let bedside = BedsideProcess::start(&config, port, "info");
    // The first purge runs at start-up.
    assert!(
        metric_reaches(
            &bedside.url,
            "bedside_retention_purged_total{kind=\"predictions\"} 1"
        )
        .await
    );
    let store = Store::open(&db).await.unwrap();
    assert!(store.prediction("card-old").await.unwrap().is_none());
    assert!(store.prediction("card-recent").await.unwrap().is_some());
    store.close().await;
    drop(bedside);
    // A period under a day is refused: it would purge records still in use.
    let short = process::config(dir.path(), port, &db, "[retention]\naudit = \"1h\"\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bedside"))
        .args(["check", "--config"])
        .arg(&short)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("retention.audit"));
}
