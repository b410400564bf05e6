//! Logging and tracing set-up. Log lines and spans carry ids (service, hookInstance, client,
//! tenant), never PHI.

pub mod otlp;

pub use otlp::{OtlpLayer, TelemetrySettings};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (timestamp, level, message, fields, span ids) for a log
    /// pipeline (journald, Loki, Elasticsearch).
    Json,
}

/// Installs a `tracing` subscriber: log lines honouring `RUST_LOG` (default `info`) on stderr,
/// and spans at `INFO` and above for OTLP export (sent only once [`otlp::start`] has run).
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let lines = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_writer(std::io::stderr);
    let lines = match format {
        LogFormat::Text => lines.boxed(),
        LogFormat::Json => lines.json().with_current_span(true).boxed(),
    };
    // The hint keeps TRACE and DEBUG call sites (here and in dependencies) switched off at
    // their source, as a global filter would.
    let spans = tracing_subscriber::filter::filter_fn(|meta| {
        meta.is_span() && *meta.level() <= tracing::Level::INFO
    })
    .with_max_level_hint(tracing::level_filters::LevelFilter::INFO);
    let _ = tracing_subscriber::registry()
        .with(lines.with_filter(filter))
        .with(OtlpLayer.with_filter(spans))
        .try_init();
}
