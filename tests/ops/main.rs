//! Integration tests of the binary as operators run it: CLI, conformance runner, faults, fuzz corpora.
//!
//! One test binary per area, so LibTorch is linked once per area, not once per file.

#[path = "../common/mod.rs"]
mod common;

mod bulk_outcomes;
mod cli;
mod conformance;
mod faults;
mod fuzz_bounded;
mod fuzz_corpus;
mod governance_loop;
mod probe;
mod replicas;
mod traces;
