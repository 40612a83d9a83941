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

use chrono::{DateTime, Utc};
use cva_ledger::account::{AccountCode, Side};
use cva_ledger::audit::{AuditConn, AuditContext, AuditRecord};
use cva_ledger::entry::{IdempotencyKey, Line, NewEntry};
use cva_ledger::money::Amount;
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

/// One line's row change.
struct LineChange {
    id: i64,
    status: &'static str,
    provider_tx: Option<String>,
    failure_code: Option<String>,
    failure_reason: Option<String>,
}

struct OutcomeRows<'a> {
    changes: &'a [LineChange],
    source: &'a str,
    at: DateTime<Utc>,
    audit: &'a AuditRecord,
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
    AuditConn::append(&mut *conn, rows.audit).await?;
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
    AuditConn::append(&mut *conn, rows.audit).await?;
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
        let open: std::collections::HashMap<i64, (i64, i64, i64, String)> = open
            .into_iter()
            .map(|(id, hh, amount, fee, status)| (id, (hh, amount, fee, status)))
            .collect();
        let mut applied = Applied::default();
        let mut todo = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for o in outcomes {
            if !seen.insert(o.line) {
                return Err(RegistryError::invalid(
                    "outcomes",
                    format!("line {} has two outcomes", o.line),
                ));
            }
            match open.get(&o.line) {
                Some((_, _, _, status))
                    if !(o.outcome == Outcome::Unknown && status == "unknown") =>
                {
                    todo.push(o)
                }
                _ => applied.already_resolved += 1,
            }
        }
        let in_transit = account(&provider.in_transit_account())?;
        let float = account(&provider.float_account())?;
        let fees = account(&provider.fees_account())?;
        let date = now().date_naive();
        for chunk in todo.chunks(CHUNK) {
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
                        let total = amount_minor.checked_add(fee_minor).ok_or_else(|| {
                            RegistryError::Corrupt(format!("line {} overflows", o.line))
                        })?;
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
            let audit = AuditRecord::new(
                ctx,
                "batch.outcomes",
                "batch",
                b.id.to_string(),
                serde_json::json!({
                    "source": source, "completed": counts.completed, "failed": counts.failed,
                    "unknown": counts.unknown,
                    "lines": chunk.iter().map(|o| (o.line, &o.outcome)).collect::<Vec<_>>(),
                }),
            );
            let rows = OutcomeRows {
                changes: &changes,
                source,
                at: now(),
                audit: &audit,
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
        let at = now();
        write_tx!(self.registry.ledger(), |tx| {
            let counts: Vec<(String, i64)> = sqlx::query_as(
                "SELECT status, CAST(count(*) AS BIGINT) FROM batch_lines WHERE batch_id = $1 GROUP BY status",
            )
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
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
        });
        Ok(())
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
        if self.record_reversals(batch, &[line], ctx).await?.is_empty() {
            // Reversed (or otherwise settled) by someone else since the read above.
            return Err(conflict("no longer completed"));
        }
        Ok(())
    }

    /// [`record_reversal`](Self::record_reversal) for many lines of batch `batch` at once
    /// (a statement's reversals): one posting transaction for all of them (their entries
    /// `pay:LINE:reversal`, the lines' updates, one audit event), then the batch's status
    /// once. Lines of the list that are no longer `completed` (reversed meanwhile, or not
    /// this batch's) are skipped; returns the lines reversed.
    pub async fn record_reversals(
        &self,
        batch: i64,
        lines: &[i64],
        ctx: &AuditContext,
    ) -> Result<Vec<i64>> {
        if lines.is_empty() {
            return Ok(Vec::new());
        }
        let low = lines.iter().copied().min().unwrap_or(0);
        let high = lines.iter().copied().max().unwrap_or(-1);
        let wanted: std::collections::HashSet<i64> = lines.iter().copied().collect();
        let rows: Vec<(i64, i64, i64)> = read_pool!(self.registry.ledger(), |pool| {
            sqlx::query_as(
                "SELECT id, household_id, amount FROM batch_lines WHERE batch_id = $1 \
                 AND status = 'completed' AND id >= $2 AND id <= $3 ORDER BY id",
            )
            .bind(batch)
            .bind(low)
            .bind(high)
            .fetch_all(pool)
            .await?
        });
        let rows: Vec<(i64, i64, i64)> =
            rows.into_iter().filter(|r| wanted.contains(&r.0)).collect();
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let b = self.batch(batch).await?;
        let provider = self.provider_of(&b)?;
        let at = now();
        let mut entries = Vec::with_capacity(rows.len());
        for &(line, hh, amount_minor) in &rows {
            let amount = Amount::from_minor(amount_minor, provider.currency);
            let mut meta = serde_json::Map::new();
            meta.insert("batch".into(), batch.into());
            meta.insert("line".into(), line.into());
            meta.insert("provider".into(), provider.name.clone().into());
            entries.push(entry(
                &format!("pay:{line}:reversal"),
                format!("Payment reversed by {} (batch {batch})", provider.name),
                at.date_naive(),
                meta,
                vec![
                    Line {
                        account: account(&provider.float_account())?,
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
        let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let audit = AuditRecord::new(
            ctx,
            "batch.reversal",
            "batch",
            batch.to_string(),
            serde_json::json!({
                "lines": ids,
                "amount": rows.iter().map(|r| r.2).sum::<i64>(),
            }),
        );
        let hook = ReversalRows {
            lines: &ids,
            at,
            audit: &audit,
        };
        self.registry
            .ledger()
            .post_many_hooked(&entries, &hook)
            .await
            .map_err(ledger_err)?;
        self.settle_status(batch, ctx).await?;
        Ok(ids)
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

/// The lines of a bulk reversal, updated in the posting's transaction.
struct ReversalRows<'a> {
    lines: &'a [i64],
    at: DateTime<Utc>,
    audit: &'a AuditRecord,
}

macro_rules! reversal_rows {
    ($self:ident, $conn:ident) => {{
        let mut n = 0u64;
        for line in $self.lines {
            n += sqlx::query(
                "UPDATE batch_lines SET status = 'failed', failure_code = 'reversed', \
                 failure_reason = 'reversed by the provider', resolved_at = $1 \
                 WHERE id = $2 AND status = 'completed'",
            )
            .bind($self.at)
            .bind(*line)
            .execute(&mut *$conn)
            .await?
            .rows_affected();
        }
        if n != $self.lines.len() as u64 {
            return Err(changed_meanwhile($self.lines.len(), n));
        }
        AuditConn::append(&mut *$conn, $self.audit).await?;
        Ok(())
    }};
}

impl cva_ledger::store::TxHook for ReversalRows<'_> {
    fn postgres<'a>(
        &'a self,
        conn: &'a mut sqlx::PgConnection,
        _posted: &'a [(usize, cva_ledger::entry::EntryId)],
    ) -> futures::future::BoxFuture<'a, cva_ledger::Result<()>> {
        Box::pin(async move { reversal_rows!(self, conn) })
    }

    fn sqlite<'a>(
        &'a self,
        conn: &'a mut sqlx::SqliteConnection,
        _posted: &'a [(usize, cva_ledger::entry::EntryId)],
    ) -> futures::future::BoxFuture<'a, cva_ledger::Result<()>> {
        Box::pin(async move { reversal_rows!(self, conn) })
    }
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
