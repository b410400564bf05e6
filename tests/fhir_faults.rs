//! What a real server cannot be made to do on demand (wiremock, faults only): throttling,
//! 5xx, truncated JSON, HTML error pages, huge bodies, redirects off-origin — and the egress
//! policy, where a listener on the target must see zero connections.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bedside::fhir::{EgressPolicy, EgressRefusal, FhirClient, FhirError, FhirSettings, OriginRule};
use common::{bearer, http, patient, Gateway, GatewayOptions, Key, KeyServer};
use serde_json::json;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn client(rules: &[&str]) -> FhirClient {
    let rules = rules
        .iter()
        .map(|r| OriginRule::parse(r).unwrap())
        .collect();
    FhirClient::new(
        FhirSettings::default(),
        EgressPolicy::new(Vec::new(), rules),
    )
    .unwrap()
}

fn budget(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms)
}

fn bundle() -> serde_json::Value {
    json!({"resourceType": "Bundle", "type": "searchset", "total": 0, "entry": []})
}

/// A TCP listener that counts the connections it accepts.
struct Tripwire {
    port: u16,
    hits: Arc<AtomicUsize>,
}

impl Tripwire {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        tokio::spawn(async move {
            while let Ok((_socket, _)) = listener.accept().await {
                h.fetch_add(1, Ordering::SeqCst);
            }
        });
        Self { port, hits }
    }
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn throttling_is_retried_after_the_servers_retry_after() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "1"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(header("Accept", "application/fhir+json"))
        .and(header("Authorization", "Bearer tok"))
        .respond_with(ResponseTemplate::new(200).set_body_json(bundle()))
        .mount(&server)
        .await;
    let c = client(&[&server.uri()]);
    let started = Instant::now();
    let fetched = c
        .server(&server.uri(), (None, None), Some("tok"), budget(3000))
        .unwrap()
        .fetch("Observation?patient=1")
        .await
        .unwrap();
    assert_eq!(fetched.pages.len(), 1);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited Retry-After"
    );
    assert_eq!(c.metrics().retries.load(Ordering::Relaxed), 1);

    // A Retry-After beyond the budget is not waited for: the 429 is the answer.
    let late = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "30"))
        .mount(&late)
        .await;
    let c = client(&[&late.uri()]);
    let started = Instant::now();
    let e = c
        .server(&late.uri(), (None, None), None, budget(1000))
        .unwrap()
        .fetch("Patient/1")
        .await
        .unwrap_err();
    assert!(matches!(e, FhirError::Status { status: 429, .. }), "{e:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "did not wait 30 s"
    );
}

#[tokio::test]
async fn server_errors_garbage_and_html_are_errors_not_panics() {
    let server = MockServer::start().await;
    let cases: Vec<(&str, ResponseTemplate)> = vec![
        ("/r/500", ResponseTemplate::new(500).set_body_json(json!({"resourceType": "OperationOutcome", "issue": [{"severity": "fatal", "code": "exception"}]}))),
        ("/r/503", ResponseTemplate::new(503)),
        ("/r/truncated", ResponseTemplate::new(200).set_body_raw(r#"{"resourceType":"Bundle","type":"searchset","entry":[{"resou"#, "application/fhir+json")),
        ("/r/html", ResponseTemplate::new(200).set_body_raw("<html><body>Service Unavailable</body></html>", "text/html")),
        ("/r/html502", ResponseTemplate::new(502).set_body_raw("<html>Bad gateway</html>", "text/html")),
        ("/r/notfhir", ResponseTemplate::new(200).set_body_json(json!({"hello": "world"}))),
        ("/r/oo", ResponseTemplate::new(200).set_body_json(json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "forbidden"}]}))),
    ];
    for (p, response) in cases {
        Mock::given(path(p))
            .respond_with(response)
            .mount(&server)
            .await;
    }
    let c = client(&[&server.uri()]);
    let fhir = c
        .server(&server.uri(), (None, None), None, budget(5000))
        .unwrap();
    let kind = |r: Result<_, FhirError>| r.map(|_| ()).unwrap_err();
    match kind(fhir.fetch("r/500").await) {
        FhirError::Status {
            status: 500,
            outcome: Some(oo),
        } => assert_eq!(oo.codes(), ["exception"]),
        e => panic!("{e:?}"),
    }
    assert!(matches!(
        kind(fhir.fetch("r/503").await),
        FhirError::Status {
            status: 503,
            outcome: None
        }
    ));
    assert!(matches!(
        kind(fhir.fetch("r/truncated").await),
        FhirError::NotFhir(_)
    ));
    assert!(matches!(
        kind(fhir.fetch("r/html").await),
        FhirError::NotFhir(_)
    ));
    assert!(matches!(
        kind(fhir.fetch("r/html502").await),
        FhirError::Status {
            status: 502,
            outcome: None
        }
    ));
    assert!(matches!(
        kind(fhir.fetch("r/notfhir").await),
        FhirError::NotFhir(_)
    ));
    match kind(fhir.fetch("r/oo").await) {
        FhirError::Outcome(oo) => assert_eq!(oo.codes(), ["forbidden"]),
        e => panic!("{e:?}"),
    }
    // 503 and 502 were retried twice each (max_retries = 2), the others not at all.
    assert_eq!(c.metrics().retries.load(Ordering::Relaxed), 4);
}

#[tokio::test]
async fn a_50_mb_body_is_cut_off_at_the_cap() {
    let server = MockServer::start().await;
    let mut body = br#"{"resourceType":"Bundle","type":"searchset","entry":["#.to_vec();
    body.resize(50 << 20, b' ');
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body, "application/fhir+json"))
        .mount(&server)
        .await;
    let c = client(&[&server.uri()]);
    let e = c
        .server(&server.uri(), (None, None), None, budget(10_000))
        .unwrap()
        .fetch("Observation")
        .await
        .unwrap_err();
    assert!(
        matches!(e, FhirError::TooLarge { limit } if limit == 16 << 20),
        "{e:?}"
    );
}

#[tokio::test]
async fn refused_servers_and_links_are_never_contacted() {
    let trap = Tripwire::start().await;
    let trap_origin = format!("http://127.0.0.1:{}", trap.port);

    // Not allowlisted at all, and the metadata address.
    let c = client(&["https://fhir.hospital.example"]);
    for target in [
        format!("{trap_origin}/fhir"),
        "http://169.254.169.254/".to_owned(),
    ] {
        let e = c
            .server(&target, (None, None), Some("tok"), budget(2000))
            .err()
            .unwrap();
        assert!(matches!(e, FhirError::Refused(_)), "{target}: {e:?}");
    }
    // A wildcard admits the name, DNS says loopback: refused in the resolver.
    let any = client(&[&format!("https://*:{}", trap.port)]);
    let e = any
        .server(
            &format!("https://localhost:{}/fhir", trap.port),
            (None, None),
            Some("tok"),
            budget(2000),
        )
        .unwrap()
        .fetch("Patient/1")
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            FhirError::Refused(EgressRefusal::NonPublicAddress { .. })
        ),
        "{e:?}"
    );

    // An allowlisted server redirecting elsewhere, or paging to another origin.
    let server = MockServer::start().await;
    Mock::given(path("/fhir/Patient/1"))
        .respond_with(
            ResponseTemplate::new(302)
                .insert_header("Location", format!("{trap_origin}/fhir/Patient/1").as_str()),
        )
        .mount(&server)
        .await;
    Mock::given(path("/fhir/Observation"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "resourceType": "Bundle", "type": "searchset",
            "link": [{"relation": "next", "url": format!("{trap_origin}/fhir/Observation?page=2")}],
            "entry": []
        })))
        .mount(&server)
        .await;
    let c = client(&[&server.uri(), &trap_origin]);
    let fhir = c
        .server(
            &format!("{}/fhir", server.uri()),
            (None, None),
            Some("tok"),
            budget(2000),
        )
        .unwrap();
    assert!(matches!(
        fhir.fetch("Patient/1").await,
        Err(FhirError::Redirect(_))
    ));
    assert!(matches!(
        fhir.fetch("Observation").await,
        Err(FhirError::Refused(EgressRefusal::OtherOrigin { .. }))
    ));
    assert!(matches!(
        fhir.fetch("../../admin").await,
        Err(FhirError::Refused(_))
    ));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(trap.hits(), 0, "the refused target was contacted");
}

#[tokio::test]
async fn a_hook_naming_a_refused_fhir_server_gets_a_412_and_the_server_is_not_contacted() {
    let trap = Tripwire::start().await;
    let keys = KeyServer::start().await;
    let gw = Gateway::start(GatewayOptions {
        jwks_url: Some(keys.jwks_url()),
        fhir_servers: vec!["https://fhir.hospital.example".into()],
        ..Default::default()
    })
    .await;
    for target in [
        format!("http://127.0.0.1:{}/fhir", trap.port),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
    ] {
        let mut request = patient("deteriorating");
        request["fhirServer"] = target.clone().into();
        request.as_object_mut().unwrap().remove("prefetch");
        let r = http()
            .post(gw.service("deterioration"))
            .header("Authorization", bearer("deterioration", Key::Rs384))
            .json(&request)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 412, "{target}");
        let body: serde_json::Value = r.json().await.unwrap();
        let message = body["message"].as_str().unwrap();
        assert!(message.contains("egress policy"), "{message}");
    }
    // With full prefetch the same unlisted server is simply not needed: a card, no contact.
    let mut request = patient("deteriorating");
    request["fhirServer"] = format!("http://127.0.0.1:{}/fhir", trap.port).into();
    let r = http()
        .post(gw.service("deterioration"))
        .header("Authorization", bearer("deterioration", Key::Rs384))
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(trap.hits(), 0);
    let metrics = common::metrics(&gw).await;
    assert!(
        metrics.contains("bedside_fhir_egress_refused_total 2"),
        "{metrics}"
    );
    gw.stop().await;
}
