//! Which FHIR servers bedside may call (SSRF defence).
//!
//! A hook request's `fhirServer` is chosen by the caller, so it is untrusted: without a
//! policy, anyone who can post a hook call could make bedside fetch from the cloud metadata
//! address or an internal admin port, with a clinician's access token attached. The rules:
//!
//! - only origins allowlisted for the calling CDS client may be called;
//! - an origin allowlisted **exactly** (`https://fhir.hospital.example`) may resolve to any
//!   address, so an on-premises FHIR server on a private network works;
//! - a wildcard entry (`https://*.fhir.example` or `https://*`) only ever reaches public
//!   addresses: loopback, private, link-local (169.254.169.254), shared, multicast and
//!   reserved ranges are refused after DNS resolution, in the resolver the connection uses,
//!   so a name cannot be re-pointed between the check and the connect;
//! - plain `http` only for an exact `http://…` entry (development);
//! - redirects only within the same origin (enforced by the client).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// One allowlist entry, parsed from configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginRule {
    scheme: String,
    host: HostPattern,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// Exactly this host (lower-case domain or IP literal as `url` prints it).
    Exact(String),
    /// Any subdomain of this suffix (stored with its leading dot); empty suffix = any host.
    Wildcard(String),
}

/// Why a `fhirServer` (or a link the server returned) may not be called.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressRefusal {
    #[error("`{0}` is not on this client's FHIR server allowlist")]
    NotAllowlisted(String),
    #[error("`{0}` uses plain http; only origins allowlisted exactly as http:// may")]
    PlainHttp(String),
    #[error(
        "`{origin}` is the non-public address {ip}; only an exactly allowlisted origin may be"
    )]
    NonPublicAddress { origin: String, ip: IpAddr },
    #[error("`{0}` is not an http(s) URL with a host")]
    NotHttp(String),
    #[error("link to `{link}` leaves the FHIR server's origin `{origin}`")]
    OtherOrigin { origin: String, link: String },
}

impl EgressRefusal {
    /// Stable label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotAllowlisted(_) => "not_allowlisted",
            Self::PlainHttp(_) => "plain_http",
            Self::NonPublicAddress { .. } => "non_public_address",
            Self::NotHttp(_) => "not_http",
            Self::OtherOrigin { .. } => "other_origin",
        }
    }
}

impl OriginRule {
    /// Parses `https://host[:port]`, `https://*.suffix[:port]` or `https://*`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| format!("`{text}` is not scheme://host"))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(format!("`{text}`: scheme must be http or https"));
        }
        let authority = rest.trim_end_matches('/');
        if authority.contains('/') || authority.contains('?') || authority.contains('@') {
            return Err(format!(
                "`{text}`: give an origin (scheme://host[:port]), not a path or user"
            ));
        }
        if let Some(suffix) = authority.strip_prefix('*') {
            if scheme == "http" {
                return Err(format!(
                    "`{text}`: wildcards are https only; allowlist a plain-http origin exactly"
                ));
            }
            let (host, port) = split_port(suffix, text)?;
            if !(host.is_empty() || host.starts_with('.') && host.len() > 1) {
                return Err(format!("`{text}`: a wildcard is `*` or `*.domain`"));
            }
            return Ok(Self {
                scheme,
                host: HostPattern::Wildcard(host.to_ascii_lowercase()),
                port,
            });
        }
        let url = Url::parse(text).map_err(|e| format!("`{text}`: {e}"))?;
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("`{text}` has no host"))?;
        Ok(Self {
            scheme,
            host: HostPattern::Exact(host.to_ascii_lowercase()),
            port: url.port(),
        })
    }

    fn is_exact(&self) -> bool {
        matches!(self.host, HostPattern::Exact(_))
    }

    fn matches(&self, url: &Url) -> bool {
        let Some(host) = url.host_str() else {
            return false;
        };
        let host = host.to_ascii_lowercase();
        let port_ok =
            url.port_or_known_default() == self.port.or_else(|| default_port(&self.scheme));
        url.scheme() == self.scheme
            && port_ok
            && match &self.host {
                HostPattern::Exact(h) => *h == host,
                HostPattern::Wildcard(suffix) if suffix.is_empty() => true,
                HostPattern::Wildcard(suffix) => host.ends_with(suffix.as_str()),
            }
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

fn split_port<'t>(authority: &'t str, text: &str) -> Result<(&'t str, Option<u16>), String> {
    match authority.rsplit_once(':') {
        Some((host, port)) => port
            .parse()
            .map(|p| (host, Some(p)))
            .map_err(|_| format!("`{text}`: bad port `{port}`")),
        None => Ok((authority, None)),
    }
}

/// One trusted client's allowlists: for all its tenants, and per tenant (one EHR `iss`
/// serving several organisations, told apart by the JWT's `tenant` claim).
#[derive(Debug, Clone, Default)]
pub struct ClientEgress {
    pub iss: String,
    pub all_tenants: Vec<OriginRule>,
    /// `(tenant, rules)`: added to `all_tenants` for calls carrying that `tenant`.
    pub by_tenant: Vec<(String, Vec<OriginRule>)>,
}

/// The allowlists of every trusted client, and of development mode.
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    by_client: Vec<ClientEgress>,
    unauthenticated: Vec<OriginRule>,
    /// Origins of the SMART issuers (`[smart] allowed_issuers`): the app's FHIR reads.
    issuers: Vec<OriginRule>,
}

impl EgressPolicy {
    /// `by_client`: per trusted client; `unauthenticated`: the list used when client
    /// authentication is off (`--insecure-no-auth`, the demo).
    pub fn new(by_client: Vec<ClientEgress>, unauthenticated: Vec<OriginRule>) -> Self {
        Self {
            by_client,
            unauthenticated,
            issuers: Vec::new(),
        }
    }

    /// Adds the origins of the SMART issuers bedside signs clinicians in with: the SMART app
    /// reads the launched patient's record there with the clinician's token.
    pub fn with_issuers(mut self, issuers: Vec<OriginRule>) -> Self {
        self.issuers = issuers;
        self
    }

    /// The rules for the SMART app's reads (the allowed issuers' origins).
    pub fn issuer_rules(&self) -> Vec<OriginRule> {
        self.issuers.clone()
    }

    /// The rules for a call by client `iss` for `tenant` (its own list plus that tenant's),
    /// or the development list when authentication is off (`iss` = `None`).
    pub fn rules_for(&self, iss: Option<&str>, tenant: Option<&str>) -> Vec<OriginRule> {
        let Some(iss) = iss else {
            return self.unauthenticated.clone();
        };
        let Some(client) = self.by_client.iter().find(|c| c.iss == iss) else {
            return Vec::new();
        };
        let mut rules = client.all_tenants.clone();
        if let Some(tenant) = tenant {
            for (t, extra) in &client.by_tenant {
                if t == tenant {
                    rules.extend(extra.iter().cloned());
                }
            }
        }
        rules
    }

    /// Hosts named by an exact rule anywhere: only these may resolve to non-public addresses.
    pub fn exact_hosts(&self) -> HashSet<String> {
        self.by_client
            .iter()
            .flat_map(|c| {
                c.all_tenants
                    .iter()
                    .chain(c.by_tenant.iter().flat_map(|(_, r)| r.iter()))
            })
            .chain(self.unauthenticated.iter())
            .chain(self.issuers.iter())
            .filter_map(|r| match &r.host {
                HostPattern::Exact(h) => Some(h.clone()),
                HostPattern::Wildcard(_) => None,
            })
            .collect()
    }
}

/// Checks `url` against `rules` before anything is sent. DNS names that a wildcard admitted
/// are checked again, against their resolved addresses, by [`PublicOnlyResolver`].
pub fn check(rules: &[OriginRule], url: &Url) -> Result<(), EgressRefusal> {
    let origin = url.origin().ascii_serialization();
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(EgressRefusal::NotHttp(url.as_str().to_owned()));
    }
    let matching: Vec<&OriginRule> = rules.iter().filter(|r| r.matches(url)).collect();
    if matching.is_empty() {
        return Err(if url.scheme() == "http" {
            EgressRefusal::PlainHttp(origin)
        } else {
            EgressRefusal::NotAllowlisted(origin)
        });
    }
    if matching.iter().any(|r| r.is_exact()) {
        return Ok(());
    }
    let literal = match url.host() {
        Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        _ => None,
    };
    match literal {
        Some(ip) if !is_public(ip) => Err(EgressRefusal::NonPublicAddress { origin, ip }),
        _ => Ok(()),
    }
}

/// Whether `link` (a `next` page, a redirect) stays on `base`'s origin, so the access token
/// for `base` is never sent anywhere else.
pub fn same_origin(base: &Url, link: &Url) -> Result<(), EgressRefusal> {
    if base.origin() == link.origin() {
        Ok(())
    } else {
        Err(EgressRefusal::OtherOrigin {
            origin: base.origin().ascii_serialization(),
            link: link.origin().ascii_serialization(),
        })
    }
}

/// Whether an address is on the public internet (not loopback, private, link-local, shared,
/// multicast, documentation, benchmarking or reserved).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            // NAT64 (64:ff9b::/96) carries an IPv4 address in its last 32 bits.
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let v4 =
                    Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
                return is_public_v4(v4);
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || v6 == Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 1))
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_unspecified()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

/// The resolver every FHIR connection uses: names resolve normally, then any non-public
/// address fails the lookup unless the name is an exactly allowlisted host.
#[derive(Debug, Clone)]
pub struct PublicOnlyResolver {
    exact_hosts: Arc<HashSet<String>>,
}

impl PublicOnlyResolver {
    /// `exact_hosts`: from [`EgressPolicy::exact_hosts`].
    pub fn new(exact_hosts: HashSet<String>) -> Self {
        Self {
            exact_hosts: Arc::new(exact_hosts),
        }
    }
}

impl Resolve for PublicOnlyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let exact = self.exact_hosts.clone();
        Box::pin(async move {
            let host = name.as_str().to_ascii_lowercase();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !exact.contains(&host) {
                if let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
                    return Err(Box::new(EgressRefusal::NonPublicAddress {
                        origin: host,
                        ip: bad.ip(),
                    })
                        as Box<dyn std::error::Error + Send + Sync>);
                }
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(list: &[&str]) -> Vec<OriginRule> {
        list.iter().map(|r| OriginRule::parse(r).unwrap()).collect()
    }
    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn exact_origins_match_scheme_host_and_port() {
        let r = rules(&["https://fhir.hospital.example", "http://127.0.0.1:8081"]);
        assert_eq!(check(&r, &url("https://fhir.hospital.example/R4")), Ok(()));
        assert_eq!(
            check(&r, &url("https://FHIR.hospital.example:443/R4")),
            Ok(())
        );
        assert_eq!(check(&r, &url("http://127.0.0.1:8081/fhir")), Ok(()));
        assert!(matches!(
            check(&r, &url("https://fhir.hospital.example:8443/R4")),
            Err(EgressRefusal::NotAllowlisted(_))
        ));
        assert!(matches!(
            check(&r, &url("http://fhir.hospital.example/R4")),
            Err(EgressRefusal::PlainHttp(_))
        ));
        assert!(matches!(
            check(&r, &url("http://127.0.0.1:8082/")),
            Err(EgressRefusal::PlainHttp(_))
        ));
        assert!(matches!(
            check(
                &r,
                &url("https://evil.example/?https://fhir.hospital.example")
            ),
            Err(EgressRefusal::NotAllowlisted(_))
        ));
    }

    #[test]
    fn wildcards_match_subdomains_and_never_non_public_literals() {
        let r = rules(&["https://*.epic.example"]);
        assert_eq!(
            check(&r, &url("https://fhir.epic.example/api/FHIR/R4")),
            Ok(())
        );
        assert!(check(&r, &url("https://epic.example.evil.test/")).is_err());
        assert!(check(&r, &url("https://evilepic.example/")).is_err());
        let on_port = rules(&["https://*:8443"]);
        assert_eq!(check(&on_port, &url("https://fhir.example:8443/")), Ok(()));
        assert!(check(&on_port, &url("https://fhir.example/")).is_err());
        let any = rules(&["https://*"]);
        assert_eq!(check(&any, &url("https://93.184.216.34/")), Ok(()));
        for bad in [
            "https://169.254.169.254/latest/meta-data",
            "https://127.0.0.1/",
            "https://10.1.2.3/",
            "https://[::1]/",
            "https://[::ffff:10.0.0.1]/",
            "https://[fd00::1]/",
        ] {
            assert!(
                matches!(
                    check(&any, &url(bad)),
                    Err(EgressRefusal::NonPublicAddress { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn bad_rules_are_refused() {
        for bad in [
            "fhir.example",
            "ftp://x",
            "http://*.example",
            "https://x/path",
            "https://*x.example",
            "https://u@x",
        ] {
            assert!(OriginRule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn address_classes() {
        for public in ["8.8.8.8", "93.184.216.34", "2606:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
        for private in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "224.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "198.18.0.1",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "ff02::1",
            "64:ff9b::a9fe:a9fe",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
    }

    #[test]
    fn a_tenants_servers_are_allowed_only_for_calls_of_that_tenant() {
        let policy = EgressPolicy::new(
            vec![ClientEgress {
                iss: "https://epic.example".into(),
                all_tenants: rules(&["https://fhir.epic.example"]),
                by_tenant: vec![(
                    "hospital-a".into(),
                    rules(&["https://fhir.hospital-a.example"]),
                )],
            }],
            rules(&["http://127.0.0.1:8081"]),
        );
        let a = url("https://fhir.hospital-a.example/R4");
        let shared = url("https://fhir.epic.example/R4");
        let ok = |iss, tenant, u: &Url| check(&policy.rules_for(iss, tenant), u).is_ok();
        assert!(ok(Some("https://epic.example"), Some("hospital-a"), &a));
        assert!(!ok(Some("https://epic.example"), Some("hospital-b"), &a));
        assert!(!ok(Some("https://epic.example"), None, &a));
        assert!(ok(
            Some("https://epic.example"),
            Some("hospital-b"),
            &shared
        ));
        assert!(!ok(Some("https://other.example"), Some("hospital-a"), &a));
        assert!(ok(None, None, &url("http://127.0.0.1:8081/fhir")));
        assert!(policy.exact_hosts().contains("fhir.hospital-a.example"));
    }

    #[test]
    fn links_must_stay_on_the_origin() {
        let base = url("https://fhir.example/R4/");
        assert!(same_origin(&base, &url("https://fhir.example/R4/Observation?page=2")).is_ok());
        assert!(same_origin(&base, &url("https://other.example/R4/")).is_err());
        assert!(same_origin(&base, &url("http://fhir.example/R4/")).is_err());
    }
}
