//! `[governance]`: what a model version must show on this site's own records before it may
//! be promoted, and whether every model needs a promotion to be active.

use std::time::Duration;

use serde::Deserialize;

/// The promotion criteria and the rule for ungoverned models.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GovernanceSettings {
    /// No version is active without a promotion, even one whose manifest says `active`
    /// (off: a manifest's `active` counts until its model's first decision).
    pub require_promotion: bool,
    /// Shadow scores an evaluation needs at least.
    pub min_shadow_scores: u64,
    /// How far back an evaluation reads the shadow records.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// How old an evaluation may be when a promotion rests on it.
    #[serde(with = "humantime_serde")]
    pub max_evaluation_age: Duration,
    /// Least share of calls where the version alerts exactly when the active one did
    /// (0: reported, not required: a better model may disagree).
    pub min_agreement: f64,
    /// Outcome events (among labelled predictions) from which outcome metrics become a
    /// criterion; below it they are reported only.
    pub min_outcome_events: u64,
    /// How much lower than the active version's AUROC on the same calls the candidate's may be.
    pub max_auroc_drop: f64,
    /// Who to contact at this site about the models (named in every model card).
    pub contact: Option<String>,
}

impl Default for GovernanceSettings {
    fn default() -> Self {
        Self {
            require_promotion: false,
            min_shadow_scores: 200,
            window: Duration::from_secs(30 * 86_400),
            max_evaluation_age: Duration::from_secs(7 * 86_400),
            min_agreement: 0.0,
            min_outcome_events: 20,
            max_auroc_drop: 0.02,
            contact: None,
        }
    }
}

impl GovernanceSettings {
    /// The problems of these settings, `(key, problem)`.
    pub fn problems(&self) -> Vec<(&'static str, &'static str)> {
        let mut out = Vec::new();
        if self.min_shadow_scores == 0 {
            out.push(("governance.min_shadow_scores", "at least 1"));
        }
        if !(0.0..=1.0).contains(&self.min_agreement) {
            out.push(("governance.min_agreement", "between 0 and 1"));
        }
        if !(0.0..=1.0).contains(&self.max_auroc_drop) {
            out.push(("governance.max_auroc_drop", "between 0 and 1"));
        }
        if self.window < Duration::from_secs(3600) {
            out.push(("governance.window", "at least 1 hour"));
        }
        if self.max_evaluation_age < Duration::from_secs(60) {
            out.push(("governance.max_evaluation_age", "at least 1 minute"));
        }
        out
    }
}
