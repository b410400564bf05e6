//! `bedside demo` as a child process (the real binary, authentication on), killed on drop: the
//! gateway's and the demo EHR's URLs, the admin token and everything it printed.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running demo.
pub struct Demo {
    /// bedside's base URL.
    pub gateway: String,
    /// The demo EHR's origin.
    pub ehr: String,
    /// This run's admin token (report, kill switch).
    pub admin_token: String,
    /// What the demo printed up to "Press Ctrl-C".
    pub printed: String,
    /// Its `--data-dir` (database, written configuration, export secret).
    pub data_dir: std::path::PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Demo {
    /// Starts the demo on free ports with `extra` arguments (`--models-dir …`) and waits
    /// until it says it is running.
    pub fn start(extra: &[OsString]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let listen = format!("127.0.0.1:{}", super::process::free_port());
        let ehr_listen = format!("127.0.0.1:{}", super::process::free_port());
        let mut child = Command::new(env!("CARGO_BIN_EXE_bedside"))
            .args(["demo", "--listen", &listen, "--ehr-listen", &ehr_listen])
            .arg("--data-dir")
            .arg(dir.path())
            .args(extra)
            .current_dir(super::repo())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let started = Instant::now();
        let (mut admin_token, mut printed) = (None, String::new());
        loop {
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "the demo did not start: {printed}"
            );
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(line) if line.contains("Press Ctrl-C") => break,
                Ok(line) => {
                    if line.contains("Admin token") {
                        admin_token = line.split_whitespace().last().map(str::to_owned);
                    }
                    printed.push_str(&line);
                    printed.push('\n');
                }
                Err(_) => {}
            }
        }
        Self {
            gateway: format!("http://{listen}"),
            ehr: format!("http://{ehr_listen}"),
            admin_token: admin_token.expect("the demo printed its admin token"),
            printed,
            data_dir: dir.path().to_owned(),
            child,
            _dir: dir,
        }
    }

    /// bedside's feedback report (JSON).
    pub async fn report(&self) -> Value {
        reqwest::Client::new()
            .get(format!("{}/admin/report", self.gateway))
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Fires `hook` for `patient` through the demo EHR's API; its JSON answer.
    pub async fn fire(&self, patient: &str, hook: &str) -> Value {
        reqwest::Client::new()
            .post(format!("{}/api/patients/{patient}/hooks/{hook}", self.ehr))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}
