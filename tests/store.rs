//! The store on both backends: every scenario runs on a SQLite file and on a real PostgreSQL
//! server (a fresh cluster per test), through the same `Store` API.

mod common;

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use bedside::cds::wire::Feedback;
use bedside::cds::Caller;
use bedside::store::{AuditRecord, PatientView, PredictionRecord, Scope, Store, StoreError};
use common::postgres::PostgresServer;

/// Runs each scenario (an `async fn(&Store)` below) as `sqlite::<name>` and `postgres::<name>`.
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = bedside::store::Store::open(&dir.path().join("bedside.db"))
                        .await
                        .unwrap();
                    assert_eq!(store.backend_name(), "sqlite");
                    super::$scenario(&store).await;
                    store.close().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let server = super::PostgresServer::start().await;
                    let store = bedside::store::Store::connect(&server.url()).await.unwrap();
                    assert_eq!(store.backend_name(), "postgres");
                    super::$scenario(&store).await;
                    store.close().await;
                }
            )*
        }
    };
}

on_both_backends!(
    feedback_is_stored_once_and_a_retry_is_accepted,
    a_prediction_reads_back_and_keeps_only_the_patient_pseudonym,
    last_shown_respects_service_patient_mode_outcome_and_since,
    last_override_finds_only_that_reason_on_this_patients_cards,
    alerts_shown_counts_only_shown_active_alerts_of_the_unit,
    the_report_counts_exactly_what_was_recorded,
    concurrent_records_share_commits_and_each_caller_sees_its_own,
    one_ehrs_state_never_reaches_another_ehrs_patient_with_the_same_id,
    retention_purges_exactly_the_rows_past_their_period,
    governance_pairs_shadow_scores_labels_outcomes_and_keeps_decisions,
    replicas_share_token_ids_and_kill_switches,
);

async fn replicas_share_token_ids_and_kill_switches(store: &Store) {
    // A token id is fresh once; a replay is refused until its token expires; another
    // issuer's same id is another token; expired ids are forgotten.
    assert!(store.remember_token("iss-a", "j1", 100, 10).await.unwrap());
    assert!(!store.remember_token("iss-a", "j1", 100, 50).await.unwrap());
    assert!(store.remember_token("iss-b", "j1", 100, 50).await.unwrap());
    assert!(store.remember_token("iss-a", "j1", 300, 101).await.unwrap());
    assert!(!store.remember_token("iss-a", "j1", 300, 200).await.unwrap());
    assert_eq!(
        store.forget_expired_tokens(250).await.unwrap(),
        1,
        "iss-b's"
    );
    // Kill switches: on record, newest word wins.
    assert!(store.disabled_services().await.unwrap().is_empty());
    let now = Utc::now();
    store
        .set_service_switch("deterioration", true, "ops", now)
        .await
        .unwrap();
    store
        .set_service_switch("sepsis-screen", true, "ops", now)
        .await
        .unwrap();
    store
        .set_service_switch("sepsis-screen", false, "ops", now)
        .await
        .unwrap();
    assert_eq!(
        store.disabled_services().await.unwrap(),
        ["deterioration".to_owned()].into_iter().collect()
    );
}

async fn governance_pairs_shadow_scores_labels_outcomes_and_keeps_decisions(store: &Store) {
    use bedside::governance::{evaluate, GovernanceSettings};
    use bedside::store::{Mode, NewDecision, Outcome};
    let now = Utc::now();
    let t0 = now - Duration::hours(48);
    // Six calls scored by the active 1.0.0 and the shadow 2.0.0; one more only in the shadow;
    // one shadow score of another client on a call with the same hookInstance (no pair).
    for i in 0..7 {
        let at = t0 + Duration::hours(i);
        let mut active = common::prediction_record(&format!("a{i}"), at);
        active.hook_instance = format!("hi-{i}");
        active.patient_id = Some(format!("p{i}"));
        active.risk = Some(0.1 * i as f64);
        active.indicator = (i >= 3).then(|| "warning".to_owned());
        let mut shadow = active.clone();
        shadow.id = format!("s{i}");
        shadow.model_version = "2.0.0".into();
        shadow.mode = Mode::Shadow;
        shadow.outcome = Outcome::Shadow;
        shadow.risk = Some(0.9 - 0.1 * i as f64);
        shadow.indicator = (i <= 2).then(|| "warning".to_owned());
        if i < 6 {
            store.record_prediction(&active).await.unwrap();
        }
        store.record_prediction(&shadow).await.unwrap();
    }
    let mut other = common::prediction_record("x0", t0);
    other.scope = Scope::new(Some("https://other.example"), None, None);
    other.hook_instance = "hi-0".into();
    other.model_version = "2.0.0".into();
    other.mode = Mode::Shadow;
    other.outcome = Outcome::Shadow;
    store.record_prediction(&other).await.unwrap();
    let scores = store
        .shadow_scores("deterioration", "2.0.0", t0 - Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(scores.len(), 8);
    let paired: Vec<_> = scores.iter().filter(|s| s.active_risk.is_some()).collect();
    assert_eq!(paired.len(), 6, "another client's call is never a pair");
    assert!(paired
        .iter()
        .all(|s| s.active_version.as_deref() == Some("1.0.0")));
    // Outcomes: p0 and p1 deteriorate 2 h after their scores; known through t0 + 30 h.
    let hash = |id: &str| {
        let store = store.clone();
        let id = id.to_owned();
        async move { store.pseudonym("", &id).await.unwrap() }
    };
    let outcomes = vec![
        (hash("p0").await, t0 + Duration::hours(2)),
        (hash("p1").await, t0 + Duration::hours(3)),
        (hash("p1").await, t0 + Duration::hours(3)),
    ];
    let through = t0 + Duration::hours(30);
    let added = store
        .record_outcomes("deterioration", &outcomes, through, now)
        .await
        .unwrap();
    assert_eq!(added, 2, "the same outcome twice is kept once");
    // An older feed never moves `through` back.
    store
        .record_outcomes("deterioration", &[], t0, now)
        .await
        .unwrap();
    let back = store
        .outcomes_through("deterioration")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.timestamp_millis(), through.timestamp_millis());
    let settings = GovernanceSettings {
        min_shadow_scores: 8,
        min_outcome_events: 2,
        ..GovernanceSettings::default()
    };
    let e = evaluate(store, "deterioration", "2.0.0", 12.0, &settings, now)
        .await
        .unwrap();
    assert_eq!(e.shadow_scores, 8);
    let c = e.comparison.as_ref().unwrap();
    assert_eq!((c.pairs, c.agreed), (6, 0), "they alert on opposite halves");
    let o = e.outcomes.as_ref().unwrap();
    // Scores at t0+0..6 h end their 12 h horizon by t0+18 h ≤ through: all 8 labelled.
    // Events: p0 (s0), p1 (s1, and the other client's score of the same pseudonym at t0).
    assert_eq!((o.labelled, o.events), (8, 3), "{o:?}");
    assert_eq!((o.paired_auroc, o.active_auroc), (Some(1.0), Some(0.0)));
    assert!(e.passed, "{:?}", e.criteria);
    // Evaluations and decisions read back; the newest decision is the status.
    let json = serde_json::to_value(&e).unwrap();
    let id = store
        .record_evaluation("deterioration", "2.0.0", now, e.passed, &json)
        .await
        .unwrap();
    let latest = store
        .latest_evaluation("deterioration", "2.0.0")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((latest.id, latest.passed), (id, true));
    assert_eq!(latest.evaluation, json);
    let decision = |version: &str, status: &str, previous: &str| NewDecision {
        model: "deterioration".into(),
        version: version.into(),
        status: status.into(),
        previous: previous.into(),
        at: now,
        actor: "dr-governance".into(),
        via: "cli".into(),
        reason: "better on our own wards".into(),
        evaluation_id: (status == "active").then_some(id),
    };
    let ids = store
        .record_decisions(&[
            decision("2.0.0", "active", "shadow"),
            decision("1.0.0", "shadow", "active"),
        ])
        .await
        .unwrap();
    assert!(ids[0] < ids[1]);
    store
        .record_decisions(&[decision("1.0.0", "retired", "shadow")])
        .await
        .unwrap();
    let statuses = store.decided_statuses().await.unwrap();
    assert_eq!(
        statuses[&("deterioration".to_owned(), "2.0.0".to_owned())],
        "active"
    );
    assert_eq!(
        statuses[&("deterioration".to_owned(), "1.0.0".to_owned())],
        "retired"
    );
    let all = store.decisions(Some("deterioration")).await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0].evaluation_id, Some(id));
    assert!(store.decisions(Some("sepsis")).await.unwrap().is_empty());
}

async fn retention_purges_exactly_the_rows_past_their_period(store: &Store) {
    use bedside::store::{Purged, Retention};
    let day = std::time::Duration::from_secs(86_400);
    let now = Utc::now();
    let mut old = prediction("card-old");
    old.at = now - Duration::days(400);
    let mut recent = prediction("card-recent");
    recent.at = now - Duration::days(10);
    // Both keep their model input (a service with `[learning] store_inputs`).
    let input = |at: chrono::DateTime<Utc>| {
        Some(Box::new(bedside::store::ModelInput {
            window_start: at - Duration::hours(24),
            step_seconds: 3600,
            features: vec!["heart_rate".into()],
            matrix: vec![0.5, 1.0],
            quasi: bedside::store::QuasiIdentifiers::generalise(
                Some("1950-01-01"),
                Some("female"),
                Some("02139"),
                at,
            ),
        }))
    };
    old.inputs = input(old.at);
    recent.inputs = input(recent.at);
    store.record_prediction(&old).await.unwrap();
    store.record_prediction(&recent).await.unwrap();
    let fb: Feedback = serde_json::from_value(json!({
        "card": "card-recent", "outcome": "accepted", "outcomeTimestamp": now.to_rfc3339()
    }))
    .unwrap();
    let raw = serde_json::to_string(&fb).unwrap();
    assert_eq!(
        store
            .record_feedback("deterioration", None, &[(fb, raw.as_str())])
            .await
            .unwrap(),
        1
    );
    store
        .record_audits(&[AuditRecord {
            action: "hook",
            service_id: "deterioration".to_owned(),
            outcome: "answered".to_owned(),
            http_status: 200,
            ..Default::default()
        }])
        .await
        .unwrap();
    assert_eq!(store.stored_inputs().await.unwrap(), 2);
    let mut retention = Retention {
        predictions: Some(365 * day),
        inputs: None,
        feedback: Some(60 * day),
        audit: None,
    };
    // 40 days on: the 400-day-old prediction is past its year, and its input goes with it
    // (inputs have no period of their own yet); the rest stays.
    let purged = store
        .purge(&retention, now + Duration::days(40))
        .await
        .unwrap();
    assert_eq!(
        purged,
        Purged {
            predictions: 1,
            inputs: 1,
            feedback: 0,
            audit: 0
        }
    );
    assert_eq!(store.stored_inputs().await.unwrap(), 1);
    retention.inputs = Some(30 * day);
    assert!(store.prediction("card-old").await.unwrap().is_none());
    assert!(store.prediction("card-recent").await.unwrap().is_some());
    assert_eq!(store.feedback_count().await.unwrap(), 1);
    // 100 days on: the feedback is past its 60 days and the input past its 30; the
    // 110-day-old prediction and the audit event (kept: no audit retention) stay.
    let purged = store
        .purge(&retention, now + Duration::days(100))
        .await
        .unwrap();
    assert_eq!(
        purged,
        Purged {
            predictions: 0,
            inputs: 1,
            feedback: 1,
            audit: 0
        }
    );
    assert_eq!(store.stored_inputs().await.unwrap(), 0);
    assert_eq!(store.feedback_count().await.unwrap(), 0);
    assert!(store.prediction("card-recent").await.unwrap().is_some());
    assert_eq!(store.audit_rows().await.unwrap().len(), 1);
    // Nothing configured: nothing purged, whatever the date.
    let none = store
        .purge(&Retention::default(), now + Duration::days(10_000))
        .await
        .unwrap();
    assert_eq!(none, Purged::default());
    assert!(store.prediction("card-recent").await.unwrap().is_some());
}

#[tokio::test]
async fn migrations_apply_once_and_a_reconnect_finds_them_applied_on_postgres() {
    let server = PostgresServer::start().await;
    let first = Store::connect(&server.url()).await.unwrap();
    let pseudonym = first.pseudonym("", "p1").await.unwrap();
    first.record_prediction(&prediction("c1")).await.unwrap();
    first.close().await;
    let second = Store::connect(&server.url()).await.unwrap();
    assert_eq!(second.pseudonym("", "p1").await.unwrap(), pseudonym);
    assert!(second.prediction("c1").await.unwrap().is_some());
    second.close().await;
}

/// Two gateway processes' stores on one PostgreSQL: a decision key held by one makes the other
/// wait (and give up after its wait), another key does not; released, the key is free again;
/// a holder that goes away (its call cancelled) frees it too.
#[tokio::test]
async fn decision_locks_hold_across_stores_sharing_one_postgresql() {
    use std::time::Duration as StdDuration;
    let server = PostgresServer::start().await;
    let a = Store::connect(&server.url()).await.unwrap();
    let b = Store::connect(&server.url()).await.unwrap();
    let wait = StdDuration::from_millis(300);
    let key = |k: &str| vec![k.to_owned()];
    let held = a.lock_decision(&key("patient-1"), wait).await.unwrap();
    let started = std::time::Instant::now();
    assert!(matches!(
        b.lock_decision(&key("patient-1"), wait).await,
        Err(StoreError::Busy)
    ));
    // The server gives up at three quarters of the wait (its lock_timeout), before the caller.
    assert!(started.elapsed() >= StdDuration::from_millis(200));
    let other = b.lock_decision(&key("unit-1"), wait).await.unwrap();
    // b waits for a's release and then has the key.
    let waiting = tokio::spawn({
        let b = b.clone();
        async move {
            b.lock_decision(&key("patient-1"), StdDuration::from_secs(5))
                .await
                .map(|_| ())
        }
    });
    tokio::time::sleep(StdDuration::from_millis(100)).await;
    held.release().await;
    waiting.await.unwrap().unwrap();
    other.release().await;
    // Dropped without release: the key is free once its transaction is rolled back.
    drop(a.lock_decision(&key("patient-2"), wait).await.unwrap());
    b.lock_decision(&key("patient-2"), StdDuration::from_secs(5))
        .await
        .unwrap()
        .release()
        .await;
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn a_sqlite_url_opens_the_same_database_as_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bedside.db");
    let store = Store::open(&path).await.unwrap();
    store.record_prediction(&prediction("c1")).await.unwrap();
    store.close().await;
    let url = format!("sqlite://{}", path.display());
    let store = Store::connect(&url).await.unwrap();
    assert!(store.prediction("c1").await.unwrap().is_some());
    store.close().await;
}

// === helpers ===

/// A fixed instant: 2026-03-01 at `hh:mm:ss.mmm` UTC plus `days`.
fn at(days: i64, hms_ms: &str) -> DateTime<Utc> {
    let t: DateTime<Utc> = format!("2026-03-01T{hms_ms}Z").parse().unwrap();
    t + Duration::days(days)
}

/// An active, shown warning prediction of `deterioration` for patient `p1` on unit `4B`.
fn prediction(id: &str) -> PredictionRecord {
    common::prediction_record(id, at(0, "10:00:00.000"))
}

fn feedback(item: serde_json::Value) -> (Feedback, String) {
    (
        serde_json::from_value(item.clone()).unwrap(),
        item.to_string(),
    )
}

fn overridden(card: &str, code: Option<&str>, when: DateTime<Utc>) -> (Feedback, String) {
    let mut item =
        json!({"card": card, "outcome": "overridden", "outcomeTimestamp": when.to_rfc3339()});
    if let Some(code) = code {
        item["overrideReason"] = json!({"reason": {"code": code, "system": "https://bedside.example.org/CodeSystem/override-reason"}});
    }
    feedback(item)
}

fn accepted(card: &str, suggestions: usize, when: DateTime<Utc>) -> (Feedback, String) {
    let ids: Vec<_> = (0..suggestions)
        .map(|i| json!({"id": format!("s{i}")}))
        .collect();
    feedback(
        json!({"card": card, "outcome": "accepted", "outcomeTimestamp": when.to_rfc3339(), "acceptedSuggestions": ids}),
    )
}

async fn post(store: &Store, service: &str, items: &[(Feedback, String)]) -> u64 {
    let items: Vec<(Feedback, &str)> = items
        .iter()
        .map(|(f, raw)| (f.clone(), raw.as_str()))
        .collect();
    store.record_feedback(service, None, &items).await.unwrap()
}

// === scenarios ===

async fn feedback_is_stored_once_and_a_retry_is_accepted(store: &Store) {
    let client = Caller {
        iss: "https://ehr.test/cds-client".to_owned(),
        tenant: Some("t1".to_owned()),
    };
    let items = [
        overridden("card-1", Some("already-aware"), at(0, "10:00:00.000")),
        accepted("card-1", 2, at(0, "10:05:00.000")),
    ];
    let borrowed: Vec<(Feedback, &str)> =
        items.iter().map(|(f, r)| (f.clone(), r.as_str())).collect();
    assert_eq!(
        store
            .record_feedback("deterioration", Some(&client), &borrowed)
            .await
            .unwrap(),
        2
    );
    // The EHR retries the same request: accepted, nothing new stored.
    assert_eq!(
        store
            .record_feedback("deterioration", Some(&client), &borrowed)
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.feedback_count().await.unwrap(), 2);
    let rows = store.feedback_for_card("card-1").await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].outcome, "overridden");
    assert_eq!(
        rows[0].override_reason_code.as_deref(),
        Some("already-aware")
    );
    assert_eq!(
        rows[0].client_iss.as_deref(),
        Some("https://ehr.test/cds-client")
    );
    assert_eq!(rows[0].tenant.as_deref(), Some("t1"));
    assert_eq!(rows[0].raw_json, items[0].1);
    assert_eq!(rows[1].outcome, "accepted");
    assert_eq!(rows[1].override_reason_code, None);
    assert!(store.feedback_for_card("card-2").await.unwrap().is_empty());
}

async fn a_prediction_reads_back_and_keeps_only_the_patient_pseudonym(store: &Store) {
    // No patient, no score, no indicator: NULLs round-trip. Recorded first: a NULL risk must
    // not fix the type of the statement's parameter for the scores that follow on the same
    // connection (sqlx 0.8's Any driver sends a NULL f64 to PostgreSQL as float4).
    let mut bare = prediction("card-8");
    bare.patient_id = None;
    bare.unit = None;
    bare.risk = None;
    bare.indicator = None;
    bare.outcome = bedside::store::Outcome::Abstained;
    bare.input_refs = vec![];
    bare.tensor_sha256 = None;
    store.record_prediction(&bare).await.unwrap();
    let got = store.prediction("card-8").await.unwrap().unwrap();
    assert_eq!(
        (got.patient_hash, got.unit, got.risk, got.indicator),
        (None, None, None, None)
    );
    assert!(got.input_refs.is_empty());

    let raw_patient = "Patient-raw-7f3a9";
    let mut p = prediction("card-7");
    p.patient_id = Some(raw_patient.to_owned());
    p.input_refs = vec![
        "Observation/hr-1".to_owned(),
        "Observation/\"quoted\", comma".to_owned(),
        "Patient/x".to_owned(),
    ];
    p.at = at(0, "10:00:00.123");
    p.risk = Some(0.123456789);
    p.reason = Some("calibrated".to_owned());
    p.data_quality = Some(bedside::store::DataQuality {
        used: 41,
        dropped: [("unit `mmol/L` cannot be converted".to_owned(), 2)].into(),
        clamped: [("outside training range, clamped: spo2".to_owned(), 1)].into(),
        latest: [("spo2".to_owned(), 91.5), ("heart_rate".to_owned(), 118.0)].into(),
    });
    store.record_prediction(&p).await.unwrap();

    let got = store.prediction("card-7").await.unwrap().unwrap();
    assert_eq!(got.data_quality, p.data_quality);
    let pseudonym = store.pseudonym("", raw_patient).await.unwrap();
    assert_eq!(got.patient_hash.as_deref(), Some(pseudonym.as_str()));
    assert_eq!(got.input_refs, p.input_refs);
    assert_eq!(got.at, p.at);
    assert_eq!(
        (
            got.id.as_str(),
            got.service_id.as_str(),
            got.hook.as_str(),
            got.hook_instance.as_str()
        ),
        ("card-7", "deterioration", "patient-view", "hi-card-7")
    );
    assert_eq!(
        (
            got.model.as_str(),
            got.model_version.as_str(),
            got.mode.as_str()
        ),
        ("deterioration", "1.0.0", "active")
    );
    assert_eq!(got.unit.as_deref(), Some("4B"));
    assert_eq!(got.risk, Some(0.123456789));
    assert_eq!(got.indicator.as_deref(), Some("warning"));
    assert_eq!(got.outcome, "shown");
    assert_eq!(got.reason.as_deref(), Some("calibrated"));
    assert_eq!(got.tensor_sha256, p.tensor_sha256);
    assert_eq!(got.latency_ms, 12.5);
    // Every column is in StoredPrediction: the raw id is in none of them.
    let row = serde_json::to_string(&got).unwrap();
    assert!(!row.contains(raw_patient), "{row}");
    assert!(!row.contains("7f3a9"), "{row}");

    // The same pseudonym as the audit trail's.
    store
        .record_audits(&[AuditRecord {
            action: "hook",
            service_id: "deterioration".to_owned(),
            patient_id: Some(raw_patient.to_owned()),
            outcome: "answered".to_owned(),
            http_status: 200,
            ..Default::default()
        }])
        .await
        .unwrap();
    let audits = store.audit_rows().await.unwrap();
    assert_eq!(audits[0].patient_hash.as_deref(), Some(pseudonym.as_str()));

    // A repeat of the id is ignored: the first record stands.
    let mut again = p.clone();
    again.outcome = bedside::store::Outcome::Suppressed;
    again.risk = None;
    store.record_prediction(&again).await.unwrap();
    let got = store.prediction("card-7").await.unwrap().unwrap();
    assert_eq!(
        (got.outcome.as_str(), got.risk),
        ("shown", Some(0.123456789))
    );

    assert!(store.prediction("card-9").await.unwrap().is_none());
}

async fn last_shown_respects_service_patient_mode_outcome_and_since(store: &Store) {
    let since = at(0, "08:00:00.000");
    let cases = [
        // (id, service, patient, mode, outcome, at)
        (
            "old",
            "deterioration",
            "p1",
            "active",
            "shown",
            at(0, "07:59:59.999"),
        ),
        (
            "shown",
            "deterioration",
            "p1",
            "active",
            "shown",
            at(0, "09:00:00.000"),
        ),
        (
            "downgraded",
            "deterioration",
            "p1",
            "active",
            "downgraded",
            at(0, "10:00:00.000"),
        ),
        (
            "suppressed",
            "deterioration",
            "p1",
            "active",
            "suppressed",
            at(0, "11:00:00.000"),
        ),
        (
            "shadow",
            "deterioration",
            "p1",
            "shadow",
            "shadow",
            at(0, "11:30:00.000"),
        ),
        (
            "other-service",
            "sepsis",
            "p1",
            "active",
            "shown",
            at(0, "12:00:00.000"),
        ),
        (
            "other-patient",
            "deterioration",
            "p2",
            "active",
            "shown",
            at(0, "12:00:00.000"),
        ),
    ];
    for (id, service, patient, mode, outcome, when) in cases {
        let mut p = prediction(id);
        p.service_id = service.to_owned();
        p.patient_id = Some(patient.to_owned());
        p.mode = bedside::store::Mode::parse(mode).expect("a stored mode word");
        p.outcome = bedside::store::Outcome::parse(outcome).expect("a stored outcome word");
        p.at = when;
        store.record_prediction(&p).await.unwrap();
    }
    let last = store
        .last_shown(&Scope::default(), "deterioration", "p1", since)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(last.id, "downgraded");
    let last = store
        .last_shown(
            &Scope::default(),
            "deterioration",
            "p1",
            at(0, "07:00:00.000"),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(last.id, "downgraded", "newest first, whatever the window");
    assert!(store
        .last_shown(
            &Scope::default(),
            "deterioration",
            "p1",
            at(0, "10:00:00.001")
        )
        .await
        .unwrap()
        .is_none());
    let last = store
        .last_shown(
            &Scope::default(),
            "deterioration",
            "p1",
            at(0, "10:00:00.000"),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(last.id, "downgraded", "`since` is inclusive");
    assert_eq!(
        store
            .last_shown(&Scope::default(), "sepsis", "p1", since)
            .await
            .unwrap()
            .unwrap()
            .id,
        "other-service"
    );
    assert_eq!(
        store
            .last_shown(&Scope::default(), "deterioration", "p2", since)
            .await
            .unwrap()
            .unwrap()
            .id,
        "other-patient"
    );
    assert!(store
        .last_shown(&Scope::default(), "deterioration", "p3", since)
        .await
        .unwrap()
        .is_none());
}

async fn last_override_finds_only_that_reason_on_this_patients_cards(store: &Store) {
    let now = Utc::now();
    for (id, service, patient) in [
        ("p1-a", "deterioration", "p1"),
        ("p1-b", "deterioration", "p1"),
        ("p2-a", "deterioration", "p2"),
        ("p1-sepsis", "sepsis", "p1"),
        ("p3-a", "deterioration", "p3"),
    ] {
        let mut p = prediction(id);
        p.service_id = service.to_owned();
        p.patient_id = Some(patient.to_owned());
        p.at = now - Duration::hours(2);
        store.record_prediction(&p).await.unwrap();
    }
    let t = |minutes: i64| now - Duration::minutes(minutes);
    post(
        store,
        "deterioration",
        &[
            overridden("p1-a", Some("already-aware"), t(50)),
            overridden("p1-b", Some("already-aware"), t(40)),
            // Newer, but another reason, another patient, another service, no reason, or accepted.
            overridden("p1-b", Some("not-relevant"), t(30)),
            overridden("p2-a", Some("already-aware"), t(20)),
            overridden("p1-b", None, t(15)),
            accepted("p1-a", 1, t(10)),
            // A card bedside never recorded.
            overridden("ghost", Some("already-aware"), t(5)),
            // An EHR clock an hour fast: the override cannot count as later than its receipt.
            overridden("p3-a", Some("already-aware"), now + Duration::hours(1)),
        ],
    )
    .await;
    post(
        store,
        "sepsis",
        &[overridden("p1-sepsis", Some("already-aware"), t(1))],
    )
    .await;

    let since = now - Duration::hours(1);
    let found = store
        .last_override(
            &Scope::default(),
            "deterioration",
            "p1",
            "already-aware",
            since,
        )
        .await
        .unwrap();
    assert_eq!(found.map(|f| f.timestamp()), Some(t(40).timestamp()));
    let found = store
        .last_override(
            &Scope::default(),
            "deterioration",
            "p1",
            "not-relevant",
            since,
        )
        .await
        .unwrap();
    assert_eq!(found.map(|f| f.timestamp()), Some(t(30).timestamp()));
    assert_eq!(
        store
            .last_override(
                &Scope::default(),
                "deterioration",
                "p1",
                "already-aware",
                t(35)
            )
            .await
            .unwrap(),
        None,
        "the matching override is older than the window"
    );
    assert_eq!(
        store
            .last_override(
                &Scope::default(),
                "deterioration",
                "p4",
                "already-aware",
                since
            )
            .await
            .unwrap(),
        None
    );
    let found = store
        .last_override(&Scope::default(), "sepsis", "p1", "already-aware", since)
        .await
        .unwrap();
    assert_eq!(found.map(|f| f.timestamp()), Some(t(1).timestamp()));
    let skewed = store
        .last_override(
            &Scope::default(),
            "deterioration",
            "p3",
            "already-aware",
            since,
        )
        .await
        .unwrap()
        .unwrap();
    assert!(skewed <= Utc::now(), "{skewed}");
    assert!(skewed >= now - Duration::seconds(1), "{skewed}");
}

async fn alerts_shown_counts_only_shown_active_alerts_of_the_unit(store: &Store) {
    let since = at(0, "08:00:00.000");
    let cases = [
        // (id, unit, mode, outcome, indicator, at)
        (
            "warning",
            "4B",
            "active",
            "shown",
            Some("warning"),
            at(0, "09:00:00.000"),
        ),
        (
            "critical",
            "4B",
            "active",
            "shown",
            Some("critical"),
            at(0, "08:00:00.000"),
        ),
        (
            "info",
            "4B",
            "active",
            "shown",
            Some("info"),
            at(0, "09:00:00.000"),
        ),
        (
            "downgraded",
            "4B",
            "active",
            "downgraded",
            Some("info"),
            at(0, "09:00:00.000"),
        ),
        (
            "suppressed",
            "4B",
            "active",
            "suppressed",
            Some("critical"),
            at(0, "09:00:00.000"),
        ),
        (
            "deduplicated",
            "4B",
            "active",
            "deduplicated",
            Some("warning"),
            at(0, "09:00:00.000"),
        ),
        (
            "shadow",
            "4B",
            "shadow",
            "shadow",
            Some("critical"),
            at(0, "09:00:00.000"),
        ),
        (
            "old",
            "4B",
            "active",
            "shown",
            Some("critical"),
            at(0, "07:59:59.999"),
        ),
        (
            "other-unit",
            "ICU",
            "active",
            "shown",
            Some("critical"),
            at(0, "09:00:00.000"),
        ),
    ];
    for (id, unit, mode, outcome, indicator, when) in cases {
        let mut p = prediction(id);
        p.unit = Some(unit.to_owned());
        p.mode = bedside::store::Mode::parse(mode).expect("a stored mode word");
        p.outcome = bedside::store::Outcome::parse(outcome).expect("a stored outcome word");
        p.indicator = indicator.map(str::to_owned);
        p.at = when;
        store.record_prediction(&p).await.unwrap();
    }
    assert_eq!(
        store
            .alerts_shown(&Scope::default(), "4B", since)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .alerts_shown(&Scope::default(), "4B", at(0, "08:00:00.001"))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .alerts_shown(&Scope::default(), "4B", at(-1, "00:00:00.000"))
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        store
            .alerts_shown(&Scope::default(), "ICU", since)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .alerts_shown(&Scope::default(), "5C", since)
            .await
            .unwrap(),
        0
    );
}

async fn the_report_counts_exactly_what_was_recorded(store: &Store) {
    // Day 0 and day 1 (UTC dates), patients p1..p4.
    struct P {
        id: &'static str,
        service: &'static str,
        version: &'static str,
        mode: &'static str,
        outcome: &'static str,
        patient: Option<&'static str>,
        at: DateTime<Utc>,
        risk: Option<f64>,
        indicator: Option<&'static str>,
        hook_instance: &'static str,
    }
    let p = |id, service, version, mode, outcome, patient, at, risk, indicator, hook_instance| P {
        id,
        service,
        version,
        mode,
        outcome,
        patient,
        at,
        risk,
        indicator,
        hook_instance,
    };
    let d0 = |t| at(0, t);
    let d1 = |t| at(1, t);
    let (active, shadow) = ("active", "shadow");
    let rows = [
        // sepsis, active v1: one prediction of each outcome but shadow.
        p(
            "a1",
            "sepsis",
            "1",
            active,
            "shown",
            Some("p1"),
            d0("10:00:00.000"),
            Some(0.8),
            Some("warning"),
            "h1",
        ),
        p(
            "a2",
            "sepsis",
            "1",
            active,
            "shown",
            Some("p1"),
            d0("23:59:59.999"),
            Some(0.9),
            Some("critical"),
            "h2",
        ),
        p(
            "a3",
            "sepsis",
            "1",
            active,
            "downgraded",
            Some("p2"),
            d0("11:00:00.000"),
            Some(0.7),
            Some("info"),
            "h3",
        ),
        p(
            "a4",
            "sepsis",
            "1",
            active,
            "below_threshold",
            Some("p2"),
            d1("01:00:00.000"),
            Some(0.1),
            None,
            "h4",
        ),
        p(
            "a5",
            "sepsis",
            "1",
            active,
            "abstained",
            Some("p3"),
            d1("02:00:00.000"),
            None,
            None,
            "h5",
        ),
        p(
            "a6",
            "sepsis",
            "1",
            active,
            "suppressed",
            Some("p1"),
            d1("00:00:00.000"),
            Some(0.8),
            Some("warning"),
            "h6",
        ),
        p(
            "a7",
            "sepsis",
            "1",
            active,
            "deduplicated",
            Some("p1"),
            d1("03:00:00.000"),
            Some(0.8),
            Some("warning"),
            "h7",
        ),
        p(
            "a8",
            "sepsis",
            "1",
            active,
            "no_score",
            None,
            d1("04:00:00.000"),
            None,
            None,
            "h8",
        ),
        p(
            "a9",
            "sepsis",
            "1",
            active,
            "disabled",
            None,
            d1("05:00:00.000"),
            None,
            None,
            "h9",
        ),
        // sepsis, shadow v2 on the same calls: agrees on h1 (both alert), h3 (neither), h6
        // (both); disagrees on h2 and h4; h5 has no active score: no pair.
        p(
            "s1",
            "sepsis",
            "2",
            shadow,
            "shadow",
            Some("p1"),
            d0("10:00:00.000"),
            Some(0.7),
            Some("warning"),
            "h1",
        ),
        p(
            "s2",
            "sepsis",
            "2",
            shadow,
            "shadow",
            Some("p1"),
            d0("23:59:59.999"),
            Some(0.2),
            None,
            "h2",
        ),
        p(
            "s3",
            "sepsis",
            "2",
            shadow,
            "shadow",
            Some("p2"),
            d0("11:00:00.000"),
            Some(0.3),
            Some("info"),
            "h3",
        ),
        p(
            "s4",
            "sepsis",
            "2",
            shadow,
            "shadow",
            Some("p2"),
            d1("01:00:00.000"),
            Some(0.95),
            Some("critical"),
            "h4",
        ),
        p(
            "s5",
            "sepsis",
            "2",
            shadow,
            "shadow",
            Some("p3"),
            d1("02:00:00.000"),
            Some(0.5),
            None,
            "h5",
        ),
        p(
            "s6",
            "sepsis",
            "2",
            shadow,
            "shadow",
            Some("p1"),
            d1("00:00:00.000"),
            Some(0.85),
            Some("critical"),
            "h6",
        ),
        // aki, active v1: one card, overridden without a reason.
        p(
            "k1",
            "aki",
            "1",
            active,
            "shown",
            Some("p4"),
            d0("12:00:00.000"),
            Some(0.6),
            Some("warning"),
            "hk1",
        ),
        // Before the window.
        p(
            "old",
            "sepsis",
            "1",
            active,
            "shown",
            Some("p1"),
            at(-1, "23:59:59.999"),
            Some(0.9),
            Some("warning"),
            "h0",
        ),
    ];
    for r in &rows {
        store
            .record_prediction(&PredictionRecord {
                scope: Scope::default(),
                id: r.id.to_owned(),
                at: r.at,
                service_id: r.service.to_owned(),
                hook: "patient-view".to_owned(),
                hook_instance: r.hook_instance.to_owned(),
                model: format!("{}-model", r.service),
                model_version: r.version.to_owned(),
                mode: bedside::store::Mode::parse(r.mode).expect("a stored mode word"),
                patient_id: r.patient.map(str::to_owned),
                patient_hash: None,
                unit: Some("4B".to_owned()),
                risk: r.risk,
                indicator: r.indicator.map(str::to_owned),
                outcome: bedside::store::Outcome::parse(r.outcome).expect("a stored outcome word"),
                reason: None,
                input_refs: vec![],
                tensor_sha256: None,
                data_quality: None,
                latency_ms: 1.0,
                inputs: None,
            })
            .await
            .unwrap();
    }
    let t = d1("12:00:00.000");
    post(
        store,
        "sepsis",
        &[
            overridden("a1", Some("already-aware"), t),
            accepted("a1", 2, t + Duration::minutes(1)),
            overridden("a2", Some("already-aware"), t),
            overridden("a3", Some("not-relevant"), t),
            accepted("a3", 1, t + Duration::minutes(1)),
            accepted("old", 4, t),
            accepted("ghost", 5, t),
        ],
    )
    .await;
    post(store, "aki", &[overridden("k1", None, t)]).await;

    let since = d0("00:00:00.000");
    let report = store.report(Some(since)).await.unwrap();
    assert_eq!(report.since, Some(since));
    let keys: Vec<_> = report
        .services
        .iter()
        .map(|s| {
            (
                s.service_id.as_str(),
                s.model.as_str(),
                s.model_version.as_str(),
                s.mode.as_str(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            ("aki", "aki-model", "1", "active"),
            ("sepsis", "sepsis-model", "1", "active"),
            ("sepsis", "sepsis-model", "2", "shadow"),
        ]
    );

    let aki = &report.services[0].tally;
    assert_eq!((aki.predictions, aki.shown, aki.cards_shown), (1, 1, 1));
    assert_eq!(
        (aki.accepted, aki.overridden, aki.suggestions_accepted),
        (0, 1, 0)
    );
    assert!(
        aki.override_reasons.is_empty(),
        "{:?}",
        aki.override_reasons
    );
    assert_eq!(aki.patient_days, 1);
    assert_eq!(
        (
            aki.acceptance_rate,
            aki.override_rate,
            aki.alerts_per_patient_day
        ),
        (Some(0.0), Some(1.0), Some(1.0))
    );

    let active = &report.services[1].tally;
    assert_eq!(active.predictions, 9);
    assert_eq!(
        [
            active.shown,
            active.below_threshold,
            active.abstained,
            active.suppressed,
            active.downgraded,
            active.deduplicated,
            active.shadow,
            active.no_score,
            active.disabled,
        ],
        [2, 1, 1, 1, 1, 1, 0, 1, 1]
    );
    assert_eq!(active.cards_shown, 3, "shown + downgraded");
    assert_eq!((active.accepted, active.overridden), (2, 3));
    assert_eq!(
        active.override_reasons,
        [
            ("already-aware".to_owned(), 2),
            ("not-relevant".to_owned(), 1)
        ]
        .into()
    );
    assert_eq!(active.suggestions_accepted, 3);
    // (p1, d0), (p2, d0), (p2, d1), (p3, d1), (p1, d1); the two without a patient count none.
    assert_eq!(active.patient_days, 5);
    assert_eq!(active.acceptance_rate, Some(2.0 / 3.0));
    assert_eq!(active.override_rate, Some(1.0));
    assert_eq!(active.alerts_per_patient_day, Some(3.0 / 5.0));

    let shadow_tally = &report.services[2].tally;
    assert_eq!(
        (
            shadow_tally.predictions,
            shadow_tally.shadow,
            shadow_tally.cards_shown
        ),
        (6, 6, 0)
    );
    assert_eq!((shadow_tally.accepted, shadow_tally.overridden), (0, 0));
    assert_eq!(shadow_tally.patient_days, 5);
    assert_eq!(
        (shadow_tally.acceptance_rate, shadow_tally.override_rate),
        (None, None)
    );
    assert_eq!(shadow_tally.alerts_per_patient_day, Some(0.0));

    assert_eq!(
        report.shadow_agreement.len(),
        1,
        "{:?}",
        report.shadow_agreement
    );
    let agreement = &report.shadow_agreement[0];
    assert_eq!(
        (
            agreement.model.as_str(),
            agreement.active_version.as_str(),
            agreement.shadow_version.as_str()
        ),
        ("sepsis-model", "1", "2")
    );
    assert_eq!((agreement.pairs, agreement.agreed), (5, 3));
    assert_eq!(agreement.agreement, 0.6);

    let totals = &report.totals;
    assert_eq!(
        (
            totals.predictions,
            totals.shown,
            totals.shadow,
            totals.cards_shown
        ),
        (16, 3, 6, 4)
    );
    assert_eq!(
        (
            totals.accepted,
            totals.overridden,
            totals.suggestions_accepted
        ),
        (2, 4, 3)
    );
    assert_eq!(
        totals.override_reasons,
        [
            ("already-aware".to_owned(), 2),
            ("not-relevant".to_owned(), 1)
        ]
        .into()
    );
    assert_eq!(totals.patient_days, 6, "p1..p3 as above and (p4, d0)");
    assert_eq!(totals.acceptance_rate, Some(0.5));
    assert_eq!(totals.override_rate, Some(1.0));
    assert_eq!(totals.alerts_per_patient_day, Some(4.0 / 6.0));

    // Without a window: the old card and its feedback too.
    let all = store.report(None).await.unwrap();
    let active = &all.services[1].tally;
    assert_eq!(
        (active.predictions, active.shown, active.cards_shown),
        (10, 3, 4)
    );
    assert_eq!((active.accepted, active.suggestions_accepted), (3, 7));
    assert_eq!(active.patient_days, 6, "(p1, day -1) added");
    assert_eq!(all.totals.predictions, 17);

    // An empty window: zeros and no rates.
    let empty = store.report(Some(at(30, "00:00:00.000"))).await.unwrap();
    assert!(empty.services.is_empty() && empty.shadow_agreement.is_empty());
    assert_eq!(empty.totals.predictions, 0);
    assert_eq!(empty.totals.acceptance_rate, None);
    assert_eq!(empty.totals.alerts_per_patient_day, None);

    // It serializes (the SMART app and `bedside report` show it as JSON).
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["services"][1]["override_reasons"]["already-aware"], 2);
    assert_eq!(json["services"][1]["shown"], 2);
}

async fn concurrent_records_share_commits_and_each_caller_sees_its_own(store: &Store) {
    // 300 calls at once, each awaiting its record: all committed, each readable the moment
    // its own call returns (suppression reads the record right after writing it).
    let calls = (0..300).map(|i| {
        let store = store.clone();
        async move {
            let mut p = prediction(&format!("gc-{i}"));
            p.patient_id = Some(format!("p-{}", i % 7));
            store.record_prediction(&p).await.unwrap();
            store.prediction(&p.id).await.unwrap().is_some()
        }
    });
    let seen = futures_util::future::join_all(calls).await;
    assert!(
        seen.iter().all(|s| *s),
        "a record not visible after its call returned"
    );
    for i in 0..300 {
        let id = format!("gc-{i}");
        let back = store.prediction(&id).await.unwrap().unwrap();
        assert_eq!(back.hook_instance, format!("hi-{id}"));
    }
    // A repeat of an id (the same card recorded twice in one batch) is ignored, not an error.
    let again = prediction("gc-0");
    let (a, b) = tokio::join!(
        store.record_prediction(&again),
        store.record_prediction(&again)
    );
    a.unwrap();
    b.unwrap();
}

/// Security review (issue 14, item 5): two EHRs whose patients share the id `p1` are two
/// patients. Suppression, "already aware", alert budgets, feedback ownership and the SMART
/// app's view each read only the caller's own rows.
async fn one_ehrs_state_never_reaches_another_ehrs_patient_with_the_same_id(store: &Store) {
    let a = Scope::new(
        Some("https://ehr-a.test/cds"),
        Some("t1"),
        Some("https://A.test/fhir/"),
    );
    let b = Scope::new(
        Some("https://ehr-b.test/cds"),
        Some("t1"),
        Some("https://b.test/fhir"),
    );
    assert_eq!(a.fhir_server, "https://a.test/fhir");
    assert_ne!(a.call_key("hi-1"), b.call_key("hi-1"));
    assert_ne!(
        store.pseudonym(&a.fhir_server, "p1").await.unwrap(),
        store.pseudonym(&b.fhir_server, "p1").await.unwrap()
    );
    let mut of_b = prediction("card-of-b");
    of_b.scope = b.clone();
    store.record_prediction(&of_b).await.unwrap();
    let since = at(0, "09:00:00.000");
    // A card shown to B does not suppress A's card for its own p1.
    assert!(store
        .last_shown(&a, "deterioration", "p1", since)
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        store
            .last_shown(&b, "deterioration", "p1", since)
            .await
            .unwrap()
            .map(|p| p.id),
        Some("card-of-b".to_owned())
    );
    // B's "already aware" does not silence A.
    post(
        store,
        "deterioration",
        &[overridden(
            "card-of-b",
            Some("already-aware"),
            at(0, "10:01:00.000"),
        )],
    )
    .await;
    let since_override = chrono::Utc::now() - Duration::days(3650);
    assert!(store
        .last_override(&a, "deterioration", "p1", "already-aware", since_override)
        .await
        .unwrap()
        .is_none());
    assert!(store
        .last_override(&b, "deterioration", "p1", "already-aware", since_override)
        .await
        .unwrap()
        .is_some());
    // "4B" of B's hospital is not A's "4B".
    assert_eq!(store.alerts_shown(&a, "4B", since).await.unwrap(), 0);
    assert_eq!(store.alerts_shown(&b, "4B", since).await.unwrap(), 1);
    // Feedback is taken only on the caller's own cards.
    let mut of_a = prediction("card-of-a");
    of_a.scope = a.clone();
    store.record_prediction(&of_a).await.unwrap();
    assert_eq!(
        store
            .cards_not_given_to(&a, &["card-of-b", "card-of-a", "no-such-card"])
            .await
            .unwrap(),
        vec![0, 2]
    );
    // The SMART app on A's FHIR server, for a client allowed there, sees A's p1 only.
    let view = PatientView {
        fhir_servers: vec!["https://a.test/fhir".to_owned()],
        clients: vec![("https://ehr-a.test/cds".to_owned(), None)],
    };
    let seen: Vec<String> = store
        .predictions_for_patient(&view, "p1", since)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(seen, vec!["card-of-a".to_owned()]);
    assert!(store
        .prediction_about("card-of-b", &view, "p1")
        .await
        .unwrap()
        .is_none());
    assert!(store
        .prediction_about("card-of-a", &view, "p1")
        .await
        .unwrap()
        .is_some());
    assert!(store
        .feedback_for_patient(&view, "p1", since_override)
        .await
        .unwrap()
        .is_empty());
    // A tenant-bound rule admits that tenant only.
    let other_tenant = PatientView {
        clients: vec![("https://ehr-a.test/cds".to_owned(), Some("t2".to_owned()))],
        ..view
    };
    assert!(store
        .predictions_for_patient(&other_tenant, "p1", since)
        .await
        .unwrap()
        .is_empty());
}
