//! What producing, reading or verifying a report can fail with. Messages name parameters,
//! ids and codes, never personal data.

use cva_ledger::LedgerError;
use cva_registry::RegistryError;

/// Why a report could not be built, recorded or verified.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A parameter is missing, not used by this kind of report, or malformed.
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// The programme, statement or run named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A stored value could not be read back as what it should be.
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    /// The file could not be written (CSV or JSON encoding).
    #[error("cannot write the report: {0}")]
    Render(String),
    /// The registry refused or failed (a programme not found is [`ReportError::NotFound`]).
    #[error(transparent)]
    Registry(RegistryError),
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl ReportError {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> ReportError {
        ReportError::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

impl From<RegistryError> for ReportError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::NotFound(m) => ReportError::NotFound(m),
            other => ReportError::Registry(other),
        }
    }
}

pub type Result<T, E = ReportError> = std::result::Result<T, E>;
