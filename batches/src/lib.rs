//! Payment batches: due entitlements grouped per provider into batches, and the sign-off
//! lifecycle before any money moves.
//!
//! Start with [`Batches::new`] on a [`Registry`] and a validated [`PaymentsConfig`]. A batch is
//! built by [`Batches::create`] from granted entitlements that are not already in a live
//! payment, split by provider (the household's mobile operator) and by a maximum size. Then:
//! `draft` → [`submit`](Batches::submit) (by the preparer; the programme's amount band fixes how
//! many people must approve, authorise and release) → [`sign`](Batches::sign) with
//! [`Step::Approve`], [`Step::Authorise`] and [`Step::Release`] (each by as many distinct
//! people as the band asks; nobody signs twice, nobody signs what they prepared) → `released`.
//! The last release sign-off moves each line's amount from the household's entitlement account
//! to the provider's in-transit account, in one transaction with the sign-off, and is refused
//! when the provider's float cannot cover the batch (total and fees) on top of what is already
//! released and unconfirmed. A batch can be [`cancel`](Batches::cancel)led before release,
//! which frees its entitlements. Sending (the provider adapters), confirmation and failure
//! postings come next.
//!
//! The database enforces what matters whatever the code does: at most one live payment per
//! entitlement (a unique index over live lines), one sign-off per person per batch, no sign-off
//! by the preparer. Every change writes its audit event in the same transaction. Errors are the
//! registry's ([`RegistryError`]): they name the batch, step and person's role, never
//! personal data.

pub mod file;
pub mod float;
pub mod mmapi;
pub mod outcomes;
pub mod provider;
pub mod send;
#[cfg(feature = "testing")]
pub mod testing;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use cva_ledger::audit::{AuditConn, AuditContext, AuditRecord};
use cva_registry::{read_pool, write_tx, Registry, RegistryError};
use serde::Serialize;

pub use file::FileExport;
pub use float::FloatView;
pub use outcomes::{Applied, LineOutcome, Outcome, Settled, Settlement};
pub use provider::{PaymentsConfig, Provider};
pub use send::{AttemptView, SendOptions, SendReport};

pub type Result<T> = std::result::Result<T, RegistryError>;

/// The batch services. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Batches {
    registry: Registry,
    config: Arc<PaymentsConfig>,
}

/// Which entitlements a batch takes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Filters {
    pub programme: String,
    pub modality: Option<String>,
    pub cycle: Option<String>,
    /// Region p-code of the household.
    pub region: Option<String>,
    /// Only this provider's households.
    pub provider: Option<String>,
    /// Most lines per batch (default 10,000, at most 100,000).
    pub max_lines: Option<usize>,
}

/// A sign-off step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Approve,
    Authorise,
    Release,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Approve => "approve",
            Step::Authorise => "authorise",
            Step::Release => "release",
        }
    }
    /// The status a batch must be in for this step, and the one it reaches when the step has
    /// all its sign-offs.
    fn statuses(self) -> (&'static str, &'static str) {
        match self {
            Step::Approve => ("submitted", "approved"),
            Step::Authorise => ("approved", "authorised"),
            Step::Release => ("authorised", "released"),
        }
    }
}

/// What [`Batches::create`] did.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreationReport {
    pub batches: Vec<BatchView>,
    /// Due entitlements left out because no configured provider serves the household's
    /// operator (or the household has no phone).
    pub no_provider: usize,
    /// Left out because the amount is outside the provider's per-transaction limits.
    pub outside_limits: usize,
}

/// A payment batch. Amounts are in minor units of `currency`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchView {
    pub id: i64,
    pub programme: String,
    pub provider: String,
    pub currency: String,
    pub status: String,
    pub line_count: i64,
    /// Minor units.
    pub total: i64,
    pub fees: i64,
    pub approvals_required: Option<i32>,
    pub authorisations_required: Option<i32>,
    pub releases_required: Option<i32>,
    pub prepared_by: String,
    /// The batch whose failed lines this one re-issues.
    pub follow_up_of: Option<i64>,
    /// (step, person) in the order they signed.
    pub signoffs: Vec<Signoff>,
    pub created_at: DateTime<Utc>,
}

/// One sign-off of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Signoff {
    /// approve, authorise or release.
    pub step: String,
    /// Who signed (the username).
    pub by: String,
}

/// One line of a batch: no personal data, the household is its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LineView {
    pub id: i64,
    pub entitlement: i64,
    pub household: i64,
    /// Minor units.
    pub amount: i64,
    pub fee: i64,
    /// pending, in_flight, completed, failed, unknown, cancelled.
    pub status: String,
    pub provider_transaction_id: Option<String>,
    pub failure_code: Option<String>,
    /// Who resolved the line: provider, file or statement.
    pub resolved_by: Option<String>,
}

/// Most lines in one batch.
pub const MAX_LINES: usize = 100_000;
/// Lines per batch when the filters do not say.
pub const DEFAULT_MAX_LINES: usize = 10_000;

pub(crate) fn now() -> DateTime<Utc> {
    cva_ledger::store::now_micros()
}

impl Batches {
    pub fn new(registry: Registry, config: PaymentsConfig) -> Batches {
        Batches {
            registry,
            config: Arc::new(config),
        }
    }

    /// The registry (and through it the ledger) the batches live in.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn config(&self) -> &PaymentsConfig {
        &self.config
    }

    /// Opens each provider's float, in-transit and fee accounts (idempotent).
    pub async fn open_provider_accounts(&self, ctx: &AuditContext) -> Result<()> {
        use cva_ledger::account::{AccountCode, AccountSpec, AccountType, BalanceRule};
        for p in &self.config.providers {
            for (code, ty, rule) in [
                (
                    p.float_account(),
                    AccountType::Asset,
                    BalanceRule::MustNotGoNegative,
                ),
                (
                    p.in_transit_account(),
                    AccountType::Liability,
                    BalanceRule::MustNotGoNegative,
                ),
                (
                    p.fees_account(),
                    AccountType::Expense,
                    BalanceRule::MayOverdraw,
                ),
            ] {
                let code =
                    AccountCode::parse(&code).map_err(|e| RegistryError::Corrupt(e.to_string()))?;
                let spec = AccountSpec::new(code, ty, p.currency, rule)
                    .map_err(|e| RegistryError::Corrupt(e.to_string()))?;
                self.registry
                    .ledger()
                    .open_account_audited(spec, ctx)
                    .await?;
            }
        }
        Ok(())
    }

    /// Builds draft batches from the due entitlements matching `filters`, one or more per
    /// provider. Nothing is created when nothing is due.
    pub async fn create(&self, filters: &Filters, ctx: &AuditContext) -> Result<CreationReport> {
        let programme = self.registry.programme(&filters.programme).await?;
        let max = filters.max_lines.unwrap_or(DEFAULT_MAX_LINES);
        if max == 0 || max > MAX_LINES {
            return Err(RegistryError::invalid(
                "max_lines",
                format!("give 1 to {MAX_LINES}"),
            ));
        }
        if let Some(p) = &filters.provider {
            if self.config.provider(p).is_none() {
                return Err(RegistryError::invalid(
                    "provider",
                    format!("no provider `{p}` is configured"),
                ));
            }
        }
        // Due: granted, household verified, not in a live payment line.
        let rows: Vec<(i64, i64, i64, Option<String>)> =
            read_pool!(self.registry.ledger(), |pool| {
                sqlx::query_as(
                    "SELECT e.id, e.household_id, e.amount, h.operator FROM entitlements e \
                 JOIN households h ON h.id = e.household_id \
                 WHERE e.programme_id = $1 AND e.status = 'granted' AND h.status = 'verified' \
                 AND ($2 IS NULL OR e.modality = $2) AND ($3 IS NULL OR e.cycle = $3) \
                 AND ($4 IS NULL OR h.region = $4) \
                 AND NOT EXISTS (SELECT 1 FROM batch_lines l WHERE l.entitlement_id = e.id \
                   AND l.status IN ('pending', 'in_flight', 'completed', 'unknown')) \
                 ORDER BY e.id",
                )
                .bind(programme.id)
                .bind(filters.modality.as_deref())
                .bind(filters.cycle.as_deref())
                .bind(filters.region.as_deref())
                .fetch_all(pool)
                .await?
            });
        let mut report = CreationReport {
            batches: Vec::new(),
            no_provider: 0,
            outside_limits: 0,
        };
        // provider → (entitlement, household, amount, fee)
        let mut by_provider: BTreeMap<&str, Vec<(i64, i64, i64, i64)>> = BTreeMap::new();
        for (ent, hh, amount, operator) in rows {
            let Some(p) = operator
                .as_deref()
                .and_then(|o| self.config.provider_for_operator(o))
            else {
                report.no_provider += 1;
                continue;
            };
            if filters.provider.as_deref().is_some_and(|f| f != p.name) {
                continue;
            }
            if p.currency != programme.currency {
                report.no_provider += 1;
                continue;
            }
            if amount < p.min_minor || amount > p.max_minor {
                report.outside_limits += 1;
                continue;
            }
            let fee = p.fee_minor(amount).ok_or_else(|| {
                RegistryError::invalid("fees", format!("provider `{}`: fee overflows", p.name))
            })?;
            by_provider
                .entry(p.name.as_str())
                .or_default()
                .push((ent, hh, amount, fee));
        }
        let filters_json = serde_json::to_string(filters).unwrap_or_default();
        let ids = self
            .insert_batches(&programme, &by_provider, max, &filters_json, None, ctx)
            .await?;
        for id in ids {
            report.batches.push(self.batch(id).await?);
        }
        Ok(report)
    }

    /// Writes draft batches (chunks of at most `max` lines per provider) in one transaction.
    async fn insert_batches(
        &self,
        programme: &cva_registry::programmes::Programme,
        by_provider: &BTreeMap<&str, Vec<(i64, i64, i64, i64)>>,
        max: usize,
        filters_json: &str,
        follow_up_of: Option<i64>,
        ctx: &AuditContext,
    ) -> Result<Vec<i64>> {
        let is_pg = self.registry.ledger().pg_pool().is_some();
        let at = now();
        let mut ids = Vec::new();
        let action = if follow_up_of.is_some() {
            "batch.reissue"
        } else {
            "batch.create"
        };
        write_tx!(self.registry.ledger(), |tx| {
            for (provider, lines) in by_provider {
                for chunk in lines.chunks(max) {
                    let total = chunk
                        .iter()
                        .try_fold(0i64, |a, l| a.checked_add(l.2))
                        .ok_or_else(|| RegistryError::invalid("batch", "total too large"))?;
                    let fees = chunk
                        .iter()
                        .try_fold(0i64, |a, l| a.checked_add(l.3))
                        .ok_or_else(|| RegistryError::invalid("batch", "fees too large"))?;
                    let id: i64 = sqlx::query_scalar(
                        "INSERT INTO batches (programme_id, provider, currency, line_count, total, fees, \
                         filters, prepared_by, created_at, status_changed_at, follow_up_of) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10) RETURNING id",
                    )
                    .bind(programme.id)
                    .bind(*provider)
                    .bind(programme.currency.code())
                    .bind(chunk.len() as i64)
                    .bind(total)
                    .bind(fees)
                    .bind(filters_json)
                    .bind(&ctx.actor)
                    .bind(at)
                    .bind(follow_up_of)
                    .fetch_one(&mut *tx)
                    .await?;
                    // Five parameters a row: 1,000 rows a statement stays under SQLite's limit.
                    for rows in chunk.chunks(1000) {
                        let mut sql = String::from(
                            "INSERT INTO batch_lines (batch_id, entitlement_id, household_id, amount, fee) VALUES ",
                        );
                        sql.push_str(&cva_registry::values_list(rows.len(), 5, is_pg));
                        let mut q = sqlx::query(&sql);
                        for l in rows {
                            q = q.bind(id).bind(l.0).bind(l.1).bind(l.2).bind(l.3);
                        }
                        q.execute(&mut *tx)
                            .await
                            .map_err(|e| live_conflict(e, id))?;
                    }
                    let rec = AuditRecord::new(
                        ctx,
                        action,
                        "batch",
                        id.to_string(),
                        serde_json::json!({
                            "programme": programme.code.as_str(), "provider": provider,
                            "lines": chunk.len(), "total": total, "fees": fees,
                            "follow_up_of": follow_up_of,
                            "entitlements": chunk.iter().map(|l| l.0).collect::<Vec<_>>(),
                        }),
                    );
                    AuditConn::append(&mut *tx, &rec).await?;
                    ids.push(id);
                }
            }
        });
        Ok(ids)
    }

    /// One batch with its sign-offs.
    pub async fn batch(&self, id: i64) -> Result<BatchView> {
        let sql = format!("SELECT {BATCH_COLUMNS} FROM {BATCH_FROM} WHERE b.id = $1");
        let (row, signoffs): (Option<BatchRow>, Vec<(i64, String, String)>) = read_pool!(
            self.registry.ledger(),
            |pool| {
                let row = sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?;
                let signoffs = sqlx::query_as(
                    "SELECT batch_id, step, actor FROM batch_signoffs WHERE batch_id = $1 ORDER BY id",
                )
                .bind(id)
                .fetch_all(pool)
                .await?;
                (row, signoffs)
            }
        );
        let r = row.ok_or_else(|| RegistryError::NotFound(format!("batch {id} does not exist")))?;
        Ok(batch_view(r, &signoffs))
    }

    /// Submits a draft for sign-off (the preparer only); fixes the sign-offs its total needs.
    pub async fn submit(&self, id: i64, ctx: &AuditContext) -> Result<BatchView> {
        let b = self.batch(id).await?;
        if b.status != "draft" {
            return Err(RegistryError::Conflict(format!(
                "batch {id} is {}; only a draft can be submitted",
                b.status
            )));
        }
        if b.prepared_by != ctx.actor {
            return Err(RegistryError::NotAllowed(format!(
                "batch {id} is submitted by the person who prepared it"
            )));
        }
        let exponent = cva_ledger::money::Currency::parse(&b.currency)
            .map_err(|e| RegistryError::Corrupt(e.to_string()))?
            .exponent();
        let band = self.config.band_for(&b.programme, b.total, exponent);
        let at = now();
        write_tx!(self.registry.ledger(), |tx| {
            let n = sqlx::query(
                "UPDATE batches SET status = 'submitted', approvals_required = $1, \
                 authorisations_required = $2, releases_required = $3, status_changed_at = $4 \
                 WHERE id = $5 AND status = 'draft'",
            )
            .bind(i32::from(band.approvals))
            .bind(i32::from(band.authorisations))
            .bind(i32::from(band.releases))
            .bind(at)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n != 1 {
                return Err(RegistryError::Conflict(format!(
                    "batch {id} changed meanwhile"
                )));
            }
            let rec = AuditRecord::new(
                ctx,
                "batch.submit",
                "batch",
                id.to_string(),
                serde_json::json!({"approvals": band.approvals, "authorisations": band.authorisations, "releases": band.releases}),
            );
            AuditConn::append(&mut *tx, &rec).await?;
        });
        self.batch(id).await
    }

    /// Signs one step (approve or authorise). Refused for the preparer, for anyone who has
    /// already signed this batch, and out of order. The batch moves on when the step has as
    /// many sign-offs as its band requires.
    pub async fn sign(&self, id: i64, step: Step, ctx: &AuditContext) -> Result<BatchView> {
        let b = self.batch(id).await?;
        let (from, to) = step.statuses();
        if b.status != from {
            return Err(RegistryError::Conflict(format!(
                "batch {id} is {}; {} needs it {from}",
                b.status,
                step.as_str()
            )));
        }
        if b.prepared_by == ctx.actor {
            return Err(RegistryError::SamePerson(format!(
                "batch {id} was prepared by you; another person must {}",
                step.as_str()
            )));
        }
        if b.signoffs.iter().any(|s| s.by == ctx.actor) {
            return Err(RegistryError::SamePerson(format!(
                "you have already signed batch {id}; another person must {}",
                step.as_str()
            )));
        }
        let required = match step {
            Step::Approve => b.approvals_required,
            Step::Authorise => b.authorisations_required,
            Step::Release => b.releases_required,
        }
        .ok_or_else(|| RegistryError::Corrupt(format!("batch {id} has no sign-off counts")))?;
        let at = now();
        let signed = b
            .signoffs
            .iter()
            .filter(|s| s.step == step.as_str())
            .count() as i64;
        if step == Step::Release && signed + 1 >= i64::from(required) {
            return self.release(&b, signed + 1, required, ctx).await;
        }
        write_tx!(self.registry.ledger(), |tx| {
            sqlx::query(
                "INSERT INTO batch_signoffs (batch_id, step, actor, at) VALUES ($1, $2, $3, $4)",
            )
            .bind(id)
            .bind(step.as_str())
            .bind(&ctx.actor)
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(signoff_refusal)?;
            let done: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM batch_signoffs WHERE batch_id = $1 AND step = $2",
            )
            .bind(id)
            .bind(step.as_str())
            .fetch_one(&mut *tx)
            .await?;
            if done >= i64::from(required) {
                let n = sqlx::query(
                    "UPDATE batches SET status = $1, status_changed_at = $2 WHERE id = $3 AND status = $4",
                )
                .bind(to)
                .bind(at)
                .bind(id)
                .bind(from)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n != 1 {
                    return Err(RegistryError::Conflict(format!(
                        "batch {id} changed meanwhile"
                    )));
                }
            }
            let rec = AuditRecord::new(
                ctx,
                &format!("batch.{}", step.as_str()),
                "batch",
                id.to_string(),
                serde_json::json!({"signed": done, "required": required}),
            );
            AuditConn::append(&mut *tx, &rec).await?;
        });
        self.batch(id).await
    }

    /// The last release sign-off: moves each line's amount from the household's entitlement
    /// account to the provider's in-transit account, in the same transaction as the sign-off,
    /// the status and the audit event. Refused when the provider's float cannot cover this
    /// batch on top of what is already released and unconfirmed (amounts and fees).
    async fn release(
        &self,
        b: &BatchView,
        signed: i64,
        required: i32,
        ctx: &AuditContext,
    ) -> Result<BatchView> {
        use cva_ledger::account::{AccountCode, Side};
        use cva_ledger::entry::{IdempotencyKey, Line, NewEntry};
        let provider = self.config.provider(&b.provider).ok_or_else(|| {
            RegistryError::invalid(
                "provider",
                format!(
                    "batch {} names provider `{}`, which is not configured",
                    b.id, b.provider
                ),
            )
        })?;
        let lines: Vec<(i64, i64, i64, i64)> = read_pool!(self.registry.ledger(), |pool| {
            sqlx::query_as(
                "SELECT id, entitlement_id, household_id, amount FROM batch_lines \
                 WHERE batch_id = $1 AND status = 'pending' ORDER BY id",
            )
            .bind(b.id)
            .fetch_all(pool)
            .await?
        });
        let corrupt = |e: String| RegistryError::Corrupt(e);
        let in_transit = AccountCode::parse(&provider.in_transit_account())
            .map_err(|e| corrupt(e.to_string()))?;
        let date = now().date_naive();
        let mut entries = Vec::with_capacity(lines.len());
        for &(line, ent, hh, amount) in &lines {
            let household = AccountCode::parse(&cva_registry::entitlements::household_account(
                &b.programme,
                hh,
            ))
            .map_err(|e| corrupt(e.to_string()))?;
            let amount = cva_ledger::money::Amount::from_minor(amount, provider.currency);
            let mut metadata = serde_json::Map::new();
            metadata.insert("batch".into(), b.id.into());
            metadata.insert("line".into(), line.into());
            metadata.insert("entitlement".into(), ent.into());
            metadata.insert("provider".into(), provider.name.clone().into());
            let key = IdempotencyKey::parse(&format!("pay:{line}:release"))
                .map_err(cva_ledger::LedgerError::from)?;
            entries.push(
                NewEntry::new(
                    key,
                    format!("Payment released to {} (batch {})", provider.name, b.id),
                    date,
                    metadata,
                    vec![
                        Line {
                            account: household,
                            side: Side::Debit,
                            amount,
                        },
                        Line {
                            account: in_transit.clone(),
                            side: Side::Credit,
                            amount,
                        },
                    ],
                )
                .map_err(cva_ledger::LedgerError::from)?,
            );
        }
        let audit = AuditRecord::new(
            ctx,
            "batch.release",
            "batch",
            b.id.to_string(),
            serde_json::json!({"signed": signed, "required": required, "lines": lines.len(),
                               "total": b.total, "fees": b.fees}),
        );
        let hook = ReleaseRows {
            batch: b.id,
            fees: b.fees,
            provider: &provider.name,
            float: provider.float_account(),
            in_transit: provider.in_transit_account(),
            actor: &ctx.actor,
            at: now(),
            audit: &audit,
        };
        self.registry
            .ledger()
            .post_many_hooked(&entries, &hook)
            .await
            .map_err(|e| match e {
                cva_ledger::LedgerError::BatchRejected { source, .. } => {
                    RegistryError::Ledger(*source)
                }
                other => RegistryError::Ledger(other),
            })?;
        self.batch(b.id).await
    }

    /// The lines of a batch (no personal data: the household is its id).
    pub async fn lines(&self, id: i64) -> Result<Vec<LineView>> {
        self.lines_page(id, 0, i64::MAX).await
    }

    /// `limit` lines of a batch from the `offset`-th, in line order.
    pub async fn lines_page(&self, id: i64, offset: i64, limit: i64) -> Result<Vec<LineView>> {
        type Row = (
            i64,
            i64,
            i64,
            i64,
            i64,
            String,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let rows: Vec<Row> = read_pool!(self.registry.ledger(), |pool| {
            sqlx::query_as(
                "SELECT id, entitlement_id, household_id, amount, fee, status, provider_transaction_id, \
                 failure_code, resolved_by FROM batch_lines WHERE batch_id = $1 ORDER BY id \
                 LIMIT $2 OFFSET $3",
            )
            .bind(id)
            .bind(limit.max(0))
            .bind(offset.max(0))
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|r| LineView {
                id: r.0,
                entitlement: r.1,
                household: r.2,
                amount: r.3,
                fee: r.4,
                status: r.5,
                provider_transaction_id: r.6,
                failure_code: r.7,
                resolved_by: r.8,
            })
            .collect())
    }

    /// Batches, newest first, optionally of one programme and/or in one status (at most
    /// `limit`, 1 to 1,000; before id `before` when given: keyset paging).
    pub async fn list(
        &self,
        programme: Option<&str>,
        status: Option<&str>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<BatchView>> {
        let sql = format!(
            "SELECT {BATCH_COLUMNS} FROM {BATCH_FROM} \
             WHERE ($1 IS NULL OR p.code = $1) AND ($2 IS NULL OR b.status = $2) \
             AND ($3 IS NULL OR b.id < $3) ORDER BY b.id DESC LIMIT $4"
        );
        let (rows, signoffs): (Vec<BatchRow>, Vec<(i64, String, String)>) =
            read_pool!(self.registry.ledger(), |pool| {
                let rows: Vec<BatchRow> = sqlx::query_as(&sql)
                    .bind(programme)
                    .bind(status)
                    .bind(before)
                    .bind(limit.clamp(1, 1000))
                    .fetch_all(pool)
                    .await?;
                // The page's sign-offs in one query: ids run from the last row's to the first's.
                let (low, high) = (
                    rows.last().map_or(0, |r| r.0),
                    rows.first().map_or(0, |r| r.0),
                );
                let signoffs = sqlx::query_as(
                    "SELECT batch_id, step, actor FROM batch_signoffs \
                     WHERE batch_id >= $1 AND batch_id <= $2 ORDER BY id",
                )
                .bind(low)
                .bind(high)
                .fetch_all(pool)
                .await?;
                (rows, signoffs)
            });
        Ok(rows.into_iter().map(|r| batch_view(r, &signoffs)).collect())
    }

    /// A follow-up batch (a draft linked to `id`) for the failed lines of batch `id` whose
    /// entitlement is still granted and in no live payment; each for its entitlement's amount,
    /// so never beyond it. Refused when there is nothing to re-issue.
    pub async fn reissue(&self, id: i64, ctx: &AuditContext) -> Result<BatchView> {
        let b = self.batch(id).await?;
        let provider = self.provider_of(&b)?.clone();
        let rows: Vec<(i64, i64, i64)> = read_pool!(self.registry.ledger(), |pool| {
            sqlx::query_as(
                "SELECT DISTINCT e.id, e.household_id, e.amount FROM batch_lines l \
                 JOIN entitlements e ON e.id = l.entitlement_id \
                 WHERE l.batch_id = $1 AND l.status = 'failed' AND e.status = 'granted' \
                 AND NOT EXISTS (SELECT 1 FROM batch_lines o WHERE o.entitlement_id = e.id \
                   AND o.status IN ('pending', 'in_flight', 'completed', 'unknown')) \
                 ORDER BY e.id",
            )
            .bind(id)
            .fetch_all(pool)
            .await?
        });
        if rows.is_empty() {
            return Err(RegistryError::Conflict(format!(
                "batch {id} has no failed line left to re-issue"
            )));
        }
        let mut lines = Vec::with_capacity(rows.len());
        for (ent, hh, amount) in rows {
            let fee = provider.fee_minor(amount).ok_or_else(|| {
                RegistryError::invalid(
                    "fees",
                    format!("provider `{}`: fee overflows", provider.name),
                )
            })?;
            lines.push((ent, hh, amount, fee));
        }
        let programme = self.registry.programme(&b.programme).await?;
        let mut by_provider = BTreeMap::new();
        by_provider.insert(provider.name.as_str(), lines);
        let filters = serde_json::json!({"follow_up_of": id}).to_string();
        let ids = self
            .insert_batches(&programme, &by_provider, MAX_LINES, &filters, Some(id), ctx)
            .await?;
        let first = ids
            .first()
            .copied()
            .ok_or_else(|| RegistryError::Corrupt("no batch written".into()))?;
        self.batch(first).await
    }

    /// Cancels a batch that has not been released: its lines are cancelled and their
    /// entitlements are due again.
    pub async fn cancel(&self, id: i64, reason: &str, ctx: &AuditContext) -> Result<BatchView> {
        let reason = reason.trim();
        if reason.is_empty() || reason.chars().count() > 500 {
            return Err(RegistryError::invalid(
                "reason",
                "say why (1 to 500 characters)",
            ));
        }
        let at = now();
        write_tx!(self.registry.ledger(), |tx| {
            let n = sqlx::query(
                "UPDATE batches SET status = 'cancelled', status_changed_at = $1 WHERE id = $2 \
                 AND status IN ('draft', 'submitted', 'approved', 'authorised')",
            )
            .bind(at)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n != 1 {
                return Err(RegistryError::Conflict(format!(
                    "batch {id} does not exist or was already released or cancelled"
                )));
            }
            sqlx::query("UPDATE batch_lines SET status = 'cancelled' WHERE batch_id = $1 AND status = 'pending'")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let rec = AuditRecord::new(
                ctx,
                "batch.cancel",
                "batch",
                id.to_string(),
                serde_json::json!({"reason": reason}),
            );
            AuditConn::append(&mut *tx, &rec).await?;
        });
        self.batch(id).await
    }
}

/// The columns of a [`BatchView`] (with [`BATCH_FROM`]), in [`BatchRow`] order.
const BATCH_COLUMNS: &str = "b.id, p.code, b.provider, b.currency, b.status, \
     CAST(b.line_count AS BIGINT), b.total, b.fees, CAST(b.approvals_required AS INTEGER), \
     CAST(b.authorisations_required AS INTEGER), CAST(b.releases_required AS INTEGER), \
     b.prepared_by, b.created_at, b.follow_up_of";
const BATCH_FROM: &str = "batches b JOIN programmes p ON p.id = b.programme_id";

type BatchRow = (
    i64,
    String,
    String,
    String,
    String,
    i64,
    i64,
    i64,
    Option<i32>,
    Option<i32>,
    Option<i32>,
    String,
    DateTime<Utc>,
    Option<i64>,
);

/// A batch row with its sign-offs (taken from `signoffs`: `(batch_id, step, actor)` in the
/// order given, other batches' ignored).
fn batch_view(r: BatchRow, signoffs: &[(i64, String, String)]) -> BatchView {
    BatchView {
        id: r.0,
        programme: r.1,
        provider: r.2,
        currency: r.3,
        status: r.4,
        line_count: r.5,
        total: r.6,
        fees: r.7,
        approvals_required: r.8,
        authorisations_required: r.9,
        releases_required: r.10,
        prepared_by: r.11,
        follow_up_of: r.13,
        signoffs: signoffs
            .iter()
            .filter(|s| s.0 == r.0)
            .map(|(_, step, by)| Signoff {
                step: step.clone(),
                by: by.clone(),
            })
            .collect(),
        created_at: r.12,
    }
}

/// The rows of a release, written in the posting's transaction.
struct ReleaseRows<'a> {
    batch: i64,
    fees: i64,
    provider: &'a str,
    float: String,
    in_transit: String,
    actor: &'a str,
    at: DateTime<Utc>,
    audit: &'a AuditRecord,
}

macro_rules! release_rows {
    ($self:ident, $conn:ident) => {{
        let refused = |m: String| cva_ledger::LedgerError::Refused(m);
        // The in-transit account is locked by the posting (its entries credit it), so releases
        // for one provider are serialised and this reading is current. Its balance already
        // includes this batch.
        let float: i64 =
            sqlx::query_scalar("SELECT debit_total - credit_total FROM accounts WHERE code = $1")
                .bind(&$self.float)
                .fetch_optional(&mut *$conn)
                .await?
                .unwrap_or(0);
        let transit: i64 =
            sqlx::query_scalar("SELECT credit_total - debit_total FROM accounts WHERE code = $1")
                .bind(&$self.in_transit)
                .fetch_optional(&mut *$conn)
                .await?
                .unwrap_or(0);
        let fees: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(l.fee), 0) AS BIGINT) FROM batch_lines l \
             JOIN batches b ON b.id = l.batch_id WHERE b.provider = $1 \
             AND b.status IN ('released', 'sending') AND l.status IN ('pending', 'in_flight')",
        )
        .bind($self.provider)
        .fetch_one(&mut *$conn)
        .await?;
        let needed = transit.saturating_add(fees).saturating_add($self.fees);
        if float < needed {
            return Err(refused(format!(
                "the float of `{}` ({float}) cannot cover this batch on top of what is released \
                 and unconfirmed ({needed} with fees)",
                $self.provider
            )));
        }
        sqlx::query(
            "INSERT INTO batch_signoffs (batch_id, step, actor, at) VALUES ($1, 'release', $2, $3)",
        )
        .bind($self.batch)
        .bind($self.actor)
        .bind($self.at)
        .execute(&mut *$conn)
        .await
        .map_err(|e| match signoff_refusal(e) {
            RegistryError::Database(e) => cva_ledger::LedgerError::Database(e),
            other => refused(other.to_string()),
        })?;
        let n = sqlx::query(
            "UPDATE batches SET status = 'released', status_changed_at = $1 \
             WHERE id = $2 AND status = 'authorised'",
        )
        .bind($self.at)
        .bind($self.batch)
        .execute(&mut *$conn)
        .await?
        .rows_affected();
        if n != 1 {
            return Err(refused(format!("batch {} changed meanwhile", $self.batch)));
        }
        AuditConn::append(&mut *$conn, $self.audit).await?;
        Ok(())
    }};
}

impl cva_ledger::store::TxHook for ReleaseRows<'_> {
    fn postgres<'a>(
        &'a self,
        conn: &'a mut sqlx::PgConnection,
        _posted: &'a [(usize, cva_ledger::entry::EntryId)],
    ) -> futures::future::BoxFuture<'a, cva_ledger::Result<()>> {
        Box::pin(async move { release_rows!(self, conn) })
    }

    fn sqlite<'a>(
        &'a self,
        conn: &'a mut sqlx::SqliteConnection,
        _posted: &'a [(usize, cva_ledger::entry::EntryId)],
    ) -> futures::future::BoxFuture<'a, cva_ledger::Result<()>> {
        Box::pin(async move { release_rows!(self, conn) })
    }
}

/// A live line for one of the batch's entitlements already exists: another batch took it
/// meanwhile.
fn live_conflict(e: sqlx::Error, batch: i64) -> RegistryError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => RegistryError::Conflict(format!(
            "an entitlement of batch {batch} is already in a live payment (another batch took it meanwhile); nothing was created"
        )),
        _ => RegistryError::Database(e),
    }
}

fn signoff_refusal(e: sqlx::Error) -> RegistryError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            RegistryError::SamePerson("one person signs a batch at most once".into())
        }
        sqlx::Error::Database(d) if d.message().contains("cva: ") => {
            RegistryError::SamePerson(d.message().trim_start_matches("cva: ").to_owned())
        }
        _ => RegistryError::Database(e),
    }
}
