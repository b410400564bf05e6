//! Discovery, invocation, cards and bad input over real HTTP against a real TorchScript model.

use crate::common;

use crate::common::{bearer, http, patient, Gateway, Key, KeyServer};
use bedside::cards::validate::card_problems;
use bedside::cds::wire::{CdsResponse, DiscoveryResponse, Indicator, LinkType};
use serde_json::{json, Value};

async fn post(gw: &Gateway, id: &str, body: &Value) -> (u16, Value) {
    let resp = http()
        .post(gw.service(id))
        .header("Authorization", bearer(id, Key::Rs384))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

async fn post_raw(gw: &Gateway, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let resp = http()
        .post(gw.service("deterioration"))
        .header("Authorization", bearer("deterioration", Key::Es384))
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let body =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("error body is not JSON: {text}"));
    (status, body)
}

#[tokio::test]
async fn discovery_lists_the_service_with_spec_fields() {
    let keys = KeyServer::start().await;
    let gw = Gateway::with_keys(&keys).await;
    let raw: Value = http()
        .get(format!("{}/cds-services", gw.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let parsed: DiscoveryResponse = serde_json::from_value(raw.clone()).unwrap();
    let svc = parsed
        .services
        .iter()
        .find(|s| s.id == "deterioration")
        .expect("listed");
    assert_eq!(svc.hook, "patient-view");
    assert!(!svc.description.is_empty());
    assert!(svc.title.is_some() && svc.usage_requirements.is_some());
    let prefetch = svc.prefetch.as_ref().unwrap();
    assert_eq!(prefetch["patient"], "Patient/{{context.patientId}}");
    assert!(prefetch["vitals"]
        .starts_with("Observation?patient={{context.patientId}}&category=vital-signs"));
    assert!(prefetch.contains_key("labs"));
    // Exactly the spec's field names, nothing null.
    let entry = raw["services"][0].as_object().unwrap();
    for key in entry.keys() {
        assert!(
            [
                "hook",
                "title",
                "description",
                "id",
                "prefetch",
                "usageRequirements"
            ]
            .contains(&key.as_str()),
            "{key}"
        );
        assert!(!entry[key].is_null());
    }
    gw.stop().await;
}

#[tokio::test]
async fn a_deteriorating_patient_gets_a_spec_valid_card_from_the_model() {
    let keys = KeyServer::start().await;
    let gw = Gateway::with_keys(&keys).await;
    let request = patient("deteriorating");
    let (status, body) = post(&gw, "deterioration", &request).await;
    assert_eq!(status, 200, "{body}");
    let response: CdsResponse = serde_json::from_value(body.clone()).unwrap();
    assert_eq!(response.cards.len(), 1);
    let card = &response.cards[0];
    assert!(card_problems(card).is_empty(), "{:?}", card_problems(card));
    assert!(card.indicator >= Indicator::Warning, "{card:?}");
    assert!(card.summary.chars().count() < 140);
    assert!(card.summary.contains("NEWS2"), "{}", card.summary);
    assert!(
        card.summary.contains("deterioration v4.0.1"),
        "{}",
        card.summary
    );
    assert!(
        card.source.label.contains("synthetic"),
        "{}",
        card.source.label
    );
    let model_card = card.source.url.as_deref().unwrap();
    assert_eq!(
        model_card,
        "https://bedside.test/models/deterioration/4.0.1/model-card"
    );
    let detail = card.detail.as_deref().unwrap();
    assert!(detail.contains("**Data:** 48 h to "), "{detail}");
    assert!(detail.contains("What raised the risk most"), "{detail}");
    // Trends and FHIR ids are in the app and the record, not in a sidebar card (issue 14).
    assert!(!detail.contains("Trend:"), "{detail}");
    assert!(!detail.contains("Observation/"), "{detail}");
    assert!(detail.contains("synthetic"), "{detail}");
    assert!(card.override_reasons.iter().all(|r| r.display.is_some()));
    assert!(card
        .override_reasons
        .iter()
        .any(|r| r.code == "already-aware"));
    // The SMART app for the full picture, opened on this prediction; the model card.
    let smart = &card.links[0];
    assert_eq!(smart.kind, LinkType::Smart);
    assert_eq!(smart.url, "https://bedside.test/smart/launch");
    let app_context: Value = serde_json::from_str(smart.app_context.as_deref().unwrap()).unwrap();
    assert_eq!(app_context["prediction"].as_str(), card.uuid.as_deref());
    assert_eq!(card.links[1].kind, LinkType::Absolute);
    assert!(card.links[1].app_context.is_none());
    // No nulls anywhere in the card (spec: "JSON elements SHALL NOT be null").
    assert!(!body.to_string().contains("null"), "{body}");

    // The uuid is stable for the same hook call and different for another one.
    let (_, again) = post(&gw, "deterioration", &request).await;
    assert_eq!(again["cards"][0]["uuid"], body["cards"][0]["uuid"]);
    let (_, other) = post(&gw, "deterioration", &patient("deteriorating")).await;
    assert_ne!(other["cards"][0]["uuid"], body["cards"][0]["uuid"]);
    gw.stop().await;
}

/// The gateway's URL in a browser: where discovery, each service, each model card, the SMART
/// launch and the health check are; the same as JSON.
#[tokio::test]
async fn the_front_page_says_where_everything_is() {
    let keys = KeyServer::start().await;
    let gw = Gateway::with_keys(&keys).await;
    let page = http().get(format!("{}/", gw.url)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let text = page.text().await.unwrap();
    for want in [
        "https://bedside.test/cds-services",
        "https://bedside.test/cds-services/deterioration",
        "https://bedside.test/models/deterioration/4.0.1/model-card",
        "https://bedside.test/smart/launch",
        "synthetic data only",
    ] {
        assert!(text.contains(want), "no {want} in {text}");
    }
    let json: serde_json::Value = http()
        .get(format!("{}/", gw.url))
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(json["cds_services"], "https://bedside.test/cds-services");
    let services = json["services"].as_array().unwrap();
    assert!(services
        .iter()
        .any(|s| s["id"] == "sepsis-screen" && s["hook"] == "patient-view"));
    assert!(json["models"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["name"] == "deterioration"
            && m["version"] == "4.0.1"
            && m["status"] == "active"));
    gw.stop().await;
}

#[tokio::test]
async fn the_model_card_behind_source_url_is_served() {
    let keys = KeyServer::start().await;
    let gw = Gateway::with_keys(&keys).await;
    let resp = http()
        .get(format!("{}/models/deterioration/4.0.1/model-card", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/markdown"));
    assert!(resp
        .text()
        .await
        .unwrap()
        .to_lowercase()
        .contains("synthetic"));
    // The same URL as JSON: the HTI-1 source attributes, from the developer's text and what
    // was measured (the cross-generator evaluations beside the manifest, the missed targets).
    let attributes: serde_json::Value = http()
        .get(format!("{}/models/deterioration/4.0.1/model-card", gw.url))
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for group in [
        "detailsAndOutput",
        "purpose",
        "cautionedOutOfScopeUse",
        "developmentAndInputs",
        "fairnessProcess",
        "externalValidation",
        "quantitativePerformance",
        "ongoingMaintenance",
    ] {
        assert!(attributes[group].is_object(), "{group}: {attributes}");
    }
    assert!(attributes["purpose"]["intendedUse"]
        .as_str()
        .unwrap()
        .contains("synthetic"));
    let variables = attributes["developmentAndInputs"]["demographicAndStatusVariables"]
        .as_array()
        .unwrap();
    let used = |v: &str| variables.iter().find(|x| x["variable"] == v).unwrap()["used"].clone();
    assert_eq!(used("sex"), false);
    assert_eq!(
        used("health status assessments"),
        true,
        "consciousness is an input"
    );
    let external = attributes["quantitativePerformance"]["validityExternal"]
        .as_array()
        .unwrap();
    let measured: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            common::repo()
                .join("models/deterioration/4.0.1/crossgen/cohort-to-ward/evaluation.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(external.len(), 2);
    assert_eq!(external[0]["auroc"], measured["auroc"]);
    assert!(
        attributes["cautionedOutOfScopeUse"]["knownRisksAndLimitations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().starts_with("target missed: abstention"))
    );
    assert_eq!(
        attributes["ongoingMaintenance"]["validityLocal"],
        "not evaluated at this site yet (bedside evaluate)"
    );
    let markdown = http()
        .get(format!("{}/models/sepsis/3.0.1/model-card", gw.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for heading in [
        "## Purpose",
        "## External validation",
        "## Ongoing maintenance",
        "# Model card",
    ] {
        assert!(markdown.contains(heading), "{heading}\n{markdown}");
    }
    assert!(
        markdown.contains("| group | level |"),
        "subgroups as a table\n{markdown}"
    );
    // Its plots and measured evaluation are served beside it; nothing else in the folder is.
    for (file, status, kind) in [
        ("roc.svg", 200, "image/svg+xml"),
        ("reliability.svg", 200, "image/svg+xml"),
        ("evaluation.json", 200, "application/json"),
        ("model.pt", 404, "application/json"),
        ("manifest.toml", 404, "application/json"),
        ("..%2F..%2Fbedside.toml", 404, "application/json"),
    ] {
        let resp = http()
            .get(format!("{}/models/sepsis/3.0.1/{file}", gw.url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status, "{file}");
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind),
            "{file}"
        );
    }
    gw.stop().await;
}

#[tokio::test]
async fn stable_patients_get_no_card_and_sparse_data_abstains_with_a_reason() {
    let keys = KeyServer::start().await;
    let gw = Gateway::with_keys(&keys).await;
    let (status, body) = post(&gw, "deterioration", &patient("stable")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"cards": []}));

    let (status, body) = post(&gw, "deterioration", &patient("sparse")).await;
    assert_eq!(status, 200, "{body}");
    let card = &body["cards"][0];
    assert_eq!(card["indicator"], "info", "{body}");
    assert!(
        card["summary"]
            .as_str()
            .unwrap()
            .contains("No deterioration score"),
        "{body}"
    );
    assert!(
        card["detail"].as_str().unwrap().contains("needs 4"),
        "{body}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn null_prefetch_means_no_data_and_stale_data_abstains() {
    let keys = KeyServer::start().await;
    let gw = Gateway::with_keys(&keys).await;
    let mut request = patient("deteriorating");
    request["prefetch"]["vitals"] = Value::Null;
    let (status, body) = post(&gw, "deterioration", &request).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["cards"][0]["summary"]
            .as_str()
            .unwrap()
            .contains("only 0"),
        "{body}"
    );

    let mut stale = serde_json::from_str(&common::fixture("patients/deteriorating.json")).unwrap();
    bedside::demo::rebase_times(&mut stale, chrono::Utc::now() - chrono::Duration::hours(20));
    let (status, body) = post(&gw, "deterioration", &stale).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["cards"][0]["summary"]
            .as_str()
            .unwrap()
            .contains("old"),
        "{body}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_missing_required_prefetch_is_412_naming_the_key() {
    let keys = KeyServer::start().await;
    let gw = Gateway::with_keys(&keys).await;
    let mut request = patient("deteriorating");
    request["prefetch"]
        .as_object_mut()
        .unwrap()
        .remove("vitals");
    let (status, body) = post(&gw, "deterioration", &request).await;
    assert_eq!(status, 412, "{body}");
    assert_eq!(body["field"], "prefetch.vitals");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("Observation?patient="), "{message}");

    // An OperationOutcome in place of data is the client's failure: same answer.
    let mut request = patient("deteriorating");
    request["prefetch"]["vitals"] = json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "timeout"}]});
    let (status, _) = post(&gw, "deterioration", &request).await;
    assert_eq!(status, 412);

    // No prefetch at all.
    let mut request = patient("deteriorating");
    request.as_object_mut().unwrap().remove("prefetch");
    let (status, body) = post(&gw, "deterioration", &request).await;
    assert_eq!(status, 412, "{body}");
    assert_eq!(body["field"], "prefetch.patient");

    // The optional `labs` key may be missing.
    let mut request = patient("deteriorating");
    request["prefetch"].as_object_mut().unwrap().remove("labs");
    let (status, _) = post(&gw, "deterioration", &request).await;
    assert_eq!(status, 200);
    gw.stop().await;
}

#[tokio::test]
async fn bad_input_gets_a_json_error_with_the_right_status() {
    let keys = KeyServer::start().await;
    let gw = Gateway::with_keys(&keys).await;

    let (s, b) = post_raw(&gw, "application/json", b"{\"hook\": ".to_vec()).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (400, Some("malformed_json")),
        "{b}"
    );

    let mut no_hook = patient("deteriorating");
    no_hook.as_object_mut().unwrap().remove("hook");
    let (s, b) = post(&gw, "deterioration", &no_hook).await;
    assert_eq!((s, b["field"].as_str()), (400, Some("hook")), "{b}");

    let mut no_instance = patient("deteriorating");
    no_instance.as_object_mut().unwrap().remove("hookInstance");
    let (s, b) = post(&gw, "deterioration", &no_instance).await;
    assert_eq!((s, b["field"].as_str()), (400, Some("hookInstance")), "{b}");

    let mut no_context = patient("deteriorating");
    no_context.as_object_mut().unwrap().remove("context");
    let (s, b) = post(&gw, "deterioration", &no_context).await;
    assert_eq!((s, b["field"].as_str()), (400, Some("context")), "{b}");

    let mut wrong_type = patient("deteriorating");
    wrong_type["hookInstance"] = json!(42);
    let (s, b) = post(&gw, "deterioration", &wrong_type).await;
    assert_eq!((s, b["field"].as_str()), (400, Some("hookInstance")), "{b}");

    let mut nested = patient("deteriorating");
    nested["fhirAuthorization"] = json!({"access_token": "t", "token_type": "Bearer", "expires_in": 300, "scope": "patient/Observation.rs"});
    let (s, b) = post(&gw, "deterioration", &nested).await;
    assert_eq!(
        (s, b["field"].as_str()),
        (400, Some("fhirAuthorization.subject")),
        "{b}"
    );

    let mut nested_type = patient("deteriorating");
    nested_type["fhirAuthorization"] = json!({"access_token": "t", "token_type": "Bearer", "expires_in": "soon", "scope": "s", "subject": "c"});
    let (s, b) = post(&gw, "deterioration", &nested_type).await;
    assert_eq!(
        (s, b["field"].as_str()),
        (400, Some("fhirAuthorization.expires_in")),
        "{b}"
    );

    let mut no_patient = patient("deteriorating");
    no_patient["context"]
        .as_object_mut()
        .unwrap()
        .remove("patientId");
    let (s, b) = post(&gw, "deterioration", &no_patient).await;
    assert_eq!(
        (s, b["field"].as_str()),
        (400, Some("context.patientId")),
        "{b}"
    );

    let mut wrong_hook = patient("deteriorating");
    wrong_hook["hook"] = "order-sign".into();
    let (s, b) = post(&gw, "deterioration", &wrong_hook).await;
    assert_eq!(
        (s, b["field"].as_str(), b["error"].as_str()),
        (400, Some("hook"), Some("wrong_hook")),
        "{b}"
    );

    let mut auth_without_server = patient("deteriorating");
    auth_without_server
        .as_object_mut()
        .unwrap()
        .remove("fhirServer");
    auth_without_server["fhirAuthorization"] = json!({"access_token": "t", "token_type": "Bearer", "expires_in": 300, "scope": "patient/Observation.rs", "subject": "bedside"});
    let (s, b) = post(&gw, "deterioration", &auth_without_server).await;
    assert_eq!((s, b["field"].as_str()), (400, Some("fhirServer")), "{b}");

    let mut not_a_bundle = patient("deteriorating");
    not_a_bundle["prefetch"]["vitals"] = json!([1, 2, 3]);
    let (s, b) = post(&gw, "deterioration", &not_a_bundle).await;
    assert_eq!(
        (s, b["field"].as_str()),
        (400, Some("prefetch.vitals")),
        "{b}"
    );

    let (s, b) = post(&gw, "no-such-service", &patient("deteriorating")).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (404, Some("unknown_service")),
        "{b}"
    );

    let body = serde_json::to_vec(&patient("deteriorating")).unwrap();
    let (s, b) = post_raw(&gw, "text/plain", body.clone()).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (415, Some("unsupported_media_type")),
        "{b}"
    );
    let (s, _) = post_raw(&gw, "application/json; charset=utf-8", body).await;
    assert_eq!(s, 200);

    // 6 MB against the default 5 MB limit.
    let mut huge = patient("deteriorating");
    huge["context"]["padding"] = "x".repeat(6 * 1024 * 1024).into();
    let (s, b) = post_raw(&gw, "application/json", serde_json::to_vec(&huge).unwrap()).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (413, Some("payload_too_large")),
        "{b}"
    );

    // The gateway is still answering after all of that.
    let (s, _) = post(&gw, "deterioration", &patient("deteriorating")).await;
    assert_eq!(s, 200);
    gw.stop().await;
}

#[tokio::test]
async fn cors_lets_the_configured_browser_client_call() {
    let keys = KeyServer::start().await;
    let gw = Gateway::with_keys(&keys).await;
    let resp = http()
        .request(reqwest::Method::OPTIONS, gw.service("deterioration"))
        .header("Origin", "https://sandbox.cds-hooks.org")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let h = resp.headers();
    assert_eq!(
        h["access-control-allow-origin"],
        "https://sandbox.cds-hooks.org"
    );
    assert!(h.get("access-control-allow-credentials").is_none());
    let methods = h["access-control-allow-methods"].to_str().unwrap();
    assert!(
        methods.contains("POST") && methods.contains("GET"),
        "{methods}"
    );
    let headers = h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(
        headers.contains("authorization") && headers.contains("content-type"),
        "{headers}"
    );

    let resp = http()
        .get(format!("{}/cds-services", gw.url))
        .header("Origin", "https://sandbox.cds-hooks.org")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://sandbox.cds-hooks.org"
    );

    // An origin that is not configured gets no CORS grant.
    let resp = http()
        .request(reqwest::Method::OPTIONS, gw.service("deterioration"))
        .header("Origin", "https://evil.test")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    gw.stop().await;
}

#[tokio::test]
async fn metrics_count_cards_abstentions_and_batches() {
    let keys = KeyServer::start().await;
    let gw = Gateway::with_keys(&keys).await;
    post(&gw, "deterioration", &patient("deteriorating")).await;
    post(&gw, "deterioration", &patient("sparse")).await;
    let mut missing = patient("stable");
    missing["prefetch"]
        .as_object_mut()
        .unwrap()
        .remove("vitals");
    post(&gw, "deterioration", &missing).await;
    let text = common::metrics(&gw).await;
    for line in [
        "bedside_service_calls_total{service=\"deterioration\"} 3",
        "bedside_service_cards_total{service=\"deterioration\"} 1",
        "bedside_service_abstained_total{service=\"deterioration\"} 1",
        "bedside_service_prefetch_missing_total{service=\"deterioration\"} 1",
        // The risk (one sample), then, as a card is shown, its explanation: one attribute()
        // pass over the same sample (no occlusion batch).
        "bedside_inference_jobs_total{model=\"deterioration\",version=\"4.0.1\"} 2",
        "bedside_inference_samples_total{model=\"deterioration\",version=\"4.0.1\"} 2",
        // Latency histograms: every call of the service, every forward pass of the model.
        "bedside_service_call_seconds_count{service=\"deterioration\"} 3",
        "bedside_service_call_seconds_bucket{service=\"deterioration\",le=\"+Inf\"} 3",
        "bedside_inference_batch_seconds_count{model=\"deterioration\",version=\"4.0.1\"} 2",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
    gw.stop().await;
}

/// Routing only: driven in-process, without a socket.
#[tokio::test]
async fn health_endpoints_answer() {
    use actix_web::test::TestRequest;
    let keys = KeyServer::start().await;
    let app = common::InProcess::start(common::GatewayOptions {
        jwks_url: Some(keys.jwks_url()),
        ..Default::default()
    })
    .await;
    for path in ["/health/live", "/health/ready"] {
        let (status, _, _) = app.call(TestRequest::get().uri(path)).await;
        assert_eq!(status.as_u16(), 200, "{path}");
    }
    let (status, headers, body) = app
        .call(TestRequest::get().uri("/cds-services/deterioration"))
        .await;
    assert_eq!(status.as_u16(), 405);
    assert_eq!(
        headers.get("allow").map(|v| v.as_bytes()),
        Some(&b"POST"[..])
    );
    assert_eq!(body["error"], "method_not_allowed");
    let (status, _, _) = app.call(TestRequest::post().uri("/cds-services")).await;
    assert_eq!(status.as_u16(), 405);

    let (status, _, body) = app.call(TestRequest::get().uri("/nope")).await;
    assert_eq!(status.as_u16(), 404);
    assert_eq!(body["error"], "not_found");
}

#[tokio::test]
async fn news2_uses_spo2_scale_2_for_a_recorded_hypercapnic_respiratory_failure() {
    let keys = KeyServer::start().await;
    let gw = Gateway::with_keys(&keys).await;
    let condition = |code: &str, clinical: &str| {
        json!({"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": {
            "resourceType": "Condition", "id": "c1",
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": clinical}]},
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": code}]},
            "subject": {"reference": "Patient/example"}}}]})
    };
    let detail = |body: &Value| body["cards"][0]["detail"].as_str().unwrap().to_owned();
    let mut request = patient("deteriorating");
    let (s, body) = post(&gw, "deterioration", &request).await;
    assert_eq!(s, 200);
    assert!(detail(&body).contains("SpO2 scale 1."), "{}", detail(&body));
    for (code, clinical, scale) in [
        ("J96.12", "active", "SpO2 scale 2."),
        ("J96.12", "resolved", "SpO2 scale 1."),
        ("J44.9", "active", "SpO2 scale 1."), // COPD alone: scale 1 (RCP)
    ] {
        request["prefetch"]["conditions"] = condition(code, clinical);
        let (s, body) = post(&gw, "deterioration", &request).await;
        assert_eq!(s, 200);
        assert!(
            detail(&body).contains(scale),
            "{code} {clinical}: {}",
            detail(&body)
        );
    }
    gw.stop().await;
}
