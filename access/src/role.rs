//! The four roles of MISSION.md's users table.

use serde::{Deserialize, Serialize};

use crate::AccessError;

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Manages users, roles, providers, keys; never moves money alone.
    Admin,
    /// Programmes, households, entitlements; prepares batches.
    ProgrammeOfficer,
    /// Approves, authorises and releases batches; funds floats; posts entries.
    FinanceOfficer,
    /// Reads everything, changes nothing.
    Auditor,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::Admin,
        Role::ProgrammeOfficer,
        Role::FinanceOfficer,
        Role::Auditor,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::ProgrammeOfficer => "programme_officer",
            Role::FinanceOfficer => "finance_officer",
            Role::Auditor => "auditor",
        }
    }

    pub fn parse(s: &str) -> Result<Role, AccessError> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| AccessError::UnknownRole(s.chars().take(40).collect()))
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
