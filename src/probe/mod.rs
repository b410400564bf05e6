//! `bedside probe`: is an EHR's (sandbox) FHIR server ready for bedside's services?
//!
//! The integration engineer's step after the demo. For one patient the probe reads the
//! server's CapabilityStatement ([`capability`]), fills every prefetch template of every
//! service the way an EHR would and runs each query through bedside's own FHIR client and
//! egress policy ([`queries`]), feeds what came back into each service's feature pipeline and
//! guardrails ([`assess`]), and reports what would happen, as text or JSON ([`report`]). It
//! reuses the loaders, client, feature extraction and abstention rules the gateway runs, so
//! what it says is what `bedside serve` would do with that server's data.

pub mod assess;
pub mod capability;
pub mod queries;
pub mod report;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};
use url::Url;

use crate::config::Config;
use crate::fhir::{EgressPolicy, FhirClient, FhirSettings, OriginRule};
use crate::inference::{InferenceSettings, ModelRegistry};
use crate::services::load_all;

pub use report::{Report, Severity};

/// `bedside probe <FHIR base> --patient <id> …`: what the command line gives the probe.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Base URL of the FHIR server to probe (e.g. `https://sandbox.ehr.example/fhir`). It is
    /// allowed exactly for this run (a private or plain-http sandbox is reachable).
    pub fhir_base: String,
    /// The (test) patient whose data the services' prefetch queries ask for.
    #[arg(long)]
    pub patient: String,
    /// Bearer token sent with every request (as an EHR's `fhirAuthorization` would be). Prefer
    /// the environment variable: a command-line argument shows in `ps` and shell history.
    #[arg(long, env = "BEDSIDE_PROBE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// `context.userId` (e.g. `Practitioner/123`) for templates with user tokens; without it
    /// those templates are reported as skipped.
    #[arg(long)]
    pub user: Option<String>,
    /// bedside configuration: its `services_dir`, `models_dir`, `[fhir]` limits and
    /// `[inference]` settings. Without it: `cds-services/` and `models/` of the current
    /// directory and default limits, as the demo uses.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Print the report as JSON (shape documented on [`report::Report`]).
    #[arg(long)]
    pub json: bool,
    /// Time allowed for each request to the server, in seconds.
    #[arg(long, default_value_t = 30)]
    pub timeout_secs: u64,
}

/// Why the probe could not run at all (before contacting the server). A server that cannot
/// be reached is not one of these: it is a finding, reported with severity `error`.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// `--config` could not be read or is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigErrors),
    /// The models could not be loaded.
    #[error(transparent)]
    Models(#[from] crate::inference::LoadError),
    /// The service definitions are invalid.
    #[error(transparent)]
    Services(#[from] crate::services::DefinitionErrors),
    /// The FHIR base is not an http(s) URL, or the client could not be built.
    #[error("{0}")]
    Base(String),
}

/// Runs the whole probe and returns its report (print it with [`report::text`] or as JSON;
/// its [`Report::severity`] gives the exit status).
pub async fn run(options: &Options) -> Result<Report, ProbeError> {
    let (services_dir, models_dir, fhir_settings, inference, allowed) = match &options.config {
        Some(path) => {
            let config = Config::load(path, &crate::config::process_env())?;
            (
                config.services_dir.clone(),
                config.models_dir.clone(),
                config.fhir.settings.clone(),
                config.inference.clone(),
                config.fhir.allowed_servers.clone(),
            )
        }
        None => (
            PathBuf::from("cds-services"),
            PathBuf::from("models"),
            FhirSettings::default(),
            InferenceSettings::cpu(),
            Vec::new(),
        ),
    };
    let base = Url::parse(&options.fhir_base)
        .map_err(|e| ProbeError::Base(format!("`{}` is not a URL: {e}", options.fhir_base)))?;
    if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
        return Err(ProbeError::Base(format!(
            "`{}` is not an http(s) URL with a host",
            options.fhir_base
        )));
    }
    // The probed origin is allowed exactly for this run, beside the configured development
    // list: every request and `next` link still passes the gateway's egress checks.
    let mut rules = allowed;
    rules.push(OriginRule::parse(&base.origin().ascii_serialization()).map_err(ProbeError::Base)?);
    let client = FhirClient::new(fhir_settings, EgressPolicy::new(Vec::new(), rules))
        .map_err(|e| ProbeError::Base(format!("FHIR client: {e}")))?;

    let models = tokio::task::spawn_blocking(move || ModelRegistry::load(&models_dir, &inference))
        .await
        .map_err(|e| ProbeError::Base(format!("loading models: {e}")))??;
    let defs = load_all(&services_dir, &models)?;

    let probe = queries::Prober {
        client: &client,
        base: options.fhir_base.as_str(),
        token: options.token.as_deref(),
        timeout: Duration::from_secs(options.timeout_secs.max(1)),
    };
    let capability = capability::check(&probe, &capability::wanted(&defs)).await;
    let now = chrono::Utc::now();
    let mut report = Report::new(&options.fhir_base, &options.patient, capability);
    if !report.capability.reachable {
        let why = report
            .capability
            .error
            .clone()
            .unwrap_or_else(|| "the FHIR server could not be reached".into());
        for def in &defs {
            report
                .services
                .push(report::ServiceReport::unreachable(def, &why));
        }
        report.finish();
        return Ok(report);
    }
    let (encounter_lookup, encounter_id) = probe.newest_encounter(&options.patient).await;
    report.encounter_lookup = Some(encounter_lookup);
    let context = context(
        &options.patient,
        encounter_id.as_deref(),
        options.user.as_deref(),
    );
    for def in &defs {
        let Some(model) = models.get(&def.model_name, &def.model_version) else {
            continue;
        };
        let runs = probe
            .run_service(def, &context, encounter_id.as_deref())
            .await;
        report.services.push(assess::assess(def, &model, runs, now));
    }
    report.finish();
    Ok(report)
}

/// The hook `context` an EHR would send for this patient: `patientId`, the newest
/// Encounter's id when there is one, `userId` when given.
pub fn context(patient: &str, encounter: Option<&str>, user: Option<&str>) -> Map<String, Value> {
    let mut context = Map::new();
    context.insert("patientId".into(), patient.into());
    if let Some(e) = encounter {
        context.insert("encounterId".into(), e.into());
    }
    if let Some(u) = user {
        context.insert("userId".into(), u.into());
    }
    context
}
