//! What client-JWT (and `id_token`) checks run with, and who may call: `[auth]` and
//! `[[clients]]`, validated.

use std::time::Duration;

use url::Url;

use crate::fhir::OriginRule;

/// Validated JWT verification settings.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub clock_skew: Duration,
    pub max_token_lifetime: Duration,
    pub jwks_refresh: Duration,
    pub jwks_max_age: Duration,
    pub jwks_timeout: Duration,
    pub jwks_min_refetch: Duration,
    pub jwks_unknown_kid_ttl: Duration,
}

/// A CDS client allowed to call, after validation.
#[derive(Debug, Clone)]
pub struct TrustedClient {
    pub iss: String,
    pub jwks_urls: Vec<Url>,
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
    pub fhir_servers: Vec<OriginRule>,
    /// `(tenant, origins)` allowed only for calls carrying that `tenant`.
    pub tenant_fhir_servers: Vec<(String, Vec<OriginRule>)>,
}
