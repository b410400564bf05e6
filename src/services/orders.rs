//! Draft orders of `order-select` / `order-sign` calls that a service is about (e.g. a
//! nephrotoxic drug): read from `context.draftOrders`, matched on RxNorm / ATC codes.

use serde_json::Value;

use super::policy::DrugList;
use crate::cds::wire::HookRequest;

/// A draft MedicationRequest of a listed drug.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DraftOrder {
    /// `MedicationRequest/{id}`, the target of a delete suggestion.
    pub reference: String,
    /// The drug list's name for it (card text).
    pub drug: String,
    pub class: String,
}

/// Draft MedicationRequests in `context.draftOrders` whose drug is on `list`. For
/// `order-select`, only the newly selected ones (`context.selections`) count: the others were
/// already checked when they were selected.
pub fn matching(request: &HookRequest<'_>, list: &DrugList) -> Vec<DraftOrder> {
    let Some(Value::Object(bundle)) = request.context.get("draftOrders") else {
        return Vec::new();
    };
    let selections: Option<Vec<&str>> = (request.hook == "order-select").then(|| {
        request
            .context
            .get("selections")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    });
    let entries = bundle.get("entry").and_then(Value::as_array);
    let mut found = Vec::new();
    for resource in entries.into_iter().flatten().map(|e| &e["resource"]) {
        if resource["resourceType"] != "MedicationRequest" {
            continue;
        }
        let Some(id) = resource["id"].as_str() else {
            continue;
        };
        let reference = format!("MedicationRequest/{id}");
        if selections
            .as_ref()
            .is_some_and(|s| !s.contains(&reference.as_str()))
        {
            continue;
        }
        let codings = resource["medicationCodeableConcept"]["coding"].as_array();
        let drug = codings
            .into_iter()
            .flatten()
            .find_map(|c| list.find(c["system"].as_str()?, c["code"].as_str()?));
        if let Some(drug) = drug {
            found.push(DraftOrder {
                reference,
                drug: drug.name.clone(),
                class: drug.class.clone(),
            });
        }
    }
    found
}
