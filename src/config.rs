//! Gateway configuration: one TOML file, overridable by `BEDSIDE_*` environment variables,
//! validated once at start-up.
//!
//! Two types, two steps (as ripgrep's low/high args): [`RawConfig`] is what the file says;
//! [`Config`] is what the program runs with. [`Config::load`] reports every problem at once, each
//! naming its key, so an operator fixes the file in one pass. Nothing re-reads configuration later.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::fhir::{ClientEgress, EgressPolicy, FhirSettings, OriginRule};
use crate::http::auth::{AuthSettings, TrustedClient};
use crate::inference::{DevicePreference, InferenceSettings, ModelSettings};
use crate::smart::SmartSettings;
use crate::store::DatabaseUrl;

/// Prefix of environment overrides. `BEDSIDE_LISTEN` sets `listen`; a double underscore
/// descends into a table: `BEDSIDE_STORAGE__PATH` sets `storage.path`.
pub const ENV_PREFIX: &str = "BEDSIDE_";

/// `BEDSIDE_*` variables that commands read and that are no configuration keys (secrets
/// that must not sit in a file, test switches): overrides skip them.
pub const NOT_CONFIGURATION: &[&str] = &[
    "BEDSIDE_EXPORT_SECRET",
    "BEDSIDE_PROBE_TOKEN",
    "BEDSIDE_UPDATE_SCREENSHOTS",
];

/// The file as written. Unknown keys are errors: a typo must not silently fall back to a default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Socket address to bind, e.g. `"127.0.0.1:8080"`.
    pub listen: String,
    /// Base URL under which EHRs reach this gateway (scheme, host, port, optional path prefix).
    /// Client JWTs must name `{public_url}/cds-services/{id}` as `aud`; card links start here.
    pub public_url: String,
    /// Folder of `*.toml` CDS service definitions.
    #[serde(default = "default_services_dir")]
    pub services_dir: PathBuf,
    /// Folder of models, laid out `models/<name>/<version>/manifest.toml`.
    #[serde(default = "default_models_dir")]
    pub models_dir: PathBuf,
    #[serde(default)]
    pub storage: RawStorage,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub auth: RawAuth,
    #[serde(default)]
    pub cors: RawCors,
    #[serde(default)]
    pub inference: RawInference,
    #[serde(default)]
    pub fhir: RawFhir,
    #[serde(default)]
    pub http: RawHttp,
    /// CDS clients (EHRs) allowed to call, keyed by their JWT `iss`.
    #[serde(default)]
    pub clients: Vec<RawClient>,
    /// Static bearer tokens for the prediction API (`/v2`, `/api/v1`) only, for developers'
    /// pipelines that cannot sign JWTs. CDS Hooks calls always need a client JWT.
    #[serde(default)]
    pub api_tokens: Vec<RawApiToken>,
    /// Bearer tokens for the operator endpoints (`/admin/...`: kill switch, report), as
    /// sha256 like `api_tokens`. None configured: the admin endpoints refuse everyone.
    #[serde(default)]
    pub admin_tokens: Vec<RawAdminToken>,
    /// Bearer tokens for `GET /metrics`, as sha256 like `api_tokens`. None configured: the
    /// metrics are public (counters only, no PHI); any configured: `/metrics` needs one.
    #[serde(default)]
    pub metrics_tokens: Vec<RawApiToken>,
    /// SMART Backend Services: bedside's own FHIR access for hook calls without
    /// `fhirAuthorization` (optional).
    #[serde(default)]
    pub backend_services: Option<RawBackendServices>,
    /// SMART App Launch (EHR and standalone launch of bedside's app pages); optional.
    #[serde(default)]
    pub smart: RawSmart,
    /// How long records are kept; absent: kept.
    #[serde(default)]
    pub retention: RawRetention,
    /// Promotion criteria (`[governance]`); defaults when absent.
    #[serde(default)]
    pub governance: crate::governance::GovernanceSettings,
    /// OpenTelemetry trace export (`[telemetry]`); off when absent.
    #[serde(default)]
    pub telemetry: crate::telemetry::TelemetrySettings,
}

/// `[retention]`: per kind of record, how long it is kept (at least a day), and how often the
/// purge runs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetention {
    #[serde(default, with = "humantime_serde")]
    pub predictions: Option<Duration>,
    /// Model inputs kept by services with `[learning] store_inputs`.
    #[serde(default, with = "humantime_serde")]
    pub inputs: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub feedback: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub audit: Option<Duration>,
    /// Default 1 h; at least 1 min.
    #[serde(default = "default_purge_every", with = "humantime_serde")]
    pub purge_every: Duration,
}

impl Default for RawRetention {
    fn default() -> Self {
        Self {
            predictions: None,
            inputs: None,
            feedback: None,
            audit: None,
            purge_every: default_purge_every(),
        }
    }
}

fn default_purge_every() -> Duration {
    Duration::from_secs(3600)
}

/// One prediction-API token, stored as its sha256 so the configuration holds no secret.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiToken {
    /// Who holds it; logged instead of the token.
    pub name: String,
    /// Hex sha256 of the token (`printf %s "$TOKEN" | sha256sum`).
    pub sha256: String,
}

/// One admin token: like [`RawApiToken`], with the roles it holds (absent: `report` and
/// `operate`; `promote` is only ever granted by name).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdminToken {
    /// Who holds it; logged and recorded (promotions name it) instead of the token.
    pub name: String,
    /// Hex sha256 of the token.
    pub sha256: String,
    /// What it may do: `report`, `operate`, `promote`.
    #[serde(default)]
    pub roles: Option<Vec<crate::admin::AdminRole>>,
}

fn default_services_dir() -> PathBuf {
    PathBuf::from("cds-services")
}
fn default_models_dir() -> PathBuf {
    PathBuf::from("models")
}

/// Where durable state (feedback, audit, predictions) lives.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    /// SQLite database file; its folder is created if missing. Used when `url` is not set.
    #[serde(default = "default_db_path")]
    pub path: PathBuf,
    /// Database URL, e.g. `postgres://bedside@db.internal:5432/bedside` (or `sqlite:///…`):
    /// several gateways can share one PostgreSQL database. When set it wins over `path`.
    /// Env: `BEDSIDE_STORAGE__URL`.
    #[serde(default)]
    pub url: Option<String>,
    /// Cap on the SQLite database size in MB: beyond it feedback answers 503 (nothing
    /// half-written) instead of filling the disk the EHR host shares.
    #[serde(default)]
    pub max_size_mb: Option<u64>,
}
impl Default for RawStorage {
    fn default() -> Self {
        Self {
            path: default_db_path(),
            url: None,
            max_size_mb: None,
        }
    }
}
fn default_db_path() -> PathBuf {
    PathBuf::from(".bedside/bedside.db")
}

/// Request limits applied before any parsing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Largest accepted request body in bytes (default 5 MB); larger bodies get 413.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Largest total size of a request's header fields (default 32 KB); larger: 431.
    #[serde(default = "default_max_header")]
    pub max_header_bytes: usize,
    /// Time allowed for a whole body once the headers are in (default 10 s); then 408.
    #[serde(default = "default_body_timeout", with = "humantime_serde")]
    pub body_timeout: Duration,
    /// Time allowed for the request line and headers (default 5 s); slow clients are dropped.
    #[serde(default = "default_header_timeout", with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Idle time before a kept-alive connection is closed (default 60 s).
    #[serde(default = "default_keep_alive", with = "humantime_serde")]
    pub keep_alive: Duration,
}
impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: default_max_body(),
            max_header_bytes: default_max_header(),
            body_timeout: default_body_timeout(),
            header_timeout: default_header_timeout(),
            keep_alive: default_keep_alive(),
        }
    }
}
fn default_max_header() -> usize {
    32 * 1024
}
fn default_body_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_header_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_keep_alive() -> Duration {
    Duration::from_secs(60)
}

/// Response headers for browsers and optional TLS on the listener.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    /// Origins allowed to frame bedside's pages (the EHR that embeds the SMART app), for
    /// CSP `frame-ancestors`. Empty: no framing (`'none'`).
    #[serde(default)]
    pub frame_ancestors: Vec<String>,
    /// PEM certificate chain and private key: serve HTTPS directly (otherwise plain HTTP,
    /// for a TLS-terminating proxy in front).
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
}
fn default_max_body() -> usize {
    5 * 1024 * 1024
}

/// Client JWT verification settings shared by all clients.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// Tolerated clock difference for `exp`, `nbf` and `iat` (default 60 s).
    #[serde(default = "default_skew", with = "humantime_serde")]
    pub clock_skew: Duration,
    /// Longest accepted `exp - iat`. Bounds the `jti` replay memory; the spec asks clients for
    /// tokens that expire within 5 minutes (default 1 h, generous for clock-skewed EHRs).
    #[serde(default = "default_max_lifetime", with = "humantime_serde")]
    pub max_token_lifetime: Duration,
    /// A cached JWKS is refreshed after this age (default 5 min).
    #[serde(default = "default_jwks_refresh", with = "humantime_serde")]
    pub jwks_refresh: Duration,
    /// A cached JWKS that could not be refreshed is trusted at most this long (default 1 h);
    /// after that verification fails closed.
    #[serde(default = "default_jwks_max_age", with = "humantime_serde")]
    pub jwks_max_age: Duration,
    /// Timeout for one JWKS fetch, connect included (default 3 s).
    #[serde(default = "default_jwks_timeout", with = "humantime_serde")]
    pub jwks_timeout: Duration,
    /// Back-off: shortest interval between two fetches of one JWKS URL (default 1 s, at most
    /// 10 s), so tokens with made-up `kid`s cannot turn bedside into a load generator against an
    /// EHR. A token whose `kid` is missing from a fresh set waits out the rest of it and then
    /// gets its re-fetch, so a rotated key is found even right after a probe.
    #[serde(default = "default_jwks_min_refetch", with = "humantime_serde")]
    pub jwks_min_refetch: Duration,
    /// A `kid` looked up in a just-fetched set and absent is refused without another fetch
    /// for this long (default 60 s; per JWKS URL and `kid`, at most 1024 remembered).
    #[serde(default = "default_jwks_unknown_kid_ttl", with = "humantime_serde")]
    pub jwks_unknown_kid_ttl: Duration,
}
impl Default for RawAuth {
    fn default() -> Self {
        Self {
            clock_skew: default_skew(),
            max_token_lifetime: default_max_lifetime(),
            jwks_refresh: default_jwks_refresh(),
            jwks_max_age: default_jwks_max_age(),
            jwks_timeout: default_jwks_timeout(),
            jwks_min_refetch: default_jwks_min_refetch(),
            jwks_unknown_kid_ttl: default_jwks_unknown_kid_ttl(),
        }
    }
}
fn default_skew() -> Duration {
    Duration::from_secs(60)
}
fn default_max_lifetime() -> Duration {
    Duration::from_secs(3600)
}
fn default_jwks_refresh() -> Duration {
    Duration::from_secs(300)
}
fn default_jwks_max_age() -> Duration {
    Duration::from_secs(3600)
}
fn default_jwks_timeout() -> Duration {
    Duration::from_secs(3)
}
fn default_jwks_min_refetch() -> Duration {
    Duration::from_secs(1)
}
fn default_jwks_unknown_kid_ttl() -> Duration {
    Duration::from_secs(60)
}
/// Longest `jwks_min_refetch`: a request for a key not yet fetched waits out the back-off.
const MAX_JWKS_MIN_REFETCH: Duration = Duration::from_secs(10);

/// Browser-based CDS clients (the CDS Hooks sandbox) need CORS; EHR servers do not.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCors {
    /// Origins allowed to call from a browser, e.g. `["https://sandbox.cds-hooks.org"]`;
    /// `["*"]` allows any origin (the demo does this). Empty: no CORS headers.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

/// The FHIR client: limits, and the servers reachable when client authentication is off.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFhir {
    /// `fhirServer` origins callable when authentication is off (`--insecure-no-auth`); with
    /// authentication each client's `fhir_servers` apply. Same syntax as `fhir_servers`.
    #[serde(default)]
    pub allowed_servers: Vec<String>,
    #[serde(default = "default_fhir_connect", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Part of each service's deadline kept for scoring after FHIR queries.
    #[serde(default = "default_scoring_reserve", with = "humantime_serde")]
    pub scoring_reserve: Duration,
    #[serde(default = "default_fhir_max_bytes")]
    pub max_response_bytes: usize,
    #[serde(default = "default_fhir_max_resources")]
    pub max_resources: usize,
    /// Most pages one fetch reads (default 100); past it the fetch fails.
    #[serde(default = "default_fhir_max_pages")]
    pub max_pages: usize,
    /// Most bytes of all pages of one fetch together (default 32 MiB); past it the fetch fails.
    #[serde(default = "default_fhir_max_fetch_bytes")]
    pub max_fetch_bytes: usize,
    #[serde(default = "default_fhir_retries")]
    pub max_retries: u32,
    #[serde(default = "default_post_search_above")]
    pub post_search_above: usize,
}

impl Default for RawFhir {
    fn default() -> Self {
        Self {
            allowed_servers: Vec::new(),
            connect_timeout: default_fhir_connect(),
            scoring_reserve: default_scoring_reserve(),
            max_response_bytes: default_fhir_max_bytes(),
            max_resources: default_fhir_max_resources(),
            max_pages: default_fhir_max_pages(),
            max_fetch_bytes: default_fhir_max_fetch_bytes(),
            max_retries: default_fhir_retries(),
            post_search_above: default_post_search_above(),
        }
    }
}

fn default_fhir_connect() -> Duration {
    FhirSettings::default().connect_timeout
}
fn default_scoring_reserve() -> Duration {
    Duration::from_millis(250)
}
fn default_fhir_max_bytes() -> usize {
    FhirSettings::default().max_response_bytes
}
fn default_fhir_max_resources() -> usize {
    FhirSettings::default().max_resources
}
fn default_fhir_max_pages() -> usize {
    FhirSettings::default().max_pages
}
fn default_fhir_max_fetch_bytes() -> usize {
    FhirSettings::default().max_fetch_bytes
}
fn default_fhir_retries() -> u32 {
    FhirSettings::default().max_retries
}
fn default_post_search_above() -> usize {
    FhirSettings::default().post_search_above
}

/// Where and how models run. Per-model overrides go in `[inference.models.<name>]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInference {
    /// `"auto"` (CUDA when available, else CPU), `"cpu"` or `"cuda"` (falls back to CPU with a
    /// warning when no GPU is usable, so one configuration serves both kinds of node).
    #[serde(default = "default_device")]
    pub device: String,
    /// LibTorch intra-op threads (process-wide); 0 keeps LibTorch's default (one per core).
    /// Default 1: with a batching inference thread per model and HTTP workers on the same
    /// cores, one intra-op thread gave 1.4× the throughput on 2 cores (README, Performance).
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// Jobs waiting per model before callers are shed (answer without that model's card).
    #[serde(default = "default_queue")]
    pub queue_capacity: usize,
    /// Most samples in one forward pass (a hook call is 1 + one counterfactual per feature).
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// How long the first job of a batch waits for company, as Triton's `max_queue_delay`.
    /// Default 0: a batch is whatever queued while the previous forward pass ran, which
    /// batches under load and adds no latency when idle.
    #[serde(default = "default_max_wait", with = "humantime_serde")]
    pub max_wait: Duration,
    #[serde(default)]
    pub models: BTreeMap<String, RawModelOverrides>,
    /// Public keys (ed25519) whose signatures models must carry (`bedside sign`); none: model
    /// signatures are not checked.
    #[serde(default)]
    pub trusted_keys: Vec<RawTrustedKey>,
}

/// One `[[inference.trusted_keys]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrustedKey {
    /// The id signatures name (`bedside sign --key-id`).
    pub id: String,
    /// Base64 of the raw 32-byte ed25519 public key (`bedside keygen` prints it).
    pub public_key: String,
}
impl Default for RawInference {
    fn default() -> Self {
        Self {
            device: default_device(),
            threads: default_threads(),
            queue_capacity: default_queue(),
            max_batch: default_max_batch(),
            max_wait: default_max_wait(),
            models: BTreeMap::new(),
            trusted_keys: Vec::new(),
        }
    }
}
fn default_threads() -> usize {
    1
}
fn default_device() -> String {
    "auto".to_owned()
}
fn default_queue() -> usize {
    crate::inference::settings::DEFAULT_QUEUE
}
fn default_max_batch() -> usize {
    crate::inference::settings::DEFAULT_MAX_BATCH
}
fn default_max_wait() -> Duration {
    Duration::ZERO
}

/// Settings for one model by name; unset keys take the `[inference]` value.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModelOverrides {
    pub device: Option<String>,
    pub queue_capacity: Option<usize>,
    pub max_batch: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    pub max_wait: Option<Duration>,
}

/// One trusted CDS client (an EHR, the CDS Hooks sandbox).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClient {
    /// The JWT `iss` this client signs with.
    pub iss: String,
    /// JWKS URLs this client's keys may be fetched from. A token's `jku` header must be one
    /// of these exactly; without `jku` the first is used. Never fetched for any other URL.
    pub jwks_urls: Vec<String>,
    /// Accepted signature algorithms (default RS384 and ES384, the spec's two).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// `fhirServer` origins this client's hook calls may make bedside query:
    /// `https://fhir.hospital.example` (exact; may be on a private network),
    /// `https://*.hospital.example` or `https://*` (public addresses only),
    /// `http://127.0.0.1:8081` (plain http only when listed exactly, for development).
    #[serde(default)]
    pub fhir_servers: Vec<String>,
    /// Extra `fhirServer` origins for calls whose JWT carries a given `tenant`.
    #[serde(default)]
    pub tenants: Vec<RawTenant>,
    /// FHIR origins where this client's calls that bring no `fhirAuthorization` may have
    /// bedside's own SMART Backend Services token used. Each must be an exact entry of
    /// `fhir_servers`; needs `[backend_services]`. Empty (default): never.
    #[serde(default)]
    pub backend_services: Vec<String>,
}

/// `[[clients.tenants]]`: one organisation behind a shared client `iss`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTenant {
    /// The JWT `tenant` claim value.
    pub tenant: String,
    /// Origins allowed for this tenant's calls only (same syntax as `fhir_servers`).
    pub fhir_servers: Vec<String>,
    /// As the client's `backend_services`, for this tenant's calls only; each must be an
    /// exact entry of this tenant's or the client's `fhir_servers`.
    #[serde(default)]
    pub backend_services: Vec<String>,
}
fn default_algorithms() -> Vec<String> {
    vec!["RS384".to_owned(), "ES384".to_owned()]
}

/// `[backend_services]`: bedside as a SMART Backend Services client of the EHR.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackendServices {
    /// The client id the EHR registered for bedside.
    pub client_id: String,
    /// PKCS#8 PEM private key: EC P-384 for ES384, RSA for RS384.
    pub private_key: PathBuf,
    /// `ES384` (default) or `RS384`.
    #[serde(default = "default_backend_algorithm")]
    pub algorithm: String,
    /// Key id in assertions and the JWKS (default: the key's RFC 7638 thumbprint).
    #[serde(default)]
    pub kid: Option<String>,
    /// Scopes requested (default: `system/*.rs` for what the services query).
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// Token endpoint; when unset, read from each FHIR server's
    /// `/.well-known/smart-configuration`.
    #[serde(default)]
    pub token_endpoint: Option<String>,
    /// Removed; refused at start-up. It gave bedside's token to every client whose allowlist
    /// reached a listed server. Grants are per client now (`[[clients]] backend_services`).
    #[serde(default)]
    pub fhir_servers: Vec<String>,
    /// Cap on one discovery or token request (default 5 s).
    #[serde(default = "default_backend_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}
fn default_backend_algorithm() -> String {
    "ES384".to_owned()
}
fn default_backend_timeout() -> Duration {
    Duration::from_secs(5)
}

/// `[smart]`: bedside as a SMART App Launch 2.x client (the clinician-facing app pages).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSmart {
    /// The client id the EHR registered for bedside's app (default `bedside`).
    #[serde(default = "default_smart_client_id")]
    pub client_id: String,
    /// Name of the environment variable holding the client secret (confidential client);
    /// unset: a public client (PKCE only). The secret itself never goes in the file.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// Path under `public_url` the authorization server redirects back to.
    #[serde(default = "default_smart_redirect_path")]
    pub redirect_path: String,
    /// Scopes requested on an EHR launch (space-separated).
    #[serde(default = "default_smart_scopes")]
    pub scopes: String,
    /// Scopes requested on a standalone launch (space-separated).
    #[serde(default = "default_smart_standalone_scopes")]
    pub standalone_scopes: String,
    /// Longest life of a signed-in session, whatever the tokens say (default 8 h).
    #[serde(default = "default_smart_session_ttl", with = "humantime_serde")]
    pub session_ttl: Duration,
    /// FHIR base URLs (or origins) a launch's `iss` must be one of; any other `iss` is refused
    /// before it is contacted. Empty: every launch is refused.
    #[serde(default)]
    pub allowed_issuers: Vec<String>,
    /// Most sign-ins waiting for the authorization server's redirect back, all browsers
    /// together (default 10 000): bounds memory when launch links are opened in a loop.
    #[serde(default = "default_smart_max_pending")]
    pub max_pending_launches: usize,
    /// Most of those started from one source, the client address as bedside's listener sees it
    /// (IPv6 by /64), so one client cannot lock everyone out (default 100; over it: 429 with
    /// `Retry-After`). Behind a reverse proxy every launch comes from the proxy: raise it.
    #[serde(default = "default_smart_max_pending_per_source")]
    pub max_pending_launches_per_source: usize,
    /// How long an issuer's `.well-known/smart-configuration` is reused (default 5 min).
    #[serde(default = "default_smart_discovery_ttl", with = "humantime_serde")]
    pub discovery_ttl: Duration,
    /// How long a failed discovery is remembered before the issuer is asked again (default
    /// 10 s): a down EHR is not hammered by every launch attempt.
    #[serde(
        default = "default_smart_discovery_failure_ttl",
        with = "humantime_serde"
    )]
    pub discovery_failure_ttl: Duration,
}
impl Default for RawSmart {
    fn default() -> Self {
        Self {
            client_id: default_smart_client_id(),
            client_secret_env: None,
            redirect_path: default_smart_redirect_path(),
            scopes: default_smart_scopes(),
            standalone_scopes: default_smart_standalone_scopes(),
            session_ttl: default_smart_session_ttl(),
            allowed_issuers: Vec::new(),
            max_pending_launches: default_smart_max_pending(),
            max_pending_launches_per_source: default_smart_max_pending_per_source(),
            discovery_ttl: default_smart_discovery_ttl(),
            discovery_failure_ttl: default_smart_discovery_failure_ttl(),
        }
    }
}
fn default_smart_max_pending() -> usize {
    10_000
}
fn default_smart_max_pending_per_source() -> usize {
    100
}
fn default_smart_discovery_ttl() -> Duration {
    Duration::from_secs(300)
}
fn default_smart_discovery_failure_ttl() -> Duration {
    Duration::from_secs(10)
}
fn default_smart_client_id() -> String {
    "bedside".to_owned()
}
fn default_smart_redirect_path() -> String {
    "/smart/callback".to_owned()
}
const SMART_SCOPES_TAIL: &str = "openid fhirUser patient/Patient.r patient/Observation.rs patient/Condition.rs patient/MedicationRequest.rs offline_access";
fn default_smart_scopes() -> String {
    format!("launch {SMART_SCOPES_TAIL}")
}
fn default_smart_standalone_scopes() -> String {
    format!("launch/patient {SMART_SCOPES_TAIL}")
}
fn default_smart_session_ttl() -> Duration {
    Duration::from_secs(8 * 3600)
}

// === validated configuration ===

/// The configuration the gateway runs with. Every field has been checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// As configured; use [`Config::public_base`] for a base without a trailing slash.
    pub public_url: Url,
    pub services_dir: PathBuf,
    pub models_dir: PathBuf,
    /// The SQLite file, used when `db_url` is not set.
    pub db_path: PathBuf,
    /// `[storage] url`: when set, the store connects here instead of opening `db_path`.
    pub db_url: Option<DatabaseUrl>,
    /// `[storage] max_size_mb` in bytes (SQLite).
    pub db_max_bytes: Option<u64>,
    pub max_body_bytes: usize,
    pub max_header_bytes: usize,
    pub body_timeout: Duration,
    pub header_timeout: Duration,
    pub keep_alive: Duration,
    pub http: HttpSettings,
    pub auth: AuthSettings,
    pub cors_allowed_origins: Vec<String>,
    pub inference: InferenceSettings,
    pub clients: Vec<TrustedClient>,
    pub fhir: FhirConfig,
    /// `(name, sha256)` of each prediction-API token.
    pub api_tokens: Vec<(String, [u8; 32])>,
    /// Each admin token with its roles.
    pub admin_tokens: Vec<crate::admin::AdminToken>,
    /// `(name, sha256)` of each metrics token; empty: `/metrics` is public.
    pub metrics_tokens: Vec<(String, [u8; 32])>,
    /// `[backend_services]`, when configured.
    pub backend_services: Option<crate::smart::backend::BackendConfig>,
    /// `[smart]`: SMART App Launch client settings (defaults when the table is absent).
    pub smart: SmartSettings,
    /// How long each kind of record is kept.
    pub retention: crate::store::Retention,
    /// How often the retention purge runs.
    pub purge_every: Duration,
    /// Promotion criteria and whether every model needs a promotion.
    pub governance: crate::governance::GovernanceSettings,
    /// Where traces go (OTLP), if anywhere.
    pub telemetry: crate::telemetry::TelemetrySettings,
}

/// Validated `[http]` settings.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// CSP `frame-ancestors` sources (`'none'` when empty).
    pub frame_ancestors: Vec<String>,
    /// `(certificate chain, private key)` PEM files when bedside terminates TLS itself.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// Validated FHIR client settings.
#[derive(Debug, Clone)]
pub struct FhirConfig {
    pub settings: FhirSettings,
    pub scoring_reserve: Duration,
    /// Allowlist used when client authentication is off.
    pub allowed_servers: Vec<OriginRule>,
}

impl Config {
    /// The egress policy: each trusted client's allowlist, and the development list.
    pub fn egress_policy(&self) -> EgressPolicy {
        EgressPolicy::new(
            self.clients
                .iter()
                .map(|c| ClientEgress {
                    iss: c.iss.clone(),
                    all_tenants: c.fhir_servers.clone(),
                    by_tenant: c.tenant_fhir_servers.clone(),
                })
                .collect(),
            self.fhir.allowed_servers.clone(),
        )
        .with_issuers(
            self.smart
                .allowed_issuers
                .iter()
                .filter_map(|iss| Url::parse(iss).ok())
                .filter_map(|u| OriginRule::parse(&u.origin().ascii_serialization()).ok())
                .collect(),
        )
    }
}

/// Every problem found in a configuration, each with the key it concerns.
#[derive(Debug, Default)]
pub struct ConfigErrors {
    source: String,
    problems: Vec<(String, String)>,
}

impl ConfigErrors {
    fn new(source: &str) -> Self {
        Self {
            source: source.to_owned(),
            problems: Vec::new(),
        }
    }
    fn push(&mut self, key: impl Into<String>, problem: impl Into<String>) {
        self.problems.push((key.into(), problem.into()));
    }
    /// `(key, problem)` pairs, in the order found.
    pub fn problems(&self) -> &[(String, String)] {
        &self.problems
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration in {}:", self.source)?;
        for (key, problem) in &self.problems {
            write!(f, "\n  {key}: {problem}")?;
        }
        Ok(())
    }
}
impl std::error::Error for ConfigErrors {}

impl Config {
    /// Reads `path`, applies `BEDSIDE_*` overrides from `env`, and validates.
    pub fn load(path: &Path, env: &BTreeMap<String, String>) -> Result<Self, ConfigErrors> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            let mut errors = ConfigErrors::new(&source);
            errors.push("(file)", format!("cannot read: {e}"));
            errors
        })?;
        Self::from_toml_str(&text, &source, env)
    }

    /// Parses TOML text (named `source` in messages), applies overrides, validates.
    pub fn from_toml_str(
        text: &str,
        source: &str,
        env: &BTreeMap<String, String>,
    ) -> Result<Self, ConfigErrors> {
        let mut errors = ConfigErrors::new(source);
        let mut value: toml::Value = match toml::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                errors.push("(syntax)", e.message().to_owned());
                return Err(errors);
            }
        };
        apply_env_overrides(&mut value, env, &mut errors);
        if !errors.problems.is_empty() {
            return Err(errors);
        }
        let raw: RawConfig = match serde_path_to_error::deserialize(value) {
            Ok(raw) => raw,
            Err(e) => {
                let key = e.path().to_string();
                errors.push(key, e.into_inner().message().to_owned());
                return Err(errors);
            }
        };
        Self::validate(raw, env, errors)
    }

    fn validate(
        raw: RawConfig,
        env: &BTreeMap<String, String>,
        mut errors: ConfigErrors,
    ) -> Result<Self, ConfigErrors> {
        let listen = raw
            .listen
            .parse::<SocketAddr>()
            .map_err(|e| errors.push("listen", format!("`{}` is not host:port ({e})", raw.listen)))
            .ok();
        let public_url = parse_http_url(&raw.public_url)
            .map_err(|e| errors.push("public_url", e))
            .ok();
        for (key, dir) in [
            ("services_dir", &raw.services_dir),
            ("models_dir", &raw.models_dir),
        ] {
            if !dir.is_dir() {
                errors.push(key, format!("`{}` is not a folder", dir.display()));
            }
        }
        if raw.limits.max_body_bytes == 0 {
            errors.push("limits.max_body_bytes", "must be greater than 0");
        }
        let inference = validate_inference(&raw.inference, &mut errors);
        for (i, origin) in raw.cors.allowed_origins.iter().enumerate() {
            if origin != "*" && parse_http_url(origin).is_err() {
                errors.push(
                    format!("cors.allowed_origins[{i}]"),
                    format!("`{origin}` is not an http(s) origin or `*`"),
                );
            }
        }
        let clients = validate_clients(&raw.clients, &mut errors);
        let fhir = validate_fhir(&raw.fhir, &mut errors);
        let http = validate_http(raw.http, &mut errors);
        let db_url = raw
            .storage
            .url
            .as_deref()
            .and_then(|url| validate_db_url(url, &mut errors));
        let mut token_digests = |key: &str, raw: &[RawApiToken]| {
            let mut out = Vec::new();
            for (i, t) in raw.iter().enumerate() {
                let digest = hex::decode(t.sha256.trim())
                    .ok()
                    .and_then(|d| <[u8; 32]>::try_from(d).ok());
                match digest {
                    Some(d) if !t.name.trim().is_empty() => out.push((t.name.clone(), d)),
                    Some(_) => errors.push(format!("{key}[{i}].name"), "must not be empty"),
                    None => errors.push(
                        format!("{key}[{i}].sha256"),
                        "must be 64 hex digits (the sha256 of the token)",
                    ),
                }
            }
            out
        };
        let api_tokens = token_digests("api_tokens", &raw.api_tokens);
        let admin_pairs: Vec<RawApiToken> = raw
            .admin_tokens
            .iter()
            .map(|t| RawApiToken {
                name: t.name.clone(),
                sha256: t.sha256.clone(),
            })
            .collect();
        let admin_digests = token_digests("admin_tokens", &admin_pairs);
        let metrics_tokens = token_digests("metrics_tokens", &raw.metrics_tokens);
        let admin_tokens = admin_tokens(&raw.admin_tokens, admin_digests, &mut errors);
        if raw.auth.jwks_min_refetch > MAX_JWKS_MIN_REFETCH {
            errors.push(
                "auth.jwks_min_refetch",
                "at most 10s: a call whose key is not yet fetched waits out this back-off",
            );
        }
        let mut backend_services = raw
            .backend_services
            .as_ref()
            .and_then(|b| validate_backend_services(b, &mut errors));
        let grants = validate_backend_grants(
            &raw.clients,
            &clients,
            raw.backend_services.is_some(),
            &mut errors,
        );
        if let Some(b) = backend_services.as_mut() {
            b.grants = grants;
        }
        let smart = validate_smart(&raw.smart, env, &mut errors);
        for (name, period) in [
            ("predictions", raw.retention.predictions),
            ("inputs", raw.retention.inputs),
            ("feedback", raw.retention.feedback),
            ("audit", raw.retention.audit),
        ] {
            if period.is_some_and(|p| p < Duration::from_secs(86_400)) {
                errors.push(
                    format!("retention.{name}"),
                    "at least 1 day: a shorter period would purge records still in use",
                );
            }
        }
        for (key, problem) in raw.governance.problems() {
            errors.push(key, problem);
        }
        for (key, problem) in raw.telemetry.problems() {
            errors.push(key, problem);
        }
        if raw.retention.purge_every < Duration::from_secs(60) {
            errors.push("retention.purge_every", "at least 1 minute");
        }
        if !errors.problems.is_empty() {
            return Err(errors);
        }
        match (listen, public_url, inference) {
            (Some(listen), Some(public_url), Some(inference)) => Ok(Config {
                listen,
                public_url,
                services_dir: raw.services_dir,
                models_dir: raw.models_dir,
                db_path: raw.storage.path,
                db_url,
                db_max_bytes: raw
                    .storage
                    .max_size_mb
                    .map(|mb| mb.saturating_mul(1024 * 1024)),
                max_body_bytes: raw.limits.max_body_bytes,
                max_header_bytes: raw.limits.max_header_bytes,
                body_timeout: raw.limits.body_timeout,
                header_timeout: raw.limits.header_timeout,
                keep_alive: raw.limits.keep_alive,
                http,
                auth: AuthSettings {
                    clock_skew: raw.auth.clock_skew,
                    max_token_lifetime: raw.auth.max_token_lifetime,
                    jwks_refresh: raw.auth.jwks_refresh,
                    jwks_max_age: raw.auth.jwks_max_age,
                    jwks_timeout: raw.auth.jwks_timeout,
                    jwks_min_refetch: raw.auth.jwks_min_refetch,
                    jwks_unknown_kid_ttl: raw.auth.jwks_unknown_kid_ttl,
                },
                cors_allowed_origins: raw.cors.allowed_origins,
                inference,
                clients,
                fhir,
                api_tokens,
                admin_tokens,
                metrics_tokens,
                backend_services,
                smart,
                retention: crate::store::Retention {
                    predictions: raw.retention.predictions,
                    inputs: raw.retention.inputs,
                    feedback: raw.retention.feedback,
                    audit: raw.retention.audit,
                },
                purge_every: raw.retention.purge_every,
                governance: raw.governance,
                telemetry: raw.telemetry,
            }),
            // Unreachable in practice: each `None` pushed a problem above.
            _ => Err(errors),
        }
    }

    /// Where the store lives.
    pub fn store_settings(&self) -> crate::store::StoreSettings {
        crate::store::StoreSettings {
            path: self.db_path.clone(),
            url: self.db_url.clone(),
            max_bytes: self.db_max_bytes,
        }
    }

    /// Body size and time limits for request handlers.
    pub fn body_limits(&self) -> crate::http::BodyLimits {
        crate::http::BodyLimits {
            max_bytes: self.max_body_bytes,
            timeout: self.body_timeout,
        }
    }

    /// The URL an EHR posts to for service `id`; also the JWT `aud` it must sign.
    pub fn service_url(&self, id: &str) -> String {
        format!("{}/cds-services/{id}", self.public_base())
    }

    /// `public_url` without a trailing slash.
    pub fn public_base(&self) -> &str {
        self.public_url.as_str().trim_end_matches('/')
    }
}

fn parse_http_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("`{text}` is not a URL ({e})"))?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url),
        _ => Err(format!("`{text}` must be an http(s) URL with a host")),
    }
}

/// The admin tokens with their roles; names must be unique (promotions record the name).
fn admin_tokens(
    raw: &[RawAdminToken],
    digests: Vec<(String, [u8; 32])>,
    errors: &mut ConfigErrors,
) -> Vec<crate::admin::AdminToken> {
    let mut tokens: Vec<crate::admin::AdminToken> = Vec::new();
    for (name, sha256) in digests {
        if tokens.iter().any(|t| t.name == name) {
            errors.push(
                "admin_tokens",
                format!("the name `{name}` is used twice: each token needs its own name"),
            );
            continue;
        }
        let roles = raw
            .iter()
            .find(|t| t.name == name)
            .and_then(|t| t.roles.clone())
            .unwrap_or_else(|| crate::admin::AdminRole::DEFAULT.to_vec());
        tokens.push(crate::admin::AdminToken {
            name,
            sha256,
            roles,
        });
    }
    tokens
}

fn validate_db_url(text: &str, errors: &mut ConfigErrors) -> Option<DatabaseUrl> {
    // Messages name the scheme only: the rest may hold a password.
    match Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "postgres" | "postgresql" | "sqlite") => {
            Some(DatabaseUrl::new(text.to_owned()))
        }
        Ok(url) => {
            errors.push(
                "storage.url",
                format!(
                    "`{}:` is not a supported database (postgres://… or sqlite://…)",
                    url.scheme()
                ),
            );
            None
        }
        Err(e) => {
            errors.push("storage.url", format!("not a URL ({e})"));
            None
        }
    }
}

fn validate_backend_services(
    raw: &RawBackendServices,
    errors: &mut ConfigErrors,
) -> Option<crate::smart::backend::BackendConfig> {
    let key = "backend_services";
    if raw.client_id.trim().is_empty() {
        errors.push(format!("{key}.client_id"), "must not be empty");
    }
    let algorithm = match raw.algorithm.as_str() {
        "ES384" => Some(jsonwebtoken::Algorithm::ES384),
        "RS384" => Some(jsonwebtoken::Algorithm::RS384),
        other => {
            errors.push(
                format!("{key}.algorithm"),
                format!("`{other}` is not ES384 or RS384"),
            );
            None
        }
    };
    let signing = algorithm.and_then(|alg| {
        crate::smart::backend::SigningKey::load(&raw.private_key, alg, raw.kid.as_deref())
            .map_err(|e| errors.push(format!("{key}.private_key"), e))
            .ok()
    });
    let token_endpoint = raw.token_endpoint.as_deref().and_then(|t| {
        parse_http_url(t)
            .map_err(|e| errors.push(format!("{key}.token_endpoint"), e))
            .ok()
    });
    if !raw.fhir_servers.is_empty() {
        errors.push(
            format!("{key}.fhir_servers"),
            "no longer supported: one global list let any client whose allowlist reaches a \
             listed server have bedside's own token used for its calls. Grant it per client: \
             `backend_services = [\"https://fhir.hospital.example\"]` on the [[clients]] (or \
             [[clients.tenants]]) entry whose calls may use it",
        );
    }
    let scopes = raw.scopes.clone().unwrap_or_else(|| {
        crate::smart::backend::DEFAULT_SCOPES
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    });
    if scopes.is_empty()
        || scopes
            .iter()
            .any(|s| s.trim().is_empty() || s.contains(' '))
    {
        errors.push(
            format!("{key}.scopes"),
            "must list one scope per entry, none empty",
        );
    }
    if raw.timeout.is_zero() {
        errors.push(format!("{key}.timeout"), "must be greater than 0");
    }
    Some(crate::smart::backend::BackendConfig {
        client_id: raw.client_id.clone(),
        key: signing?,
        scope: scopes.join(" "),
        token_endpoint,
        // Filled from the client entries by `validate_backend_grants`.
        grants: Vec::new(),
        timeout: raw.timeout,
    })
}

/// The `backend_services` lists of the client and tenant entries. Each entry must be an exact
/// origin on the same entry's allowlist exactly (a grant never rests on a wildcard, which
/// would let the caller pick the server), and any grant needs `[backend_services]`.
fn validate_backend_grants(
    raw: &[RawClient],
    clients: &[TrustedClient],
    configured: bool,
    errors: &mut ConfigErrors,
) -> Vec<crate::smart::backend::BackendGrant> {
    let mut grants = Vec::new();
    for (i, (raw_client, client)) in raw.iter().zip(clients).enumerate() {
        let key = format!("clients[{i}]");
        let tenants = raw_client.tenants.iter().enumerate().map(|(j, t)| {
            let rules = client
                .tenant_fhir_servers
                .get(j)
                .map(|(_, r)| r.as_slice())
                .unwrap_or_default();
            let list_key = format!("{key}.tenants[{j}].backend_services");
            (Some(t.tenant.clone()), &t.backend_services, rules, list_key)
        });
        let entries = std::iter::once((
            None,
            &raw_client.backend_services,
            &[][..],
            format!("{key}.backend_services"),
        ))
        .chain(tenants);
        for (tenant, list, tenant_rules, list_key) in entries {
            if list.is_empty() {
                continue;
            }
            if !configured {
                errors.push(
                    list_key,
                    "needs a [backend_services] table (bedside's client id and key)",
                );
                continue;
            }
            let mut fhir_servers = Vec::new();
            for (k, server) in list.iter().enumerate() {
                match parse_http_url(server) {
                    Ok(url)
                        if url.path() == "/" && url.query().is_none() && !server.contains('*') =>
                    {
                        let listed = client
                            .fhir_servers
                            .iter()
                            .chain(tenant_rules)
                            .any(|r| r.names_exactly(&url));
                        if listed {
                            fhir_servers.push(url.origin().ascii_serialization());
                        } else {
                            errors.push(
                                format!("{list_key}[{k}]"),
                                format!("`{server}` is not an exact entry of this client's (or tenant's) fhir_servers"),
                            );
                        }
                    }
                    _ => errors.push(
                        format!("{list_key}[{k}]"),
                        format!(
                            "`{server}` is not an origin (scheme://host[:port], no path or wildcard)"
                        ),
                    ),
                }
            }
            grants.push(crate::smart::backend::BackendGrant {
                iss: client.iss.clone(),
                tenant,
                fhir_servers,
            });
        }
    }
    grants
}

fn validate_smart(
    raw: &RawSmart,
    env: &BTreeMap<String, String>,
    errors: &mut ConfigErrors,
) -> SmartSettings {
    if raw.client_id.trim().is_empty() {
        errors.push("smart.client_id", "must not be empty");
    }
    let client_secret = raw.client_secret_env.as_ref().and_then(|name| {
        // The secret comes from the environment (never from the file) and is never echoed in
        // messages.
        match env.get(name) {
            Some(secret) if !secret.trim().is_empty() => {
                Some(oauth2::ClientSecret::new(secret.clone()))
            }
            _ => {
                errors.push(
                    "smart.client_secret_env",
                    format!("environment variable `{name}` is not set or empty"),
                );
                None
            }
        }
    });
    if !raw.redirect_path.starts_with('/') || raw.redirect_path.contains(['?', '#']) {
        errors.push(
            "smart.redirect_path",
            format!("`{}` must be a path starting with `/`", raw.redirect_path),
        );
    }
    for (key, scopes) in [
        ("smart.scopes", &raw.scopes),
        ("smart.standalone_scopes", &raw.standalone_scopes),
    ] {
        if scopes.split_whitespace().next().is_none() {
            errors.push(key, "must name at least one scope");
        }
    }
    if raw.session_ttl.is_zero() {
        errors.push("smart.session_ttl", "must be greater than 0");
    }
    let mut allowed_issuers = Vec::new();
    for (i, iss) in raw.allowed_issuers.iter().enumerate() {
        match parse_http_url(iss) {
            Ok(url) if url.query().is_none() && url.fragment().is_none() => {
                allowed_issuers.push(iss.trim_end_matches('/').to_owned())
            }
            Ok(_) => errors.push(
                format!("smart.allowed_issuers[{i}]"),
                format!("`{iss}` must be a FHIR base URL without query or fragment"),
            ),
            Err(e) => errors.push(format!("smart.allowed_issuers[{i}]"), e),
        }
    }
    if raw.max_pending_launches == 0 {
        errors.push("smart.max_pending_launches", "must be greater than 0");
    }
    if raw.max_pending_launches_per_source == 0
        || raw.max_pending_launches_per_source > raw.max_pending_launches
    {
        errors.push(
            "smart.max_pending_launches_per_source",
            "must be between 1 and smart.max_pending_launches",
        );
    }
    const DAY: Duration = Duration::from_secs(24 * 3600);
    if raw.discovery_ttl < Duration::from_secs(1) || raw.discovery_ttl > DAY {
        errors.push("smart.discovery_ttl", "must be between 1s and 24h");
    }
    if raw.discovery_failure_ttl > DAY {
        errors.push("smart.discovery_failure_ttl", "must be at most 24h");
    }
    SmartSettings {
        client_id: raw.client_id.clone(),
        client_secret,
        redirect_path: raw.redirect_path.clone(),
        scopes: raw.scopes.split_whitespace().collect::<Vec<_>>().join(" "),
        standalone_scopes: raw
            .standalone_scopes
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
        session_ttl: raw.session_ttl,
        allowed_issuers,
        max_pending_launches: raw.max_pending_launches,
        max_pending_launches_per_source: raw.max_pending_launches_per_source,
        discovery_ttl: raw.discovery_ttl,
        discovery_failure_ttl: raw.discovery_failure_ttl,
    }
}

fn parse_device(text: &str, key: &str, errors: &mut ConfigErrors) -> Option<DevicePreference> {
    match text {
        "auto" => Some(DevicePreference::Auto),
        "cpu" => Some(DevicePreference::Cpu),
        "cuda" => Some(DevicePreference::Cuda),
        other => {
            errors.push(key, format!("`{other}` is not one of auto, cpu, cuda"));
            None
        }
    }
}

fn validate_inference(raw: &RawInference, errors: &mut ConfigErrors) -> Option<InferenceSettings> {
    let positive = |errors: &mut ConfigErrors, key: &str, n: usize| {
        if n == 0 {
            errors.push(key, "must be greater than 0");
        }
    };
    positive(errors, "inference.queue_capacity", raw.queue_capacity);
    positive(errors, "inference.max_batch", raw.max_batch);
    let defaults = ModelSettings {
        device: parse_device(&raw.device, "inference.device", errors)?,
        queue_capacity: raw.queue_capacity,
        max_batch: raw.max_batch,
        max_wait: raw.max_wait,
    };
    let mut models = BTreeMap::new();
    for (name, o) in &raw.models {
        let key = |k: &str| format!("inference.models.{name}.{k}");
        let device = match &o.device {
            Some(d) => parse_device(d, &key("device"), errors).unwrap_or(defaults.device),
            None => defaults.device,
        };
        let settings = ModelSettings {
            device,
            queue_capacity: o.queue_capacity.unwrap_or(defaults.queue_capacity),
            max_batch: o.max_batch.unwrap_or(defaults.max_batch),
            max_wait: o.max_wait.unwrap_or(defaults.max_wait),
        };
        positive(errors, &key("queue_capacity"), settings.queue_capacity);
        positive(errors, &key("max_batch"), settings.max_batch);
        models.insert(name.clone(), settings);
    }
    let mut trusted_keys: Vec<crate::inference::signature::TrustedKey> = Vec::new();
    for (i, k) in raw.trusted_keys.iter().enumerate() {
        let key = format!("inference.trusted_keys[{i}]");
        if k.id.trim().is_empty() {
            errors.push(format!("{key}.id"), "must not be empty");
        }
        if trusted_keys.iter().any(|t| t.id == k.id) {
            errors.push(format!("{key}.id"), format!("`{}` is listed twice", k.id));
        }
        match crate::inference::signature::parse_public_key(&k.public_key) {
            Ok(public_key) => trusted_keys.push(crate::inference::signature::TrustedKey {
                id: k.id.clone(),
                public_key,
            }),
            Err(e) => errors.push(format!("{key}.public_key"), e),
        }
    }
    Some(InferenceSettings {
        threads: raw.threads,
        defaults,
        models,
        trusted_keys,
    })
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn validate_clients(raw: &[RawClient], errors: &mut ConfigErrors) -> Vec<TrustedClient> {
    let mut clients = Vec::new();
    for (i, client) in raw.iter().enumerate() {
        let key = format!("clients[{i}]");
        if client.iss.trim().is_empty() {
            errors.push(format!("{key}.iss"), "must not be empty");
        }
        if raw[..i].iter().any(|c| c.iss == client.iss) {
            errors.push(
                format!("{key}.iss"),
                format!("`{}` is configured twice", client.iss),
            );
        }
        if client.jwks_urls.is_empty() {
            errors.push(format!("{key}.jwks_urls"), "needs at least one JWKS URL");
        }
        let mut jwks_urls = Vec::new();
        for (j, u) in client.jwks_urls.iter().enumerate() {
            match parse_http_url(u) {
                // Keys fetched over plain http could be swapped by anyone on the path, which
                // would let them sign as this client. Loopback is allowed for local testing.
                Ok(url) if url.scheme() == "http" && !is_loopback(&url) => errors.push(
                    format!("{key}.jwks_urls[{j}]"),
                    format!("`{u}` must use https (plain http only for loopback hosts)"),
                ),
                Ok(url) => jwks_urls.push(url),
                Err(e) => errors.push(format!("{key}.jwks_urls[{j}]"), e),
            }
        }
        let mut algorithms = Vec::new();
        for (j, a) in client.algorithms.iter().enumerate() {
            match a.as_str() {
                "RS384" => algorithms.push(jsonwebtoken::Algorithm::RS384),
                "ES384" => algorithms.push(jsonwebtoken::Algorithm::ES384),
                "RS256" => algorithms.push(jsonwebtoken::Algorithm::RS256),
                "ES256" => algorithms.push(jsonwebtoken::Algorithm::ES256),
                other => errors.push(
                    format!("{key}.algorithms[{j}]"),
                    format!("`{other}` is not one of RS384, ES384, RS256, ES256"),
                ),
            }
        }
        if client.algorithms.is_empty() {
            errors.push(format!("{key}.algorithms"), "needs at least one algorithm");
        }
        clients.push(TrustedClient {
            iss: client.iss.clone(),
            jwks_urls,
            algorithms,
            fhir_servers: origin_rules(
                &client.fhir_servers,
                &format!("{key}.fhir_servers"),
                errors,
            ),
            tenant_fhir_servers: client
                .tenants
                .iter()
                .enumerate()
                .map(|(j, t)| {
                    if t.tenant.trim().is_empty() {
                        errors.push(format!("{key}.tenants[{j}].tenant"), "must not be empty");
                    }
                    let rules = origin_rules(
                        &t.fhir_servers,
                        &format!("{key}.tenants[{j}].fhir_servers"),
                        errors,
                    );
                    (t.tenant.clone(), rules)
                })
                .collect(),
        });
    }
    clients
}

fn origin_rules(raw: &[String], key: &str, errors: &mut ConfigErrors) -> Vec<OriginRule> {
    raw.iter()
        .enumerate()
        .filter_map(|(i, r)| {
            OriginRule::parse(r)
                .map_err(|e| errors.push(format!("{key}[{i}]"), e))
                .ok()
        })
        .collect()
}

fn validate_http(raw: RawHttp, errors: &mut ConfigErrors) -> HttpSettings {
    for (i, source) in raw.frame_ancestors.iter().enumerate() {
        let keyword = matches!(source.as_str(), "'self'" | "'none'");
        if !keyword && parse_http_url(source).is_err() {
            errors.push(
                format!("http.frame_ancestors[{i}]"),
                format!("`{source}` is not an http(s) origin or 'self'"),
            );
        }
    }
    let tls = match (raw.tls_cert, raw.tls_key) {
        (Some(cert), Some(key)) => {
            for (k, p) in [("http.tls_cert", &cert), ("http.tls_key", &key)] {
                if !p.is_file() {
                    errors.push(k, format!("`{}` is not a file", p.display()));
                }
            }
            Some((cert, key))
        }
        (None, None) => None,
        _ => {
            errors.push("http", "tls_cert and tls_key go together");
            None
        }
    };
    HttpSettings {
        frame_ancestors: raw.frame_ancestors,
        tls,
    }
}

fn validate_fhir(raw: &RawFhir, errors: &mut ConfigErrors) -> FhirConfig {
    for (key, zero) in [
        ("fhir.max_response_bytes", raw.max_response_bytes == 0),
        ("fhir.max_resources", raw.max_resources == 0),
        ("fhir.max_pages", raw.max_pages == 0),
        ("fhir.max_fetch_bytes", raw.max_fetch_bytes == 0),
        ("fhir.connect_timeout", raw.connect_timeout.is_zero()),
    ] {
        if zero {
            errors.push(key, "must be greater than 0");
        }
    }
    FhirConfig {
        settings: FhirSettings {
            connect_timeout: raw.connect_timeout,
            max_response_bytes: raw.max_response_bytes,
            max_resources: raw.max_resources,
            max_pages: raw.max_pages,
            max_fetch_bytes: raw.max_fetch_bytes,
            max_retries: raw.max_retries,
            post_search_above: raw.post_search_above,
        },
        scoring_reserve: raw.scoring_reserve,
        allowed_servers: origin_rules(&raw.allowed_servers, "fhir.allowed_servers", errors),
    }
}

/// Applies `BEDSIDE_*` variables onto the parsed file. A value that parses as a TOML value
/// (number, boolean, array) is taken as that; anything else is a string.
fn apply_env_overrides(
    root: &mut toml::Value,
    env: &BTreeMap<String, String>,
    errors: &mut ConfigErrors,
) {
    for (name, raw_value) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if rest.is_empty() || NOT_CONFIGURATION.contains(&name.as_str()) {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        let value = toml::from_str::<toml::Table>(&format!("v = {raw_value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw_value.clone()));
        let Some((last, parents)) = path.split_last() else {
            continue;
        };
        match table_at(root, parents) {
            Some(table) => {
                table.insert(last.clone(), value);
            }
            None => errors.push(
                path.join("."),
                format!("{name} overrides a key whose parent is not a table"),
            ),
        }
    }
}

/// The table at `path` under `node`, creating missing tables; `None` if a non-table is in the way.
fn table_at<'a>(node: &'a mut toml::Value, path: &[String]) -> Option<&'a mut toml::Table> {
    let table = node.as_table_mut()?;
    match path.split_first() {
        None => Some(table),
        Some((first, rest)) => {
            let child = table
                .entry(first.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table_at(child, rest)
        }
    }
}

/// The process environment, for [`Config::load`]: the one place configuration reads it.
/// `BEDSIDE_*` variables override file keys; others are read only where the file names them
/// (`[smart] client_secret_env`). Variables that are not UTF-8 are left out.
pub fn process_env() -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs() -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("svc")).unwrap();
        std::fs::create_dir(dir.path().join("models")).unwrap();
        let base = format!(
            "services_dir = '{}'\nmodels_dir = '{}'\n",
            dir.path().join("svc").display(),
            dir.path().join("models").display()
        );
        (dir, base)
    }

    #[test]
    fn a_minimal_file_gets_defaults() {
        let (_d, base) = dirs();
        let text = format!("listen = '127.0.0.1:0'\npublic_url = 'http://localhost:8080/'\n{base}");
        let cfg = Config::from_toml_str(&text, "t.toml", &BTreeMap::new()).unwrap();
        assert_eq!(cfg.max_body_bytes, 5 * 1024 * 1024);
        assert_eq!(cfg.service_url("x"), "http://localhost:8080/cds-services/x");
        assert_eq!(cfg.inference.defaults.device, DevicePreference::Auto);
        assert_eq!(cfg.inference.defaults.max_batch, 64);
    }

    #[test]
    fn every_bad_key_is_named_at_once() {
        let (_d, base) = dirs();
        let text = format!(
            "listen = 'nope'\npublic_url = 'ftp://x'\n{base}\n[[clients]]\niss = 'a'\njwks_urls = ['not a url']\nalgorithms = ['HS256']\n"
        );
        let err = Config::from_toml_str(&text, "t.toml", &BTreeMap::new()).unwrap_err();
        let keys: Vec<&str> = err.problems().iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "listen",
                "public_url",
                "clients[0].jwks_urls[0]",
                "clients[0].algorithms[0]"
            ]
        );
    }

    #[test]
    fn a_wrong_type_names_the_nested_key() {
        let (_d, base) = dirs();
        let text = format!(
            "listen = '127.0.0.1:0'\npublic_url = 'http://h'\n{base}[limits]\nmax_body_bytes = 'big'\n"
        );
        let err = Config::from_toml_str(&text, "t.toml", &BTreeMap::new()).unwrap_err();
        assert_eq!(err.problems()[0].0, "limits.max_body_bytes");
    }

    #[test]
    fn env_overrides_nested_keys_and_types() {
        let (_d, base) = dirs();
        let text = format!("listen = '127.0.0.1:0'\npublic_url = 'http://h'\n{base}");
        let env = BTreeMap::from([
            (
                "BEDSIDE_LIMITS__MAX_BODY_BYTES".to_owned(),
                "1024".to_owned(),
            ),
            ("BEDSIDE_STORAGE__PATH".to_owned(), "/tmp/x.db".to_owned()),
            ("BEDSIDE_LISTEN".to_owned(), "0.0.0.0:9999".to_owned()),
        ]);
        let cfg = Config::from_toml_str(&text, "t.toml", &env).unwrap();
        assert_eq!(cfg.max_body_bytes, 1024);
        assert_eq!(cfg.db_path, PathBuf::from("/tmp/x.db"));
        assert_eq!(cfg.db_url, None);
        assert_eq!(cfg.listen.port(), 9999);
    }

    #[test]
    fn a_storage_url_is_taken_from_env_and_never_printed_with_its_password() {
        let (_d, base) = dirs();
        let text = format!("listen = '127.0.0.1:0'\npublic_url = 'http://h'\n{base}");
        let url = "postgres://bedside:s3cret@127.0.0.1:5432/bedside";
        let env = BTreeMap::from([("BEDSIDE_STORAGE__URL".to_owned(), url.to_owned())]);
        let cfg = Config::from_toml_str(&text, "t.toml", &env).unwrap();
        let db_url = cfg.db_url.as_ref().unwrap();
        assert_eq!(db_url.expose(), url);
        let printed = format!("{cfg:?}");
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(
            printed.contains("DatabaseUrl(postgres://127.0.0.1)"),
            "{printed}"
        );

        let text = format!("{text}[storage]\nurl = 'mysql://u:s3cret@h/db'\n");
        let err = Config::from_toml_str(&text, "t.toml", &BTreeMap::new()).unwrap_err();
        assert_eq!(err.problems()[0].0, "storage.url");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[test]
    fn jwks_urls_must_be_https_unless_loopback() {
        let (_d, base) = dirs();
        let client = |url: &str| {
            format!("listen = '127.0.0.1:0'\npublic_url = 'http://h'\n{base}[[clients]]\niss = 'a'\njwks_urls = ['{url}']\n")
        };
        for ok in [
            "https://ehr.example/jwks",
            "http://127.0.0.1:9/jwks",
            "http://localhost/jwks",
            "http://[::1]/j",
        ] {
            assert!(
                Config::from_toml_str(&client(ok), "t", &BTreeMap::new()).is_ok(),
                "{ok}"
            );
        }
        let err = Config::from_toml_str(&client("http://ehr.example/jwks"), "t", &BTreeMap::new())
            .unwrap_err();
        assert_eq!(err.problems()[0].0, "clients[0].jwks_urls[0]");
    }

    #[test]
    fn per_model_inference_settings_override_the_defaults() {
        let (_d, base) = dirs();
        let text = format!(
            "listen = '127.0.0.1:0'\npublic_url = 'http://h'\n{base}[inference]\ndevice = 'cpu'\nmax_wait = '3ms'\n[inference.models.sepsis]\ndevice = 'cuda'\nmax_batch = 128\n"
        );
        let cfg = Config::from_toml_str(&text, "t", &BTreeMap::new()).unwrap();
        let sepsis = cfg.inference.for_model("sepsis");
        assert_eq!(
            (sepsis.device, sepsis.max_batch),
            (DevicePreference::Cuda, 128)
        );
        assert_eq!(sepsis.max_wait, Duration::from_millis(3));
        assert_eq!(
            cfg.inference.for_model("other").device,
            DevicePreference::Cpu
        );
        let bad = format!("listen = '127.0.0.1:0'\npublic_url = 'http://h'\n{base}[inference.models.x]\nmax_batch = 0\ndevice = 'gpu'\n");
        let err = Config::from_toml_str(&bad, "t", &BTreeMap::new()).unwrap_err();
        let keys: Vec<&str> = err.problems().iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["inference.models.x.device", "inference.models.x.max_batch"]
        );
    }

    #[test]
    fn api_tokens_are_stored_as_sha256_digests() {
        let (_d, base) = dirs();
        let ok = format!("listen = '127.0.0.1:0'\npublic_url = 'http://h'\n{base}[[api_tokens]]\nname = 'etl'\nsha256 = '{}'\n", "ab".repeat(32));
        let cfg = Config::from_toml_str(&ok, "t", &BTreeMap::new()).unwrap();
        assert_eq!(cfg.api_tokens[0].0, "etl");
        let bad = format!("listen = '127.0.0.1:0'\npublic_url = 'http://h'\n{base}[[api_tokens]]\nname = 'etl'\nsha256 = 'plaintext-secret'\n");
        let err = Config::from_toml_str(&bad, "t", &BTreeMap::new()).unwrap_err();
        assert_eq!(err.problems()[0].0, "api_tokens[0].sha256");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let (_d, base) = dirs();
        let text =
            format!("listen = '127.0.0.1:0'\npublic_url = 'http://h'\nlisten_port = 3\n{base}");
        let err = Config::from_toml_str(&text, "t.toml", &BTreeMap::new()).unwrap_err();
        assert!(err.to_string().contains("listen_port"), "{err}");
    }

    #[test]
    fn the_smart_client_secret_comes_from_the_environment_given_not_the_process() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("svc")).unwrap();
        std::fs::create_dir(dir.path().join("models")).unwrap();
        let text = format!(
            "listen = '127.0.0.1:0'\npublic_url = 'https://bedside.test'\nservices_dir = '{}'\nmodels_dir = '{}'\n[smart]\nclient_secret_env = 'TEST_ONLY_SMART_SECRET'\n",
            dir.path().join("svc").display(),
            dir.path().join("models").display(),
        );
        let env = BTreeMap::from([("TEST_ONLY_SMART_SECRET".to_owned(), "s3cret".to_owned())]);
        let config = Config::from_toml_str(&text, "t", &env).unwrap();
        assert_eq!(
            config
                .smart
                .client_secret
                .as_ref()
                .map(|s| s.secret().as_str()),
            Some("s3cret")
        );
        let e = Config::from_toml_str(&text, "t", &BTreeMap::new()).unwrap_err();
        assert!(
            e.problems()
                .iter()
                .any(|(k, _)| k == "smart.client_secret_env"),
            "{e}"
        );
        assert!(!e.to_string().contains("s3cret"));
    }
}
