//! Replays every committed fuzz input — the seed corpus (`fuzz/corpus/<target>/`) and every
//! crash a fuzzing run found (`fuzz/regressions/<target>/`) — through the same entry points
//! `cargo fuzz` drives, so CI fails if a fixed crash comes back.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries.flatten() {
            let data = std::fs::read(entry.path()).unwrap();
            run(&data);
            n += 1;
        }
    }
    assert!(n > 0, "no inputs for {target}");
}

#[test]
fn hook_request_inputs() {
    replay("hook_request", bedside::fuzz_targets::hook_request);
}

#[test]
fn bundle_to_features_inputs() {
    replay(
        "bundle_to_features",
        bedside::fuzz_targets::bundle_to_features,
    );
}

#[test]
fn prefetch_template_inputs() {
    replay(
        "prefetch_template",
        bedside::fuzz_targets::prefetch_template,
    );
}

#[test]
fn client_jwt_inputs() {
    replay("client_jwt", bedside::fuzz_targets::client_jwt);
}

#[test]
fn smart_callback_inputs() {
    replay("smart_callback", bedside::fuzz_targets::smart_callback);
}
