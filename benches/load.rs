//! Load and soak of the real `bedside serve` process on loopback (auth off: JWT costs are in
//! the `runtime` bench). Patient-view calls with the deteriorating patient's full prefetch (a
//! card every call); `BENCH_PATIENT=stable` for calls that end below threshold.
//!
//! - load: `cargo bench --bench load` — BENCH_CONNECTIONS (default 1000) concurrent
//!   connections for BENCH_SECS (default 30); every error counted; bedside's RSS sampled
//!   every second.
//! - soak: `BENCH_MODE=soak cargo bench --bench load` — BENCH_CONNECTIONS (default 16) for
//!   BENCH_SECS (default 600); RSS every 10 s printed as a table; flat = within 10 % of the
//!   first sample after warm-up.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::load::{drive, Call};
use common::process::{self, free_port, BedsideProcess};

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("load: run with `cargo bench --bench load` (BENCH_MODE=soak for the soak)");
        return;
    }
    let soak = std::env::var("BENCH_MODE").as_deref() == Ok("soak");
    let connections: usize = env_or("BENCH_CONNECTIONS", if soak { 16 } else { 1000 });
    let secs: u64 = env_or("BENCH_SECS", if soak { 600 } else { 30 });
    let sample_every = Duration::from_secs(if soak { 10 } else { 1 });

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = process::config(dir.path(), port, &dir.path().join("load.db"), "");
    let bedside = BedsideProcess::start(&config, port, "warn");
    let pid = bedside.pid();
    let url = format!("{}/cds-services/deterioration", bedside.url);
    let patient = std::env::var("BENCH_PATIENT").unwrap_or_else(|_| "deteriorating".into());
    let body = serde_json::to_vec(&common::patient(&patient)).unwrap();
    println!(
        "{} on loopback: {connections} connections for {secs} s, {} KB requests, {} CPU cores (load generator on the same cores)",
        if soak { "soak" } else { "load" },
        body.len() / 1024,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let started = Instant::now();
    let stop = started + Duration::from_secs(secs);
    let run = tokio::spawn(async move {
        let next = move || {
            Some(Call {
                body: body.clone(),
                authorization: None,
            })
        };
        drive(&url, connections, stop, Arc::new(next)).await
    });
    let mut samples = vec![(0u64, rss_kib(pid))];
    while Instant::now() < stop {
        tokio::time::sleep(sample_every).await;
        samples.push((started.elapsed().as_secs(), rss_kib(pid)));
    }
    let run = run.await.unwrap();
    println!(
        "{} answered 200, {} errors, {:.0} calls/s; latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        run.ok,
        run.errors,
        run.per_second(),
        run.percentile(0.5),
        run.percentile(0.99),
        run.latencies_ms.last().copied().unwrap_or(0.0)
    );
    let peak = samples.iter().map(|s| s.1).max().unwrap_or(0);
    if soak {
        println!("| t (s) | RSS (MiB) |\n|---|---|");
        for (t, kib) in &samples {
            println!("| {t} | {:.1} |", *kib as f64 / 1024.0);
        }
        // Warm-up: the first minute (allocator pools, connection buffers) is not judged.
        let judged: Vec<u64> = samples.iter().filter(|s| s.0 >= 60).map(|s| s.1).collect();
        if let (Some(first), Some(max), Some(min)) =
            (judged.first(), judged.iter().max(), judged.iter().min())
        {
            let spread = (*max as f64 - *min as f64) / *first as f64 * 100.0;
            println!(
                "RSS after warm-up: first {:.1} MiB, min {:.1}, max {:.1}: spread {spread:.1} % of the first ({})",
                *first as f64 / 1024.0,
                *min as f64 / 1024.0,
                *max as f64 / 1024.0,
                if spread <= 10.0 { "flat within 10 %" } else { "NOT flat within 10 %" }
            );
        }
    } else {
        println!(
            "bedside RSS: {:.1} MiB before, peak {:.1} MiB, {:.1} MiB at the end",
            samples[0].1 as f64 / 1024.0,
            peak as f64 / 1024.0,
            samples.last().map_or(0, |s| s.1) as f64 / 1024.0
        );
    }
}
