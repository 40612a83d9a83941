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
