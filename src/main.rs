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
    /// Sign model versions (`models/<name>/<version>/`): writes `manifest.sig` over the
    /// manifest (which holds the model file's sha256) and its feature spec.
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
}

fn main() -> ExitCode {
    bedside::telemetry::init();
    let cli = Cli::parse();
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
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
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
    let state = server::build_state(config, mode).await?;
    let running = server::start(state)?;
    tracing::info!(addr = %running.addr, "bedside listening");
    println!("bedside listening on http://{}", running.addr);
    running.server.await?;
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
    for service in runtime.services.iter() {
        println!("service {} ({}): ok", service.id(), service.hook());
    }
    println!("configuration ok");
    Ok(())
}
