//! Remote inference on an engine that is not bedside: MLServer (Seldon's Open Inference
//! Protocol server, PyPI `mlserver`) serving the shipped TorchScript files through
//! `models/serving/mlserver_runtime.py`, its repository written from the manifests by
//! `models.serving.repository`. bedside's `[remote]` backend scores through it with the same
//! risks as local scoring (to 1e-6), and a slow, failing, wrongly shaped or missing model gives
//! an answer without the card (or stops start-up), as a hospital's engine may.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::process::free_port;
use crate::common::{
    bearer, bearer_for, http, patient, repo, Gateway, GatewayOptions, Key, KeyServer,
};
use serde_json::{json, Value};

/// A running MLServer, killed on drop.
struct MlServer {
    url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for MlServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fault variants of deterioration 4.0.1 the runtime is asked to play (`parameters.extra`).
const FAULTS: [(&str, &str); 3] = [
    ("deterioration-slow", r#"{"delay_s": 3}"#),
    ("deterioration-fail", r#"{"fail": true}"#),
    ("deterioration-wrongshape", r#"{"wrong_shape": true}"#),
];

impl MlServer {
    /// Writes the repository for the shipped models (plus the fault variants) and starts
    /// `mlserver start` on free loopback ports; waits until it is ready.
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let repository = dir.path().join("mlserver");
        let (port, grpc, metrics) = (free_port(), free_port(), free_port());
        let out = Command::new(repo().join(".venv/bin/python"))
            .args(["-m", "models.serving.repository", "--models", "models"])
            .arg("--mlserver")
            .arg(&repository)
            .args(["--http-port", &port.to_string()])
            .args(["--grpc-port", &grpc.to_string()])
            .args(["--metrics-port", &metrics.to_string()])
            .current_dir(repo())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let base: Value = serde_json::from_str(
            &std::fs::read_to_string(repository.join("deterioration-4.0.1/model-settings.json"))
                .unwrap(),
        )
        .unwrap();
        for (name, extra) in FAULTS {
            let mut settings = base.clone();
            settings["name"] = name.into();
            settings["parameters"]["extra"] = serde_json::from_str(extra).unwrap();
            std::fs::create_dir_all(repository.join(name)).unwrap();
            std::fs::write(
                repository.join(name).join("model-settings.json"),
                settings.to_string(),
            )
            .unwrap();
        }
        let log = std::fs::File::create(dir.path().join("mlserver.log")).unwrap();
        let child = Command::new(repo().join(".venv/bin/mlserver"))
            .arg("start")
            .arg(&repository)
            .current_dir(repo())
            .env("PYTHONPATH", repo())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let server = Self {
            url,
            child,
            _dir: dir,
        };
        let started = Instant::now();
        loop {
            let ready = http()
                .get(format!("{}/v2/health/ready", server.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "MLServer did not get ready: {}",
                std::fs::read_to_string(server._dir.path().join("mlserver.log"))
                    .unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        server
    }
}

/// The shipped models with deterioration 4.0.1 served by MLServer's model `model`.
fn served_by(dir: &Path, url: &str, model: &str, timeout: &str) -> PathBuf {
    common::serve_remotely(
        common::copy_models(dir),
        "4.0.1",
        &format!("url = '{url}'\nmodel = '{model}'\ntimeout = '{timeout}'\n"),
    )
}

/// `POST /api/v1/models/deterioration/predict` of `fixture`'s vitals at `as_of`.
async fn predict(gw: &Gateway, fixture: &str, as_of: &str) -> (u16, Value) {
    let request: Value =
        serde_json::from_str(&common::fixture(&format!("patients/{fixture}.json"))).unwrap();
    let path = "/api/v1/models/deterioration/predict";
    let r = http()
        .post(format!("{}{path}?asOf={as_of}", gw.url))
        .header("Authorization", bearer_for(path, Key::Es384))
        .header("Content-Type", "application/fhir+json")
        .json(&request["prefetch"]["vitals"])
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn mlserver_serves_the_shipped_model_with_the_local_risks_and_its_faults_cost_only_the_card()
{
    let engine = MlServer::start().await;
    let keys = KeyServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let local = Gateway::with_keys(&keys).await;
    let remote = Gateway::start(GatewayOptions {
        jwks_url: Some(keys.jwks_url()),
        models_dir: served_by(
            &dir.path().join("ok"),
            &engine.url,
            "deterioration-4.0.1",
            "5s",
        ),
        ..Default::default()
    })
    .await;

    // The same risks, to 1e-6, on every fixture the model scores at its reference time.
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(
            repo().join("models/legacy/deterioration_v1/parity_expected.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let as_of = expected["now"].as_str().unwrap();
    let mut compared = 0;
    for fixture in ["deteriorating", "early-warning", "stable", "sparse"] {
        let (s_local, via_local) = predict(&local, fixture, as_of).await;
        let (s_remote, via_remote) = predict(&remote, fixture, as_of).await;
        assert_eq!(s_local, s_remote, "{fixture}: {via_local} / {via_remote}");
        if s_local != 200 {
            continue;
        }
        let (a, b) = (
            via_local["risk"].as_f64().unwrap(),
            via_remote["risk"].as_f64().unwrap(),
        );
        assert!((a - b).abs() <= 1e-6, "{fixture}: local {a}, MLServer {b}");
        assert_eq!(via_remote["version"], "4.0.1");
        compared += 1;
    }
    assert!(compared >= 2, "only {compared} fixtures scored");
    // And a hook call shows the same card through it.
    let call = |gw: &Gateway| {
        http()
            .post(gw.service("deterioration"))
            .header("Authorization", bearer("deterioration", Key::Rs384))
            .json(&patient("deteriorating"))
            .send()
    };
    let via_remote: Value = call(&remote).await.unwrap().json().await.unwrap();
    let via_local: Value = call(&local).await.unwrap().json().await.unwrap();
    assert_eq!(
        via_remote["cards"][0]["summary"], via_local["cards"][0]["summary"],
        "{via_remote}"
    );
    // MLServer did the forward passes.
    let served = http()
        .get(format!("{}/v2/models/deterioration-4.0.1", engine.url))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    for gw in [local, remote] {
        gw.stop().await;
    }

    // Faults: late (past the manifest's 300 ms), 500, an output of the wrong shape — each an
    // answer without the card, in time, counted.
    for (model, _) in FAULTS {
        let gw = Gateway::start(GatewayOptions {
            jwks_url: Some(keys.jwks_url()),
            models_dir: served_by(&dir.path().join(model), &engine.url, model, "300ms"),
            ..Default::default()
        })
        .await;
        let started = Instant::now();
        let r = http()
            .post(gw.service("deterioration"))
            .header("Authorization", bearer("deterioration", Key::Rs384))
            .json(&patient("deteriorating"))
            .send()
            .await
            .unwrap();
        let took = started.elapsed();
        assert_eq!(r.status(), 200, "{model}");
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!({"cards": []}),
            "{model}"
        );
        assert!(took < Duration::from_millis(1500), "{model} took {took:?}");
        let metrics = common::metrics(&gw).await;
        assert!(
            metrics.contains(
                "bedside_inference_failed_total{model=\"deterioration\",version=\"4.0.1\"} 1"
            ),
            "{model}: {metrics}"
        );
        gw.stop().await;
    }

    // A model the engine does not have: the gateway refuses to start rather than serve
    // without it.
    let models = served_by(&dir.path().join("missing"), &engine.url, "nope", "1s");
    let err = common::startup_error(models, dir.path()).await;
    assert!(
        err.contains("/v2/models/nope") && err.contains("404"),
        "{err}"
    );
}
