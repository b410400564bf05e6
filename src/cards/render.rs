//! Building the risk card and the abstention card.

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use uuid::Uuid;

use super::template::{Template, Values};
use crate::features::explain::Explanation;
use crate::features::FeatureMatrix;
use crate::hooks::wire::{
    Card, Coding, Indicator, Link, LinkType, SelectionBehavior, Source, Suggestion,
};
use crate::inference::Manifest;

/// Namespace for card uuids: v5(namespace, service|hookInstance|model|version) gives the same
/// uuid for the same prediction, so feedback maps back to it.
const CARD_NAMESPACE: Uuid = Uuid::from_u128(0x6a1c_93f2_5e0b_4d1e_9f3a_2b7c_8d4e_1f60);

/// Card wording from a service definition.
#[derive(Debug, Clone)]
pub struct CardText {
    pub summary: Template,
    pub abstain_summary: Template,
    pub source_label: Template,
    /// Words for `{band}` per indicator (e.g. warning → "High").
    pub band_words: [String; 3],
    /// How many suggestions the clinician may accept (set on cards with suggestions).
    pub selection_behavior: SelectionBehavior,
    pub override_reasons: Vec<Coding>,
}

/// Bedside scores computed beside the model: markdown lines for the card detail, values for
/// summary placeholders (`{news2}`, `{qsofa}`…).
#[derive(Debug, Clone, Default)]
pub struct BaselineReport {
    pub lines: Vec<String>,
    pub values: Vec<(&'static str, String)>,
}

/// Everything a risk card reports.
pub struct RiskAssessment<'a> {
    pub service_id: &'a str,
    pub hook_instance: &'a str,
    pub manifest: &'a Manifest,
    pub matrix: &'a FeatureMatrix,
    /// Calibrated probability from the model.
    pub risk: f32,
    pub indicator: Indicator,
    /// Bedside scores from the same data, shown beside the model.
    pub baselines: &'a BaselineReport,
    /// Top contributing observations and the trend of each signal.
    pub explanation: &'a Explanation,
    /// Observations of model inputs that could not be used (unit, status, time, shape).
    pub rejected: usize,
    /// Base URL for links (no trailing slash).
    pub public_base: &'a str,
    /// Actions offered (the clinician decides); `selectionBehavior` is set when present.
    pub suggestions: Vec<Suggestion>,
    /// More summary placeholders (e.g. `{drug}` for order checks).
    pub extra_values: Vec<(&'static str, String)>,
    /// Lines added to the detail (e.g. why the card was downgraded).
    pub notes: Vec<String>,
}

/// Why a service gave no score.
pub struct Abstention<'a> {
    pub service_id: &'a str,
    pub hook_instance: &'a str,
    pub manifest: &'a Manifest,
    pub reason: String,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub public_base: &'a str,
}

fn model_card_url(public_base: &str, m: &Manifest) -> String {
    format!("{public_base}/models/{}/{}/model-card", m.name, m.version)
}

/// The card's uuid, which is also the prediction's id: the same service, call, model and
/// version always give the same one, so feedback and the SMART app find the prediction.
pub fn card_uuid(service_id: &str, hook_instance: &str, m: &Manifest) -> String {
    let key = format!("{service_id}|{hook_instance}|{}|{}", m.name, m.version);
    Uuid::new_v5(&CARD_NAMESPACE, key.as_bytes()).to_string()
}

fn base_values(m: &Manifest) -> Values<'static> {
    Values::from([
        ("model", m.name.clone()),
        ("version", m.version.clone()),
        ("horizon_hours", m.output.horizon_hours.to_string()),
    ])
}

fn source(text: &CardText, public_base: &str, m: &Manifest) -> Source {
    Source {
        label: text.source_label.render(&base_values(m)),
        url: Some(model_card_url(public_base, m)),
        icon: None,
        topic: None,
    }
}

fn model_card_link(public_base: &str, m: &Manifest) -> Link {
    Link {
        label: format!(
            "Model card: {} v{} (how it works, limits)",
            m.name, m.version
        ),
        url: model_card_url(public_base, m),
        kind: LinkType::Absolute,
        app_context: None,
    }
}

/// The SMART app for the full picture; `appContext` names the prediction it opens on.
fn smart_link(public_base: &str, service_id: &str, prediction: &str) -> Link {
    Link {
        label: "Open the bedside app: trajectory, evidence, limits".into(),
        url: format!("{public_base}/smart/launch"),
        kind: LinkType::Smart,
        app_context: Some(
            serde_json::json!({"prediction": prediction, "service": service_id}).to_string(),
        ),
    }
}

fn hhmm(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The card for a scored patient.
pub fn risk_card(a: &RiskAssessment<'_>, text: &CardText) -> Card {
    let m = a.manifest;
    let risk_pct = (a.risk * 100.0).round().clamp(0.0, 100.0) as u32;
    let band = match a.indicator {
        Indicator::Info => &text.band_words[0],
        Indicator::Warning => &text.band_words[1],
        Indicator::Critical => &text.band_words[2],
    };
    let mut values = base_values(m);
    values.insert("risk_pct", risk_pct.to_string());
    values.insert("band", band.clone());
    for (name, value) in a.baselines.values.iter().chain(&a.extra_values) {
        values.insert(name, value.clone());
    }
    let uuid = card_uuid(a.service_id, a.hook_instance, m);
    let smart = smart_link(a.public_base, a.service_id, &uuid);
    Card {
        summary: text.summary.render(&values),
        detail: Some(risk_detail(a, risk_pct)),
        indicator: a.indicator,
        source: source(text, a.public_base, m),
        selection_behavior: (!a.suggestions.is_empty()).then_some(text.selection_behavior),
        suggestions: a.suggestions.clone(),
        override_reasons: text.override_reasons.clone(),
        links: vec![smart, model_card_link(a.public_base, m)],
        uuid: Some(uuid),
        extension: None,
    }
}

fn risk_detail(a: &RiskAssessment<'_>, risk_pct: u32) -> String {
    let m = a.manifest;
    let x = a.matrix;
    let mut d = String::new();
    let _ = writeln!(
        d,
        "**{risk_pct}%** {} (model **{} v{}**; {}).\n",
        m.output.meaning, m.name, m.version, m.output.calibration
    );
    for line in &a.baselines.lines {
        d.push_str(line);
        d.push_str("\n\n");
    }
    for note in &a.notes {
        d.push_str(note);
        d.push_str("\n\n");
    }
    if a.explanation.drivers.is_empty() {
        d.push_str("No single observation moved the score by more than 0.2 points.\n\n");
    } else {
        d.push_str(
            "**Top contributing observations** (risk recomputed with each one left out):\n\n",
        );
        for driver in &a.explanation.drivers {
            let _ = writeln!(
                d,
                "- {} (+{:.1} points; {})",
                driver.words,
                driver.contribution * 100.0,
                driver.reference
            );
        }
        d.push('\n');
    }
    if !a.explanation.trends.is_empty() {
        d.push_str("**Trend:** ");
        let trends: Vec<&str> = a
            .explanation
            .trends
            .iter()
            .map(|t| t.words.as_str())
            .collect();
        d.push_str(&trends.join("; "));
        d.push_str(".\n\n");
    }
    let _ = write!(
        d,
        "**Data window:** {} to {} ({} h), {} measurements",
        hhmm(x.window_start),
        hhmm(x.window_end),
        (x.window_end - x.window_start).num_hours(),
        x.measurements.len()
    );
    if a.rejected > 0 {
        let _ = write!(
            d,
            "; {} observations not usable (unit, status or time)",
            a.rejected
        );
    }
    d.push_str(".\n\n");
    let _ = write!(
        d,
        "_Decision support only: the clinician decides. {}. Not validated on real patients; see the model card for limits._",
        m.training_data
    );
    d
}

/// An info card saying why no score was given (only when the service asks for one).
pub fn abstain_card(a: &Abstention<'_>, text: &CardText) -> Card {
    let m = a.manifest;
    let mut values = base_values(m);
    values.insert("reason", a.reason.clone());
    let detail = format!(
        "No risk score was computed: {}.\n\n**Data window:** {} to {}. Model **{} v{}**.\n\n_{}._",
        a.reason,
        hhmm(a.window_start),
        hhmm(a.window_end),
        m.name,
        m.version,
        m.training_data
    );
    Card {
        uuid: Some(card_uuid(a.service_id, a.hook_instance, m)),
        summary: text.abstain_summary.render(&values),
        detail: Some(detail),
        indicator: Indicator::Info,
        source: source(text, a.public_base, m),
        suggestions: Vec::new(),
        selection_behavior: None,
        override_reasons: Vec::new(),
        links: vec![model_card_link(a.public_base, m)],
        extension: None,
    }
}
