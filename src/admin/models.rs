//! `/admin/models/...`: model versions and their status, evaluation on this site's shadow
//! records, promotion and retirement (role `promote`), and the decisions as FHIR `Provenance`
//! and `AuditEvent` (role `report`). A decision takes effect at once: the gateway reloads its
//! models and services; if the reload is refused, the decision is reverted (and that is
//! recorded too) while the running set keeps serving.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::{admin_holder, fhir, fhir_answer, json_answer, AdminError, AdminRole, AdminState};
use crate::governance::{GovernanceError, GovernanceSettings, Governor, Request};
use crate::inference::signature::TrustedKey;

/// Reloads models and services from disk and the store's decisions; implemented by the
/// composition root, which owns the running set.
pub trait ReloadModels: Send + Sync {
    /// Swaps in the reloaded set, or says why it was refused (the running set keeps serving).
    fn reload(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;
}

/// What governance needs from the gateway's configuration, and the reload.
pub struct GovernanceAccess {
    pub models_dir: PathBuf,
    pub services_dir: PathBuf,
    pub settings: GovernanceSettings,
    pub trusted_keys: Vec<TrustedKey>,
    pub reload: Arc<dyn ReloadModels>,
    /// One decision at a time in this process.
    pub serial: tokio::sync::Mutex<()>,
}

/// Registers the model routes.
pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin/models", web::get().to(list))
        .route("/admin/models/{model}/history", web::get().to(history))
        .route(
            "/admin/models/{model}/{version}/{action}",
            web::post().to(act),
        );
}

fn governor(state: &AdminState) -> Governor<'_> {
    let g = &state.governance;
    Governor {
        store: &state.store,
        models_dir: &g.models_dir,
        services_dir: &g.services_dir,
        settings: &g.settings,
        trusted_keys: &g.trusted_keys,
    }
}

impl From<GovernanceError> for AdminError {
    fn from(e: GovernanceError) -> Self {
        match e {
            GovernanceError::BadName(_) | GovernanceError::UnknownVersion { .. } => {
                Self::NotFound(e.to_string())
            }
            GovernanceError::Reason | GovernanceError::Actor => Self::Invalid(e.to_string()),
            GovernanceError::Store(ref inner) => {
                tracing::error!(error = %inner, "governance store call failed");
                Self::StoreUnavailable
            }
            _ => Self::Conflict(e.to_string()),
        }
    }
}

/// `GET /admin/models`: every model version on disk, its status (decided, or as its manifest
/// says), whether it is loaded, and its newest evaluation.
async fn list(state: web::Data<AdminState>, req: HttpRequest) -> HttpResponse {
    json_answer(
        async {
            admin_holder(&state, &req, AdminRole::Report)?;
            let g = governor(&state);
            let runtime = state.runtime.current();
            let mut models = Vec::new();
            for (name, found) in g.catalogue().await? {
                let mut versions = Vec::new();
                for v in found {
                    let version = &v.manifest.version;
                    let evaluation = state
                        .store
                        .latest_evaluation(&name, version)
                        .await
                        .map_err(GovernanceError::from)?;
                    versions.push(json!({
                        "version": version,
                        "status": v.status.as_str(),
                        "manifestStatus": v.declared.as_str(),
                        "loaded": runtime.models.get(&name, version).is_some(),
                        "latestEvaluation": evaluation.map(|e| json!({
                            "id": e.id, "at": e.at, "passed": e.passed,
                            "criteria": e.evaluation.get("criteria"),
                        })),
                    }));
                }
                models.push(json!({"model": name, "versions": versions}));
            }
            Ok(HttpResponse::Ok().json(json!({
                "requirePromotion": state.governance.settings.require_promotion,
                "models": models,
            })))
        }
        .await,
    )
}

/// `GET /admin/models/{model}/history`: every decision about the model as a `Provenance` and
/// an `AuditEvent`, oldest first (a `collection` Bundle).
async fn history(
    state: web::Data<AdminState>,
    req: HttpRequest,
    model: web::Path<String>,
) -> HttpResponse {
    fhir_answer(
        async {
            admin_holder(&state, &req, AdminRole::Report)?;
            let decisions = state
                .store
                .decisions(Some(&model))
                .await
                .map_err(GovernanceError::from)?;
            let resources = decisions
                .iter()
                .flat_map(|d| {
                    [
                        crate::audit::decision_provenance(d),
                        crate::audit::decision_audit_event(d),
                    ]
                })
                .collect();
            Ok(fhir(
                actix_web::http::StatusCode::OK,
                &crate::audit::bundle(resources, None, chrono::Utc::now()),
            ))
        }
        .await,
    )
}

/// Longest a decision waits for another replica's (which includes that replica's reload).
const GOVERNANCE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The body of a promotion or retirement.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    reason: String,
}

/// `POST /admin/models/{model}/{version}/evaluate | promote | retire`.
async fn act(
    state: web::Data<AdminState>,
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
    body: web::Bytes,
) -> HttpResponse {
    json_answer(decide(&state, &req, path.into_inner(), &body).await)
}

async fn decide(
    state: &AdminState,
    req: &HttpRequest,
    (model, version, action): (String, String, String),
    body: &[u8],
) -> Result<HttpResponse, AdminError> {
    let actor = admin_holder(state, req, AdminRole::Promote)?;
    let now = chrono::Utc::now();
    let g = governor(state);
    let _one_at_a_time = state.governance.serial.lock().await;
    // And one at a time across replicas sharing the store (each decision reads the statuses
    // the last one left).
    let _one_across_replicas = state
        .store
        .lock_decision(&["governance".to_owned()], GOVERNANCE_WAIT)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "governance decision lock not had");
            AdminError::StoreUnavailable
        })?;
    if action == "evaluate" {
        let evaluation = g.evaluate(&model, &version, now).await?;
        tracing::info!(model = %model, version = %version, admin = %actor, passed = evaluation.passed, "model evaluated");
        return Ok(HttpResponse::Ok().json(evaluation));
    }
    let reason = serde_json::from_slice::<DecisionBody>(body)
        .map_err(|_| AdminError::Invalid("the body must be {\"reason\": \"...\"}".into()))?
        .reason;
    let request = Request {
        actor,
        via: "admin-api",
        reason: &reason,
        now,
    };
    let decisions = match action.as_str() {
        "promote" => g.promote(&model, &version, &request).await?,
        "retire" => g.retire(&model, &version, &request).await?,
        _ => {
            return Err(AdminError::NotFound(
                "use /evaluate, /promote or /retire".into(),
            ))
        }
    };
    tracing::warn!(model = %model, version = %version, admin = %actor, action = %action, "model lifecycle decision recorded");
    if let Err(refused) = state.governance.reload.reload().await {
        let reverted = g.revert(&decisions, &refused, chrono::Utc::now()).await?;
        tracing::error!(model = %model, version = %version, error = %refused, "reload refused; decision reverted");
        return Err(AdminError::Conflict(format!(
            "the gateway refused the changed models ({refused}); the decision was reverted (decision {})",
            reverted.iter().map(|d| d.id.to_string()).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(HttpResponse::Ok().json(json!({"decisions": decisions, "reloaded": true})))
}
