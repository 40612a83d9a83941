//! The reconciliation exceptions queue: every item of a reconciliation run that is not matched
//! and that the run could not settle is an **exception** (table `exceptions`, migration 0010),
//! worked by finance officers until it is resolved. The run (`run.rs`) opens exceptions; this
//! module is the queue people work.
//!
//! # Lifecycle
//!
//! ```text
//!            assign                 propose_adjustment             approve_adjustment
//!   open ───────────▶ assigned ─────────────────────▶ awaiting_approval ─────────────▶ resolved
//!    │                  │  ▲                              │                             ▲
//!    │                  │  └──────── reject_adjustment ◀──┘ (back to assigned, or open  │
//!    │                  │                                    when nobody is assigned)   │
//!    └──────────────────┴──────────────────────── resolve (with a note) ────────────────┘
//! ```
//!
//! * [`Exceptions::assign`] names who works it: `open`/`assigned` → `assigned` (reassigning is
//!   allowed; while an adjustment awaits approval the assignee changes and the status stays).
//! * [`Exceptions::comment`] adds a note to the history, at any status (a comment never changes
//!   the exception, so it may also follow up a resolved one).
//! * [`Exceptions::resolve`] closes it **without moving money**, with a required note; refused
//!   while an adjustment awaits approval.
//! * [`Exceptions::propose_adjustment`] proposes the adjusting ledger entry that settles it
//!   when money must move (`open`/`assigned` → `awaiting_approval`). The lines are validated
//!   by the ledger's own types ([`NewEntry`], [`Line`], [`AccountCode`], [`Amount`]): at least
//!   two lines, positive amounts in the exception's currency, debits equal to credits, and
//!   every account must exist and be kept in that currency. Nothing is posted yet.
//! * [`Exceptions::approve_adjustment`] — by **another person** than the proposer — posts the
//!   entry (idempotency key `exception:{exception_id}:adjustment:{adjustment_id}`) in the same
//!   transaction as the adjustment's decision, the exception's resolution, their history rows
//!   and the audit events: all commit or none does. Approving twice posts once (the second
//!   approval is a [`ExceptionError::Conflict`]).
//! * [`Exceptions::reject_adjustment`] — by another person than the proposer too — declines
//!   it; nothing is posted and the exception goes back to `assigned` (or `open`). A new
//!   adjustment may then be proposed.
//! * `resolved` is final: nothing but a comment is accepted afterwards, and the database
//!   refuses any change of a resolved exception's status, resolution or resolver.
//!
//! # Who may do what
//!
//! This module knows people only by the audit context's `actor`: it enforces maker-checker
//! (the proposer of an adjustment never decides it — checked here with
//! [`ExceptionError::SameActor`] and by the `adjustments` table's CHECK), not roles. The
//! command line and the HTTP API hold callers to their role matrix (`api/src/payments.rs`):
//! every role reads the queue; finance officers assign, comment, resolve, propose, approve and
//! reject.
//!
//! # Records
//!
//! Every action runs in one transaction that writes its `exception_events` row (who, when,
//! what, the note) and one audit event (`exception.assign`, `exception.comment`,
//! `exception.resolve`, `exception.propose_adjustment`, `exception.approve_adjustment` — with
//! the ledger's own `ledger.post` event for the entry —, `exception.reject_adjustment`).
//! Errors name the field or the object, never a note's text or other personal data.

use std::sync::Mutex;

use chrono::{DateTime, Utc};
use cva_ledger::account::{AccountCode, Side};
use cva_ledger::audit::{AuditConn, AuditContext, AuditRecord};
use cva_ledger::entry::{EntryError, EntryId, IdempotencyKey, Line, NewEntry};
use cva_ledger::money::{Amount, Currency};
use cva_ledger::posting::Posting;
use cva_ledger::store::TxHook;
use cva_ledger::{read_pool, write_tx, Ledger, LedgerError};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::matching::Category;

/// Longest note (resolution, comment, decision), in characters.
pub const MAX_NOTE_CHARS: usize = 2_000;
/// Longest adjustment description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 500;
/// Longest assignee name, in characters.
pub const MAX_ASSIGNEE_CHARS: usize = 64;
/// Most exceptions one [`Exceptions::list`] returns.
pub const MAX_PAGE: u32 = 1_000;
/// Page size of [`ExceptionFilter::default`].
pub const DEFAULT_PAGE: u32 = 100;

/// Why an action on the queue was refused. Messages name the field or the object, never a
/// note's text.
#[derive(Debug, Error)]
pub enum ExceptionError {
    /// No exception (or adjustment) with this id.
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: i64 },
    /// The action does not fit the current state (resolved is final, an adjustment awaits
    /// approval, an adjustment was already decided, …). Nothing changed.
    #[error("{0}")]
    Conflict(String),
    /// An argument is unusable: `field` names it (`note`, `lines[1].amount`, …).
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// Maker-checker: the person who proposed an adjustment may not decide it.
    #[error("{0}")]
    SameActor(String),
    /// The ledger refused the posting (a balance rule, …) or the audit trail failed.
    #[error("ledger: {0}")]
    Ledger(LedgerError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored value could not be read back.
    #[error("exception data is corrupt: {0}")]
    Corrupt(String),
}

impl From<LedgerError> for ExceptionError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::Invalid(EntryError { field, reason }) => {
                ExceptionError::Invalid { field, reason }
            }
            LedgerError::BatchRejected { source, .. } => ExceptionError::from(*source),
            other => ExceptionError::Ledger(other),
        }
    }
}

impl ExceptionError {
    fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ExceptionError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

pub type Result<T, E = ExceptionError> = std::result::Result<T, E>;

/// Where an exception is in its lifecycle (see the module docs).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExceptionStatus {
    Open,
    Assigned,
    AwaitingApproval,
    Resolved,
}

impl ExceptionStatus {
    pub const ALL: [ExceptionStatus; 4] = [
        ExceptionStatus::Open,
        ExceptionStatus::Assigned,
        ExceptionStatus::AwaitingApproval,
        ExceptionStatus::Resolved,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ExceptionStatus::Open => "open",
            ExceptionStatus::Assigned => "assigned",
            ExceptionStatus::AwaitingApproval => "awaiting_approval",
            ExceptionStatus::Resolved => "resolved",
        }
    }

    /// `open`, `assigned`, `awaiting_approval` or `resolved`.
    pub fn parse(s: &str) -> Result<ExceptionStatus> {
        ExceptionStatus::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| {
                ExceptionError::invalid(
                    "status",
                    "must be open, assigned, awaiting_approval or resolved",
                )
            })
    }
}

impl std::fmt::Display for ExceptionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The category of an exception by its name (`amount_mismatch`, …; never `matched`).
pub fn parse_category(s: &str) -> Result<Category> {
    Category::ALL
        .into_iter()
        .filter(|c| *c != Category::Matched)
        .find(|c| c.as_str() == s)
        .ok_or_else(|| {
            ExceptionError::invalid(
                "category",
                "must be amount_mismatch, fee_mismatch, status_mismatch, missing_from_statement, \
                 unexpected_in_statement, duplicate_in_statement or reversed_by_provider",
            )
        })
}

/// Where an adjustment is: proposed (awaiting a second person), approved (posted) or rejected.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdjustmentStatus {
    Proposed,
    Approved,
    Rejected,
}

impl AdjustmentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AdjustmentStatus::Proposed => "proposed",
            AdjustmentStatus::Approved => "approved",
            AdjustmentStatus::Rejected => "rejected",
        }
    }

    fn parse(s: &str) -> Option<AdjustmentStatus> {
        [
            AdjustmentStatus::Proposed,
            AdjustmentStatus::Approved,
            AdjustmentStatus::Rejected,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

/// One exception of the queue.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExceptionView {
    pub id: i64,
    pub statement_id: i64,
    /// `category:line:rows`: the same problem found by a later run is this same exception.
    pub key: String,
    /// The reconciliation run that found it first, and the last one that found it.
    pub first_run: i64,
    pub last_run: i64,
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "amount_mismatch"))]
    pub category: Category,
    /// The payment line (`batch_lines.id`) it is about, if any.
    pub line_id: Option<i64>,
    /// Statement row numbers, comma-separated; empty for none.
    pub statement_rows: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "XOF"))]
    pub currency: Currency,
    /// The item's effect on the float difference when found (ledger − statement), in minor
    /// units of `currency`.
    pub amount: i64,
    pub detail: String,
    pub status: ExceptionStatus,
    pub assignee: Option<String>,
    pub resolution: Option<String>,
    pub resolved_by: Option<String>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// One change of an exception, as its history lists it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExceptionEvent {
    pub id: i64,
    /// `opened`, `seen_again`, `assigned`, `commented`, `adjustment_proposed`,
    /// `adjustment_approved`, `adjustment_rejected` or `resolved`.
    pub action: String,
    pub actor: String,
    pub note: Option<String>,
    pub at: DateTime<Utc>,
}

/// One line of an adjusting entry: an account, a side and an amount in minor units of the
/// exception's currency (the form stored in `adjustments.lines`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdjustmentLine {
    #[cfg_attr(feature = "openapi", schema(example = "assets:float:orange"))]
    pub account: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "debit"))]
    pub side: Side,
    /// Minor units of the exception's currency (XOF: francs; USD: cents). Positive.
    pub amount: i64,
}

impl AdjustmentLine {
    /// A line from what a person types: `side` is `debit` or `credit`, `amount` a decimal in
    /// **major** units of `currency`, parsed exactly ([`Amount::parse_positive`]: `12.50` USD
    /// is 1250 cents, `12.505` USD and `-5` are refused). `index` is the line's position, for
    /// the field named in errors (`lines[1].amount`).
    pub fn parse(
        index: usize,
        account: &str,
        side: &str,
        amount: &str,
        currency: Currency,
    ) -> Result<AdjustmentLine> {
        let at = |f: &str| format!("lines[{index}].{f}");
        let account = AccountCode::parse(account.trim())
            .map_err(|e| ExceptionError::invalid(at("account"), e.to_string()))?;
        let side = match side.trim() {
            "debit" => Side::Debit,
            "credit" => Side::Credit,
            _ => {
                return Err(ExceptionError::invalid(
                    at("side"),
                    "must be \"debit\" or \"credit\"",
                ))
            }
        };
        let amount = Amount::parse_positive(amount.trim(), currency)
            .map_err(|e| ExceptionError::invalid(at("amount"), e.to_string()))?;
        Ok(AdjustmentLine {
            account: account.as_str().to_owned(),
            side,
            amount: amount.minor(),
        })
    }
}

/// An adjusting entry proposed for an exception, and its decision.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdjustmentView {
    pub id: i64,
    pub exception_id: i64,
    pub description: String,
    pub lines: Vec<AdjustmentLine>,
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "XOF"))]
    pub currency: Currency,
    pub status: AdjustmentStatus,
    pub proposed_by: String,
    pub proposed_at: DateTime<Utc>,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub decision_note: Option<String>,
    /// The ledger entry posted when it was approved.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Uuid))]
    pub entry_id: Option<EntryId>,
}

/// An exception with its history (oldest first) and its adjustments (oldest first).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExceptionDetail {
    pub exception: ExceptionView,
    pub events: Vec<ExceptionEvent>,
    pub adjustments: Vec<AdjustmentView>,
}

/// Which exceptions [`Exceptions::list`] returns: every filter is optional; pages are
/// ordered by id, the next one starting after the last id returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExceptionFilter {
    pub status: Option<ExceptionStatus>,
    pub statement_id: Option<i64>,
    pub assignee: Option<String>,
    pub category: Option<Category>,
    /// Only exceptions with a greater id (0: from the start).
    pub after_id: i64,
    /// 1 to [`MAX_PAGE`].
    pub limit: u32,
}

impl Default for ExceptionFilter {
    fn default() -> Self {
        ExceptionFilter {
            status: None,
            statement_id: None,
            assignee: None,
            category: None,
            after_id: 0,
            limit: DEFAULT_PAGE,
        }
    }
}

const EXCEPTION_COLUMNS: &str = "id, statement_id, key, first_run, last_run, category, line_id, \
     statement_rows, currency, amount, detail, status, assignee, resolution, resolved_by, \
     resolved_at, created_at";

const ADJUSTMENT_COLUMNS: &str = "id, exception_id, description, lines, currency, status, \
     proposed_by, proposed_at, decided_by, decided_at, decision_note, \
     CAST(entry_id AS TEXT) AS entry_id";

#[derive(sqlx::FromRow)]
struct ExceptionRow {
    id: i64,
    statement_id: i64,
    key: String,
    first_run: i64,
    last_run: i64,
    category: String,
    line_id: Option<i64>,
    statement_rows: String,
    currency: String,
    amount: i64,
    detail: String,
    status: String,
    assignee: Option<String>,
    resolution: Option<String>,
    resolved_by: Option<String>,
    resolved_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct AdjustmentRow {
    id: i64,
    exception_id: i64,
    description: String,
    lines: String,
    currency: String,
    status: String,
    proposed_by: String,
    proposed_at: DateTime<Utc>,
    decided_by: Option<String>,
    decided_at: Option<DateTime<Utc>>,
    decision_note: Option<String>,
    entry_id: Option<String>,
}

type EventRow = (i64, String, String, Option<String>, DateTime<Utc>);

fn currency_of(code: &str) -> Result<Currency> {
    Currency::parse(code.trim())
        .map_err(|_| ExceptionError::Corrupt(format!("unknown currency {code:?}")))
}

impl ExceptionRow {
    fn into_view(self) -> Result<ExceptionView> {
        let id = self.id;
        let category = Category::ALL
            .into_iter()
            .find(|c| c.as_str() == self.category)
            .ok_or_else(|| ExceptionError::Corrupt(format!("exception {id}: unknown category")))?;
        let status = ExceptionStatus::parse(&self.status)
            .map_err(|_| ExceptionError::Corrupt(format!("exception {id}: unknown status")))?;
        Ok(ExceptionView {
            id,
            statement_id: self.statement_id,
            key: self.key,
            first_run: self.first_run,
            last_run: self.last_run,
            category,
            line_id: self.line_id,
            statement_rows: self.statement_rows,
            currency: currency_of(&self.currency)?,
            amount: self.amount,
            detail: self.detail,
            status,
            assignee: self.assignee,
            resolution: self.resolution,
            resolved_by: self.resolved_by,
            resolved_at: self.resolved_at,
            created_at: self.created_at,
        })
    }
}

impl AdjustmentRow {
    fn into_view(self) -> Result<AdjustmentView> {
        let id = self.id;
        let lines: Vec<AdjustmentLine> = serde_json::from_str(&self.lines)
            .map_err(|_| ExceptionError::Corrupt(format!("adjustment {id}: unreadable lines")))?;
        let status = AdjustmentStatus::parse(&self.status)
            .ok_or_else(|| ExceptionError::Corrupt(format!("adjustment {id}: unknown status")))?;
        let entry_id = match self.entry_id.as_deref() {
            Some(s) => Some(EntryId::parse(s).map_err(|_| {
                ExceptionError::Corrupt(format!("adjustment {id}: unreadable entry id"))
            })?),
            None => None,
        };
        Ok(AdjustmentView {
            id,
            exception_id: self.exception_id,
            description: self.description,
            lines,
            currency: currency_of(&self.currency)?,
            status,
            proposed_by: self.proposed_by,
            proposed_at: self.proposed_at,
            decided_by: self.decided_by,
            decided_at: self.decided_at,
            decision_note: self.decision_note,
            entry_id,
        })
    }
}

/// A note as stored: trimmed, 1 to [`MAX_NOTE_CHARS`] characters, no control characters but
/// line breaks and tabs.
fn check_note(field: &str, note: &str) -> Result<String> {
    let note = note.trim();
    if note.is_empty()
        || note.chars().count() > MAX_NOTE_CHARS
        || note
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(ExceptionError::invalid(
            field,
            format!(
                "must be 1 to {MAX_NOTE_CHARS} characters (not blank), without control characters"
            ),
        ));
    }
    Ok(note.to_owned())
}

fn check_text(field: &str, value: &str, max: usize, spaces: bool) -> Result<String> {
    let value = value.trim();
    if value.is_empty()
        || value.chars().count() > max
        || value
            .chars()
            .any(|c| c.is_control() || (!spaces && c.is_whitespace()))
    {
        let what = if spaces {
            "without control characters"
        } else {
            "without spaces or control characters"
        };
        return Err(ExceptionError::invalid(
            field,
            format!("must be 1 to {max} characters, {what}"),
        ));
    }
    Ok(value.to_owned())
}

/// The idempotency key of the entry an approved adjustment posts.
pub fn adjustment_key(exception_id: i64, adjustment_id: i64) -> String {
    format!("exception:{exception_id}:adjustment:{adjustment_id}")
}

/// Appends one `exception_events` row on `$conn` (either backend).
macro_rules! event_row {
    ($conn:expr, $exception:expr, $action:expr, $actor:expr, $note:expr, $at:expr) => {
        sqlx::query(
            "INSERT INTO exception_events (exception_id, action, actor, note, at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind($exception)
        .bind($action)
        .bind($actor)
        .bind($note)
        .bind($at)
        .execute(&mut *$conn)
        .await
    };
}

/// The exceptions queue over the ledger's database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Exceptions {
    ledger: Ledger,
}

impl Exceptions {
    pub fn new(ledger: Ledger) -> Exceptions {
        Exceptions { ledger }
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// One page of exceptions matching `filter`, ordered by id.
    pub async fn list(&self, filter: &ExceptionFilter) -> Result<Vec<ExceptionView>> {
        if filter.limit == 0 || filter.limit > MAX_PAGE {
            return Err(ExceptionError::invalid(
                "limit",
                format!("must be 1 to {MAX_PAGE}"),
            ));
        }
        if filter.after_id < 0 {
            return Err(ExceptionError::invalid("after_id", "must not be negative"));
        }
        let mut sql = format!("SELECT {EXCEPTION_COLUMNS} FROM exceptions WHERE id > $1");
        let mut n = 1;
        let mut clause = |sql: &mut String, column: &str| {
            n += 1;
            sql.push_str(&format!(" AND {column} = ${n}"));
        };
        if filter.status.is_some() {
            clause(&mut sql, "status");
        }
        if filter.statement_id.is_some() {
            clause(&mut sql, "statement_id");
        }
        if filter.assignee.is_some() {
            clause(&mut sql, "assignee");
        }
        if filter.category.is_some() {
            clause(&mut sql, "category");
        }
        sql.push_str(&format!(" ORDER BY id LIMIT ${}", n + 1));
        let rows: Vec<ExceptionRow> = read_pool!(self.ledger, |pool| {
            let mut q = sqlx::query_as(&sql).bind(filter.after_id);
            if let Some(s) = filter.status {
                q = q.bind(s.as_str());
            }
            if let Some(s) = filter.statement_id {
                q = q.bind(s);
            }
            if let Some(a) = &filter.assignee {
                q = q.bind(a.trim());
            }
            if let Some(c) = filter.category {
                q = q.bind(c.as_str());
            }
            q.bind(i64::from(filter.limit)).fetch_all(pool).await?
        });
        rows.into_iter().map(ExceptionRow::into_view).collect()
    }

    /// The exception alone.
    pub async fn exception(&self, id: i64) -> Result<ExceptionView> {
        let sql = format!("SELECT {EXCEPTION_COLUMNS} FROM exceptions WHERE id = $1");
        let row: Option<ExceptionRow> = read_pool!(self.ledger, |pool| {
            sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?
        });
        row.ok_or(ExceptionError::NotFound {
            what: "exception",
            id,
        })?
        .into_view()
    }

    /// The exception with its history and its adjustments.
    pub async fn get(&self, id: i64) -> Result<ExceptionDetail> {
        let exception = self.exception(id).await?;
        let adjustments_sql = format!(
            "SELECT {ADJUSTMENT_COLUMNS} FROM adjustments WHERE exception_id = $1 ORDER BY id"
        );
        let (events, adjustments): (Vec<EventRow>, Vec<AdjustmentRow>) =
            read_pool!(self.ledger, |pool| {
                let events = sqlx::query_as(
                    "SELECT id, action, actor, note, at FROM exception_events \
                     WHERE exception_id = $1 ORDER BY id",
                )
                .bind(id)
                .fetch_all(pool)
                .await?;
                let adjustments = sqlx::query_as(&adjustments_sql)
                    .bind(id)
                    .fetch_all(pool)
                    .await?;
                (events, adjustments)
            });
        Ok(ExceptionDetail {
            exception,
            events: events
                .into_iter()
                .map(|(id, action, actor, note, at)| ExceptionEvent {
                    id,
                    action,
                    actor,
                    note,
                    at,
                })
                .collect(),
            adjustments: adjustments
                .into_iter()
                .map(AdjustmentRow::into_view)
                .collect::<Result<_>>()?,
        })
    }

    /// One adjustment.
    pub async fn adjustment(&self, id: i64) -> Result<AdjustmentView> {
        let sql = format!("SELECT {ADJUSTMENT_COLUMNS} FROM adjustments WHERE id = $1");
        let row: Option<AdjustmentRow> = read_pool!(self.ledger, |pool| {
            sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?
        });
        row.ok_or(ExceptionError::NotFound {
            what: "adjustment",
            id,
        })?
        .into_view()
    }

    /// Assigns the exception to `assignee` (a user name): `open`/`assigned` → `assigned`;
    /// while an adjustment awaits approval only the assignee changes. Refused once resolved.
    pub async fn assign(
        &self,
        id: i64,
        assignee: &str,
        ctx: &AuditContext,
    ) -> Result<ExceptionView> {
        let assignee = check_text("assignee", assignee, MAX_ASSIGNEE_CHARS, false)?;
        ctx.validate()?;
        let at = cva_ledger::store::now_micros();
        let change = serde_json::json!({ "assignee": assignee });
        write_tx!(self.ledger, |tx| {
            let n = sqlx::query(
                "UPDATE exceptions SET assignee = $1, status = CASE WHEN status = \
                 'awaiting_approval' THEN status ELSE 'assigned' END \
                 WHERE id = $2 AND status IN ('open', 'assigned', 'awaiting_approval')",
            )
            .bind(&assignee)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n != 1 {
                let status: Option<String> =
                    sqlx::query_scalar("SELECT status FROM exceptions WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?;
                return Err(refusal(id, status, "assigned"));
            }
            event_row!(tx, id, "assigned", &ctx.actor, Some(&assignee), at)?;
            let rec =
                AuditRecord::new(ctx, "exception.assign", "exception", id.to_string(), change);
            AuditConn::append(&mut *tx, &rec).await?;
        });
        self.exception(id).await
    }

    /// Adds a note to the exception's history (any status; the exception itself is unchanged).
    pub async fn comment(&self, id: i64, note: &str, ctx: &AuditContext) -> Result<ExceptionView> {
        let note = check_note("note", note)?;
        ctx.validate()?;
        let at = cva_ledger::store::now_micros();
        let change = serde_json::json!({ "note": note });
        write_tx!(self.ledger, |tx| {
            let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM exceptions WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            if exists.is_none() {
                return Err(ExceptionError::NotFound {
                    what: "exception",
                    id,
                });
            }
            event_row!(tx, id, "commented", &ctx.actor, Some(&note), at)?;
            let rec = AuditRecord::new(
                ctx,
                "exception.comment",
                "exception",
                id.to_string(),
                change,
            );
            AuditConn::append(&mut *tx, &rec).await?;
        });
        self.exception(id).await
    }

    /// Resolves the exception without moving money, with a required note (why nothing needs
    /// posting). Refused while an adjustment awaits approval, and once resolved.
    pub async fn resolve(&self, id: i64, note: &str, ctx: &AuditContext) -> Result<ExceptionView> {
        let note = check_note("note", note)?;
        ctx.validate()?;
        let at = cva_ledger::store::now_micros();
        let change = serde_json::json!({ "resolution": note });
        write_tx!(self.ledger, |tx| {
            let n = sqlx::query(
                "UPDATE exceptions SET status = 'resolved', resolution = $1, resolved_by = $2, \
                 resolved_at = $3 WHERE id = $4 AND status IN ('open', 'assigned') \
                 AND NOT EXISTS (SELECT 1 FROM adjustments a WHERE a.exception_id = $4 \
                 AND a.status = 'proposed')",
            )
            .bind(&note)
            .bind(&ctx.actor)
            .bind(at)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n != 1 {
                let status: Option<String> =
                    sqlx::query_scalar("SELECT status FROM exceptions WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?;
                return Err(refusal(id, status, "resolved"));
            }
            event_row!(tx, id, "resolved", &ctx.actor, Some(&note), at)?;
            let rec = AuditRecord::new(
                ctx,
                "exception.resolve",
                "exception",
                id.to_string(),
                change,
            );
            AuditConn::append(&mut *tx, &rec).await?;
        });
        self.exception(id).await
    }

    /// Proposes the adjusting entry that settles the exception (see the module docs for the
    /// checks); `open`/`assigned` → `awaiting_approval`. Nothing is posted until another
    /// person approves it.
    pub async fn propose_adjustment(
        &self,
        id: i64,
        description: &str,
        lines: &[AdjustmentLine],
        ctx: &AuditContext,
    ) -> Result<AdjustmentView> {
        let description = check_text("description", description, MAX_DESCRIPTION_CHARS, true)?;
        ctx.validate()?;
        let exception = self.exception(id).await?;
        match exception.status {
            ExceptionStatus::Open | ExceptionStatus::Assigned => {}
            other => return Err(refusal(id, Some(other.as_str().to_owned()), "adjusted")),
        }
        // The ledger's own validation, with a placeholder key (the real one needs the
        // adjustment's id); the entry is built again from the stored lines when approved.
        self.entry(
            &exception,
            &format!("exception:{id}:adjustment:proposed"),
            &description,
            lines,
            serde_json::Map::new(),
        )?;
        for (i, l) in lines.iter().enumerate() {
            let field = format!("lines[{i}].account");
            let code = AccountCode::parse(&l.account)
                .map_err(|e| ExceptionError::invalid(field.clone(), e.to_string()))?;
            match self.ledger.account(&code).await? {
                None => {
                    return Err(ExceptionError::invalid(
                        field,
                        format!("account `{code}` does not exist; open it first"),
                    ))
                }
                Some(a) if a.currency != exception.currency => {
                    return Err(ExceptionError::invalid(
                        field,
                        format!(
                            "account `{code}` is kept in {}; this exception is in {}",
                            a.currency, exception.currency
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
        let stored = serde_json::to_string(lines)
            .map_err(|e| ExceptionError::Corrupt(format!("lines: {e}")))?;
        let at = cva_ledger::store::now_micros();
        let adjustment_id: i64 = write_tx!(self.ledger, |tx| {
            let n = sqlx::query(
                "UPDATE exceptions SET status = 'awaiting_approval' \
                 WHERE id = $1 AND status IN ('open', 'assigned')",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n != 1 {
                let status: Option<String> =
                    sqlx::query_scalar("SELECT status FROM exceptions WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?;
                return Err(refusal(id, status, "adjusted"));
            }
            let adjustment_id: i64 = sqlx::query_scalar(
                "INSERT INTO adjustments (exception_id, description, lines, currency, status, \
                 proposed_by, proposed_at) VALUES ($1, $2, $3, $4, 'proposed', $5, $6) \
                 RETURNING id",
            )
            .bind(id)
            .bind(&description)
            .bind(&stored)
            .bind(exception.currency.code())
            .bind(&ctx.actor)
            .bind(at)
            .fetch_one(&mut *tx)
            .await?;
            let note = format!("adjustment {adjustment_id}: {description}");
            event_row!(tx, id, "adjustment_proposed", &ctx.actor, Some(&note), at)?;
            let rec = AuditRecord::new(
                ctx,
                "exception.propose_adjustment",
                "adjustment",
                adjustment_id.to_string(),
                serde_json::json!({
                    "exception": id,
                    "description": description,
                    "currency": exception.currency.code(),
                    "lines": lines,
                }),
            );
            AuditConn::append(&mut *tx, &rec).await?;
            adjustment_id
        });
        self.adjustment(adjustment_id).await
    }

    /// Approves a proposed adjustment: by another person than its proposer. Posts its entry
    /// (key [`adjustment_key`]) and resolves the exception in one transaction (see the module
    /// docs). `note`, when given, becomes the exception's resolution.
    pub async fn approve_adjustment(
        &self,
        adjustment_id: i64,
        note: Option<&str>,
        ctx: &AuditContext,
    ) -> Result<AdjustmentView> {
        let note = note.map(|n| check_note("note", n)).transpose()?;
        ctx.validate()?;
        let adj = self.adjustment(adjustment_id).await?;
        self.check_decidable(&adj, ctx, "approve")?;
        let exception = self.exception(adj.exception_id).await?;
        if exception.status != ExceptionStatus::AwaitingApproval {
            return Err(refusal(
                exception.id,
                Some(exception.status.as_str().to_owned()),
                "approved",
            ));
        }
        let mut meta = serde_json::Map::new();
        meta.insert("exception".into(), exception.id.into());
        meta.insert("adjustment".into(), adjustment_id.into());
        meta.insert("statement".into(), exception.statement_id.into());
        let entry = self.entry(
            &exception,
            &adjustment_key(exception.id, adjustment_id),
            &adj.description,
            &adj.lines,
            meta,
        )?;
        let resolution = note
            .clone()
            .unwrap_or_else(|| format!("adjusting entry of adjustment {adjustment_id} approved"));
        let hook = ApproveRows {
            exception_id: exception.id,
            adjustment_id,
            ctx,
            note: note.as_deref(),
            resolution: &resolution,
            at: cva_ledger::store::now_micros(),
            conflict: Mutex::new(None),
        };
        let posted = self
            .ledger
            .post_many_with(std::slice::from_ref(&entry), ctx, &hook)
            .await;
        let conflict = hook.conflict.lock().ok().and_then(|mut c| c.take());
        match posted {
            Ok(p) => match p.first() {
                Some(Posting::Posted(_)) => {}
                Some(Posting::Replayed(id)) => {
                    return Err(ExceptionError::Conflict(format!(
                        "adjustment {adjustment_id} was already approved (entry {id})"
                    )))
                }
                None => return Err(ExceptionError::Corrupt("posting returned nothing".into())),
            },
            Err(e) => {
                return Err(match conflict {
                    Some(what) => ExceptionError::Conflict(what),
                    None => approval_error(adjustment_id, e),
                })
            }
        }
        self.adjustment(adjustment_id).await
    }

    /// Rejects a proposed adjustment: by another person than its proposer, with a required
    /// note. Nothing is posted; the exception goes back to `assigned` (or `open`).
    pub async fn reject_adjustment(
        &self,
        adjustment_id: i64,
        note: &str,
        ctx: &AuditContext,
    ) -> Result<AdjustmentView> {
        let note = check_note("note", note)?;
        ctx.validate()?;
        let adj = self.adjustment(adjustment_id).await?;
        self.check_decidable(&adj, ctx, "reject")?;
        let exception_id = adj.exception_id;
        let at = cva_ledger::store::now_micros();
        write_tx!(self.ledger, |tx| {
            let n = sqlx::query(
                "UPDATE adjustments SET status = 'rejected', decided_by = $1, decided_at = $2, \
                 decision_note = $3 WHERE id = $4 AND status = 'proposed'",
            )
            .bind(&ctx.actor)
            .bind(at)
            .bind(&note)
            .bind(adjustment_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n != 1 {
                return Err(ExceptionError::Conflict(format!(
                    "adjustment {adjustment_id} was decided meanwhile"
                )));
            }
            sqlx::query(
                "UPDATE exceptions SET status = CASE WHEN assignee IS NULL THEN 'open' \
                 ELSE 'assigned' END WHERE id = $1 AND status = 'awaiting_approval'",
            )
            .bind(exception_id)
            .execute(&mut *tx)
            .await?;
            let text = format!("adjustment {adjustment_id}: {note}");
            event_row!(
                tx,
                exception_id,
                "adjustment_rejected",
                &ctx.actor,
                Some(&text),
                at
            )?;
            let rec = AuditRecord::new(
                ctx,
                "exception.reject_adjustment",
                "adjustment",
                adjustment_id.to_string(),
                serde_json::json!({ "exception": exception_id, "note": note }),
            );
            AuditConn::append(&mut *tx, &rec).await?;
        });
        self.adjustment(adjustment_id).await
    }

    /// Refuses a decision on an adjustment that was already decided, or by its proposer.
    fn check_decidable(&self, adj: &AdjustmentView, ctx: &AuditContext, verb: &str) -> Result<()> {
        match adj.status {
            AdjustmentStatus::Proposed => {}
            AdjustmentStatus::Approved => {
                return Err(ExceptionError::Conflict(format!(
                    "adjustment {} was already approved{}; nothing was posted again",
                    adj.id,
                    adj.entry_id
                        .map(|e| format!(" (entry {e})"))
                        .unwrap_or_default()
                )))
            }
            AdjustmentStatus::Rejected => {
                return Err(ExceptionError::Conflict(format!(
                    "adjustment {} was already rejected",
                    adj.id
                )))
            }
        }
        if adj.proposed_by == ctx.actor {
            return Err(ExceptionError::SameActor(format!(
                "adjustment {}: the person who proposed it cannot also {verb} it; \
                 another finance officer must",
                adj.id
            )));
        }
        Ok(())
    }

    /// The ledger entry of an adjustment, validated by the ledger's types.
    fn entry(
        &self,
        exception: &ExceptionView,
        key: &str,
        description: &str,
        lines: &[AdjustmentLine],
        metadata: serde_json::Map<String, serde_json::Value>,
    ) -> Result<NewEntry> {
        let mut typed = Vec::with_capacity(lines.len());
        for (i, l) in lines.iter().enumerate() {
            let account = AccountCode::parse(&l.account).map_err(|e| {
                ExceptionError::invalid(format!("lines[{i}].account"), e.to_string())
            })?;
            typed.push(Line {
                account,
                side: l.side,
                amount: Amount::from_minor(l.amount, exception.currency),
            });
        }
        let key = IdempotencyKey::parse(key)?;
        let description = format!("Adjustment for exception {}: {description}", exception.id);
        Ok(NewEntry::new(
            key,
            description,
            Utc::now().date_naive(),
            metadata,
            typed,
        )?)
    }
}

impl From<EntryError> for ExceptionError {
    fn from(EntryError { field, reason }: EntryError) -> Self {
        ExceptionError::Invalid { field, reason }
    }
}

/// Why exception `id` (in `status`, `None`: missing) cannot be `verb`.
fn refusal(id: i64, status: Option<String>, verb: &str) -> ExceptionError {
    match status.as_deref() {
        None => ExceptionError::NotFound {
            what: "exception",
            id,
        },
        Some("resolved") => ExceptionError::Conflict(format!(
            "exception {id} is resolved; a resolved exception is final and cannot be {verb}"
        )),
        Some("awaiting_approval") => ExceptionError::Conflict(format!(
            "exception {id} has an adjustment awaiting approval; approve or reject it first"
        )),
        Some(s) => ExceptionError::Conflict(format!("exception {id} is {s}; it cannot be {verb}")),
    }
}

fn approval_error(adjustment_id: i64, e: LedgerError) -> ExceptionError {
    match e {
        LedgerError::BatchRejected { source, .. } => approval_error(adjustment_id, *source),
        LedgerError::IdempotencyConflict { existing, .. } => ExceptionError::Conflict(format!(
            "adjustment {adjustment_id} was already approved (entry {existing})"
        )),
        other => ExceptionError::from(other),
    }
}

/// The rows an approval writes in the posting's transaction: the adjustment's decision, the
/// exception's resolution, two history rows and the audit event.
struct ApproveRows<'a> {
    exception_id: i64,
    adjustment_id: i64,
    ctx: &'a AuditContext,
    note: Option<&'a str>,
    resolution: &'a str,
    at: DateTime<Utc>,
    /// Set when the adjustment or the exception changed since they were read.
    conflict: Mutex<Option<String>>,
}

impl ApproveRows<'_> {
    fn changed(&self, what: String) -> LedgerError {
        if let Ok(mut c) = self.conflict.lock() {
            *c = Some(what.clone());
        }
        LedgerError::Refused(what)
    }
}

/// The body of [`ApproveRows`] on either backend; `$entry` is the entry id as the backend
/// stores it.
macro_rules! approve_rows {
    ($self:ident, $conn:ident, $entry_id:expr, $entry_bind:expr) => {{
        let n = sqlx::query(
            "UPDATE adjustments SET status = 'approved', decided_by = $1, decided_at = $2, \
             decision_note = $3, entry_id = $4 WHERE id = $5 AND status = 'proposed'",
        )
        .bind(&$self.ctx.actor)
        .bind($self.at)
        .bind($self.note)
        .bind($entry_bind)
        .bind($self.adjustment_id)
        .execute(&mut *$conn)
        .await?
        .rows_affected();
        if n != 1 {
            return Err($self.changed(format!(
                "adjustment {} was decided meanwhile; nothing was posted",
                $self.adjustment_id
            )));
        }
        let n = sqlx::query(
            "UPDATE exceptions SET status = 'resolved', resolution = $1, resolved_by = $2, \
             resolved_at = $3 WHERE id = $4 AND status = 'awaiting_approval'",
        )
        .bind($self.resolution)
        .bind(&$self.ctx.actor)
        .bind($self.at)
        .bind($self.exception_id)
        .execute(&mut *$conn)
        .await?
        .rows_affected();
        if n != 1 {
            return Err($self.changed(format!(
                "exception {} changed meanwhile; nothing was posted",
                $self.exception_id
            )));
        }
        let approved = match $self.note {
            Some(note) => format!("adjustment {}: entry {}: {note}", $self.adjustment_id, $entry_id),
            None => format!("adjustment {}: entry {}", $self.adjustment_id, $entry_id),
        };
        event_row!(
            $conn,
            $self.exception_id,
            "adjustment_approved",
            &$self.ctx.actor,
            Some(&approved),
            $self.at
        )?;
        event_row!(
            $conn,
            $self.exception_id,
            "resolved",
            &$self.ctx.actor,
            Some($self.resolution),
            $self.at
        )?;
        let rec = AuditRecord::new(
            $self.ctx,
            "exception.approve_adjustment",
            "adjustment",
            $self.adjustment_id.to_string(),
            serde_json::json!({
                "exception": $self.exception_id,
                "entry": $entry_id.to_string(),
                "note": $self.note,
                "resolution": $self.resolution,
            }),
        );
        AuditConn::append(&mut *$conn, &rec).await?;
        Ok(())
    }};
}

fn posted_entry(posted: &[(usize, EntryId)]) -> cva_ledger::Result<EntryId> {
    posted
        .first()
        .map(|(_, id)| *id)
        .ok_or_else(|| LedgerError::Corrupt("the adjustment's entry was not written".into()))
}

impl TxHook for ApproveRows<'_> {
    fn postgres<'a>(
        &'a self,
        conn: &'a mut sqlx::PgConnection,
        posted: &'a [(usize, EntryId)],
    ) -> futures::future::BoxFuture<'a, cva_ledger::Result<()>> {
        Box::pin(async move {
            let entry = posted_entry(posted)?;
            approve_rows!(self, conn, entry, entry.0)
        })
    }

    fn sqlite<'a>(
        &'a self,
        conn: &'a mut sqlx::SqliteConnection,
        posted: &'a [(usize, EntryId)],
    ) -> futures::future::BoxFuture<'a, cva_ledger::Result<()>> {
        Box::pin(async move {
            let entry = posted_entry(posted)?;
            approve_rows!(self, conn, entry, entry.to_string())
        })
    }
}
