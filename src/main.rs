//! `bedside` command line: `serve`, `demo`, `check`, `conformance`, `report`, `probe`.

use std::collections::BTreeMap;
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
    /// Run a local demo: the deterioration service on synthetic patients, auth off.
    Demo {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Where the demo writes its database and ready-to-post requests.
        #[arg(long, default_value = ".bedside")]
        data_dir: PathBuf,
    },
    /// Validate a configuration, its services and models (loads every model), then exit.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check any CDS Hooks 2.0 deployment the way an EHR would: one PASS/FAIL line per
    /// check, `N passed, N failed`, exit 1 on any failure. The deployment must trust this
    /// runner as a client (`--iss`, JWKS served at `--jwks-listen`; test keys only).
    Conformance(bedside::conformance::Options),
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
            Command::Demo { listen, data_dir } => demo(listen, data_dir).await.map(done),
            Command::Check { config } => check(config).await.map(done),
            Command::Conformance(options) => conformance(options).await.map(done),
            Command::Report { config, json } => report(config, json).await.map(done),
            Command::Probe(options) => probe(options).await,
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

async fn demo(listen: String, data_dir: PathBuf) -> anyhow::Result<()> {
    // A fresh admin token per run for the report and kill switch (only its sha256 is configured).
    let admin_token = uuid::Uuid::new_v4().simple().to_string();
    let text = format!(
        "listen = {listen:?}\npublic_url = \"http://{listen}\"\n[storage]\npath = {db:?}\n[cors]\nallowed_origins = [\"*\"]\n[[admin_tokens]]\nname = \"demo\"\nsha256 = \"{hash}\"\n",
        db = data_dir.join("demo.db").display().to_string(),
        hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(admin_token.as_bytes())),
    );
    let config = Config::from_toml_str(&text, "(demo defaults)", &BTreeMap::new())?;
    let base = config.public_base().to_owned();
    let state = server::build_state(config, AuthMode::InsecureDisabled).await?;
    let requests_dir = data_dir.join("demo");
    std::fs::create_dir_all(&requests_dir)?;
    let now = chrono::Utc::now();
    let mut written = Vec::new();
    for (name, what, json) in bedside::demo::PATIENTS {
        let request = bedside::demo::patient_request(json, now)?;
        let path = requests_dir.join(format!("{name}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(&request)?)?;
        written.push((name, what, path));
    }
    let state_services: Vec<(String, String)> = state
        .runtime()
        .services
        .iter()
        .map(|s| (s.id().to_owned(), s.hook().to_owned()))
        .collect();
    let running = server::start(state)?;
    println!("\nbedside demo is running (client authentication OFF; synthetic data only).\n");
    println!("  Discovery:       {base}/cds-services");
    for service in state_services.iter() {
        println!(
            "  CDS service:     {base}/cds-services/{}   (hook: {})",
            service.0, service.1
        );
    }
    println!("  Model cards:     {base}/models/deterioration/3.0.0/model-card, {base}/models/{{sepsis,aki}}/2.0.0/model-card");
    println!("  Report:          curl -H 'Authorization: Bearer {admin_token}' '{base}/admin/report?format=html'");
    println!("  CDS Hooks sandbox: add {base}/cds-services as a CDS service (CORS is open).\n");
    println!("Demo patients (times shifted to now), ready to post:");
    for (name, what, path) in &written {
        println!("  {name:<14} {what}\n                 {}", path.display());
    }
    let (_, _, first) = &written[0];
    println!("\nTry it — this returns a card scored by the TorchScript model:\n");
    println!(
        "  curl -s -X POST {base}/cds-services/deterioration -H 'Content-Type: application/json' --data @{} | python3 -m json.tool\n",
        first.display()
    );
    println!("Press Ctrl-C to stop.");
    running.server.await?;
    Ok(())
}
