//! Integration tests of the HTTP surfaces over real HTTP: CDS Hooks calls, client auth, spec examples, card text, feedback, services and guardrails, isolation, audit, hardening, the prediction API, PHI in logs.
//!
//! One test binary per area, so LibTorch is linked once per area, not once per file.

#[path = "../common/mod.rs"]
mod common;

mod hooks_invoke;
mod hooks_auth;
mod spec_examples;
mod card_text;
mod feedback;
mod services;
mod isolation;
mod audit_flood;
mod http_hardening;
mod api;
mod phi_logs;
