//! Model governance over real HTTP with real models and JWTs: admin roles, an evaluation on
//! the site's own shadow records, promotion refused without one and granted with one (the
//! gateway reloads and the promoted version scores the next call), the decisions as FHIR
//! Provenance + AuditEvent, a refused reload reverting its decision, and a manifest that
//! cannot make itself active once its model is governed.

use crate::common;

use crate::common::{
    bearer, copy_models, http, patient, Gateway, GatewayOptions, Key, KeyServer, ADMIN_TOKEN,
};
use serde_json::{json, Value};

/// A token that may `report` and `promote` (not `operate`).
const GOVERNOR_TOKEN: &str = "test-governor-token";

async fn send(
    gw: &Gateway,
    token: Option<&str>,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http().request(method, format!("{}{path}", gw.url));
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// `GET path` with the governor's token: the body (the status must be 200).
async fn get(gw: &Gateway, path: &str) -> Value {
    let (status, body) = send(gw, Some(GOVERNOR_TOKEN), reqwest::Method::GET, path, None).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// Every card of `body` names model version `version`.
fn cards_name(body: &Value, version: &str) {
    for card in body["cards"].as_array().unwrap() {
        assert!(
            card["summary"].as_str().unwrap().contains(version),
            "{card}"
        );
    }
}

async fn post(gw: &Gateway, path: &str, body: Option<Value>) -> (u16, Value) {
    send(gw, Some(GOVERNOR_TOKEN), reqwest::Method::POST, path, body).await
}

fn version<'a>(models: &'a Value, model: &str, version: &str) -> &'a Value {
    models["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == model)
        .and_then(|m| {
            m["versions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["version"] == version)
        })
        .unwrap_or_else(|| panic!("{model} {version} in {models}"))
}

async fn call_deterioration(gw: &Gateway, patient_id: &str) -> Value {
    let mut request = patient("deteriorating");
    request["context"]["patientId"] = patient_id.into();
    let resp = http()
        .post(gw.service("deterioration"))
        .header("Authorization", bearer("deterioration", Key::Rs384))
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    resp.json().await.unwrap()
}

fn options(keys: &KeyServer, models: std::path::PathBuf, db: std::path::PathBuf) -> GatewayOptions {
    let governor = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        GOVERNOR_TOKEN.as_bytes(),
    ));
    GatewayOptions {
        jwks_url: Some(keys.jwks_url()),
        models_dir: models,
        db: Some(db),
        extra_toml: format!(
            "[[admin_tokens]]\nname = 'dr-governor'\nsha256 = '{governor}'\nroles = ['report', 'promote']\n[governance]\nmin_shadow_scores = 4\n"
        ),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_version_is_promoted_only_on_evidence_and_every_decision_is_on_record() {
    let dir = tempfile::tempdir().unwrap();
    let models = copy_models(dir.path());
    let db = dir.path().join("bedside.db");
    let keys = KeyServer::start().await;
    let gw = Gateway::start(options(&keys, models.clone(), db.clone())).await;
    let promote_path = "/admin/models/deterioration/2.0.0/promote";
    let reason =
        json!({"reason": "agrees with the active model on our wards; better ranked outcomes"});

    // Roles: no token 401; a token without `promote` 403; a governor may not operate.
    let (s, _) = send(
        &gw,
        None,
        reqwest::Method::POST,
        promote_path,
        Some(reason.clone()),
    )
    .await;
    assert_eq!(s, 401);
    let (s, body) = send(
        &gw,
        Some(ADMIN_TOKEN),
        reqwest::Method::POST,
        promote_path,
        Some(reason.clone()),
    )
    .await;
    assert_eq!(s, 403, "{body}");
    assert_eq!(body["error"], "forbidden", "{body}");
    let (s, _) = post(&gw, "/admin/services/deterioration/disable", None).await;
    assert_eq!(s, 403, "the governor token has no `operate` role");

    // The statuses as the manifests say.
    let list = get(&gw, "/admin/models").await;
    assert_eq!(version(&list, "deterioration", "4.0.1")["status"], "active");
    assert_eq!(version(&list, "deterioration", "2.0.0")["status"], "shadow");
    assert_eq!(version(&list, "deterioration", "1.0.0")["loaded"], false);

    // No evaluation: refused; an evaluation without shadow scores fails; so does the promotion.
    let (s, body) = post(&gw, promote_path, Some(reason.clone())).await;
    assert_eq!(s, 409, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("evaluate it first"),
        "{body}"
    );
    let (s, evaluation) = post(&gw, "/admin/models/deterioration/2.0.0/evaluate", None).await;
    assert_eq!(s, 200, "{evaluation}");
    assert_eq!(evaluation["passed"], false);
    let (s, body) = post(&gw, promote_path, Some(reason.clone())).await;
    assert_eq!(s, 409);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("shadow scores (0;"),
        "{body}"
    );

    // Six calls: the shadow versions (2.0.0 and the foundation head 5.0.0) score each after
    // the answer; one call at a time into the shadow lane, so that none is skipped.
    for i in 0..6 {
        call_deterioration(&gw, &format!("gov-{i}")).await;
        let shadow_line = format!(
            "bedside_service_shadow_total{{service=\"deterioration\"}} {}",
            2 * (i + 1)
        );
        let metrics = common::metrics_showing(&gw, &shadow_line).await;
        assert!(metrics.contains(&shadow_line), "{metrics}");
    }
    let (s, evaluation) = post(&gw, "/admin/models/deterioration/2.0.0/evaluate", None).await;
    assert_eq!(s, 200);
    assert_eq!(evaluation["passed"], true, "{evaluation}");
    let measured = &evaluation["evaluation"];
    assert_eq!(measured["shadow_scores"], 6, "{measured}");
    assert_eq!(measured["patients"], 6, "{measured}");
    assert_eq!(measured["comparison"]["active_version"], "4.0.1");
    assert_eq!(measured["comparison"]["pairs"], 6);
    assert!(
        measured["outcomes"].is_null(),
        "no outcome feed was imported"
    );

    // A malformed body is a 400; then the promotion, applied at once.
    let (s, _) = post(&gw, promote_path, Some(json!({"why": "x"}))).await;
    assert_eq!(s, 400);
    let (s, promoted) = post(&gw, promote_path, Some(reason.clone())).await;
    assert_eq!(s, 200, "{promoted}");
    assert_eq!(promoted["reloaded"], true);
    let decisions = promoted["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 2, "{promoted}");
    assert_eq!(
        (
            decisions[0]["version"].as_str(),
            decisions[0]["status"].as_str()
        ),
        (Some("2.0.0"), Some("active"))
    );
    assert_eq!(decisions[0]["evaluation_id"], evaluation["id"]);
    assert_eq!(
        (
            decisions[1]["version"].as_str(),
            decisions[1]["status"].as_str()
        ),
        (Some("4.0.1"), Some("shadow"))
    );
    assert_eq!(decisions[0]["actor"], "dr-governor");
    let list = get(&gw, "/admin/models").await;
    assert_eq!(version(&list, "deterioration", "2.0.0")["status"], "active");
    assert_eq!(version(&list, "deterioration", "4.0.1")["status"], "shadow");
    assert_eq!(
        version(&list, "deterioration", "4.0.1")["manifestStatus"],
        "active"
    );
    // The next call is scored by 2.0.0 for the clinician, 4.0.1 in the shadow.
    let body = call_deterioration(&gw, "gov-after").await;
    cards_name(&body, "v2.0.0");
    let report = get(&gw, "/admin/report").await;
    let active_v2 = report["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["service_id"] == "deterioration"
                && r["model_version"] == "2.0.0"
                && r["mode"] == "active"
        })
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(active_v2["predictions"], 1, "{active_v2}");

    // The model card names the promotion and the evaluation it rests on.
    let card: Value = http()
        .get(format!(
            "{}/models/deterioration/2.0.0/model-card?format=json",
            gw.url
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let maintenance = &card["ongoingMaintenance"];
    assert_eq!(
        maintenance["validityLocal"]["evaluationId"], evaluation["id"],
        "{maintenance}"
    );
    assert_eq!(
        maintenance["decisions"][0]["by"], "dr-governor",
        "{maintenance}"
    );
    assert_eq!(card["status"], "active");

    // Monitoring, per version and week, as JSON and in the report page.
    let (s, monitoring) = send(
        &gw,
        Some(ADMIN_TOKEN),
        reqwest::Method::GET,
        "/admin/monitoring",
        None,
    )
    .await;
    assert_eq!(s, 200, "{monitoring}");
    let v3 = monitoring["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["model"] == "deterioration" && v["version"] == "4.0.1" && v["mode"] == "active")
        .unwrap_or_else(|| panic!("{monitoring}"));
    assert_eq!(v3["weeks"][0]["predictions"], 6, "{v3}");
    assert_eq!(v3["weeks"][0]["abstention_rate"], 0.0, "{v3}");
    let page = http()
        .get(format!("{}/admin/report?format=html", gw.url))
        .header("Authorization", format!("Bearer {ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Monitoring, per model version and week")
            && page.contains("deterioration v4.0.1 (active): risk"),
        "{page}"
    );

    // A reload the gateway refuses (a corrupted model file elsewhere) reverts the decision.
    let sepsis = models.join("sepsis/3.0.1/model.pt");
    let good = std::fs::read(&sepsis).unwrap();
    std::fs::write(&sepsis, b"not a model").unwrap();
    let retire_path = "/admin/models/deterioration/4.0.1/retire";
    let retire = json!({"reason": "superseded"});
    let (s, body) = post(&gw, retire_path, Some(retire.clone())).await;
    assert_eq!(s, 409, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("reverted"),
        "{body}"
    );
    let list = get(&gw, "/admin/models").await;
    assert_eq!(version(&list, "deterioration", "4.0.1")["status"], "shadow");
    std::fs::write(&sepsis, good).unwrap();
    let (s, body) = post(&gw, retire_path, Some(retire)).await;
    assert_eq!(s, 200, "{body}");
    // The active version a service follows cannot be retired.
    let (s, body) = post(
        &gw,
        "/admin/models/deterioration/2.0.0/retire",
        Some(json!({"reason": "x"})),
    )
    .await;
    assert_eq!(s, 409);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("promote another version first"),
        "{body}"
    );

    // Every decision as FHIR Provenance + AuditEvent, oldest first.
    let (s, bundle) = send(
        &gw,
        Some(ADMIN_TOKEN),
        reqwest::Method::GET,
        "/admin/models/deterioration/history",
        None,
    )
    .await;
    assert_eq!(s, 200, "{bundle}");
    let resources: Vec<&Value> = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .collect();
    // promote + supersede, retire + its revert, retire again.
    assert_eq!(resources.len(), 10, "{bundle}");
    let first = resources[0];
    assert_eq!(first["resourceType"], "Provenance");
    assert_eq!(first["reason"][0]["text"], reason["reason"]);
    assert_eq!(
        first["target"][0]["identifier"]["value"],
        "deterioration|2.0.0"
    );
    assert!(first["agent"][0]["who"]["display"]
        .as_str()
        .unwrap()
        .contains("dr-governor"));
    assert_eq!(
        first["entity"][0]["what"]["identifier"]["value"],
        evaluation["id"].to_string()
    );
    assert_eq!(resources[1]["resourceType"], "AuditEvent");
    assert_eq!(resources[1]["subtype"][0]["code"], "model-promote");
    let revert = resources[7];
    assert_eq!(revert["agent"][0]["altId"], "bedside", "{revert}");
    gw.stop().await;

    // On restart the store's decisions hold; a manifest cannot make itself active: 1.0.0's
    // edited to `active` loads as shadow, since its model is governed.
    let manifest = models.join("deterioration/1.0.0/manifest.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replace("status = \"retired\"", "status = \"active\""),
    )
    .unwrap();
    let gw = Gateway::start(options(&keys, models, db)).await;
    let list = get(&gw, "/admin/models").await;
    assert_eq!(
        version(&list, "deterioration", "1.0.0")["status"],
        "shadow",
        "{list}"
    );
    assert_eq!(version(&list, "deterioration", "2.0.0")["status"], "active");
    assert_eq!(
        version(&list, "deterioration", "4.0.1")["status"],
        "retired"
    );
    assert_eq!(version(&list, "deterioration", "4.0.1")["loaded"], false);
    let body = call_deterioration(&gw, "gov-restart").await;
    cards_name(&body, "v2.0.0");
    gw.stop().await;
}
