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
    /// Monitoring over time (`[governance.monitoring]`).
    pub monitoring: MonitoringSettings,
}

/// What weekly monitoring reads and when it raises an alert.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitoringSettings {
    /// Weeks shown (the newest first in the data, oldest first in charts).
    pub weeks: u32,
    /// Population stability index of an input against training above which a week alerts
    /// (0.1: small shift, 0.25: large).
    pub psi_alert: f64,
    /// Abstention rate above which a week alerts.
    pub abstention_alert: f64,
    /// Observed / expected outcomes outside `[low, high]` alerts, once `min_events` are known.
    pub oe_low: f64,
    pub oe_high: f64,
    pub min_events: u64,
    /// How often the gateway recomputes the alerts it shows in `/metrics`.
    #[serde(with = "humantime_serde")]
    pub every: Duration,
}

impl Default for MonitoringSettings {
    fn default() -> Self {
        Self {
            weeks: 12,
            psi_alert: 0.25,
            abstention_alert: 0.20,
            oe_low: 0.67,
            oe_high: 1.5,
            min_events: 10,
            every: Duration::from_secs(3600),
        }
    }
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
            monitoring: MonitoringSettings::default(),
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
        let m = &self.monitoring;
        if !(1..=104).contains(&m.weeks) {
            out.push(("governance.monitoring.weeks", "1 to 104"));
        }
        if !(m.oe_low > 0.0 && m.oe_low < m.oe_high) {
            out.push(("governance.monitoring.oe_low", "above 0 and below oe_high"));
        }
        if m.every < Duration::from_secs(60) {
            out.push(("governance.monitoring.every", "at least 1 minute"));
        }
        if self.max_evaluation_age < Duration::from_secs(60) {
            out.push(("governance.max_evaluation_age", "at least 1 minute"));
        }
        out
    }
}
