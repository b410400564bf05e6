//! Integration tests of SMART App Launch and Backend Services against a real authorization server, in headless Chromium.
//!
//! One test binary per area, so LibTorch is linked once per area, not once per file.

#[path = "../common/mod.rs"]
mod common;

mod demo_ehr;
mod smart_backend;
mod smart_launch;
