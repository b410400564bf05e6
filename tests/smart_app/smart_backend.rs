//! SMART Backend Services: a hook call without `fhirAuthorization` makes bedside get its own
//! token (client_credentials + signed JWT assertion) and query a real FHIR server with it.
//! The token endpoint here verifies assertions as an EHR does: bedside's key from the running
//! gateway's `/.well-known/jwks.json`, signature, `iss`/`sub`, `aud`, `exp`, `jti` replay.

use crate::common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};

use crate::common::fhir_server::{aimed_at, FhirServer, FHIR_TOKEN};
use crate::common::{bearer, http, patient, Gateway, GatewayOptions, Key, KeyServer};

const CLIENT_ID: &str = "bedside-backend-test";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

// === a token endpoint that verifies like an EHR ===

#[derive(Default)]
struct Verifier {
    /// bedside's JWKS URL, known once the gateway runs.
    jwks_url: Mutex<String>,
    /// This endpoint's own URL: the `aud` it accepts.
    own_url: Mutex<String>,
    seen_jti: Mutex<HashSet<String>>,
    issued: AtomicUsize,
    refused: Mutex<Vec<String>>,
    last_assertion: Mutex<String>,
    last_scope: Mutex<String>,
    last_kid: Mutex<String>,
    /// `expires_in` to answer with (default 300).
    expires_in: Mutex<Option<Value>>,
}

fn oauth_error(code: &str, why: String, v: &Verifier) -> HttpResponse {
    v.refused.lock().unwrap().push(format!("{code}: {why}"));
    HttpResponse::BadRequest().json(json!({"error": code, "error_description": why}))
}

async fn token(v: web::Data<Verifier>, body: web::Bytes) -> HttpResponse {
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(&body).into_owned().collect();
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    if get("grant_type") != "client_credentials" {
        return oauth_error("unsupported_grant_type", get("grant_type"), &v);
    }
    if get("client_assertion_type") != ASSERTION_TYPE {
        return oauth_error("invalid_client", "assertion type".into(), &v);
    }
    let assertion = get("client_assertion");
    *v.last_assertion.lock().unwrap() = assertion.clone();
    let header = match jsonwebtoken::decode_header(&assertion) {
        Ok(h) => h,
        Err(e) => return oauth_error("invalid_client", format!("header: {e}"), &v),
    };
    if !matches!(header.alg, Algorithm::RS384 | Algorithm::ES384) {
        return oauth_error("invalid_client", format!("alg {:?}", header.alg), &v);
    }
    let Some(kid) = header.kid.clone() else {
        return oauth_error("invalid_client", "no kid".into(), &v);
    };
    // Fetched from the running gateway on every request, as an EHR with no cache would.
    let jwks_url = v.jwks_url.lock().unwrap().clone();
    let jwks: JwkSet = match http().get(&jwks_url).send().await {
        Ok(r) if r.status().is_success() => match r.json().await {
            Ok(j) => j,
            Err(e) => return oauth_error("invalid_client", format!("jwks: {e}"), &v),
        },
        other => return oauth_error("invalid_client", format!("jwks fetch: {other:?}"), &v),
    };
    let Some(jwk) = jwks.find(&kid) else {
        return oauth_error("invalid_client", format!("kid {kid} not in JWKS"), &v);
    };
    let key = match DecodingKey::from_jwk(jwk) {
        Ok(k) => k,
        Err(e) => return oauth_error("invalid_client", format!("jwk: {e}"), &v),
    };
    let own_url = v.own_url.lock().unwrap().clone();
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[own_url.as_str()]);
    validation.set_issuer(&[CLIENT_ID]);
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    validation.leeway = 0;
    let claims = match jsonwebtoken::decode::<Value>(&assertion, &key, &validation) {
        Ok(d) => d.claims,
        Err(e) => return oauth_error("invalid_client", format!("assertion: {e}"), &v),
    };
    if claims["sub"] != CLIENT_ID {
        return oauth_error("invalid_client", "sub".into(), &v);
    }
    let now = common::now();
    if claims["exp"].as_i64().is_none_or(|exp| exp > now + 300) {
        return oauth_error("invalid_client", "exp more than 5 min ahead".into(), &v);
    }
    let Some(jti) = claims["jti"].as_str().filter(|j| !j.is_empty()) else {
        return oauth_error("invalid_client", "no jti".into(), &v);
    };
    if !v.seen_jti.lock().unwrap().insert(jti.to_owned()) {
        return oauth_error("invalid_grant", "jti replayed".into(), &v);
    }
    *v.last_scope.lock().unwrap() = get("scope");
    *v.last_kid.lock().unwrap() = kid;
    v.issued.fetch_add(1, Ordering::SeqCst);
    let expires_in = v.expires_in.lock().unwrap().clone().unwrap_or(json!(300));
    HttpResponse::Ok().json(json!({
        "access_token": FHIR_TOKEN, "token_type": "bearer", "expires_in": expires_in,
        "scope": get("scope"),
    }))
}

struct TokenServer {
    url: String,
    v: Arc<Verifier>,
    handle: ServerHandle,
}

impl TokenServer {
    async fn start() -> Self {
        let v = Arc::new(Verifier::default());
        let data = web::Data::from(v.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/oauth2/token", web::post().to(token))
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
        let url = format!("http://{}/oauth2/token", server.addrs()[0]);
        *v.own_url.lock().unwrap() = url.clone();
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Self { url, v, handle }
    }

    fn issued(&self) -> usize {
        self.v.issued.load(Ordering::SeqCst)
    }

    /// Requests that reached this endpoint at all (issued or refused).
    fn requests(&self) -> usize {
        self.issued() + self.v.refused.lock().unwrap().len()
    }

    fn origin(&self) -> String {
        url::Url::parse(&self.url)
            .unwrap()
            .origin()
            .ascii_serialization()
    }

    /// Replays the last assertion bedside sent: `(status, OAuth error)`.
    async fn replay_last(&self) -> (u16, Value) {
        let assertion = self.v.last_assertion.lock().unwrap().clone();
        let r = http()
            .post(&self.url)
            .form(&[
                ("grant_type", "client_credentials"),
                ("scope", "system/Patient.rs"),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", assertion.as_str()),
            ])
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }
}

// === a FHIR server stand-in that records what it is sent ===

#[derive(Default)]
struct Recorder {
    /// `(path, Authorization header)` of every request.
    requests: Mutex<Vec<(String, Option<String>)>>,
    /// Token endpoint announced in `/.well-known/smart-configuration`, if any.
    token_endpoint: Mutex<Option<String>>,
}

struct StubFhir {
    base: String,
    rec: Arc<Recorder>,
    handle: ServerHandle,
}

impl StubFhir {
    async fn start(token_endpoint: Option<String>) -> Self {
        let rec = Arc::new(Recorder::default());
        *rec.token_endpoint.lock().unwrap() = token_endpoint;
        let data = web::Data::from(rec.clone());
        let server = HttpServer::new(move || {
            App::new().app_data(data.clone()).default_service(web::to(
                |rec: web::Data<Recorder>, req: HttpRequest| async move {
                    let auth = req
                        .headers()
                        .get("authorization")
                        .and_then(|h| h.to_str().ok())
                        .map(str::to_owned);
                    rec.requests
                        .lock()
                        .unwrap()
                        .push((req.path().to_owned(), auth));
                    if req.path().ends_with("/.well-known/smart-configuration") {
                        if let Some(t) = rec.token_endpoint.lock().unwrap().clone() {
                            return HttpResponse::Ok().json(json!({
                                "token_endpoint": t,
                                "token_endpoint_auth_methods_supported": ["private_key_jwt"],
                                "grant_types_supported": ["client_credentials"],
                            }));
                        }
                    }
                    HttpResponse::Unauthorized()
                        .content_type("application/fhir+json")
                        .json(json!({"resourceType": "OperationOutcome", "issue": [
                            {"severity": "error", "code": "login", "diagnostics": "no token"}]}))
                },
            ))
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
            rec,
            handle,
        }
    }

    fn origin(&self) -> String {
        url::Url::parse(&self.base)
            .unwrap()
            .origin()
            .ascii_serialization()
    }

    fn requests(&self) -> Vec<(String, Option<String>)> {
        self.rec.requests.lock().unwrap().clone()
    }
}

// === helpers ===

/// A fresh PKCS#8 key from the openssl CLI.
fn openssl_key(dir: &Path, alg: Algorithm) -> std::path::PathBuf {
    let path = dir.join(format!("{alg:?}.pem"));
    let args: &[&str] = match alg {
        Algorithm::ES384 => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
        _ => &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    };
    let status = std::process::Command::new("openssl")
        .arg("genpkey")
        .args(args)
        .arg("-out")
        .arg(&path)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl CLI");
    assert!(status.success(), "openssl genpkey {alg:?}");
    path
}

async fn call(gw: &Gateway, body: &Value) -> (u16, Value) {
    let r = http()
        .post(gw.service("deterioration"))
        .header("Authorization", bearer("deterioration", Key::Es384))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// `request` with no prefetch and no `fhirAuthorization`, aimed at `fhir_server`.
fn bare(request: &Value, fhir_server: &str) -> Value {
    let mut r = request.clone();
    let o = r.as_object_mut().unwrap();
    o.remove("prefetch");
    o.remove("fhirAuthorization");
    o.insert("fhirServer".into(), fhir_server.into());
    r
}

/// A gateway trusting the test client, whose calls may query `client_fhir_servers` and have
/// bedside's own token used on `granted` (its `backend_services`).
async fn gateway(
    keys: &KeyServer,
    client_fhir_servers: Vec<String>,
    granted: &[String],
    backend_toml: String,
) -> Gateway {
    let gw = Gateway::start(GatewayOptions {
        jwks_url: Some(keys.jwks_url()),
        fhir_servers: client_fhir_servers,
        client_toml: format!("backend_services = {granted:?}\n"),
        extra_toml: backend_toml,
        ..Default::default()
    })
    .await;
    gw
}

/// `[backend_services]` with the test client id and `key`, and `more` lines.
fn backend_toml(key: &Path, more: &str) -> String {
    format!(
        "[backend_services]\nclient_id = '{CLIENT_ID}'\nprivate_key = '{}'\n{more}",
        key.display()
    )
}

/// The whole flow with one key type: card from bedside-fetched data, token cached, JWKS shape.
async fn fetches_with_own_token(alg: Algorithm) {
    let dir = tempfile::tempdir().unwrap();
    let key = openssl_key(dir.path(), alg);
    let server = FhirServer::start().await;
    let tokens = TokenServer::start().await;
    let keys = KeyServer::start().await;
    let full = aimed_at(patient("deteriorating"), &server);
    server.load_prefetch(&full).await;
    let algorithm_line = match alg {
        // ES384 is the default: not named.
        Algorithm::ES384 => String::new(),
        _ => "algorithm = 'RS384'\nkid = 'bedside-rsa-1'\n".to_owned(),
    };
    let gw = gateway(
        &keys,
        vec![server.origin()],
        &[server.origin()],
        backend_toml(
            &key,
            &format!("{algorithm_line}token_endpoint = '{}'\n", tokens.url),
        ),
    )
    .await;
    *tokens.v.jwks_url.lock().unwrap() = format!("{}/.well-known/jwks.json", gw.url);

    // What the EHR registers for bedside.
    let jwks: Value = http()
        .get(format!("{}/.well-known/jwks.json", gw.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwk = &jwks["keys"][0];
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1, "{jwks}");
    assert_eq!(jwk["use"], "sig");
    assert_eq!(jwk["alg"], format!("{alg:?}"));
    assert!(jwk.get("d").is_none(), "no private part: {jwk}");
    match alg {
        Algorithm::ES384 => {
            assert_eq!((&jwk["kty"], &jwk["crv"]), (&json!("EC"), &json!("P-384")));
            assert_eq!(jwk["x"].as_str().unwrap().len(), 64);
            assert_eq!(jwk["y"].as_str().unwrap().len(), 64);
            assert_eq!(jwk["kid"].as_str().unwrap().len(), 43, "thumbprint kid");
        }
        _ => {
            assert_eq!(jwk["kty"], "RSA");
            assert_eq!(jwk["e"], "AQAB");
            assert_eq!(jwk["kid"], "bedside-rsa-1");
        }
    }

    // Reference: the card with full prefetch (no FHIR query, no token).
    let (status, prefetched) = call(&gw, &full).await;
    assert_eq!(status, 200, "{prefetched}");
    assert_eq!(tokens.issued(), 0);
    let summary = prefetched["cards"][0]["summary"].clone();
    assert!(summary.is_string(), "{prefetched}");

    // (a) nothing prefetched, no fhirAuthorization: bedside's own token fetches the data.
    let request = bare(&full, &server.base);
    let (status, body) = call(&gw, &request).await;
    assert_eq!(
        status,
        200,
        "{body}; token endpoint refusals: {:?}",
        tokens.v.refused.lock().unwrap()
    );
    assert_eq!(body["cards"][0]["summary"], summary, "{body}");
    assert_eq!(tokens.issued(), 1);
    assert_eq!(
        *tokens.v.last_scope.lock().unwrap(),
        "system/Patient.rs system/Observation.rs system/Condition.rs system/MedicationRequest.rs system/Encounter.rs"
    );
    assert_eq!(
        *tokens.v.last_kid.lock().unwrap(),
        jwk["kid"].as_str().unwrap()
    );

    // An independent implementation (`jose`, as Node-based authorization servers use) accepts
    // the same assertion against bedside's published JWKS.
    let args = json!({"assertion": {
        "jwt": *tokens.v.last_assertion.lock().unwrap(),
        "jwks_url": format!("{}/.well-known/jwks.json", gw.url),
        "client_id": CLIENT_ID,
        "aud": tokens.url,
    }});
    let checked = tokio::task::spawn_blocking(move || common::reference_client(&args))
        .await
        .unwrap();
    assert_eq!(checked["verified"], true, "{checked}");
    assert_eq!(checked["alg"], format!("{alg:?}"));
    assert!(checked["exp_in_s"].as_i64().unwrap() <= 300, "{checked}");

    // (b) a second call reuses the cached token.
    let (status, body) = call(&gw, &request).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(tokens.issued(), 1, "token endpoint hit once");

    // The EHR's own token, when sent, is used instead: no backend token requested.
    let mut with_ehr_token = full.clone();
    with_ehr_token.as_object_mut().unwrap().remove("prefetch");
    let (status, body) = call(&gw, &with_ehr_token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(tokens.issued(), 1);

    // The endpoint is a real verifier: the same assertion twice is a replay.
    let (status, error) = tokens.replay_last().await;
    assert_eq!(
        (status, &error["error"]),
        (400, &json!("invalid_grant")),
        "{error}"
    );
    assert_eq!(tokens.v.refused.lock().unwrap().len(), 1);

    gw.stop().await;
    tokens.handle.stop(true).await;
}

#[tokio::test]
async fn es384_key_gets_a_token_that_fetches_missing_prefetch_once() {
    fetches_with_own_token(Algorithm::ES384).await;
}

#[tokio::test]
async fn rs384_key_gets_a_token_that_fetches_missing_prefetch_once() {
    fetches_with_own_token(Algorithm::RS384).await;
}

/// (c) A FHIR server the EHR's calls may reach but that is not granted to the client
/// (`backend_services`) never receives bedside's token, and no token is even requested for
/// it; a granted one discovers its token endpoint from `/.well-known/smart-configuration`
/// (on the client's allowlist) and gets the token.
#[tokio::test]
async fn only_granted_servers_get_the_token_and_discovery_finds_the_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let key = openssl_key(dir.path(), Algorithm::ES384);
    let tokens = TokenServer::start().await;
    let unlisted = StubFhir::start(Some(tokens.url.clone())).await;
    let listed = StubFhir::start(Some(tokens.url.clone())).await;
    let keys = KeyServer::start().await;
    let gw = gateway(
        &keys,
        vec![unlisted.origin(), listed.origin(), tokens.origin()],
        &[listed.origin()],
        backend_toml(&key, ""),
    )
    .await;
    *tokens.v.jwks_url.lock().unwrap() = format!("{}/.well-known/jwks.json", gw.url);
    let request = patient("deteriorating");

    let (status, body) = call(&gw, &bare(&request, &unlisted.base)).await;
    assert_eq!(status, 412, "{body}");
    let seen = unlisted.requests();
    assert!(!seen.is_empty(), "the query went out (without a token)");
    assert!(
        seen.iter()
            .all(|(path, auth)| auth.is_none() && !path.contains("smart-configuration")),
        "{seen:?}"
    );
    assert_eq!(
        tokens.issued(),
        0,
        "no token requested for an unlisted server"
    );

    let (status, body) = call(&gw, &bare(&request, &listed.base)).await;
    assert_eq!(status, 412, "the stand-in has no data: {body}");
    let seen = listed.requests();
    assert_eq!(
        seen[0].0, "/fhir/.well-known/smart-configuration",
        "{seen:?}"
    );
    let fhir_calls: Vec<_> = seen.iter().skip(1).collect();
    assert!(!fhir_calls.is_empty(), "{seen:?}");
    let expected = format!("Bearer {FHIR_TOKEN}");
    assert!(
        fhir_calls
            .iter()
            .all(|(_, auth)| auth.as_deref() == Some(expected.as_str())),
        "{seen:?}; refusals: {:?}",
        tokens.v.refused.lock().unwrap()
    );
    assert_eq!(tokens.issued(), 1);
    // The unlisted server still never saw it.
    assert!(unlisted.requests().iter().all(|(_, auth)| auth.is_none()));

    gw.stop().await;
    for h in [&tokens.handle, &unlisted.handle, &listed.handle] {
        h.stop(true).await;
    }
}

/// `[backend_services]` mistakes are reported per key, all at once; the key is never quoted.
#[test]
fn configuration_problems_name_their_keys() {
    let rsa = common::repo().join("conformance/keys/rsa.pem");
    let text = format!(
        "listen = '127.0.0.1:0'\npublic_url = 'https://bedside.test'\nservices_dir = '{}'\nmodels_dir = '{}'\n[backend_services]\nclient_id = ''\nprivate_key = '{}'\ntoken_endpoint = 'ftp://x'\nfhir_servers = ['https://fhir.example']\ntimeout = '0s'\n",
        common::repo().join("cds-services").display(),
        common::repo().join("models").display(),
        rsa.display(),
    );
    let e = bedside::config::Config::from_toml_str(&text, "t", &Default::default()).unwrap_err();
    let keys: Vec<&str> = e.problems().iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "backend_services.client_id",
            "backend_services.private_key",
            "backend_services.token_endpoint",
            "backend_services.fhir_servers",
            "backend_services.timeout",
        ],
        "{e}"
    );
    // The old global list is refused with directions to the per-client grant.
    assert!(e.to_string().contains("backend_services = ["), "{e}");
    // ES384 is the default: an RSA key needs `algorithm = 'RS384'`.
    assert!(e.to_string().contains("use RS384"), "{e}");
    assert!(
        !e.to_string().contains("MII"),
        "no key material in messages: {e}"
    );

    let ok = text
        .replace("client_id = ''", "client_id = 'bedside'")
        .replace("token_endpoint = 'ftp://x'", "algorithm = 'RS384'")
        .replace("fhir_servers = ['https://fhir.example']\n", "")
        .replace("timeout = '0s'", "scopes = ['system/Observation.rs']")
        + "[[clients]]\niss = 'https://ehr.test'\njwks_urls = ['https://ehr.test/jwks']\nfhir_servers = ['https://fhir.example', 'https://*.example']\nbackend_services = ['https://fhir.example:443']\n[[clients.tenants]]\ntenant = 'a'\nfhir_servers = ['https://fhir-a.example']\nbackend_services = ['https://fhir-a.example']\n";
    let config = bedside::config::Config::from_toml_str(&ok, "t", &Default::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let backend = config.backend_services.clone().unwrap();
    assert_eq!(
        backend.grants,
        [
            bedside::smart::backend::BackendGrant {
                iss: "https://ehr.test".into(),
                tenant: None,
                fhir_servers: vec!["https://fhir.example".into()],
            },
            bedside::smart::backend::BackendGrant {
                iss: "https://ehr.test".into(),
                tenant: Some("a".into()),
                fhir_servers: vec!["https://fhir-a.example".into()],
            },
        ]
    );
    assert_eq!(backend.scope, "system/Observation.rs");
    assert_eq!(backend.token_endpoint, None);
    assert!(
        !format!("{backend:?}").contains("MII"),
        "Debug hides the key"
    );
}

/// Grants must rest on the same entry's exact allowlist entries, and need `[backend_services]`.
#[test]
fn grants_need_an_exact_allowlist_entry_and_backend_services() {
    let base = format!(
        "listen = '127.0.0.1:0'\npublic_url = 'https://bedside.test'\nservices_dir = '{}'\nmodels_dir = '{}'\n",
        common::repo().join("cds-services").display(),
        common::repo().join("models").display(),
    );
    let client = "[[clients]]\niss = 'https://ehr.test'\njwks_urls = ['https://ehr.test/jwks']\nfhir_servers = ['https://*.example', 'https://fhir.example']\nbackend_services = ['https://any.example', 'https://*.example', 'https://fhir.example/r4']\n[[clients.tenants]]\ntenant = 'a'\nfhir_servers = ['https://fhir-a.example']\nbackend_services = ['https://fhir-b.example']\n";
    let rsa = common::repo().join("conformance/keys/rsa.pem");
    let with_backend = format!(
        "{base}[backend_services]\nclient_id = 'bedside'\nalgorithm = 'RS384'\nprivate_key = '{}'\n{client}",
        rsa.display()
    );
    let e = bedside::config::Config::from_toml_str(&with_backend, "t", &Default::default())
        .unwrap_err();
    let keys: Vec<&str> = e.problems().iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "clients[0].backend_services[0]",
            "clients[0].backend_services[1]",
            "clients[0].backend_services[2]",
            "clients[0].tenants[0].backend_services[0]",
        ],
        "{e}"
    );
    let e = bedside::config::Config::from_toml_str(
        &format!("{base}{client}"),
        "t",
        &Default::default(),
    )
    .unwrap_err();
    let keys: Vec<&str> = e.problems().iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "clients[0].backend_services",
            "clients[0].tenants[0].backend_services"
        ],
        "{e}"
    );
}

/// Issue 14 item 11 (confused deputy): two trusted clients may both query the same FHIR
/// server, but only the one granted it (`backend_services`) has bedside's token used; the
/// other's call goes without `Authorization` and no token is requested for it. With the old
/// global `[backend_services] fhir_servers` both got it.
#[tokio::test]
async fn a_client_without_the_grant_gets_no_system_token() {
    const OTHER_ISS: &str = "https://other-ehr.test/cds-client";
    let dir = tempfile::tempdir().unwrap();
    let key = openssl_key(dir.path(), Algorithm::ES384);
    let tokens = TokenServer::start().await;
    let fhir = StubFhir::start(None).await;
    let keys = KeyServer::start().await;
    let gw = gateway(
        &keys,
        vec![fhir.origin()],
        &[fhir.origin()],
        backend_toml(&key, &format!("token_endpoint = '{}'\n", tokens.url))
            + &format!(
                "\n[[clients]]\niss = '{OTHER_ISS}'\njwks_urls = ['{}']\nfhir_servers = ['{}']\n",
                keys.jwks_url(),
                fhir.origin()
            ),
    )
    .await;
    *tokens.v.jwks_url.lock().unwrap() = format!("{}/.well-known/jwks.json", gw.url);
    let request = bare(&patient("deteriorating"), &fhir.base);

    let mut claims = common::claims("deterioration");
    claims["iss"] = OTHER_ISS.into();
    let r = http()
        .post(gw.service("deterioration"))
        .header(
            "Authorization",
            format!("Bearer {}", common::sign(&claims, Key::Es384, None)),
        )
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 412, "the stand-in has no data");
    let seen = fhir.requests();
    assert!(!seen.is_empty(), "the other client's query went out");
    assert!(seen.iter().all(|(_, auth)| auth.is_none()), "{seen:?}");
    assert_eq!(
        tokens.requests(),
        0,
        "no token requested for the other client"
    );

    // The granted client's call does use it.
    let (status, body) = call(&gw, &request).await;
    assert_eq!(status, 412, "{body}");
    assert_eq!(tokens.issued(), 1);
    let expected = format!("Bearer {FHIR_TOKEN}");
    assert!(
        fhir.requests()
            .iter()
            .skip(seen.len())
            .all(|(_, auth)| auth.as_deref() == Some(expected.as_str())),
        "{:?}",
        fhir.requests()
    );

    gw.stop().await;
    for h in [&tokens.handle, &fhir.handle] {
        h.stop(true).await;
    }
}

/// Issue 14 item 11: the token endpoint a FHIR server announces is where bedside sends its
/// signed assertion; it must pass the caller's egress policy like any URL bedside calls. One
/// off the client's allowlist is never contacted, and the query goes without a token.
#[tokio::test]
async fn a_discovered_token_endpoint_off_the_callers_allowlist_is_never_contacted() {
    let dir = tempfile::tempdir().unwrap();
    let key = openssl_key(dir.path(), Algorithm::ES384);
    let tokens = TokenServer::start().await;
    let fhir = StubFhir::start(Some(tokens.url.clone())).await;
    let keys = KeyServer::start().await;
    let gw = gateway(
        &keys,
        vec![fhir.origin()],
        &[fhir.origin()],
        backend_toml(&key, ""),
    )
    .await;
    *tokens.v.jwks_url.lock().unwrap() = format!("{}/.well-known/jwks.json", gw.url);

    let (status, body) = call(&gw, &bare(&patient("deteriorating"), &fhir.base)).await;
    assert_eq!(status, 412, "{body}");
    let seen = fhir.requests();
    assert_eq!(
        seen[0].0, "/fhir/.well-known/smart-configuration",
        "{seen:?}"
    );
    assert!(seen.len() > 1, "the query still went out: {seen:?}");
    assert!(seen.iter().all(|(_, auth)| auth.is_none()), "{seen:?}");
    assert_eq!(
        tokens.requests(),
        0,
        "the refused token endpoint was contacted"
    );
    let metrics = common::metrics(&gw).await;
    assert!(
        metrics.contains("bedside_fhir_egress_refused_total 1"),
        "{metrics}"
    );

    gw.stop().await;
    for h in [&tokens.handle, &fhir.handle] {
        h.stop(true).await;
    }
}

/// Issue 14 item 12: `expires_in: 18446744073709551615` used to panic in `Instant + lifetime`
/// (connection dropped, no audit row). Now the lifetime is capped: the token is used, cached,
/// and the call is answered and audited.
#[tokio::test]
async fn a_huge_expires_in_is_capped_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let key = openssl_key(dir.path(), Algorithm::ES384);
    let server = FhirServer::start().await;
    let tokens = TokenServer::start().await;
    *tokens.v.expires_in.lock().unwrap() = Some(json!(u64::MAX));
    let keys = KeyServer::start().await;
    let full = aimed_at(patient("deteriorating"), &server);
    server.load_prefetch(&full).await;
    let gw = gateway(
        &keys,
        vec![server.origin()],
        &[server.origin()],
        backend_toml(&key, &format!("token_endpoint = '{}'\n", tokens.url)),
    )
    .await;
    *tokens.v.jwks_url.lock().unwrap() = format!("{}/.well-known/jwks.json", gw.url);
    let request = bare(&full, &server.base);
    for _ in 0..2 {
        let (status, body) = call(&gw, &request).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(tokens.issued(), 1, "cached (for at most an hour)");
    let store = bedside::store::Store::open(&gw.db).await.unwrap();
    let mut rows = Vec::new();
    for _ in 0..300 {
        rows = store.audit_rows().await.unwrap();
        if rows.len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        rows.iter()
            .filter(|r| r.action == "hook" && r.http_status == 200)
            .count(),
        2,
        "{rows:?}"
    );
    gw.stop().await;
    tokens.handle.stop(true).await;
}
