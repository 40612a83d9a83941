//! Reconciliation runs in the database (SQLite, or PostgreSQL with `CVA_TEST_DATABASE_URL`):
//! payments really sent to the provider simulator, then reconciled against the simulator's own
//! statement and against small hand-made statements with one row per rule and category.
//! Checked each time: the categories and rules, what the run posted (an unknown line confirmed
//! by the statement, a reversal booked), the float reconciliation line by line, the exceptions
//! opened once and found again on a re-run, and the books sound.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cva_batches::testing::{batches, config, ctx, entitlements, phone, registry, released, P};
use cva_batches::{Batches, SendOptions};
use cva_ledger::money::Currency;
use cva_ledger::testing::{assert_books_sound, bal, TestDb};
use cva_providers::sim::{RunningSim, SimConfig, Simulator};
use cva_reconciliation::run::{FloatLine, StoredItem};
use cva_reconciliation::{Category, ColumnMapping, Reconciler, RunOptions, RunView, Statements};
use cva_registry::Registry;
use rust_decimal::Decimal;

const FLOAT: &str = "assets:float:orange-money";
const HEADER: &str =
    "transaction_id,reference,msisdn,amount,currency,fee,status,completed_at,balance_after\n";

fn options(settle_ms: u64) -> SendOptions {
    SendOptions {
        request_timeout: Duration::from_millis(400),
        poll_interval: Duration::from_millis(10),
        settle_timeout: Duration::from_millis(settle_ms),
        max_tries: 3,
        lines_per_request: 5000,
        callback_url: None,
    }
}

async fn sim(float: i64, fee: i64) -> RunningSim {
    Simulator::spawn(
        SimConfig {
            seed: 11,
            float_balance: Decimal::from(float),
            fee: Decimal::from(fee),
            response_delay: Duration::from_millis(1500),
            reversal_delay: Duration::from_millis(200),
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap()
}

async fn setup(phones: &[String]) -> (TestDb, Registry) {
    let db = TestDb::new().await;
    let reg = registry(db.ledger.clone());
    entitlements(&reg, phones).await;
    (db, reg)
}

fn xof() -> Currency {
    Currency::parse("XOF").unwrap()
}

async fn import(reg: &Registry, csv: &str) -> i64 {
    let st = Statements::new(reg.ledger().clone());
    let index = |m: &str| reg.msisdn_index(m);
    st.import_indexed(
        "orange-money",
        csv.as_bytes(),
        &ColumnMapping::simulator(),
        xof(),
        &index,
        &ctx("finance"),
    )
    .await
    .unwrap()
    .id
}

async fn all_items(r: &Reconciler, run: &RunView) -> Vec<StoredItem> {
    r.items(run.id, None, 0, 1000).await.unwrap()
}

fn by_line(items: &[StoredItem]) -> HashMap<i64, &StoredItem> {
    items
        .iter()
        .filter_map(|i| i.line_id.map(|l| (l, i)))
        .collect()
}

async fn exception_count(reg: &Registry, db: &TestDb) -> i64 {
    let _ = db;
    let ledger = reg.ledger();
    match ledger.pool() {
        cva_ledger::store::PoolRef::Postgres(p) => {
            sqlx::query_scalar("SELECT COUNT(*) FROM exceptions")
                .fetch_one(p)
                .await
                .unwrap()
        }
        cva_ledger::store::PoolRef::Sqlite(p) => {
            sqlx::query_scalar("SELECT COUNT(*) FROM exceptions")
                .fetch_one(p)
                .await
                .unwrap()
        }
    }
}

/// The simulator's own statement after a batch with a rejection and a later reversal: every
/// paid line matched by the provider's transaction id, the reversal booked by the run (the
/// sender never asked), the float equal on both sides, nothing left to explain and no
/// exception. A second run posts nothing and finds the same.
#[tokio::test]
async fn the_simulators_statement_reconciles_and_books_the_reversal_once() {
    let mut phones: Vec<String> = (0..4).map(|n| phone(n, None)).collect();
    phones.push(phone(4, Some("0001")));
    phones.push(phone(5, Some("0006")));
    let (_db, reg) = setup(&phones).await;
    let s = sim(1_000_000, 100).await;
    let b = batches(&reg, config(&s.base_url, 100, None), 1_000_000).await;
    let batch = released(&b, 100).await;
    let sent = b.send(batch.id, &options(3000), &ctx("cy")).await.unwrap();
    assert_eq!((sent.completed, sent.failed), (5, 1), "{sent:?}");
    tokio::time::sleep(Duration::from_millis(400)).await;

    let csv = s.statement_csv();
    assert!(csv.contains("-REV"), "the simulator reversed one payment");
    let statement = import(&reg, &csv).await;
    let r = Reconciler::new(b.clone());
    let run = r
        .run(statement, RunOptions::default(), &ctx("fo"))
        .await
        .unwrap();

    assert_eq!(run.run_no, 1);
    assert_eq!(run.summary.matched, 4, "{run:?}");
    assert_eq!(run.summary.reversed_by_provider, 1, "{run:?}");
    assert_eq!(run.outcomes_posted, 1, "the reversal was booked");
    assert_eq!(run.exceptions_opened, 0);
    let f = &run.float;
    assert_eq!(f.statement_opening, Some(1_000_000));
    assert_eq!(f.ledger_opening, 1_000_000);
    assert_eq!(f.statement_closing, Some(f.ledger_closing));
    assert_eq!((f.difference, f.explained, f.unexplained), (0, 0, 0));
    let items = all_items(&r, &run).await;
    assert!(items
        .iter()
        .filter(|i| i.category == "matched")
        .all(|i| i.rule.as_deref() == Some("provider_transaction_id") && i.float_effect == 0));
    let reversed = items
        .iter()
        .find(|i| i.category == "reversed_by_provider")
        .unwrap();
    assert_eq!(reversed.action.as_deref(), Some("reversal_booked"));
    assert_eq!(reversed.float_effect, 0);
    // The four plain matches are stored packed, listed after the item rows, page by page.
    let first_plain = items.iter().position(|i| i.id.is_none()).unwrap();
    assert_eq!(items.len() - first_plain, 4, "{items:?}");
    assert!(items[..first_plain].iter().all(|i| i.id.is_some()));
    let mut paged = Vec::new();
    for offset in 0..=items.len() as u64 {
        paged.extend(r.items(run.id, None, offset, 1).await.unwrap());
    }
    assert_eq!(paged, items);
    let matched = r
        .items(run.id, Some(Category::Matched), 0, 1000)
        .await
        .unwrap();
    assert_eq!(matched.len(), 4);
    assert_eq!(
        r.items(run.id, Some(Category::Matched), 2, 1000)
            .await
            .unwrap(),
        matched[2..]
    );
    let state = s.state();
    let sim_float = i64::try_from(state.float_balance.trunc().mantissa()).unwrap();
    assert_eq!(bal(reg.ledger(), FLOAT).await, i128::from(sim_float));
    let reversed_line = b
        .lines(batch.id)
        .await
        .unwrap()
        .into_iter()
        .find(|l| l.id == reversed.line_id.unwrap())
        .unwrap();
    assert_eq!(
        (
            reversed_line.status.as_str(),
            reversed_line.failure_code.as_deref()
        ),
        ("failed", Some("reversed"))
    );
    assert_eq!(
        bal(
            reg.ledger(),
            &format!(
                "liabilities:entitlements:{P}:hh-{}",
                reversed_line.household
            )
        )
        .await,
        20_000,
        "the reversed payment is owed to the household again"
    );

    // Again: nothing posted twice, same result, still nothing to explain.
    let again = r
        .run(statement, RunOptions::default(), &ctx("fo"))
        .await
        .unwrap();
    assert_eq!(again.run_no, 2);
    assert_eq!(again.outcomes_posted, 0);
    assert_eq!(again.summary, run.summary);
    assert_eq!(again.float.unexplained, 0);
    assert_eq!(bal(reg.ledger(), FLOAT).await, i128::from(sim_float));
    assert_books_sound(reg.ledger()).await;
    assert_eq!(r.runs(statement).await.unwrap().len(), 2);
}

struct Row<'a> {
    tx: &'a str,
    reference: &'a str,
    msisdn: &'a str,
    amount: i64,
    fee: i64,
    status: &'a str,
}

/// A statement from `rows`, one second apart from `t0`, with running balances from
/// `opening`; `jump` is added to every balance from row index `jump_at` on (a break).
fn statement(
    rows: &[Row<'_>],
    t0: DateTime<Utc>,
    opening: i64,
    jump_at: usize,
    jump: i64,
) -> String {
    let mut out = String::from(HEADER);
    let mut balance = opening;
    for (i, r) in rows.iter().enumerate() {
        if matches!(r.status, "completed" | "reversed" | "reversal") {
            balance -= r.amount + r.fee;
        }
        if i == jump_at {
            balance += jump;
        }
        let at = t0 + chrono::Duration::seconds(i as i64);
        out.push_str(&format!(
            "{},{},{},{},XOF,{},{},{},{}\n",
            r.tx,
            r.reference,
            r.msisdn,
            r.amount,
            r.fee,
            r.status,
            at.to_rfc3339(),
            balance
        ));
    }
    out
}

/// One hand-made row per rule and category against nine payments really sent: matched by
/// transaction id, by reference and by payee + amount + date (an `unknown` line, which the
/// run confirms); amount, fee and status mismatches; a payment missing; a duplicate; an
/// unexpected row; a reversal the run books. The float reconciliation lists the planted
/// differences (an opening difference, a break in the running balance, a funding the
/// statement does not show) and leaves nothing unexplained. Exceptions are opened once; the
/// second run finds them again and posts nothing.
#[tokio::test]
async fn each_rule_and_category_on_a_hand_made_statement() {
    // Households 0–6 and 8 are paid; household 7's number leaves its payment pending at the
    // provider, so our line ends `unknown`.
    let mut phones: Vec<String> = (0..9).map(|n| phone(n, None)).collect();
    phones[7] = phone(7, Some("0005"));
    let (db, reg) = setup(&phones).await;
    let s = sim(10_000_000, 100).await;
    let b: Batches = batches(&reg, config(&s.base_url, 100, None), 1_000_000).await;
    let funded = bal(reg.ledger(), FLOAT).await;
    assert_eq!(funded, 1_000_000);
    tokio::time::sleep(Duration::from_millis(30)).await;
    let t0 = Utc::now();
    let batch = released(&b, 100).await;
    let sent = b.send(batch.id, &options(600), &ctx("cy")).await.unwrap();
    assert_eq!((sent.completed, sent.unknown), (8, 1), "{sent:?}");
    // A funding after the statement's start that the statement does not show.
    b.fund_float(
        "orange-money",
        "7000",
        "assets:bank",
        "TOPUP-2",
        &ctx("finance"),
    )
    .await
    .unwrap();

    let lines = b.lines(batch.id).await.unwrap();
    let line_of = |n: usize| {
        let hh = &lines[n];
        (
            hh.id,
            hh.provider_transaction_id.clone().unwrap_or_default(),
        )
    };
    let (l1, tx1) = line_of(0);
    let (l2, _) = line_of(1);
    let (l3, tx3) = line_of(2);
    let (l4, tx4) = line_of(3);
    let (l5, tx5) = line_of(4);
    let (l6, _) = line_of(5);
    let (_, tx7) = line_of(6);
    let (l8, _) = line_of(7);
    let (l9, tx9) = line_of(8);
    assert_eq!(lines[7].status, "unknown");
    let l2s = l2.to_string();
    let tx9rev = format!("{tx9}-REV");
    let payee8 = phones[7].replace(' ', "");
    let rows = [
        Row {
            tx: &tx1,
            reference: "",
            msisdn: "",
            amount: 20_000,
            fee: 100,
            status: "completed",
        },
        Row {
            tx: "PX-2",
            reference: &l2s,
            msisdn: "",
            amount: 20_000,
            fee: 100,
            status: "completed",
        },
        Row {
            tx: &tx3,
            reference: "",
            msisdn: "",
            amount: 19_000,
            fee: 100,
            status: "completed",
        },
        Row {
            tx: &tx4,
            reference: "",
            msisdn: "",
            amount: 20_000,
            fee: 150,
            status: "completed",
        },
        Row {
            tx: &tx5,
            reference: "",
            msisdn: "",
            amount: 20_000,
            fee: 100,
            status: "failed",
        },
        Row {
            tx: &tx7,
            reference: "",
            msisdn: "",
            amount: 20_000,
            fee: 100,
            status: "completed",
        },
        Row {
            tx: &tx7,
            reference: "",
            msisdn: "",
            amount: 20_000,
            fee: 100,
            status: "completed",
        },
        Row {
            tx: "STRANGER",
            reference: "",
            msisdn: "+22376999999",
            amount: 5_000,
            fee: 0,
            status: "completed",
        },
        Row {
            tx: "NEWTX-8",
            reference: "",
            msisdn: &payee8,
            amount: 20_000,
            fee: 100,
            status: "completed",
        },
        Row {
            tx: &tx9,
            reference: "",
            msisdn: "",
            amount: 20_000,
            fee: 100,
            status: "reversed",
        },
        Row {
            tx: &tx9rev,
            reference: "",
            msisdn: "",
            amount: -20_000,
            fee: 0,
            status: "reversal",
        },
    ];
    // Opening 1,000 below the ledger's float; a jump of +500 at the fifth row (row 6).
    let csv = statement(&rows, t0, 999_000, 4, 500);
    let statement_id = import(&reg, &csv).await;
    let r = Reconciler::new(b.clone());
    let run = r
        .run(statement_id, RunOptions::default(), &ctx("fo"))
        .await
        .unwrap();

    let items = all_items(&r, &run).await;
    let by = by_line(&items);
    let cat = |l: i64| by[&l].category.as_str();
    let rule = |l: i64| by[&l].rule.as_deref();
    assert_eq!(
        (cat(l1), rule(l1)),
        ("matched", Some("provider_transaction_id"))
    );
    assert_eq!((cat(l2), rule(l2)), ("matched", Some("reference")));
    assert_eq!(cat(l3), "amount_mismatch");
    assert_eq!(cat(l4), "fee_mismatch");
    assert_eq!(cat(l5), "status_mismatch");
    assert_eq!(cat(l6), "missing_from_statement");
    assert_eq!(
        (cat(l8), rule(l8), by[&l8].action.as_deref()),
        ("matched", Some("payee_amount_date"), Some("confirmed")),
        "the unknown line is confirmed by the statement"
    );
    assert_eq!(
        (cat(l9), by[&l9].action.as_deref()),
        ("reversed_by_provider", Some("reversal_booked"))
    );
    let dup: Vec<_> = items
        .iter()
        .filter(|i| i.category == "duplicate_in_statement")
        .collect();
    assert_eq!(dup.len(), 1);
    assert_eq!(dup[0].statement_rows, vec![8]);
    assert_eq!(dup[0].float_effect, 20_100, "the provider paid it twice");
    let unexpected: Vec<_> = items
        .iter()
        .filter(|i| i.category == "unexpected_in_statement")
        .collect();
    assert_eq!(unexpected.len(), 1);
    assert_eq!(unexpected[0].statement_rows, vec![9]);
    assert_eq!(unexpected[0].float_effect, 5_000);
    assert_eq!(
        by[&l3].float_effect, -1_000,
        "we booked 20,100, they 19,100"
    );
    assert_eq!(by[&l4].float_effect, 50);
    assert_eq!(by[&l5].float_effect, -20_100, "we paid, they say failed");
    assert_eq!(by[&l6].float_effect, -20_100);
    assert_eq!(by[&l1].float_effect, 0);
    assert_eq!(
        by[&l8].float_effect, 0,
        "confirmed: both sides moved 20,100"
    );
    assert_eq!(run.outcomes_posted, 2, "one confirmation, one reversal");

    // The line the statement confirmed, and the reversal, are in the ledger.
    let after = b.lines(batch.id).await.unwrap();
    let l8v = after.iter().find(|l| l.id == l8).unwrap();
    assert_eq!(l8v.status, "completed");
    assert_eq!(l8v.provider_transaction_id.as_deref(), Some("NEWTX-8"));
    assert_eq!(l8v.resolved_by.as_deref(), Some("statement"));
    let l9v = after.iter().find(|l| l.id == l9).unwrap();
    assert_eq!(l9v.failure_code.as_deref(), Some("reversed"));

    // Float: every planted difference listed, nothing unexplained.
    let f = &run.float;
    assert_eq!(f.ledger_opening, 1_000_000);
    assert_eq!(f.statement_opening, Some(999_000));
    assert_eq!(i128::from(f.ledger_closing), bal(reg.ledger(), FLOAT).await);
    assert_eq!(
        f.difference,
        f.ledger_closing - f.statement_closing.unwrap()
    );
    assert_eq!(f.unexplained, 0, "{f:?}");
    assert_eq!(f.explained, f.difference);
    let fl: Vec<FloatLine> = r.float_lines(run.id).await.unwrap();
    let of_kind = |k: &str| fl.iter().filter(|l| l.kind == k).collect::<Vec<_>>();
    assert_eq!(of_kind("opening_difference")[0].amount, 1_000);
    let breaks = of_kind("running_balance_break");
    assert_eq!(breaks.len(), 1);
    assert_eq!((breaks[0].row_no, breaks[0].amount), (Some(6), -500));
    let ledger_only = of_kind("ledger_only");
    assert_eq!(ledger_only.len(), 1, "{ledger_only:?}");
    assert_eq!(ledger_only[0].amount, 7_000, "the funding");
    // The sum the test computes itself: items + float lines = difference.
    let total: i64 = items.iter().map(|i| i.float_effect).sum::<i64>()
        + fl.iter().map(|l| l.amount).sum::<i64>();
    assert_eq!(total, f.difference);

    // Exceptions: one per problem left for a person (not the confirmed or reversed lines).
    assert_eq!(run.exceptions_opened, 6, "{run:?}");
    assert_eq!(exception_count(&reg, &db).await, 6);

    // Again: same problems, same exceptions, nothing posted twice.
    let again = r
        .run(statement_id, RunOptions::default(), &ctx("fo"))
        .await
        .unwrap();
    assert_eq!(again.outcomes_posted, 0);
    assert_eq!(
        (again.exceptions_opened, again.exceptions_seen_again),
        (0, 6)
    );
    assert_eq!(exception_count(&reg, &db).await, 6);
    let items2 = all_items(&r, &again).await;
    let by2 = by_line(&items2);
    assert_eq!(
        (
            by2[&l8].category.as_str(),
            by2[&l8].rule.as_deref(),
            by2[&l8].action.as_deref()
        ),
        ("matched", Some("provider_transaction_id"), None)
    );
    assert_eq!(again.float.unexplained, 0);
    assert_eq!(again.float.difference, run.float.difference);
    assert_books_sound(reg.ledger()).await;
}

/// Runs are evidence: the database refuses to change or delete them.
/// Money moved on the float by someone else while a run reads and posts (top-ups, one after
/// the other until the run ends) is in the run's float figures all the same: the float read
/// before the postings is used only when the account's totals say nothing but the run's own
/// entries moved it since, and read again otherwise. Without that check a top-up landing
/// between the two reads would be in the ledger's closing balance and in no float line.
#[tokio::test]
async fn float_movements_during_the_run_are_explained() {
    let phones: Vec<String> = (0..6).map(|n| phone(n, None)).collect();
    let (_db, reg) = setup(&phones).await;
    let s = sim(1_000_000, 100).await;
    let b = batches(&reg, config(&s.base_url, 100, None), 1_000_000).await;
    let batch = released(&b, 100).await;
    b.send(batch.id, &options(3000), &ctx("cy")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let statement = import(&reg, &s.statement_csv()).await;
    let r = Reconciler::new(b.clone());

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let topups = tokio::spawn({
        let (b, stop) = (b.clone(), stop.clone());
        async move {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                b.fund_float(
                    "orange-money",
                    "1",
                    "assets:bank",
                    &format!("DURING-RUN-{n}"),
                    &ctx("finance"),
                )
                .await
                .unwrap();
                n += 1;
            }
            n
        }
    });
    // Let the top-ups start before the run does.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let run = r
        .run(statement, RunOptions::default(), &ctx("fo"))
        .await
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let n = topups.await.unwrap();
    assert!(n > 1, "top-ups ran alongside the run ({n})");

    let f = &run.float;
    assert_eq!(f.unexplained, 0, "{f:?}");
    // Every top-up came after the statement's start: the float before it is what was funded.
    // (A movement missing from the run's read would shift this and pass for an opening
    // difference.)
    assert_eq!(f.ledger_opening, 1_000_000, "{f:?}");
    let lines = r.float_lines(run.id).await.unwrap();
    let topped: i64 = lines
        .iter()
        .filter(|l| l.kind == "ledger_only")
        .map(|l| l.amount)
        .sum();
    // Each top-up the run saw is one ledger-only line of 1; they are all the difference.
    assert!(topped >= 1, "{lines:?}");
    assert_eq!(f.difference, topped, "{f:?}");
    assert_books_sound(reg.ledger()).await;
}

#[tokio::test]
async fn runs_and_items_are_append_only() {
    let phones: Vec<String> = (0..2).map(|n| phone(n, None)).collect();
    let (db, reg) = setup(&phones).await;
    let s = sim(1_000_000, 100).await;
    let b = batches(&reg, config(&s.base_url, 100, None), 1_000_000).await;
    let batch = released(&b, 100).await;
    b.send(batch.id, &options(3000), &ctx("cy")).await.unwrap();
    // Plain matches (stored packed) and one item row: a transfer we never sent.
    let csv = format!(
        "{}STRANGER1,,,500,XOF,0,completed,2024-03-01T10:00:00Z,\n",
        s.statement_csv()
    );
    let statement = import(&reg, &csv).await;
    let run = Reconciler::new(b)
        .run(statement, RunOptions::default(), &ctx("fo"))
        .await
        .unwrap();
    assert_eq!(run.summary.unexpected_in_statement, 1, "{run:?}");
    assert!(run.summary.matched >= 1, "{run:?}");
    for sql in [
        format!("UPDATE reconciliations SET difference = 0, explained = 0, unexplained = 0 WHERE id = {}", run.id),
        format!("DELETE FROM reconciliations WHERE id = {}", run.id),
        format!("UPDATE reconciliation_items SET category = 'matched' WHERE reconciliation_id = {}", run.id),
        format!("DELETE FROM reconciliation_items WHERE reconciliation_id = {}", run.id),
        format!("UPDATE reconciliation_matches SET pairs = 1 WHERE reconciliation_id = {}", run.id),
        format!("DELETE FROM reconciliation_matches WHERE reconciliation_id = {}", run.id),
    ] {
        assert!(db.raw(&[sql.as_str()]).await.is_err(), "{sql} must be refused");
    }
}

/// A statement from a provider that is not configured, an unknown statement and a window
/// out of range are refused, and nothing is stored.
#[tokio::test]
async fn bad_runs_are_refused() {
    let phones: Vec<String> = (0..1).map(|n| phone(n, None)).collect();
    let (_db, reg) = setup(&phones).await;
    let s = sim(1_000_000, 100).await;
    let b = batches(&reg, config(&s.base_url, 100, None), 1_000_000).await;
    let r = Reconciler::new(b);
    let err = r
        .run(999, RunOptions::default(), &ctx("fo"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("999"), "{err}");
    let st = Statements::new(reg.ledger().clone())
        .import(
            "other-provider",
            format!("{HEADER}T1,,,100,XOF,0,completed,2024-03-01T10:00:00Z,900\n").as_bytes(),
            &ColumnMapping::simulator(),
            xof(),
            &ctx("finance"),
        )
        .await
        .unwrap();
    let err = r
        .run(st.id, RunOptions::default(), &ctx("fo"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("provider"), "{err}");
    let err = r
        .run(
            st.id,
            RunOptions {
                window: chrono::Duration::days(40),
            },
            &ctx("fo"),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("window"), "{err}");
    assert!(r.runs(st.id).await.unwrap().is_empty());
}
