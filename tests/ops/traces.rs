//! OpenTelemetry traces: `bedside serve` with `[telemetry] otlp_endpoint` exports the spans of a
//! hook call over OTLP/HTTP JSON to a receiver in this test — here all at its shutdown flush. One trace per call, continuing the
//! caller's W3C `traceparent`, the hook call as its root with service and hookInstance, its parts (auth, FHIR queries, features,
//! inference, decision, explanation, record) as children; nothing of the patient in any
//! exported byte. The payload parses as an `ExportTraceServiceRequest` with the OpenTelemetry
//! protobuf definitions (PyPI `opentelemetry-proto`, which `.ci/setup` installs with MLServer).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::Value;

use crate::common::fhir_server::{aimed_at, FhirServer};
use crate::common::process::{free_port, BedsideProcess};
use crate::common::{bearer, config_text, http, patient, repo, GatewayOptions, Key, KeyServer};

/// Export bodies received, as sent.
type Received = Arc<Mutex<Vec<String>>>;

/// An OTLP/HTTP receiver: `POST /v1/traces` with `application/json`, answered `{}`.
async fn receiver() -> (String, Received) {
    let received: Received = Arc::default();
    let store = received.clone();
    let port = free_port();
    let server = HttpServer::new(move || {
        let store = store.clone();
        App::new().route(
            "/v1/traces",
            web::post().to(move |req: HttpRequest, body: String| {
                let store = store.clone();
                async move {
                    let json = req
                        .headers()
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.starts_with("application/json"));
                    if !json {
                        return HttpResponse::UnsupportedMediaType().finish();
                    }
                    store.lock().unwrap().push(body);
                    HttpResponse::Ok()
                        .content_type("application/json")
                        .body("{}")
                }
            }),
        )
    })
    .workers(1)
    .bind(("127.0.0.1", port))
    .unwrap()
    .run();
    tokio::spawn(server);
    (format!("http://127.0.0.1:{port}"), received)
}

/// Every span received, flattened.
fn spans(received: &Received) -> Vec<Value> {
    let bodies = received.lock().unwrap().clone();
    let mut out = Vec::new();
    for body in bodies {
        let v: Value = serde_json::from_str(&body).unwrap();
        for rs in v["resourceSpans"].as_array().unwrap() {
            assert_eq!(
                rs["resource"]["attributes"][0]["key"], "service.name",
                "{rs}"
            );
            for ss in rs["scopeSpans"].as_array().unwrap() {
                out.extend(ss["spans"].as_array().unwrap().iter().cloned());
            }
        }
    }
    out
}

fn attr<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| &a["value"])
}

#[tokio::test]
async fn a_hook_call_is_exported_as_one_otlp_trace_without_phi() {
    let (collector, received) = receiver().await;
    let fhir = FhirServer::start().await;
    let keys = KeyServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let opts = GatewayOptions {
        jwks_url: Some(keys.jwks_url()),
        fhir_servers: vec![fhir.origin()],
        extra_toml: format!(
            "\n[telemetry]\notlp_endpoint = '{collector}'\nexport_every = '60s'\nservice_name = 'bedside-test'\n"
        ),
        ..Default::default()
    };
    let text = config_text(&opts, &dir.path().join("db.sqlite")).replace(
        "listen = '127.0.0.1:0'",
        &format!("listen = '127.0.0.1:{port}'"),
    );
    let config = dir.path().join("bedside.toml");
    std::fs::write(&config, text).unwrap();
    let gw = BedsideProcess::start_authenticated(&config, port);

    // The EHR prefetched nothing: bedside queries the FHIR server, scores and shows a card.
    let mut request = aimed_at(patient("deteriorating"), &fhir);
    fhir.load_prefetch(&request).await;
    request.as_object_mut().unwrap().remove("prefetch");
    let patient_id = request["context"]["patientId"].as_str().unwrap().to_owned();
    let hook_instance = uuid::Uuid::new_v4().to_string();
    request["hookInstance"] = hook_instance.clone().into();
    // The EHR's own trace (W3C Trace Context): bedside's spans continue it.
    let (caller_trace, caller_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let r = http()
        .post(format!("{}/cds-services/deterioration", gw.url))
        .header("Authorization", bearer("deterioration", Key::Rs384))
        .header("traceparent", format!("00-{caller_trace}-{caller_span}-01"))
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["cards"].as_array().map(Vec::len), Some(1), "{body}");

    // Nothing is due for a minute (`export_every`): stopping the gateway sends what is queued.
    gw.signal("TERM");

    // The root span of the call, once exported.
    let started = Instant::now();
    let root = loop {
        let found = spans(&received).into_iter().find(|s| {
            s["name"] == "cds_hook"
                && attr(s, "cds.hook_instance").and_then(|v| v["stringValue"].as_str())
                    == Some(hook_instance.as_str())
        });
        if let Some(root) = found {
            break root;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no trace of the call arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        attr(&root, "cds.service").unwrap()["stringValue"],
        "deterioration"
    );
    assert_eq!(
        attr(&root, "http.response.status_code").unwrap()["intValue"],
        "200"
    );
    assert_eq!(root["parentSpanId"], caller_span, "{root}");
    assert_eq!(root["kind"], 2, "server span");
    assert!(attr(&root, "traceparent").is_none(), "{root}");
    let trace_id = root["traceId"].as_str().unwrap().to_owned();
    assert_eq!(trace_id, caller_trace);

    // Its parts, all in its trace, each under a span of the trace, each within its parent.
    let trace: Vec<Value> = spans(&received)
        .into_iter()
        .filter(|s| s["traceId"] == trace_id.as_str())
        .collect();
    let names: Vec<&str> = trace.iter().filter_map(|s| s["name"].as_str()).collect();
    for part in [
        "cds_hook",
        "auth",
        "call",
        "fhir",
        "fhir.query",
        "features",
        "inference",
        "decision",
        "explanation",
        "record",
    ] {
        assert!(names.contains(&part), "no `{part}` span in {names:?}");
    }
    let by_id = |id: &str| trace.iter().find(|s| s["spanId"] == id);
    let nanos = |s: &Value, k: &str| s[k].as_str().unwrap().parse::<u128>().unwrap();
    for span in &trace {
        assert_eq!(span["spanId"].as_str().unwrap().len(), 16);
        assert!(nanos(span, "startTimeUnixNano") <= nanos(span, "endTimeUnixNano"));
        let local_parent = span["parentSpanId"].as_str().filter(|p| *p != caller_span);
        if let Some(parent) = local_parent {
            let parent = by_id(parent).unwrap_or_else(|| panic!("orphan span {span}"));
            assert!(nanos(parent, "startTimeUnixNano") <= nanos(span, "startTimeUnixNano"));
        }
    }
    let queried: Vec<&str> = trace
        .iter()
        .filter(|s| s["name"] == "fhir.query")
        .filter_map(|s| attr(s, "fhir.resource_type")?["stringValue"].as_str())
        .collect();
    assert!(queried.contains(&"Observation"), "{queried:?}");

    // Nothing of the patient leaves in a span.
    let all = received.lock().unwrap().join("\n");
    assert!(!all.contains(&patient_id), "the patient id was exported");
    for (i, body) in received.lock().unwrap().iter().enumerate() {
        let path = dir.path().join(format!("export-{i}.json"));
        std::fs::write(&path, body).unwrap();
        let parsed = std::process::Command::new(repo().join(".venv/bin/python"))
            .args([
                "-c",
                "import sys\nfrom google.protobuf import json_format\nfrom opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as t\njson_format.Parse(open(sys.argv[1]).read(), t.ExportTraceServiceRequest())",
            ])
            .arg(&path)
            .output()
            .expect("the test venv's python (.ci/setup)");
        assert!(
            parsed.status.success(),
            "not an ExportTraceServiceRequest: {}",
            String::from_utf8_lossy(&parsed.stderr)
        );
    }
    drop(gw);
}
