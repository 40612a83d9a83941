//! The reconciliation report: one run of a provider statement against our payments (tables of
//! migration 0010: `reconciliations`, `reconciliation_items`, `reconciliation_float_lines`,
//! `exceptions`), named by its id, or by its statement (the statement's latest run, highest
//! `run_no`).
//!
//! # Rows
//!
//! Every row carries `run_id`, `statement_id`, `run_no` and a `section`:
//!
//! 1. `float` — the float reconciliation, one row per figure (`category`): `statement_opening`,
//!    `statement_closing`, `ledger_opening`, `ledger_closing`, `difference` (ledger −
//!    statement), `explained`, `unexplained` (`difference − explained`); `amount` empty when
//!    the statement gives no balance;
//! 2. `item` — the run's item rows in id order: `category` (matched, amount_mismatch, …),
//!    `rule` that paired them, `line_id` (our payment line), `statement_rows`, `amount` (the
//!    item's effect on the float difference), `action` (what the run posted), `detail`; then
//!    the plain matches (by transaction id, nothing posted, no effect; stored packed in
//!    `reconciliation_matches`), without an `id`, in the order the run found them;
//! 3. `float_line` — the differences that are not items, in id order: `category` (the kind:
//!    opening_difference, ledger_only, running_balance_break), `entry_id`, `row_no`,
//!    `amount`, `detail`;
//! 4. `exception` — the statement's exceptions opened by this run or an earlier one
//!    (`first_run ≤` this run), in id order, with their **current** `status`, `assignee`,
//!    `resolution`, `resolved_by`, `resolved_at`: `category`, `line_id`, `statement_rows`,
//!    `currency`, `amount`, `detail`.
//!
//! Amounts are in the run's currency (an exception's in its own `currency`), decimals as the
//! currency has. The JSON header holds the run (provider, window, payments considered,
//! summary, outcomes posted, who ran it and when) and the statement (provider, SHA-256 of
//! the file, line count).

use chrono::{DateTime, SecondsFormat, Utc};
use cva_ledger::money::Currency;
use cva_ledger::{read_pool, Ledger};
use serde_json::{json, Map, Value};
use sqlx::Row;

use crate::error::{ReportError, Result};
use crate::model::{Cell, Table};
use crate::money::format;

pub const COLUMNS: [&str; 20] = [
    "run_id",
    "statement_id",
    "run_no",
    "section",
    "id",
    "category",
    "rule",
    "line_id",
    "statement_rows",
    "entry_id",
    "row_no",
    "currency",
    "amount",
    "action",
    "status",
    "assignee",
    "resolution",
    "resolved_by",
    "resolved_at",
    "detail",
];

const RUN_COLUMNS: &str = "id, statement_id, run_no, provider, currency, window_seconds, \
     payments_considered, summary, outcomes_posted, statement_opening, statement_closing, \
     ledger_opening, ledger_closing, difference, explained, unexplained, run_by, run_at";

/// Which run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunRef {
    /// The latest run of this statement.
    Statement(i64),
    /// This run.
    Run(i64),
}

#[derive(Debug, Clone)]
struct Run {
    id: i64,
    statement_id: i64,
    run_no: i64,
    provider: String,
    currency: String,
    window_seconds: i64,
    payments_considered: i64,
    summary: String,
    outcomes_posted: i64,
    float: [(&'static str, Option<i64>); 7],
    run_by: String,
    run_at: DateTime<Utc>,
}

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
type FloatRow = (i64, String, Option<String>, Option<i64>, i64, String);
type ExceptionRow = (
    i64,
    String,
    Option<i64>,
    String,
    String,
    i64,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<DateTime<Utc>>,
    String,
);
type StatementRow = (String, String, i64);

/// Builds the report of one reconciliation run.
pub async fn build(ledger: &Ledger, which: RunRef) -> Result<Table> {
    let (sql, id) = match which {
        RunRef::Run(id) => (
            format!("SELECT {RUN_COLUMNS} FROM reconciliations WHERE id = $1"),
            id,
        ),
        RunRef::Statement(id) => (
            format!(
                "SELECT {RUN_COLUMNS} FROM reconciliations WHERE statement_id = $1 \
                 ORDER BY run_no DESC LIMIT 1"
            ),
            id,
        ),
    };
    let run: Option<Run> = read_pool!(ledger, |pool| {
        match sqlx::query(&sql).bind(id).fetch_optional(pool).await? {
            None => None,
            Some(r) => Some(Run {
                id: r.try_get(0)?,
                statement_id: r.try_get(1)?,
                run_no: i64::from(r.try_get::<i32, _>(2)?),
                provider: r.try_get(3)?,
                currency: r.try_get(4)?,
                window_seconds: r.try_get(5)?,
                payments_considered: r.try_get(6)?,
                summary: r.try_get(7)?,
                outcomes_posted: r.try_get(8)?,
                float: [
                    ("statement_opening", r.try_get(9)?),
                    ("statement_closing", r.try_get(10)?),
                    ("ledger_opening", Some(r.try_get(11)?)),
                    ("ledger_closing", Some(r.try_get(12)?)),
                    ("difference", Some(r.try_get(13)?)),
                    ("explained", Some(r.try_get(14)?)),
                    ("unexplained", Some(r.try_get(15)?)),
                ],
                run_by: r.try_get(16)?,
                run_at: r.try_get(17)?,
            }),
        }
    });
    let run = run.ok_or_else(|| {
        ReportError::NotFound(match which {
            RunRef::Run(id) => format!("reconciliation run {id} does not exist"),
            RunRef::Statement(id) => {
                format!("statement {id} does not exist or has not been reconciled")
            }
        })
    })?;
    let (statement, items, floats, exceptions): (
        Option<StatementRow>,
        Vec<ItemRow>,
        Vec<FloatRow>,
        Vec<ExceptionRow>,
    ) = read_pool!(ledger, |pool| {
        let statement = sqlx::query_as(
            "SELECT provider, file_sha256, line_count FROM statements WHERE id = $1",
        )
        .bind(run.statement_id)
        .fetch_optional(pool)
        .await?;
        let items = sqlx::query_as(
            "SELECT id, category, rule, line_id, statement_rows, float_effect, action, detail \
             FROM reconciliation_items WHERE reconciliation_id = $1 ORDER BY id",
        )
        .bind(run.id)
        .fetch_all(pool)
        .await?;
        let floats = sqlx::query_as(
            "SELECT id, kind, CAST(entry_id AS TEXT), row_no, amount, detail \
             FROM reconciliation_float_lines WHERE reconciliation_id = $1 ORDER BY id",
        )
        .bind(run.id)
        .fetch_all(pool)
        .await?;
        let exceptions = sqlx::query_as(
            "SELECT id, category, line_id, statement_rows, currency, amount, status, assignee, \
             resolution, resolved_by, resolved_at, detail FROM exceptions \
             WHERE statement_id = $1 AND first_run <= $2 ORDER BY id",
        )
        .bind(run.statement_id)
        .bind(run.id)
        .fetch_all(pool)
        .await?;
        (statement, items, floats, exceptions)
    });

    let cur = currency(&run.currency)?;
    let mut table = Table::new(&COLUMNS);
    table.header = header(&run, statement.as_ref());
    let lead = |section: &str| {
        vec![
            Cell::Int(run.id),
            Cell::Int(run.statement_id),
            Cell::Int(run.run_no),
            Cell::text(section),
        ]
    };
    let money =
        |minor: i64, c: Currency| -> Result<Cell> { Ok(Cell::Money(format(minor.into(), c)?)) };
    for (figure, value) in run.float {
        let mut row = lead("float");
        row.extend([Cell::Empty, Cell::text(figure)]);
        row.extend(vec![Cell::Empty; 5]);
        row.push(Cell::text(cur.code()));
        row.push(match value {
            Some(v) => money(v, cur)?,
            None => Cell::Empty,
        });
        row.extend(vec![Cell::Empty; 7]);
        table.push(row)?;
    }
    for (id, category, rule, line_id, rows, effect, action, detail) in items {
        let mut row = lead("item");
        row.extend([
            Cell::Int(id),
            Cell::text(category),
            Cell::opt_text(rule),
            line_id.map_or(Cell::Empty, Cell::Int),
            Cell::text(rows),
            Cell::Empty,
            Cell::Empty,
            Cell::text(cur.code()),
            money(effect, cur)?,
            Cell::opt_text(action),
        ]);
        row.extend(vec![Cell::Empty; 5]);
        row.push(Cell::text(detail));
        table.push(row)?;
    }
    // Then the plain matches, stored packed: no item id, no effect, nothing done.
    let plain = cva_reconciliation::packed::read(ledger, run.id, 0, u64::MAX)
        .await
        .map_err(|e| match e {
            cva_reconciliation::packed::ReadError::Database(e) => ReportError::Database(e),
            corrupt => ReportError::Corrupt(corrupt.to_string()),
        })?;
    for (line, statement_row) in plain {
        let mut row = lead("item");
        row.extend([
            Cell::Empty,
            Cell::text("matched"),
            Cell::text("provider_transaction_id"),
            Cell::Int(line),
            Cell::text(statement_row.to_string()),
            Cell::Empty,
            Cell::Empty,
            Cell::text(cur.code()),
            money(0, cur)?,
            Cell::Empty,
        ]);
        row.extend(vec![Cell::Empty; 6]);
        table.push(row)?;
    }
    for (id, kind, entry_id, row_no, amount, detail) in floats {
        let mut row = lead("float_line");
        row.extend([
            Cell::Int(id),
            Cell::text(kind),
            Cell::Empty,
            Cell::Empty,
            Cell::Empty,
            Cell::opt_text(entry_id),
            row_no.map_or(Cell::Empty, Cell::Int),
            Cell::text(cur.code()),
            money(amount, cur)?,
        ]);
        row.extend(vec![Cell::Empty; 6]);
        row.push(Cell::text(detail));
        table.push(row)?;
    }
    for e in exceptions {
        let (
            id,
            category,
            line_id,
            rows,
            ecur,
            amount,
            status,
            assignee,
            resolution,
            by,
            at,
            detail,
        ) = e;
        let ecur = currency(&ecur)?;
        let mut row = lead("exception");
        row.extend([
            Cell::Int(id),
            Cell::text(category),
            Cell::Empty,
            line_id.map_or(Cell::Empty, Cell::Int),
            Cell::text(rows),
            Cell::Empty,
            Cell::Empty,
            Cell::text(ecur.code()),
            money(amount, ecur)?,
            Cell::Empty,
            Cell::text(status),
            Cell::opt_text(assignee),
            Cell::opt_text(resolution),
            Cell::opt_text(by),
            Cell::opt_text(at.map(time)),
            Cell::text(detail),
        ]);
        table.push(row)?;
    }
    Ok(table)
}

fn currency(code: &str) -> Result<Currency> {
    Currency::parse(code).map_err(|_| ReportError::Corrupt(format!("currency {code:?}")))
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn header(run: &Run, statement: Option<&StatementRow>) -> Map<String, Value> {
    let summary = serde_json::from_str::<Value>(&run.summary)
        .unwrap_or_else(|_| Value::String(run.summary.clone()));
    let mut h = Map::new();
    h.insert(
        "run".into(),
        json!({
            "id": run.id,
            "statement_id": run.statement_id,
            "run_no": run.run_no,
            "provider": run.provider,
            "currency": run.currency,
            "window_seconds": run.window_seconds,
            "payments_considered": run.payments_considered,
            "outcomes_posted": run.outcomes_posted,
            "summary": summary,
            "run_by": run.run_by,
            "run_at": time(run.run_at),
        }),
    );
    h.insert(
        "statement".into(),
        match statement {
            Some((provider, sha256, lines)) => json!({
                "id": run.statement_id,
                "provider": provider,
                "sha256": sha256,
                "lines": lines,
            }),
            None => Value::Null,
        },
    );
    h
}
