//! Learning data out (`bedside export`): what the gateway recorded — each prediction's score,
//! model version and card outcome, the clinician's feedback and override reason, and the
//! outcomes imported later — as a MEDS event stream (NDJSON: `subject_id`, `time`, `code`,
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

use crate::store::Store;

/// Shortest site secret accepted.
pub const MIN_SECRET_BYTES: usize = 32;
/// The MEDS schema version the files follow.
pub const MEDS_VERSION: &str = "0.3.3";

/// What to export and how to de-identify it.
pub struct ExportOptions<'a> {
    /// An empty or new folder.
    pub out: &'a Path,
    /// Names the export; seeds the date shifts (reuse it only to reproduce an export).
    pub export_id: &'a str,
    /// Predictions made at or after this instant.
    pub since: DateTime<Utc>,
    /// Dates move by at most this many days (at least 1).
    pub max_shift_days: u32,
    /// The site secret (HMAC key), at least [`MIN_SECRET_BYTES`].
    pub secret: &'a [u8],
}

/// One MEDS event (one NDJSON line).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MedsEvent {
    pub subject_id: i64,
    /// Shifted, RFC 3339 UTC with microseconds.
    pub time: String,
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

/// What an export removed or replaced, per identifier class, and what it wrote.
#[derive(Debug, Clone, Serialize)]
pub struct DeidReport {
    pub export_id: String,
    pub since: DateTime<Utc>,
    pub max_shift_days: u32,
    pub subjects: u64,
    pub events: BTreeMap<String, u64>,
    pub identifiers: Vec<IdentifierClass>,
    pub quasi_identifiers: serde_json::Value,
    pub skipped: BTreeMap<String, u64>,
}

/// One identifier class of the report.
#[derive(Debug, Clone, Serialize)]
pub struct IdentifierClass {
    pub class: String,
    pub action: String,
    pub count: u64,
}

/// The keyed functions of one export.
struct Deid {
    key: ring::hmac::Key,
    export_id: String,
    max_shift_days: i64,
}

impl Deid {
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

    /// A non-negative 63-bit subject id for a patient pseudonym.
    fn subject_id(&self, patient_hash: &str) -> i64 {
        let m = self.mac(&["subject", patient_hash]);
        let mut b = [0u8; 8];
        b.copy_from_slice(&m[..8]);
        (u64::from_be_bytes(b) >> 1) as i64
    }

    /// The patient's shift in days, in [-max, max], per export id.
    fn shift(&self, patient_hash: &str) -> Duration {
        let m = self.mac(&["shift", &self.export_id, patient_hash]);
        let mut b = [0u8; 8];
        b.copy_from_slice(&m[..8]);
        let span = 2 * self.max_shift_days as u64 + 1;
        Duration::days((u64::from_be_bytes(b) % span) as i64 - self.max_shift_days)
    }

    /// A token standing for a card id.
    fn token(&self, kind: &str, value: &str) -> String {
        hex::encode(&self.mac(&[kind, value])[..16])
    }
}

fn time_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

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
    if options.export_id.trim().is_empty() {
        return Err("an export id is required".into());
    }
    if std::fs::read_dir(options.out).is_ok_and(|mut d| d.next().is_some()) {
        return Err(format!(
            "{} is not empty: an export never overwrites",
            options.out.display()
        ));
    }
    let deid = Deid {
        key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, options.secret),
        export_id: options.export_id.to_owned(),
        max_shift_days: i64::from(options.max_shift_days),
    };
    let predictions = store
        .export_predictions(options.since)
        .await
        .map_err(|e| e.to_string())?;
    let feedback = store
        .export_feedback(options.since)
        .await
        .map_err(|e| e.to_string())?;
    let (outcomes, feeds) = store.export_outcomes().await.map_err(|e| e.to_string())?;

    let mut events = Vec::new();
    let mut skipped: BTreeMap<String, u64> = BTreeMap::new();
    let mut subjects: BTreeSet<&str> = BTreeSet::new();
    let mut comments = 0;
    let event = |hash: &str, at: DateTime<Utc>, code: String| MedsEvent {
        subject_id: deid.subject_id(hash),
        time: time_text(at + deid.shift(hash)),
        code,
        numeric_value: None,
        text_value: None,
        prediction: None,
        mode: None,
        service: None,
        indicator: None,
    };
    for p in &predictions {
        let Ok(at) = DateTime::parse_from_rfc3339(&p.at) else {
            *skipped
                .entry("prediction with an unreadable time".into())
                .or_default() += 1;
            continue;
        };
        subjects.insert(&p.patient_hash);
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
        events.push(e);
    }
    for f in &feedback {
        let Ok(at) = DateTime::parse_from_rfc3339(&f.outcome_timestamp) else {
            *skipped
                .entry("feedback with an unreadable outcomeTimestamp".into())
                .or_default() += 1;
            continue;
        };
        comments += f.had_comment as u64;
        let mut e = event(
            &f.patient_hash,
            at.with_timezone(&Utc),
            format!("BEDSIDE//FEEDBACK//{}", f.outcome),
        );
        // A coded reason only; its display and the clinician's comment stay behind.
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
        e.prediction = Some(deid.token("prediction", &f.card_uuid));
        events.push(e);
    }
    for (name, hash, at) in &outcomes {
        events.push(event(hash, *at, format!("BEDSIDE//OUTCOME//{name}")));
    }
    // Per subject, until when each outcome feed is complete (shifted like the subject's times).
    for hash in &subjects {
        for (name, through) in &feeds {
            events.push(event(
                hash,
                *through,
                format!("BEDSIDE//OUTCOMES_KNOWN_THROUGH//{name}"),
            ));
        }
    }
    events.sort_by(|a, b| {
        (a.subject_id, &a.time, &a.code, &a.prediction).cmp(&(
            b.subject_id,
            &b.time,
            &b.code,
            &b.prediction,
        ))
    });

    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for e in &events {
        let kind = e.code.split("//").take(2).collect::<Vec<_>>().join("//");
        *counts.entry(kind).or_default() += 1;
    }
    let dated = events.len() as u64;
    let report = DeidReport {
        export_id: options.export_id.to_owned(),
        since: options.since,
        max_shift_days: options.max_shift_days,
        subjects: events.iter().map(|e| e.subject_id).collect::<BTreeSet<_>>().len() as u64,
        events: counts,
        identifiers: vec![
            IdentifierClass {
                class: "patient identifiers (FHIR Patient ids, record numbers; held by the store only as a salted hash)".into(),
                action: "replaced by subject_id = HMAC-SHA256(site secret, pseudonym); not joinable without the secret".into(),
                count: subjects.len() as u64,
            },
            IdentifierClass {
                class: "dates and times (Safe Harbor: all elements of dates)".into(),
                action: format!("shifted per patient by one whole number of days within ±{} (same shift for all of a patient's events; new export id, new shifts)", options.max_shift_days),
                count: dated,
            },
            IdentifierClass {
                class: "free text: clinicians' override comments, abstention reasons, override reason displays".into(),
                action: "dropped (coded override reasons kept)".into(),
                count: comments,
            },
            IdentifierClass {
                class: "record ids: card / prediction uuids, hookInstance".into(),
                action: "card ids replaced by HMAC tokens; hookInstance not exported".into(),
                count: predictions.len() as u64,
            },
            IdentifierClass {
                class: "EHR client (JWT iss), tenant, FHIR server URL, ward / unit".into(),
                action: "not exported".into(),
                count: predictions.len() as u64,
            },
            IdentifierClass {
                class: "names, addresses and ZIP codes, telecom, e-mail, birth dates and ages, SSN, plan and account numbers, device ids, URLs, IP addresses, biometrics, images".into(),
                action: "never stored by the gateway: nothing to remove".into(),
                count: 0,
            },
        ],
        quasi_identifiers: json!({
            "exported": [],
            "k_anonymity": "not applicable: no age, sex, ZIP code or admission date is exported; every time is shifted per patient",
        }),
        skipped,
    };

    write_files(options, &events, &report)?;
    Ok(report)
}

/// The codes an export can hold, with their meaning (the data dictionary's codes table).
fn codes(events: &[MedsEvent]) -> Vec<serde_json::Value> {
    let distinct: BTreeSet<&str> = events.iter().map(|e| e.code.as_str()).collect();
    distinct
        .into_iter()
        .map(|code| {
            let parts: Vec<&str> = code.split("//").collect();
            let description = match parts.as_slice() {
                ["BEDSIDE", "PREDICTION", model, version] => format!("a score of model {model} version {version}: numeric_value = calibrated risk (null: no score), text_value = what became of it (shown, below_threshold, abstained, suppressed, downgraded, deduplicated, shadow, no_score, disabled)"),
                ["BEDSIDE", "FEEDBACK", outcome] => format!("clinician feedback `{outcome}` on the card of `prediction`: text_value = coded override reason (system|code), numeric_value = suggestions accepted"),
                ["BEDSIDE", "OUTCOME", event] => format!("onset of the outcome `{event}` (imported with `bedside outcomes`)"),
                ["BEDSIDE", "OUTCOMES_KNOWN_THROUGH", event] => format!("outcomes `{event}` are complete up to this time for this subject: a prediction whose horizon ends before it without an OUTCOME event is a negative"),
                _ => "bedside event".to_owned(),
            };
            json!({"code": code, "description": description, "parent_codes": []})
        })
        .collect()
}

fn write_files(
    options: &ExportOptions<'_>,
    events: &[MedsEvent],
    report: &DeidReport,
) -> Result<(), String> {
    let io = |e: std::io::Error| format!("{}: {e}", options.out.display());
    std::fs::create_dir_all(options.out.join("data")).map_err(io)?;
    std::fs::create_dir_all(options.out.join("metadata")).map_err(io)?;
    let mut data = std::io::BufWriter::new(
        std::fs::File::create(options.out.join("data/data.ndjson")).map_err(io)?,
    );
    for (i, e) in events.iter().enumerate() {
        serde_json::to_writer(&mut data, e).map_err(|e| e.to_string())?;
        data.write_all(b"\n").map_err(io)?;
        if (i + 1) % 100_000 == 0 {
            eprintln!("  {} / {} events written", i + 1, events.len());
        }
    }
    data.flush().map_err(io)?;
    let mut code_lines = String::new();
    for c in codes(events) {
        code_lines.push_str(&c.to_string());
        code_lines.push('\n');
    }
    std::fs::write(options.out.join("metadata/codes.ndjson"), code_lines).map_err(io)?;
    let dataset = json!({
        "dataset_name": "bedside learning data",
        "dataset_version": options.export_id,
        "etl_name": "bedside export",
        "etl_version": env!("CARGO_PKG_VERSION"),
        "meds_version": MEDS_VERSION,
        "notes": "NDJSON with the MEDS data columns (subject_id int64, time, code, numeric_value, text_value) and bedside's columns (prediction, mode, service, indicator); de-identified (deid_report.json)",
    });
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default() + "\n";
    std::fs::write(options.out.join("metadata/dataset.json"), pretty(&dataset)).map_err(io)?;
    let report_json = serde_json::to_value(report).map_err(|e| e.to_string())?;
    std::fs::write(options.out.join("deid_report.json"), pretty(&report_json)).map_err(io)?;
    std::fs::write(options.out.join("README.md"), DATA_DICTIONARY).map_err(io)?;
    Ok(())
}

/// The data dictionary written with every export.
const DATA_DICTIONARY: &str = "# bedside learning data (MEDS event stream, NDJSON)

`data/data.ndjson`: one event per line, sorted by `subject_id`, `time`, `code`.

| column | type | meaning |
|---|---|---|
| subject_id | int64 | the patient: HMAC-SHA256 of the gateway's pseudonym under the site secret |
| time | RFC 3339 UTC, microseconds | when it happened, shifted per patient by a whole number of days |
| code | string | what happened: see `metadata/codes.ndjson` |
| numeric_value | float or null | PREDICTION: calibrated risk (null: no score); FEEDBACK: suggestions accepted |
| text_value | string or null | PREDICTION: outcome of the call (shown, below_threshold, abstained, suppressed, downgraded, deduplicated, shadow, no_score, disabled); FEEDBACK: coded override reason (system|code) |
| prediction | string or null | token of the prediction (card): joins FEEDBACK to its PREDICTION |
| mode | string or null | PREDICTION: active (cards shown) or shadow (scored silently) |
| service | string or null | PREDICTION: the CDS service that called the model |
| indicator | string or null | PREDICTION: the card's indicator (info, warning, critical), or what a shadow version would have shown |

`metadata/codes.ndjson`: each code with its description. `metadata/dataset.json`: MEDS dataset
metadata. `deid_report.json`: what was removed or replaced per identifier class.

Labels: an OUTCOME event within a model's horizon after a PREDICTION is a positive; a prediction
whose horizon ends before the subject's OUTCOMES_KNOWN_THROUGH time without one is a negative.
`python -m models.recalibrate <model> --from-version <v> --meds <this folder>` refits a model's
calibration on it.

Trained-on-synthetic-data models; not for clinical use.
";

#[cfg(test)]
mod tests {
    use super::*;

    fn deid(secret: &[u8], export_id: &str) -> Deid {
        Deid {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
            export_id: export_id.into(),
            max_shift_days: 30,
        }
    }

    #[test]
    fn subject_ids_need_the_secret_and_shifts_change_with_the_export_id() {
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
        assert_eq!(
            a.subject_id("h1"),
            c.subject_id("h1"),
            "the site's ids are stable"
        );
        let shifts: Vec<i64> = (0..200)
            .map(|i| a.shift(&format!("p{i}")).num_days())
            .collect();
        assert!(shifts.iter().all(|d| (-30..=30).contains(d)));
        assert!(
            shifts.iter().collect::<BTreeSet<_>>().len() > 30,
            "shifts spread over the range"
        );
        let moved = (0..200)
            .filter(|i| a.shift(&format!("p{i}")) != c.shift(&format!("p{i}")))
            .count();
        assert!(moved > 150, "a new export id draws new shifts: {moved}/200");
    }
}
