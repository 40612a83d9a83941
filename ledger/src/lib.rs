//! The CVA disbursement ledger core: money, accounts, a double-entry journal whose invariants
//! are enforced by Rust and by the database (PostgreSQL or SQLite), balances, the trial
//! balance, and export in hledger journal format.
//!
//! Start with [`Ledger::connect`], then [`Ledger::migrate`], [`Ledger::post`] /
//! [`Ledger::post_many`], [`Ledger::reverse`], [`Ledger::balance`], [`Ledger::trial_balance`].
//! Concurrent single posts go faster through a [`committer::Committer`], which batches them
//! into one transaction (group commit). State-changing calls have `_audited` variants that
//! append an event to the hash-chained [`audit`] trail in the same transaction.

pub mod account;
pub mod audit;
pub mod bench;
pub mod committer;
pub mod entry;
pub mod error;
pub mod export;
pub mod money;
pub mod parallel;
pub mod posting;
pub mod scope;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::{LedgerError, Result};
pub use store::Ledger;

/// Runs `$body` in a write transaction of whichever backend `$ledger` (a [`Ledger`]) uses,
/// with `$tx` bound to it, and commits when the body finishes (an early `?` or `return` drops
/// the transaction: nothing is written). SQLite transactions start with `BEGIN IMMEDIATE` (the
/// write lock at once, so two writers never deadlock on an upgrade). Write SQL with `$n`
/// placeholders (both backends accept them) and portable types. For the other crates' own
/// tables; ledger entries go through [`Ledger`]'s methods.
#[macro_export]
macro_rules! write_tx {
    ($ledger:expr, |$tx:ident| $body:block) => {{
        match $ledger.pool() {
            $crate::store::PoolRef::Postgres(pool) => {
                let mut $tx = pool.begin().await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
            $crate::store::PoolRef::Sqlite(pool) => {
                let mut $tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
        }
    }};
}

/// Runs `$body` with `$pool` bound to the pool of whichever backend `$ledger` uses (reads).
#[macro_export]
macro_rules! read_pool {
    ($ledger:expr, |$pool:ident| $body:block) => {{
        match $ledger.pool() {
            $crate::store::PoolRef::Postgres($pool) => $body,
            $crate::store::PoolRef::Sqlite($pool) => $body,
        }
    }};
}
