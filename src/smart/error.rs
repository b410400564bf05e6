//! Everything the SMART surface refuses or fails with, answered in one place: a small HTML page
//! (the browser is a clinician's, inside the EHR) with the status, a title and what to do next.
//! Wording here is what clinicians read; logs are written where the cause is known.

use std::time::Duration;

use actix_web::http::{header, StatusCode};
use actix_web::HttpResponse;

/// A SMART launch, callback, sign-out or app request that could not go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SmartError {
    /// An EHR launch link without `launch`.
    NoLaunch,
    /// A launch link without `iss`.
    NoIssuer,
    /// `iss` not in `[smart] allowed_issuers` (never contacted).
    IssuerNotAllowed,
    /// Too many unfinished sign-ins from this source (`per_source`) or in all.
    Busy {
        per_source: bool,
        retry_after: Duration,
    },
    /// The EHR's `.well-known/smart-configuration` could not be read.
    DiscoveryFailed(&'static str),
    /// bedside's own redirect URI is not a URL (configuration).
    RedirectUri { signing_in: bool },
    /// The callback's `state` is missing, unknown, expired or used.
    SignInExpired,
    /// The callback came to a browser that did not start the sign-in.
    NotStartedHere,
    /// The authorization server answered the callback with `error` (its code, bounded).
    RefusedByEhr(String),
    /// The callback carried no `code`.
    NoCode,
    /// The token endpoint refused the code (its error code).
    TokenRefused(String),
    /// The token endpoint could not be reached or answered something unreadable.
    TokenUnreachable,
    /// The `id_token` did not verify.
    NotVerified,
    /// A sign-out form with a stale CSRF token.
    SignOutStale,
    /// A feedback form with a stale CSRF token.
    FeedbackStale,
    /// Feedback on a card that is not this patient's.
    NoSuchCard,
    /// "Disagree" without one of the listed reasons.
    NoReason,
    /// Neither agree nor disagree.
    NoVerdict,
    /// The session cookie is missing or its session ended.
    SessionEnded,
    /// The launch context's patient is not a FHIR id.
    UnusablePatient,
    /// The session has no patient context.
    NoPatient,
    /// The store could not take the feedback.
    FeedbackNotRecorded,
}

impl SmartError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Busy {
                per_source: true, ..
            } => StatusCode::TOO_MANY_REQUESTS,
            Self::Busy { .. } | Self::FeedbackNotRecorded => StatusCode::SERVICE_UNAVAILABLE,
            Self::DiscoveryFailed(_) | Self::TokenUnreachable => StatusCode::BAD_GATEWAY,
            Self::RedirectUri { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            Self::NotVerified | Self::SessionEnded => StatusCode::UNAUTHORIZED,
            Self::SignOutStale | Self::FeedbackStale => StatusCode::FORBIDDEN,
            Self::NoSuchCard => StatusCode::NOT_FOUND,
            Self::NoPatient => StatusCode::OK,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Self::NoLaunch | Self::NoIssuer | Self::IssuerNotAllowed => "Launch refused",
            Self::Busy { .. } => "Busy",
            Self::DiscoveryFailed(_) => "EHR not reachable",
            Self::RedirectUri { signing_in: false } => "Launch failed",
            Self::RedirectUri { signing_in: true }
            | Self::NoCode
            | Self::TokenRefused(_)
            | Self::TokenUnreachable => "Sign-in failed",
            Self::SignInExpired => "Sign-in expired",
            Self::NotStartedHere => "Sign-in not started here",
            Self::RefusedByEhr(_) => "Sign-in refused",
            Self::NotVerified => "Sign-in not verified",
            Self::SignOutStale => "Sign-out refused",
            Self::FeedbackStale => "Feedback refused",
            Self::NoSuchCard => "No such card",
            Self::NoReason => "Choose a reason",
            Self::NoVerdict => "Choose agree or disagree",
            Self::SessionEnded => "Session ended",
            Self::UnusablePatient => "Unusable patient context",
            Self::NoPatient => "No patient selected",
            Self::FeedbackNotRecorded => "Feedback not recorded",
        }
    }

    fn message(&self) -> String {
        match self {
            Self::NoLaunch => {
                "The launch link has no `launch` parameter. Open bedside from the EHR.".into()
            }
            Self::NoIssuer => "The launch link has no `iss` parameter.".into(),
            Self::IssuerNotAllowed => {
                "This EHR (iss) is not configured as an allowed issuer for bedside.".into()
            }
            Self::Busy {
                per_source: true, ..
            } => "Too many sign-ins were started from this address and not finished; try again later.".into(),
            Self::Busy { .. } => {
                "Too many sign-ins are in progress; try again in a few minutes.".into()
            }
            Self::DiscoveryFailed(why) => {
                format!("bedside could not read the EHR's SMART configuration: {why}.")
            }
            Self::RedirectUri { .. } => "bedside's redirect URI is not valid.".into(),
            Self::SignInExpired => "This sign-in link is unknown, expired or was already used. Open bedside again from the EHR.".into(),
            Self::NotStartedHere => "This sign-in was not started in this browser, so bedside did not accept it (a sign-in link sent by someone else is refused on purpose). Open bedside again from the EHR.".into(),
            Self::RefusedByEhr(code) => format!("The EHR refused the sign-in ({code})."),
            Self::NoCode => "No authorization code was returned.".into(),
            Self::TokenRefused(code) => format!("The EHR's authorization server refused the sign-in ({code}). Open bedside again from the EHR."),
            Self::TokenUnreachable => "The EHR's authorization server could not be reached or answered something unreadable.".into(),
            Self::NotVerified => "The EHR's identity token could not be verified. No session was created.".into(),
            Self::SignOutStale => "The sign-out form is stale; reload the page and try again.".into(),
            Self::FeedbackStale => "The form is stale; reload the page and try again.".into(),
            Self::NoSuchCard => "That card is not one of this patient's. Nothing was recorded.".into(),
            Self::NoReason => "Disagreeing needs one of the listed reasons. Go back, choose one and send again. Nothing was recorded.".into(),
            Self::NoVerdict => "Go back and choose agree or disagree. Nothing was recorded.".into(),
            Self::SessionEnded => "Your bedside session has ended. Please relaunch from the EHR.".into(),
            Self::UnusablePatient => "The EHR sent a patient id that is not a FHIR id. Please relaunch from the patient's chart.".into(),
            Self::NoPatient => "bedside shows one patient at a time. Open it from a patient's chart or from a card.".into(),
            Self::FeedbackNotRecorded => "bedside could not store your feedback just now. Nothing was recorded; please try again in a moment.".into(),
        }
    }

    /// The page that says so (with `Retry-After` when busy).
    pub(crate) fn page(&self) -> HttpResponse {
        let mut response = super::html_page(
            self.status(),
            self.title(),
            &format!("<p>{}</p>", crate::html::escape(&self.message())),
        );
        if let Self::Busy { retry_after, .. } = self {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from(super::pending::retry_after_secs(*retry_after)),
            );
        }
        response
    }
}
