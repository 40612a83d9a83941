//! Property tests: random sequences of posts, batches (atomic and independent), reversals,
//! idempotent replays, conflicts and refused entries, checked after every step against an
//! in-memory model of the ledger. Runs on SQLite, and on PostgreSQL with
//! `CVA_TEST_DATABASE_URL`. `CVA_PROPTEST_CASES` sets the number of cases (default 24).

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use cva_ledger::account::{AccountCode, BalanceRule, OpeningPolicy, Side};
use cva_ledger::entry::{EntryId, NewEntry};
use cva_ledger::money::Currency;
use cva_ledger::posting::Posting;
use cva_ledger::testing::*;
use cva_ledger::{Ledger, LedgerError};
use proptest::prelude::*;

const ACCOUNTS: &[&str] = &[
    "assets:bank",                   // protected
    "funds:p:mpca",                  // protected
    "expense:transfers:p:mpca",      // may overdraw
    "liabilities:entitlements:H1",   // protected
    "liabilities:entitlements:H2",   // protected
    "liabilities:in-transit:orange", // protected
    "assets:float:orange",           // protected
    "income:other",                  // may overdraw
];

#[derive(Debug, Clone)]
struct Spec {
    key: u8,
    dr: usize,
    cr: usize,
    amount: i64,
    usd: bool,
    variant: u8,
}

#[derive(Debug, Clone)]
enum Op {
    Post(Spec),
    Many(Vec<Spec>),
    Independent(Vec<Spec>),
    Reverse(usize),
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0u8..10,
        0..ACCOUNTS.len(),
        0..ACCOUNTS.len(),
        1i64..400,
        prop::bool::weighted(0.08),
        0u8..2,
    )
        .prop_filter("two different accounts", |(_, d, c, _, _, _)| d != c)
        .prop_map(|(key, dr, cr, amount, usd, variant)| Spec {
            key,
            dr,
            cr,
            amount,
            usd,
            variant,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => spec().prop_map(Op::Post),
        2 => prop::collection::vec(spec(), 1..6).prop_map(Op::Many),
        2 => prop::collection::vec(spec(), 1..6).prop_map(Op::Independent),
        1 => (0usize..64).prop_map(Op::Reverse),
    ]
}

fn to_entry(s: &Spec) -> NewEntry {
    let cur = if s.usd { usd() } else { xof() };
    let description = if s.variant == 0 { "a" } else { "b" };
    try_entry(
        &format!("k{}", s.key),
        description,
        &[
            (ACCOUNTS[s.dr], Side::Debit, s.amount, cur),
            (ACCOUNTS[s.cr], Side::Credit, s.amount, cur),
        ],
    )
    .expect("valid")
}

/// What the model knows about a posted entry.
#[derive(Debug, Clone)]
struct MEntry {
    id: EntryId,
    lines: Vec<(String, Side, i64, Currency)>,
    is_reversal: bool,
    reversed: bool,
}

#[derive(Debug, Clone, Default)]
struct Model {
    /// (debits, credits, currency) per opened account.
    accounts: HashMap<String, (i64, i64, Currency)>,
    /// key → (content, entry index)
    keys: HashMap<String, (Vec<u8>, usize)>,
    entries: Vec<MEntry>,
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Posted,
    Replayed(EntryId),
    Refused,
}

fn content(e: &NewEntry) -> Vec<u8> {
    e.content_digest().to_vec()
}

impl Model {
    fn protected(code: &str) -> bool {
        let policy = OpeningPolicy::default();
        let c = AccountCode::parse(code).expect("code");
        policy.spec_for(&c, xof()).expect("spec").rule == BalanceRule::MustNotGoNegative
    }

    fn normal_debit(code: &str) -> bool {
        code.starts_with("assets") || code.starts_with("expense")
    }

    /// Applies the lines if every rule holds; the model's own statement of the semantics.
    fn try_apply(&mut self, lines: &[(String, Side, i64, Currency)]) -> bool {
        let mut next = self.accounts.clone();
        for (a, side, m, cur) in lines {
            let acc = next.entry(a.clone()).or_insert((0, 0, *cur));
            if acc.2 != *cur {
                return false;
            }
            let total = match side {
                Side::Debit => &mut acc.0,
                Side::Credit => &mut acc.1,
            };
            match total.checked_add(*m) {
                Some(t) => *total = t,
                None => return false,
            }
        }
        for (a, ..) in lines {
            let (d, c, _) = next[a];
            let bal = if Self::normal_debit(a) {
                i128::from(d) - i128::from(c)
            } else {
                i128::from(c) - i128::from(d)
            };
            if Self::protected(a) && bal < 0 {
                return false;
            }
        }
        self.accounts = next;
        true
    }

    fn post(&mut self, e: &NewEntry, id: Option<EntryId>) -> Outcome {
        let key = e.idempotency_key.as_str().to_owned();
        if let Some((c, idx)) = self.keys.get(&key) {
            return if *c == content(e) {
                Outcome::Replayed(self.entries[*idx].id)
            } else {
                Outcome::Refused
            };
        }
        let lines: Vec<_> = e
            .lines
            .iter()
            .map(|l| {
                (
                    l.account.to_string(),
                    l.side,
                    l.amount.minor(),
                    l.amount.currency(),
                )
            })
            .collect();
        if !self.try_apply(&lines) {
            return Outcome::Refused;
        }
        let Some(id) = id else {
            panic!("the ledger refused an entry the model accepts: {e:?}")
        };
        self.keys.insert(key, (content(e), self.entries.len()));
        self.entries.push(MEntry {
            id,
            lines,
            is_reversal: e.reverses.is_some(),
            reversed: false,
        });
        Outcome::Posted
    }
}

fn outcome(r: &Result<Posting, LedgerError>) -> (Outcome, Option<EntryId>) {
    match r {
        Ok(Posting::Posted(id)) => (Outcome::Posted, Some(*id)),
        Ok(Posting::Replayed(id)) => (Outcome::Replayed(*id), None),
        Err(e) => {
            assert!(
                matches!(
                    e,
                    LedgerError::InsufficientBalance { .. }
                        | LedgerError::IdempotencyConflict { .. }
                        | LedgerError::CurrencyMismatch { .. }
                        | LedgerError::AlreadyReversed { .. }
                        | LedgerError::ReversalOfReversal(_)
                        | LedgerError::Overflow { .. }
                ),
                "unexpected error kind: {e:?}"
            );
            (Outcome::Refused, None)
        }
    }
}

async fn check(ledger: &Ledger, model: &Model) {
    assert_books_sound(ledger).await;
    let accounts = ledger.accounts().await.expect("accounts");
    assert_eq!(
        accounts.len(),
        model.accounts.len(),
        "opened accounts differ: {accounts:?} vs {:?}",
        model.accounts
    );
    for a in accounts {
        let (d, c, cur) = model.accounts[a.code.as_str()];
        assert_eq!(
            (a.debits, a.credits, a.currency),
            (d, c, cur),
            "account {}",
            a.code
        );
    }
    assert_eq!(entry_count(ledger).await, model.entries.len() as u64);
}

async fn run(ops: Vec<Op>) {
    let db = TestDb::new().await;
    let l = &db.ledger;
    let mut m = Model::default();
    // Seed money so that protected accounts can move.
    let seed = transfer(
        "seed",
        "expense:transfers:p:mpca",
        "liabilities:entitlements:H1",
        500,
    );
    let p = l.post(seed.clone()).await.expect("seed");
    assert_eq!(m.post(&seed, Some(p.id())), Outcome::Posted);
    let seed2 = transfer("seed2", "assets:bank", "income:other", 800);
    let p = l.post(seed2.clone()).await.expect("seed");
    assert_eq!(m.post(&seed2, Some(p.id())), Outcome::Posted);

    for op in ops {
        match op {
            Op::Post(s) => {
                let e = to_entry(&s);
                let (got, id) = outcome(&l.post(e.clone()).await);
                assert_eq!(got, m.post(&e, id), "post {e:?}");
            }
            Op::Many(specs) => {
                let entries: Vec<NewEntry> = specs.iter().map(to_entry).collect();
                let result = l.post_many(&entries).await;
                let before = m.clone();
                match result {
                    Ok(postings) => {
                        for (e, p) in entries.iter().zip(&postings) {
                            let (got, id) = outcome(&Ok(*p));
                            assert_eq!(got, m.post(e, id), "post_many {e:?}");
                        }
                    }
                    Err(LedgerError::BatchRejected { index, .. }) => {
                        // The model must refuse the same entry after accepting the ones before.
                        let mut trial = before.clone();
                        for e in &entries[..index] {
                            let r = trial.post(e, Some(EntryId(uuid::Uuid::now_v7())));
                            assert_ne!(r, Outcome::Refused, "model refuses an earlier entry {e:?}");
                        }
                        assert_eq!(
                            trial.post(&entries[index], Some(EntryId(uuid::Uuid::now_v7()))),
                            Outcome::Refused
                        );
                        m = before;
                    }
                    Err(e) => panic!("post_many failed: {e:?}"),
                }
            }
            Op::Independent(specs) => {
                let entries: Vec<NewEntry> = specs.iter().map(to_entry).collect();
                let results = l
                    .post_independent(&entries)
                    .await
                    .expect("independent batch");
                for (e, r) in entries.iter().zip(&results) {
                    let (got, id) = outcome(r);
                    assert_eq!(got, m.post(e, id), "independent {e:?}");
                }
            }
            Op::Reverse(i) => {
                if m.entries.is_empty() {
                    continue;
                }
                let idx = i % m.entries.len();
                let target = m.entries[idx].clone();
                let result = l.reverse(target.id, "property test").await;
                if target.is_reversal {
                    assert!(
                        matches!(result, Err(LedgerError::ReversalOfReversal(_))),
                        "{result:?}"
                    );
                } else if target.reversed {
                    assert!(
                        matches!(result, Err(LedgerError::AlreadyReversed { .. })),
                        "{result:?}"
                    );
                } else {
                    let mirrored: Vec<_> = target
                        .lines
                        .iter()
                        .map(|(a, s, x, c)| (a.clone(), s.opposite(), *x, *c))
                        .collect();
                    let mut trial = m.clone();
                    if trial.try_apply(&mirrored) {
                        let p = result.expect("reversal the model accepts");
                        let entry = l.entry(p.id()).await.expect("reversal entry");
                        assert_eq!(entry.reverses, Some(target.id));
                        m = trial;
                        m.keys
                            .insert(entry.idempotency_key.to_string(), (vec![], m.entries.len()));
                        m.entries.push(MEntry {
                            id: p.id(),
                            lines: mirrored,
                            is_reversal: true,
                            reversed: false,
                        });
                        m.entries[idx].reversed = true;
                    } else {
                        assert!(
                            matches!(result, Err(LedgerError::InsufficientBalance { .. })),
                            "{result:?}"
                        );
                    }
                }
            }
        }
        check(l, &m).await;
    }
    db.cleanup().await;
}

fn cases() -> u32 {
    std::env::var("CVA_PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn ledger_matches_its_model(ops in prop::collection::vec(op(), 1..30)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        rt.block_on(run(ops));
    }
}
