//! FHIR R4 REST client: read, search (GET, or POST `_search` for long queries), paging.
//!
//! One [`FhirClient`] per gateway (its connection pool is shared); one [`FhirServer`] per
//! hook call, bound to that call's `fhirServer`, access token and deadline. Every request:
//! egress-checked before it is sent, `Accept: application/fhir+json`, a timeout that is what
//! is left of the deadline, a body cap, bounded retries of reads on 429/502/503/504 honouring
//! `Retry-After` when the wait fits the budget. Searches follow `next` links on the same
//! origin up to a resource cap (the rest is dropped, the result marked truncated), and fail
//! with [`FhirError::PagingCap`] beyond a page count or a byte total across pages (a server
//! sending empty or padded pages never reaches the resource cap). Bodies come back as raw JSON pages so the scoring path can
//! project them without building a tree (design.md, "Measured facts").

use std::borrow::Cow;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument as _;

use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{redirect, RequestBuilder, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;
use url::Url;

use super::connect::Pools;
use super::egress::{self, EgressPolicy, EgressRefusal, OriginRule, Reach};
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
    /// Cap on the pages one fetch reads (its first page included); past it the fetch fails.
    pub max_pages: usize,
    /// Cap on the bytes of all pages of one fetch together; past it the fetch fails. Bounds
    /// memory where `max_resources` cannot: pages may hold few resources and much padding.
    pub max_fetch_bytes: usize,
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
            max_pages: 100,
            max_fetch_bytes: 32 << 20,
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
pub const ERROR_KINDS: [&str; 9] = [
    "refused",
    "timeout",
    "status",
    "outcome",
    "not_fhir",
    "too_large",
    "paging_cap",
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

/// The gateway's FHIR client: connection pools (one per [`Reach`]), egress policy, limits.
pub struct FhirClient {
    pools: Pools,
    policy: EgressPolicy,
    settings: FhirSettings,
    metrics: Arc<FhirMetrics>,
}

impl FhirClient {
    /// Builds the shared client. Redirects are followed only within one origin; every DNS
    /// answer passes through the egress policy's resolver; proxy variables are ignored.
    pub fn new(settings: FhirSettings, policy: EgressPolicy) -> Result<Self, FhirError> {
        let connect_timeout = settings.connect_timeout;
        let pools = Pools::build(policy.exact_hosts(), |builder| {
            builder
                .connect_timeout(connect_timeout)
                .redirect(same_origin_redirects())
                .user_agent(concat!("bedside/", env!("CARGO_PKG_VERSION")))
        })
        .map_err(|e| FhirError::Transport(e.to_string()))?;
        Ok(Self {
            pools,
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
        let reach =
            egress::check(&rules, &base).inspect_err(|_| inc(&self.metrics.egress_refused))?;
        Ok(FhirServer {
            client: self,
            rules,
            base,
            reach,
            token: token.map(Cow::Borrowed),
            deadline,
        })
    }
}

/// One FHIR server as one hook call may use it. Holding one means the caller's egress check
/// passed for its base.
pub struct FhirServer<'c> {
    client: &'c FhirClient,
    /// The caller's allowlist: every link and redirect target is checked against it again.
    rules: Vec<OriginRule>,
    base: Url,
    /// How far the base may reach, from the rule that matched it.
    reach: Reach,
    token: Option<Cow<'c, str>>,
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

    /// How far connections to the base may reach (the rule of the caller's that matched it).
    pub fn reach(&self) -> Reach {
        self.reach
    }

    /// Whether the caller's allowlist reaches `url` (on any origin), and how far: for URLs the
    /// server names that bedside then calls on the caller's behalf, such as a discovered
    /// token endpoint. Counted in `egress_refused` when it does not.
    pub fn allows(&self, url: &Url) -> Result<Reach, EgressRefusal> {
        egress::check(&self.rules, url).inspect_err(|_| inc(&self.client.metrics.egress_refused))
    }

    /// The same server with `token` as the Bearer token: for a token obtained only after the
    /// egress check passed (SMART Backend Services).
    pub fn with_token(mut self, token: String) -> Self {
        self.token = Some(Cow::Owned(token));
        self
    }

    /// Fetches a relative FHIR URL as a prefetch template renders it: a read
    /// (`Patient/123`) gives one page holding the resource; a search
    /// (`Observation?patient=123&_count=100`) gives every page up to the resource cap.
    pub async fn fetch(&self, relative: &str) -> Result<Fetched, FhirError> {
        let result = self
            .fetch_inner(relative, true)
            .instrument(query_span(relative))
            .await;
        if let Err(e) = &result {
            self.client.metrics.failed(e);
        }
        result
    }

    /// Fetches only the first page of a search (its `next` link is not followed): for a
    /// look-up that wants the newest match (`_sort=-date&_count=1`) and must not page through
    /// everything when a server ignores `_sort` or `_count` (`bedside probe`).
    pub async fn fetch_first_page(&self, relative: &str) -> Result<Fetched, FhirError> {
        let result = self
            .fetch_inner(relative, false)
            .instrument(query_span(relative))
            .await;
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

    async fn fetch_inner(&self, relative: &str, follow: bool) -> Result<Fetched, FhirError> {
        let settings = &self.client.settings;
        let url = self.resolve(relative)?;
        let mut budget = PageBudget::new(settings);
        let (reach, limit) = (self.reach, budget.next_page()?);
        let first = if url.as_str().len() > settings.post_search_above && url.query().is_some() {
            self.post_search(&url, limit).await
        } else {
            self.get(&url, reach, limit).await
        };
        let first = budget.took(first)?;
        let mut fetched = Fetched::default();
        let mut next = self.take_page(first, &mut fetched, true)?;
        if !follow {
            next = None;
        }
        while let Some(link) = next {
            if fetched.matches + fetched.includes >= settings.max_resources {
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
            let reach = self.check_link(&url)?;
            let limit = budget.next_page()?;
            let page = budget.took(self.get(&url, reach, limit).await)?;
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

    fn check_link(&self, url: &Url) -> Result<Reach, FhirError> {
        egress::same_origin(&self.base, url)
            .and_then(|()| egress::check(&self.rules, url))
            .map_err(|e| {
                inc(&self.client.metrics.egress_refused);
                FhirError::Refused(e)
            })
    }

    async fn get(&self, url: &Url, reach: Reach, limit: usize) -> Result<Box<RawValue>, FhirError> {
        let http = self.client.pools.for_reach(reach);
        self.send(|| http.get(url.clone()), limit).await
    }

    /// `POST [base]/[type]/_search` with the query as a form body (FHIR R4 "search").
    async fn post_search(&self, url: &Url, limit: usize) -> Result<Box<RawValue>, FhirError> {
        let mut target = url.clone();
        let form = url.query().unwrap_or_default().to_owned();
        target.set_query(None);
        let path = format!("{}/_search", target.path().trim_end_matches('/'));
        target.set_path(&path);
        // Same origin as the base (checked by `resolve`): the base's reach.
        let http = self.client.pools.for_reach(self.reach);
        self.send(
            || {
                http.post(target.clone())
                    .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(form.clone())
            },
            limit,
        )
        .await
    }

    /// Sends a read, retrying throttling and gateway errors while the budget allows; the body
    /// is read up to `limit` bytes.
    async fn send(
        &self,
        build: impl Fn() -> RequestBuilder,
        limit: usize,
    ) -> Result<Box<RawValue>, FhirError> {
        let settings = &self.client.settings;
        let mut attempt = 0;
        loop {
            let remaining = self.remaining()?;
            let mut request = build().header(ACCEPT, FHIR_JSON).timeout(remaining);
            if let Some(token) = &self.token {
                request = request.header(AUTHORIZATION, format!("Bearer {token}"));
            }
            inc(&self.client.metrics.requests);
            let answer = tokio::time::timeout(remaining, async {
                let response = request.send().await.map_err(transport)?;
                let status = response.status();
                let headers = response.headers().clone();
                let body = read_capped(response, limit).await?;
                Ok::<_, FhirError>((status, headers, body))
            })
            .await
            .map_err(|_| FhirError::Timeout)?
            .inspect_err(log_non_public);
            let (status, headers, body) = answer?;
            if is_retryable(status) && attempt < settings.max_retries {
                let backoff = Duration::from_millis(100u64.saturating_mul(1 << attempt.min(16)));
                let wait = retry_after(&headers).unwrap_or(backoff);
                // A server-chosen wait can be anything up to u64::MAX seconds: `Instant + wait`
                // would panic; a wait past the deadline is simply not taken.
                if Instant::now()
                    .checked_add(wait)
                    .is_some_and(|until| until < self.deadline)
                {
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

/// What is left of one fetch's page and byte caps.
struct PageBudget {
    max_pages: usize,
    max_bytes: usize,
    max_response_bytes: usize,
    pages: usize,
    bytes: usize,
    /// Whether the page being read is capped by the byte total rather than the page cap.
    by_total: bool,
}

impl PageBudget {
    fn new(settings: &FhirSettings) -> Self {
        Self {
            max_pages: settings.max_pages,
            max_bytes: settings.max_fetch_bytes,
            max_response_bytes: settings.max_response_bytes,
            pages: 0,
            bytes: 0,
            by_total: false,
        }
    }

    /// The body cap for the next page, or the error when no page may be read any more.
    fn next_page(&mut self) -> Result<usize, FhirError> {
        let left = self.max_bytes.saturating_sub(self.bytes);
        if self.pages >= self.max_pages {
            return Err(self.exceeded(true));
        }
        if left == 0 {
            return Err(self.exceeded(false));
        }
        self.pages = self.pages.saturating_add(1);
        self.by_total = left < self.max_response_bytes;
        Ok(left.min(self.max_response_bytes))
    }

    /// Counts a page read; a body cut off by the byte total becomes that cap's error.
    fn took(&mut self, page: Result<Box<RawValue>, FhirError>) -> Result<Box<RawValue>, FhirError> {
        match page {
            Ok(page) => {
                self.bytes = self.bytes.saturating_add(page.get().len());
                Ok(page)
            }
            Err(FhirError::TooLarge { .. }) if self.by_total => Err(self.exceeded(false)),
            Err(e) => Err(e),
        }
    }

    fn exceeded(&self, pages: bool) -> FhirError {
        tracing::warn!(
            pages = self.pages,
            bytes = self.bytes,
            max_pages = self.max_pages,
            max_bytes = self.max_bytes,
            "search stopped at the paging cap"
        );
        if pages {
            FhirError::PagingCap {
                limit: self.max_pages,
                unit: "pages",
            }
        } else {
            FhirError::PagingCap {
                limit: self.max_bytes,
                unit: "bytes across its pages",
            }
        }
    }
}

/// Logs which non-public address a name resolved to: the operator needs it, the caller must not
/// get it (the refusal's `Display`, which reaches the 412 body, leaves it out).
fn log_non_public(e: &FhirError) {
    if let FhirError::Refused(EgressRefusal::NonPublicAddress { origin, ip }) = e {
        let origin: String = origin.chars().take(200).collect();
        tracing::warn!(origin = ?origin, address = %ip, "a name resolved to a non-public address; not contacted");
    }
}

/// Redirects within the first URL's origin only (at most 3); any other 3xx is handed back to
/// the caller, which reports it: nothing reaches the target.
fn same_origin_redirects() -> redirect::Policy {
    redirect::Policy::custom(|attempt| {
        let same = attempt
            .previous()
            .first()
            .is_some_and(|first| first.origin() == attempt.url().origin());
        if attempt.previous().len() > 3 {
            attempt.error("more than 3 redirects")
        } else if same {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
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

/// The span of one FHIR query: the resource type only (the rest of the URL names the patient).
fn query_span(relative: &str) -> tracing::Span {
    let head = relative.split(['?', '/']).next().unwrap_or_default();
    let resource_type =
        if !head.is_empty() && head.len() <= 64 && head.bytes().all(|b| b.is_ascii_alphabetic()) {
            head
        } else {
            "other"
        };
    tracing::info_span!("fhir.query", fhir.resource_type = resource_type)
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
    // Any u64 is a valid Duration; callers add it to an Instant with `checked_add` only.
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
        h.insert(RETRY_AFTER, "18446744073709551615".parse().unwrap());
        let huge = retry_after(&h).unwrap();
        assert_eq!(
            Instant::now().checked_add(huge),
            None,
            "never added unchecked"
        );
        h.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None, "a date in the past gives no wait");
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }
}
