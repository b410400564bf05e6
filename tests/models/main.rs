//! Integration tests of the models: inference runtime, Rust/Python parity, explanations, the training pipeline, remote engines.
//!
//! One test binary per area, so LibTorch is linked once per area, not once per file.

#[path = "../common/mod.rs"]
mod common;

mod baselines_parity;
mod byo;
mod explanations;
mod feature_parity;
mod inference;
mod mlserver;
mod model_pipeline;
mod parity;
mod remote;
mod terminology_parity;
mod token_parity;
