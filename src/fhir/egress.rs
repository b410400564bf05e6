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
//!
//! The decision is made per call, on the rule that matched *this caller's* URL ([`check`]
//! returns a [`Reach`]): another client's exact entry for the same host never lets a wildcard
//! caller reach a private address. Each reach has its own connection pool
//! ([`super::connect::Pools`]), so a pooled connection to a private address is never handed
//! to a call whose rule only reaches public ones.

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
    /// `ip` is for the log only: `Display` leaves it out, so a refusal sent back to the
    /// caller (the 412 body) does not tell it what a name resolved to.
    #[error(
        "`{origin}` is not a public address; only an exactly allowlisted origin may be private"
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

    /// Whether this is an exact entry for `url`'s scheme, host and port: the only kind of
    /// rule under which `url` may be on a private address (and, for SMART Backend Services,
    /// the only kind a grant of bedside's own token may rest on).
    pub fn names_exactly(&self, url: &Url) -> bool {
        self.is_exact() && self.matches(url)
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

/// Which addresses a call may connect to, decided by the rule that matched its URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// An exact entry names this scheme, host and port: any address, private included.
    Exact,
    /// Only a wildcard matched: public addresses only, checked again after DNS resolution.
    PublicOnly,
}

/// Checks `url` against `rules` before anything is sent, and says how far the call may reach.
/// DNS names that only a wildcard admitted are checked again, against their resolved
/// addresses, by the [`Reach::PublicOnly`] pool's [`PublicOnlyResolver`].
pub fn check(rules: &[OriginRule], url: &Url) -> Result<Reach, EgressRefusal> {
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
        return Ok(Reach::Exact);
    }
    let literal = match url.host() {
        Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        _ => None,
    };
    match literal {
        Some(ip) if !is_public(ip) => Err(EgressRefusal::NonPublicAddress { origin, ip }),
        _ => Ok(Reach::PublicOnly),
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

/// Whether an address is on the public internet: not in any range of the IANA special-purpose
/// registries (RFC 6890, RFC 8190 and later entries) that is not globally reachable, nor
/// loopback, private, link-local, shared, multicast or reserved. IPv6 is public only inside
/// global unicast `2000::/3`; addresses that carry an IPv4 address (IPv4-mapped, NAT64
/// `64:ff9b::/96`) are judged by that address. Deprecated or tunnelling forms (IPv4-compatible
/// `::/96`, 6to4 `2002::/16`, Teredo and the rest of `2001::/23`) are refused outright: a FHIR
/// server is never legitimately there, and they can lead to an internal IPv4 address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v6(v6: Ipv6Addr) -> bool {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return is_public_v4(v4); // ::ffff:0:0/96
    }
    let s = v6.segments();
    // NAT64 well-known prefix (64:ff9b::/96, RFC 6052) carries an IPv4 address in its last
    // 32 bits; the local-use prefix 64:ff9b:1::/48 (RFC 8215) falls outside 2000::/3 below.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [.., a, b, c, d] = v6.octets();
        return is_public_v4(Ipv4Addr::new(a, b, c, d));
    }
    // Outside global unicast: ::/96 (IPv4-compatible, ::1, ::), 100::/64 (discard),
    // 64:ff9b:1::/48, 5f00::/16 (SRv6 SIDs), fc00::/7, fe80::/10, fec0::/10, ff00::/8…
    if s[0] & 0xe000 != 0x2000 {
        return false;
    }
    // 2001::/23 IETF protocol assignments (Teredo, benchmarking, ORCHID), 2001:db8::/32
    // documentation, 2002::/16 6to4, 3fff::/20 documentation (RFC 9637).
    let special_purpose = (s[0] == 0x2001 && (s[1] < 0x0200 || s[1] == 0x0db8))
        || s[0] == 0x2002
        || (s[0] == 0x3fff && s[1] < 0x1000);
    !special_purpose
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
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast (deprecated, RFC 7526)
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

/// The resolver of both connection pools: names resolve normally, then any non-public address
/// fails the lookup unless the name is in `exact_hosts` — every exactly allowlisted host for
/// the [`Reach::Exact`] pool (a second line behind [`check`], which already decided on this
/// caller's rule), none for the [`Reach::PublicOnly`] pool.
#[derive(Debug, Clone)]
pub struct PublicOnlyResolver {
    exact_hosts: Arc<HashSet<String>>,
}

impl PublicOnlyResolver {
    /// `exact_hosts`: from [`EgressPolicy::exact_hosts`], or empty for public addresses only.
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
        assert_eq!(
            check(&r, &url("https://fhir.hospital.example/R4")),
            Ok(Reach::Exact)
        );
        assert_eq!(
            check(&r, &url("https://FHIR.hospital.example:443/R4")),
            Ok(Reach::Exact)
        );
        assert_eq!(
            check(&r, &url("http://127.0.0.1:8081/fhir")),
            Ok(Reach::Exact)
        );
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
            Ok(Reach::PublicOnly)
        );
        assert!(check(&r, &url("https://epic.example.evil.test/")).is_err());
        assert!(check(&r, &url("https://evilepic.example/")).is_err());
        let on_port = rules(&["https://*:8443"]);
        assert_eq!(
            check(&on_port, &url("https://fhir.example:8443/")),
            Ok(Reach::PublicOnly)
        );
        assert!(check(&on_port, &url("https://fhir.example/")).is_err());
        let any = rules(&["https://*"]);
        assert_eq!(
            check(&any, &url("https://93.184.216.34/")),
            Ok(Reach::PublicOnly)
        );
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

    /// Each special-purpose range of the IANA IPv4 and IPv6 registries (RFC 6890 / 8190 and
    /// later entries) that is not globally reachable, and every form that embeds an IPv4
    /// address, one address each; and the public neighbours that must stay reachable.
    #[test]
    fn special_purpose_ranges_of_the_iana_registries_are_not_public() {
        for (range, ip) in [
            ("0.0.0.0/8 this network", "0.1.2.3"),
            ("192.0.0.0/24 IETF protocol assignments", "192.0.0.8"),
            ("192.0.2.0/24 TEST-NET-1", "192.0.2.1"),
            ("192.88.99.0/24 6to4 relay anycast", "192.88.99.1"),
            ("198.51.100.0/24 TEST-NET-2", "198.51.100.7"),
            ("203.0.113.0/24 TEST-NET-3", "203.0.113.9"),
            ("198.18.0.0/15 benchmarking", "198.19.255.1"),
            ("100.64.0.0/10 shared", "100.127.0.1"),
            ("240.0.0.0/4 reserved", "250.1.2.3"),
            ("::/96 IPv4-compatible", "::7f00:1"),
            ("::/96 IPv4-compatible (public v4 inside)", "::808:808"),
            ("::ffff:0:0/96 IPv4-mapped private", "::ffff:10.0.0.1"),
            (
                "::ffff:0:0/96 IPv4-mapped metadata",
                "::ffff:169.254.169.254",
            ),
            ("64:ff9b::/96 NAT64 to loopback", "64:ff9b::7f00:1"),
            ("64:ff9b:1::/48 local-use NAT64", "64:ff9b:1::808:808"),
            ("100::/64 discard-only", "100::1"),
            ("2001::/32 Teredo", "2001:0:4136:e378:8000:63bf:3fff:fdd2"),
            ("2001:2::/48 benchmarking", "2001:2::1"),
            ("2001:10::/28 ORCHID", "2001:10::1"),
            (
                "2001:20::/28 ORCHIDv2 (2001::/23 is refused whole)",
                "2001:20::1",
            ),
            ("2001:db8::/32 documentation", "2001:db8::1"),
            ("2002::/16 6to4", "2002:c0a8:101::1"),
            ("2002::/16 6to4 (public v4 inside)", "2002:808:808::1"),
            ("3fff::/20 documentation", "3fff:fff::1"),
            ("5f00::/16 SRv6 SIDs", "5f00::1"),
            ("fc00::/7 unique local", "fd12:3456::1"),
            ("fe80::/10 link-local", "fe80::1"),
            ("fec0::/10 site-local", "fec0::1"),
            ("ff00::/8 multicast", "ff0e::1"),
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{range}: {ip}");
        }
        for (what, ip) in [
            ("public v4", "1.1.1.1"),
            ("public v4 next to 192.0.0.0/24", "192.0.1.1"),
            ("public v4 next to 192.88.99.0/24", "192.88.98.1"),
            ("public v6", "2606:4700:4700::1111"),
            ("public v6 next to 2001::/23", "2001:200::1"),
            ("public v6 next to 3fff::/20", "3fff:1000::1"),
            ("NAT64 to a public v4", "64:ff9b::808:808"),
            ("IPv4-mapped public", "::ffff:8.8.8.8"),
        ] {
            assert!(is_public(ip.parse().unwrap()), "{what}: {ip}");
        }
    }

    /// The 412 body carries the refusal's `Display`: it must not say what a name resolved to.
    #[test]
    fn a_non_public_refusal_does_not_name_the_address() {
        let e = EgressRefusal::NonPublicAddress {
            origin: "https://intranet.example".into(),
            ip: "10.20.30.40".parse().unwrap(),
        };
        let text = e.to_string();
        assert!(text.contains("intranet.example"), "{text}");
        assert!(!text.contains("10.20.30.40"), "{text}");
    }

    /// Issue 14 item 9: client A may reach `https://*:18444` (public only), client B lists
    /// `http://localhost:18091` exactly. A's URL on localhost is matched by A's wildcard only:
    /// public reach, whatever B lists; B's exact URL is exact reach.
    #[test]
    fn reach_follows_the_rule_that_matched_this_callers_url() {
        let policy = EgressPolicy::new(
            vec![
                ClientEgress {
                    iss: "https://a.example".into(),
                    all_tenants: rules(&["https://*:18444"]),
                    by_tenant: Vec::new(),
                },
                ClientEgress {
                    iss: "https://b.example".into(),
                    all_tenants: rules(&["http://localhost:18091", "https://localhost:18444"]),
                    by_tenant: Vec::new(),
                },
            ],
            Vec::new(),
        );
        let a = policy.rules_for(Some("https://a.example"), None);
        let b = policy.rules_for(Some("https://b.example"), None);
        let target = url("https://localhost:18444/fhir");
        assert_eq!(check(&a, &target), Ok(Reach::PublicOnly));
        assert_eq!(check(&b, &target), Ok(Reach::Exact));
        assert_eq!(
            check(&b, &url("http://localhost:18091/fhir")),
            Ok(Reach::Exact)
        );
        assert!(check(&a, &url("http://localhost:18091/fhir")).is_err());
        assert!(policy.exact_hosts().contains("localhost"));
    }

    #[tokio::test]
    async fn the_public_only_resolver_refuses_loopback_and_names_no_address_in_its_message() {
        let public_only = PublicOnlyResolver::new(HashSet::new());
        let name: Name = "localhost".parse().unwrap();
        let e = match public_only.resolve(name).await {
            Err(e) => e,
            Ok(addrs) => panic!("resolved: {:?}", addrs.collect::<Vec<_>>()),
        };
        let refusal = e.downcast_ref::<EgressRefusal>().unwrap();
        assert_eq!(refusal.kind(), "non_public_address");
        assert!(!refusal.to_string().contains("127.0.0.1"), "{refusal}");
        let exact = PublicOnlyResolver::new(HashSet::from(["localhost".to_owned()]));
        let addrs: Vec<SocketAddr> = exact
            .resolve("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
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
