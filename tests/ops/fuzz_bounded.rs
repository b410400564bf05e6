//! A bounded fuzzing pass CI can afford: each `cargo fuzz` target's entry point is driven with
//! mutations of its committed seed corpus (byte flips, JSON-significant insertions, deletions,
//! duplications, splices between seeds) for a fixed number of inputs, with a seeded generator so
//! a failure reproduces. Coverage-guided runs (`fuzz/run.sh`) need a ~20 min sanitizer build and
//! stay a local/nightly job; any input either finds that crashes becomes a file under
//! `fuzz/regressions/<target>/`, which `tests/ops/fuzz_corpus.rs` replays.

use std::path::Path;

/// Inputs per target: about a second each on a debug build.
const INPUTS: usize = 20_000;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"null",
    b"-1",
    b"1e309",
    b"0.0",
    b"\"\"",
    b"\\u0000",
    b"{{",
    b"}}",
    b"..",
    b"/",
    b"%2F",
    b"\xff\xfe",
    b"\"resourceType\":\"Bundle\"",
    b"\"entry\":[",
    b"\"valueQuantity\":{\"value\":",
    b"\"effectiveDateTime\":\"",
    b"T99:99:99Z",
];

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut data = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(data.len() + 1);
        match rng.below(6) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                data.splice(at..at, t.iter().copied());
            }
            2 if !data.is_empty() => {
                let end = (at + 1 + rng.below(64)).min(data.len());
                data.drain(at.min(end)..end);
            }
            3 if !data.is_empty() => {
                let start = rng.below(data.len());
                let end = (start + 1 + rng.below(128)).min(data.len());
                let chunk = data[start..end].to_vec();
                data.splice(at..at, chunk);
            }
            4 => {
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len() + 1);
                data.truncate(at);
                data.extend_from_slice(&other[from..]);
            }
            _ => data.truncate(at),
        }
    }
    data
}

fn fuzz(target: &str, run: fn(&[u8]), seed: u64) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| std::fs::read(e.path()).unwrap())
        .collect();
    assert!(!seeds.is_empty(), "no seeds for {target}");
    let mut rng = Rng(seed);
    for i in 0..INPUTS {
        let input = mutate(&mut rng, &seeds);
        // A panic here fails the test; the message says how to reproduce the input.
        let outcome = std::panic::catch_unwind(|| run(&input));
        if outcome.is_err() {
            let path = std::env::temp_dir().join(format!("bedside-fuzz-{target}-{i}"));
            let _ = std::fs::write(&path, &input);
            panic!(
                "{target}: input {i} (seed {seed}) crashed; saved to {} — add it to fuzz/regressions/{target}/",
                path.display()
            );
        }
    }
}

#[test]
fn hook_request_survives_mutations() {
    fuzz(
        "hook_request",
        bedside::fuzz_targets::hook_request,
        0x5eed_0001,
    );
}

#[test]
fn bundle_to_features_survives_mutations() {
    fuzz(
        "bundle_to_features",
        bedside::fuzz_targets::bundle_to_features,
        0x5eed_0002,
    );
}

#[test]
fn prefetch_template_survives_mutations() {
    fuzz(
        "prefetch_template",
        bedside::fuzz_targets::prefetch_template,
        0x5eed_0003,
    );
}

#[test]
fn client_jwt_survives_mutations() {
    fuzz("client_jwt", bedside::fuzz_targets::client_jwt, 0x5eed_0004);
}

#[test]
fn smart_callback_survives_mutations() {
    fuzz(
        "smart_callback",
        bedside::fuzz_targets::smart_callback,
        0x5eed_0005,
    );
}
