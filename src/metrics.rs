//! Counters operators watch, served at `GET /metrics` in the Prometheus text format.
//!
//! Plain atomics owned by the component that counts (an inference thread, a service); this
//! module only renders them. No labels carry patient data: model, version, service, reason.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the jobs-per-batch histogram buckets.
const JOB_BUCKETS: [u64; 7] = [1, 2, 4, 8, 16, 32, 64];

/// Upper bounds (seconds) of the latency histograms' buckets.
const SECONDS_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A Prometheus histogram of durations in seconds (`_bucket{le}`, `_sum`, `_count`): latency
/// percentiles per service and model version, computed by Prometheus across replicas.
#[derive(Debug, Default)]
pub struct SecondsHistogram {
    /// Cumulative counts per [`SECONDS_BUCKETS`] bound, then `+Inf`.
    buckets: [AtomicU64; SECONDS_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl SecondsHistogram {
    /// Counts one duration.
    pub fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        for (i, bound) in SECONDS_BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.buckets[SECONDS_BUCKETS.len()].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Writes the family `name` with `labels` (`service="x"`).
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for (i, bound) in SECONDS_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels},le=\"{bound}\"}} {}",
                get(&self.buckets[i])
            );
        }
        let count = get(&self.buckets[SECONDS_BUCKETS.len()]);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum{{{labels}}} {:.6}",
            get(&self.sum_micros) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// What one model's inference thread did.
#[derive(Debug, Default)]
pub struct ModelMetrics {
    /// Jobs (one per caller) that reached a forward pass.
    pub jobs: AtomicU64,
    pub samples: AtomicU64,
    pub batches: AtomicU64,
    /// Jobs dropped because their deadline passed before the forward pass.
    pub expired: AtomicU64,
    /// Jobs refused because the queue was full.
    pub shed: AtomicU64,
    /// Jobs whose forward pass failed.
    pub failed: AtomicU64,
    /// Largest number of jobs seen in one forward pass.
    pub max_jobs_per_batch: AtomicU64,
    pub forward_micros: AtomicU64,
    /// Cumulative counts per [`JOB_BUCKETS`] bound, then `+Inf`.
    jobs_per_batch: [AtomicU64; JOB_BUCKETS.len() + 1],
    /// Time per forward pass (a batch, local or remote).
    batch_seconds: SecondsHistogram,
}

impl ModelMetrics {
    /// Records one forward pass over `jobs` callers and `samples` samples.
    pub fn observe_batch(&self, jobs: usize, samples: usize, forward: Duration) {
        let jobs = jobs as u64;
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.jobs.fetch_add(jobs, Ordering::Relaxed);
        self.samples.fetch_add(samples as u64, Ordering::Relaxed);
        self.forward_micros
            .fetch_add(forward.as_micros() as u64, Ordering::Relaxed);
        self.batch_seconds.observe(forward);
        self.max_jobs_per_batch.fetch_max(jobs, Ordering::Relaxed);
        for (i, bound) in JOB_BUCKETS.iter().enumerate() {
            if jobs <= *bound {
                self.jobs_per_batch[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.jobs_per_batch[JOB_BUCKETS.len()].fetch_add(1, Ordering::Relaxed);
    }

    /// Writes this model's series.
    pub fn render(&self, out: &mut String, model: &str, version: &str) {
        let l = format!("model=\"{model}\",version=\"{version}\"");
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for (name, counter) in [
            ("jobs", &self.jobs),
            ("samples", &self.samples),
            ("batches", &self.batches),
            ("expired", &self.expired),
            ("shed", &self.shed),
            ("failed", &self.failed),
        ] {
            let _ = writeln!(
                out,
                "bedside_inference_{name}_total{{{l}}} {}",
                get(counter)
            );
        }
        let _ = writeln!(
            out,
            "bedside_inference_forward_seconds_total{{{l}}} {:.6}",
            get(&self.forward_micros) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "bedside_inference_max_jobs_per_batch{{{l}}} {}",
            get(&self.max_jobs_per_batch)
        );
        for (i, bound) in JOB_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "bedside_inference_jobs_per_batch_bucket{{{l},le=\"{bound}\"}} {}",
                get(&self.jobs_per_batch[i])
            );
        }
        let total = get(&self.jobs_per_batch[JOB_BUCKETS.len()]);
        let _ = writeln!(
            out,
            "bedside_inference_jobs_per_batch_bucket{{{l},le=\"+Inf\"}} {total}"
        );
        let _ = writeln!(
            out,
            "bedside_inference_jobs_per_batch_sum{{{l}}} {}",
            get(&self.jobs)
        );
        let _ = writeln!(out, "bedside_inference_jobs_per_batch_count{{{l}}} {total}");
        self.batch_seconds
            .render(out, "bedside_inference_batch_seconds", &l);
    }
}

/// Outcomes of one CDS service's calls.
#[derive(Debug, Default)]
pub struct ServiceMetrics {
    pub calls: AtomicU64,
    pub cards: AtomicU64,
    pub abstained: AtomicU64,
    /// Calls answered without the model's card because no score came in time or the queue
    /// was full.
    pub no_score: AtomicU64,
    pub prefetch_missing: AtomicU64,
    /// Cards not shown: the patient was alerted recently (or the clinician said "already aware").
    pub suppressed: AtomicU64,
    /// Warning/critical cards shown as info because the unit's alert budget for the shift is spent.
    pub downgraded: AtomicU64,
    /// Cards not shown because another service of the same group showed one on the same evidence.
    pub deduplicated: AtomicU64,
    /// Scores recorded without a card (shadow service or shadow model version).
    pub shadow: AtomicU64,
    /// Shadow-version scores not made: all of the service's pending slots were busy, or the
    /// low-priority inference thread did not get to it in time.
    pub shadow_skipped: AtomicU64,
    /// Calls answered empty because the service is switched off.
    pub disabled: AtomicU64,
    /// Prediction records that could not be written (the answer still went out).
    pub record_failed: AtomicU64,
    /// Card decisions made without their lock (another decision on the same patient, unit or
    /// call held it too long, or the store could not give it): suppression, budget and dedup
    /// may then let a second card through.
    pub decided_unlocked: AtomicU64,
    /// Time from a call's arrival at the service to its answer (cards or not, errors too).
    pub call_seconds: SecondsHistogram,
}

impl ServiceMetrics {
    /// Writes this service's series.
    pub fn render(&self, out: &mut String, service: &str) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for (name, counter) in [
            ("calls", &self.calls),
            ("cards", &self.cards),
            ("abstained", &self.abstained),
            ("no_score", &self.no_score),
            ("prefetch_missing", &self.prefetch_missing),
            ("suppressed", &self.suppressed),
            ("downgraded", &self.downgraded),
            ("deduplicated", &self.deduplicated),
            ("shadow", &self.shadow),
            ("shadow_skipped", &self.shadow_skipped),
            ("disabled", &self.disabled),
            ("record_failed", &self.record_failed),
            ("decided_unlocked", &self.decided_unlocked),
        ] {
            let _ = writeln!(
                out,
                "bedside_service_{name}_total{{service=\"{service}\"}} {}",
                get(counter)
            );
        }
        self.call_seconds.render(
            out,
            "bedside_service_call_seconds",
            &format!("service=\"{service}\""),
        );
    }
}

/// Increments a counter by one.
pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A label value as the Prometheus text format needs it (backslash, quote and newline
/// escaped).
pub fn label(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_land_in_cumulative_buckets() {
        let m = ModelMetrics::default();
        m.observe_batch(1, 7, Duration::from_millis(1));
        m.observe_batch(3, 21, Duration::from_millis(2));
        let mut out = String::new();
        m.render(&mut out, "m", "1");
        assert!(
            out.contains(
                "bedside_inference_jobs_per_batch_bucket{model=\"m\",version=\"1\",le=\"1\"} 1"
            ),
            "{out}"
        );
        assert!(out.contains("le=\"4\"} 2"), "{out}");
        assert!(
            out.contains("bedside_inference_max_jobs_per_batch{model=\"m\",version=\"1\"} 3"),
            "{out}"
        );
        assert!(
            out.contains("bedside_inference_samples_total{model=\"m\",version=\"1\"} 28"),
            "{out}"
        );
        // 1 ms and 2 ms forward passes: in the 1 ms bucket one, in the 2.5 ms bucket both.
        for line in [
            "bedside_inference_batch_seconds_bucket{model=\"m\",version=\"1\",le=\"0.001\"} 1",
            "bedside_inference_batch_seconds_bucket{model=\"m\",version=\"1\",le=\"0.0025\"} 2",
            "bedside_inference_batch_seconds_bucket{model=\"m\",version=\"1\",le=\"+Inf\"} 2",
            "bedside_inference_batch_seconds_sum{model=\"m\",version=\"1\"} 0.003000",
            "bedside_inference_batch_seconds_count{model=\"m\",version=\"1\"} 2",
        ] {
            assert!(out.contains(line), "missing {line} in {out}");
        }
    }
}
