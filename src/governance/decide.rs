//! Promotion and retirement: the only ways a version's status changes once its model is
//! governed. Each checks what would break before recording anything (the version exists and
//! verifies, a fresh passing evaluation, no service pinned to another version), then records
//! the decisions in one transaction. The command line and the admin API share this; the
//! admin API also reloads the gateway and reverts the record if the reload is refused.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};

use super::evaluate::{evaluate, Criterion, Evaluation};
use super::GovernanceSettings;
use crate::inference::signature::TrustedKey;
use crate::inference::{Lifecycle, Manifest, ModelStatus};
use crate::services::{model_refs, FOLLOWS_ACTIVE};
use crate::store::{NewDecision, Store, StoreError, StoredDecision, StoredEvaluation};

/// Longest reason recorded.
pub const MAX_REASON_CHARS: usize = 2000;

/// Why a lifecycle change was refused. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum GovernanceError {
    #[error("`{0}` is not a model name or version (letters, digits, `.`, `-`, `_`)")]
    BadName(String),
    #[error("no model {model} version {version} under the models folder")]
    UnknownVersion { model: String, version: String },
    #[error("{model} {version} is already {status}")]
    AlreadyThere {
        model: String,
        version: String,
        status: &'static str,
    },
    #[error("a reason is required (at most {MAX_REASON_CHARS} characters)")]
    Reason,
    #[error("who decides must be named")]
    Actor,
    #[error("no stored evaluation of {model} {version}: evaluate it first (`bedside evaluate` or POST /admin/models/{model}/{version}/evaluate)")]
    NoEvaluation { model: String, version: String },
    #[error("the newest evaluation of {model} {version} is from {at}, older than the {max_days} days allowed: evaluate it again")]
    StaleEvaluation {
        model: String,
        version: String,
        at: DateTime<Utc>,
        max_days: i64,
    },
    #[error("the newest evaluation of {model} {version} did not meet the criteria: {}", failed(.criteria))]
    EvaluationFailed {
        model: String,
        version: String,
        criteria: Vec<Criterion>,
    },
    #[error("service `{service}` names {model} version {version}: set its [model] version to \"active\" (or the version wanted) first")]
    Pinned {
        service: String,
        model: String,
        version: String,
    },
    #[error("{model} {version} is the active version that service `{service}` follows: promote another version first")]
    ActiveInUse {
        service: String,
        model: String,
        version: String,
    },
    #[error("{model} {version}: signature: {message}")]
    Signature {
        model: String,
        version: String,
        message: String,
    },
    #[error("service definitions: {0}")]
    Services(String),
    #[error("model folder: {0}")]
    Manifest(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

fn failed(criteria: &[Criterion]) -> String {
    criteria
        .iter()
        .filter(|c| !c.met)
        .map(|c| format!("{} ({}; required {})", c.name, c.measured, c.required))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Who asks for a change, through what, and why.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub actor: &'a str,
    /// `cli` or `admin-api`.
    pub via: &'a str,
    pub reason: &'a str,
    pub now: DateTime<Utc>,
}

/// Everything a lifecycle decision reads: the store, the model and service folders, the
/// criteria, and the keys a version must be signed with.
pub struct Governor<'a> {
    pub store: &'a Store,
    pub models_dir: &'a Path,
    pub services_dir: &'a Path,
    pub settings: &'a GovernanceSettings,
    pub trusted_keys: &'a [TrustedKey],
}

/// One version on disk with the status it is in now.
#[derive(Debug, Clone)]
pub struct VersionStatus {
    pub manifest: Manifest,
    /// What its manifest says.
    pub declared: ModelStatus,
    /// What it is: the newest decision, else the manifest (see [`Lifecycle`]).
    pub status: ModelStatus,
}

impl Governor<'_> {
    /// The lifecycle in force: the store's decisions and `require_promotion`.
    pub async fn lifecycle(&self) -> Result<Lifecycle, GovernanceError> {
        Lifecycle::from_decided(
            self.store.decided_statuses().await?,
            self.settings.require_promotion,
        )
        .map_err(|e| GovernanceError::Store(StoreError::Malformed(e)))
    }

    /// Every version of `model` under the models folder, with its status, in folder order.
    pub async fn versions(&self, model: &str) -> Result<Vec<VersionStatus>, GovernanceError> {
        let lifecycle = self.lifecycle().await?;
        self.versions_in(model, &lifecycle)
    }

    /// Every model under the models folder with its versions (folders without a version left
    /// out), on one read of the store's decisions.
    pub async fn catalogue(&self) -> Result<Vec<(String, Vec<VersionStatus>)>, GovernanceError> {
        let lifecycle = self.lifecycle().await?;
        let mut out = Vec::new();
        for name in self.model_names()? {
            let versions = self.versions_in(&name, &lifecycle)?;
            if !versions.is_empty() {
                out.push((name, versions));
            }
        }
        Ok(out)
    }

    /// [`Self::versions`] under `lifecycle`.
    fn versions_in(
        &self,
        model: &str,
        lifecycle: &Lifecycle,
    ) -> Result<Vec<VersionStatus>, GovernanceError> {
        check_name(model)?;
        let dir = self.models_dir.join(model);
        let mut folders: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| GovernanceError::Manifest(format!("{}: {e}", dir.display())))?
            .flatten()
            .map(|e| e.path().join("manifest.toml"))
            .filter(|p| p.is_file())
            .collect();
        folders.sort();
        folders
            .into_iter()
            .map(|path| {
                let manifest =
                    Manifest::load(&path).map_err(|e| GovernanceError::Manifest(e.to_string()))?;
                Ok(VersionStatus {
                    declared: manifest.status,
                    status: lifecycle.status_of(&manifest),
                    manifest,
                })
            })
            .filter(|v: &Result<VersionStatus, GovernanceError>| {
                v.as_ref().map_or(true, |v| v.manifest.name == model)
            })
            .collect()
    }

    /// Every model folder's name.
    fn model_names(&self) -> Result<Vec<String>, GovernanceError> {
        let mut names: Vec<String> = std::fs::read_dir(self.models_dir)
            .map_err(|e| GovernanceError::Manifest(format!("{}: {e}", self.models_dir.display())))?
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| check_name(n).is_ok())
            .collect();
        names.sort();
        Ok(names)
    }

    /// The version `version` of `model` with its status.
    async fn version(
        &self,
        model: &str,
        version: &str,
    ) -> Result<(VersionStatus, Vec<VersionStatus>), GovernanceError> {
        check_name(version)?;
        let all = self.versions(model).await?;
        let this = all
            .iter()
            .find(|v| v.manifest.version == version)
            .cloned()
            .ok_or_else(|| GovernanceError::UnknownVersion {
                model: model.to_owned(),
                version: version.to_owned(),
            })?;
        Ok((this, all))
    }

    /// Evaluates `model` `version` on the shadow records and stores the evaluation.
    pub async fn evaluate(
        &self,
        model: &str,
        version: &str,
        now: DateTime<Utc>,
    ) -> Result<StoredEvaluation, GovernanceError> {
        let (this, _) = self.version(model, version).await?;
        let evaluation: Evaluation = evaluate(
            self.store,
            model,
            version,
            f64::from(this.manifest.output.horizon_hours),
            self.settings,
            now,
        )
        .await?;
        let json =
            serde_json::to_value(&evaluation).map_err(|e| StoreError::Malformed(e.to_string()))?;
        let id = self
            .store
            .record_evaluation(model, version, now, evaluation.passed, &json)
            .await?;
        Ok(StoredEvaluation {
            id,
            model: model.to_owned(),
            version: version.to_owned(),
            at: now,
            passed: evaluation.passed,
            evaluation: json,
        })
    }

    /// Makes `version` the active version of `model`, on its newest evaluation; the version
    /// active before becomes shadow. Returns the decisions recorded.
    pub async fn promote(
        &self,
        model: &str,
        version: &str,
        request: &Request<'_>,
    ) -> Result<Vec<StoredDecision>, GovernanceError> {
        let (this, all, refs) = self
            .changing(model, version, request, ModelStatus::Active)
            .await?;
        for r in refs {
            if r.model == model && r.version != FOLLOWS_ACTIVE && r.version != version {
                return Err(GovernanceError::Pinned {
                    service: r.service,
                    model: r.model,
                    version: r.version,
                });
            }
        }
        self.verify_signature(&this)?;
        let evaluation = self
            .store
            .latest_evaluation(model, version)
            .await?
            .ok_or_else(|| GovernanceError::NoEvaluation {
                model: model.to_owned(),
                version: version.to_owned(),
            })?;
        let max_age =
            Duration::from_std(self.settings.max_evaluation_age).unwrap_or(Duration::days(7));
        if request.now.signed_duration_since(evaluation.at) > max_age {
            return Err(GovernanceError::StaleEvaluation {
                model: model.to_owned(),
                version: version.to_owned(),
                at: evaluation.at,
                max_days: max_age.num_days(),
            });
        }
        if !evaluation.passed {
            let criteria = serde_json::from_value::<Evaluation>(evaluation.evaluation.clone())
                .map(|e| e.criteria)
                .unwrap_or_default();
            return Err(GovernanceError::EvaluationFailed {
                model: model.to_owned(),
                version: version.to_owned(),
                criteria,
            });
        }
        let mut decisions = vec![self.decision(
            &this,
            ModelStatus::Active,
            request,
            request.reason.to_owned(),
            Some(evaluation.id),
        )];
        for other in all.iter().filter(|v| v.status == ModelStatus::Active) {
            decisions.push(self.decision(
                other,
                ModelStatus::Shadow,
                request,
                format!("superseded by {version}: {}", request.reason),
                None,
            ));
        }
        Ok(self.store_decisions(decisions).await?)
    }

    /// Retires `version` of `model`: it is no longer loaded.
    pub async fn retire(
        &self,
        model: &str,
        version: &str,
        request: &Request<'_>,
    ) -> Result<Vec<StoredDecision>, GovernanceError> {
        let (this, all, refs) = self
            .changing(model, version, request, ModelStatus::Retired)
            .await?;
        for r in refs {
            if r.model != model {
                continue;
            }
            if r.version == version {
                return Err(GovernanceError::Pinned {
                    service: r.service,
                    model: r.model,
                    version: r.version,
                });
            }
            if r.version == FOLLOWS_ACTIVE && this.status == ModelStatus::Active {
                return Err(GovernanceError::ActiveInUse {
                    service: r.service,
                    model: r.model,
                    version: version.to_owned(),
                });
            }
        }
        let mut decisions = vec![self.decision(
            &this,
            ModelStatus::Retired,
            request,
            request.reason.to_owned(),
            None,
        )];
        // The first decision about a model puts it under governance, where a manifest alone
        // no longer makes a version active: the version its manifest made active is recorded
        // as active too, or retiring an unused version would silently switch off its cards.
        if !self.lifecycle().await?.is_governed(model) {
            for kept in all
                .iter()
                .filter(|v| v.status == ModelStatus::Active && v.manifest.version != version)
            {
                decisions.push(self.decision(
                    kept,
                    ModelStatus::Active,
                    request,
                    format!(
                        "kept active: its manifest made it active before {model} came under governance (retiring {version})"
                    ),
                    None,
                ));
            }
        }
        Ok(self.store_decisions(decisions).await?)
    }

    /// What a change of `version` to `to` starts from: the request checked, the version (not
    /// already `to`), all versions of the model, and what every service names.
    async fn changing(
        &self,
        model: &str,
        version: &str,
        request: &Request<'_>,
        to: ModelStatus,
    ) -> Result<
        (
            VersionStatus,
            Vec<VersionStatus>,
            Vec<crate::services::ModelRef>,
        ),
        GovernanceError,
    > {
        check_request(request)?;
        let (this, all) = self.version(model, version).await?;
        if this.status == to {
            return Err(GovernanceError::AlreadyThere {
                model: model.to_owned(),
                version: version.to_owned(),
                status: to.as_str(),
            });
        }
        let refs =
            model_refs(self.services_dir).map_err(|e| GovernanceError::Services(e.to_string()))?;
        Ok((this, all, refs))
    }

    /// Records the opposite of `decisions` (each version back to its previous status):
    /// what the admin API does when the gateway refused to load the changed set.
    pub async fn revert(
        &self,
        decisions: &[StoredDecision],
        why: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<StoredDecision>, GovernanceError> {
        let undo = decisions
            .iter()
            .rev()
            .map(|d| NewDecision {
                model: d.model.clone(),
                version: d.version.clone(),
                status: d.previous.clone(),
                previous: d.status.clone(),
                at: now,
                actor: "bedside".into(),
                via: "bedside".into(),
                reason: format!("reverted decision {}: {why}", d.id),
                evaluation_id: None,
            })
            .collect();
        Ok(self.store_decisions(undo).await?)
    }

    fn verify_signature(&self, v: &VersionStatus) -> Result<(), GovernanceError> {
        if self.trusted_keys.is_empty() {
            return Ok(());
        }
        let dir = self
            .models_dir
            .join(&v.manifest.name)
            .join(&v.manifest.version);
        crate::inference::signature::verify(
            &dir.join("manifest.toml"),
            &dir.join(&v.manifest.features),
            self.trusted_keys,
        )
        .map_err(|e| GovernanceError::Signature {
            model: v.manifest.name.clone(),
            version: v.manifest.version.clone(),
            message: e.to_string(),
        })
    }

    fn decision(
        &self,
        v: &VersionStatus,
        status: ModelStatus,
        request: &Request<'_>,
        reason: String,
        evaluation_id: Option<i64>,
    ) -> NewDecision {
        NewDecision {
            model: v.manifest.name.clone(),
            version: v.manifest.version.clone(),
            status: status.as_str().into(),
            previous: v.status.as_str().into(),
            at: request.now,
            actor: request.actor.into(),
            via: request.via.into(),
            reason,
            evaluation_id,
        }
    }

    async fn store_decisions(
        &self,
        decisions: Vec<NewDecision>,
    ) -> Result<Vec<StoredDecision>, StoreError> {
        let ids = self.store.record_decisions(&decisions).await?;
        Ok(decisions
            .into_iter()
            .zip(ids)
            .map(|(d, id)| StoredDecision {
                id,
                model: d.model,
                version: d.version,
                status: d.status,
                previous: d.previous,
                at: d.at,
                actor: d.actor,
                via: d.via,
                reason: d.reason,
                evaluation_id: d.evaluation_id,
            })
            .collect())
    }
}

/// A model name or version is one path segment of safe characters.
fn check_name(name: &str) -> Result<(), GovernanceError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(GovernanceError::BadName(name.chars().take(64).collect()))
    }
}

fn check_request(request: &Request<'_>) -> Result<(), GovernanceError> {
    if request.actor.trim().is_empty() {
        return Err(GovernanceError::Actor);
    }
    let reason = request.reason.trim();
    if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
        return Err(GovernanceError::Reason);
    }
    Ok(())
}
