//! The trial balance: every account's debit and credit totals and its balance (debit −
//! credit, the sign hledger shows), from [`Ledger::trial_balance`]; the same columns as
//! `cva ledger trial-balance --format csv` (`account`, `currency`, `debit`, `credit`,
//! `balance`). After the accounts (by currency, then code, compared byte by byte) come one
//! `total CUR` row per currency, as in that command's JSON and table forms: its balance is
//! zero when the books balance. The header says whether they do (`balanced`).

use cva_ledger::Ledger;
use serde_json::Map;

use crate::error::Result;
use crate::model::{Cell, Table};
use crate::money::format;

pub const COLUMNS: [&str; 5] = ["account", "currency", "debit", "credit", "balance"];

/// Builds the trial balance of the whole ledger.
pub async fn build(ledger: &Ledger) -> Result<Table> {
    let tb = ledger.trial_balance().await?;
    let mut accounts: Vec<_> = tb.accounts.iter().collect();
    accounts.sort_by(|a, b| {
        (a.currency.code(), a.code.as_str().as_bytes())
            .cmp(&(b.currency.code(), b.code.as_str().as_bytes()))
    });
    let mut table = Table::new(&COLUMNS);
    let mut header = Map::new();
    header.insert("balanced".into(), tb.is_balanced().into());
    header.insert("accounts".into(), accounts.len().into());
    table.header = header;
    for a in accounts {
        table.push(vec![
            Cell::text(a.code.as_str()),
            Cell::text(a.currency.code()),
            Cell::Money(format(a.debits.into(), a.currency)?),
            Cell::Money(format(a.credits.into(), a.currency)?),
            Cell::Money(format(a.signed_balance(), a.currency)?),
        ])?;
    }
    for t in &tb.totals {
        table.push(vec![
            Cell::text(format!("total {}", t.currency)),
            Cell::text(t.currency.code()),
            Cell::Money(format(t.debits, t.currency)?),
            Cell::Money(format(t.credits, t.currency)?),
            Cell::Money(format(t.debits - t.credits, t.currency)?),
        ])?;
    }
    Ok(table)
}
