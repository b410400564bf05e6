#![no_main]
//! See `bedside::fuzz_targets::smart_callback`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bedside::fuzz_targets::smart_callback(data));
