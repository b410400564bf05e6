//! `{placeholder}` text templates for card summaries and labels, checked at start-up.

use std::collections::BTreeMap;

/// Placeholders every card template may use.
pub const MODEL_PLACEHOLDERS: &[&str] = &["model", "version", "horizon_hours"];
/// Placeholders of a risk card's summary.
pub const RISK_PLACEHOLDERS: &[&str] = &["model", "version", "horizon_hours", "risk_pct", "band"];
/// Placeholders of an abstention card's summary.
pub const ABSTAIN_PLACEHOLDERS: &[&str] = &["model", "version", "horizon_hours", "reason"];

/// A template referenced a placeholder that does not exist, or is unbalanced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("placeholder `{{{0}}}` is not available here (available: {1})")]
    Unknown(String, String),
    #[error("unclosed `{{`")]
    Unclosed,
}

/// Values to fill in.
pub type Values<'a> = BTreeMap<&'static str, String>;

/// A parsed card text template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<(String, Option<&'static str>)>,
}

impl Template {
    /// Parses `text`; every `{name}` must be one of `allowed`, so a placeholder that would
    /// render empty in this template is caught at start-up.
    pub fn parse(text: &str, allowed: &[&'static str]) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let close = rest[open..].find('}').ok_or(TemplateError::Unclosed)? + open;
            let name = &rest[open + 1..close];
            let known = allowed
                .iter()
                .find(|p| **p == name)
                .ok_or_else(|| TemplateError::Unknown(name.to_owned(), allowed.join(", ")))?;
            parts.push((rest[..open].to_owned(), Some(*known)));
            rest = &rest[close + 1..];
        }
        parts.push((rest.to_owned(), None));
        Ok(Self { parts })
    }

    /// Fills in `values`; a placeholder without a value renders empty.
    pub fn render(&self, values: &Values<'_>) -> String {
        let mut out = String::new();
        for (literal, name) in &self.parts {
            out.push_str(literal);
            if let Some(v) = name.and_then(|n| values.get(n)) {
                out.push_str(v);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_known_placeholders_and_refuses_unknown_ones() {
        let t =
            Template::parse("risk {risk_pct}% · {model} v{version}", RISK_PLACEHOLDERS).unwrap();
        let v = Values::from([
            ("risk_pct", "12".into()),
            ("model", "m".into()),
            ("version", "1".into()),
        ]);
        assert_eq!(t.render(&v), "risk 12% · m v1");
        assert!(matches!(
            Template::parse("{nope}", RISK_PLACEHOLDERS),
            Err(TemplateError::Unknown(..))
        ));
        // `{reason}` exists only for abstentions.
        assert!(matches!(
            Template::parse("{reason}", RISK_PLACEHOLDERS),
            Err(TemplateError::Unknown(..))
        ));
        assert!(Template::parse("{reason}", ABSTAIN_PLACEHOLDERS).is_ok());
        assert_eq!(
            Template::parse("a {risk_pct", RISK_PLACEHOLDERS),
            Err(TemplateError::Unclosed)
        );
    }
}
