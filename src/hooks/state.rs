//! What the CDS Hooks routes need of a running gateway, and nothing else.

use std::sync::Arc;

use crate::http::auth::ClientAuth;
use crate::http::BodyLimits;
use crate::services::RuntimeHandle;
use crate::store::{AuditWriter, Store};

/// The CDS Hooks surface's state (registered as its own `web::Data`): the services in force,
/// client-JWT checks, the record, and the limits and public URL calls are checked against.
pub struct HooksState {
    pub runtime: Arc<RuntimeHandle>,
    pub auth: Arc<ClientAuth>,
    pub store: Store,
    pub audit: AuditWriter,
    pub body_limits: BodyLimits,
    /// `public_url` without a trailing slash.
    pub public_base: String,
}

impl HooksState {
    /// The URL an EHR posts to for service `id`; also the JWT `aud` it must sign.
    pub fn service_url(&self, id: &str) -> String {
        format!("{}/cds-services/{id}", self.public_base)
    }
}
