//! What the app page shows for the launched patient, gathered before any HTML is written:
//! the patient banner, and per model the recorded history (every prediction and the
//! clinicians' answers) beside a fresh assessment read with the clinician's own token.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde_json::Value;

use super::SmartSession;
use super::SmartState;
use crate::cds::wire::HookRequest;
use crate::fhir::FhirServer;
use crate::services::review::{Review, REVIEW_BUDGET};
use crate::services::CdsService;
use crate::services::Runtime;
use crate::store::{fhir_base, FeedbackMark, Mode, PatientView, StoredPrediction};

/// How far back the trajectories reach.
pub const HISTORY: ChronoDuration = ChronoDuration::hours(72);

/// Which card the clinician opened the app from (a card's `appContext`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenedFrom {
    pub prediction: Option<String>,
    pub service: Option<String>,
}

impl OpenedFrom {
    /// Reads `{"prediction": …, "service": …}`; anything else opens the app on no card.
    pub fn parse(app_context: Option<&str>) -> Self {
        let Some(v) = app_context.and_then(|t| serde_json::from_str::<Value>(t).ok()) else {
            return Self::default();
        };
        let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        Self {
            prediction: text("prediction"),
            service: text("service"),
        }
    }
}

/// The patient banner's facts, or why they could not be read.
#[derive(Debug, Clone, Default)]
pub struct Banner {
    pub name: Option<String>,
    pub gender: Option<String>,
    pub birth_date: Option<String>,
    pub age_years: Option<i64>,
    /// The first identifier (usually the MRN), with its type text.
    pub identifier: Option<(String, String)>,
    pub problem: Option<String>,
}

/// One model's part of the page: the services that use it, their recorded predictions for
/// this patient, the answers on them, and the assessment now.
pub struct ModelSection {
    /// The service the live assessment and feedback reasons come from.
    pub service_id: String,
    /// Every service using this model (e.g. the patient-view and encounter-start ones).
    pub service_ids: Vec<String>,
    /// Active predictions of those services, oldest first.
    pub history: Vec<StoredPrediction>,
    pub feedback: Vec<FeedbackMark>,
    pub review: Result<Review, String>,
    /// The card feedback goes to: the one the app was opened from, else the newest shown.
    pub focus: Option<StoredPrediction>,
}

/// Everything the page shows.
pub struct AppView {
    /// The services and models the page was built with (a reload does not change it midway).
    pub runtime: Arc<Runtime>,
    pub patient_id: String,
    pub banner: Option<Banner>,
    pub sections: Vec<ModelSection>,
    pub from: DateTime<Utc>,
    pub now: DateTime<Utc>,
    /// Set when the FHIR server could not be used at all (every section says so too).
    pub fhir_problem: Option<String>,
    pub store_problem: Option<String>,
}

/// A FHIR logical id (R4 `id`: `[A-Za-z0-9\-\.]{1,64}`): safe to put in a URL path.
pub fn is_fhir_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// The recorded predictions a session may see: those about its patient on its issuer's FHIR
/// server, made for a CDS client whose allowlist reaches that server (for a tenant's own rule,
/// that tenant's only). With client authentication off (the demo) there is one, unnamed client,
/// and calls that named no FHIR server count too. Another EHR's patient with the same id is
/// never shown.
pub(crate) fn patient_view(state: &SmartState, session: &SmartSession) -> PatientView {
    let base = fhir_base(&session.iss);
    let mut view = PatientView {
        fhir_servers: vec![base.clone()],
        clients: Vec::new(),
    };
    if matches!(*state.client_auth, crate::http::auth::ClientAuth::Disabled) {
        view.fhir_servers.push(String::new());
        view.clients.push((String::new(), None));
        return view;
    }
    let Ok(url) = url::Url::parse(&base) else {
        return view;
    };
    let admits =
        |rules: &[crate::fhir::OriginRule]| crate::fhir::egress::check(rules, &url).is_ok();
    for client in &state.clients {
        if admits(&client.fhir_servers) {
            view.clients.push((client.iss.clone(), None));
        }
        for (tenant, rules) in &client.tenant_fhir_servers {
            if admits(rules) {
                view.clients
                    .push((client.iss.clone(), Some(tenant.clone())));
            }
        }
    }
    view
}

/// Gathers the page for `patient_id` of `session`.
pub async fn gather(state: &SmartState, session: &SmartSession, patient_id: &str) -> AppView {
    let now = Utc::now();
    let from = now - HISTORY;
    let opened = OpenedFrom::parse(session.app_context.as_deref());
    let records = patient_view(state, session);
    let runtime = state.runtime.current();
    let deadline = Instant::now() + REVIEW_BUDGET;
    let server = state
        .fhir
        .client
        .issuer_server(&session.iss, &session.access_token, deadline)
        .map_err(|e| format!("the EHR's FHIR server cannot be used: {e}"));
    let server_ref = server.as_ref().map_err(String::as_str);

    let (history, feedback, store_problem) = match tokio::join!(
        state
            .store
            .predictions_for_patient(&records, patient_id, from),
        state.store.feedback_for_patient(&records, patient_id, from)
    ) {
        (Ok(h), Ok(f)) => (h, f, None),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(session = %session.id_hash, error = %e, "app: prediction history unavailable");
            (
                Vec::new(),
                Vec::new(),
                Some("the prediction history is unavailable".to_owned()),
            )
        }
    };
    let opened_prediction = match &opened.prediction {
        Some(id) => state
            .store
            .prediction_about(id, &records, patient_id)
            .await
            .ok()
            .flatten(),
        None => None,
    };

    let groups = model_groups(
        &runtime,
        opened_prediction
            .as_ref()
            .map(|p| p.service_id.as_str())
            .or(opened.service.as_deref()),
    );
    let request_text = app_request(session, patient_id);
    let request: Option<HookRequest<'_>> = serde_json::from_str(&request_text).ok();
    let banner = if session.need_patient_banner {
        Some(banner(server_ref, patient_id, now).await)
    } else {
        None
    };
    let reviews = futures_util::future::join_all(groups.iter().map(|(rep, _)| {
        let request = request.as_ref();
        let runtime = &runtime;
        async move {
            let service = runtime
                .services
                .get(rep)
                .ok_or_else(|| "the service was reloaded".to_owned())?;
            let request = request.ok_or_else(|| "the launch context cannot be read".to_owned())?;
            service
                .review(request, server_ref)
                .await
                .map_err(|e| e.to_string())
        }
    }))
    .await;

    let mut sections = Vec::new();
    for ((rep, ids), review) in groups.into_iter().zip(reviews) {
        let mine: Vec<StoredPrediction> = history
            .iter()
            .filter(|p| p.mode == Mode::Active && ids.contains(&p.service_id))
            .cloned()
            .collect();
        let marks: Vec<FeedbackMark> = feedback
            .iter()
            .filter(|f| mine.iter().any(|p| p.id == f.card_uuid))
            .cloned()
            .collect();
        let focus = opened_prediction
            .clone()
            .filter(|p| ids.contains(&p.service_id))
            .or_else(|| mine.iter().rev().find(|p| p.outcome.card_shown()).cloned());
        sections.push(ModelSection {
            service_id: rep,
            service_ids: ids,
            history: mine,
            feedback: marks,
            review,
            focus,
        });
    }
    AppView {
        runtime,
        patient_id: patient_id.to_owned(),
        banner,
        sections,
        from,
        now,
        fhir_problem: server.err(),
        store_problem,
    }
}

/// Services grouped by model (name): `(representative service id, every service id)`, the
/// group of `first` (the card the app was opened from) first, then by model name. The
/// representative answers `patient-view` where one does (its context is what a launch has).
fn model_groups(runtime: &Runtime, first: Option<&str>) -> Vec<(String, Vec<String>)> {
    let mut groups: Vec<(String, Vec<&CdsService>)> = Vec::new();
    for s in runtime.services.iter() {
        let model = s.definition().model_name.clone();
        match groups.iter_mut().find(|(m, _)| *m == model) {
            Some((_, members)) => members.push(s),
            None => groups.push((model, vec![s])),
        }
    }
    let first_model = first
        .and_then(|id| runtime.services.get(id))
        .map(|s| s.definition().model_name.clone());
    groups.sort_by_key(|(m, _)| (Some(m) != first_model.as_ref(), m.clone()));
    groups
        .into_iter()
        .map(|(_, members)| {
            let rep = members
                .iter()
                .find(|s| s.hook() == "patient-view")
                .or(members.first())
                .map(|s| s.id().to_owned())
                .unwrap_or_default();
            (rep, members.iter().map(|s| s.id().to_owned()).collect())
        })
        .collect()
}

/// A `patient-view`-shaped request naming the launched patient (and encounter, user): what
/// the services render their queries from. No prefetch: everything is read from the server.
fn app_request(session: &SmartSession, patient_id: &str) -> String {
    let mut context = serde_json::Map::new();
    context.insert("patientId".into(), patient_id.into());
    if let Some(e) = &session.encounter {
        context.insert("encounterId".into(), e.clone().into());
    }
    if let Some(u) = &session.fhir_user {
        context.insert("userId".into(), u.clone().into());
    }
    serde_json::json!({
        "hook": "patient-view",
        "hookInstance": format!("smart-app-{}", session.id_hash),
        "fhirServer": session.iss,
        "context": context,
    })
    .to_string()
}

/// Reads `Patient/{id}` for the banner.
async fn banner(
    server: Result<&FhirServer<'_>, &str>,
    patient_id: &str,
    now: DateTime<Utc>,
) -> Banner {
    let server = match server {
        Ok(s) => s,
        Err(why) => {
            return Banner {
                problem: Some(why.to_owned()),
                ..Banner::default()
            }
        }
    };
    let fetched = match server.fetch(&format!("Patient/{patient_id}")).await {
        Ok(f) => f,
        Err(e) => {
            return Banner {
                problem: Some(format!("the patient's details could not be read: {e}")),
                ..Banner::default()
            }
        }
    };
    let Some(patient) = fetched
        .pages
        .first()
        .and_then(|p| serde_json::from_str::<Value>(p.get()).ok())
        .filter(|v| v["resourceType"] == "Patient")
    else {
        return Banner {
            problem: Some("the FHIR server did not return a Patient".into()),
            ..Banner::default()
        };
    };
    let birth_date = patient["birthDate"].as_str().map(str::to_owned);
    let age_years = birth_date
        .as_deref()
        .and_then(|d| chrono::NaiveDate::parse_from_str(d.get(..10)?, "%Y-%m-%d").ok())
        .and_then(|b| now.date_naive().years_since(b))
        .map(i64::from);
    Banner {
        name: display_name(&patient["name"]),
        gender: patient["gender"].as_str().map(str::to_owned),
        birth_date,
        age_years,
        identifier: patient["identifier"].get(0).and_then(|i| {
            let value = i["value"].as_str()?.to_owned();
            let kind = i["type"]["text"]
                .as_str()
                .or_else(|| i["type"]["coding"][0]["code"].as_str())
                .unwrap_or("ID")
                .to_owned();
            Some((kind, value))
        }),
        problem: None,
    }
}

/// "Given Family" of the official (else first) name, or its `text`.
fn display_name(names: &Value) -> Option<String> {
    let list = names.as_array()?;
    let name = list
        .iter()
        .find(|n| n["use"] == "official")
        .or(list.first())?;
    if let Some(text) = name["text"].as_str() {
        return Some(text.to_owned());
    }
    let mut parts: Vec<&str> = name["given"]
        .as_array()
        .map(|g| g.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(family) = name["family"].as_str() {
        parts.push(family);
    }
    (!parts.is_empty()).then(|| parts.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_context_names_the_card_or_nothing() {
        let o = OpenedFrom::parse(Some(r#"{"prediction":"p-1","service":"sepsis-screen"}"#));
        assert_eq!(o.prediction.as_deref(), Some("p-1"));
        assert_eq!(o.service.as_deref(), Some("sepsis-screen"));
        assert_eq!(OpenedFrom::parse(Some("not json")), OpenedFrom::default());
        assert_eq!(OpenedFrom::parse(None), OpenedFrom::default());
    }

    #[test]
    fn only_fhir_ids_reach_a_url_path() {
        assert!(is_fhir_id("smart-patient-1"));
        assert!(is_fhir_id("a.B-9"));
        for bad in ["", "../Patient", "a/b", "x?y", "a b", &"x".repeat(65)] {
            assert!(!is_fhir_id(bad), "{bad}");
        }
    }

    #[test]
    fn banner_name_prefers_the_official_name() {
        let names = serde_json::json!([
            {"use": "nickname", "given": ["Bo"]},
            {"use": "official", "given": ["Robert", "J"], "family": "Ng"}
        ]);
        assert_eq!(display_name(&names).as_deref(), Some("Robert J Ng"));
        assert_eq!(
            display_name(&serde_json::json!([{"text": "Ana Li"}])).as_deref(),
            Some("Ana Li")
        );
        assert_eq!(display_name(&serde_json::json!([])), None);
    }
}
