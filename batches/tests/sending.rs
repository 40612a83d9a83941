//! Sending batches to the real provider simulator over loopback HTTP, on a real database
//! (SQLite, or PostgreSQL with `CVA_TEST_DATABASE_URL`): every rejection the simulator can
//! give, lost responses, timeouts after commit, 503s and a down heartbeat, bad credentials,
//! batches stuck pending, float running out part way, a later reversal, two senders at once,
//! re-issue of failed lines. After each, the ledger is checked against the simulator's own
//! books: float equal, in-transit equal to what is unresolved, nobody paid twice.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{ctx, households, phone, released, AMOUNT, P};
use cva_batches::{Batches, SendOptions, Step};
use cva_ledger::testing::{assert_books_sound, bal};
use cva_providers::sim::{Faults, RunningSim, SimConfig, Simulator, TxStatus};
use cva_registry::{Registry, RegistryError};
use rust_decimal::Decimal;

fn fast() -> SendOptions {
    SendOptions {
        request_timeout: Duration::from_millis(400),
        poll_interval: Duration::from_millis(10),
        settle_timeout: Duration::from_secs(3),
        max_tries: 3,
        lines_per_request: 5000,
        callback_url: None,
    }
}

async fn sim(config: SimConfig) -> RunningSim {
    Simulator::spawn(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn sim_config(float: i64, fee: i64, faults: &str) -> SimConfig {
    SimConfig {
        seed: 7,
        float_balance: Decimal::from(float),
        fee: Decimal::from(fee),
        faults: Faults::parse(faults).unwrap(),
        response_delay: Duration::from_millis(1500),
        ..SimConfig::default()
    }
}

/// The ledger agrees with the simulator and with the batch lines: float equal to what the
/// simulator holds, in transit equal to the unresolved lines, fees equal to the completed
/// lines', every household owed its entitlement less what is paid or in flight, and no
/// reference paid twice at the provider.
async fn check_books(reg: &Registry, b: &Batches, batch: i64, s: &RunningSim) {
    let ledger = reg.ledger();
    assert_books_sound(ledger).await;
    let state = s.state();
    let sim_float = i64::try_from(state.float_balance.trunc().mantissa()).unwrap();
    assert_eq!(
        bal(ledger, "assets:float:orange-money").await,
        i128::from(sim_float),
        "ledger float = simulator float"
    );
    let mut paid: HashMap<&str, usize> = HashMap::new();
    for t in &state.transactions {
        if matches!(t.status, TxStatus::Completed | TxStatus::Reversed) {
            *paid
                .entry(t.reference.as_deref().unwrap_or(""))
                .or_default() += 1;
        }
    }
    assert!(
        paid.values().all(|&n| n == 1),
        "a reference paid twice: {paid:?}"
    );
    let lines = b.lines(batch).await.unwrap();
    let open: i64 = lines
        .iter()
        .filter(|l| matches!(l.status.as_str(), "in_flight" | "unknown"))
        .map(|l| l.amount)
        .sum();
    assert_eq!(
        bal(ledger, "liabilities:in-transit:orange-money").await,
        i128::from(open)
    );
    for l in &lines {
        let owed = bal(
            ledger,
            &format!("liabilities:entitlements:{P}:hh-{}", l.household),
        )
        .await;
        let expect = if l.status == "failed" { AMOUNT } else { 0 };
        assert_eq!(
            owed,
            i128::from(expect),
            "household {} ({})",
            l.household,
            l.status
        );
        if l.status == "completed" {
            let t = state.by_reference(&l.id.to_string()).unwrap();
            assert_eq!(t.status, TxStatus::Completed);
            assert_eq!(
                l.provider_transaction_id.as_deref(),
                Some(t.provider_transaction_id.as_str())
            );
        }
    }
}

#[tokio::test]
async fn a_batch_is_paid_rejections_fail_back_to_households_and_a_reversal_is_reissued() {
    let magic = ["0001", "0002", "0003", "0004", "0006"];
    let mut phones: Vec<String> = (0..4).map(|n| phone(n, None)).collect();
    phones.extend(magic.iter().enumerate().map(|(i, m)| phone(i, Some(m))));
    let (db, reg) = households(&phones).await;
    let s = sim(SimConfig {
        reversal_delay: Duration::from_secs(2),
        ..sim_config(1_000_000, 100, "")
    })
    .await;
    let b = common::batches(&reg, common::config(&s.base_url, 100, None), 1_000_000).await;
    let batch = released(&b, 100).await;
    assert_eq!(
        bal(reg.ledger(), "liabilities:in-transit:orange-money").await,
        9 * 20_000
    );

    let r = b.send(batch.id, &fast(), &ctx("cy")).await.unwrap();
    assert_eq!(
        (r.completed, r.failed, r.unknown, r.in_flight),
        (5, 4, 0, 0),
        "{r:?}"
    );
    assert_eq!(r.batch.status, "partially_completed");
    assert_eq!(r.attempts.len(), 1);
    assert_eq!(r.attempts[0].status, "settled");
    let mut codes: Vec<String> = b
        .lines(batch.id)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|l| l.failure_code)
        .collect();
    codes.sort();
    assert_eq!(
        codes,
        [
            "account_not_registered",
            "invalid_msisdn",
            "payee_blocked",
            "payee_limit_exceeded"
        ]
    );
    assert_eq!(
        bal(reg.ledger(), "expense:fees:orange-money").await,
        5 * 100
    );
    check_books(&reg, &b, batch.id, &s).await;

    // Sending again changes nothing and sends nothing.
    let again = b.send(batch.id, &fast(), &ctx("cy")).await.unwrap();
    assert_eq!((again.completed, again.failed), (5, 4));
    assert_eq!(s.state().batch_ids.len(), 1);

    // The …0006 payment is reversed by the provider a little later: asking the provider about
    // the completed lines finds it, once.
    assert!(b
        .check_reversals(batch.id, &fast(), &ctx("cy"))
        .await
        .unwrap()
        .is_empty());
    let mut reversed = Vec::new();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        reversed = b
            .check_reversals(batch.id, &fast(), &ctx("cy"))
            .await
            .unwrap();
        if !reversed.is_empty() {
            break;
        }
    }
    assert_eq!(reversed.len(), 1);
    let line = reversed[0];
    assert_eq!(
        s.state().by_reference(&line.to_string()).unwrap().status,
        TxStatus::Reversed
    );
    assert!(b
        .check_reversals(batch.id, &fast(), &ctx("cy"))
        .await
        .unwrap()
        .is_empty());
    let e = b.record_reversal(line, &ctx("cy")).await.unwrap_err();
    assert!(matches!(e, RegistryError::Conflict(_)), "{e}");
    check_books(&reg, &b, batch.id, &s).await;

    // The four rejected and the reversed entitlement go into a linked follow-up batch, once.
    let follow = b.reissue(batch.id, &ctx("preparer")).await.unwrap();
    assert_eq!((follow.line_count, follow.total), (5, 5 * AMOUNT));
    assert_eq!(follow.follow_up_of, Some(batch.id));
    let e = b.reissue(batch.id, &ctx("preparer")).await.unwrap_err();
    assert!(matches!(e, RegistryError::Conflict(_)), "{e}");
    db.cleanup().await;
}

#[tokio::test]
async fn lost_responses_and_timeouts_after_commit_are_asked_about_never_resent() {
    for faults in ["lost_response=1", "timeout_after_commit=1"] {
        let phones: Vec<String> = (0..3).map(|n| phone(n, None)).collect();
        let (db, reg) = households(&phones).await;
        let s = sim(sim_config(1_000_000, 0, faults)).await;
        let b = common::batches(&reg, common::config(&s.base_url, 0, None), 1_000_000).await;
        let batch = released(&b, 100).await;
        let r = b.send(batch.id, &fast(), &ctx("cy")).await.unwrap();
        assert_eq!(
            (r.completed, r.failed, r.unknown),
            (3, 0, 0),
            "{faults}: {r:?}"
        );
        assert_eq!(r.batch.status, "completed");
        assert_eq!(s.state().batch_ids.len(), 1, "{faults}: sent once");
        assert_eq!(r.attempts[0].tries, 1, "{faults}: asked, not re-sent");
        check_books(&reg, &b, batch.id, &s).await;
        db.cleanup().await;
    }
}

#[tokio::test]
async fn a_provider_down_takes_nothing_and_503s_leave_the_attempt_unknown() {
    let phones: Vec<String> = (0..2).map(|n| phone(n, None)).collect();
    let (db, reg) = households(&phones).await;
    // Heartbeat "unavailable": refused before anything is recorded.
    let s = sim(sim_config(1_000_000, 0, "status_503=1")).await;
    let b = common::batches(&reg, common::config(&s.base_url, 0, None), 1_000_000).await;
    let batch = released(&b, 100).await;
    let e = b.send(batch.id, &fast(), &ctx("cy")).await.unwrap_err();
    assert!(matches!(e, RegistryError::Provider(_)), "{e}");
    assert_eq!(b.batch(batch.id).await.unwrap().status, "released");
    assert!(b.attempts(batch.id).await.unwrap().is_empty());
    s.shutdown().await;

    // Degraded (half the POSTs answer 503): sent again with the same correlation id until
    // taken, and paid once.
    let s = sim(sim_config(1_000_000, 0, "status_503=0.5")).await;
    let b = common::batches(&reg, common::config(&s.base_url, 0, None), 0).await;
    let r = b
        .send(
            batch.id,
            &SendOptions {
                max_tries: 10,
                ..fast()
            },
            &ctx("cy"),
        )
        .await
        .unwrap();
    assert_eq!((r.completed, r.unknown), (2, 0), "{r:?}");
    assert_eq!(s.state().batch_ids.len(), 1);
    check_books(&reg, &b, batch.id, &s).await;
    db.cleanup().await;
}

#[tokio::test]
async fn every_answer_lost_leaves_lines_unknown_until_asked_again() {
    let phones: Vec<String> = (0..2).map(|n| phone(n, None)).collect();
    let (db, reg) = households(&phones).await;
    // Nothing listens here: no answer at all.
    let b = common::batches(
        &reg,
        common::config("http://127.0.0.1:9", 0, None),
        1_000_000,
    )
    .await;
    let batch = released(&b, 100).await;
    // The heartbeat fails too (logged); the attempt is recorded, tried, then left unknown.
    let r = b.send(batch.id, &fast(), &ctx("cy")).await.unwrap();
    assert_eq!((r.completed, r.failed, r.unknown), (0, 0, 2), "{r:?}");
    assert_eq!(r.attempts[0].status, "unknown");
    assert_eq!(r.batch.status, "sending");
    // Money stays in transit while the outcome is unknown.
    assert_eq!(
        bal(reg.ledger(), "liabilities:in-transit:orange-money").await,
        2 * 20_000
    );

    // The provider comes back: the next send asks it first, then sends with the same id.
    let s = sim(sim_config(1_000_000, 0, "")).await;
    let b = common::batches(&reg, common::config(&s.base_url, 0, None), 0).await;
    let r = b.send(batch.id, &fast(), &ctx("cy")).await.unwrap();
    assert_eq!((r.completed, r.unknown), (2, 0), "{r:?}");
    assert_eq!(r.batch.status, "completed");
    check_books(&reg, &b, batch.id, &s).await;
    db.cleanup().await;
}

#[tokio::test]
async fn wrong_credentials_stop_the_send_and_nothing_fails() {
    let phones: Vec<String> = (0..2).map(|n| phone(n, None)).collect();
    let (db, reg) = households(&phones).await;
    let s = sim(SimConfig {
        api_key: Some("right-token".into()),
        ..sim_config(1_000_000, 0, "")
    })
    .await;
    std::env::set_var("CVA_TEST_SENDING_TOKEN", "wrong-token");
    let cfg = common::config(&s.base_url, 0, Some("CVA_TEST_SENDING_TOKEN"));
    let b = common::batches(&reg, cfg.clone(), 1_000_000).await;
    let batch = released(&b, 100).await;
    let e = b.send(batch.id, &fast(), &ctx("cy")).await.unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, RegistryError::Provider(_)), "{text}");
    assert!(
        !text.contains("wrong-token"),
        "the secret is never in an error: {text}"
    );
    assert_eq!(b.line_counts(batch.id).await.unwrap(), (0, 0, 0, 2));
    assert!(s.state().batch_ids.is_empty());

    std::env::set_var("CVA_TEST_SENDING_TOKEN", "right-token");
    let r = b.send(batch.id, &fast(), &ctx("cy")).await.unwrap();
    assert_eq!(r.completed, 2, "{r:?}");
    check_books(&reg, &b, batch.id, &s).await;
    db.cleanup().await;
}

#[tokio::test]
async fn a_stuck_payment_stays_unknown_and_float_running_out_fails_the_rest() {
    // Float for two payments of four (fee 100 each): the 3rd and 4th are refused by the
    // provider; the …0005 line stays pending at the provider.
    let mut phones: Vec<String> = (0..4).map(|n| phone(n, None)).collect();
    phones.push(phone(0, Some("0005")));
    let (db, reg) = households(&phones).await;
    let s = sim(sim_config(2 * 20_100 + 50, 100, "")).await;
    let b = common::batches(
        &reg,
        common::config(&s.base_url, 100, None),
        2 * 20_100 + 50,
    )
    .await;
    // The ledger float only covers two, so release is refused on the float check unless the
    // ledger believes more: fund it enough for the release, the provider holds less.
    b.fund_float(
        "orange-money",
        "100000",
        "assets:bank",
        "TOPUP-2",
        &ctx("finance"),
    )
    .await
    .unwrap();
    let batch = released(&b, 100).await;
    let opts = SendOptions {
        settle_timeout: Duration::from_millis(500),
        ..fast()
    };
    let r = b.send(batch.id, &opts, &ctx("cy")).await.unwrap();
    assert_eq!((r.completed, r.failed, r.unknown), (2, 2, 1), "{r:?}");
    assert_eq!(
        r.batch.status, "sending",
        "an unknown line keeps the batch open"
    );
    let lines = b.lines(batch.id).await.unwrap();
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.failure_code.as_deref() == Some("insufficient_float"))
            .count(),
        2
    );
    // The ledger float is what we funded less what was paid; the provider's statement will
    // show the difference (reconciliation); here only what moved is compared.
    let paid = 2 * 20_100;
    assert_eq!(
        bal(reg.ledger(), "assets:float:orange-money").await,
        i128::from(2 * 20_100 + 50 + 100_000 - paid)
    );
    assert_eq!(
        bal(reg.ledger(), "liabilities:in-transit:orange-money").await,
        20_000
    );
    // Asking again does not resolve it while the provider still holds it pending.
    let r = b.send(batch.id, &opts, &ctx("cy")).await.unwrap();
    assert_eq!(r.unknown, 1);
    assert_eq!(s.state().batch_ids.len(), 1);
    db.cleanup().await;
}

#[tokio::test]
async fn two_senders_at_once_pay_once() {
    let phones: Vec<String> = (0..6).map(|n| phone(n, None)).collect();
    let (db, reg) = households(&phones).await;
    let s = sim(sim_config(1_000_000, 50, "")).await;
    let b = common::batches(&reg, common::config(&s.base_url, 50, None), 1_000_000).await;
    let batch = released(&b, 100).await;
    let opts = SendOptions {
        lines_per_request: 2,
        ..fast()
    };
    let (cy, dee) = (ctx("cy"), ctx("dee"));
    let (r1, r2) = tokio::join!(b.send(batch.id, &opts, &cy), b.send(batch.id, &opts, &dee));
    // One of them may stop on a conflict with the other; neither pays twice.
    let _ = (r1, r2);
    let r = b.send(batch.id, &opts, &ctx("cy")).await.unwrap();
    assert_eq!((r.completed, r.failed, r.unknown), (6, 0, 0), "{r:?}");
    assert_eq!(
        s.state().batch_ids.len(),
        3,
        "three attempts, each sent once"
    );
    check_books(&reg, &b, batch.id, &s).await;
    db.cleanup().await;
}

#[tokio::test]
async fn sign_offs_and_float_are_required_before_anything_is_sent() {
    let phones: Vec<String> = (0..2).map(|n| phone(n, None)).collect();
    let (db, reg) = households(&phones).await;
    let s = sim(sim_config(1_000_000, 0, "")).await;
    let b = common::batches(&reg, common::config(&s.base_url, 0, None), 0).await;
    let made = b
        .create(
            &cva_batches::Filters {
                programme: P.into(),
                ..Default::default()
            },
            &ctx("preparer"),
        )
        .await
        .unwrap();
    let id = made.batches[0].id;
    let e = b.send(id, &fast(), &ctx("cy")).await.unwrap_err();
    assert!(
        matches!(e, RegistryError::Conflict(_)),
        "a draft is not sent: {e}"
    );
    b.submit(id, &ctx("preparer")).await.unwrap();
    b.sign(id, Step::Approve, &ctx("ana")).await.unwrap();
    // Missing authorisation: release refused, nothing changed.
    let e = b.sign(id, Step::Release, &ctx("cy")).await.unwrap_err();
    assert!(matches!(e, RegistryError::Conflict(_)), "{e}");
    assert_eq!(b.batch(id).await.unwrap().status, "approved");
    assert_eq!(
        bal(reg.ledger(), "liabilities:in-transit:orange-money").await,
        0
    );
    b.sign(id, Step::Authorise, &ctx("bo")).await.unwrap();
    let e = b.send(id, &fast(), &ctx("cy")).await.unwrap_err();
    assert!(matches!(e, RegistryError::Conflict(_)), "not released: {e}");
    // No float: release refused, nothing changed.
    let e = b.sign(id, Step::Release, &ctx("cy")).await.unwrap_err();
    assert!(e.to_string().contains("float"), "{e}");
    assert_eq!(b.batch(id).await.unwrap().status, "authorised");
    assert_eq!(
        bal(reg.ledger(), "liabilities:in-transit:orange-money").await,
        0
    );
    assert!(s.state().batch_ids.is_empty());
    db.cleanup().await;
}

#[tokio::test]
async fn a_provider_without_float_fails_the_whole_batch_back_to_the_households() {
    let phones: Vec<String> = (0..3).map(|n| phone(n, None)).collect();
    let (db, reg) = households(&phones).await;
    let s = sim(sim_config(0, 100, "")).await;
    // Our books believe the float is funded; the provider's is empty (its statement will show
    // it): every payment is refused, the money goes back to the households.
    let b = common::batches(&reg, common::config(&s.base_url, 100, None), 1_000_000).await;
    let batch = released(&b, 100).await;
    let r = b.send(batch.id, &fast(), &ctx("cy")).await.unwrap();
    assert_eq!((r.completed, r.failed, r.unknown), (0, 3, 0), "{r:?}");
    assert_eq!(r.batch.status, "failed");
    let lines = b.lines(batch.id).await.unwrap();
    assert!(lines
        .iter()
        .all(|l| l.failure_code.as_deref() == Some("insufficient_float")));
    assert_eq!(
        bal(reg.ledger(), "liabilities:in-transit:orange-money").await,
        0
    );
    assert_eq!(
        bal(reg.ledger(), "assets:float:orange-money").await,
        1_000_000
    );
    assert_eq!(bal(reg.ledger(), "expense:fees:orange-money").await, 0);
    for l in &lines {
        let owed = bal(
            reg.ledger(),
            &format!("liabilities:entitlements:{P}:hh-{}", l.household),
        )
        .await;
        assert_eq!(owed, i128::from(AMOUNT));
    }
    let follow = b.reissue(batch.id, &ctx("preparer")).await.unwrap();
    assert_eq!(follow.line_count, 3);
    assert_books_sound(reg.ledger()).await;
    db.cleanup().await;
}

#[tokio::test]
async fn a_request_the_provider_already_has_is_answered_duplicate_and_not_paid_again() {
    let phones: Vec<String> = (0..2).map(|n| phone(n, None)).collect();
    let (db, reg) = households(&phones).await;
    let s = sim(sim_config(1_000_000, 0, "")).await;
    // A first sender recorded the attempt and reached the provider, but nothing came back
    // (here: no provider at the configured URL); the request reaches the simulator anyway.
    let dead = common::batches(
        &reg,
        common::config("http://127.0.0.1:9", 0, None),
        1_000_000,
    )
    .await;
    let batch = released(&dead, 100).await;
    let r = dead.send(batch.id, &fast(), &ctx("cy")).await.unwrap();
    assert_eq!(r.attempts[0].status, "unknown");
    let attempt = &r.attempts[0];
    let provider = dead.config().provider("orange-money").unwrap().clone();
    let request = dead
        .request_for(&batch, &provider, attempt.id)
        .await
        .unwrap();
    let client =
        cva_batches::mmapi::MmapiClient::new(&s.base_url, None, Duration::from_secs(2)).unwrap();
    let cid = uuid::Uuid::parse_str(&attempt.correlation_id).unwrap();
    client.post_batch(cid, &request, None).await.unwrap();
    // The same request again is refused as a duplicate by the provider.
    let e = client.post_batch(cid, &request, None).await.unwrap_err();
    assert_eq!(e.code(), Some("duplicateRequest"));
    // A state where the sender believes it never tried (as after a lost write of its try):
    // it posts, gets `duplicateRequest`, asks where the batch is, and settles it, paying once.
    db.raw(&["UPDATE payment_attempts SET tries = 0, status = 'recorded'"])
        .await
        .unwrap();
    let b = common::batches(&reg, common::config(&s.base_url, 0, None), 0).await;
    let r = b.send(batch.id, &fast(), &ctx("cy")).await.unwrap();
    assert_eq!((r.completed, r.unknown), (2, 0), "{r:?}");
    assert_eq!(s.state().batch_ids.len(), 1, "one provider batch");
    assert_eq!(s.state().transactions.len(), 2, "each line once");
    check_books(&reg, &b, batch.id, &s).await;
    db.cleanup().await;
}

/// A provider that refuses every batch request as a whole (400 `validation`).
async fn refusing_provider() -> String {
    let app = axum::Router::new()
        .route(
            "/heartbeat",
            axum::routing::get(|| async {
                axum::Json(serde_json::json!({"serviceStatus": "available"}))
            }),
        )
        .fallback(|| async {
            (
                axum::http::StatusCode::BAD_REQUEST,
                axum::Json(serde_json::json!({"errorCategory": "validation",
                    "errorCode": "formatError", "errorDescription": "batch refused"})),
            )
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

#[tokio::test]
async fn a_request_refused_as_a_whole_fails_its_lines_as_request_refused() {
    let phones: Vec<String> = (0..2).map(|n| phone(n, None)).collect();
    let (db, reg) = households(&phones).await;
    let url = refusing_provider().await;
    let b = common::batches(&reg, common::config(&url, 0, None), 1_000_000).await;
    let batch = released(&b, 100).await;
    let r = b.send(batch.id, &fast(), &ctx("cy")).await.unwrap();
    assert_eq!((r.completed, r.failed, r.unknown), (0, 2, 0), "{r:?}");
    assert_eq!(r.attempts[0].status, "refused");
    assert_eq!(r.attempts[0].tries, 1, "a refusal is not retried");
    assert_eq!(r.batch.status, "failed");
    for l in b.lines(batch.id).await.unwrap() {
        assert_eq!(l.failure_code.as_deref(), Some("request_refused"));
    }
    assert_eq!(
        bal(reg.ledger(), "liabilities:in-transit:orange-money").await,
        0
    );
    assert_books_sound(reg.ledger()).await;
    db.cleanup().await;
}
