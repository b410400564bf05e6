//! Inference runtime figures on this machine (prints; asserts nothing).
//!
//! (a) the limit: feature tensor build + forward pass alone, per hook request (1 + 6
//!     counterfactual samples), at batch 1 and with 32 requests in one forward pass;
//! (b) the gateway end to end over loopback HTTP, full prefetch (95 KB), client JWT (ES384,
//!     pre-signed, one `jti` each), at concurrency 1, 16, 64: requests/s, p50, p99;
//!     the same at concurrency 16 with authentication off, to show what JWT verification costs;
//! (c) (b)'s throughput over (a)'s.
//!
//! `cargo bench --bench runtime` (release). The load generator runs in the same process and
//! shares the CPU cores with the gateway, as wrk or oha on the same box would.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bedside::config::InferenceSettings;
use bedside::fhir::projection;
use bedside::hooks::wire::HookRequest;
use bedside::inference::ModelRegistry;
use bedside::server::AuthMode;
use bedside::services::scoring;
use common::{Gateway, GatewayOptions, Key, KeyServer};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("runtime: run with `cargo bench --bench runtime`");
        return;
    }
    let request = common::patient("deteriorating");
    let text = serde_json::to_string(&request).unwrap();
    println!(
        "machine: {} CPU cores; request: deteriorating patient, {} KB, {} vital-sign entries",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        text.len() / 1024,
        request["prefetch"]["vitals"]["entry"]
            .as_array()
            .map_or(0, Vec::len)
    );

    // (a) the limit.
    let mut settings = InferenceSettings::cpu();
    settings.defaults.max_batch = 1024;
    let registry = ModelRegistry::load(&common::repo().join("models"), &settings).unwrap();
    let model = registry.get("deterioration", "1.0.0").unwrap();
    println!("model on {}", model.handle.device());
    let parsed: HookRequest<'_> = serde_json::from_str(&text).unwrap();
    let vitals = parsed.prefetch.as_ref().unwrap()["vitals"];
    let far = || Instant::now() + Duration::from_secs(30);
    let mut limit_rps = 0.0;
    for per_forward in [1usize, 32] {
        let rounds = if per_forward == 1 { 400 } else { 40 };
        let mut build = Duration::ZERO;
        let mut forward = Duration::ZERO;
        for _ in 0..rounds {
            let t = Instant::now();
            let mut batch = Vec::new();
            for _ in 0..per_forward {
                let p = projection::observations(vitals).unwrap();
                let prepared = scoring::prepare(&model, &p.observations, 0, chrono::Utc::now());
                batch.extend(prepared.matrix.with_each_feature_removed());
            }
            build += t.elapsed();
            let t = Instant::now();
            model
                .handle
                .score(batch, per_forward * 7, far())
                .await
                .unwrap();
            forward += t.elapsed();
        }
        let n = (rounds * per_forward) as f64;
        let per_request = (build + forward).as_secs_f64() * 1e6 / n;
        println!(
            "(a) {per_forward:>2} request(s) per forward pass: tensor build {:6.0} µs + forward {:6.0} µs = {per_request:6.0} µs per request ({:5.0} requests/s on one thread)",
            build.as_secs_f64() * 1e6 / n,
            forward.as_secs_f64() * 1e6 / n,
            1e6 / per_request
        );
        limit_rps = f64::max(limit_rps, 1e6 / per_request);
    }
    drop(registry);

    // (b) end to end.
    let keys = KeyServer::start().await;
    let secured = Gateway::with_keys(&keys).await;
    let open = Gateway::start(GatewayOptions {
        auth: AuthMode::InsecureDisabled,
        ..Default::default()
    })
    .await;
    let body = Arc::new(text.into_bytes());
    let mut best = 0.0f64;
    for (gw, concurrency, total, auth) in [
        (&secured, 1usize, 400usize, true),
        (&secured, 16, 3000, true),
        (&secured, 64, 3000, true),
        (&open, 16, 3000, false),
    ] {
        let tokens: Vec<String> = if auth {
            (0..total + 50)
                .map(|_| common::bearer("deterioration", Key::Es384))
                .collect()
        } else {
            Vec::new()
        };
        let tokens = Arc::new(tokens);
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(concurrency)
            .build()
            .unwrap();
        let url = gw.service("deterioration");
        // Warm-up connections.
        for i in 0..concurrency.min(50) {
            let mut req = client
                .post(&url)
                .header("Content-Type", "application/json")
                .body(body.to_vec());
            if auth {
                req = req.header("Authorization", &tokens[total + (i % 50)]);
            }
            let _ = req.send().await.unwrap().bytes().await;
        }
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let started = Instant::now();
        let workers: Vec<_> = (0..concurrency)
            .map(|_| {
                let (client, url, body, tokens, next) = (
                    client.clone(),
                    url.clone(),
                    body.clone(),
                    tokens.clone(),
                    next.clone(),
                );
                tokio::spawn(async move {
                    let mut lat = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= total {
                            return lat;
                        }
                        let mut req = client
                            .post(&url)
                            .header("Content-Type", "application/json")
                            .body(body.to_vec());
                        if !tokens.is_empty() {
                            req = req.header("Authorization", &tokens[i]);
                        }
                        let t = Instant::now();
                        let resp = req.send().await.unwrap();
                        assert_eq!(resp.status().as_u16(), 200);
                        let _ = resp.bytes().await.unwrap();
                        lat.push(t.elapsed());
                    }
                })
            })
            .collect();
        let mut lat = Vec::new();
        for w in workers {
            lat.extend(w.await.unwrap());
        }
        let wall = started.elapsed();
        lat.sort();
        let rps = total as f64 / wall.as_secs_f64();
        if auth {
            best = best.max(rps);
        }
        println!(
            "(b) concurrency {concurrency:>2}, auth {}: {rps:6.0} requests/s, p50 {:6.2} ms, p99 {:6.2} ms, max {:6.2} ms",
            if auth { "ES384" } else { "off  " },
            ms(pct(&lat, 0.50)),
            ms(pct(&lat, 0.99)),
            ms(pct(&lat, 1.0))
        );
    }
    let metrics = common::http()
        .get(format!("{}/metrics", secured.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in metrics.lines().filter(|l| {
        l.starts_with("bedside_inference_max_jobs_per_batch")
            || l.starts_with("bedside_inference_batches_total")
            || l.starts_with("bedside_inference_jobs_total")
    }) {
        println!("    {line}");
    }
    println!("(c) end-to-end / limit throughput: {:.2} (best (b) with auth {best:.0} requests/s vs (a) {limit_rps:.0} requests/s)", best / limit_rps);
    secured.stop().await;
    open.stop().await;
}
