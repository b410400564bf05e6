//! Hook-call latency, measured end to end over loopback HTTP against a real gateway: client
//! JWT verification (RS384), request parsing, features, one batched TorchScript forward pass
//! (the score plus one counterfactual per feature), card rendering.
//!
//! `cargo bench --bench hook_latency` (release build). Prints figures; asserts nothing.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use bedside::features::{measurements, FeatureMatrix};
use bedside::fhir::projection;
use bedside::hooks::wire::HookRequest;

const WARMUP: usize = 20;
const CALLS: usize = 300;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let mean = samples.iter().sum::<Duration>().as_secs_f64() * 1e3 / samples.len() as f64;
    println!(
        "{name:<44} n={:<4} mean {mean:7.3} ms  p50 {:7.3}  p95 {:7.3}  p99 {:7.3}  max {:7.3}",
        samples.len(),
        percentile(&samples, 0.50),
        percentile(&samples, 0.95),
        percentile(&samples, 0.99),
        percentile(&samples, 1.0),
    );
}

#[tokio::main]
async fn main() {
    // `cargo test --all-targets` also runs harness-less benches; only `cargo bench` (which
    // passes `--bench`) should spend the time.
    if !std::env::args().any(|a| a == "--bench") {
        println!("hook_latency: run with `cargo bench --bench hook_latency`");
        return;
    }
    let keys = common::KeyServer::start().await;
    let gw = common::Gateway::with_keys(&keys).await;
    let client = common::http();
    let request = common::patient("deteriorating");
    let body = serde_json::to_vec(&request).unwrap();
    println!(
        "request: deteriorating patient, {} KB, {} vital-sign entries",
        body.len() / 1024,
        request["prefetch"]["vitals"]["entry"]
            .as_array()
            .map_or(0, Vec::len)
    );

    let mut samples = Vec::with_capacity(CALLS);
    for i in 0..WARMUP + CALLS {
        let token = common::bearer("deterioration", common::Key::Rs384);
        let started = Instant::now();
        let resp = client
            .post(gw.service("deterioration"))
            .header("Authorization", token)
            .header("Content-Type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let _ = resp.bytes().await.unwrap();
        if i >= WARMUP {
            samples.push(started.elapsed());
        }
    }
    report("hook call over HTTP (JWT + model + card)", samples);

    // The pieces, in-process.
    let text = String::from_utf8(body).unwrap();
    let registry = bedside::inference::ModelRegistry::load(
        &common::repo().join("models"),
        &bedside::config::InferenceSettings::cpu(),
    )
    .unwrap();
    let model = registry.get("deterioration", "1.0.0").unwrap();
    let mut parse = Vec::new();
    let mut infer = Vec::new();
    for _ in 0..CALLS {
        let started = Instant::now();
        let req: HookRequest<'_> = serde_json::from_str(&text).unwrap();
        let projected = projection::observations(req.prefetch.as_ref().unwrap()["vitals"]).unwrap();
        let (found, _) = measurements(&model.features, &projected.observations);
        let matrix = FeatureMatrix::build(
            &model.features,
            &model.normalisation,
            &found,
            chrono::Utc::now(),
        );
        parse.push(started.elapsed());

        let batch = matrix.with_each_feature_removed();
        let started = Instant::now();
        model
            .handle
            .score(
                batch,
                matrix.features + 1,
                Instant::now() + Duration::from_secs(5),
            )
            .await
            .unwrap();
        infer.push(started.elapsed());
    }
    report("parse + project + features (in-process)", parse);
    report(
        &format!("model forward, batch of 7 on {}", model.handle.device()),
        infer,
    );
    gw.stop().await;
}
