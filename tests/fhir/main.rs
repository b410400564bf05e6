//! Integration tests of the FHIR client against a real FHIR server: fetch-on-miss, faults, emitted resources.
//!
//! One test binary per area, so LibTorch is linked once per area, not once per file.

#[path = "../common/mod.rs"]
mod common;

mod fhir_client;
mod fhir_faults;
mod fhir_fetch;
mod fhir_resources;
