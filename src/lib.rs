//! bedside: a CDS Hooks 2.0 gateway that brings TorchScript early-detection models into the EHR.
//!
//! Data flows one way (see `../shared/design.md`):
//! `hooks` (HTTP in/out) → `fhir` + `features` (FHIR → tensors) → `inference` (tch models)
//! → `services` + `cards` (policy, card text) → `store` (feedback, durable state).
//! `server` wires them into one actix `App`; `config` is read and validated once at start-up.

pub mod admin;
pub mod api;
pub mod audit;
pub mod cards;
pub mod cds;
pub mod config;
pub mod conformance;
pub mod demo;
pub mod features;
pub mod fhir;
pub mod fuzz_targets;
pub mod governance;
pub mod hooks;
pub mod html;
pub mod http;
pub mod inference;
pub mod metrics;
pub mod probe;
pub mod report;
pub mod server;
pub mod services;
pub mod smart;
pub mod store;
pub mod telemetry;
