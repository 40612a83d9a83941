//! Pieces shared by the benchmarks that build a programme at scale (`registry-bench`,
//! `payments-bench`): the bench actors' audit context, bulk verification by SQL (set-up, not a
//! product path), result checks and timing.

#![allow(dead_code)]

use std::time::Duration;

use anyhow::{bail, Context, Result};
use chrono::NaiveDate;
use cva_households::fixtures;
use cva_ledger::audit::AuditContext;
use cva_ledger::Ledger;
use cva_programmes::rules::{Modality, Rule};
use cva_registry::programmes::NewProgramme;
use cva_registry::Registry;

pub const CHECKER: &str = "bench-checker";

pub fn ctx(actor: &str, request_id: &str) -> AuditContext {
    AuditContext {
        actor_id: None,
        actor: actor.into(),
        role: "programme_officer".into(),
        request_id: request_id.into(),
    }
}

pub fn check<T: PartialEq + std::fmt::Display>(
    failures: &mut Vec<String>,
    what: &str,
    got: T,
    want: T,
) {
    if got != want {
        failures.push(format!("{what} is {got}, expected {want}"));
    }
}

pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64().max(1e-9)
}

/// Marks every household of the bench programme verified and every open flag resolved
/// `distinct`, by `bench-checker`, in one transaction. Returns the rows each statement changed.
pub async fn verify_all(ledger: &Ledger, programme: &str) -> Result<(u64, u64)> {
    const HOUSEHOLDS: &str = "UPDATE households SET status = 'verified', verified_by = $1, \
         verified_at = $2, status_changed_at = $3 \
         WHERE programme_id = (SELECT id FROM programmes WHERE code = $4) \
         AND status = 'registered'";
    const FLAGS: &str = "UPDATE dedup_flags SET status = 'distinct', resolved_by = $1, \
         resolved_at = $2, reason = 'bench' WHERE status = 'open'";
    let now = cva_ledger::store::now_micros();
    if let Some(pool) = ledger.pg_pool() {
        let mut tx = pool.begin().await?;
        let h = sqlx::query(HOUSEHOLDS)
            .bind(CHECKER)
            .bind(now)
            .bind(now)
            .bind(programme)
            .execute(&mut *tx)
            .await
            .context("verifying the households")?;
        let f = sqlx::query(FLAGS)
            .bind(CHECKER)
            .bind(now)
            .execute(&mut *tx)
            .await
            .context("resolving the flags")?;
        tx.commit().await?;
        Ok((h.rows_affected(), f.rows_affected()))
    } else if let Some(pool) = ledger.sqlite_pool() {
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        let h = sqlx::query(HOUSEHOLDS)
            .bind(CHECKER)
            .bind(now)
            .bind(now)
            .bind(programme)
            .execute(&mut *tx)
            .await
            .context("verifying the households")?;
        let f = sqlx::query(FLAGS)
            .bind(CHECKER)
            .bind(now)
            .execute(&mut *tx)
            .await
            .context("resolving the flags")?;
        tx.commit().await?;
        Ok((h.rows_affected(), f.rows_affected()))
    } else {
        bail!("the ledger has no database pool")
    }
}

/// Programme `code` (XOF, reporting EUR, 2024, the ten regions of Mali) with budget line
/// `mpca` planned and funded with `budget` XOF (one donor entry) and MPCA rule `rule`.
pub async fn setup_programme(
    registry: &Registry,
    officer: &AuditContext,
    code: &str,
    budget: &str,
    rule: &str,
) -> Result<()> {
    let date = |m, d| NaiveDate::from_ymd_opt(2024, m, d).context("date");
    registry
        .create_programme(
            NewProgramme {
                code: code.into(),
                name: format!("Bench programme {code}"),
                donor: "Bench donor".into(),
                grant_ref: "BENCH/2024/1".into(),
                currency: "XOF".into(),
                reporting_currency: "EUR".into(),
                starts_on: date(1, 1)?,
                ends_on: date(12, 31)?,
                regions: fixtures::REGIONS
                    .iter()
                    .map(|(p, _)| (*p).to_owned())
                    .collect(),
            },
            officer,
        )
        .await
        .context("creating the programme")?;
    registry
        .add_budget_line(code, "mpca", Modality::Mpca, budget, officer)
        .await
        .context("adding the budget line")?;
    registry
        .fund_budget_line(code, "mpca", budget, "bench-funding", date(1, 15)?, officer)
        .await
        .context("funding the budget line")?;
    let rule = Rule::from_json(rule).context("parsing the rule")?;
    registry
        .add_rule(code, rule, officer)
        .await
        .context("adding the rule")?;
    Ok(())
}
