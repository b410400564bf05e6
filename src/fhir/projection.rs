//! A borrowed serde projection of FHIR Observations: only what features read.
//!
//! String fields are [`Text`]: borrowed from the request body, owned only when a string
//! holds JSON escapes. (A plain `Option<Cow<str>>` would not borrow: serde's
//! `#[serde(borrow)]` reaches a `Cow` only when it is the field's own type, hence the newtype.) Unknown fields and extensions are skipped by serde without building values.
//! An Observation whose projected fields have the wrong JSON type is counted as unreadable
//! and skipped, so one bad resource cannot hide the rest of a patient's data.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

/// A JSON string borrowed from the request body where possible.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
pub struct Text<'a>(#[serde(borrow)] pub Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// Why a prefetch value holds no readable Observations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProjectionError {
    #[error("value is not a JSON object with a `resourceType`")]
    NotAResource,
    /// The EHR reported its own failure to fetch this data (spec: "Prefetch Template").
    #[error("the EHR returned an OperationOutcome instead of data")]
    OperationOutcome,
    #[error("expected a Bundle or Observation, found {0}")]
    UnexpectedType(String),
}

/// Observations found in a prefetch value, and how many entries could not be read.
#[derive(Debug, Default)]
pub struct Projected<'a> {
    pub observations: Vec<ObservationView<'a>>,
    pub unreadable: usize,
}

/// The fields of an Observation that feature extraction reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservationView<'a> {
    #[serde(borrow, default)]
    pub resource_type: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub id: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub status: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub code: Option<CodeableConceptView<'a>>,
    #[serde(borrow, default)]
    pub effective_date_time: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub effective_instant: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub effective_period: Option<PeriodView<'a>>,
    #[serde(borrow, default)]
    pub value_quantity: Option<QuantityView<'a>>,
    #[serde(borrow, default)]
    pub value_codeable_concept: Option<CodeableConceptView<'a>>,
    #[serde(borrow, default)]
    pub component: Vec<ComponentView<'a>>,
}

/// `CodeableConcept.coding` and `text`.
#[derive(Debug, Default, Deserialize)]
pub struct CodeableConceptView<'a> {
    #[serde(borrow, default)]
    pub coding: Vec<CodingView<'a>>,
    /// `CodeableConcept.text`: coded answers some EHRs send as words only.
    #[serde(borrow, default)]
    pub text: Option<Text<'a>>,
}

/// `Coding.system` and `Coding.code`.
#[derive(Debug, Default, Deserialize)]
pub struct CodingView<'a> {
    #[serde(borrow, default)]
    pub system: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub code: Option<Text<'a>>,
    /// `Coding.display`: read as answer text when the code is not one bedside knows.
    #[serde(borrow, default)]
    pub display: Option<Text<'a>>,
}

/// `Quantity` as measured.
#[derive(Debug, Default, Deserialize)]
pub struct QuantityView<'a> {
    #[serde(default)]
    pub value: Option<f64>,
    #[serde(borrow, default)]
    pub unit: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub system: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub code: Option<Text<'a>>,
}

/// `Period.start`/`end`.
#[derive(Debug, Default, Deserialize)]
pub struct PeriodView<'a> {
    #[serde(borrow, default)]
    pub start: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub end: Option<Text<'a>>,
}

/// `Observation.component[]`: blood-pressure panels carry systolic here.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentView<'a> {
    #[serde(borrow, default)]
    pub code: Option<CodeableConceptView<'a>>,
    #[serde(borrow, default)]
    pub value_quantity: Option<QuantityView<'a>>,
    #[serde(borrow, default)]
    pub value_codeable_concept: Option<CodeableConceptView<'a>>,
}

#[derive(Deserialize)]
struct TypeOnly<'a> {
    #[serde(rename = "resourceType", borrow)]
    resource_type: Cow<'a, str>,
}

/// A Bundle read in one pass, each entry's resource straight into the projection.
#[derive(Deserialize)]
struct FastTop<'a> {
    #[serde(rename = "resourceType", borrow)]
    resource_type: Text<'a>,
    #[serde(borrow, default)]
    entry: Vec<FastEntry<'a>>,
}

#[derive(Deserialize)]
struct FastEntry<'a> {
    #[serde(borrow, default)]
    resource: Option<ObservationView<'a>>,
}

/// A prefetch value's type and, for a Bundle, its entries as raw slices: one pass.
#[derive(Deserialize)]
struct TopView<'a> {
    #[serde(rename = "resourceType", borrow)]
    resource_type: Text<'a>,
    #[serde(borrow, default)]
    entry: Vec<EntryView<'a>>,
}

#[derive(Deserialize)]
struct EntryView<'a> {
    #[serde(borrow, default)]
    resource: Option<&'a RawValue>,
}

pub const LOINC: &str = "http://loinc.org";

impl CodeableConceptView<'_> {
    /// Whether any coding is `system|code` for one of `codes`.
    pub fn has_code(&self, system: &str, codes: &[String]) -> bool {
        self.coding.iter().any(|c| {
            c.system.as_deref() == Some(system)
                && c.code
                    .as_deref()
                    .is_some_and(|code| codes.iter().any(|k| k == code))
        })
    }
}

impl ObservationView<'_> {
    /// When the observation applies: `effectiveDateTime`, `effectiveInstant`, or the end
    /// (else start) of `effectivePeriod`.
    pub fn effective_text(&self) -> Option<&str> {
        self.effective_date_time
            .as_deref()
            .or(self.effective_instant.as_deref())
            .or_else(|| {
                self.effective_period
                    .as_ref()
                    .and_then(|p| p.end.as_deref().or(p.start.as_deref()))
            })
    }

    /// Whether the result may be used: `final`, `amended` or `corrected`. Preliminary,
    /// cancelled and entered-in-error results are not scored.
    pub fn is_usable_status(&self) -> bool {
        matches!(
            self.status.as_deref(),
            Some("final" | "amended" | "corrected")
        )
    }
}

/// Reads the Observations out of one prefetch value: a searchset Bundle or one Observation.
/// Non-Observation entries (a Patient via `_include`, an OperationOutcome with
/// `search.mode = outcome`) are skipped.
pub fn observations(value: &RawValue) -> Result<Projected<'_>, ProjectionError> {
    // Fast path, one pass: every entry's resource read straight into the projection. Any
    // entry whose fields have unexpected JSON types makes this fail as a whole; the slow path
    // then isolates entries one by one, so one bad resource cannot hide the rest.
    if let Ok(top) = serde_json::from_str::<FastTop<'_>>(value.get()) {
        if &*top.resource_type == "Bundle" {
            let observations = top
                .entry
                .into_iter()
                .filter_map(|e| e.resource)
                .filter(|r| r.resource_type.as_deref() == Some("Observation"))
                .collect();
            return Ok(Projected {
                observations,
                unreadable: 0,
            });
        }
    }
    let top: TopView<'_> =
        serde_json::from_str(value.get()).map_err(|_| ProjectionError::NotAResource)?;
    let mut out = Projected::default();
    match &*top.resource_type {
        "Bundle" => {
            for resource in top.entry.into_iter().filter_map(|e| e.resource) {
                push(resource, &mut out);
            }
        }
        "Observation" => push(value, &mut out),
        "OperationOutcome" => return Err(ProjectionError::OperationOutcome),
        other => return Err(ProjectionError::UnexpectedType(other.to_owned())),
    }
    Ok(out)
}

/// One pass over the resource in the common case: parse it as an Observation projection and
/// look at its `resourceType`. Only when that parse fails does a second, cheaper parse decide
/// whether it was a broken Observation (counted) or another resource type (skipped).
fn push<'a>(resource: &'a RawValue, out: &mut Projected<'a>) {
    match serde_json::from_str::<ObservationView<'a>>(resource.get()) {
        Ok(obs) if obs.resource_type.as_deref() == Some("Observation") => {
            out.observations.push(obs)
        }
        Ok(_) => {}
        Err(_) => match serde_json::from_str::<TypeOnly<'_>>(resource.get()) {
            Ok(t) if t.resource_type != "Observation" => {}
            _ => out.unreadable += 1,
        },
    }
}

/// The location of an Encounter (prefetched or fetched, alone or the first entry of a Bundle
/// is not looked into): `location[0].location.display`, else its `reference`. The unit an
/// alert budget counts against.
pub fn encounter_location(value: &RawValue) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(value.get()).ok()?;
    let location = &v["location"][0]["location"];
    location["display"]
        .as_str()
        .or_else(|| location["reference"].as_str())
        .map(str::to_owned)
}

/// What a Patient resource says about the patient's quasi-identifiers, as written: birth
/// date, administrative gender and the home (else first) address's postal code. Read only for
/// services that keep model inputs, which generalise them at once
/// ([`crate::store::QuasiIdentifiers::generalise`]); `None` when `value` is not a Patient.
pub fn patient_demographics(value: &RawValue) -> Option<PatientDemographics> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Address {
        #[serde(rename = "use")]
        use_: Option<String>,
        postal_code: Option<String>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Patient {
        resource_type: String,
        birth_date: Option<String>,
        gender: Option<String>,
        #[serde(default)]
        address: Vec<Address>,
    }
    let p: Patient = serde_json::from_str(value.get()).ok()?;
    if p.resource_type != "Patient" {
        return None;
    }
    let postal_code = p
        .address
        .iter()
        .find(|a| a.use_.as_deref() == Some("home"))
        .or_else(|| p.address.first())
        .and_then(|a| a.postal_code.clone());
    Some(PatientDemographics {
        birth_date: p.birth_date,
        gender: p.gender,
        postal_code,
    })
}

/// See [`patient_demographics`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatientDemographics {
    pub birth_date: Option<String>,
    pub gender: Option<String>,
    pub postal_code: Option<String>,
}

/// `(LOINC code, effective time)` of a usable (final, amended, corrected) result, for
/// "unless already resulted" rules.
pub fn resulted_codes(obs: &ObservationView<'_>) -> Vec<(String, chrono::DateTime<chrono::Utc>)> {
    let Some(time) = obs
        .is_usable_status()
        .then(|| obs.effective_text().and_then(super::time::parse_instant))
        .flatten()
    else {
        return Vec::new();
    };
    obs.code
        .iter()
        .flat_map(|c| c.coding.iter())
        .filter(|c| c.system.as_deref() == Some(LOINC))
        .filter_map(|c| c.code.as_deref().map(|code| (code.to_owned(), time)))
        .collect()
}

/// Whether a prefetched Condition Bundle (or single Condition) holds an active, not refuted
/// Condition with a `Condition.code` coding that `matches(system, code)` accepts (the caller
/// decides: ICD-10-CM, WHO ICD-10, SNOMED CT, with or without the dot). Used for clinical
/// context such as hypercapnic respiratory failure, which puts NEWS2 on SpO2 scale 2.
pub fn has_active_condition(
    value: &RawValue,
    matches: impl Fn(Option<&str>, &str) -> bool,
) -> bool {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(value.get()) else {
        return false;
    };
    let resources: Vec<&serde_json::Value> = match v["resourceType"].as_str() {
        Some("Bundle") => v["entry"]
            .as_array()
            .map(|e| e.iter().map(|e| &e["resource"]).collect())
            .unwrap_or_default(),
        _ => vec![&v],
    };
    let code_of = |concept: &serde_json::Value| -> Vec<String> {
        concept["coding"]
            .as_array()
            .map(|c| {
                c.iter()
                    .filter_map(|c| c["code"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let coded = |r: &serde_json::Value| {
        r["code"]["coding"].as_array().is_some_and(|c| {
            c.iter().any(|c| {
                c["code"]
                    .as_str()
                    .is_some_and(|code| matches(c["system"].as_str(), code))
            })
        })
    };
    resources.into_iter().any(|r| {
        let clinical = code_of(&r["clinicalStatus"]);
        let verification = code_of(&r["verificationStatus"]);
        r["resourceType"] == "Condition"
            && (clinical.is_empty()
                || clinical
                    .iter()
                    .any(|c| matches!(c.as_str(), "active" | "recurrence" | "relapse")))
            && !verification
                .iter()
                .any(|c| matches!(c.as_str(), "refuted" | "entered-in-error"))
            && coded(r)
    })
}

/// Whether a prefetch value is an OperationOutcome (the EHR's own fetch failed). A value that
/// does not contain the word cannot be one, so the common case costs a substring scan, not a
/// parse of a 100 KB Bundle.
pub fn is_operation_outcome(value: &RawValue) -> bool {
    value.get().contains("OperationOutcome")
        && resource_type(value).as_deref() == Some("OperationOutcome")
}

/// The `resourceType` of a prefetch value, if it is a JSON object with one.
pub fn resource_type(value: &RawValue) -> Option<Cow<'_, str>> {
    serde_json::from_str::<TypeOnly<'_>>(value.get())
        .ok()
        .map(|t| t.resource_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn active_conditions_are_found_by_code_and_refuted_or_resolved_ones_are_not() {
        let codes = |_: Option<&str>, code: &str| code == "J96.12";
        let cond = |clinical: &str, verification: &str| {
            format!(
                r#"{{"resource":{{"resourceType":"Condition","clinicalStatus":{{"coding":[{{"code":"{clinical}"}}]}},"verificationStatus":{{"coding":[{{"code":"{verification}"}}]}},"code":{{"coding":[{{"system":"http://hl7.org/fhir/sid/icd-10-cm","code":"J96.12"}}]}}}}}}"#
            )
        };
        let bundle = |e: String| raw(&format!(r#"{{"resourceType":"Bundle","entry":[{e}]}}"#));
        assert!(has_active_condition(
            &bundle(cond("active", "confirmed")),
            codes
        ));
        assert!(!has_active_condition(
            &bundle(cond("resolved", "confirmed")),
            codes
        ));
        assert!(!has_active_condition(
            &bundle(cond("active", "refuted")),
            codes
        ));
        assert!(!has_active_condition(
            &bundle(cond("active", "confirmed")),
            |_, code| code == "J44.9"
        ));
        assert!(!has_active_condition(&raw("[]"), codes));
        // The system reaches the matcher (WHO ICD-10 and ICD-10-CM codes differ).
        assert!(!has_active_condition(
            &bundle(cond("active", "confirmed")),
            |system, _| system == Some("http://hl7.org/fhir/sid/icd-10")
        ));
    }

    #[test]
    fn operation_outcomes_are_told_from_bundles_that_mention_one() {
        assert!(is_operation_outcome(&raw(
            r#"{"resourceType":"OperationOutcome","issue":[]}"#
        )));
        assert!(!is_operation_outcome(&raw(
            r#"{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"OperationOutcome"},"search":{"mode":"outcome"}}]}"#
        )));
        assert!(!is_operation_outcome(&raw(r#"{"resourceType":"Bundle"}"#)));
    }

    #[test]
    fn reads_observations_and_skips_other_entries() {
        let b = raw(r#"{"resourceType":"Bundle","type":"searchset","entry":[
            {"fullUrl":"x","resource":{"resourceType":"Observation","id":"o1","status":"final",
              "code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}]},
              "effectiveDateTime":"2026-01-01T10:00:00Z","extension":[{"url":"u","valueString":"s"}],
              "valueQuantity":{"value":88,"unit":"/min","system":"http://unitsofmeasure.org","code":"/min"}},
             "search":{"mode":"match"}},
            {"resource":{"resourceType":"Patient","id":"p","name":[{"family":"X"}]}},
            {"resource":{"resourceType":"OperationOutcome","issue":[]},"search":{"mode":"outcome"}},
            {"resource":{"resourceType":"Observation","id":"bad","valueQuantity":{"value":"high"}}}
        ]}"#);
        let p = observations(&b).unwrap();
        assert_eq!(p.observations.len(), 1);
        assert_eq!(p.unreadable, 1);
        let o = &p.observations[0];
        assert_eq!(o.id.as_deref(), Some("o1"));
        // Really borrowed from the body, not copied.
        assert!(matches!(o.id.as_ref().unwrap().0, Cow::Borrowed(_)));
        assert!(matches!(
            o.effective_date_time.as_ref().unwrap().0,
            Cow::Borrowed(_)
        ));
        assert!(o.code.as_ref().unwrap().has_code(LOINC, &["8867-4".into()]));
        assert_eq!(o.value_quantity.as_ref().unwrap().value, Some(88.0));
    }

    #[test]
    fn escaped_strings_are_read_too() {
        let o = raw(r#"{"resourceType":"Observation","id":"a\u0062c","status":"final"}"#);
        let p = observations(&o).unwrap();
        assert_eq!(p.observations[0].id.as_deref(), Some("abc"));
        assert!(matches!(
            p.observations[0].id.as_ref().unwrap().0,
            Cow::Owned(_)
        ));
    }

    #[test]
    fn operation_outcomes_and_other_values_are_errors() {
        assert_eq!(
            observations(&raw(r#"{"resourceType":"OperationOutcome","issue":[]}"#)).unwrap_err(),
            ProjectionError::OperationOutcome
        );
        assert_eq!(
            observations(&raw("[1,2]")).unwrap_err(),
            ProjectionError::NotAResource
        );
        assert!(matches!(
            observations(&raw(r#"{"resourceType":"Patient"}"#)),
            Err(ProjectionError::UnexpectedType(_))
        ));
    }
}
