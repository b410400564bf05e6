//! Operator endpoints: the kill switch per service, the prediction record of one card, and
//! the feedback-analytics report (JSON, or an HTML page with charts). Guarded by the
//! `[[admin_tokens]]` of the configuration (sha256 of a bearer token); without any configured,
//! the endpoints answer 401 to everyone.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::report;
use crate::server::AppState;

/// Registers `/admin/...`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/admin/services/{id}/{action}",
        web::post().to(switch_service),
    )
    .route("/admin/predictions/{id}", web::get().to(prediction))
    .route("/admin/report", web::get().to(report_page));
}

fn refused(status: actix_web::http::StatusCode, error: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({"error": error, "message": message}))
}

/// The holder of a valid admin token, if the request carries one.
fn admin_holder<'s>(state: &'s AppState, req: &HttpRequest) -> Option<&'s str> {
    crate::http_security::static_token_holder(&state.config.admin_tokens, req)
}

fn unauthorized() -> HttpResponse {
    refused(
        actix_web::http::StatusCode::UNAUTHORIZED,
        "unauthorized",
        "an admin bearer token ([[admin_tokens]]) is required",
    )
}

/// `POST /admin/services/{id}/disable|enable`: the kill switch, effective at once, no restart.
async fn switch_service(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    let Some(holder) = admin_holder(&state, &req) else {
        return unauthorized();
    };
    let (id, action) = path.into_inner();
    let disabled = match action.as_str() {
        "disable" => true,
        "enable" => false,
        _ => {
            return refused(
                actix_web::http::StatusCode::NOT_FOUND,
                "not_found",
                "use /disable or /enable",
            )
        }
    };
    let runtime = state.runtime();
    let Some(service) = runtime.services.get(&id) else {
        return refused(
            actix_web::http::StatusCode::NOT_FOUND,
            "not_found",
            &format!("no service {id}"),
        );
    };
    state.switches.set_disabled(&id, disabled);
    tracing::warn!(service = %id, admin = %holder, disabled, "service switched");
    HttpResponse::Ok().json(json!({"service": id, "enabled": service.is_enabled()}))
}

/// `GET /admin/predictions/{id}`: what was recorded for one card (pseudonymised patient).
async fn prediction(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    if admin_holder(&state, &req).is_none() {
        return unauthorized();
    }
    match state.store.prediction(&id).await {
        Ok(Some(p)) => HttpResponse::Ok().json(p),
        Ok(None) => refused(
            actix_web::http::StatusCode::NOT_FOUND,
            "not_found",
            &format!("no prediction {id}"),
        ),
        Err(e) => {
            tracing::error!(error = %e, "prediction lookup failed");
            refused(
                actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the store could not be read; retry",
            )
        }
    }
}

/// `GET /admin/report[?format=html]`: feedback analytics per service and model version, as
/// JSON, or as an HTML page with charts when asked for (`Accept: text/html`).
async fn report_page(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    if admin_holder(&state, &req).is_none() {
        return unauthorized();
    }
    let wants_html = req.query_string().contains("format=html")
        || req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html"));
    match state.store.report(None).await {
        Ok(r) if wants_html => HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .body(report::html(&r)),
        Ok(r) => HttpResponse::Ok().json(r),
        Err(e) => {
            tracing::error!(error = %e, "report failed");
            refused(
                actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the store could not be read; retry",
            )
        }
    }
}
