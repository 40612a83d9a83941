//! The ledger's error type: what a caller can be told about a refused operation.
//!
//! Messages name accounts, keys and amounts (book-keeping data, not personal data) and never
//! include SQL or connection details; the database error is kept as the `source` for logs.

use crate::account::AccountError;
use crate::entry::{EntryError, EntryId, IdempotencyKey};
use crate::money::{Amount, Currency};

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("invalid entry: {0}")]
    Invalid(#[from] EntryError),
    #[error("invalid account: {0}")]
    Account(#[from] AccountError),
    #[error("account `{0}` does not exist")]
    UnknownAccount(String),
    #[error("account `{account}` already exists with different settings")]
    AccountExists { account: String },
    #[error("account `{account}` holds {account_currency}, but the line is in {line_currency}")]
    CurrencyMismatch {
        account: String,
        account_currency: Currency,
        line_currency: Currency,
    },
    #[error("account `{account}` may not go negative: this entry would leave it at {would_be}")]
    InsufficientBalance { account: String, would_be: String },
    #[error("account `{account}` would overflow its running total")]
    Overflow { account: String },
    #[error(
        "idempotency key `{key}` was already used for entry {existing} with different content"
    )]
    IdempotencyConflict {
        key: IdempotencyKey,
        existing: EntryId,
    },
    #[error("entry {entry} was already reversed by entry {reversal}")]
    AlreadyReversed { entry: EntryId, reversal: EntryId },
    #[error("entry {0} is itself a reversal; post a new correcting entry instead")]
    ReversalOfReversal(EntryId),
    #[error("entry {0} does not exist")]
    EntryNotFound(EntryId),
    #[error("account `{0}` belongs to a programme outside your scope")]
    OutOfScope(String),
    #[error("entry #{index} of the batch was refused: {source}")]
    BatchRejected {
        index: usize,
        #[source]
        source: Box<LedgerError>,
    },
    #[error("the database refused the operation: {0}")]
    Refused(String),
    #[error("storage error")]
    Database(#[from] sqlx::Error),
    #[error("migration error")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL `{0}` (use sqlite://FILE or postgres://…)")]
    UnsupportedUrl(String),
    #[error("another writer changed the same accounts; the posting was retried too often")]
    Contention,
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
}

impl LedgerError {
    pub(crate) fn insufficient(account: &str, would_be: i128, currency: Currency) -> Self {
        let shown = i64::try_from(would_be)
            .map(|m| Amount::from_minor(m, currency).to_string())
            .unwrap_or_else(|_| format!("{would_be} (minor units) {currency}"));
        LedgerError::InsufficientBalance {
            account: account.to_owned(),
            would_be: shown,
        }
    }

    /// True for errors worth retrying the whole transaction (deadlock, serialization failure,
    /// a concurrent writer that used the same key or opened the same account first).
    pub fn is_retryable(&self) -> bool {
        match self {
            LedgerError::Contention => true,
            LedgerError::Database(sqlx::Error::Database(db)) => {
                matches!(
                    db.code().as_deref(),
                    Some("40001")
                        | Some("40P01")
                        | Some("23505")
                        | Some("5")
                        | Some("6")
                        | Some("517")
                        | Some("261")
                )
            }
            _ => false,
        }
    }
}

pub type Result<T, E = LedgerError> = std::result::Result<T, E>;
