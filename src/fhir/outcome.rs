//! FHIR resources read with the full R4 model (`fhirbolt`), strictly first and leniently when
//! a server adds elements R4 does not define, and the `OperationOutcome` a FHIR server sends
//! instead of data, as a typed error.

use std::fmt;
use std::sync::atomic::AtomicU64;

use fhirbolt::model::r4::resources::OperationOutcome;
use fhirbolt::model::r4::Resource;
use fhirbolt::serde::{DeserializationConfig, DeserializationMode};

use crate::metrics::inc;

/// One `OperationOutcome.issue`, as far as a caller acts on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// `fatal | error | warning | information`.
    pub severity: String,
    /// IssueType code: `not-found`, `invalid`, `forbidden`, `throttled`…
    pub code: String,
    pub diagnostics: Option<String>,
}

/// The issues of an OperationOutcome. Diagnostics are server text about a request, not
/// patient data, but they are still only shown to the caller, never logged verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    pub issues: Vec<Issue>,
}

impl Outcome {
    /// The issue codes, for logs and metrics.
    pub fn codes(&self) -> Vec<&str> {
        self.issues.iter().map(|i| i.code.as_str()).collect()
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, issue) in self.issues.iter().enumerate() {
            if n > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{} {}", issue.severity, issue.code)?;
            if let Some(d) = &issue.diagnostics {
                write!(f, ": {}", truncate(d, 200))?;
            }
        }
        Ok(())
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        text.chars().take(max).collect::<String>() + "…"
    }
}

/// Parses any R4 resource: strict first; if the server added elements R4 does not define,
/// lax (unknown elements dropped) and `lenient` counted, so operators see which servers do.
pub fn parse_resource(text: &str, lenient: &AtomicU64) -> Result<Resource, String> {
    match fhirbolt::json::from_str::<Resource>(text, None) {
        Ok(r) => Ok(r),
        Err(strict) => {
            let lax = Some(DeserializationConfig {
                mode: DeserializationMode::Lax,
            });
            match fhirbolt::json::from_str::<Resource>(text, lax) {
                Ok(r) => {
                    inc(lenient);
                    // The strict error can quote element values: not logged.
                    drop(strict);
                    tracing::debug!("resource read leniently");
                    Ok(r)
                }
                Err(e) => Err(e.to_string()),
            }
        }
    }
}

/// Reads an OperationOutcome body, if that is what `text` is.
pub fn parse_outcome(text: &str, lenient: &AtomicU64) -> Option<Outcome> {
    match parse_resource(text, lenient).ok()? {
        Resource::OperationOutcome(oo) => Some(from_model(&oo)),
        _ => None,
    }
}

fn from_model(oo: &OperationOutcome) -> Outcome {
    Outcome {
        issues: oo
            .issue
            .iter()
            .map(|i| Issue {
                severity: i.severity.value.clone().unwrap_or_default(),
                code: i.code.value.clone().unwrap_or_default(),
                diagnostics: i.diagnostics.as_ref().and_then(|d| d.value.clone()),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn outcomes_become_typed_issues() {
        let lenient = AtomicU64::new(0);
        let oo = parse_outcome(
            r#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-found","diagnostics":"Patient/x not found"}]}"#,
            &lenient,
        )
        .unwrap();
        assert_eq!(oo.codes(), ["not-found"]);
        assert_eq!(oo.to_string(), "error not-found: Patient/x not found");
        assert_eq!(lenient.load(Ordering::Relaxed), 0);
        assert!(parse_outcome(r#"{"resourceType":"Patient"}"#, &lenient).is_none());
        assert!(parse_outcome("<html>", &lenient).is_none());
    }

    #[test]
    fn unknown_elements_are_read_leniently_and_counted() {
        let lenient = AtomicU64::new(0);
        let text = r#"{"resourceType":"Patient","id":"p","vendorFlag":true,"gender":"female"}"#;
        match parse_resource(text, &lenient).unwrap() {
            Resource::Patient(p) => assert_eq!(p.id.and_then(|i| i.value).as_deref(), Some("p")),
            other => panic!("{other:?}"),
        }
        assert_eq!(lenient.load(Ordering::Relaxed), 1);
    }

    /// design.md: fhirbolt 0.4 fails on a Bundle entry with both `resource` and `search` when
    /// deserialised as `r4::resources::Bundle`; through the `Resource` enum it reads.
    #[test]
    fn searchset_entries_with_search_mode_parse_through_the_resource_enum() {
        let lenient = AtomicU64::new(0);
        let text = r#"{"resourceType":"Bundle","type":"searchset","entry":[{"fullUrl":"http://x/Patient/p","resource":{"resourceType":"Patient","id":"p"},"search":{"mode":"match"}}]}"#;
        match parse_resource(text, &lenient).unwrap() {
            Resource::Bundle(b) => assert_eq!(b.entry.len(), 1),
            other => panic!("{other:?}"),
        }
        assert_eq!(lenient.load(Ordering::Relaxed), 0);
    }
}
