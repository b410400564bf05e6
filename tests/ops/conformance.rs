//! `bedside conformance` run as a separate process: all green against bedside, and able to
//! fail against a service that breaks the rules.

use crate::common::{Gateway, GatewayOptions, PUBLIC};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const RUNNER_ISS: &str = "https://conformance.bedside.invalid";

use crate::common::process::free_port;

async fn run_conformance(args: Vec<String>) -> (bool, String) {
    // Blocking wait on a pool thread: the gateway under test runs on this test's runtime.
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_bedside"))
            .arg("conformance")
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn bedside_passes_every_check() {
    let port = free_port();
    let jwks = format!("http://127.0.0.1:{port}/.well-known/jwks.json");
    let gw = Gateway::start(GatewayOptions {
        extra_toml: format!("\n[[clients]]\niss = '{RUNNER_ISS}'\njwks_urls = ['{jwks}']\n"),
        ..Default::default()
    })
    .await;
    let (ok, out) = run_conformance(vec![
        gw.url.clone(),
        "--audience-base".into(),
        PUBLIC.into(),
        "--jwks-listen".into(),
        format!("127.0.0.1:{port}"),
    ])
    .await;
    assert!(ok, "{out}");
    assert!(!out.contains("FAIL"), "{out}");
    let summary = out.lines().last().unwrap();
    let passed: usize = summary.split(' ').next().unwrap().parse().unwrap();
    assert!(passed >= 40, "{summary}");
    assert!(summary.ends_with(" 0 failed"), "{summary}");
    // The runner's feedback landed in the store like an EHR's would.
    let stored = std::fs::metadata(&gw.db).map(|m| m.len()).unwrap_or(0);
    assert!(stored > 0);
    gw.stop().await;
}

#[tokio::test]
async fn a_service_that_breaks_the_rules_fails_with_the_reasons() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/cds-services"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"services": [{
                "hook": "patient-view", "id": "lax", "description": "accepts anything",
                "prefetch": {"p": "Patient/{{context.patient.id}}"}
            }]})),
        )
        .mount(&server)
        .await;
    // Answers every call, token or not, with a card that breaks several rules.
    Mock::given(method("POST"))
        .and(path("/cds-services/lax"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"cards": [{
            "uuid": "c1", "summary": "x".repeat(150), "indicator": "urgent",
            "source": {"label": ""}, "suggestions": [{"label": "do it"}],
            "links": [{"label": "l", "url": "relative/path", "type": "absolute", "appContext": "a"}],
            "detail": null
        }]})))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/cds-services/lax/feedback"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    let (ok, out) = run_conformance(vec![
        server.uri(),
        "--jwks-listen".into(),
        format!("127.0.0.1:{}", free_port()),
    ])
    .await;
    assert!(!ok, "{out}");
    for expected in [
        "FAIL  discovery lax: prefetch templates use only 2.0 tokens",
        "FAIL  jwt lax: refuses no Authorization header",
        "FAIL  jwt lax: refuses alg none",
        "FAIL  input lax: malformed JSON gets a 4xx",
        "FAIL  vector spec-patient-view → lax: CdsServiceResponse (schema)",
        "FAIL  vector spec-patient-view → lax: no null or empty values",
        "FAIL  vector spec-patient-view → lax: card 0 rules",
        "FAIL  vector no-prefetch-no-server → lax: HTTP 412",
        "FAIL  feedback lax: overridden with reason accepted",
    ] {
        assert!(out.contains(expected), "missing `{expected}` in:\n{out}");
    }
    assert!(out.contains("selectionBehavior must be present"), "{out}");
    let summary = out.lines().last().unwrap();
    assert!(!summary.ends_with(" 0 failed"), "{summary}");
}
