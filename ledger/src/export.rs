//! Export of the journal in ledger / hledger journal syntax, so auditors can check the books
//! with `hledger -f FILE balance`.
//!
//! One transaction per entry, dated by its effective date, with the entry id as the code and
//! the idempotency key, recorded time, reversal link and metadata as tags in comments. Amounts
//! carry the currency code (`65000 XOF`, `-12.50 USD`); credits are negative, as hledger shows
//! them, so hledger's balances equal `cva ledger trial-balance`'s `balance` column.

use std::io::Write;

use futures::StreamExt;

use crate::account::Side;
use crate::entry::PostedEntry;
use crate::error::{LedgerError, Result};
use crate::Ledger;

/// Writes the whole journal to `out`, streaming; returns the number of entries written.
pub async fn write_ledger_journal<W: Write>(ledger: &Ledger, out: &mut W) -> Result<u64> {
    let io = |e: std::io::Error| LedgerError::Corrupt(format!("write failed: {e}"));
    writeln!(out, "; CVA disbursement ledger journal export").map_err(io)?;
    writeln!(
        out,
        "; one transaction per journal entry; credits are negative"
    )
    .map_err(io)?;
    writeln!(out, "decimal-mark .").map_err(io)?;
    writeln!(out).map_err(io)?;
    let mut n = 0;
    let mut entries = ledger.journal();
    while let Some(entry) = entries.next().await {
        write_entry(out, &entry?).map_err(io)?;
        n += 1;
    }
    out.flush().map_err(io)?;
    Ok(n)
}

/// Text safe to put in a description or tag value: no newlines, no `;` (comment start), no `,`
/// (tag separator), no doubled spaces (hledger's field separator).
fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let c = match c {
            '\n' | '\r' | '\t' => ' ',
            ';' | ',' => '/',
            c if c.is_control() => ' ',
            c => c,
        };
        if c == ' ' && out.ends_with(' ') {
            continue;
        }
        out.push(c);
    }
    out.trim().to_owned()
}

pub fn write_entry<W: Write>(out: &mut W, e: &PostedEntry) -> std::io::Result<()> {
    writeln!(
        out,
        "{} * ({}) {}",
        e.effective_date,
        e.id,
        clean(&e.description)
    )?;
    writeln!(out, "    ; key: {}", clean(e.idempotency_key.as_str()))?;
    writeln!(
        out,
        "    ; recorded: {}",
        e.recorded_at.format("%Y-%m-%dT%H:%M:%S%.6fZ")
    )?;
    if let Some(r) = e.reverses {
        writeln!(out, "    ; reverses: {r}")?;
    }
    for (k, v) in &e.metadata {
        let value = match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let key: String = k
            .chars()
            .map(|c| {
                if c.is_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        writeln!(out, "    ; meta-{}: {}", key, clean(&value))?;
    }
    for l in &e.lines {
        let number = match l.side {
            Side::Debit => l.amount.number(),
            Side::Credit => format!("-{}", l.amount.number()),
        };
        writeln!(
            out,
            "    {:<50}  {} {}",
            l.account.as_str(),
            number,
            l.amount.currency()
        )?;
    }
    writeln!(out)
}
