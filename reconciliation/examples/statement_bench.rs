//! Times statement parsing: generates N lines in the simulator's format (default 1,000,000) and
//! reads them with the streaming reader and with the all-or-nothing `parse_all`.
//!
//! ```text
//! cargo run --release -p cva-reconciliation --example statement_bench -- 1000000
//! ```

use std::fmt::Write;
use std::time::Instant;

use cva_ledger::money::Currency;
use cva_reconciliation::{parse_all, ColumnMapping, StatementReader};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = match std::env::args().nth(1) {
        Some(arg) => arg.replace('_', "").parse()?,
        None => 1_000_000,
    };
    let xof = Currency::parse("XOF")?;
    let mapping = ColumnMapping::simulator();

    let started = Instant::now();
    let bytes = statement(n);
    println!(
        "generated {n} lines, {:.1} MB, in {:.2?}",
        bytes.len() as f64 / 1e6,
        started.elapsed()
    );

    let started = Instant::now();
    let mut reader = StatementReader::new(bytes.as_slice(), &mapping, xof)?;
    let mut total: i64 = 0;
    let mut lines = 0usize;
    for line in reader.by_ref() {
        total += line?.amount_minor;
        lines += 1;
    }
    let hash = reader.sha256().unwrap_or_default();
    report("streaming (StatementReader)", lines, bytes.len(), started);
    println!(
        "  total paid {total} XOF, sha256 {}…",
        &hash[..16.min(hash.len())]
    );

    let started = Instant::now();
    let parsed = parse_all(&bytes, &mapping, xof)?;
    report(
        "parse_all (lines kept)",
        parsed.lines.len(),
        bytes.len(),
        started,
    );
    Ok(())
}

fn report(what: &str, lines: usize, bytes: usize, started: Instant) {
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{what}: {lines} lines in {seconds:.2} s = {:.0} lines/s, {:.0} MB/s",
        lines as f64 / seconds,
        bytes as f64 / 1e6 / seconds
    );
}

/// `n` lines as `RunningSim::statement_csv` writes them.
fn statement(n: usize) -> Vec<u8> {
    let mut out = String::with_capacity(n * 110);
    out.push_str(
        "transaction_id,reference,msisdn,amount,currency,fee,status,completed_at,balance_after\n",
    );
    let mut balance: i64 = 1_000_000_000_000;
    for i in 0..n {
        let amount = 5_000 + (i as i64 % 97) * 1_000;
        let (id, amount, fee, status) = if i % 50 == 49 {
            (format!("SIMTX{:010}-REV", i - 1), -amount, 0, "reversal")
        } else {
            (format!("SIMTX{i:010}"), amount, 25, "completed")
        };
        balance -= amount + fee;
        let _ = writeln!(
            out,
            "{id},PL-{i},+2237{:07},{amount},XOF,{fee},{status},2024-03-01T10:{:02}:{:02}.{:06}+00:00,{balance}",
            i % 10_000_000,
            (i / 60) % 60,
            i % 60,
            i % 1_000_000,
        );
    }
    out.into_bytes()
}
