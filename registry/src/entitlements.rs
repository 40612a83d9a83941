//! Entitlements: what each household is owed per cycle and tranche, computed by the
//! programme's current rule for the modality and posted to the ledger under budget control.
//!
//! Each entitlement is one ledger entry: debit the budget line's fund account
//! (`funds:PROGRAMME:LINE`, which may not go negative: the remaining budget) and credit the
//! household's entitlement account (`liabilities:entitlements:PROGRAMME:hh-ID`, what it is owed).
//! Budget consumption per line is therefore the fund account's debits, derivable from the ledger
//! alone. [`Registry::generate_entitlements`] is idempotent per (household, modality, cycle,
//! tranche), refuses the whole cycle when the budget line's planned amount or its funds would be
//! exceeded, and writes the entries, the entitlement rows and the run's audit event in one
//! transaction. Cancelling an entitlement posts the reversal of its entry.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use cva_ledger::account::{AccountCode, Side};
use cva_ledger::audit::{AuditConn, AuditContext, AuditRecord};
use cva_ledger::entry::{EntryId, IdempotencyKey, Line, NewEntry};
use cva_ledger::money::Amount;
use cva_ledger::store::TxHook;
use cva_ledger::LedgerError;
use cva_programmes::rules::{Modality, Rule};
use serde::Serialize;
use uuid::Uuid;

use crate::programmes::{BudgetLine, Programme};
use crate::{Registry, RegistryError, Result};

/// The household's entitlement account.
pub fn household_account(programme: &str, household_id: i64) -> String {
    format!("liabilities:entitlements:{programme}:hh-{household_id}")
}

/// What a generation run did.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GenerationReport {
    pub programme: String,
    pub cycle: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub modality: Modality,
    pub rule_version: i32,
    pub budget_line: String,
    /// Verified households without an open duplicate flag.
    pub eligible_households: usize,
    /// Households left out: not verified (registered or suspended).
    pub not_verified: usize,
    /// Households left out: an open duplicate flag.
    pub flagged: usize,
    /// Entitlements created by this run.
    pub created: usize,
    /// Entitlements that already existed (an earlier run of the same cycle).
    pub already_granted: usize,
    /// Total of the entitlements created, minor units.
    pub amount: i64,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EntitlementView {
    pub id: i64,
    pub household_id: i64,
    pub programme: String,
    pub modality: String,
    pub cycle: String,
    pub tranche: i32,
    pub amount: i64,
    pub currency: String,
    pub rule_version: i32,
    pub budget_line: String,
    pub status: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub entry_id: Uuid,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Uuid))]
    pub cancel_entry_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

/// An entitlement about to be written with its entry.
#[derive(Debug, Clone)]
struct Planned {
    household_id: i64,
    tranche: i32,
    amount: i64,
}

/// Writes the entitlement rows of the entries just posted, in the posting transaction.
struct InsertRows<'a> {
    programme_id: i64,
    line_id: i64,
    modality: &'static str,
    cycle: &'a str,
    currency: &'static str,
    rule_version: i32,
    actor: &'a str,
    at: DateTime<Utc>,
    planned: &'a [Planned],
    /// The one audit event of the run (`entitlements.generate`).
    audit: &'a AuditRecord,
    /// The budget line's fund account and planned amount: checked again inside the transaction.
    fund: &'a str,
    line_amount: i64,
}

/// The budget line's planned amount, checked inside the posting transaction (the check before
/// it reads without locks). The entries debit the fund account, which the ledger locks for the
/// transaction, so generations against one line are serialised and its debits, this run's
/// included, are what the line has committed.
macro_rules! check_planned {
    ($self:ident, $conn:ident) => {{
        let committed: Option<i64> =
            sqlx::query_scalar("SELECT debit_total FROM accounts WHERE code = $1")
                .bind($self.fund)
                .fetch_optional(&mut *$conn)
                .await?;
        let committed = committed.unwrap_or(0);
        if committed > $self.line_amount {
            return Err(LedgerError::Refused(format!(
                "budget line `{}` would be exceeded: {committed} would be committed, {} is planned",
                $self.fund, $self.line_amount
            )));
        }
    }};
}

/// Rows per multi-row INSERT on SQLite (12 parameters each, under its 32,766 limit).
const ROWS_PER_INSERT: usize = 2000;

impl InsertRows<'_> {
    fn planned(&self, i: usize) -> cva_ledger::Result<&Planned> {
        self.planned
            .get(i)
            .ok_or_else(|| LedgerError::Corrupt("posted entry without its entitlement".into()))
    }
}

/// The eligibility trigger's refusal is a business rule, not a storage failure.
fn refusal(e: sqlx::Error) -> LedgerError {
    match &e {
        sqlx::Error::Database(d) if d.message().starts_with("cva:") => {
            LedgerError::Refused(d.message().to_owned())
        }
        _ => LedgerError::Database(e),
    }
}

impl TxHook for InsertRows<'_> {
    /// One `INSERT … SELECT FROM UNNEST` for the whole cycle: a single statement, so the
    /// statement-level eligibility trigger checks every row in one pass.
    fn postgres<'a>(
        &'a self,
        conn: &'a mut sqlx::PgConnection,
        posted: &'a [(usize, EntryId)],
    ) -> futures::future::BoxFuture<'a, cva_ledger::Result<()>> {
        Box::pin(async move {
            check_planned!(self, conn);
            let mut households = Vec::with_capacity(posted.len());
            let mut tranches = Vec::with_capacity(posted.len());
            let mut amounts = Vec::with_capacity(posted.len());
            let mut entries = Vec::with_capacity(posted.len());
            for (i, id) in posted {
                let p = self.planned(*i)?;
                households.push(p.household_id);
                tranches.push(p.tranche);
                amounts.push(p.amount);
                entries.push(id.0);
            }
            sqlx::query(
                "INSERT INTO entitlements (household_id, programme_id, budget_line_id, modality, cycle, \
                 tranche, amount, currency, rule_version, entry_id, created_at, created_by) \
                 SELECT h, $5, $6, $7, $8, t, a, $9, $10, e, $11, $12 \
                 FROM UNNEST($1::int8[], $2::int4[], $3::int8[], $4::uuid[]) AS u(h, t, a, e)",
            )
            .bind(&households)
            .bind(&tranches)
            .bind(&amounts)
            .bind(&entries)
            .bind(self.programme_id)
            .bind(self.line_id)
            .bind(self.modality)
            .bind(self.cycle)
            .bind(self.currency)
            .bind(self.rule_version)
            .bind(self.at)
            .bind(self.actor)
            .execute(&mut *conn)
            .await
            .map_err(refusal)?;
            AuditConn::append(&mut *conn, self.audit).await?;
            Ok(())
        })
    }

    fn sqlite<'a>(
        &'a self,
        conn: &'a mut sqlx::SqliteConnection,
        posted: &'a [(usize, EntryId)],
    ) -> futures::future::BoxFuture<'a, cva_ledger::Result<()>> {
        Box::pin(async move {
            check_planned!(self, conn);
            for chunk in posted.chunks(ROWS_PER_INSERT) {
                let mut sql = String::from(
                    "INSERT INTO entitlements (household_id, programme_id, budget_line_id, modality, cycle, \
                     tranche, amount, currency, rule_version, entry_id, created_at, created_by) VALUES ",
                );
                sql.push_str(&crate::values_list(chunk.len(), 12, false));
                let mut q = sqlx::query(&sql);
                for (i, id) in chunk {
                    let p = self.planned(*i)?;
                    q = q
                        .bind(p.household_id)
                        .bind(self.programme_id)
                        .bind(self.line_id)
                        .bind(self.modality)
                        .bind(self.cycle)
                        .bind(p.tranche)
                        .bind(p.amount)
                        .bind(self.currency)
                        .bind(self.rule_version)
                        .bind(id.0)
                        .bind(self.at)
                        .bind(self.actor);
                }
                q.execute(&mut *conn).await.map_err(refusal)?;
            }
            AuditConn::append(&mut *conn, self.audit).await?;
            Ok(())
        })
    }
}

/// What every entry of one generation run shares.
struct EntryShape<'a> {
    programme: &'a str,
    currency: cva_ledger::money::Currency,
    modality: Modality,
    cycle: &'a str,
    rule_version: i32,
    effective_date: NaiveDate,
    fund: &'a AccountCode,
}

impl EntryShape<'_> {
    /// The ledger entries of the planned entitlements, in order; built on one thread per core
    /// (a cycle is 100,000 entries, each with its own strings and metadata).
    fn entries(&self, planned: &[Planned]) -> Result<Vec<NewEntry>> {
        cva_ledger::parallel::map_ordered(planned, 10_000, |e| self.entry(e))
            .into_iter()
            .collect()
    }

    fn entry(&self, e: &Planned) -> Result<NewEntry> {
        let (programme, modality, cycle) = (self.programme, self.modality.as_str(), self.cycle);
        let key = IdempotencyKey::parse(&format!(
            "ent:{programme}:{}:{modality}:{cycle}:{}",
            e.household_id, e.tranche
        ))
        .map_err(LedgerError::from)?;
        let account = AccountCode::parse(&household_account(programme, e.household_id))
            .map_err(|e| RegistryError::Corrupt(e.to_string()))?;
        let amount = Amount::from_minor(e.amount, self.currency);
        let mut metadata = serde_json::Map::new();
        metadata.insert("programme".into(), programme.into());
        metadata.insert("household_id".into(), e.household_id.into());
        metadata.insert("modality".into(), modality.into());
        metadata.insert("cycle".into(), cycle.into());
        metadata.insert("tranche".into(), e.tranche.into());
        metadata.insert("rule_version".into(), self.rule_version.into());
        Ok(NewEntry::new(
            key,
            format!("Entitlement {modality} {cycle} tranche {}", e.tranche),
            self.effective_date,
            metadata,
            vec![
                Line {
                    account: self.fund.clone(),
                    side: Side::Debit,
                    amount,
                },
                Line {
                    account,
                    side: Side::Credit,
                    amount,
                },
            ],
        )
        .map_err(LedgerError::from)?)
    }
}

fn check_cycle(cycle: &str) -> Result<()> {
    let ok = (1..=20).contains(&cycle.len())
        && cycle.as_bytes()[0].is_ascii_alphanumeric()
        && cycle
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(RegistryError::invalid(
            "cycle",
            "use 1 to 20 letters, digits, `.`, `_` or `-` (e.g. 2024-03)",
        ))
    }
}

impl Registry {
    /// Creates the cycle's entitlements for one modality. See the module documentation.
    #[tracing::instrument(skip(self, ctx), fields(programme, cycle, modality = modality.as_str()))]
    pub async fn generate_entitlements(
        &self,
        programme: &str,
        cycle: &str,
        modality: Modality,
        effective_date: NaiveDate,
        ctx: &AuditContext,
    ) -> Result<GenerationReport> {
        check_cycle(cycle)?;
        let started = std::time::Instant::now();
        let p = self.programme(programme).await?;
        let rule = self.current_rule(p.id, modality).await?;
        let line = self.line_for(&p, modality).await?;
        // Three independent reads, on separate pooled connections at once.
        let existing = async {
            Ok::<HashSet<(i64, i32)>, RegistryError>(crate::read_pool!(self.ledger, |pool| {
                sqlx::query_as::<_, (i64, i32)>(
                    "SELECT household_id, tranche FROM entitlements \
                     WHERE programme_id = $1 AND modality = $2 AND cycle = $3",
                )
                .bind(p.id)
                .bind(modality.as_str())
                .bind(cycle)
                .fetch_all(pool)
                .await?
                .into_iter()
                .collect()
            }))
        };
        let (households, existing, extra) = tokio::try_join!(
            self.eligibility(&p),
            existing,
            self.modality_inputs(&p, modality, cycle)
        )?;
        let eligible: Vec<&(i64, i32, String, i64)> = households
            .iter()
            .filter(|(_, _, status, flags)| status == "verified" && *flags == 0)
            .collect();
        let mut report = GenerationReport {
            programme: p.code.as_str().to_owned(),
            cycle: cycle.to_owned(),
            modality,
            rule_version: rule.version,
            budget_line: line.code.clone(),
            eligible_households: eligible.len(),
            not_verified: households
                .iter()
                .filter(|(_, _, s, _)| s == "registered" || s == "suspended")
                .count(),
            flagged: households
                .iter()
                .filter(|(_, _, s, f)| s == "verified" && *f > 0)
                .count(),
            created: 0,
            already_granted: 0,
            amount: 0,
        };
        let mut planned = Vec::new();
        for &&(hh, size, _, _) in &eligible {
            let amounts: Vec<(i32, i64)> = match &rule.rule {
                Rule::Mpca(r) => {
                    let size = u16::try_from(size).unwrap_or(0);
                    r.tranche_amounts(size)
                        .map_err(|e| {
                            RegistryError::invalid("rule", format!("household {hh}: {e}"))
                        })?
                        .into_iter()
                        .enumerate()
                        .map(|(i, a)| (i as i32 + 1, a))
                        .collect()
                }
                Rule::CashForWork(r) => match extra.days.get(&hh) {
                    Some(days) => vec![(1, r.amount(days).amount)],
                    None => Vec::new(),
                },
                Rule::Shelter(r) => {
                    let verified: Vec<&str> = extra
                        .milestones
                        .get(&hh)
                        .map(|v| v.iter().map(String::as_str).collect())
                        .unwrap_or_default();
                    r.checked_tranche_amounts()
                        .map_err(|e| RegistryError::invalid("rule", e.to_string()))?
                        .into_iter()
                        .enumerate()
                        .filter(|(i, _)| r.tranche_due(*i, &verified))
                        .map(|(i, a)| (i as i32 + 1, a))
                        .collect()
                }
            };
            for (tranche, amount) in amounts {
                if amount <= 0 {
                    continue;
                }
                if existing.contains(&(hh, tranche)) {
                    report.already_granted += 1;
                } else {
                    planned.push(Planned {
                        household_id: hh,
                        tranche,
                        amount,
                    });
                }
            }
        }
        let needed: i64 = planned
            .iter()
            .try_fold(0i64, |acc, p| acc.checked_add(p.amount))
            .ok_or_else(|| RegistryError::invalid("cycle", "the total is too large"))?;
        let planned_left = line.amount - line.committed;
        if needed > planned_left {
            return Err(RegistryError::BudgetExceeded {
                line: line.account.clone(),
                needed,
                remaining: planned_left,
                currency: p.currency.code().to_owned(),
                funded_limit: false,
            });
        }
        if needed > line.available {
            return Err(RegistryError::BudgetExceeded {
                line: line.account.clone(),
                needed,
                remaining: line.available,
                currency: p.currency.code().to_owned(),
                funded_limit: true,
            });
        }
        if planned.is_empty() {
            return Ok(report);
        }
        let fund =
            AccountCode::parse(&line.account).map_err(|e| RegistryError::Corrupt(e.to_string()))?;
        let shape = EntryShape {
            programme: p.code.as_str(),
            currency: p.currency,
            modality,
            cycle,
            rule_version: rule.version,
            effective_date,
            fund: &fund,
        };
        let entries = shape.entries(&planned)?;
        // One audit event for the run; its change names every entitlement by its entry's
        // idempotency key and amount (hashed into the chain, not stored).
        let audit = AuditRecord::new(
            ctx,
            "entitlements.generate",
            "cycle",
            format!("{}:{}:{cycle}", p.code, modality.as_str()),
            serde_json::json!({
                "rule_version": rule.version,
                "budget_line": line.account,
                "total": needed,
                "entries": entries.iter().map(|e| serde_json::json!([e.idempotency_key.as_str(), e.lines[0].amount.minor()])).collect::<Vec<_>>(),
            }),
        );
        tracing::debug!(
            entries = entries.len(),
            prepare_ms = started.elapsed().as_millis() as u64,
            "entitlements planned"
        );
        let hook = InsertRows {
            audit: &audit,
            programme_id: p.id,
            line_id: line.id,
            modality: modality.as_str(),
            cycle,
            currency: p.currency.code(),
            rule_version: rule.version,
            actor: &ctx.actor,
            at: crate::now(),
            planned: &planned,
            fund: &line.account,
            line_amount: line.amount,
        };
        let postings = self
            .ledger
            .post_many_hooked(&entries, &hook)
            .await
            .map_err(|e| match e {
                LedgerError::BatchRejected { source, .. } => match *source {
                    LedgerError::InsufficientBalance { .. } => RegistryError::BudgetExceeded {
                        line: line.account.clone(),
                        needed,
                        remaining: line.available,
                        currency: p.currency.code().to_owned(),
                        funded_limit: true,
                    },
                    other => RegistryError::Ledger(other),
                },
                other => RegistryError::Ledger(other),
            })?;
        report.created = postings.len();
        report.amount = needed;
        Ok(report)
    }

    /// The budget line of a modality (exactly one per modality).
    async fn line_for(&self, p: &Programme, modality: Modality) -> Result<BudgetLine> {
        let mut lines: Vec<BudgetLine> = self
            .budget_lines(p.code.as_str())
            .await?
            .into_iter()
            .filter(|l| l.modality == modality)
            .collect();
        match lines.len() {
            0 => Err(RegistryError::NotFound(format!(
                "programme `{}` has no {} budget line",
                p.code,
                modality.as_str()
            ))),
            1 => Ok(lines.remove(0)),
            _ => Err(RegistryError::invalid(
                "budget_line",
                format!(
                    "programme `{}` has several {} budget lines",
                    p.code,
                    modality.as_str()
                ),
            )),
        }
    }

    /// (household id, size, status, open flags with a household not withdrawn) of every
    /// household of the programme not withdrawn.
    async fn eligibility(&self, p: &Programme) -> Result<Vec<(i64, i32, String, i64)>> {
        Ok(crate::read_pool!(self.ledger, |pool| {
            sqlx::query_as(
                // Open flags are few (a queue): counted once per flagged household and joined,
                // rather than probed once per household.
                "SELECT h.id, h.size, h.status, COALESCE(o.n, 0) \
                 FROM households h LEFT JOIN ( \
                   SELECT x.hh, count(*) AS n FROM ( \
                     SELECT f.household_a AS hh FROM dedup_flags f JOIN households w ON w.id = f.household_b \
                      WHERE f.status = 'open' AND w.status <> 'withdrawn' \
                     UNION ALL \
                     SELECT f.household_b FROM dedup_flags f JOIN households w ON w.id = f.household_a \
                      WHERE f.status = 'open' AND w.status <> 'withdrawn') x \
                   GROUP BY x.hh) o ON o.hh = h.id \
                 WHERE h.programme_id = $1 AND h.status <> 'withdrawn' ORDER BY h.id",
            )
            .bind(p.id)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Cash-for-work days and verified shelter milestones, where the modality needs them.
    async fn modality_inputs(
        &self,
        p: &Programme,
        modality: Modality,
        cycle: &str,
    ) -> Result<Inputs> {
        let mut inputs = Inputs::default();
        match modality {
            Modality::Mpca => {}
            Modality::CashForWork => {
                let rows: Vec<(i64, i32, i32)> = crate::read_pool!(self.ledger, |pool| {
                    sqlx::query_as(
                        "SELECT d.household_id, d.worker, d.days FROM cfw_days d \
                         JOIN households h ON h.id = d.household_id \
                         WHERE h.programme_id = $1 AND d.cycle = $2 ORDER BY d.household_id, d.worker",
                    )
                    .bind(p.id)
                    .bind(cycle)
                    .fetch_all(pool)
                    .await?
                });
                for (hh, _, days) in rows {
                    inputs
                        .days
                        .entry(hh)
                        .or_default()
                        .push(u32::try_from(days).unwrap_or(0));
                }
            }
            Modality::Shelter => {
                let rows: Vec<(i64, String)> = crate::read_pool!(self.ledger, |pool| {
                    sqlx::query_as(
                        "SELECT m.household_id, m.milestone FROM milestones m \
                         JOIN households h ON h.id = m.household_id \
                         WHERE h.programme_id = $1 AND m.verified_by IS NOT NULL",
                    )
                    .bind(p.id)
                    .fetch_all(pool)
                    .await?
                });
                for (hh, m) in rows {
                    inputs.milestones.entry(hh).or_default().push(m);
                }
            }
        }
        Ok(inputs)
    }

    /// A household's entitlements, oldest first.
    pub async fn entitlements(&self, household_id: i64) -> Result<Vec<EntitlementView>> {
        let rows: Vec<EntRow> = crate::read_pool!(self.ledger, |pool| {
            sqlx::query_as(ENT_SELECT)
                .bind(household_id)
                .fetch_all(pool)
                .await?
        });
        Ok(rows.into_iter().map(ent_view).collect())
    }

    /// Cancels a granted entitlement by reversing its entry (audited by the ledger as
    /// `ledger.reverse`). If the reversal was posted but the row not updated (a crash in
    /// between), calling again finishes the job.
    pub async fn cancel_entitlement(
        &self,
        id: i64,
        reason: &str,
        ctx: &AuditContext,
    ) -> Result<EntitlementView> {
        let reason = reason.trim();
        if reason.is_empty() || reason.chars().count() > 500 {
            return Err(RegistryError::invalid(
                "reason",
                "say why (1 to 500 characters)",
            ));
        }
        let row: Option<(Uuid, String)> = crate::read_pool!(self.ledger, |pool| {
            sqlx::query_as("SELECT entry_id, status FROM entitlements WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        let (entry, status) =
            row.ok_or_else(|| RegistryError::NotFound(format!("entitlement {id} does not exist")))?;
        if status == "cancelled" {
            return Err(RegistryError::Conflict(format!(
                "entitlement {id} is already cancelled"
            )));
        }
        let reversal = match self
            .ledger
            .reverse_audited(EntryId(entry), reason, ctx)
            .await
        {
            Ok(p) => p.id(),
            Err(LedgerError::AlreadyReversed { reversal, .. }) => reversal,
            Err(e) => return Err(e.into()),
        };
        crate::write_tx!(self.ledger, |tx| {
            sqlx::query(
                "UPDATE entitlements SET status = 'cancelled', cancel_entry_id = $1 WHERE id = $2 AND status = 'granted'",
            )
            .bind(reversal.0)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        });
        let hh: i64 = crate::read_pool!(self.ledger, |pool| {
            sqlx::query_scalar("SELECT household_id FROM entitlements WHERE id = $1")
                .bind(id)
                .fetch_one(pool)
                .await?
        });
        self.entitlements(hh)
            .await?
            .into_iter()
            .find(|e| e.id == id)
            .ok_or_else(|| RegistryError::NotFound(format!("entitlement {id} does not exist")))
    }
}

#[derive(Debug, Default)]
struct Inputs {
    days: HashMap<i64, Vec<u32>>,
    milestones: BTreeMap<i64, Vec<String>>,
}

type EntRow = (
    i64,
    i64,
    String,
    String,
    String,
    i32,
    i64,
    String,
    i32,
    String,
    String,
    Uuid,
    Option<Uuid>,
    DateTime<Utc>,
);

const ENT_SELECT: &str =
    "SELECT e.id, e.household_id, p.code, e.modality, e.cycle, e.tranche, e.amount, \
    e.currency, e.rule_version, b.code, e.status, e.entry_id, e.cancel_entry_id, e.created_at \
    FROM entitlements e JOIN programmes p ON p.id = e.programme_id \
    JOIN budget_lines b ON b.id = e.budget_line_id WHERE e.household_id = $1 ORDER BY e.id";

fn ent_view(r: EntRow) -> EntitlementView {
    EntitlementView {
        id: r.0,
        household_id: r.1,
        programme: r.2,
        modality: r.3,
        cycle: r.4,
        tranche: r.5,
        amount: r.6,
        currency: r.7,
        rule_version: r.8,
        budget_line: r.9,
        status: r.10,
        entry_id: r.11,
        cancel_entry_id: r.12,
        created_at: r.13,
    }
}

impl Registry {
    /// The programme of an entitlement (for scope checks), if it exists.
    pub async fn entitlement_programme(&self, id: i64) -> Result<Option<String>> {
        Ok(crate::read_pool!(self.ledger, |pool| {
            sqlx::query_scalar(
                "SELECT p.code FROM entitlements e JOIN programmes p ON p.id = e.programme_id \
                 WHERE e.id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await?
        }))
    }

    /// Every entitlement of a programme's cycle and modality, by household id then tranche.
    pub async fn cycle_entitlements(
        &self,
        programme: &str,
        cycle: &str,
        modality: Modality,
    ) -> Result<Vec<EntitlementView>> {
        let p = self.programme(programme).await?;
        let sql = ENT_SELECT.replace(
            "WHERE e.household_id = $1 ORDER BY e.id",
            "WHERE e.programme_id = $1 AND e.cycle = $2 AND e.modality = $3 \
             ORDER BY e.household_id, e.tranche",
        );
        let rows: Vec<EntRow> = crate::read_pool!(self.ledger, |pool| {
            sqlx::query_as(&sql)
                .bind(p.id)
                .bind(cycle)
                .bind(modality.as_str())
                .fetch_all(pool)
                .await?
        });
        Ok(rows.into_iter().map(ent_view).collect())
    }
}
