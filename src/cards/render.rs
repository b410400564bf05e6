//! Building the risk card and the abstention card.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::template::{Template, Values};
use crate::cds::wire::{
    Card, Coding, Indicator, Link, LinkType, SelectionBehavior, Source, Suggestion,
};
use crate::features::explain::Explanation;
use crate::features::FeatureMatrix;
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
    /// What to do, said after the drivers ("See the patient now; …"); the summary's
    /// placeholders. `None`: the card points at the app only.
    pub action: Option<Template>,
    /// Last line of every card's detail: model, version, what it was trained on, who decides
    /// (model placeholders). Kept on the card because an EHR may not show `source`.
    pub footer: Template,
}

/// Footer for services that do not set `[card] footer`.
pub const DEFAULT_FOOTER: &str = "{model} v{version}: see its model card for the training data and limits. Decision support only; the clinician decides.";

/// Contributing observations a card lists (the app lists more). A sidebar of ~240–320 px
/// shows about three before the action scrolls out of sight.
pub const CARD_DRIVERS: usize = 3;

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
    /// Top contributing observations and the trend of each signal; the card shows the first
    /// [`CARD_DRIVERS`] (without their FHIR ids) and leaves the trends to the app.
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
    /// The service's bedside scores from the same data: they still stand when the model does
    /// not score, so the card shows them.
    pub baselines: &'a BaselineReport,
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

/// A time as a card shows it: "2026-01-01 11:50 UTC" (the EHR knows the clinician's zone,
/// bedside does not).
fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// The data window as every card states it: "**Data:** 48 h to 2026-01-01 12:00 UTC".
fn data_window(start: DateTime<Utc>, end: DateTime<Utc>) -> String {
    format!("**Data:** {} h to {}", (end - start).num_hours(), when(end))
}

/// `text` without references to Observations (`; Observation/8265da4b…`): a card is read by a
/// clinician in a narrow sidebar, and an id tells them nothing there. The reference stays in
/// the prediction record, the API and the SMART app.
fn without_references(text: &str) -> String {
    const MARK: &str = "Observation/";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(MARK) {
        let head = rest[..i].trim_end();
        let head = head
            .strip_suffix([';', ',', ':'])
            .unwrap_or(head)
            .trim_end();
        out.push_str(head);
        let tail = &rest[i + MARK.len()..];
        // FHIR ids: [A-Za-z0-9\-\.]{1,64}
        let id_len = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '.'))
            .unwrap_or(tail.len());
        rest = &tail[id_len..];
    }
    out.push_str(rest);
    out
}

/// First letter upper-case, for a list item that starts with a driver's words.
fn capitalised(words: &str) -> String {
    let mut chars = words.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
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
        detail: Some(risk_detail(a, text, &values, risk_pct)),
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

/// The detail, in the order a clinician in a sidebar reads it: the number and what it means,
/// why (at most [`CARD_DRIVERS`] observations), what to do, the bedside scores, then the data
/// window, model and training data. Trends and FHIR ids are in the app, not here.
fn risk_detail(
    a: &RiskAssessment<'_>,
    text: &CardText,
    values: &Values<'_>,
    risk_pct: u32,
) -> String {
    let m = a.manifest;
    let x = a.matrix;
    let mut d = String::new();
    let _ = writeln!(d, "**{risk_pct}%**: {}.\n", m.output.meaning);
    for note in &a.notes {
        d.push_str(&without_references(note));
        d.push_str("\n\n");
    }
    if a.explanation.drivers.is_empty() {
        d.push_str("No single observation moved the risk by more than 0.2 percentage points.\n\n");
    } else {
        d.push_str("**What raised the risk most:**\n\n");
        for driver in a.explanation.drivers.iter().take(CARD_DRIVERS) {
            let _ = writeln!(
                d,
                "- {}: +{:.1} percentage points",
                capitalised(&without_references(&driver.words)),
                driver.contribution * 100.0,
            );
        }
        d.push('\n');
    }
    d.push_str("**Next:** ");
    match &text.action {
        Some(action) => {
            d.push_str(action.render(values).trim_end());
            d.push_str(" Trends and all data used: the bedside app.\n\n");
        }
        None => d.push_str("trends and all data used are in the bedside app.\n\n"),
    }
    for line in &a.baselines.lines {
        d.push_str(line);
        d.push_str("\n\n");
    }
    let _ = write!(
        d,
        "{}, {} measurements",
        data_window(x.window_start, x.window_end),
        x.measurements.len()
    );
    if a.rejected > 0 {
        let _ = write!(d, " ({} not usable: unit, status or time)", a.rejected);
    }
    let _ = write!(d, ". _{}_", text.footer.render(&base_values(m)));
    d
}

/// An info card saying why no score was given (only when the service asks for one).
pub fn abstain_card(a: &Abstention<'_>, text: &CardText) -> Card {
    let m = a.manifest;
    let reason = without_references(&a.reason);
    let mut values = base_values(m);
    values.insert("reason", reason.clone());
    let mut detail = format!("No risk score was computed: {reason}.\n\n");
    if !a.baselines.lines.is_empty() {
        detail.push_str("The bedside scores from the same data still stand:\n\n");
        for line in &a.baselines.lines {
            detail.push_str(line);
            detail.push_str("\n\n");
        }
    }
    let _ = write!(
        detail,
        "{}. _{}_",
        data_window(a.window_start, a.window_end),
        text.footer.render(&base_values(m))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observation_references_are_left_out_of_card_text() {
        assert_eq!(
            without_references(
                "heart rate 260/min is outside the range the model was trained on (30–200); Observation/8265da4b-1.x"
            ),
            "heart rate 260/min is outside the range the model was trained on (30–200)"
        );
        assert_eq!(without_references("a Observation/x1, then b"), "a, then b");
        assert_eq!(without_references("no reference"), "no reference");
        assert_eq!(without_references("Observation/"), "");
        assert_eq!(capitalised("ärger"), "Ärger");
        assert_eq!(capitalised(""), "");
    }
}
