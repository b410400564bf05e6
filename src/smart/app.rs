//! Placeholder app pages (replaced by the full SMART app): enough to show a launch worked.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::{escape_html, html_page};
use crate::server::AppState;

/// `GET /smart/app`: the launched app; without a session, asks for a relaunch from the EHR.
pub async fn page(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    match super::current(&state, &req).await {
        None => html_page(
            StatusCode::UNAUTHORIZED,
            "Session ended",
            "<p>Your bedside session has ended. Please relaunch from the EHR.</p>",
        ),
        Some(session) => html_page(
            StatusCode::OK,
            "bedside",
            &format!(
                "<p>Patient: <span id=\"patient\">{}</span></p>\n<form method=\"post\" action=\"logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button>Sign out</button></form>",
                escape_html(session.patient.as_deref().unwrap_or("(none)")),
                escape_html(&session.csrf_token)
            ),
        ),
    }
}

/// `POST /smart/feedback`: not implemented yet in this placeholder.
pub async fn feedback() -> HttpResponse {
    HttpResponse::NotImplemented().finish()
}
