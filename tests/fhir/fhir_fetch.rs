//! Hooks that arrive without (all of) their prefetch: bedside queries the EHR's FHIR server —
//! a real one (sekmet-fhir) — and must give the same card as with full prefetch.

use crate::common;

use std::time::{Duration, Instant};

use crate::common::fhir_server::{aimed_at, FhirServer};
use crate::common::{bearer, detail_without_window_bounds, http, patient, Gateway, Key, KeyServer};
use serde_json::{json, Value};

async fn call(gw: &Gateway, body: &Value) -> (u16, Value) {
    let r = http()
        .post(gw.service("deterioration"))
        .header("Authorization", bearer("deterioration", Key::Es384))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// Summary, indicator and detail (window bounds masked) of the only card.
fn card_essence(response: &Value) -> (Value, Value, String) {
    let cards = response["cards"].as_array().unwrap();
    assert_eq!(cards.len(), 1, "{response}");
    (
        cards[0]["summary"].clone(),
        cards[0]["indicator"].clone(),
        detail_without_window_bounds(&cards[0]),
    )
}

#[tokio::test]
async fn missing_partial_and_failed_prefetch_are_fetched_and_give_the_same_card() {
    let server = FhirServer::start().await;
    let keys = KeyServer::start().await;
    let gw = Gateway::with_fhir(&keys, vec![server.origin()]).await;
    let full = aimed_at(patient("deteriorating"), &server);
    server.load_prefetch(&full).await;

    let (status, prefetched) = call(&gw, &full).await;
    assert_eq!(status, 200, "{prefetched}");
    let expected = card_essence(&prefetched);
    assert!(
        expected.2.contains("What raised the risk most"),
        "{}",
        expected.2
    );

    let mut none = full.clone();
    none.as_object_mut().unwrap().remove("prefetch");
    let mut partial = full.clone();
    partial["prefetch"]
        .as_object_mut()
        .unwrap()
        .remove("vitals");
    let mut failed = full.clone();
    failed["prefetch"]["vitals"] = json!({"resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "timeout", "diagnostics": "EHR prefetch timed out"}]});
    for (name, request) in [
        ("no prefetch", none),
        ("partial", partial),
        ("OperationOutcome", failed),
    ] {
        let (status, body) = call(&gw, &request).await;
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(card_essence(&body), expected, "{name}");
    }
    let metrics = common::metrics(&gw).await;
    assert!(
        metrics.contains("bedside_fhir_errors_total{kind=\"timeout\"} 0"),
        "{metrics}"
    );
    let requests: u64 = metric(&metrics, "bedside_fhir_requests_total");
    // no prefetch: patient + vitals (+ optional labs is not fetched); partial: vitals;
    // OperationOutcome: vitals.
    assert_eq!(requests, 4, "{metrics}");
    gw.stop().await;
}

#[tokio::test]
async fn null_prefetch_means_no_data_and_is_not_queried() {
    let server = FhirServer::start().await;
    let keys = KeyServer::start().await;
    let gw = Gateway::with_fhir(&keys, vec![server.origin()]).await;
    let mut request = aimed_at(patient("deteriorating"), &server);
    server.load_prefetch(&request).await;
    request["prefetch"]["vitals"] = Value::Null;
    let (status, body) = call(&gw, &request).await;
    assert_eq!(status, 200, "{body}");
    let summary = body["cards"][0]["summary"].as_str().unwrap();
    assert!(summary.starts_with("No deterioration score"), "{summary}");
    assert_eq!(
        metric(&common::metrics(&gw).await, "bedside_fhir_requests_total"),
        0
    );
    gw.stop().await;
}

#[tokio::test]
async fn required_data_the_server_does_not_have_is_a_412_naming_the_key() {
    let server = FhirServer::start().await;
    let keys = KeyServer::start().await;
    let gw = Gateway::with_fhir(&keys, vec![server.origin()]).await;
    // Nothing loaded: `Patient/<id>` is a 404 with an OperationOutcome.
    let mut request = aimed_at(patient("deteriorating"), &server);
    request.as_object_mut().unwrap().remove("prefetch");
    let (status, body) = call(&gw, &request).await;
    assert_eq!(status, 412, "{body}");
    assert_eq!(body["field"], "prefetch.patient");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("HTTP 404") && message.contains("not-found"),
        "{message}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_slow_fhir_server_still_gets_an_answer_within_the_deadline() {
    use wiremock::matchers::any;
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let slow = MockServer::start().await;
    Mock::given(any())
        .respond_with(
            ResponseTemplate::new(200)
                .set_delay(Duration::from_secs(10))
                .set_body_json(json!({"resourceType": "Bundle", "type": "searchset"})),
        )
        .mount(&slow)
        .await;
    let keys = KeyServer::start().await;
    let gw = Gateway::with_fhir(&keys, vec![slow.uri()]).await;
    let mut request = patient("deteriorating");
    request["fhirServer"] = format!("{}/fhir", slow.uri()).into();
    request["prefetch"]
        .as_object_mut()
        .unwrap()
        .remove("vitals");
    let started = Instant::now();
    let (status, body) = call(&gw, &request).await;
    let took = started.elapsed();
    assert_eq!(status, 412, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("time budget"),
        "{body}"
    );
    // deterioration.toml: deadline 1500 ms, of which 250 ms are kept for scoring.
    assert!(
        took < Duration::from_millis(1500),
        "answered after {took:?}"
    );
    assert!(
        took >= Duration::from_millis(1200),
        "gave up early: {took:?}"
    );
    gw.stop().await;
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[tokio::test]
async fn a_tenants_fhir_server_is_queried_only_for_that_tenants_calls() {
    let server = FhirServer::start().await;
    let keys = KeyServer::start().await;
    // The test client's tokens carry `tenant: test-tenant`.
    let tenant_toml = |tenant: &str| {
        format!(
            "[[clients.tenants]]\ntenant = '{tenant}'\nfhir_servers = ['{}']\n",
            server.origin()
        )
    };
    let mut request = aimed_at(patient("deteriorating"), &server);
    server.load_prefetch(&request).await;
    request.as_object_mut().unwrap().remove("prefetch");
    for (tenant, expected) in [("test-tenant", 200), ("another-hospital", 412)] {
        let gw = Gateway::start(common::GatewayOptions {
            jwks_url: Some(keys.jwks_url()),
            client_toml: tenant_toml(tenant),
            ..Default::default()
        })
        .await;
        let (status, body) = call(&gw, &request).await;
        assert_eq!(status, expected, "{tenant}: {body}");
        if expected == 412 {
            assert!(
                body["message"].as_str().unwrap().contains("egress policy"),
                "{body}"
            );
        }
        gw.stop().await;
    }
}
