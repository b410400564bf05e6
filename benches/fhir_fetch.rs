//! The gateway's overhead on a fetch-on-miss hook: a patient-view call with no prefetch, so
//! bedside reads the Patient and searches the vitals on a real FHIR server (sekmet-fhir) in
//! parallel, scores and answers. Each round also issues the same two queries directly, in
//! parallel, from this process, which is the FHIR server's own time for them; the overhead is
//! the difference, per round.
//!
//! `cargo bench --bench fhir_fetch` (BENCH_ROUNDS, default 300). Needs `.ci/setup` (the
//! FHIR server in `.venv-fhir`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::fhir_server::{aimed_at, FhirServer, FHIR_TOKEN};
use common::{bearer, http, patient, Gateway, Key, KeyServer};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(name: &str, mut v: Vec<f64>) {
    v.sort_by(f64::total_cmp);
    println!(
        "{name:<44} p50 {:>7.2} ms   p90 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms",
        percentile(&v, 0.5),
        percentile(&v, 0.9),
        percentile(&v, 0.99),
        v[v.len() - 1]
    );
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("fhir_fetch: run with `cargo bench --bench fhir_fetch`");
        return;
    }
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let server = FhirServer::start().await;
    let keys = KeyServer::start().await;
    let gw = Gateway::with_fhir(&keys, vec![server.origin()]).await;
    let mut request = patient("deteriorating");
    server.load_prefetch(&request).await;
    let prefetched = request.clone();
    request.as_object_mut().unwrap().remove("prefetch");
    let request = aimed_at(request, &server);
    let patient_id = request["context"]["patientId"].as_str().unwrap().to_owned();
    // The two queries deterioration.toml's templates render to (labs is optional and unused).
    let queries = [
        format!("{}/Patient/{patient_id}", server.base),
        format!(
            "{}/Observation?patient={patient_id}&category=vital-signs&_sort=-date&_count=500",
            server.base
        ),
    ];
    let client = http();
    let direct = || async {
        let t = Instant::now();
        let (a, b) = tokio::join!(
            client
                .get(&queries[0])
                .bearer_auth(FHIR_TOKEN)
                .header("Accept", "application/fhir+json")
                .send(),
            client
                .get(&queries[1])
                .bearer_auth(FHIR_TOKEN)
                .header("Accept", "application/fhir+json")
                .send()
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert!(a.status().is_success() && b.status().is_success());
        let (_, _) = tokio::join!(a.bytes(), b.bytes());
        t.elapsed()
    };
    let call = |body: &serde_json::Value| {
        let body = body.clone();
        let client = &client;
        let gw = &gw;
        async move {
            let t = Instant::now();
            let r = client
                .post(gw.service("deterioration"))
                .header("Authorization", bearer("deterioration", Key::Es384))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["cards"].as_array().map(Vec::len), Some(1), "{body}");
            t.elapsed()
        }
    };
    let hook = || call(&request);
    for _ in 0..20 {
        direct().await;
        hook().await;
    }
    let (mut e2e, mut fhir, mut overhead, mut full) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for i in 0..rounds {
        // Alternate the order so neither side always runs on a warmer server.
        let (d, h) = if i % 2 == 0 {
            let d = direct().await;
            (d, hook().await)
        } else {
            let h = hook().await;
            (direct().await, h)
        };
        full.push(ms(call(&prefetched).await));
        e2e.push(ms(h));
        fhir.push(ms(d));
        overhead.push(ms(h) - ms(d));
    }
    println!(
        "fetch-on-miss patient-view, {rounds} rounds, {} CPU cores, {} vital-sign Observations",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        request_vitals()
    );
    summary("hook end to end (no prefetch)", e2e);
    summary("hook end to end (full prefetch, reference)", full);
    summary("same 2 queries direct, in parallel", fhir);
    summary("gateway overhead (paired difference)", overhead);
    gw.stop().await;
}

fn request_vitals() -> usize {
    patient("deteriorating")["prefetch"]["vitals"]["entry"]
        .as_array()
        .map_or(0, Vec::len)
}
