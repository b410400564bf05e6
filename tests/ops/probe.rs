//! `bedside probe` against a real FHIR server (sekmet-fhir, `common::fhir_server`): a
//! well-behaved server, one that ignores `_sort` and pages small, one that answers an
//! OperationOutcome, a sparse patient, and no server at all. Each runs the built binary and
//! reads its JSON report and exit status.
//!
//! sekmet cannot be configured to ignore `_sort`, to page smaller than asked, or to refuse a
//! search parameter (its settings.yaml has no such switches; `_count` is capped at 1000 and a
//! `_sort` is always applied). So those servers are the real server behind [`Front`], a tiny
//! real HTTP proxy (actix) that changes only the one thing: drops `_sort`, rewrites `_count`
//! to a small page size, or answers 400 with an OperationOutcome for one search parameter.
//! It rewrites the server's own base URL in bodies to its own, so `next` links stay on the
//! probed origin, as they would on a real server.

use std::net::TcpListener;
use std::process::Output;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

use crate::common::fhir_server::{put_entry, FhirServer, FHIR_TOKEN};
use crate::common::{http, patient, repo};

/// Runs `bedside probe <base> --patient <id> --token … --json` from the repository root (the
/// default `cds-services/` and `models/`), off the test's runtime so an in-test server keeps
/// answering.
async fn probe(base: &str, patient_id: &str) -> (Output, Value) {
    let (base, patient_id) = (base.to_owned(), patient_id.to_owned());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_bedside"))
            .args([
                "probe",
                &base,
                "--patient",
                &patient_id,
                "--token",
                FHIR_TOKEN,
            ])
            .args(["--json", "--timeout-secs", "20"])
            .current_dir(repo())
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "probe printed no JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, report)
}

fn exit_code(out: &Output) -> i32 {
    out.status.code().expect("exited, not killed")
}

fn service<'r>(report: &'r Value, id: &str) -> &'r Value {
    report["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no service {id} in {report:#}"))
}

fn query<'r>(service: &'r Value, key: &str) -> &'r Value {
    service["queries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["key"] == key)
        .unwrap_or_else(|| panic!("no query {key} in {service:#}"))
}

/// Loads a fixture patient's prefetch the way an EHR stores it: each Bundle's entries oldest
/// first (the fixtures list them newest first), so an unsorted answer comes back oldest first.
/// Returns the patient id.
async fn load_chronologically(fhir: &FhirServer, request: &Value) -> String {
    let mut entries = Vec::new();
    for value in request["prefetch"].as_object().unwrap().values() {
        match value["resourceType"].as_str() {
            Some("Bundle") => {
                let mut resources: Vec<&Value> = value["entry"]
                    .as_array()
                    .map(|e| e.iter().map(|e| &e["resource"]).collect())
                    .unwrap_or_default();
                resources.reverse();
                entries.extend(resources.into_iter().map(put_entry));
            }
            Some(_) => entries.push(put_entry(value)),
            None => {}
        }
    }
    fhir.transaction(&json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}))
        .await;
    request["context"]["patientId"].as_str().unwrap().to_owned()
}

/// What [`Front`] changes on the way to the real server.
#[derive(Clone, Default)]
struct Quirks {
    drop_sort: bool,
    page_size: Option<usize>,
    /// Answer 400 with an OperationOutcome to any search that uses this parameter.
    refuse_param: Option<&'static str>,
}

/// A real HTTP proxy in front of the real FHIR server, with [`Quirks`].
struct Front {
    base: String,
    handle: ServerHandle,
}

impl Front {
    async fn start(upstream: &FhirServer, quirks: Quirks) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let base = format!("http://127.0.0.1:{port}/fhir");
        let upstream_base = upstream.base.clone();
        let upstream_origin = upstream.origin();
        let front_base = base.clone();
        let server = HttpServer::new(move || {
            let (quirks, upstream_base, upstream_origin, front_base) = (
                quirks.clone(),
                upstream_base.clone(),
                upstream_origin.clone(),
                front_base.clone(),
            );
            App::new().default_service(web::to(move |req: HttpRequest| {
                let (quirks, upstream_base, upstream_origin, front_base) = (
                    quirks.clone(),
                    upstream_base.clone(),
                    upstream_origin.clone(),
                    front_base.clone(),
                );
                async move {
                    let pairs: Vec<(String, String)> =
                        url::form_urlencoded::parse(req.query_string().as_bytes())
                            .map(|(k, v)| (k.into_owned(), v.into_owned()))
                            .collect();
                    if let Some(p) = quirks.refuse_param {
                        if pairs.iter().any(|(k, _)| k == p) {
                            return HttpResponse::BadRequest()
                                .content_type("application/fhir+json")
                                .body(json!({
                                    "resourceType": "OperationOutcome",
                                    "issue": [{
                                        "severity": "error",
                                        "code": "not-supported",
                                        "diagnostics": format!("Search parameter '{p}' is not supported by this sandbox")
                                    }]
                                })
                                .to_string());
                        }
                    }
                    let mut query = url::form_urlencoded::Serializer::new(String::new());
                    for (k, v) in &pairs {
                        match (k.as_str(), quirks.page_size) {
                            ("_sort", _) if quirks.drop_sort => {}
                            ("_count", Some(n)) => {
                                query.append_pair(k, &n.to_string());
                            }
                            _ => {
                                query.append_pair(k, v);
                            }
                        }
                    }
                    let query = query.finish();
                    let mut url = format!("{upstream_origin}{}", req.path());
                    if !query.is_empty() {
                        url = format!("{url}?{query}");
                    }
                    let response = http()
                        .get(&url)
                        .bearer_auth(FHIR_TOKEN)
                        .header("Accept", "application/fhir+json")
                        .send()
                        .await
                        .unwrap();
                    let status = response.status().as_u16();
                    let body = response.text().await.unwrap();
                    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
                        .content_type("application/fhir+json")
                        .body(body.replace(&upstream_base, &front_base))
                }
            }))
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self { base, handle }
    }

    async fn stop(self) {
        self.handle.stop(false).await;
    }
}

#[tokio::test]
async fn a_well_behaved_server_and_a_deteriorating_patient_would_score() {
    let fhir = FhirServer::start().await;
    let request = patient("deteriorating");
    let id = load_chronologically(&fhir, &request).await;
    // An admission, so `{{context.encounterId}}` can be filled from the newest Encounter.
    let start = (chrono::Utc::now() - chrono::Duration::days(2)).to_rfc3339();
    let encounter = json!({
        "resourceType": "Encounter", "id": format!("enc-{id}"), "status": "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "subject": {"reference": format!("Patient/{id}")}, "period": {"start": start}
    });
    fhir.transaction(
        &json!({"resourceType": "Bundle", "type": "transaction", "entry": [put_entry(&encounter)]}),
    )
    .await;

    let (out, report) = probe(&fhir.base, &id).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(report["capability"]["fhir_r4"], true, "{report:#}");
    assert_eq!(report["capability"]["reachable"], true);
    assert_eq!(report["encounter_lookup"]["resources"], 1, "{report:#}");

    let det = service(&report, "deterioration");
    assert_eq!(det["verdict"], "would-score", "{det:#}\n{stderr}");
    let vitals = query(det, "vitals");
    assert_eq!(vitals["status"], 200);
    assert_eq!(vitals["resources"], 125, "{vitals:#}");
    assert_eq!(vitals["pages"], 1);
    assert_eq!(vitals["sort_honoured"], true, "{vitals:#}");
    assert_eq!(vitals["count_honoured"], true);
    assert_eq!(query(det, "patient")["resources"], 1);
    assert!(
        det["terminology"]["recognised"]["heart_rate"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{det:#}"
    );
    assert!(det["density"]["used"].as_u64().unwrap() > 0);
    assert!(det["density"]["newest_age_minutes"].as_i64().unwrap() < 60);
    // The encounter-start service's `Encounter/{{context.encounterId}}` was filled and read.
    let start = service(&report, "deterioration-encounter-start");
    let enc = query(start, "encounter");
    assert_eq!(enc["status"], 200, "{start:#}");
    assert_eq!(enc["query"], "Encounter/{{context.encounterId}}");

    let severity = report["severity"].as_str().unwrap();
    assert!(matches!(severity, "ok" | "warning"), "{report:#}");
    assert_eq!(
        exit_code(&out),
        if severity == "ok" { 0 } else { 1 },
        "{stderr}"
    );
    // No PHI: the Patient resource's name and birth date never reach the report.
    let patient_resource = &request["prefetch"]["patient"];
    let stdout = String::from_utf8_lossy(&out.stdout);
    if let Some(born) = patient_resource["birthDate"].as_str() {
        assert!(!stdout.contains(born), "birth date printed");
    }
    if let Some(family) = patient_resource["name"][0]["family"].as_str() {
        assert!(!stdout.contains(family), "name printed");
    }
}

#[tokio::test]
async fn a_server_that_ignores_sort_and_pages_small_is_a_warning() {
    let fhir = FhirServer::start().await;
    let id = load_chronologically(&fhir, &patient("deteriorating")).await;
    let front = Front::start(
        &fhir,
        Quirks {
            drop_sort: true,
            page_size: Some(10),
            ..Default::default()
        },
    )
    .await;

    let (out, report) = probe(&front.base, &id).await;
    let det = service(&report, "deterioration");
    let vitals = query(det, "vitals");
    assert_eq!(vitals["sort_honoured"], false, "{vitals:#}");
    // Pages smaller than `_count` are allowed by FHIR (never larger): honoured, more pages.
    assert_eq!(vitals["count_honoured"], true, "{vitals:#}");
    assert!(vitals["pages"].as_u64().unwrap() > 1, "{vitals:#}");
    assert_eq!(vitals["resources"], 125, "every page followed: {vitals:#}");
    assert_eq!(vitals["severity"], "warning");
    // The data still arrive, so the model would still score.
    assert_eq!(det["verdict"], "would-score", "{det:#}");
    assert_eq!(report["severity"], "warning", "{report:#}");
    assert_eq!(exit_code(&out), 1);
    front.stop().await;
}

#[tokio::test]
async fn an_operation_outcome_on_a_required_query_is_reported_and_an_error() {
    let fhir = FhirServer::start().await;
    let id = load_chronologically(&fhir, &patient("deteriorating")).await;
    let front = Front::start(
        &fhir,
        Quirks {
            refuse_param: Some("category"),
            ..Default::default()
        },
    )
    .await;

    let (out, report) = probe(&front.base, &id).await;
    let det = service(&report, "deterioration");
    let vitals = query(det, "vitals");
    assert_eq!(vitals["status"], 400, "{vitals:#}");
    let issue = &vitals["outcome_issues"][0];
    assert_eq!(issue["severity"], "error");
    assert_eq!(issue["code"], "not-supported");
    assert_eq!(
        issue["diagnostics"],
        "Search parameter 'category' is not supported by this sandbox"
    );
    assert_eq!(vitals["severity"], "error");
    assert_eq!(det["verdict"], "cannot-run");
    assert!(
        det["reasons"][0]
            .as_str()
            .unwrap()
            .contains("required prefetch `vitals` failed"),
        "{det:#}"
    );
    assert_eq!(report["severity"], "error");
    assert_eq!(exit_code(&out), 2);
    front.stop().await;
}

#[tokio::test]
async fn a_sparse_patient_would_be_abstained_on_with_the_guardrails_reason() {
    let fhir = FhirServer::start().await;
    let id = load_chronologically(&fhir, &patient("sparse")).await;

    let (out, report) = probe(&fhir.base, &id).await;
    let det = service(&report, "deterioration");
    assert_eq!(det["verdict"], "would-abstain", "{det:#}");
    let reason = det["reasons"][0].as_str().unwrap();
    // The service's `[guardrails] min_observations = 4`, worded by `services::abstain`.
    assert!(
        reason.contains("only 3 usable measurements") && reason.contains("needs 4"),
        "{reason}"
    );
    assert_eq!(
        det["density"]["channels"]["heart_rate"]["in_window"], 3,
        "{det:#}"
    );
    assert_eq!(det["severity"], "warning");
    assert_eq!(report["severity"], "warning", "{report:#}");
    assert_eq!(exit_code(&out), 1);
}

#[tokio::test]
async fn an_unreachable_server_exits_2_with_a_clear_message() {
    let port = crate::common::process::free_port();
    let base = format!("http://127.0.0.1:{port}/fhir");
    let (out, report) = probe(&base, "anyone").await;
    assert_eq!(exit_code(&out), 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot reach the FHIR server at {base}")),
        "{stderr}"
    );
    assert_eq!(report["capability"]["reachable"], false);
    assert_eq!(report["severity"], "error");
    assert!(report["services"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["verdict"] == "cannot-run"));
}
