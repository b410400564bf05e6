//! bedside as a separate process (`bedside serve`), for tests that kill it, read its logs or
//! need a real exit.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `bedside serve --insecure-no-auth`, killed (SIGKILL) on drop.
pub struct BedsideProcess {
    pub url: String,
    pub log: PathBuf,
    /// What it printed on stdout up to "listening".
    pub stdout: Vec<String>,
    child: Child,
}

/// A configuration for `dir` with auth off: `extra` is appended (tables only).
pub fn config(dir: &Path, port: u16, db: &Path, extra: &str) -> PathBuf {
    config_with_models(dir, port, db, &super::repo().join("models"), extra)
}

/// As [`config`], with models from `models`.
pub fn config_with_models(dir: &Path, port: u16, db: &Path, models: &Path, extra: &str) -> PathBuf {
    let path = dir.join("bedside.toml");
    std::fs::write(
        &path,
        format!(
            "listen = '127.0.0.1:{port}'\npublic_url = 'http://127.0.0.1:{port}'\nservices_dir = '{}'\nmodels_dir = '{}'\n[storage]\npath = '{}'\n[inference]\ndevice = 'cpu'\n{extra}",
            super::repo().join("cds-services").display(),
            models.display(),
            db.display(),
        ),
    )
    .unwrap();
    path
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

impl BedsideProcess {
    /// Starts `bedside serve` with `config` and `RUST_LOG=rust_log`; waits until it listens.
    pub fn start(config: &Path, port: u16, rust_log: &str) -> Self {
        Self::start_with_env(config, port, rust_log, &[])
    }

    /// As [`BedsideProcess::start`], with more environment variables (`HTTPS_PROXY`…).
    pub fn start_with_env(config: &Path, port: u16, rust_log: &str, env: &[(&str, &str)]) -> Self {
        Self::launch(config, port, rust_log, env, true)
    }

    /// `bedside serve` with client authentication on (the configuration's trusted clients).
    pub fn start_authenticated(config: &Path, port: u16) -> Self {
        Self::launch(config, port, "warn", &[], false)
    }

    fn launch(
        config: &Path,
        port: u16,
        rust_log: &str,
        env: &[(&str, &str)],
        insecure_no_auth: bool,
    ) -> Self {
        let log = config.with_file_name(format!("bedside-{port}.log"));
        let mut args = vec!["serve"];
        if insecure_no_auth {
            args.push("--insecure-no-auth");
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_bedside"))
            .args(args)
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", rust_log)
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut lines = Vec::new();
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| {
                    panic!(
                        "bedside did not start: {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    )
                });
            let ready = line.contains("bedside listening");
            lines.push(line);
            if ready {
                break;
            }
        }
        Self {
            url: format!("http://127.0.0.1:{port}"),
            log,
            stdout: lines,
            child,
        }
    }

    /// The process id (to sample its memory).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`HUP`, `STOP`…).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{name}");
    }

    /// SIGKILL: no shutdown, no flush, no checkpoint.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for BedsideProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
