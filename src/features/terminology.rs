//! The terminology map (`models/terminology.toml`): which codes, code systems, unit spellings
//! and answers mean which clinical concept, with each concept's physiological plausibility limits.
//!
//! The file is compiled in (`include_str!`): a gateway and its tests always use the map they were
//! built with, feature specs resolve `concept = "spo2"` without a file to find at start-up, and
//! `models/featurize.py` / `models/baselines.py` read the same file from the repository, so
//! training and serving match the same variants (held equal by `tests/models/feature_parity.rs`).
//! A hospital's new variant is one line in that file and a rebuild.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde::Deserialize;

use crate::fhir::projection::CodeableConceptView;

const SOURCE: &str = include_str!("../../models/terminology.toml");

/// A code system bedside reads, whatever URI spelling the EHR uses for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    Loinc,
    Snomed,
    Ucum,
    Icd10cm,
    Icd10,
}

/// One clinical concept: the codes that carry it and what values it can physiologically take.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Concept {
    /// LOINC codes matched on `Observation.code` or `Observation.component.code`.
    pub loinc: Vec<String>,
    /// The UCUM unit [`Concept::plausible`] is stated in.
    pub unit: String,
    /// `[low, high]`, inclusive, in [`Concept::unit`]: outside it a value is an artefact.
    #[serde(default)]
    pub plausible: Option<[f64; 2]>,
    /// Answer code or lower-case answer text → the canonical answer code.
    #[serde(default)]
    pub answers: BTreeMap<String, String>,
    /// Another scale read as this concept's answers (GCS total → ACVPU).
    #[serde(default)]
    pub from_gcs: Option<FromScore>,
}

/// A numeric score read as a coded answer by bands (GCS total → ACVPU).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FromScore {
    /// LOINC codes of the score.
    pub loinc: Vec<String>,
    /// `(low, high, canonical answer code)`, inclusive, on the score rounded to whole points.
    pub bands: Vec<(f64, f64, String)>,
}

impl FromScore {
    /// The canonical answer code for score `value`, if a band holds it.
    pub fn answer(&self, value: f64) -> Option<&str> {
        let v = value.round();
        self.bands
            .iter()
            .find(|(lo, hi, _)| *lo <= v && v <= *hi)
            .map(|(.., code)| code.as_str())
    }
}

/// NEWS2 "air or oxygen": which readings mean supplemental oxygen.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Oxygen {
    pub flow_concept: String,
    pub fio2_concept: String,
    pub flow_above_l_min: f64,
    pub fio2_above_percent: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    systems: BTreeMap<System, Vec<String>>,
    units: BTreeMap<String, String>,
    concept: BTreeMap<String, Concept>,
    oxygen: Oxygen,
    spo2_scale2: BTreeMap<System, Vec<String>>,
}

/// The parsed map.
#[derive(Debug)]
pub struct Terminology {
    systems: BTreeMap<String, System>,
    units: BTreeMap<String, String>,
    concepts: BTreeMap<String, Concept>,
    /// NEWS2 oxygen rules.
    pub oxygen: Oxygen,
    scale2: Vec<(System, String)>,
}

/// A condition code compared without dots, spaces and case ("J96.12" = "j9612").
fn condition_key(code: &str) -> String {
    code.chars()
        .filter(|c| !matches!(c, '.' | ' '))
        .flat_map(char::to_uppercase)
        .collect()
}

impl Terminology {
    /// Parses and checks a terminology file's text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let raw: Raw = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut systems = BTreeMap::new();
        for (system, aliases) in raw.systems {
            for alias in aliases {
                if systems.insert(alias.clone(), system).is_some() {
                    return Err(format!("system alias `{alias}` listed twice"));
                }
            }
        }
        for (name, c) in &raw.concept {
            if c.plausible
                .is_some_and(|[lo, hi]| lo.is_nan() || hi.is_nan() || lo > hi)
            {
                return Err(format!("concept `{name}`: plausible is not a range"));
            }
        }
        for name in [&raw.oxygen.flow_concept, &raw.oxygen.fio2_concept] {
            if !raw.concept.contains_key(name) {
                return Err(format!("[oxygen] names unknown concept `{name}`"));
            }
        }
        let scale2 = raw
            .spo2_scale2
            .into_iter()
            .flat_map(|(s, codes)| codes.into_iter().map(move |c| (s, condition_key(&c))))
            .collect();
        Ok(Self {
            systems,
            units: raw.units,
            concepts: raw.concept,
            oxygen: raw.oxygen,
            scale2,
        })
    }

    /// The concept called `name`.
    pub fn concept(&self, name: &str) -> Option<&Concept> {
        self.concepts.get(name)
    }

    /// The concept a LOINC code carries (itself, or as a score read as its answers), if any:
    /// tells "known, but not an input of this model" from "unknown" (`bedside probe`).
    pub fn concept_for_loinc(&self, code: &str) -> Option<&str> {
        self.concepts
            .iter()
            .find(|(_, c)| {
                c.loinc.iter().any(|l| l == code)
                    || c.from_gcs
                        .as_ref()
                        .is_some_and(|g| g.loinc.iter().any(|l| l == code))
            })
            .map(|(name, _)| name.as_str())
    }

    /// Which system a `Coding.system` / `Quantity.system` URI names, whatever its spelling.
    pub fn system(&self, uri: &str) -> Option<System> {
        self.systems.get(uri.trim()).copied()
    }

    /// The codes of `concept`'s codings whose system is LOINC (any spelling of it), in coding
    /// order: what features and the oxygen check match their concepts against.
    pub fn loinc_codes<'a, 'b: 'a>(
        &'a self,
        concept: &'a CodeableConceptView<'b>,
    ) -> impl Iterator<Item = &'a str> + use<'a, 'b> {
        concept
            .coding
            .iter()
            .filter(|c| c.system.as_deref().and_then(|s| self.system(s)) == Some(System::Loinc))
            .filter_map(|c| c.code.as_deref())
    }

    /// The UCUM code for a unit as an EHR spells it; a spelling not listed is taken as UCUM.
    pub fn ucum<'a>(&'a self, unit: &'a str) -> &'a str {
        self.units.get(unit).map_or(unit, String::as_str)
    }

    /// Whether `system|code` is a condition that puts NEWS2 on SpO2 scale 2.
    pub fn is_scale2_condition(&self, system: Option<&str>, code: &str) -> bool {
        let Some(system) = system.and_then(|s| self.system(s)) else {
            return false;
        };
        let key = condition_key(code);
        self.scale2.iter().any(|(s, c)| *s == system && *c == key)
    }

    /// Whether `code` equals one of `codes` as a condition code (dots and case ignored).
    pub fn same_condition(code: &str, codes: &[String]) -> bool {
        let key = condition_key(code);
        codes.iter().any(|c| condition_key(c) == key)
    }
}

static BUILTIN: LazyLock<Terminology> = LazyLock::new(|| {
    Terminology::parse(SOURCE).unwrap_or_else(|e| {
        // A unit test parses the shipped file, so this is a build that skipped its tests: run
        // with no variants (the codes features.toml lists still work) rather than not at all.
        tracing::error!(error = %e, "models/terminology.toml is invalid; no terminology variants");
        Terminology {
            systems: BTreeMap::from([
                ("http://loinc.org".to_owned(), System::Loinc),
                ("http://unitsofmeasure.org".to_owned(), System::Ucum),
            ]),
            units: BTreeMap::new(),
            concepts: BTreeMap::new(),
            oxygen: Oxygen {
                flow_concept: String::new(),
                fio2_concept: String::new(),
                flow_above_l_min: 0.0,
                fio2_above_percent: 21.0,
            },
            scale2: Vec::new(),
        }
    })
});

/// The compiled-in map from `models/terminology.toml`.
pub fn terminology() -> &'static Terminology {
    &BUILTIN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_map_parses_and_normalises_systems_units_and_conditions() {
        let t = Terminology::parse(SOURCE).unwrap();
        assert_eq!(t.system("http://loinc.org/"), Some(System::Loinc));
        assert_eq!(
            t.system("urn:oid:2.16.840.1.113883.6.1"),
            Some(System::Loinc)
        );
        assert_eq!(t.system("http://snomed.info/sct"), Some(System::Snomed));
        assert_eq!(t.system("http://example.org"), None);
        assert_eq!(t.ucum("mmHg"), "mm[Hg]");
        assert_eq!(t.ucum("beats/min"), "/min");
        assert_eq!(t.ucum("µmol/L"), "umol/L");
        assert_eq!(t.ucum("mm[Hg]"), "mm[Hg]");
        let spo2 = t.concept("spo2").unwrap();
        assert!(spo2.loinc.iter().any(|c| c == "2708-6"));
        assert_eq!(spo2.plausible, Some([50.0, 100.0]));
        let icd10 = Some("http://hl7.org/fhir/sid/icd-10");
        let cm = Some("http://hl7.org/fhir/sid/icd-10-cm");
        assert!(t.is_scale2_condition(icd10, "J96.1"));
        assert!(t.is_scale2_condition(icd10, "J961"));
        assert!(t.is_scale2_condition(cm, "J96.12"));
        assert!(t.is_scale2_condition(cm, "j9622"));
        assert!(
            !t.is_scale2_condition(cm, "J96.1"),
            "J96.1 is WHO ICD-10 only"
        );
        assert!(!t.is_scale2_condition(None, "J96.12"));
        assert!(Terminology::same_condition("J9612", &["J96.12".to_owned()]));
    }

    #[test]
    fn gcs_reads_as_acvpu_by_the_documented_bands() {
        let t = terminology();
        let gcs = t
            .concept("consciousness")
            .unwrap()
            .from_gcs
            .as_ref()
            .unwrap();
        for (score, code) in [
            (15.0, "248234008"),
            (14.0, "300202002"),
            (13.0, "300202002"),
            (12.0, "450847001"),
            (9.0, "450847001"),
            (8.0, "450848006"),
            (4.0, "450848006"),
            (3.0, "422768004"),
        ] {
            assert_eq!(gcs.answer(score), Some(code), "GCS {score}");
        }
        assert_eq!(gcs.answer(2.0), None);
        assert_eq!(gcs.answer(16.0), None);
    }

    #[test]
    fn invalid_maps_are_refused_with_the_reason() {
        let bad = SOURCE.replace("plausible = [50, 100]", "plausible = [100, 50]");
        assert!(Terminology::parse(&bad).unwrap_err().contains("spo2"));
        let dup = SOURCE.replace(
            "snomed = [\"http://snomed.info/sct\"",
            "snomed = [\"http://loinc.org\"",
        );
        assert!(Terminology::parse(&dup).unwrap_err().contains("twice"));
    }
}
