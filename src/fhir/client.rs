//! FHIR R4 REST client: read, search (GET, or POST `_search` for long queries), paging.
//!
//! One [`FhirClient`] per gateway (its connection pool is shared); one [`FhirServer`] per
//! hook call, bound to that call's `fhirServer`, access token and deadline. Every request:
//! egress-checked before it is sent, `Accept: application/fhir+json`, a timeout that is what
//! is left of the deadline, a body cap, bounded retries of reads on 429/502/503/504 honouring
//! `Retry-After` when the wait fits the budget. Searches follow `next` links on the same
//! origin up to a resource cap. Bodies come back as raw JSON pages so the scoring path can
//! project them without building a tree (design.md, "Measured facts").

use std::borrow::Cow;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{redirect, RequestBuilder, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;
use url::Url;

use super::egress::{self, EgressPolicy, OriginRule, PublicOnlyResolver};
use super::error::FhirError;
use super::outcome;
use crate::metrics::inc;

const FHIR_JSON: &str = "application/fhir+json";

/// Limits of the FHIR client (`[fhir]` in the configuration).
#[derive(Debug, Clone)]
pub struct FhirSettings {
    /// Cap on establishing a connection (also bounded by the hook's remaining budget).
    pub connect_timeout: Duration,
    /// Cap on one response body; larger bodies are abandoned at the cap.
    pub max_response_bytes: usize,
    /// Cap on resources gathered for one search across its pages.
    pub max_resources: usize,
    /// Retries of one read on 429/502/503/504.
    pub max_retries: u32,
    /// Searches whose URL is longer than this are sent as `POST [type]/_search`.
    pub post_search_above: usize,
}

impl Default for FhirSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            max_response_bytes: 16 << 20,
            max_resources: 5000,
            max_retries: 2,
            post_search_above: 2000,
        }
    }
}

/// What the FHIR client did, for `/metrics`.
#[derive(Debug, Default)]
pub struct FhirMetrics {
    /// HTTP requests sent (retries included).
    pub requests: AtomicU64,
    /// Reads repeated after 429/502/503/504.
    pub retries: AtomicU64,
    /// Response pages read (one per read, one per search page).
    pub pages: AtomicU64,
    /// Searches that stopped following `next` at `max_resources`.
    pub truncated: AtomicU64,
    /// Resources with elements R4 does not define, read in fhirbolt's lax mode.
    pub lenient_parses: AtomicU64,
    /// Servers or links refused by the egress policy (never contacted).
    pub egress_refused: AtomicU64,
    /// Failed requests by [`FhirError::kind`].
    pub errors: [AtomicU64; ERROR_KINDS.len()],
}

/// Labels of [`FhirMetrics::errors`], in order.
pub const ERROR_KINDS: [&str; 8] = [
    "refused",
    "timeout",
    "status",
    "outcome",
    "not_fhir",
    "too_large",
    "redirect",
    "transport",
];

impl FhirMetrics {
    /// Writes the `bedside_fhir_*` series.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        use std::sync::atomic::Ordering::Relaxed;
        for (name, counter) in [
            ("requests", &self.requests),
            ("retries", &self.retries),
            ("pages", &self.pages),
            ("truncated_searches", &self.truncated),
            ("lenient_parses", &self.lenient_parses),
            ("egress_refused", &self.egress_refused),
        ] {
            let _ = writeln!(out, "bedside_fhir_{name}_total {}", counter.load(Relaxed));
        }
        for (kind, counter) in ERROR_KINDS.iter().zip(&self.errors) {
            let _ = writeln!(
                out,
                "bedside_fhir_errors_total{{kind=\"{kind}\"}} {}",
                counter.load(Relaxed)
            );
        }
    }

    fn failed(&self, e: &FhirError) {
        if let Some(i) = ERROR_KINDS.iter().position(|k| *k == e.kind()) {
            inc(&self.errors[i]);
        }
    }
}

/// The gateway's FHIR client: connection pool, egress policy, limits.
pub struct FhirClient {
    http: reqwest::Client,
    policy: EgressPolicy,
    settings: FhirSettings,
    metrics: Arc<FhirMetrics>,
}

impl FhirClient {
    /// Builds the shared client. Redirects are followed only within one origin; every DNS
    /// answer passes through the egress policy's resolver.
    pub fn new(settings: FhirSettings, policy: EgressPolicy) -> Result<Self, FhirError> {
        let http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .dns_resolver(Arc::new(PublicOnlyResolver::new(policy.exact_hosts())))
            .redirect(redirect::Policy::custom(|attempt| {
                let same = attempt
                    .previous()
                    .first()
                    .is_some_and(|first| first.origin() == attempt.url().origin());
                if attempt.previous().len() > 3 {
                    attempt.error("more than 3 redirects")
                } else if same {
                    attempt.follow()
                } else {
                    // Hand the 3xx back: the caller reports it, nothing reaches the target.
                    attempt.stop()
                }
            }))
            .user_agent(concat!("bedside/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| FhirError::Transport(e.to_string()))?;
        Ok(Self {
            http,
            policy,
            settings,
            metrics: Arc::default(),
        })
    }

    /// Counters for `/metrics`.
    pub fn metrics(&self) -> &FhirMetrics {
        &self.metrics
    }

    /// The server at `base` for one hook call by the client `iss` for `tenant` (`iss` is
    /// `None` when client authentication is off), with the call's access token and deadline.
    /// Refused (and counted) here, before any connection, when the egress policy does not
    /// allow it.
    pub fn server<'c>(
        &'c self,
        base: &str,
        (iss, tenant): (Option<&str>, Option<&str>),
        token: Option<&'c str>,
        deadline: Instant,
    ) -> Result<FhirServer<'c>, FhirError> {
        self.server_with(base, self.policy.rules_for(iss, tenant), token, deadline)
    }

    /// The SMART issuer at `base` for the SMART app, with the signed-in clinician's token:
    /// only origins of `[smart] allowed_issuers` pass.
    pub fn issuer_server<'c>(
        &'c self,
        base: &str,
        token: &'c str,
        deadline: Instant,
    ) -> Result<FhirServer<'c>, FhirError> {
        self.server_with(base, self.policy.issuer_rules(), Some(token), deadline)
    }

    fn server_with<'c>(
        &'c self,
        base: &str,
        rules: Vec<OriginRule>,
        token: Option<&'c str>,
        deadline: Instant,
    ) -> Result<FhirServer<'c>, FhirError> {
        let mut base = Url::parse(base).map_err(|e| {
            FhirError::Refused(egress::EgressRefusal::NotHttp(format!("{base} ({e})")))
        })?;
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        base.set_query(None);
        base.set_fragment(None);
        egress::check(&rules, &base).inspect_err(|_| inc(&self.metrics.egress_refused))?;
        Ok(FhirServer {
            client: self,
            rules,
            base,
            token,
            deadline,
        })
    }
}

/// One FHIR server as one hook call may use it.
pub struct FhirServer<'c> {
    client: &'c FhirClient,
    rules: Vec<OriginRule>,
    base: Url,
    token: Option<&'c str>,
    deadline: Instant,
}

/// The pages of a search (or the one resource of a read), as raw JSON.
#[derive(Debug, Default)]
pub struct Fetched {
    pub pages: Vec<Box<RawValue>>,
    /// Entries with `search.mode = match` (or no mode) across pages.
    pub matches: usize,
    /// Entries with `search.mode = include`.
    pub includes: usize,
    /// `Bundle.total` of the first page, when the server sent it.
    pub total: Option<u64>,
    /// Paging stopped at the resource cap before the last page.
    pub truncated: bool,
}

/// The parts of a response page the client acts on.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageHead<'a> {
    #[serde(borrow)]
    resource_type: Option<Cow<'a, str>>,
    #[serde(rename = "type", borrow, default)]
    bundle_type: Option<Cow<'a, str>>,
    #[serde(default)]
    total: Option<u64>,
    #[serde(borrow, default)]
    link: Vec<LinkHead<'a>>,
    #[serde(default)]
    entry: Vec<EntryHead<'a>>,
}

#[derive(Deserialize)]
struct LinkHead<'a> {
    #[serde(borrow)]
    relation: Cow<'a, str>,
    #[serde(borrow)]
    url: Cow<'a, str>,
}

#[derive(Deserialize)]
struct EntryHead<'a> {
    #[serde(borrow, default)]
    search: Option<SearchHead<'a>>,
}

#[derive(Deserialize)]
struct SearchHead<'a> {
    #[serde(borrow, default)]
    mode: Option<Cow<'a, str>>,
}

impl FhirServer<'_> {
    /// The base URL (with a trailing slash).
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// Fetches a relative FHIR URL as a prefetch template renders it: a read
    /// (`Patient/123`) gives one page holding the resource; a search
    /// (`Observation?patient=123&_count=100`) gives every page up to the resource cap.
    pub async fn fetch(&self, relative: &str) -> Result<Fetched, FhirError> {
        let result = self.fetch_inner(relative).await;
        if let Err(e) = &result {
            self.client.metrics.failed(e);
        }
        result
    }

    /// Reads one resource with the full R4 model (strict, lax with a metric when the server
    /// adds elements R4 does not define).
    pub async fn read(&self, relative: &str) -> Result<fhirbolt::model::r4::Resource, FhirError> {
        let fetched = self.fetch(relative).await?;
        let page = fetched
            .pages
            .first()
            .ok_or_else(|| FhirError::NotFhir("empty response".into()))?;
        outcome::parse_resource(page.get(), &self.client.metrics.lenient_parses)
            .map_err(FhirError::NotFhir)
    }

    async fn fetch_inner(&self, relative: &str) -> Result<Fetched, FhirError> {
        let url = self.resolve(relative)?;
        let first = if url.as_str().len() > self.client.settings.post_search_above
            && url.query().is_some()
        {
            self.post_search(&url).await?
        } else {
            self.get(&url).await?
        };
        let mut fetched = Fetched::default();
        let mut next = self.take_page(first, &mut fetched, true)?;
        while let Some(link) = next {
            if fetched.matches + fetched.includes >= self.client.settings.max_resources {
                fetched.truncated = true;
                inc(&self.client.metrics.truncated);
                tracing::warn!(
                    cap = self.client.settings.max_resources,
                    "search stopped at the resource cap"
                );
                break;
            }
            let url = Url::parse(&link)
                .or_else(|_| self.base.join(&link))
                .map_err(|e| FhirError::NotFhir(format!("bad next link: {e}")))?;
            self.check_link(&url)?;
            let page = self.get(&url).await?;
            next = self.take_page(page, &mut fetched, false)?;
        }
        Ok(fetched)
    }

    /// Reads one page's head, keeps the page, returns its `next` link.
    fn take_page(
        &self,
        page: Box<RawValue>,
        fetched: &mut Fetched,
        first: bool,
    ) -> Result<Option<String>, FhirError> {
        inc(&self.client.metrics.pages);
        let head: PageHead<'_> = serde_json::from_str(page.get())
            .map_err(|e| FhirError::NotFhir(format!("unexpected JSON shape: {e}")))?;
        let kind = head
            .resource_type
            .as_deref()
            .ok_or_else(|| FhirError::NotFhir("no resourceType".into()))?;
        if kind == "OperationOutcome" {
            let oo = outcome::parse_outcome(page.get(), &self.client.metrics.lenient_parses)
                .unwrap_or_default();
            return Err(FhirError::Outcome(oo));
        }
        let mut next = None;
        if kind == "Bundle" && head.bundle_type.as_deref() == Some("searchset") {
            if first {
                fetched.total = head.total;
            }
            for e in &head.entry {
                match e.search.as_ref().and_then(|s| s.mode.as_deref()) {
                    Some("include") => fetched.includes += 1,
                    Some("outcome") => {}
                    _ => fetched.matches += 1,
                }
            }
            next = head
                .link
                .iter()
                .find(|l| l.relation == "next")
                .map(|l| l.url.clone().into_owned());
        } else {
            fetched.matches += 1;
        }
        drop(head);
        fetched.pages.push(page);
        Ok(next)
    }

    /// Joins a template's rendering onto the base; the result must stay under the base.
    fn resolve(&self, relative: &str) -> Result<Url, FhirError> {
        let url = self
            .base
            .join(relative.trim_start_matches('/'))
            .map_err(|e| FhirError::NotFhir(format!("bad query `{relative}`: {e}")))?;
        self.check_link(&url)?;
        if !url.path().starts_with(self.base.path()) {
            return Err(FhirError::Refused(egress::EgressRefusal::OtherOrigin {
                origin: self.base.to_string(),
                link: url.path().to_owned(),
            }));
        }
        Ok(url)
    }

    fn check_link(&self, url: &Url) -> Result<(), FhirError> {
        egress::same_origin(&self.base, url)
            .and_then(|()| egress::check(&self.rules, url))
            .map_err(|e| {
                inc(&self.client.metrics.egress_refused);
                FhirError::Refused(e)
            })
    }

    async fn get(&self, url: &Url) -> Result<Box<RawValue>, FhirError> {
        self.send(|| self.client.http.get(url.clone())).await
    }

    /// `POST [base]/[type]/_search` with the query as a form body (FHIR R4 "search").
    async fn post_search(&self, url: &Url) -> Result<Box<RawValue>, FhirError> {
        let mut target = url.clone();
        let form = url.query().unwrap_or_default().to_owned();
        target.set_query(None);
        let path = format!("{}/_search", target.path().trim_end_matches('/'));
        target.set_path(&path);
        self.send(|| {
            self.client
                .http
                .post(target.clone())
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(form.clone())
        })
        .await
    }

    /// Sends a read, retrying throttling and gateway errors while the budget allows.
    async fn send(&self, build: impl Fn() -> RequestBuilder) -> Result<Box<RawValue>, FhirError> {
        let settings = &self.client.settings;
        let mut attempt = 0;
        loop {
            let remaining = self.remaining()?;
            let mut request = build().header(ACCEPT, FHIR_JSON).timeout(remaining);
            if let Some(token) = self.token {
                request = request.header(AUTHORIZATION, format!("Bearer {token}"));
            }
            inc(&self.client.metrics.requests);
            let answer = tokio::time::timeout(remaining, async {
                let response = request.send().await.map_err(transport)?;
                let status = response.status();
                let headers = response.headers().clone();
                let body = read_capped(response, settings.max_response_bytes).await?;
                Ok::<_, FhirError>((status, headers, body))
            })
            .await
            .map_err(|_| FhirError::Timeout)??;
            let (status, headers, body) = answer;
            if is_retryable(status) && attempt < settings.max_retries {
                let wait = retry_after(&headers).unwrap_or(Duration::from_millis(100 << attempt));
                if Instant::now() + wait < self.deadline {
                    attempt += 1;
                    inc(&self.client.metrics.retries);
                    tokio::time::sleep(wait).await;
                    continue;
                }
            }
            return self.interpret(status, &headers, body);
        }
    }

    fn interpret(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        body: Vec<u8>,
    ) -> Result<Box<RawValue>, FhirError> {
        if status.is_redirection() {
            let to = headers
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("?");
            return Err(FhirError::Redirect(format!(
                "HTTP {} to another origin ({})",
                status.as_u16(),
                Url::parse(to)
                    .map(|u| u.origin().ascii_serialization())
                    .unwrap_or_else(|_| "unparseable location".into())
            )));
        }
        let text = String::from_utf8(body).map_err(|_| FhirError::NotFhir("not UTF-8".into()));
        if !status.is_success() {
            let outcome = text
                .ok()
                .and_then(|t| outcome::parse_outcome(&t, &self.client.metrics.lenient_parses));
            return Err(FhirError::Status {
                status: status.as_u16(),
                outcome,
            });
        }
        RawValue::from_string(text?).map_err(|e| FhirError::NotFhir(e.to_string()))
    }

    fn remaining(&self) -> Result<Duration, FhirError> {
        self.deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or(FhirError::Timeout)
    }
}

fn transport(e: reqwest::Error) -> FhirError {
    if e.is_timeout() {
        return FhirError::Timeout;
    }
    if e.is_redirect() {
        return FhirError::Redirect(e.to_string());
    }
    // An egress refusal raised inside the resolver travels as the error's source.
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        if let Some(refusal) = s.downcast_ref::<egress::EgressRefusal>() {
            return FhirError::Refused(refusal.clone());
        }
        source = s.source();
    }
    FhirError::Transport(e.without_url().to_string())
}

async fn read_capped(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, FhirError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(FhirError::TooLarge { limit });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport)? {
        if body.len() + chunk.len() > limit {
            return Err(FhirError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn is_retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 502 | 503 | 504)
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .ok()
}

/// A FHIR search built from parameters, each value percent-encoded (a `+` in a time-zone
/// offset must not become a space).
#[derive(Debug, Clone)]
pub struct Search {
    query: String,
}

impl Search {
    /// A search on `resource_type`.
    pub fn new(resource_type: &str) -> Self {
        Self {
            query: format!("{resource_type}?"),
        }
    }

    /// Adds `name=value`.
    pub fn param(mut self, name: &str, value: &str) -> Self {
        if !self.query.ends_with('?') {
            self.query.push('&');
        }
        self.query.push_str(name);
        self.query.push('=');
        self.query
            .extend(url::form_urlencoded::byte_serialize(value.as_bytes()));
        self
    }

    /// `_count`: page size.
    pub fn count(self, n: usize) -> Self {
        self.param("_count", &n.to_string())
    }

    /// `_sort`, e.g. `-date`.
    pub fn sort(self, key: &str) -> Self {
        self.param("_sort", key)
    }

    /// `_include`, e.g. `Observation:patient`.
    pub fn include(self, path: &str) -> Self {
        self.param("_include", path)
    }

    /// A date parameter with a prefix: `ge`, `gt`, `le`, `lt`, `eq`…
    pub fn date(self, name: &str, prefix: &str, at: chrono::DateTime<chrono::Utc>) -> Self {
        let value = format!(
            "{prefix}{}",
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        self.param(name, &value)
    }

    /// The relative URL to pass to [`FhirServer::fetch`].
    pub fn as_str(&self) -> &str {
        &self.query
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_parameters_are_encoded() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-01-05T07:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let s = Search::new("Observation")
            .param("patient", "p 1&x")
            .param("code", "http://loinc.org|9279-1")
            .date("date", "ge", at)
            .sort("-date")
            .count(50)
            .include("Observation:patient");
        assert_eq!(
            s.as_str(),
            "Observation?patient=p+1%26x&code=http%3A%2F%2Floinc.org%7C9279-1&date=ge2026-01-05T07%3A00%3A00Z&_sort=-date&_count=50&_include=Observation%3Apatient"
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None, "a date in the past gives no wait");
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }
}
