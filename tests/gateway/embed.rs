//! The foundation model over HTTP: `POST /api/v1/embed` from a FHIR Bundle or MEDS events, and
//! the same model over the Open Inference Protocol, against a running gateway.

use crate::common;

use crate::common::{bearer_for, http, Gateway, Key, KeyServer};
use bedside::features::tokens::{encode, events_of_bundle};
use bedside::inference::{FoundationModel, InferenceSettings};
use serde_json::{json, value::RawValue, Value};

async fn post(gw: &Gateway, path: &str, body: &Value) -> (u16, Value) {
    let resp = http()
        .post(format!("{}{path}", gw.url))
        .header(
            "Authorization",
            bearer_for(path.split('?').next().unwrap(), Key::Es384),
        )
        .header("Content-Type", "application/json")
        .body(serde_json::to_vec(body).unwrap())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn vitals_and_patient() -> (Value, String) {
    let request: Value =
        serde_json::from_str(&common::fixture("patients/deteriorating.json")).unwrap();
    let mut bundle = request["prefetch"]["vitals"].clone();
    let patient = request["prefetch"]["patient"].clone();
    bundle["entry"]
        .as_array_mut()
        .unwrap()
        .push(json!({"resource": patient}));
    let newest = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["resource"]["effectiveDateTime"].as_str())
        .max()
        .unwrap()
        .to_owned();
    (bundle, newest)
}

fn close(a: &Value, b: &Value) -> bool {
    let (a, b) = (a.as_array().unwrap(), b.as_array().unwrap());
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (x.as_f64().unwrap() - y.as_f64().unwrap()).abs() <= 1e-5)
}

#[tokio::test]
async fn a_bundle_and_its_meds_events_embed_alike_and_oip_gives_the_same_vector() {
    let keys = KeyServer::start().await;
    let gw = Gateway::with_keys(&keys).await;
    let (bundle, newest) = vitals_and_patient();
    let path = format!("/api/v1/embed?asOf={newest}");

    let (s, from_bundle) = post(&gw, &path, &bundle).await;
    assert_eq!(s, 200, "{from_bundle}");
    assert_eq!(from_bundle["model"], "foundation");
    assert_eq!(from_bundle["version"], "1.0.0");
    let as_of: chrono::DateTime<chrono::Utc> =
        from_bundle["as_of"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        as_of,
        newest.parse::<chrono::DateTime<chrono::Utc>>().unwrap()
    );
    let embedding = from_bundle["embedding"].as_array().unwrap();
    assert_eq!(embedding.len(), 128);
    assert_eq!(from_bundle["dimension"], 128);
    assert!(embedding.iter().all(|x| x.as_f64().unwrap().is_finite()));
    assert!(from_bundle["training_data"]
        .as_str()
        .unwrap()
        .contains("synthetic"));
    assert!(from_bundle["events"]["read"].as_u64().unwrap() > 100);
    assert!(
        from_bundle["window"]["start"].as_str().unwrap()
            < from_bundle["window"]["end"].as_str().unwrap()
    );
    assert!(from_bundle["tokens"].as_u64().unwrap() <= from_bundle["context"].as_u64().unwrap());

    // The same record as MEDS events (what a site's MEDS export holds): the same embedding.
    let fm = FoundationModel::load(
        &common::repo().join("models/foundation/1.0.0/foundation.toml"),
        &InferenceSettings::cpu(),
    )
    .unwrap();
    let text = serde_json::to_string(&bundle).unwrap();
    let raw: &RawValue = serde_json::from_str(&text).unwrap();
    let events = events_of_bundle(&fm.spec, raw).unwrap().events;
    let (s, from_events) = post(&gw, &path, &json!({"events": events})).await;
    assert_eq!(s, 200, "{from_events}");
    assert!(close(&from_bundle["embedding"], &from_events["embedding"]));

    // Over OIP, from the tokens the gateway's tokeniser makes: the same vector again.
    let enc = encode(&fm.vocab, &events, newest.parse().unwrap());
    let n = enc.ids.len();
    let infer = json!({"id": "x1", "inputs": [
        {"name": "ids", "datatype": "INT64", "shape": [1, n], "data": enc.ids},
        {"name": "hours", "datatype": "FP32", "shape": [1, n], "data": enc.hours}]});
    let (s, oip) = post(&gw, "/v2/models/foundation/infer", &infer).await;
    assert_eq!(s, 200, "{oip}");
    assert_eq!(oip["model_name"], "foundation");
    assert_eq!(oip["id"], "x1");
    assert_eq!(oip["outputs"][0]["shape"], json!([1, 128]));
    assert!(close(&from_bundle["embedding"], &oip["outputs"][0]["data"]));

    let meta = http()
        .get(format!("{}/v2/models/foundation", gw.url))
        .header(
            "Authorization",
            bearer_for("/v2/models/foundation", Key::Es384),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(meta.status().as_u16(), 200);
    let meta: Value = meta.json().await.unwrap();
    assert_eq!(meta["inputs"][0]["name"], "ids");
    assert_eq!(meta["outputs"][0]["shape"], json!([1, 128]));
    gw.stop().await;
}

#[tokio::test]
async fn bad_embedding_requests_get_clear_errors() {
    let keys = KeyServer::start().await;
    let gw = Gateway::with_keys(&keys).await;
    // No token: 401.
    let resp = http()
        .post(format!("{}/api/v1/embed", gw.url))
        .header("Content-Type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);

    let cases = [
        (json!({"resourceType": "Patient"}), 400, "invalid_request"),
        (
            json!({"events": [{"code": "LOINC/8867-4", "time": "yesterday"}]}),
            400,
            "invalid_request",
        ),
        (json!({"events": []}), 422, "insufficient_data"),
        (
            json!({"events": [{"code": "GENDER/female"}]}),
            422,
            "insufficient_data",
        ),
        (
            json!({"resourceType": "Bundle", "entry": []}),
            422,
            "insufficient_data",
        ),
    ];
    for (body, status, code) in cases {
        let (s, answer) = post(&gw, "/api/v1/embed", &body).await;
        assert_eq!(
            (s, answer["error"].as_str()),
            (status, Some(code)),
            "{body}: {answer}"
        );
    }
    // Events after asOf are not read.
    let future = json!({"events": [{"code": "LOINC/8867-4", "numeric_value": 80.0, "time": "2030-01-01T00:00:00Z"}]});
    let (s, answer) = post(&gw, "/api/v1/embed?asOf=2029-01-01T00:00:00Z", &future).await;
    assert_eq!(
        (s, answer["error"].as_str()),
        (422, Some("insufficient_data")),
        "{answer}"
    );

    let oip = [
        json!({"inputs": [{"name": "ids", "datatype": "INT64", "shape": [1, 2], "data": [2, 99999]},
                          {"name": "hours", "datatype": "FP32", "shape": [1, 2], "data": [0.0, 1.0]}]}),
        json!({"inputs": [{"name": "ids", "datatype": "INT64", "shape": [1, 2], "data": [2, 3]},
                          {"name": "hours", "datatype": "FP32", "shape": [1, 1], "data": [0.0]}]}),
        json!({"inputs": [{"name": "ids", "datatype": "INT64", "shape": [1, 1], "data": [2]}]}),
        json!({"inputs": [{"name": "ids", "datatype": "INT64", "shape": [1, 1], "data": [2]},
                          {"name": "hours", "datatype": "FP32", "shape": [1, 1], "data": ["x"]}]}),
    ];
    for body in oip {
        let (s, answer) = post(&gw, "/v2/models/foundation/infer", &body).await;
        assert_eq!(
            (s, answer["error"].as_str()),
            (400, Some("invalid_request")),
            "{body}: {answer}"
        );
    }
    gw.stop().await;
}
