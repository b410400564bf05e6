//! The outbound HTTP connection pools the egress decision picks from.
//!
//! One pool per [`Reach`]: a pooled connection is reused for any later request to the same
//! scheme, host and port *without resolving the name again*, so one pool for every caller
//! would let a wildcard caller ride a connection another caller's exact rule opened to a
//! private address. With two pools, the public-only pool only ever holds connections its
//! resolver found public, and the exact pool is used only by calls whose own matching rule
//! names that host and port.
//!
//! Every client built here ignores `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY`: with a proxy,
//! reqwest sends `CONNECT host:port` and the proxy resolves the name, so the address check
//! would never run. bedside connects to FHIR servers and token endpoints directly.

use std::collections::HashSet;
use std::sync::Arc;

use reqwest::ClientBuilder;

use super::egress::{PublicOnlyResolver, Reach};

/// The two pools, built with the same settings.
#[derive(Debug, Clone)]
pub struct Pools {
    exact: reqwest::Client,
    public_only: reqwest::Client,
}

impl Pools {
    /// Builds both pools: `configure` adds the caller's settings (timeouts, redirects, user
    /// agent); the resolver and the proxy setting are this module's and are applied last so
    /// `configure` cannot undo them. `exact_hosts`: [`super::EgressPolicy::exact_hosts`].
    pub fn build(
        exact_hosts: HashSet<String>,
        configure: impl Fn(ClientBuilder) -> ClientBuilder,
    ) -> reqwest::Result<Self> {
        let build = |hosts: HashSet<String>| {
            configure(reqwest::Client::builder())
                .dns_resolver(Arc::new(PublicOnlyResolver::new(hosts)))
                .no_proxy()
                .build()
        };
        Ok(Self {
            exact: build(exact_hosts)?,
            public_only: build(HashSet::new())?,
        })
    }

    /// The pool for a call that [`super::egress::check`] gave `reach`.
    pub fn for_reach(&self, reach: Reach) -> &reqwest::Client {
        match reach {
            Reach::Exact => &self.exact,
            Reach::PublicOnly => &self.public_only,
        }
    }
}
