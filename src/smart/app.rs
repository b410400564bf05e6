//! The clinician app behind every card: `GET /smart/app` (the launched patient's assessments,
//! trajectories, evidence and model limits), `POST /smart/feedback` (agree / disagree with a
//! card, stored with CDS Hooks feedback) and the style sheet.

use std::time::Instant;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::error::SmartError;
use super::render::{self, PageExtras};
use super::view::{self, is_fhir_id};
use super::{SmartSession, SmartState};
use crate::cds::wire::{Coding, Feedback, Outcome, OverrideReason};
use crate::cds::Caller;
use crate::store::AuditRecord;

/// The app's style sheet (no PHI: cacheable).
const STYLE: &str = include_str!("../../smart-launch/assets/app.css");

/// `?feedback=recorded` after a successful post (Post/Redirect/Get).
#[derive(Deserialize)]
pub struct PageQuery {
    #[serde(default)]
    feedback: Option<String>,
}

/// `GET /smart/app`: the launched patient's page; without a session, asks for a relaunch.
pub async fn page(
    state: web::Data<SmartState>,
    req: HttpRequest,
    query: web::Query<PageQuery>,
) -> HttpResponse {
    let started = Instant::now();
    let Some(session) = super::current(&state, &req).await else {
        return SmartError::SessionEnded.page();
    };
    let patient = match launched_patient(&session) {
        Ok(p) => p,
        Err(e) => return e.page(),
    };
    let view = view::gather(&state, &session, &patient).await;
    let mut limitations = Vec::new();
    for s in &view.sections {
        if let Some(service) = view.runtime.services.get(&s.service_id) {
            let m = service.model();
            if let Ok(text) = tokio::fs::read_to_string(&m.model_card).await {
                limitations.push((
                    (m.manifest.name.clone(), m.manifest.version.clone()),
                    render::limitations(&text),
                ));
            }
        }
    }
    let notice = (query.feedback.as_deref() == Some("recorded")).then_some(
        "Your feedback was recorded. Thank you: it is reviewed with the model's performance.",
    );
    let html = render::page(
        &view,
        &PageExtras {
            csrf: &session.csrf_token,
            user: session.fhir_user.as_deref(),
            notice,
            limitations: &limitations,
        },
    );
    audit(
        &state,
        &session,
        &patient,
        ("smart-view", "smart-app"),
        "shown",
        200,
        started,
    );
    tracing::info!(session = %session.id_hash, sections = view.sections.len(), "SMART app page");
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::CONTENT_SECURITY_POLICY, state.app_csp.clone()))
        .body(html)
}

/// The agree / disagree form.
#[derive(Deserialize)]
pub struct FeedbackForm {
    csrf: String,
    prediction: String,
    verdict: String,
    #[serde(default)]
    reason: String,
}

/// `POST /smart/feedback`: a clinician's verdict on one of the launched patient's cards,
/// stored like CDS Hooks feedback (`accepted` = agree, `overridden` + reason = disagree).
pub async fn feedback(
    state: web::Data<SmartState>,
    req: HttpRequest,
    form: web::Form<FeedbackForm>,
) -> HttpResponse {
    let started = Instant::now();
    let Some(session) = super::current(&state, &req).await else {
        return SmartError::SessionEnded.page();
    };
    if !super::csrf_ok(&session, &form.csrf) {
        tracing::warn!(session = %session.id_hash, "SMART feedback refused: CSRF token mismatch");
        return SmartError::FeedbackStale.page();
    }
    let patient = match launched_patient(&session) {
        Ok(p) => p,
        Err(e) => return e.page(),
    };
    let prediction = match state
        .store
        .prediction_about(
            &form.prediction,
            &super::view::patient_view(&state, &session),
            &patient,
        )
        .await
    {
        Ok(Some(p)) => p,
        Ok(None) => return SmartError::NoSuchCard.page(),
        Err(e) => {
            tracing::error!(session = %session.id_hash, error = %e, "SMART feedback: store unavailable");
            return SmartError::FeedbackNotRecorded.page();
        }
    };
    let runtime = state.runtime.current();
    let reasons = runtime
        .services
        .get(&prediction.service_id)
        .map(|s| s.definition().card.override_reasons.clone())
        .unwrap_or_default();
    let (outcome, override_reason) = match form.verdict.as_str() {
        "agree" => (Outcome::Accepted, None),
        "disagree" => match reasons.iter().find(|r| r.code == form.reason) {
            Some(r) => (
                Outcome::Overridden,
                Some(OverrideReason {
                    reason: Some(Coding::clone(r)),
                    user_comment: None,
                }),
            ),
            None => return SmartError::NoReason.page(),
        },
        _ => return SmartError::NoVerdict.page(),
    };
    let item = Feedback {
        card: prediction.id.clone(),
        outcome,
        accepted_suggestions: Vec::new(),
        override_reason,
        outcome_timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    };
    let mut raw = serde_json::to_value(&item).unwrap_or_default();
    raw["source"] = "smart-app".into();
    if let Some(user) = &session.fhir_user {
        raw["user"] = user.clone().into();
    }
    let raw = raw.to_string();
    let client = Caller {
        iss: session.iss.clone(),
        tenant: None,
    };
    if let Err(e) = state
        .store
        .record_feedback(
            &prediction.service_id,
            Some(&client),
            &[(item, raw.as_str())],
        )
        .await
    {
        tracing::error!(session = %session.id_hash, error = %e, "SMART feedback not stored");
        let what = ("smart-feedback", prediction.service_id.as_str());
        audit(
            &state,
            &session,
            &patient,
            what,
            "store_unavailable",
            503,
            started,
        );
        return SmartError::FeedbackNotRecorded.page();
    }
    let what = ("smart-feedback", prediction.service_id.as_str());
    audit(&state, &session, &patient, what, "recorded", 303, started);
    tracing::info!(session = %session.id_hash, service = %prediction.service_id, outcome = outcome.as_str(), "SMART feedback recorded");
    HttpResponse::SeeOther()
        .insert_header((
            header::LOCATION,
            format!("app?feedback=recorded#model-{}", prediction.model),
        ))
        .finish()
}

/// `GET /smart/assets/app.css`.
pub async fn style() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(STYLE)
}

/// The launched patient's id, or the page that says why there is none.
fn launched_patient(session: &SmartSession) -> Result<String, SmartError> {
    match session.patient.as_deref() {
        Some(p) if is_fhir_id(p) => Ok(p.to_owned()),
        Some(_) => Err(SmartError::UnusablePatient),
        None => Err(SmartError::NoPatient),
    }
}

/// Who looked at or answered what (the patient id is hashed by the store, never logged).
fn audit(
    state: &SmartState,
    session: &SmartSession,
    patient: &str,
    (action, service_id): (&'static str, &str),
    outcome: &str,
    http_status: u16,
    started: Instant,
) {
    state.audit.record(AuditRecord {
        action,
        service_id: service_id.to_owned(),
        hook_instance: None,
        client_iss: Some(session.iss.clone()),
        tenant: None,
        user_id: session.fhir_user.clone(),
        patient_id: Some(patient.to_owned()),
        // The launched patient is one of the issuer's FHIR server: the same pseudonym as the
        // predictions about them.
        fhir_server: Some(crate::store::fhir_base(&session.iss)),
        outcome: outcome.to_owned(),
        http_status,
        cards: 0,
        elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
    });
}
