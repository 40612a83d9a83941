//! The journal: posted entries with their lines, one row per line, entries in the ledger's
//! order (entry id: UUID v7, time-ordered, then line number) — the order of
//! [`Ledger::journal`], which every backend gives the same.
//!
//! # Columns
//!
//! `entry_id`, `recorded_at` (RFC 3339, UTC, microseconds), `effective_date`,
//! `idempotency_key`, `description`, `reverses` (the entry a reversal mirrors), `metadata`
//! (the entry's metadata as compact JSON, keys sorted), `line_no` (1-based), `account`,
//! `side` (`debit` or `credit`), `amount` (decimal, the currency's decimals), `currency`.
//!
//! # Programme filter
//!
//! With a programme `P`, an entry is reported when
//!
//! 1. one of its lines is on an account of `P`: an account code one of whose segments after
//!    the first is exactly `P` (the code contains `:P:` or ends with `:P`: `funds:P:mpca`,
//!    `liabilities:entitlements:P:hh-12`); or
//! 2. its metadata names, as `batch`, a payment batch of `P` — payment confirmations and
//!    failures touch only the provider's accounts (in transit, float, fees), so the account
//!    rule alone would leave them out.
//!
//! Every line of a reported entry is shown, the shared accounts' (bank, float) included.

use std::collections::HashSet;

use chrono::SecondsFormat;
use cva_ledger::entry::{canonical_json, PostedEntry};
use cva_ledger::read_pool;
use cva_registry::Registry;
use futures::StreamExt;
use serde_json::Map;

use crate::error::Result;
use crate::model::{Cell, Table};

pub const COLUMNS: [&str; 12] = [
    "entry_id",
    "recorded_at",
    "effective_date",
    "idempotency_key",
    "description",
    "reverses",
    "metadata",
    "line_no",
    "account",
    "side",
    "amount",
    "currency",
];

/// Whether account `code` belongs to programme `programme` by rule 1 of the module docs.
pub fn account_of_programme(code: &str, programme: &str) -> bool {
    code.split(':').skip(1).any(|segment| segment == programme)
}

/// Builds the journal, of the whole ledger or of one programme.
pub async fn build(registry: &Registry, programme: Option<&str>) -> Result<Table> {
    let filter = match programme {
        Some(code) => {
            let p = registry.programme(code).await?;
            let batches: Vec<i64> = read_pool!(registry.ledger(), |pool| {
                sqlx::query_scalar("SELECT id FROM batches WHERE programme_id = $1")
                    .bind(p.id)
                    .fetch_all(pool)
                    .await?
            });
            Some((p.code.as_str().to_owned(), batches.into_iter().collect()))
        }
        None => None,
    };
    let mut table = Table::new(&COLUMNS);
    let mut header = Map::new();
    header.insert(
        "programme".into(),
        programme.map_or(serde_json::Value::Null, Into::into),
    );
    let mut entries = 0u64;
    let mut stream = registry.ledger().journal();
    while let Some(entry) = stream.next().await {
        let entry = entry?;
        if let Some((code, batches)) = &filter {
            if !belongs(&entry, code, batches) {
                continue;
            }
        }
        entries += 1;
        push_entry(&mut table, &entry)?;
    }
    header.insert("entries".into(), entries.into());
    table.header = header;
    Ok(table)
}

fn belongs(entry: &PostedEntry, programme: &str, batches: &HashSet<i64>) -> bool {
    entry
        .lines
        .iter()
        .any(|l| account_of_programme(l.account.as_str(), programme))
        || entry
            .metadata
            .get("batch")
            .and_then(serde_json::Value::as_i64)
            .is_some_and(|b| batches.contains(&b))
}

fn push_entry(table: &mut Table, e: &PostedEntry) -> Result<()> {
    let metadata = canonical_json(&serde_json::Value::Object(e.metadata.clone()));
    for (i, l) in e.lines.iter().enumerate() {
        table.push(vec![
            Cell::text(e.id.to_string()),
            Cell::text(e.recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true)),
            Cell::text(e.effective_date.format("%Y-%m-%d").to_string()),
            Cell::text(e.idempotency_key.as_str()),
            Cell::text(e.description.clone()),
            Cell::opt_text(e.reverses.map(|r| r.to_string())),
            Cell::text(metadata.clone()),
            Cell::Int(i64::try_from(i + 1).unwrap_or(i64::MAX)),
            Cell::text(l.account.as_str()),
            Cell::text(l.side.as_str()),
            Cell::Money(l.amount.number()),
            Cell::text(l.amount.currency().code()),
        ])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programme_accounts_by_segment() {
        assert!(account_of_programme("funds:P1:mpca", "P1"));
        assert!(account_of_programme(
            "liabilities:entitlements:P1:hh-3",
            "P1"
        ));
        assert!(account_of_programme("funds:P1", "P1"));
        assert!(!account_of_programme("funds:P10:mpca", "P1"));
        assert!(
            !account_of_programme("P1:x", "P1"),
            "the first segment is the type"
        );
        assert!(!account_of_programme("assets:float:orange", "P1"));
    }
}
