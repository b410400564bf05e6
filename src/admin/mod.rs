//! Operator endpoints: the kill switch per service, the prediction record of one card (also as
//! FHIR `RiskAssessment` + `Provenance`), the audit trail as FHIR `AuditEvent`s, and the
//! feedback-analytics report (JSON, or an HTML page with charts). Guarded by the
//! `[[admin_tokens]]` of the configuration (sha256 of a bearer token) and their roles
//! (`report` reads, `operate` switches services, `promote` evaluates, promotes and retires
//! model versions: [`models`]); without any token configured, the endpoints answer 401 to
//! everyone, and a token without the role an endpoint needs gets 403.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::audit;
use crate::report;
mod error;
mod models;
mod role;

use std::sync::Arc;

use crate::services::{KillSwitch, RuntimeHandle};
use crate::store::Store;
pub use error::AdminError;
pub use models::{GovernanceAccess, ReloadModels};
pub use role::{AdminRole, AdminToken};

/// The operator surface's state (its own `web::Data`).
pub struct AdminState {
    pub runtime: Arc<RuntimeHandle>,
    pub store: Store,
    /// Services switched off at run time.
    pub switches: Arc<KillSwitch>,
    /// Each `[[admin_tokens]]` token with its roles; empty: every call is refused.
    pub admin_tokens: Vec<AdminToken>,
    /// What model governance reads and how it applies a decision.
    pub governance: GovernanceAccess,
    /// `public_url` without a trailing slash.
    pub public_base: String,
}

/// Registers `/admin/...`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/admin/services/{id}/{action}",
        web::post().to(switch_service),
    )
    .route("/admin/predictions/{id}", web::get().to(prediction))
    .route(
        "/admin/predictions/{id}/fhir",
        web::get().to(prediction_fhir),
    )
    .route("/admin/audit-events", web::get().to(audit_events))
    .route("/admin/report", web::get().to(report_page))
    .route("/admin/monitoring", web::get().to(monitoring_page));
    models::configure(cfg);
}

/// The holder of a valid admin token that has `role`: 401 without a valid token, 403 without
/// the role.
fn admin_holder<'s>(
    state: &'s AdminState,
    req: &HttpRequest,
    role: AdminRole,
) -> Result<&'s str, AdminError> {
    let token = crate::http::static_token_match(&state.admin_tokens, |t| &t.sha256, req)
        .ok_or(AdminError::Unauthorized)?;
    if token.may(role) {
        Ok(&token.name)
    } else {
        Err(AdminError::Forbidden(role))
    }
}

/// The answer of an endpoint that speaks JSON.
fn json_answer(result: Result<HttpResponse, AdminError>) -> HttpResponse {
    result.unwrap_or_else(|e| e.json())
}

/// The answer of an endpoint that speaks FHIR.
fn fhir_answer(result: Result<HttpResponse, AdminError>) -> HttpResponse {
    result.unwrap_or_else(|e| e.fhir())
}

/// `POST /admin/services/{id}/disable|enable`: the kill switch, effective at once, no restart.
async fn switch_service(
    state: web::Data<AdminState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    json_answer(switch(&state, &req, path.into_inner()).await)
}

async fn switch(
    state: &AdminState,
    req: &HttpRequest,
    (id, action): (String, String),
) -> Result<HttpResponse, AdminError> {
    let holder = admin_holder(state, req, AdminRole::Operate)?;
    let disabled = match action.as_str() {
        "disable" => true,
        "enable" => false,
        _ => return Err(AdminError::NotFound("use /disable or /enable".into())),
    };
    let runtime = state.runtime.current();
    let service = runtime
        .services
        .get(&id)
        .ok_or_else(|| AdminError::NotFound(format!("no service {id}")))?;
    // On record first: the switch outlives this process and reaches every replica.
    if let Err(e) = state
        .store
        .set_service_switch(&id, disabled, holder, chrono::Utc::now())
        .await
    {
        tracing::error!(error = %e, "kill switch not recorded");
        return Err(AdminError::StoreUnavailable);
    }
    state.switches.set_disabled(&id, disabled);
    tracing::warn!(service = %id, admin = %holder, disabled, "service switched");
    Ok(HttpResponse::Ok().json(json!({"service": id, "enabled": service.is_enabled()})))
}

/// `GET /admin/predictions/{id}`: what was recorded for one card (pseudonymised patient).
async fn prediction(
    state: web::Data<AdminState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    json_answer(
        async {
            admin_holder(&state, &req, AdminRole::Report)?;
            let p = stored_prediction(&state, &id).await?;
            Ok(HttpResponse::Ok().json(p))
        }
        .await,
    )
}

/// The prediction record `id`.
async fn stored_prediction(
    state: &AdminState,
    id: &str,
) -> Result<crate::store::StoredPrediction, AdminError> {
    match state.store.prediction(id).await {
        Ok(Some(p)) => Ok(p),
        Ok(None) => Err(AdminError::NotFound(format!("no prediction {id}"))),
        Err(e) => {
            tracing::error!(error = %e, "prediction lookup failed");
            Err(AdminError::StoreUnavailable)
        }
    }
}

/// A FHIR answer (`application/fhir+json`).
fn fhir(status: actix_web::http::StatusCode, body: &serde_json::Value) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/fhir+json")
        .body(body.to_string())
}

/// `GET /admin/predictions/{id}/fhir`: the prediction as a FHIR `RiskAssessment` and the
/// `Provenance` naming its model version and input Observations (a `collection` Bundle).
async fn prediction_fhir(
    state: web::Data<AdminState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    fhir_answer(
        async {
            admin_holder(&state, &req, AdminRole::Report)?;
            let p = stored_prediction(&state, &id).await?;
            let runtime = state.runtime.current();
            let meaning = runtime
                .models
                .get(&p.model, &p.model_version)
                .map(|m| m.manifest.output.meaning.clone());
            let resources = vec![
                audit::risk_assessment(&p, meaning.as_deref()),
                audit::provenance(&p),
            ];
            Ok(fhir(
                actix_web::http::StatusCode::OK,
                &audit::bundle(resources, None, chrono::Utc::now()),
            ))
        }
        .await,
    )
}

/// `?after=<id>&_count=<n>` of the AuditEvent export.
#[derive(serde::Deserialize)]
struct AuditPage {
    #[serde(default)]
    after: Option<String>,
    #[serde(rename = "_count", default)]
    count: Option<String>,
}

/// Most AuditEvents in one page.
const MAX_AUDIT_PAGE: i64 = 1000;

/// `GET /admin/audit-events[?after=<id>&_count=<n>]`: the audit trail as FHIR `AuditEvent`s,
/// oldest first, paged by a `next` link (for a hospital's audit repository or SIEM).
async fn audit_events(state: web::Data<AdminState>, req: HttpRequest) -> HttpResponse {
    fhir_answer(audit_page(&state, &req).await)
}

async fn audit_page(state: &AdminState, req: &HttpRequest) -> Result<HttpResponse, AdminError> {
    admin_holder(state, req, AdminRole::Report)?;
    let Ok(page) = web::Query::<AuditPage>::from_query(req.query_string()) else {
        return Err(AdminError::Invalid(
            "query parameters: after=<id>, _count=<1..1000>".into(),
        ));
    };
    let parse = |v: &Option<String>, default: i64| -> Option<i64> {
        v.as_deref().map_or(Some(default), |t| t.parse().ok())
    };
    let (Some(after), Some(count)) = (parse(&page.after, 0), parse(&page.count, 100)) else {
        return Err(AdminError::Invalid(
            "`after` and `_count` must be integers".into(),
        ));
    };
    if !(1..=MAX_AUDIT_PAGE).contains(&count) || after < 0 {
        return Err(AdminError::Invalid(
            "`_count` must be 1 to 1000 and `after` not negative".into(),
        ));
    }
    match state.store.audit_after(after, count).await {
        Ok(rows) => {
            let next = (rows.len() as i64 == count)
                .then(|| rows.last().map(|r| r.id))
                .flatten()
                .map(|last| {
                    format!(
                        "{}/admin/audit-events?after={last}&_count={count}",
                        state.public_base
                    )
                });
            let resources = rows.iter().map(audit::audit_event).collect();
            Ok(fhir(
                actix_web::http::StatusCode::OK,
                &audit::bundle(resources, next, chrono::Utc::now()),
            ))
        }
        Err(e) => {
            tracing::error!(error = %e, "audit export failed");
            Err(AdminError::StoreUnavailable)
        }
    }
}

/// `GET /admin/report[?format=html]`: feedback analytics per service and model version, as
/// JSON, or as an HTML page with charts when asked for (`Accept: text/html`).
async fn report_page(state: web::Data<AdminState>, req: HttpRequest) -> HttpResponse {
    if let Err(e) = admin_holder(&state, &req, AdminRole::Report) {
        return e.json();
    }
    let wants_html = req.query_string().contains("format=html")
        || req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html"));
    match state.store.report(None).await {
        Ok(r) if wants_html => {
            let monitoring = match monitoring(&state).await {
                Ok(m) => crate::governance::monitor_html::section(&m),
                Err(e) => {
                    tracing::error!(error = %e, "monitoring failed");
                    "<p>Monitoring could not be computed (the store did not answer).</p>".into()
                }
            };
            HttpResponse::Ok()
                .content_type("text/html; charset=utf-8")
                .body(report::html(&r, &monitoring))
        }
        Ok(r) => HttpResponse::Ok().json(r),
        Err(e) => {
            tracing::error!(error = %e, "report failed");
            AdminError::StoreUnavailable.json()
        }
    }
}

/// Weekly monitoring of every model version over the configured weeks.
async fn monitoring(
    state: &AdminState,
) -> Result<crate::governance::monitor::Monitoring, crate::store::StoreError> {
    let runtime = state.runtime.current();
    let models: Vec<_> = runtime.models.iter().cloned().collect();
    crate::governance::monitor::monitor(
        &state.store,
        &models,
        &state.governance.settings.monitoring,
        chrono::Utc::now(),
    )
    .await
}

/// `GET /admin/monitoring`: per model version and week, score and input distributions,
/// abstention, data quality, alert and override rates, calibration, and the alerts (JSON).
async fn monitoring_page(state: web::Data<AdminState>, req: HttpRequest) -> HttpResponse {
    if let Err(e) = admin_holder(&state, &req, AdminRole::Report) {
        return e.json();
    }
    match monitoring(&state).await {
        Ok(m) => HttpResponse::Ok().json(m),
        Err(e) => {
            tracing::error!(error = %e, "monitoring failed");
            AdminError::StoreUnavailable.json()
        }
    }
}
