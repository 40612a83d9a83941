//! The adjudication queue: possible duplicates raised at enrolment, decided by programme staff.
//!
//! A flag is `open` until someone marks it `distinct` (two real households) or `duplicate`
//! (one of the two records is withdrawn, with the reason). While a household has an open flag
//! whose other household is not withdrawn, it receives no entitlement (the database refuses it
//! too). Every decision is audited.

use chrono::{DateTime, Utc};
use cva_ledger::audit::{AuditConn, AuditContext, AuditRecord};
use serde::{Deserialize, Serialize};

use crate::{Registry, RegistryError, Result};

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlagView {
    pub id: i64,
    pub kind: String,
    /// Jaro-Winkler score in thousandths, for similar names.
    pub score_permille: Option<i32>,
    pub status: String,
    /// The household enrolled first.
    pub household_a: i64,
    /// The household whose enrolment raised the flag.
    pub household_b: i64,
    pub created_at: DateTime<Utc>,
    pub resolved_by: Option<String>,
    pub reason: Option<String>,
    pub withdrawn: Option<i64>,
}

/// How a flag is decided.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case", deny_unknown_fields)]
pub enum Decision {
    /// Two different households.
    Distinct { reason: String },
    /// The same household twice: `keep` stays, the other record is withdrawn.
    Duplicate { keep: i64, reason: String },
}

type FlagRow = (
    i64,
    String,
    Option<i32>,
    String,
    i64,
    i64,
    DateTime<Utc>,
    Option<String>,
    Option<String>,
    Option<i64>,
);

fn view(r: FlagRow) -> FlagView {
    FlagView {
        id: r.0,
        kind: r.1,
        score_permille: r.2,
        status: r.3,
        household_a: r.4,
        household_b: r.5,
        created_at: r.6,
        resolved_by: r.7,
        reason: r.8,
        withdrawn: r.9,
    }
}

const FLAG_COLUMNS: &str =
    "f.id, f.kind, f.score_permille, f.status, f.household_a, f.household_b, \
                            f.created_at, f.resolved_by, f.reason, f.withdrawn";

impl Registry {
    /// Flags touching the programme's households, oldest first; `open_only` for the queue.
    pub async fn flags(&self, programme: &str, open_only: bool) -> Result<Vec<FlagView>> {
        let p = self.programme(programme).await?;
        let sql = format!(
            "SELECT {FLAG_COLUMNS} FROM dedup_flags f \
             JOIN households a ON a.id = f.household_a JOIN households b ON b.id = f.household_b \
             WHERE (a.programme_id = $1 OR b.programme_id = $1) AND ($2 = 0 OR f.status = 'open') \
             ORDER BY f.id"
        );
        let rows: Vec<FlagRow> = crate::read_pool!(self.ledger, |pool| {
            sqlx::query_as(&sql)
                .bind(p.id)
                .bind(i32::from(open_only))
                .fetch_all(pool)
                .await?
        });
        Ok(rows.into_iter().map(view).collect())
    }

    pub async fn flag(&self, id: i64) -> Result<FlagView> {
        let sql = format!("SELECT {FLAG_COLUMNS} FROM dedup_flags f WHERE f.id = $1");
        let row: Option<FlagRow> = crate::read_pool!(self.ledger, |pool| {
            sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?
        });
        row.map(view)
            .ok_or_else(|| RegistryError::NotFound(format!("flag {id} does not exist")))
    }

    /// The programmes of a flag's two households (for scope checks).
    pub async fn flag_programmes(&self, id: i64) -> Result<Vec<String>> {
        let f = self.flag(id).await?;
        let mut out = vec![
            self.household_programme(f.household_a).await?,
            self.household_programme(f.household_b).await?,
        ];
        out.dedup();
        Ok(out)
    }

    /// Decides an open flag. Audited `flag.distinct` / `flag.duplicate` (and, for a duplicate,
    /// `household.withdraw` of the record not kept), all in one transaction.
    pub async fn adjudicate(
        &self,
        id: i64,
        decision: &Decision,
        ctx: &AuditContext,
    ) -> Result<FlagView> {
        let (reason, keep) = match decision {
            Decision::Distinct { reason } => (reason, None),
            Decision::Duplicate { keep, reason } => (reason, Some(*keep)),
        };
        let reason = reason.trim();
        if reason.is_empty() || reason.chars().count() > 500 {
            return Err(RegistryError::invalid(
                "reason",
                "say why (1 to 500 characters)",
            ));
        }
        let f = self.flag(id).await?;
        if f.status != "open" {
            return Err(RegistryError::Conflict(format!(
                "flag {id} was already decided ({})",
                f.status
            )));
        }
        let withdrawn = match keep {
            None => None,
            Some(k) if k == f.household_a => Some(f.household_b),
            Some(k) if k == f.household_b => Some(f.household_a),
            Some(_) => {
                return Err(RegistryError::invalid(
                    "keep",
                    format!(
                        "must be one of the flag's households ({} or {})",
                        f.household_a, f.household_b
                    ),
                ))
            }
        };
        let status = if withdrawn.is_some() {
            "duplicate"
        } else {
            "distinct"
        };
        let now = crate::now();
        let rec = AuditRecord::new(
            ctx,
            &format!("flag.{status}"),
            "dedup_flag",
            id.to_string(),
            serde_json::json!({"keep": keep, "withdrawn": withdrawn, "reason": reason}),
        );
        crate::write_tx!(self.ledger, |tx| {
            let n = sqlx::query(
                "UPDATE dedup_flags SET status = $1, resolved_by = $2, resolved_at = $3, reason = $4, \
                 withdrawn = $5 WHERE id = $6 AND status = 'open'",
            )
            .bind(status)
            .bind(&ctx.actor)
            .bind(now)
            .bind(reason)
            .bind(withdrawn)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 {
                return Err(RegistryError::Conflict(format!(
                    "flag {id} was already decided"
                )));
            }
            if let Some(w) = withdrawn {
                sqlx::query(
                    "UPDATE households SET status = 'withdrawn', status_changed_at = $1, status_reason = $2 \
                     WHERE id = $3",
                )
                .bind(now)
                .bind(format!("duplicate of household {}", keep.unwrap_or_default()))
                .bind(w)
                .execute(&mut *tx)
                .await?;
                let wrec = AuditRecord::new(
                    ctx,
                    "household.withdraw",
                    "household",
                    w.to_string(),
                    serde_json::json!({"status": "withdrawn", "duplicate_of": keep, "flag": id}),
                );
                AuditConn::append(&mut *tx, &wrec).await?;
            }
            AuditConn::append(&mut *tx, &rec).await?;
        });
        self.flag(id).await
    }
}
