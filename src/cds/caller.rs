//! Who a call is made for, once its credentials have been checked.

/// The EHR-side client a call (or a SMART session's feedback) is made for: the verified client
/// JWT's `iss` and its `tenant` claim. State that belongs to a client is keyed by it; the HTTP
/// edge that checked the credential builds it, and nothing below needs to know how.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Caller {
    /// The client's `iss` (its registered issuer).
    pub iss: String,
    /// The JWT's `tenant` claim, when it carried one.
    pub tenant: Option<String>,
}
