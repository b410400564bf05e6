//! Learning data out (`bedside export`): what the gateway recorded — each prediction's score,
//! model version and card outcome, the clinician's feedback and override reason, and the
//! outcomes imported later, and the model inputs of services that keep them — as a MEDS event
//! stream (Parquet, [`super::meds_parquet`], and NDJSON: `subject_id`, `time`, `code`,
//! `numeric_value`, `text_value`, plus bedside's columns), with a data dictionary and a
//! de-identification report. Nothing leaves in a form that names a patient:
//!
//! - patients become `subject_id`s: HMAC-SHA256 of the store's pseudonym under a site secret
//!   that never sits in the configuration file (without it, two exports or an export and the
//!   store cannot be joined);
//! - every time of a patient is shifted by the same whole number of days, drawn per patient
//!   and per export id within ±`max_shift_days` (a new export id: new shifts; the same id and
//!   data: the same bytes);
//! - free text (override comments, abstention reasons) is dropped; card ids become HMAC tokens;
//!   the EHR client, tenant, FHIR server and ward are not exported.
//!
//! The store never held names, addresses, telecom, birth dates or record numbers, so no such
//! field can reach an export; the report counts what was removed, by identifier class.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::Path;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::json;

use crate::store::{QuasiIdentifiers, Store};

/// Shortest site secret accepted.
pub const MIN_SECRET_BYTES: usize = 32;
/// The MEDS schema version the files follow.
pub const MEDS_VERSION: &str = "0.4.1";

/// What to export and how to de-identify it.
pub struct ExportOptions<'a> {
    /// An empty or new folder.
    pub out: &'a Path,
    /// Names the export; seeds its subject ids and date shifts unless `series` is set (reuse
    /// it only to reproduce an export).
    pub export_id: &'a str,
    /// Exports of one series share subject ids and date shifts, so they can be joined (a
    /// site's choice: it also lets whoever holds two of them line them up). `None`: the
    /// export id alone, so no two exports can be joined without the secret.
    pub series: Option<&'a str>,
    /// Predictions made at or after this instant.
    pub since: DateTime<Utc>,
    /// Dates move by at most this many days (at least 1).
    pub max_shift_days: u32,
    /// Subjects whose quasi-identifiers (age band, sex, ZIP3, admission month) are shared by
    /// fewer than `k` subjects of the export are left out (1: none are).
    pub k: u32,
    /// Clinicians' free text: dropped, or scrubbed by [`super::scrub`].
    pub free_text: FreeText,
    /// Which files the MEDS data and codes are written as.
    pub format: ExportFormat,
    /// The site secret (HMAC key), at least [`MIN_SECRET_BYTES`].
    pub secret: &'a [u8],
}

/// What becomes of clinicians' free text (override comments).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FreeText {
    /// Not exported (only whether there was a comment, counted in the report).
    #[default]
    Drop,
    /// Exported after the allow-list scrubber ([`super::scrub`]) removed every word not known
    /// to be safe.
    Scrub,
}

/// The files an export writes its MEDS data and codes as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// Parquet (what MEDS tools read) and NDJSON (for tools without Parquet).
    #[default]
    Both,
    /// `data/data.parquet`, `metadata/codes.parquet`.
    Parquet,
    /// `data/data.ndjson`, `metadata/codes.ndjson`.
    Ndjson,
}

/// One MEDS event (one NDJSON line).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MedsEvent {
    pub subject_id: i64,
    /// Shifted; written as RFC 3339 UTC with microseconds; `None` for a static fact (sex, ZIP3).
    #[serde(serialize_with = "serialize_time")]
    pub time: Option<DateTime<Utc>>,
    pub code: String,
    pub numeric_value: Option<f64>,
    pub text_value: Option<String>,
    /// Token of the prediction (card) the event belongs to: joins feedback to its prediction.
    pub prediction: Option<String>,
    /// `active` or `shadow` (predictions).
    pub mode: Option<String>,
    /// The CDS service (predictions).
    pub service: Option<String>,
    /// Card indicator (predictions).
    pub indicator: Option<String>,
}

impl MedsEvent {
    /// An event with only its subject, time and code.
    fn new(subject_id: i64, time: Option<DateTime<Utc>>, code: String) -> Self {
        Self {
            subject_id,
            time,
            code,
            numeric_value: None,
            text_value: None,
            prediction: None,
            mode: None,
            service: None,
            indicator: None,
        }
    }
}

fn serialize_time<S: serde::Serializer>(
    time: &Option<DateTime<Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match time {
        Some(t) => serializer.serialize_str(&time_text(*t)),
        None => serializer.serialize_none(),
    }
}

/// One stored model input (one line of `inputs/inputs.ndjson`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InputLine {
    pub subject_id: i64,
    /// The prediction's token, as in `data/data.ndjson`.
    pub prediction: String,
    /// The prediction's time, shifted.
    pub time: String,
    /// Start of the window, shifted like `time`.
    pub window_start: String,
    pub step_seconds: i64,
    pub features: Vec<String>,
    /// `[steps][features]` normalised values as the model read them (0 where not observed).
    pub values: Vec<Vec<f32>>,
    /// `[steps][features]`: 1 where a measurement was observed in that step.
    pub observed: Vec<Vec<u8>>,
}

/// What an export removed or replaced, per identifier class, and what it wrote.
#[derive(Debug, Clone, Serialize)]
pub struct DeidReport {
    pub export_id: String,
    /// Subject ids and shifts are shared with every export of this series.
    pub series: String,
    pub since: DateTime<Utc>,
    pub max_shift_days: u32,
    pub free_text: FreeText,
    pub subjects: u64,
    pub events: BTreeMap<String, u64>,
    pub inputs: u64,
    pub identifiers: Vec<IdentifierClass>,
    pub quasi_identifiers: KAnonymity,
    pub skipped: BTreeMap<String, u64>,
}

/// One identifier class of the report.
#[derive(Debug, Clone, Serialize)]
pub struct IdentifierClass {
    pub class: String,
    pub action: String,
    pub count: u64,
}

/// k-anonymity over the exported quasi-identifiers.
#[derive(Debug, Clone, Serialize)]
pub struct KAnonymity {
    /// What the classes are formed over.
    pub over: Vec<&'static str>,
    pub k: u32,
    /// Equivalence classes among the subjects exported.
    pub classes: u64,
    /// Subjects in the smallest exported class (≥ k unless nothing was exported).
    pub smallest_class: u64,
    /// Subjects left out because their class was smaller than k.
    pub subjects_suppressed: u64,
    pub events_suppressed: u64,
    pub inputs_suppressed: u64,
    pub note: &'static str,
}

/// The keyed functions of one export.
struct Deid {
    key: ring::hmac::Key,
    /// The export's series: seeds subject ids and shifts.
    series: String,
    max_shift_days: i64,
    /// `(subject id, shift)` per pseudonym, each computed once per export.
    keys: std::cell::RefCell<std::collections::HashMap<String, (i64, Duration)>>,
}

impl Deid {
    fn new(secret: &[u8], series: &str, max_shift_days: i64) -> Self {
        Self {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
            series: series.to_owned(),
            max_shift_days,
            keys: Default::default(),
        }
    }

    /// The subject id and date shift of a patient pseudonym.
    fn keys(&self, patient_hash: &str) -> (i64, Duration) {
        if let Some(k) = self.keys.borrow().get(patient_hash) {
            return *k;
        }
        let k = (self.subject_id(patient_hash), self.shift(patient_hash));
        self.keys.borrow_mut().insert(patient_hash.to_owned(), k);
        k
    }

    fn mac(&self, parts: &[&str]) -> [u8; 32] {
        let mut ctx = ring::hmac::Context::with_key(&self.key);
        for p in parts {
            ctx.update(p.as_bytes());
            ctx.update(&[0]);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    /// A non-negative 63-bit subject id for a patient pseudonym, per series.
    fn subject_id(&self, patient_hash: &str) -> i64 {
        let m = self.mac(&["subject", &self.series, patient_hash]);
        let mut b = [0u8; 8];
        b.copy_from_slice(&m[..8]);
        (u64::from_be_bytes(b) >> 1) as i64
    }

    /// The patient's shift in days, in [-max, -1] ∪ [1, max] (never 0: every date moves),
    /// per series.
    fn shift(&self, patient_hash: &str) -> Duration {
        let m = self.mac(&["shift", &self.series, patient_hash]);
        let mut b = [0u8; 8];
        b.copy_from_slice(&m[..8]);
        let span = 2 * self.max_shift_days as u64;
        let days = (u64::from_be_bytes(b) % span) as i64 - self.max_shift_days;
        Duration::days(if days >= 0 { days + 1 } else { days })
    }

    /// A token standing for a card id.
    fn token(&self, kind: &str, value: &str) -> String {
        hex::encode(&self.mac(&[kind, &self.series, value])[..16])
    }
}

fn time_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Everything one subject contributes to an export.
#[derive(Default)]
struct Subject {
    events: Vec<MedsEvent>,
    inputs: Vec<InputLine>,
    /// From the newest stored input, if any.
    quasi: Option<QuasiIdentifiers>,
}

/// A subject's equivalence class: generalised quasi-identifiers and admission month.
type Class = (QuasiIdentifiers, Option<String>);

/// The quasi-identifiers an export's k-anonymity is computed over.
const QUASI_IDENTIFIERS: [&str; 4] = ["age_band", "sex", "zip3", "admission_month"];

/// Writes the export to `options.out` and returns its report.
pub async fn export(store: &Store, options: &ExportOptions<'_>) -> Result<DeidReport, String> {
    if options.secret.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "the site secret must be at least {MIN_SECRET_BYTES} bytes (BEDSIDE_EXPORT_SECRET or --secret-file)"
        ));
    }
    if options.max_shift_days == 0 {
        return Err("--max-shift-days must be at least 1".into());
    }
    if options.k == 0 {
        return Err("--k must be at least 1".into());
    }
    if options.export_id.trim().is_empty() || options.series.is_some_and(|s| s.trim().is_empty()) {
        return Err("an export id (and a series, when given) must not be empty".into());
    }
    if std::fs::read_dir(options.out).is_ok_and(|mut d| d.next().is_some()) {
        return Err(format!(
            "{} is not empty: an export never overwrites",
            options.out.display()
        ));
    }
    let series = options.series.unwrap_or(options.export_id);
    let deid = Deid::new(options.secret, series, i64::from(options.max_shift_days));
    let read = |e: crate::store::StoreError| e.to_string();
    let predictions = store
        .export_predictions(options.since)
        .await
        .map_err(read)?;
    let feedback = store.export_feedback(options.since).await.map_err(read)?;
    let inputs = store.export_inputs(options.since).await.map_err(read)?;
    let (outcomes, feeds) = store.export_outcomes().await.map_err(read)?;
    eprintln!(
        "  read {} predictions, {} feedback, {} inputs, {} outcomes",
        predictions.len(),
        feedback.len(),
        inputs.len(),
        outcomes.len()
    );

    let mut subjects: BTreeMap<&str, Subject> = BTreeMap::new();
    let mut skipped: BTreeMap<String, u64> = BTreeMap::new();
    let (mut comments, mut scrubbed) = (0u64, 0u64);
    let event = |hash: &str, at: DateTime<Utc>, code: String| {
        let (id, shift) = deid.keys(hash);
        MedsEvent::new(id, Some(at + shift), code)
    };
    for p in &predictions {
        let Ok(at) = DateTime::parse_from_rfc3339(&p.at) else {
            *skipped
                .entry("prediction with an unreadable time".into())
                .or_default() += 1;
            continue;
        };
        let mut e = event(
            &p.patient_hash,
            at.with_timezone(&Utc),
            format!("BEDSIDE//PREDICTION//{}//{}", p.model, p.model_version),
        );
        e.numeric_value = p.risk;
        e.text_value = Some(p.outcome.clone());
        e.prediction = Some(deid.token("prediction", &p.id));
        e.mode = Some(p.mode.clone());
        e.service = Some(p.service_id.clone());
        e.indicator = p.indicator.clone();
        subjects.entry(&p.patient_hash).or_default().events.push(e);
    }
    for f in &feedback {
        let Ok(at) = DateTime::parse_from_rfc3339(&f.outcome_timestamp) else {
            *skipped
                .entry("feedback with an unreadable outcomeTimestamp".into())
                .or_default() += 1;
            continue;
        };
        let at = at.with_timezone(&Utc);
        let subject = subjects.entry(&f.patient_hash).or_default();
        let prediction = deid.token("prediction", &f.card_uuid);
        let mut e = event(
            &f.patient_hash,
            at,
            format!("BEDSIDE//FEEDBACK//{}", f.outcome),
        );
        // A coded reason only; its display stays behind.
        e.text_value =
            f.override_reason_code
                .as_ref()
                .map(|code| match &f.override_reason_system {
                    Some(system) => format!("{system}|{code}"),
                    None => code.clone(),
                });
        e.numeric_value = serde_json::from_str::<Vec<serde_json::Value>>(&f.accepted_suggestions)
            .ok()
            .map(|v| v.len() as f64);
        e.prediction = Some(prediction.clone());
        subject.events.push(e);
        if let Some(comment) = f.comment.as_deref().filter(|c| !c.trim().is_empty()) {
            comments += 1;
            if options.free_text == FreeText::Scrub {
                scrubbed += 1;
                let mut e = event(&f.patient_hash, at, "BEDSIDE//FEEDBACK_COMMENT".into());
                e.text_value = Some(super::scrub::scrub(comment));
                e.prediction = Some(prediction);
                subject.events.push(e);
            }
        }
    }
    for i in &inputs {
        let subject = subjects.entry(&i.patient_hash).or_default();
        let (subject_id, shift) = deid.keys(&i.patient_hash);
        let width = i.input.features.len();
        let rows: Vec<&[f32]> = if width == 0 {
            Vec::new()
        } else {
            i.input.matrix.chunks(2 * width).collect()
        };
        if rows.iter().any(|r| r.len() != 2 * width) {
            *skipped
                .entry("model input whose matrix does not fit its features".into())
                .or_default() += 1;
            continue;
        }
        subject.inputs.push(InputLine {
            subject_id,
            prediction: deid.token("prediction", &i.prediction_id),
            time: time_text(i.at + shift),
            window_start: time_text(i.input.window_start + shift),
            step_seconds: i.input.step_seconds,
            features: i.input.features.clone(),
            values: rows.iter().map(|r| r[..width].to_vec()).collect(),
            observed: rows
                .iter()
                .map(|r| r[width..].iter().map(|m| u8::from(*m > 0.5)).collect())
                .collect(),
        });
        // Inputs come oldest first: the newest one's description of the patient stands.
        subject.quasi = Some(i.input.quasi.clone());
    }
    for (name, hash, at) in &outcomes {
        subjects.entry(hash).or_default().events.push(event(
            hash,
            *at,
            format!("BEDSIDE//OUTCOME//{name}"),
        ));
    }
    // Per subject, until when each outcome feed is complete (shifted like the subject's times).
    let with_predictions: BTreeSet<&str> = predictions
        .iter()
        .map(|p| p.patient_hash.as_str())
        .collect();
    for hash in &with_predictions {
        for (name, through) in &feeds {
            subjects.entry(hash).or_default().events.push(event(
                hash,
                *through,
                format!("BEDSIDE//OUTCOMES_KNOWN_THROUGH//{name}"),
            ));
        }
    }
    // Outcomes of patients with no prediction in the export say nothing about a prediction.
    subjects.retain(|hash, _| with_predictions.contains(hash));

    // k-anonymity over the released quasi-identifiers (admission month: of the first shifted
    // event); small classes are left out.
    let classed: Vec<(&str, Subject, Class)> = subjects
        .into_iter()
        .map(|(hash, s)| {
            let admitted = s
                .events
                .iter()
                .filter_map(|e| e.time)
                .min()
                .map(|t| t.format("%Y-%m").to_string());
            let class = (s.quasi.clone().unwrap_or_default(), admitted);
            (hash, s, class)
        })
        .collect();
    let mut class_sizes: BTreeMap<Class, u64> = BTreeMap::new();
    for (_, _, class) in &classed {
        *class_sizes.entry(class.clone()).or_default() += 1;
    }
    let k = u64::from(options.k);
    let (mut subjects_suppressed, mut events_suppressed, mut inputs_suppressed) = (0, 0, 0);
    let mut events = Vec::new();
    let mut input_lines = Vec::new();
    for (hash, mut s, class) in classed {
        if class_sizes.get(&class).copied().unwrap_or(0) < k {
            subjects_suppressed += 1;
            events_suppressed += s.events.len() as u64;
            inputs_suppressed += s.inputs.len() as u64;
            continue;
        }
        if let Some(q) = &s.quasi {
            let (id, _) = deid.keys(hash);
            for (kind, value) in [
                ("AGE_BAND", q.age_band()),
                ("SEX", q.sex()),
                ("ZIP3", q.zip3()),
            ] {
                if let Some(value) = value {
                    s.events.push(MedsEvent::new(
                        id,
                        None,
                        format!("BEDSIDE//{kind}//{value}"),
                    ));
                }
            }
        }
        events.append(&mut s.events);
        input_lines.append(&mut s.inputs);
    }
    let kept: Vec<u64> = class_sizes.values().copied().filter(|n| *n >= k).collect();
    events.sort_by(|a, b| {
        (a.subject_id, &a.time, &a.code, &a.prediction).cmp(&(
            b.subject_id,
            &b.time,
            &b.code,
            &b.prediction,
        ))
    });
    input_lines.sort_by(|a, b| {
        (a.subject_id, &a.time, &a.prediction).cmp(&(b.subject_id, &b.time, &b.prediction))
    });

    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for e in &events {
        let kind = e.code.split("//").take(2).collect::<Vec<_>>().join("//");
        *counts.entry(kind).or_default() += 1;
    }
    let exported: BTreeSet<i64> = events.iter().map(|e| e.subject_id).collect();
    let dated =
        events.iter().filter(|e| e.time.is_some()).count() as u64 + 2 * input_lines.len() as u64;
    let report = DeidReport {
        export_id: options.export_id.to_owned(),
        series: series.to_owned(),
        since: options.since,
        max_shift_days: options.max_shift_days,
        free_text: options.free_text,
        subjects: exported.len() as u64,
        inputs: input_lines.len() as u64,
        identifiers: identifier_classes(
            options,
            exported.len() as u64,
            dated,
            (comments, scrubbed),
            predictions.len() as u64,
            &counts,
        ),
        events: counts,
        quasi_identifiers: KAnonymity {
            over: QUASI_IDENTIFIERS.to_vec(),
            k: options.k,
            classes: kept.len() as u64,
            smallest_class: kept.iter().copied().min().unwrap_or(0),
            subjects_suppressed,
            events_suppressed,
            inputs_suppressed,
            note: "age band, sex and ZIP3 as generalised when the input was stored (absent for subjects of services that keep no inputs); admission month = month of the subject's first exported event, after its date shift",
        },
        skipped,
    };

    write_files(options, &events, &input_lines, &report)?;
    Ok(report)
}

/// The report's identifier classes: what each became.
fn identifier_classes(
    options: &ExportOptions<'_>,
    subjects: u64,
    dated: u64,
    (comments, scrubbed): (u64, u64),
    predictions: u64,
    counts: &BTreeMap<String, u64>,
) -> Vec<IdentifierClass> {
    let count = |kind: &str| counts.get(kind).copied().unwrap_or(0);
    let class = |class: &str, action: String, count: u64| IdentifierClass {
        class: class.to_owned(),
        action,
        count,
    };
    vec![
        class(
            "patient identifiers (FHIR Patient ids, record numbers; held by the store only as a salted hash)",
            "replaced by subject_id = HMAC-SHA256(site secret, series, pseudonym); not joinable without the secret, nor across series".into(),
            subjects,
        ),
        class(
            "dates and times (Safe Harbor: all elements of dates)",
            format!("shifted per patient by a whole number of days within ±{}, never 0 (same shift for all of a patient's events and inputs; new series, new shifts)", options.max_shift_days),
            dated,
        ),
        class(
            "birth dates and ages",
            "birth dates never stored; ages generalised when stored to 5-year bands, every age over 89 pooled as 90+".into(),
            count("BEDSIDE//AGE_BAND"),
        ),
        class(
            "geographic subdivisions smaller than a state (addresses, ZIP codes)",
            "addresses never stored; ZIP codes cut to their first 3 digits when stored, 000 for the 17 areas of 20,000 people or fewer".into(),
            count("BEDSIDE//ZIP3"),
        ),
        match options.free_text {
            FreeText::Drop => class(
                "free text: clinicians' override comments",
                "dropped (coded override reasons kept)".into(),
                comments,
            ),
            FreeText::Scrub => class(
                "free text: clinicians' override comments",
                "scrubbed by the allow-list rules (every word not on the list of ordinary and clinical words, every number of 90 or more or with more than one decimal → [REDACTED])".into(),
                scrubbed,
            ),
        },
        class(
            "free text: abstention reasons, override reason displays",
            "dropped".into(),
            predictions,
        ),
        class(
            "record ids: card / prediction uuids, hookInstance",
            "card ids replaced by HMAC tokens; hookInstance not exported".into(),
            predictions,
        ),
        class(
            "EHR client (JWT iss), tenant, FHIR server URL, ward / unit",
            "not exported".into(),
            predictions,
        ),
        class(
            "names, telecom, e-mail, SSN, plan and account numbers, certificate and licence numbers, vehicle and device ids, URLs, IP addresses, biometrics, images, other unique codes",
            "never stored by the gateway: nothing to remove".into(),
            0,
        ),
    ]
}

/// One row of the codes table (`metadata/codes.*`): MEDS `code`, `description`, `parent_codes`.
#[derive(Serialize)]
struct CodeRow {
    code: String,
    description: String,
    parent_codes: [String; 0],
}

/// The codes an export holds, with their meaning (the data dictionary's codes table).
fn codes(events: &[MedsEvent]) -> Vec<CodeRow> {
    let distinct: BTreeSet<&str> = events.iter().map(|e| e.code.as_str()).collect();
    distinct
        .into_iter()
        .map(|code| {
            let parts: Vec<&str> = code.split("//").collect();
            let description = match parts.as_slice() {
                ["BEDSIDE", "PREDICTION", model, version] => format!("a score of model {model} version {version}: numeric_value = calibrated risk (null: no score), text_value = what became of it (shown, below_threshold, abstained, suppressed, downgraded, deduplicated, shadow, no_score, disabled)"),
                ["BEDSIDE", "FEEDBACK", outcome] => format!("clinician feedback `{outcome}` on the card of `prediction`: text_value = coded override reason (system|code), numeric_value = suggestions accepted"),
                ["BEDSIDE", "OUTCOME", event] => format!("onset of the outcome `{event}` (imported with `bedside outcomes`)"),
                ["BEDSIDE", "FEEDBACK_COMMENT"] => "the clinician's comment on the card of `prediction`, scrubbed (export --free-text scrub): text_value".to_owned(),
                ["BEDSIDE", "AGE_BAND", band] => format!("static: the subject's age band {band} at its newest stored input (90+: every age over 89)"),
                ["BEDSIDE", "SEX", sex] => format!("static: administrative sex `{sex}` (FHIR Patient.gender)"),
                ["BEDSIDE", "ZIP3", zip3] => format!("static: first 3 digits of the home ZIP code, {zip3} (000: an area of 20,000 people or fewer)"),
                ["BEDSIDE", "OUTCOMES_KNOWN_THROUGH", event] => format!("outcomes `{event}` are complete up to this time for this subject: a prediction whose horizon ends before it without an OUTCOME event is a negative"),
                _ => "bedside event".to_owned(),
            };
            CodeRow {
                code: code.to_owned(),
                description,
                parent_codes: [],
            }
        })
        .collect()
}

fn write_files(
    options: &ExportOptions<'_>,
    events: &[MedsEvent],
    inputs: &[InputLine],
    report: &DeidReport,
) -> Result<(), String> {
    let io = |e: std::io::Error| format!("{}: {e}", options.out.display());
    for folder in ["data", "metadata", "inputs"] {
        std::fs::create_dir_all(options.out.join(folder)).map_err(io)?;
    }
    let (parquet, ndjson) = match options.format {
        ExportFormat::Both => (true, true),
        ExportFormat::Parquet => (true, false),
        ExportFormat::Ndjson => (false, true),
    };
    let code_table = codes(events);
    if parquet {
        super::meds_parquet::write_data(&options.out.join("data/data.parquet"), events)?;
        let pairs: Vec<(&str, &str)> = code_table
            .iter()
            .map(|c| (c.code.as_str(), c.description.as_str()))
            .collect();
        super::meds_parquet::write_codes(&options.out.join("metadata/codes.parquet"), &pairs)?;
    }
    if ndjson {
        write_ndjson(&options.out.join("data/data.ndjson"), events, "events")?;
        write_ndjson(
            &options.out.join("metadata/codes.ndjson"),
            &code_table,
            "codes",
        )?;
    }
    write_ndjson(
        &options.out.join("inputs/inputs.ndjson"),
        inputs,
        "model inputs",
    )?;
    let dataset = json!({
        "dataset_name": "bedside learning data",
        "dataset_version": options.export_id,
        "etl_name": "bedside export",
        "etl_version": env!("CARGO_PKG_VERSION"),
        "meds_version": MEDS_VERSION,
        "description_uri": "README.md",
        "raw_source_id_columns": ["prediction"],
        "other_extension_columns": ["mode", "service", "indicator"],
    });
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default() + "\n";
    std::fs::write(options.out.join("metadata/dataset.json"), pretty(&dataset)).map_err(io)?;
    let report_json = serde_json::to_value(report).map_err(|e| e.to_string())?;
    std::fs::write(options.out.join("deid_report.json"), pretty(&report_json)).map_err(io)?;
    std::fs::write(options.out.join("README.md"), DATA_DICTIONARY).map_err(io)?;
    Ok(())
}

/// Writes `items` to `path`, one JSON value per line, with a progress bar on stderr for long
/// files (every 10 %).
fn write_ndjson<T: Serialize>(path: &Path, items: &[T], what: &str) -> Result<(), String> {
    let io = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    let tenth = (items.len() / 10).max(1);
    for (i, item) in items.iter().enumerate() {
        serde_json::to_writer(&mut out, item).map_err(|e| e.to_string())?;
        out.write_all(b"\n").map_err(io)?;
        if items.len() >= PROGRESS_FROM && (i + 1) % tenth == 0 {
            let done = (i + 1) * 10 / items.len();
            eprintln!(
                "  [{}{}] {} / {} {what}",
                "#".repeat(done),
                " ".repeat(10 - done.min(10)),
                i + 1,
                items.len()
            );
        }
    }
    out.flush().map_err(io)
}

/// Files shorter than this are written without a progress bar.
const PROGRESS_FROM: usize = 50_000;

/// The data dictionary written with every export.
const DATA_DICTIONARY: &str = "# bedside learning data (MEDS 0.4 event stream)

`data/data.parquet` (MEDS schema: subject_id int64, time timestamp[us] in UTC, code string,
numeric_value float32, text_value string, plus the columns below) and `data/data.ndjson` (the
same events, one per line, numeric values as float64): sorted by `subject_id`, `time`, `code`.
`bedside export --format parquet|ndjson` writes only one of them.

| column | type | meaning |
|---|---|---|
| subject_id | int64 | the patient: HMAC-SHA256 of the gateway's pseudonym under the site secret |
| time | RFC 3339 UTC, microseconds, or null | when it happened, shifted per patient by a whole number of days; null for static facts (AGE_BAND, SEX, ZIP3) |
| code | string | what happened: see `metadata/codes.parquet` / `codes.ndjson` |
| numeric_value | float or null | PREDICTION: calibrated risk (null: no score); FEEDBACK: suggestions accepted |
| text_value | string or null | PREDICTION: outcome of the call (shown, below_threshold, abstained, suppressed, downgraded, deduplicated, shadow, no_score, disabled); FEEDBACK: coded override reason (system|code) |
| prediction | string or null | token of the prediction (card): joins FEEDBACK to its PREDICTION |
| mode | string or null | PREDICTION: active (cards shown) or shadow (scored silently) |
| service | string or null | PREDICTION: the CDS service that called the model |
| indicator | string or null | PREDICTION: the card's indicator (info, warning, critical), or what a shadow version would have shown |

`inputs/inputs.ndjson`: one line per prediction whose service keeps its model input
(`[learning] store_inputs = true`): `subject_id`, `prediction` (as in data), `time` and
`window_start` (shifted like the subject's events), `step_seconds`, `features` (the model's
feature names), `values` (`[step][feature]`, normalised as the model's manifest says, 0 where
nothing was measured) and `observed` (`[step][feature]`, 1 where a measurement fell in that step).

`metadata/codes.parquet` / `codes.ndjson`: each code with its description. `metadata/dataset.json`: MEDS dataset
metadata. `deid_report.json`: what was removed or replaced per identifier class, and
k-anonymity over age band, sex, ZIP3 and admission month (subjects in smaller classes left out).

Subject ids, tokens and date shifts are keyed by the site secret and the export's series (its
export id unless `--series` named one): exports of different series cannot be joined.

Labels: an OUTCOME event within a model's horizon after a PREDICTION is a positive; a prediction
whose horizon ends before the subject's OUTCOMES_KNOWN_THROUGH time without one is a negative.
`python -m models.recalibrate <model> --from-version <v> --meds <this folder>` refits a model's
calibration on it.

Trained-on-synthetic-data models; not for clinical use.
";

#[cfg(test)]
mod tests {
    use super::*;

    fn deid(secret: &[u8], series: &str) -> Deid {
        Deid::new(secret, series, 30)
    }

    #[test]
    fn subject_ids_and_shifts_need_the_secret_and_change_with_the_series() {
        let a = deid(&[1; 32], "2026-q4");
        let b = deid(&[2; 32], "2026-q4");
        let c = deid(&[1; 32], "2027-q1");
        assert_eq!(a.subject_id("h1"), a.subject_id("h1"));
        assert!(a.subject_id("h1") >= 0);
        assert_ne!(
            a.subject_id("h1"),
            b.subject_id("h1"),
            "another secret, another id"
        );
        assert_ne!(
            a.subject_id("h1"),
            c.subject_id("h1"),
            "another series, another id"
        );
        let shifts: Vec<i64> = (0..200)
            .map(|i| a.shift(&format!("p{i}")).num_days())
            .collect();
        assert!(shifts.iter().all(|d| (-30..=30).contains(d) && *d != 0));
        assert!(
            shifts.iter().collect::<BTreeSet<_>>().len() > 30,
            "shifts spread over the range"
        );
        let moved = (0..200)
            .filter(|i| a.shift(&format!("p{i}")) != c.shift(&format!("p{i}")))
            .count();
        assert!(moved > 150, "a new series draws new shifts: {moved}/200");
    }
}
