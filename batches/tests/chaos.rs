//! The chaos test of exactly-once payment: 1,000 payments sent to the simulator with 20 % of
//! its answers lost, 5 % answered only after our time limit, callbacks duplicated, and the
//! sender task aborted at random points (mid-request, mid-posting) and restarted, again and
//! again. At the end no entitlement is paid twice (by us or at the provider), every line is
//! completed, failed or unknown, and the ledger balances to the simulator's own books.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{ctx, households, phone, released};
use cva_batches::SendOptions;
use cva_ledger::testing::{assert_books_sound, bal};
use cva_providers::sim::{Faults, SimConfig, Simulator, TxStatus};
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;

const PAYMENTS: usize = 1000;
const FEE: i64 = 75;

/// A callback receiver that only counts (callbacks never move money; polling decides).
async fn callback_sink() -> (String, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&count);
    let app = axum::Router::new().fallback(move || {
        let c = Arc::clone(&c);
        async move {
            c.fetch_add(1, Ordering::SeqCst);
            axum::http::StatusCode::NO_CONTENT
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/callbacks", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_senders_and_lost_answers_never_pay_twice() {
    // 2 % of the households are rejected by the provider (the four rejection endings).
    let magic = ["0001", "0002", "0003", "0004"];
    let phones: Vec<String> = (0..PAYMENTS)
        .map(|n| {
            if n % 50 == 7 {
                phone(n, Some(magic[n / 50 % 4]))
            } else {
                phone(n, None)
            }
        })
        .collect();
    let (db, reg) = households(&phones).await;
    let float = 30_000_000i64;
    let s = Simulator::spawn(
        SimConfig {
            seed: 2024,
            float_balance: Decimal::from(float),
            fee: Decimal::from(FEE),
            faults: Faults::parse(
                "lost_response=0.2,timeout_after_commit=0.05,duplicate_callback=1",
            )
            .unwrap(),
            response_delay: Duration::from_millis(500),
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let (callback_url, callbacks) = callback_sink().await;
    let b = common::batches(&reg, common::config(&s.base_url, FEE, None), float).await;
    let batch = released(&b, PAYMENTS).await;
    let opts = SendOptions {
        request_timeout: Duration::from_millis(250),
        poll_interval: Duration::from_millis(5),
        settle_timeout: Duration::from_secs(20),
        max_tries: 4,
        lines_per_request: 20,
        callback_url: Some(callback_url),
    };

    // Kill the sender at random points, 40 times, then let one run to the end.
    let mut rng = rand::rngs::StdRng::seed_from_u64(99);
    let (mut finished_early, mut aborted) = (0, 0);
    for _ in 0..40 {
        let (b2, o2) = (b.clone(), opts.clone());
        let task = tokio::spawn(async move { b2.send(batch.id, &o2, &ctx("sender")).await });
        tokio::time::sleep(Duration::from_millis(rng.gen_range(1..120))).await;
        task.abort();
        match task.await {
            Ok(Ok(_)) => finished_early += 1,
            // A sender stopped by its own error (never expected here) fails the test.
            Ok(Err(e)) => panic!("a sender failed: {e}"),
            Err(_) => aborted += 1,
        }
    }
    let mut report = None;
    for _ in 0..5 {
        let r = b.send(batch.id, &opts, &ctx("sender")).await.unwrap();
        let done = r.in_flight == 0 && r.unknown == 0;
        report = Some(r);
        if done {
            break;
        }
    }
    let r = report.unwrap();
    eprintln!(
        "chaos: {} completed, {} failed, {} unknown, {} attempts, {} callbacks, {aborted} senders aborted, {finished_early} finished first",
        r.completed,
        r.failed,
        r.unknown,
        r.attempts.len(),
        callbacks.load(Ordering::SeqCst)
    );

    // Every line resolved; here every outcome could be determined in the end.
    assert_eq!(r.in_flight, 0, "{r:?}");
    assert_eq!(r.completed + r.failed + r.unknown, PAYMENTS as i64);
    assert_eq!(
        r.failed,
        (PAYMENTS / 50) as i64,
        "exactly the planted rejections fail"
    );
    assert_eq!(r.unknown, 0);
    assert_eq!(r.batch.status, "partially_completed");

    // Nothing paid twice at the provider: each reference reached it in one transaction, and
    // each attempt is one provider batch.
    let state = s.state();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for t in &state.transactions {
        *seen
            .entry(t.reference.clone().unwrap_or_default())
            .or_default() += 1;
    }
    assert_eq!(seen.len(), PAYMENTS);
    assert!(
        seen.values().all(|&n| n == 1),
        "a line reached the provider twice"
    );
    assert_eq!(state.batch_ids.len(), r.attempts.len());

    // Nothing paid twice by us: at most one completed line per entitlement, and every
    // completed line is the provider's completed transaction.
    let lines = b.lines(batch.id).await.unwrap();
    let mut per_entitlement: HashMap<i64, usize> = HashMap::new();
    for l in lines.iter().filter(|l| l.status == "completed") {
        *per_entitlement.entry(l.entitlement).or_default() += 1;
        let t = state.by_reference(&l.id.to_string()).unwrap();
        assert_eq!(t.status, TxStatus::Completed);
        assert_eq!(
            l.provider_transaction_id.as_deref(),
            Some(t.provider_transaction_id.as_str())
        );
    }
    assert!(per_entitlement.values().all(|&n| n == 1));

    // The ledger balances to the simulator's books.
    let sim_paid: Decimal = state
        .transactions
        .iter()
        .filter(|t| t.status == TxStatus::Completed)
        .map(|t| t.amount.unwrap_or_default())
        .sum();
    let sim_fees: Decimal = state.transactions.iter().map(|t| t.fee).sum();
    let ledger = reg.ledger();
    assert_eq!(
        bal(ledger, "assets:float:orange-money").await,
        state.float_balance.trunc().mantissa()
    );
    assert_eq!(
        Decimal::from(bal(ledger, "expense:fees:orange-money").await as i64),
        sim_fees
    );
    let ledger_paid: i64 = lines
        .iter()
        .filter(|l| l.status == "completed")
        .map(|l| l.amount)
        .sum();
    assert_eq!(Decimal::from(ledger_paid), sim_paid);
    assert_eq!(bal(ledger, "liabilities:in-transit:orange-money").await, 0);
    assert_books_sound(ledger).await;
    assert!(ledger.verify_audit().await.unwrap().broken.is_none());
    db.cleanup().await;
}
