//! FHIR R4 data as bedside reads it.
//!
//! Two ways in, one API (design.md, "Measured facts"): on the per-request scoring path a
//! borrowed serde projection of just the fields features read ([`projection`], ~0.2 ms for a
//! 190 KB prefetch), because fhirbolt's typed parse costs ~17× more and would cap a 2-core
//! box near 550 requests/s. The full typed model is for paths where it earns its cost
//! (validating input in `bedside check`/conformance, resources bedside emits) and arrives
//! with the FHIR client. Fetching what prefetch lacks also lands here.

pub mod projection;
pub mod time;

pub use projection::{ObservationView, Projected, ProjectionError};
