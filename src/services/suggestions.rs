//! Suggestions offered on a card, built from the service's `[[suggestions]]`: FHIR resources
//! to create (filled from the hook context) or the draft order to delete. Nothing is applied
//! without the clinician; each has a stable uuid so feedback says which was accepted.

use serde_json::Value;
use uuid::Uuid;

use super::orders::DraftOrder;
use super::policy::{SuggestionAction, SuggestionDef};
use crate::cds::wire::{Action, ActionType, HookRequest, Indicator, Suggestion};

const SUGGESTION_NAMESPACE: Uuid = Uuid::from_u128(0x2f4e_8a61_93c0_4b7d_a5e2_7c19_d3b8_0e54);

/// The suggestions for a card of `indicator` about `order` (order hooks), skipping those
/// whose result is already in (`resulted`: LOINC codes seen in the data window).
pub fn build(
    defs: &[SuggestionDef],
    card_uuid: &str,
    indicator: Indicator,
    request: &HookRequest<'_>,
    order: Option<&DraftOrder>,
    resulted: &[String],
) -> Vec<Suggestion> {
    defs.iter()
        .enumerate()
        .filter(|(_, d)| indicator >= d.min_indicator)
        .filter(|(_, d)| !d.unless_resulted.iter().any(|c| resulted.contains(c)))
        .filter_map(|(i, d)| {
            let label = d
                .label
                .replace("{drug}", order.map_or("the drug", |o| o.drug.as_str()));
            let action = match d.action {
                SuggestionAction::Create => Action {
                    kind: ActionType::Create,
                    description: label.clone(),
                    resource: d.resource.as_ref().map(|r| fill(to_json(r), request)),
                    resource_id: None,
                },
                SuggestionAction::DeleteDraftOrder => Action {
                    kind: ActionType::Delete,
                    description: label.clone(),
                    resource: None,
                    resource_id: Some(order?.reference.clone()),
                },
            };
            let key = format!("{card_uuid}|{i}");
            Some(Suggestion {
                label,
                uuid: Some(Uuid::new_v5(&SUGGESTION_NAMESPACE, key.as_bytes()).to_string()),
                is_recommended: d.recommended.then_some(true),
                actions: vec![action],
            })
        })
        .collect()
}

fn to_json(v: &toml::Value) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Fills `{patientId}`, `{encounterId}`, `{userId}` in every string of `v`.
fn fill(v: Value, request: &HookRequest<'_>) -> Value {
    match v {
        Value::String(s) => {
            let mut out = s;
            for key in ["patientId", "encounterId", "userId"] {
                let placeholder = format!("{{{key}}}");
                if out.contains(&placeholder) {
                    let value = request
                        .context
                        .get(key)
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    out = out.replace(&placeholder, value);
                }
            }
            Value::String(out)
        }
        Value::Array(a) => Value::Array(a.into_iter().map(|x| fill(x, request)).collect()),
        Value::Object(o) => {
            Value::Object(o.into_iter().map(|(k, x)| (k, fill(x, request))).collect())
        }
        other => other,
    }
}
