//! CDS Hooks 2.0 JSON shapes: the contract with the EHR.
//!
//! One Rust type per JSON object in the spec (HL7 CDS Hooks 2.0, "Discovery", "Calling a CDS
//! Service", "CDS Service Response", "Feedback"); serialized names are exactly the spec's.
//! Optional attributes are `Option` and omitted when absent: the spec forbids `null` and empty
//! values ("Null and empty JSON elements"). Spec examples round-trip in `tests/gateway/spec_examples.rs`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

// === discovery ===

/// `GET /cds-services` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiscoveryResponse {
    pub services: Vec<ServiceDescriptor>,
}

/// One entry of the discovery document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceDescriptor {
    pub hook: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub description: String,
    pub id: String,
    /// Key → FHIR query template, e.g. `"patient": "Patient/{{context.patientId}}"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefetch: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_requirements: Option<String>,
    /// Spec "Extensions": a pre-coordinated JSON object; kept as-is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<serde_json::Map<String, serde_json::Value>>,
}

// === request ===

/// A hook invocation, borrowed from the request body.
///
/// `prefetch` values stay raw JSON slices of the body: each service projects only the fields
/// it reads (see `fhir::projection`), so a 200 KB prefetch is parsed into a tree at most once.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HookRequest<'a> {
    pub hook: String,
    pub hook_instance: String,
    #[serde(default)]
    pub fhir_server: Option<String>,
    #[serde(default)]
    pub fhir_authorization: Option<FhirAuthorization>,
    pub context: serde_json::Map<String, serde_json::Value>,
    /// `None`: the client sent no prefetch. A key absent from the map was not satisfied; a key
    /// whose value is JSON `null` means "the EHR has no such data" (spec: Prefetch Template).
    #[serde(default, borrow)]
    pub prefetch: Option<BTreeMap<String, &'a RawValue>>,
}

/// Access to the EHR's FHIR server granted for this one call.
///
/// `Debug` redacts the token: it must never reach a log.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct FhirAuthorization {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: u64,
    pub scope: String,
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
}

impl fmt::Debug for FhirAuthorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FhirAuthorization")
            .field("access_token", &"<redacted>")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

// === response ===

/// Answer to a hook call. An empty `cards` array means "no guidance".
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CdsResponse {
    pub cards: Vec<Card>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub system_actions: Vec<Action>,
}

/// A CDS Hooks card ("Card Attributes").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Card {
    /// Echoed by the EHR in feedback; bedside derives it deterministically so it maps back
    /// to the prediction that produced the card.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Fewer than 140 characters (the spec's "<140-character summary").
    pub summary: String,
    /// GitHub-flavoured Markdown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub indicator: Indicator,
    pub source: Source,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suggestions: Vec<Suggestion>,
    /// Required when `suggestions` is not empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection_behavior: Option<SelectionBehavior>,
    /// Each reason carries a `display` (spec: MUST).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub override_reasons: Vec<Coding>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<Link>,
    /// Spec "Extensions": a pre-coordinated JSON object; kept as-is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Urgency, in increasing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Indicator {
    Info,
    Warning,
    Critical,
}

impl Indicator {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }

    /// The indicator a stored word names; anything else reads as `info` (the least urgent).
    pub fn parse_or_info(text: &str) -> Self {
        match text {
            "critical" => Self::Critical,
            "warning" => Self::Warning,
            _ => Self::Info,
        }
    }
}

/// Who produced a card. bedside names the model and version here and links its model card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<Coding>,
}

/// A FHIR-like Coding as CDS Hooks defines it (`code` and `system` required).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coding {
    pub code: String,
    pub system: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
}

/// How many suggestions the clinician may accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SelectionBehavior {
    AtMostOne,
    Any,
}

/// An actionable suggestion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Suggestion {
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_recommended: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<Action>,
}

/// A change the EHR may apply (never without the clinician, for bedside's suggestions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Action {
    #[serde(rename = "type")]
    pub kind: ActionType,
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
}

/// Action types the spec allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionType {
    Create,
    Update,
    Delete,
}

/// A link shown on a card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Link {
    pub label: String,
    pub url: String,
    #[serde(rename = "type")]
    pub kind: LinkType,
    /// Only for `smart` links.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_context: Option<String>,
}

/// `absolute` opens as-is; `smart` is a SMART app launch URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkType {
    Absolute,
    Smart,
}

// === feedback ===

/// `POST /cds-services/{id}/feedback` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedbackRequest {
    pub feedback: Vec<Feedback>,
}

/// What a clinician did with one card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Feedback {
    /// The card's `uuid`.
    pub card: String,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accepted_suggestions: Vec<AcceptedSuggestion>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub override_reason: Option<OverrideReason>,
    /// RFC 3339 instant in UTC.
    pub outcome_timestamp: String,
}

/// The two outcomes the spec defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Accepted,
    Overridden,
}

impl Outcome {
    /// The wire spelling, also the stored value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Overridden => "overridden",
        }
    }
}

/// A suggestion the clinician accepted, by its `uuid`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedSuggestion {
    pub id: String,
}

/// Why a card was overridden. The comment is clinician free text: stored, never logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OverrideReason {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Coding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_comment: Option<String>,
}

// === errors ===

/// The JSON body of every error bedside answers with.
///
/// Not a spec shape (CDS Hooks defines none); chosen so EHR integration engineers can read
/// what went wrong: a stable machine `error` code, a `message`, and where relevant the `field`
/// or prefetch `key` at fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}
