//! A load generator for the benches: concurrent callers, each on one kept-alive connection,
//! posting JSON until a deadline, every error counted and every good answer's latency kept.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a run of [`drive`] saw.
pub struct Driven {
    /// Calls answered 200 with a readable body.
    pub ok: u64,
    /// Everything else (other statuses, transport errors, timeouts).
    pub errors: u64,
    /// Latencies of the good calls, ms, sorted.
    pub latencies_ms: Vec<f64>,
    /// Seconds from the first call to the last answer.
    pub elapsed_s: f64,
}

impl Driven {
    /// The `p`-quantile latency (0..=1), ms.
    pub fn percentile(&self, p: f64) -> f64 {
        let lat = &self.latencies_ms;
        lat.get(((lat.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0.0)
    }

    /// Good answers per second.
    pub fn per_second(&self) -> f64 {
        self.ok as f64 / self.elapsed_s.max(1e-9)
    }
}

/// One call to make: its JSON body and `Authorization` header, if any.
pub struct Call {
    pub body: Vec<u8>,
    pub authorization: Option<String>,
}

/// Makes the next call; `None` ends the caller (nothing left to send).
pub type NextCall = Arc<dyn Fn() -> Option<Call> + Send + Sync>;

/// `connections` callers POST `next()` to `url` until `stop` (or until `next` has no more).
pub async fn drive(url: &str, connections: usize, stop: Instant, next: NextCall) -> Driven {
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::<f64>::new()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (url, next, ok, errors, latencies) = (
            url.to_owned(),
            next.clone(),
            ok.clone(),
            errors.clone(),
            latencies.clone(),
        );
        tasks.push(tokio::spawn(async move {
            // One client per task: one kept-alive connection each.
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap();
            let mut mine = Vec::new();
            while Instant::now() < stop {
                let Some(call) = next() else { break };
                let mut request = client
                    .post(&url)
                    .header("Content-Type", "application/json")
                    .body(call.body);
                if let Some(auth) = call.authorization {
                    request = request.header("Authorization", auth);
                }
                let t = Instant::now();
                let answer = request.send().await;
                let good = match answer {
                    Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if good {
                    ok.fetch_add(1, Ordering::Relaxed);
                    mine.push(t.elapsed().as_secs_f64() * 1e3);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            latencies.lock().unwrap().extend(mine);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    let mut latencies_ms = latencies.lock().unwrap().clone();
    latencies_ms.sort_by(f64::total_cmp);
    Driven {
        ok: ok.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        latencies_ms,
        elapsed_s,
    }
}
