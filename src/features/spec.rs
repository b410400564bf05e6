//! `features.toml`: which observations feed which channel, in which unit, over which window.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::terminology::{terminology, FromScore};
use super::units;

/// A feature spec could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FeatureSpecError {
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("`{path}`: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    window_hours: u32,
    step_minutes: u32,
    /// The complete set a score needs (see [`RequireRecent`]); absent: no such gate.
    #[serde(default)]
    require_recent: Option<RawRecent>,
    feature: Vec<RawFeature>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecent {
    hours: f64,
    features: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFeature {
    name: String,
    /// Words for cards ("Respiratory rate"); defaults to the name.
    #[serde(default)]
    display: Option<String>,
    /// A concept of `models/terminology.toml`: its codes, answers and plausibility limits.
    #[serde(default)]
    concept: Option<String>,
    /// LOINC codes matched besides the concept's (older specs list only these).
    #[serde(default)]
    loinc: Vec<String>,
    unit: String,
    /// For coded observations: SNOMED/LOINC answer code → value. Codes not listed are
    /// rejected, never guessed.
    #[serde(default)]
    coded_values: BTreeMap<String, f64>,
    /// g/mol; lets mass and substance concentrations (mg/dL ↔ µmol/L) convert.
    #[serde(default)]
    molar_mass: Option<f64>,
    #[serde(default)]
    aggregate: Aggregate,
    /// A value is carried into later empty steps for at most this long; older steps count
    /// as missing (mean, mask 0). Absent: carried to the end of the window.
    #[serde(default)]
    max_age_hours: Option<f64>,
    #[serde(default)]
    transform: Transform,
    /// Decimals cards and the app show values with; absent: the unit's usual rounding
    /// ([`units::default_decimals`]).
    #[serde(default)]
    decimals: Option<u8>,
    /// For coded (categorical or binary) signals: value → the words cards say for it
    /// ("1" → "new confusion or reduced consciousness (ACVPU: not alert)"), so a change reads
    /// as a finding rather than "rose 0 → 1". Keys are the values of `coded_values`.
    #[serde(default)]
    value_words: BTreeMap<String, String>,
}

/// Applied to a step's value before normalisation (the manifest's mean/std are of the
/// transformed values). Measurements, explanations and bedside scores keep raw units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transform {
    #[default]
    None,
    /// Natural log: ratios become differences (creatinine against its baseline, as KDIGO
    /// reads it). Values ≤ 0 are treated as missing.
    Log,
}

impl Transform {
    /// The model-space value of `v`, or `None` when it has none (log of a non-positive value).
    pub fn apply(self, v: f64) -> Option<f64> {
        match self {
            Self::None => Some(v),
            Self::Log => (v > 0.0).then(|| v.ln()),
        }
    }
}

/// How several measurements in one step become the step's value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Aggregate {
    /// The most recent one (vital signs: the state at the end of the step).
    #[default]
    Last,
    Mean,
    /// The lowest (e.g. SpO2, systolic BP: the worst reading).
    Min,
    /// The highest (e.g. respiratory rate, lactate: the worst reading).
    Max,
}

/// One input channel.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureDef {
    pub name: String,
    /// How cards name this signal.
    pub display: String,
    /// The terminology concept this feature reads, if it names one.
    pub concept: Option<String>,
    /// LOINC codes matched on `Observation.code` or `Observation.component.code`: the spec's
    /// own, then its concept's.
    pub loinc: Vec<String>,
    /// Physiological limits `[low, high]` in [`FeatureDef::unit`] (from the concept): a value
    /// outside them is an artefact, dropped with the reason.
    pub plausible: Option<[f64; 2]>,
    /// Coded answers (code, or lower-case text) → the canonical code `coded_values` is keyed
    /// by (from the concept).
    pub answers: BTreeMap<String, String>,
    /// A score read as a coded answer (GCS total → ACVPU), from the concept.
    pub from_score: Option<FromScore>,
    /// Canonical UCUM unit; values are converted to it (see [`units`]).
    pub unit: String,
    pub coded_values: BTreeMap<String, f64>,
    /// g/mol, for mass ↔ substance concentration conversion.
    pub molar_mass: Option<f64>,
    pub aggregate: Aggregate,
    /// Longest a value is carried forward into empty steps.
    pub max_age: Option<Duration>,
    pub transform: Transform,
    /// Decimals values are shown with, in [`FeatureDef::unit`] (clinical rounding).
    pub decimals: u8,
    /// Words for the values of a coded signal (empty for measured quantities): cards say
    /// these instead of the number.
    pub value_words: Vec<(f64, String)>,
}

impl FeatureDef {
    /// `value` as cards show it: the value's words for a coded signal, else the number in
    /// display units with this feature's rounding ("39.2 °C").
    pub fn show(&self, value: f64) -> String {
        match self.words_for(value) {
            Some(words) => words.to_owned(),
            None => units::display(value, &self.unit, self.decimals),
        }
    }

    /// The words for `value` when this is a coded signal that has them.
    pub fn words_for(&self, value: f64) -> Option<&str> {
        self.value_words
            .iter()
            .find(|(v, _)| (v - value).abs() < 1e-9)
            .map(|(_, w)| w.as_str())
    }
}

/// The complete set of core observations a score needs: each of `features` measured at least
/// once within the last `within` before the reference time. Without it a clinician would not
/// judge the patient either, so the model abstains.
#[derive(Debug, Clone, PartialEq)]
pub struct RequireRecent {
    pub within: Duration,
    /// Indices into [`FeatureSpec::features`].
    pub features: Vec<usize>,
}

/// A validated feature spec.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureSpec {
    pub window: Duration,
    pub step: Duration,
    pub features: Vec<FeatureDef>,
    /// What a score needs recently; `None`: no such gate.
    pub require_recent: Option<RequireRecent>,
}

/// `value_words` of a feature, checked: keys are numbers, and a coded signal that has words
/// has them for every value it can take (a missing one would show as a bare number).
fn value_words(f: &RawFeature) -> Result<Vec<(f64, String)>, String> {
    let mut words = Vec::new();
    for (key, text) in &f.value_words {
        let value: f64 = key
            .trim()
            .parse()
            .map_err(|_| format!("value_words key `{key}` is not a number"))?;
        if text.trim().is_empty() {
            return Err(format!("value_words `{key}` is empty"));
        }
        words.push((value, text.clone()));
    }
    if !words.is_empty() {
        for (code, value) in &f.coded_values {
            if !words.iter().any(|(v, _)| (v - value).abs() < 1e-9) {
                return Err(format!(
                    "value_words has no words for {value} (coded value of `{code}`)"
                ));
            }
        }
    }
    Ok(words)
}

/// `[require_recent]` checked against the spec's features.
fn require_recent(r: &RawRecent, features: &[FeatureDef]) -> Result<RequireRecent, String> {
    if !(r.hours.is_finite() && r.hours > 0.0) {
        return Err("require_recent.hours must be > 0".into());
    }
    if r.features.is_empty() {
        return Err("require_recent.features is empty".into());
    }
    let features = r
        .features
        .iter()
        .map(|name| {
            features
                .iter()
                .position(|f| &f.name == name)
                .ok_or_else(|| format!("require_recent names `{name}`, which is not a feature"))
        })
        .collect::<Result<_, _>>()?;
    Ok(RequireRecent {
        within: Duration::from_secs_f64(r.hours * 3600.0),
        features,
    })
}

impl FeatureSpec {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, FeatureSpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| FeatureSpecError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|message| FeatureSpecError::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let raw: RawSpec = toml::from_str(text).map_err(|e| e.to_string())?;
        if raw.window_hours == 0 || raw.step_minutes == 0 {
            return Err("window_hours and step_minutes must be positive".into());
        }
        if !(raw.window_hours * 60).is_multiple_of(raw.step_minutes) {
            return Err("window_hours must be a whole number of steps".into());
        }
        if raw.feature.is_empty() {
            return Err("at least one [[feature]] is needed".into());
        }
        let mut features = Vec::new();
        for (i, f) in raw.feature.into_iter().enumerate() {
            if features.iter().any(|d: &FeatureDef| d.name == f.name) {
                return Err(format!("feature[{i}]: duplicate name `{}`", f.name));
            }
            let concept = match &f.concept {
                None => None,
                Some(name) => Some(terminology().concept(name).ok_or_else(|| {
                    format!(
                        "feature[{i}] `{}`: concept `{name}` is not in models/terminology.toml",
                        f.name
                    )
                })?),
            };
            let mut loinc = f.loinc.clone();
            for c in concept.iter().flat_map(|c| {
                c.loinc
                    .iter()
                    .chain(c.from_gcs.iter().flat_map(|g| &g.loinc))
            }) {
                if !loinc.contains(c) {
                    loinc.push(c.clone());
                }
            }
            if loinc.is_empty() {
                return Err(format!("feature[{i}] `{}`: no LOINC codes", f.name));
            }
            // The concept's limits in this feature's unit (e.g. creatinine mg/dL → µmol/L).
            let plausible = match concept.and_then(|c| c.plausible.map(|p| (p, &c.unit))) {
                None => None,
                Some(([lo, hi], unit)) => {
                    let lo = units::convert(lo, unit, &f.unit, f.molar_mass);
                    let hi = units::convert(hi, unit, &f.unit, f.molar_mass);
                    match (lo, hi) {
                        (Some(lo), Some(hi)) => Some([lo.min(hi), lo.max(hi)]),
                        _ => {
                            return Err(format!(
                                "feature[{i}] `{}`: unit `{}` does not convert from its concept's `{unit}`",
                                f.name, f.unit
                            ))
                        }
                    }
                }
            };
            if !units::is_canonical(&f.unit) {
                return Err(format!(
                    "feature[{i}] `{}`: unit `{}` is not one bedside converts to",
                    f.name, f.unit
                ));
            }
            if f.molar_mass.is_some_and(|m| !(m.is_finite() && m > 0.0)) {
                return Err(format!("feature[{i}] `{}`: molar_mass must be > 0", f.name));
            }
            let max_age = match f.max_age_hours {
                None => None,
                Some(h) if h.is_finite() && h > 0.0 => Some(Duration::from_secs_f64(h * 3600.0)),
                Some(_) => {
                    return Err(format!(
                        "feature[{i}] `{}`: max_age_hours must be > 0",
                        f.name
                    ))
                }
            };
            let decimals = f
                .decimals
                .unwrap_or_else(|| units::default_decimals(&f.unit));
            if decimals > units::MAX_DECIMALS {
                return Err(format!(
                    "feature[{i}] `{}`: decimals must be at most {}",
                    f.name,
                    units::MAX_DECIMALS
                ));
            }
            let value_words =
                value_words(&f).map_err(|e| format!("feature[{i}] `{}`: {e}", f.name))?;
            features.push(FeatureDef {
                display: f.display.unwrap_or_else(|| f.name.replace('_', " ")),
                concept: f.concept.clone(),
                loinc,
                plausible,
                answers: concept.map(|c| c.answers.clone()).unwrap_or_default(),
                from_score: concept.and_then(|c| c.from_gcs.clone()),
                name: f.name,
                unit: f.unit,
                coded_values: f.coded_values,
                molar_mass: f.molar_mass,
                aggregate: f.aggregate,
                max_age,
                transform: f.transform,
                decimals,
                value_words,
            });
        }
        let require_recent = match raw.require_recent {
            None => None,
            Some(r) => Some(require_recent(&r, &features)?),
        };
        Ok(Self {
            window: Duration::from_secs(u64::from(raw.window_hours) * 3600),
            step: Duration::from_secs(u64::from(raw.step_minutes) * 60),
            features,
            require_recent,
        })
    }

    /// Time steps in the window.
    pub fn steps(&self) -> usize {
        (self.window.as_secs() / self.step.as_secs()) as usize
    }

    /// Channels per step: one value and one observed-mask channel per feature.
    pub fn channels(&self) -> usize {
        self.features.len() * 2
    }

    /// Index of the feature called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.features.iter().position(|f| f.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CODED: &str = "window_hours = 12\nstep_minutes = 60\n[[feature]]\nname='avpu'\nloinc=['67775-7']\nunit='1'\n[feature.coded_values]\n'248234008' = 0.0\n'300202002' = 1.0\n";

    #[test]
    fn display_rounding_and_value_words_are_read_and_checked() {
        let spec = FeatureSpec::parse(&format!(
            "{CODED}[feature.value_words]\n'0' = 'alert'\n'1' = 'not alert'\n[[feature]]\nname='creatinine'\nloinc=['2160-0']\nunit='mg/dL'\ndecimals=2\n[[feature]]\nname='temperature'\nloinc=['8310-5']\nunit='Cel'\n"
        ))
        .unwrap();
        assert_eq!(spec.features[0].show(1.0), "not alert");
        assert_eq!(spec.features[0].show(0.0), "alert");
        assert_eq!(spec.features[1].show(1.234), "1.23 mg/dL");
        assert_eq!(spec.features[2].decimals, 1, "the unit's usual rounding");
        assert_eq!(spec.features[2].show(39.17), "39.2 °C");
        // A coded value without words would show as a bare number.
        let missing = FeatureSpec::parse(&format!("{CODED}[feature.value_words]\n'0' = 'alert'\n"));
        assert!(missing.unwrap_err().contains("no words for 1"));
        let bad_key = FeatureSpec::parse(&format!(
            "{CODED}[feature.value_words]\n'zero' = 'alert'\n'1' = 'x'\n"
        ));
        assert!(bad_key.unwrap_err().contains("not a number"));
        let too_fine = FeatureSpec::parse(
            "window_hours = 12\nstep_minutes = 60\n[[feature]]\nname='t'\nloinc=['8310-5']\nunit='Cel'\ndecimals=7\n",
        );
        assert!(too_fine.unwrap_err().contains("decimals"));
    }
}
