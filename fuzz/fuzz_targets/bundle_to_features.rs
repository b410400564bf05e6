#![no_main]
//! See `bedside::fuzz_targets::bundle_to_features`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bedside::fuzz_targets::bundle_to_features(data));
