//! Scale-out: the same load against one `bedside serve` on SQLite, one on PostgreSQL, one and
//! two behind nginx (the example configuration, `tests/fixtures/deploy/nginx.conf`) on one
//! PostgreSQL, printed side by side as req/s, p50 and p99.
//!
//! `cargo bench --bench scale_out` (release build; needs Debian's postgresql and nginx, which
//! `.ci/setup` installs). Patient-view calls of the deterioration service with the deteriorating
//! patient's full prefetch (a card, its explanation, its decision lock and its record every
//! call), each call with a hookInstance of its own as an EHR sends them. BENCH_SECS per run
//! (default 10), BENCH_CONNECTIONS (default 16), BENCH_PATIENT (`stable`: no card),
//! BENCH_AUTH (`rs384` or `es384`: a client JWT per call, signed before the run, so that the
//! replicas' replay check — a PostgreSQL round trip when shared — is in the figures; default
//! off), BENCH_TOKENS (tokens per run with auth, default 12000).
//!
//! Every process here — the replicas, PostgreSQL, nginx and this load generator — shares the
//! machine's cores: on 2 cores two replicas cannot be faster than one. What the run shows is
//! whether anything serialises across replicas (a shared lock, a hot row): the two-replica
//! figure should stay near the one-replica figure behind the same nginx, not collapse.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::load::{drive, Call, Driven};
use common::nginx::Nginx;
use common::postgres::PostgresServer;
use common::process::{free_port, BedsideProcess};
use common::{bearer, config_text, GatewayOptions, Key, KeyServer};

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
    jwks_url: Option<String>,
) -> std::path::PathBuf {
    let opts = GatewayOptions {
        storage_url,
        jwks_url,
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

/// The load every run gets: the request, the callers, and (auth on) the key that signs each
/// call's client JWT.
struct Bench {
    template: Arc<serde_json::Value>,
    connections: usize,
    auth: Option<Key>,
    /// Calls one measured run can make at most when auth is on (tokens are signed before the
    /// clock starts, so that signing does not eat the cores the replicas run on).
    tokens: usize,
}

impl Bench {
    /// A replica of `config` on `port`, authenticating callers when auth is on.
    fn replica(&self, config: &Path, port: u16) -> BedsideProcess {
        match self.auth {
            Some(_) => BedsideProcess::start_authenticated(config, port),
            None => BedsideProcess::start(config, port, "warn"),
        }
    }

    /// The callers for `secs` against `url`, each call with a hookInstance (and a token) of
    /// its own.
    async fn load(&self, url: &str, secs: u64) -> Driven {
        let tokens: Vec<String> = match self.auth {
            Some(key) => (0..self.tokens.min(secs as usize * 2000))
                .map(|_| bearer("deterioration", key))
                .collect(),
            None => Vec::new(),
        };
        let tokens = Mutex::new(tokens);
        let auth = self.auth.is_some();
        let template = self.template.clone();
        let next = move || {
            let authorization = if auth {
                Some(tokens.lock().ok()?.pop()?)
            } else {
                None
            };
            let mut request = (*template).clone();
            request["hookInstance"] = uuid::Uuid::new_v4().to_string().into();
            Some(Call {
                body: serde_json::to_vec(&request).unwrap_or_default(),
                authorization,
            })
        };
        let stop = Instant::now() + Duration::from_secs(secs);
        drive(url, self.connections, stop, Arc::new(next)).await
    }

    /// A warm-up of 2 s, then the measured run.
    async fn measure(&self, url: &str, secs: u64) -> Driven {
        self.load(url, 2).await;
        self.load(url, secs).await
    }
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("scale_out: run with `cargo bench --bench scale_out`");
        return;
    }
    let secs: u64 = env_or("BENCH_SECS", 10);
    let patient = std::env::var("BENCH_PATIENT").unwrap_or_else(|_| "deteriorating".into());
    let auth = match std::env::var("BENCH_AUTH").as_deref() {
        Ok("rs384") => Some(Key::Rs384),
        Ok("es384") => Some(Key::Es384),
        _ => None,
    };
    let bench = Bench {
        template: Arc::new(common::patient(&patient)),
        connections: env_or("BENCH_CONNECTIONS", 16),
        auth,
        tokens: env_or("BENCH_TOKENS", 12_000),
    };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "scale-out on loopback: {} connections, {secs} s per run, `{patient}` patient-view calls, client auth {}, {cores} CPU cores shared by every process (replicas, PostgreSQL, nginx, load generator)",
        bench.connections,
        match auth {
            Some(Key::Rs384) => "RS384 (one token per call, signed before each run)",
            Some(_) => "ES384 (one token per call, signed before each run)",
            None => "off",
        }
    );
    let dir = tempfile::tempdir().unwrap();
    let pg = PostgresServer::start().await;
    let keys = match auth {
        Some(_) => Some(KeyServer::start().await),
        None => None,
    };
    let jwks = keys.as_ref().map(KeyServer::jwks_url);
    let config = |name: &str, port: u16, store: Option<String>| {
        replica_config(dir.path(), name, port, store, jwks.clone())
    };
    let service = "/cds-services/deterioration";
    let mut rows: Vec<(&str, Driven)> = Vec::new();

    // One replica, SQLite.
    {
        let port = free_port();
        let bedside = bench.replica(&config("sqlite", port, None), port);
        let url = format!("{}{service}", bedside.url);
        rows.push(("1 replica, SQLite", bench.measure(&url, secs).await));
    }
    // One replica, PostgreSQL: direct, then behind nginx.
    let ports = [free_port(), free_port()];
    let a = bench.replica(&config("a", ports[0], Some(pg.url())), ports[0]);
    let url = format!("{}{service}", a.url);
    rows.push(("1 replica, PostgreSQL", bench.measure(&url, secs).await));
    {
        // nginx with both upstreams, the second not running: nginx marks it failed after the
        // first refused connection and sends everything to the one replica.
        let one = dir.path().join("nginx-one");
        std::fs::create_dir_all(&one).unwrap();
        let lb = Nginx::start(&one, ports);
        let url = format!("{}{service}", lb.url);
        rows.push((
            "1 replica behind nginx, PostgreSQL",
            bench.measure(&url, secs).await,
        ));
    }
    // Two replicas behind nginx on the same PostgreSQL.
    let b = bench.replica(&config("b", ports[1], Some(pg.url())), ports[1]);
    {
        let two = dir.path().join("nginx-two");
        std::fs::create_dir_all(&two).unwrap();
        let lb = Nginx::start(&two, ports);
        let url = format!("{}{service}", lb.url);
        rows.push((
            "2 replicas behind nginx, PostgreSQL",
            bench.measure(&url, secs).await,
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
    if auth.is_some() && rows.iter().any(|(_, r)| r.ok as usize >= bench.tokens) {
        println!("(a run used every token it had signed: raise BENCH_TOKENS)");
    }
}
