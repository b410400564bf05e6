//! `bedside` command line: `serve`, `demo`, `check`, `conformance`, `report`, `probe`, `keygen`, `sign`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use bedside::config::Config;
use bedside::server::{self, AuthMode};

#[derive(Parser)]
#[command(
    name = "bedside",
    version,
    about = "CDS Hooks gateway for TorchScript early-detection models"
)]
struct Cli {
    /// Log lines as text (default) or as one JSON object each (for a log pipeline).
    #[arg(long, global = true, value_enum, default_value_t = bedside::telemetry::LogFormat::Text)]
    log_format: bedside::telemetry::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway with a configuration file.
    Serve {
        /// TOML configuration (BEDSIDE_* environment variables override its keys).
        #[arg(long, short)]
        config: PathBuf,
        /// Accept calls without a client JWT. For local testing only; logged as a warning.
        #[arg(long)]
        insecure_no_auth: bool,
    },
    /// Run the demo: the gateway with every shipped service (authentication on) and beside it
    /// a small EHR over synthetic patients that calls it, renders its cards and opens its app.
    Demo(bedside::demo::run::DemoOptions),
    /// Validate a configuration, its services and models (loads every model), then exit.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check any CDS Hooks 2.0 deployment the way an EHR would: one PASS/FAIL line per
    /// check, `N passed, N failed`, exit 1 on any failure. The deployment must trust this
    /// runner as a client (`--iss`, JWKS served at `--jwks-listen`; test keys only).
    Conformance(bedside::conformance::Options),
    /// Make an ed25519 key for signing models: the private key (PKCS#8) goes to `--out`
    /// (keep it offline), the public key is printed for `[[inference.trusted_keys]]`.
    Keygen {
        #[arg(long)]
        out: PathBuf,
        /// The id signatures will name.
        #[arg(long, default_value = "site")]
        key_id: String,
    },
    /// Sign model versions (`models/<name>/<version>/`, the foundation model's folder too):
    /// writes `manifest.sig` over the manifest (which holds the model file's sha256) and its
    /// feature spec.
    Sign {
        /// The PKCS#8 key `bedside keygen` wrote.
        #[arg(long)]
        key: PathBuf,
        /// The id of the key, as listed in `[[inference.trusted_keys]]`.
        #[arg(long, default_value = "site")]
        key_id: String,
        /// Model version folders.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
    },
    /// Print the feedback-analytics report (per service and model version: cards shown,
    /// acceptance and override rates by reason, suggestions accepted, suppressed/abstained,
    /// alerts per patient-day, shadow vs active agreement) from the configured store.
    Report {
        #[arg(long, short)]
        config: PathBuf,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Check an EHR's (sandbox) FHIR server for bedside's services with one test patient:
    /// CapabilityStatement, every prefetch query as an EHR fills it (status, paging, `_sort`,
    /// `_count`), recognised codes, data density, and whether each model would score or
    /// abstain. Exit 0 ok, 1 warnings, 2 errors.
    Probe(bedside::probe::Options),
    /// Evaluate a model version on this site's shadow records (agreement with the active
    /// version, outcome metrics where outcomes were imported) and store the evaluation a
    /// promotion needs. Exit 1 when it does not meet the `[governance]` criteria.
    Evaluate {
        #[arg(long, short)]
        config: PathBuf,
        model: String,
        version: String,
        /// Print JSON instead of the summary.
        #[arg(long)]
        json: bool,
    },
    /// Make a shadow version active on its newest stored evaluation (the active version
    /// becomes shadow), recording who, when and why. The running gateway applies it on its
    /// next reload (SIGHUP); `POST /admin/models/{model}/{version}/promote` applies it at once.
    Promote(DecisionArgs),
    /// Retire a model version: it is no longer loaded (recorded like a promotion).
    Retire(DecisionArgs),
    /// List every model version with its status (decided or as its manifest says) and its
    /// decisions.
    Models {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Import outcomes for evaluation: NDJSON lines {"patient", "fhirServer", "event", "at"};
    /// patient ids are pseudonymised on the way in.
    Outcomes {
        #[arg(long, short)]
        config: PathBuf,
        /// The NDJSON file.
        #[arg(long)]
        file: PathBuf,
        /// Outcomes are complete up to this instant (RFC 3339; default: now).
        #[arg(long)]
        through: Option<chrono::DateTime<chrono::Utc>>,
        /// Events the file is complete for even if it has no line of them.
        #[arg(long = "event")]
        events: Vec<String>,
    },
    /// Export de-identified learning data (MEDS event stream, Parquet and NDJSON) with a data dictionary
    /// and a de-identification report. The site secret comes from BEDSIDE_EXPORT_SECRET or
    /// --secret-file, never from the configuration.
    Export(ExportArgs),
}

/// What `bedside export` takes.
#[derive(clap::Args)]
struct ExportArgs {
    #[arg(long, short)]
    config: PathBuf,
    /// An empty or new folder.
    #[arg(long)]
    out: PathBuf,
    /// Names the export; with the secret it seeds subject ids and date shifts (reuse it only
    /// to reproduce an export).
    #[arg(long)]
    export_id: String,
    /// Share subject ids and date shifts with earlier exports of this series (so they can be
    /// joined); without it no two exports can be joined without the secret.
    #[arg(long)]
    series: Option<String>,
    /// Predictions since midnight UTC this many days ago.
    #[arg(long, default_value_t = 90)]
    days: u32,
    /// Dates move by at most this many days per patient.
    #[arg(long, default_value_t = 30)]
    max_shift_days: u32,
    /// Leave out subjects whose age band, sex, ZIP3 and admission month fewer than k subjects
    /// share (1: none).
    #[arg(long, default_value_t = 5)]
    k: u32,
    /// Which files: MEDS Parquet, NDJSON, or both.
    #[arg(long, value_enum, default_value_t = bedside::governance::export::ExportFormat::Both)]
    format: bedside::governance::export::ExportFormat,
    /// Clinicians' comments: dropped, or scrubbed by the offline allow-list rules.
    #[arg(long, value_enum, default_value_t = bedside::governance::export::FreeText::Drop)]
    free_text: bedside::governance::export::FreeText,
    /// A file holding the site secret (else BEDSIDE_EXPORT_SECRET).
    #[arg(long)]
    secret_file: Option<PathBuf>,
}

/// What `bedside promote` and `bedside retire` take.
#[derive(clap::Args)]
struct DecisionArgs {
    #[arg(long, short)]
    config: PathBuf,
    model: String,
    version: String,
    /// Who decides (recorded).
    #[arg(long)]
    by: String,
    /// Why (recorded; required).
    #[arg(long)]
    reason: String,
}

/// mimalloc instead of glibc's malloc for the gateway's own allocations: a hook call parses and
/// projects a ~200 KB Bundle into many small strings and vectors, and malloc/free were about a
/// tenth of a request worker's time under load (`perf`, README "Performance"). LibTorch keeps
/// its own allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    bedside::telemetry::init(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve {
                config,
                insecure_no_auth,
            } => serve(config, insecure_no_auth).await.map(done),
            Command::Demo(options) => bedside::demo::run::run(options).await.map(done),
            Command::Check { config } => check(config).await.map(done),
            Command::Conformance(options) => conformance(options).await.map(done),
            Command::Report { config, json } => report(config, json).await.map(done),
            Command::Probe(options) => probe(options).await,
            Command::Keygen { out, key_id } => keygen(&out, &key_id).map(done),
            Command::Sign { key, key_id, dirs } => sign(&key, &key_id, &dirs).map(done),
            Command::Evaluate {
                config,
                model,
                version,
                json,
            } => governance_evaluate(&load_config(&config)?, &model, &version, json).await,
            Command::Promote(args) => governance_decide(Decision::Promote, &args).await.map(done),
            Command::Retire(args) => governance_decide(Decision::Retire, &args).await.map(done),
            Command::Export(args) => governance_export(&load_config(&args.config)?, &args)
                .await
                .map(done),
            Command::Models { config } => governance_list(&load_config(&config)?).await.map(done),
            Command::Outcomes {
                config,
                file,
                through,
                events,
            } => governance_outcomes(&load_config(&config)?, &file, through, &events)
                .await
                .map(done),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_text(&e));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes on one line, each cause once: several of bedside's error types
/// both show their source in their own message and return it as `source()`, so anyhow's
/// `{:#}` printed it twice ("cannot listen on …: Address already in use: Address already in
/// use"). A cause whose text the line already holds is left out.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

fn keygen(out: &std::path::Path, key_id: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let (pkcs8, public) =
        bedside::inference::signature::generate_key().map_err(anyhow::Error::msg)?;
    // Never overwrite a key; readable by its owner only.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", out.display()))?;
    file.write_all(&pkcs8)?;
    println!("private key (PKCS#8, keep it offline): {}", out.display());
    println!(
        "add to the gateway's configuration:
"
    );
    println!(
        "[[inference.trusted_keys]]
id = \"{key_id}\"
public_key = \"{public}\""
    );
    Ok(())
}

fn sign(key: &std::path::Path, key_id: &str, dirs: &[PathBuf]) -> anyhow::Result<()> {
    let pkcs8 =
        std::fs::read(key).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", key.display()))?;
    for dir in dirs {
        let path = bedside::inference::signature::sign_version(dir, key_id, &pkcs8)
            .map_err(anyhow::Error::msg)?;
        println!("signed {} (key {key_id})", path.display());
    }
    Ok(())
}

fn done(_: ()) -> ExitCode {
    ExitCode::SUCCESS
}

/// `bedside probe`: prints the report; the exit status is its severity (0 ok, 1 warning,
/// 2 error). An unreachable server is also said on stderr.
async fn probe(options: bedside::probe::Options) -> anyhow::Result<ExitCode> {
    let report = bedside::probe::run(&options).await?;
    if options.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", bedside::probe::report::text(&report));
    }
    if !report.capability.reachable {
        if let Some(e) = &report.capability.error {
            eprintln!("error: {e}");
        }
    }
    Ok(ExitCode::from(report.severity.exit_code()))
}

async fn conformance(options: bedside::conformance::Options) -> anyhow::Result<()> {
    let report = bedside::conformance::run(&options)
        .await
        .map_err(anyhow::Error::msg)?;
    let (passed, failed) = report.counts();
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        anyhow::bail!("{failed} conformance check(s) failed");
    }
    Ok(())
}

async fn report(config: PathBuf, json: bool) -> anyhow::Result<()> {
    let config = load_config(&config)?;
    let store = bedside::store::Store::open_configured(&config.store_settings()).await?;
    let report = store.report(None).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", bedside::report::text(&report));
    }
    store.close().await;
    Ok(())
}

fn load_config(path: &std::path::Path) -> anyhow::Result<Config> {
    Ok(Config::load(path, &bedside::config::process_env())?)
}

async fn serve(config: PathBuf, insecure_no_auth: bool) -> anyhow::Result<()> {
    let config = load_config(&config)?;
    let mode = if insecure_no_auth {
        AuthMode::InsecureDisabled
    } else {
        AuthMode::Required
    };
    if bedside::telemetry::otlp::start(&config.telemetry).map_err(anyhow::Error::msg)? {
        tracing::info!("exporting traces over OTLP");
    }
    let state = server::build_state(config, mode).await?;
    let running = server::start(state)?;
    tracing::info!(addr = %running.addr, "bedside listening");
    println!("bedside listening on http://{}", running.addr);
    running.server.await?;
    // Stopped (SIGTERM, Ctrl-C): the spans of the last calls still go to the collector.
    bedside::telemetry::otlp::flush(std::time::Duration::from_secs(5)).await;
    Ok(())
}

async fn check(config: PathBuf) -> anyhow::Result<()> {
    let config = load_config(&config)?;
    let state = server::build_state(config, AuthMode::Required).await?;
    println!(
        "libtorch: cuda available = {} ({} device(s)), cudnn = {}",
        bedside::inference::cuda_is_available(),
        tch::Cuda::device_count(),
        tch::Cuda::cudnn_is_available()
    );
    let runtime = state.runtime();
    for model in runtime.models.iter() {
        println!(
            "model   {} {} ({:?}) on {}: sha256 ok, warm-up ok",
            model.manifest.name,
            model.manifest.version,
            model.manifest.status,
            model.handle.device()
        );
    }
    if let Some(fm) = &runtime.foundation {
        println!(
            "foundation {} {}: sha256 ok (model and vocabulary), warm-up ok",
            fm.manifest.name, fm.manifest.version
        );
    }
    for model in runtime.models.iter() {
        // The developer's part of the model card, when the model has one.
        let path = model
            .model_card
            .parent()
            .and_then(|v| v.parent())
            .map(|m| m.join("source_attributes.toml"));
        if let Some(path) = path.filter(|p| p.is_file()) {
            bedside::governance::source_attributes::DeveloperText::load(&path)
                .map_err(anyhow::Error::msg)?;
            println!("source attributes {}: ok", path.display());
        }
    }
    for service in runtime.services.iter() {
        println!("service {} ({}): ok", service.id(), service.hook());
    }
    println!("configuration ok");
    Ok(())
}

/// Opens the configured store and runs `f` with a [`bedside::governance::Governor`] over it.
async fn with_governor<T>(
    config: &Config,
    f: impl AsyncFnOnce(&bedside::governance::Governor<'_>) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let store = bedside::store::Store::open_configured(&config.store_settings()).await?;
    let governor = bedside::governance::Governor {
        store: &store,
        models_dir: &config.models_dir,
        services_dir: &config.services_dir,
        settings: &config.governance,
        trusted_keys: &config.inference.trusted_keys,
    };
    let result = f(&governor).await;
    store.close().await;
    result
}

/// `bedside evaluate`: exit 0 when the stored evaluation passed, 1 when it did not.
async fn governance_evaluate(
    config: &Config,
    model: &str,
    version: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    with_governor(config, async |g| {
        let stored = g.evaluate(model, version, chrono::Utc::now()).await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&stored)?);
        } else {
            let e: bedside::governance::Evaluation =
                serde_json::from_value(stored.evaluation.clone())?;
            print!("{}", e.text());
            println!("stored as evaluation {}", stored.id);
        }
        Ok(if stored.passed {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    })
    .await
}

/// Which lifecycle change `bedside promote` / `retire` asks for.
enum Decision {
    Promote,
    Retire,
}

async fn governance_decide(decision: Decision, args: &DecisionArgs) -> anyhow::Result<()> {
    let config = load_config(&args.config)?;
    let DecisionArgs {
        model,
        version,
        by,
        reason,
        ..
    } = args;
    with_governor(&config, async |g| {
        let request = bedside::governance::Request {
            actor: by,
            via: "cli",
            reason,
            now: chrono::Utc::now(),
        };
        let decisions = match decision {
            Decision::Promote => g.promote(model, version, &request).await?,
            Decision::Retire => g.retire(model, version, &request).await?,
        };
        for d in &decisions {
            println!(
                "recorded decision {}: {} {} {} -> {} (by {})",
                d.id, d.model, d.version, d.previous, d.status, d.actor
            );
        }
        println!("a running gateway applies it on reload: kill -HUP <pid>");
        Ok(())
    })
    .await
}

async fn governance_list(config: &Config) -> anyhow::Result<()> {
    with_governor(config, async |g| {
        for (name, versions) in g.catalogue().await? {
            for v in versions {
                let evaluation = g
                    .store
                    .latest_evaluation(&name, &v.manifest.version)
                    .await?;
                println!(
                    "{name:<14} {:<8} {:<8} (manifest: {}){}",
                    v.manifest.version,
                    v.status.as_str(),
                    v.declared.as_str(),
                    evaluation.map_or(String::new(), |e| format!(
                        "  evaluation {} {} {}",
                        e.id,
                        e.at.format("%Y-%m-%d %H:%M"),
                        if e.passed { "passed" } else { "failed" }
                    ))
                );
            }
        }
        for d in g.store.decisions(None).await? {
            println!(
                "decision {} {} {} {} -> {} by {} via {} at {}",
                d.id, d.model, d.version, d.previous, d.status, d.actor, d.via, d.at
            );
        }
        Ok(())
    })
    .await
}

async fn governance_outcomes(
    config: &Config,
    file: &std::path::Path,
    through: Option<chrono::DateTime<chrono::Utc>>,
    events: &[String],
) -> anyhow::Result<()> {
    let reader = std::io::BufReader::new(
        std::fs::File::open(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?,
    );
    with_governor(config, async |g| {
        let now = chrono::Utc::now();
        let import = bedside::governance::import_outcomes(
            g.store,
            reader,
            events,
            through.unwrap_or(now),
            now,
        )
        .await
        .map_err(anyhow::Error::msg)?;
        for (event, read) in &import.read {
            println!(
                "{event}: {read} read, {} new; complete through {}",
                import.added.get(event).copied().unwrap_or(0),
                through.unwrap_or(now)
            );
        }
        Ok(())
    })
    .await
}

async fn governance_export(config: &Config, args: &ExportArgs) -> anyhow::Result<()> {
    let secret = match args.secret_file.as_deref() {
        Some(path) => std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            .trim_ascii()
            .to_vec(),
        None => std::env::var("BEDSIDE_EXPORT_SECRET")
            .map_err(|_| anyhow::anyhow!("set BEDSIDE_EXPORT_SECRET or pass --secret-file"))?
            .into_bytes(),
    };
    // From midnight UTC, so that the same export made twice on one day is the same bytes.
    let since = (chrono::Utc::now() - chrono::Duration::days(i64::from(args.days)))
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .map_or_else(chrono::Utc::now, |t| t.and_utc());
    with_governor(config, async |g| {
        let report = bedside::governance::export::export(
            g.store,
            &bedside::governance::export::ExportOptions {
                out: &args.out,
                export_id: &args.export_id,
                series: args.series.as_deref(),
                since,
                max_shift_days: args.max_shift_days,
                k: args.k,
                free_text: args.free_text,
                format: args.format,
                secret: &secret,
            },
        )
        .await
        .map_err(anyhow::Error::msg)?;
        println!(
            "exported {} subjects to {} ({}; {} model inputs; {} subjects left out for k = {}); de-identification report: {}",
            report.subjects,
            args.out.join("data/data.ndjson").display(),
            report
                .events
                .iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect::<Vec<_>>()
                .join(", "),
            report.inputs,
            report.quasi_identifiers.subjects_suppressed,
            report.quasi_identifiers.k,
            args.out.join("deid_report.json").display()
        );
        Ok(())
    })
    .await
}
