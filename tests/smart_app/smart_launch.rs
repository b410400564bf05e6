//! SMART App Launch 2.x against a real authorization server (oauth2-mock-server behind a
//! strict PKCE/single-use-code front, `tests/smart/auth-server.mjs`) and, for the two full
//! launches, a real headless Chromium (`tests/smart/browse.mjs`, playwright-core driving
//! `/usr/bin/chromium`). Needs `npm ci --prefix tests/smart` and `apt-get install chromium`
//! (both in `.ci/setup`); without them the tests fail with a message saying so.

use crate::common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use actix_web::dev::ServerHandle;
use serde_json::Value;

use crate::common::{config_text, repo, GatewayOptions};
use bedside::config::Config;
use bedside::server::{self, AuthMode};

const PATIENT: &str = "smart-patient-1";

// === the EHR side (node) ===

struct AuthServer {
    fhir: String,
    other: String,
    control: String,
    child: Child,
}

impl AuthServer {
    fn start() -> Self {
        Self::start_with(&[])
    }

    /// With environment for auth-server.mjs (`SMART_PATIENT`, `FHIR_UPSTREAM`, …).
    fn start_with(env: &[(&str, &str)]) -> Self {
        let dir = repo().join("tests/smart");
        assert!(
            dir.join("node_modules/oauth2-mock-server").is_dir()
                && dir.join("node_modules/playwright-core").is_dir(),
            "tests/smart/node_modules is missing: run `npm ci --prefix tests/smart` (.ci/setup does)"
        );
        let mut child = Command::new("node")
            .arg(dir.join("auth-server.mjs"))
            .current_dir(&dir)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node must be installed to run the SMART harness");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ready: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("auth-server.mjs did not start ({e}): {line:?}"));
        let s = |k: &str| ready[k].as_str().unwrap().to_owned();
        Self {
            fhir: s("fhir"),
            other: s("other"),
            control: s("control"),
            child,
        }
    }

    async fn stats(&self) -> Value {
        reqwest::get(format!("{}/__stats", self.control))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn set_mode(&self, query: &str) {
        let r = reqwest::Client::new()
            .post(format!("{}/__mode?{query}", self.control))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// === the gateway, with its public URL = where it listens (the browser must reach it) ===

struct Smart {
    url: String,
    handle: ServerHandle,
    db: PathBuf,
    _dir: tempfile::TempDir,
}

async fn gateway(auth: &AuthServer) -> Smart {
    gateway_with(auth, "", None).await
}

/// Bedside served over https by its own listener, framed by `frame_ancestor` (an EHR origin).
struct Https<'a> {
    cert: &'a Path,
    key: &'a Path,
    frame_ancestor: &'a str,
}

/// [`gateway`] with more `[smart]` keys (`smart_toml`), over https when `https` is given.
async fn gateway_with(auth: &AuthServer, smart_toml: &str, https: Option<Https<'_>>) -> Smart {
    let port = common::process::free_port();
    let scheme = if https.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://127.0.0.1:{port}");
    gateway_at(auth, smart_toml, https, port, &url, None).await
}

/// [`gateway_with`] listening on `port`, its public URL `public` (where the browser reaches
/// it: itself, or a load balancer in front of it), its store at `storage_url` when given.
async fn gateway_at(
    auth: &AuthServer,
    smart_toml: &str,
    https: Option<Https<'_>>,
    port: u16,
    public: &str,
    storage_url: Option<String>,
) -> Smart {
    let dir = tempfile::tempdir().unwrap();
    let mut extra_toml = format!(
        "\n[smart]\nclient_id = 'bedside-test'\nallowed_issuers = ['{}/']\n{smart_toml}",
        auth.fhir
    );
    if let Some(h) = &https {
        extra_toml.push_str(&format!(
            "[http]\ntls_cert = '{}'\ntls_key = '{}'\nframe_ancestors = ['{}']\n",
            h.cert.display(),
            h.key.display(),
            h.frame_ancestor
        ));
    }
    let opts = GatewayOptions {
        auth: AuthMode::InsecureDisabled,
        extra_toml,
        storage_url,
        ..Default::default()
    };
    let url = public.to_owned();
    let text = config_text(&opts, &dir.path().join("bedside.db"))
        .replace(
            "listen = '127.0.0.1:0'",
            &format!("listen = '127.0.0.1:{port}'"),
        )
        .replace(
            &format!("public_url = '{}'", common::PUBLIC),
            &format!("public_url = '{url}'"),
        );
    let config =
        Config::from_toml_str(&text, "test", &BTreeMap::new()).unwrap_or_else(|e| panic!("{e}"));
    let state = server::build_state(config, opts.auth)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let running = server::start(state).unwrap();
    let handle = running.handle.clone();
    tokio::spawn(running.server);
    Smart {
        url,
        handle,
        db: dir.path().join("bedside.db"),
        _dir: dir,
    }
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .unwrap_or_else(|| panic!("no Location in a {} answer", r.status()))
        .to_str()
        .unwrap()
        .to_owned()
}

fn set_cookie(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_owned())
}

/// Where a launch's authorization ended: the callback URL the authorization server redirects
/// to (not yet followed), and the pre-auth cookie (`name=value`) the launch set in the
/// browser that started it.
struct Callback {
    url: url::Url,
    cookie: String,
}

/// Launch → authorization server → the callback it redirects to.
async fn to_callback(gw: &Smart, launch_path: &str) -> Callback {
    to_callback_from(&no_redirects(), &format!("{}{launch_path}", gw.url)).await
}

/// [`to_callback`] for the full launch URL, from `client` (its source address).
async fn to_callback_from(client: &reqwest::Client, launch: &str) -> Callback {
    let r = client.get(launch).send().await.unwrap();
    assert_eq!(r.status(), 302, "launch: {}", r.text().await.unwrap());
    let cookie = set_cookies(&r)
        .into_iter()
        .find(|c| c.starts_with("bedside_launch_"))
        .map(|c| cookie_pair(&c))
        .expect("the launch sets a pre-auth cookie");
    let r = no_redirects().get(location(&r)).send().await.unwrap();
    assert_eq!(r.status(), 302, "authorize: {}", r.text().await.unwrap());
    Callback {
        url: url::Url::parse(&location(&r)).unwrap(),
        cookie,
    }
}

/// Opens `url` (a callback) in the browser that holds `cookie`, without following redirects.
async fn open_with(url: &url::Url, cookie: &str) -> reqwest::Response {
    no_redirects()
        .get(url.clone())
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
}

/// Every `Set-Cookie` of a response.
fn set_cookies(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// The session cookie a response sets, if any.
fn session_cookie(r: &reqwest::Response) -> Option<String> {
    set_cookies(r)
        .into_iter()
        .find(|c| c.starts_with("bedside_session="))
}

fn with_param(url: &url::Url, name: &str, value: &str) -> url::Url {
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == name {
                value.to_owned()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    let mut out = url.clone();
    out.query_pairs_mut().clear().extend_pairs(pairs);
    out
}

/// The `bedside_session=…` pair of a Set-Cookie value.
fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

// === the browser ===

fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"));
    target.join("smart-screenshots")
}

/// Opens `url` in headless Chromium, waits for `wait_for` (a path), screenshots the page.
async fn browse(url: String, wait_for: &str, screenshot: &Path) -> Value {
    browse_with(url, wait_for, screenshot, Value::Null).await
}

/// [`browse`], then (when `feedback` is `{verdict, reason}`) fills and sends the app's form.
async fn browse_with(url: String, wait_for: &str, screenshot: &Path, feedback: Value) -> Value {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "Chromium is not installed at {chromium}: `apt-get install chromium` (.ci/setup does); this test does not skip"
    );
    let mut args = serde_json::json!({"url": url, "wait_for": wait_for, "screenshot": screenshot});
    if !feedback.is_null() {
        args["feedback"] = feedback;
    }
    let (ok, result) = tokio::task::spawn_blocking(move || common::run_node("browse.mjs", &args))
        .await
        .unwrap();
    assert!(
        ok && result.get("error").is_none(),
        "headless Chromium could not complete the launch: {}",
        result["error"]
    );
    result
}

fn assert_browser_session(result: &Value, gw: &Smart, screenshot: &Path) {
    assert_eq!(
        result["url"].as_str().unwrap(),
        format!("{}/smart/app", gw.url)
    );
    assert_eq!(result["status"], 200, "{result}");
    let text = result["text"].as_str().unwrap();
    assert!(text.contains(PATIENT), "app page: {text}");
    assert!(!text.contains("eyJ"), "a token reached the browser: {text}");
    let cookies = result["cookies"].as_array().unwrap();
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let c = &cookies[0];
    assert_eq!(c["name"], "bedside_session");
    assert_eq!(c["httpOnly"], true);
    assert_eq!(c["sameSite"], "Lax");
    assert_eq!(c["path"], "/smart");
    // Plain http on 127.0.0.1: the one case where Secure is left off.
    assert_eq!(c["secure"], false);
    assert!(c["value"].as_str().unwrap().len() >= 43, "256-bit id");
    assert!(
        screenshot.is_file(),
        "no screenshot at {}",
        screenshot.display()
    );
}

// === tests ===

/// Two replicas on one PostgreSQL behind nginx with the example configuration: its SMART
/// location keeps a browser on one replica (sessions and waiting launches live in that
/// replica's memory), so every launch through the load balancer reaches the app, and the app's
/// pages keep working on later requests.
#[tokio::test]
async fn smart_launches_through_nginx_stay_on_one_replica_and_reach_the_app() {
    let auth = AuthServer::start();
    let pg = common::postgres::PostgresServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ports = [common::process::free_port(), common::process::free_port()];
    // The load balancer's address is the public URL of both (the redirect URI it registers).
    let lb = common::nginx::Nginx::start(dir.path(), ports);
    let mut replicas = Vec::new();
    for port in ports {
        replicas.push(gateway_at(&auth, "", None, port, &lb.url, Some(pg.url())).await);
    }
    for i in 0..6 {
        let launch = format!("{}/smart/launch?iss={}&launch=x{i}", lb.url, auth.fhir);
        let callback = to_callback_from(&no_redirects(), &launch).await;
        assert!(
            callback.url.as_str().starts_with(&lb.url),
            "{}",
            callback.url
        );
        let r = open_with(&callback.url, &callback.cookie).await;
        assert_eq!(r.status(), 302, "launch {i}: {}", r.text().await.unwrap());
        assert_eq!(location(&r), "/smart/app");
        let session = cookie_pair(&session_cookie(&r).expect("a session cookie"));
        for _ in 0..3 {
            let page = no_redirects()
                .get(format!("{}/smart/app", lb.url))
                .header("cookie", &session)
                .send()
                .await
                .unwrap();
            assert_eq!(page.status(), 200, "launch {i}");
            let text = page.text().await.unwrap();
            assert!(text.contains(PATIENT), "launch {i}: {text}");
        }
    }
    assert_eq!(auth.stats().await["token"], 6);
    drop(lb);
    for r in replicas {
        r.handle.stop(true).await;
    }
}

#[tokio::test]
async fn ehr_launch_in_chromium_reaches_the_app_with_the_patient() {
    let auth = AuthServer::start();
    let gw = gateway(&auth).await;
    let shot = screenshot_dir().join("ehr-launch.png");
    let _ = std::fs::remove_file(&shot);
    let url = format!(
        "{}/smart/launch?iss={}&launch=launch-ctx-42",
        gw.url, auth.fhir
    );
    let result = browse(url, "/smart/app", &shot).await;
    assert_browser_session(&result, &gw, &shot);

    let stats = auth.stats().await;
    let a = &stats["last_authorize"];
    assert_eq!(a["response_type"], "code");
    assert_eq!(a["client_id"], "bedside-test");
    assert_eq!(a["redirect_uri"], format!("{}/smart/callback", gw.url));
    assert_eq!(a["aud"], auth.fhir.as_str());
    assert_eq!(a["launch"], "launch-ctx-42");
    assert_eq!(a["code_challenge_method"], "S256");
    assert_eq!(a["code_challenge"].as_str().unwrap().len(), 43);
    assert!(a["state"].as_str().unwrap().len() >= 43);
    assert!(a["nonce"].as_str().unwrap().len() >= 43);
    assert_eq!(
        a["scope"],
        "launch openid fhirUser patient/Patient.r patient/Observation.rs patient/Condition.rs patient/MedicationRequest.rs offline_access"
    );
    assert_eq!(stats["token_ok"], 1);
    assert_eq!(stats["token_refused"], 0);
    assert_eq!(stats["fhir"]["/fhir/.well-known/smart-configuration"], 1);
    gw.handle.stop(true).await;
}

#[tokio::test]
async fn standalone_launch_in_chromium_reaches_the_app_with_the_patient() {
    let auth = AuthServer::start();
    let gw = gateway(&auth).await;
    let shot = screenshot_dir().join("standalone-launch.png");
    let _ = std::fs::remove_file(&shot);
    let url = format!("{}/smart/standalone?iss={}", gw.url, auth.fhir);
    let result = browse(url, "/smart/app", &shot).await;
    assert_browser_session(&result, &gw, &shot);

    let stats = auth.stats().await;
    let a = &stats["last_authorize"];
    assert!(a.get("launch").is_none(), "{a}");
    assert!(a["scope"]
        .as_str()
        .unwrap()
        .starts_with("launch/patient openid"));
    assert_eq!(a["aud"], auth.fhir.as_str());
    assert_eq!(stats["token_ok"], 1);
    gw.handle.stop(true).await;
}

#[tokio::test]
async fn wrong_or_reused_state_is_refused_without_a_token_request() {
    let auth = AuthServer::start();
    let gw = gateway(&auth).await;
    let callback = to_callback(&gw, &format!("/smart/launch?iss={}&launch=x", auth.fhir)).await;

    let forged = with_param(&callback.url, "state", "forged-state");
    let r = open_with(&forged, &callback.cookie).await;
    assert_eq!(r.status(), 400);
    assert!(set_cookie(&r).is_none());
    assert_eq!(
        auth.stats().await["token"],
        0,
        "no token request for an unknown state"
    );

    let r = open_with(&callback.url, &callback.cookie).await;
    assert_eq!(r.status(), 302);
    assert_eq!(location(&r), "/smart/app");
    assert_eq!(auth.stats().await["token"], 1);
    // The pre-auth cookie is expired once used.
    let name = callback.cookie.split('=').next().unwrap().to_owned();
    assert!(
        set_cookies(&r)
            .iter()
            .any(|c| c.starts_with(&format!("{name}=;")) && c.contains("Max-Age=0")),
        "{:?}",
        set_cookies(&r)
    );

    // The same state a second time: single use.
    let r = open_with(&callback.url, &callback.cookie).await;
    assert_eq!(r.status(), 400);
    assert_eq!(auth.stats().await["token"], 1);
    gw.handle.stop(true).await;
}

#[tokio::test]
async fn tampered_code_gives_an_error_page_and_no_session() {
    let auth = AuthServer::start();
    let gw = gateway(&auth).await;
    let callback = to_callback(&gw, &format!("/smart/launch?iss={}&launch=x", auth.fhir)).await;
    let code = callback
        .url
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let tampered = with_param(&callback.url, "code", &format!("{code}x"));
    let r = open_with(&tampered, &callback.cookie).await;
    assert_eq!(r.status(), 400);
    assert!(session_cookie(&r).is_none());
    let page = r.text().await.unwrap();
    assert!(page.contains("invalid_grant"), "{page}");
    let stats = auth.stats().await;
    assert_eq!(stats["token"], 1);
    assert_eq!(stats["token_refused"], 1);
    gw.handle.stop(true).await;
}

#[tokio::test]
async fn code_without_the_pkce_verifier_is_refused_and_then_useless() {
    let auth = AuthServer::start();
    let gw = gateway(&auth).await;
    let callback = to_callback(&gw, &format!("/smart/standalone?iss={}", auth.fhir)).await;
    let code = callback
        .url
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    // Someone holding the code but not bedside's verifier cannot redeem it...
    let disco: Value = reqwest::get(format!("{}/.well-known/smart-configuration", auth.fhir))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = reqwest::Client::new()
        .post(disco["token_endpoint"].as_str().unwrap())
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("client_id", "bedside-test"),
            ("redirect_uri", &format!("{}/smart/callback", gw.url)),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error_description"], "code_verifier missing");
    // ...and the gateway's own exchange of that burnt code ends on an error page, no session.
    let r = open_with(&callback.url, &callback.cookie).await;
    assert_eq!(r.status(), 400);
    assert!(session_cookie(&r).is_none());
    assert!(r.text().await.unwrap().contains("refused the sign-in"));
    gw.handle.stop(true).await;
}

#[tokio::test]
async fn iss_not_allowed_is_refused_and_never_contacted() {
    let auth = AuthServer::start();
    let gw = gateway(&auth).await;
    let http = no_redirects();
    for path in [
        format!("/smart/launch?iss={}&launch=x", auth.other),
        format!("/smart/standalone?iss={}", auth.other),
        format!("/smart/standalone?iss={}.evil", auth.fhir),
        "/smart/standalone?iss=http://127.0.0.1:1/fhir".to_owned(),
        "/smart/launch?launch=x".to_owned(),
    ] {
        let r = http.get(format!("{}{path}", gw.url)).send().await.unwrap();
        assert_eq!(r.status(), 400, "{path}");
    }
    let stats = auth.stats().await;
    assert_eq!(
        stats["fhir"],
        serde_json::json!({}),
        "a refused iss was contacted"
    );
    assert_eq!(stats["authorize"], 0);
    gw.handle.stop(true).await;
}

async fn signed_in(gw: &Smart, auth: &AuthServer) -> String {
    let callback = to_callback(gw, &format!("/smart/launch?iss={}&launch=x", auth.fhir)).await;
    let r = open_with(&callback.url, &callback.cookie).await;
    assert_eq!(r.status(), 302);
    cookie_pair(&session_cookie(&r).expect("a session cookie"))
}

async fn app_page(gw: &Smart, cookie: &str) -> (u16, String) {
    let r = no_redirects()
        .get(format!("{}/smart/app", gw.url))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn expiring_access_token_is_refreshed_or_the_session_ends() {
    let auth = AuthServer::start();
    let gw = gateway(&auth).await;

    // expires_in 30 s (< 60 s) and no refresh token: current() is None → relaunch page.
    auth.set_mode("expires_in=30&no_refresh=1").await;
    let cookie = signed_in(&gw, &auth).await;
    let (status, page) = app_page(&gw, &cookie).await;
    assert_eq!(status, 401);
    assert!(page.contains("relaunch from the EHR"), "{page}");
    // Ended for good, not just this once.
    assert_eq!(app_page(&gw, &cookie).await.0, 401);

    // With a refresh token the session is renewed at the token endpoint.
    auth.set_mode("expires_in=30").await;
    let cookie = signed_in(&gw, &auth).await;
    let (status, page) = app_page(&gw, &cookie).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains(PATIENT));
    assert_eq!(auth.stats().await["refresh"], 1);

    // No cookie, or a made-up one: relaunch page.
    assert_eq!(app_page(&gw, "").await.0, 401);
    assert_eq!(app_page(&gw, "bedside_session=made-up").await.0, 401);
    gw.handle.stop(true).await;
}

#[tokio::test]
async fn bad_id_token_signature_or_nonce_gives_401_and_no_session() {
    let auth = AuthServer::start();
    let gw = gateway(&auth).await;
    for mode in ["bad_signature=1", "bad_nonce=1"] {
        auth.set_mode(mode).await;
        let callback = to_callback(&gw, &format!("/smart/launch?iss={}&launch=x", auth.fhir)).await;
        let r = open_with(&callback.url, &callback.cookie).await;
        assert_eq!(r.status(), 401, "{mode}");
        assert!(
            session_cookie(&r).is_none(),
            "{mode}: a session cookie was set"
        );
    }
    assert_eq!(auth.stats().await["token_ok"], 2);
    gw.handle.stop(true).await;
}

#[tokio::test]
async fn logout_needs_the_csrf_token_and_ends_the_session() {
    let auth = AuthServer::start();
    let gw = gateway(&auth).await;
    let cookie = signed_in(&gw, &auth).await;
    let (status, page) = app_page(&gw, &cookie).await;
    assert_eq!(status, 200);
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the app page's sign-out form carries the CSRF token")
        .to_owned();
    let http = no_redirects();
    let logout = |token: String| {
        http.post(format!("{}/smart/logout", gw.url))
            .header("cookie", cookie.clone())
            .form(&[("csrf", token)])
            .send()
    };
    let r = logout("wrong".into()).await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        app_page(&gw, &cookie).await.0,
        200,
        "session survives a forged logout"
    );

    let r = logout(csrf).await.unwrap();
    assert_eq!(r.status(), 200);
    let expired = set_cookie(&r).expect("the cookie is expired");
    assert!(
        expired.starts_with("bedside_session=;") && expired.contains("Max-Age=0"),
        "{expired}"
    );
    assert!(r.text().await.unwrap().contains("Signed out"));
    assert_eq!(app_page(&gw, &cookie).await.0, 401);
    gw.handle.stop(true).await;
}

// === the app itself, on a real patient record behind a real FHIR server ===

/// A patient who got a deterioration card: the hook request (loaded into the FHIR server as
/// the record) and the card.
async fn patient_with_a_card(gw: &Smart, cohort: &common::cohort::Cohort) -> (Value, Value, Value) {
    use crate::common::cohort::before_onset;
    for p in cohort.with_onset("deterioration") {
        let request = cohort.request(p, before_onset(p, "deterioration", 1.0), "patient-view");
        let r = reqwest::Client::new()
            .post(format!("{}/cds-services/deterioration", gw.url))
            .json(&request)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        if let Some(card) = body["cards"].as_array().and_then(|c| c.first()) {
            return (p.clone(), request, card.clone());
        }
    }
    panic!("no cohort patient with a deterioration onset got a card an hour before it");
}

/// A deterioration prediction about `patient_id`, `hours` ago, as the gateway records one.
fn deterioration_record(
    id: String,
    patient_id: &str,
    hours: i64,
    (risk, outcome, indicator, reason): (Option<f64>, &'static str, Option<&str>, Option<&str>),
) -> bedside::store::PredictionRecord {
    bedside::store::PredictionRecord {
        scope: Default::default(),
        hook_instance: format!("earlier-{id}"),
        id,
        at: chrono::Utc::now() - chrono::Duration::hours(hours),
        service_id: "deterioration".into(),
        hook: "patient-view".into(),
        model: "deterioration".into(),
        model_version: "4.0.1".into(),
        mode: bedside::store::Mode::Active,
        patient_id: Some(patient_id.into()),
        patient_hash: None,
        unit: Some("ward-4".into()),
        risk,
        indicator: indicator.map(str::to_owned),
        outcome: bedside::store::Outcome::parse(outcome).expect("a stored outcome word"),
        reason: reason.map(str::to_owned),
        input_refs: Vec::new(),
        tensor_sha256: None,
        data_quality: None,
        latency_ms: 12.0,
        inputs: None,
    }
}

/// Earlier assessments of the same patient, as the gateway would have recorded them.
async fn seed_history(db: &Path, patient_id: &str) -> (String, usize) {
    use bedside::store::Store;
    let store = Store::open(db).await.unwrap();
    let now = chrono::Utc::now();
    // (hours ago, risk, outcome, indicator, reason)
    type Row = (
        i64,
        Option<f64>,
        &'static str,
        Option<&'static str>,
        Option<&'static str>,
    );
    let rows: [Row; 5] = [
        (60, Some(0.04), "below_threshold", None, None),
        (48, Some(0.07), "below_threshold", None, None),
        (
            36,
            None,
            "abstained",
            None,
            Some("too few measurements in the window (3 < 12)"),
        ),
        (24, Some(0.12), "below_threshold", None, None),
        (12, Some(0.26), "shown", Some("warning"), None),
    ];
    let mut shown = String::new();
    for (i, (hours, risk, outcome, indicator, reason)) in rows.into_iter().enumerate() {
        let id = format!("00000000-0000-4000-8000-00000000000{i}");
        if outcome == "shown" {
            shown = id.clone();
        }
        store
            .record_prediction(&deterioration_record(
                id,
                patient_id,
                hours,
                (risk, outcome, indicator, reason),
            ))
            .await
            .unwrap();
    }
    // The card 12 h ago was overridden in the EHR (CDS Hooks feedback).
    let raw = format!(
        r#"{{"card":"{shown}","outcome":"overridden","overrideReason":{{"reason":{{"code":"already-aware","system":"https://bedside.example/override-reasons"}}}},"outcomeTimestamp":"{}"}}"#,
        (now - chrono::Duration::hours(11)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let item = serde_json::from_str(&raw).unwrap();
    store
        .record_feedback("deterioration", None, &[(item, raw.as_str())])
        .await
        .unwrap();
    store.close().await;
    (shown, rows.len())
}

#[tokio::test]
async fn app_shows_trajectory_evidence_and_limits_and_stores_feedback() {
    use crate::common::fhir_server::{FhirServer, FHIR_TOKEN};
    let fhir = FhirServer::start().await;
    let cohort = common::cohort::Cohort::generate(30, 41);
    // The gateway first (the EHR side needs the patient id the card is about).
    let placeholder = AuthServer::start();
    let gw = gateway(&placeholder).await;
    let (patient, request, card) = patient_with_a_card(&gw, &cohort).await;
    gw.handle.stop(true).await;
    drop(placeholder);

    let patient_id = patient["id"].as_str().unwrap().to_owned();
    fhir.load_prefetch(&request).await;
    let auth = AuthServer::start_with(&[
        ("SMART_PATIENT", patient_id.as_str()),
        ("FHIR_UPSTREAM", fhir.base.as_str()),
        ("FHIR_UPSTREAM_TOKEN", FHIR_TOKEN),
    ]);
    let gw = gateway(&auth).await;
    // The card's prediction, as the new gateway's store holds it: call the hook again there.
    let r = reqwest::Client::new()
        .post(format!("{}/cds-services/deterioration", gw.url))
        .json(&request)
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    let card_uuid = body["cards"][0]["uuid"].as_str().unwrap().to_owned();
    assert_eq!(card_uuid, card["uuid"].as_str().unwrap());
    let (earlier_shown, seeded) = seed_history(&gw.db, &patient_id).await;
    let app_context = body["cards"][0]["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["type"] == "smart")
        .unwrap()["appContext"]
        .as_str()
        .unwrap()
        .to_owned();
    auth.set_mode(&format!(
        "app_context={}",
        url::form_urlencoded::byte_serialize(app_context.as_bytes()).collect::<String>()
    ))
    .await;

    let shot = screenshot_dir().join("app.png");
    let _ = std::fs::remove_file(&shot);
    let url = format!("{}/smart/launch?iss={}&launch=from-card", gw.url, auth.fhir);
    let result = browse_with(
        url,
        "/smart/app",
        &shot,
        serde_json::json!({"verdict": "disagree", "reason": "not-clinically-relevant"}),
    )
    .await;
    assert_eq!(result["status"], 200, "{result}");
    let text = result["text"].as_str().unwrap();
    let name = request["prefetch"]["patient"]["name"][0]["family"]
        .as_str()
        .expect("cohort patients have a family name");
    assert!(text.contains(name), "patient banner: {text}");
    for expected in [
        "Early deterioration warning (bedside)",
        "model deterioration v4.0.1",
        "Now",
        "Risk trajectory",
        "NEWS2",
        "Why: the observations that raised the risk",
        "risk points",
        "When the model declined to score",
        "too few measurements in the window",
        "About this model and its limits",
        "Your assessment",
        "not for clinical use",
    ] {
        assert!(
            text.contains(expected),
            "`{expected}` missing from the app: {text}"
        );
    }
    assert!(!text.contains("eyJ"), "a token reached the browser");

    // Accessible and fits the EHR pane.
    let a11y = &result["a11y"];
    assert_eq!(a11y["unlabeled_controls"], serde_json::json!([]), "{a11y}");
    assert_eq!(a11y["unlabeled_charts"], 0, "{a11y}");
    assert!(
        a11y["charts"].as_u64().unwrap() >= 4,
        "trajectories and trend charts: {a11y}"
    );
    assert!(
        a11y["scroll_width"].as_u64().unwrap() <= 1280,
        "no sideways scrolling: {a11y}"
    );
    assert_eq!(a11y["tab_reaches_feedback"], true, "keyboard only: {a11y}");

    // The page's markup: the trajectory holds every recorded point, thresholds, the card
    // shown and overridden 12 h ago, and the assessment now.
    let session = result["cookies"][0]["value"].as_str().unwrap().to_owned();
    let (status, html) = app_page(&gw, &format!("bedside_session={session}")).await;
    assert_eq!(status, 200);
    let deterioration = html
        .split("id=\"model-deterioration\"")
        .nth(1)
        .expect("a deterioration section")
        .split("</section>")
        .next()
        .unwrap();
    // Seeded rows and the new card's record, less the abstention drawn apart from the line.
    assert_eq!(
        deterioration.matches("class=\"mark scored\"").count(),
        3,
        "{deterioration}"
    );
    assert_eq!(deterioration.matches("class=\"mark shown\"").count(), 2);
    // The EHR's override 12 h ago, and the one just sent from the app.
    assert_eq!(
        deterioration.matches("class=\"mark overridden\"").count(),
        2
    );
    assert_eq!(deterioration.matches("class=\"mark abstained\"").count(), 1);
    assert_eq!(deterioration.matches("class=\"mark now\"").count(), 1);
    assert!(
        deterioration.contains("warning threshold") && deterioration.contains("critical threshold")
    );
    assert!(
        deterioration.contains("class=\"spark\""),
        "trend charts of the drivers"
    );
    assert!(
        deterioration.contains("Observation/"),
        "drivers name their Observation"
    );
    assert!(
        deterioration.contains("synthetic"),
        "the model card's limits: {deterioration}"
    );
    assert!(
        deterioration.contains(&format!("name=\"prediction\" value=\"{card_uuid}\"")),
        "feedback goes to the card the app was opened from"
    );
    assert!(!deterioration.contains(&format!("value=\"{earlier_shown}\"")));
    assert!(html.contains("id=\"model-sepsis\"") && html.contains("id=\"model-aki\""));
    assert_eq!(seeded, 5);

    // The feedback landed in the store, on that card, as an override with its reason.
    let after = &result["after"];
    assert_eq!(after["status"], 200, "{after}");
    assert!(
        after["text"]
            .as_str()
            .unwrap()
            .contains("Your feedback was recorded"),
        "{after}"
    );
    let store = bedside::store::Store::open(&gw.db).await.unwrap();
    let stored = store.feedback_for_card(&card_uuid).await.unwrap();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].outcome, "overridden");
    assert_eq!(stored[0].service_id, "deterioration");
    assert_eq!(
        stored[0].override_reason_code.as_deref(),
        Some("not-clinically-relevant")
    );
    assert!(stored[0].raw_json.contains("\"source\":\"smart-app\""));

    // Every FHIR read went through with the clinician's token; none without.
    let stats = auth.stats().await;
    assert!(stats["fhir_authorized"].as_u64().unwrap() >= 3, "{stats}");
    assert_eq!(stats["fhir_unauthorized"], 0);
    gw.handle.stop(true).await;
}

#[tokio::test]
async fn app_feedback_needs_csrf_a_reason_and_the_patients_own_card() {
    let auth = AuthServer::start();
    let gw = gateway(&auth).await;
    let (own, _) = seed_history(&gw.db, PATIENT).await;
    let other = {
        // A card about another patient, in the same store.
        let store = bedside::store::Store::open(&gw.db).await.unwrap();
        let id = "11111111-0000-4000-8000-000000000001".to_owned();
        store
            .record_prediction(&deterioration_record(
                id.clone(),
                "another-patient",
                0,
                (Some(0.3), "shown", Some("warning"), None),
            ))
            .await
            .unwrap();
        store.close().await;
        id
    };
    let cookie = signed_in(&gw, &auth).await;
    let (_, page) = app_page(&gw, &cookie).await;
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let post = |form: Vec<(&'static str, String)>| {
        no_redirects()
            .post(format!("{}/smart/feedback", gw.url))
            .header("cookie", cookie.clone())
            .form(&form)
            .send()
    };
    let form = |csrf: &str, prediction: &str, verdict: &str, reason: &str| {
        vec![
            ("csrf", csrf.to_owned()),
            ("prediction", prediction.to_owned()),
            ("verdict", verdict.to_owned()),
            ("reason", reason.to_owned()),
        ]
    };
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(
        status(post(form("forged", &own, "agree", "")).await.unwrap()),
        403
    );
    assert_eq!(
        status(post(form(&csrf, &other, "agree", "")).await.unwrap()),
        404
    );
    assert_eq!(
        status(
            post(form(&csrf, "no-such-card", "agree", ""))
                .await
                .unwrap()
        ),
        404
    );
    assert_eq!(
        status(post(form(&csrf, &own, "disagree", "")).await.unwrap()),
        400
    );
    assert_eq!(
        status(
            post(form(&csrf, &own, "disagree", "made-up"))
                .await
                .unwrap()
        ),
        400
    );
    assert_eq!(
        status(post(form(&csrf, &own, "maybe", "")).await.unwrap()),
        400
    );
    let store = bedside::store::Store::open(&gw.db).await.unwrap();
    let before = store.feedback_count().await.unwrap();
    assert_eq!(before, 1, "only the seeded EHR override");

    let r = post(form(&csrf, &own, "agree", "")).await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "app?feedback=recorded#model-deterioration");
    let stored = store.feedback_for_card(&own).await.unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[1].outcome, "accepted");
    assert_eq!(stored[1].client_iss.as_deref(), Some(auth.fhir.as_str()));
    // Without a session nothing is taken.
    let r = reqwest::Client::new()
        .post(format!("{}/smart/feedback", gw.url))
        .form(&form(&csrf, &own, "agree", ""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(store.feedback_count().await.unwrap(), 2);
    gw.handle.stop(true).await;
}

#[tokio::test]
async fn a_reference_smart_client_and_bedside_see_the_same_ehr() {
    use crate::common::fhir_server::{FhirServer, FHIR_TOKEN};
    let fhir = FhirServer::start().await;
    let request = common::patient("deteriorating");
    fhir.load_prefetch(&request).await;
    let patient_id = request["context"]["patientId"].as_str().unwrap().to_owned();
    let auth = AuthServer::start_with(&[
        ("SMART_PATIENT", patient_id.as_str()),
        ("FHIR_UPSTREAM", fhir.base.as_str()),
        ("FHIR_UPSTREAM_TOKEN", FHIR_TOKEN),
    ]);
    // npm `fhirclient` launches against the test EHR on its own...
    let args =
        serde_json::json!({"launch": {"iss": auth.fhir, "launch": "ref-1", "patient": patient_id}});
    let reference = tokio::task::spawn_blocking(move || common::reference_client(&args))
        .await
        .unwrap();
    assert_eq!(reference["patient"], patient_id.as_str(), "{reference}");
    assert_eq!(reference["patient_read"], true);
    assert!(
        reference["observations"].as_u64().unwrap() > 0,
        "{reference}"
    );
    assert_eq!(reference["has_id_token"], true);
    let authorize_uri = reference["discovered"]["authorize_uri"]
        .as_str()
        .unwrap()
        .to_owned();
    let first = auth.stats().await;
    assert_eq!(first["last_authorize"]["client_id"], "reference-client");
    assert_eq!(first["last_authorize"]["aud"], auth.fhir.as_str());
    assert_eq!(first["last_authorize"]["code_challenge_method"], "S256");
    assert_eq!(
        first["token_refused"], 0,
        "the strict front took its PKCE verifier"
    );

    // ...and bedside, on the same EHR, discovers the same endpoints and reads the same record.
    let gw = gateway(&auth).await;
    let r = no_redirects()
        .get(format!(
            "{}/smart/launch?iss={}&launch=x",
            gw.url, auth.fhir
        ))
        .send()
        .await
        .unwrap();
    assert!(
        location(&r).starts_with(&format!("{authorize_uri}?")),
        "{}",
        location(&r)
    );
    let cookie = signed_in(&gw, &auth).await;
    let (status, page) = app_page(&gw, &cookie).await;
    assert_eq!(status, 200);
    let family = request["prefetch"]["patient"]["name"][0]["family"]
        .as_str()
        .unwrap();
    assert!(
        page.contains(family),
        "bedside's banner reads the same Patient"
    );
    let stats = auth.stats().await;
    assert_eq!(stats["fhir_unauthorized"], 0, "{stats}");
    gw.handle.stop(true).await;
}

// === id_tokens without `kid` (issue 14, item 1: the SMART launcher's RS256 tokens) ===

/// [`gateway`], with the `[smart]` scopes of both launches given (`None`: the defaults).
async fn gateway_with_scopes(auth: &AuthServer, scopes: Option<(&str, &str)>) -> Smart {
    let scopes = scopes
        .map(|(ehr, standalone)| format!("scopes = '{ehr}'\nstandalone_scopes = '{standalone}'\n"))
        .unwrap_or_default();
    gateway_with(auth, &scopes, None).await
}

/// Launch (`launch_path`) → authorize → callback; the callback's answer.
async fn complete_launch(gw: &Smart, launch_path: &str) -> reqwest::Response {
    let callback = to_callback(gw, launch_path).await;
    open_with(&callback.url, &callback.cookie).await
}

#[tokio::test]
async fn kidless_rs256_id_token_signs_in_an_ehr_launch_in_chromium() {
    let auth = AuthServer::start();
    auth.set_mode("no_kid=1").await;
    let gw = gateway(&auth).await;
    let shot = screenshot_dir().join("ehr-launch-kidless-id-token.png");
    let _ = std::fs::remove_file(&shot);
    let url = format!(
        "{}/smart/launch?iss={}&launch=launch-ctx-7",
        gw.url, auth.fhir
    );
    let result = browse(url, "/smart/app", &shot).await;
    assert_browser_session(&result, &gw, &shot);
    let text = result["text"].as_str().unwrap();
    assert!(!text.contains("Sign-in not verified"), "{text}");
    let stats = auth.stats().await;
    assert_eq!(stats["id_tokens"], 1, "{stats}");
    assert_eq!(stats["id_tokens_without_kid"], 1, "{stats}");
    gw.handle.stop(true).await;
}

#[tokio::test]
async fn kidless_id_tokens_sign_in_both_launches_with_and_without_openid() {
    let auth = AuthServer::start();
    auth.set_mode("no_kid=1").await;
    let without_openid = (
        "launch patient/Patient.r patient/Observation.rs",
        "launch/patient patient/Patient.r patient/Observation.rs",
    );
    let mut expected_id_tokens = 0;
    for scopes in [None, Some(without_openid)] {
        let gw = gateway_with_scopes(&auth, scopes).await;
        for launch in [
            format!("/smart/launch?iss={}&launch=x", auth.fhir),
            format!("/smart/standalone?iss={}", auth.fhir),
        ] {
            let r = complete_launch(&gw, &launch).await;
            let what = format!("{launch}, scopes {scopes:?}");
            assert_eq!(r.status(), 302, "{what}: {}", r.text().await.unwrap());
            assert_eq!(location(&r), "/smart/app", "{what}");
            let cookie = cookie_pair(&session_cookie(&r).expect("a session cookie"));
            let (status, page) = app_page(&gw, &cookie).await;
            assert_eq!(status, 200, "{what}: {page}");
            assert!(page.contains(PATIENT), "{what}: {page}");
            let asked = auth.stats().await["last_authorize"]["scope"]
                .as_str()
                .unwrap()
                .to_owned();
            assert_eq!(
                asked.contains("openid"),
                scopes.is_none(),
                "{what}: {asked}"
            );
            if scopes.is_none() {
                expected_id_tokens += 1;
            }
        }
        gw.handle.stop(true).await;
    }
    // Each launch that asked for `openid` got a kid-less id_token, and bedside verified it.
    let stats = auth.stats().await;
    assert_eq!(stats["id_tokens"], expected_id_tokens, "{stats}");
    assert_eq!(
        stats["id_tokens_without_kid"], expected_id_tokens,
        "{stats}"
    );
    assert_eq!(stats["token_ok"], 4);
}

#[tokio::test]
async fn kidless_id_token_with_two_fitting_keys_published_is_refused() {
    let auth = AuthServer::start();
    auth.set_mode("no_kid=1&second_key=1").await;
    let gw = gateway(&auth).await;
    for launch in [
        format!("/smart/launch?iss={}&launch=x", auth.fhir),
        format!("/smart/standalone?iss={}", auth.fhir),
    ] {
        let r = complete_launch(&gw, &launch).await;
        assert_eq!(r.status(), 401, "{launch}");
        assert!(
            session_cookie(&r).is_none(),
            "{launch}: a session cookie was set"
        );
        assert!(r.text().await.unwrap().contains("Sign-in not verified"));
    }
    let stats = auth.stats().await;
    assert_eq!(stats["id_tokens_without_kid"], 2, "{stats}");
    // A kid-less token whose signature is bad is refused even with one key published.
    let auth = AuthServer::start();
    auth.set_mode("no_kid=1&bad_signature=1").await;
    let gw2 = gateway(&auth).await;
    let r = complete_launch(&gw2, &format!("/smart/launch?iss={}&launch=x", auth.fhir)).await;
    assert_eq!(r.status(), 401);
    assert!(session_cookie(&r).is_none());
    gw.handle.stop(true).await;
    gw2.handle.stop(true).await;
}

// === embedded launch, browser binding, launch flooding, log forging (issue 14) ===

/// A throwaway certificate for 127.0.0.1 (`cert.pem`, `key.pem` in `dir`).
fn throwaway_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (installed by .ci/setup)");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    (cert, key)
}

/// Issue 14 item 3: EHRs show SMART apps in an iframe of another site. The EHR page here is
/// `http://localhost:…` (another host and scheme than bedside's `https://127.0.0.1:…`), so
/// only a `SameSite=None` cookie reaches bedside inside the frame; a Lax one is neither stored
/// nor sent there, and the frame ends on the relaunch page.
#[tokio::test]
async fn ehr_launch_inside_a_cross_site_iframe_over_https_reaches_the_app() {
    let auth = AuthServer::start();
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = throwaway_cert(certs.path());
    let ehr = auth.control.replace("127.0.0.1", "localhost");
    let gw = gateway_with(
        &auth,
        "",
        Some(Https {
            cert: &cert,
            key: &key,
            frame_ancestor: &ehr,
        }),
    )
    .await;
    let shot = screenshot_dir().join("embedded-launch.png");
    let _ = std::fs::remove_file(&shot);
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(Path::new(&chromium).exists(), "Chromium is not installed");
    let args = serde_json::json!({
        "url": format!("{}/smart/launch?iss={}&launch=embedded-1", gw.url, auth.fhir),
        "embed_in": format!("{ehr}/__embed"),
        "ignore_https_errors": true,
        "wait_for": "/smart/app",
        "screenshot": shot,
    });
    let (ok, result) = tokio::task::spawn_blocking(move || common::run_node("browse.mjs", &args))
        .await
        .unwrap();
    assert!(ok && result.get("error").is_none(), "{}", result["error"]);
    assert_eq!(result["url"], format!("{}/smart/app", gw.url));
    assert_eq!(
        result["status"], 200,
        "the app inside the EHR's frame: {result}"
    );
    let text = result["text"].as_str().unwrap();
    assert!(text.contains(PATIENT), "app page in the frame: {text}");
    let cookies = result["cookies"].as_array().unwrap();
    let session: Vec<_> = cookies
        .iter()
        .filter(|c| c["name"] == "bedside_session")
        .collect();
    assert_eq!(session.len(), 1, "{cookies:?}");
    assert_eq!(session[0]["sameSite"], "None");
    assert_eq!(session[0]["secure"], true);
    assert_eq!(session[0]["httpOnly"], true);
    assert!(
        cookies
            .iter()
            .all(|c| !c["name"].as_str().unwrap().starts_with("bedside_launch_")),
        "the pre-auth cookie is gone after the callback: {cookies:?}"
    );
    assert_eq!(auth.stats().await["token_ok"], 1);
    gw.handle.stop(true).await;
}

/// Issue 14 item 7 (login CSRF): an attacker completes authorization for their own launch and
/// sends the callback URL to a clinician. Opened in that fresh browser (no pre-auth cookie) it
/// is refused before the code is redeemed, and the launch is used up: not even the attacker's
/// own browser can finish it afterwards.
#[tokio::test]
async fn a_callback_opened_in_another_browser_is_refused_and_used_up() {
    let auth = AuthServer::start();
    let gw = gateway(&auth).await;
    let attacker = to_callback(&gw, &format!("/smart/standalone?iss={}", auth.fhir)).await;
    let shot = screenshot_dir().join("foreign-callback.png");
    let result = browse(attacker.url.to_string(), "", &shot).await;
    assert_eq!(result["status"], 400, "{result}");
    assert!(
        result["text"]
            .as_str()
            .unwrap()
            .contains("not started in this browser"),
        "{result}"
    );
    assert_eq!(
        result["cookies"],
        serde_json::json!([]),
        "no session in the victim's browser"
    );
    assert_eq!(auth.stats().await["token"], 0, "the code was not redeemed");
    let r = open_with(&attacker.url, &attacker.cookie).await;
    assert_eq!(r.status(), 400, "the launch was consumed");
    assert!(session_cookie(&r).is_none());

    // The right cookie name with another value is no better.
    let other = to_callback(&gw, &format!("/smart/launch?iss={}&launch=x", auth.fhir)).await;
    let name = other.cookie.split('=').next().unwrap();
    let r = open_with(
        &other.url,
        &format!("{name}=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
    )
    .await;
    assert_eq!(r.status(), 400);
    assert!(session_cookie(&r).is_none());
    assert_eq!(auth.stats().await["token"], 0);
    gw.handle.stop(true).await;
}

fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(ip.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// Issue 14 item 8: unauthenticated launches from one source fill only that source's share of
/// the pending table (429 + Retry-After), another source still signs in, and the issuer's
/// discovery document is fetched once for all of them.
#[tokio::test]
async fn launches_from_one_source_are_capped_and_discovery_is_fetched_once() {
    let auth = AuthServer::start();
    let gw = gateway_with(&auth, "max_pending_launches_per_source = 5\n", None).await;
    let launch = format!("{}/smart/standalone?iss={}", gw.url, auth.fhir);
    let flooder = client_from("127.0.0.1");
    let mut first = None;
    for i in 0..5 {
        let r = flooder.get(&launch).send().await.unwrap();
        assert_eq!(r.status(), 302, "launch {i}");
        first.get_or_insert(r);
    }
    let r = flooder.get(&launch).send().await.unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=600).contains(&retry), "Retry-After: {retry}");

    // Another source is not locked out, and completes its sign-in.
    let other = to_callback_from(&client_from("127.0.0.2"), &launch).await;
    let r = open_with(&other.url, &other.cookie).await;
    assert_eq!(r.status(), 302);
    assert!(session_cookie(&r).is_some());

    // One discovery fetch for all seven launches.
    let stats = auth.stats().await;
    assert_eq!(
        stats["fhir"]["/fhir/.well-known/smart-configuration"], 1,
        "{stats}"
    );

    // A finished launch frees its source's slot.
    let first = first.unwrap();
    let cookie = set_cookies(&first)
        .into_iter()
        .find(|c| c.starts_with("bedside_launch_"))
        .map(|c| cookie_pair(&c))
        .unwrap();
    let authorize = no_redirects().get(location(&first)).send().await.unwrap();
    let callback = url::Url::parse(&location(&authorize)).unwrap();
    assert_eq!(open_with(&callback, &cookie).await.status(), 302);
    assert_eq!(flooder.get(&launch).send().await.unwrap().status(), 302);
    gw.handle.stop(true).await;
}

/// Issue 14 item 8: a failing discovery is remembered for `discovery_failure_ttl`, so launch
/// attempts against a broken EHR do not each call it; after that it is asked again.
#[tokio::test]
async fn a_failed_discovery_is_remembered_briefly() {
    let auth = AuthServer::start();
    let gw = gateway_with(&auth, "discovery_failure_ttl = '1s'\n", None).await;
    auth.set_mode("no_s256=1").await;
    let launch = format!("{}/smart/standalone?iss={}", gw.url, auth.fhir);
    for _ in 0..3 {
        let r = no_redirects().get(&launch).send().await.unwrap();
        assert_eq!(r.status(), 502);
        assert!(r.text().await.unwrap().contains("PKCE S256"));
    }
    let fetches = |stats: Value| stats["fhir"]["/fhir/.well-known/smart-configuration"].clone();
    assert_eq!(fetches(auth.stats().await), 1);
    auth.set_mode("").await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = no_redirects().get(&launch).send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(fetches(auth.stats().await), 2);
    gw.handle.stop(true).await;
}

/// Issue 14 item 12: a launch `iss` is client text. With a line break in it, it must not
/// start a line of its own in the log (a forged entry); it is logged escaped, on the refusal's
/// line.
#[tokio::test]
async fn an_iss_with_a_line_break_cannot_forge_a_log_line() {
    use crate::common::process::{config, free_port, BedsideProcess};
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config(
        dir.path(),
        port,
        &dir.path().join("bedside.db"),
        "[smart]\nallowed_issuers = ['https://ehr.example/fhir']\n",
    );
    let bedside = BedsideProcess::start(&cfg, port, "info");
    let forged =
        "https://evil.example\n2026-01-01T00:00:00.000000Z  INFO bedside: FORGED admin signed in";
    let iss: String = url::form_urlencoded::byte_serialize(forged.as_bytes()).collect();
    for path in [
        format!("/smart/standalone?iss={iss}"),
        format!("/smart/launch?launch=x&iss={iss}"),
    ] {
        let r = reqwest::get(format!("{}{path}", bedside.url))
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{path}");
    }
    let log = std::fs::read_to_string(&bedside.log).unwrap();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("FORGED")).collect();
    assert_eq!(lines.len(), 2, "both refusals are logged: {log}");
    for line in lines {
        assert!(
            line.contains("SMART launch refused") && line.contains("\\n2026-01-01"),
            "the iss is escaped on the refusal's line, not a line of its own: {line:?}"
        );
    }
}
