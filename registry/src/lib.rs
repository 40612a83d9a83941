//! The programme registry: programmes with budget lines, exchange rates and versioned
//! transfer-value rules ([`programmes`]); enrolled households with their personal data sealed
//! ([`households`]); duplicate flags and their adjudication ([`flags`]); and entitlements posted
//! to the ledger under budget control ([`entitlements`]).
//!
//! Start with [`Registry::new`] on a migrated [`Ledger`]. Every change takes an
//! [`AuditContext`] and writes its audit event in the same transaction. The same SQL serves
//! PostgreSQL and SQLite: the [`write_tx!`] and [`read_pool!`] macros expand a body once per
//! backend, so a rule is written once and tested on both.

use std::sync::Arc;

use cva_households::msisdn::OperatorTable;
use cva_households::pii::PiiKeys;
use cva_ledger::Ledger;

pub use cva_ledger::audit::AuditContext;

// The ledger's transaction macros, for this crate's modules (`write_tx!`, `read_pool!`) and,
// re-exported, for the crates built on it.
#[macro_use]
extern crate cva_ledger;
pub use cva_ledger::{read_pool, write_tx};

pub mod cfw;
pub mod entitlements;
pub mod error;
pub mod flags;
pub mod households;
pub mod milestones;
pub mod programmes;

pub use error::{RegistryError, Result};

/// The registry's services. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Registry {
    pub(crate) ledger: Ledger,
    pub(crate) keys: Arc<PiiKeys>,
    pub(crate) operators: Arc<OperatorTable>,
    /// Calling code for phone numbers written without one (e.g. `223`).
    pub(crate) default_country: String,
}

impl Registry {
    pub fn new(
        ledger: Ledger,
        keys: PiiKeys,
        operators: OperatorTable,
        default_country: &str,
    ) -> Registry {
        Registry {
            ledger,
            keys: Arc::new(keys),
            operators: Arc::new(operators),
            default_country: default_country.trim_start_matches('+').to_owned(),
        }
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Opens a sealed phone number (as stored in `households.msisdn`) for a payment request.
    /// Only payment adapters call this; the number goes to the provider and nowhere else.
    pub fn open_msisdn(&self, sealed: &str) -> Result<String> {
        Ok(self.keys.open(cva_households::pii::Field::Msisdn, sealed)?)
    }

    /// The keyed blind index (`households.msisdn_index`) of a phone number written any way a
    /// provider writes it (`+223 76…`, `22376…`, `76…`): normalised to E.164 as enrolment does,
    /// then HMAC-ed under the registry's index key. `None` when it is not a phone number of the
    /// operator table. Lets reconciliation compare a statement's payee with a household
    /// without storing either number.
    pub fn msisdn_index(&self, raw: &str) -> Option<String> {
        let normalised = self
            .operators
            .normalise(raw, &self.default_country)
            .or_else(|e| {
                let digits = raw.trim();
                if digits.starts_with('+') {
                    Err(e)
                } else {
                    self.operators
                        .normalise(&format!("+{digits}"), &self.default_country)
                }
            })
            .ok()?;
        Some(
            self.keys
                .blind_index(cva_households::pii::Field::Msisdn, normalised.0.as_str()),
        )
    }
}

/// `rows` groups of `cols` placeholders for a multi-row `VALUES` list: `$1, $2, …` on
/// PostgreSQL; on SQLite plain `?` (bound by position), because SQLite resolves numbered
/// parameters by name, which costs quadratic time in a statement with thousands of them.
pub fn values_list(rows: usize, cols: usize, postgres: bool) -> String {
    let mut sql = String::with_capacity(rows * cols * 7);
    let mut n = 0;
    for r in 0..rows {
        if r > 0 {
            sql.push(',');
        }
        sql.push('(');
        for c in 0..cols {
            if c > 0 {
                sql.push(',');
            }
            n += 1;
            if postgres {
                sql.push('$');
                sql.push_str(&n.to_string());
            } else {
                sql.push('?');
            }
        }
        sql.push(')');
    }
    sql
}

/// The current time, truncated to microseconds (what both databases keep).
pub(crate) fn now() -> chrono::DateTime<chrono::Utc> {
    cva_ledger::store::now_micros()
}
