#![no_main]
//! See `bedside::fuzz_targets::prefetch_template`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bedside::fuzz_targets::prefetch_template(data));
