//! The actix routes of the CDS Hooks API.
//!
//! Order of checks on a call: unknown service (404) → client JWT (401) → content type (415)
//! → size (413) → JSON (400) → hook/fields (400) → the service (200, or 412 when it lacks
//! data). Authentication comes before the body is read, so an unauthenticated caller cannot
//! make bedside buffer 5 MB.

use std::time::Instant;

use tracing::Instrument as _;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::HookError;
use super::HooksState;
use crate::cds::wire::{CdsResponse, DiscoveryResponse, Feedback, HookRequest};
use crate::http::auth::VerifiedClient;
use crate::http::read_json_body;
use crate::services::{CdsService, Runtime};
use crate::store::AuditRecord;

/// Registers discovery, invocation and feedback. A wrong method gets a JSON 405 too.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/cds-services")
            .route(web::get().to(discovery))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/cds-services/{id}")
            .route(web::post().to(invoke))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/cds-services/{id}/feedback")
            .route(web::post().to(feedback))
            .default_service(web::to(method_not_allowed)),
    );
}

async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    let allow = if req.path() == "/cds-services" {
        "GET"
    } else {
        "POST"
    };
    let mut response = crate::http::error_response(
        actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not supported here; use {allow}", req.method()),
        None,
    );
    response
        .headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(allow));
    response
}

/// `GET /cds-services`. Open to all: it lists service metadata, no patient data, and EHR
/// integration engineers read it while registering bedside.
async fn discovery(state: web::Data<HooksState>) -> HttpResponse {
    HttpResponse::Ok().json(DiscoveryResponse {
        services: state
            .runtime
            .current()
            .services
            .iter()
            .map(|s| s.descriptor())
            .collect(),
    })
}

async fn invoke(
    state: web::Data<HooksState>,
    id: web::Path<String>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, HookError> {
    let started = Instant::now();
    let mut audit = AuditRecord {
        action: "hook",
        service_id: id.clone(),
        ..Default::default()
    };
    // The trace of the call (exported over OTLP when configured): ids only.
    // A caller's W3C trace context continues in this trace (the layer reads and drops it).
    let traceparent = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 128);
    let span = tracing::info_span!(
        crate::telemetry::otlp::SERVER_SPAN,
        traceparent,
        service = %id.as_str(),
        hook_instance = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty
    );
    let result = answer_hook(&state, &id, &req, payload, &mut audit, started)
        .instrument(span.clone())
        .await;
    let status = match &result {
        Ok(_) => 200,
        Err(e) => actix_web::ResponseError::status_code(e).as_u16(),
    };
    span.record("http.response.status_code", status);
    finish_audit(&state, audit, &result, started);
    result.map(|response| HttpResponse::Ok().json(response))
}

async fn answer_hook(
    state: &HooksState,
    id: &str,
    req: &HttpRequest,
    payload: web::Payload,
    audit: &mut AuditRecord,
    started: Instant,
) -> Result<CdsResponse, HookError> {
    let runtime = state.runtime.current();
    let service = find_service(&runtime, id)?;
    let audiences = [state.service_url(service.id())];
    let client = authenticate(state, req, &audiences)
        .instrument(tracing::info_span!("auth"))
        .await?;
    note_client(audit, client.as_ref());
    let authorized_ms = started.elapsed().as_secs_f64() * 1e3;
    let body = read_json_body(req, payload, state.body_limits).await?;
    let read_ms = started.elapsed().as_secs_f64() * 1e3;
    let request: HookRequest<'_> = HookError::parse_body(&body)?;
    audit.hook_instance = Some(request.hook_instance.clone());
    tracing::Span::current().record("hook_instance", request.hook_instance.as_str());
    let text = |k: &str| {
        request
            .context
            .get(k)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    audit.user_id = text("userId");
    audit.patient_id = text("patientId");
    audit.fhir_server = request.fhir_server.as_deref().map(crate::store::fhir_base);
    validate_request(&request)?;
    if request.hook != service.hook() {
        return Err(HookError::WrongHook {
            service: service.id().to_owned(),
            expected: service.hook().to_owned(),
            got: request.hook.clone(),
        });
    }
    if let Some(field) = crate::cds::context::missing_field(&request.hook, &request.context) {
        return Err(HookError::InvalidRequest {
            field: Some(format!("context.{field}")),
            message: format!("the {} hook requires `context.{field}`", request.hook),
        });
    }
    let parsed_ms = started.elapsed().as_secs_f64() * 1e3;
    let outcome = service
        .invoke(&request, client.as_ref().map(|c| &c.caller))
        .await;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
    tracing::debug!(authorized_ms, read_ms, parsed_ms, elapsed_ms, "hook timing");
    match outcome {
        Ok(response) => {
            tracing::info!(
                service = service.id(),
                hook_instance = %request.hook_instance,
                client = client.as_ref().map(|c| c.caller.iss.as_str()).unwrap_or("-"),
                tenant = client.as_ref().and_then(|c| c.caller.tenant.as_deref()).unwrap_or("-"),
                cards = response.cards.len(),
                elapsed_ms,
                "hook answered"
            );
            audit.cards = response.cards.len();
            Ok(response)
        }
        Err(e) => {
            // The code and the prefetch key only: the message quotes the rendered query, which
            // carries the patient's id.
            tracing::warn!(
                service = service.id(),
                hook_instance = %request.hook_instance,
                error = e.code(),
                field = e.field().as_deref().unwrap_or("-"),
                elapsed_ms,
                "hook refused"
            );
            Err(e.into())
        }
    }
}

fn note_client(audit: &mut AuditRecord, client: Option<&VerifiedClient>) {
    audit.client_iss = client.map(|c| c.caller.iss.clone());
    audit.tenant = client.and_then(|c| c.caller.tenant.clone());
}

/// Completes and writes (in the background) the audit record of one call.
fn finish_audit<T>(
    state: &HooksState,
    mut audit: AuditRecord,
    result: &Result<T, HookError>,
    started: Instant,
) {
    use actix_web::ResponseError as _;
    audit.elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
    // Only services that exist are named in the trail: the path is the caller's text.
    if matches!(result, Err(HookError::UnknownService(_))) {
        audit.service_id = "(unknown)".into();
    }
    match result {
        Ok(_) => {
            audit.outcome = "answered".into();
            audit.http_status = 200;
        }
        Err(e) => {
            audit.outcome = e.code().into();
            audit.http_status = e.status_code().as_u16();
        }
    }
    state.audit.record(audit);
}

#[derive(Deserialize)]
struct RawFeedbackRequest<'a> {
    #[serde(borrow)]
    feedback: Vec<&'a RawValue>,
}

async fn feedback(
    state: web::Data<HooksState>,
    id: web::Path<String>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, HookError> {
    let started = Instant::now();
    let mut audit = AuditRecord {
        action: "feedback",
        service_id: id.clone(),
        ..Default::default()
    };
    let result = store_feedback(&state, &id, &req, payload, &mut audit).await;
    finish_audit(&state, audit, &result, started);
    // The spec defines no response body; an empty JSON object keeps JSON-only clients happy.
    result.map(|()| HttpResponse::Ok().json(serde_json::json!({})))
}

async fn store_feedback(
    state: &HooksState,
    id: &str,
    req: &HttpRequest,
    payload: web::Payload,
    audit: &mut AuditRecord,
) -> Result<(), HookError> {
    let runtime = state.runtime.current();
    let service = find_service(&runtime, id)?;
    let service_url = state.service_url(service.id());
    let audiences = [format!("{service_url}/feedback"), service_url];
    let client = authenticate(state, req, &audiences)
        .instrument(tracing::info_span!("auth"))
        .await?;
    note_client(audit, client.as_ref());
    let body = read_json_body(req, payload, state.body_limits).await?;
    let raw: RawFeedbackRequest<'_> = HookError::parse_body(&body)?;
    if raw.feedback.is_empty() {
        return Err(HookError::InvalidRequest {
            field: Some("feedback".into()),
            message: "`feedback` must not be empty".into(),
        });
    }
    let mut items = Vec::with_capacity(raw.feedback.len());
    for (i, item) in raw.feedback.iter().enumerate() {
        // Items are parsed one by one from their raw text, which is stored verbatim.
        let parsed: Feedback =
            HookError::parse_body(item.get().as_bytes()).map_err(|e| match e {
                HookError::InvalidRequest { field, message } => HookError::InvalidRequest {
                    field: Some(match field {
                        Some(f) => format!("feedback[{i}].{f}"),
                        None => format!("feedback[{i}]"),
                    }),
                    message,
                },
                other => other,
            })?;
        validate_feedback(&parsed, i)?;
        items.push((parsed, item.get()));
    }
    // Only the caller's own cards: another EHR's "already aware" must not silence this one's
    // patient, nor its feedback reach this one's record.
    let scope = crate::store::Scope::new(
        client.as_ref().map(|c| c.caller.iss.as_str()),
        client.as_ref().and_then(|c| c.caller.tenant.as_deref()),
        None,
    );
    let cards: Vec<&str> = items.iter().map(|(f, _)| f.card.as_str()).collect();
    if let Some(&i) = state
        .store
        .cards_not_given_to(&scope, &cards)
        .await?
        .first()
    {
        return Err(HookError::UnknownCard {
            field: format!("feedback[{i}].card"),
            card: cards
                .get(i)
                .copied()
                .unwrap_or_default()
                .chars()
                .take(64)
                .collect(),
        });
    }
    let stored = state
        .store
        .record_feedback(service.id(), client.as_ref().map(|c| &c.caller), &items)
        .await
        .map_err(|e| {
            tracing::error!(service = service.id(), error = %e, "feedback not stored");
            e
        })?;
    tracing::info!(
        service = service.id(),
        items = items.len(),
        new = stored,
        "feedback stored"
    );
    Ok(())
}

fn find_service<'s>(runtime: &'s Runtime, id: &str) -> Result<&'s CdsService, HookError> {
    runtime
        .services
        .get(id)
        .ok_or_else(|| HookError::UnknownService(id.to_owned()))
}

/// Verifies the caller's JWT for a call whose `aud` must be one of `audiences`.
async fn authenticate(
    state: &HooksState,
    req: &HttpRequest,
    audiences: &[String],
) -> Result<Option<VerifiedClient>, HookError> {
    Ok(state.auth.verify_request(req, audiences).await?)
}

fn validate_request(request: &HookRequest<'_>) -> Result<(), HookError> {
    let invalid = |field: &str, message: &str| HookError::InvalidRequest {
        field: Some(field.to_owned()),
        message: message.to_owned(),
    };
    if request.hook.trim().is_empty() {
        return Err(invalid("hook", "`hook` must not be empty"));
    }
    if request.hook_instance.trim().is_empty() {
        return Err(invalid("hookInstance", "`hookInstance` must not be empty"));
    }
    if request.fhir_authorization.is_some() && request.fhir_server.is_none() {
        return Err(invalid(
            "fhirServer",
            "`fhirServer` is required when `fhirAuthorization` is present",
        ));
    }
    if let Some(server) = &request.fhir_server {
        match url::Url::parse(server) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => return Err(invalid("fhirServer", "`fhirServer` must be an http(s) URL")),
        }
    }
    Ok(())
}

fn validate_feedback(item: &Feedback, i: usize) -> Result<(), HookError> {
    if item.card.trim().is_empty() {
        return Err(HookError::InvalidRequest {
            field: Some(format!("feedback[{i}].card")),
            message: "`card` must be the card's uuid".into(),
        });
    }
    if chrono::DateTime::parse_from_rfc3339(&item.outcome_timestamp).is_err() {
        return Err(HookError::InvalidRequest {
            field: Some(format!("feedback[{i}].outcomeTimestamp")),
            message: "`outcomeTimestamp` must be an RFC 3339 date-time".into(),
        });
    }
    Ok(())
}
