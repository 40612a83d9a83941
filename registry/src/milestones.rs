//! Shelter milestones: construction steps of a household's shelter (`walls`, `roof`, …) that
//! release the conditional tranches of a shelter rule once verified.
//!
//! A milestone is reported by one person ([`Registry::report_milestone`], audited
//! `milestone.report`) and verified by another ([`Registry::verify_milestone`], audited
//! `milestone.verify`): the reporter may not verify (maker-checker; the database refuses it
//! too). Only verified milestones count in
//! [`Registry::generate_entitlements`] for
//! [`Modality::Shelter`](cva_programmes::rules::Modality::Shelter). Codes are 1 to 40 characters
//! of `a-z`, `0-9`, `_` and `-`, matched exactly against the rule's tranche conditions; a
//! milestone is reported once per household.

use chrono::{DateTime, NaiveDate, Utc};
use cva_ledger::audit::{AuditConn, AuditContext, AuditRecord};
use serde::Serialize;

use crate::{Registry, RegistryError, Result};

/// Longest milestone code (the database's limit).
pub const MAX_MILESTONE_CHARS: usize = 40;

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MilestoneView {
    pub milestone: String,
    pub reported_on: NaiveDate,
    pub reported_by: String,
    pub verified_by: Option<String>,
    pub verified_at: Option<DateTime<Utc>>,
}

type MilestoneRow = (
    String,
    NaiveDate,
    String,
    Option<String>,
    Option<DateTime<Utc>>,
);

fn view(r: MilestoneRow) -> MilestoneView {
    MilestoneView {
        milestone: r.0,
        reported_on: r.1,
        reported_by: r.2,
        verified_by: r.3,
        verified_at: r.4,
    }
}

fn check_code(code: &str) -> Result<()> {
    let ok = (1..=MAX_MILESTONE_CHARS).contains(&code.len())
        && code
            .bytes()
            .all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(RegistryError::invalid(
            "milestone",
            "use 1 to 40 characters of a-z, 0-9, `_` and `-` (e.g. roof)",
        ))
    }
}

const SELECT: &str = "SELECT milestone, reported_on, reported_by, verified_by, verified_at \
                      FROM milestones";

impl Registry {
    /// Records that `milestone` of household `household_id` was reached on `reported_on`.
    /// Refuses a milestone already reported (409), a date in the future and a withdrawn
    /// household. Audited `milestone.report`.
    pub async fn report_milestone(
        &self,
        household_id: i64,
        milestone: &str,
        reported_on: NaiveDate,
        ctx: &AuditContext,
    ) -> Result<MilestoneView> {
        check_code(milestone)?;
        if reported_on > Utc::now().date_naive() {
            return Err(RegistryError::invalid(
                "reported_on",
                "is in the future: report a milestone once it is reached",
            ));
        }
        let already =
            || format!("milestone `{milestone}` of household {household_id} is already reported");
        crate::write_tx!(self.ledger, |tx| {
            let status: Option<String> =
                sqlx::query_scalar("SELECT status FROM households WHERE id = $1")
                    .bind(household_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            match status.as_deref() {
                None => {
                    return Err(RegistryError::NotFound(format!(
                        "household {household_id} does not exist"
                    )))
                }
                Some("withdrawn") => {
                    return Err(RegistryError::Conflict(format!(
                        "household {household_id} is withdrawn"
                    )))
                }
                Some(_) => {}
            }
            let exists: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM milestones WHERE household_id = $1 AND milestone = $2",
            )
            .bind(household_id)
            .bind(milestone)
            .fetch_optional(&mut *tx)
            .await?;
            if exists.is_some() {
                return Err(RegistryError::Conflict(already()));
            }
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO milestones (household_id, milestone, reported_on, reported_by) \
                 VALUES ($1, $2, $3, $4) RETURNING id",
            )
            .bind(household_id)
            .bind(milestone)
            .bind(reported_on)
            .bind(&ctx.actor)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(d) if d.is_unique_violation() => {
                    RegistryError::Conflict(already())
                }
                _ => RegistryError::Database(e),
            })?;
            let rec = AuditRecord::new(
                ctx,
                "milestone.report",
                "milestone",
                id.to_string(),
                serde_json::json!({
                    "household_id": household_id, "milestone": milestone,
                    "reported_on": reported_on,
                }),
            );
            AuditConn::append(&mut *tx, &rec).await?;
        });
        self.milestone(household_id, milestone).await
    }

    /// Verifies a reported milestone. Whoever reported it may not ([`RegistryError::SamePerson`]);
    /// a milestone already verified is a conflict. Audited `milestone.verify`.
    pub async fn verify_milestone(
        &self,
        household_id: i64,
        milestone: &str,
        ctx: &AuditContext,
    ) -> Result<MilestoneView> {
        check_code(milestone)?;
        let now = crate::now();
        crate::write_tx!(self.ledger, |tx| {
            let row: Option<(i64, String, Option<String>)> = sqlx::query_as(
                "SELECT id, reported_by, verified_by FROM milestones \
                 WHERE household_id = $1 AND milestone = $2",
            )
            .bind(household_id)
            .bind(milestone)
            .fetch_optional(&mut *tx)
            .await?;
            let (id, reported_by, verified_by) = row.ok_or_else(|| {
                RegistryError::NotFound(format!(
                    "milestone `{milestone}` of household {household_id} is not reported"
                ))
            })?;
            if let Some(v) = verified_by {
                return Err(RegistryError::Conflict(format!(
                    "milestone `{milestone}` of household {household_id} was already verified by {v}"
                )));
            }
            if reported_by == ctx.actor {
                return Err(RegistryError::SamePerson(format!(
                    "milestone `{milestone}` of household {household_id} was reported by you; \
                     another person must verify it"
                )));
            }
            let n = sqlx::query(
                "UPDATE milestones SET verified_by = $1, verified_at = $2 \
                 WHERE id = $3 AND verified_by IS NULL",
            )
            .bind(&ctx.actor)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 {
                return Err(RegistryError::Conflict(format!(
                    "milestone `{milestone}` of household {household_id} was already verified"
                )));
            }
            let rec = AuditRecord::new(
                ctx,
                "milestone.verify",
                "milestone",
                id.to_string(),
                serde_json::json!({
                    "household_id": household_id, "milestone": milestone,
                    "reported_by": reported_by,
                }),
            );
            AuditConn::append(&mut *tx, &rec).await?;
        });
        self.milestone(household_id, milestone).await
    }

    /// A household's milestones, in the order they were reported.
    pub async fn milestones(&self, household_id: i64) -> Result<Vec<MilestoneView>> {
        // NotFound for a household that does not exist, rather than an empty list.
        self.household_programme(household_id).await?;
        let sql = format!("{SELECT} WHERE household_id = $1 ORDER BY id");
        let rows: Vec<MilestoneRow> = crate::read_pool!(self.ledger, |pool| {
            sqlx::query_as(&sql)
                .bind(household_id)
                .fetch_all(pool)
                .await?
        });
        Ok(rows.into_iter().map(view).collect())
    }

    async fn milestone(&self, household_id: i64, milestone: &str) -> Result<MilestoneView> {
        let sql = format!("{SELECT} WHERE household_id = $1 AND milestone = $2");
        let row: Option<MilestoneRow> = crate::read_pool!(self.ledger, |pool| {
            sqlx::query_as(&sql)
                .bind(household_id)
                .bind(milestone)
                .fetch_optional(pool)
                .await?
        });
        row.map(view).ok_or_else(|| {
            RegistryError::NotFound(format!(
                "milestone `{milestone}` of household {household_id} is not reported"
            ))
        })
    }
}
