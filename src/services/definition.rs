//! `cds-services/*.toml`: one CDS service per file, validated against the loaded models.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::baselines::Baseline;
use super::policy::{AlertPolicy, DrugList, Mode, OrdersDef, SuggestionAction, SuggestionDef};
use crate::cards::{
    CardText, Template, ABSTAIN_PLACEHOLDERS, MODEL_PLACEHOLDERS, RISK_PLACEHOLDERS,
};
use crate::cds::prefetch::PrefetchTemplate;
use crate::cds::wire::{Coding, SelectionBehavior, ServiceDescriptor};
use crate::inference::ModelRegistry;

/// A service definition as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    id: String,
    hook: String,
    title: Option<String>,
    description: String,
    usage_requirements: Option<String>,
    /// Time budget for one hook call, answer included (default 500 ms, what the spec asks
    /// for; EHRs give up after a few seconds). Services that may query `fhirServer` set more.
    #[serde(default = "default_deadline", with = "humantime_serde")]
    deadline: Duration,
    model: RawModelRef,
    prefetch: BTreeMap<String, RawPrefetch>,
    guardrails: RawGuardrails,
    thresholds: RawThresholds,
    card: RawCard,
    /// Bedside scores shown beside the model (news2, qsofa, sirs, kdigo).
    #[serde(default)]
    baselines: Vec<Baseline>,
    #[serde(default)]
    news2: News2Options,
    #[serde(default)]
    mode: Mode,
    /// `false`: the service answers with no cards (kill switch; also at run time through
    /// `POST /admin/services/{id}/disable`).
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    alerts: AlertPolicy,
    #[serde(default)]
    suggestions: Vec<SuggestionDef>,
    #[serde(default)]
    orders: Option<OrdersDef>,
    #[serde(default)]
    learning: Learning,
}

/// `[learning]`: what a service keeps for retraining beyond its prediction record. Off by
/// default: a site turns it on per service, with its own retention (`[retention] inputs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Learning {
    /// Keep each prediction's model input (the feature matrix on its time grid, with the
    /// observed masks) and the patient's generalised quasi-identifiers (age band, sex, ZIP3),
    /// for `bedside export`.
    #[serde(default)]
    pub store_inputs: bool,
}

fn yes() -> bool {
    true
}

/// When NEWS2 uses SpO2 scale 2: the RCP reserves it for hypercapnic respiratory failure with
/// a prescribed 88–92% target; a recorded active diagnosis is the data bedside can see.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct News2Options {
    /// Prefetch key holding the patient's Conditions.
    #[serde(default)]
    pub conditions_prefetch: Option<String>,
    /// Condition codes (ICD-10-CM, SNOMED CT) that put the patient on scale 2.
    #[serde(default)]
    pub scale2_conditions: Vec<String>,
}

fn default_deadline() -> Duration {
    Duration::from_millis(500)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModelRef {
    name: String,
    /// A version, or [`FOLLOWS_ACTIVE`]: whichever version is active (promotions move it).
    version: String,
    /// Prefetch keys whose Observations feed the model's features.
    inputs: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrefetch {
    query: String,
    /// Without it the service cannot answer: missing → 412.
    #[serde(default)]
    required: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGuardrails {
    min_observations: usize,
    #[serde(with = "humantime_serde")]
    max_staleness: Duration,
    #[serde(default)]
    abstain_card: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThresholds {
    info: Option<f32>,
    warning: f32,
    critical: f32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCard {
    summary: String,
    abstain_summary: String,
    source_label: String,
    band_words: RawBandWords,
    override_reason_system: String,
    override_reasons: Vec<RawReason>,
    /// For cards with suggestions: `at-most-one` (alternatives) or `any`.
    #[serde(default = "at_most_one")]
    selection_behavior: SelectionBehavior,
    /// What to do, said after the drivers (the summary's placeholders).
    #[serde(default)]
    action: Option<String>,
    /// Last line of the detail (model placeholders); default `cards::DEFAULT_FOOTER`.
    #[serde(default)]
    footer: Option<String>,
}

fn at_most_one() -> SelectionBehavior {
    SelectionBehavior::AtMostOne
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBandWords {
    info: String,
    warning: String,
    critical: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReason {
    code: String,
    display: String,
}

/// One prefetch template of a service.
#[derive(Debug, Clone)]
pub struct PrefetchSpec {
    pub key: String,
    pub template: PrefetchTemplate,
    pub required: bool,
}

/// When a service declines to score.
#[derive(Debug, Clone)]
pub struct Guardrails {
    /// Fewest in-window measurements (all features together) needed to score.
    pub min_observations: usize,
    /// Newest measurement must be at most this old.
    pub max_staleness: Duration,
    /// Show an info card saying why, instead of nothing.
    pub abstain_card: bool,
}

/// Risk cut-offs, `info ≤ warning ≤ critical`, as calibrated probabilities.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub info: Option<f32>,
    pub warning: f32,
    pub critical: f32,
}

/// A validated service definition.
#[derive(Debug, Clone)]
pub struct ServiceDef {
    pub id: String,
    pub hook: String,
    pub title: Option<String>,
    pub description: String,
    pub usage_requirements: Option<String>,
    pub deadline: Duration,
    pub model_name: String,
    pub model_version: String,
    pub inputs: Vec<String>,
    pub prefetch: Vec<PrefetchSpec>,
    pub guardrails: Guardrails,
    pub thresholds: Thresholds,
    pub card: CardText,
    /// Bedside scores computed from the same data and shown beside the model.
    pub baselines: Vec<Baseline>,
    pub news2: News2Options,
    pub mode: Mode,
    pub enabled: bool,
    pub alerts: AlertPolicy,
    pub suggestions: Vec<SuggestionDef>,
    /// For order hooks: which draft orders the service is about.
    pub orders: Option<(OrdersDef, DrugList)>,
    /// What it keeps for learning.
    pub learning: Learning,
}

/// Problems in the service definitions, each with its file and key.
#[derive(Debug, Default)]
pub struct DefinitionErrors(pub Vec<(String, String)>);

impl std::fmt::Display for DefinitionErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid CDS service definitions:")?;
        for (place, problem) in &self.0 {
            write!(f, "\n  {place}: {problem}")?;
        }
        Ok(())
    }
}
impl std::error::Error for DefinitionErrors {}

/// The `[model] version` that follows promotions: the model's active version.
pub const FOLLOWS_ACTIVE: &str = "active";

/// Which model (and version, or [`FOLLOWS_ACTIVE`]) a service definition names, read without
/// loading any model: what governance checks before changing a version's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRef {
    pub service: String,
    pub model: String,
    pub version: String,
}

/// The [`ModelRef`] of every definition in `dir`.
pub fn model_refs(dir: &Path) -> Result<Vec<ModelRef>, DefinitionErrors> {
    let mut refs = Vec::new();
    let mut errors = DefinitionErrors::default();
    for path in definition_paths(dir, &mut errors) {
        match std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| toml::from_str::<RawService>(&t).map_err(|e| e.to_string()))
        {
            Ok(raw) => refs.push(ModelRef {
                service: raw.id,
                model: raw.model.name,
                version: raw.model.version,
            }),
            Err(e) => errors.0.push((path.display().to_string(), e)),
        }
    }
    if errors.0.is_empty() {
        Ok(refs)
    } else {
        Err(errors)
    }
}

/// The `*.toml` files of `dir`, sorted.
fn definition_paths(dir: &Path, errors: &mut DefinitionErrors) -> Vec<std::path::PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            let mut paths: Vec<_> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            paths.sort();
            paths
        }
        Err(e) => {
            errors.0.push((dir.display().to_string(), e.to_string()));
            Vec::new()
        }
    }
}

/// Loads every `*.toml` in `dir`, reporting all problems at once.
pub fn load_all(dir: &Path, models: &ModelRegistry) -> Result<Vec<ServiceDef>, DefinitionErrors> {
    let mut errors = DefinitionErrors::default();
    let paths = definition_paths(dir, &mut errors);
    if !errors.0.is_empty() {
        return Err(errors);
    }
    let mut defs: Vec<ServiceDef> = Vec::new();
    for path in paths {
        let file = path.display().to_string();
        let raw = match std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| toml::from_str::<RawService>(&t).map_err(|e| e.to_string()))
        {
            Ok(raw) => raw,
            Err(e) => {
                errors.0.push((file, e));
                continue;
            }
        };
        match validate(raw, models, dir) {
            Ok(def) if defs.iter().any(|d| d.id == def.id) => {
                errors.0.push((
                    format!("{file}: id"),
                    format!("`{}` is used by another service", def.id),
                ));
            }
            Ok(def) => defs.push(def),
            Err(problems) => errors.0.extend(
                problems
                    .into_iter()
                    .map(|(k, p)| (format!("{file}: {k}"), p)),
            ),
        }
    }
    if errors.0.is_empty() {
        Ok(defs)
    } else {
        Err(errors)
    }
}

fn validate(
    mut raw: RawService,
    models: &ModelRegistry,
    dir: &Path,
) -> Result<ServiceDef, Vec<(String, String)>> {
    let mut problems = Vec::new();
    let mut problem = |key: &str, text: String| problems.push((key.to_owned(), text));
    if raw.id.is_empty()
        || !raw
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        problem(
            "id",
            format!("`{}` must be non-empty letters, digits, - or _", raw.id),
        );
    }
    if raw.hook.trim().is_empty() {
        problem("hook", "must not be empty".into());
    }
    if raw.model.version == FOLLOWS_ACTIVE {
        // The active version (else the newest shadow one: the service then scores silently).
        if let Some(m) = models.default_version(&raw.model.name) {
            raw.model.version = m.manifest.version.clone();
        }
    }
    let model = models.get(&raw.model.name, &raw.model.version);
    if model.is_none() {
        problem(
            "model",
            format!(
                "unknown model `{}` version `{}`",
                raw.model.name, raw.model.version
            ),
        );
    }
    let mut prefetch = Vec::new();
    for (key, p) in &raw.prefetch {
        match PrefetchTemplate::parse(&p.query) {
            Ok(template) => prefetch.push(PrefetchSpec {
                key: key.clone(),
                template,
                required: p.required,
            }),
            Err(e) => problem(&format!("prefetch.{key}.query"), e.to_string()),
        }
    }
    if let Some(key) = &raw.alerts.unit_from {
        if !raw.prefetch.contains_key(key) {
            problem("alerts.unit_from", format!("`{key}` is not a prefetch key"));
        }
    }
    if raw.alerts.budget.as_ref().is_some_and(|b| {
        b.shift.as_secs() < 3600 || b.shift.as_secs() % 3600 != 0 || b.shift_start_hour_utc > 23
    }) {
        problem(
            "alerts.budget",
            "shift must be whole hours and shift_start_hour_utc 0–23".into(),
        );
    }
    let orders = match &raw.orders {
        None => None,
        Some(_) if !matches!(raw.hook.as_str(), "order-select" | "order-sign") => {
            problem(
                "orders",
                "only order-select and order-sign services check draft orders".into(),
            );
            None
        }
        Some(o) => match DrugList::load(&dir.join(&o.drugs)) {
            Ok(list) => Some((o.clone(), list)),
            Err(e) => {
                problem("orders.drugs", e);
                None
            }
        },
    };
    for (i, sug) in raw.suggestions.iter().enumerate() {
        match sug.action {
            SuggestionAction::Create
                if sug
                    .resource
                    .as_ref()
                    .and_then(|r| r.get("resourceType"))
                    .is_none() =>
            {
                problem(
                    &format!("suggestions[{i}].resource"),
                    "a create suggestion needs a FHIR resource with resourceType".into(),
                );
            }
            SuggestionAction::DeleteDraftOrder if raw.orders.is_none() => problem(
                &format!("suggestions[{i}].action"),
                "delete-draft-order needs [orders] (an order hook service)".into(),
            ),
            _ => {}
        }
    }
    if let Some(key) = &raw.news2.conditions_prefetch {
        if !raw.prefetch.contains_key(key) {
            problem(
                "news2.conditions_prefetch",
                format!("`{key}` is not a prefetch key"),
            );
        }
    }
    for input in &raw.model.inputs {
        if !raw.prefetch.contains_key(input) {
            problem("model.inputs", format!("`{input}` is not a prefetch key"));
        }
    }
    let t = &raw.thresholds;
    let ordered = t.info.unwrap_or(0.0) <= t.warning && t.warning <= t.critical;
    let in_range = [t.info.unwrap_or(0.5), t.warning, t.critical]
        .iter()
        .all(|v| (0.0..=1.0).contains(v));
    if !(ordered && in_range) {
        problem(
            "thresholds",
            "need 0 ≤ info ≤ warning ≤ critical ≤ 1".into(),
        );
    }
    if raw.guardrails.min_observations == 0 {
        problem("guardrails.min_observations", "must be at least 1".into());
    }
    let mut template = |key: &str, text: &str, allowed| match Template::parse(text, allowed) {
        Ok(t) => Some(t),
        Err(e) => {
            problem(key, e.to_string());
            None
        }
    };
    // Summary placeholders: the model's, plus those of the baselines this service computes.
    let risk_placeholders: Vec<&'static str> = RISK_PLACEHOLDERS
        .iter()
        .copied()
        .chain(
            raw.baselines
                .iter()
                .flat_map(|b| b.placeholders().iter().map(|(name, _)| *name)),
        )
        .chain(raw.orders.is_some().then_some("drug"))
        .collect();
    let summary = template("card.summary", &raw.card.summary, &risk_placeholders);
    let abstain_summary = template(
        "card.abstain_summary",
        &raw.card.abstain_summary,
        ABSTAIN_PLACEHOLDERS,
    );
    let source_label = template(
        "card.source_label",
        &raw.card.source_label,
        MODEL_PLACEHOLDERS,
    );
    let action = raw
        .card
        .action
        .as_deref()
        .map(|a| template("card.action", a, &risk_placeholders));
    let footer = template(
        "card.footer",
        raw.card
            .footer
            .as_deref()
            .unwrap_or(crate::cards::DEFAULT_FOOTER),
        MODEL_PLACEHOLDERS,
    );
    let mut override_reasons = Vec::new();
    for (i, r) in raw.card.override_reasons.iter().enumerate() {
        if r.code.trim().is_empty() || r.display.trim().is_empty() {
            problem(
                &format!("card.override_reasons[{i}]"),
                "needs code and display".into(),
            );
        }
        override_reasons.push(Coding {
            code: r.code.clone(),
            system: raw.card.override_reason_system.clone(),
            display: Some(r.display.clone()),
        });
    }
    let (Some(summary), Some(abstain_summary), Some(source_label), Some(footer), Some(model)) =
        (summary, abstain_summary, source_label, footer, model)
    else {
        return Err(problems);
    };
    let Some(action) = action.map_or(Some(None), |a| a.map(Some)) else {
        return Err(problems);
    };
    let card = CardText {
        summary,
        abstain_summary,
        source_label,
        band_words: [
            raw.card.band_words.info,
            raw.card.band_words.warning,
            raw.card.band_words.critical,
        ],
        selection_behavior: raw.card.selection_behavior,
        override_reasons,
        action,
        footer,
    };
    // The longest summary this service can produce must fit the spec's <140 characters.
    let longest_band = card
        .band_words
        .iter()
        .map(|w| w.chars().count())
        .max()
        .unwrap_or(0);
    let mut worst = crate::cards::Values::from([
        ("risk_pct", "100".to_owned()),
        ("band", "x".repeat(longest_band)),
        (
            "horizon_hours",
            model.manifest.output.horizon_hours.to_string(),
        ),
        ("model", model.manifest.name.clone()),
        ("version", model.manifest.version.clone()),
    ]);
    for (name, widest) in raw.baselines.iter().flat_map(|b| b.placeholders()) {
        worst.insert(name, (*widest).to_owned());
    }
    if let Some((_, list)) = &orders {
        let longest = list.drugs.iter().map(|d| d.name.chars().count()).max();
        worst.insert("drug", "x".repeat(longest.unwrap_or(0)));
    }
    let longest = card.summary.render(&worst).chars().count();
    if longest >= 140 {
        problems.push((
            "card.summary".into(),
            format!("can render to {longest} characters; the spec allows fewer than 140"),
        ));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(ServiceDef {
        id: raw.id,
        hook: raw.hook,
        title: raw.title,
        description: raw.description,
        usage_requirements: raw.usage_requirements,
        deadline: raw.deadline,
        model_name: raw.model.name,
        model_version: raw.model.version,
        inputs: raw.model.inputs,
        prefetch,
        guardrails: Guardrails {
            min_observations: raw.guardrails.min_observations,
            max_staleness: raw.guardrails.max_staleness,
            abstain_card: raw.guardrails.abstain_card,
        },
        thresholds: Thresholds {
            info: raw.thresholds.info,
            warning: raw.thresholds.warning,
            critical: raw.thresholds.critical,
        },
        card,
        baselines: raw.baselines,
        news2: raw.news2,
        mode: raw.mode,
        enabled: raw.enabled,
        alerts: raw.alerts,
        learning: raw.learning,
        suggestions: raw.suggestions,
        orders,
    })
}

impl ServiceDef {
    /// This service's discovery entry.
    pub fn descriptor(&self) -> ServiceDescriptor {
        ServiceDescriptor {
            hook: self.hook.clone(),
            title: self.title.clone(),
            description: self.description.clone(),
            id: self.id.clone(),
            prefetch: (!self.prefetch.is_empty()).then(|| {
                self.prefetch
                    .iter()
                    .map(|p| (p.key.clone(), p.template.as_str().to_owned()))
                    .collect()
            }),
            usage_requirements: self.usage_requirements.clone(),
            extension: None,
        }
    }
}
