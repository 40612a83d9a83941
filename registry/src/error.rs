//! What the registry can refuse, and why. Messages name fields, rows, codes and amounts, never
//! personal data (names, phone numbers, ID numbers).

use cva_ledger::LedgerError;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// Maker-checker: the same person may not take the next step.
    #[error("{0}")]
    SamePerson(String),
    #[error("{0}")]
    NotAllowed(String),
    #[error(
        "budget line `{line}` would be exceeded: this needs {needed} {currency}, {remaining} remain{}",
        if *funded_limit { " funded" } else { " in the budget" }
    )]
    BudgetExceeded {
        line: String,
        needed: i64,
        remaining: i64,
        currency: String,
        funded_limit: bool,
    },
    #[error("the file has {} bad row(s); nothing was imported", .0.len())]
    BadRows(Vec<cva_households::import::RowError>),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("storage error")]
    Database(#[from] sqlx::Error),
    #[error("personal data could not be sealed or opened")]
    Pii,
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    #[error("no database backend")]
    NoBackend,
    /// A payment provider could not be reached, or refused in a way no retry fixes (e.g.
    /// credentials). Says which provider and what it answered; never a secret.
    #[error("provider: {0}")]
    Provider(String),
}

impl RegistryError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> RegistryError {
        RegistryError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<cva_households::pii::PiiError> for RegistryError {
    fn from(_: cva_households::pii::PiiError) -> Self {
        RegistryError::Pii
    }
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;
