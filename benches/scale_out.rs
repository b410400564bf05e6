//! Scale-out: the same load against one `bedside serve` on SQLite, one on PostgreSQL, one and
//! two behind nginx (the example configuration, `tests/fixtures/deploy/nginx.conf`) on one
//! PostgreSQL, printed side by side as req/s, p50 and p99.
//!
//! `cargo bench --bench scale_out` (release build; needs Debian's postgresql and nginx, which
//! `.ci/setup` installs). Patient-view calls of the deterioration service with the deteriorating
//! patient's full prefetch (a card, its explanation, its decision lock and its record every
//! call), each call with a hookInstance of its own as an EHR sends them; auth off (JWT costs
//! are in the `runtime` bench). BENCH_SECS per run (default 10), BENCH_CONNECTIONS (default
//! 16), BENCH_PATIENT (`stable`: no card).
//!
//! Every process here — the replicas, PostgreSQL, nginx and this load generator — shares the
//! machine's cores: on 2 cores two replicas cannot be faster than one. What the run shows is
//! whether anything serialises across replicas (a shared lock, a hot row): the two-replica
//! figure should stay near the one-replica figure behind the same nginx, not collapse.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::load::{drive, Driven};
use common::nginx::Nginx;
use common::postgres::PostgresServer;
use common::process::{free_port, BedsideProcess};
use common::{config_text, GatewayOptions};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One replica's configuration in `dir`, listening on `port`, its store at `storage_url`
/// (PostgreSQL) or a SQLite file of its own.
fn replica_config(
    dir: &Path,
    name: &str,
    port: u16,
    storage_url: Option<String>,
) -> std::path::PathBuf {
    let opts = GatewayOptions {
        storage_url,
        ..Default::default()
    };
    let text = config_text(&opts, &dir.join(format!("{name}.db"))).replace(
        "listen = '127.0.0.1:0'",
        &format!("listen = '127.0.0.1:{port}'"),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// `connections` callers for `secs` against `url`, each call with a fresh hookInstance.
async fn load(
    url: String,
    template: Arc<serde_json::Value>,
    connections: usize,
    secs: u64,
) -> Driven {
    let body = move || {
        let mut request = (*template).clone();
        request["hookInstance"] = uuid::Uuid::new_v4().to_string().into();
        serde_json::to_vec(&request).unwrap_or_default()
    };
    let stop = Instant::now() + Duration::from_secs(secs);
    drive(&url, connections, stop, Arc::new(body)).await
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("scale_out: run with `cargo bench --bench scale_out`");
        return;
    }
    let secs: u64 = env_or("BENCH_SECS", 10);
    let connections: usize = env_or("BENCH_CONNECTIONS", 16);
    let patient = std::env::var("BENCH_PATIENT").unwrap_or_else(|_| "deteriorating".into());
    let template = Arc::new(common::patient(&patient));
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "scale-out on loopback: {connections} connections, {secs} s per run, `{patient}` patient-view calls, {cores} CPU cores shared by every process (replicas, PostgreSQL, nginx, load generator)"
    );
    let dir = tempfile::tempdir().unwrap();
    let pg = PostgresServer::start().await;
    let service = "/cds-services/deterioration";
    let mut rows: Vec<(&str, Driven)> = Vec::new();

    // One replica, SQLite.
    {
        let port = free_port();
        let config = replica_config(dir.path(), "sqlite", port, None);
        let bedside = BedsideProcess::start(&config, port, "warn");
        let url = format!("{}{service}", bedside.url);
        load(url.clone(), template.clone(), connections, 2).await; // warm-up
        rows.push((
            "1 replica, SQLite",
            load(url, template.clone(), connections, secs).await,
        ));
    }
    // One replica, PostgreSQL: direct, then behind nginx.
    let ports = [free_port(), free_port()];
    let a = BedsideProcess::start(
        &replica_config(dir.path(), "a", ports[0], Some(pg.url())),
        ports[0],
        "warn",
    );
    let url = format!("{}{service}", a.url);
    load(url.clone(), template.clone(), connections, 2).await;
    rows.push((
        "1 replica, PostgreSQL",
        load(url, template.clone(), connections, secs).await,
    ));
    {
        // nginx with both upstreams, the second not running: nginx marks it failed after the
        // first refused connection and sends everything to the one replica.
        let one = dir.path().join("nginx-one");
        std::fs::create_dir_all(&one).unwrap();
        let lb = Nginx::start(&one, ports);
        let url = format!("{}{service}", lb.url);
        load(url.clone(), template.clone(), connections, 2).await;
        rows.push((
            "1 replica behind nginx, PostgreSQL",
            load(url, template.clone(), connections, secs).await,
        ));
    }
    // Two replicas behind nginx on the same PostgreSQL.
    let b = BedsideProcess::start(
        &replica_config(dir.path(), "b", ports[1], Some(pg.url())),
        ports[1],
        "warn",
    );
    {
        let two = dir.path().join("nginx-two");
        std::fs::create_dir_all(&two).unwrap();
        let lb = Nginx::start(&two, ports);
        let url = format!("{}{service}", lb.url);
        load(url.clone(), template.clone(), connections, 2).await;
        rows.push((
            "2 replicas behind nginx, PostgreSQL",
            load(url, template.clone(), connections, secs).await,
        ));
    }
    drop(a);
    drop(b);

    println!(
        "\n| run | answered | errors | req/s | p50 (ms) | p99 (ms) |\n|---|---|---|---|---|---|"
    );
    for (name, r) in &rows {
        println!(
            "| {name} | {} | {} | {:.0} | {:.1} | {:.1} |",
            r.ok,
            r.errors,
            r.per_second(),
            r.percentile(0.5),
            r.percentile(0.99)
        );
    }
    if let (Some(one), Some(two)) = (rows.get(2), rows.get(3)) {
        println!(
            "\ntwo replicas / one replica behind nginx: {:.2}× req/s ({cores} cores shared by everything)",
            two.1.per_second() / one.1.per_second().max(1e-9)
        );
    }
}
