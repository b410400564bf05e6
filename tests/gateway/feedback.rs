//! Feedback is stored durably: 200 only after commit, and it survives a restart.

use crate::common;

use crate::common::{bearer, http, Gateway, GatewayOptions, Key, KeyServer};
use bedside::store::Store;
use serde_json::{json, Value};

async fn post_feedback(gw: &Gateway, body: &Value) -> (u16, Value) {
    let resp = http()
        .post(format!("{}/feedback", gw.service("deterioration")))
        .header("Authorization", bearer("deterioration", Key::Es384))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn feedback_is_persisted_and_survives_a_restart() {
    let keys = KeyServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("feedback.db");
    let opts = || GatewayOptions {
        jwks_url: Some(keys.jwks_url()),
        db: Some(db.clone()),
        ..Default::default()
    };

    let gw = Gateway::start(opts()).await;
    // Get a real card first, then give feedback on it the way an EHR does.
    let resp = http()
        .post(gw.service("deterioration"))
        .header("Authorization", bearer("deterioration", Key::Rs384))
        .json(&common::patient("deteriorating"))
        .send()
        .await
        .unwrap();
    let cards: Value = resp.json().await.unwrap();
    let card = cards["cards"][0]["uuid"].as_str().unwrap().to_owned();
    let body = json!({"feedback": [
        {"card": card, "outcome": "overridden", "outcomeTimestamp": "2026-11-26T10:00:00Z",
         "overrideReason": {"reason": {"code": "already-aware", "system": "https://bedside.example.org/CodeSystem/override-reason", "display": "Already aware of the patient's condition"},
                            "userComment": "Seen by the rapid-response team at 09:40."}},
        {"card": card, "outcome": "accepted", "outcomeTimestamp": "2026-11-26T10:05:00Z", "acceptedSuggestions": [{"id": "s1"}]}
    ]});
    let (status, answer) = post_feedback(&gw, &body).await;
    assert_eq!(status, 200, "{answer}");
    // A retry of the same feedback is accepted and not stored twice.
    let (status, _) = post_feedback(&gw, &body).await;
    assert_eq!(status, 200);
    gw.stop().await;

    // A new process on the same database sees it.
    let gw = Gateway::start(opts()).await;
    let store = Store::open(&db).await.unwrap();
    let rows = store.feedback_for_card(&card).await.unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0].outcome, "overridden");
    assert_eq!(
        rows[0].override_reason_code.as_deref(),
        Some("already-aware")
    );
    assert_eq!(rows[0].client_iss.as_deref(), Some(common::ISS));
    assert_eq!(rows[0].tenant.as_deref(), Some("test-tenant"));
    let raw: Value = serde_json::from_str(&rows[0].raw_json).unwrap();
    assert_eq!(
        raw["overrideReason"]["userComment"],
        "Seen by the rapid-response team at 09:40."
    );
    assert_eq!(rows[1].outcome, "accepted");
    store.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn invalid_feedback_is_refused_and_nothing_is_stored() {
    let keys = KeyServer::start().await;
    let gw = Gateway::with_keys(&keys).await;
    let cases = [
        (json!({"feedback": []}), "feedback"),
        (
            json!({"feedback": [{"card": "c", "outcome": "ignored", "outcomeTimestamp": "2026-01-01T00:00:00Z"}]}),
            "",
        ),
        (
            json!({"feedback": [{"card": "c", "outcome": "accepted"}]}),
            "feedback[0].outcomeTimestamp",
        ),
        (
            json!({"feedback": [{"card": "c", "outcome": "accepted", "outcomeTimestamp": "yesterday"}]}),
            "feedback[0].outcomeTimestamp",
        ),
        // One bad item fails the whole request: nothing half-written.
        (
            json!({"feedback": [
            {"card": "good", "outcome": "accepted", "outcomeTimestamp": "2026-01-01T00:00:00Z"},
            {"outcome": "accepted", "outcomeTimestamp": "2026-01-01T00:00:00Z"}]}),
            "feedback[1].card",
        ),
    ];
    for (body, field) in cases {
        let (status, answer) = post_feedback(&gw, &body).await;
        assert_eq!(status, 400, "{body} → {answer}");
        if !field.is_empty() {
            assert_eq!(answer["field"], field, "{answer}");
        }
    }
    let store = Store::open(&gw.db).await.unwrap();
    assert_eq!(store.feedback_count().await.unwrap(), 0);
    gw.stop().await;
}

#[tokio::test]
async fn the_spec_feedback_examples_are_accepted() {
    let keys = KeyServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bedside.db");
    let names = [
        "suggestion-accepted",
        "overridden-without-reason",
        "overridden-with-reason",
    ];
    let bodies: Vec<Value> = names
        .iter()
        .map(|name| {
            serde_json::from_str(&common::fixture(&format!(
                "spec/cds-hooks-2.0/feedback/{name}.json"
            )))
            .unwrap()
        })
        .collect();
    // The examples' cards, as if bedside had given them to this client: feedback is taken
    // only on the caller's own cards.
    let cards: Vec<String> = bodies
        .iter()
        .flat_map(|b| b["feedback"].as_array().unwrap().clone())
        .map(|item| item["card"].as_str().unwrap().to_owned())
        .collect();
    common::seed_cards(&db, &common::test_client_scope(), &cards).await;
    let gw = Gateway::start(GatewayOptions {
        jwks_url: Some(keys.jwks_url()),
        db: Some(db),
        ..Default::default()
    })
    .await;
    for (name, body) in names.iter().zip(&bodies) {
        let (status, answer) = post_feedback(&gw, body).await;
        assert_eq!(status, 200, "{name}: {answer}");
    }
    let store = Store::open(&gw.db).await.unwrap();
    assert_eq!(store.feedback_count().await.unwrap(), 3);
    gw.stop().await;
}
