//! Test helpers: a real gateway on a real socket, a real JWKS server, real signed JWTs, a
//! real FHIR server.
#![allow(dead_code)]

pub mod cohort;
pub mod demo;
pub mod fhir_server;
pub mod load;
pub mod nginx;
pub mod postgres;
pub mod process;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use bedside::config::Config;
use bedside::server::{self, AuthMode};

/// The public URL tests configure; client JWTs name `{PUBLIC}/cds-services/{id}` as `aud`.
pub const PUBLIC: &str = "https://bedside.test";
pub const ISS: &str = "https://ehr.test/cds-client";

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(rel: &str) -> String {
    std::fs::read_to_string(repo().join("tests/fixtures").join(rel))
        .unwrap_or_else(|e| panic!("fixture {rel}: {e}"))
}

/// A patient fixture as a hook request, times moved so the newest observation is 10 min old.
pub fn patient(name: &str) -> Value {
    bedside::demo::patient_request(
        &fixture(&format!("patients/{name}.json")),
        chrono::Utc::now(),
    )
    .expect("patient fixture is JSON")
}

/// An encounter-start call of fixture `name` for `patient_id`, in an Encounter at `unit` (the
/// unit alert budgets count against).
pub fn encounter_start(name: &str, patient_id: &str, unit: &str) -> Value {
    let mut r = patient(name);
    r["hook"] = "encounter-start".into();
    r["context"]["patientId"] = patient_id.into();
    r["context"]["encounterId"] = "enc-1".into();
    r["prefetch"]["encounter"] = serde_json::json!({"resourceType": "Encounter", "id": "enc-1", "status": "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "location": [{"location": {"display": unit}}]});
    r
}

// === JWKS server ===

/// An HTTP server that publishes the test JWKS and counts every path it is asked for.
pub struct KeyServer {
    pub base: String,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    up: Arc<Mutex<bool>>,
    handle: ServerHandle,
}

impl KeyServer {
    pub async fn start() -> Self {
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let up = Arc::new(Mutex::new(true));
        let jwks = fixture("keys/jwks.json");
        let (h, u) = (hits.clone(), up.clone());
        let server = HttpServer::new(move || {
            let (h, u, jwks) = (h.clone(), u.clone(), jwks.clone());
            App::new().default_service(web::to(move |req: HttpRequest| {
                let (h, u, jwks) = (h.clone(), u.clone(), jwks.clone());
                async move {
                    *h.lock().unwrap().entry(req.path().to_owned()).or_default() += 1;
                    if !*u.lock().unwrap() {
                        return HttpResponse::ServiceUnavailable().finish();
                    }
                    HttpResponse::Ok()
                        .content_type("application/json")
                        .body(jwks)
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
            base: format!("http://{addr}"),
            hits,
            up,
            handle,
        }
    }

    pub fn jwks_url(&self) -> String {
        format!("{}/jwks.json", self.base)
    }

    pub fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    pub fn set_up(&self, up: bool) {
        *self.up.lock().unwrap() = up;
    }
}

// === gateway ===

/// A running gateway on 127.0.0.1:<random port>, with its own database.
pub struct Gateway {
    pub url: String,
    pub db: PathBuf,
    handle: ServerHandle,
    _dir: Option<tempfile::TempDir>,
}

pub struct GatewayOptions {
    pub jwks_url: Option<String>,
    pub extra_toml: String,
    pub db: Option<PathBuf>,
    pub auth: AuthMode,
    pub models_dir: PathBuf,
    /// Extra lines for the `[inference]` table.
    pub inference_toml: String,
    /// The trusted client's `fhir_servers` allowlist.
    pub fhir_servers: Vec<String>,
    /// Appended after the trusted client's block (e.g. `[[clients.tenants]]`).
    pub client_toml: String,
    pub services_dir: PathBuf,
    /// `[storage] url` (PostgreSQL); the SQLite file otherwise.
    pub storage_url: Option<String>,
    /// More `[storage]` keys (e.g. `max_size_mb = 1`).
    pub storage_toml: String,
}

/// The admin bearer token every test gateway accepts (`[[admin_tokens]]`).
pub const ADMIN_TOKEN: &str = "test-admin-token";

impl Default for GatewayOptions {
    fn default() -> Self {
        Self {
            jwks_url: None,
            extra_toml: String::new(),
            db: None,
            auth: AuthMode::Required,
            models_dir: repo().join("models"),
            inference_toml: String::new(),
            fhir_servers: Vec::new(),
            client_toml: String::new(),
            services_dir: repo().join("cds-services"),
            storage_url: None,
            storage_toml: String::new(),
        }
    }
}

pub fn config_text(opts: &GatewayOptions, db: &Path) -> String {
    let mut text = format!(
        "listen = '127.0.0.1:0'\npublic_url = '{PUBLIC}'\nservices_dir = '{}'\nmodels_dir = '{}'\n[storage]\npath = '{}'\n{}[inference]\n{}\n[cors]\nallowed_origins = ['https://sandbox.cds-hooks.org']\n[[admin_tokens]]\nname = 'test-admin'\nsha256 = '{}'\n",
        opts.services_dir.display(),
        opts.models_dir.display(),
        db.display(),
        opts.storage_url
            .as_ref()
            .map(|u| format!("url = '{u}'\n"))
            .unwrap_or_default()
            + &opts.storage_toml,
        if opts.inference_toml.contains("device") {
            opts.inference_toml.clone()
        } else {
            format!("device = 'cpu'\n{}", opts.inference_toml)
        },
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(ADMIN_TOKEN.as_bytes())),
    );
    text.push_str(&opts.extra_toml);
    if let Some(jwks) = &opts.jwks_url {
        text.push_str(&format!(
            "\n[[clients]]\niss = '{ISS}'\njwks_urls = ['{jwks}']\nfhir_servers = {:?}\n{}",
            opts.fhir_servers, opts.client_toml
        ));
    }
    text
}

/// Why a gateway with the models in `models` (and a trusted client) refuses to start; panics
/// if it starts. The database goes to `dir`.
pub async fn startup_error(models: PathBuf, dir: &Path) -> String {
    let text = config_text(
        &GatewayOptions {
            models_dir: models,
            jwks_url: Some("https://ehr.test/jwks".into()),
            ..Default::default()
        },
        &dir.join("db.sqlite"),
    );
    let config = Config::from_toml_str(&text, "t", &BTreeMap::new()).unwrap();
    match server::build_state(config, AuthMode::Required).await {
        Ok(_) => panic!("the gateway started"),
        Err(e) => e.to_string(),
    }
}

/// A gateway driven in-process, without a socket: `bedside::server::app` called through
/// actix's test service. For routing and validation cases, where a listener, a port and an
/// HTTP client add nothing but time; anything about connections, TLS or timeouts uses
/// [`Gateway`].
pub struct InProcess {
    state: actix_web::web::Data<server::AppState>,
    _dir: tempfile::TempDir,
}

impl InProcess {
    pub async fn start(opts: GatewayOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = opts
            .db
            .clone()
            .unwrap_or_else(|| dir.path().join("bedside.db"));
        let config = Config::from_toml_str(&config_text(&opts, &db), "test", &BTreeMap::new())
            .unwrap_or_else(|e| panic!("{e}"));
        let state = server::build_state(config, opts.auth)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        Self {
            state: actix_web::web::Data::new(state),
            _dir: dir,
        }
    }

    /// Sends `req` through the app; the status, the headers and the body as JSON (`Null` when
    /// the body is not JSON).
    pub async fn call(
        &self,
        req: actix_web::test::TestRequest,
    ) -> (
        actix_web::http::StatusCode,
        actix_web::http::header::HeaderMap,
        Value,
    ) {
        let app = actix_web::test::init_service(server::app(self.state.clone())).await;
        let response = actix_web::test::call_service(&app, req.to_request()).await;
        let status = response.status();
        let headers = response.headers().clone();
        let body = actix_web::test::read_body(response).await;
        (
            status,
            headers,
            serde_json::from_slice(&body).unwrap_or(Value::Null),
        )
    }
}

impl Gateway {
    pub async fn start(opts: GatewayOptions) -> Self {
        let (dir, db) = match &opts.db {
            Some(db) => (None, db.clone()),
            None => {
                let dir = tempfile::tempdir().unwrap();
                let db = dir.path().join("bedside.db");
                (Some(dir), db)
            }
        };
        let text = config_text(&opts, &db);
        let config = Config::from_toml_str(&text, "test", &BTreeMap::new())
            .unwrap_or_else(|e| panic!("{e}"));
        let state = server::build_state(config, opts.auth)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let running = server::start(state).unwrap();
        let handle = running.handle.clone();
        tokio::spawn(running.server);
        Self {
            url: format!("http://{}", running.addr),
            db,
            handle,
            _dir: dir,
        }
    }

    /// A gateway that trusts `keys` as the client `ISS`.
    pub async fn with_keys(keys: &KeyServer) -> Self {
        Self::start(GatewayOptions {
            jwks_url: Some(keys.jwks_url()),
            ..Default::default()
        })
        .await
    }

    /// A gateway that trusts `keys` and lets that client's calls query `fhir_servers`.
    pub async fn with_fhir(keys: &KeyServer, fhir_servers: Vec<String>) -> Self {
        Self::start(GatewayOptions {
            jwks_url: Some(keys.jwks_url()),
            fhir_servers,
            ..Default::default()
        })
        .await
    }

    pub async fn stop(self) {
        self.handle.stop(true).await;
    }

    pub fn service(&self, id: &str) -> String {
        format!("{}/cds-services/{id}", self.url)
    }
}

/// [`copy_models`] with the retired deterioration 1.0.0 loaded in shadow: for tests that hold
/// the gateway to the frozen 1.0.0 pipeline's Python reference values.
pub fn models_with_v1_in_shadow(dir: &Path) -> PathBuf {
    let models = copy_models(dir);
    let manifest = models.join("deterioration/1.0.0/manifest.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replace("status = \"retired\"", "status = \"shadow\""),
    )
    .unwrap();
    models
}

/// A copy of the shipped models (feature specs, versions: manifest, model.pt, model card) under
/// `dir/models`, for tests that damage or rewrite one. Returns the models folder.
/// `models` with deterioration `version` served remotely: `remote` (the `[remote]` table's
/// keys) goes into its manifest, and its own model file is removed.
pub fn serve_remotely(models: PathBuf, version: &str, remote: &str) -> PathBuf {
    let version = models.join("deterioration").join(version);
    let manifest = std::fs::read_to_string(version.join("manifest.toml")).unwrap();
    let (head, tail) = manifest.split_at(manifest.find("[input]").unwrap());
    std::fs::write(
        version.join("manifest.toml"),
        format!("{head}[remote]\n{remote}\n{tail}"),
    )
    .unwrap();
    std::fs::remove_file(version.join("model.pt")).unwrap();
    models
}

/// Copies the folder `from` (recursively) to `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

pub fn copy_models(dir: &Path) -> PathBuf {
    let src_root = repo().join("models");
    for model in std::fs::read_dir(&src_root).unwrap().flatten() {
        let src = model.path();
        if !src.join("features.toml").is_file() {
            continue;
        }
        let dst = dir.join("models").join(model.file_name());
        std::fs::create_dir_all(&dst).unwrap();
        std::fs::copy(src.join("features.toml"), dst.join("features.toml")).unwrap();
        for version in std::fs::read_dir(&src).unwrap().flatten() {
            let to = dst.join(version.file_name());
            // The foundation model: what its heads' manifests point at (vocabulary).
            if version.path().join("foundation.toml").is_file() {
                std::fs::create_dir_all(&to).unwrap();
                for f in ["foundation.toml", "model.pt", "vocab.json", "MODEL_CARD.md"] {
                    std::fs::copy(version.path().join(f), to.join(f)).unwrap();
                }
                continue;
            }
            if !version.path().join("manifest.toml").is_file() {
                continue;
            }
            std::fs::create_dir_all(&to).unwrap();
            for f in ["manifest.toml", "model.pt", "MODEL_CARD.md"] {
                std::fs::copy(version.path().join(f), to.join(f)).unwrap();
            }
            // A version may carry its own feature spec (`features = "features.toml"`).
            if version.path().join("features.toml").is_file() {
                std::fs::copy(
                    version.path().join("features.toml"),
                    to.join("features.toml"),
                )
                .unwrap();
            }
        }
    }
    dir.join("models")
}

/// The gateway's `/metrics` text.
pub async fn metrics(gw: &Gateway) -> String {
    http()
        .get(format!("{}/metrics", gw.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Waits (up to 10 s) until `/metrics` shows `line`: for counters written after the answer,
/// such as shadow versions' scores. Returns the metrics text it found it in.
pub async fn metrics_showing(gw: &Gateway, line: &str) -> String {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = metrics(gw).await;
        if text.contains(line) || std::time::Instant::now() > until {
            return text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().build().unwrap()
}

// === JWTs ===

/// Which test key signs.
#[derive(Clone, Copy)]
pub enum Key {
    Rs384,
    Es384,
    /// An RSA key whose public half is in no JWKS.
    Unpublished,
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims a well-behaved EHR sends for a call to service `id`.
pub fn claims(id: &str) -> Value {
    let now = now();
    json!({
        "iss": ISS,
        "aud": format!("{PUBLIC}/cds-services/{id}"),
        "exp": now + 300,
        "iat": now,
        "jti": uuid::Uuid::new_v4().to_string(),
        "tenant": "test-tenant",
    })
}

/// Signs `claims` with `key`; `jku` goes into the header when given.
pub fn sign(claims: &Value, key: Key, jku: Option<&str>) -> String {
    sign_with(claims, key, |h| h.jku = jku.map(str::to_owned))
}

/// Signs `claims` with `key` after `edit` adjusted the header.
pub fn sign_with(claims: &Value, key: Key, edit: impl FnOnce(&mut Header)) -> String {
    let (alg, kid, pem) = match key {
        Key::Rs384 => (Algorithm::RS384, "test-rs384", "keys/rsa.pem"),
        Key::Es384 => (Algorithm::ES384, "test-es384", "keys/ec384.pem"),
        Key::Unpublished => (Algorithm::RS384, "not-in-jwks", "keys/rsa-unpublished.pem"),
    };
    let pem = fixture(pem);
    let encoding = match key {
        Key::Es384 => EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        _ => EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
    };
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    edit(&mut header);
    jsonwebtoken::encode(&header, claims, &encoding).unwrap()
}

/// A valid bearer header value for a call to `path` (aud = PUBLIC + path).
pub fn bearer_for(path: &str, key: Key) -> String {
    let mut c = claims("x");
    c["aud"] = format!("{PUBLIC}{path}").into();
    format!("Bearer {}", sign(&c, key, None))
}

/// A valid bearer header value for service `id`.
pub fn bearer(id: &str, key: Key) -> String {
    format!("Bearer {}", sign(&claims(id), key, None))
}

/// A card's `detail` with the data window's end masked: two calls a second apart see windows
/// ending at their own "now", everything else must match.
pub fn detail_without_window_bounds(card: &Value) -> String {
    let detail = card["detail"].as_str().unwrap_or_default();
    detail
        .lines()
        .map(|line| {
            match line
                .strip_prefix("**Data:** ")
                .and_then(|rest| rest.split_once(" to "))
            {
                Some((hours, rest)) => {
                    let tail = rest.split_once(", ").map(|(_, t)| t).unwrap_or(rest);
                    format!("**Data:** {hours} to <end>, {tail}")
                }
                None => line.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs the Node script `tests/smart/<script>` with `args` (one JSON argument); whether it
/// exited 0, and the JSON line it printed last.
pub fn run_node(script: &str, args: &Value) -> (bool, Value) {
    let out = std::process::Command::new("node")
        .arg(repo().join("tests/smart").join(script))
        .arg(args.to_string())
        .current_dir(repo().join("tests/smart"))
        .output()
        .expect("node must be installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result: Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "{script} gave no result; stdout: {stdout}\nstderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    (out.status.success(), result)
}

/// Runs `tests/smart/reference-client.mjs` with `args`; its JSON answer.
pub fn reference_client(args: &Value) -> Value {
    let (ok, result) = run_node("reference-client.mjs", args);
    assert!(ok, "reference client failed: {result}");
    result
}

/// Records `ids` in the store at `db` as cards the gateway gave to `scope` (client, tenant):
/// feedback is taken only on the caller's own cards, so tests that post feedback in bulk
/// first make the cards exist, as a hook call would have.
pub async fn seed_cards(db: &Path, scope: &bedside::store::Scope, ids: &[String]) {
    let store = bedside::store::Store::open(db).await.unwrap();
    let mut writers = Vec::new();
    for chunk in ids.chunks(ids.len().div_ceil(16).max(1)) {
        let store = store.clone();
        let scope = scope.clone();
        let chunk = chunk.to_vec();
        writers.push(tokio::spawn(async move {
            for id in chunk {
                store
                    .record_prediction(&bedside::store::PredictionRecord {
                        scope: scope.clone(),
                        hook_instance: format!("seeded-{id}"),
                        id,
                        at: chrono::Utc::now(),
                        service_id: "deterioration".into(),
                        hook: "patient-view".into(),
                        model: "deterioration".into(),
                        model_version: "1.0.0".into(),
                        mode: bedside::store::Mode::Active,
                        patient_id: Some("seeded-patient".into()),
                        patient_hash: None,
                        unit: None,
                        risk: Some(0.5),
                        indicator: Some("warning".into()),
                        outcome: bedside::store::Outcome::Shown,
                        reason: None,
                        input_refs: Vec::new(),
                        tensor_sha256: None,
                        data_quality: None,
                        latency_ms: 1.0,
                        inputs: None,
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    store.close().await;
}

/// The scope of the test client's calls (`ISS`, tenant `test-tenant`).
pub fn test_client_scope() -> bedside::store::Scope {
    bedside::store::Scope::new(Some(ISS), Some("test-tenant"), None)
}

/// A shown deterioration prediction record `id` at `at` (store and retention tests).
pub fn prediction_record(
    id: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> bedside::store::PredictionRecord {
    bedside::store::PredictionRecord {
        scope: bedside::store::Scope::default(),
        id: id.to_owned(),
        at,
        service_id: "deterioration".to_owned(),
        hook: "patient-view".to_owned(),
        hook_instance: format!("hi-{id}"),
        model: "deterioration".to_owned(),
        model_version: "1.0.0".to_owned(),
        mode: bedside::store::Mode::Active,
        patient_id: Some("p1".to_owned()),
        patient_hash: None,
        unit: Some("4B".to_owned()),
        risk: Some(0.8),
        indicator: Some("warning".to_owned()),
        outcome: bedside::store::Outcome::Shown,
        reason: None,
        input_refs: vec!["Observation/hr-1".to_owned()],
        tensor_sha256: Some("ab".repeat(32)),
        data_quality: None,
        latency_ms: 12.5,
        inputs: None,
    }
}
