//! FHIR R4 data as bedside reads it.
//!
//! Two ways in, one API (design.md, "Measured facts"): on the per-request scoring path a
//! borrowed serde projection of just the fields features read ([`projection`], ~0.2 ms for a
//! 190 KB prefetch), because fhirbolt's typed parse costs ~17× more and would cap a 2-core
//! box near 550 requests/s. The full typed model ([`outcome`]) is for OperationOutcomes and
//! typed reads. [`client`] fetches what prefetch lacks ([`fulfil`]) from servers the
//! [`egress`] policy allows, over the [`connect`] pool its decision picks.

pub mod client;
pub mod connect;
pub mod egress;
mod error;
pub mod fulfil;
pub mod outcome;
pub mod projection;
pub mod time;
mod token;

pub use client::{Fetched, FhirClient, FhirServer, FhirSettings, Search};
pub use egress::{ClientEgress, EgressPolicy, EgressRefusal, OriginRule, Reach};
pub use error::FhirError;
pub use projection::{ObservationView, Projected, ProjectionError};
pub use token::TokenSource;
