//! Foundation model figures on this machine (prints; asserts nothing): the cost of one embedding
//! of a 48 h ward record (the `deteriorating` fixture's vitals and labs: hourly vitals, 247
//! Observations) on one CPU thread, by stage — Bundle → MEDS events, events → tokens, the
//! TorchScript forward pass through the model's inference thread — and end to end, p50 / p99
//! over 500 calls; plus load time. Then a task head served as an ordinary model version
//! (`models/deterioration/5.0.0`, token input): what its shadow score costs a hook call (its
//! tokens, then one forward pass on the padded context) and what the prediction API adds for
//! its explanation (integrated gradients, one batched backward pass).
//!
//! `cargo bench --bench foundation` (release).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use bedside::features::tokens::{encode, events_of_bundle};
use bedside::fhir::projection;
use bedside::inference::{FoundationModel, InferenceSettings, ModelRegistry};
use bedside::services::scoring;
use serde_json::value::RawValue;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn line(name: &str, mut times: Vec<Duration>) {
    times.sort();
    println!(
        "    {name:<28} p50 {:>8.3} ms   p99 {:>8.3} ms",
        pct(&times, 0.5).as_secs_f64() * 1e3,
        pct(&times, 0.99).as_secs_f64() * 1e3
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("foundation: run with `cargo bench --bench foundation`");
        return;
    }
    let mut settings = InferenceSettings::cpu();
    settings.threads = 1;
    let t = Instant::now();
    let fm = FoundationModel::find(&common::repo().join("models"), &settings)
        .unwrap()
        .expect("models/foundation/<version>/foundation.toml");
    let load = t.elapsed();
    let request = common::patient("deteriorating");
    let mut bundle = request["prefetch"]["vitals"].clone();
    let labs = request["prefetch"]["labs"]["entry"].clone();
    let entries = bundle["entry"].as_array_mut().unwrap();
    entries.extend(labs.as_array().cloned().unwrap_or_default());
    entries.push(serde_json::json!({"resource": request["prefetch"]["patient"].clone()}));
    let text = serde_json::to_string(&bundle).unwrap();
    let raw: &RawValue = serde_json::from_str(&text).unwrap();
    let now = chrono::Utc::now();
    let events = events_of_bundle(&fm.spec, raw).unwrap().events;
    let enc = encode(&fm.vocab, &events, now);
    println!(
        "foundation {} ({} parameters): loaded and warmed up in {:.0} ms; record {} KB, {} events, {} tokens (context {}), 1 LibTorch thread",
        fm.manifest.version,
        fm.manifest
            .pretraining
            .get("parameters")
            .map_or("?".into(), |v| v.to_string()),
        load.as_secs_f64() * 1e3,
        text.len() / 1024,
        enc.events,
        enc.ids.len(),
        fm.vocab.context()
    );
    let far = || Instant::now() + Duration::from_secs(30);
    for _ in 0..50 {
        fm.embed(enc.ids.clone(), enc.hours.clone(), far())
            .await
            .unwrap();
    }
    let n = 500;
    let (mut read, mut tok, mut fwd, mut total) = (vec![], vec![], vec![], vec![]);
    for _ in 0..n {
        let t0 = Instant::now();
        let raw: &RawValue = serde_json::from_str(&text).unwrap();
        let events = events_of_bundle(&fm.spec, raw).unwrap().events;
        let t1 = Instant::now();
        let enc = encode(&fm.vocab, &events, now);
        let t2 = Instant::now();
        std::hint::black_box(fm.embed(enc.ids, enc.hours, far()).await.unwrap());
        let t3 = Instant::now();
        read.push(t1 - t0);
        tok.push(t2 - t1);
        fwd.push(t3 - t2);
        total.push(t3 - t0);
    }
    line("Bundle -> MEDS events", read);
    line("events -> tokens", tok);
    line("forward (inference thread)", fwd);
    line("embedding call, end to end", total);
    // The most a call can cost: a record long enough to fill the context (the newest timed
    // tokens repeated, an hour apart per round).
    let context = fm.vocab.context();
    let statics = 3.min(enc.ids.len());
    let (mut ids, mut hours) = (enc.ids[..statics].to_vec(), enc.hours[..statics].to_vec());
    let mut round = 0.0f32;
    while ids.len() < context {
        for (id, h) in enc.ids[statics..].iter().zip(&enc.hours[statics..]) {
            if ids.len() < context {
                ids.push(*id);
                hours.push(round + h);
            }
        }
        round = hours.last().copied().unwrap_or(0.0) + 1.0;
    }
    let mut full = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        std::hint::black_box(fm.embed(ids.clone(), hours.clone(), far()).await.unwrap());
        full.push(t.elapsed());
    }
    line(&format!("forward at {context} tokens"), full);

    // A task head as a model version: the same record's Observations through the scoring path.
    let registry = ModelRegistry::load(&common::repo().join("models"), &settings).unwrap();
    let Some(head) = registry
        .versions("deterioration")
        .into_iter()
        .find(|m| m.vocab.is_some())
    else {
        println!("no token-input head under models/: skipped");
        return;
    };
    let projected = projection::observations(raw).unwrap();
    let (mut prep, mut risk, mut explain) = (vec![], vec![], vec![]);
    for i in 0..(n / 5 + 20) {
        let t0 = Instant::now();
        let prepared = scoring::prepare(&head, &projected.observations, 0, now);
        let t1 = Instant::now();
        std::hint::black_box(scoring::risk(&head, &prepared, far()).await.unwrap());
        let t2 = Instant::now();
        std::hint::black_box(scoring::score(&head, &prepared, far()).await.unwrap());
        let t3 = Instant::now();
        if i >= 20 {
            prep.push(t1 - t0);
            risk.push(t2 - t1);
            explain.push(t3 - t2);
        }
    }
    println!(
        "head {} {} ({}): {} readings as tokens, padded to {}",
        head.manifest.name,
        head.manifest.version,
        head.manifest.status.as_str(),
        scoring::prepare(&head, &projected.observations, 0, now)
            .matrix
            .measurements
            .len(),
        head.manifest.input.shape[0]
    );
    line("head: Observations -> tokens", prep);
    line("head: risk (a shadow score)", risk);
    line("head: risk + explanation", explain);
}
