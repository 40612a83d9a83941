//! Concurrent writers: many tasks post against shared accounts, one of them a
//! `must_not_go_negative` float with exactly enough for a known number of payments. Final
//! balances must be exact, the float never negative, and no deadlock or serialization error
//! may reach a caller. Runs on both backends; the PostgreSQL run is the one that matters.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cva_ledger::account::Side;
use cva_ledger::committer::Committer;
use cva_ledger::testing::*;
use cva_ledger::LedgerError;

const FLOAT: &str = "assets:float:orange";
const SHARED: [&str; 3] = ["expense:shared:a", "expense:shared:b", "expense:shared:c"];
const TASKS: u64 = 16;
const PER_TASK: u64 = 40;
const PAYMENT: i64 = 5;
const FUNDED_PAYMENTS: u64 = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_keep_exact_balances_and_the_float_never_negative() {
    let db = TestDb::with_pool(12).await;
    let ledger = db.ledger.clone();
    ledger
        .post(transfer(
            "seed",
            FLOAT,
            "income:seed",
            PAYMENT * FUNDED_PAYMENTS as i64,
        ))
        .await
        .unwrap();
    let committer = Committer::start(ledger.clone(), 64);
    let paid = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));

    let mut handles = Vec::new();
    for t in 0..TASKS {
        let ledger = ledger.clone();
        let committer = committer.clone();
        let paid = paid.clone();
        let refused = refused.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..PER_TASK {
                // A payment out of the hot float: via group commit for half the tasks, direct
                // row-locking posts for the other half.
                let pay = transfer(
                    &format!("pay-{t}-{i}"),
                    &format!("expense:payouts:t{t}"),
                    FLOAT,
                    PAYMENT,
                );
                let r = if t % 2 == 0 {
                    committer.post(pay).await
                } else {
                    ledger.post(pay).await
                };
                match r {
                    Ok(_) => paid.fetch_add(1, Ordering::SeqCst),
                    Err(LedgerError::InsufficientBalance { .. }) => {
                        refused.fetch_add(1, Ordering::SeqCst)
                    }
                    Err(e) => panic!("task {t} payment {i}: {e:?}"),
                };
                // A three-account rotation whose lines come in a different order per task, the
                // classic recipe for deadlocks under row locking.
                let (a, b, c) = (
                    SHARED[(t % 3) as usize],
                    SHARED[((t + 1) % 3) as usize],
                    SHARED[((t + 2) % 3) as usize],
                );
                let rot = entry(
                    &format!("rot-{t}-{i}"),
                    &[
                        (a, Side::Debit, 3, xof()),
                        (b, Side::Credit, 2, xof()),
                        (c, Side::Credit, 1, xof()),
                    ],
                );
                let r = if t % 3 == 0 {
                    committer.post(rot).await
                } else {
                    ledger.post(rot).await
                };
                if let Err(e) = r {
                    panic!("task {t} rotation {i}: {e:?}");
                }
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    assert_eq!(paid.load(Ordering::SeqCst), FUNDED_PAYMENTS);
    assert_eq!(
        refused.load(Ordering::SeqCst),
        TASKS * PER_TASK - FUNDED_PAYMENTS
    );
    assert_eq!(bal(&ledger, FLOAT).await, 0);
    // Each task's rotation debits a by 3, credits b by 2 and c by 1; summed over tasks.
    let mut expect = [0i128; 3];
    for t in 0..TASKS {
        expect[(t % 3) as usize] += 3 * PER_TASK as i128;
        expect[((t + 1) % 3) as usize] -= 2 * PER_TASK as i128;
        expect[((t + 2) % 3) as usize] -= PER_TASK as i128;
    }
    for (code, want) in SHARED.iter().zip(expect) {
        assert_eq!(bal(&ledger, code).await, want, "{code}");
    }
    assert_eq!(
        entry_count(&ledger).await,
        1 + FUNDED_PAYMENTS + TASKS * PER_TASK
    );
    assert_books_sound(&ledger).await;
    db.cleanup().await;
}
