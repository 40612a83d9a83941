//! Matching payments (our batch lines) against a provider statement: [`reconcile`], a pure
//! function over in-memory data. Same input, same output: the result does not depend on the
//! order of either slice (given unique line ids and row numbers), and running it twice gives
//! the same [`Reconciliation`].
//!
//! # The rules
//!
//! A payment is matched to at most one statement row and a row to at most one payment. The
//! rules are tried in this order, each only on the payments and rows the previous ones left:
//!
//! 1. [`Rule::ProviderTransactionId`]: the payment's `provider_tx` equals the row's
//!    `transaction_id`.
//! 2. [`Rule::Reference`]: the row's `reference` is the payment's line id (we send the line id as
//!    `requestingOrganisationTransactionReference`, in decimal; surrounding blanks and leading
//!    zeros are accepted, anything else is not a line id). Several rows naming one line: the
//!    lowest row is taken.
//! 3. [`Rule::PayeeAmountDate`] (the fallback): same payee key, same currency, **exactly** the
//!    same amount, and `|payment.at - row.at| <= window` ([`MatchOptions::window`], 3 days by
//!    default). The pairs are taken nearest time first, ties broken by lowest line id, then
//!    lowest row; a row or payment once taken is never taken again. A row whose `reference`
//!    names a known payment line is not a fallback candidate (it belongs to that line). The
//!    row's payee key is computed from its `msisdn` by the key function given to
//!    [`reconcile_with`] ([`reconcile`] uses [`normalize_msisdn`]), so callers who store a keyed
//!    hash of the phone number pass the same hash function here.
//!
//! The rule that matched is recorded in [`Item::rule`].
//!
//! # The statement rows
//!
//! * **Duplicates**: among the non-reversal rows, the first row (lowest row number) of a
//!   `transaction_id` takes part in matching; every further row with that id is one
//!   [`Category::DuplicateInStatement`] item (with the payment the first row matched, if any).
//!   Reversal rows are grouped separately, so a reversal may reuse its original's id.
//! * **Reversals** (status [`Reversal`](StatementStatus::Reversal), money back into the float)
//!   are never matched as payments. Each is attached to its original transaction: the row whose
//!   `transaction_id` is the reversal's without a trailing `-REV` (any case; the id itself if it
//!   has no such suffix); failing that, the payment whose `provider_tx` is that id; failing
//!   that, the payment named by the reversal's `reference`. A payment with a reversal attached,
//!   or matched to a row whose status is [`Reversed`](StatementStatus::Reversed), is
//!   [`Category::ReversedByProvider`] (its rows: the matched row, if any, and the reversals).
//!   A reversal whose original row matched no payment goes into that row's
//!   [`Category::UnexpectedInStatement`] item; a reversal attached to nothing is its own
//!   unexpected item (money came back we cannot place).
//! * **Unmatched rows** that moved money ([`StatementStatus::moves_float`]: completed,
//!   reversed) are [`Category::UnexpectedInStatement`]. Unmatched failed or pending rows moved
//!   nothing and produce no item (counted in [`Summary::skipped_rows`]). An unexpected row whose
//!   reference names a payment already matched elsewhere carries that payment's line id (the
//!   provider may have paid twice).
//!
//! # The categories of a matched pair
//!
//! The first that applies: [`ReversedByProvider`](Category::ReversedByProvider) (see above),
//! then [`StatusMismatch`](Category::StatusMismatch), then
//! [`AmountMismatch`](Category::AmountMismatch) (amount or currency differ), then
//! [`FeeMismatch`](Category::FeeMismatch) (only checked when both sides say paid), else
//! [`Matched`](Category::Matched). The detail lists every difference found.
//!
//! | ours \ provider | completed | failed | pending |
//! |---|---|---|---|
//! | completed | ok | status mismatch | status mismatch |
//! | failed | status mismatch | ok | status mismatch |
//! | unknown | status mismatch | status mismatch | status mismatch |
//! | in flight | status mismatch | status mismatch | ok |
//!
//! (An unknown line always needs resolving, and the statement is the answer.)
//!
//! # Unmatched payments
//!
//! A completed, unknown or in-flight payment with no row is
//! [`Category::MissingFromStatement`]; a failed one moved nothing and produces no item. With
//! [`MatchOptions::only_period`] `= Some((start, end))`, a payment with `at` outside
//! `start <= at < end` is never "missing" (the statement does not cover it) — it can still be
//! matched. Payments without an item are counted in [`Summary::skipped_payments`].
//!
//! # Details
//!
//! [`Item::detail`] is for people: line ids, row numbers, amounts, currencies and statuses
//! only — never a phone number, payee key, transaction id or reference (a wrongly mapped
//! statement column could put a phone number in any text field).
//!
//! # Example
//!
//! ```
//! use chrono::{TimeZone, Utc};
//! use cva_ledger::money::Currency;
//! use cva_reconciliation::matching::{
//!     reconcile, Category, MatchOptions, Payment, PaymentStatus, Rule,
//! };
//! use cva_reconciliation::{StatementLine, StatementStatus};
//!
//! let at = Utc.with_ymd_and_hms(2024, 3, 1, 10, 0, 0).unwrap();
//! let payment = |line: i64, tx: Option<&str>| Payment {
//!     line,
//!     provider_tx: tx.map(str::to_owned),
//!     payee_key: Some("22376000001".into()),
//!     amount_minor: 20_000,
//!     fee_minor: 100,
//!     currency: "XOF".into(),
//!     status: PaymentStatus::Completed,
//!     at,
//! };
//! let row = |row: usize, tx: &str, amount_minor: i64| StatementLine {
//!     row,
//!     transaction_id: tx.into(),
//!     reference: None,
//!     msisdn: Some("+223 76 00 00 01".into()),
//!     amount_minor,
//!     fee_minor: 100,
//!     currency: Currency::parse("XOF").unwrap(),
//!     status: StatementStatus::Completed,
//!     at,
//!     balance_after_minor: None,
//! };
//! let payments = [payment(1, Some("TX1")), payment(2, None), payment(3, Some("TX3"))];
//! let statement = [row(2, "TX1", 20_000), row(3, "TX9", 20_000), row(4, "TX3", 19_000)];
//! let r = reconcile(&payments, &statement, &MatchOptions::default());
//!
//! let got: Vec<_> = r.items.iter().map(|i| (i.category, i.rule, i.payment)).collect();
//! assert_eq!(got, [
//!     (Category::Matched, Some(Rule::ProviderTransactionId), Some(1)),
//!     (Category::Matched, Some(Rule::PayeeAmountDate), Some(2)),
//!     (Category::AmountMismatch, Some(Rule::ProviderTransactionId), Some(3)),
//! ]);
//! assert_eq!(r.summary.matched, 2);
//! assert_eq!(r.summary.amount_mismatch, 1);
//! ```
//!
//! # Cost
//!
//! Hash maps by transaction id, by line id and by reference; the fallback sorts its candidate
//! rows once by (payee, amount, currency, time) and finds each payment's nearest free row by
//! binary search, with a heap for the nearest-first order. Time is `O((P + S) log(P + S))` plus,
//! in the fallback, the rows skipped because already taken — only large clusters of identical
//! (payee, amount, time) make that grow. `examples/match_bench.rs` times a million of each.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

// foldhash: seeded per process like std's SipHash (no fixed hash a hostile statement could
// aim at), several times faster on the million short keys a statement brings.
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::fmt;

use chrono::{DateTime, Duration, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::statement::{StatementLine, StatementStatus};

/// Our status of a payment line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Completed,
    Failed,
    Unknown,
    InFlight,
}

impl PaymentStatus {
    /// `completed`, `failed`, `unknown`, `in_flight` (also the JSON form).
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Completed => "completed",
            PaymentStatus::Failed => "failed",
            PaymentStatus::Unknown => "unknown",
            PaymentStatus::InFlight => "in_flight",
        }
    }
}

/// One payment line, as the batches side knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    /// Our line id, sent to the provider as `requestingOrganisationTransactionReference`.
    pub line: i64,
    /// The provider's transaction id, once known.
    pub provider_tx: Option<String>,
    /// The payee's phone number as an opaque key (a normalised number or a keyed hash of it);
    /// compared with the key the matching computes from each row's `msisdn`.
    pub payee_key: Option<String>,
    pub amount_minor: i64,
    /// The fee we expect the provider to take.
    pub fee_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
    pub status: PaymentStatus,
    /// When the line was sent, or resolved.
    pub at: DateTime<Utc>,
}

/// Matching options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchOptions {
    /// Largest time difference for the fallback rule (inclusive). Default 3 days.
    pub window: Duration,
    /// The statement's period, `start <= at < end`: payments outside are never "missing".
    pub only_period: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

impl Default for MatchOptions {
    fn default() -> Self {
        MatchOptions {
            window: Duration::days(3),
            only_period: None,
        }
    }
}

/// The rule by which a payment and a row were paired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    ProviderTransactionId,
    Reference,
    PayeeAmountDate,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::ProviderTransactionId => "provider transaction id",
            Rule::Reference => "reference",
            Rule::PayeeAmountDate => "payee, amount and date",
        }
    }
}

/// What an [`Item`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Matched,
    AmountMismatch,
    FeeMismatch,
    StatusMismatch,
    MissingFromStatement,
    UnexpectedInStatement,
    DuplicateInStatement,
    ReversedByProvider,
}

impl Category {
    pub const ALL: [Category; 8] = [
        Category::Matched,
        Category::AmountMismatch,
        Category::FeeMismatch,
        Category::StatusMismatch,
        Category::MissingFromStatement,
        Category::UnexpectedInStatement,
        Category::DuplicateInStatement,
        Category::ReversedByProvider,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Matched => "matched",
            Category::AmountMismatch => "amount_mismatch",
            Category::FeeMismatch => "fee_mismatch",
            Category::StatusMismatch => "status_mismatch",
            Category::MissingFromStatement => "missing_from_statement",
            Category::UnexpectedInStatement => "unexpected_in_statement",
            Category::DuplicateInStatement => "duplicate_in_statement",
            Category::ReversedByProvider => "reversed_by_provider",
        }
    }

    /// Whether the item pairs a payment with a statement row (matched or one of the
    /// mismatches); a [`ReversedByProvider`](Category::ReversedByProvider) item may or may not.
    pub fn is_pair(self) -> bool {
        matches!(
            self,
            Category::Matched
                | Category::AmountMismatch
                | Category::FeeMismatch
                | Category::StatusMismatch
        )
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One result line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub category: Category,
    /// The rule that paired the payment with its row (or linked its reversal), if any.
    pub rule: Option<Rule>,
    /// The payment's line id.
    pub payment: Option<i64>,
    /// Statement row numbers ([`StatementLine::row`]), ascending.
    pub statement_rows: Vec<usize>,
    /// For people; no phone numbers, payee keys, transaction ids or references. Empty for a
    /// clean match (category matched): its rule, line and rows say it all.
    pub detail: String,
}

/// Items per category, and what produced none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub matched: usize,
    pub amount_mismatch: usize,
    pub fee_mismatch: usize,
    pub status_mismatch: usize,
    pub missing_from_statement: usize,
    pub unexpected_in_statement: usize,
    pub duplicate_in_statement: usize,
    pub reversed_by_provider: usize,
    /// Payments with no item: failed and absent, or absent and outside the period.
    pub skipped_payments: usize,
    /// Rows with no item: failed or pending rows that matched nothing.
    pub skipped_rows: usize,
}

impl Summary {
    pub fn count(&self, category: Category) -> usize {
        match category {
            Category::Matched => self.matched,
            Category::AmountMismatch => self.amount_mismatch,
            Category::FeeMismatch => self.fee_mismatch,
            Category::StatusMismatch => self.status_mismatch,
            Category::MissingFromStatement => self.missing_from_statement,
            Category::UnexpectedInStatement => self.unexpected_in_statement,
            Category::DuplicateInStatement => self.duplicate_in_statement,
            Category::ReversedByProvider => self.reversed_by_provider,
        }
    }

    fn add(&mut self, category: Category) {
        let n = match category {
            Category::Matched => &mut self.matched,
            Category::AmountMismatch => &mut self.amount_mismatch,
            Category::FeeMismatch => &mut self.fee_mismatch,
            Category::StatusMismatch => &mut self.status_mismatch,
            Category::MissingFromStatement => &mut self.missing_from_statement,
            Category::UnexpectedInStatement => &mut self.unexpected_in_statement,
            Category::DuplicateInStatement => &mut self.duplicate_in_statement,
            Category::ReversedByProvider => &mut self.reversed_by_provider,
        };
        *n += 1;
    }

    /// Items in all categories.
    pub fn items(&self) -> usize {
        Category::ALL.iter().map(|&c| self.count(c)).sum()
    }
}

/// The result: items sorted by payment line id (items without one last), the payment's own
/// item before the row items that mention it, then by rows, then category.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reconciliation {
    pub items: Vec<Item>,
    pub summary: Summary,
}

/// An MSISDN as digits only: blanks, `-`, `.`, `(`, `)` removed, a leading `+` or `00`
/// dropped. `None` when anything else is in it, or no digit. No country-code handling: the
/// payments' keys must be written the same way.
pub fn normalize_msisdn(msisdn: &str) -> Option<String> {
    let s = msisdn.trim();
    let s = s.strip_prefix('+').unwrap_or(s);
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '0'..='9' => out.push(c),
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => return None,
        }
    }
    let out = match out.strip_prefix("00") {
        Some(rest) if !msisdn.trim_start().starts_with('+') => rest.to_owned(),
        _ => out,
    };
    (!out.is_empty()).then_some(out)
}

/// [`reconcile_with`] keyed by [`normalize_msisdn`].
pub fn reconcile(
    payments: &[Payment],
    statement: &[StatementLine],
    opts: &MatchOptions,
) -> Reconciliation {
    reconcile_with(payments, statement, opts, normalize_msisdn)
}

/// The payments (indices into `payments`) whose [`Payment::payee_key`] matching may look at:
/// those the provider's transaction id cannot pair for certain — no id, an id no
/// non-reversal row of `statement` has, or an id another payment shares. Every other payment
/// is paired by rule 1 before the fallback runs, so its key is never read: a caller whose
/// keys are costly to fetch (a join per payment) may leave them `None` and fetch only these,
/// and [`reconcile_with`] gives the same result (checked by a property test).
pub fn needs_payee_key(payments: &[Payment], statement: &[StatementLine]) -> Vec<usize> {
    // Sized up front (a filtered iterator's size hint is 0: a million inserts would grow and
    // rehash the table twenty times).
    let mut on_statement: HashSet<&str> = HashSet::with_capacity(statement.len());
    on_statement.extend(
        statement
            .iter()
            .filter(|s| s.status != StatementStatus::Reversal)
            .map(|s| s.transaction_id.as_str()),
    );
    let mut uses: HashMap<&str, u32> = HashMap::with_capacity(payments.len());
    for tx in payments.iter().filter_map(|p| p.provider_tx.as_deref()) {
        *uses.entry(tx).or_default() += 1;
    }
    payments
        .iter()
        .enumerate()
        .filter(|(_, p)| match p.provider_tx.as_deref() {
            None => true,
            Some(tx) => !on_statement.contains(tx) || uses.get(tx).copied().unwrap_or(0) > 1,
        })
        .map(|(i, _)| i)
        .collect()
}

/// The statement rows (indices into `statement`) whose [`StatementLine::msisdn`] matching may
/// look at: those with a transaction id no payment carries. A row with one is either the first
/// non-reversal row of that id, which rule 1 pairs before the fallback runs, or a duplicate or
/// a reversal, which the fallback never considers. A caller may leave every other row's
/// `msisdn` `None` and [`reconcile_with`] gives the same result (checked by a property test).
pub fn needs_row_msisdn(payments: &[Payment], statement: &[StatementLine]) -> Vec<usize> {
    let mut paid: HashSet<&str> = HashSet::with_capacity(payments.len());
    paid.extend(payments.iter().filter_map(|p| p.provider_tx.as_deref()));
    statement
        .iter()
        .enumerate()
        .filter(|(_, s)| !paid.contains(s.transaction_id.as_str()))
        .map(|(i, _)| i)
        .collect()
}

/// A row's `reference` as a line id: decimal digits, blanks around allowed.
fn reference_line(reference: Option<&str>) -> Option<i64> {
    let r = reference?.trim();
    if r.is_empty() || !r.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    r.parse().ok()
}

/// The original transaction id of a reversal: without a trailing `-REV` (any case).
fn original_tx(tx: &str) -> &str {
    let n = tx.len();
    if n > 4 && tx.is_char_boundary(n - 4) && tx[n - 4..].eq_ignore_ascii_case("-rev") {
        &tx[..n - 4]
    } else {
        tx
    }
}

/// Whether the provider says the money moved out (or did, then came back).
fn provider_paid(status: StatementStatus) -> bool {
    matches!(
        status,
        StatementStatus::Completed | StatementStatus::Reversed | StatementStatus::Reversal
    )
}

fn status_agrees(ours: PaymentStatus, theirs: StatementStatus) -> bool {
    use PaymentStatus as P;
    use StatementStatus as S;
    matches!(
        (ours, theirs),
        (P::Completed, S::Completed | S::Reversed)
            | (P::Failed, S::Failed)
            | (P::InFlight, S::Pending)
    )
}

/// What became of a statement row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// First row of its transaction id: takes part in matching.
    Primary,
    /// A further row with the id of the given (statement index) row.
    Duplicate(usize),
    /// A reversal row, first of its id.
    Reversal,
}

/// Where a reversal row was attached.
#[derive(Debug, Clone, Copy)]
enum Attach {
    Payment(usize, Rule),
    Row(usize),
}

/// [`reconcile`] with the function that computes a row's payee key from its `msisdn` (it must
/// give the keys the payments carry in [`Payment::payee_key`]; `None` = no key).
pub fn reconcile_with<F>(
    payments: &[Payment],
    statement: &[StatementLine],
    opts: &MatchOptions,
    payee_key: F,
) -> Reconciliation
where
    F: Fn(&str) -> Option<String>,
{
    // Deterministic orders, whatever the input order.
    let mut pay_order: Vec<usize> = (0..payments.len()).collect();
    pay_order.sort_by_key(|&i| (payments[i].line, i));
    let mut row_order: Vec<usize> = (0..statement.len()).collect();
    row_order.sort_by_key(|&i| (statement[i].row, i));

    // Statement: primaries by transaction id, duplicates, reversals.
    let mut by_tx: HashMap<&str, usize> = HashMap::with_capacity(statement.len());
    let mut rev_by_tx: HashMap<&str, usize> = HashMap::new();
    let mut role = vec![Role::Primary; statement.len()];
    for &i in &row_order {
        let s = &statement[i];
        let map = if s.status == StatementStatus::Reversal {
            &mut rev_by_tx
        } else {
            &mut by_tx
        };
        match map.get(s.transaction_id.as_str()) {
            Some(&first) => role[i] = Role::Duplicate(first),
            None => {
                map.insert(&s.transaction_id, i);
                if s.status == StatementStatus::Reversal {
                    role[i] = Role::Reversal;
                }
            }
        }
    }

    // Payments by line id (first of a line id, if not unique).
    let mut by_line: HashMap<i64, usize> = HashMap::with_capacity(payments.len());
    for &p in &pay_order {
        by_line.entry(payments[p].line).or_insert(p);
    }

    let mut pay_row: Vec<Option<(usize, Rule)>> = vec![None; payments.len()];
    let mut row_pay: Vec<Option<usize>> = vec![None; statement.len()];

    // Rule 1: provider transaction id.
    for &p in &pay_order {
        let Some(tx) = payments[p].provider_tx.as_deref() else {
            continue;
        };
        if let Some(&r) = by_tx.get(tx) {
            if row_pay[r].is_none() {
                row_pay[r] = Some(p);
                pay_row[p] = Some((r, Rule::ProviderTransactionId));
            }
        }
    }

    // Rule 2: reference = line id. Rows per line id, in row order.
    let mut by_ref: HashMap<i64, Vec<usize>> = HashMap::new();
    for &r in &row_order {
        if role[r] == Role::Primary && row_pay[r].is_none() {
            if let Some(line) = reference_line(statement[r].reference.as_deref()) {
                if by_line.contains_key(&line) {
                    by_ref.entry(line).or_default().push(r);
                }
            }
        }
    }
    for &p in &pay_order {
        if pay_row[p].is_some() {
            continue;
        }
        if let Some(rows) = by_ref.get(&payments[p].line) {
            if let Some(&r) = rows.iter().find(|&&r| row_pay[r].is_none()) {
                row_pay[r] = Some(p);
                pay_row[p] = Some((r, Rule::Reference));
            }
        }
    }

    // Rule 3: payee, amount, currency, nearest time.
    fallback(
        payments,
        statement,
        opts,
        &payee_key,
        &pay_order,
        &row_order,
        &role,
        &by_line,
        &mut pay_row,
        &mut row_pay,
    );

    // Reversals: attach to the original's payment or row.
    let mut by_provider_tx: HashMap<&str, usize> = HashMap::with_capacity(payments.len());
    for &p in &pay_order {
        if let Some(tx) = payments[p].provider_tx.as_deref() {
            by_provider_tx.entry(tx).or_insert(p);
        }
    }
    let mut pay_revs: HashMap<usize, (Rule, Vec<usize>)> = HashMap::new();
    let mut row_revs: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut lone_rev = vec![false; statement.len()];
    for &r in &row_order {
        if role[r] != Role::Reversal {
            continue;
        }
        let s = &statement[r];
        let orig = original_tx(&s.transaction_id);
        let attach = match by_tx.get(orig) {
            Some(&o) => match row_pay[o] {
                Some(p) => Some(Attach::Payment(
                    p,
                    pay_row[p].map_or(Rule::ProviderTransactionId, |(_, rule)| rule),
                )),
                None => Some(Attach::Row(o)),
            },
            None => by_provider_tx
                .get(orig)
                .map(|&p| Attach::Payment(p, Rule::ProviderTransactionId))
                .or_else(|| {
                    reference_line(s.reference.as_deref())
                        .and_then(|line| by_line.get(&line))
                        .map(|&p| Attach::Payment(p, Rule::Reference))
                }),
        };
        match attach {
            Some(Attach::Payment(p, rule)) => {
                pay_revs.entry(p).or_insert((rule, Vec::new())).1.push(r);
            }
            Some(Attach::Row(o)) => row_revs.entry(o).or_default().push(r),
            None => lone_rev[r] = true,
        }
    }

    let mut items: Vec<Item> = Vec::new();
    let mut summary = Summary::default();

    // Payment items.
    for &p in &pay_order {
        let pay = &payments[p];
        let revs = pay_revs.get(&p);
        let item = match (pay_row[p], revs) {
            (Some((r, rule)), _) => pair_item(
                pay,
                &statement[r],
                rule,
                revs.map(|(_, v)| v.as_slice()),
                statement,
            ),
            (None, Some((rule, revs))) => {
                let rule = *rule;
                Item {
                    category: Category::ReversedByProvider,
                    rule: Some(rule),
                    payment: Some(pay.line),
                    statement_rows: sorted_rows(revs.iter().map(|&r| statement[r].row)),
                    detail: format!(
                        "line {} ({}): reversal on the statement (row {}), original movement not on it",
                        pay.line,
                        pay.status.as_str(),
                        rows_text(revs, statement)
                    ),
                }
            }
            (None, None) => {
                let outside = opts
                    .only_period
                    .is_some_and(|(start, end)| pay.at < start || pay.at >= end);
                if pay.status == PaymentStatus::Failed || outside {
                    summary.skipped_payments += 1;
                    continue;
                }
                Item {
                    category: Category::MissingFromStatement,
                    rule: None,
                    payment: Some(pay.line),
                    statement_rows: Vec::new(),
                    detail: format!(
                        "line {} ({}, {} {}) is not on the statement",
                        pay.line,
                        pay.status.as_str(),
                        pay.amount_minor,
                        pay.currency
                    ),
                }
            }
        };
        summary.add(item.category);
        items.push(item);
    }

    // Row items.
    for &r in &row_order {
        let s = &statement[r];
        let item = match role[r] {
            Role::Duplicate(first) => Item {
                category: Category::DuplicateInStatement,
                rule: None,
                payment: row_pay[first].map(|p| payments[p].line),
                statement_rows: vec![s.row],
                detail: format!(
                    "row {}: same transaction id as row {} ({}, {} {})",
                    s.row,
                    statement[first].row,
                    s.status.as_str(),
                    s.amount_minor,
                    s.currency.code()
                ),
            },
            Role::Reversal => {
                if !lone_rev[r] {
                    continue;
                }
                Item {
                    category: Category::UnexpectedInStatement,
                    rule: None,
                    payment: None,
                    statement_rows: vec![s.row],
                    detail: format!(
                        "row {}: reversal ({} {}) of a transaction neither on the statement nor ours",
                        s.row,
                        s.amount_minor,
                        s.currency.code()
                    ),
                }
            }
            Role::Primary => {
                if row_pay[r].is_some() {
                    continue;
                }
                let revs = row_revs.get(&r);
                if !s.status.moves_float() && revs.is_none() {
                    summary.skipped_rows += 1;
                    continue;
                }
                let named = reference_line(s.reference.as_deref())
                    .and_then(|line| by_line.get(&line))
                    .copied();
                let mut rows = vec![s.row];
                rows.extend(revs.into_iter().flatten().map(|&x| statement[x].row));
                let mut detail = format!(
                    "row {} ({}, {} {}) matches no payment",
                    s.row,
                    s.status.as_str(),
                    s.amount_minor,
                    s.currency.code()
                );
                if let Some(p) = named {
                    detail.push_str(&format!(
                        "; its reference is line {}, already matched to another row",
                        payments[p].line
                    ));
                }
                if let Some(revs) = revs {
                    detail.push_str(&format!("; reversed by row {}", rows_text(revs, statement)));
                }
                Item {
                    category: Category::UnexpectedInStatement,
                    rule: None,
                    payment: named.map(|p| payments[p].line),
                    statement_rows: sorted_rows(rows),
                    detail,
                }
            }
        };
        summary.add(item.category);
        items.push(item);
    }

    // Borrowed keys: a cached key would clone every item's row list (a million of them).
    fn sort_key(i: &Item) -> (bool, Option<i64>, bool, &[usize], Category) {
        (
            i.payment.is_none(),
            i.payment,
            row_item(i.category),
            i.statement_rows.as_slice(),
            i.category,
        )
    }
    items.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
    Reconciliation { items, summary }
}

/// Rule 3. Candidate rows are sorted once by (group, time, row); a group is one (payee key,
/// amount, currency). Each payment's nearest free row goes into a min-heap keyed by (time
/// difference, line id, row); a popped entry whose row was taken meanwhile is recomputed.
#[allow(clippy::too_many_arguments)]
fn fallback<F>(
    payments: &[Payment],
    statement: &[StatementLine],
    opts: &MatchOptions,
    payee_key: &F,
    pay_order: &[usize],
    row_order: &[usize],
    role: &[Role],
    by_line: &HashMap<i64, usize>,
    pay_row: &mut [Option<(usize, Rule)>],
    row_pay: &mut [Option<usize>],
) where
    F: Fn(&str) -> Option<String>,
{
    // Payee keys interned; groups numbered.
    let mut keys: HashMap<String, u32> = HashMap::new();
    let mut groups: HashMap<(u32, i64, &str), u32> = HashMap::new();
    // (group, at, row number, statement index)
    let mut cands: Vec<(u32, DateTime<Utc>, usize, usize)> = Vec::new();
    for &r in row_order {
        let s = &statement[r];
        if role[r] != Role::Primary || row_pay[r].is_some() {
            continue;
        }
        if reference_line(s.reference.as_deref()).is_some_and(|l| by_line.contains_key(&l)) {
            continue;
        }
        let Some(key) = s.msisdn.as_deref().and_then(payee_key) else {
            continue;
        };
        let next = keys.len() as u32;
        let k = *keys.entry(key).or_insert(next);
        let next = groups.len() as u32;
        let g = *groups
            .entry((k, s.amount_minor, s.currency.code()))
            .or_insert(next);
        cands.push((g, s.at, s.row, r));
    }
    if cands.is_empty() {
        return;
    }
    cands.sort_unstable();
    // Group g's candidates: cands[start[g]..start[g + 1]].
    let mut start = vec![0usize; groups.len() + 1];
    for c in &cands {
        start[c.0 as usize + 1] += 1;
    }
    for g in 0..groups.len() {
        start[g + 1] += start[g];
    }
    let mut taken = vec![false; cands.len()];
    let window = opts.window;

    // The nearest free candidate of `at` in `lo..hi`: (distance, row number, position).
    let nearest = |taken: &[bool], lo: usize, hi: usize, at: DateTime<Utc>| {
        let slice = &cands[lo..hi];
        let pos = lo + slice.partition_point(|c| c.1 < at);
        let after = (pos..hi)
            .take_while(|&i| cands[i].1 - at <= window)
            .find(|&i| !taken[i])
            .map(|i| (cands[i].1 - at, cands[i].2, i));
        let mut before: Option<(TimeDelta, usize, usize)> = None;
        for i in (lo..pos).rev() {
            let d = at - cands[i].1;
            if d > window || before.is_some_and(|b| d > b.0) {
                break;
            }
            if !taken[i] {
                // Same time, lower row: keep going back while the time is the same.
                before = Some((d, cands[i].2, i));
            }
        }
        match (after, before) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    };

    let mut heap = BinaryHeap::new();
    let mut pay_group: Vec<Option<u32>> = vec![None; payments.len()];
    for &p in pay_order {
        let pay = &payments[p];
        if pay_row[p].is_some() {
            continue;
        }
        let Some(k) = pay.payee_key.as_deref().and_then(|k| keys.get(k)) else {
            continue;
        };
        let Some(&g) = groups.get(&(*k, pay.amount_minor, pay.currency.as_str())) else {
            continue;
        };
        pay_group[p] = Some(g);
        let (lo, hi) = (start[g as usize], start[g as usize + 1]);
        if let Some((d, row, i)) = nearest(&taken, lo, hi, pay.at) {
            heap.push(Reverse((d, pay.line, row, p, i)));
        }
    }
    while let Some(Reverse((_, line, _, p, i))) = heap.pop() {
        if taken[i] {
            let Some(g) = pay_group[p] else { continue };
            let (lo, hi) = (start[g as usize], start[g as usize + 1]);
            if let Some((d, row, j)) = nearest(&taken, lo, hi, payments[p].at) {
                heap.push(Reverse((d, line, row, p, j)));
            }
            continue;
        }
        taken[i] = true;
        let r = cands[i].3;
        row_pay[r] = Some(p);
        pay_row[p] = Some((r, Rule::PayeeAmountDate));
    }
}

/// Items about a statement row that only mention a payment.
fn row_item(c: Category) -> bool {
    matches!(
        c,
        Category::UnexpectedInStatement | Category::DuplicateInStatement
    )
}

fn sorted_rows(rows: impl IntoIterator<Item = usize>) -> Vec<usize> {
    let mut v: Vec<usize> = rows.into_iter().collect();
    v.sort_unstable();
    v
}

/// Row numbers of statement indices, ascending, comma separated.
fn rows_text(idx: &[usize], statement: &[StatementLine]) -> String {
    sorted_rows(idx.iter().map(|&i| statement[i].row))
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The item of a payment paired with row `s`.
fn pair_item(
    pay: &Payment,
    s: &StatementLine,
    rule: Rule,
    revs: Option<&[usize]>,
    statement: &[StatementLine],
) -> Item {
    let mut problems: Vec<String> = Vec::new();
    let mut category = Category::Matched;
    let worse = |c: Category, category: &mut Category| {
        if *category == Category::Matched {
            *category = c;
        }
    };
    if let Some(revs) = revs {
        worse(Category::ReversedByProvider, &mut category);
        problems.push(format!("reversed by row {}", rows_text(revs, statement)));
    } else if s.status == StatementStatus::Reversed {
        worse(Category::ReversedByProvider, &mut category);
        problems.push("the provider marks it reversed".to_owned());
    }
    if !status_agrees(pay.status, s.status) {
        worse(Category::StatusMismatch, &mut category);
        problems.push(format!(
            "status: ours {}, provider {}",
            pay.status.as_str(),
            s.status.as_str()
        ));
    }
    if pay.currency != s.currency.code() || pay.amount_minor != s.amount_minor {
        worse(Category::AmountMismatch, &mut category);
        problems.push(format!(
            "amount: ours {} {}, provider {} {}",
            pay.amount_minor,
            pay.currency,
            s.amount_minor,
            s.currency.code()
        ));
    }
    if pay.status == PaymentStatus::Completed
        && provider_paid(s.status)
        && pay.fee_minor != s.fee_minor
    {
        worse(Category::FeeMismatch, &mut category);
        problems.push(format!(
            "fee: ours {}, provider {}",
            pay.fee_minor, s.fee_minor
        ));
    }
    let statement_rows = match revs {
        None => vec![s.row],
        Some(revs) => {
            let mut rows = vec![s.row];
            rows.extend(revs.iter().map(|&r| statement[r].row));
            sorted_rows(rows)
        }
    };
    // A clean match says all in its rule, line and rows: no detail (a million of them would
    // be formatted for nothing).
    let mut detail = String::new();
    if !problems.is_empty() {
        detail = format!("line {} = row {} by {}", pay.line, s.row, rule.as_str());
        for p in problems {
            detail.push_str("; ");
            detail.push_str(&p);
        }
    }
    Item {
        category,
        rule: Some(rule),
        payment: Some(pay.line),
        statement_rows,
        detail,
    }
}
