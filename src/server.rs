//! Wiring: configuration → models → services → store → one actix `App`.
//!
//! [`build_state`] does every start-up check (models verified and warmed up, service
//! definitions valid, database migrated) before a socket is bound, so a gateway that listens
//! is a gateway that can answer. [`app`] is the one place routes and middleware are set up;
//! `main` and the integration tests both use it.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use actix_cors::Cors;
use actix_web::dev::{Server, ServerHandle};
use actix_web::http::header;
use actix_web::HttpServer;
use actix_web::{web, App, HttpResponse};

use crate::admin::AdminState;
use crate::api::ApiState;
use crate::config::Config;
use crate::fhir::{FhirClient, FhirError};
use crate::hooks::{routes, HooksState};
use crate::http::auth::{AuthError, ClientAuth, JwtVerifier, ReplayCache};
use crate::http::{BrowserPolicy, MaxHeaderBytes};
use crate::inference::{FoundationModel, Lifecycle, LoadError, ModelRegistry};
use crate::services::{
    DefinitionErrors, FhirAccess, KillSwitch, Runtime, RuntimeHandle, ServiceEnv, ServiceRegistry,
};
use crate::smart::backend::BackendClient;
use crate::smart::{SmartDeps, SmartState};
use crate::store::{AuditWriter, Store, StoreError};

/// A running gateway as the composition root holds it: the configuration, what a reload
/// needs, and each HTTP surface's own state (registered as its own `web::Data`, so no handler
/// sees more than its surface needs). Only the [`Runtime`] changes after start-up: a reload
/// (SIGHUP) replaces it as a whole through the shared [`RuntimeHandle`].
pub struct AppState {
    pub config: Config,
    runtime: Arc<RuntimeHandle>,
    pub store: Store,
    /// Background writer of audit records.
    pub audit: AuditWriter,
    pub fhir: Arc<FhirAccess>,
    /// Services switched off at run time; survives reloads.
    pub switches: Arc<KillSwitch>,
    /// SMART Backend Services client (`[backend_services]`): its tokens are cached across
    /// reloads.
    pub backend: Option<Arc<BackendClient>>,
    hooks: web::Data<HooksState>,
    api: web::Data<ApiState>,
    admin: web::Data<AdminState>,
    smart: web::Data<SmartState>,
    /// Rows the retention purge removed since start, per kind (`/metrics`).
    purged: Arc<PurgeCounters>,
    /// Reloads models and services (SIGHUP, governance decisions).
    loader: Arc<Loader>,
    /// Monitoring alerts of the current week, `(model, version, mode, metric)`, as the last
    /// scheduled run found them (`/metrics`).
    monitoring_alerts: Arc<std::sync::Mutex<Vec<AlertKey>>>,
}

/// `(model, version, mode, metric)` of a monitoring alert.
type AlertKey = (String, String, String, String);

/// Rows removed by the retention purge, per kind of record.
#[derive(Default)]
struct PurgeCounters {
    predictions: AtomicU64,
    inputs: AtomicU64,
    feedback: AtomicU64,
    audit: AtomicU64,
}

impl AppState {
    /// The models and services now in force.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.current()
    }

    /// Loads `models_dir` and `services_dir` again (sha256, warm-up, definitions: every
    /// start-up check, governance decisions) and swaps them in only if all of it succeeds;
    /// otherwise the running set keeps serving and the error is returned (a corrupted model
    /// file never replaces a good one).
    pub async fn reload(&self) -> Result<(), StartupError> {
        self.loader.reload().await
    }
}

/// What a reload needs: everything [`load_runtime`] reads, and the handle it swaps.
struct Loader {
    config: Config,
    fhir: Arc<FhirAccess>,
    store: Store,
    switches: Arc<KillSwitch>,
    backend: Option<Arc<BackendClient>>,
    runtime: Arc<RuntimeHandle>,
    /// The newest model-lifecycle decision the running models were loaded under (read before
    /// loading, so a decision made during a load is seen as new).
    loaded_decision: AtomicI64,
}

impl Loader {
    async fn reload(&self) -> Result<(), StartupError> {
        let latest = self.store.latest_decision_id().await;
        let result = self.load().await;
        // Refused or not, this decision has been tried: the replica that made it reverts it
        // (a newer decision) when its own reload is refused.
        if let Ok(id) = latest {
            self.loaded_decision.fetch_max(id, Ordering::Relaxed);
        }
        result
    }

    /// Whether another replica recorded a decision after the one these models were loaded
    /// under.
    async fn behind_decisions(&self) -> Result<bool, StoreError> {
        let latest = self.store.latest_decision_id().await?;
        Ok(latest > self.loaded_decision.load(Ordering::Relaxed))
    }

    async fn load(&self) -> Result<(), StartupError> {
        match load_runtime(
            &self.config,
            self.fhir.clone(),
            self.store.clone(),
            self.switches.clone(),
            self.backend.clone(),
        )
        .await
        {
            Ok(runtime) => {
                self.runtime.replace(runtime);
                tracing::info!("models and services reloaded");
                Ok(())
            }
            Err(e) => {
                self.runtime.refused();
                tracing::error!(error = %e, "reload refused; the running models and services keep serving");
                Err(e)
            }
        }
    }
}

impl crate::admin::ReloadModels for Loader {
    fn reload(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move { Loader::reload(self).await.map_err(|e| e.to_string()) })
    }
}

async fn load_runtime(
    config: &Config,
    fhir: Arc<FhirAccess>,
    store: Store,
    switches: Arc<KillSwitch>,
    backend: Option<Arc<BackendClient>>,
) -> Result<Runtime, StartupError> {
    let models_dir = config.models_dir.clone();
    let settings = config.inference.clone();
    let lifecycle = Lifecycle::from_decided(
        store.decided_statuses().await?,
        config.governance.require_promotion,
    )
    .map_err(StoreError::Malformed)?;
    let models = tokio::task::spawn_blocking(move || {
        ModelRegistry::load_governed(&models_dir, &settings, &lifecycle)
    })
    .await
    .map_err(|e| LoadError::Torch {
        name: "(registry)".into(),
        version: String::new(),
        message: e.to_string(),
    })??;
    models.check_remotes().await?;
    let mut env = ServiceEnv::new(config.public_base(), fhir, store, switches);
    env.backend = backend.map(|b| b as Arc<dyn crate::fhir::TokenSource>);
    let env = Arc::new(env);
    let services = ServiceRegistry::load(&config.services_dir, &models, env)?;
    let foundation = {
        let (dir, settings) = (config.models_dir.clone(), config.inference.clone());
        tokio::task::spawn_blocking(move || FoundationModel::find(&dir, &settings))
            .await
            .map_err(|e| LoadError::Torch {
                name: "foundation".into(),
                version: String::new(),
                message: e.to_string(),
            })??
            .map(Arc::new)
    };
    Ok(Runtime {
        models,
        services,
        foundation,
    })
}

/// Why bedside could not start. Each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Models(#[from] LoadError),
    #[error(transparent)]
    Services(#[from] DefinitionErrors),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("client authentication: {0}")]
    Auth(#[from] AuthError),
    #[error("FHIR client: {0}")]
    Fhir(#[from] FhirError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("no trusted CDS clients are configured ([[clients]]); add one, or run with --insecure-no-auth for local testing only")]
    NoClients,
}

/// Whether callers must present a client JWT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    Required,
    /// Only via the explicit `--insecure-no-auth` flag (used by `bedside demo`).
    InsecureDisabled,
}

/// Loads and checks everything the gateway needs. Blocking work (hashing, loading models)
/// happens here, before any request can arrive.
pub async fn build_state(config: Config, auth_mode: AuthMode) -> Result<AppState, StartupError> {
    if auth_mode == AuthMode::Required && config.clients.is_empty() && config.api_tokens.is_empty()
    {
        return Err(StartupError::NoClients);
    }
    let store = Store::open_configured(&config.store_settings()).await?;
    let auth = Arc::new(match auth_mode {
        AuthMode::Required => ClientAuth::Required(Box::new(JwtVerifier::with_replay(
            &config.clients,
            config.auth.clone(),
            ReplayCache::for_store(&store),
        )?)),
        AuthMode::InsecureDisabled => {
            tracing::warn!("client authentication is OFF (--insecure-no-auth): anyone who can reach this port can call it; never use this with real patient data");
            ClientAuth::Disabled
        }
    });
    let fhir = Arc::new(FhirAccess {
        client: FhirClient::new(config.fhir.settings.clone(), config.egress_policy())?,
        scoring_reserve: config.fhir.scoring_reserve,
    });
    // Services switched off at run time stay off across restarts (and, on a shared store,
    // on every replica: [`follow_switches`]).
    let switches = Arc::new(KillSwitch::default());
    switches.replace(store.disabled_services().await?);
    let backend = config
        .backend_services
        .clone()
        .map(|c| BackendClient::new(c, &config.egress_policy()).map(Arc::new))
        .transpose()?;
    let loaded_decision = AtomicI64::new(store.latest_decision_id().await?);
    let runtime = Arc::new(RuntimeHandle::new(
        load_runtime(
            &config,
            fhir.clone(),
            store.clone(),
            switches.clone(),
            backend.clone(),
        )
        .await?,
    ));
    let audit = AuditWriter::start(store.clone(), 4096);
    let public_base = config.public_base().to_owned();
    let https = config.public_url.scheme() == "https" || config.http.tls.is_some();
    let browser = BrowserPolicy {
        frame_ancestors: config.http.frame_ancestors.clone(),
        https,
    };
    let smart = SmartState::new(
        config.smart.clone(),
        SmartDeps {
            public_url: config.public_url.clone(),
            https,
            auth: config.auth.clone(),
            browser,
            runtime: runtime.clone(),
            store: store.clone(),
            audit: audit.clone(),
            fhir: fhir.clone(),
            clients: config.clients.clone(),
            client_auth: auth.clone(),
            backend: backend.clone(),
        },
    )?;
    let hooks = HooksState {
        runtime: runtime.clone(),
        auth: auth.clone(),
        store: store.clone(),
        audit: audit.clone(),
        body_limits: config.body_limits(),
        public_base: public_base.clone(),
    };
    let api = ApiState {
        runtime: runtime.clone(),
        auth,
        api_tokens: config.api_tokens.clone(),
        body_limits: config.body_limits(),
        public_base: public_base.clone(),
    };
    let loader = Arc::new(Loader {
        config: config.clone(),
        fhir: fhir.clone(),
        store: store.clone(),
        switches: switches.clone(),
        backend: backend.clone(),
        runtime: runtime.clone(),
        loaded_decision,
    });
    let admin = AdminState {
        runtime: runtime.clone(),
        store: store.clone(),
        switches: switches.clone(),
        admin_tokens: config.admin_tokens.clone(),
        governance: crate::admin::GovernanceAccess {
            models_dir: config.models_dir.clone(),
            services_dir: config.services_dir.clone(),
            settings: config.governance.clone(),
            trusted_keys: config.inference.trusted_keys.clone(),
            reload: loader.clone(),
            serial: tokio::sync::Mutex::new(()),
        },
        public_base,
    };
    // Models were loaded and warmed up above: from here on the gateway can answer.
    Ok(AppState {
        config,
        runtime,
        audit,
        store,
        fhir,
        switches,
        backend,
        hooks: web::Data::new(hooks),
        api: web::Data::new(api),
        admin: web::Data::new(admin),
        smart: web::Data::new(smart),
        purged: Arc::new(PurgeCounters::default()),
        loader,
        monitoring_alerts: Arc::default(),
    })
}

/// Routes and middleware of the gateway.
pub fn app(
    state: web::Data<AppState>,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let cors = cors(&state.config.cors_allowed_origins);
    let headers = crate::http::headers::default_headers(&BrowserPolicy {
        frame_ancestors: state.config.http.frame_ancestors.clone(),
        https: state.config.public_url.scheme() == "https" || state.config.http.tls.is_some(),
    });
    App::new()
        .app_data(web::Data::new(MaxHeaderBytes(
            state.config.max_header_bytes,
        )))
        .app_data(state.hooks.clone())
        .app_data(state.api.clone())
        .app_data(state.admin.clone())
        .app_data(state.smart.clone())
        .app_data(state)
        .wrap(cors)
        .wrap(actix_web::middleware::from_fn(
            crate::http::headers::header_limit,
        ))
        .wrap(headers)
        .configure(routes::configure)
        .configure(crate::api::configure)
        .configure(crate::admin::configure)
        .configure(crate::smart::configure)
        .route(
            "/models/{name}/{version}/model-card",
            web::get().to(model_card),
        )
        .route(
            "/models/{name}/{version}/{file}",
            web::get().to(model_card_asset),
        )
        .route(
            "/health/live",
            web::get()
                .to(|| async { HttpResponse::Ok().json(serde_json::json!({"status": "live"})) }),
        )
        .route("/", web::get().to(home))
        .route("/health/ready", web::get().to(ready))
        .route("/metrics", web::get().to(metrics))
        .default_service(web::to(not_found))
}

/// CORS for browser-based CDS clients (the CDS Hooks sandbox). The 2.0 spec requires CORS
/// support but names no headers; these are the ones such clients send and read. No
/// credentials mode: the client JWT travels in `Authorization`, not in cookies, and granting
/// credentials to any origin is what OWASP's cheat sheet warns against.
fn cors(origins: &[String]) -> Cors {
    let mut cors = Cors::default()
        .allowed_methods(["GET", "POST", "OPTIONS"])
        .allowed_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT])
        .expose_headers([
            header::HeaderName::from_static("origin"),
            header::ACCEPT,
            header::CONTENT_LOCATION,
            header::LOCATION,
            header::HeaderName::from_static("x-requested-with"),
        ])
        .max_age(3600);
    if origins.iter().any(|o| o == "*") {
        cors = cors.allow_any_origin();
    } else {
        for origin in origins {
            cors = cors.allowed_origin(origin.trim_end_matches('/'));
        }
    }
    cors
}

/// Ready while every model's inference thread is alive, the foundation model's included.
/// (State exists only after every model was loaded and warmed up, so warm-up needs no separate
/// flag.)
async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let runtime = state.runtime();
    let foundation_alive = runtime.foundation.as_ref().is_none_or(|f| f.is_alive());
    if runtime.models.all_alive() && foundation_alive {
        HttpResponse::Ok().json(serde_json::json!({"status": "ready"}))
    } else {
        HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({"status": "inference thread down"}))
    }
}

/// Prometheus text: per model (batches, jobs per batch, expired, shed) and per service.
/// Counters only, no PHI; with `[[metrics_tokens]]` configured, only for a holder of one.
async fn metrics(state: web::Data<AppState>, req: actix_web::HttpRequest) -> HttpResponse {
    let tokens = &state.config.metrics_tokens;
    if !tokens.is_empty() && crate::http::static_token_holder(tokens, &req).is_none() {
        let mut refused = crate::http::error_response(
            actix_web::http::StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a metrics bearer token ([[metrics_tokens]]) is required",
            None,
        );
        refused.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return refused;
    }
    let mut out = String::new();
    let runtime = state.runtime();
    for model in runtime.models.iter() {
        let m = &model.manifest;
        model.handle.metrics().render(&mut out, &m.name, &m.version);
    }
    for service in runtime.services.iter() {
        service.metrics().render(&mut out, service.id());
    }
    for (name, counter) in [
        ("reloads", &state.runtime.reloads),
        ("reload_failures", &state.runtime.reload_failures),
        ("audit_dropped", &*state.audit.dropped),
    ] {
        out.push_str(&format!(
            "bedside_{name}_total {}\n",
            counter.load(Ordering::Relaxed)
        ));
    }
    for (kind, counter) in [
        ("predictions", &state.purged.predictions),
        ("inputs", &state.purged.inputs),
        ("feedback", &state.purged.feedback),
        ("audit", &state.purged.audit),
    ] {
        out.push_str(&format!(
            "bedside_retention_purged_total{{kind=\"{kind}\"}} {}\n",
            counter.load(Ordering::Relaxed)
        ));
    }
    let alerts = match state.monitoring_alerts.lock() {
        Ok(a) => a.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    let mut counted: std::collections::BTreeMap<_, u64> = std::collections::BTreeMap::new();
    for key in alerts {
        *counted.entry(key).or_default() += 1;
    }
    for ((model, version, mode, metric), n) in counted {
        out.push_str(&format!(
            "bedside_monitoring_alerts{{model=\"{}\",version=\"{}\",mode=\"{}\",metric=\"{}\"}} {n}\n",
            crate::metrics::label(&model),
            crate::metrics::label(&version),
            crate::metrics::label(&mode),
            crate::metrics::label(&metric)
        ));
    }
    state.fhir.client.metrics().render(&mut out);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(out)
}

/// The model card of a loaded model: what each card's `source.url` points to. Markdown: the
/// source attributes a regulator expects (HTI-1 groups; [`crate::governance::source_attributes`])
/// followed by `MODEL_CARD.md`; JSON (`Accept: application/json` or `?format=json`): the
/// source attributes alone.
async fn model_card(
    state: web::Data<AppState>,
    req: actix_web::HttpRequest,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    let (name, version) = path.into_inner();
    let Some(model) = state.runtime().models.get(&name, &version) else {
        return not_found_body(format!("no model {name} {version}"));
    };
    let wants_json = req.query_string().contains("format=json")
        || req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("application/json"));
    // This site's evidence about the version; a store that cannot be read is said in the card.
    let local = state.store.latest_evaluation(&name, &version).await;
    let decisions = state.store.decisions(Some(&name)).await;
    if let Err(e) = local.as_ref().and(decisions.as_ref()) {
        tracing::warn!(error = %e, "model card without this site's records");
    }
    let local = local.ok().flatten();
    let decisions: Vec<_> = decisions
        .unwrap_or_default()
        .into_iter()
        .filter(|d| d.version == version)
        .collect();
    let contact = state.config.governance.contact.clone();
    let built = tokio::task::spawn_blocking(move || {
        let attributes = crate::governance::source_attributes::assemble(
            &model,
            local.as_ref(),
            &decisions,
            contact.as_deref(),
        )?;
        let card = std::fs::read_to_string(&model.model_card).unwrap_or_default();
        Ok::<_, String>((attributes, card))
    })
    .await;
    match built {
        Ok(Ok((attributes, _))) if wants_json => HttpResponse::Ok().json(attributes),
        Ok(Ok((attributes, card))) => HttpResponse::Ok()
            .content_type("text/markdown; charset=utf-8")
            .body(format!(
                "{}\n---\n\n{card}",
                crate::governance::source_attributes::markdown(&attributes)
            )),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "model card source attributes unreadable");
            crate::http::error_response(
                actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
                "model_card_unreadable",
                format!("model {name} {version}: its source attributes cannot be read"),
                None,
            )
        }
        Err(_) => not_found_body(format!("model {name} {version} has no model card")),
    }
}

/// Files the model card links to (its plots and the measured evaluation), by fixed name only:
/// nothing else in a model's folder is served.
async fn model_card_asset(
    state: web::Data<AppState>,
    path: web::Path<(String, String, String)>,
) -> HttpResponse {
    const ASSETS: &[(&str, &str)] = &[
        ("roc.svg", "image/svg+xml"),
        ("reliability.svg", "image/svg+xml"),
        ("evaluation.json", "application/json"),
    ];
    let (name, version, file) = path.into_inner();
    let Some(&(file, content_type)) = ASSETS.iter().find(|(f, _)| *f == file) else {
        return not_found_body(format!("model {name} {version} has no file {file}"));
    };
    let Some(model) = state.runtime().models.get(&name, &version) else {
        return not_found_body(format!("no model {name} {version}"));
    };
    let Some(dir) = model.model_card.parent().map(|d| d.join(file)) else {
        return not_found_body(format!("model {name} {version} has no file {file}"));
    };
    match tokio::task::spawn_blocking(move || std::fs::read(dir)).await {
        Ok(Ok(bytes)) => HttpResponse::Ok().content_type(content_type).body(bytes),
        _ => not_found_body(format!("model {name} {version} has no file {file}")),
    }
}

/// The gateway's front door, for whoever opens its URL in a browser (an integration engineer
/// setting up an EHR): what it serves and where — CDS Hooks discovery, each service, each
/// model with its card, the SMART launch, health and metrics. JSON for `Accept:
/// application/json`. Nothing about patients.
async fn home(state: web::Data<AppState>, req: actix_web::HttpRequest) -> HttpResponse {
    let runtime = state.runtime();
    let base = state.config.public_base();
    let services: Vec<serde_json::Value> = runtime
        .services
        .iter()
        .map(|s| {
            let d = s.descriptor();
            serde_json::json!({"id": d.id, "hook": d.hook, "title": d.title,
                "url": format!("{base}/cds-services/{}", d.id), "enabled": s.is_enabled()})
        })
        .collect();
    let models: Vec<serde_json::Value> = runtime
        .models
        .iter()
        .map(|m| {
            let (name, version) = (&m.manifest.name, &m.manifest.version);
            serde_json::json!({"name": name, "version": version,
                "status": m.manifest.status.as_str(),
                "model_card": format!("{base}/models/{name}/{version}/model-card")})
        })
        .collect();
    let wants_json = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"));
    if wants_json {
        return HttpResponse::Ok().json(serde_json::json!({
            "name": "bedside",
            "version": env!("CARGO_PKG_VERSION"),
            "cds_services": format!("{base}/cds-services"),
            "services": services,
            "models": models,
            "smart_launch": format!("{base}/smart/launch"),
            "health": format!("{base}/health/ready"),
            "metrics": format!("{base}/metrics"),
        }));
    }
    let esc = crate::html::escape;
    let text = |v: &serde_json::Value| esc(v.as_str().unwrap_or_default());
    let service_rows: String = services
        .iter()
        .map(|s| {
            format!(
                "<li><a href=\"{}\"><code>{}</code></a> ({}){}{}</li>",
                text(&s["url"]),
                text(&s["id"]),
                text(&s["hook"]),
                s["title"]
                    .as_str()
                    .map(|t| format!(": {}", esc(t)))
                    .unwrap_or_default(),
                if s["enabled"] == false {
                    " — switched off"
                } else {
                    ""
                }
            )
        })
        .collect();
    let model_rows: String = models
        .iter()
        .map(|m| {
            format!(
                "<li><a href=\"{}\">{} {}</a> ({})</li>",
                text(&m["model_card"]),
                text(&m["name"]),
                text(&m["version"]),
                text(&m["status"])
            )
        })
        .collect();
    let page = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>bedside</title></head><body>\
         <h1>bedside {version}</h1>\
         <p>A CDS Hooks 2.0 service and SMART app for early-warning models. Point the EHR's CDS Hooks client at \
         <a href=\"{base}/cds-services\"><code>{base}/cds-services</code></a> (discovery); register \
         <code>{base}/smart/launch</code> as the SMART app's launch URL.</p>\
         <h2>Services</h2><ul>{service_rows}</ul>\
         <h2>Models</h2><p>Trained on synthetic data only, not validated on real patients.</p><ul>{model_rows}</ul>\
         <h2>Operations</h2><ul><li><a href=\"{base}/health/ready\">/health/ready</a></li>\
         <li><a href=\"{base}/metrics\">/metrics</a> (Prometheus)</li></ul></body></html>\n",
        version = env!("CARGO_PKG_VERSION"),
        base = esc(base),
    );
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(page)
}

async fn not_found() -> HttpResponse {
    not_found_body("no such endpoint".into())
}

fn not_found_body(message: String) -> HttpResponse {
    crate::http::error_response(
        actix_web::http::StatusCode::NOT_FOUND,
        "not_found",
        message,
        None,
    )
}

/// How often a replica on a shared store reads the kill switches and model decisions the
/// others set.
const FOLLOW_SWITCHES_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// On a shared store: follows the kill switches set and the model promotions and retirements
/// recorded on any replica (within [`FOLLOW_SWITCHES_EVERY`]) and, every minute, forgets
/// client-token ids past their expiry.
async fn follow_switches(state: web::Data<AppState>) {
    let mut every = tokio::time::interval(FOLLOW_SWITCHES_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for tick in 0u64.. {
        every.tick().await;
        match state.store.disabled_services().await {
            Ok(disabled) => state.switches.replace(disabled),
            Err(e) => tracing::warn!(error = %e, "kill switches not read; kept as they were"),
        }
        // A promotion or retirement made through another replica: load what it decided.
        match state.loader.behind_decisions().await {
            Ok(true) => {
                tracing::info!("a model decision was recorded by another replica; reloading");
                let _ = state.loader.reload().await;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "model decisions not read"),
        }
        if tick % 60 == 0 {
            if let Err(e) = state
                .store
                .forget_expired_tokens(chrono::Utc::now().timestamp())
                .await
            {
                tracing::warn!(error = %e, "expired token ids not purged");
            }
        }
    }
}

/// The retention purge ([`crate::store::Retention`]): at start-up, then every `purge_every`. A
/// failed purge is logged and tried again at the next run; nothing else waits for it.
async fn purge_on_schedule(state: web::Data<AppState>) {
    let retention = state.config.retention;
    let mut every = tokio::time::interval(state.config.purge_every);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        match state.store.purge(&retention, chrono::Utc::now()).await {
            Ok(purged) => {
                state
                    .purged
                    .predictions
                    .fetch_add(purged.predictions, Ordering::Relaxed);
                state
                    .purged
                    .inputs
                    .fetch_add(purged.inputs, Ordering::Relaxed);
                state
                    .purged
                    .feedback
                    .fetch_add(purged.feedback, Ordering::Relaxed);
                state
                    .purged
                    .audit
                    .fetch_add(purged.audit, Ordering::Relaxed);
                if purged != crate::store::Purged::default() {
                    tracing::info!(
                        predictions = purged.predictions,
                        inputs = purged.inputs,
                        feedback = purged.feedback,
                        audit = purged.audit,
                        "retention purge removed records past their retention"
                    );
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "retention purge failed; it runs again at the next interval")
            }
        }
    }
}

/// Weekly monitoring ([`crate::governance::monitor`]) at start-up and then every
/// `[governance.monitoring] every`: the current week's alerts go to `/metrics`.
async fn monitor_on_schedule(state: web::Data<AppState>) {
    let settings = state.config.governance.monitoring.clone();
    let mut every = tokio::time::interval(settings.every);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let models: Vec<_> = state.runtime().models.iter().cloned().collect();
        let now = chrono::Utc::now();
        match crate::governance::monitor::monitor(&state.store, &models, &settings, now).await {
            Ok(m) => {
                let this_week = now.date_naive()
                    - chrono::Duration::days(i64::from(
                        chrono::Datelike::weekday(&now).num_days_from_monday(),
                    ));
                let current: Vec<_> = m
                    .alerts
                    .into_iter()
                    .filter(|a| a.week == this_week)
                    .map(|a| (a.model, a.version, a.mode, a.metric))
                    .collect();
                if !current.is_empty() {
                    tracing::warn!(
                        alerts = current.len(),
                        "monitoring thresholds crossed this week"
                    );
                }
                match state.monitoring_alerts.lock() {
                    Ok(mut a) => *a = current,
                    Err(poisoned) => *poisoned.into_inner() = current,
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "monitoring failed; it runs again at the next interval")
            }
        }
    }
}

/// `kill -HUP <pid>` reloads models and service definitions (see [`AppState::reload`]).
async fn reload_on_sighup(state: web::Data<AppState>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload needs a restart");
        return;
    };
    while hangups.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading models and services");
        let _ = state.reload().await;
    }
}

/// A bound, running gateway.
pub struct Running {
    /// The address actually bound (useful with port 0).
    pub addr: std::net::SocketAddr,
    pub handle: ServerHandle,
    pub server: Server,
}

/// Binds `state.config.listen` (with TLS when `[http]` names a certificate) and returns the
/// running server (not yet awaited). Slow clients are cut off: headers within
/// `header_timeout`, bodies within `body_timeout` (in the handlers).
pub fn start(state: AppState) -> Result<Running, StartupError> {
    let addr = state.config.listen;
    let tls = match &state.config.http.tls {
        Some((cert, key)) => {
            Some(crate::http::tls::tls_config(cert, key).map_err(StartupError::Tls)?)
        }
        None => None,
    };
    let header_timeout = state.config.header_timeout;
    let keep_alive = state.config.keep_alive;
    let state = web::Data::from(Arc::new(state));
    let reload_state = state.clone();
    let server = HttpServer::new(move || app(state.clone()))
        .client_request_timeout(header_timeout)
        .client_disconnect_timeout(std::time::Duration::from_secs(2))
        .keep_alive(keep_alive);
    let bind_error = |source| StartupError::Bind {
        addr: addr.to_string(),
        source,
    };
    let server = match tls {
        Some(tls) => server.bind_rustls_0_23(addr, tls).map_err(bind_error)?,
        None => server.bind(addr).map_err(bind_error)?,
    };
    let bound = server.addrs().first().copied().unwrap_or(addr);
    if reload_state.config.retention.is_set() {
        tokio::spawn(purge_on_schedule(reload_state.clone()));
    }
    tokio::spawn(monitor_on_schedule(reload_state.clone()));
    if reload_state.store.is_shared() {
        tokio::spawn(follow_switches(reload_state.clone()));
    }
    tokio::spawn(reload_on_sighup(reload_state));
    let server = server.shutdown_timeout(5).run();
    Ok(Running {
        addr: bound,
        handle: server.handle(),
        server,
    })
}
