//! Two gateway processes on one PostgreSQL behind nginx (the example configuration in
//! `tests/fixtures/deploy/nginx.conf`, Debian's nginx), client authentication on: the load
//! balancer spreads calls over both; a client JWT used on one replica is refused on the other;
//! the kill switch set through one replica holds on the other within seconds and survives that
//! replica's restart.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::nginx::Nginx;
use crate::common::postgres::PostgresServer;
use crate::common::process::{free_port, BedsideProcess};
use crate::common::{
    bearer, bearer_for, config_text, encounter_start, http, patient, GatewayOptions, Key,
    KeyServer, ADMIN_TOKEN,
};

/// A hook call of the deterioration service at `base` with `token`, for a patient and a
/// hookInstance of its own (so that suppression and dedup keep out of the way).
async fn hook(base: &str, token: &str) -> (u16, Value) {
    let mut request = patient("deteriorating");
    request["context"]["patientId"] = uuid::Uuid::new_v4().to_string().into();
    request["hookInstance"] = uuid::Uuid::new_v4().to_string().into();
    let r = http()
        .post(format!("{base}/cds-services/deterioration"))
        .header("Authorization", token)
        .json(&request)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn fresh_token() -> String {
    bearer("deterioration", Key::Rs384)
}

/// `/metrics` of the replica at `base`.
async fn metrics(base: &str) -> String {
    http()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// `bedside_service_<counter>_total` of `service` at `base`.
async fn counter(base: &str, counter: &str, service: &str) -> u64 {
    let prefix = format!("bedside_service_{counter}_total{{service=\"{service}\"}} ");
    metrics(base)
        .await
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// `bedside_service_calls_total` of the deterioration service at `base`.
async fn calls(base: &str) -> u64 {
    counter(base, "calls", "deterioration").await
}

/// `counter` of `service` summed over both replicas.
async fn on_both(replicas: [&str; 2], name: &str, service: &str) -> u64 {
    counter(replicas[0], name, service).await + counter(replicas[1], name, service).await
}

/// `request` to `service` at `base` with a token of its own; the cards answered.
async fn cards_of(base: &str, service: &str, request: Value) -> Vec<Value> {
    let r = http()
        .post(format!("{base}/cds-services/{service}"))
        .header("Authorization", bearer(service, Key::Rs384))
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    body["cards"].as_array().cloned().unwrap_or_default()
}

/// Every `(base, service, request)` sent at once; the cards of each, in order.
async fn all_at_once(calls: Vec<(String, &'static str, Value)>) -> Vec<Vec<Value>> {
    let tasks: Vec<_> = calls
        .into_iter()
        .map(|(base, service, request)| {
            tokio::spawn(async move { cards_of(&base, service, request).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// Whether a call at `base` is answered without cards within `within`.
async fn switched_off(base: &str, within: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < within {
        let (status, body) = hook(base, &fresh_token()).await;
        if status == 200 && body["cards"].as_array().is_some_and(Vec::is_empty) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// Two replicas' configurations on one PostgreSQL, trusting the test client: what both tests
/// start from. Holds the servers and the folder for as long as it lives.
struct Cluster {
    pg: PostgresServer,
    _keys: KeyServer,
    dir: tempfile::TempDir,
    ports: [u16; 2],
    configs: [PathBuf; 2],
}

impl Cluster {
    async fn new() -> Self {
        let pg = PostgresServer::start().await;
        let keys = KeyServer::start().await;
        let dir = tempfile::tempdir().unwrap();
        let opts = GatewayOptions {
            jwks_url: Some(keys.jwks_url()),
            storage_url: Some(pg.url()),
            ..Default::default()
        };
        let ports = [free_port(), free_port()];
        let config = |name: &str, port: u16| {
            let text = config_text(&opts, &dir.path().join(format!("{name}.db")))
                .replace(
                    "listen = '127.0.0.1:0'",
                    &format!("listen = '127.0.0.1:{port}'"),
                )
                .replace(
                    "name = 'test-admin'",
                    "name = 'test-admin'\nroles = ['report', 'operate', 'promote']",
                );
            let path = dir.path().join(format!("{name}.toml"));
            std::fs::write(&path, text).unwrap();
            path
        };
        let configs = [config("a", ports[0]), config("b", ports[1])];
        Self {
            pg,
            _keys: keys,
            dir,
            ports,
            configs,
        }
    }

    /// Replica `i` (0 or 1) as a `bedside serve` process, authentication on.
    fn replica(&self, i: usize) -> BedsideProcess {
        BedsideProcess::start_authenticated(&self.configs[i], self.ports[i])
    }
}

#[tokio::test]
async fn replicas_behind_nginx_share_token_replay_and_the_kill_switch() {
    let cluster = Cluster::new().await;
    let a = cluster.replica(0);
    let mut b = cluster.replica(1);
    let lb = Nginx::start(cluster.dir.path(), cluster.ports);

    // Through the load balancer: every call answered with its card, spread over both.
    for _ in 0..8 {
        let (status, body) = hook(&lb.url, &fresh_token()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["cards"].as_array().map(Vec::len), Some(1), "{body}");
    }
    let (on_a, on_b) = (calls(&a.url).await, calls(&b.url).await);
    assert_eq!(on_a + on_b, 8);
    assert!(on_a > 0 && on_b > 0, "round robin: {on_a} / {on_b}");

    // One token, two replicas: the second use is a replay, wherever it lands.
    let token = fresh_token();
    let (status, _) = hook(&a.url, &token).await;
    assert_eq!(status, 200);
    let (status, body) = hook(&b.url, &token).await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = hook(&lb.url, &token).await;
    assert_eq!(status, 401);

    // The kill switch, through the load balancer: both replicas stop showing the card.
    let r = http()
        .post(format!("{}/admin/services/deterioration/disable", lb.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for replica in [&a.url, &b.url] {
        assert!(
            switched_off(replica, Duration::from_secs(5)).await,
            "{replica} still shows cards"
        );
    }
    // It survives a restart: a new process of replica b starts switched off.
    drop(b);
    b = cluster.replica(1);
    let (status, body) = hook(&b.url, &fresh_token()).await;
    assert_eq!(
        (status, body["cards"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    // Switched on again through b: a follows.
    let r = http()
        .post(format!("{}/admin/services/deterioration/enable", b.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let started = Instant::now();
    loop {
        let (_, body) = hook(&a.url, &fresh_token()).await;
        if body["cards"].as_array().map(Vec::len) == Some(1) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "replica a did not follow the switch: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(lb);
    drop(a);
    drop(b);
}

/// Calls about the same patients, units and hook calls arriving at both replicas at once are
/// decided as one process would decide them: a suppression window lets one card through, a
/// unit's budget is never overspent, and two services of a dedup group answering one call on
/// different replicas show one card. (Without the store's decision locks, each replica reads
/// "nothing shown yet" at the same time.)
#[tokio::test]
async fn concurrent_calls_through_both_replicas_show_exactly_the_cards_one_process_would() {
    let cluster = Cluster::new().await;
    let (a, b) = (cluster.replica(0), cluster.replica(1));
    let lb = Nginx::start(cluster.dir.path(), cluster.ports);
    let replicas = [a.url.as_str(), b.url.as_str()];
    let service = "deterioration-encounter-start";

    // Suppression (12 h): twelve calls about one patient at once, through the load balancer.
    let same_patient = (0..12)
        .map(|_| {
            let request = encounter_start("deteriorating", "pat-same", "Ward S");
            (lb.url.clone(), service, request)
        })
        .collect();
    let answered = all_at_once(same_patient).await;
    let shown: usize = answered.iter().map(Vec::len).sum();
    assert_eq!(shown, 1, "one card for one patient: {answered:?}");
    assert_eq!(on_both(replicas, "suppressed", service).await, 11);
    assert!(
        counter(replicas[0], "calls", service).await > 0
            && counter(replicas[1], "calls", service).await > 0,
        "both replicas decided"
    );

    // The unit's budget (8 warning or critical cards a shift): sixteen patients of one unit at
    // once — eight critical cards, eight downgraded to information.
    let one_unit = (0..16)
        .map(|i| {
            let request = encounter_start("deteriorating", &format!("pat-{i}"), "Ward B");
            (lb.url.clone(), service, request)
        })
        .collect();
    let answered = all_at_once(one_unit).await;
    let indicators: Vec<&str> = answered
        .iter()
        .flatten()
        .map(|c| c["indicator"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(indicators.len(), 16, "{answered:?}");
    assert_eq!(
        indicators.iter().filter(|i| **i == "critical").count(),
        8,
        "budget of 8: {indicators:?}"
    );
    assert_eq!(on_both(replicas, "downgraded", service).await, 8);

    // Dedup: deterioration on replica a and sepsis-screen on replica b answer the same call on
    // the same observations, eight calls at once: one card per call.
    let mut same_calls = Vec::new();
    for i in 0..8 {
        let mut request = patient("deteriorating");
        request["context"]["patientId"] = format!("pat-group-{i}").into();
        request["hookInstance"] = uuid::Uuid::new_v4().to_string().into();
        same_calls.push((a.url.clone(), "deterioration", request.clone()));
        same_calls.push((b.url.clone(), "sepsis-screen", request));
    }
    let answered = all_at_once(same_calls).await;
    for (i, pair) in answered.chunks(2).enumerate() {
        assert_eq!(pair[0].len() + pair[1].len(), 1, "call {i}: {pair:?}");
    }
    let deduplicated = on_both(replicas, "deduplicated", "deterioration").await
        + on_both(replicas, "deduplicated", "sepsis-screen").await;
    assert_eq!(deduplicated, 8, "both services scored above threshold");
    for svc in [service, "deterioration", "sepsis-screen"] {
        assert_eq!(on_both(replicas, "decided_unlocked", svc).await, 0, "{svc}");
    }
    drop(lb);
    drop(a);
    drop(b);
}

/// The models replica `base` serves, `(name, version, status)`, from its front page.
async fn served_models(base: &str) -> Vec<(String, String, String)> {
    let page: Value = http()
        .get(format!("{base}/"))
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let s = |k: &str| m[k].as_str().unwrap_or_default().to_owned();
            (s("name"), s("version"), s("status"))
        })
        .collect()
}

/// A model decision (here: retiring the shadow deterioration 2.0.0) made through one replica
/// is loaded by the other within seconds, without a signal; decisions through both at once are
/// taken one after the other.
#[tokio::test]
async fn a_model_retired_through_one_replica_is_retired_on_the_other() {
    let cluster = Cluster::new().await;
    let (a, b) = (cluster.replica(0), cluster.replica(1));
    let shadow = (
        "deterioration".to_owned(),
        "2.0.0".to_owned(),
        "shadow".to_owned(),
    );
    assert!(served_models(&b.url).await.contains(&shadow));
    let retire = |base: String| async move {
        http()
            .post(format!("{base}/admin/models/deterioration/2.0.0/retire"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&serde_json::json!({"reason": "superseded by 4.0.1"}))
            .send()
            .await
            .unwrap()
    };
    // Through both at once: one retires it, the other finds it retired already.
    let (first, second) = tokio::join!(retire(a.url.clone()), retire(b.url.clone()));
    let statuses = [first.status().as_u16(), second.status().as_u16()];
    assert!(statuses.contains(&200), "{statuses:?}");
    let started = Instant::now();
    for replica in [&a.url, &b.url] {
        loop {
            let served = served_models(replica).await;
            if !served.contains(&shadow) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{replica} still serves deterioration 2.0.0 in shadow: {served:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Cards still come from the active version on both.
    for replica in [&a.url, &b.url] {
        let (status, body) = hook(replica, &fresh_token()).await;
        assert_eq!(status, 200);
        assert!(
            body["cards"][0]["summary"]
                .as_str()
                .unwrap_or_default()
                .contains("deterioration v4.0.1"),
            "{body}"
        );
    }
    let history: Value = http()
        .get(format!("{}/admin/models", a.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(history.to_string().contains("retired"), "{history}");
}

/// What the load of [`load`] saw.
#[derive(Default)]
struct Seen {
    /// Hook-call statuses.
    statuses: Vec<u16>,
    /// Cards whose `accepted` feedback was answered 200.
    acknowledged: Vec<String>,
    /// Feedback posts not answered 200.
    feedback_failed: usize,
}

/// Four callers through `lb` for `run`: a hook call per iteration, and feedback on each card.
async fn load(lb: String, run: Duration) -> Seen {
    let tasks: Vec<_> =
        (0..4)
            .map(|_| {
                let lb = lb.clone();
                tokio::spawn(async move {
                    let mut seen = Seen::default();
                    let started = Instant::now();
                    while started.elapsed() < run {
                        let (status, body) = hook(&lb, &fresh_token()).await;
                        seen.statuses.push(status);
                        let Some(card) = body["cards"][0]["uuid"].as_str() else {
                            continue;
                        };
                        let path = "/cds-services/deterioration/feedback";
                        let r = http()
                        .post(format!("{lb}{path}"))
                        .header("Authorization", bearer_for(path, Key::Rs384))
                        .json(&serde_json::json!({"feedback": [{"card": card, "outcome": "accepted",
                            "outcomeTimestamp": chrono::Utc::now().to_rfc3339()}]}))
                        .send()
                        .await;
                        match r {
                            Ok(r) if r.status() == 200 => seen.acknowledged.push(card.to_owned()),
                            _ => seen.feedback_failed += 1,
                        }
                    }
                    seen
                })
            })
            .collect();
    let mut all = Seen::default();
    for t in tasks {
        let mut s = t.await.unwrap();
        all.statuses.append(&mut s.statuses);
        all.acknowledged.append(&mut s.acknowledged);
        all.feedback_failed += s.feedback_failed;
    }
    all
}

#[tokio::test]
async fn a_rolling_reload_fails_nothing_and_a_killed_replica_loses_no_acknowledged_feedback() {
    let cluster = Cluster::new().await;
    let (a, b) = (cluster.replica(0), cluster.replica(1));
    let dir = &cluster.dir;
    let lb = Nginx::start_logging(dir.path(), cluster.ports, true);

    // A rolling SIGHUP (models and services reloaded on a, then on b) under load: nothing fails.
    let rolling = tokio::spawn(load(lb.url.clone(), Duration::from_secs(3)));
    tokio::time::sleep(Duration::from_millis(700)).await;
    a.signal("HUP");
    tokio::time::sleep(Duration::from_millis(700)).await;
    b.signal("HUP");
    let seen = rolling.await.unwrap();
    assert!(seen.statuses.len() > 20, "{} calls", seen.statuses.len());
    assert!(
        seen.statuses.iter().all(|s| *s == 200),
        "{:?}",
        seen.statuses
    );
    assert_eq!(seen.feedback_failed, 0);
    // Each replica finishes its reload (loading and warming up every model, the foundation
    // head's transformer included) while the other serves; wait for it rather than read once.
    for replica in [&a.url, &b.url] {
        let until = Instant::now() + Duration::from_secs(30);
        let mut text = metrics(replica).await;
        while !text.contains("bedside_reloads_total 1") && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(100)).await;
            text = metrics(replica).await;
        }
        assert!(text.contains("bedside_reloads_total 1"), "{text}");
        assert!(text.contains("bedside_reload_failures_total 0"), "{text}");
    }

    // kill -9 of b under load: every feedback the gateway acknowledged is in the store; calls
    // in flight on b are retried by nginx on a where nothing had reached b's verification.
    let killing = tokio::spawn(load(lb.url.clone(), Duration::from_secs(3)));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    b.signal("KILL");
    let seen_kill = killing.await.unwrap();
    let store = bedside::store::Store::connect(&cluster.pg.url())
        .await
        .unwrap();
    for card in seen.acknowledged.iter().chain(&seen_kill.acknowledged) {
        assert_eq!(
            store.feedback_for_card(card).await.unwrap().len(),
            1,
            "acknowledged feedback on {card} is missing"
        );
    }
    store.close().await;
    let ok = seen_kill.statuses.iter().filter(|s| **s == 200).count();
    let log = std::fs::read_to_string(dir.path().join("access.log")).unwrap();
    let retried = log.lines().filter(|l| l.contains(", ")).count();
    eprintln!(
        "kill -9 under load: {ok}/{} hook calls answered 200, {} acknowledged feedback, {} feedback posts failed, {retried} requests retried by nginx on the other replica",
        seen_kill.statuses.len(),
        seen_kill.acknowledged.len(),
        seen_kill.feedback_failed
    );
    // After the kill, the survivor answers everything.
    assert!(
        ok * 10 >= seen_kill.statuses.len() * 9,
        "{:?}",
        seen_kill.statuses
    );
    let (status, _) = hook(&lb.url, &fresh_token()).await;
    assert_eq!(status, 200);
    drop(lb);
    drop(a);
}
