//! The attributes of bedside's SMART cookies (the session and the pre-auth launch binding),
//! and reading a cookie from a request.
//!
//! EHRs show SMART apps in an iframe of another site. A browser sends a cookie there only when
//! it is `SameSite=None`, which it accepts only with `Secure`, i.e. over https. So: over https
//! `SameSite=None; Secure; Partitioned` — `Partitioned` (CHIPS) keys the cookie to the
//! top-level site, so it also works where third-party cookies are blocked, and it cannot follow
//! the clinician to other sites' frames. Over plain http (development) `SameSite=Lax` (a
//! browser drops `None` without `Secure`), so embedded launch needs https.

use actix_web::http::header;
use actix_web::HttpRequest;

use url::Url;

/// How bedside's SMART cookies are marked for the way it is served.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CookiePolicy {
    /// Served over https (`public_url`, or TLS on the listener): the cookies may cross sites.
    cross_site: bool,
    /// `Secure` on a Lax cookie: everywhere but plain http on localhost.
    secure: bool,
}

impl CookiePolicy {
    /// The policy for the configured `public_url`; `https`: browsers reach bedside over https
    /// (`public_url` or TLS on the listener).
    pub(crate) fn new(public: &Url, https: bool) -> Self {
        let local_http = public.scheme() == "http"
            && matches!(public.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
        Self {
            cross_site: https,
            secure: !local_http,
        }
    }

    /// A `Set-Cookie` value: an HttpOnly cookie `name=value` for `path`, living `max_age` s
    /// (0 expires it).
    pub(crate) fn set_cookie(&self, name: &str, value: &str, path: &str, max_age: u64) -> String {
        let site = match (self.cross_site, self.secure) {
            (true, _) => "SameSite=None; Secure; Partitioned",
            (false, true) => "SameSite=Lax; Secure",
            (false, false) => "SameSite=Lax",
        };
        format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; {site}")
    }
}

/// The value of the cookie `name` the request carries, if any and not empty.
pub(crate) fn value(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_site_cookies_are_secure_and_partitioned_and_lax_otherwise() {
        let https = CookiePolicy {
            cross_site: true,
            secure: true,
        };
        assert_eq!(
            https.set_cookie("a", "b", "/smart", 60),
            "a=b; Path=/smart; Max-Age=60; HttpOnly; SameSite=None; Secure; Partitioned"
        );
        let local = CookiePolicy {
            cross_site: false,
            secure: false,
        };
        assert_eq!(
            local.set_cookie("a", "", "/smart", 0),
            "a=; Path=/smart; Max-Age=0; HttpOnly; SameSite=Lax"
        );
        let http = CookiePolicy {
            cross_site: false,
            secure: true,
        };
        assert!(http
            .set_cookie("a", "b", "/", 1)
            .ends_with("SameSite=Lax; Secure"));
    }
}
