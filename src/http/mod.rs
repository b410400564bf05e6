//! What every HTTP surface shares: client-JWT checks (CDS Hooks and the prediction API; the
//! JWKS cache serves SMART `id_token`s too), reading a body within limits, the browser-facing
//! headers and header-size limit, static bearer tokens and TLS on the listener.
//!
//! It knows nothing of CDS Hooks, SMART or models; the surfaces (`hooks`, `smart`, `api`,
//! `admin`) build on it, and it imports none of them.

pub mod auth;
pub mod bearer;
pub mod body;
pub mod headers;
pub mod json;
pub mod tls;

pub use bearer::{static_token_holder, static_token_match};
pub use body::{read_body, read_json_body, BodyError, BodyLimits};
pub use headers::{BrowserPolicy, MaxHeaderBytes};
pub use json::{error_response, parse_json, JsonError};
