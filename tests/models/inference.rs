//! The inference runtime: registry errors, dynamic batching, deadlines, back-pressure, devices.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bedside::inference::{cuda_is_available, InferenceError, ModelRegistry};
use bedside::inference::{DevicePreference, InferenceSettings, ModelSettings};
use futures_util::future::join_all;

fn settings(max_batch: usize, max_wait_ms: u64, queue_capacity: usize) -> InferenceSettings {
    InferenceSettings {
        trusted_keys: Vec::new(),
        threads: 0,
        defaults: ModelSettings {
            device: DevicePreference::Cpu,
            queue_capacity,
            max_batch,
            max_wait: Duration::from_millis(max_wait_ms),
        },
        models: Default::default(),
    }
}

/// A sample that is not all zeros: sample `i` gets distinct values so batching mix-ups show.
fn sample(i: usize, per_sample: usize) -> Vec<f32> {
    (0..per_sample)
        .map(|j| (((i * 31 + j * 7) % 23) as f32 - 11.0) / 7.0)
        .collect()
}

fn load_err(models: &Path) -> String {
    match ModelRegistry::load(models, &InferenceSettings::cpu()) {
        Ok(_) => panic!("loaded a broken model folder"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn concurrent_requests_are_batched_and_match_unbatched_results() {
    let registry =
        ModelRegistry::load(&common::repo().join("models"), &settings(64, 30, 64)).unwrap();
    let model = registry.get("deterioration", "2.0.0").unwrap();
    let n = model.handle.per_sample();
    let deadline = || Instant::now() + Duration::from_secs(10);

    // Unbatched: one at a time.
    let mut alone = Vec::new();
    for i in 0..8 {
        alone.push(
            model
                .handle
                .score(sample(i, n), 1, deadline())
                .await
                .unwrap()[0],
        );
    }
    let batches_before = model
        .handle
        .metrics()
        .batches
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(batches_before, 8);

    // Concurrent: queued together within max_wait, run as one or a few batches.
    let results = join_all((0..8).map(|i| model.handle.score(sample(i, n), 1, deadline()))).await;
    let m = model.handle.metrics();
    let max_jobs = m
        .max_jobs_per_batch
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        max_jobs > 1,
        "no batching happened (max jobs per batch {max_jobs})"
    );
    for (i, r) in results.into_iter().enumerate() {
        let batched = r.unwrap()[0];
        assert!(
            (batched - alone[i]).abs() <= 1e-5,
            "sample {i}: batched {batched}, alone {}",
            alone[i]
        );
    }
    // A multi-sample job keeps its samples in order inside a batch.
    let mut pair = sample(3, n);
    pair.extend(sample(5, n));
    let both = model.handle.score(pair, 2, deadline()).await.unwrap();
    assert!((both[0] - alone[3]).abs() <= 1e-5 && (both[1] - alone[5]).abs() <= 1e-5);
}

#[tokio::test]
async fn an_expired_request_is_dropped_without_stalling_the_others() {
    let registry =
        ModelRegistry::load(&common::repo().join("models"), &settings(64, 80, 64)).unwrap();
    let model = registry.get("deterioration", "2.0.0").unwrap();
    let n = model.handle.per_sample();
    let started = Instant::now();
    let late = model
        .handle
        .score(sample(1, n), 1, Instant::now() + Duration::from_millis(20));
    let fine = model
        .handle
        .score(sample(2, n), 1, Instant::now() + Duration::from_secs(5));
    let (late, fine) = tokio::join!(late, fine);
    assert_eq!(late.unwrap_err(), InferenceError::DeadlineExceeded);
    assert!(fine.is_ok(), "{fine:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    let expired = model
        .handle
        .metrics()
        .expired
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        expired, 1,
        "the expired job was computed instead of dropped"
    );
}

#[tokio::test]
async fn a_full_queue_answers_at_once() {
    // One job in the queue at most, one sample per forward pass: a burst overflows.
    let registry = ModelRegistry::load(&common::repo().join("models"), &settings(1, 0, 1)).unwrap();
    let model = registry.get("deterioration", "2.0.0").unwrap();
    let n = model.handle.per_sample();
    let started = Instant::now();
    let results = join_all((0..20).map(|i| {
        model
            .handle
            .score(sample(i, n), 1, Instant::now() + Duration::from_secs(10))
    }))
    .await;
    let shed = results
        .iter()
        .filter(|r| matches!(r, Err(InferenceError::Overloaded)))
        .count();
    assert!(shed > 0, "no request was shed: {results:?}");
    assert!(results.iter().any(|r| r.is_ok()));
    assert_eq!(
        model
            .handle
            .metrics()
            .shed
            .load(std::sync::atomic::Ordering::Relaxed),
        shed as u64
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn cuda_requested_without_a_gpu_runs_on_cpu() {
    let mut s = settings(64, 1, 64);
    s.defaults.device = DevicePreference::Cuda;
    let registry = ModelRegistry::load(&common::repo().join("models"), &s).unwrap();
    let model = registry.get("deterioration", "2.0.0").unwrap();
    let expected = if cuda_is_available() { "cuda:0" } else { "cpu" };
    assert_eq!(model.handle.device(), expected);
    let n = model.handle.per_sample();
    assert!(model
        .handle
        .score(sample(0, n), 1, Instant::now() + Duration::from_secs(5))
        .await
        .is_ok());
}

#[test]
fn registry_errors_name_the_model_and_the_problem() {
    // Bad manifest syntax.
    let dir = tempfile::tempdir().unwrap();
    let models = common::copy_models(dir.path());
    std::fs::write(models.join("deterioration/2.0.0/manifest.toml"), "name = ").unwrap();
    assert!(
        load_err(&models).contains("invalid manifest"),
        "{}",
        load_err(&models)
    );

    // Missing model file.
    let dir = tempfile::tempdir().unwrap();
    let models = common::copy_models(dir.path());
    std::fs::remove_file(models.join("deterioration/2.0.0/model.pt")).unwrap();
    assert!(
        load_err(&models).contains("cannot read"),
        "{}",
        load_err(&models)
    );

    // Manifest shape that disagrees with the feature spec.
    let dir = tempfile::tempdir().unwrap();
    let models = common::copy_models(dir.path());
    let manifest = models.join("deterioration/2.0.0/manifest.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replace("shape = [48, 12]", "shape = [48, 10]"),
    )
    .unwrap();
    assert!(
        load_err(&models).contains("does not match the feature spec"),
        "{}",
        load_err(&models)
    );

    // A feature spec (and manifest) the model's forward cannot take: caught by the warm-up pass.
    let dir = tempfile::tempdir().unwrap();
    let models = common::copy_models(dir.path());
    let features = models.join("deterioration/features.toml");
    let spec = std::fs::read_to_string(&features).unwrap();
    let cut = spec
        .find("[[feature]]\nname = \"consciousness_not_alert\"")
        .unwrap();
    std::fs::write(&features, &spec[..cut]).unwrap();
    let text = std::fs::read_to_string(manifest_path(&models)).unwrap();
    let text = text
        .replace("shape = [48, 12]", "shape = [48, 10]")
        .replace(", 0.018356]", "]")
        .replace(", 0.134235]", "]");
    std::fs::write(manifest_path(&models), text).unwrap();
    let err = load_err(&models);
    assert!(err.contains("forward on the declared input shape"), "{err}");

    // Two manifests claiming the same name and version.
    let dir = tempfile::tempdir().unwrap();
    let models = common::copy_models(dir.path());
    let copy = models.join("deterioration/2.0.0-copy");
    std::fs::create_dir(&copy).unwrap();
    for f in ["manifest.toml", "model.pt"] {
        std::fs::copy(models.join("deterioration/2.0.0").join(f), copy.join(f)).unwrap();
    }
    assert!(
        load_err(&models).contains("configured twice"),
        "{}",
        load_err(&models)
    );

    // A token model (the foundation head) whose vocabulary is not the one its manifest hashed.
    let dir = tempfile::tempdir().unwrap();
    let models = common::copy_models(dir.path());
    let vocab = models.join("foundation/1.0.0/vocab.json");
    let text = std::fs::read_to_string(&vocab).unwrap();
    std::fs::write(&vocab, text.replacen("[PAD]", "[PAD ]", 1)).unwrap();
    let err = load_err(&models);
    assert!(
        err.contains("deterioration") && err.contains("5.0.0") && err.contains("vocab.json"),
        "{err}"
    );

    // A token model must explain itself (no occlusion over a token grid), and its shape must
    // hold the vocabulary's context.
    for (from, to, says) in [
        (
            "explanation = \"attribute\"",
            "explanation = \"occlusion\"",
            "explains itself",
        ),
        ("shape = [256, 2]", "shape = [128, 2]", "context of 256"),
        ("shape = [256, 2]", "shape = [256, 3]", "[context, 2]"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let models = common::copy_models(dir.path());
        let manifest = models.join("deterioration/5.0.0/manifest.toml");
        let text = std::fs::read_to_string(&manifest).unwrap();
        assert!(text.contains(from), "{from}");
        std::fs::write(&manifest, text.replace(from, to)).unwrap();
        let err = load_err(&models);
        assert!(err.contains(says), "{to}: {err}");
    }

    // A retired version is not loaded; an active one beside it still is.
    let dir = tempfile::tempdir().unwrap();
    let models = common::copy_models(dir.path());
    let old = models.join("deterioration/0.9.0");
    std::fs::create_dir(&old).unwrap();
    std::fs::copy(
        models.join("deterioration/2.0.0/model.pt"),
        old.join("model.pt"),
    )
    .unwrap();
    let text = std::fs::read_to_string(manifest_path(&models)).unwrap();
    std::fs::write(
        old.join("manifest.toml"),
        text.replace("version = \"2.0.0\"", "version = \"0.9.0\"")
            .replace("status = \"shadow\"", "status = \"retired\""),
    )
    .unwrap();
    let registry = ModelRegistry::load(&models, &InferenceSettings::cpu()).unwrap();
    assert!(registry.get("deterioration", "0.9.0").is_none());
    assert!(registry.get("deterioration", "2.0.0").is_some());
}

fn manifest_path(models: &Path) -> PathBuf {
    models.join("deterioration/2.0.0/manifest.toml")
}
