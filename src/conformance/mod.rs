//! `bedside conformance <base-url>`: a black-box check of any CDS Hooks 2.0 deployment, the
//! way an EHR sees it — discovery, every card rule (against the committed JSON Schema and the
//! spec's prose rules), feedback, 412, client-JWT behaviour (Epic's and the sandbox's token
//! shapes; tokens a service must refuse), malformed input. One PASS/FAIL line per check.
//!
//! The deployment must trust the runner as a CDS client for the run: `iss` = `--iss`, JWKS at
//! the URL the runner serves (`--jwks-listen`, keys in `conformance/keys/`, test keys only).

pub mod client;
pub mod schema;
mod vectors;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use client::{JwtShape, Signer, Token};
use schema::Schemas;
use vectors::Vector;

/// What to check and how the runner presents itself (also the CLI's arguments).
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Base URL of the deployment (discovery at `<base-url>/cds-services`).
    pub base_url: String,
    /// The deployment's public base used in `aud`, when it differs from `base-url`.
    #[arg(long)]
    pub audience_base: Option<String>,
    /// The `iss` of the runner's JWTs.
    #[arg(long, default_value = "https://conformance.bedside.invalid")]
    pub iss: String,
    /// Address of the runner's JWKS endpoint.
    #[arg(long, default_value = "127.0.0.1:8999")]
    pub jwks_listen: String,
    /// The `jku` URL, when the deployment reaches the runner's JWKS by another name.
    #[arg(long)]
    pub jwks_url: Option<String>,
    /// Only this service (repeatable; all when absent).
    #[arg(long = "service")]
    pub services: Vec<String>,
}

/// One check's outcome.
#[derive(Debug, Clone)]
pub struct Check {
    /// `area subject: what is checked`, as printed.
    pub name: String,
    pub passed: bool,
    /// Why it failed (empty when passed).
    pub detail: String,
}

/// Every check, in order.
#[derive(Debug, Default)]
pub struct Report {
    /// In the order they ran.
    pub checks: Vec<Check>,
}

impl Report {
    fn record(&mut self, name: impl Into<String>, result: Result<(), String>) {
        let check = Check {
            name: name.into(),
            passed: result.is_ok(),
            detail: result.err().unwrap_or_default(),
        };
        if check.passed {
            println!("PASS  {}", check.name);
        } else {
            println!("FAIL  {}: {}", check.name, check.detail);
        }
        self.checks.push(check);
    }

    /// Checks that passed and failed.
    pub fn counts(&self) -> (usize, usize) {
        let passed = self.checks.iter().filter(|c| c.passed).count();
        (passed, self.checks.len() - passed)
    }
}

struct Service {
    id: String,
    hook: String,
    has_prefetch: bool,
}

struct Runner {
    http: reqwest::Client,
    base: String,
    signer: Signer,
    schemas: Schemas,
    report: Report,
}

/// Runs every check against `options.base_url`.
pub async fn run(options: &Options) -> Result<Report, String> {
    let jwks = client::JwksEndpoint::start(&options.jwks_listen).map_err(|e| {
        format!(
            "cannot serve the runner's JWKS on {}: {e}",
            options.jwks_listen
        )
    })?;
    let jwks_url = options
        .jwks_url
        .clone()
        .unwrap_or_else(|| format!("http://{}/.well-known/jwks.json", jwks.addr));
    println!("runner: iss {}  jwks {}", options.iss, jwks_url);
    let base = options.base_url.trim_end_matches('/').to_owned();
    let audience = options
        .audience_base
        .clone()
        .unwrap_or_else(|| base.clone());
    let mut runner = Runner {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| e.to_string())?,
        base,
        signer: Signer::new(&options.iss, &jwks_url, &audience)?,
        schemas: Schemas::load()?,
        report: Report::default(),
    };
    let services = runner.discovery().await;
    for service in services
        .iter()
        .filter(|s| options.services.is_empty() || options.services.contains(&s.id))
    {
        runner.client_auth(service).await;
        runner.bad_input(service).await;
        let cards = runner.vectors(service).await;
        runner.feedback(service, &cards).await;
    }
    jwks.stop().await;
    Ok(runner.report)
}

impl Runner {
    async fn post(
        &self,
        path: &str,
        auth: Option<String>,
        body: &Value,
    ) -> Result<(StatusCode, String), String> {
        let mut request = self.http.post(format!("{}{path}", self.base)).json(body);
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("no answer: {e}"))?;
        let status = response.status();
        Ok((status, response.text().await.unwrap_or_default()))
    }

    async fn discovery(&mut self) -> Vec<Service> {
        let auth = self.signer.bearer_shaped("/cds-services", &JwtShape::EPIC);
        let answer = self
            .http
            .get(format!("{}/cds-services", self.base))
            .header("Authorization", auth)
            .send()
            .await;
        let body: Value = match answer {
            Ok(r) if r.status() == StatusCode::OK => {
                let json = r
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|c| c.starts_with("application/json"));
                let text = r.text().await.unwrap_or_default();
                self.report.record(
                    "discovery: GET /cds-services answers 200 application/json",
                    if json {
                        Ok(())
                    } else {
                        Err("content type is not application/json".into())
                    },
                );
                match serde_json::from_str(&text) {
                    Ok(v) => v,
                    Err(e) => {
                        self.report
                            .record("discovery: body is JSON", Err(e.to_string()));
                        return Vec::new();
                    }
                }
            }
            Ok(r) => {
                self.report.record(
                    "discovery: GET /cds-services answers 200",
                    Err(format!("HTTP {}", r.status())),
                );
                return Vec::new();
            }
            Err(e) => {
                self.report.record(
                    "discovery: GET /cds-services answers 200",
                    Err(e.to_string()),
                );
                return Vec::new();
            }
        };
        self.report.record(
            "discovery: DiscoveryResponse (schema)",
            schema_ok(&self.schemas.discovery, &body),
        );
        self.report.record(
            "discovery: no null or empty values",
            no_empty_values(&body, "services"),
        );
        let mut services = Vec::new();
        for s in body["services"].as_array().into_iter().flatten() {
            let (Some(id), Some(hook)) = (s["id"].as_str(), s["hook"].as_str()) else {
                continue;
            };
            let templates: Vec<(&String, &Value)> = s["prefetch"]
                .as_object()
                .map(|m| m.iter().collect())
                .unwrap_or_default();
            let bad: Vec<String> = templates
                .iter()
                .filter_map(|(k, v)| {
                    let t = v.as_str().unwrap_or_default();
                    crate::cds::prefetch::PrefetchTemplate::parse(t)
                        .err()
                        .map(|e| format!("{k}: {e}"))
                })
                .collect();
            self.report.record(
                format!("discovery {id}: prefetch templates use only 2.0 tokens"),
                if bad.is_empty() {
                    Ok(())
                } else {
                    Err(bad.join("; "))
                },
            );
            services.push(Service {
                id: id.to_owned(),
                hook: hook.to_owned(),
                has_prefetch: !templates.is_empty(),
            });
        }
        services
    }

    /// A minimal request for `service` that every check about authentication can send.
    fn minimal_request(service: &Service) -> Value {
        json!({"hook": service.hook, "hookInstance": uuid::Uuid::new_v4().to_string(),
               "context": {"userId": "Practitioner/conformance", "patientId": "conformance-patient",
                           "encounterId": "conformance-encounter"}})
    }

    async fn client_auth(&mut self, service: &Service) {
        let path = format!("/cds-services/{}", service.id);
        let refused = [
            ("no Authorization header", None),
            ("expired token", Some(Token::Expired)),
            ("nbf in the future", Some(Token::NotYetValid)),
            ("aud of another service", Some(Token::WrongAudience)),
            ("unknown iss", Some(Token::UnknownIssuer)),
            ("alg none", Some(Token::AlgNone)),
            ("HS256 with the public key as secret", Some(Token::Hs256)),
            ("altered signature", Some(Token::BadSignature)),
        ];
        for (what, token) in refused {
            let auth = token.map(|t| self.signer.bearer(&path, t));
            let result = self
                .post(&path, auth, &Self::minimal_request(service))
                .await
                .and_then(|(status, _)| {
                    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                        Ok(())
                    } else {
                        Err(format!("HTTP {status}, expected 401"))
                    }
                });
            self.report
                .record(format!("jwt {}: refuses {what}", service.id), result);
        }
        for (what, shape) in [
            ("RS384 with jku and nbf (Epic)", JwtShape::EPIC),
            ("ES384 with jku (sandbox)", JwtShape::SANDBOX),
        ] {
            let auth = Some(self.signer.bearer_shaped(&path, &shape));
            let result = self
                .post(&path, auth, &Self::minimal_request(service))
                .await
                .and_then(|(status, body)| {
                    if status == StatusCode::UNAUTHORIZED
                        || status == StatusCode::FORBIDDEN
                        || status.is_server_error()
                    {
                        Err(format!("HTTP {status}: {}", truncate(&body)))
                    } else {
                        Ok(())
                    }
                });
            self.report
                .record(format!("jwt {}: accepts {what}", service.id), result);
        }
    }

    async fn bad_input(&mut self, service: &Service) {
        let path = format!("/cds-services/{}", service.id);
        let url = format!("{}{path}", self.base);
        let cases: [(&str, &str, &str); 3] = [
            (
                "malformed JSON",
                "application/json",
                "{\"hook\": \"patient-view\", ",
            ),
            ("a JSON array", "application/json", "[]"),
            ("text/plain", "text/plain", "hello"),
        ];
        for (what, content_type, body) in cases {
            let auth = self.signer.bearer_shaped(&path, &JwtShape::EPIC);
            let result = match self
                .http
                .post(&url)
                .header("Authorization", auth)
                .header("Content-Type", content_type)
                .body(body)
                .send()
                .await
            {
                Ok(r) if r.status().is_client_error() => Ok(()),
                Ok(r) => Err(format!("HTTP {}, expected 4xx", r.status())),
                Err(e) => Err(e.to_string()),
            };
            self.report
                .record(format!("input {}: {what} gets a 4xx", service.id), result);
        }
    }

    /// Posts every vector for the service's hook; returns the cards seen.
    async fn vectors(&mut self, service: &Service) -> Vec<Value> {
        let path = format!("/cds-services/{}", service.id);
        let mut cards = Vec::new();
        for vector in vectors::for_service(&service.id, &service.hook) {
            let Vector {
                name,
                jwt,
                mut expect,
                request,
            } = vector;
            if expect == [412] && !service.has_prefetch {
                expect = vec![200, 412];
            }
            let auth = Some(self.signer.bearer_shaped(&path, &jwt));
            let answer = self.post(&path, auth, &request).await;
            let (status, body) = match answer {
                Ok(a) => a,
                Err(e) => {
                    self.report
                        .record(format!("vector {name} → {}: answered", service.id), Err(e));
                    continue;
                }
            };
            let allowed = expect
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(" or ");
            self.report.record(
                format!("vector {name} → {}: HTTP {allowed}", service.id),
                if expect.contains(&status.as_u16()) {
                    Ok(())
                } else {
                    Err(format!("HTTP {status}: {}", truncate(&body)))
                },
            );
            if status != StatusCode::OK {
                continue;
            }
            let response: Value = match serde_json::from_str(&body) {
                Ok(v) => v,
                Err(e) => {
                    self.report.record(
                        format!("vector {name} → {}: response is JSON", service.id),
                        Err(e.to_string()),
                    );
                    continue;
                }
            };
            self.report.record(
                format!(
                    "vector {name} → {}: CdsServiceResponse (schema)",
                    service.id
                ),
                schema_ok(&self.schemas.response, &response),
            );
            self.report.record(
                format!("vector {name} → {}: no null or empty values", service.id),
                no_empty_values(&response, "cards"),
            );
            for (i, card) in response["cards"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                self.report.record(
                    format!("vector {name} → {}: card {i} rules", service.id),
                    card_rules(card),
                );
                cards.push(card.clone());
            }
        }
        cards
    }

    async fn feedback(&mut self, service: &Service, cards: &[Value]) {
        let path = format!("/cds-services/{}/feedback", service.id);
        let Some(card) = cards.iter().find(|c| c["uuid"].is_string()) else {
            self.report.record(
                format!(
                    "feedback {}: (no card with a uuid to give feedback on)",
                    service.id
                ),
                Ok(()),
            );
            return;
        };
        let mut item = json!({"card": card["uuid"], "outcome": "overridden",
            "outcomeTimestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)});
        if let Some(reason) = card["overrideReasons"].get(0) {
            item["overrideReason"] = json!({"reason": reason, "userComment": "conformance run"});
        }
        let body = json!({"feedback": [item]});
        self.report.record(
            format!(
                "feedback {}: request we send is a FeedbackRequest (schema)",
                service.id
            ),
            schema_ok(&self.schemas.feedback, &body),
        );
        for attempt in ["accepted", "accepted again (idempotent)"] {
            let auth = Some(self.signer.bearer_shaped(&path, &JwtShape::EPIC));
            let result = self
                .post(&path, auth, &body)
                .await
                .and_then(|(status, text)| {
                    if status.is_success() {
                        Ok(())
                    } else {
                        Err(format!("HTTP {status}: {}", truncate(&text)))
                    }
                });
            self.report.record(
                format!("feedback {}: overridden with reason {attempt}", service.id),
                result,
            );
        }
        let auth = Some(self.signer.bearer_shaped(&path, &JwtShape::EPIC));
        let result = self
            .post(&path, auth, &json!({"feedback": [{"card": card["uuid"]}]}))
            .await
            .and_then(|(status, _)| {
                if status.is_client_error() {
                    Ok(())
                } else {
                    Err(format!("HTTP {status}, expected 4xx"))
                }
            });
        self.report.record(
            format!(
                "feedback {}: an item without outcome gets a 4xx",
                service.id
            ),
            result,
        );
    }
}

fn schema_ok(validator: &jsonschema::Validator, instance: &Value) -> Result<(), String> {
    let errors = schema::errors(validator, instance);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// "JSON elements SHALL NOT be null … SHALL NOT be empty" except the named top-level array.
fn no_empty_values(value: &Value, allowed_empty: &str) -> Result<(), String> {
    fn walk(v: &Value, path: &str, out: &mut Vec<String>) {
        let empty = match v {
            Value::Null => true,
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty(),
            _ => false,
        };
        if empty {
            out.push(path.to_owned());
        }
        match v {
            Value::Array(a) => a
                .iter()
                .enumerate()
                .for_each(|(i, x)| walk(x, &format!("{path}[{i}]"), out)),
            Value::Object(o) => o
                .iter()
                .for_each(|(k, x)| walk(x, &format!("{path}.{k}"), out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    walk(value, "", &mut found);
    found.retain(|p| p != &format!(".{allowed_empty}"));
    if found.is_empty() {
        Ok(())
    } else {
        Err(format!("null or empty at {}", found.join(", ")))
    }
}

/// The spec's card rules beyond what a schema says well.
fn card_rules(card: &Value) -> Result<(), String> {
    let mut problems = Vec::new();
    let suggestions = card["suggestions"]
        .as_array()
        .is_some_and(|s| !s.is_empty());
    if suggestions != card.get("selectionBehavior").is_some() {
        problems.push("selectionBehavior must be present exactly when suggestions are".to_owned());
    }
    if card["summary"]
        .as_str()
        .is_some_and(|s| s.chars().count() >= 140)
    {
        problems.push("summary has 140 or more characters".into());
    }
    for (i, link) in card["links"].as_array().into_iter().flatten().enumerate() {
        if let Some(url) = link["url"].as_str() {
            if url::Url::parse(url).is_err() {
                problems.push(format!("links[{i}].url is not an absolute URL"));
            }
        }
    }
    if let Some(url) = card["source"]["url"].as_str() {
        if url::Url::parse(url).is_err() {
            problems.push("source.url is not an absolute URL".into());
        }
    }
    for (i, s) in card["suggestions"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        for (j, a) in s["actions"].as_array().into_iter().flatten().enumerate() {
            if a["type"] == "delete" && a.get("resourceId").is_none() {
                problems.push(format!(
                    "suggestions[{i}].actions[{j}]: delete without resourceId"
                ));
            }
        }
    }
    if let Ok(parsed) = serde_json::from_value::<crate::cds::wire::Card>(card.clone()) {
        problems.extend(crate::cards::validate::card_problems(&parsed));
    }
    problems.dedup();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(200).collect()
}
