//! Outcomes known later, joined to predictions for evaluation: NDJSON lines
//! `{"patient": "Patient/123", "fhirServer": "https://ehr.example/fhir", "event":
//! "deterioration", "at": "2026-12-01T10:00:00Z"}` (a site's extract of transfers, diagnoses or
//! lab criteria). Each patient id is replaced by the store's pseudonym on the way in, so the
//! store never holds it; the feed is marked complete through the instant the site names.

use std::collections::BTreeMap;
use std::io::BufRead;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::store::{fhir_base, Store};

/// One outcome line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct OutcomeLine {
    patient: String,
    fhir_server: String,
    event: String,
    at: DateTime<Utc>,
}

/// What an import added, per event.
#[derive(Debug, Default, serde::Serialize)]
pub struct OutcomeImport {
    /// Lines read per event.
    pub read: BTreeMap<String, u64>,
    /// New outcomes per event (a repeated line is kept once).
    pub added: BTreeMap<String, u64>,
    pub through: Option<DateTime<Utc>>,
}

/// Imports NDJSON outcome lines from `reader`, complete through `through` for each event
/// they name and each of `events` (an event with no line in the file: none happened). A
/// malformed line stops the import before anything is stored and is named by its number
/// (never its content: it holds a patient id).
pub async fn import_outcomes(
    store: &Store,
    reader: impl BufRead,
    events: &[String],
    through: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<OutcomeImport, String> {
    if through > now + chrono::Duration::minutes(5) {
        return Err(format!(
            "`through` ({through}) is in the future: outcomes cannot be complete yet"
        ));
    }
    let mut by_event: BTreeMap<String, Vec<(String, DateTime<Utc>)>> =
        events.iter().map(|e| (e.clone(), Vec::new())).collect();
    for (i, line) in reader.lines().enumerate() {
        let number = i + 1;
        let line = line.map_err(|e| format!("line {number}: {e}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let o: OutcomeLine = serde_json::from_str(&line).map_err(|e| {
            format!(
                "line {number}: expected {{\"patient\", \"fhirServer\", \"event\", \"at\"}} ({})",
                e.classify_name()
            )
        })?;
        let id = o.patient.strip_prefix("Patient/").unwrap_or(&o.patient);
        let event_ok = !o.event.is_empty()
            && o.event.len() <= 64
            && o.event
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if id.is_empty() || !event_ok {
            return Err(format!(
                "line {number}: empty patient or malformed event name"
            ));
        }
        if o.at > through {
            return Err(format!(
                "line {number}: an outcome after the feed's `through` instant ({through})"
            ));
        }
        let hash = store
            .pseudonym(&fhir_base(&o.fhir_server), id)
            .await
            .map_err(|e| e.to_string())?;
        by_event.entry(o.event).or_default().push((hash, o.at));
    }
    let mut import = OutcomeImport {
        through: Some(through),
        ..OutcomeImport::default()
    };
    for (event, outcomes) in by_event {
        let added = store
            .record_outcomes(&event, &outcomes, through, now)
            .await
            .map_err(|e| e.to_string())?;
        import.read.insert(event.clone(), outcomes.len() as u64);
        import.added.insert(event, added);
    }
    Ok(import)
}

/// serde_json's error category, without the offending text.
trait Classify {
    fn classify_name(&self) -> &'static str;
}

impl Classify for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "unreadable",
            serde_json::error::Category::Syntax => "not JSON",
            serde_json::error::Category::Data => "wrong or missing fields",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}
