//! `bedside demo` as a user meets it: the demo EHR in headless Chromium (`tests/smart/demo-ehr.mjs`)
//! through patient list → patient-view → card → SMART app → app feedback → order-sign →
//! suggestion → override → report; and its authorization server and FHIR facade refusing what
//! a real EHR's would. The demo runs as the real binary, authentication on.
//!
//! Screenshots go to `target/demo-screenshots/`; with `BEDSIDE_UPDATE_SCREENSHOTS=1` also to
//! `smart-launch/screenshots/` (the README's, committed).

use base64::Engine as _;
use serde_json::{json, Value};
use sha2::Digest as _;

use crate::common::demo::Demo;
use crate::common::{self, repo};

fn row<'a>(report: &'a Value, service: &str) -> &'a Value {
    report["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["service_id"] == service && r["mode"] == "active")
        .unwrap_or_else(|| panic!("{service} not in {report}"))
}

#[tokio::test]
async fn the_demo_ehr_runs_the_whole_loop_in_a_browser() {
    let demo = Demo::start(&[]);
    let shots = repo().join("target/demo-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let args = json!({
        "url": format!("{}/", demo.ehr),
        "screenshots": shots,
        "patient": "demo-deteriorating",
        "aki_patient": "cohort-20261206-10",
    });
    let (ok, seen) = tokio::task::spawn_blocking(move || common::run_node("demo-ehr.mjs", &args))
        .await
        .unwrap();
    assert!(ok, "demo-ehr.mjs failed: {seen}");
    // The list: the dozen synthetic patients.
    assert_eq!(seen["patients"].as_array().unwrap().len(), 12, "{seen}");
    // patient-view: the deterioration card, as an EHR renders it.
    let card = &seen["card"];
    assert_eq!(card["service"], "deterioration", "{card}");
    assert_eq!(card["indicator"], "critical", "{card}");
    assert!(
        card["summary"].as_str().unwrap().contains("v4.0.1"),
        "{card}"
    );
    // The SMART link opened bedside's app in the EHR's frame, on this patient's card.
    let app = &seen["app"];
    assert!(app["url"].as_str().unwrap().contains("/smart/app"), "{app}");
    let text = app["text"].as_str().unwrap();
    assert!(
        text.contains("synthetic data") && text.contains("Why: the observations"),
        "{text}"
    );
    assert!(
        seen["app_feedback"]["text"]
            .as_str()
            .unwrap()
            .contains("Your feedback was recorded"),
        "{seen}"
    );
    // order-sign: the nephrotoxic-order card; its suggestion deleted the draft order.
    let aki = &seen["aki"];
    assert!(
        !aki["cards"].as_array().unwrap().is_empty(),
        "no AKI card: {aki}"
    );
    assert_eq!(
        aki["draft_orders_before"].as_array().unwrap().len(),
        1,
        "{aki}"
    );
    assert!(
        aki["draft_orders_after"].as_array().unwrap().is_empty(),
        "{aki}"
    );
    assert!(
        aki["feedback_status"].as_str().unwrap().contains("200"),
        "{aki}"
    );
    // Override with a reason and a comment.
    let overridden = seen["override"]["status_text"].as_str().unwrap();
    assert!(
        overridden.contains("Overridden") && overridden.contains("200"),
        "{overridden}"
    );
    assert!(
        seen["report"]["text"]
            .as_str()
            .unwrap()
            .contains("feedback report"),
        "{seen}"
    );
    assert!(
        seen["csp_violations"].as_array().unwrap().is_empty(),
        "{seen}"
    );
    // What the clicks did, in bedside's own report.
    let report = demo.report().await;
    let aki_row = row(&report, "aki-nephrotoxic");
    assert_eq!(aki_row["accepted"], 1, "{aki_row}");
    assert_eq!(aki_row["suggestions_accepted"], 1, "{aki_row}");
    let deterioration = row(&report, "deterioration");
    assert!(
        deterioration["overridden"].as_u64().unwrap() >= 1,
        "{deterioration}"
    );
    // The app's "agree" landed in the same report.
    assert!(
        deterioration["accepted"].as_u64().unwrap() >= 1,
        "{deterioration}"
    );
    assert_eq!(
        deterioration["override_reasons"]
            .as_object()
            .unwrap()
            .values()
            .filter_map(Value::as_u64)
            .sum::<u64>(),
        deterioration["overridden"].as_u64().unwrap(),
        "{deterioration}"
    );
    if std::env::var_os("BEDSIDE_UPDATE_SCREENSHOTS").is_some() {
        let committed = repo().join("smart-launch/screenshots");
        std::fs::create_dir_all(&committed).unwrap();
        for name in ["ehr.png", "card.png", "app.png"] {
            std::fs::copy(shots.join(name), committed.join(format!("demo-{name}"))).unwrap();
        }
    }
}

/// A PKCE pair (verifier, S256 challenge).
fn pkce() -> (String, String) {
    let verifier = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

#[tokio::test]
async fn the_demo_authorization_server_and_fhir_facade_refuse_what_an_ehr_would() {
    let demo = Demo::start(&[]);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let fhir = format!("{}/fhir", demo.ehr);
    let redirect_uri = format!("{}/smart/callback", demo.gateway);
    let location =
        |r: &reqwest::Response| url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    let param = |u: &url::Url, name: &str| {
        u.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    // Without a token: 401 with an OperationOutcome.
    let r = http
        .get(format!("{fhir}/Observation?patient=demo-stable"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
    assert_eq!(
        r.json::<Value>().await.unwrap()["resourceType"],
        "OperationOutcome"
    );
    // Another site's page cannot fire hooks through the demo EHR.
    let r = http
        .post(format!(
            "{}/api/patients/demo-stable/hooks/patient-view",
            demo.ehr
        ))
        .header("Origin", "https://evil.example")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    // The EHR launches only bedside's app.
    let r = http
        .get(format!("{}/launch", demo.ehr))
        .query(&[
            ("patient", "demo-stable"),
            ("url", "https://evil.example/smart/launch"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let launch = |app_context: &'static str| {
        let http = http.clone();
        let url = format!("{}/launch", demo.ehr);
        let app = format!("{}/smart/launch", demo.gateway);
        async move {
            let r = http
                .get(url)
                .query(&[
                    ("patient", "demo-stable"),
                    ("url", app.as_str()),
                    ("appContext", app_context),
                ])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 302);
            let to = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
            to.query_pairs()
                .find(|(k, _)| k == "launch")
                .map(|(_, v)| v.into_owned())
                .unwrap()
        }
    };
    let authorize = |launch: String, challenge: String, redirect: String| {
        let http = http.clone();
        let url = format!("{}/auth/authorize", demo.ehr);
        let aud = fhir.clone();
        async move {
            http.get(url)
                .query(&[
                    ("response_type", "code"),
                    ("client_id", "bedside-demo"),
                    ("redirect_uri", redirect.as_str()),
                    ("launch", launch.as_str()),
                    ("scope", "launch patient/Observation.rs"),
                    ("state", "s1"),
                    ("aud", aud.as_str()),
                    ("code_challenge", challenge.as_str()),
                    ("code_challenge_method", "S256"),
                ])
                .send()
                .await
                .unwrap()
        }
    };
    // An unregistered redirect URI is refused here, never redirected to.
    let (_, challenge) = pkce();
    let r = authorize(
        launch("").await,
        challenge,
        "https://evil.example/cb".into(),
    )
    .await;
    assert_eq!(r.status().as_u16(), 400);
    let token = |code: String, verifier: String| {
        let http = http.clone();
        let url = format!("{}/auth/token", demo.ehr);
        let redirect = redirect_uri.clone();
        async move {
            http.post(url)
                .form(&[
                    ("grant_type", "authorization_code"),
                    ("code", code.as_str()),
                    ("redirect_uri", redirect.as_str()),
                    ("code_verifier", verifier.as_str()),
                    ("client_id", "bedside-demo"),
                ])
                .send()
                .await
                .unwrap()
        }
    };
    // A verifier that does not match the challenge: no token.
    let (_, challenge) = pkce();
    let r = authorize(launch("").await, challenge, redirect_uri.clone()).await;
    assert_eq!(r.status().as_u16(), 302);
    let code = param(&location(&r), "code").unwrap();
    assert_eq!(param(&location(&r), "state").as_deref(), Some("s1"));
    let r = token(code, pkce().0).await;
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");
    // The right verifier: a token with the launch context and the card's appContext.
    let (verifier, challenge) = pkce();
    let r = authorize(
        launch("{\"prediction\":\"p1\"}").await,
        challenge,
        redirect_uri.clone(),
    )
    .await;
    let code = param(&location(&r), "code").unwrap();
    let r = token(code.clone(), verifier.clone()).await;
    assert_eq!(r.status().as_u16(), 200);
    let granted: Value = r.json().await.unwrap();
    assert_eq!(granted["patient"], "demo-stable", "{granted}");
    // Only what it grants: no `openid` without an id_token.
    assert_eq!(
        granted["scope"], "launch patient/Observation.rs",
        "{granted}"
    );
    assert_eq!(
        granted["appContext"], "{\"prediction\":\"p1\"}",
        "{granted}"
    );
    // A code works once.
    assert_eq!(token(code, verifier).await.status().as_u16(), 400);
    let access = granted["access_token"].as_str().unwrap().to_owned();
    // The token opens its patient's record only, in pages with `next` links.
    let r = http
        .get(format!("{fhir}/Observation?patient=demo-deteriorating"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let page: Value = http
        .get(format!(
            "{fhir}/Observation?patient=demo-stable&category=vital-signs&_sort=-date&_count=5"
        ))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["entry"].as_array().unwrap().len(), 5, "{page}");
    assert!(page["total"].as_u64().unwrap() > 5, "{page}");
    let next = page["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == "next")
        .unwrap()["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let second: Value = http
        .get(next)
        .bearer_auth(&access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let first_time = page["entry"][4]["resource"]["effectiveDateTime"]
        .as_str()
        .unwrap()
        .to_owned();
    let second_time = second["entry"][0]["resource"]["effectiveDateTime"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(second_time <= first_time, "{first_time} then {second_time}");
    // The CapabilityStatement and SMART configuration an app discovers.
    let metadata: Value = http
        .get(format!("{fhir}/metadata"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(metadata["fhirVersion"], "4.0.1");
    let smart: Value = http
        .get(format!("{fhir}/.well-known/smart-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(smart["code_challenge_methods_supported"], json!(["S256"]));
}
