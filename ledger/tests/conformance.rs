//! Storage conformance: the same tests on SQLite (default) and PostgreSQL
//! (`CVA_TEST_DATABASE_URL=postgres://…`). Each test gets a fresh database.

#![allow(clippy::unwrap_used)]

use chrono::Utc;
use cva_ledger::account::{AccountCode, AccountSpec, AccountType, BalanceRule, Side};
use cva_ledger::entry::EntryId;
use cva_ledger::posting::Posting;
use cva_ledger::testing::*;
use cva_ledger::LedgerError;
use futures::StreamExt;

const BANK: &str = "assets:bank";
const FUNDS: &str = "funds:P1:mpca";
const EXPENSE: &str = "expense:transfers:P1:mpca";
const HH1: &str = "liabilities:entitlements:HH-000001";
const HH2: &str = "liabilities:entitlements:HH-000002";
const TRANSIT: &str = "liabilities:in-transit:orange";
const FLOAT: &str = "assets:float:orange";
const PAYOUT: &str = "expense:payouts:orange";

#[tokio::test]
async fn posts_balances_and_opens_accounts_on_first_use() {
    let db = TestDb::new().await;
    let l = &db.ledger;
    let p = l
        .post(transfer("funds-1", BANK, FUNDS, 1_000_000))
        .await
        .unwrap();
    assert!(matches!(p, Posting::Posted(_)));
    assert_eq!(bal(l, BANK).await, 1_000_000);
    assert_eq!(bal(l, FUNDS).await, 1_000_000);
    let funds = l
        .account(&AccountCode::parse(FUNDS).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(funds.account_type, AccountType::Fund);
    assert_eq!(funds.rule, BalanceRule::MustNotGoNegative);
    let e = l.entry(p.id()).await.unwrap();
    assert_eq!(e.lines.len(), 2);
    assert_eq!(e.lines[0].account.as_str(), BANK);
    assert_eq!(e.lines[1].side, Side::Credit);
    assert_eq!(e.effective_date, date());
    assert_books_sound(l).await;
    db.cleanup().await;
}

#[tokio::test]
async fn same_key_same_content_returns_the_original() {
    let db = TestDb::new().await;
    let l = &db.ledger;
    let first = l.post(transfer("k", BANK, FUNDS, 500)).await.unwrap();
    let again = l.post(transfer("k", BANK, FUNDS, 500)).await.unwrap();
    assert_eq!(again, Posting::Replayed(first.id()));
    assert_eq!(bal(l, BANK).await, 500);
    assert_eq!(entry_count(l).await, 1);
    db.cleanup().await;
}

#[tokio::test]
async fn same_key_different_content_is_a_conflict_that_changes_nothing() {
    let db = TestDb::new().await;
    let l = &db.ledger;
    let first = l.post(transfer("k", BANK, FUNDS, 500)).await.unwrap();
    let err = l.post(transfer("k", BANK, FUNDS, 501)).await.unwrap_err();
    match err {
        LedgerError::IdempotencyConflict { existing, .. } => assert_eq!(existing, first.id()),
        other => panic!("expected conflict, got {other:?}"),
    }
    // Another account in the conflicting entry must not have been opened.
    let err = l
        .post(transfer("k", "assets:other", FUNDS, 500))
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::IdempotencyConflict { .. }));
    assert!(l
        .account(&AccountCode::parse("assets:other").unwrap())
        .await
        .unwrap()
        .is_none());
    assert_eq!(bal(l, BANK).await, 500);
    assert_eq!(entry_count(l).await, 1);
    db.cleanup().await;
}

#[tokio::test]
async fn a_refused_entry_leaves_no_trace() {
    let db = TestDb::new().await;
    let l = &db.ledger;
    l.post(transfer("funds", BANK, FUNDS, 1000)).await.unwrap();
    let accounts_before = account_count(l).await;
    // Float may not go negative: paying from an empty float is refused…
    let err = l
        .post(transfer("pay", PAYOUT, FLOAT, 10))
        .await
        .unwrap_err();
    assert!(
        matches!(err, LedgerError::InsufficientBalance { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(FLOAT), "{err}");
    // …and opens neither of its accounts.
    assert_eq!(account_count(l).await, accounts_before);
    // A line in another currency than its account is refused.
    let err = l
        .post(entry(
            "usd",
            &[
                (BANK, Side::Debit, 5, usd()),
                ("funds:P1:usd", Side::Credit, 5, usd()),
            ],
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(err, LedgerError::CurrencyMismatch { .. }),
        "{err:?}"
    );
    assert_eq!(account_count(l).await, accounts_before);
    assert_eq!(entry_count(l).await, 1);
    assert_books_sound(l).await;
    db.cleanup().await;
}

#[tokio::test]
async fn balance_rules_apply_entry_by_entry_in_batch_order() {
    let db = TestDb::new().await;
    let l = &db.ledger;
    l.post(transfer("funds", BANK, FUNDS, 1000)).await.unwrap();
    // Spending before the top-up, in the same batch, is refused: rules hold after every entry.
    let err = l
        .post_many(&[
            transfer("spend", PAYOUT, FLOAT, 600),
            transfer("topup", FLOAT, BANK, 600),
        ])
        .await
        .unwrap_err();
    match err {
        LedgerError::BatchRejected { index, source } => {
            assert_eq!(index, 0);
            assert!(matches!(*source, LedgerError::InsufficientBalance { .. }));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(entry_count(l).await, 1);
    // Top-up first, then spend: accepted.
    let posted = l
        .post_many(&[
            transfer("topup", FLOAT, BANK, 600),
            transfer("spend", PAYOUT, FLOAT, 600),
        ])
        .await
        .unwrap();
    assert_eq!(posted.len(), 2);
    assert_eq!(bal(l, FLOAT).await, 0);
    assert_eq!(bal(l, BANK).await, 400);
    // Exactly at the limit is fine, one more is not.
    let err = l
        .post(transfer("over", FLOAT, BANK, 401))
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::InsufficientBalance { .. }));
    l.post(transfer("exact", FLOAT, BANK, 400)).await.unwrap();
    assert_eq!(bal(l, BANK).await, 0);
    assert_books_sound(l).await;
    db.cleanup().await;
}

#[tokio::test]
async fn post_many_is_all_or_nothing() {
    let db = TestDb::new().await;
    let l = &db.ledger;
    l.post(transfer("funds", BANK, FUNDS, 10_000))
        .await
        .unwrap();
    let mut batch: Vec<_> = (0..50)
        .map(|i| {
            transfer(
                &format!("grant-{i}"),
                EXPENSE,
                &format!("liabilities:entitlements:HH-{i:06}"),
                100,
            )
        })
        .collect();
    // Entry 37 pays a household more than it is owed.
    batch[37] = transfer("bad", "liabilities:entitlements:HH-999999", TRANSIT, 1);
    let err = l.post_many(&batch).await.unwrap_err();
    assert!(
        matches!(err, LedgerError::BatchRejected { index: 37, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("#37"), "{err}");
    assert_eq!(entry_count(l).await, 1);
    assert_eq!(account_count(l).await, 2);
    batch[37] = transfer(
        "grant-37",
        EXPENSE,
        "liabilities:entitlements:HH-000037",
        100,
    );
    let posted = l.post_many(&batch).await.unwrap();
    assert_eq!(posted.len(), 50);
    assert_eq!(bal(l, EXPENSE).await, 5000);
    assert_eq!(bal(l, "liabilities:entitlements:HH-000037").await, 100);
    // Replaying the whole batch writes nothing and returns the same ids.
    let again = l.post_many(&batch).await.unwrap();
    assert!(again
        .iter()
        .zip(&posted)
        .all(|(a, p)| *a == Posting::Replayed(p.id())));
    assert_eq!(entry_count(l).await, 51);
    assert_books_sound(l).await;
    db.cleanup().await;
}

#[tokio::test]
async fn duplicate_keys_inside_one_batch() {
    let db = TestDb::new().await;
    let l = &db.ledger;
    let out = l
        .post_many(&[
            transfer("a", EXPENSE, HH1, 10),
            transfer("a", EXPENSE, HH1, 10),
        ])
        .await
        .unwrap();
    assert_eq!(out[1], Posting::Replayed(out[0].id()));
    let err = l
        .post_many(&[
            transfer("b", EXPENSE, HH1, 10),
            transfer("b", EXPENSE, HH1, 11),
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::BatchRejected { index: 1, .. }));
    assert_eq!(bal(l, HH1).await, 10);
    db.cleanup().await;
}

#[tokio::test]
async fn independent_batches_accept_and_refuse_entry_by_entry() {
    let db = TestDb::new().await;
    let l = &db.ledger;
    let out = l
        .post_independent(&[
            transfer("g1", EXPENSE, HH1, 100),
            transfer("pay-too-much", HH1, TRANSIT, 150),
            transfer("pay", HH1, TRANSIT, 100),
            transfer("g1", EXPENSE, HH1, 100),
            transfer("pay-again", HH1, TRANSIT, 1),
        ])
        .await
        .unwrap();
    assert!(matches!(out[0], Ok(Posting::Posted(_))));
    assert!(matches!(
        out[1],
        Err(LedgerError::InsufficientBalance { .. })
    ));
    assert!(matches!(out[2], Ok(Posting::Posted(_))));
    assert!(matches!(out[3], Ok(Posting::Replayed(id)) if id == out[0].as_ref().unwrap().id()));
    assert!(matches!(
        out[4],
        Err(LedgerError::InsufficientBalance { .. })
    ));
    assert_eq!(bal(l, HH1).await, 0);
    assert_eq!(bal(l, TRANSIT).await, 100);
    assert_eq!(entry_count(l).await, 2);
    assert_books_sound(l).await;
    db.cleanup().await;
}

#[tokio::test]
async fn reversal_mirrors_once_and_respects_balance_rules() {
    let db = TestDb::new().await;
    let l = &db.ledger;
    let g1 = l
        .post(transfer("g1", EXPENSE, HH1, 100))
        .await
        .unwrap()
        .id();
    let g2 = l
        .post(transfer("g2", EXPENSE, HH2, 200))
        .await
        .unwrap()
        .id();
    l.post(transfer("pay2", HH2, TRANSIT, 200)).await.unwrap();

    let r = l.reverse(g1, "household withdrew").await.unwrap();
    assert!(matches!(r, Posting::Posted(_)));
    let rev = l.entry(r.id()).await.unwrap();
    assert_eq!(rev.reverses, Some(g1));
    assert_eq!(rev.lines[0].side, Side::Credit);
    assert_eq!(rev.lines[0].account.as_str(), EXPENSE);
    assert_eq!(rev.metadata["reason"], "household withdrew");
    assert_eq!(bal(l, HH1).await, 0);
    assert_eq!(bal(l, EXPENSE).await, 200);

    let err = l.reverse(g1, "again").await.unwrap_err();
    assert!(
        matches!(err, LedgerError::AlreadyReversed { entry, reversal } if entry == g1 && reversal == r.id()),
        "{err:?}"
    );
    let err = l.reverse(r.id(), "undo the undo").await.unwrap_err();
    assert!(matches!(err, LedgerError::ReversalOfReversal(_)), "{err:?}");
    // HH2 was already paid: cancelling its entitlement would leave it owing money back.
    let err = l.reverse(g2, "cancel").await.unwrap_err();
    assert!(
        matches!(err, LedgerError::InsufficientBalance { .. }),
        "{err:?}"
    );
    let err = l
        .reverse(EntryId(uuid::Uuid::now_v7()), "x")
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::EntryNotFound(_)));
    assert_eq!(entry_count(l).await, 4);
    assert_books_sound(l).await;
    db.cleanup().await;
}

#[tokio::test]
async fn balance_as_of_a_time() {
    let db = TestDb::new().await;
    let l = &db.ledger;
    let code = AccountCode::parse(HH1).unwrap();
    l.post(transfer("g1", EXPENSE, HH1, 100)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let between = Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    l.post(transfer("g2", EXPENSE, HH1, 50)).await.unwrap();
    l.post(transfer("pay", HH1, TRANSIT, 30)).await.unwrap();
    assert_eq!(l.balance(&code, None).await.unwrap().balance, "120");
    let then = l.balance(&code, Some(between)).await.unwrap();
    assert_eq!(then.balance, "100");
    assert_eq!(then.credits.minor(), 100);
    let before = l
        .balance(&code, Some(between - chrono::Duration::days(1)))
        .await
        .unwrap();
    assert_eq!(before.balance, "0");
    let err = l
        .balance(&AccountCode::parse("assets:nowhere").unwrap(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::UnknownAccount(_)));
    db.cleanup().await;
}

#[tokio::test]
async fn multi_currency_entries_balance_per_currency() {
    let db = TestDb::new().await;
    let l = &db.ledger;
    let x = xof();
    let u = usd();
    l.post(entry(
        "fx",
        &[
            ("assets:bank:usd", Side::Debit, 10_050, u),
            ("funds:P1:usd", Side::Credit, 10_050, u),
            (BANK, Side::Debit, 6_000_000, x),
            (FUNDS, Side::Credit, 6_000_000, x),
        ],
    ))
    .await
    .unwrap();
    let b = l
        .balance(&AccountCode::parse("assets:bank:usd").unwrap(), None)
        .await
        .unwrap();
    assert_eq!(b.balance, "100.50");
    let tb = l.trial_balance().await.unwrap();
    assert_eq!(tb.totals.len(), 2);
    assert!(tb.is_balanced());
    db.cleanup().await;
}

#[tokio::test]
async fn explicit_opening_is_idempotent_and_checked() {
    let db = TestDb::new().await;
    let l = &db.ledger;
    let code = AccountCode::parse("expense:fees:orange").unwrap();
    let spec = AccountSpec::new(
        code.clone(),
        AccountType::Expense,
        xof(),
        BalanceRule::MustNotGoNegative,
    )
    .unwrap();
    let a = l.open_account(spec.clone()).await.unwrap();
    assert_eq!(a.rule, BalanceRule::MustNotGoNegative);
    assert_eq!(l.open_account(spec).await.unwrap().id, a.id);
    let other = AccountSpec::new(
        code,
        AccountType::Expense,
        usd(),
        BalanceRule::MustNotGoNegative,
    )
    .unwrap();
    assert!(matches!(
        l.open_account(other).await,
        Err(LedgerError::AccountExists { .. })
    ));
    // The explicit rule wins over the opening policy: this expense account may not go negative.
    let err = l
        .post(transfer("refund", BANK, "expense:fees:orange", 5))
        .await
        .unwrap_err();
    assert!(
        matches!(err, LedgerError::InsufficientBalance { .. }),
        "{err:?}"
    );
    db.cleanup().await;
}

#[tokio::test]
async fn overflowing_totals_are_refused() {
    let db = TestDb::new().await;
    let l = &db.ledger;
    l.post(transfer("a", EXPENSE, HH1, i64::MAX)).await.unwrap();
    let err = l.post(transfer("b", EXPENSE, HH2, 1)).await.unwrap_err();
    assert!(matches!(err, LedgerError::Overflow { .. }), "{err:?}");
    assert_books_sound(l).await;
    db.cleanup().await;
}

#[tokio::test]
async fn journal_streams_every_entry_in_order() {
    let db = TestDb::new().await;
    let l = &db.ledger;
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(
            l.post(transfer(&format!("g{i}"), EXPENSE, HH1, 10 + i))
                .await
                .unwrap()
                .id(),
        );
    }
    let entries: Vec<_> = l
        .journal()
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(entries.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
    assert!(entries.iter().all(|e| e.lines.len() == 2));
    assert_eq!(entries[29].lines[1].amount.minor(), 39);
    db.cleanup().await;
}

// ---- The database defends the books on its own (stray SQL) ----

async fn seeded(db: &TestDb) {
    db.ledger
        .post(transfer("g1", EXPENSE, HH1, 100))
        .await
        .unwrap();
}

#[tokio::test]
async fn database_refuses_update_and_delete_of_posted_lines_and_entries() {
    let db = TestDb::new().await;
    seeded(&db).await;
    for sql in [
        "UPDATE journal_lines SET amount = amount + 1",
        "DELETE FROM journal_lines",
        "UPDATE journal_entries SET description = 'edited'",
        "DELETE FROM journal_entries",
        "DELETE FROM accounts",
        "UPDATE accounts SET currency = 'USD'",
    ] {
        let err = db.raw(&[sql]).await.expect_err(sql);
        assert!(err.contains("cva:"), "{sql}: {err}");
    }
    if db.is_postgres() {
        for sql in ["TRUNCATE journal_lines", "TRUNCATE journal_entries CASCADE"] {
            let err = db.raw(&[sql]).await.expect_err(sql);
            assert!(err.contains("append-only"), "{sql}: {err}");
        }
        // Totals move only through lines (SQLite cannot tell a trigger's update from a
        // client's; `verify` catches it there, see the next test).
        let err = db
            .raw(&["UPDATE accounts SET credit_total = 0"])
            .await
            .unwrap_err();
        assert!(err.contains("only by posting lines"), "{err}");
    }
    assert_eq!(bal(&db.ledger, HH1).await, 100);
    assert_books_sound(&db.ledger).await;
    db.cleanup().await;
}

/// Lines for one new entry, as raw SQL for the backend under test.
fn raw_lines(
    db: &TestDb,
    entry: uuid::Uuid,
    lines: &[(i64, i64, &str, i64)],
    count: i64,
) -> String {
    let rows: Vec<String> = lines
        .iter()
        .map(|(no, account, side, amount)| {
            if db.is_postgres() {
                format!("('{entry}', {no}, {count}, {account}, '{side}', {amount}, 'XOF', now())")
            } else {
                format!(
                    "(x'{}', {no}, {count}, {account}, '{side}', {amount}, 'XOF', 0)",
                    entry.simple()
                )
            }
        })
        .collect();
    format!(
        "INSERT INTO journal_lines (entry_id, line_no, line_count, account_id, side, amount, currency, recorded_at) VALUES {}",
        rows.join(", ")
    )
}

fn raw_header(db: &TestDb, entry: uuid::Uuid, key: &str, count: i64) -> String {
    if db.is_postgres() {
        format!("INSERT INTO journal_entries (id, idempotency_key, content_digest, description, effective_date, recorded_at, line_count) \
                 VALUES ('{entry}', '{key}', decode(repeat('00', 32), 'hex'), 'stray', '2024-03-01', now(), {count})")
    } else {
        format!("INSERT INTO journal_entries (id, idempotency_key, content_digest, description, effective_date, recorded_at, line_count) \
                 VALUES (x'{}', '{key}', zeroblob(32), 'stray', '2024-03-01', 0, {count})", entry.simple())
    }
}

async fn ids(db: &TestDb) -> (i64, i64) {
    let get = |c: &'static str| async move {
        db.ledger
            .account(&AccountCode::parse(c).unwrap())
            .await
            .unwrap()
            .unwrap()
            .id
    };
    (get(EXPENSE).await, get(HH1).await)
}

#[tokio::test]
async fn database_refuses_an_unbalanced_entry() {
    let db = TestDb::new().await;
    seeded(&db).await;
    let (exp, hh) = ids(&db).await;
    let e = uuid::Uuid::now_v7();
    let err = db
        .raw(&[
            &raw_lines(&db, e, &[(1, exp, "D", 100), (2, hh, "C", 90)], 2),
            &raw_header(&db, e, "stray-1", 2),
        ])
        .await
        .unwrap_err();
    assert!(err.contains("unbalanced"), "{err}");
    // A balanced entry written by hand the same way is accepted, which shows the refusal above
    // was about the balance, not the method.
    let e2 = uuid::Uuid::now_v7();
    db.raw(&[
        &raw_lines(&db, e2, &[(1, exp, "D", 100), (2, hh, "C", 100)], 2),
        &raw_header(&db, e2, "stray-2", 2),
    ])
    .await
    .unwrap();
    assert_eq!(bal(&db.ledger, HH1).await, 200);
    assert_books_sound(&db.ledger).await;
    db.cleanup().await;
}

#[tokio::test]
async fn database_refuses_incomplete_or_growing_entries() {
    let db = TestDb::new().await;
    seeded(&db).await;
    let (exp, hh) = ids(&db).await;
    // A header whose lines are missing.
    let e = uuid::Uuid::now_v7();
    let err = db
        .raw(&[
            &raw_lines(&db, e, &[(1, exp, "D", 100), (2, hh, "C", 100)], 3),
            &raw_header(&db, e, "stray-3", 3),
        ])
        .await
        .unwrap_err();
    assert!(
        err.contains("incomplete") || err.contains("no lines"),
        "{err}"
    );
    // Lines added to a posted entry.
    let posted = db.ledger.journal().next().await.unwrap().unwrap().id.0;
    let err = db
        .raw(&[&raw_lines(
            &db,
            posted,
            &[(1, exp, "D", 5), (2, hh, "C", 5)],
            2,
        )])
        .await
        .unwrap_err();
    assert!(!err.is_empty());
    // A header with no lines at all.
    let e = uuid::Uuid::now_v7();
    let err = db
        .raw(&[&raw_header(&db, e, "stray-4", 2)])
        .await
        .unwrap_err();
    assert!(
        err.contains("incomplete") || err.contains("no lines"),
        "{err}"
    );
    // A line in another currency than its account.
    let e = uuid::Uuid::now_v7();
    let usd_lines =
        raw_lines(&db, e, &[(1, exp, "D", 100), (2, hh, "C", 100)], 2).replace("'XOF'", "'USD'");
    let err = db
        .raw(&[&usd_lines, &raw_header(&db, e, "stray-5", 2)])
        .await
        .unwrap_err();
    assert!(err.contains("currency"), "{err}");
    assert_eq!(bal(&db.ledger, HH1).await, 100);
    assert_books_sound(&db.ledger).await;
    db.cleanup().await;
}

#[tokio::test]
async fn verify_finds_what_stray_sql_could_still_do() {
    let db = TestDb::new().await;
    seeded(&db).await;
    let (exp, hh) = ids(&db).await;
    // Balanced lines without a header are the one thing the schema cannot refuse cheaply; the
    // books stay balanced, and verify reports them.
    let e = uuid::Uuid::now_v7();
    let sql = raw_lines(&db, e, &[(1, exp, "D", 7), (2, hh, "C", 7)], 2);
    db.raw(&[&sql]).await.unwrap();
    let report = db.ledger.verify().await.unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("no entry header")),
        "{:?}",
        report.problems
    );
    assert!(db.ledger.trial_balance().await.unwrap().is_balanced());
    if !db.is_postgres() {
        // On SQLite a client can still rewrite a stored total; verify catches it.
        db.raw(&["UPDATE accounts SET credit_total = credit_total + 1 WHERE id = (SELECT max(id) FROM accounts)"]).await.unwrap();
        let report = db.ledger.verify().await.unwrap();
        assert!(
            report.problems.iter().any(|p| p.contains("stored totals")),
            "{:?}",
            report.problems
        );
    }
    db.cleanup().await;
}
