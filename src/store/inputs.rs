//! Model inputs kept for learning: for services that opt in (`[learning] store_inputs`), the
//! feature matrix a prediction was made from — normalised values and observed masks on the
//! model's time grid — and the patient's quasi-identifiers, generalised as they are captured
//! ([`QuasiIdentifiers::generalise`]), so the store never holds a birth date, a full ZIP code
//! or an exact age over 89. Written in the prediction's own transaction; purged on their own
//! retention (`[retention] inputs`) and with their prediction; read by `bedside export`.

use chrono::{DateTime, Datelike, NaiveDate, Utc};

use super::{parse_timestamp, timestamp, Store, StoreError};

/// The input one prediction was scored on.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelInput {
    /// Start of the model's window; step `i` covers `[start + i·step, start + (i+1)·step)`.
    pub window_start: DateTime<Utc>,
    /// Length of one step of the grid.
    pub step_seconds: i64,
    /// Feature names, in the model's order.
    pub features: Vec<String>,
    /// Row-major `[steps][2 × features]`: normalised values, then observed masks (1: measured).
    pub matrix: Vec<f32>,
    /// The patient's generalised quasi-identifiers.
    pub quasi: QuasiIdentifiers,
}

/// Age band, administrative sex and 3-digit ZIP — the quasi-identifiers an export's
/// k-anonymity is computed over — only ever in their generalised form.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct QuasiIdentifiers {
    age_band: Option<String>,
    sex: Option<String>,
    zip3: Option<String>,
}

/// 3-digit ZIP prefixes whose population was 20,000 or fewer (US Census 2000, the list HHS
/// names for Safe Harbor): reported as `000`.
const RESTRICTED_ZIP3: [&str; 17] = [
    "036", "059", "063", "102", "203", "556", "692", "790", "821", "823", "830", "831", "878",
    "879", "884", "890", "893",
];

impl QuasiIdentifiers {
    /// Generalises what a Patient resource says at instant `at`: age in 5-year bands with
    /// every age over 89 pooled as `90+` (Safe Harbor), FHIR `gender` as given (`male`,
    /// `female`, `other`, `unknown`), and the first three digits of a 5- or 9-digit US ZIP
    /// code, `000` where that area is small. Anything else (a foreign postal code, a partial
    /// date) is left out.
    pub fn generalise(
        birth_date: Option<&str>,
        gender: Option<&str>,
        postal_code: Option<&str>,
        at: DateTime<Utc>,
    ) -> Self {
        let age_band = birth_date
            .and_then(|b| NaiveDate::parse_from_str(b.get(..10)?, "%Y-%m-%d").ok())
            .and_then(|born| {
                let today = at.date_naive();
                let mut age = today.year() - born.year();
                if (today.month(), today.day()) < (born.month(), born.day()) {
                    age -= 1;
                }
                match age {
                    a if a < 0 => None,
                    a if a >= 90 => Some("90+".to_owned()),
                    a => Some(format!("{}-{}", a / 5 * 5, a / 5 * 5 + 4)),
                }
            });
        let sex = gender
            .filter(|g| ["male", "female", "other", "unknown"].contains(g))
            .map(str::to_owned);
        let zip3 = postal_code.and_then(|z| {
            let z = z.trim();
            let digits: String = z.chars().filter(char::is_ascii_digit).collect();
            let us = (digits.len() == 5 || digits.len() == 9)
                && z.chars()
                    .all(|c| c.is_ascii_digit() || c == '-' || c == ' ');
            us.then(|| {
                let three = &digits[..3];
                if RESTRICTED_ZIP3.contains(&three) {
                    "000".to_owned()
                } else {
                    three.to_owned()
                }
            })
        });
        Self {
            age_band,
            sex,
            zip3,
        }
    }

    /// `35-39`, `90+`.
    pub fn age_band(&self) -> Option<&str> {
        self.age_band.as_deref()
    }

    /// FHIR administrative gender.
    pub fn sex(&self) -> Option<&str> {
        self.sex.as_deref()
    }

    /// The first three digits of the ZIP code, `000` for a small area.
    pub fn zip3(&self) -> Option<&str> {
        self.zip3.as_deref()
    }
}

/// A stored input as an export reads it, with its prediction's pseudonymised patient.
#[derive(Debug, Clone)]
pub struct ExportInput {
    pub prediction_id: String,
    pub patient_hash: String,
    pub at: DateTime<Utc>,
    pub input: ModelInput,
}

#[derive(sqlx::FromRow)]
struct InputRow {
    prediction_id: String,
    patient_hash: String,
    at: String,
    window_start: String,
    step_seconds: i64,
    features: String,
    matrix: String,
    age_band: Option<String>,
    sex: Option<String>,
    zip3: Option<String>,
}

/// An input serialised for its insert.
pub(super) struct PreparedInput {
    window_start: String,
    step_seconds: i64,
    features: String,
    matrix: String,
    quasi: QuasiIdentifiers,
}

impl PreparedInput {
    /// Serialises `input` (done before the group commit, off its writer).
    pub(super) fn new(input: &ModelInput) -> Result<Self, StoreError> {
        let json = |v: serde_json::Result<String>| {
            v.map_err(|e| StoreError::Malformed(format!("model input: {e}")))
        };
        Ok(Self {
            window_start: timestamp(input.window_start),
            step_seconds: input.step_seconds,
            features: json(serde_json::to_string(&input.features))?,
            matrix: json(serde_json::to_string(&input.matrix))?,
            quasi: input.quasi.clone(),
        })
    }
}

/// Inserts the input of prediction `id` written at `at`, within its transaction.
pub(super) async fn insert_input(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: &str,
    at: &str,
    input: &PreparedInput,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO prediction_inputs (prediction_id, at, window_start, step_seconds, features,
            matrix, age_band, sex, zip3)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (prediction_id) DO NOTHING",
    )
    .persistent(false)
    .bind(id)
    .bind(at)
    .bind(&input.window_start)
    .bind(input.step_seconds)
    .bind(&input.features)
    .bind(&input.matrix)
    .bind(&input.quasi.age_band)
    .bind(&input.quasi.sex)
    .bind(&input.quasi.zip3)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// Stored inputs of predictions about a known patient made at or after `since`.
    pub async fn export_inputs(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<ExportInput>, StoreError> {
        let rows: Vec<InputRow> = sqlx::query_as(
            "SELECT i.prediction_id, p.patient_hash, p.at, i.window_start, i.step_seconds,
                    i.features, i.matrix, i.age_band, i.sex, i.zip3
             FROM prediction_inputs i JOIN predictions p ON p.id = i.prediction_id
             WHERE p.at >= $1 AND p.patient_hash IS NOT NULL ORDER BY p.at, p.id",
        )
        .bind(timestamp(since))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                let malformed =
                    |e: serde_json::Error| StoreError::Malformed(format!("model input: {e}"));
                Ok(ExportInput {
                    at: parse_timestamp(&r.at)?,
                    input: ModelInput {
                        window_start: parse_timestamp(&r.window_start)?,
                        step_seconds: r.step_seconds,
                        features: serde_json::from_str(&r.features).map_err(malformed)?,
                        matrix: serde_json::from_str(&r.matrix).map_err(malformed)?,
                        quasi: QuasiIdentifiers {
                            age_band: r.age_band,
                            sex: r.sex,
                            zip3: r.zip3,
                        },
                    },
                    prediction_id: r.prediction_id,
                    patient_hash: r.patient_hash,
                })
            })
            .collect()
    }

    /// How many inputs are stored (tests, operations).
    pub async fn stored_inputs(&self) -> Result<u64, StoreError> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM prediction_inputs")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn quasi_identifiers_are_generalised_as_safe_harbor_asks() {
        let now = at("2026-12-07T10:00:00Z");
        let q = QuasiIdentifiers::generalise(
            Some("1950-12-08"),
            Some("female"),
            Some("02139-4307"),
            now,
        );
        assert_eq!(q.age_band(), Some("75-79"), "75 until tomorrow");
        assert_eq!(q.sex(), Some("female"));
        assert_eq!(q.zip3(), Some("021"));
        let old = QuasiIdentifiers::generalise(Some("1931-02-03"), None, Some("03601"), now);
        assert_eq!(old.age_band(), Some("90+"), "ages over 89 pooled");
        assert_eq!(old.zip3(), Some("000"), "a small ZIP3 area");
        let foreign = QuasiIdentifiers::generalise(Some("1980"), Some("M"), Some("SW1A 1AA"), now);
        assert_eq!(foreign, QuasiIdentifiers::default(), "nothing guessed");
    }
}
