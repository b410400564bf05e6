//! The foundation model's tokeniser: a patient record (FHIR R4 Bundle or MEDS events) → token
//! ids and times, exactly as `models/foundation/tokenizer.py` makes them for pretraining (held
//! equal by `tests/models/token_parity.rs`; the rules are in that file's docstring).
//!
//! Two steps, each usable alone:
//! 1. [`events_of_bundle`]: Observations through the terminology map and the foundation model's
//!    `features.toml` (every code variant, unit conversion, GCS read as ACVPU, implausible values
//!    dropped and counted), Conditions, medication orders and administrations, the encounter and
//!    its locations, the patient's gender and birth date → MEDS events.
//! 2. [`encode`]: MEDS events at a prediction time → ids and hours, with what was read.
//!
//! All time arithmetic is on integer microseconds, as on the Python side, so gaps and hours
//! agree bit for bit.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use super::extract::{measurements, Measurement};
use super::grid::FeatureMatrix;
use super::spec::FeatureSpec;
use super::terminology::{terminology, System};
use crate::fhir::projection;
use crate::fhir::time::parse_instant;

/// The vocabulary file format this tokeniser reads.
pub const VOCAB_FORMAT: u32 = 1;
const DT_EDGES_HOURS: [f64; 7] = [1.0, 2.0, 4.0, 8.0, 12.0, 24.0, 48.0];
const AGE_EDGES_YEARS: [i32; 7] = [30, 40, 50, 60, 70, 80, 90];
const UNK: i64 = 1;
const BOS: i64 = 2;
const RXNORM_SYSTEMS: [&str; 2] = [
    "http://www.nlm.nih.gov/research/umls/rxnorm",
    "http://www.nlm.nih.gov/research/umls/rxnorm/",
];
const ROLE_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-RoleCode";
const BIRTH: &str = "MEDS_BIRTH";

/// One MEDS event: what the gateway reads from a Bundle, or what a caller sends instead of one
/// (other MEDS columns, such as `subject_id`, are ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MedsEvent {
    /// `None` for a static fact (gender).
    #[serde(default)]
    pub time: Option<DateTime<Utc>>,
    pub code: String,
    #[serde(default)]
    pub numeric_value: Option<f64>,
    #[serde(default)]
    pub text_value: Option<String>,
}

impl MedsEvent {
    fn new(time: Option<DateTime<Utc>>, code: String) -> Self {
        Self {
            time,
            code,
            numeric_value: None,
            text_value: None,
        }
    }
}

#[derive(Debug, Deserialize)]
struct RawVocab {
    format: u32,
    context: usize,
    concepts: Vec<RawConcept>,
    tokens: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct RawConcept {
    name: String,
    concept: String,
    #[serde(default)]
    edges: Option<Vec<f32>>,
    #[serde(default)]
    answers: Option<Vec<String>>,
}

/// How a concept's values become token ids (resolved once, when the vocabulary is read).
#[derive(Debug, Clone)]
enum ConceptTokens {
    /// `<name>#<bin>`: bin = the number of edges at or below the value, compared in float32;
    /// `ids[bin]` is its token.
    Numeric { edges: Vec<f32>, ids: Vec<i64> },
    /// `<name>=<answer code>` for the listed answers.
    Coded { answers: Vec<(String, i64)> },
}

/// The vocabulary (`vocab.json` beside the model): tokens, decile edges, context length, and
/// the id of every token a rule produces.
#[derive(Debug, Clone)]
pub struct Vocab {
    tokens: Vec<String>,
    index: HashMap<String, i64>,
    context: usize,
    by_loinc: HashMap<String, ConceptTokens>,
    /// `DT#k`, k = 0 .. gap edges.
    gap_ids: Vec<i64>,
    /// `AGE#k`, k = 0 ..= age edges.
    age_ids: Vec<i64>,
}

impl Vocab {
    /// Parses and checks `vocab.json`: every token a rule can produce must be in it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let raw: RawVocab = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if raw.format != VOCAB_FORMAT {
            return Err(format!(
                "vocab format {}, this gateway reads {VOCAB_FORMAT}",
                raw.format
            ));
        }
        let index: HashMap<String, i64> = raw
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as i64))
            .collect();
        let id = |token: String| {
            index
                .get(&token)
                .copied()
                .ok_or_else(|| format!("token `{token}` is missing"))
        };
        if id("[PAD]".into())? != 0 || id("[UNK]".into())? != UNK || id("[BOS]".into())? != BOS {
            return Err("tokens must start with [PAD], [UNK], [BOS]".into());
        }
        let gap_ids = (0..DT_EDGES_HOURS.len())
            .map(|k| id(format!("DT#{k}")))
            .collect::<Result<_, _>>()?;
        let age_ids = (0..=AGE_EDGES_YEARS.len())
            .map(|k| id(format!("AGE#{k}")))
            .collect::<Result<_, _>>()?;
        let mut by_loinc = HashMap::new();
        for c in raw.concepts {
            let concept = terminology().concept(&c.concept).ok_or_else(|| {
                format!("concept `{}` is not in models/terminology.toml", c.concept)
            })?;
            let tokens = match (c.edges, c.answers) {
                (Some(edges), None) => ConceptTokens::Numeric {
                    ids: (0..=edges.len())
                        .map(|k| id(format!("{}#{k}", c.name)))
                        .collect::<Result<_, _>>()?,
                    edges,
                },
                (None, Some(answers)) => ConceptTokens::Coded {
                    answers: answers
                        .into_iter()
                        .map(|a| {
                            let token = id(format!("{}={a}", c.name))?;
                            Ok::<_, String>((a, token))
                        })
                        .collect::<Result<_, _>>()?,
                },
                _ => return Err(format!("concept `{}`: needs edges or answers", c.name)),
            };
            for code in &concept.loinc {
                by_loinc
                    .entry(format!("LOINC/{code}"))
                    .or_insert_with(|| tokens.clone());
            }
        }
        Ok(Self {
            tokens: raw.tokens,
            index,
            context: raw.context,
            by_loinc,
            gap_ids,
            age_ids,
        })
    }

    /// Number of tokens (the model's embedding table size).
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the vocabulary has no tokens (never, once parsed).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The token with id `id`, if there is one.
    pub fn token(&self, id: i64) -> Option<&str> {
        usize::try_from(id)
            .ok()
            .and_then(|i| self.tokens.get(i))
            .map(String::as_str)
    }

    /// Most tokens one input holds.
    pub fn context(&self) -> usize {
        self.context
    }

    /// The token a timed event becomes.
    fn token_of(&self, event: &MedsEvent) -> i64 {
        match self.by_loinc.get(&event.code) {
            Some(ConceptTokens::Numeric { edges, ids }) => match event.numeric_value {
                Some(v) if v.is_finite() => {
                    let v = v as f32;
                    ids[edges.partition_point(|e| *e <= v)]
                }
                _ => UNK,
            },
            Some(ConceptTokens::Coded { answers }) => event
                .text_value
                .as_ref()
                .and_then(|a| answers.iter().find(|(answer, _)| answer == a))
                .map_or(UNK, |(_, id)| *id),
            None => self.index.get(&event.code).copied().unwrap_or(UNK),
        }
    }
}

/// A record as the model reads it, and what was read to make it.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub ids: Vec<i64>,
    /// Hours since the first kept timed token (statics: 0).
    pub hours: Vec<f32>,
    /// Timed events at or before the prediction time.
    pub events: usize,
    /// Of those, events whose code the vocabulary does not have.
    pub unknown: usize,
    /// First and last kept timed token.
    pub window: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Per token in `ids`, the index (into the events given) of the event it was read from;
    /// `None` for the statics and the gap tokens. What an explanation maps tokens back with.
    pub sources: Vec<Option<usize>>,
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn age_years(birth: DateTime<Utc>, now: DateTime<Utc>) -> i32 {
    let (b, n) = (birth.date_naive(), now.date_naive());
    n.year() - b.year() - i32::from((n.month(), n.day()) < (b.month(), b.day()))
}

/// MEDS events at `now` → token ids and hours: `[BOS]`, gender, age band, then the newest
/// timed tokens that fit the vocabulary's context, with `DT#k` before gaps of 1 h or more.
pub fn encode(vocab: &Vocab, events: &[MedsEvent], now: DateTime<Utc>) -> Encoded {
    let now_us = micros(now);
    let mut statics = vec![BOS];
    let gender = events
        .iter()
        .find(|e| e.time.is_none() && e.code.starts_with("GENDER/"));
    if let Some(id) = gender.and_then(|g| vocab.index.get(&g.code)) {
        statics.push(*id);
    }
    let birth = events
        .iter()
        .filter(|e| e.code == BIRTH)
        .find_map(|e| e.time);
    if let Some(b) = birth.filter(|b| micros(*b) <= now_us) {
        let band = AGE_EDGES_YEARS.partition_point(|e| *e <= age_years(b, now));
        statics.push(vocab.age_ids[band]);
    }
    // (time, id, event index): the index only orders equal (time, id) pairs, whose tokens are
    // the same, so the sequence is the Python side's `sorted((time, id))`.
    let mut timed: Vec<(i64, i64, usize)> = Vec::new();
    let mut unknown = 0;
    for (i, e) in events.iter().enumerate() {
        let Some(t) = e.time else { continue };
        if e.code == BIRTH || micros(t) > now_us {
            continue;
        }
        let id = vocab.token_of(e);
        unknown += usize::from(id == UNK);
        timed.push((micros(t), id, i));
    }
    timed.sort_unstable();
    let mut seq: Vec<(i64, i64, Option<usize>)> = Vec::with_capacity(timed.len() + timed.len() / 4);
    let mut prev: Option<i64> = None;
    for &(t, id, i) in &timed {
        if let Some(p) = prev.filter(|p| t > *p) {
            let gap_hours = t.saturating_sub(p) as f64 / 3.6e9;
            let k = DT_EDGES_HOURS.partition_point(|e| *e <= gap_hours);
            if k > 0 {
                seq.push((t, vocab.gap_ids[k - 1], None));
            }
        }
        seq.push((t, id, Some(i)));
        prev = Some(t);
    }
    let keep = vocab.context.saturating_sub(statics.len());
    let kept = &seq[seq.len().saturating_sub(keep)..];
    let t0 = kept.first().map_or(0, |(t, _, _)| *t);
    let mut sources = vec![None; statics.len()];
    sources.extend(kept.iter().map(|(_, _, i)| *i));
    let mut ids = statics.clone();
    ids.extend(kept.iter().map(|(_, id, _)| *id));
    let mut hours = vec![0.0f32; statics.len()];
    hours.extend(
        kept.iter()
            .map(|(t, _, _)| (t.saturating_sub(t0) as f64 / 3.6e9) as f32),
    );
    let at = |us: i64| DateTime::<Utc>::from_timestamp_micros(us);
    let window = match (kept.first(), kept.last()) {
        (Some(a), Some(b)) => at(a.0).zip(at(b.0)),
        _ => None,
    };
    Encoded {
        ids,
        hours,
        events: timed.len(),
        unknown,
        window,
        sources,
    }
}

#[derive(Deserialize)]
struct Entries<'a> {
    #[serde(borrow, default)]
    entry: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
struct EntryRaw<'a> {
    #[serde(borrow, default)]
    resource: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Kind<'a> {
    #[serde(rename = "resourceType", borrow, default)]
    resource_type: Option<std::borrow::Cow<'a, str>>,
}

/// MEDS events read from a Bundle, and the observations dropped, by reason.
#[derive(Debug, Default)]
pub struct BundleEvents {
    pub events: Vec<MedsEvent>,
    pub dropped: BTreeMap<&'static str, usize>,
    /// Entries whose resource could not be read at all.
    pub unreadable: usize,
}

fn codings(cc: &Value) -> impl Iterator<Item = (&Value, &str)> {
    cc["coding"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["code"].as_str().map(|code| (c, code)))
}

fn instant(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str().and_then(parse_instant)
}

/// `ICD10/<category>` from the first ICD-10(-CM) coding, else `SNOMED/<code>`.
fn condition_code(cc: &Value) -> Option<String> {
    let system_of = |c: &Value| c["system"].as_str().and_then(|s| terminology().system(s));
    for (c, code) in codings(cc) {
        if matches!(system_of(c), Some(System::Icd10 | System::Icd10cm)) {
            let upper = code.trim().to_uppercase();
            let category: String = upper
                .split('.')
                .next()
                .unwrap_or("")
                .chars()
                .take(3)
                .collect();
            if !category.is_empty() {
                return Some(format!("ICD10/{category}"));
            }
        }
    }
    codings(cc)
        .find(|(c, code)| system_of(c) == Some(System::Snomed) && !code.trim().is_empty())
        .map(|(_, code)| format!("SNOMED/{}", code.trim()))
}

fn medication_code(r: &Value, by_ref: &HashMap<String, &Value>) -> Option<String> {
    let concept = match r.get("medicationCodeableConcept") {
        Some(cc) => Some(cc),
        None => r["medicationReference"]["reference"]
            .as_str()
            .and_then(|reference| by_ref.get(reference))
            .map(|med| &med["code"]),
    }?;
    codings(concept)
        .find(|(c, code)| {
            c["system"]
                .as_str()
                .is_some_and(|s| RXNORM_SYSTEMS.contains(&s))
                && !code.trim().is_empty()
        })
        .map(|(_, code)| format!("RXNORM/{}", code.trim()))
}

/// "intensive care", or a word (a run of ASCII letters) that is "icu" or one letter + "icu".
fn is_icu_text(text: Option<&str>) -> bool {
    let Some(text) = text else { return false };
    let low = text.to_lowercase();
    low.contains("intensive care")
        || low
            .split(|c: char| !c.is_ascii_lowercase())
            .any(|w| w == "icu" || (w.len() == 4 && w.ends_with("icu")))
}

fn is_icu(entry: &Value, by_ref: &HashMap<String, &Value>) -> bool {
    let reference = &entry["location"];
    if let Some(loc) = reference["reference"].as_str().and_then(|r| by_ref.get(r)) {
        let typed_icu = loc["type"].as_array().into_iter().flatten().any(|t| {
            codings(t).any(|(c, code)| c["system"].as_str() == Some(ROLE_CODE) && code == "ICU")
        });
        if typed_icu || is_icu_text(loc["name"].as_str()) {
            return true;
        }
    }
    is_icu_text(reference["display"].as_str())
}

/// The MEDS event a measurement read with the foundation model's feature `spec` becomes: its
/// concept's first LOINC code, with the value (or, for coded answers, the answer code).
fn event_of_measurement(spec: &FeatureSpec, m: &Measurement) -> Option<MedsEvent> {
    let def = spec.features.get(m.feature)?;
    let first = def
        .concept
        .as_deref()
        .and_then(|c| terminology().concept(c))
        .and_then(|c| c.loinc.first())?;
    let mut e = MedsEvent::new(Some(m.time), format!("LOINC/{first}"));
    if def.coded_values.is_empty() {
        e.numeric_value = Some(m.value);
    } else {
        e.text_value = def
            .coded_values
            .iter()
            .find(|(_, v)| **v == m.value)
            .map(|(answer, _)| answer.clone());
    }
    Some(e)
}

/// A token model's input from measurements (sorted by time) at `now`: the tokens of their
/// events in the matrix layout every model shares (`features = 1`: per step one token, its id
/// in the "value" channel and its hours in the "mask" channel, right-padded with zeros to the
/// vocabulary's context). `measurements` are those that feed a kept token, `sources` map each
/// token to its measurement, and the window runs from the first kept token to `now`. What a
/// foundation-model head reads, from the Observations a service gathered (no other
/// resources: a head is fitted on the same).
pub fn token_matrix(
    vocab: &Vocab,
    spec: &FeatureSpec,
    found: &[Measurement],
    now: DateTime<Utc>,
) -> FeatureMatrix {
    let mut read: Vec<usize> = Vec::with_capacity(found.len());
    let mut events: Vec<MedsEvent> = Vec::with_capacity(found.len());
    for (j, m) in found.iter().enumerate() {
        if let Some(e) = event_of_measurement(spec, m) {
            read.push(j);
            events.push(e);
        }
    }
    let encoded = encode(vocab, &events, now);
    let context = vocab.context;
    let mut values = vec![0.0f32; context * 2];
    let mut sources = vec![None; context];
    // Each measurement is one event and each event one token, so a kept reading token names
    // its measurement once: tokens (in time order) list the kept measurements oldest first.
    let mut measurements: Vec<Measurement> = Vec::new();
    for (k, ((id, hours), source)) in encoded
        .ids
        .iter()
        .zip(&encoded.hours)
        .zip(&encoded.sources)
        .enumerate()
        .take(context)
    {
        values[2 * k] = *id as f32;
        values[2 * k + 1] = *hours;
        let Some(j) = source.and_then(|e| read.get(e).copied()) else {
            continue;
        };
        sources[k] = Some(measurements.len());
        measurements.push(found[j].clone());
    }
    FeatureMatrix {
        steps: context,
        features: 1,
        values,
        sources,
        measurements,
        window_start: encoded.window.map_or(now, |(start, _)| start),
        window_end: now,
        limits: Vec::new(),
    }
}

/// The MEDS events of a FHIR Bundle, read with the foundation model's feature `spec`.
pub fn events_of_bundle(spec: &FeatureSpec, bundle: &RawValue) -> Result<BundleEvents, String> {
    let projected = projection::observations(bundle).map_err(|e| e.to_string())?;
    let (found, rejected) = measurements(spec, &projected.observations);
    let mut out = BundleEvents {
        unreadable: projected.unreadable,
        ..BundleEvents::default()
    };
    out.events
        .extend(found.iter().filter_map(|m| event_of_measurement(spec, m)));
    for r in rejected {
        *out.dropped.entry(r.reason).or_default() += 1;
    }
    // Observations were read by the projection; only the other resources (a few) are parsed
    // into JSON values.
    let entries: Entries<'_> = serde_json::from_str(bundle.get()).map_err(|e| e.to_string())?;
    let others: Vec<Value> = entries
        .entry
        .iter()
        .filter_map(|e| serde_json::from_str::<EntryRaw<'_>>(e.get()).ok()?.resource)
        .filter(|r| {
            serde_json::from_str::<Kind<'_>>(r.get())
                .is_ok_and(|k| k.resource_type.as_deref() != Some("Observation"))
        })
        .filter_map(|r| serde_json::from_str::<Value>(r.get()).ok())
        .filter(Value::is_object)
        .collect();
    let resources: Vec<&Value> = others.iter().collect();
    let by_ref: HashMap<String, &Value> = resources
        .iter()
        .filter_map(|r| {
            let id = r["id"].as_str().filter(|id| !id.is_empty())?;
            Some((format!("{}/{id}", r["resourceType"].as_str()?), *r))
        })
        .collect();
    for r in resources {
        if r["status"].as_str() == Some("entered-in-error") {
            continue;
        }
        match r["resourceType"].as_str() {
            Some("Patient") => {
                if let Some(g) = r["gender"].as_str() {
                    out.events.push(MedsEvent::new(None, format!("GENDER/{g}")));
                }
                let birth = r["birthDate"]
                    .as_str()
                    .filter(|b| b.len() == 10)
                    .and_then(|b| NaiveDate::parse_from_str(b, "%Y-%m-%d").ok())
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
                    .map(|d| d.and_utc());
                if let Some(b) = birth {
                    out.events.push(MedsEvent::new(Some(b), BIRTH.into()));
                }
            }
            Some("Condition") => {
                if codings(&r["verificationStatus"]).any(|(_, code)| code == "entered-in-error") {
                    continue;
                }
                if let Some(code) = condition_code(&r["code"]) {
                    let at = instant(&r["onsetDateTime"]).or_else(|| instant(&r["recordedDate"]));
                    out.events.push(MedsEvent::new(at, code));
                }
            }
            Some(kind @ ("MedicationRequest" | "MedicationAdministration")) => {
                let Some(code) = medication_code(r, &by_ref) else {
                    continue;
                };
                let at = if kind == "MedicationRequest" {
                    instant(&r["authoredOn"])
                } else {
                    instant(&r["effectiveDateTime"])
                        .or_else(|| instant(&r["effectivePeriod"]["start"]))
                };
                if let Some(at) = at {
                    out.events.push(MedsEvent::new(Some(at), code));
                }
            }
            Some("Encounter") => {
                if let Some(at) = instant(&r["period"]["start"]) {
                    out.events
                        .push(MedsEvent::new(Some(at), "ENCOUNTER/INPATIENT".into()));
                }
                for entry in r["location"].as_array().into_iter().flatten() {
                    if !entry.is_object() {
                        continue;
                    }
                    if let Some(at) = instant(&entry["period"]["start"]) {
                        let code = if is_icu(entry, &by_ref) {
                            "LOCATION/ICU"
                        } else {
                            "LOCATION/WARD"
                        };
                        out.events.push(MedsEvent::new(Some(at), code.into()));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> Vocab {
        Vocab::parse(
            r#"{"format": 1, "context": 8,
                "concepts": [{"name": "heart_rate", "concept": "heart_rate", "code": "LOINC/8867-4", "edges": [60.0, 100.0]},
                             {"name": "consciousness", "concept": "consciousness", "code": "LOINC/67775-7", "answers": ["248234008"]}],
                "tokens": ["[PAD]", "[UNK]", "[BOS]", "DT#0", "DT#1", "DT#2", "DT#3", "DT#4", "DT#5", "DT#6",
                           "AGE#0", "AGE#1", "AGE#2", "AGE#3", "AGE#4", "AGE#5", "AGE#6", "AGE#7",
                           "heart_rate#0", "heart_rate#1", "heart_rate#2", "consciousness=248234008",
                           "GENDER/female", "RXNORM/2193"]}"#,
        )
        .unwrap()
    }

    fn at(text: &str) -> DateTime<Utc> {
        parse_instant(text).unwrap()
    }

    fn ev(time: &str, code: &str, v: Option<f64>) -> MedsEvent {
        MedsEvent {
            time: Some(at(time)),
            code: code.into(),
            numeric_value: v,
            text_value: None,
        }
    }

    #[test]
    fn a_token_matrix_maps_each_reading_token_to_its_measurement() {
        let v = vocab();
        let spec = FeatureSpec::parse(
            "window_hours = 168\nstep_minutes = 60\n\n[[feature]]\nname = \"heart_rate\"\nconcept = \"heart_rate\"\nunit = \"/min\"\n",
        )
        .unwrap();
        let m = |h: u32, value: f64, id: &str| Measurement {
            feature: 0,
            time: at(&format!("2026-01-01T{h:02}:00:00Z")),
            value,
            resource_id: id.into(),
        };
        // Five readings; the context of 8 keeps [BOS] and the newest 7 timed tokens, so the
        // oldest reading (and its gap token) fall out; one reading is after `now`.
        let found = vec![
            m(1, 50.0, "a"),
            m(3, 70.0, "b"),
            m(5, 120.0, "c"),
            m(7, 80.0, "d"),
            m(9, 90.0, "e"),
            m(23, 90.0, "future"),
        ];
        let now = at("2026-01-01T10:00:00Z");
        let x = token_matrix(&v, &spec, &found, now);
        assert_eq!((x.steps, x.features, x.values.len()), (8, 1, 16));
        let ids: Vec<f32> = x.values.chunks(2).map(|r| r[0]).collect();
        // [BOS], b, DT, c, DT, d, DT, e: each reading after a 2 h gap (DT#1).
        assert_eq!(ids, [2.0, 19.0, 4.0, 20.0, 4.0, 19.0, 4.0, 19.0]);
        let named: Vec<Option<&str>> = x
            .sources
            .iter()
            .map(|s| s.map(|i| x.measurements[i].resource_id.as_str()))
            .collect();
        assert_eq!(
            named,
            [
                None,
                Some("b"),
                None,
                Some("c"),
                None,
                Some("d"),
                None,
                Some("e")
            ]
        );
        let hours: Vec<f32> = x.values.chunks(2).map(|r| r[1]).collect();
        assert_eq!(hours, [0.0, 0.0, 2.0, 2.0, 4.0, 4.0, 6.0, 6.0]);
        assert_eq!(
            (x.window_start, x.window_end),
            (at("2026-01-01T03:00:00Z"), now)
        );
        assert_eq!(
            x.measurements.len(),
            4,
            "only readings that feed a kept token"
        );
        // Nothing read: an empty input (all padding but [BOS]), the window empty at `now`.
        let empty = token_matrix(&v, &spec, &[], now);
        assert_eq!(empty.values[0], 2.0);
        assert!(empty.values[2..].iter().all(|v| *v == 0.0));
        assert_eq!(empty.window_start, now);
    }

    #[test]
    fn values_bin_at_edges_gaps_add_time_tokens_and_the_newest_tokens_are_kept() {
        let v = vocab();
        let mut events = vec![
            MedsEvent::new(None, "GENDER/female".into()),
            MedsEvent::new(Some(at("1950-06-01T00:00:00Z")), BIRTH.into()),
            ev("2026-01-01T10:00:00Z", "LOINC/8889-8", Some(100.0)), // a variant code, at an edge
            ev("2026-01-01T11:00:00Z", "LOINC/8867-4", Some(59.9)),  // 1 h gap: DT#0
            ev("2026-01-01T11:00:00Z", "RXNORM/2193", None),
            ev("2026-01-01T11:30:00Z", "SNOMED/123", None), // unknown, no gap token
            ev("2026-01-02T11:00:00Z", "LOINC/8867-4", Some(80.0)), // the future
        ];
        let e = encode(&v, &events, at("2026-01-01T12:00:00Z"));
        let names: Vec<&str> = e
            .ids
            .iter()
            .map(|i| v.tokens[*i as usize].as_str())
            .collect();
        assert_eq!(
            names,
            [
                "[BOS]",
                "GENDER/female",
                "AGE#5",
                "heart_rate#2",
                "DT#0",
                "heart_rate#0",
                "RXNORM/2193",
                "[UNK]"
            ]
        );
        assert_eq!(e.hours, [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.5]);
        assert_eq!((e.events, e.unknown), (4, 1));
        // One more event: the oldest timed token goes, statics stay.
        events.push(ev("2026-01-01T11:45:00Z", "LOINC/67775-7", None));
        events.last_mut().unwrap().text_value = Some("248234008".into());
        let e = encode(&v, &events, at("2026-01-01T12:00:00Z"));
        assert_eq!(e.ids.len(), 8);
        assert_eq!(v.tokens[e.ids[3] as usize], "DT#0");
        assert_eq!(v.tokens[e.ids[7] as usize], "consciousness=248234008");
        assert_eq!(e.hours[3], 0.0);
        assert_eq!(e.hours[7], 0.75);
    }

    #[test]
    fn a_vocabulary_without_a_token_its_rules_produce_is_refused() {
        let text =
            r#"{"format": 1, "context": 8, "concepts": [], "tokens": ["[PAD]", "[UNK]", "[BOS]"]}"#;
        assert!(Vocab::parse(text).unwrap_err().contains("DT#0"));
        assert!(Vocab::parse(&text.replace("\"format\": 1", "\"format\": 2")).is_err());
    }

    #[test]
    fn icu_is_read_from_names_and_words_not_from_substrings() {
        assert!(is_icu_text(Some("General ICU")));
        assert!(is_icu_text(Some("MICU bed 3")));
        assert!(is_icu_text(Some("Intensive Care Unit")));
        assert!(!is_icu_text(Some("Picus ward")));
        assert!(!is_icu_text(Some("Ward 4B")));
        assert!(is_icu_text(Some("icu2")));
    }

    #[test]
    fn conditions_read_as_icd10_categories_across_code_systems() {
        let cc: Value = serde_json::json!({"coding": [
            {"system": "http://snomed.info/sct", "code": "13645005"},
            {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "j44.9"}]});
        assert_eq!(condition_code(&cc).as_deref(), Some("ICD10/J44"));
        let cc: Value = serde_json::json!({"coding": [{"system": "http://snomed.info/sct", "code": "13645005"}]});
        assert_eq!(condition_code(&cc).as_deref(), Some("SNOMED/13645005"));
    }
}
