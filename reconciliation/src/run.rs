//! Reconciling a stored statement against our payments, in the database: [`Reconciler::run`]
//! reads the statement's lines and the provider's payment lines, runs [`reconcile_with`],
//! posts what the statement settles, reconciles the float, and stores the run, its items, its
//! float differences and the exceptions people must work.
//!
//! # A run, step by step
//!
//! 1. **Read.** The statement's lines and every payment line sent to the statement's provider
//!    (`in_flight`, `completed`, `failed`, `unknown`) with its provider transaction id, amount,
//!    fee, currency and its time (resolved, else last attempt, else the batch's last change);
//!    then the keyed blind index of the payee's number of only the payments and rows the
//!    fallback rule may look at ([`needs_payee_key`], [`needs_row_msisdn`]: joining every
//!    payment with its household was most of the read). Lines more than the window before the
//!    statement's period are not read unless still open: an old statement-less payment is not
//!    this statement's. Then, on another connection while the run matches, the float
//!    **snapshot** (see below).
//! 2. **Match** ([`crate::matching`], payees compared by their keyed index).
//! 3. **Settle what the statement answers**, through the batches crate so the postings are
//!    the same as the sender's (`source = statement`, idempotency keys `pay:LINE:…`):
//!    * an `unknown` or `in_flight` line paired with a `completed` row of the same amount and
//!      currency is **confirmed** with the row's transaction id; with a `failed` row it
//!      **fails** (`provider_rejected`). The item then says what it is *after* the posting
//!      (`matched`, or `fee_mismatch` when the fees differ) with `action = confirmed|failed`;
//!    * a `completed` line the provider reversed gets its **reversal booked** (an `unknown` /
//!      `in_flight` line is confirmed first, then reversed: the statement shows both).
//!      Reversals already booked need nothing.
//!
//!    All of it in one posting across every batch the statement touches
//!    ([`Batches::settle_many`]), then the batches' statuses, on a task of its own while the
//!    run builds its items.
//!
//!    Nothing else moves money: a status, amount or fee the two sides disagree on is an
//!    exception for a person (with an adjusting entry under maker-checker, see
//!    [`crate::exceptions`]).
//! 4. **Float reconciliation** (see below), after the postings of step 3.
//! 5. **Store**, in one transaction: the run (`reconciliations`, numbered per statement), its
//!    items (the plain matches — by transaction id, nothing posted, no float effect — packed
//!    in `reconciliation_matches`, see [`crate::packed`]; every other item a row of
//!    `reconciliation_items`), its float differences, one audit event `reconciliation.run`, and the exceptions:
//!    one per item that is not `matched` and that step 3 did not settle. An exception is
//!    identified by statement and key (`category:line:rows`): a later run that finds the same
//!    problem adds a `seen_again` event to the same exception instead of opening another.
//!
//! Running again is safe: step 3 posts nothing twice (the lines are no longer open; the
//! entries' idempotency keys), items are recomputed from the state of the day, and exceptions
//! are not duplicated.
//!
//! # Float reconciliation
//!
//! The float account `assets:float:PROVIDER` against the statement, in the float's currency
//! (minor units). With `t0` the statement's first line time:
//!
//! * `ledger_closing`: the account's balance after this run's postings; `ledger_opening`: that
//!   minus every movement recorded since `t0`;
//! * `statement_opening` / `statement_closing`: from the rows' running balances;
//! * `difference` = `ledger_closing − statement_closing` (without running balances:
//!   ledger movement since `t0` − statement movement).
//!
//! The difference is explained line by line, each with its amount (its part of
//! ledger − statement):
//!
//! * each **item**: the ledger's float movements for its payment line since `t0` (entries
//!   `pay:LINE:…`) minus the float movements of its statement rows (a completed or reversed
//!   row `−(amount + fee)`, a reversal row `−amount`, i.e. money back). Matched items are 0;
//! * `opening_difference`: `ledger_opening − statement_opening`;
//! * `ledger_only`: each float movement since `t0` the statement cannot show (a funding, an
//!   adjustment, a payment line not in any item), with its entry id;
//! * `running_balance_break`: each row whose `balance_after` is not the previous balance plus
//!   the row's movement (the statement's own arithmetic is broken there), `−(break)`.
//!
//! `explained` is their sum and `unexplained = difference − explained` (stored; the
//! database checks the three add up). Rows in another currency than the float's take no part.
//!
//! The float's movements (a million for a million payments) are read from a **snapshot**
//! taken before step 3 posts anything (a read-only repeatable-read transaction on PostgreSQL,
//! a deferred one on SQLite's WAL), while the run matches. After the postings, in the run's
//! own transaction, only the movements of the entries step 3 wrote are read
//! ([`cva_batches::Settled::posted`]) with the account's totals: if the snapshot's debit and
//! credit totals plus those movements are the totals now, nothing else moved the float since
//! (every journal amount is positive, so any movement missing or counted twice shows in one
//! total or the other) and the snapshot brought up to date is the float; if not (a top-up, a
//! sender confirming meanwhile), the float is read again in full there.
//!
//! # Cost
//!
//! Everything is read once: the statement's lines and the payments in two queries streamed
//! into the matcher's own structures (on PostgreSQL at the same time, by binary `COPY`, see
//! `pgcopy`; on SQLite by key range, see `sqlitejson`), the float's movements in two more
//! (the bulk — a movement per payment — read as entry, key and amount only, summed per line)
//! while matching runs. The postings are one ledger transaction, on their own task.
//! A million plain matches are a few megabytes of packed pairs, not a million rows; the
//! other items go in as array inserts (PostgreSQL) or chunked multi-row inserts (SQLite). The run
//! logs how long each phase took (`phases` in its log line).
//! `examples/reconcile_bench.rs` measures a million lines against a million payments.

use std::collections::BTreeMap;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use chrono::{DateTime, Duration, Utc};
use cva_batches::{Batches, LineOutcome, Outcome, Settlement};
use cva_ledger::audit::{AuditConn, AuditContext, AuditRecord};
use cva_ledger::money::Currency;
use cva_ledger::{read_pool, write_tx, LedgerError};
use cva_registry::RegistryError;
use futures::future::BoxFuture;
use serde::Serialize;
use thiserror::Error;

use crate::matching::{
    needs_payee_key, needs_row_msisdn, reconcile_with, Category, Item, MatchOptions, Payment,
    PaymentStatus, Rule, Summary,
};
use crate::statement::{StatementLine, StatementStatus};
use crate::store::{ImportError, Statements};
use crate::{packed, pgcopy, sqlitejson};

/// The most statement lines the reads size their vectors for up front.
const MAX_PRESIZE: u64 = 10_000_000;

/// Rows per multi-row `INSERT` on SQLite.
const SQLITE_CHUNK: usize = 500;
/// Most items [`Reconciler::items`] returns at once.
pub const MAX_ITEMS_PAGE: u32 = 1_000;

/// Why a run failed. Messages name the statement, line or field; never a phone number.
#[derive(Debug, Error)]
pub enum RunError {
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("{0}")]
    NotFound(String),
    /// Another run of the same statement committed first; nothing of this one was stored
    /// (what it posted is posted once, by whichever run came first).
    #[error("statement {0} was reconciled by another run at the same time; run it again")]
    Concurrent(i64),
    #[error("reconciliation data is corrupt: {0}")]
    Corrupt(String),
    #[error("statement: {0}")]
    Statement(#[from] ImportError),
    #[error("payments: {0}")]
    Payments(#[from] RegistryError),
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

pub type Result<T, E = RunError> = std::result::Result<T, E>;

/// Options of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOptions {
    /// The fallback rule's time window (default 3 days).
    pub window: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            window: Duration::days(3),
        }
    }
}

/// The float reconciliation of a run (minor units of `currency`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FloatReconciliation {
    pub account: String,
    pub currency: String,
    pub statement_opening: Option<i64>,
    pub statement_closing: Option<i64>,
    pub ledger_opening: i64,
    pub ledger_closing: i64,
    /// Ledger − statement (see the module docs).
    pub difference: i64,
    pub explained: i64,
    pub unexplained: i64,
}

/// A stored run.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunView {
    pub id: i64,
    pub statement_id: i64,
    /// 1 for a statement's first run, then 2, 3…
    pub run_no: i32,
    pub provider: String,
    pub window_seconds: i64,
    pub payments_considered: i64,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub summary: Summary,
    /// Lines whose outcome this run posted (confirmed, failed, reversal booked).
    pub outcomes_posted: i64,
    pub float: FloatReconciliation,
    /// Exceptions this run opened, and those it found again.
    pub exceptions_opened: i64,
    pub exceptions_seen_again: i64,
    pub run_by: String,
    pub run_at: DateTime<Utc>,
}

/// One stored item of a run.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredItem {
    /// The item row's id; none for a plain match (matched by transaction id, nothing
    /// posted, no float effect), which is stored packed (see [`crate::packed`]) and listed
    /// after the item rows.
    pub id: Option<i64>,
    pub category: String,
    pub rule: Option<String>,
    pub line_id: Option<i64>,
    /// Statement row numbers (the header is row 1).
    pub statement_rows: Vec<u64>,
    pub float_effect: i64,
    pub action: Option<String>,
    pub detail: String,
}

impl StoredItem {
    /// A plain match read back from its packed form.
    pub fn plain(line: i64, row: u64) -> StoredItem {
        StoredItem {
            id: None,
            category: Category::Matched.as_str().to_owned(),
            rule: Some(rule_str(Rule::ProviderTransactionId).to_owned()),
            line_id: Some(line),
            statement_rows: vec![row],
            float_effect: 0,
            action: None,
            detail: String::new(),
        }
    }
}

/// One float difference of a run that is not an item.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FloatLine {
    pub kind: String,
    pub entry_id: Option<String>,
    pub row_no: Option<i64>,
    pub amount: i64,
    pub detail: String,
}

/// How long each phase of a run took (logged with the run).
struct Phases {
    started: std::time::Instant,
    last: std::time::Duration,
    marks: Vec<(&'static str, std::time::Duration)>,
}

impl Phases {
    fn start() -> Phases {
        Phases {
            started: std::time::Instant::now(),
            last: std::time::Duration::ZERO,
            marks: Vec::with_capacity(8),
        }
    }

    /// The phase `name` ended now.
    fn mark(&mut self, name: &'static str) {
        let now = self.started.elapsed();
        self.marks.push((name, now - self.last));
        self.last = now;
    }
}

impl std::fmt::Display for Phases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (name, d)) in self.marks.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{name} {:.2} s", d.as_secs_f64())?;
        }
        Ok(())
    }
}

/// The run's reads, sorted for lookups: payments (and what the run needs besides, same
/// order) by line id, statement lines by row.
struct Found<'a> {
    payments: &'a [Payment],
    info: &'a [LineInfo],
    lines: &'a [StatementLine],
}

impl<'a> Found<'a> {
    fn payment(&self, line: i64) -> Option<(&'a Payment, &'a LineInfo)> {
        let i = self.payments.binary_search_by_key(&line, |p| p.line).ok()?;
        Some((&self.payments[i], self.info.get(i)?))
    }

    fn line(&self, row: usize) -> Option<&'a StatementLine> {
        let i = self.lines.binary_search_by_key(&row, |l| l.row).ok()?;
        Some(&self.lines[i])
    }
}

/// What the run did to a line (column `action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Confirmed,
    Failed,
    ReversalBooked,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Confirmed => "confirmed",
            Action::Failed => "failed",
            Action::ReversalBooked => "reversal_booked",
        }
    }
}

/// A payment line as read for the run (beyond what matching needs).
#[derive(Debug, Clone)]
struct LineInfo {
    batch: i64,
    reversed: bool,
}

/// An item ready to store.
struct Row {
    category: Category,
    rule: Option<Rule>,
    line: Option<i64>,
    /// Statement row numbers, ascending.
    rows: Vec<usize>,
    effect: i64,
    action: Option<Action>,
    detail: String,
    /// Nothing left for a person: matched, or settled by this run or an earlier one.
    settled: bool,
}

/// A float difference ready to store.
struct FloatRow {
    kind: &'static str,
    entry_id: Option<String>,
    row_no: Option<i64>,
    amount: i64,
    detail: String,
}

/// Runs reconciliations and reads them back. Cheap to clone.
#[derive(Clone)]
pub struct Reconciler {
    batches: Batches,
    statements: Statements,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler").finish_non_exhaustive()
    }
}

const RUN_COLUMNS: &str = "id, statement_id, run_no, provider, currency, window_seconds, \
    payments_considered, summary, outcomes_posted, statement_opening, statement_closing, \
    ledger_opening, ledger_closing, difference, explained, unexplained, run_by, run_at";

#[derive(sqlx::FromRow)]
struct RunRow {
    id: i64,
    statement_id: i64,
    run_no: i32,
    provider: String,
    currency: String,
    window_seconds: i64,
    payments_considered: i64,
    summary: String,
    outcomes_posted: i64,
    statement_opening: Option<i64>,
    statement_closing: Option<i64>,
    ledger_opening: i64,
    ledger_closing: i64,
    difference: i64,
    explained: i64,
    unexplained: i64,
    run_by: String,
    run_at: DateTime<Utc>,
}

impl Reconciler {
    pub fn new(batches: Batches) -> Reconciler {
        let statements = Statements::new(batches.registry().ledger().clone());
        Reconciler {
            batches,
            statements,
        }
    }

    /// Reconciles statement `statement_id` (see the module docs). `ctx` is the person
    /// running it (finance officers); the postings and the run are audited under it.
    pub async fn run(
        &self,
        statement_id: i64,
        options: RunOptions,
        ctx: &AuditContext,
    ) -> Result<RunView> {
        ctx.validate()?;
        // Phase times, for the log line at the end (what an operator looks at first when a
        // run is slow).
        let mut clock = Phases::start();
        if options.window < Duration::zero() || options.window > Duration::days(31) {
            return Err(RunError::Invalid {
                field: "window",
                reason: "must be 0 to 31 days".into(),
            });
        }
        let st = self.statements.statement(statement_id).await?;
        let provider = self
            .batches
            .config()
            .provider(&st.provider)
            .ok_or_else(|| RunError::Invalid {
                field: "provider",
                reason: format!(
                    "statement {statement_id} is from provider `{}`, which is not configured",
                    st.provider
                ),
            })?
            .clone();
        let float_account = provider.float_account();
        let currency = provider.currency;

        let since = st
            .period_start
            .map(|t| t - options.window)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        // Two independent reads: on two connections at once on PostgreSQL, each in its own
        // task so that the two streams are decoded on two cores (joined in one task, the
        // client's decoding of both ran on one); one after the other on SQLite, where two big
        // scans at once were measured slower than in turn.
        // Sized once from the statement's line count (a payment per line, about): growing a
        // million-element vector by doubling copies it over and over.
        let capacity = usize::try_from(st.lines.min(MAX_PRESIZE)).unwrap_or(0);
        let (lines, (mut payments, info)) = if self.statements.ledger().pg_pool().is_some() {
            let me = self.clone();
            let lines = tokio::spawn(async move { me.read_lines(statement_id, capacity).await });
            let me = self.clone();
            let provider = st.provider.clone();
            let payments =
                tokio::spawn(async move { me.read_payments(&provider, since, capacity).await });
            fn joined<T>(r: std::result::Result<T, tokio::task::JoinError>) -> Result<T> {
                r.map_err(|e| RunError::Corrupt(format!("a read task ended abnormally: {e}")))
            }
            let (lines, payments) = futures::join!(lines, payments);
            (joined(lines)??, joined(payments)??)
        } else {
            let lines = self.read_lines(statement_id, capacity).await?;
            (
                lines,
                self.read_payments(&st.provider, since, capacity).await?,
            )
        };
        let needed = needs_payee_key(&payments, &lines);
        let ids: Vec<i64> = needed.iter().map(|&i| payments[i].line).collect();
        let mut keys = self.payee_keys(&ids).await?;
        for i in needed {
            payments[i].payee_key = keys.remove(&payments[i].line);
        }
        let mut lines = lines;
        let needed = needs_row_msisdn(&payments, &lines);
        let rows: Vec<i64> = needed
            .iter()
            .map(|&i| i64::try_from(lines[i].row).unwrap_or(i64::MAX))
            .collect();
        let mut keys = self.row_keys(statement_id, &rows).await?;
        for i in needed {
            lines[i].msisdn = keys.remove(&lines[i].row);
        }
        clock.mark("reads");
        // The float, read on another connection while matching runs (see `float_snapshot`).
        let (ready, snapshot_taken) = tokio::sync::oneshot::channel();
        let snapshot = tokio::spawn(float_snapshot(
            self.batches.registry().ledger().clone(),
            float_account.clone(),
            st.period_start,
            ready,
            // About a paid line per payment.
            payments.len(),
        ));
        // The statement's own arithmetic does not depend on anything posted below.
        let statement_movement: i64 = lines
            .iter()
            .filter(|l| l.currency == currency)
            .map(movement)
            .sum();
        let breaks = running_breaks(&lines, currency, st.opening_balance.map(|a| a.minor()));
        let opts = MatchOptions {
            window: options.window,
            only_period: st
                .period_start
                .zip(st.period_end)
                .map(|(a, b)| (a, b + Duration::microseconds(1))),
        };
        let result = reconcile_with(&payments, &lines, &opts, |key| Some(key.to_owned()));
        clock.mark("match");
        // Payments sorted by line and lines by row (as read): found by binary search, no
        // million-entry maps.
        let find = Found {
            payments: &payments,
            info: &info,
            lines: &lines,
        };

        // Step 3: what the statement settles.
        let mut actions: HashMap<i64, Action> = HashMap::new();
        let mut outcomes: HashMap<i64, Vec<LineOutcome>> = HashMap::new();
        let mut reversals: Vec<i64> = Vec::new();
        let mut already_booked: HashSet<i64> = HashSet::new();
        for item in &result.items {
            let Some(line) = item.payment else { continue };
            let Some((p, pinfo)) = find.payment(line) else {
                continue;
            };
            let open = matches!(p.status, PaymentStatus::Unknown | PaymentStatus::InFlight);
            let row = item
                .statement_rows
                .iter()
                .filter_map(|&r| find.line(r))
                .find(|l| l.status != StatementStatus::Reversal);
            let batch = pinfo.batch;
            match item.category {
                Category::StatusMismatch if open => {
                    let Some(row) = row else { continue };
                    if row.amount_minor != p.amount_minor || row.currency.code() != p.currency {
                        continue;
                    }
                    let outcome = match row.status {
                        StatementStatus::Completed => Outcome::Completed {
                            provider_tx: row.transaction_id.clone(),
                        },
                        StatementStatus::Failed => Outcome::Failed {
                            code: "provider_rejected".into(),
                            reason: format!("failed on the provider's statement (row {})", row.row),
                        },
                        _ => continue,
                    };
                    let action = if matches!(outcome, Outcome::Completed { .. }) {
                        Action::Confirmed
                    } else {
                        Action::Failed
                    };
                    outcomes
                        .entry(batch)
                        .or_default()
                        .push(LineOutcome { line, outcome });
                    actions.insert(line, action);
                }
                Category::ReversedByProvider => {
                    if pinfo.reversed {
                        // Booked before (by the sender, or an earlier run): nothing to do.
                        already_booked.insert(line);
                        continue;
                    }
                    if p.status == PaymentStatus::Failed {
                        continue;
                    }
                    if open {
                        let Some(row) = row else { continue };
                        if row.amount_minor != p.amount_minor {
                            continue;
                        }
                        outcomes.entry(batch).or_default().push(LineOutcome {
                            line,
                            outcome: Outcome::Completed {
                                provider_tx: row.transaction_id.clone(),
                            },
                        });
                    }
                    reversals.push(line);
                    actions.insert(line, Action::ReversalBooked);
                }
                _ => {}
            }
        }
        clock.mark("plan");
        // Everything the statement settles, all batches in one posting (see
        // `Batches::settle_many`). A reversal of a line another process settled since (no
        // longer completed) is skipped and left for the next run.
        let mut plan: BTreeMap<i64, Settlement> = BTreeMap::new();
        for (batch, mut list) in outcomes {
            list.sort_by_key(|o| o.line);
            plan.entry(batch).or_default().outcomes = list;
        }
        for line in &reversals {
            let batch = find
                .payment(*line)
                .map(|(_, i)| i.batch)
                .unwrap_or_default();
            plan.entry(batch).or_default().reversals.push(*line);
        }
        // Nothing is posted before the snapshot is taken: its movements and the run's own
        // must not overlap. (If its read failed, the float is read in full below.)
        let _ = snapshot_taken.await;
        // Posted on another task while this one builds the item rows.
        let settling = {
            let batches = self.batches.clone();
            let ctx = ctx.clone();
            tokio::spawn(async move { batches.settle_many(&plan, "statement", &ctx).await })
        };
        // Items after step 3, built as if every planned reversal is booked; the items of the
        // reversals are kept to build again if one is not.
        let row_of = |item: Item, action: Option<Action>| {
            let booked = item.category == Category::ReversedByProvider
                && item.payment.is_some_and(|l| already_booked.contains(&l));
            let mut row = settled_item(item, action, &find);
            if booked {
                row.settled = true;
                row.detail.push_str("; reversal already booked");
            }
            row
        };
        let planned_reversals: HashSet<i64> = reversals.iter().copied().collect();
        let mut again: Vec<(usize, Item)> = Vec::new();
        let mut rows: Vec<Row> = Vec::with_capacity(result.items.len());
        for item in result.items {
            let action = item.payment.and_then(|l| actions.get(&l).copied());
            if item.payment.is_some_and(|l| planned_reversals.contains(&l)) {
                again.push((rows.len(), item.clone()));
            }
            rows.push(row_of(item, action));
        }
        clock.mark("rows");
        let settled = settling
            .await
            .map_err(|e| RunError::Corrupt(format!("the posting task ended abnormally: {e}")))??;
        let done: HashSet<i64> = settled.reversed.iter().copied().collect();
        for (at, item) in again {
            let Some(line) = item.payment else { continue };
            if !done.contains(&line) {
                // Not booked (another process settled the line since): no action.
                rows[at] = row_of(item, None);
            }
        }
        let posted = i64::try_from(
            settled.applied.completed + settled.applied.failed + settled.reversed.len(),
        )
        .unwrap_or(i64::MAX);
        clock.mark("postings");
        drop(lines);

        let ledger = self.batches.registry().ledger().clone();
        let t0 = st.period_start;
        let run_at = cva_ledger::store::now_micros();
        let summary = summary_of(&rows, &result.summary);
        let payments_considered = i64::try_from(payments.len()).unwrap_or(i64::MAX);
        drop(payments);
        drop(info);

        let window_seconds = options.window.num_seconds();
        let snapshot = match snapshot.await {
            Ok(Ok(snapshot)) => Some(snapshot),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "float snapshot failed; the float is read in full");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "float snapshot task failed; the float is read in full");
                None
            }
        };
        clock.mark("float snapshot");
        let view = write_tx!(ledger, |tx| {
            let float = match snapshot {
                Some(snapshot) => {
                    let delta = tx.read_delta(&float_account, &settled.posted, t0).await?;
                    match snapshot.with_delta(delta, t0) {
                        Some(float) => float,
                        None => {
                            tracing::info!(
                                "the float moved during the run besides the run's own \
                                 postings; read in full"
                            );
                            FloatInputs::read(&mut *tx, &float_account, t0).await?
                        }
                    }
                }
                None => FloatInputs::read(&mut *tx, &float_account, t0).await?,
            };
            clock.mark("float read");
            let mut float_rows = Vec::new();
            let mut item_lines: HashSet<i64> = HashSet::with_capacity(rows.len());
            item_lines.extend(rows.iter().filter_map(|r| r.line));
            // Item effects: the ledger side of each item's line.
            for r in &mut rows {
                if r.category == Category::DuplicateInStatement {
                    continue;
                }
                if let Some(l) = r.line {
                    r.effect += float.by_line.get(&l).map_or(0, |m| m.amount);
                }
            }
            for m in &float.other {
                float_rows.push(FloatRow {
                    kind: "ledger_only",
                    entry_id: Some(m.entry_id.to_string()),
                    row_no: None,
                    amount: m.amount,
                    detail: format!(
                        "float movement of ledger entry {} not on the statement: {}",
                        m.entry_id, m.description
                    ),
                });
            }
            // Payment lines whose float moved but that no item is about (paid outside the
            // statement, or before its period), one line each.
            let mut outside: Vec<(&i64, &PaidLine)> = float
                .by_line
                .iter()
                .filter(|(l, _)| !item_lines.contains(*l))
                .collect();
            outside.sort_unstable_by_key(|(l, _)| **l);
            for (line, m) in outside {
                float_rows.push(FloatRow {
                    kind: "ledger_only",
                    entry_id: Some(m.first_entry.to_string()),
                    row_no: None,
                    amount: m.amount,
                    detail: format!(
                        "float movements of payment line {line} not on the statement \
                         ({} ledger entries, the first {})",
                        m.entries, m.first_entry
                    ),
                });
            }
            let ledger_closing = float.closing();
            let ledger_opening = ledger_closing - float.since_t0;
            let (statement_opening, statement_closing) =
                match (&st.opening_balance, &st.closing_balance) {
                    (Some(o), Some(c)) if o.currency() == currency => {
                        (Some(o.minor()), Some(c.minor()))
                    }
                    _ => (None, None),
                };
            let difference = match (statement_opening, statement_closing) {
                (Some(o), Some(c)) => {
                    float_rows.push(FloatRow {
                        kind: "opening_difference",
                        entry_id: None,
                        row_no: None,
                        amount: ledger_opening - o,
                        detail: format!(
                            "ledger float before the statement's first line {ledger_opening}, \
                             statement opening balance {o}"
                        ),
                    });
                    for (row, brk) in &breaks {
                        float_rows.push(FloatRow {
                            kind: "running_balance_break",
                            entry_id: None,
                            row_no: Some(i64::try_from(*row).unwrap_or(i64::MAX)),
                            amount: -brk,
                            detail: format!(
                                "row {row}: balance_after differs by {brk} from the previous \
                                 balance and the row's movement"
                            ),
                        });
                    }
                    ledger_closing - c
                }
                _ => float.since_t0 - statement_movement,
            };
            let explained: i64 = rows.iter().map(|r| r.effect).sum::<i64>()
                + float_rows.iter().map(|f| f.amount).sum::<i64>();
            let unexplained = difference - explained;
            // Plain matches are stored packed (see `packed`), every other item as a row.
            let (plain, rows) = split_plain(std::mem::take(&mut rows));
            clock.mark("float rows");

            let run_no: i64 = sqlx::query_scalar(
                "SELECT CAST(COALESCE(MAX(run_no), 0) + 1 AS BIGINT) FROM reconciliations \
                 WHERE statement_id = $1",
            )
            .bind(statement_id)
            .fetch_one(&mut *tx)
            .await?;
            let summary_json = serde_json::to_string(&summary)
                .map_err(|e| RunError::Corrupt(format!("summary: {e}")))?;
            let id: std::result::Result<i64, sqlx::Error> = sqlx::query_scalar(
                "INSERT INTO reconciliations (statement_id, run_no, provider, currency, \
                 window_seconds, payments_considered, summary, outcomes_posted, \
                 statement_opening, statement_closing, ledger_opening, ledger_closing, \
                 difference, explained, unexplained, run_by, run_at) VALUES ($1, $2, $3, $4, \
                 $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) RETURNING id",
            )
            .bind(statement_id)
            .bind(run_no)
            .bind(&st.provider)
            .bind(currency.code())
            .bind(window_seconds)
            .bind(payments_considered)
            .bind(&summary_json)
            .bind(posted)
            .bind(statement_opening)
            .bind(statement_closing)
            .bind(ledger_opening)
            .bind(ledger_closing)
            .bind(difference)
            .bind(explained)
            .bind(unexplained)
            .bind(&ctx.actor)
            .bind(run_at)
            .fetch_one(&mut *tx)
            .await;
            let id = match id {
                Ok(id) => id,
                Err(sqlx::Error::Database(d)) if d.is_unique_violation() => {
                    return Err(RunError::Concurrent(statement_id));
                }
                Err(e) => return Err(e.into()),
            };
            RunSink::insert_items(&mut *tx, id, &rows).await?;
            clock.mark("items");
            // The plain matches, packed in chunks (the same SQL on both backends).
            for (no, chunk, first) in match_chunks(&plain) {
                sqlx::query(
                    "INSERT INTO reconciliation_matches (reconciliation_id, chunk_no, pairs, \
                     first_pair, data) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(id)
                .bind(no)
                .bind(i32::try_from(chunk.len()).unwrap_or(i32::MAX))
                .bind(first)
                .bind(packed::encode(chunk))
                .execute(&mut *tx)
                .await?;
            }
            drop(plain);
            clock.mark("matches");
            RunSink::insert_float_lines(&mut *tx, id, &float_rows).await?;
            clock.mark("float lines");
            let exceptions: Vec<NewException> = rows
                .iter()
                .filter(|r| !r.settled)
                .map(|r| NewException {
                    key: format!(
                        "{}:{}:{}",
                        r.category.as_str(),
                        r.line.map(|l| l.to_string()).unwrap_or_else(|| "-".into()),
                        join_rows(&r.rows)
                    ),
                    category: r.category.as_str(),
                    line: r.line,
                    rows: join_rows(&r.rows),
                    amount: r.effect,
                    detail: r.detail.clone(),
                })
                .collect();
            let (opened, seen) = RunSink::upsert_exceptions(
                &mut *tx,
                statement_id,
                id,
                currency.code(),
                &exceptions,
                &ctx.actor,
                run_at,
            )
            .await?;
            clock.mark("exceptions");
            let change = serde_json::json!({
                "statement": statement_id,
                "run_no": run_no,
                "summary": summary,
                "outcomes_posted": posted,
                "difference": difference,
                "unexplained": unexplained,
                "exceptions_opened": opened,
                "exceptions_seen_again": seen,
            });
            let rec = AuditRecord::new(
                ctx,
                "reconciliation.run",
                "reconciliation",
                id.to_string(),
                change,
            );
            AuditConn::append(&mut *tx, &rec).await?;
            RunView {
                id,
                statement_id,
                run_no: i32::try_from(run_no).unwrap_or(i32::MAX),
                provider: st.provider.clone(),
                window_seconds,
                payments_considered,
                summary: summary.clone(),
                outcomes_posted: posted,
                float: FloatReconciliation {
                    account: float_account.clone(),
                    currency: currency.code().to_owned(),
                    statement_opening,
                    statement_closing,
                    ledger_opening,
                    ledger_closing,
                    difference,
                    explained,
                    unexplained,
                },
                exceptions_opened: opened,
                exceptions_seen_again: seen,
                run_by: ctx.actor.clone(),
                run_at,
            }
        });
        clock.mark("commit");
        tracing::info!(
            run = view.id,
            statement = statement_id,
            posted = view.outcomes_posted,
            opened = view.exceptions_opened,
            phases = %clock,
            "reconciliation stored"
        );
        Ok(view)
    }

    /// A stored run.
    pub async fn get(&self, id: i64) -> Result<RunView> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM reconciliations WHERE id = $1");
        let row: Option<RunRow> = read_pool!(self.statements.ledger(), |pool| {
            sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?
        });
        let row =
            row.ok_or_else(|| RunError::NotFound(format!("reconciliation {id} not found")))?;
        self.view_of(row).await
    }

    /// The runs of a statement, first to last.
    pub async fn runs(&self, statement_id: i64) -> Result<Vec<RunView>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM reconciliations WHERE statement_id = $1 ORDER BY run_no"
        );
        let rows: Vec<RunRow> = read_pool!(self.statements.ledger(), |pool| {
            sqlx::query_as(&sql)
                .bind(statement_id)
                .fetch_all(pool)
                .await?
        });
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(self.view_of(r).await?);
        }
        Ok(out)
    }

    async fn view_of(&self, row: RunRow) -> Result<RunView> {
        let RunRow {
            id,
            statement_id,
            run_no,
            provider,
            currency,
            window_seconds,
            payments_considered,
            summary,
            outcomes_posted,
            statement_opening,
            statement_closing,
            ledger_opening,
            ledger_closing,
            difference,
            explained,
            unexplained,
            run_by,
            run_at,
        } = row;
        let summary: Summary = serde_json::from_str(&summary)
            .map_err(|e| RunError::Corrupt(format!("run {id}: summary: {e}")))?;
        let (opened, seen): (i64, i64) = read_pool!(self.statements.ledger(), |pool| {
            let opened = sqlx::query_scalar("SELECT COUNT(*) FROM exceptions WHERE first_run = $1")
                .bind(id)
                .fetch_one(pool)
                .await?;
            let seen = sqlx::query_scalar(
                "SELECT COUNT(*) FROM exceptions WHERE last_run = $1 AND first_run <> $1",
            )
            .bind(id)
            .fetch_one(pool)
            .await?;
            (opened, seen)
        });
        let account = self
            .batches
            .config()
            .provider(&provider)
            .map(|p| p.float_account())
            .unwrap_or_else(|| format!("assets:float:{provider}"));
        Ok(RunView {
            id,
            statement_id,
            run_no,
            provider,
            window_seconds,
            payments_considered,
            summary,
            outcomes_posted,
            float: FloatReconciliation {
                account,
                currency,
                statement_opening,
                statement_closing,
                ledger_opening,
                ledger_closing,
                difference,
                explained,
                unexplained,
            },
            exceptions_opened: opened,
            exceptions_seen_again: seen,
            run_by,
            run_at,
        })
    }

    /// Up to `limit` (1 to [`MAX_ITEMS_PAGE`]) items of run `id`, optionally of one category,
    /// skipping the first `offset`: the item rows in the order matching produced them, then
    /// the plain matches (stored packed, see [`crate::packed`]) in theirs.
    pub async fn items(
        &self,
        id: i64,
        category: Option<Category>,
        offset: u64,
        limit: u32,
    ) -> Result<Vec<StoredItem>> {
        if limit == 0 || limit > MAX_ITEMS_PAGE {
            return Err(RunError::Invalid {
                field: "limit",
                reason: format!("must be 1 to {MAX_ITEMS_PAGE}"),
            });
        }
        let offset = i64::try_from(offset).map_err(|_| RunError::Invalid {
            field: "offset",
            reason: "too large".into(),
        })?;
        self.get(id).await?;
        let category = category.map(Category::as_str);
        type ItemRow = (
            i64,
            String,
            Option<String>,
            Option<i64>,
            String,
            i64,
            Option<String>,
            String,
        );
        let rows: Vec<ItemRow> = read_pool!(self.statements.ledger(), |pool| {
            sqlx::query_as(
                "SELECT id, category, rule, line_id, statement_rows, float_effect, action, detail \
                 FROM reconciliation_items WHERE reconciliation_id = $1 \
                 AND ($2 IS NULL OR category = $2) ORDER BY id LIMIT $3 OFFSET $4",
            )
            .bind(id)
            .bind(category)
            .bind(i64::from(limit))
            .bind(offset)
            .fetch_all(pool)
            .await?
        });
        let mut out = rows
            .into_iter()
            .map(
                |(id, category, rule, line_id, rows, float_effect, action, detail)| {
                    let statement_rows = parse_rows(&rows)
                        .ok_or_else(|| RunError::Corrupt(format!("item {id}: statement rows")))?;
                    Ok(StoredItem {
                        id: Some(id),
                        category,
                        rule,
                        line_id,
                        statement_rows,
                        float_effect,
                        action,
                        detail,
                    })
                },
            )
            .collect::<Result<Vec<_>>>()?;
        let room = usize::try_from(limit).unwrap_or(usize::MAX) - out.len();
        if room > 0 && category.is_none_or(|c| c == Category::Matched.as_str()) {
            // The plain matches come after the item rows.
            let stored: i64 = read_pool!(self.statements.ledger(), |pool| {
                sqlx::query_scalar(
                    "SELECT COUNT(*) FROM reconciliation_items WHERE reconciliation_id = $1 \
                     AND ($2 IS NULL OR category = $2)",
                )
                .bind(id)
                .bind(category)
                .fetch_one(pool)
                .await?
            });
            let skip = u64::try_from(offset.saturating_sub(stored)).unwrap_or(0);
            let pairs = packed::read(self.statements.ledger(), id, skip, room as u64)
                .await
                .map_err(|e| match e {
                    packed::ReadError::Database(e) => RunError::Database(e),
                    corrupt => RunError::Corrupt(corrupt.to_string()),
                })?;
            out.extend(
                pairs
                    .into_iter()
                    .map(|(line, row)| StoredItem::plain(line, row)),
            );
        }
        Ok(out)
    }

    /// The float differences of run `id` that are not items.
    pub async fn float_lines(&self, id: i64) -> Result<Vec<FloatLine>> {
        self.get(id).await?;
        type FloatLineRow = (String, Option<String>, Option<i64>, i64, String);
        let rows: Vec<FloatLineRow> = read_pool!(self.statements.ledger(), |pool| {
            sqlx::query_as(
                "SELECT kind, CAST(entry_id AS TEXT), row_no, amount, detail \
                 FROM reconciliation_float_lines WHERE reconciliation_id = $1 ORDER BY id",
            )
            .bind(id)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(kind, entry_id, row_no, amount, detail)| FloatLine {
                kind,
                entry_id,
                row_no,
                amount,
                detail,
            })
            .collect())
    }

    /// The statement store this reconciler reads.
    pub fn statements(&self) -> &Statements {
        &self.statements
    }

    async fn read_lines(&self, statement_id: i64, capacity: usize) -> Result<Vec<StatementLine>> {
        let ledger = self.statements.ledger();
        if let Some(pool) = ledger.pg_pool() {
            let sql = LINES_SQL.replace("$1", &statement_id.to_string());
            let mut out = Vec::with_capacity(capacity);
            let mut conn = pool.acquire().await?;
            pgcopy::copy_rows(&mut conn, &sql, 9, |mut t| {
                let row = t.i64()?.unwrap_or_default();
                let bad = || RunError::Corrupt(format!("row {row}: a required field is NULL"));
                out.push(statement_line(
                    row,
                    t.str()?.ok_or_else(bad)?.to_owned(),
                    t.str()?.map(str::to_owned),
                    t.i64()?.ok_or_else(bad)?,
                    t.i64()?.ok_or_else(bad)?,
                    t.str()?.ok_or_else(bad)?,
                    t.str()?.ok_or_else(bad)?,
                    t.time()?.ok_or_else(bad)?,
                    t.i64()?,
                )?);
                Ok(())
            })
            .await?;
            // Usually in order already (the table's physical order is the import's).
            if !out.is_sorted_by_key(|l| l.row) {
                out.sort_unstable_by_key(|l| l.row);
            }
            return Ok(out);
        }
        let Some(pool) = ledger.sqlite_pool() else {
            return Ok(Vec::new());
        };
        let mut lines = Vec::with_capacity(capacity);
        // One snapshot for every range.
        let mut tx = pool.begin().await?;
        let range: (Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT min(row_no), max(row_no) FROM statement_lines WHERE statement_id = $1",
        )
        .bind(statement_id)
        .fetch_one(&mut *tx)
        .await?;
        let (Some(lo), Some(hi)) = range else {
            return Ok(lines);
        };
        let query = |start: i64, end: i64| {
            sqlx::query_scalar(SQLITE_LINES_SQL)
                .bind(statement_id)
                .bind(start)
                .bind(end)
        };
        sqlitejson::each_group_by_range(&mut tx, (lo, hi), query, |group| {
            for r in sqlitejson::rows::<SqliteLine<'_>>(group)? {
                let (row, transaction_id, reference, amount, fee, currency, status, at, bal) = r;
                let at = sqlitejson::time(at)
                    .ok_or_else(|| RunError::Corrupt(format!("row {row}: time")))?;
                lines.push(statement_line(
                    row,
                    transaction_id,
                    reference,
                    amount,
                    fee,
                    currency,
                    status,
                    at,
                    bal,
                )?);
            }
            Ok(())
        })
        .await?;
        tx.rollback().await?;
        if !lines.is_sorted_by_key(|l| l.row) {
            lines.sort_unstable_by_key(|l| l.row);
        }
        Ok(lines)
    }

    /// The keyed phone index of statement rows `rows` (row numbers; those without one absent).
    async fn row_keys(&self, statement_id: i64, rows: &[i64]) -> Result<HashMap<usize, String>> {
        if rows.is_empty() {
            return Ok(HashMap::new());
        }
        let ledger = self.statements.ledger();
        let found: Vec<(i64, Option<String>)> = match ledger.pool() {
            cva_ledger::store::PoolRef::Postgres(pool) => {
                sqlx::query_as(
                    "SELECT row_no, msisdn_index FROM statement_lines \
                     WHERE statement_id = $1 AND row_no = ANY($2)",
                )
                .bind(statement_id)
                .bind(rows)
                .fetch_all(pool)
                .await?
            }
            cva_ledger::store::PoolRef::Sqlite(pool) => {
                let list = serde_json::to_string(rows)
                    .map_err(|e| RunError::Corrupt(format!("row numbers: {e}")))?;
                sqlx::query_as(
                    "SELECT row_no, msisdn_index FROM statement_lines \
                     WHERE statement_id = $1 AND row_no IN (SELECT value FROM json_each($2))",
                )
                .bind(statement_id)
                .bind(list)
                .fetch_all(pool)
                .await?
            }
        };
        Ok(found
            .into_iter()
            .filter_map(|(row, key)| Some((usize::try_from(row).ok()?, key?)))
            .collect())
    }

    /// The households' keyed phone index of payment lines `ids` (those without one absent).
    async fn payee_keys(&self, ids: &[i64]) -> Result<HashMap<i64, String>> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let ledger = self.statements.ledger();
        let rows: Vec<(i64, Option<String>)> = match ledger.pool() {
            cva_ledger::store::PoolRef::Postgres(pool) => {
                sqlx::query_as(
                    "SELECT l.id, h.msisdn_index FROM batch_lines l \
                     JOIN households h ON h.id = l.household_id WHERE l.id = ANY($1)",
                )
                .bind(ids)
                .fetch_all(pool)
                .await?
            }
            cva_ledger::store::PoolRef::Sqlite(pool) => {
                let list = serde_json::to_string(ids)
                    .map_err(|e| RunError::Corrupt(format!("line ids: {e}")))?;
                sqlx::query_as(
                    "SELECT l.id, h.msisdn_index FROM batch_lines l \
                     JOIN households h ON h.id = l.household_id \
                     WHERE l.id IN (SELECT value FROM json_each($1))",
                )
                .bind(list)
                .fetch_all(pool)
                .await?
            }
        };
        Ok(rows
            .into_iter()
            .filter_map(|(id, key)| key.map(|k| (id, k)))
            .collect())
    }

    async fn read_payments(
        &self,
        provider: &str,
        since: DateTime<Utc>,
        capacity: usize,
    ) -> Result<(Vec<Payment>, Vec<LineInfo>)> {
        let ledger = self.statements.ledger();
        let mut read: (Vec<Payment>, Vec<LineInfo>) =
            (Vec::with_capacity(capacity), Vec::with_capacity(capacity));
        if let Some(pool) = ledger.pg_pool() {
            // Unsorted (a million-row sort spills to disk at the default work_mem; matching
            // does not depend on the order). COPY takes no parameters: the provider as a
            // quoted literal, the time as microseconds.
            let sql = PAYMENTS_SQL
                .replace("$1", &pgcopy::literal(provider))
                .replace(
                    "$2",
                    &format!(
                        "(TIMESTAMPTZ 'epoch' + {} * INTERVAL '1 microsecond')",
                        since.timestamp_micros()
                    ),
                );
            let mut conn = pool.acquire().await?;
            pgcopy::copy_rows(&mut conn, &sql, 9, |mut t| {
                let id = t.i64()?.unwrap_or_default();
                let bad = || RunError::Corrupt(format!("line {id}: a required field is NULL"));
                let (p, i) = payment(
                    id,
                    t.str()?.map(str::to_owned),
                    t.i64()?.ok_or_else(bad)?,
                    t.i64()?.ok_or_else(bad)?,
                    t.str()?.ok_or_else(bad)?.to_owned(),
                    t.str()?.ok_or_else(bad)?,
                    t.str()?,
                    t.time()?.ok_or_else(bad)?,
                    t.i64()?.ok_or_else(bad)?,
                )?;
                read.0.push(p);
                read.1.push(i);
                Ok(())
            })
            .await?;
            sort_by_line(&mut read.0, &mut read.1);
            return Ok(read);
        }
        let Some(pool) = ledger.sqlite_pool() else {
            return Ok((Vec::new(), Vec::new()));
        };
        // One snapshot for every range.
        let mut tx = pool.begin().await?;
        let range: (Option<i64>, Option<i64>) =
            sqlx::query_as("SELECT min(id), max(id) FROM batch_lines")
                .fetch_one(&mut *tx)
                .await?;
        let (Some(lo), Some(hi)) = range else {
            return Ok((Vec::new(), Vec::new()));
        };
        let query = |start: i64, end: i64| {
            sqlx::query_scalar(SQLITE_PAYMENTS_SQL)
                .bind(provider)
                .bind(since)
                .bind(start)
                .bind(end)
        };
        sqlitejson::each_group_by_range(&mut tx, (lo, hi), query, |group| {
            for r in sqlitejson::rows::<SqlitePayment<'_>>(group)? {
                let (id, tx, amount, fee, currency, status, code, at, batch) = r;
                let at = sqlitejson::time(at)
                    .ok_or_else(|| RunError::Corrupt(format!("line {id}: time")))?;
                let (p, i) = payment(
                    id,
                    tx,
                    amount,
                    fee,
                    currency.to_owned(),
                    status,
                    code.as_deref(),
                    at,
                    batch,
                )?;
                read.0.push(p);
                read.1.push(i);
            }
            Ok(())
        })
        .await?;
        tx.rollback().await?;
        sort_by_line(&mut read.0, &mut read.1);
        Ok(read)
    }
}

/// The float movement of a statement row, as the provider's float sees it (negative: out).
fn movement(l: &StatementLine) -> i64 {
    if l.status.moves_float() {
        -(l.amount_minor + l.fee_minor)
    } else {
        0
    }
}

/// Rows whose `balance_after` is not the previous balance plus the row's movement, with the
/// size of the jump (`balance_after − expected`). Rows without a balance are skipped.
fn running_breaks(
    lines: &[StatementLine],
    currency: Currency,
    opening: Option<i64>,
) -> Vec<(usize, i64)> {
    let mut out = Vec::new();
    let Some(mut balance) = opening else {
        return out;
    };
    for l in lines.iter().filter(|l| l.currency == currency) {
        let expected = balance + movement(l);
        match l.balance_after_minor {
            Some(b) => {
                if b != expected {
                    out.push((l.row, b - expected));
                }
                balance = b;
            }
            None => balance = expected,
        }
    }
    out
}

fn join_rows(rows: &[usize]) -> String {
    rows.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_rows(s: &str) -> Option<Vec<u64>> {
    if s.is_empty() {
        return Some(Vec::new());
    }
    s.split(',').map(|r| r.parse().ok()).collect()
}

/// An item as stored: the statement's side of its float effect, and for a line the run
/// settled, the category and detail after the posting.
fn settled_item(item: Item, action: Option<Action>, find: &Found<'_>) -> Row {
    // Not collected: a million small vectors for items of one row.
    let rows = &item.statement_rows;
    let row_lines = || rows.iter().filter_map(|&r| find.line(r));
    let payment = item.payment.and_then(|l| find.payment(l)).map(|(p, _)| p);
    let currency = payment.map(|p| p.currency.as_str());
    let effect: i64 = -row_lines()
        .filter(|l| currency.is_none_or(|c| l.currency.code() == c))
        .map(movement)
        .sum::<i64>();
    let mut category = item.category;
    let mut detail = item.detail;
    if let (Some(a), Some(p)) = (action, payment) {
        match a {
            Action::Confirmed | Action::Failed => {
                let fee_differs = a == Action::Confirmed
                    && row_lines().any(|l| {
                        l.status == StatementStatus::Completed && l.fee_minor != p.fee_minor
                    });
                category = if fee_differs {
                    Category::FeeMismatch
                } else {
                    Category::Matched
                };
                detail = format!(
                    "{detail}; resolved by the statement: {} → {}",
                    p.status.as_str(),
                    if a == Action::Confirmed {
                        "completed"
                    } else {
                        "failed"
                    }
                );
            }
            Action::ReversalBooked => {
                detail = format!("{detail}; reversal booked by this reconciliation");
            }
        }
    }
    if category == Category::Matched && action.is_none() {
        // A plain match says all in its rule, line and rows; a million details are not
        // worth storing.
        detail = String::new();
    }
    Row {
        category,
        rule: item.rule,
        line: item.payment,
        rows: item.statement_rows,
        effect,
        action,
        detail,
        settled: category == Category::Matched || action.is_some(),
    }
}

/// A plain match: by the provider's transaction id, one row, nothing posted, no float
/// effect — stored packed (see [`crate::packed`]) rather than as an item row.
fn is_plain(r: &Row) -> bool {
    r.category == Category::Matched
        && r.rule == Some(Rule::ProviderTransactionId)
        && r.action.is_none()
        && r.effect == 0
        && r.rows.len() == 1
        && r.line.is_some()
        && r.detail.is_empty()
}

/// The plain matches as (line, row) pairs, in matching order, and the other items.
fn split_plain(rows: Vec<Row>) -> (Vec<(i64, u64)>, Vec<Row>) {
    let mut plain = Vec::with_capacity(rows.len());
    let mut other = Vec::new();
    for r in rows {
        match (is_plain(&r), r.line, r.rows.first()) {
            (true, Some(line), Some(&row)) => {
                plain.push((line, u64::try_from(row).unwrap_or(u64::MAX)));
            }
            _ => other.push(r),
        }
    }
    (plain, other)
}

/// The summary after step 3 (settled items counted under their new category).
fn summary_of(rows: &[Row], before: &Summary) -> Summary {
    let mut s = Summary {
        skipped_payments: before.skipped_payments,
        skipped_rows: before.skipped_rows,
        ..Summary::default()
    };
    for r in rows {
        match r.category {
            Category::Matched => s.matched += 1,
            Category::AmountMismatch => s.amount_mismatch += 1,
            Category::FeeMismatch => s.fee_mismatch += 1,
            Category::StatusMismatch => s.status_mismatch += 1,
            Category::MissingFromStatement => s.missing_from_statement += 1,
            Category::UnexpectedInStatement => s.unexpected_in_statement += 1,
            Category::DuplicateInStatement => s.duplicate_in_statement += 1,
            Category::ReversedByProvider => s.reversed_by_provider += 1,
        }
    }
    s
}

/// The statement's lines (`$1`: the statement), in no particular order: a million-row sort
/// spills to disk at PostgreSQL's default `work_mem`, and sorting in memory here is cheaper.
/// Without `msisdn_index`: only the rows [`needs_row_msisdn`] names need it (`row_keys`).
const LINES_SQL: &str = "SELECT row_no, transaction_id, reference, amount, fee, \
    currency, status, at, balance_after FROM statement_lines WHERE statement_id = $1";

/// The provider's payment lines (`$1`: provider, `$2`: since; see the module docs). Typed
/// for PostgreSQL's binary COPY: BIGINT, TEXT and TIMESTAMPTZ only.
const PAYMENTS_SQL: &str = "SELECT l.id, l.provider_transaction_id, l.amount, \
    l.fee, b.currency, l.status, l.failure_code, \
    COALESCE(l.resolved_at, a.updated_at, b.status_changed_at), b.id \
    FROM batch_lines l JOIN batches b ON b.id = l.batch_id \
    LEFT JOIN payment_attempts a ON a.id = l.attempt_id \
    WHERE b.provider = $1 \
    AND l.status IN ('in_flight', 'completed', 'failed', 'unknown') \
    AND (l.status IN ('in_flight', 'unknown') \
         OR COALESCE(l.resolved_at, a.updated_at, b.status_changed_at) >= $2)";

/// [`LINES_SQL`] for SQLite, rows `$2 ≤ row_no < $3` packed in one JSON group (see
/// `sqlitejson`; any order).
const SQLITE_LINES_SQL: &str = "SELECT json_group_array(json_array(row_no, transaction_id, \
    reference, amount, fee, currency, status, at, balance_after)) \
    FROM statement_lines WHERE statement_id = $1 AND row_no >= $2 AND row_no < $3";

/// [`PAYMENTS_SQL`] for SQLite, lines `$3 ≤ id < $4` packed in one JSON group (see
/// `sqlitejson`; any order).
const SQLITE_PAYMENTS_SQL: &str = "SELECT json_group_array(json_array(l.id, \
    l.provider_transaction_id, l.amount, l.fee, b.currency, l.status, \
    l.failure_code, COALESCE(l.resolved_at, a.updated_at, b.status_changed_at), b.id)) \
    FROM batch_lines l JOIN batches b ON b.id = l.batch_id \
    LEFT JOIN payment_attempts a ON a.id = l.attempt_id \
    WHERE b.provider = $1 \
    AND l.status IN ('in_flight', 'completed', 'failed', 'unknown') \
    AND (l.status IN ('in_flight', 'unknown') \
         OR COALESCE(l.resolved_at, a.updated_at, b.status_changed_at) >= $2) \
    AND l.id >= $3 AND l.id < $4";

/// A statement line as [`SQLITE_LINES_SQL`] gives it. Borrowed: the values import checked
/// (currency, status, time: never escaped in JSON); owned: what the provider wrote.
type SqliteLine<'a> = (
    i64,
    String,
    Option<String>,
    i64,
    i64,
    &'a str,
    &'a str,
    &'a str,
    Option<i64>,
);

/// A payment as [`SQLITE_PAYMENTS_SQL`] gives it (borrowed: status and time, ours).
type SqlitePayment<'a> = (
    i64,
    Option<String>,
    i64,
    i64,
    &'a str,
    &'a str,
    Option<String>,
    &'a str,
    i64,
);

#[allow(clippy::too_many_arguments)]
fn statement_line(
    row: i64,
    transaction_id: String,
    reference: Option<String>,
    amount: i64,
    fee: i64,
    currency: &str,
    status: &str,
    at: DateTime<Utc>,
    balance: Option<i64>,
) -> Result<StatementLine> {
    let status = StatementStatus::ALL
        .into_iter()
        .find(|s| s.as_str() == status)
        .ok_or_else(|| RunError::Corrupt(format!("row {row}: status")))?;
    Ok(StatementLine {
        row: usize::try_from(row).map_err(|_| RunError::Corrupt(format!("row {row}")))?,
        transaction_id,
        reference,
        // Read afterwards, only for the rows that may need it (`row_keys`).
        msisdn: None,
        amount_minor: amount,
        fee_minor: fee,
        currency: Currency::parse(currency)
            .map_err(|_| RunError::Corrupt(format!("row {row}: currency")))?,
        status,
        at,
        balance_after_minor: balance,
    })
}

/// Payments sorted by line id, and what the run needs of each in the same order, in place:
/// nothing to do when they came in order (SQLite reads by line id; PostgreSQL's heap is in
/// insertion order until lines are updated), otherwise one permutation applied to both by
/// following its cycles (no second copy of a million payments).
fn sort_by_line(payments: &mut [Payment], info: &mut [LineInfo]) {
    if payments.windows(2).all(|w| w[0].line <= w[1].line) {
        return;
    }
    let mut order: Vec<usize> = (0..payments.len()).collect();
    order.sort_unstable_by_key(|&i| payments[i].line);
    // Position j receives the element at order[j]; a done position is marked usize::MAX.
    for start in 0..order.len() {
        if order[start] == usize::MAX {
            continue;
        }
        let mut j = start;
        loop {
            let k = order[j];
            order[j] = usize::MAX;
            if k == start {
                break;
            }
            payments.swap(j, k);
            info.swap(j, k);
            j = k;
        }
    }
}

/// A payment line as matching sees it, and what the run needs besides.
#[allow(clippy::too_many_arguments)]
fn payment(
    id: i64,
    tx: Option<String>,
    amount: i64,
    fee: i64,
    currency: String,
    status: &str,
    code: Option<&str>,
    at: DateTime<Utc>,
    batch: i64,
) -> Result<(Payment, LineInfo)> {
    let status = match status {
        "completed" => PaymentStatus::Completed,
        "failed" => PaymentStatus::Failed,
        "unknown" => PaymentStatus::Unknown,
        "in_flight" => PaymentStatus::InFlight,
        other => return Err(RunError::Corrupt(format!("line {id}: status {other}"))),
    };
    let reversed = code == Some("reversed");
    // A reversed line was paid, then reversed: to the statement, which lists the payment and
    // its reversal, it is a completed payment.
    let status = if reversed {
        PaymentStatus::Completed
    } else {
        status
    };
    Ok((
        Payment {
            line: id,
            provider_tx: tx,
            // Read afterwards, only for the payments that may need it (`payee_keys`).
            payee_key: None,
            amount_minor: amount,
            fee_minor: fee,
            currency,
            status,
            at,
        },
        LineInfo { batch, reversed },
    ))
}

/// A ledger float movement since `t0` that is not a payment line's.
struct Movement {
    entry_id: uuid::Uuid,
    description: String,
    amount: i64,
}

/// The float movements since `t0` of one payment line's entries (`pay:LINE:…`).
struct PaidLine {
    amount: i64,
    entries: u32,
    first_entry: uuid::Uuid,
}

/// The ledger side of the float reconciliation.
struct FloatInputs {
    /// The account's debit and credit totals (its balance: debits − credits).
    debits: i64,
    credits: i64,
    since_t0: i64,
    /// Float movements since `t0` of payment entries, per line (summed).
    by_line: HashMap<i64, PaidLine>,
    /// Every other movement since `t0`, one by one, in time order.
    other: Vec<Movement>,
}

fn pay_line(key: &str) -> Option<i64> {
    let rest = key.strip_prefix("pay:")?;
    let (line, _) = rest.split_once(':')?;
    line.parse().ok()
}

impl FloatInputs {
    fn read<'a, C: FloatReader + ?Sized>(
        conn: &'a mut C,
        account: &'a str,
        t0: Option<DateTime<Utc>>,
    ) -> BoxFuture<'a, Result<FloatInputs>> {
        conn.read_float(account, t0, None, 0)
    }

    fn new((debits, credits): (i64, i64)) -> FloatInputs {
        FloatInputs {
            debits,
            credits,
            since_t0: 0,
            by_line: HashMap::new(),
            other: Vec::new(),
        }
    }

    /// One movement of a payment entry (key `pay:…`; a key naming no line is an other).
    fn paid(&mut self, entry_id: uuid::Uuid, key: &str, amount: i64) {
        self.since_t0 += amount;
        match pay_line(key) {
            Some(line) => {
                let m = self.by_line.entry(line).or_insert(PaidLine {
                    amount: 0,
                    entries: 0,
                    first_entry: entry_id,
                });
                m.amount += amount;
                m.entries += 1;
                // Entry ids are UUIDv7 (time-ordered): the smallest is the earliest, whatever
                // order the rows came in.
                m.first_entry = m.first_entry.min(entry_id);
            }
            None => self.other.push(Movement {
                entry_id,
                description: "a payment entry that names no payment line".into(),
                amount,
            }),
        }
    }

    fn other(&mut self, entry_id: uuid::Uuid, description: String, amount: i64) {
        self.since_t0 += amount;
        self.other.push(Movement {
            entry_id,
            description,
            amount,
        });
    }

    fn closing(&self) -> i64 {
        self.debits - self.credits
    }

    /// This snapshot brought up to date with `delta`: the float movements of the entries
    /// written since it was taken, as far as the caller knows them, and the account's totals
    /// now. `None` when the totals say something else moved the float meanwhile: every
    /// journal amount is positive, so a movement missing from `delta` (or one counted twice)
    /// changes the debit or the credit total it is checked against.
    fn with_delta(mut self, delta: Delta, t0: Option<DateTime<Utc>>) -> Option<FloatInputs> {
        let debits: i64 = delta.rows.iter().map(|r| r.amount.max(0)).sum();
        let credits: i64 = delta.rows.iter().map(|r| (-r.amount).max(0)).sum();
        if (self.debits + debits, self.credits + credits) != delta.totals {
            return None;
        }
        (self.debits, self.credits) = delta.totals;
        if t0.is_some() {
            for r in delta.rows.into_iter().filter(|r| r.since_t0) {
                if r.key.starts_with("pay:") {
                    self.paid(r.entry_id, &r.key, r.amount);
                } else {
                    self.other(r.entry_id, r.description, r.amount);
                }
            }
        }
        Some(self)
    }
}

/// The float movements of named entries (signed: debit +), and the account's totals now.
struct Delta {
    totals: (i64, i64),
    rows: Vec<DeltaRow>,
}

#[derive(sqlx::FromRow)]
struct DeltaRow {
    entry_id: uuid::Uuid,
    key: String,
    description: String,
    amount: i64,
    since_t0: bool,
}

/// The float as of a snapshot taken before the run posts anything, read while the run
/// matches: a million movements need not be read again after the postings, only what the
/// run itself wrote (see [`FloatInputs::with_delta`]). `ready` is told once the snapshot is
/// taken (the run must not post before).
async fn float_snapshot(
    ledger: cva_ledger::Ledger,
    account: String,
    t0: Option<DateTime<Utc>>,
    ready: tokio::sync::oneshot::Sender<()>,
    expect: usize,
) -> Result<FloatInputs> {
    match ledger.pool() {
        cva_ledger::store::PoolRef::Postgres(pool) => {
            let mut tx = pool.begin().await?;
            // One snapshot for the totals and the movements, taken at the first query.
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *tx)
                .await?;
            let out = tx.read_float(&account, t0, Some(ready), expect).await?;
            tx.rollback().await?;
            Ok(out)
        }
        cva_ledger::store::PoolRef::Sqlite(pool) => {
            // A deferred transaction reads one snapshot of the WAL from its first query on.
            let mut tx = pool.begin().await?;
            let out = tx.read_float(&account, t0, Some(ready), expect).await?;
            tx.rollback().await?;
            Ok(out)
        }
    }
}

/// Float movements since `$2` (signed: debit +), of payment entries (`pay:…`, the bulk: no
/// description read, in no particular order) and of the others (in time order). `recorded_at` is a timestamp on PostgreSQL and
/// integer microseconds on SQLite.
const PAID_SQL: &str = "SELECT e.id, e.idempotency_key, \
    CASE WHEN jl.side = 'D' THEN jl.amount ELSE -jl.amount END FROM journal_lines jl \
    JOIN journal_entries e ON e.id = jl.entry_id \
    WHERE jl.account_id = $1 AND jl.recorded_at >= $2 AND e.idempotency_key LIKE 'pay:%'";
/// [`PAID_SQL`] for SQLite, a range at a time (no `GROUP BY`: that sorts every row first):
/// the float lines picked by `$filter` (`$2`, `$3`: a cursor in `(recorded_at, rowid)` order),
/// [`sqlitejson::RANGE`] at most, packed in one JSON group (see `sqlitejson`), the entry id
/// in hex, each with its `(recorded_at, rowid)` (the next cursor) and whether it is a payment
/// entry's (the backend's own `LIKE`, as [`OTHER_SQL`] uses).
macro_rules! sqlite_paid_sql {
    ($filter:literal) => {
        concat!(
            "SELECT json_group_array(json_array(hex(e.id), e.idempotency_key, ",
            "CASE WHEN j.side = 'D' THEN j.amount ELSE -j.amount END, j.recorded_at, j.rid, ",
            "e.idempotency_key LIKE 'pay:%')) FROM (SELECT rowid AS rid, entry_id, side, ",
            "amount, recorded_at FROM journal_lines WHERE account_id = $1 AND ",
            $filter,
            " LIMIT 4096) j JOIN journal_entries e ON e.id = j.entry_id"
        )
    };
}
/// The rest of the cursor's `recorded_at`. The index on `(account_id, recorded_at)` holds the
/// rowid last, but a row-value `(recorded_at, rowid) > ($2, $3)` seeks on `recorded_at` only
/// and filters the rest: the thousands of lines one posting writes share a `recorded_at`,
/// and each range would rescan them. Hence two queries, each one index seek.
const SQLITE_PAID_SAME_SQL: &str =
    sqlite_paid_sql!("recorded_at = $2 AND rowid > $3 ORDER BY rowid");
/// What comes after the cursor's `recorded_at`.
const SQLITE_PAID_AFTER_SQL: &str =
    sqlite_paid_sql!("recorded_at > $2 ORDER BY recorded_at, rowid");
/// A row of [`SQLITE_PAID_SAME_SQL`] and [`SQLITE_PAID_AFTER_SQL`]: entry id (hex), key, signed amount, recorded at, rowid,
/// whether a payment entry's (1) or not (0).
type SqliteFloatLine = (String, String, i64, i64, i64, i64);

const OTHER_SQL: &str = "SELECT e.id, e.description, \
    CASE WHEN jl.side = 'D' THEN jl.amount ELSE -jl.amount END FROM journal_lines jl \
    JOIN journal_entries e ON e.id = jl.entry_id \
    WHERE jl.account_id = $1 AND jl.recorded_at >= $2 AND e.idempotency_key NOT LIKE 'pay:%' \
    ORDER BY jl.recorded_at, e.id, jl.line_no";

const FLOAT_ACCOUNT_SQL: &str =
    "SELECT id, debit_total, credit_total FROM accounts WHERE code = $1";

/// The float movements of the entries with the keys listed in `$2` (`{keys}`: how the
/// backend reads a list), see [`FloatReader::read_delta`]. From the keys to their entries to
/// their lines: `+jl.account_id` keeps SQLite (no statistics) from walking the float's million
/// lines by the account index instead and looking each one's entry up.
const DELTA_SQL: &str = "SELECT e.id AS entry_id, e.idempotency_key AS key, e.description, \
    CASE WHEN jl.side = 'D' THEN jl.amount ELSE -jl.amount END AS amount, \
    jl.recorded_at >= $3 AS since_t0 FROM journal_entries e \
    JOIN journal_lines jl ON jl.entry_id = e.id \
    WHERE e.idempotency_key {keys} AND +jl.account_id = $1";

/// The body of [`FloatReader::read_delta`] on either backend: `$list` is how it reads the
/// list of keys bound as `$keys` (`$2`; none when `$none`), `$t0` t0 in its `recorded_at`
/// type (`$3`).
macro_rules! read_delta_on {
    ($conn:expr, $account:expr, $list:literal, $keys:expr, $none:expr, $t0:expr) => {{
        let acc: Option<(i64, i64, i64)> = sqlx::query_as(FLOAT_ACCOUNT_SQL)
            .bind($account)
            .fetch_optional(&mut *$conn)
            .await?;
        match acc {
            None => Ok(Delta {
                totals: (0, 0),
                rows: Vec::new(),
            }),
            Some((id, debits, credits)) => {
                let rows = if $none {
                    Vec::new()
                } else {
                    sqlx::query_as(&DELTA_SQL.replace("{keys}", $list))
                        .bind(id)
                        .bind($keys)
                        .bind($t0)
                        .fetch_all(&mut *$conn)
                        .await?
                };
                Ok(Delta {
                    totals: (debits, credits),
                    rows,
                })
            }
        }
    }};
}

/// Reads the float account, on each backend.
trait FloatReader: Send {
    /// Totals and movements since `t0`; `ready` is told once the totals are read (in a
    /// snapshot transaction, the snapshot is then taken); `expect`: about how many payment
    /// lines moved the float (the table is sized for them at once).
    fn read_float<'a>(
        &'a mut self,
        account: &'a str,
        t0: Option<DateTime<Utc>>,
        ready: Option<tokio::sync::oneshot::Sender<()>>,
        expect: usize,
    ) -> BoxFuture<'a, Result<FloatInputs>>;

    /// The account's totals now and the movements of the entries with idempotency keys
    /// `keys` (`since_t0`: recorded at or after `t0`).
    fn read_delta<'a>(
        &'a mut self,
        account: &'a str,
        keys: &'a [String],
        t0: Option<DateTime<Utc>>,
    ) -> BoxFuture<'a, Result<Delta>>;
}

impl FloatReader for sqlx::PgConnection {
    fn read_float<'a>(
        &'a mut self,
        account: &'a str,
        t0: Option<DateTime<Utc>>,
        ready: Option<tokio::sync::oneshot::Sender<()>>,
        expect: usize,
    ) -> BoxFuture<'a, Result<FloatInputs>> {
        Box::pin(async move {
            let acc: Option<(i64, i64, i64)> = sqlx::query_as(FLOAT_ACCOUNT_SQL)
                .bind(account)
                .fetch_optional(&mut *self)
                .await?;
            if let Some(ready) = ready {
                // The receiver may have stopped waiting; nothing to do then.
                let _ = ready.send(());
            }
            let Some((id, debits, credits)) = acc else {
                return Ok(FloatInputs::new((0, 0)));
            };
            let mut out = FloatInputs::new((debits, credits));
            out.by_line.reserve(expect);
            let Some(t0) = t0 else { return Ok(out) };
            // The bulk (a movement per payment) by binary COPY, which takes no parameters. Its
            // join of a million lines with their entries spills to disk at the default 4 MB
            // of `work_mem`; this transaction may use more.
            sqlx::query("SET LOCAL work_mem = '256MB'")
                .execute(&mut *self)
                .await?;
            let sql = PAID_SQL.replace("$1", &id.to_string()).replace(
                "$2",
                &format!(
                    "(TIMESTAMPTZ 'epoch' + {} * INTERVAL '1 microsecond')",
                    t0.timestamp_micros()
                ),
            );
            pgcopy::copy_rows(self, &sql, 3, |mut t| {
                let bad = || RunError::Corrupt("float movement: a required field is NULL".into());
                let entry = t.uuid()?.ok_or_else(bad)?;
                let key = t.str()?.ok_or_else(bad)?;
                out.paid(entry, key, t.i64()?.ok_or_else(bad)?);
                Ok(())
            })
            .await?;
            let rows: Vec<(uuid::Uuid, String, i64)> = sqlx::query_as(OTHER_SQL)
                .bind(id)
                .bind(t0)
                .fetch_all(&mut *self)
                .await?;
            for (entry, description, amount) in rows {
                out.other(entry, description, amount);
            }
            Ok(out)
        })
    }
    fn read_delta<'a>(
        &'a mut self,
        account: &'a str,
        keys: &'a [String],
        t0: Option<DateTime<Utc>>,
    ) -> BoxFuture<'a, Result<Delta>> {
        Box::pin(async move {
            read_delta_on!(
                self,
                account,
                "= ANY($2)",
                keys,
                keys.is_empty(),
                t0.unwrap_or(DateTime::UNIX_EPOCH)
            )
        })
    }
}

impl FloatReader for sqlx::SqliteConnection {
    fn read_float<'a>(
        &'a mut self,
        account: &'a str,
        t0: Option<DateTime<Utc>>,
        ready: Option<tokio::sync::oneshot::Sender<()>>,
        expect: usize,
    ) -> BoxFuture<'a, Result<FloatInputs>> {
        Box::pin(async move {
            let acc: Option<(i64, i64, i64)> = sqlx::query_as(FLOAT_ACCOUNT_SQL)
                .bind(account)
                .fetch_optional(&mut *self)
                .await?;
            if let Some(ready) = ready {
                let _ = ready.send(());
            }
            let Some((id, debits, credits)) = acc else {
                return Ok(FloatInputs::new((0, 0)));
            };
            let mut out = FloatInputs::new((debits, credits));
            out.by_line.reserve(expect);
            if let Some(t0) = t0.map(|t| t.timestamp_micros()) {
                // Range after range from t0 (after `t0 − 1`): after the cursor's
                // `recorded_at`, then the rest of the last range's `recorded_at`, until a
                // range comes back short.
                let mut cursor = (t0.saturating_sub(1), i64::MAX);
                let mut same = false;
                loop {
                    let query = if same {
                        sqlx::query_scalar(SQLITE_PAID_SAME_SQL)
                            .bind(id)
                            .bind(cursor.0)
                            .bind(cursor.1)
                    } else {
                        sqlx::query_scalar(SQLITE_PAID_AFTER_SQL)
                            .bind(id)
                            .bind(cursor.0)
                    };
                    let mut seen = 0;
                    sqlitejson::each_row(&mut *self, query, |row: SqliteFloatLine| {
                        let (entry, key, amount, at, rowid, paid) = row;
                        seen += 1;
                        cursor = cursor.max((at, rowid));
                        if paid != 0 {
                            let entry = uuid::Uuid::parse_str(&entry).map_err(|_| {
                                RunError::Corrupt(format!("ledger entry id {entry}"))
                            })?;
                            out.paid(entry, &key, amount);
                        }
                        Ok(())
                    })
                    .await?;
                    match (same, seen < sqlitejson::RANGE) {
                        // The cursor's `recorded_at` is read: what comes after it.
                        (true, true) => same = false,
                        (true, false) => {}
                        // Nothing after the cursor left.
                        (false, true) => break,
                        (false, false) => same = true,
                    }
                }
                let rows: Vec<(uuid::Uuid, String, i64)> = sqlx::query_as(OTHER_SQL)
                    .bind(id)
                    .bind(t0)
                    .fetch_all(&mut *self)
                    .await?;
                for (entry, description, amount) in rows {
                    out.other(entry, description, amount);
                }
            }
            Ok(out)
        })
    }
    fn read_delta<'a>(
        &'a mut self,
        account: &'a str,
        keys: &'a [String],
        t0: Option<DateTime<Utc>>,
    ) -> BoxFuture<'a, Result<Delta>> {
        Box::pin(async move {
            let list = serde_json::to_string(keys)
                .map_err(|e| RunError::Corrupt(format!("entry keys: {e}")))?;
            read_delta_on!(
                self,
                account,
                "IN (SELECT value FROM json_each($2))",
                list,
                keys.is_empty(),
                t0.map_or(0, |t| t.timestamp_micros())
            )
        })
    }
}

/// An exception to open (or find again).
struct NewException {
    key: String,
    category: &'static str,
    line: Option<i64>,
    rows: String,
    amount: i64,
    detail: String,
}

/// Writes a run's rows, the way each backend does best.
trait RunSink: Send {
    fn insert_items<'a>(&'a mut self, run: i64, rows: &'a [Row]) -> BoxFuture<'a, Result<()>>;
    fn insert_float_lines<'a>(
        &'a mut self,
        run: i64,
        rows: &'a [FloatRow],
    ) -> BoxFuture<'a, Result<()>>;
    /// Opens the exceptions not yet known for this statement and marks the others seen again
    /// (one event each); returns (opened, seen again).
    #[allow(clippy::too_many_arguments)]
    fn upsert_exceptions<'a>(
        &'a mut self,
        statement: i64,
        run: i64,
        currency: &'a str,
        list: &'a [NewException],
        actor: &'a str,
        at: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(i64, i64)>>;
}

const EXCEPTION_UPSERT: &str =
    "ON CONFLICT (statement_id, key) DO UPDATE SET last_run = excluded.last_run \
     RETURNING id, first_run";

impl RunSink for sqlx::PgConnection {
    fn insert_items<'a>(&'a mut self, run: i64, rows: &'a [Row]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            for chunk in rows.chunks(200_000) {
                sqlx::query(
                    "INSERT INTO reconciliation_items (reconciliation_id, category, rule, line_id, \
                     statement_rows, float_effect, action, detail) \
                     SELECT $1, * FROM UNNEST($2::TEXT[], $3::TEXT[], $4::BIGINT[], $5::TEXT[], \
                     $6::BIGINT[], $7::TEXT[], $8::TEXT[])",
                )
                .bind(run)
                .bind(chunk.iter().map(|r| r.category.as_str()).collect::<Vec<_>>())
                .bind(chunk.iter().map(|r| r.rule.map(rule_str)).collect::<Vec<_>>())
                .bind(chunk.iter().map(|r| r.line).collect::<Vec<_>>())
                .bind(chunk.iter().map(|r| join_rows(&r.rows)).collect::<Vec<_>>())
                .bind(chunk.iter().map(|r| r.effect).collect::<Vec<_>>())
                .bind(chunk.iter().map(|r| r.action.map(Action::as_str)).collect::<Vec<_>>())
                .bind(chunk.iter().map(|r| r.detail.as_str()).collect::<Vec<_>>())
                .execute(&mut *self)
                .await?;
            }
            Ok(())
        })
    }

    fn insert_float_lines<'a>(
        &'a mut self,
        run: i64,
        rows: &'a [FloatRow],
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if rows.is_empty() {
                return Ok(());
            }
            sqlx::query(
                "INSERT INTO reconciliation_float_lines (reconciliation_id, kind, entry_id, \
                 row_no, amount, detail) SELECT $1, k, CAST(e AS UUID), r, a, d \
                 FROM UNNEST($2::TEXT[], $3::TEXT[], $4::BIGINT[], $5::BIGINT[], $6::TEXT[]) \
                 AS t(k, e, r, a, d)",
            )
            .bind(run)
            .bind(rows.iter().map(|r| r.kind).collect::<Vec<_>>())
            .bind(
                rows.iter()
                    .map(|r| r.entry_id.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(rows.iter().map(|r| r.row_no).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.amount).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.detail.as_str()).collect::<Vec<_>>())
            .execute(&mut *self)
            .await?;
            Ok(())
        })
    }

    fn upsert_exceptions<'a>(
        &'a mut self,
        statement: i64,
        run: i64,
        currency: &'a str,
        list: &'a [NewException],
        actor: &'a str,
        at: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(i64, i64)>> {
        Box::pin(async move {
            if list.is_empty() {
                return Ok((0, 0));
            }
            let sql = format!(
                "INSERT INTO exceptions (statement_id, key, first_run, last_run, category, \
                 line_id, statement_rows, currency, amount, detail, created_at) \
                 SELECT $1, k, $2, $2, c, l, r, $3, a, d, $4 \
                 FROM UNNEST($5::TEXT[], $6::TEXT[], $7::BIGINT[], $8::TEXT[], $9::BIGINT[], \
                 $10::TEXT[]) AS t(k, c, l, r, a, d) {EXCEPTION_UPSERT}"
            );
            let back: Vec<(i64, i64)> = sqlx::query_as(&sql)
                .bind(statement)
                .bind(run)
                .bind(currency)
                .bind(at)
                .bind(list.iter().map(|e| e.key.as_str()).collect::<Vec<_>>())
                .bind(list.iter().map(|e| e.category).collect::<Vec<_>>())
                .bind(list.iter().map(|e| e.line).collect::<Vec<_>>())
                .bind(list.iter().map(|e| e.rows.as_str()).collect::<Vec<_>>())
                .bind(list.iter().map(|e| e.amount).collect::<Vec<_>>())
                .bind(list.iter().map(|e| e.detail.as_str()).collect::<Vec<_>>())
                .fetch_all(&mut *self)
                .await?;
            let (ids, actions) = events_of(&back, run);
            sqlx::query(
                "INSERT INTO exception_events (exception_id, action, actor, note, at) \
                 SELECT i, a, $1, NULL, $2 FROM UNNEST($3::BIGINT[], $4::TEXT[]) AS t(i, a)",
            )
            .bind(actor)
            .bind(at)
            .bind(&ids)
            .bind(&actions)
            .execute(&mut *self)
            .await?;
            Ok(counts(&actions))
        })
    }
}

impl RunSink for sqlx::SqliteConnection {
    fn insert_items<'a>(&'a mut self, run: i64, rows: &'a [Row]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            for chunk in rows.chunks(SQLITE_CHUNK) {
                let mut sql = String::from(
                    "INSERT INTO reconciliation_items (reconciliation_id, category, rule, line_id, \
                     statement_rows, float_effect, action, detail) VALUES ",
                );
                sql.push_str(&values_list(chunk.len(), 8));
                let mut q = sqlx::query(&sql);
                for r in chunk {
                    q = q
                        .bind(run)
                        .bind(r.category.as_str())
                        .bind(r.rule.map(rule_str))
                        .bind(r.line)
                        .bind(join_rows(&r.rows))
                        .bind(r.effect)
                        .bind(r.action.map(Action::as_str))
                        .bind(r.detail.as_str());
                }
                q.execute(&mut *self).await?;
            }
            Ok(())
        })
    }

    fn insert_float_lines<'a>(
        &'a mut self,
        run: i64,
        rows: &'a [FloatRow],
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            for r in rows {
                sqlx::query(
                    "INSERT INTO reconciliation_float_lines (reconciliation_id, kind, entry_id, \
                     row_no, amount, detail) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(run)
                .bind(r.kind)
                .bind(r.entry_id.as_deref())
                .bind(r.row_no)
                .bind(r.amount)
                .bind(r.detail.as_str())
                .execute(&mut *self)
                .await?;
            }
            Ok(())
        })
    }

    fn upsert_exceptions<'a>(
        &'a mut self,
        statement: i64,
        run: i64,
        currency: &'a str,
        list: &'a [NewException],
        actor: &'a str,
        at: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(i64, i64)>> {
        Box::pin(async move {
            let mut back: Vec<(i64, i64)> = Vec::with_capacity(list.len());
            for chunk in list.chunks(SQLITE_CHUNK) {
                let mut sql = String::from(
                    "INSERT INTO exceptions (statement_id, key, first_run, last_run, category, \
                     line_id, statement_rows, currency, amount, detail, created_at) VALUES ",
                );
                sql.push_str(&values_list(chunk.len(), 11));
                sql.push(' ');
                sql.push_str(EXCEPTION_UPSERT);
                let mut q = sqlx::query_as::<_, (i64, i64)>(&sql);
                for e in chunk {
                    q = q
                        .bind(statement)
                        .bind(e.key.as_str())
                        .bind(run)
                        .bind(run)
                        .bind(e.category)
                        .bind(e.line)
                        .bind(e.rows.as_str())
                        .bind(currency)
                        .bind(e.amount)
                        .bind(e.detail.as_str())
                        .bind(at);
                }
                back.extend(q.fetch_all(&mut *self).await?);
            }
            let (ids, actions) = events_of(&back, run);
            let pairs: Vec<(i64, String)> = ids.into_iter().zip(actions.iter().cloned()).collect();
            for chunk in pairs.chunks(SQLITE_CHUNK) {
                let mut sql = String::from(
                    "INSERT INTO exception_events (exception_id, action, actor, note, at) VALUES ",
                );
                sql.push_str(&values_list(chunk.len(), 5));
                let mut q = sqlx::query(&sql);
                for (id, action) in chunk {
                    q = q
                        .bind(*id)
                        .bind(action.as_str())
                        .bind(actor)
                        .bind(None::<String>)
                        .bind(at);
                }
                q.execute(&mut *self).await?;
            }
            Ok(counts(&actions))
        })
    }
}

/// The chunks of `pairs` to store: (chunk number, its pairs, pairs before it).
fn match_chunks(pairs: &[(i64, u64)]) -> impl Iterator<Item = (i32, &[(i64, u64)], i64)> {
    pairs
        .chunks(packed::CHUNK_PAIRS)
        .enumerate()
        .map(|(no, chunk)| {
            let first = no * packed::CHUNK_PAIRS;
            (
                i32::try_from(no).unwrap_or(i32::MAX),
                chunk,
                i64::try_from(first).unwrap_or(i64::MAX),
            )
        })
}

fn events_of(back: &[(i64, i64)], run: i64) -> (Vec<i64>, Vec<String>) {
    back.iter()
        .map(|&(id, first)| {
            let action = if first == run { "opened" } else { "seen_again" };
            (id, action.to_owned())
        })
        .unzip()
}

fn counts(actions: &[String]) -> (i64, i64) {
    let opened = actions.iter().filter(|a| a.as_str() == "opened").count();
    let seen = actions.len() - opened;
    (
        i64::try_from(opened).unwrap_or(i64::MAX),
        i64::try_from(seen).unwrap_or(i64::MAX),
    )
}

fn rule_str(rule: Rule) -> &'static str {
    match rule {
        Rule::ProviderTransactionId => "provider_transaction_id",
        Rule::Reference => "reference",
        Rule::PayeeAmountDate => "payee_amount_date",
    }
}

fn values_list(rows: usize, cols: usize) -> String {
    let group = format!("({})", vec!["?"; cols].join(","));
    vec![group.as_str(); rows].join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pay_keys_name_their_line() {
        assert_eq!(pay_line("pay:42:confirm"), Some(42));
        assert_eq!(pay_line("pay:7:reversal"), Some(7));
        assert_eq!(pay_line("fund:MOMO:1"), None);
        assert_eq!(pay_line("pay:x:confirm"), None);
    }

    fn delta_row(entry: u128, key: &str, amount: i64, since_t0: bool) -> DeltaRow {
        DeltaRow {
            entry_id: uuid::Uuid::from_u128(entry),
            key: key.into(),
            description: format!("entry {entry}"),
            amount,
            since_t0,
        }
    }

    /// A snapshot of a float with 10,000 of debits and 3,000 of credits, one payment line
    /// (7, paid 1,000) and one other movement since t0.
    fn snapshot() -> FloatInputs {
        let mut f = FloatInputs::new((10_000, 3_000));
        f.paid(uuid::Uuid::from_u128(1), "pay:7:confirm", -1_000);
        f.other(uuid::Uuid::from_u128(2), "top-up".into(), 5_000);
        f
    }

    #[test]
    fn a_snapshot_brought_up_to_date_adds_exactly_the_delta() {
        let t0 = Some(Utc::now());
        let delta = Delta {
            totals: (10_000 + 400, 3_000 + 1_500),
            rows: vec![
                delta_row(3, "pay:7:reversal", 400, true),
                delta_row(4, "pay:8:confirm", -1_200, true),
                // Counted in the totals, not a movement since t0.
                delta_row(5, "adjust:1", -300, false),
            ],
        };
        let f = snapshot().with_delta(delta, t0).expect("totals agree");
        assert_eq!(f.closing(), 10_400 - 4_500);
        assert_eq!(f.since_t0, -1_000 + 5_000 + 400 - 1_200);
        let seven = &f.by_line[&7];
        assert_eq!((seven.amount, seven.entries), (-600, 2));
        assert_eq!(seven.first_entry, uuid::Uuid::from_u128(1));
        assert_eq!(f.by_line[&8].amount, -1_200);
        assert_eq!(f.other.len(), 1);
    }

    #[test]
    fn a_movement_the_delta_lacks_or_repeats_refuses_the_snapshot() {
        let t0 = Some(Utc::now());
        // Someone else paid 1,200 out meanwhile: the credits say more than the delta.
        let missed = Delta {
            totals: (10_400, 3_000 + 1_200),
            rows: vec![delta_row(3, "pay:7:reversal", 400, true)],
        };
        assert!(snapshot().with_delta(missed, t0).is_none());
        // A movement the snapshot holds listed again: the totals say less.
        let repeated = Delta {
            totals: (10_000, 3_000),
            rows: vec![delta_row(1, "pay:7:confirm", -1_000, true)],
        };
        assert!(snapshot().with_delta(repeated, t0).is_none());
        // A debit and a credit of the same size missed together still show, side by side.
        let cancelling = Delta {
            totals: (10_000 + 500, 3_000 + 500),
            rows: Vec::new(),
        };
        assert!(snapshot().with_delta(cancelling, t0).is_none());
        // Nothing moved: the snapshot stands as it is.
        let none = Delta {
            totals: (10_000, 3_000),
            rows: Vec::new(),
        };
        let f = snapshot().with_delta(none, t0).expect("nothing moved");
        assert_eq!((f.closing(), f.since_t0), (7_000, 4_000));
    }

    #[test]
    fn payments_and_their_info_are_sorted_together() {
        let at = Utc::now();
        let lines: Vec<i64> = vec![5, 3, 9, 1, 4, 8, 2, 7, 6, 3];
        let mut payments: Vec<Payment> = Vec::new();
        let mut info: Vec<LineInfo> = Vec::new();
        for (i, &line) in lines.iter().enumerate() {
            let (p, li) = payment(
                line,
                None,
                100,
                0,
                "XOF".into(),
                "completed",
                None,
                at,
                line * 10,
            )
            .expect("a payment");
            payments.push(p);
            info.push(LineInfo {
                reversed: i % 2 == 0,
                ..li
            });
        }
        let before: Vec<(i64, i64, bool)> = payments
            .iter()
            .zip(&info)
            .map(|(p, i)| (p.line, i.batch, i.reversed))
            .collect();
        sort_by_line(&mut payments, &mut info);
        let mut want = before.clone();
        want.sort_by_key(|t| t.0);
        let got: Vec<(i64, i64, bool)> = payments
            .iter()
            .zip(&info)
            .map(|(p, i)| (p.line, i.batch, i.reversed))
            .collect();
        // Same multiset, by line, each payment still with its own info.
        assert_eq!(
            got.iter().map(|t| t.0).collect::<Vec<_>>(),
            want.iter().map(|t| t.0).collect::<Vec<_>>()
        );
        let mut g = got.clone();
        g.sort();
        let mut b = before;
        b.sort();
        assert_eq!(g, b);
    }

    #[test]
    fn rows_round_trip() {
        assert_eq!(join_rows(&[2, 5, 9]), "2,5,9");
        assert_eq!(parse_rows("2,5,9"), Some(vec![2, 5, 9]));
        assert_eq!(parse_rows(""), Some(vec![]));
        assert_eq!(parse_rows("2,x"), None);
    }
}
