//! A real, independent FHIR R4 server (PyPI `sekmet-fhir`, installed by `.ci/setup` into
//! `.venv-fhir`) as a child process: in-memory SQLite, its own port, bearer-token auth.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The token the server requires; hook requests pass it as `fhirAuthorization.access_token`.
pub const FHIR_TOKEN: &str = "test-fhir-access-token-7f3a";

/// A running FHIR server, killed on drop.
pub struct FhirServer {
    /// Base URL, e.g. `http://127.0.0.1:40123/fhir`.
    pub base: String,
    child: Child,
    _dir: tempfile::TempDir,
}

fn sekmet() -> PathBuf {
    super::repo().join(".venv-fhir/bin/sekmet")
}

impl FhirServer {
    /// Starts a server and waits until `/metadata` answers.
    pub async fn start() -> Self {
        let exe = sekmet();
        assert!(
            exe.exists(),
            "{} is missing: run .ci/setup (it installs sekmet-fhir into .venv-fhir)",
            exe.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let port = super::process::free_port();
        let base = format!("http://127.0.0.1:{port}/fhir");
        // No simulator (it would add resources on its own), no traffic log, bearer auth.
        std::fs::write(
            dir.path().join("settings.yaml"),
            format!(
                "simulator:\n  enabled: false\nlog_inbound: false\nserver_auth:\n  types: [bearer]\n  tokens: [\"{FHIR_TOKEN}\"]\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let child = Command::new(exe)
            .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["-c", "settings.yaml"])
            .current_dir(dir.path())
            .env("SEKMET_BASE_URL", &base)
            .env("SEKMET_DB", ":memory:")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sekmet");
        let server = Self {
            base,
            child,
            _dir: dir,
        };
        let started = Instant::now();
        loop {
            let ready = super::http()
                .get(format!("{}/metadata", server.base))
                .bearer_auth(FHIR_TOKEN)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "FHIR server did not start: {}",
                std::fs::read_to_string(server._dir.path().join("server.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server
    }

    /// Sends a signal (`STOP`, `KILL`…) to the server process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name}");
    }

    /// The origin (`http://127.0.0.1:port`) to allowlist.
    pub fn origin(&self) -> String {
        let u = url::Url::parse(&self.base).unwrap();
        u.origin().ascii_serialization()
    }

    /// Posts a transaction Bundle and panics unless every entry succeeded.
    pub async fn transaction(&self, bundle: &Value) {
        let response = super::http()
            .post(&self.base)
            .bearer_auth(FHIR_TOKEN)
            .header("Content-Type", "application/fhir+json")
            .header("Prefer", "return=minimal")
            .json(bundle)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert!(status.is_success(), "transaction failed: {status} {body}");
    }

    /// Loads every resource of a hook request's prefetch (with the ids it has), so the
    /// server holds exactly what the EHR would have prefetched.
    pub async fn load_prefetch(&self, request: &Value) {
        let mut entries = Vec::new();
        for value in request["prefetch"].as_object().unwrap().values() {
            let resources: Vec<&Value> = match value["resourceType"].as_str() {
                Some("Bundle") => value["entry"]
                    .as_array()
                    .map(|e| e.iter().map(|e| &e["resource"]).collect())
                    .unwrap_or_default(),
                Some(_) => vec![value],
                None => vec![],
            };
            entries.extend(resources.into_iter().map(put_entry));
        }
        self.transaction(
            &json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}),
        )
        .await;
    }

    /// GET a relative URL with the token, as JSON.
    pub async fn get(&self, relative: &str) -> (u16, Value) {
        let r = super::http()
            .get(format!("{}/{relative}", self.base))
            .bearer_auth(FHIR_TOKEN)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

/// `request` aimed at `server`: its `fhirServer`, and a `fhirAuthorization` carrying the
/// server's token, as an EHR sends them.
pub fn aimed_at(mut request: Value, server: &FhirServer) -> Value {
    request["fhirServer"] = server.base.clone().into();
    request["fhirAuthorization"] = json!({
        "access_token": FHIR_TOKEN, "token_type": "Bearer", "expires_in": 300,
        "scope": "patient/Patient.read patient/Observation.read", "subject": "cds-service"
    });
    request
}

/// A transaction entry that PUTs `resource` under its own id.
pub fn put_entry(resource: &Value) -> Value {
    let kind = resource["resourceType"].as_str().unwrap();
    let id = resource["id"].as_str().unwrap();
    json!({"resource": resource, "request": {"method": "PUT", "url": format!("{kind}/{id}")}})
}

impl Drop for FhirServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
