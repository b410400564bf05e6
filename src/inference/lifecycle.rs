//! Which status a model version is in: the newest governance decision about it
//! (`bedside promote` / `retire`, kept in the store), else what its manifest says — except
//! that a manifest cannot make itself `active` once its model is governed (a decision exists
//! for any of its versions, or `[governance] require_promotion` is on): such a version loads
//! as `shadow` until promoted.

use std::collections::BTreeMap;

use super::manifest::{Manifest, ModelStatus};

/// The decided statuses and the rule for versions without a decision.
#[derive(Debug, Clone, Default)]
pub struct Lifecycle {
    /// The newest decision per `(model, version)`.
    pub decided: BTreeMap<(String, String), ModelStatus>,
    /// Every model is governed: no version is active without a promotion.
    pub require_promotion: bool,
}

impl Lifecycle {
    /// The status the version `manifest` describes is in.
    pub fn status_of(&self, manifest: &Manifest) -> ModelStatus {
        let key = (manifest.name.clone(), manifest.version.clone());
        if let Some(status) = self.decided.get(&key) {
            return *status;
        }
        match manifest.status {
            ModelStatus::Active if self.is_governed(&manifest.name) => ModelStatus::Shadow,
            status => status,
        }
    }

    /// Whether `model` only becomes active through a promotion.
    pub fn is_governed(&self, model: &str) -> bool {
        self.require_promotion || self.decided.keys().any(|(name, _)| name == model)
    }

    /// Reads the store's decided statuses (`active`, `shadow`, `retired`).
    pub fn from_decided(
        decided: BTreeMap<(String, String), String>,
        require_promotion: bool,
    ) -> Result<Self, String> {
        let decided = decided
            .into_iter()
            .map(|(key, status)| {
                ModelStatus::parse(&status)
                    .map(|s| (key, s))
                    .ok_or_else(|| format!("stored model status `{status}` is not a status"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            decided,
            require_promotion,
        })
    }
}
