//! A real PostgreSQL server (Debian `postgresql`, installed by `.ci/setup`) as a child process:
//! a fresh cluster in a temporary folder (`initdb`, trust auth, user `bedside`), its own port
//! on 127.0.0.1 and its own socket folder, `fsync=off`. Killed (immediate shutdown) on drop.
//!
//! PostgreSQL refuses to run as root. When the tests run as root (CI containers), the cluster
//! folder is handed to `nobody` and `initdb` and `postgres` run as that user (set by the
//! process spawn itself: no `su`/`runuser` in between, so the child is the postmaster and the
//! pid to signal).

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::Connection;

/// The cluster's superuser; trust auth, no password.
pub const USER: &str = "bedside";
/// The database [`PostgresServer::url`] points at.
pub const DATABASE: &str = "bedside_test";

/// A running server, shut down on drop.
pub struct PostgresServer {
    /// The TCP port on 127.0.0.1.
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

/// The folder with `initdb` and `postgres`: `pg_config --bindir`, else the newest
/// `/usr/lib/postgresql/<version>/bin` (Debian keeps them off PATH), else PATH.
fn bindir() -> PathBuf {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_both(&dir) {
            return dir;
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, dir)| has_both(dir))
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return dir;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|dir| has_both(dir))
        .unwrap_or_else(|| {
            panic!("PostgreSQL (initdb, postgres) not found: run .ci/setup (it installs Debian `postgresql`)")
        })
}

/// `(uid, gid)` of `nobody`, to run the server as when we are root.
fn nobody() -> (u32, u32) {
    let id = |flag: &str| {
        let out = Command::new("id")
            .args([flag, "nobody"])
            .output()
            .expect("run `id`");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u32>()
            .unwrap_or_else(|_| panic!("no `nobody` user to run PostgreSQL as (root is refused)"))
    };
    (id("-u"), id("-g"))
}

impl PostgresServer {
    /// Creates a cluster, starts the server, waits until it answers and creates [`DATABASE`].
    pub async fn start() -> Self {
        let bin = bindir();
        let dir = tempfile::Builder::new()
            .prefix("bedside-pg-")
            .tempdir()
            .unwrap();
        // The folder is ours: its owner is who we run as.
        let as_root = std::fs::metadata(dir.path()).unwrap().uid() == 0;
        let user = as_root.then(nobody);
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let data = dir.path().join("data");
        let sockets = dir.path().join("sockets");
        let log_path = dir.path().join("postgres.log");
        let log = || {
            std::fs::File::options()
                .create(true)
                .append(true)
                .open(&log_path)
                .unwrap()
        };
        let command = |exe: &str| {
            let mut c = Command::new(bin.join(exe));
            c.current_dir(dir.path())
                .env("LC_ALL", "C")
                .stdin(Stdio::null())
                .stdout(log())
                .stderr(log());
            if let Some((uid, gid)) = user {
                c.uid(uid).gid(gid);
            }
            c
        };

        let initdb = command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", USER, "--auth=trust", "--locale=C", "--encoding=UTF8"])
            .arg("--no-sync")
            .status()
            .expect("run initdb");
        assert!(
            initdb.success(),
            "initdb failed: {}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        std::fs::create_dir(&sockets).unwrap();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&sockets, Some(uid), Some(gid)).unwrap();
        }

        let port = super::process::free_port();
        let child = command("postgres")
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&sockets)
            .args(["-p", &port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "full_page_writes=off", "-c", "synchronous_commit=off"])
            .spawn()
            .expect("start postgres");
        let mut server = Self { port, child, dir };

        let admin = format!("postgres://{USER}@127.0.0.1:{port}/postgres");
        let started = Instant::now();
        let mut conn = loop {
            match sqlx::PgConnection::connect(&admin).await {
                Ok(conn) => break conn,
                Err(e) => {
                    let exited = server.child.try_wait().ok().flatten();
                    assert!(
                        exited.is_none() && started.elapsed() < Duration::from_secs(60),
                        "PostgreSQL did not start ({e}; exit: {exited:?}): {}",
                        server.log()
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        sqlx::query(&format!("CREATE DATABASE {DATABASE}"))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        server
    }

    /// `postgres://bedside@127.0.0.1:<port>/bedside_test`.
    pub fn url(&self) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// What the server and `initdb` wrote.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        // SIGQUIT: immediate shutdown (no checkpoint; the cluster is thrown away anyway), which
        // still stops the backends and releases shared memory; SIGKILL if that hangs.
        let _ = Command::new("kill")
            .args(["-QUIT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
