//! OpenTelemetry traces over OTLP/HTTP with JSON encoding (OTLP 1.x, `POST {endpoint}/v1/traces`,
//! `Content-Type: application/json`), for the hospital's collector (OpenTelemetry Collector,
//! Jaeger, Tempo…). Off unless `[telemetry] otlp_endpoint` is set.
//!
//! A `tracing` layer turns every closed span at `INFO` or above into an OTLP span: its name,
//! start and end, trace and parent ids, and its fields as attributes (span fields carry ids
//! only — service, hookInstance, resource types, outcomes — never PHI). Spans wait in a
//! bounded queue (full: dropped and counted, never blocking a call) and go in batches every
//! `export_every`, each POST with a timeout.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// `[telemetry]`: where traces go. Absent: no traces leave the process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// The collector's OTLP/HTTP base URL (`http://collector:4318`); spans are POSTed to
    /// `{otlp_endpoint}/v1/traces`. Unset: traces off.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// Headers for every export (a collector's API key).
    #[serde(default)]
    pub otlp_headers: BTreeMap<String, String>,
    /// `service.name` of the exported resource.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// How often queued spans are sent.
    #[serde(default = "default_export_every", with = "humantime_serde")]
    pub export_every: Duration,
    /// Longest wait for the collector's answer to one export.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            otlp_headers: BTreeMap::new(),
            service_name: default_service_name(),
            export_every: default_export_every(),
            timeout: default_timeout(),
        }
    }
}

fn default_service_name() -> String {
    "bedside".into()
}

fn default_export_every() -> Duration {
    Duration::from_secs(2)
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

impl TelemetrySettings {
    /// `(key, problem)` for each setting that cannot work.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(endpoint) = &self.otlp_endpoint {
            match url::Url::parse(endpoint) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => out.push((
                    "telemetry.otlp_endpoint".into(),
                    format!("`{endpoint}` is not an http(s) URL"),
                )),
            }
        }
        for name in self.otlp_headers.keys() {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                out.push((
                    format!("telemetry.otlp_headers.{name}"),
                    "not a valid header name".into(),
                ));
            }
        }
        if self.export_every < Duration::from_millis(10) {
            out.push((
                "telemetry.export_every".into(),
                "must be at least 10ms".into(),
            ));
        }
        if self.timeout.is_zero() {
            out.push(("telemetry.timeout".into(), "must be more than 0".into()));
        }
        out
    }

    /// The URL spans are POSTed to, if traces are on.
    pub fn traces_url(&self) -> Option<String> {
        let base = self.otlp_endpoint.as_deref()?;
        Some(format!("{}/v1/traces", base.trim_end_matches('/')))
    }
}

/// Spans waiting for export at most; beyond, new spans are dropped and counted.
const QUEUE: usize = 8192;
/// Most spans in one export.
const MAX_BATCH: usize = 2048;

/// One finished span.
struct Finished {
    trace_id: u128,
    span_id: u64,
    parent: Option<u64>,
    name: &'static str,
    start: SystemTime,
    end: SystemTime,
    attributes: Vec<(&'static str, Value)>,
}

/// Where closed spans go once [`start`] has run.
struct Sink {
    queue: mpsc::Sender<Finished>,
    /// Asks the exporter to send what is queued now, and says when it has.
    flush: mpsc::Sender<tokio::sync::oneshot::Sender<()>>,
}

static SINK: OnceLock<Sink> = OnceLock::new();
static DROPPED: AtomicU64 = AtomicU64::new(0);
static EXPORTED: AtomicU64 = AtomicU64::new(0);

/// Spans dropped because the export queue was full (or the collector could not take them).
pub fn dropped_spans() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Spans the collector accepted.
pub fn exported_spans() -> u64 {
    EXPORTED.load(Ordering::Relaxed)
}

/// Starts exporting on the current Tokio runtime, if `settings` name an endpoint. Once per
/// process; later calls change nothing.
pub fn start(settings: &TelemetrySettings) -> Result<bool, String> {
    let Some(url) = settings.traces_url() else {
        return Ok(false);
    };
    let mut headers = reqwest::header::HeaderMap::new();
    for (k, v) in &settings.otlp_headers {
        let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
            .map_err(|e| format!("telemetry.otlp_headers.{k}: {e}"))?;
        let value = reqwest::header::HeaderValue::from_str(v)
            .map_err(|e| format!("telemetry.otlp_headers.{k}: {e}"))?;
        headers.insert(name, value);
    }
    let http = reqwest::Client::builder()
        .timeout(settings.timeout)
        .default_headers(headers)
        .build()
        .map_err(|e| e.to_string())?;
    let (tx, rx) = mpsc::channel(QUEUE);
    let (flush, flushes) = mpsc::channel(1);
    if SINK.set(Sink { queue: tx, flush }).is_err() {
        return Ok(true);
    }
    let exporter = Exporter {
        http,
        url,
        resource: resource(&settings.service_name),
        every: settings.export_every,
    };
    tokio::spawn(exporter.run(rx, flushes));
    Ok(true)
}

/// Sends the spans still queued (at shutdown: a stop loses no trace), waiting at most `wait`.
pub async fn flush(wait: Duration) {
    let Some(sink) = SINK.get() else { return };
    let (done, sent) = tokio::sync::oneshot::channel();
    if sink.flush.try_send(done).is_ok() {
        let _ = tokio::time::timeout(wait, sent).await;
    }
}

/// The exported resource: who the spans are from.
fn resource(service_name: &str) -> Value {
    json!({"attributes": [
        attribute("service.name", Value::String(service_name.to_owned())),
        attribute("service.version", Value::String(env!("CARGO_PKG_VERSION").to_owned())),
    ]})
}

struct Exporter {
    http: reqwest::Client,
    url: String,
    resource: Value,
    every: Duration,
}

impl Exporter {
    async fn run(
        self,
        mut rx: mpsc::Receiver<Finished>,
        mut flushes: mpsc::Receiver<tokio::sync::oneshot::Sender<()>>,
    ) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failures_logged = 0u32;
        let mut full = false;
        let mut flushing: Option<tokio::sync::oneshot::Sender<()>> = None;
        loop {
            // A full batch means more are waiting: send the next at once; so does a flush.
            if !full && flushing.is_none() {
                tokio::select! {
                    _ = tick.tick() => {}
                    Some(done) = flushes.recv() => flushing = Some(done),
                }
            }
            let mut batch = Vec::new();
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(span) => batch.push(span),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return,
                }
            }
            full = batch.len() == MAX_BATCH;
            if !batch.is_empty() {
                self.export(batch, &mut failures_logged).await;
            }
            // A flush is done once a batch that was not full has gone: nothing was left queued.
            if !full {
                if let Some(done) = flushing.take() {
                    let _ = done.send(());
                }
            }
        }
    }

    /// Sends one batch, counting it as exported or dropped.
    async fn export(&self, batch: Vec<Finished>, failures_logged: &mut u32) {
        let n = batch.len() as u64;
        match self.send(&batch).await {
            Ok(()) => {
                EXPORTED.fetch_add(n, Ordering::Relaxed);
                *failures_logged = 0;
            }
            Err(e) => {
                DROPPED.fetch_add(n, Ordering::Relaxed);
                // One line per run of failures, not one per batch.
                if *failures_logged == 0 {
                    tracing::warn!(error = %e, spans = n, "OTLP export failed; spans dropped");
                }
                *failures_logged = failures_logged.saturating_add(1);
            }
        }
    }

    async fn send(&self, batch: &[Finished]) -> Result<(), String> {
        let body = json!({"resourceSpans": [{
            "resource": self.resource,
            "scopeSpans": [{
                "scope": {"name": "bedside", "version": env!("CARGO_PKG_VERSION")},
                "spans": batch.iter().map(otlp_span).collect::<Vec<_>>(),
            }],
        }]});
        let r = self
            .http
            .post(&self.url)
            .json(&body)
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(format!("collector answered {}", r.status()))
        }
    }
}

fn unix_nanos(t: SystemTime) -> String {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
        .to_string()
}

/// One span as OTLP/JSON: ids as lowercase hex, times as decimal strings of nanoseconds.
fn otlp_span(s: &Finished) -> Value {
    let mut span = json!({
        "traceId": format!("{:032x}", s.trace_id),
        "spanId": format!("{:016x}", s.span_id),
        "name": s.name,
        // SPAN_KIND_SERVER for the hook call, INTERNAL for everything else.
        "kind": if s.name == SERVER_SPAN { 2 } else { 1 },
        "startTimeUnixNano": unix_nanos(s.start),
        "endTimeUnixNano": unix_nanos(s.end),
        "attributes": s.attributes.iter().map(|(k, v)| attribute(k, v.clone())).collect::<Vec<_>>(),
    });
    if let Some(parent) = s.parent {
        span["parentSpanId"] = Value::String(format!("{parent:016x}"));
    }
    // STATUS_CODE_ERROR for a call answered 5xx (OpenTelemetry's HTTP server convention).
    let status = s
        .attributes
        .iter()
        .find(|(k, _)| *k == "http.response.status_code")
        .and_then(|(_, v)| v.as_u64());
    if status.is_some_and(|code| code >= 500) {
        span["status"] = json!({"code": 2});
    }
    span
}

/// The name of the span that is the server side of a hook call.
pub const SERVER_SPAN: &str = "cds_hook";

/// An OTLP `KeyValue` with its `AnyValue`.
fn attribute(key: &str, value: Value) -> Value {
    let any = match value {
        Value::Bool(b) => json!({"boolValue": b}),
        // 64-bit integers are decimal strings in OTLP/JSON.
        Value::Number(n) if n.is_i64() => json!({"intValue": n.to_string()}),
        // Beyond int64: as text rather than an invalid intValue.
        Value::Number(n) if n.is_u64() => json!({"stringValue": n.to_string()}),
        Value::Number(n) => json!({"doubleValue": n}),
        Value::String(s) => json!({"stringValue": s}),
        other => json!({"stringValue": other.to_string()}),
    };
    json!({"key": key, "value": any})
}

/// A span being recorded (kept in the span's extensions until it closes).
struct Open {
    trace_id: u128,
    span_id: u64,
    parent: Option<u64>,
    start: SystemTime,
    attributes: Vec<(&'static str, Value)>,
}

/// Field values of a span as OTLP attribute values; `hook_instance` is named as CDS Hooks
/// names it.
struct Fields<'a>(&'a mut Vec<(&'static str, Value)>);

impl Fields<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        let key = match field.name() {
            "hook_instance" => "cds.hook_instance",
            "service" => "cds.service",
            other => other,
        };
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key, value)),
        }
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
}

/// `(trace id, parent span id)` of a W3C Trace Context `traceparent` header
/// (`00-<32 hex>-<16 hex>-<2 hex>`), if it is one: lowercase hex, ids not all zero, version not
/// `ff`; a later version may add fields after a `-`.
pub fn parse_traceparent(header: &str) -> Option<(u128, u64)> {
    let mut parts = header.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !hex(version, 2) || version == "ff" || !hex(flags, 2) || !hex(trace, 32) || !hex(parent, 16)
    {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let trace = u128::from_str_radix(trace, 16).ok().filter(|t| *t != 0)?;
    let parent = u64::from_str_radix(parent, 16).ok().filter(|p| *p != 0)?;
    Some((trace, parent))
}

/// Random non-zero ids (OTLP forbids all-zero trace and span ids).
fn new_trace_id() -> u128 {
    uuid::Uuid::new_v4().as_u128() | 1
}

fn new_span_id() -> u64 {
    (uuid::Uuid::new_v4().as_u64_pair().0) | 1
}

/// The `tracing` layer that hands closed spans to the exporter; does nothing until [`start`].
pub struct OtlpLayer;

impl<S> Layer<S> for OtlpLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if SINK.get().is_none() {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let parent = span.parent().and_then(|p| {
            p.extensions()
                .get::<Open>()
                .map(|o| (o.trace_id, o.span_id))
        });
        let mut open = Open {
            trace_id: parent.map_or_else(new_trace_id, |(t, _)| t),
            span_id: new_span_id(),
            parent: parent.map(|(_, s)| s),
            start: SystemTime::now(),
            attributes: Vec::new(),
        };
        attrs.record(&mut Fields(&mut open.attributes));
        // A caller's W3C `traceparent` (on the hook call's span): this trace continues theirs.
        if let Some(i) = open
            .attributes
            .iter()
            .position(|(k, _)| *k == "traceparent")
        {
            let (_, value) = open.attributes.remove(i);
            if let (None, Some((trace, remote))) =
                (parent, value.as_str().and_then(parse_traceparent))
            {
                open.trace_id = trace;
                open.parent = Some(remote);
            }
        }
        span.extensions_mut().insert(open);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        if let Some(open) = ext.get_mut::<Open>() {
            values.record(&mut Fields(&mut open.attributes));
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(sink) = SINK.get() else { return };
        let Some(span) = ctx.span(&id) else { return };
        let Some(open) = span.extensions_mut().remove::<Open>() else {
            return;
        };
        let finished = Finished {
            trace_id: open.trace_id,
            span_id: open.span_id,
            parent: open.parent,
            name: span.name(),
            start: open.start,
            end: SystemTime::now(),
            attributes: open.attributes,
        };
        if sink.queue.try_send(finished).is_err() {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_are_otlp_json_with_hex_ids_and_typed_attributes() {
        let s = Finished {
            trace_id: 0xabc,
            span_id: 0x12,
            parent: Some(0x34),
            name: "decision",
            start: UNIX_EPOCH + Duration::from_nanos(1_500),
            end: UNIX_EPOCH + Duration::from_nanos(2_500),
            attributes: vec![
                ("cds.service", Value::String("sepsis-screen".into())),
                ("cards", Value::from(1u64)),
                ("shown", Value::Bool(true)),
            ],
        };
        let v = otlp_span(&s);
        assert_eq!(v["traceId"], "00000000000000000000000000000abc");
        assert_eq!(v["spanId"], "0000000000000012");
        assert_eq!(v["parentSpanId"], "0000000000000034");
        assert_eq!(v["kind"], 1);
        assert_eq!(v["startTimeUnixNano"], "1500");
        assert_eq!(v["attributes"][1]["value"]["intValue"], "1");
        assert_eq!(v["attributes"][2]["value"]["boolValue"], true);
    }

    #[test]
    fn traceparent_is_read_as_w3c_trace_context_says() {
        assert_eq!(
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some((0x4bf92f3577b34da6a3ce929d0e0e4736, 0x00f067aa0ba902b7))
        );
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
        // A later version may append fields.
        assert!(
            parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-ab")
                .is_some()
        );
    }

    #[test]
    fn settings_need_an_http_endpoint_and_give_the_traces_path() {
        let mut s = TelemetrySettings::default();
        assert_eq!(s.traces_url(), None);
        assert!(s.problems().is_empty());
        s.otlp_endpoint = Some("http://collector:4318/".into());
        assert_eq!(
            s.traces_url().as_deref(),
            Some("http://collector:4318/v1/traces")
        );
        s.otlp_endpoint = Some("collector:4318".into());
        assert_eq!(s.problems().len(), 1);
    }
}
