//! The committed CDS Hooks 2.0 JSON Schema (`conformance/schema/`), one validator per def.

use jsonschema::Validator;
use serde_json::Value;

const SCHEMA: &str = include_str!("../../conformance/schema/cds-hooks-2.0.schema.json");

/// Validators for the wire documents the runner checks.
pub struct Schemas {
    pub discovery: Validator,
    pub response: Validator,
    pub card: Validator,
    pub feedback: Validator,
    pub request: Validator,
}

impl Schemas {
    /// Compiles the embedded schema (formats checked).
    pub fn load() -> Result<Self, String> {
        let root: Value = serde_json::from_str(SCHEMA).map_err(|e| e.to_string())?;
        let def = |name: &str| -> Result<Validator, String> {
            let mut schema = root.clone();
            schema["$ref"] = Value::String(format!("#/$defs/{name}"));
            jsonschema::options()
                .should_validate_formats(true)
                .build(&schema)
                .map_err(|e| format!("schema def {name}: {e}"))
        };
        Ok(Self {
            discovery: def("DiscoveryResponse")?,
            response: def("CdsServiceResponse")?,
            card: def("Card")?,
            feedback: def("FeedbackRequest")?,
            request: def("HookRequest")?,
        })
    }
}

/// Every schema error of `instance`, as `path: message` lines (empty when valid).
pub fn errors(validator: &Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("{}: {e}", e.instance_path))
        .take(10)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_schema_accepts_spec_cards_and_refuses_broken_ones() {
        let s = Schemas::load().unwrap();
        let good = json!({"summary": "ok", "indicator": "info", "source": {"label": "x"}});
        assert!(errors(&s.card, &good).is_empty());
        for bad in [
            json!({"summary": "x".repeat(140), "indicator": "info", "source": {"label": "x"}}),
            json!({"summary": "ok", "indicator": "urgent", "source": {"label": "x"}}),
            json!({"summary": "ok", "indicator": "info", "source": {"label": "x"}, "links": []}),
            json!({"summary": "ok", "indicator": "info", "source": {"label": "x"},
                   "suggestions": [{"label": "do"}]}),
            json!({"summary": "ok", "indicator": "info", "source": {"label": "x"},
                   "links": [{"label": "l", "url": "https://x", "type": "absolute", "appContext": "a"}]}),
            json!({"summary": null, "indicator": "info", "source": {"label": "x"}}),
        ] {
            assert!(!errors(&s.card, &bad).is_empty(), "{bad}");
        }
    }
}
