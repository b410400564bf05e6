//! CDS Hooks 2.0 wire protocol: discovery, invocation, feedback, client JWT checks.
//!
//! Turns HTTP into typed [`wire::HookRequest`]s and [`wire::CdsResponse`]s back into HTTP.
//! It does not know which model runs or how features are computed — `services` decides that.

pub mod auth;
pub(crate) mod body;
pub mod context;
pub mod error;
pub mod prefetch;
pub mod routes;
pub mod wire;

pub use error::HookError;
