//! Payment outcomes written to the ledger and the batch lines together: confirmation (in-transit
//! → float, with the fee), failure (in-transit → back to the household), unknown (no money
//! moves), and a provider's later reversal (float → back to the household). Shared by the API
//! sender, the file adapter and (later) statement matching.
//!
//! Each outcome's entry has an idempotency key derived from the line (`pay:{line}:confirm`,
//! `pay:{line}:fail`, `pay:{line}:reversal`), and the line update only applies to lines still
//! open (`in_flight` / `unknown`), inside the same transaction: applying the same outcomes
//! twice, or from two senders at once, posts nothing twice. The database refuses any line
//! status going backwards (migration 0008).

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use cva_ledger::account::{AccountCode, Side};
use cva_ledger::audit::{AuditConn, AuditContext, AuditRecord};
use cva_ledger::entry::{IdempotencyKey, Line, NewEntry};
use cva_ledger::money::Amount;
use cva_ledger::posting::Posting;
use cva_registry::{read_pool, write_tx, RegistryError};
use serde::Serialize;

use crate::{now, BatchView, Batches, Provider, Result};

/// What became of one line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Paid; the provider's transaction id.
    Completed { provider_tx: String },
    /// Not paid: our failure code and the provider's reason.
    Failed { code: String, reason: String },
    /// Cannot be determined now; stays open, counted, never retried silently.
    Unknown,
}

/// An outcome for a line of the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineOutcome {
    pub line: i64,
    pub outcome: Outcome,
}

/// What [`Batches::apply_outcomes`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Applied {
    pub completed: usize,
    pub failed: usize,
    pub unknown: usize,
    /// Outcomes for lines that were already resolved (or not open): nothing changed for them.
    pub already_resolved: usize,
}

/// What a statement settles in one batch ([`Batches::settle_many`]): outcomes for its open
/// lines, then reversals of its paid lines (a line may have both: confirmed, then reversed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settlement {
    pub outcomes: Vec<LineOutcome>,
    pub reversals: Vec<i64>,
}

/// What [`Batches::settle_many`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settled {
    pub applied: Applied,
    /// The lines whose reversal was booked.
    pub reversed: Vec<i64>,
    /// The idempotency keys of the ledger entries this call wrote (not those found already
    /// posted), so that a caller can find exactly what it moved.
    pub posted: Vec<String>,
}

/// Our failure code for a provider's GSMA error code (a rejection reason or error object).
pub fn failure_code(gsma_code: &str) -> &'static str {
    match gsma_code.to_ascii_lowercase().as_str() {
        "formaterror" | "invalidmsisdn" => "invalid_msisdn",
        "identifiererror" | "accountnotfound" | "identifiernotfound" => "account_not_registered",
        "requestdeclined" | "accountblocked" | "accountlocked" => "payee_blocked",
        "maxbalanceexceeded" | "transactionlimitexceeded" | "kyclimitexceeded" => {
            "payee_limit_exceeded"
        }
        "insufficientfunds" => "insufficient_float",
        _ => "provider_rejected",
    }
}

/// Lines per transaction when applying outcomes.
const CHUNK: usize = 5000;

/// Lines by id: household, amount, fee, status.
type LineStates = HashMap<i64, (i64, i64, i64, String)>;

/// One line's row change.
struct LineChange {
    id: i64,
    status: &'static str,
    provider_tx: Option<String>,
    failure_code: Option<String>,
    failure_reason: Option<String>,
}

/// The rows a posting of outcomes changes, in the posting's transaction: the lines'
/// outcomes, then the lines reversed (a line confirmed here may be reversed here), then the
/// audit events.
struct OutcomeRows<'a> {
    changes: &'a [LineChange],
    source: &'a str,
    reversed: &'a [i64],
    at: DateTime<Utc>,
    audits: &'a [AuditRecord],
}

/// `IN` a JSON array of ids bound as `$1` (see [`json_ids`]), per backend: one query for a
/// set of lines or batches instead of one per id.
const PG_IN_IDS: &str =
    "= ANY(SELECT CAST(value AS BIGINT) FROM json_array_elements_text(CAST($1 AS JSON)))";
const SQLITE_IN_IDS: &str = "IN (SELECT value FROM json_each($1))";

/// `ids` as a JSON array, for [`PG_IN_IDS`] / [`SQLITE_IN_IDS`].
fn json_ids(ids: &[i64]) -> String {
    let list: Vec<String> = ids.iter().map(i64::to_string).collect();
    format!("[{}]", list.join(","))
}

/// Reversal of `rows.reversed` (`completed` → `failed`, code `reversed`) in one statement,
/// then the audit events. `$in_ids`: [`PG_IN_IDS`] or [`SQLITE_IN_IDS`].
macro_rules! reverse_lines {
    ($rows:expr, $conn:expr, $in_ids:expr) => {{
        if !$rows.reversed.is_empty() {
            let n = sqlx::query(&format!(
                "UPDATE batch_lines SET status = 'failed', failure_code = 'reversed', \
                 failure_reason = 'reversed by the provider', resolved_at = $2 \
                 WHERE id {} AND status = 'completed'",
                $in_ids
            ))
            .bind(json_ids($rows.reversed))
            .bind($rows.at)
            .execute(&mut *$conn)
            .await?
            .rows_affected();
            if n != $rows.reversed.len() as u64 {
                return Err(changed_meanwhile($rows.reversed.len(), n));
            }
        }
        for audit in $rows.audits {
            AuditConn::append(&mut *$conn, audit).await?;
        }
    }};
}

fn changed_meanwhile(expected: usize, got: u64) -> cva_ledger::LedgerError {
    cva_ledger::LedgerError::Refused(format!(
        "{} of {expected} lines changed meanwhile (another sender resolved them); nothing applied",
        expected as u64 - got.min(expected as u64)
    ))
}

async fn update_pg(
    conn: &mut sqlx::PgConnection,
    rows: &OutcomeRows<'_>,
) -> cva_ledger::Result<()> {
    if !rows.changes.is_empty() {
        update_pg_changes(conn, rows).await?;
    }
    reverse_lines!(rows, conn, PG_IN_IDS);
    Ok(())
}

async fn update_pg_changes(
    conn: &mut sqlx::PgConnection,
    rows: &OutcomeRows<'_>,
) -> cva_ledger::Result<()> {
    let ids: Vec<i64> = rows.changes.iter().map(|c| c.id).collect();
    let statuses: Vec<&str> = rows.changes.iter().map(|c| c.status).collect();
    let txs: Vec<Option<String>> = rows.changes.iter().map(|c| c.provider_tx.clone()).collect();
    let codes: Vec<Option<String>> = rows
        .changes
        .iter()
        .map(|c| c.failure_code.clone())
        .collect();
    let reasons: Vec<Option<String>> = rows
        .changes
        .iter()
        .map(|c| c.failure_reason.clone())
        .collect();
    let n = sqlx::query(
        "UPDATE batch_lines l SET status = v.status, \
         provider_transaction_id = COALESCE(v.tx, l.provider_transaction_id), \
         failure_code = v.code, failure_reason = v.reason, resolved_by = $6, resolved_at = $7 \
         FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[]) \
           AS v(id, status, tx, code, reason) \
         WHERE l.id = v.id AND (l.status = 'in_flight' OR (l.status = 'unknown' AND v.status <> 'unknown'))",
    )
    .bind(&ids)
    .bind(&statuses)
    .bind(&txs)
    .bind(&codes)
    .bind(&reasons)
    .bind(rows.source)
    .bind(rows.at)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if n != ids.len() as u64 {
        return Err(changed_meanwhile(ids.len(), n));
    }
    Ok(())
}

async fn update_sqlite(
    conn: &mut sqlx::SqliteConnection,
    rows: &OutcomeRows<'_>,
) -> cva_ledger::Result<()> {
    let mut n = 0;
    for c in rows.changes {
        n += sqlx::query(
            "UPDATE batch_lines SET status = $1, \
             provider_transaction_id = COALESCE($2, provider_transaction_id), \
             failure_code = $3, failure_reason = $4, resolved_by = $5, resolved_at = $6 \
             WHERE id = $7 AND (status = 'in_flight' OR (status = 'unknown' AND $1 <> 'unknown'))",
        )
        .bind(c.status)
        .bind(&c.provider_tx)
        .bind(&c.failure_code)
        .bind(&c.failure_reason)
        .bind(rows.source)
        .bind(rows.at)
        .bind(c.id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    }
    if n != rows.changes.len() as u64 {
        return Err(changed_meanwhile(rows.changes.len(), n));
    }
    reverse_lines!(rows, conn, SQLITE_IN_IDS);
    Ok(())
}

impl cva_ledger::store::TxHook for OutcomeRows<'_> {
    fn postgres<'a>(
        &'a self,
        conn: &'a mut sqlx::PgConnection,
        _posted: &'a [(usize, cva_ledger::entry::EntryId)],
    ) -> futures::future::BoxFuture<'a, cva_ledger::Result<()>> {
        Box::pin(update_pg(conn, self))
    }

    fn sqlite<'a>(
        &'a self,
        conn: &'a mut sqlx::SqliteConnection,
        _posted: &'a [(usize, cva_ledger::entry::EntryId)],
    ) -> futures::future::BoxFuture<'a, cva_ledger::Result<()>> {
        Box::pin(update_sqlite(conn, self))
    }
}

fn account(code: &str) -> Result<AccountCode> {
    AccountCode::parse(code).map_err(|e| RegistryError::Corrupt(e.to_string()))
}

fn ledger_err(e: cva_ledger::LedgerError) -> RegistryError {
    match e {
        cva_ledger::LedgerError::BatchRejected { source, .. } => RegistryError::Ledger(*source),
        other => RegistryError::Ledger(other),
    }
}

impl Batches {
    /// Applies outcomes to open lines of batch `b` (lines `in_flight` or `unknown`): posts the
    /// confirmation / failure entries, updates the lines, writes one audit event per chunk of
    /// 5,000 lines, then sets the batch's status from its lines. `source` says who told us
    /// (`provider`, `file`, `statement`). Outcomes for lines already resolved are counted and
    /// ignored; outcomes for lines of another batch are refused.
    pub async fn apply_outcomes(
        &self,
        b: &BatchView,
        outcomes: &[LineOutcome],
        source: &str,
        ctx: &AuditContext,
    ) -> Result<Applied> {
        let provider = self.provider_of(b)?;
        // Only the id range the outcomes cover (an attempt's lines are consecutive ids): a
        // batch settled attempt by attempt reads each open line once, not once per attempt.
        let low = outcomes.iter().map(|o| o.line).min().unwrap_or(0);
        let high = outcomes.iter().map(|o| o.line).max().unwrap_or(-1);
        let open: Vec<(i64, i64, i64, i64, String)> = read_pool!(self.registry.ledger(), |pool| {
            sqlx::query_as(
                "SELECT id, household_id, amount, fee, status FROM batch_lines \
                     WHERE batch_id = $1 AND status IN ('in_flight', 'unknown') \
                     AND id >= $2 AND id <= $3",
            )
            .bind(b.id)
            .bind(low)
            .bind(high)
            .fetch_all(pool)
            .await?
        });
        let open: LineStates = open
            .into_iter()
            .map(|(id, hh, amount, fee, status)| (id, (hh, amount, fee, status)))
            .collect();
        let mut applied = Applied::default();
        let (todo, resolved) = open_outcomes(outcomes, &open)?;
        applied.already_resolved += resolved;
        let date = now().date_naive();
        for chunk in todo.chunks(CHUNK) {
            let (entries, changes, counts) = plan_outcomes(b, provider, &open, chunk, date)?;
            let audit = outcomes_audit(ctx, b.id, source, &counts, chunk);
            let rows = OutcomeRows {
                changes: &changes,
                source,
                reversed: &[],
                at: now(),
                audits: std::slice::from_ref(&audit),
            };
            if entries.is_empty() {
                self.unknown_only(&rows).await?;
            } else {
                self.registry
                    .ledger()
                    .post_many_hooked(&entries, &rows)
                    .await
                    .map_err(ledger_err)?;
            }
            applied.completed += counts.completed;
            applied.failed += counts.failed;
            applied.unknown += counts.unknown;
        }
        self.settle_status(b.id, ctx).await?;
        Ok(applied)
    }

    /// Marks lines unknown (no entries to post) in one transaction with the audit event.
    async fn unknown_only(&self, rows: &OutcomeRows<'_>) -> Result<()> {
        let ledger = self.registry.ledger();
        if let Some(pool) = ledger.pg_pool() {
            let mut tx = pool.begin().await?;
            update_pg(&mut tx, rows).await?;
            tx.commit().await?;
        } else if let Some(pool) = ledger.sqlite_pool() {
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            update_sqlite(&mut tx, rows).await?;
            tx.commit().await?;
        }
        Ok(())
    }

    /// Sets a sent batch's status from its lines: `sending` while any line is in flight or
    /// unknown, else `completed`, `failed` or `partially_completed`.
    pub(crate) async fn settle_status(&self, id: i64, ctx: &AuditContext) -> Result<()> {
        self.settle_statuses(&[id], ctx).await
    }

    /// [`settle_status`](Self::settle_status) of several batches, in one transaction.
    async fn settle_statuses(&self, ids: &[i64], ctx: &AuditContext) -> Result<()> {
        let at = now();
        // One count for all the batches (a statement settles a hundred at once).
        let in_ids = if self.registry.ledger().pg_pool().is_some() {
            PG_IN_IDS
        } else {
            SQLITE_IN_IDS
        };
        let sql = format!(
            "SELECT batch_id, status, CAST(count(*) AS BIGINT) FROM batch_lines \
             WHERE batch_id {in_ids} GROUP BY batch_id, status"
        );
        let list = json_ids(ids);
        write_tx!(self.registry.ledger(), |tx| {
            let all: Vec<(i64, String, i64)> =
                sqlx::query_as(&sql).bind(&list).fetch_all(&mut *tx).await?;
            for &id in ids {
                let counts: Vec<(&str, i64)> = all
                    .iter()
                    .filter(|c| c.0 == id)
                    .map(|c| (c.1.as_str(), c.2))
                    .collect();
                let n = |s: &str| counts.iter().find(|c| c.0 == s).map_or(0, |c| c.1);
                let status = if n("in_flight") + n("unknown") + n("pending") > 0 {
                    "sending"
                } else if n("failed") == 0 {
                    "completed"
                } else if n("completed") == 0 {
                    "failed"
                } else {
                    "partially_completed"
                };
                let changed = sqlx::query(
                "UPDATE batches SET status = $1, status_changed_at = $2 WHERE id = $3 \
                 AND status IN ('sending', 'completed', 'partially_completed', 'failed') AND status <> $1",
            )
            .bind(status)
            .bind(at)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
                if changed == 1 {
                    let rec = AuditRecord::new(
                        ctx,
                        "batch.status",
                        "batch",
                        id.to_string(),
                        serde_json::json!({"status": status, "completed": n("completed"),
                        "failed": n("failed"), "unknown": n("unknown"), "in_flight": n("in_flight")}),
                    );
                    AuditConn::append(&mut *tx, &rec).await?;
                }
            }
        });
        Ok(())
    }

    /// What a statement settles, batch by batch (see [`Settlement`]), in **one** posting: every
    /// confirmation, failure and reversal entry of every batch, the lines' updates and one
    /// audit event per batch and kind in a single ledger transaction, then the batches'
    /// statuses in a second. The same entries, keys, line updates and events as
    /// [`apply_outcomes`](Self::apply_outcomes) batch by batch, then the reversals — a hundred
    /// batches settled by one statement cost two transactions instead of four hundred.
    /// [`record_reversal`](Self::record_reversal) is this with one line.
    ///
    /// Outcomes for lines no longer open are counted in `already_resolved` and skipped; a
    /// reversal is booked for a line `completed` now or confirmed by this settlement, others
    /// are skipped (the lines reversed are returned). A line changed by someone else between
    /// the read and the posting fails the whole settlement: nothing is applied, and running it
    /// again applies what is still open.
    pub async fn settle_many(
        &self,
        plan: &BTreeMap<i64, Settlement>,
        source: &str,
        ctx: &AuditContext,
    ) -> Result<Settled> {
        let at = now();
        let mut entries = Vec::new();
        let mut changes = Vec::new();
        let mut reversed = Vec::new();
        let mut audits = Vec::new();
        let mut applied = Applied::default();
        let mut touched = Vec::new();
        // Every line named, in one read (not one per batch).
        let ids: Vec<i64> = plan
            .values()
            .flat_map(|s| {
                s.outcomes
                    .iter()
                    .map(|o| o.line)
                    .chain(s.reversals.iter().copied())
            })
            .collect();
        let in_ids = if self.registry.ledger().pg_pool().is_some() {
            PG_IN_IDS
        } else {
            SQLITE_IN_IDS
        };
        let sql = format!(
            "SELECT id, batch_id, household_id, amount, fee, status FROM batch_lines \
             WHERE id {in_ids} AND status IN ('in_flight', 'unknown', 'completed')"
        );
        let list = json_ids(&ids);
        let rows: Vec<(i64, i64, i64, i64, i64, String)> =
            read_pool!(self.registry.ledger(), |pool| {
                sqlx::query_as(&sql).bind(&list).fetch_all(pool).await?
            });
        let mut by_batch: HashMap<i64, LineStates> = HashMap::new();
        for (id, batch, hh, amount, fee, status) in rows {
            by_batch
                .entry(batch)
                .or_default()
                .insert(id, (hh, amount, fee, status));
        }
        for (&batch, s) in plan {
            if s.outcomes.is_empty() && s.reversals.is_empty() {
                continue;
            }
            let b = self.batch(batch).await?;
            let provider = self.provider_of(&b)?;
            // Lines of another batch are not found here: skipped like lines no longer open.
            let state = by_batch.remove(&batch).unwrap_or_default();
            let (todo, resolved) = open_outcomes(&s.outcomes, &state)?;
            applied.already_resolved += resolved;
            let (e, c, counts) = plan_outcomes(&b, provider, &state, &todo, at.date_naive())?;
            let confirmed: HashSet<i64> = c
                .iter()
                .filter(|c| c.status == "completed")
                .map(|c| c.id)
                .collect();
            let mut wanted: Vec<i64> = s.reversals.clone();
            wanted.sort_unstable();
            wanted.dedup();
            let rev: Vec<(i64, i64, i64)> = wanted
                .into_iter()
                .filter_map(|line| {
                    let (hh, amount, _, status) = state.get(&line)?;
                    (status == "completed" || confirmed.contains(&line))
                        .then_some((line, *hh, *amount))
                })
                .collect();
            if !c.is_empty() {
                audits.push(outcomes_audit(ctx, batch, source, &counts, &todo));
            }
            if !rev.is_empty() {
                entries.extend(plan_reversals(&b, provider, &rev, at)?);
                audits.push(reversal_audit(ctx, batch, &rev));
                reversed.extend(rev.iter().map(|r| r.0));
            }
            if !c.is_empty() || !rev.is_empty() {
                touched.push(batch);
            }
            applied.completed += counts.completed;
            applied.failed += counts.failed;
            applied.unknown += counts.unknown;
            entries.extend(e);
            changes.extend(c);
        }
        if touched.is_empty() {
            return Ok(Settled {
                applied,
                reversed,
                posted: Vec::new(),
            });
        }
        let rows = OutcomeRows {
            changes: &changes,
            source,
            reversed: &reversed,
            at,
            audits: &audits,
        };
        let mut posted = Vec::new();
        if entries.is_empty() {
            self.unknown_only(&rows).await?;
        } else {
            let postings = self
                .registry
                .ledger()
                .post_many_hooked(&entries, &rows)
                .await
                .map_err(ledger_err)?;
            // One posting per entry, in order.
            for (entry, posting) in entries.iter().zip(&postings) {
                if matches!(posting, Posting::Posted(_)) {
                    posted.push(entry.idempotency_key.as_str().to_owned());
                }
            }
        }
        self.settle_statuses(&touched, ctx).await?;
        Ok(Settled {
            applied,
            reversed,
            posted,
        })
    }

    /// The provider took back a payment it had completed (a reversal seen in a status query or
    /// a statement): the money is back in the float and owed to the household again; the line
    /// becomes `failed` with code `reversed`, so the entitlement can be re-issued.
    pub async fn record_reversal(&self, line: i64, ctx: &AuditContext) -> Result<()> {
        let row: Option<(i64, String)> = read_pool!(self.registry.ledger(), |pool| {
            sqlx::query_as("SELECT batch_id, status FROM batch_lines WHERE id = $1")
                .bind(line)
                .fetch_optional(pool)
                .await?
        });
        let (batch, status) =
            row.ok_or_else(|| RegistryError::NotFound(format!("line {line} does not exist")))?;
        let conflict = |status: &str| {
            RegistryError::Conflict(format!(
                "line {line} is {status}; only a completed payment can be reversed"
            ))
        };
        if status != "completed" {
            return Err(conflict(&status));
        }
        let plan = BTreeMap::from([(
            batch,
            Settlement {
                outcomes: Vec::new(),
                reversals: vec![line],
            },
        )]);
        if self
            .settle_many(&plan, "provider", ctx)
            .await?
            .reversed
            .is_empty()
        {
            // Reversed (or otherwise settled) by someone else since the read above.
            return Err(conflict("no longer completed"));
        }
        Ok(())
    }

    pub(crate) fn provider_of(&self, b: &BatchView) -> Result<&Provider> {
        self.config.provider(&b.provider).ok_or_else(|| {
            RegistryError::invalid(
                "provider",
                format!(
                    "batch {} names provider `{}`, which is not configured",
                    b.id, b.provider
                ),
            )
        })
    }
}

/// The outcomes of `outcomes` to apply: for lines open in `state` (household, amount, fee,
/// status) and not told `unknown` again while unknown; and how many were not (already
/// resolved). Two outcomes for one line are refused.
fn open_outcomes<'a>(
    outcomes: &'a [LineOutcome],
    state: &LineStates,
) -> Result<(Vec<&'a LineOutcome>, usize)> {
    let mut seen = HashSet::new();
    let mut todo = Vec::new();
    let mut resolved = 0;
    for o in outcomes {
        if !seen.insert(o.line) {
            return Err(RegistryError::invalid(
                "outcomes",
                format!("line {} has two outcomes", o.line),
            ));
        }
        match state.get(&o.line) {
            Some((_, _, _, status))
                if (status == "in_flight" || status == "unknown")
                    && !(o.outcome == Outcome::Unknown && status == "unknown") =>
            {
                todo.push(o)
            }
            _ => resolved += 1,
        }
    }
    Ok((todo, resolved))
}

/// The entries and line changes of the outcomes of `chunk` (lines open in `open`: household,
/// amount, fee, status), and their counts.
fn plan_outcomes(
    b: &BatchView,
    provider: &Provider,
    open: &LineStates,
    chunk: &[&LineOutcome],
    date: chrono::NaiveDate,
) -> Result<(Vec<NewEntry>, Vec<LineChange>, Applied)> {
    let in_transit = account(&provider.in_transit_account())?;
    let float = account(&provider.float_account())?;
    let fees = account(&provider.fees_account())?;
    let mut entries = Vec::new();
    let mut changes = Vec::with_capacity(chunk.len());
    let mut counts = Applied::default();
    for o in chunk {
        let Some(&(hh, amount_minor, fee_minor, _)) = open.get(&o.line) else {
            continue;
        };
        let amount = Amount::from_minor(amount_minor, provider.currency);
        let mut meta = serde_json::Map::new();
        meta.insert("batch".into(), b.id.into());
        meta.insert("line".into(), o.line.into());
        meta.insert("provider".into(), provider.name.clone().into());
        match &o.outcome {
            Outcome::Completed { provider_tx } => {
                counts.completed += 1;
                meta.insert("provider_transaction".into(), provider_tx.clone().into());
                let mut lines = vec![Line {
                    account: in_transit.clone(),
                    side: Side::Debit,
                    amount,
                }];
                if fee_minor > 0 {
                    lines.push(Line {
                        account: fees.clone(),
                        side: Side::Debit,
                        amount: Amount::from_minor(fee_minor, provider.currency),
                    });
                }
                let total = amount_minor
                    .checked_add(fee_minor)
                    .ok_or_else(|| RegistryError::Corrupt(format!("line {} overflows", o.line)))?;
                lines.push(Line {
                    account: float.clone(),
                    side: Side::Credit,
                    amount: Amount::from_minor(total, provider.currency),
                });
                entries.push(entry(
                    &format!("pay:{}:confirm", o.line),
                    format!("Payment confirmed by {} (batch {})", provider.name, b.id),
                    date,
                    meta,
                    lines,
                )?);
                changes.push(LineChange {
                    id: o.line,
                    status: "completed",
                    provider_tx: Some(provider_tx.clone()),
                    failure_code: None,
                    failure_reason: None,
                });
            }
            Outcome::Failed { code, reason } => {
                counts.failed += 1;
                meta.insert("failure".into(), code.clone().into());
                let household = account(&cva_registry::entitlements::household_account(
                    &b.programme,
                    hh,
                ))?;
                entries.push(entry(
                    &format!("pay:{}:fail", o.line),
                    format!("Payment failed at {} (batch {})", provider.name, b.id),
                    date,
                    meta,
                    vec![
                        Line {
                            account: in_transit.clone(),
                            side: Side::Debit,
                            amount,
                        },
                        Line {
                            account: household,
                            side: Side::Credit,
                            amount,
                        },
                    ],
                )?);
                changes.push(LineChange {
                    id: o.line,
                    status: "failed",
                    provider_tx: None,
                    failure_code: Some(code.clone()),
                    failure_reason: Some(reason.chars().take(200).collect()),
                });
            }
            Outcome::Unknown => {
                counts.unknown += 1;
                changes.push(LineChange {
                    id: o.line,
                    status: "unknown",
                    provider_tx: None,
                    failure_code: None,
                    failure_reason: None,
                });
            }
        }
    }
    Ok((entries, changes, counts))
}

/// The audit event of a posting of outcomes of batch `batch`.
fn outcomes_audit(
    ctx: &AuditContext,
    batch: i64,
    source: &str,
    counts: &Applied,
    chunk: &[&LineOutcome],
) -> AuditRecord {
    AuditRecord::new(
        ctx,
        "batch.outcomes",
        "batch",
        batch.to_string(),
        serde_json::json!({
            "source": source, "completed": counts.completed, "failed": counts.failed,
            "unknown": counts.unknown,
            "lines": chunk.iter().map(|o| (o.line, &o.outcome)).collect::<Vec<_>>(),
        }),
    )
}

/// The reversal entries (`pay:LINE:reversal`, float → household) of `rows` (line,
/// household, amount) of batch `b`.
fn plan_reversals(
    b: &BatchView,
    provider: &Provider,
    rows: &[(i64, i64, i64)],
    at: DateTime<Utc>,
) -> Result<Vec<NewEntry>> {
    let float = account(&provider.float_account())?;
    let mut entries = Vec::with_capacity(rows.len());
    for &(line, hh, amount_minor) in rows {
        let amount = Amount::from_minor(amount_minor, provider.currency);
        let mut meta = serde_json::Map::new();
        meta.insert("batch".into(), b.id.into());
        meta.insert("line".into(), line.into());
        meta.insert("provider".into(), provider.name.clone().into());
        entries.push(entry(
            &format!("pay:{line}:reversal"),
            format!("Payment reversed by {} (batch {})", provider.name, b.id),
            at.date_naive(),
            meta,
            vec![
                Line {
                    account: float.clone(),
                    side: Side::Debit,
                    amount,
                },
                Line {
                    account: account(&cva_registry::entitlements::household_account(
                        &b.programme,
                        hh,
                    ))?,
                    side: Side::Credit,
                    amount,
                },
            ],
        )?);
    }
    Ok(entries)
}

/// The audit event of the reversals `rows` (line, household, amount) of batch `batch`.
fn reversal_audit(ctx: &AuditContext, batch: i64, rows: &[(i64, i64, i64)]) -> AuditRecord {
    AuditRecord::new(
        ctx,
        "batch.reversal",
        "batch",
        batch.to_string(),
        serde_json::json!({
            "lines": rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            "amount": rows.iter().map(|r| r.2).sum::<i64>(),
        }),
    )
}

fn entry(
    key: &str,
    memo: String,
    date: chrono::NaiveDate,
    meta: serde_json::Map<String, serde_json::Value>,
    lines: Vec<Line>,
) -> Result<NewEntry> {
    let key = IdempotencyKey::parse(key).map_err(cva_ledger::LedgerError::from)?;
    Ok(NewEntry::new(key, memo, date, meta, lines).map_err(cva_ledger::LedgerError::from)?)
}
