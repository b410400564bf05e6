//! Scored results → spec-valid CDS Hooks cards.
//!
//! Text comes from the service definition (policy is data); this module fills it in, builds
//! the markdown `detail` that says why, and checks each card against the spec's rules before
//! it leaves ([`validate`]). A card always names its model, version and data window.
//!
//! Cards are read in an EHR sidebar (~240–320 px): the detail leads with the risk, the few
//! observations that raised it and what to do; trends, every observation and FHIR ids are in
//! the SMART app the card links to.

mod render;
mod template;
pub mod validate;

pub use render::{
    abstain_card, card_uuid, risk_card, Abstention, BaselineReport, CardText, RiskAssessment,
    CARD_DRIVERS, DEFAULT_FOOTER,
};
pub use template::{
    Template, TemplateError, Values, ABSTAIN_PLACEHOLDERS, MODEL_PLACEHOLDERS, RISK_PLACEHOLDERS,
};
