//! The public prediction API: Open Inference Protocol and FHIR-Bundle prediction, over HTTP.

use crate::common;

use crate::common::{bearer_for, http, Gateway, Key, KeyServer};
use bedside::inference::oip::{InferResponse, ModelMetadata};
use serde_json::{json, Value};

fn parity() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(
            common::repo().join("models/legacy/deterioration_v1/parity_expected.json"),
        )
        .unwrap(),
    )
    .unwrap()
}

async fn call(
    gw: &Gateway,
    method: reqwest::Method,
    path: &str,
    body: Option<(&str, Vec<u8>)>,
) -> (u16, Value) {
    let mut req = http().request(method, format!("{}{path}", gw.url)).header(
        "Authorization",
        bearer_for(path.split('?').next().unwrap(), Key::Es384),
    );
    if let Some((content_type, bytes)) = body {
        req = req.header("Content-Type", content_type).body(bytes);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test]
async fn model_metadata_follows_the_open_inference_protocol() {
    let keys = KeyServer::start().await;
    let gw = Gateway::with_keys(&keys).await;
    let (s, body) = call(&gw, reqwest::Method::GET, "/v2/models/deterioration", None).await;
    assert_eq!(s, 200, "{body}");
    let meta: ModelMetadata = serde_json::from_value(body).unwrap();
    // 1.0.0 is retired (not loaded); 2.0.0 and the foundation head 5.0.0 in shadow; 4.0.1
    // active (its input is the one described).
    assert_eq!(meta.versions, ["2.0.0", "4.0.1", "5.0.0"]);
    assert_eq!(meta.inputs[0].shape, [-1, 48, 16]);
    assert_eq!(meta.inputs[0].datatype, "FP32");
    assert_eq!(meta.outputs[0].shape, [-1, 1]);
    let (s, _) = call(
        &gw,
        reqwest::Method::GET,
        "/v2/models/deterioration/versions/4.0.1",
        None,
    )
    .await;
    assert_eq!(s, 200);
    let (s, body) = call(&gw, reqwest::Method::GET, "/v2/models/nope", None).await;
    assert_eq!((s, body["error"].as_str()), (404, Some("unknown_model")));
    let ready = http()
        .get(format!("{}/v2/models/deterioration/ready", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    // Without a token: 401, like every other API.
    let resp = http()
        .get(format!("{}/v2/models/deterioration", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    gw.stop().await;
}

#[tokio::test]
async fn infer_returns_the_models_probabilities_for_a_batch() {
    // The Python reference values are those of the frozen 1.0.0 pipeline: a gateway that loads
    // that (retired) version beside the others, in shadow, answers for it by its versioned path.
    let keys = KeyServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = common::Gateway::start(common::GatewayOptions {
        jwks_url: Some(keys.jwks_url()),
        models_dir: common::models_with_v1_in_shadow(dir.path()),
        ..Default::default()
    })
    .await;
    let expected = parity();
    let fixtures = expected["fixtures"].as_object().unwrap();
    let names: Vec<&String> = fixtures.keys().collect();
    let tensors: Vec<Value> = names
        .iter()
        .map(|n| fixtures[*n]["tensor"].clone())
        .collect();
    let request = json!({
        "id": "batch-1",
        "inputs": [{"name": "INPUT__0", "shape": [tensors.len(), 48, 12], "datatype": "FP32", "data": tensors}],
    });
    let path = "/v2/models/deterioration/versions/1.0.0/infer";
    let (s, body) = call(
        &gw,
        reqwest::Method::POST,
        path,
        Some(("application/json", serde_json::to_vec(&request).unwrap())),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let response: InferResponse = serde_json::from_value(body).unwrap();
    assert_eq!(response.id.as_deref(), Some("batch-1"));
    assert_eq!(response.model_version.as_deref(), Some("1.0.0"));
    assert_eq!(response.outputs[0].shape, [names.len() as i64, 1]);
    let data = response.outputs[0].data.as_array().unwrap();
    for (i, name) in names.iter().enumerate() {
        let got = data[i].as_f64().unwrap();
        let want = fixtures[*name]["risk"].as_f64().unwrap();
        assert!((got - want).abs() < 1e-5, "{name}: {got} vs Python {want}");
    }

    // Flat data.
    let flat: Vec<Value> = tensors[0]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().clone())
        .collect();
    let one = json!({"inputs": [{"name": "INPUT__0", "shape": [1, 48, 12], "datatype": "FP32", "data": flat}]});
    let (s, body) = call(
        &gw,
        reqwest::Method::POST,
        "/v2/models/deterioration/versions/1.0.0/infer",
        Some(("application/json", serde_json::to_vec(&one).unwrap())),
    )
    .await;
    assert_eq!(s, 200, "{body}");

    for (bad, field) in [
        (json!({"inputs": []}), "inputs"),
        (
            json!({"inputs": [{"name": "INPUT__0", "shape": [1, 24, 12], "datatype": "FP32", "data": []}]}),
            "inputs[0].shape",
        ),
        (
            json!({"inputs": [{"name": "INPUT__0", "shape": [1, 48, 12], "datatype": "FP32", "data": [1, 2]}]}),
            "inputs[0].data",
        ),
        (
            json!({"inputs": [{"name": "INPUT__0", "shape": [1, 48, 12], "datatype": "BYTES", "data": []}]}),
            "inputs[0].datatype",
        ),
        (
            json!({"inputs": [{"name": "INPUT__0", "datatype": "FP32", "data": []}]}),
            "inputs[0].shape",
        ),
    ] {
        let (s, body) = call(
            &gw,
            reqwest::Method::POST,
            path,
            Some(("application/json", serde_json::to_vec(&bad).unwrap())),
        )
        .await;
        assert_eq!(
            (s, body["field"].as_str()),
            (400, Some(field)),
            "{bad} → {body}"
        );
    }
    gw.stop().await;
}

#[tokio::test]
async fn predict_from_a_fhir_bundle_is_reproducible_at_a_reference_time() {
    let keys = KeyServer::start().await;
    let gw = Gateway::with_keys(&keys).await;
    let expected = parity();
    let as_of = expected["now"].as_str().unwrap();
    let request: Value =
        serde_json::from_str(&common::fixture("patients/deteriorating.json")).unwrap();
    let mut bundle = request["prefetch"]["vitals"].clone();
    let path = "/api/v1/models/deterioration/predict";
    let body = serde_json::to_vec(&bundle).unwrap();

    let (s, first) = call(
        &gw,
        reqwest::Method::POST,
        &format!("{path}?asOf={as_of}"),
        Some(("application/fhir+json", body.clone())),
    )
    .await;
    assert_eq!(s, 200, "{first}");
    // The active version answers (its risk against Python is held by tests/models; 1.0.0's
    // by tests/models/parity.rs).
    let risk = first["risk"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&risk), "{first}");
    assert_eq!(first["version"], "4.0.1");
    assert_eq!(first["as_of"], as_of);
    assert_eq!(
        first["news2"]["total"],
        expected["fixtures"]["deteriorating.json"]["news2"]
    );
    assert_eq!(first["explanation"].as_array().unwrap().len(), 8);
    assert!(first["explanation"][0]["latest"]["observation"]
        .as_str()
        .unwrap()
        .starts_with("Observation/"));
    assert!(first["training_data"]
        .as_str()
        .unwrap()
        .contains("synthetic"));

    // Same data, same reference time (now from Bundle.timestamp): the same answer.
    bundle["timestamp"] = as_of.into();
    let (s, second) = call(
        &gw,
        reqwest::Method::POST,
        path,
        Some(("application/json", serde_json::to_vec(&bundle).unwrap())),
    )
    .await;
    assert_eq!(s, 200, "{second}");
    assert_eq!(first, second);

    // A nursing note (DocumentReference, as models/notes/ writes them) is not a model input:
    // a Bundle that carries one is read and scored exactly as before.
    let mut noted = bundle.clone();
    noted["entry"]
        .as_array_mut()
        .unwrap()
        .push(json!({"resource": {
        "resourceType": "DocumentReference", "id": "note-1", "status": "current",
        "docStatus": "final",
        "type": {"coding": [{"system": "http://loinc.org", "code": "34746-8"}]},
        "subject": {"reference": "Patient/x"}, "date": as_of,
        "content": [{"attachment": {"contentType": "text/plain; charset=utf-8",
            "data": "UHQgbG9va3MgdW53ZWxsLCBSTiBjb25jZXJuZWQu"}}]}}));
    let (s, with_note) = call(
        &gw,
        reqwest::Method::POST,
        path,
        Some(("application/fhir+json", serde_json::to_vec(&noted).unwrap())),
    )
    .await;
    assert_eq!(s, 200, "{with_note}");
    assert_eq!(first, with_note);

    // A reference time long after the data: nothing in the window.
    let (s, answer) = call(
        &gw,
        reqwest::Method::POST,
        &format!("{path}?asOf=2027-01-01T00:00:00Z"),
        Some(("application/json", body.clone())),
    )
    .await;
    assert_eq!(
        (s, answer["error"].as_str()),
        (422, Some("insufficient_data")),
        "{answer}"
    );

    let (s, answer) = call(
        &gw,
        reqwest::Method::POST,
        &format!("{path}?asOf=yesterday"),
        Some(("application/json", body.clone())),
    )
    .await;
    assert_eq!(
        (s, answer["field"].as_str()),
        (400, Some("asOf")),
        "{answer}"
    );

    let patient = serde_json::to_vec(&request["prefetch"]["patient"]).unwrap();
    let (s, answer) = call(
        &gw,
        reqwest::Method::POST,
        path,
        Some(("application/json", patient)),
    )
    .await;
    assert_eq!(
        (s, answer["field"].as_str()),
        (400, Some("resourceType")),
        "{answer}"
    );

    let (s, _) = call(
        &gw,
        reqwest::Method::POST,
        "/api/v1/models/nope/predict",
        Some(("application/json", body_of(&bundle))),
    )
    .await;
    assert_eq!(s, 404);
    gw.stop().await;
}

/// A version by path: the foundation head (5.0.0, token input, shadow) answers with what every
/// score carries — its version, status, data window, data quality, the readings that raised it
/// (as Observation references) and its training data — and without per-feature counterfactuals,
/// which a token model does not compute.
#[tokio::test]
async fn a_version_answers_by_path_and_the_foundation_head_explains_itself() {
    let keys = KeyServer::start().await;
    let gw = Gateway::with_keys(&keys).await;
    let request: Value =
        serde_json::from_str(&common::fixture("patients/deteriorating.json")).unwrap();
    let mut bundle = request["prefetch"]["vitals"].clone();
    let labs = request["prefetch"]["labs"]["entry"].clone();
    bundle["entry"]
        .as_array_mut()
        .unwrap()
        .extend(labs.as_array().cloned().unwrap_or_default());
    let as_of = parity()["now"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/models/deterioration/versions/5.0.0/predict?asOf={as_of}");
    let (s, head) = call(
        &gw,
        reqwest::Method::POST,
        &path,
        Some(("application/fhir+json", body_of(&bundle))),
    )
    .await;
    assert_eq!(s, 200, "{head}");
    assert_eq!(
        (head["version"].as_str(), head["status"].as_str()),
        (Some("5.0.0"), Some("shadow"))
    );
    let risk = head["risk"].as_f64().unwrap();
    assert!(risk > 0.0 && risk < 1.0, "{head}");
    let (start, end) = (
        head["window"]["start"].as_str().unwrap(),
        head["window"]["end"].as_str().unwrap(),
    );
    assert!(start < end && end == as_of, "{}", head["window"]);
    assert!(head["measurements"].as_u64().unwrap() > 50, "{head}");
    let drivers = head["drivers"].as_array().unwrap();
    assert!(
        !drivers.is_empty(),
        "a deteriorating chart has readings that raised the risk"
    );
    for d in drivers {
        assert!(
            d["observation"]
                .as_str()
                .unwrap()
                .starts_with("Observation/"),
            "{d}"
        );
        assert!(d["contribution"].as_f64().unwrap() > 0.0, "{d}");
    }
    assert!(head["explanation"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["risk_without"].is_null()));
    assert!(head["training_data"]
        .as_str()
        .unwrap()
        .contains("synthetic"));
    assert!(head["model_card"]
        .as_str()
        .unwrap()
        .ends_with("/models/deterioration/5.0.0/model-card"));
    // Over OIP its input is the token rows (id, hours) of its manifest's shape; ids must be
    // tokens of its vocabulary.
    let rows = |first_id: f64| {
        let mut x = vec![vec![0.0f64, 0.0]; 256];
        x[0][0] = 2.0; // [BOS]
        x[1][0] = first_id;
        json!({"inputs": [{"name": "INPUT__0", "shape": [1, 256, 2], "datatype": "FP32", "data": [x]}]})
    };
    let infer = "/v2/models/deterioration/versions/5.0.0/infer";
    let (s, body) = call(
        &gw,
        reqwest::Method::POST,
        infer,
        Some(("application/json", body_of(&rows(20.0)))),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let p = body["outputs"][0]["data"][0].as_f64().unwrap();
    assert!(p > 0.0 && p < 1.0, "{body}");
    for bad in [2.5, 100_000.0, -1.0] {
        let (s, body) = call(
            &gw,
            reqwest::Method::POST,
            infer,
            Some(("application/json", body_of(&rows(bad)))),
        )
        .await;
        assert_eq!(
            (s, body["field"].as_str()),
            (400, Some("inputs[0].data")),
            "{bad}: {body}"
        );
    }
    // The active version by path answers as without one.
    let (s, active) = call(
        &gw,
        reqwest::Method::POST,
        &format!("/api/v1/models/deterioration/versions/4.0.1/predict?asOf={as_of}"),
        Some(("application/fhir+json", body_of(&bundle))),
    )
    .await;
    assert_eq!(
        (s, active["version"].as_str()),
        (200, Some("4.0.1")),
        "{active}"
    );
    let (s, _) = call(
        &gw,
        reqwest::Method::POST,
        "/api/v1/models/deterioration/versions/9.9.9/predict",
        Some(("application/fhir+json", body_of(&bundle))),
    )
    .await;
    assert_eq!(s, 404);
    gw.stop().await;
}

fn body_of(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

#[tokio::test]
async fn a_configured_api_token_opens_the_prediction_api_but_not_cds_hooks() {
    use sha2::Digest as _;
    let keys = KeyServer::start().await;
    let token = "bedside-test-token-1b7f0c";
    let hash = hex::encode(sha2::Sha256::digest(token.as_bytes()));
    let gw = Gateway::start(common::GatewayOptions {
        jwks_url: Some(keys.jwks_url()),
        extra_toml: format!("[[api_tokens]]\nname = 'research-pipeline'\nsha256 = '{hash}'\n"),
        ..Default::default()
    })
    .await;
    let get = |auth: String| {
        http()
            .get(format!("{}/v2/models/deterioration", gw.url))
            .header("Authorization", auth)
            .send()
    };
    assert_eq!(
        get(format!("Bearer {token}"))
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        get(format!("Bearer {token}x"))
            .await
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    // JWTs keep working beside tokens.
    assert_eq!(
        get(bearer_for("/v2/models/deterioration", Key::Rs384))
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    // CDS Hooks only take client JWTs.
    let resp = http()
        .post(gw.service("deterioration"))
        .header("Authorization", format!("Bearer {token}"))
        .json(&common::patient("stable"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    gw.stop().await;
}

#[tokio::test]
async fn predictions_explain_themselves_and_read_odd_values_clamped_or_dropped() {
    let keys = KeyServer::start().await;
    let gw = Gateway::with_keys(&keys).await;
    let as_of = parity()["now"].as_str().unwrap().to_owned();
    let request: Value =
        serde_json::from_str(&common::fixture("patients/deteriorating.json")).unwrap();
    let mut bundle = request["prefetch"]["vitals"].clone();
    let path = format!("/api/v1/models/sepsis/predict?asOf={as_of}");
    let (s, body) = call(
        &gw,
        reqwest::Method::POST,
        &path,
        Some((
            "application/fhir+json",
            serde_json::to_vec(&bundle).unwrap(),
        )),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["version"], "3.0.1");
    let drivers = body["drivers"].as_array().unwrap();
    assert!(!drivers.is_empty(), "{body}");
    for d in drivers {
        assert!(d["observation"]
            .as_str()
            .unwrap()
            .starts_with("Observation/"));
        assert!(d["contribution"].as_f64().unwrap() > 0.0);
        assert!(!d["words"].as_str().unwrap().is_empty());
    }
    assert!(body["trends"].as_array().unwrap().len() >= 4, "{body}");

    // Changed: one heart rate of 260/min (plausible, beyond what the model saw in training) no
    // longer blocks the window: the model reads it clamped to the training range, the answer
    // counts it. One of 400/min (an artefact) is dropped and counted.
    let mut latest_hr = bundle["entry"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .filter(|e| e["resource"]["code"]["coding"][0]["code"] == "8867-4")
        .collect::<Vec<_>>();
    latest_hr.sort_by_key(|e| {
        e["resource"]["effectiveDateTime"]
            .as_str()
            .unwrap()
            .to_owned()
    });
    let n = latest_hr.len();
    latest_hr[n - 1]["resource"]["valueQuantity"]["value"] = 260.into();
    latest_hr[n - 2]["resource"]["valueQuantity"]["value"] = 400.into();
    let (s, body) = call(
        &gw,
        reqwest::Method::POST,
        &path,
        Some((
            "application/fhir+json",
            serde_json::to_vec(&bundle).unwrap(),
        )),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    assert!(body["risk"].as_f64().is_some(), "{body}");
    let quality = &body["data_quality"];
    assert_eq!(
        quality["clamped"]["outside training range, clamped: heart_rate"], 1,
        "{body}"
    );
    assert_eq!(
        quality["dropped"]["implausible value (outside physiological limits), dropped"], 1,
        "{body}"
    );
    gw.stop().await;
}
