//! The parts of a service definition that decide whether a scored card reaches a clinician,
//! and what it offers them: alert guardrails, suggestions, order checks. All data, read from
//! `cds-services/*.toml`, so an informaticist tunes them without Rust.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::cds::wire::Indicator;

/// `mode = "shadow"`: the service scores and records, and shows nothing (silent evaluation).
/// The same two words as a prediction record's mode.
pub use crate::store::Mode;

/// `[alerts]`: how often a clinician may be interrupted by this service.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertPolicy {
    /// After a card, the same patient gets no card from this service for this long, unless
    /// the indicator escalates (warning → critical).
    #[serde(default, with = "humantime_serde")]
    pub suppress_for: Option<Duration>,
    /// An override with this reason code (the clinician already knows) suppresses for
    /// [`AlertPolicy::already_aware_for`] instead, escalation included.
    #[serde(default = "default_already_aware")]
    pub already_aware_reason: String,
    #[serde(default, with = "humantime_serde")]
    pub already_aware_for: Option<Duration>,
    /// Cap on warning/critical cards per unit per shift.
    #[serde(default)]
    pub budget: Option<AlertBudget>,
    /// Services in the same group that fire on the same evidence (same call, same inputs)
    /// produce one card: the first shown; the others are recorded as deduplicated.
    #[serde(default)]
    pub dedup_group: Option<String>,
    /// Prefetch key of the Encounter whose `location` names the unit the budget counts
    /// against; without it the tenant, else `unassigned`.
    #[serde(default)]
    pub unit_from: Option<String>,
}

fn default_already_aware() -> String {
    "already-aware".into()
}

/// Beyond `per_shift` warning/critical cards in a unit's shift, cards are downgraded to info.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertBudget {
    pub per_shift: u32,
    #[serde(default = "default_shift", with = "humantime_serde")]
    pub shift: Duration,
    /// Hour (UTC) a shift starts; shifts follow every `shift` from there.
    #[serde(default = "default_shift_start")]
    pub shift_start_hour_utc: u32,
}

fn default_shift() -> Duration {
    Duration::from_secs(12 * 3600)
}
fn default_shift_start() -> u32 {
    7
}

/// What a suggestion does when the clinician accepts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SuggestionAction {
    /// Create `resource` (placeholders filled).
    Create,
    /// Delete the draft order the card is about (order-select / order-sign).
    DeleteDraftOrder,
}

/// `[[suggestions]]`: an action offered on the card; the clinician decides.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuggestionDef {
    /// Placeholders: `{drug}` (the matched draft order's drug).
    pub label: String,
    pub action: SuggestionAction,
    /// Only on cards at or above this indicator.
    #[serde(default = "default_min_indicator")]
    pub min_indicator: Indicator,
    /// Not offered when an Observation with one of these LOINC codes was resulted in the
    /// model's data window (in any prefetched data): no second lactate if one is back.
    #[serde(default)]
    pub unless_resulted: Vec<String>,
    /// For `create`: the FHIR resource, with `{patientId}`, `{encounterId}`, `{userId}`
    /// filled in from the hook context.
    #[serde(default)]
    pub resource: Option<toml::Value>,
    #[serde(default)]
    pub recommended: bool,
}

fn default_min_indicator() -> Indicator {
    Indicator::Warning
}

/// `[orders]`: order-select / order-sign services fire only on draft orders of listed drugs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrdersDef {
    /// TOML drug list relative to the services folder (`[[drug]] name, class, rxnorm, atc`).
    pub drugs: String,
    /// Show the card also below the warning threshold when KDIGO creatinine stage ≥ 1
    /// (creatinine is already rising).
    #[serde(default)]
    pub fire_on_rising_creatinine: bool,
    /// The card's words when creatinine is already rising; `{stage}` and `{criteria}` are
    /// filled in (KDIGO stage and the criteria met).
    #[serde(default = "default_rising_creatinine_note")]
    pub rising_creatinine_note: String,
}

fn default_rising_creatinine_note() -> String {
    "**Creatinine is rising:** KDIGO stage {stage} ({criteria}).".to_owned()
}

/// One drug of a list such as nephrotoxins.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drug {
    pub name: String,
    pub class: String,
    #[serde(default)]
    pub rxnorm: Vec<String>,
    #[serde(default)]
    pub atc: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DrugFile {
    drug: Vec<Drug>,
}

/// A drug list, matched on RxNorm or ATC codes of a `medicationCodeableConcept`.
#[derive(Debug, Clone, Default)]
pub struct DrugList {
    pub drugs: Vec<Drug>,
    by_code: BTreeMap<(String, String), usize>,
}

/// Code systems a drug list matches on.
pub const RXNORM: &str = "http://www.nlm.nih.gov/research/umls/rxnorm";
/// WHO ATC.
pub const ATC: &str = "http://www.whocc.no/atc";

impl DrugList {
    /// Reads `path`.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        let file: DrugFile =
            toml::from_str(&text).map_err(|e| format!("`{}`: {e}", path.display()))?;
        let mut by_code = BTreeMap::new();
        for (i, d) in file.drug.iter().enumerate() {
            if d.rxnorm.is_empty() && d.atc.is_empty() {
                return Err(format!("drug `{}` has no RxNorm or ATC code", d.name));
            }
            for c in &d.rxnorm {
                by_code.insert((RXNORM.to_owned(), c.clone()), i);
            }
            for c in &d.atc {
                by_code.insert((ATC.to_owned(), c.clone()), i);
            }
        }
        Ok(Self {
            drugs: file.drug,
            by_code,
        })
    }

    /// The listed drug with code `system|code`.
    pub fn find(&self, system: &str, code: &str) -> Option<&Drug> {
        self.by_code
            .get(&(system.to_owned(), code.to_owned()))
            .map(|&i| &self.drugs[i])
    }
}
