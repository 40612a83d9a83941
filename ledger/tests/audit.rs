//! The hash-chained audit trail on SQLite (default) and PostgreSQL
//! (`CVA_TEST_DATABASE_URL=postgres://…`): events written in the same transaction as each
//! audited change and never for a refused one, group commit, append-only tables, tamper
//! detection (edit, delete, reorder, truncate) with direct SQL, reading with filters and paging,
//! and a randomized run.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use chrono::Utc;
use cva_ledger::account::{AccountCode, AccountSpec, AccountType, BalanceRule};
use cva_ledger::audit::{
    account_change, change_digest, entry_change, AuditContext, AuditEvent, AuditQuery, ChainBreak,
    GENESIS_HASH, MAX_PAGE,
};
use cva_ledger::committer::Committer;
use cva_ledger::entry::EntryId;
use cva_ledger::posting::Posting;
use cva_ledger::testing::*;
use cva_ledger::{Ledger, LedgerError};
use proptest::prelude::*;

const BANK: &str = "assets:bank";
const FUNDS: &str = "funds:P1:mpca";
const FLOAT: &str = "assets:float:orange";
const PAYOUT: &str = "expense:payouts:orange";

fn ctx(actor: &str, request: &str) -> AuditContext {
    AuditContext {
        actor_id: Some(7),
        actor: actor.to_owned(),
        role: "finance_officer".to_owned(),
        request_id: request.to_owned(),
    }
}

async fn all_events(l: &Ledger) -> Vec<AuditEvent> {
    let mut out = Vec::new();
    loop {
        let page = l
            .audit_events(&AuditQuery {
                after_seq: out.last().map_or(0, |e: &AuditEvent| e.seq),
                limit: MAX_PAGE,
                ..AuditQuery::default()
            })
            .await
            .unwrap();
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

async fn assert_intact(l: &Ledger, events: u64) {
    let v = l.verify_audit().await.unwrap();
    assert_eq!(v.broken, None, "{v:?}");
    assert_eq!(v.events, events);
}

#[tokio::test]
async fn audited_post_reverse_and_open_write_one_event_each_in_the_same_transaction() {
    let db = TestDb::new().await;
    let l = &db.ledger;
    let before = Utc::now();
    let amina = ctx("amina", "req-1");

    let spec = AccountSpec::new(
        AccountCode::parse("assets:float:wave").unwrap(),
        AccountType::Asset,
        xof(),
        BalanceRule::MustNotGoNegative,
    )
    .unwrap();
    l.open_account_audited(spec.clone(), &amina).await.unwrap();
    // Opening it again with the same settings changes nothing: no event.
    l.open_account_audited(spec.clone(), &amina).await.unwrap();

    let entry = transfer("funds-1", BANK, FUNDS, 1_000);
    let posted = l.post_audited(entry.clone(), &amina).await.unwrap();
    assert!(matches!(posted, Posting::Posted(_)));
    // An idempotent replay writes nothing, so no event either.
    let replay = l.post_audited(entry.clone(), &amina).await.unwrap();
    assert_eq!(replay, Posting::Replayed(posted.id()));

    let moussa = ctx("moussa", "req-2");
    let reversal = l
        .reverse_audited(posted.id(), "entered twice", &moussa)
        .await
        .unwrap();
    let batch = vec![
        transfer("funds-2", BANK, FUNDS, 10),
        transfer("funds-3", BANK, FUNDS, 20),
        transfer("funds-4", BANK, FUNDS, 30),
    ];
    let many = l
        .post_many_audited(&batch, &ctx("amina", "req-3"))
        .await
        .unwrap();
    // Unaudited calls keep working and write no event.
    l.post(transfer("funds-5", BANK, FUNDS, 5)).await.unwrap();

    let events = all_events(l).await;
    assert_eq!(events.len(), 6, "{events:#?}");
    let e = &events[0];
    assert_eq!(
        (e.seq, e.action.as_str(), e.object_type.as_str()),
        (1, "ledger.open_account", "account")
    );
    assert_eq!(e.object_id, "assets:float:wave");
    assert_eq!(e.digest, change_digest(&account_change(&spec)));
    assert_eq!(e.prev_hash, GENESIS_HASH);

    let e = &events[1];
    assert_eq!(
        (e.action.as_str(), e.object_type.as_str()),
        ("ledger.post", "entry")
    );
    assert_eq!(e.object_id, posted.id().to_string());
    assert_eq!(e.digest, change_digest(&entry_change(&entry)));
    assert_eq!(
        (
            e.actor_id,
            e.actor.as_str(),
            e.role.as_str(),
            e.request_id.as_str()
        ),
        (Some(7), "amina", "finance_officer", "req-1")
    );
    assert!(e.at >= before - chrono::Duration::seconds(1) && e.at <= Utc::now());

    let e = &events[2];
    assert_eq!(e.action, "ledger.reverse");
    assert_eq!(e.object_id, reversal.id().to_string());
    assert_eq!(
        (e.actor.as_str(), e.request_id.as_str()),
        ("moussa", "req-2")
    );
    let reversal_entry = l.entry(reversal.id()).await.unwrap();
    assert_eq!(reversal_entry.reverses, Some(posted.id()));

    for (e, p) in events[3..].iter().zip(&many) {
        assert_eq!(e.action, "ledger.post");
        assert_eq!(e.object_id, p.id().to_string());
        assert_eq!(e.request_id, "req-3");
    }
    for w in events.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1);
        assert_eq!(w[1].prev_hash, w[0].hash);
    }
    let v = l.verify_audit().await.unwrap();
    assert!(v.is_intact(), "{v:?}");
    assert_eq!(v.events, 6);
    assert_eq!(v.head, Some(events[5].anchor()));
    assert_books_sound(l).await;
    db.cleanup().await;
}

#[tokio::test]
async fn a_refused_change_writes_no_event_and_no_entry() {
    let db = TestDb::new().await;
    let l = &db.ledger;
    let amina = ctx("amina", "req-1");
    l.post_audited(transfer("funds", BANK, FUNDS, 1000), &amina)
        .await
        .unwrap();

    // Paying out of an empty float (must not go negative).
    let err = l
        .post_audited(transfer("pay", PAYOUT, FLOAT, 10), &amina)
        .await
        .unwrap_err();
    assert!(
        matches!(err, LedgerError::InsufficientBalance { .. }),
        "{err:?}"
    );
    // A batch with one bad entry: all or nothing, events included.
    let err = l
        .post_many_audited(
            &[
                transfer("ok-1", BANK, FUNDS, 1),
                transfer("bad", PAYOUT, FLOAT, 1),
            ],
            &amina,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::BatchRejected { index: 1, .. }));
    // Conflicting content for a used key.
    let err = l
        .post_audited(transfer("funds", BANK, FUNDS, 999), &amina)
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::IdempotencyConflict { .. }));
    // A reversal the balance rules refuse (the funds were spent).
    let spent = l
        .post_audited(transfer("topup", FLOAT, BANK, 1000), &amina)
        .await
        .unwrap();
    l.post_audited(transfer("payout", PAYOUT, FLOAT, 600), &amina)
        .await
        .unwrap();
    let err = l
        .reverse_audited(spent.id(), "mistake", &amina)
        .await
        .unwrap_err();
    assert!(
        matches!(err, LedgerError::InsufficientBalance { .. }),
        "{err:?}"
    );
    // An invalid actor is refused before anything is written.
    let err = l
        .post_audited(transfer("x", BANK, FUNDS, 1), &ctx(" ", "req"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("audit.actor"), "{err}");
    // Opening an existing account with other settings.
    let err = l
        .open_account_audited(
            AccountSpec::new(
                AccountCode::parse(FLOAT).unwrap(),
                AccountType::Asset,
                xof(),
                BalanceRule::MayOverdraw,
            )
            .unwrap(),
            &amina,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::AccountExists { .. }));

    assert_eq!(entry_count(l).await, 3);
    let events = all_events(l).await;
    assert_eq!(events.len(), 3);
    assert!(events.iter().all(|e| e.action == "ledger.post"));
    assert_intact(l, 3).await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_writes_one_event_per_accepted_entry() {
    let db = TestDb::with_pool(8).await;
    let l = db.ledger.clone();
    l.post(transfer("seed", FLOAT, "income:seed", 50))
        .await
        .unwrap();
    let committer = Committer::start(l.clone(), 16);
    // 40 payments of 5 out of a float holding 50: ten are accepted. Every other one is
    // posted without an audit context.
    let mut handles = Vec::new();
    for i in 0..40 {
        let c = committer.clone();
        handles.push(tokio::spawn(async move {
            let pay = transfer(&format!("pay-{i}"), PAYOUT, FLOAT, 5);
            let audited = i % 2 == 0;
            let r = if audited {
                c.post_audited(pay, ctx("teller", &format!("req-{i}")))
                    .await
            } else {
                c.post(pay).await
            };
            (i, audited, r)
        }));
    }
    let mut accepted_audited = BTreeSet::new();
    let mut accepted = 0;
    for h in handles {
        let (i, audited, r) = h.await.unwrap();
        match r {
            Ok(p) => {
                accepted += 1;
                if audited {
                    accepted_audited.insert((p.id().to_string(), format!("req-{i}")));
                }
            }
            Err(LedgerError::InsufficientBalance { .. }) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(accepted, 10);
    let events: BTreeSet<(String, String)> = all_events(&l)
        .await
        .into_iter()
        .map(|e| (e.object_id, e.request_id))
        .collect();
    assert_eq!(events, accepted_audited);
    assert_intact(&l, accepted_audited.len() as u64).await;
    assert_books_sound(&l).await;
    db.cleanup().await;
}

#[tokio::test]
async fn the_database_refuses_update_and_delete_of_events() {
    let db = TestDb::new().await;
    let l = &db.ledger;
    l.post_audited(transfer("k", BANK, FUNDS, 5), &ctx("amina", "r"))
        .await
        .unwrap();
    for sql in [
        "UPDATE audit_events SET actor = 'mallory'",
        "DELETE FROM audit_events",
    ] {
        let msg = db.raw(&[sql]).await.unwrap_err();
        assert!(msg.contains("append-only"), "{sql}: {msg}");
    }
    if db.is_postgres() {
        let msg = db.raw(&["TRUNCATE audit_events"]).await.unwrap_err();
        assert!(msg.contains("append-only"), "{msg}");
    }
    let events = all_events(l).await;
    assert_eq!(events[0].actor, "amina");
    assert_intact(l, 1).await;
    db.cleanup().await;
}

/// Five audited posts, then the append-only triggers dropped, as an attacker with DDL rights
/// would.
async fn five_events_unprotected() -> TestDb {
    let db = TestDb::new().await;
    for i in 0..5 {
        db.ledger
            .post_audited(
                transfer(&format!("k{i}"), BANK, FUNDS, 10 + i),
                &ctx("amina", &format!("req-{i}")),
            )
            .await
            .unwrap();
    }
    assert_intact(&db.ledger, 5).await;
    let drop: &[&str] = if db.is_postgres() {
        &["DROP TRIGGER audit_events_append_only ON audit_events"]
    } else {
        &[
            "DROP TRIGGER audit_events_no_update",
            "DROP TRIGGER audit_events_no_delete",
        ]
    };
    db.raw(drop).await.unwrap();
    db
}

async fn first_break(l: &Ledger) -> ChainBreak {
    l.verify_audit()
        .await
        .unwrap()
        .broken
        .expect("the tampering was not detected")
}

#[tokio::test]
async fn tamper_an_edited_event_is_named() {
    let db = five_events_unprotected().await;
    db.raw(&["UPDATE audit_events SET object_id = 'forged' WHERE seq = 3"])
        .await
        .unwrap();
    let b = first_break(&db.ledger).await;
    assert_eq!(b, ChainBreak::Edited { seq: 3 });
    assert_eq!(
        b.to_string(),
        "audit event 3 was edited: its hash does not match its content"
    );
    let v = db.ledger.verify_audit().await.unwrap();
    assert_eq!(v.events, 2, "events checked before the break");
    db.cleanup().await;

    // The time is covered too.
    let db = five_events_unprotected().await;
    let sql = if db.is_postgres() {
        "UPDATE audit_events SET at = at + interval '1 microsecond' WHERE seq = 4"
    } else {
        "UPDATE audit_events SET at = at + 1 WHERE seq = 4"
    };
    db.raw(&[sql]).await.unwrap();
    assert_eq!(first_break(&db.ledger).await, ChainBreak::Edited { seq: 4 });
    db.cleanup().await;
}

#[tokio::test]
async fn tamper_a_deleted_event_is_named() {
    let db = five_events_unprotected().await;
    db.raw(&["DELETE FROM audit_events WHERE seq = 3"])
        .await
        .unwrap();
    let b = first_break(&db.ledger).await;
    assert_eq!(b, ChainBreak::Missing { seq: 3, next: 4 });
    assert!(
        b.to_string()
            .starts_with("audit event 3 is missing (deleted)"),
        "{b}"
    );
    db.cleanup().await;

    // Deleted and the rest renumbered to close the gap: event 3 is now out of place.
    let db = five_events_unprotected().await;
    db.raw(&[
        "DELETE FROM audit_events WHERE seq = 3",
        "UPDATE audit_events SET seq = seq - 1 WHERE seq = 4",
        "UPDATE audit_events SET seq = seq - 1 WHERE seq = 5",
    ])
    .await
    .unwrap();
    assert_eq!(
        first_break(&db.ledger).await,
        ChainBreak::Reordered { seq: 3 }
    );
    db.cleanup().await;
}

#[tokio::test]
async fn tamper_reordered_events_are_named() {
    let db = five_events_unprotected().await;
    // Swap the seq values of events 2 and 4 (via a free seq: the primary key).
    db.raw(&[
        "UPDATE audit_events SET seq = 1000 WHERE seq = 2",
        "UPDATE audit_events SET seq = 2 WHERE seq = 4",
        "UPDATE audit_events SET seq = 4 WHERE seq = 1000",
    ])
    .await
    .unwrap();
    let b = first_break(&db.ledger).await;
    assert_eq!(b, ChainBreak::Reordered { seq: 2 });
    assert!(
        b.to_string().starts_with("audit event 2 was reordered"),
        "{b}"
    );
    db.cleanup().await;
}

#[tokio::test]
async fn tamper_a_truncated_tail_is_found_only_against_a_recorded_head() {
    let db = five_events_unprotected().await;
    let head = db.ledger.verify_audit().await.unwrap().head.unwrap();
    assert_eq!(head.seq, 5);
    db.raw(&["DELETE FROM audit_events WHERE seq = 5"])
        .await
        .unwrap();
    // The chain alone is intact: a shorter chain is still a valid chain.
    assert_intact(&db.ledger, 4).await;
    // Against the head recorded earlier, the deletion shows.
    let v = db.ledger.verify_audit_anchored(Some(&head)).await.unwrap();
    let b = v.broken.unwrap();
    assert_eq!(
        b,
        ChainBreak::Truncated {
            seq: 5,
            anchor_seq: 5
        }
    );
    assert!(b.to_string().starts_with("audit event 5 is missing"), "{b}");
    // And a new event appended after the truncation takes seq 5 with another hash.
    db.ledger
        .post_audited(transfer("k9", BANK, FUNDS, 1), &ctx("mallory", "r"))
        .await
        .unwrap();
    assert_intact(&db.ledger, 5).await;
    let v = db.ledger.verify_audit_anchored(Some(&head)).await.unwrap();
    assert_eq!(v.broken, Some(ChainBreak::AnchorMismatch { seq: 5 }));
    db.cleanup().await;
}

#[tokio::test]
async fn reading_filters_and_pages() {
    let db = TestDb::new().await;
    let l = &db.ledger;
    let t0 = Utc::now() - chrono::Duration::seconds(1);
    let mut ids = Vec::new();
    for i in 0..7 {
        let who = if i % 2 == 0 { "amina" } else { "moussa" };
        let p = l
            .post_audited(
                transfer(&format!("k{i}"), BANK, FUNDS, 10),
                &ctx(who, &format!("req-{i}")),
            )
            .await
            .unwrap();
        ids.push(p.id());
    }
    l.reverse_audited(ids[0], "duplicate", &ctx("moussa", "req-r"))
        .await
        .unwrap();

    let q = |f: fn(&mut AuditQuery)| {
        let mut q = AuditQuery::default();
        f(&mut q);
        q
    };
    let seqs = |events: Vec<AuditEvent>| events.iter().map(|e| e.seq).collect::<Vec<_>>();
    assert_eq!(
        seqs(
            l.audit_events(&q(|q| q.actor = Some("amina".into())))
                .await
                .unwrap()
        ),
        vec![1, 3, 5, 7]
    );
    assert_eq!(
        seqs(
            l.audit_events(&q(|q| q.action = Some("ledger.reverse".into())))
                .await
                .unwrap()
        ),
        vec![8]
    );
    let by_object = l
        .audit_events(&AuditQuery {
            object_type: Some("entry".into()),
            object_id: Some(ids[2].to_string()),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(seqs(by_object), vec![3]);
    assert_eq!(
        l.audit_events(&q(|q| q.object_type = Some("user".into())))
            .await
            .unwrap()
            .len(),
        0
    );
    // Time window: everything since t0, nothing before it or from the future.
    let now = Utc::now() + chrono::Duration::seconds(1);
    let window = |from, to| AuditQuery {
        from,
        to,
        ..AuditQuery::default()
    };
    assert_eq!(
        l.audit_events(&window(Some(t0), Some(now)))
            .await
            .unwrap()
            .len(),
        8
    );
    assert_eq!(
        l.audit_events(&window(None, Some(t0))).await.unwrap().len(),
        0
    );
    assert_eq!(
        l.audit_events(&window(Some(now), None))
            .await
            .unwrap()
            .len(),
        0
    );
    // `at` is inclusive at `from`, exclusive at `to`.
    let third = l.audit_events(&AuditQuery::default()).await.unwrap()[2].clone();
    let at = l.audit_events(&window(Some(third.at), None)).await.unwrap();
    assert!(at.iter().all(|e| e.at >= third.at) && at.iter().any(|e| e.seq == 3));
    let before = l.audit_events(&window(None, Some(third.at))).await.unwrap();
    assert!(before.iter().all(|e| e.at < third.at && e.seq < 3));

    // Keyset paging with a filter.
    let mut pages = Vec::new();
    let mut after = 0;
    loop {
        let page = l
            .audit_events(&AuditQuery {
                actor: Some("moussa".into()),
                after_seq: after,
                limit: 2,
                ..AuditQuery::default()
            })
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        pages.push(seqs(page));
    }
    assert_eq!(pages, vec![vec![2, 4], vec![6, 8]]);

    for limit in [0, MAX_PAGE + 1] {
        let err = l
            .audit_events(&AuditQuery {
                limit,
                ..AuditQuery::default()
            })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("limit"), "{err}");
    }
    db.cleanup().await;
}

// --- randomized ------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Post {
        key: u8,
        dr: usize,
        cr: usize,
        amount: i64,
    },
    Many(Vec<(u8, usize, usize, i64)>),
    Reverse(usize),
}

const ACCOUNTS: &[&str] = &[BANK, FUNDS, FLOAT, PAYOUT, "liabilities:entitlements:H1"];

fn op() -> impl Strategy<Value = Op> {
    let spec = (0u8..12, 0..ACCOUNTS.len(), 0..ACCOUNTS.len(), 1i64..300)
        .prop_filter("two accounts", |(_, d, c, _)| d != c);
    prop_oneof![
        4 => spec.clone().prop_map(|(key, dr, cr, amount)| Op::Post { key, dr, cr, amount }),
        2 => prop::collection::vec(spec, 1..4).prop_map(Op::Many),
        1 => (0usize..32).prop_map(Op::Reverse),
    ]
}

async fn run(ops: Vec<Op>) {
    let db = TestDb::new().await;
    let l = &db.ledger;
    l.post_audited(
        transfer("seed", BANK, "income:seed", 1000),
        &ctx("seed", "r0"),
    )
    .await
    .unwrap();
    let mut written: Vec<EntryId> = Vec::new();
    let mut posted: BTreeSet<String> = BTreeSet::new();
    let mut record = |p: &Posting, written: &mut Vec<EntryId>| {
        if let Posting::Posted(id) = p {
            written.push(*id);
            posted.insert(id.to_string());
        }
    };
    let tx = |key: u8, dr: usize, cr: usize, amount: i64| {
        transfer(&format!("k{key}"), ACCOUNTS[dr], ACCOUNTS[cr], amount)
    };
    let who = ctx("random", "r");
    for op in ops {
        match op {
            Op::Post {
                key,
                dr,
                cr,
                amount,
            } => {
                if let Ok(p) = l.post_audited(tx(key, dr, cr, amount), &who).await {
                    record(&p, &mut written);
                }
            }
            Op::Many(specs) => {
                let entries: Vec<_> = specs.iter().map(|&(k, d, c, a)| tx(k, d, c, a)).collect();
                if let Ok(ps) = l.post_many_audited(&entries, &who).await {
                    for p in &ps {
                        record(p, &mut written);
                    }
                }
            }
            Op::Reverse(i) => {
                if written.is_empty() {
                    continue;
                }
                let target = written[i % written.len()];
                if let Ok(p) = l.reverse_audited(target, "random", &who).await {
                    record(&p, &mut written);
                }
            }
        }
    }
    let events = all_events(l).await;
    // The seed's event, then one per entry written; none for refusals or replays.
    assert_eq!(events.len(), posted.len() + 1);
    assert_eq!(entry_count(l).await, events.len() as u64);
    let objects: BTreeSet<String> = events[1..].iter().map(|e| e.object_id.clone()).collect();
    assert_eq!(objects, posted);
    assert_intact(l, events.len() as u64).await;
    assert_books_sound(l).await;
    db.cleanup().await;
}

fn cases() -> u32 {
    std::env::var("CVA_PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(12, |n: u32| n.div_ceil(2))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 100, ..ProptestConfig::default() })]

    #[test]
    fn events_match_accepted_posts_and_the_chain_verifies(ops in prop::collection::vec(op(), 1..25)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        rt.block_on(run(ops));
    }
}
