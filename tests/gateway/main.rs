//! Integration tests of the HTTP surfaces over real HTTP: CDS Hooks calls, client auth, spec examples, card text, feedback, services and guardrails, isolation, audit, hardening, the prediction API, PHI in logs.
//!
//! One test binary per area, so LibTorch is linked once per area, not once per file.

#[path = "../common/mod.rs"]
mod common;

mod api;
mod audit_flood;
mod card_text;
mod embed;
mod feedback;
mod governance;
mod hooks_auth;
mod hooks_invoke;
mod http_hardening;
mod isolation;
mod phi_logs;
mod services;
mod spec_examples;
