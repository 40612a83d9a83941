//! A programme paid for real, shared by the report tests: households enrolled and verified
//! with the batches crate's fixtures, one entitlement cancelled, two households moved to a
//! second region, two exchange rates recorded, a batch sent to the real provider simulator
//! over loopback HTTP (four rejections: phones ending 0001–0004; one later reversal: 0006),
//! and the failed lines re-issued in a follow-up batch that is released but not sent.

#![allow(clippy::unwrap_used, dead_code, unused_imports)]

use std::time::Duration;

use chrono::NaiveDate;
use cva_batches::testing::{self, ctx, phone, AMOUNT, P};
use cva_batches::{Batches, SendOptions, Step};
use cva_ledger::testing::TestDb;
use cva_providers::sim::{RunningSim, SimConfig, Simulator};
use cva_registry::Registry;
use rust_decimal::Decimal;

pub use cva_batches::testing::{AMOUNT as ENTITLEMENT, P as PROGRAMME};

/// Flat fee of the provider (configuration and simulator agree).
pub const FEE: i64 = 100;
/// Households enrolled (the last one's entitlement is cancelled).
pub const HOUSEHOLDS: usize = 10;
/// Rate recorded for 2024-01-01: 20,000 XOF × 0.00152425 = 30.485 EUR, a half cent.
pub const RATE_JAN: &str = "0.00152425";
/// Rate recorded for 2024-06-01.
pub const RATE_JUN: &str = "0.0015";

pub fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

#[derive(Debug)]
pub struct Scenario {
    pub db: TestDb,
    pub reg: Registry,
    pub batches: Batches,
    pub sim: RunningSim,
    /// The batch sent.
    pub first: i64,
    /// The follow-up batch (released, not sent).
    pub follow_up: i64,
    /// Households moved to region ML06.
    pub moved: Vec<i64>,
    /// The household whose entitlement was cancelled.
    pub cancelled: i64,
}

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

/// Builds the scenario on a fresh database (SQLite, or PostgreSQL with
/// `CVA_TEST_DATABASE_URL`).
pub async fn scenario() -> Scenario {
    let magic = ["0001", "0002", "0003", "0004", "0006"];
    let mut phones: Vec<String> = (0..4).map(|n| phone(n, None)).collect();
    phones.extend(magic.iter().enumerate().map(|(i, m)| phone(i, Some(m))));
    phones.push(phone(9, None));
    assert_eq!(phones.len(), HOUSEHOLDS);
    let db = TestDb::new().await;
    let reg = testing::registry(db.ledger.clone());
    testing::entitlements(&reg, &phones).await;

    // Household ids in enrolment order.
    let q = cva_registry::households::HouseholdQuery {
        limit: 100,
        ..Default::default()
    };
    let ids: Vec<i64> = reg
        .households(P, &q, cva_registry::households::Reveal::Masked)
        .await
        .unwrap()
        .iter()
        .map(|h| h.id)
        .collect();
    assert_eq!(ids.len(), HOUSEHOLDS);

    // The last household's entitlement is cancelled before any batch.
    let cancelled = ids[HOUSEHOLDS - 1];
    let ent = reg.entitlements(cancelled).await.unwrap();
    reg.cancel_entitlement(ent[0].id, "left the area", &ctx("officer"))
        .await
        .unwrap();

    // Two households live in another region (one paid normally, one rejected: 0001 is n=4).
    let moved = vec![ids[0], ids[4]];
    for id in &moved {
        db.raw(&[&format!(
            "UPDATE households SET region = 'ML06' WHERE id = {id}"
        )])
        .await
        .unwrap();
    }

    let admin = ctx("admin");
    reg.add_rate(P, day(2024, 1, 1), RATE_JAN, "BCEAO fixing", &admin)
        .await
        .unwrap();
    reg.add_rate(P, day(2024, 6, 1), RATE_JUN, "manual", &admin)
        .await
        .unwrap();

    let sim = Simulator::spawn(
        SimConfig {
            seed: 7,
            float_balance: Decimal::from(1_000_000),
            fee: Decimal::from(FEE),
            reversal_delay: Duration::from_millis(300),
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let b = testing::batches(&reg, testing::config(&sim.base_url, FEE, None), 1_000_000).await;
    let first = testing::released(&b, 100).await.id;
    let r = b.send(first, &fast(), &ctx("cy")).await.unwrap();
    assert_eq!((r.completed, r.failed, r.unknown), (5, 4, 0), "{r:?}");
    let mut reversed = Vec::new();
    for _ in 0..200 {
        reversed = b.check_reversals(first, &fast(), &ctx("cy")).await.unwrap();
        if !reversed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(reversed.len(), 1, "the 0006 payment is reversed");

    // The four rejected and the reversed entitlement go into a follow-up batch, released only.
    let follow = b.reissue(first, &ctx("preparer")).await.unwrap();
    assert_eq!((follow.line_count, follow.total), (5, 5 * AMOUNT));
    b.submit(follow.id, &ctx("preparer")).await.unwrap();
    b.sign(follow.id, Step::Approve, &ctx("ana")).await.unwrap();
    b.sign(follow.id, Step::Authorise, &ctx("bo"))
        .await
        .unwrap();
    let v = b.sign(follow.id, Step::Release, &ctx("cy")).await.unwrap();
    assert_eq!(v.status, "released");

    Scenario {
        db,
        reg,
        batches: b,
        sim,
        first,
        follow_up: follow.id,
        moved,
        cancelled,
    }
}

/// An auditor's audit context.
pub fn auditor() -> cva_ledger::audit::AuditContext {
    cva_ledger::audit::AuditContext {
        actor_id: Some(42),
        actor: "awa".into(),
        role: "auditor".into(),
        request_id: "test-report".into(),
    }
}
