//! Whose records these are. A patient id means something only on the FHIR server it came from,
//! and a card belongs to the EHR client (and tenant) it was given to: two EHRs — or two tenants
//! of one EHR — may each have a `Patient/123` who are different people. Every piece of state
//! bedside keeps about a patient (suppression, "already aware", alert budgets, dedup, the SMART
//! trajectory, feedback) is therefore looked up by a [`Scope`] as well as the patient id.

use url::Url;

/// The caller a record belongs to: the CDS client (its JWT `iss`), the `tenant` it called for,
/// and the FHIR server its patient ids are from (normalised base URL; empty when the call had
/// no `fhirServer`). Empty `client_iss` and `tenant` mean "client authentication off" (the
/// demo) or "no tenant claim".
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Scope {
    /// The verified client's `iss`.
    pub client_iss: String,
    /// The verified client's `tenant` claim.
    pub tenant: String,
    /// `fhirServer` as [`fhir_base`] normalises it.
    pub fhir_server: String,
}

impl Scope {
    /// The scope of a call by `client_iss`/`tenant` (None: authentication off / no tenant)
    /// about a patient of `fhir_server`.
    pub fn new(client_iss: Option<&str>, tenant: Option<&str>, fhir_server: Option<&str>) -> Self {
        Self {
            client_iss: client_iss.unwrap_or_default().to_owned(),
            tenant: tenant.unwrap_or_default().to_owned(),
            fhir_server: fhir_server.map(fhir_base).unwrap_or_default(),
        }
    }
}

impl Scope {
    /// One hook call as bedside keys it (card uuids, prediction ids, dedup): the EHR's
    /// `hookInstance` is unique only within the client that chose it, so another client's
    /// call with the same `hookInstance` must not reach this one's records. Unchanged when
    /// there is no client or tenant (authentication off).
    pub fn call_key(&self, hook_instance: &str) -> String {
        if self.client_iss.is_empty() && self.tenant.is_empty() {
            hook_instance.to_owned()
        } else {
            format!("{hook_instance}|{}|{}", self.client_iss, self.tenant)
        }
    }
}

/// A FHIR base URL in one spelling, so that `https://EHR.example:443/fhir/` and
/// `https://ehr.example/fhir` name the same server: lower-case scheme and host (the `url`
/// crate's parse), no default port, no trailing slash, no query or fragment. Text that is not
/// a URL is kept as it is (it still keys consistently).
pub fn fhir_base(text: &str) -> String {
    let Ok(mut url) = Url::parse(text.trim()) else {
        return text.trim().to_owned();
    };
    url.set_query(None);
    url.set_fragment(None);
    let mut s = url.to_string();
    while s.ends_with('/') {
        s.pop();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fhir_bases_are_compared_in_one_spelling() {
        assert_eq!(
            fhir_base("https://EHR.example:443/fhir/"),
            "https://ehr.example/fhir"
        );
        assert_eq!(
            fhir_base("https://ehr.example/fhir"),
            "https://ehr.example/fhir"
        );
        assert_eq!(
            fhir_base("http://ehr.example:8080/r4/t1/?x=1#f"),
            "http://ehr.example:8080/r4/t1"
        );
        assert_ne!(
            fhir_base("https://ehr.example/r4/t1"),
            fhir_base("https://ehr.example/r4/t2")
        );
        assert_eq!(fhir_base(" not a url "), "not a url");
    }

    #[test]
    fn a_scope_without_client_is_the_unauthenticated_one() {
        let s = Scope::new(None, None, Some("https://ehr.example/fhir/"));
        assert_eq!(s.client_iss, "");
        assert_eq!(s.tenant, "");
        assert_eq!(s.fhir_server, "https://ehr.example/fhir");
    }
}
