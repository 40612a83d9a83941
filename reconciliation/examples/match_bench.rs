//! Times matching: generates N payments and about N statement lines (default 1,000,000 each)
//! with a few thousand planted exceptions of every category, reconciles them and prints the
//! time, items/s and the summary.
//!
//! ```text
//! cargo run --release -p cva-reconciliation --example match_bench -- 1000000
//! ```

use std::time::Instant;

use chrono::{Duration, TimeZone, Utc};
use cva_ledger::money::Currency;
use cva_reconciliation::{
    reconcile, MatchOptions, Payment, PaymentStatus, StatementLine, StatementStatus,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = match std::env::args().nth(1) {
        Some(arg) => arg.replace('_', "").parse()?,
        None => 1_000_000,
    };
    let xof = Currency::parse("XOF")?;
    let t0 = Utc
        .with_ymd_and_hms(2024, 3, 1, 0, 0, 0)
        .single()
        .ok_or("bad date")?;

    let started = Instant::now();
    let mut payments = Vec::with_capacity(n);
    let mut statement: Vec<StatementLine> = Vec::with_capacity(n + n / 100);
    let mut row = 1usize;
    let mut push = |statement: &mut Vec<StatementLine>, mut s: StatementLine| {
        row += 1;
        s.row = row;
        statement.push(s);
    };
    for i in 0..n {
        let line = i as i64 + 1;
        // One planted exception of each kind per 500 lines (2,000 of each per million).
        let kind = i % 500;
        let at = t0 + Duration::seconds((i as i64 * 37) % (28 * 86_400));
        let amount = 10_000 + (i as i64 % 50) * 500;
        let key = format!("2237{:07}", i % 400_000);
        let tx = format!("TX{line:09}");
        let by_tx = !matches!(kind, 8 | 9);
        payments.push(Payment {
            line,
            provider_tx: by_tx.then(|| tx.clone()),
            payee_key: Some(key.clone()),
            amount_minor: amount,
            fee_minor: 100,
            currency: "XOF".into(),
            status: PaymentStatus::Completed,
            at,
        });
        let base = StatementLine {
            row: 0,
            transaction_id: tx.clone(),
            reference: (kind != 9).then(|| line.to_string()),
            msisdn: Some(format!("+{key}")),
            amount_minor: amount,
            fee_minor: 100,
            currency: xof,
            status: StatementStatus::Completed,
            at: at + Duration::minutes(3),
            balance_after_minor: None,
        };
        match kind {
            1 => push(
                &mut statement,
                StatementLine {
                    amount_minor: amount + 100,
                    ..base
                },
            ),
            2 => push(
                &mut statement,
                StatementLine {
                    fee_minor: 150,
                    ..base
                },
            ),
            3 => push(
                &mut statement,
                StatementLine {
                    status: StatementStatus::Failed,
                    ..base
                },
            ),
            4 => {} // missing
            5 => {
                push(&mut statement, base.clone());
                push(
                    &mut statement,
                    StatementLine {
                        transaction_id: format!("UX{line:09}"),
                        reference: None,
                        msisdn: None,
                        ..base
                    },
                );
            }
            6 => {
                push(&mut statement, base.clone());
                push(&mut statement, base);
            }
            7 => {
                push(&mut statement, base.clone());
                push(
                    &mut statement,
                    StatementLine {
                        transaction_id: format!("{tx}-REV"),
                        amount_minor: -amount,
                        fee_minor: 0,
                        status: StatementStatus::Reversal,
                        at: base.at + Duration::hours(5),
                        ..base
                    },
                );
            }
            9 => push(
                &mut statement,
                StatementLine {
                    transaction_id: format!("FB{line:09}"),
                    ..base
                },
            ),
            _ => push(&mut statement, base),
        }
    }
    println!(
        "generated {} payments and {} statement lines in {:.2?}",
        payments.len(),
        statement.len(),
        started.elapsed()
    );

    let started = Instant::now();
    let r = reconcile(&payments, &statement, &MatchOptions::default());
    let secs = started.elapsed().as_secs_f64();
    println!(
        "reconciled in {secs:.2} s: {} items, {:.0} items/s, {:.0} (payments + lines)/s",
        r.items.len(),
        r.items.len() as f64 / secs,
        (payments.len() + statement.len()) as f64 / secs
    );
    println!("{:#?}", r.summary);
    Ok(())
}
