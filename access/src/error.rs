//! Errors of the access layer. Messages never contain passwords, hashes or tokens.

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("username: {0}")]
    InvalidUsername(&'static str),
    #[error("password: {0}")]
    WeakPassword(&'static str),
    #[error("role: unknown role `{0}` (admin, programme_officer, finance_officer, auditor)")]
    UnknownRole(String),
    #[error("a user needs at least one role")]
    NoRole,
    #[error("username is already taken")]
    UserExists,
    #[error("user {0} does not exist")]
    UserNotFound(i64),
    #[error("unknown username or wrong password")]
    InvalidCredentials,
    #[error("the session has ended; log in again")]
    SessionEnded,
    #[error("the access token is invalid or expired")]
    InvalidToken,
    #[error("the token secret is too weak: {0}")]
    WeakSecret(&'static str),
    #[error("too many failed logins; retry in {retry_after_secs} s")]
    Throttled { retry_after_secs: u64 },
    #[error("{0}")]
    SamePerson(String),
    #[error("storage error")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Ledger(#[from] cva_ledger::LedgerError),
    #[error("stored {0} are unreadable")]
    Corrupt(&'static str),
    #[error("password hashing failed")]
    Hashing,
}

pub type Result<T, E = AccessError> = std::result::Result<T, E>;
