//! What an admin token may do. `[[admin_tokens]]` name their roles; a token without a
//! `roles` list may `report` and `operate` (what every admin token could do before roles
//! existed), never `promote`: changing which model version shows cards is granted explicitly.

use serde::Deserialize;

/// One thing an admin token may be allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminRole {
    /// Read: prediction records, the audit trail, the report, models and their evaluations.
    Report,
    /// Operate the running gateway: the kill switch per service.
    Operate,
    /// Evaluate, promote and retire model versions.
    Promote,
}

impl AdminRole {
    /// The roles of a token whose configuration names none.
    pub const DEFAULT: [AdminRole; 2] = [AdminRole::Report, AdminRole::Operate];

    /// The name used in the configuration and in error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Report => "report",
            Self::Operate => "operate",
            Self::Promote => "promote",
        }
    }
}

/// An admin token: who holds it, its sha256, and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminToken {
    /// Who holds it; logged and recorded instead of the token.
    pub name: String,
    /// sha256 of the token.
    pub sha256: [u8; 32],
    /// What it may do.
    pub roles: Vec<AdminRole>,
}

impl AdminToken {
    /// Whether the token may act in `role`.
    pub fn may(&self, role: AdminRole) -> bool {
        self.roles.contains(&role)
    }
}
