//! `bedside demo`: the gateway with every shipped service and authentication on, and beside it
//! the demo EHR ([`super::ehr`]) it trusts as a client — one command to see the whole loop.

use std::collections::BTreeMap;
use std::path::PathBuf;

use actix_web::{web, App, HttpServer};

use super::ehr::{self, DemoEhr};
use crate::config::Config;
use crate::server::{self, AuthMode};

/// The SMART client id bedside uses with the demo's authorization server.
const SMART_CLIENT_ID: &str = "bedside-demo";

/// `bedside demo`'s options: where the demo listens, keeps its database and finds its models.
#[derive(Debug, clap::Args)]
pub struct DemoOptions {
    /// The gateway's address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// The demo EHR's address (open it in a browser).
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub ehr_listen: String,
    /// Where the demo keeps its database.
    #[arg(long, default_value = ".bedside")]
    pub data_dir: PathBuf,
    /// Models to load (put a model of your own here, `status = "shadow"`, to try it).
    #[arg(long, default_value = "models")]
    pub models_dir: PathBuf,
    /// CDS service definitions.
    #[arg(long, default_value = "cds-services")]
    pub services_dir: PathBuf,
    /// Also trust the public CDS Hooks sandbox (https://sandbox.cds-hooks.org) as a client.
    /// Its signing key is public: anyone who can reach the gateway could then call it.
    #[arg(long)]
    pub trust_sandbox: bool,
}

/// The gateway's configuration for the demo: the demo EHR as its one trusted client (and the
/// public CDS Hooks sandbox with `--trust-sandbox`), SMART launches from the EHR's FHIR base,
/// framed by the EHR.
fn config_text(opts: &DemoOptions, ehr_origin: &str, admin_token: &str) -> String {
    let db = opts.data_dir.join("demo.db").display().to_string();
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        admin_token.as_bytes(),
    ));
    format!(
        r#"listen = {listen:?}
public_url = "http://{listen}"
models_dir = {models:?}
services_dir = {services:?}
[storage]
path = {db:?}
[cors]
allowed_origins = {origins}
[http]
frame_ancestors = ["{ehr_origin}"]
[smart]
client_id = "{SMART_CLIENT_ID}"
allowed_issuers = ["{ehr_origin}/fhir"]
[[admin_tokens]]
name = "demo"
sha256 = "{hash}"
roles = ["report", "operate", "promote"]
[[clients]]
iss = "{ehr_origin}"
jwks_urls = ["{ehr_origin}/.well-known/jwks.json"]
fhir_servers = ["{ehr_origin}"]
{sandbox}"#,
        listen = opts.listen,
        origins = if opts.trust_sandbox {
            "[\"https://sandbox.cds-hooks.org\"]"
        } else {
            "[]"
        },
        sandbox = if opts.trust_sandbox {
            "[[clients]]\niss = \"https://sandbox.cds-hooks.org\"\njwks_urls = [\"https://sandbox.cds-hooks.org/.well-known/jwks.json\"]\nfhir_servers = [\"https://*\"]\n"
        } else {
            ""
        },
        models = opts.models_dir.display().to_string(),
        services = opts.services_dir.display().to_string(),
    )
}

/// Writes the demo's configuration (its admin token only as a hash) to `data_dir/bedside.toml`
/// for the governance commands (`bedside export | evaluate | promote -c …`, run from the same
/// folder as the demo), and a site secret for exports to `data_dir/export-secret` (owner-only;
/// kept across runs, so the demo's exports of one series stay joinable).
fn write_governance_files(opts: &DemoOptions, text: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let config_file = opts.data_dir.join("bedside.toml");
    std::fs::write(
        &config_file,
        format!(
            "# Written by `bedside demo` at each start: the demo's configuration, for\n# `bedside export | evaluate | promote | models -c` run from the folder the demo ran in.\n{text}"
        ),
    )?;
    let secret_file = opts.data_dir.join("export-secret");
    if !secret_file.is_file() {
        let secret = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        std::io::Write::write_all(&mut options.open(&secret_file)?, secret.as_bytes())?;
    }
    Ok((config_file, secret_file))
}

/// Runs the demo until Ctrl-C.
pub async fn run(opts: DemoOptions) -> anyhow::Result<()> {
    std::fs::create_dir_all(&opts.data_dir)?;
    // The EHR's port first: the gateway's configuration names its origin.
    let ehr_listener = std::net::TcpListener::bind(&opts.ehr_listen)?;
    let ehr_origin = format!("http://{}", ehr_listener.local_addr()?);
    let admin_token = uuid::Uuid::new_v4().simple().to_string();
    let text = config_text(&opts, &ehr_origin, &admin_token);
    let config = Config::from_toml_str(&text, "(demo defaults)", &BTreeMap::new())?;
    let (config_file, secret_file) = write_governance_files(&opts, &text)?;
    let gateway = config.public_base().to_owned();
    let state = server::build_state(config, AuthMode::Required).await?;
    let services: Vec<(String, String)> = state
        .runtime()
        .services
        .iter()
        .map(|s| (s.id().to_owned(), s.hook().to_owned()))
        .collect();
    let running = server::start(state)?;
    let ehr = web::Data::new(
        DemoEhr::new(
            &ehr_origin,
            &gateway,
            &admin_token,
            SMART_CLIENT_ID,
            &format!("{gateway}/smart/callback"),
        )
        .map_err(anyhow::Error::msg)?,
    );
    let patients = ehr.record.list();
    let ehr_data = ehr.clone();
    let ehr_server = HttpServer::new(move || {
        App::new()
            .app_data(ehr_data.clone())
            .configure(ehr::configure)
    })
    .workers(2)
    .listen(ehr_listener)?
    .run();

    println!("\nbedside demo is running — synthetic data only, client authentication ON.\n");
    println!("  Demo EHR (open this in a browser): {ehr_origin}/");
    println!("  Feedback report:                   {ehr_origin}/report");
    println!("  bedside discovery:                 {gateway}/cds-services");
    for (id, hook) in &services {
        println!(
            "  CDS service:                       {gateway}/cds-services/{id}   (hook: {hook})"
        );
    }
    println!(
        "  Model cards:                       {gateway}/models/deterioration/4.0.1/model-card"
    );
    println!("  Admin token (report, kill switch, promote): {admin_token}");
    println!(
        "  Its configuration, for the CLI:    {}",
        config_file.display()
    );
    println!("\n  Learning data out (de-identified MEDS), evaluate and promote a shadow version:");
    println!(
        "    bedside export -c {} --secret-file {} --out /tmp/bedside-export --export-id demo-1 --k 1",
        config_file.display(),
        secret_file.display()
    );
    println!(
        "    bedside evaluate -c {0} deterioration 2.0.0 && bedside models -c {0}",
        config_file.display()
    );
    println!("\n  The demo EHR signs each call with its own key (JWKS {ehr_origin}/.well-known/jwks.json),");
    println!("  fills prefetch from its chart, serves FHIR at {ehr_origin}/fhir and runs a SMART");
    println!(
        "  authorization server for the app behind each card. They exist for this demo only.\n"
    );
    println!("Demo patients:");
    for p in &patients {
        println!(
            "  {:<28} {}: {}",
            p["id"].as_str().unwrap_or_default(),
            p["label"].as_str().unwrap_or_default(),
            p["what"].as_str().unwrap_or_default()
        );
    }
    if let Some(first) = patients.first().and_then(|p| p["id"].as_str()) {
        println!("\nTry it from a shell — the demo EHR calls bedside as an EHR would and prints the answer:\n");
        println!("  curl -s -X POST {ehr_origin}/api/patients/{first}/hooks/patient-view | python3 -m json.tool\n");
    }
    println!("Press Ctrl-C to stop.");
    tokio::select! {
        r = running.server => r?,
        r = ehr_server => r?,
    }
    Ok(())
}
