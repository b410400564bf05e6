//! Scored results → spec-valid CDS Hooks cards.
//!
//! Text comes from the service definition (policy is data); this module fills it in, builds
//! the markdown `detail` that says why, and checks each card against the spec's rules before
//! it leaves ([`validate`]). A card always names its model, version and data window.

mod render;
mod template;
pub mod validate;

pub use render::{
    abstain_card, card_uuid, risk_card, Abstention, BaselineReport, CardText, RiskAssessment,
};
pub use template::{
    Template, TemplateError, Values, ABSTAIN_PLACEHOLDERS, MODEL_PLACEHOLDERS, RISK_PLACEHOLDERS,
};
