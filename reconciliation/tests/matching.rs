//! Matching payments against a statement: each rule, each category, reversals, the period,
//! one-to-one pairing and determinism (proptests over small random inputs).
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;

use chrono::{DateTime, Duration, TimeZone, Utc};
use cva_ledger::money::Currency;
use cva_reconciliation::matching::{needs_payee_key, needs_row_msisdn, normalize_msisdn};
use cva_reconciliation::{
    reconcile, reconcile_with, Category, Item, MatchOptions, Payment, PaymentStatus,
    Reconciliation, Rule, StatementLine, StatementStatus,
};
use proptest::prelude::*;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 3, 1, 10, 0, 0).unwrap()
}

fn pay(line: i64, tx: Option<&str>, key: Option<&str>, amount: i64) -> Payment {
    Payment {
        line,
        provider_tx: tx.map(str::to_owned),
        payee_key: key.map(str::to_owned),
        amount_minor: amount,
        fee_minor: 100,
        currency: "XOF".into(),
        status: PaymentStatus::Completed,
        at: t0(),
    }
}

fn row(
    row: usize,
    tx: &str,
    reference: Option<&str>,
    msisdn: Option<&str>,
    amount: i64,
) -> StatementLine {
    StatementLine {
        row,
        transaction_id: tx.into(),
        reference: reference.map(str::to_owned),
        msisdn: msisdn.map(str::to_owned),
        amount_minor: amount,
        fee_minor: 100,
        currency: Currency::parse("XOF").unwrap(),
        status: StatementStatus::Completed,
        at: t0(),
        balance_after_minor: None,
    }
}

fn run(payments: &[Payment], statement: &[StatementLine]) -> Reconciliation {
    reconcile(payments, statement, &MatchOptions::default())
}

/// (category, rule, payment, rows) of an item.
type Summary4 = (Category, Option<Rule>, Option<i64>, Vec<usize>);

/// (category, rule, payment, rows) of every item.
fn triples(r: &Reconciliation) -> Vec<Summary4> {
    r.items
        .iter()
        .map(|i| (i.category, i.rule, i.payment, i.statement_rows.clone()))
        .collect()
}

fn only(r: &Reconciliation) -> &Item {
    assert_eq!(r.items.len(), 1, "{:#?}", r.items);
    &r.items[0]
}

#[test]
fn rule_provider_transaction_id() {
    let r = run(
        &[pay(1, Some("TX1"), None, 500)],
        &[row(2, "TX1", None, None, 500)],
    );
    assert_eq!(
        triples(&r),
        [(
            Category::Matched,
            Some(Rule::ProviderTransactionId),
            Some(1),
            vec![2]
        )]
    );
    assert_eq!(r.summary.matched, 1);
}

#[test]
fn provider_transaction_id_beats_reference() {
    // Row 2 names line 1 by reference, but row 3 has line 1's transaction id.
    let r = run(
        &[pay(1, Some("TX1"), None, 500)],
        &[
            row(2, "TXX", Some("1"), None, 500),
            row(3, "TX1", None, None, 500),
        ],
    );
    let t = triples(&r);
    assert_eq!(
        t[0],
        (
            Category::Matched,
            Some(Rule::ProviderTransactionId),
            Some(1),
            vec![3]
        )
    );
    // Row 2 pays line 1 a second time: unexpected, carrying the line id.
    assert_eq!(
        t[1],
        (Category::UnexpectedInStatement, None, Some(1), vec![2])
    );
}

#[test]
fn rule_reference() {
    let r = run(
        &[pay(12, None, None, 500)],
        &[row(2, "TXA", Some(" 0012 "), None, 500)],
    );
    assert_eq!(
        triples(&r),
        [(Category::Matched, Some(Rule::Reference), Some(12), vec![2])]
    );
    // Not a line id: not matched by reference.
    let r = run(
        &[pay(12, None, None, 500)],
        &[row(2, "TXA", Some("L-12"), None, 500)],
    );
    assert_eq!(r.summary.missing_from_statement, 1);
    assert_eq!(r.summary.unexpected_in_statement, 1);
}

#[test]
fn rule_payee_amount_date_takes_the_nearest_row_in_the_window() {
    let mut p = pay(1, None, Some("22376000001"), 500);
    p.at = t0() + Duration::hours(10);
    let mut near = row(3, "TXN", None, Some("+223 76-00-00-01"), 500);
    near.at = t0() + Duration::hours(9);
    let far = row(2, "TXF", None, Some("0022376000001"), 500);
    let r = run(&[p.clone()], &[far, near]);
    let t = triples(&r);
    assert_eq!(
        t[0],
        (
            Category::Matched,
            Some(Rule::PayeeAmountDate),
            Some(1),
            vec![3]
        )
    );
    assert_eq!(t[1], (Category::UnexpectedInStatement, None, None, vec![2]));

    // Outside the window: no match.
    let mut late = row(2, "TXL", None, Some("22376000001"), 500);
    late.at = p.at + Duration::days(3) + Duration::seconds(1);
    let r = run(&[p.clone()], &[late.clone()]);
    assert_eq!(r.summary.missing_from_statement, 1);
    assert_eq!(r.summary.unexpected_in_statement, 1);
    // A wider window matches it.
    let opts = MatchOptions {
        window: Duration::days(4),
        ..MatchOptions::default()
    };
    assert_eq!(
        reconcile(&[p.clone()], &[late.clone()], &opts)
            .summary
            .matched,
        1
    );

    // Amount must be exact, payee the same.
    let r = run(&[p.clone()], &[row(2, "T", None, Some("22376000001"), 501)]);
    assert_eq!(r.summary.matched + r.summary.amount_mismatch, 0);
    let r = run(&[p], &[row(2, "T", None, Some("22376000002"), 500)]);
    assert_eq!(r.summary.matched, 0);
}

#[test]
fn fallback_ties_go_to_the_lowest_line_and_row() {
    let k = Some("1");
    let payments = [pay(7, None, k, 500), pay(3, None, k, 500)];
    let statement = [row(9, "A", None, k, 500), row(4, "B", None, k, 500)];
    let r = run(&payments, &statement);
    assert_eq!(
        triples(&r),
        [
            (
                Category::Matched,
                Some(Rule::PayeeAmountDate),
                Some(3),
                vec![4]
            ),
            (
                Category::Matched,
                Some(Rule::PayeeAmountDate),
                Some(7),
                vec![9]
            ),
        ]
    );
}

#[test]
fn fallback_is_global_nearest_first() {
    // Line 1 is earlier and would grab row 2 if payments went in order; line 2 is nearer.
    let k = Some("1");
    let mut p1 = pay(1, None, k, 500);
    p1.at = t0();
    let mut p2 = pay(2, None, k, 500);
    p2.at = t0() + Duration::hours(10);
    let mut r2 = row(2, "A", None, k, 500);
    r2.at = t0() + Duration::hours(9);
    let r = run(&[p1, p2], &[r2]);
    assert_eq!(
        triples(&r),
        [
            (Category::MissingFromStatement, None, Some(1), vec![]),
            (
                Category::Matched,
                Some(Rule::PayeeAmountDate),
                Some(2),
                vec![2]
            ),
        ]
    );
}

#[test]
fn fallback_leaves_rows_whose_reference_names_a_known_line() {
    let k = Some("1");
    // Row 2 names line 5 (matched by transaction id to row 3): it is not line 1's by payee.
    let r = run(
        &[pay(1, None, k, 500), pay(5, Some("T5"), None, 500)],
        &[
            row(2, "A", Some("5"), k, 500),
            row(3, "T5", None, None, 500),
        ],
    );
    let t = triples(&r);
    assert_eq!(
        t[0],
        (Category::MissingFromStatement, None, Some(1), vec![])
    );
    assert_eq!(t[1].0, Category::Matched);
    assert_eq!(
        t[2],
        (Category::UnexpectedInStatement, None, Some(5), vec![2])
    );
}

#[test]
fn amount_and_currency_mismatch() {
    let r = run(
        &[pay(1, Some("T"), None, 500)],
        &[row(2, "T", None, None, 400)],
    );
    let i = only(&r);
    assert_eq!(i.category, Category::AmountMismatch);
    assert!(
        i.detail.contains("ours 500 XOF, provider 400 XOF"),
        "{}",
        i.detail
    );

    let mut p = pay(1, Some("T"), None, 500);
    p.currency = "USD".into();
    let r = run(&[p], &[row(2, "T", None, None, 500)]);
    assert_eq!(only(&r).category, Category::AmountMismatch);
}

#[test]
fn fee_mismatch() {
    let mut s = row(2, "T", None, None, 500);
    s.fee_minor = 150;
    let r = run(&[pay(1, Some("T"), None, 500)], &[s]);
    let i = only(&r);
    assert_eq!(i.category, Category::FeeMismatch);
    assert!(
        i.detail.contains("fee: ours 100, provider 150"),
        "{}",
        i.detail
    );
}

#[test]
fn status_mismatch_both_ways() {
    for (ours, theirs, agree) in [
        (PaymentStatus::Completed, StatementStatus::Completed, true),
        (PaymentStatus::Completed, StatementStatus::Failed, false),
        (PaymentStatus::Completed, StatementStatus::Pending, false),
        (PaymentStatus::Failed, StatementStatus::Completed, false),
        (PaymentStatus::Failed, StatementStatus::Failed, true),
        (PaymentStatus::Unknown, StatementStatus::Completed, false),
        (PaymentStatus::Unknown, StatementStatus::Failed, false),
        (PaymentStatus::InFlight, StatementStatus::Completed, false),
        (PaymentStatus::InFlight, StatementStatus::Pending, true),
    ] {
        let mut p = pay(1, Some("T"), None, 500);
        p.status = ours;
        let mut s = row(2, "T", None, None, 500);
        s.status = theirs;
        s.fee_minor = 0; // not checked unless both say paid
        let want = if !agree {
            Category::StatusMismatch
        } else if ours == PaymentStatus::Completed {
            Category::FeeMismatch
        } else {
            Category::Matched
        };
        let r = run(&[p], &[s]);
        assert_eq!(only(&r).category, want, "{ours:?} vs {theirs:?}");
    }
}

#[test]
fn missing_from_statement_but_not_failed_lines() {
    let mut failed = pay(2, Some("T2"), None, 500);
    failed.status = PaymentStatus::Failed;
    let mut unknown = pay(3, Some("T3"), None, 500);
    unknown.status = PaymentStatus::Unknown;
    let r = run(&[pay(1, Some("T1"), None, 500), failed, unknown], &[]);
    assert_eq!(
        triples(&r),
        [
            (Category::MissingFromStatement, None, Some(1), vec![]),
            (Category::MissingFromStatement, None, Some(3), vec![]),
        ]
    );
    assert_eq!(r.summary.skipped_payments, 1);
}

#[test]
fn unexpected_only_when_money_moved() {
    let mut failed = row(3, "F", None, None, 500);
    failed.status = StatementStatus::Failed;
    let mut pending = row(4, "P", None, None, 500);
    pending.status = StatementStatus::Pending;
    let r = run(
        &[],
        &[row(2, "X", None, Some("22376000001"), 500), failed, pending],
    );
    let i = only(&r);
    assert_eq!(
        (i.category, i.payment, i.statement_rows.clone()),
        (Category::UnexpectedInStatement, None, vec![2])
    );
    assert!(!i.detail.contains("22376000001"));
    assert_eq!(r.summary.skipped_rows, 2);
}

#[test]
fn duplicate_in_statement() {
    let r = run(
        &[pay(1, Some("T"), None, 500)],
        &[
            row(5, "T", None, None, 500),
            row(2, "T", None, None, 500),
            row(9, "T", None, None, 500),
        ],
    );
    assert_eq!(
        triples(&r),
        [
            (
                Category::Matched,
                Some(Rule::ProviderTransactionId),
                Some(1),
                vec![2]
            ),
            (Category::DuplicateInStatement, None, Some(1), vec![5]),
            (Category::DuplicateInStatement, None, Some(1), vec![9]),
        ]
    );
    assert_eq!(r.summary.duplicate_in_statement, 2);
}

fn reversal(row_no: usize, tx: &str, reference: Option<&str>, amount: i64) -> StatementLine {
    let mut s = row(row_no, tx, reference, None, -amount);
    s.status = StatementStatus::Reversal;
    s.fee_minor = 0;
    s
}

#[test]
fn reversal_rows_attach_to_the_original_payment() {
    // By the original's transaction id, the original row matched by reference.
    let r = run(
        &[pay(1, None, None, 500)],
        &[
            row(2, "TX1", Some("1"), None, 500),
            reversal(3, "TX1-rev", None, 500),
        ],
    );
    assert_eq!(
        triples(&r),
        [(
            Category::ReversedByProvider,
            Some(Rule::Reference),
            Some(1),
            vec![2, 3]
        )]
    );
    // The original not on the statement: by our provider_tx, then by reference.
    let r = run(
        &[pay(1, Some("TX1"), None, 500)],
        &[reversal(3, "TX1-REV", None, 500)],
    );
    assert_eq!(
        triples(&r),
        [(
            Category::ReversedByProvider,
            Some(Rule::ProviderTransactionId),
            Some(1),
            vec![3]
        )]
    );
    let r = run(
        &[pay(1, None, None, 500)],
        &[reversal(3, "ZZ-REV", Some("1"), 500)],
    );
    assert_eq!(
        triples(&r),
        [(
            Category::ReversedByProvider,
            Some(Rule::Reference),
            Some(1),
            vec![3]
        )]
    );
    // The reversal reusing the original's id is not a duplicate.
    let r = run(
        &[pay(1, Some("TX1"), None, 500)],
        &[
            row(2, "TX1", None, None, 500),
            reversal(3, "TX1", None, 500),
        ],
    );
    assert_eq!(only(&r).category, Category::ReversedByProvider);
}

#[test]
fn reversed_status_row_is_reversed_by_provider() {
    let mut s = row(2, "T", None, None, 500);
    s.status = StatementStatus::Reversed;
    let r = run(&[pay(1, Some("T"), None, 500)], &[s]);
    assert_eq!(only(&r).category, Category::ReversedByProvider);
}

#[test]
fn reversals_of_unknown_movements_are_unexpected() {
    let r = run(
        &[],
        &[
            row(2, "A", None, None, 500),
            reversal(3, "A-REV", None, 500),
            reversal(4, "B-REV", None, 7),
        ],
    );
    assert_eq!(
        triples(&r),
        [
            (Category::UnexpectedInStatement, None, None, vec![2, 3]),
            (Category::UnexpectedInStatement, None, None, vec![4]),
        ]
    );
}

#[test]
fn period_filtering_only_spares_missing_payments() {
    let start = t0();
    let end = t0() + Duration::days(30);
    let mut before = pay(1, Some("T1"), None, 500);
    before.at = start - Duration::seconds(1);
    let mut at_end = pay(2, Some("T2"), None, 500);
    at_end.at = end;
    let mut matched_before = pay(3, Some("T3"), None, 500);
    matched_before.at = start - Duration::days(1);
    let inside = pay(4, Some("T4"), None, 500);
    let opts = MatchOptions {
        only_period: Some((start, end)),
        ..MatchOptions::default()
    };
    let r = reconcile(
        &[before, at_end, matched_before, inside],
        &[row(2, "T3", None, None, 500)],
        &opts,
    );
    assert_eq!(
        triples(&r),
        [
            (
                Category::Matched,
                Some(Rule::ProviderTransactionId),
                Some(3),
                vec![2]
            ),
            (Category::MissingFromStatement, None, Some(4), vec![]),
        ]
    );
    assert_eq!(r.summary.skipped_payments, 2);
}

#[test]
fn custom_payee_key_function() {
    let hash = |m: &str| normalize_msisdn(m).map(|d| format!("h:{d}"));
    let r = reconcile_with(
        &[pay(1, None, Some("h:22376000001"), 500)],
        &[row(2, "A", None, Some("+22376000001"), 500)],
        &MatchOptions::default(),
        hash,
    );
    assert_eq!(only(&r).rule, Some(Rule::PayeeAmountDate));
    assert_eq!(
        normalize_msisdn("+223 (76) 00.00-01").as_deref(),
        Some("22376000001")
    );
    assert_eq!(normalize_msisdn("0022376"), Some("22376".into()));
    assert_eq!(normalize_msisdn("abc"), None);
    assert_eq!(normalize_msisdn(" "), None);
}

#[test]
fn summary_counts_items() {
    let r = run(
        &[pay(1, Some("T"), None, 500), pay(2, Some("U"), None, 500)],
        &[row(2, "T", None, None, 400), row(3, "V", None, None, 1)],
    );
    assert_eq!(r.summary.items(), r.items.len());
    for c in Category::ALL {
        assert_eq!(
            r.summary.count(c),
            r.items.iter().filter(|i| i.category == c).count()
        );
    }
}

// ---- properties -------------------------------------------------------------------------

fn arb_payment() -> impl Strategy<Value = Payment> {
    (
        1i64..12,
        prop::option::of(0u8..6),
        prop::option::of(0u8..3),
        prop::sample::select(vec![100i64, 200]),
        prop::sample::select(vec![
            PaymentStatus::Completed,
            PaymentStatus::Failed,
            PaymentStatus::Unknown,
            PaymentStatus::InFlight,
        ]),
        0i64..(6 * 24),
    )
        .prop_map(|(line, tx, key, amount, status, hours)| Payment {
            line,
            provider_tx: tx.map(|t| format!("T{t}")),
            payee_key: key.map(|k| format!("22370{k}")),
            amount_minor: amount,
            fee_minor: 0,
            currency: "XOF".into(),
            status,
            at: t0() + Duration::hours(hours),
        })
}

fn arb_row() -> impl Strategy<Value = (u8, Option<u8>, Option<u8>, i64, StatementStatus, i64)> {
    (
        0u8..8,
        prop::option::of(0u8..14),
        prop::option::of(0u8..3),
        prop::sample::select(vec![100i64, 200]),
        prop::sample::select(StatementStatus::ALL.to_vec()),
        0i64..(6 * 24),
    )
}

/// Payments with unique line ids, rows with unique row numbers.
fn arb_input() -> impl Strategy<Value = (Vec<Payment>, Vec<StatementLine>)> {
    (
        prop::collection::vec(arb_payment(), 0..10),
        prop::collection::vec(arb_row(), 0..12),
    )
        .prop_map(|(mut payments, rows)| {
            let mut seen = HashSet::new();
            payments.retain(|p| seen.insert(p.line));
            let statement = rows
                .into_iter()
                .enumerate()
                .map(|(i, (tx, reference, key, amount, status, hours))| {
                    let tx = if status == StatementStatus::Reversal {
                        format!("T{tx}-REV")
                    } else {
                        format!("T{tx}")
                    };
                    let mut s = row(
                        i + 2,
                        &tx,
                        reference.map(|r| r.to_string()).as_deref(),
                        key.map(|k| format!("+22370{k}")).as_deref(),
                        amount,
                    );
                    s.status = status;
                    s.fee_minor = 0;
                    s.at = t0() + Duration::hours(hours);
                    s
                })
                .collect();
            (payments, statement)
        })
}

fn sorted(mut r: Reconciliation) -> Reconciliation {
    r.items.sort_by(|a, b| {
        (a.payment, &a.statement_rows, a.category, &a.detail).cmp(&(
            b.payment,
            &b.statement_rows,
            b.category,
            &b.detail,
        ))
    });
    r
}

proptest! {
    #[test]
    fn never_one_row_to_two_payments_nor_one_payment_to_two_rows(
        (payments, statement) in arb_input()
    ) {
        let r = reconcile(&payments, &statement, &MatchOptions::default());
        let mut paired_payments = HashSet::new();
        let mut paired_rows = HashSet::new();
        let mut all_rows = HashSet::new();
        for i in &r.items {
            for &row in &i.statement_rows {
                prop_assert!(all_rows.insert(row), "row {row} in two items: {:#?}", r.items);
            }
            if i.category.is_pair() || i.category == Category::ReversedByProvider {
                let line = i.payment.unwrap();
                prop_assert!(paired_payments.insert(line), "line {line} twice: {:#?}", r.items);
                for &row in &i.statement_rows {
                    prop_assert!(paired_rows.insert(row));
                }
            }
            if i.category == Category::MissingFromStatement {
                prop_assert!(paired_payments.insert(i.payment.unwrap()));
            }
            if i.rule == Some(Rule::PayeeAmountDate) && i.category.is_pair() {
                let p = payments.iter().find(|p| Some(p.line) == i.payment).unwrap();
                let s = statement.iter().find(|s| s.row == i.statement_rows[0]).unwrap();
                prop_assert_eq!(p.amount_minor, s.amount_minor);
                prop_assert!((p.at - s.at).abs() <= Duration::days(3));
            }
        }
        prop_assert_eq!(r.summary.items(), r.items.len());
        prop_assert_eq!(
            r.items.iter().filter(|i| i.payment.is_some() && !matches!(i.category, Category::UnexpectedInStatement | Category::DuplicateInStatement)).count()
                + r.summary.skipped_payments,
            payments.len()
        );
    }

    #[test]
    fn only_the_keys_needs_payee_key_names_are_ever_read(
        (payments, statement) in arb_input()
    ) {
        let opts = MatchOptions::default();
        let needed: HashSet<usize> = needs_payee_key(&payments, &statement).into_iter().collect();
        let mut stripped = payments.clone();
        for (i, p) in stripped.iter_mut().enumerate() {
            if !needed.contains(&i) {
                p.payee_key = None;
            }
        }
        prop_assert_eq!(
            reconcile(&stripped, &statement, &opts),
            reconcile(&payments, &statement, &opts)
        );
    }

    #[test]
    fn only_the_rows_needs_row_msisdn_names_are_ever_read(
        (payments, statement) in arb_input()
    ) {
        let opts = MatchOptions::default();
        let needed: HashSet<usize> = needs_row_msisdn(&payments, &statement).into_iter().collect();
        let mut stripped = statement.clone();
        for (i, s) in stripped.iter_mut().enumerate() {
            if !needed.contains(&i) {
                s.msisdn = None;
            }
        }
        prop_assert_eq!(
            reconcile(&payments, &stripped, &opts),
            reconcile(&payments, &statement, &opts)
        );
    }

    #[test]
    fn shuffled_inputs_give_the_same_result(
        (payments, statement) in arb_input(),
        seed in any::<u64>(),
    ) {
        let opts = MatchOptions::default();
        let a = reconcile(&payments, &statement, &opts);
        prop_assert_eq!(&a, &reconcile(&payments, &statement, &opts), "not idempotent");
        let mut p2 = payments.clone();
        let mut s2 = statement.clone();
        shuffle(&mut p2, seed);
        shuffle(&mut s2, seed.rotate_left(17));
        let b = reconcile(&p2, &s2, &opts);
        prop_assert_eq!(sorted(a), sorted(b));
    }
}

/// Fisher–Yates with a xorshift generator.
fn shuffle<T>(v: &mut [T], seed: u64) {
    let mut x = seed | 1;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
}
