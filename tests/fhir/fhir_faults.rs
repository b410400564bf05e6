//! What a real server cannot be made to do on demand (wiremock, faults only): throttling,
//! 5xx, truncated JSON, HTML error pages, huge bodies, redirects off-origin — and the egress
//! policy, where a listener on the target must see zero connections.

use crate::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{bearer, http, patient, Gateway, GatewayOptions, Key, KeyServer};
use bedside::fhir::{EgressPolicy, EgressRefusal, FhirClient, FhirError, FhirSettings, OriginRule};
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

// === issue 14: egress decided per caller, no proxy, server-supplied numbers, paging caps ===

/// A second trusted client (same test keys, its own `iss`).
const OTHER_ISS: &str = "https://other-ehr.test/cds-client";

fn bearer_as(iss: &str, id: &str) -> String {
    let mut claims = common::claims(id);
    claims["iss"] = iss.into();
    format!("Bearer {}", common::sign(&claims, Key::Es384, None))
}

/// `patient("deteriorating")` with nothing prefetched, aimed at `fhir_server`.
fn bare_request(fhir_server: &str) -> serde_json::Value {
    let mut request = patient("deteriorating");
    request["fhirServer"] = fhir_server.into();
    request.as_object_mut().unwrap().remove("prefetch");
    request
}

/// Issue 14 item 9: client A may reach only `https://*:P` (a wildcard: public addresses only);
/// client B lists `http://localhost:P` exactly. A's call naming `https://localhost:P` used to
/// connect (B's exact host was a global exemption); now it is refused and the listener sees
/// nothing, while B's own exact entry still reaches loopback. The 412 does not say what the
/// name resolved to (item 13).
#[tokio::test]
async fn a_wildcard_client_never_reaches_a_private_host_another_client_lists_exactly() {
    let trap = Tripwire::start().await;
    let keys = KeyServer::start().await;
    let gw = Gateway::start(GatewayOptions {
        jwks_url: Some(keys.jwks_url()),
        fhir_servers: vec![format!("https://*:{}", trap.port)],
        extra_toml: format!(
            "\n[[clients]]\niss = '{OTHER_ISS}'\njwks_urls = ['{}']\nfhir_servers = ['http://localhost:{}']\n",
            keys.jwks_url(),
            trap.port
        ),
        ..Default::default()
    })
    .await;

    let r = http()
        .post(gw.service("deterioration"))
        .header("Authorization", bearer("deterioration", Key::Es384))
        .json(&bare_request(&format!(
            "https://localhost:{}/fhir",
            trap.port
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 412);
    let body: serde_json::Value = r.json().await.unwrap();
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("egress policy"), "{message}");
    assert!(
        !message.contains("127.0.0.1") && !message.contains("::1"),
        "the 412 names the resolved address: {message}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        trap.hits(),
        0,
        "client A reached loopback through B's exact entry"
    );

    // B's exact entry is B's: it does reach the loopback listener.
    let r = http()
        .post(gw.service("deterioration"))
        .header("Authorization", bearer_as(OTHER_ISS, "deterioration"))
        .json(&bare_request(&format!(
            "http://localhost:{}/fhir",
            trap.port
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 412, "the tripwire answers nothing");
    assert!(trap.hits() >= 1, "B's exact entry did not connect");
    gw.stop().await;
}

/// A TCP "proxy" that records the first line of every connection (`CONNECT host:port …` or
/// `GET http://… HTTP/1.1`) and then hangs up.
struct ProxyRecorder {
    url: String,
    lines: Arc<std::sync::Mutex<Vec<String>>>,
}

impl ProxyRecorder {
    async fn start() -> Self {
        use tokio::io::AsyncBufReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let lines: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
        let seen = lines.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut line = String::new();
                    let mut reader = tokio::io::BufReader::new(socket);
                    let _ = reader.read_line(&mut line).await;
                    seen.lock().unwrap().push(line.trim_end().to_owned());
                });
            }
        });
        Self { url, lines }
    }
    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

/// Issue 14 item 10: with `HTTPS_PROXY`/`HTTP_PROXY` set for the gateway process (common in
/// hospitals), bedside used to hand `CONNECT localhost:443` to the proxy, which resolves the
/// name itself: the public-only check never ran. Now the proxy is never used: the wildcard
/// call is refused by the egress check (the address goes to the log, not the 412), and an
/// exactly listed plain-http server is reached directly.
#[tokio::test]
async fn the_proxy_environment_is_ignored_so_the_egress_check_still_runs() {
    let proxy = ProxyRecorder::start().await;
    let trap = Tripwire::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = common::process::free_port();
    let config = common::process::config(
        dir.path(),
        port,
        &dir.path().join("bedside.db"),
        &format!(
            "[fhir]\nallowed_servers = ['https://*', 'http://127.0.0.1:{}']\n",
            trap.port
        ),
    );
    let gw = common::process::BedsideProcess::start_with_env(
        &config,
        port,
        "warn",
        &[
            ("HTTPS_PROXY", proxy.url.as_str()),
            ("HTTP_PROXY", proxy.url.as_str()),
            ("ALL_PROXY", proxy.url.as_str()),
            ("NO_PROXY", ""),
        ],
    );
    let call = |fhir_server: String| {
        let url = format!("{}/cds-services/deterioration", gw.url);
        async move {
            let r = http()
                .post(url)
                .json(&bare_request(&fhir_server))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<serde_json::Value>().await.unwrap())
        }
    };

    let (status, body) = call("https://localhost/fhir".into()).await;
    assert_eq!(status, 412, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("egress policy"), "{message}");
    assert!(
        !message.contains("127.0.0.1") && !message.contains("::1"),
        "{message}"
    );

    let (status, body) = call(format!("http://127.0.0.1:{}/fhir", trap.port)).await;
    assert_eq!(status, 412, "the tripwire answers nothing: {body}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        proxy.lines(),
        Vec::<String>::new(),
        "requests went to the proxy"
    );
    assert!(
        trap.hits() >= 1,
        "the listed server was not reached directly"
    );

    let log = std::fs::read_to_string(&gw.log).unwrap();
    assert!(
        log.contains("non-public address")
            && (log.contains("address=127.0.0.1") || log.contains("address=::1")),
        "the resolved address belongs in the log: {log}"
    );
}

/// A FHIR server stand-in (actix, a real HTTP server) for what a FHIR server would never do on
/// its own: answers every request with `status`, `headers` and `body`; `{next}` in the body is
/// replaced by a `next` link to the following page.
struct OddServer {
    base: String,
    hits: Arc<AtomicUsize>,
    handle: actix_web::dev::ServerHandle,
}

impl OddServer {
    async fn start(status: u16, headers: Vec<(&'static str, String)>, body: String) -> Self {
        use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let server = HttpServer::new(move || {
            let (h, headers, body) = (h.clone(), headers.clone(), body.clone());
            App::new().default_service(web::to(move |req: HttpRequest| {
                let (h, headers, body) = (h.clone(), headers.clone(), body.clone());
                async move {
                    let n = h.fetch_add(1, Ordering::SeqCst) + 1;
                    let next = format!(
                        "http://{}{}?page={}",
                        req.connection_info().host(),
                        req.path(),
                        n + 1
                    );
                    let mut response =
                        HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
                    for (name, value) in &headers {
                        response.insert_header((*name, value.as_str()));
                    }
                    response
                        .content_type("application/fhir+json")
                        .body(body.replace("{next}", &next))
                }
            }))
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            base: format!("http://{addr}/fhir"),
            hits,
            handle,
        }
    }
    fn origin(&self) -> String {
        self.base.trim_end_matches("/fhir").to_owned()
    }
}

/// The gateway's audit rows, once the background writer has written at least `n`.
async fn audit_rows(gw: &Gateway, n: usize) -> Vec<bedside::store::StoredAudit> {
    let store = bedside::store::Store::open(&gw.db).await.unwrap();
    for _ in 0..300 {
        let rows = store.audit_rows().await.unwrap();
        if rows.len() >= n {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    store.audit_rows().await.unwrap()
}

/// Issue 14 item 12: `Retry-After: 18446744073709551615` (u64::MAX seconds) used to panic in
/// `Instant + wait`, which dropped the EHR's connection and skipped the audit row. Now the wait
/// is simply not taken: the 503 is the answer, the EHR gets its 412, the call is audited.
#[tokio::test]
async fn a_retry_after_of_u64_max_is_an_answer_not_a_panic() {
    let server = OddServer::start(
        503,
        vec![("Retry-After", u64::MAX.to_string())],
        String::new(),
    )
    .await;
    let keys = KeyServer::start().await;
    let gw = Gateway::start(GatewayOptions {
        jwks_url: Some(keys.jwks_url()),
        fhir_servers: vec![server.origin()],
        ..Default::default()
    })
    .await;
    let r = http()
        .post(gw.service("deterioration"))
        .header("Authorization", bearer("deterioration", Key::Es384))
        .json(&bare_request(&server.base))
        .send()
        .await
        .expect("the gateway answered (no panic)");
    assert_eq!(r.status(), 412);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("HTTP 503"),
        "{body}"
    );
    let rows = audit_rows(&gw, 1).await;
    assert!(
        rows.iter()
            .any(|r| r.action == "hook" && r.http_status == 412),
        "{rows:?}"
    );
    gw.stop().await;
    server.handle.stop(true).await;
}

fn capped(max_pages: usize, max_fetch_bytes: usize, rules: &[&str]) -> FhirClient {
    let rules = rules
        .iter()
        .map(|r| OriginRule::parse(r).unwrap())
        .collect();
    let settings = FhirSettings {
        max_pages,
        max_fetch_bytes,
        ..Default::default()
    };
    FhirClient::new(settings, EgressPolicy::new(Vec::new(), rules)).unwrap()
}

/// Issue 14 item 12: a server sending empty searchset pages padded to 1 MB, each with a `next`
/// link, never reaches the resource cap; the byte total across pages stops it (memory stays
/// bounded), and so does the page cap for small empty pages. A clear error, not a truncation.
#[tokio::test]
async fn paging_stops_at_the_byte_total_and_the_page_cap() {
    let page = |pad: usize| {
        format!(
            r#"{{"resourceType":"Bundle","type":"searchset","link":[{{"relation":"next","url":"{{next}}"}}],"entry":[]{}}}"#,
            " ".repeat(pad)
        )
    };
    let padded = OddServer::start(200, Vec::new(), page(1 << 20)).await;
    let c = capped(100, 4 << 20, &[&padded.origin()]);
    let e = c
        .server(&padded.base, (None, None), None, budget(20_000))
        .unwrap()
        .fetch("Observation?patient=1")
        .await
        .unwrap_err();
    assert!(
        matches!(e, FhirError::PagingCap { limit, .. } if limit == 4 << 20),
        "{e:?}"
    );
    assert!(e.to_string().contains("bytes"), "{e}");
    let hits = padded.hits.load(Ordering::SeqCst);
    assert!(hits <= 5, "read {hits} pages of 1 MB under a 4 MB cap");

    let small = OddServer::start(200, Vec::new(), page(0)).await;
    let c = capped(7, 32 << 20, &[&small.origin()]);
    let e = c
        .server(&small.base, (None, None), None, budget(20_000))
        .unwrap()
        .fetch("Observation?patient=1")
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            FhirError::PagingCap {
                limit: 7,
                unit: "pages"
            }
        ),
        "{e:?}"
    );
    assert_eq!(small.hits.load(Ordering::SeqCst), 7);
    assert_eq!(
        c.metrics().errors[bedside::fhir::client::ERROR_KINDS
            .iter()
            .position(|k| *k == "paging_cap")
            .unwrap()]
        .load(Ordering::Relaxed),
        1
    );
    for s in [padded, small] {
        s.handle.stop(true).await;
    }
}
