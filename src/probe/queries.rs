//! Step 2 of a probe: every prefetch template rendered as an EHR would fill it, run through
//! bedside's own FHIR client (egress policy, limits, `next` paging), and what each answer
//! shows about the server: status, OperationOutcome issues, resources, pages, whether
//! `_sort=-date` and `_count` were honoured, time taken.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Map, Value};

use super::report::Severity;
use crate::fhir::time::parse_instant;
use crate::fhir::{Fetched, FhirClient, FhirError, FhirServer, Search};
use crate::services::{PrefetchSpec, ServiceDef};

/// The server being probed, as bedside's client reaches it.
pub struct Prober<'c> {
    /// The gateway's FHIR client, with the probed origin allowed exactly.
    pub client: &'c FhirClient,
    /// The FHIR base as given.
    pub base: &'c str,
    /// Bearer token for every request.
    pub token: Option<&'c str>,
    /// Time allowed for each request (paging included).
    pub timeout: Duration,
}

/// One OperationOutcome issue as the server sent it.
#[derive(Debug, Clone, Serialize)]
pub struct IssueReport {
    pub severity: String,
    pub code: String,
    pub diagnostics: Option<String>,
}

/// What one query did (the `queries[]` of the JSON report).
#[derive(Debug, Clone, Serialize)]
pub struct QueryReport {
    /// The prefetch key (`vitals`), or `encounter-lookup` for the probe's own look-up.
    pub key: String,
    /// The query as sent (the template, when it could not be filled). The Encounter id found
    /// by the look-up is shown as `{{context.encounterId}}`.
    pub query: String,
    /// The service needs it (`required = true`): without it the service answers 412.
    pub required: bool,
    /// It feeds the model (one of the service's `inputs`).
    pub input: bool,
    /// Why it was not run (a token that cannot be filled), `None` when it ran.
    pub skipped: Option<String>,
    /// HTTP status of the answer (of the first page); `None` without an answer.
    pub status: Option<u16>,
    /// The client's error, when the query failed.
    pub error: Option<String>,
    /// OperationOutcome issues: the error answer's, or those a searchset carried
    /// (`search.mode = outcome`).
    pub outcome_issues: Vec<IssueReport>,
    /// Resources returned (search matches; 1 for a read).
    pub resources: usize,
    /// Pages read (`next` links followed + 1).
    pub pages: usize,
    /// Matches on each page, in order.
    pub page_sizes: Vec<usize>,
    /// With `_sort=date` / `-date`: whether the answer came in that order by effective time
    /// (`None`: not asked, or fewer than two dated resources).
    pub sort_honoured: Option<bool>,
    /// With `_count=N`: every page at most N matches and every page but the last exactly N
    /// (`None`: not asked).
    pub count_honoured: Option<bool>,
    /// Wall time, paging included, in milliseconds.
    pub ms: u64,
    pub severity: Severity,
}

/// A query's report and, when it ran and succeeded, its pages (for the feature pipeline).
pub struct QueryRun {
    pub report: QueryReport,
    pub fetched: Option<Fetched>,
}

impl Prober<'_> {
    fn server(&self) -> Result<FhirServer<'_>, FhirError> {
        self.client.server(
            self.base,
            (None, None),
            self.token,
            Instant::now() + self.timeout,
        )
    }

    /// GETs one relative URL (no paging needed: `metadata`, a read) as JSON.
    pub async fn fetch_json(&self, relative: &str) -> Result<Value, FhirError> {
        let fetched = self.server()?.fetch_first_page(relative).await?;
        let page = fetched
            .pages
            .first()
            .ok_or_else(|| FhirError::NotFhir("empty response".into()))?;
        serde_json::from_str(page.get()).map_err(|e| FhirError::NotFhir(e.to_string()))
    }

    /// The patient's newest Encounter (`Encounter?patient=<id>&_sort=-date&_count=1`, first
    /// page only), for `{{context.encounterId}}`. Where the server ignores `_sort`, the newest
    /// of the page by `period.start` is taken.
    pub async fn newest_encounter(&self, patient: &str) -> (QueryReport, Option<String>) {
        let search = Search::new("Encounter")
            .param("patient", patient)
            .sort("-date")
            .count(1);
        let query = search.as_str().to_owned();
        let started = Instant::now();
        let result = match self.server() {
            Ok(server) => server.fetch_first_page(&query).await,
            Err(e) => Err(e),
        };
        let mut report = blank("encounter-lookup", &query, false, false);
        report.ms = elapsed_ms(started);
        let found = match result {
            Ok(fetched) => {
                let entries = analyse(&query, &fetched, &mut report);
                entries
                    .into_iter()
                    .filter(|r| r["resourceType"] == "Encounter")
                    .max_by_key(effective)
                    .and_then(|r| r["id"].as_str().map(str::to_owned))
            }
            Err(e) => {
                failed(&e, &mut report);
                report.severity = Severity::Warning;
                None
            }
        };
        (report, found)
    }

    /// Runs every prefetch query of `def` for `context`, one after another (a sandbox is
    /// spared bursts), in the definition's order.
    pub async fn run_service(
        &self,
        def: &ServiceDef,
        context: &Map<String, Value>,
        encounter: Option<&str>,
    ) -> Vec<QueryRun> {
        let mut runs = Vec::with_capacity(def.prefetch.len());
        for spec in &def.prefetch {
            runs.push(self.run_one(def, spec, context, encounter).await);
        }
        runs
    }

    async fn run_one(
        &self,
        def: &ServiceDef,
        spec: &PrefetchSpec,
        context: &Map<String, Value>,
        encounter: Option<&str>,
    ) -> QueryRun {
        let input = def.inputs.contains(&spec.key);
        let query = match spec.template.render(context) {
            Ok(q) => q,
            Err(e) => {
                let mut report = blank(&spec.key, spec.template.as_str(), spec.required, input);
                let why = if context.contains_key("encounterId")
                    || !e.to_string().contains("encounterId")
                {
                    format!("cannot be filled: {e}")
                } else {
                    format!("cannot be filled: {e} (no Encounter found for the patient)")
                };
                report.skipped = Some(why);
                report.severity = Severity::Warning;
                return QueryRun {
                    report,
                    fetched: None,
                };
            }
        };
        let shown = match encounter {
            Some(id) if !id.is_empty() && spec.template.as_str().contains("encounterId") => {
                query.replace(id, "{{context.encounterId}}")
            }
            _ => query.clone(),
        };
        let mut report = blank(&spec.key, &shown, spec.required, input);
        let started = Instant::now();
        let result = match self.server() {
            Ok(server) => server.fetch(&query).await,
            Err(e) => Err(e),
        };
        report.ms = elapsed_ms(started);
        match result {
            Ok(fetched) => {
                analyse(&query, &fetched, &mut report);
                QueryRun {
                    report,
                    fetched: Some(fetched),
                }
            }
            Err(e) => {
                failed(&e, &mut report);
                // A required key missing is a 412 from the service; an optional one is
                // scored without (the gateway logs it and goes on).
                report.severity = if spec.required {
                    Severity::Error
                } else {
                    Severity::Warning
                };
                QueryRun {
                    report,
                    fetched: None,
                }
            }
        }
    }
}

fn blank(key: &str, query: &str, required: bool, input: bool) -> QueryReport {
    QueryReport {
        key: key.to_owned(),
        query: query.to_owned(),
        required,
        input,
        skipped: None,
        status: None,
        error: None,
        outcome_issues: Vec::new(),
        resources: 0,
        pages: 0,
        page_sizes: Vec::new(),
        sort_honoured: None,
        count_honoured: None,
        ms: 0,
        severity: Severity::Ok,
    }
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Records a failed query: status, the OperationOutcome's issues, the client's error.
fn failed(e: &FhirError, report: &mut QueryReport) {
    report.status = match e {
        FhirError::Status { status, .. } => Some(*status),
        FhirError::Outcome(_) => Some(200),
        _ => None,
    };
    if let Some(o) = e.outcome() {
        report.outcome_issues = o
            .issues
            .iter()
            .map(|i| IssueReport {
                severity: i.severity.clone(),
                code: i.code.clone(),
                diagnostics: i.diagnostics.clone(),
            })
            .collect();
    }
    report.error = Some(e.to_string());
}

/// Fills `report` from a successful answer and returns the matched resources, in order.
fn analyse(query: &str, fetched: &Fetched, report: &mut QueryReport) -> Vec<Value> {
    report.status = Some(200);
    report.pages = fetched.pages.len();
    let mut matches = Vec::new();
    for page in &fetched.pages {
        let Ok(page) = serde_json::from_str::<Value>(page.get()) else {
            continue;
        };
        if page["resourceType"] != "Bundle" {
            report.page_sizes.push(1);
            matches.push(page);
            continue;
        }
        let mut on_page = 0;
        for entry in page["entry"].as_array().into_iter().flatten() {
            match entry["search"]["mode"].as_str() {
                Some("outcome") => {
                    for issue in entry["resource"]["issue"].as_array().into_iter().flatten() {
                        report.outcome_issues.push(IssueReport {
                            severity: issue["severity"].as_str().unwrap_or("").to_owned(),
                            code: issue["code"].as_str().unwrap_or("").to_owned(),
                            diagnostics: issue["diagnostics"].as_str().map(str::to_owned),
                        });
                    }
                }
                Some("include") => {}
                _ => {
                    on_page += 1;
                    matches.push(entry["resource"].clone());
                }
            }
        }
        report.page_sizes.push(on_page);
    }
    report.resources = matches.len();
    let params = parameters(query);
    report.sort_honoured = params
        .iter()
        .find(|(k, _)| k == "_sort")
        .and_then(|(_, v)| sorted(v, &matches));
    report.count_honoured = params
        .iter()
        .find(|(k, _)| k == "_count")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .map(|n| count_honoured(n, &report.page_sizes));
    if report.sort_honoured == Some(false)
        || report.count_honoured == Some(false)
        || report
            .outcome_issues
            .iter()
            .any(|i| matches!(i.severity.as_str(), "warning" | "error" | "fatal"))
    {
        report.severity = Severity::Warning;
    }
    fetched_truncated(fetched, report);
    matches
}

fn fetched_truncated(fetched: &Fetched, report: &mut QueryReport) {
    if fetched.truncated {
        report.severity = report.severity.max(Severity::Warning);
        report.error =
            Some("paging stopped at the client's resource cap (fhir.max_resources)".into());
    }
}

/// The query's parameters, decoded.
fn parameters(query: &str) -> Vec<(String, String)> {
    let q = query.split_once('?').map(|(_, q)| q).unwrap_or("");
    url::form_urlencoded::parse(q.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Whether `matches` are in the order `_sort=<key>` asks for, judged by effective time; only
/// for `date` / `-date` as the first sort key.
fn sorted(sort: &str, matches: &[Value]) -> Option<bool> {
    let first = sort.split(',').next()?.trim();
    let descending = match first {
        "-date" => true,
        "date" => false,
        _ => return None,
    };
    let times: Vec<_> = matches.iter().filter_map(effective).collect();
    if times.len() < 2 {
        return None;
    }
    Some(times.windows(2).all(|w| {
        if descending {
            w[0] >= w[1]
        } else {
            w[0] <= w[1]
        }
    }))
}

/// No page holds more than `n` matches. FHIR R4 lets a server return fewer than `_count` asks
/// (smaller pages only cost round trips, which `pages` shows), never more.
fn count_honoured(n: usize, sizes: &[usize]) -> bool {
    sizes.iter().all(|s| *s <= n)
}

/// The time a resource's `date` search parameter reads: effective[x] (Observation),
/// period.start (Encounter), onset/recorded (Condition), authoredOn (MedicationRequest).
fn effective(resource: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
    let candidates = [
        &resource["effectiveDateTime"],
        &resource["effectiveInstant"],
        &resource["effectivePeriod"]["start"],
        &resource["period"]["start"],
        &resource["onsetDateTime"],
        &resource["recordedDate"],
        &resource["authoredOn"],
    ];
    candidates
        .into_iter()
        .find_map(|v| v.as_str().and_then(parse_instant))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obs(t: &str) -> Value {
        json!({"resourceType": "Observation", "effectiveDateTime": t})
    }

    #[test]
    fn sort_order_is_judged_by_effective_time() {
        let newest_first = [obs("2026-01-02T00:00:00Z"), obs("2026-01-01T00:00:00Z")];
        assert_eq!(sorted("-date", &newest_first), Some(true));
        assert_eq!(sorted("date", &newest_first), Some(false));
        assert_eq!(sorted("-date", &newest_first[..1]), None);
        assert_eq!(sorted("code", &newest_first), None);
    }

    #[test]
    fn count_is_honoured_when_full_pages_have_exactly_n() {
        assert!(count_honoured(10, &[10, 10, 3]));
        assert!(count_honoured(500, &[125]));
        assert!(
            count_honoured(500, &[10, 10, 5]),
            "smaller pages are allowed"
        );
        assert!(!count_honoured(2, &[3]));
        assert!(count_honoured(5, &[]));
    }

    #[test]
    fn parameters_are_decoded() {
        assert_eq!(
            parameters("Observation?patient=p%201&_sort=-date&_count=5"),
            vec![
                ("patient".to_owned(), "p 1".to_owned()),
                ("_sort".to_owned(), "-date".to_owned()),
                ("_count".to_owned(), "5".to_owned())
            ]
        );
    }
}
