//! Remote models over the Open Inference Protocol: against a real KServe-v2 speaker (another
//! bedside serving the model locally), and wiremock for the faults a real server won't show.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::{bearer, http, patient, Gateway, GatewayOptions, Key, KeyServer};
use bedside::server::AuthMode;
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// A models folder whose deterioration 4.0.1 (the active version) is served by `url` (no
/// model.pt here).
fn remote_models(dir: &Path, url: &str, timeout: &str) -> PathBuf {
    // Every shipped model (the other services need theirs); deterioration 4.0.1 served remotely,
    // its file only on the remote side.
    served_remotely(common::copy_models(dir), "4.0.1", url, timeout)
}

/// `models` with deterioration `version` served by `url` instead of its own file.
fn served_remotely(models: PathBuf, version: &str, url: &str, timeout: &str) -> PathBuf {
    common::serve_remotely(
        models,
        version,
        &format!("url = '{url}'\ntimeout = '{timeout}'\n"),
    )
}

async fn hook(gw: &Gateway, name: &str) -> (u16, Value, Duration) {
    let started = Instant::now();
    let resp = http()
        .post(gw.service("deterioration"))
        .header("Authorization", bearer("deterioration", Key::Rs384))
        .json(&patient(name))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap(), started.elapsed())
}

fn metadata() -> Value {
    json!({"name": "deterioration", "versions": ["4.0.1"], "platform": "pytorch_torchscript",
           "inputs": [{"name": "INPUT__0", "datatype": "FP32", "shape": [-1, 48, 16]}],
           "outputs": [{"name": "OUTPUT__0", "datatype": "FP32", "shape": [-1, 1]}]})
}

#[tokio::test]
async fn a_model_served_by_another_bedside_gives_the_same_card() {
    let keys = KeyServer::start().await;
    let upstream = Gateway::start(GatewayOptions {
        auth: AuthMode::InsecureDisabled,
        ..Default::default()
    })
    .await;
    let local = Gateway::with_keys(&keys).await;
    let dir = tempfile::tempdir().unwrap();
    let remote = Gateway::start(GatewayOptions {
        jwks_url: Some(keys.jwks_url()),
        models_dir: remote_models(dir.path(), &upstream.url, "2s"),
        ..Default::default()
    })
    .await;
    let request = patient("deteriorating");
    let call = |gw: &Gateway| {
        http()
            .post(gw.service("deterioration"))
            .header("Authorization", bearer("deterioration", Key::Es384))
            .json(&request)
            .send()
    };
    let via_remote: Value = call(&remote).await.unwrap().json().await.unwrap();
    let via_local: Value = call(&local).await.unwrap().json().await.unwrap();
    assert_eq!(
        via_remote["cards"][0]["summary"], via_local["cards"][0]["summary"],
        "{via_remote}"
    );
    // The same risk line; the drivers may be worded from another attribution (a remote model
    // is explained by occlusion, the local one by its own attribute() pass).
    let first_line = |card: &Value| {
        common::detail_without_window_bounds(card)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(
        first_line(&via_remote["cards"][0]),
        first_line(&via_local["cards"][0])
    );
    // The upstream really did the forward passes: the risk, then the occlusion batch.
    let metrics = common::metrics(&upstream).await;
    let samples: u64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "bedside_inference_samples_total{model=\"deterioration\",version=\"4.0.1\"} ",
            )
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(samples > 1, "{metrics}");
    for gw in [upstream, local, remote] {
        gw.stop().await;
    }
}

#[tokio::test]
async fn remote_faults_give_an_answer_without_the_card_within_the_budget() {
    let keys = KeyServer::start().await;
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/models/deterioration"))
        .respond_with(ResponseTemplate::new(200).set_body_json(metadata()))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(GatewayOptions {
        jwks_url: Some(keys.jwks_url()),
        models_dir: remote_models(dir.path(), &server.uri(), "300ms"),
        ..Default::default()
    })
    .await;
    let faults = [
        ResponseTemplate::new(200)
            .set_delay(Duration::from_secs(3))
            .set_body_json(json!({})),
        ResponseTemplate::new(503).set_body_string("upstream overloaded"),
        ResponseTemplate::new(200)
            .set_body_json(json!({"model_name": "deterioration", "outputs": [
            {"name": "OUTPUT__0", "shape": [7, 1], "datatype": "FP32", "data": [0.5, 0.5]}]})),
        ResponseTemplate::new(200).set_body_string("<html>not json</html>"),
    ];
    for (i, fault) in faults.into_iter().enumerate() {
        let infer = Mock::given(method("POST"))
            .and(path("/v2/models/deterioration/infer"))
            .respond_with(fault)
            .mount_as_scoped(&server)
            .await;
        let (status, body, took) = hook(&gw, "deteriorating").await;
        assert_eq!(status, 200, "fault {i}: {body}");
        assert_eq!(body, json!({"cards": []}), "fault {i}");
        assert!(
            took < Duration::from_millis(1500),
            "fault {i} took {took:?}"
        );
        drop(infer);
    }
    let metrics = common::metrics(&gw).await;
    assert!(
        metrics.contains(
            "bedside_inference_failed_total{model=\"deterioration\",version=\"4.0.1\"} 4"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("bedside_service_no_score_total{service=\"deterioration\"} 4"),
        "{metrics}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_remote_whose_inputs_differ_from_the_manifest_stops_start_up() {
    let server = MockServer::start().await;
    let mut meta = metadata();
    meta["inputs"][0]["shape"] = json!([-1, 24, 12]);
    Mock::given(method("GET"))
        .and(path("/v2/models/deterioration"))
        .respond_with(ResponseTemplate::new(200).set_body_json(meta))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let models = remote_models(dir.path(), &server.uri(), "300ms");
    let err = common::startup_error(models, dir.path()).await;
    assert!(
        err.contains("remote backend") && err.contains("do not match"),
        "{err}"
    );
}

/// A models folder whose shadow deterioration 2.0.0 is served by `url`.
fn remote_shadow(dir: &Path, url: &str) -> PathBuf {
    let models = common::copy_models(dir);
    let manifest =
        std::fs::read_to_string(models.join("deterioration/2.0.0/manifest.toml")).unwrap();
    assert!(manifest.contains("status = \"shadow\""), "{manifest}");
    // The only shadow version: the lane's arithmetic below counts its scores alone.
    std::fs::remove_dir_all(models.join("deterioration/5.0.0")).unwrap();
    served_remotely(models, "2.0.0", url, "5s")
}

#[tokio::test]
async fn a_slow_shadow_version_neither_delays_answers_nor_piles_up() {
    let keys = KeyServer::start().await;
    let server = MockServer::start().await;
    let mut meta = metadata();
    meta["versions"] = json!(["2.0.0"]);
    meta["inputs"][0]["shape"] = json!([-1, 48, 12]);
    Mock::given(method("GET"))
        .and(path("/v2/models/deterioration"))
        .respond_with(ResponseTemplate::new(200).set_body_json(meta))
        .mount(&server)
        .await;
    // The shadow takes 1.5 s a score.
    Mock::given(method("POST"))
        .and(path("/v2/models/deterioration/infer"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_delay(Duration::from_millis(1500))
                .set_body_json(json!({"model_name": "deterioration", "outputs": [
                    {"name": "OUTPUT__0", "shape": [1, 1], "datatype": "FP32", "data": [0.5]}]})),
        )
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(GatewayOptions {
        jwks_url: Some(keys.jwks_url()),
        models_dir: remote_shadow(dir.path(), &server.uri()),
        ..Default::default()
    })
    .await;
    // Six calls in a row: each answered with its card long before its shadow score arrives;
    // four shadow scores are pending at once at most, the other two calls skip theirs.
    for i in 0..6 {
        let (status, body, took) = hook(&gw, "deteriorating").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["cards"].as_array().map(Vec::len),
            Some(1),
            "call {i}: {body}"
        );
        assert!(took < Duration::from_millis(1000), "call {i} took {took:?}");
    }
    let metrics = common::metrics(&gw).await;
    assert!(
        metrics.contains("bedside_service_shadow_skipped_total{service=\"deterioration\"} 2"),
        "{metrics}"
    );
    // The four pending scores are recorded when they arrive.
    let metrics = common::metrics_showing(
        &gw,
        "bedside_service_shadow_total{service=\"deterioration\"} 4",
    )
    .await;
    assert!(
        metrics.contains("bedside_service_shadow_total{service=\"deterioration\"} 4"),
        "{metrics}"
    );
    gw.stop().await;
}
