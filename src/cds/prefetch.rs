//! Prefetch template parsing and rendering (CDS Hooks 2.0, "Prefetch tokens").
//!
//! Templates are parsed when service definitions load, so a bad template stops start-up
//! instead of failing a clinician's request. Allowed tokens: `{{context.<field>}}` for a
//! root-level primitive context field, and the four user tokens. Fetching what a client did
//! not prefetch is `fhir`'s job, not this module's.

use std::fmt;

use serde_json::{Map, Value};

/// A parsed prefetch template such as `Observation?patient={{context.patientId}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefetchTemplate {
    source: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Context(String),
    User(UserToken),
}

/// The spec's user identifier tokens, derived from `context.userId` (`Practitioner/123`…).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserToken {
    PractitionerId,
    PractitionerRoleId,
    PatientId,
    RelatedPersonId,
}

impl UserToken {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "userPractitionerId" => Self::PractitionerId,
            "userPractitionerRoleId" => Self::PractitionerRoleId,
            "userPatientId" => Self::PatientId,
            "userRelatedPersonId" => Self::RelatedPersonId,
            _ => return None,
        })
    }
    fn resource_type(self) -> &'static str {
        match self {
            Self::PractitionerId => "Practitioner",
            Self::PractitionerRoleId => "PractitionerRole",
            Self::PatientId => "Patient",
            Self::RelatedPersonId => "RelatedPerson",
        }
    }
}

/// Why a template was refused at load time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("`{{{{` without a closing `}}}}` at byte {0}")]
    Unclosed(usize),
    #[error("unknown token `{{{{{0}}}}}`: allowed are context.<field> and userPractitionerId, userPractitionerRoleId, userPatientId, userRelatedPersonId")]
    UnknownToken(String),
    #[error("token `{{{{{0}}}}}` is not a root-level context field (only first-level fields may be tokens)")]
    NestedContext(String),
    #[error("template is empty")]
    Empty,
}

/// Why a template could not be rendered for one request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("context has no primitive field `{0}`")]
    MissingContext(String),
    #[error("context.userId does not name a {0}")]
    MissingUser(&'static str),
    /// A `.` or `..` path segment would move the query off the resource it names.
    #[error("context field `{0}` holds a `.` or `..` path segment")]
    PathSegment(String),
}

impl PrefetchTemplate {
    /// Parses a template; every token is checked against the spec's token grammar.
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        if source.trim().is_empty() {
            return Err(TemplateError::Empty);
        }
        let mut parts = Vec::new();
        let mut rest = source;
        let mut offset = 0;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Literal(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or(TemplateError::Unclosed(offset + start))?;
            let name = after[..end].trim();
            parts.push(parse_token(name)?);
            let consumed = start + 2 + end + 2;
            offset += consumed;
            rest = &rest[consumed..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        Ok(Self {
            source: source.to_owned(),
            parts,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Substitutes tokens from the request's `context`. Values are percent-encoded (except
    /// `/`) so a context value cannot add query parameters to the FHIR request.
    pub fn render(&self, context: &Map<String, Value>) -> Result<String, RenderError> {
        let mut out = String::with_capacity(self.source.len() + 32);
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Context(field) => {
                    let value = context
                        .get(field)
                        .and_then(primitive_text)
                        .ok_or_else(|| RenderError::MissingContext(field.clone()))?;
                    if has_dot_segment(&value) {
                        return Err(RenderError::PathSegment(field.clone()));
                    }
                    push_encoded(&mut out, &value);
                }
                Part::User(token) => {
                    let id = user_id(context, *token)
                        .ok_or(RenderError::MissingUser(token.resource_type()))?;
                    push_encoded(&mut out, id);
                }
            }
        }
        Ok(out)
    }
}

impl fmt::Display for PrefetchTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn parse_token(name: &str) -> Result<Part, TemplateError> {
    if let Some(field) = name.strip_prefix("context.") {
        if field.is_empty()
            || !field
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(if field.contains('.') {
                TemplateError::NestedContext(name.to_owned())
            } else {
                TemplateError::UnknownToken(name.to_owned())
            });
        }
        return Ok(Part::Context(field.to_owned()));
    }
    UserToken::parse(name)
        .map(Part::User)
        .ok_or_else(|| TemplateError::UnknownToken(name.to_owned()))
}

fn primitive_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `context.userId` is a relative reference such as `Practitioner/123`.
fn user_id(context: &Map<String, Value>, token: UserToken) -> Option<&str> {
    let user = context.get("userId")?.as_str()?;
    let (kind, id) = user.split_once('/')?;
    (kind == token.resource_type() && !id.is_empty() && !id.contains('/') && !has_dot_segment(id))
        .then_some(id)
}

/// `/` is kept so `{{context.userId}}` renders `Practitioner/123` (the spec's example); a
/// value whose segments include `.` or `..` could then climb to another resource.
fn has_dot_segment(value: &str) -> bool {
    value.split('/').any(|seg| seg == "." || seg == "..")
}

fn push_encoded(out: &mut String, value: &str) {
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn renders_context_and_user_tokens() {
        let c = ctx(
            json!({"patientId": "1288992", "encounterId": "89284", "userId": "Practitioner/example"}),
        );
        let t = PrefetchTemplate::parse(
            "Observation?patient={{context.patientId}}&encounter={{context.encounterId}}",
        )
        .unwrap();
        assert_eq!(
            t.render(&c).unwrap(),
            "Observation?patient=1288992&encounter=89284"
        );
        let u = PrefetchTemplate::parse("Practitioner/{{userPractitionerId}}").unwrap();
        assert_eq!(u.render(&c).unwrap(), "Practitioner/example");
        let p = PrefetchTemplate::parse("Patient/{{userPatientId}}").unwrap();
        assert_eq!(p.render(&c), Err(RenderError::MissingUser("Patient")));
        let role = ctx(json!({"userId": "PractitionerRole/r1"}));
        let r = PrefetchTemplate::parse("PractitionerRole/{{userPractitionerRoleId}}").unwrap();
        assert_eq!(r.render(&role).unwrap(), "PractitionerRole/r1");
        let rp = ctx(json!({"userId": "RelatedPerson/x"}));
        let r = PrefetchTemplate::parse("RelatedPerson/{{userRelatedPersonId}}").unwrap();
        assert_eq!(r.render(&rp).unwrap(), "RelatedPerson/x");
    }

    #[test]
    fn the_spec_user_example_renders_the_reference_as_is() {
        let c = ctx(json!({"userId": "Practitioner/example"}));
        let t = PrefetchTemplate::parse("{{context.userId}}").unwrap();
        assert_eq!(t.render(&c).unwrap(), "Practitioner/example");
    }

    #[test]
    fn context_values_cannot_inject_query_parameters() {
        let c = ctx(json!({"patientId": "1&_id=other#x"}));
        let t = PrefetchTemplate::parse("Observation?patient={{context.patientId}}").unwrap();
        assert_eq!(
            t.render(&c).unwrap(),
            "Observation?patient=1%26_id%3Dother%23x"
        );
    }

    #[test]
    fn context_values_cannot_climb_out_of_the_resource() {
        let t = PrefetchTemplate::parse("Patient/{{context.patientId}}").unwrap();
        for bad in ["../Practitioner/x", "..", "a/./b", "a/.."] {
            let c = ctx(json!({ "patientId": bad }));
            assert_eq!(
                t.render(&c),
                Err(RenderError::PathSegment("patientId".into())),
                "{bad}"
            );
        }
        let c = ctx(json!({"patientId": "a..b.c"}));
        assert_eq!(t.render(&c).unwrap(), "Patient/a..b.c");
    }

    #[test]
    fn invalid_templates_are_refused_at_parse_time() {
        assert_eq!(
            PrefetchTemplate::parse("Patient/{{context.patientId"),
            Err(TemplateError::Unclosed(8))
        );
        assert!(matches!(
            PrefetchTemplate::parse("Patient/{{patientId}}"),
            Err(TemplateError::UnknownToken(_))
        ));
        assert!(matches!(
            PrefetchTemplate::parse("X?a={{context.medication.id}}"),
            Err(TemplateError::NestedContext(_))
        ));
        assert!(matches!(
            PrefetchTemplate::parse("{{userId}}"),
            Err(TemplateError::UnknownToken(_))
        ));
        assert_eq!(PrefetchTemplate::parse("  "), Err(TemplateError::Empty));
    }

    #[test]
    fn non_primitive_or_missing_context_fields_do_not_render() {
        let c = ctx(json!({"draftOrders": {"resourceType": "Bundle"}, "empty": ""}));
        for field in ["draftOrders", "empty", "absent"] {
            let t = PrefetchTemplate::parse(&format!("X?a={{{{context.{field}}}}}")).unwrap();
            assert_eq!(
                t.render(&c),
                Err(RenderError::MissingContext(field.to_owned()))
            );
        }
    }
}
