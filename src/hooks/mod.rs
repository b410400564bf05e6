//! CDS Hooks 2.0 over HTTP: discovery, invocation, feedback (client JWTs are checked by
//! [`crate::http::auth`]).
//!
//! Turns HTTP into the contract's typed [`crate::cds::wire::HookRequest`]s and
//! [`crate::cds::wire::CdsResponse`]s back into HTTP.
//! It does not know which model runs or how features are computed — `services` decides that.

pub mod error;
pub mod routes;
mod state;

pub use error::HookError;
pub use state::HooksState;
