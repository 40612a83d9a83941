//! Reconciling a stored statement against our payments, in the database: [`Reconciler::run`]
//! reads the statement's lines and the provider's payment lines, runs [`reconcile_with`],
//! posts what the statement settles, reconciles the float, and stores the run, its items, its
//! float differences and the exceptions people must work.
//!
//! # A run, step by step
//!
//! 1. **Read.** The statement's lines (with the keyed blind index of each payee's number, if
//!    the import computed one) and every payment line sent to the statement's provider
//!    (`in_flight`, `completed`, `failed`, `unknown`) with its provider transaction id, amount,
//!    fee, currency, the household's `msisdn_index` and its time (resolved, else last attempt,
//!    else the batch's last change). Lines more than the window before the statement's period
//!    are not read unless still open: an old statement-less payment is not this statement's.
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
//!    Nothing else moves money: a status, amount or fee the two sides disagree on is an
//!    exception for a person (with an adjusting entry under maker-checker, see
//!    [`crate::exceptions`]).
//! 4. **Float reconciliation** (see below), after the postings of step 3.
//! 5. **Store**, in one transaction: the run (`reconciliations`, numbered per statement), its
//!    items, its float differences, one audit event `reconciliation.run`, and the exceptions:
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
//! # Cost
//!
//! Everything is read once, in two queries streamed into the matcher's own structures; items
//! are written with array inserts (PostgreSQL) or chunked multi-row inserts (SQLite).
//! `examples/reconcile_bench.rs` measures a million lines against a million payments.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use cva_batches::{Batches, LineOutcome, Outcome};
use cva_ledger::audit::{AuditConn, AuditContext, AuditRecord};
use cva_ledger::money::Currency;
use cva_ledger::{read_pool, write_tx, LedgerError};
use cva_registry::RegistryError;
use futures::future::BoxFuture;
use futures::TryStreamExt;
use serde::Serialize;
use thiserror::Error;

use crate::matching::{
    reconcile_with, Category, Item, MatchOptions, Payment, PaymentStatus, Rule, Summary,
};
use crate::statement::{StatementLine, StatementStatus};
use crate::store::{ImportError, Statements};

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
    pub id: i64,
    pub category: String,
    pub rule: Option<String>,
    pub line_id: Option<i64>,
    /// Statement row numbers (the header is row 1).
    pub statement_rows: Vec<u64>,
    pub float_effect: i64,
    pub action: Option<String>,
    pub detail: String,
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
    rows: String,
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

type PaymentRow = (
    i64,
    Option<String>,
    Option<String>,
    i64,
    i64,
    String,
    String,
    Option<String>,
    DateTime<Utc>,
    i64,
);

type LineRow = (
    i64,
    String,
    Option<String>,
    Option<String>,
    i64,
    i64,
    String,
    String,
    DateTime<Utc>,
    Option<i64>,
);

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
        // Two independent reads: on two connections at once on PostgreSQL; one after the
        // other on SQLite, where two big scans at once were measured slower than in turn.
        let (lines, (payments, info)) = if self.statements.ledger().pg_pool().is_some() {
            futures::try_join!(
                self.read_lines(statement_id),
                self.read_payments(&st.provider, since)
            )?
        } else {
            let lines = self.read_lines(statement_id).await?;
            (lines, self.read_payments(&st.provider, since).await?)
        };
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
        let by_line: HashMap<i64, usize> = payments
            .iter()
            .enumerate()
            .map(|(i, p)| (p.line, i))
            .collect();
        let by_row: HashMap<usize, usize> =
            lines.iter().enumerate().map(|(i, l)| (l.row, i)).collect();

        // Step 3: what the statement settles.
        let mut actions: HashMap<i64, Action> = HashMap::new();
        let mut outcomes: HashMap<i64, Vec<LineOutcome>> = HashMap::new();
        let mut reversals: Vec<i64> = Vec::new();
        let mut already_booked: HashSet<i64> = HashSet::new();
        for item in &result.items {
            let Some(line) = item.payment else { continue };
            let Some(p) = by_line.get(&line).map(|&i| &payments[i]) else {
                continue;
            };
            let open = matches!(p.status, PaymentStatus::Unknown | PaymentStatus::InFlight);
            let row = item
                .statement_rows
                .iter()
                .filter_map(|r| by_row.get(r).map(|&i| &lines[i]))
                .find(|l| l.status != StatementStatus::Reversal);
            let batch = info.get(&line).map(|i| i.batch).unwrap_or_default();
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
                    if info.get(&line).is_some_and(|i| i.reversed) {
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
        let mut posted = 0i64;
        let mut batch_ids: Vec<i64> = outcomes.keys().copied().collect();
        batch_ids.sort_unstable();
        for b in batch_ids {
            let mut list = outcomes.remove(&b).unwrap_or_default();
            list.sort_by_key(|o| o.line);
            let view = self.batches.batch(b).await?;
            let applied = self
                .batches
                .apply_outcomes(&view, &list, "statement", ctx)
                .await?;
            posted += i64::try_from(applied.completed + applied.failed).unwrap_or(i64::MAX);
        }
        // Reversals, per batch in one posting each. A line another process settled since
        // (no longer completed) is skipped and left for the next run.
        let mut by_batch: HashMap<i64, Vec<i64>> = HashMap::new();
        for line in reversals {
            let batch = info.get(&line).map(|i| i.batch).unwrap_or_default();
            by_batch.entry(batch).or_default().push(line);
        }
        let mut batch_ids: Vec<i64> = by_batch.keys().copied().collect();
        batch_ids.sort_unstable();
        for b in batch_ids {
            let mut list = by_batch.remove(&b).unwrap_or_default();
            list.sort_unstable();
            let done: HashSet<i64> = self
                .batches
                .record_reversals(b, &list, ctx)
                .await?
                .into_iter()
                .collect();
            posted += i64::try_from(done.len()).unwrap_or(i64::MAX);
            for line in list.iter().filter(|l| !done.contains(l)) {
                actions.remove(line);
            }
        }

        // Items after step 3.
        let mut rows: Vec<Row> = Vec::with_capacity(result.items.len());
        for item in result.items {
            let action = item.payment.and_then(|l| actions.get(&l).copied());
            let booked = item.category == Category::ReversedByProvider
                && item.payment.is_some_and(|l| already_booked.contains(&l));
            let mut row = settled_item(item, action, &payments, &by_line, &lines, &by_row);
            if booked {
                row.settled = true;
                row.detail.push_str("; reversal already booked");
            }
            rows.push(row);
        }
        drop(by_row);
        drop(lines);

        let ledger = self.batches.registry().ledger().clone();
        let t0 = st.period_start;
        let run_at = cva_ledger::store::now_micros();
        let summary = summary_of(&rows, &result.summary);
        let payments_considered = i64::try_from(payments.len()).unwrap_or(i64::MAX);
        drop(payments);
        drop(by_line);
        drop(info);

        let window_seconds = options.window.num_seconds();
        let view = write_tx!(ledger, |tx| {
            let float = FloatInputs::read(&mut *tx, &float_account, t0).await?;
            let mut float_rows = Vec::new();
            let item_lines: HashSet<i64> = rows.iter().filter_map(|r| r.line).collect();
            // Item effects: the ledger side of each item's line.
            for r in &mut rows {
                if r.category == Category::DuplicateInStatement {
                    continue;
                }
                if let Some(l) = r.line {
                    r.effect += float.by_line.get(&l).copied().unwrap_or(0);
                }
            }
            for m in &float.other {
                let in_item = m.line.is_some_and(|l| item_lines.contains(&l));
                if !in_item {
                    float_rows.push(FloatRow {
                        kind: "ledger_only",
                        entry_id: Some(m.entry_id.clone()),
                        row_no: None,
                        amount: m.amount,
                        detail: format!(
                            "float movement of ledger entry {} not on the statement: {}",
                            m.entry_id, m.description
                        ),
                    });
                }
            }
            let ledger_closing = float.closing;
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
            RunSink::insert_float_lines(&mut *tx, id, &float_rows).await?;
            let exceptions: Vec<NewException> = rows
                .iter()
                .filter(|r| !r.settled)
                .map(|r| NewException {
                    key: format!(
                        "{}:{}:{}",
                        r.category.as_str(),
                        r.line.map(|l| l.to_string()).unwrap_or_else(|| "-".into()),
                        r.rows
                    ),
                    category: r.category.as_str(),
                    line: r.line,
                    rows: r.rows.clone(),
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
        tracing::info!(
            run = view.id,
            statement = statement_id,
            posted = view.outcomes_posted,
            opened = view.exceptions_opened,
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
    /// in the order matching produced them, skipping the first `offset`.
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
        rows.into_iter()
            .map(
                |(id, category, rule, line_id, rows, float_effect, action, detail)| {
                    let statement_rows = parse_rows(&rows)
                        .ok_or_else(|| RunError::Corrupt(format!("item {id}: statement rows")))?;
                    Ok(StoredItem {
                        id,
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
            .collect()
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

    async fn read_lines(&self, statement_id: i64) -> Result<Vec<StatementLine>> {
        let lines: Vec<StatementLine> = read_pool!(self.statements.ledger(), |pool| {
            let mut stream = sqlx::query_as::<_, LineRow>(
                "SELECT row_no, transaction_id, reference, msisdn_index, amount, fee, currency, \
                 status, at, balance_after FROM statement_lines WHERE statement_id = $1 \
                 ORDER BY row_no",
            )
            .bind(statement_id)
            .fetch(pool);
            let mut out = Vec::new();
            while let Some(r) = stream.try_next().await? {
                out.push(line_of(r)?);
            }
            out
        });
        Ok(lines)
    }

    async fn read_payments(
        &self,
        provider: &str,
        since: DateTime<Utc>,
    ) -> Result<(Vec<Payment>, HashMap<i64, LineInfo>)> {
        // Unsorted on PostgreSQL (a million-row sort spills to disk at the default work_mem;
        // matching does not depend on the order); in rowid order on SQLite, where it is free
        // and measured faster than the planner's own choice.
        let order = if self.statements.ledger().pg_pool().is_some() {
            ""
        } else {
            " ORDER BY l.id"
        };
        let sql = format!(
            concat!(
                "SELECT l.id, l.provider_transaction_id, h.msisdn_index, l.amount, l.fee, \
                     b.currency, l.status, l.failure_code, \
                     COALESCE(l.resolved_at, a.updated_at, b.status_changed_at), b.id \
                     FROM batch_lines l JOIN batches b ON b.id = l.batch_id \
                     JOIN households h ON h.id = l.household_id \
                     LEFT JOIN payment_attempts a ON a.id = l.attempt_id \
                     WHERE b.provider = $1 \
                     AND l.status IN ('in_flight', 'completed', 'failed', 'unknown') \
                     AND (l.status IN ('in_flight', 'unknown') \
                          OR COALESCE(l.resolved_at, a.updated_at, b.status_changed_at) >= $2)",
                "{}"
            ),
            order
        );
        let out: (Vec<Payment>, HashMap<i64, LineInfo>) =
            read_pool!(self.statements.ledger(), |pool| {
                let mut stream = sqlx::query_as::<_, PaymentRow>(&sql)
                    .bind(provider)
                    .bind(since)
                    .fetch(pool);
                let mut payments = Vec::new();
                let mut info = HashMap::new();
                while let Some(r) = stream.try_next().await? {
                    let (id, tx, key, amount, fee, currency, status, code, at, batch) = r;
                    let status = match status.as_str() {
                        "completed" => PaymentStatus::Completed,
                        "failed" => PaymentStatus::Failed,
                        "unknown" => PaymentStatus::Unknown,
                        "in_flight" => PaymentStatus::InFlight,
                        other => {
                            return Err(RunError::Corrupt(format!("line {id}: status {other}")))
                        }
                    };
                    let reversed = code.as_deref() == Some("reversed");
                    // A reversed line was paid, then reversed: to the statement, which lists
                    // the payment and its reversal, it is a completed payment.
                    let status = if reversed {
                        PaymentStatus::Completed
                    } else {
                        status
                    };
                    info.insert(id, LineInfo { batch, reversed });
                    payments.push(Payment {
                        line: id,
                        provider_tx: tx,
                        payee_key: key,
                        amount_minor: amount,
                        fee_minor: fee,
                        currency,
                        status,
                        at,
                    });
                }
                (payments, info)
            });
        Ok(out)
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
fn settled_item(
    item: Item,
    action: Option<Action>,
    payments: &[Payment],
    by_line: &HashMap<i64, usize>,
    lines: &[StatementLine],
    by_row: &HashMap<usize, usize>,
) -> Row {
    let row_lines: Vec<&StatementLine> = item
        .statement_rows
        .iter()
        .filter_map(|r| by_row.get(r).map(|&i| &lines[i]))
        .collect();
    let currency = item
        .payment
        .and_then(|l| by_line.get(&l))
        .map(|&i| payments[i].currency.as_str());
    let effect: i64 = -row_lines
        .iter()
        .filter(|l| currency.is_none_or(|c| l.currency.code() == c))
        .map(|l| movement(l))
        .sum::<i64>();
    let mut category = item.category;
    let mut detail = item.detail;
    if let (Some(a), Some(p)) = (
        action,
        item.payment
            .and_then(|l| by_line.get(&l))
            .map(|&i| &payments[i]),
    ) {
        match a {
            Action::Confirmed | Action::Failed => {
                let fee_differs = a == Action::Confirmed
                    && row_lines.iter().any(|l| {
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
        rows: join_rows(&item.statement_rows),
        effect,
        action,
        detail,
        settled: category == Category::Matched || action.is_some(),
    }
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

fn line_of(r: LineRow) -> Result<StatementLine> {
    let (row, transaction_id, reference, key, amount, fee, currency, status, at, balance) = r;
    let status = StatementStatus::ALL
        .into_iter()
        .find(|s| s.as_str() == status)
        .ok_or_else(|| RunError::Corrupt(format!("row {row}: status")))?;
    Ok(StatementLine {
        row: usize::try_from(row).map_err(|_| RunError::Corrupt(format!("row {row}")))?,
        transaction_id,
        reference,
        msisdn: key,
        amount_minor: amount,
        fee_minor: fee,
        currency: Currency::parse(&currency)
            .map_err(|_| RunError::Corrupt(format!("row {row}: currency")))?,
        status,
        at,
        balance_after_minor: balance,
    })
}

/// A ledger float movement since `t0`.
struct Movement {
    entry_id: String,
    description: String,
    /// The payment line, for entries `pay:LINE:…`.
    line: Option<i64>,
    amount: i64,
}

/// The ledger side of the float reconciliation.
struct FloatInputs {
    closing: i64,
    since_t0: i64,
    /// Float movements since `t0` of payment entries, per line.
    by_line: HashMap<i64, i64>,
    /// Every movement since `t0` that is not a payment entry, and payment entries (with
    /// their line), each once — the caller lists those not in any item.
    other: Vec<Movement>,
}

fn pay_line(key: &str) -> Option<i64> {
    let rest = key.strip_prefix("pay:")?;
    let (line, _) = rest.split_once(':')?;
    line.parse().ok()
}

type MovementRow = (uuid::Uuid, String, String, String, i64);

impl FloatInputs {
    fn read<'a, C: FloatReader + ?Sized>(
        conn: &'a mut C,
        account: &'a str,
        t0: Option<DateTime<Utc>>,
    ) -> BoxFuture<'a, Result<FloatInputs>> {
        conn.read_float(account, t0)
    }

    fn from_rows(closing: i64, rows: Vec<MovementRow>) -> FloatInputs {
        let mut by_line: HashMap<i64, i64> = HashMap::new();
        let mut other = Vec::new();
        let mut since_t0 = 0;
        for (entry_id, key, description, side, amount) in rows {
            let entry_id = entry_id.to_string();
            let signed = if side.trim() == "D" { amount } else { -amount };
            since_t0 += signed;
            match pay_line(&key) {
                Some(line) => {
                    *by_line.entry(line).or_default() += signed;
                    other.push(Movement {
                        entry_id,
                        description,
                        line: Some(line),
                        amount: signed,
                    });
                }
                None => other.push(Movement {
                    entry_id,
                    description,
                    line: None,
                    amount: signed,
                }),
            }
        }
        FloatInputs {
            closing,
            since_t0,
            by_line,
            other,
        }
    }
}

/// Float movements since `$2`: the entry, its key and description, the side and amount.
/// `recorded_at` is a timestamp on PostgreSQL and integer microseconds on SQLite.
const MOVEMENTS_SQL: &str = "SELECT e.id, e.idempotency_key, e.description, \
    CAST(jl.side AS TEXT), jl.amount FROM journal_lines jl \
    JOIN journal_entries e ON e.id = jl.entry_id \
    WHERE jl.account_id = $1 AND jl.recorded_at >= $2 ORDER BY jl.recorded_at, e.id, jl.line_no";

const FLOAT_ACCOUNT_SQL: &str =
    "SELECT id, debit_total, credit_total FROM accounts WHERE code = $1";

/// Reads the float account inside the run's transaction, on each backend.
trait FloatReader: Send {
    fn read_float<'a>(
        &'a mut self,
        account: &'a str,
        t0: Option<DateTime<Utc>>,
    ) -> BoxFuture<'a, Result<FloatInputs>>;
}

impl FloatReader for sqlx::PgConnection {
    fn read_float<'a>(
        &'a mut self,
        account: &'a str,
        t0: Option<DateTime<Utc>>,
    ) -> BoxFuture<'a, Result<FloatInputs>> {
        Box::pin(async move {
            let acc: Option<(i64, i64, i64)> = sqlx::query_as(FLOAT_ACCOUNT_SQL)
                .bind(account)
                .fetch_optional(&mut *self)
                .await?;
            let Some((id, debits, credits)) = acc else {
                return Ok(FloatInputs::from_rows(0, Vec::new()));
            };
            let rows: Vec<MovementRow> = match t0 {
                Some(t0) => {
                    sqlx::query_as(MOVEMENTS_SQL)
                        .bind(id)
                        .bind(t0)
                        .fetch_all(&mut *self)
                        .await?
                }
                None => Vec::new(),
            };
            Ok(FloatInputs::from_rows(debits - credits, rows))
        })
    }
}

impl FloatReader for sqlx::SqliteConnection {
    fn read_float<'a>(
        &'a mut self,
        account: &'a str,
        t0: Option<DateTime<Utc>>,
    ) -> BoxFuture<'a, Result<FloatInputs>> {
        Box::pin(async move {
            let acc: Option<(i64, i64, i64)> = sqlx::query_as(FLOAT_ACCOUNT_SQL)
                .bind(account)
                .fetch_optional(&mut *self)
                .await?;
            let Some((id, debits, credits)) = acc else {
                return Ok(FloatInputs::from_rows(0, Vec::new()));
            };
            let rows: Vec<MovementRow> = match t0 {
                Some(t0) => {
                    sqlx::query_as(MOVEMENTS_SQL)
                        .bind(id)
                        .bind(t0.timestamp_micros())
                        .fetch_all(&mut *self)
                        .await?
                }
                None => Vec::new(),
            };
            Ok(FloatInputs::from_rows(debits - credits, rows))
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

/// `s` as a field of PostgreSQL's COPY text format.
fn copy_text(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

/// Items above this many go through `COPY` on PostgreSQL (an array insert below).
const COPY_ABOVE: usize = 1_000;

impl RunSink for sqlx::PgConnection {
    fn insert_items<'a>(&'a mut self, run: i64, rows: &'a [Row]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if rows.len() > COPY_ABOVE {
                use std::fmt::Write as _;
                let mut copy = self
                    .copy_in_raw(
                        "COPY reconciliation_items (reconciliation_id, category, rule, line_id, \
                         statement_rows, float_effect, action, detail) FROM STDIN",
                    )
                    .await?;
                let mut buf = String::with_capacity(1 << 20);
                for r in rows {
                    let _ = write!(buf, "{run}\t{}\t", r.category.as_str());
                    buf.push_str(r.rule.map_or("\\N", rule_str));
                    buf.push('\t');
                    match r.line {
                        Some(l) => {
                            let _ = write!(buf, "{l}");
                        }
                        None => buf.push_str("\\N"),
                    }
                    buf.push('\t');
                    copy_text(&mut buf, &r.rows);
                    let _ = write!(buf, "\t{}\t", r.effect);
                    buf.push_str(r.action.map_or("\\N", Action::as_str));
                    buf.push('\t');
                    copy_text(&mut buf, &r.detail);
                    buf.push('\n');
                    if buf.len() >= 1 << 20 {
                        copy.send(std::mem::take(&mut buf).into_bytes()).await?;
                        buf.reserve(1 << 20);
                    }
                }
                if !buf.is_empty() {
                    copy.send(buf.into_bytes()).await?;
                }
                copy.finish().await?;
                return Ok(());
            }
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
                .bind(chunk.iter().map(|r| r.rows.as_str()).collect::<Vec<_>>())
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
                        .bind(r.rows.as_str())
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

    #[test]
    fn rows_round_trip() {
        assert_eq!(join_rows(&[2, 5, 9]), "2,5,9");
        assert_eq!(parse_rows("2,5,9"), Some(vec![2, 5, 9]));
        assert_eq!(parse_rows(""), Some(vec![]));
        assert_eq!(parse_rows("2,x"), None);
    }
}
