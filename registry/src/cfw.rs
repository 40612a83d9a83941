//! Cash-for-work attendance: the days each household's workers worked in a cycle, recorded from
//! attendance sheets (see [`cva_programmes::attendance`] for the sheet's format) into
//! `cfw_days`, where [`Registry::generate_entitlements`] reads them for
//! [`Modality::CashForWork`](cva_programmes::rules::Modality::CashForWork).
//!
//! * All or nothing: any bad row, or a `household_id` that is not the submission id (`_uuid`) of
//!   one of the programme's households, refuses the sheet with every row error
//!   ([`RegistryError::BadRows`]) and writes nothing. Households need not be verified yet to
//!   have attendance recorded (they must be to be paid).
//! * One sheet per (household, cycle, worker): importing the same sheet again (same SHA-256)
//!   changes nothing and says so (`unchanged`); a different sheet naming a (household, cycle,
//!   worker) already recorded is refused (409) with the first clash — cancel the earlier record
//!   first. Days for a household whose cash-for-work entitlement for the cycle already exists are
//!   refused too: they could never be paid.
//! * Workers with no present day are not recorded. The import is audited `cfw.attendance` with
//!   the sheet's hash, the cycle and the counts (never names or phone numbers: the sheet has
//!   none, and submission ids are not personal data), in the same transaction.

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDate;
use cva_households::import::RowError;
use cva_ledger::audit::{AuditConn, AuditContext, AuditRecord};
use cva_programmes::attendance;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{Registry, RegistryError, Result};

/// Rows per multi-row INSERT (5 parameters a row).
const CHUNK: usize = 1000;

/// What an attendance import did.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttendanceReport {
    pub cycle: String,
    pub sheet_sha256: String,
    /// Households with at least one present day in the sheet.
    pub households: usize,
    /// Workers with at least one present day in the sheet.
    pub workers: usize,
    /// Present days in the sheet, before any cap of the rule.
    pub days: u64,
    /// The same sheet was already recorded: nothing was written.
    pub unchanged: bool,
}

/// The cycle code, as entitlements accept it.
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

/// A submission id as households store it: lower-case, without a `uuid:` prefix.
fn normalise(id: &str) -> String {
    let id = id.trim();
    let id = match id.get(..5) {
        Some(p) if p.eq_ignore_ascii_case("uuid:") => &id[5..],
        _ => id,
    };
    id.to_ascii_lowercase()
}

fn conflict_on_unique(e: sqlx::Error, what: impl FnOnce() -> String) -> RegistryError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => RegistryError::Conflict(what()),
        _ => RegistryError::Database(e),
    }
}

impl Registry {
    /// Records a cash-for-work attendance sheet for `cycle` (`cycle_start..=cycle_end`) of
    /// `programme`. See the module documentation.
    #[tracing::instrument(skip_all, fields(programme = programme, cycle = cycle, bytes = bytes.len()))]
    pub async fn import_attendance(
        &self,
        programme: &str,
        cycle: &str,
        cycle_start: NaiveDate,
        cycle_end: NaiveDate,
        bytes: &[u8],
        ctx: &AuditContext,
    ) -> Result<AttendanceReport> {
        check_cycle(cycle)?;
        let p = self.programme(programme).await?;
        let parsed = attendance::parse(bytes, cycle_start, cycle_end)
            .map_err(|e| RegistryError::invalid("file", e.to_string()))?;
        let mut errors: Vec<RowError> = parsed
            .errors
            .into_iter()
            .map(|e| RowError {
                row: usize::try_from(e.row).unwrap_or(usize::MAX),
                column: e.column.unwrap_or_default(),
                reason: e.reason,
            })
            .collect();

        let enrolled: HashMap<String, i64> = crate::read_pool!(self.ledger, |pool| {
            sqlx::query_as::<_, (String, i64)>(
                "SELECT submission_id, id FROM households WHERE programme_id = $1",
            )
            .bind(p.id)
            .fetch_all(pool)
            .await?
            .into_iter()
            .collect()
        });
        // (household id → days per worker), in household id order for stable clash reports.
        let mut days: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
        let mut spelled: HashMap<i64, &str> = HashMap::new();
        for (submission, per_worker) in &parsed.days {
            match enrolled.get(&normalise(submission)) {
                None => errors.push(RowError {
                    row: 0,
                    column: "household_id".into(),
                    reason: format!(
                        "submission `{submission}` is not a household of programme `{}`",
                        p.code
                    ),
                }),
                Some(&hh) => {
                    if let Some(other) = spelled.insert(hh, submission) {
                        errors.push(RowError {
                            row: 0,
                            column: "household_id".into(),
                            reason: format!(
                                "submissions `{other}` and `{submission}` are the same household; \
                                 write it one way"
                            ),
                        });
                    } else {
                        days.insert(hh, per_worker.clone());
                    }
                }
            }
        }
        if !errors.is_empty() {
            return Err(RegistryError::BadRows(errors));
        }

        // (household, worker, days) for every worker with a present day.
        let rows: Vec<(i64, i32, i32)> = days
            .iter()
            .flat_map(|(&hh, per_worker)| {
                per_worker
                    .iter()
                    .enumerate()
                    .filter(|(_, &d)| d > 0)
                    .map(move |(i, &d)| {
                        (
                            hh,
                            i32::try_from(i + 1).unwrap_or(i32::MAX),
                            i32::try_from(d).unwrap_or(i32::MAX),
                        )
                    })
            })
            .collect();
        if rows.is_empty() {
            return Err(RegistryError::invalid(
                "file",
                "the sheet has no present day: nothing to record",
            ));
        }
        let sha = hex::encode(Sha256::digest(bytes));
        let mut report = AttendanceReport {
            cycle: cycle.to_owned(),
            sheet_sha256: sha.clone(),
            households: days.len(),
            workers: rows.len(),
            days: rows.iter().map(|r| u64::try_from(r.2).unwrap_or(0)).sum(),
            unchanged: false,
        };
        let rec = AuditRecord::new(
            ctx,
            "cfw.attendance",
            "cfw_sheet",
            sha.clone(),
            serde_json::json!({
                "programme": p.code.as_str(), "cycle": cycle,
                "cycle_start": cycle_start, "cycle_end": cycle_end, "sheet_sha256": sha,
                "households": report.households, "workers": report.workers, "days": report.days,
            }),
        );
        let clash = |hh: i64, worker: i32| {
            format!(
                "household {hh}, worker {worker}: attendance for cycle {cycle} is already recorded \
                 from another sheet; cancel it before importing this one"
            )
        };
        report.unchanged = crate::write_tx!(self.ledger, |tx| {
            let existing: HashMap<(i64, i32), (i32, String)> =
                sqlx::query_as::<_, (i64, i32, i32, String)>(
                    "SELECT d.household_id, d.worker, d.days, d.sheet_sha256 FROM cfw_days d \
                     JOIN households h ON h.id = d.household_id \
                     WHERE h.programme_id = $1 AND d.cycle = $2",
                )
                .bind(p.id)
                .bind(cycle)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .map(|(hh, w, d, s)| ((hh, w), (d, s)))
                .collect();
            let mut fresh = Vec::with_capacity(rows.len());
            for &(hh, worker, d) in &rows {
                match existing.get(&(hh, worker)) {
                    Some((had, s)) if *s == sha && *had == d => {}
                    Some(_) => return Err(RegistryError::Conflict(clash(hh, worker))),
                    None => fresh.push((hh, worker, d)),
                }
            }
            if fresh.is_empty() {
                true
            } else {
                let paid: Vec<i64> = sqlx::query_scalar(
                    "SELECT household_id FROM entitlements \
                     WHERE programme_id = $1 AND modality = 'cash_for_work' AND cycle = $2 \
                     ORDER BY household_id",
                )
                .bind(p.id)
                .bind(cycle)
                .fetch_all(&mut *tx)
                .await?;
                if let Some(&(hh, _, _)) = fresh.iter().find(|r| paid.binary_search(&r.0).is_ok()) {
                    return Err(RegistryError::Conflict(format!(
                        "household {hh} already has its cash-for-work entitlement for cycle \
                         {cycle}; days recorded now could not be paid"
                    )));
                }
                for chunk in fresh.chunks(CHUNK) {
                    let mut sql = String::from(
                        "INSERT INTO cfw_days (household_id, cycle, worker, days, sheet_sha256) VALUES ",
                    );
                    for i in 0..chunk.len() {
                        let b = i * 5;
                        if i > 0 {
                            sql.push(',');
                        }
                        sql.push_str(&format!(
                            "(${}, ${}, ${}, ${}, ${})",
                            b + 1,
                            b + 2,
                            b + 3,
                            b + 4,
                            b + 5
                        ));
                    }
                    let mut q = sqlx::query(&sql);
                    for &(hh, worker, d) in chunk {
                        q = q.bind(hh).bind(cycle).bind(worker).bind(d).bind(&sha);
                    }
                    q.execute(&mut *tx).await.map_err(|e| {
                        conflict_on_unique(e, || {
                            format!(
                                "attendance for cycle {cycle} was recorded from another sheet \
                                 meanwhile; import again to see the clash"
                            )
                        })
                    })?;
                }
                AuditConn::append(&mut *tx, &rec).await?;
                false
            }
        });
        Ok(report)
    }
}
