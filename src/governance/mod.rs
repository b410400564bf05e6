//! Model governance: a version becomes active only through a promotion that rests on a stored
//! evaluation of it on this site's own shadow records (and on outcomes where they are known),
//! and names who promoted it, when and why; retirement likewise. The decisions live in the
//! store; at start-up and on reload the model registry reads them ([`crate::inference::Lifecycle`]).
//! The command line (`bedside evaluate | promote | retire | outcomes`) and the admin API
//! (`/admin/models/...`) both go through [`Governor`]; decisions are exported as FHIR
//! `Provenance` + `AuditEvent` ([`crate::audit`]).

mod decide;
mod evaluate;
pub mod export;
mod meds_parquet;
pub mod monitor;
pub mod monitor_html;
mod outcomes;
pub mod scrub;
mod settings;
pub mod source_attributes;

pub use decide::{GovernanceError, Governor, Request, VersionStatus, MAX_REASON_CHARS};
pub use evaluate::{auroc, evaluate, Comparison, Criterion, Evaluation, OutcomeMetrics};
pub use outcomes::{import_outcomes, OutcomeImport};
pub use settings::{GovernanceSettings, MonitoringSettings};
