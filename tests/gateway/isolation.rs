//! Two EHRs behind one gateway (security review, issue 14, item 5): each has a patient whose
//! id is `pat-1`, and they are two people. A card shown to EHR B must not suppress EHR A's,
//! B's "already aware" must not silence A, B cannot send feedback on A's card, and the same
//! `hookInstance` from both does not mix their records — over real HTTP, real JWTs, real models.

use crate::common;

use crate::common::{claims, http, patient, sign, Gateway, GatewayOptions, Key, KeyServer, ISS};
use serde_json::{json, Value};

const ISS_B: &str = "https://ehr-b.test/cds-client";
const SVC: &str = "deterioration-encounter-start";

fn bearer_as(iss: &str, path: &str) -> String {
    let mut c = claims(SVC);
    c["iss"] = iss.into();
    c["aud"] = format!("{}{path}", common::PUBLIC).into();
    format!("Bearer {}", sign(&c, Key::Rs384, None))
}

fn encounter_start(name: &str, patient_id: &str, hook_instance: &str) -> Value {
    let mut r = patient(name);
    r["hook"] = "encounter-start".into();
    r["hookInstance"] = hook_instance.into();
    r["context"]["patientId"] = patient_id.into();
    r["context"]["encounterId"] = "enc-1".into();
    r["prefetch"]["encounter"] = json!({"resourceType": "Encounter", "id": "enc-1", "status": "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "location": [{"location": {"display": "Ward 1"}}]});
    r
}

async fn call(gw: &Gateway, iss: &str, body: &Value) -> Vec<Value> {
    let resp = http()
        .post(gw.service(SVC))
        .header(
            "Authorization",
            bearer_as(iss, &format!("/cds-services/{SVC}")),
        )
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{iss}");
    let v: Value = resp.json().await.unwrap();
    v["cards"].as_array().cloned().unwrap_or_default()
}

async fn feedback(gw: &Gateway, iss: &str, card: &str) -> (u16, Value) {
    let body = json!({"feedback": [{"card": card, "outcome": "overridden",
        "overrideReason": {"reason": {"code": "already-aware", "system": "https://bedside.example.org/CodeSystem/override-reason"}},
        "outcomeTimestamp": chrono::Utc::now().to_rfc3339()}]});
    let resp = http()
        .post(format!("{}/feedback", gw.service(SVC)))
        .header(
            "Authorization",
            bearer_as(iss, &format!("/cds-services/{SVC}/feedback")),
        )
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn one_ehrs_cards_and_overrides_never_reach_another_ehrs_patient_with_the_same_id() {
    let keys = KeyServer::start().await;
    let gw = Gateway::start(GatewayOptions {
        jwks_url: Some(keys.jwks_url()),
        client_toml: format!(
            "\n[[clients]]\niss = '{ISS_B}'\njwks_urls = ['{}']\nfhir_servers = []\n",
            keys.jwks_url()
        ),
        ..Default::default()
    })
    .await;

    // B's patient pat-1 gets a card, and B's clinician says "already aware".
    let b_cards = call(
        &gw,
        ISS_B,
        &encounter_start("deteriorating", "pat-1", "same-hi-1"),
    )
    .await;
    assert_eq!(b_cards.len(), 1, "B's patient gets a card");
    let b_card = b_cards[0]["uuid"].as_str().unwrap().to_owned();
    let (status, body) = feedback(&gw, ISS_B, &b_card).await;
    assert_eq!(status, 200, "{body}");
    // B again within the suppression window: silent (B's own state holds).
    assert!(call(
        &gw,
        ISS_B,
        &encounter_start("deteriorating", "pat-1", "b-hi-2")
    )
    .await
    .is_empty());

    // A's patient pat-1, with the very same hookInstance B used: A's card is shown.
    let a_cards = call(
        &gw,
        ISS,
        &encounter_start("deteriorating", "pat-1", "same-hi-1"),
    )
    .await;
    assert_eq!(
        a_cards.len(),
        1,
        "B's card and B's override must not silence A's patient"
    );
    let a_card = a_cards[0]["uuid"].as_str().unwrap().to_owned();
    assert_ne!(
        a_card, b_card,
        "one hookInstance from two clients: two cards"
    );

    // B cannot answer for A's card, and an unknown card is refused the same way.
    for card in [a_card.as_str(), "6f1c2a9e-0000-4000-8000-00000000dead"] {
        let (status, body) = feedback(&gw, ISS_B, card).await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["error"], "unknown_card", "{body}");
        assert_eq!(body["field"], "feedback[0].card", "{body}");
    }
    // A's own suppression still works: the next call for A's patient is silent.
    assert!(call(
        &gw,
        ISS,
        &encounter_start("deteriorating", "pat-1", "a-hi-2")
    )
    .await
    .is_empty());
    let (status, body) = feedback(&gw, ISS, &a_card).await;
    assert_eq!(status, 200, "{body}");
    gw.stop().await;
}
