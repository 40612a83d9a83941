//! Enrolled households: bulk import from Kobo/ODK exports and single enrolment over the API,
//! status changes under the four-eyes rule, and reading them back sealed, opened or masked.
//!
//! * Personal fields (head's name, phone number, national ID, biometric reference) are sealed
//!   with the configured [`PiiKeys`](cva_households::pii::PiiKeys) before they are written, and
//!   the identifiers also get keyed hashes (HMAC) for exact duplicate matching. The database
//!   never holds them in plaintext.
//! * An import is all-or-nothing: any bad row refuses the file with every row error and writes
//!   nothing; `dry_run` runs the whole import, duplicate checks included, and rolls it back.
//!   Submissions already enrolled in the programme (same `_uuid`) are skipped, so re-importing
//!   a file changes nothing.
//! * Status: `registered` → `verified` (by someone other than whoever enrolled it; the database
//!   refuses it too) → `suspended` ⇄ `verified`, and any → `withdrawn`. Each change is audited.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Datelike, Utc};
use cva_access::maker_checker::FourEyes;
use cva_households::dedup::{fold_name, Candidate, DedupIndex, Flag, Summary};
use cva_households::import::{self, ColumnMapping, RowError};
use cva_households::mask;
use cva_households::model::HouseholdRecord;
use cva_households::pii::{Field, PiiKeys};
use cva_ledger::audit::{AuditConn, AuditContext, AuditRecord};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::programmes::Programme;
use crate::{Registry, RegistryError, Result};

/// Jaro-Winkler threshold for similar names, in thousandths.
pub const NAME_THRESHOLD_PERMILLE: u16 = 920;
/// Rows per multi-row INSERT (24 parameters a row stays under both backends' limits).
const CHUNK: usize = 1000;

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Registered,
    Verified,
    Suspended,
    Withdrawn,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Registered => "registered",
            Status::Verified => "verified",
            Status::Suspended => "suspended",
            Status::Withdrawn => "withdrawn",
        }
    }

    pub fn parse(s: &str) -> Result<Status> {
        match s {
            "registered" => Ok(Status::Registered),
            "verified" => Ok(Status::Verified),
            "suspended" => Ok(Status::Suspended),
            "withdrawn" => Ok(Status::Withdrawn),
            _ => Err(RegistryError::invalid(
                "status",
                "must be registered, verified, suspended or withdrawn",
            )),
        }
    }
}

/// A status change.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusAction {
    Verify,
    Suspend,
    Reinstate,
    Withdraw,
}

impl StatusAction {
    pub fn as_str(self) -> &'static str {
        match self {
            StatusAction::Verify => "verify",
            StatusAction::Suspend => "suspend",
            StatusAction::Reinstate => "reinstate",
            StatusAction::Withdraw => "withdraw",
        }
    }

    /// The statuses the action starts from, and where it leads.
    fn transition(self) -> (&'static [&'static str], Status) {
        match self {
            StatusAction::Verify => (&["registered"], Status::Verified),
            StatusAction::Suspend => (&["verified"], Status::Suspended),
            StatusAction::Reinstate => (&["suspended"], Status::Verified),
            StatusAction::Withdraw => (&["registered", "verified", "suspended"], Status::Withdrawn),
        }
    }
}

/// How personal fields are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reveal {
    /// Opened: for roles whose work needs them (programme staff, administrators).
    Full,
    /// Masked (`+223 •• •• 45 67`): for finance officers and auditors.
    Masked,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HouseholdView {
    pub id: i64,
    pub programme: String,
    pub submission_id: String,
    pub submitted_at: DateTime<Utc>,
    pub enumerator: String,
    pub status: Status,
    pub head_name: String,
    pub head_sex: String,
    pub head_birth_year: i32,
    pub size: i32,
    pub displacement: String,
    pub region: String,
    pub cercle: String,
    pub commune: String,
    pub msisdn: Option<String>,
    pub operator: Option<String>,
    pub national_id: Option<String>,
    pub biometric_ref: Option<String>,
    pub enrolled_by: String,
    pub verified_by: Option<String>,
    /// Duplicate flags on this household still waiting for adjudication.
    pub open_flags: i64,
    /// Whether personal fields are masked in this view.
    pub masked: bool,
}

/// What an import did (or, for a dry run, would do).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImportReport {
    pub programme: String,
    pub file_sha256: String,
    pub dry_run: bool,
    /// Data rows read.
    pub rows: usize,
    /// Households enrolled.
    pub created: usize,
    /// Submissions already enrolled in this programme (same `_uuid`), left as they were.
    pub unchanged: usize,
    /// Duplicate flags raised, by kind.
    pub flags: FlagSummary,
    pub import_id: Option<i64>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FlagSummary {
    pub same_national_id: usize,
    pub same_biometric_ref: usize,
    pub shared_phone: usize,
    pub similar_name: usize,
    /// Households with at least one flag.
    pub households_flagged: usize,
}

impl From<Summary> for FlagSummary {
    fn from(s: Summary) -> Self {
        FlagSummary {
            same_national_id: s.same_national_id,
            same_biometric_ref: s.same_biometric_ref,
            shared_phone: s.shared_phone,
            similar_name: s.similar_name,
            households_flagged: s.households_flagged,
        }
    }
}

/// One household as a JSON body (`POST /v1/programmes/{code}/households`): the same fields and
/// rules as an import row (see `cva_households::import`), named by field.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HouseholdInput {
    pub submission_id: String,
    pub submitted_at: String,
    pub enumerator: String,
    pub consent: String,
    pub head_name: String,
    pub head_sex: String,
    pub head_birth_year: String,
    pub size: String,
    pub displacement_status: String,
    pub region: String,
    pub cercle: String,
    pub commune: String,
    pub msisdn: Option<String>,
    pub national_id: Option<String>,
    pub biometric_ref: Option<String>,
}

impl HouseholdInput {
    /// A one-row CSV with our field names as headers, and the mapping that reads it: the JSON
    /// path goes through exactly the import's validation.
    fn as_csv(&self) -> Result<(Vec<u8>, ColumnMapping)> {
        let fields: [(&str, &str); 15] = [
            ("submission_id", &self.submission_id),
            ("submitted_at", &self.submitted_at),
            ("enumerator", &self.enumerator),
            ("consent", &self.consent),
            ("head_name", &self.head_name),
            ("head_sex", &self.head_sex),
            ("head_birth_year", &self.head_birth_year),
            ("size", &self.size),
            ("displacement_status", &self.displacement_status),
            ("region", &self.region),
            ("cercle", &self.cercle),
            ("commune", &self.commune),
            ("msisdn", self.msisdn.as_deref().unwrap_or("")),
            ("national_id", self.national_id.as_deref().unwrap_or("")),
            ("biometric_ref", self.biometric_ref.as_deref().unwrap_or("")),
        ];
        let mut w = csv::Writer::from_writer(Vec::new());
        let corrupt = |e: csv::Error| RegistryError::Corrupt(e.to_string());
        w.write_record(fields.iter().map(|(k, _)| *k))
            .map_err(corrupt)?;
        w.write_record(fields.iter().map(|(_, v)| *v))
            .map_err(corrupt)?;
        let bytes = w
            .into_inner()
            .map_err(|e| RegistryError::Corrupt(e.to_string()))?;
        let mut mapping_text = String::from("field,column\n");
        for (k, _) in &fields {
            mapping_text.push_str(&format!("{k},{k}\n"));
        }
        let mapping = ColumnMapping::from_csv(&mapping_text)
            .map_err(|e| RegistryError::Corrupt(e.to_string()))?;
        Ok((bytes, mapping))
    }
}

/// A household ready to insert: sealed fields and keyed hashes.
struct Sealed {
    rec: HouseholdRecord,
    head_name: String,
    msisdn: Option<String>,
    msisdn_index: Option<String>,
    national_id: Option<String>,
    national_id_index: Option<String>,
    biometric_ref: Option<String>,
    biometric_index: Option<String>,
}

const HOUSEHOLD_COLUMNS: &str = "h.id, p.code AS programme, h.submission_id, h.submitted_at, \
    h.enumerator, h.status, h.head_name, h.head_sex, h.head_birth_year, h.size, h.displacement, \
    h.region, h.cercle, h.commune, h.msisdn, h.operator, h.national_id, h.biometric_ref, \
    h.enrolled_by, h.verified_by, \
    ((SELECT count(*) FROM dedup_flags f JOIN households o ON o.id = f.household_b \
      WHERE f.household_a = h.id AND f.status = 'open' AND o.status <> 'withdrawn') + \
     (SELECT count(*) FROM dedup_flags f JOIN households o ON o.id = f.household_a \
      WHERE f.household_b = h.id AND f.status = 'open' AND o.status <> 'withdrawn')) AS open_flags";

/// Filters for [`Registry::households`].
#[derive(Debug, Clone, Default)]
pub struct HouseholdQuery {
    pub status: Option<Status>,
    pub commune: Option<String>,
    pub after_id: i64,
    pub limit: i64,
}

impl Registry {
    /// Imports a Kobo/ODK export into `programme`. See the module documentation.
    #[tracing::instrument(skip_all, fields(programme = programme, bytes = bytes.len(), dry_run))]
    pub async fn import_households(
        &self,
        programme: &str,
        bytes: &[u8],
        mapping: &ColumnMapping,
        dry_run: bool,
        ctx: &AuditContext,
    ) -> Result<ImportReport> {
        let p = self.programme(programme).await?;
        let this_year = Utc::now().year();
        let parsed = import::parse(
            bytes,
            mapping,
            &self.operators,
            &self.default_country,
            this_year,
        )
        .map_err(|e| RegistryError::invalid("file", e.to_string()))?;
        if !parsed.errors.is_empty() {
            return Err(RegistryError::BadRows(parsed.errors));
        }
        let sha = hex::encode(Sha256::digest(bytes));
        let rows = parsed.records.len();
        let records: Vec<HouseholdRecord> = parsed.records.into_iter().map(|(_, r)| r).collect();
        self.enrol_records(&p, records, rows, &sha, dry_run, ctx)
            .await
    }

    /// Enrols one household given as JSON; the same rules as an import row. Returns the
    /// household (opened) and the flags raised.
    pub async fn enrol(
        &self,
        programme: &str,
        input: &HouseholdInput,
        ctx: &AuditContext,
    ) -> Result<(HouseholdView, FlagSummary)> {
        let p = self.programme(programme).await?;
        let (bytes, mapping) = input.as_csv()?;
        let parsed = import::parse(
            &bytes,
            &mapping,
            &self.operators,
            &self.default_country,
            Utc::now().year(),
        )
        .map_err(|e| RegistryError::invalid("household", e.to_string()))?;
        if let Some(e) = parsed.errors.first() {
            return Err(RegistryError::invalid(e.column.clone(), e.reason.clone()));
        }
        let records: Vec<HouseholdRecord> = parsed.records.into_iter().map(|(_, r)| r).collect();
        let submission = records
            .first()
            .map(|r| r.submission_id.clone())
            .ok_or_else(|| RegistryError::invalid("household", "no household given"))?;
        let sha = hex::encode(Sha256::digest(&bytes));
        let report = self.enrol_records(&p, records, 1, &sha, false, ctx).await?;
        if report.created == 0 {
            return Err(RegistryError::Conflict(format!(
                "submission {submission} is already enrolled in `{}`",
                p.code
            )));
        }
        let id: i64 = read_pool!(self.ledger, |pool| {
            sqlx::query_scalar(
                "SELECT id FROM households WHERE programme_id = $1 AND submission_id = $2",
            )
            .bind(p.id)
            .bind(&submission)
            .fetch_one(pool)
            .await?
        });
        Ok((self.household(id, Reveal::Full).await?, report.flags))
    }

    async fn enrol_records(
        &self,
        p: &Programme,
        records: Vec<HouseholdRecord>,
        rows: usize,
        sha: &str,
        dry_run: bool,
        ctx: &AuditContext,
    ) -> Result<ImportReport> {
        let existing: HashSet<String> = read_pool!(self.ledger, |pool| {
            sqlx::query_scalar::<_, String>(
                "SELECT submission_id FROM households WHERE programme_id = $1",
            )
            .bind(p.id)
            .fetch_all(pool)
            .await?
            .into_iter()
            .collect()
        });
        let mut fresh = Vec::new();
        let mut unchanged = 0;
        for r in records {
            if existing.contains(&r.submission_id) {
                unchanged += 1;
            } else {
                fresh.push(r);
            }
        }
        // Sealing (CPU) runs on blocking threads while the households already enrolled are
        // loaded into the duplicate index (database, then opening their names).
        let (sealed, mut index) =
            tokio::try_join!(seal_all(self.keys.clone(), fresh), self.dedup_index(p))?;
        // Duplicate detection needs no database id: the new households get provisional keys
        // (-1, -2, … in file order) and are compared on a blocking thread while the
        // transaction below inserts them; the keys are replaced by the ids afterwards.
        let candidates: Vec<Candidate> = sealed
            .iter()
            .enumerate()
            .map(|(i, s)| candidate(p.code.as_str(), provisional_key(i), s))
            .collect();
        let dedup = tokio::task::spawn_blocking(move || {
            let mut flags: Vec<Flag> = Vec::new();
            for c in candidates {
                flags.extend(index.add(c));
            }
            flags
        });
        let now = crate::now();
        let change_ids: Vec<&str> = sealed
            .iter()
            .map(|s| s.rec.submission_id.as_str())
            .collect();
        let change = serde_json::json!({
            "programme": p.code.as_str(), "file_sha256": sha, "rows": rows,
            "created": change_ids, "unchanged": unchanged,
        });
        let mut report = ImportReport {
            programme: p.code.as_str().to_owned(),
            file_sha256: sha.to_owned(),
            dry_run,
            rows,
            created: sealed.len(),
            unchanged,
            flags: FlagSummary::default(),
            import_id: None,
        };
        macro_rules! body {
            ($tx:ident, $pg:expr, $insert:ident) => {{
                let import_id: i64 = sqlx::query_scalar(
                    "INSERT INTO household_imports (programme_id, file_sha256, rows, created, unchanged, \
                     summary, imported_at, imported_by) VALUES ($1, $2, $3, $4, $5, '{}', $6, $7) RETURNING id",
                )
                .bind(p.id)
                .bind(sha)
                .bind(rows as i64)
                .bind(sealed.len() as i64)
                .bind(unchanged as i64)
                .bind(now)
                .bind(&ctx.actor)
                .fetch_one(&mut *$tx)
                .await?;
                let ids = $insert(&mut *$tx, p.id, &sealed, &ctx.actor, now, import_id).await?;
                let real = |key: i64| -> Result<i64> {
                    if key >= 0 {
                        return Ok(key);
                    }
                    sealed
                        .get(usize::try_from(-(key + 1)).unwrap_or(usize::MAX))
                        .and_then(|s| ids.get(&s.rec.submission_id))
                        .copied()
                        .ok_or_else(|| RegistryError::Corrupt("inserted household without an id".into()))
                };
                let mut flags = dedup
                    .await
                    .map_err(|e| RegistryError::Corrupt(format!("duplicate detection failed: {e}")))?;
                for f in &mut flags {
                    f.a = real(f.a)?;
                    f.b = real(f.b)?;
                }
                for chunk in flags.chunks(CHUNK) {
                    let mut sql = String::from(
                        "INSERT INTO dedup_flags (household_a, household_b, kind, score_permille, created_at, import_id) VALUES ",
                    );
                    sql.push_str(&crate::values_list(chunk.len(), 6, $pg));
                    let mut q = sqlx::query(&sql);
                    for f in chunk {
                        let score = match f.kind {
                            cva_households::dedup::FlagKind::SimilarName { score_permille } => {
                                Some(i32::from(score_permille))
                            }
                            _ => None,
                        };
                        q = q
                            .bind(f.a)
                            .bind(f.b)
                            .bind(f.kind.as_str())
                            .bind(score)
                            .bind(now)
                            .bind(import_id);
                    }
                    q.execute(&mut *$tx).await?;
                }
                let summary = FlagSummary::from(Summary::from_flags(&flags));
                sqlx::query("UPDATE household_imports SET summary = $1 WHERE id = $2")
                    .bind(serde_json::to_string(&summary).unwrap_or_default())
                    .bind(import_id)
                    .execute(&mut *$tx)
                    .await?;
                let mut change = change;
                change["flags"] = serde_json::to_value(&summary).unwrap_or_default();
                let rec = AuditRecord::new(ctx, "household.import", "household_import", import_id.to_string(), change);
                AuditConn::append(&mut *$tx, &rec).await?;
                report.flags = summary;
                report.import_id = (!dry_run).then_some(import_id);
            }};
        }
        if let Some(pool) = self.ledger.pg_pool() {
            let mut tx = pool.begin().await?;
            body!(tx, true, insert_households_pg);
            if dry_run {
                tx.rollback().await?;
            } else {
                tx.commit().await?;
            }
        } else if let Some(pool) = self.ledger.sqlite_pool() {
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            body!(tx, false, insert_households_sqlite);
            if dry_run {
                tx.rollback().await?;
            } else {
                tx.commit().await?;
            }
        } else {
            return Err(RegistryError::NoBackend);
        }
        Ok(report)
    }

    /// Every household that new enrolments in `p` are compared with: those not withdrawn, in
    /// `p` and in every programme whose period overlaps it (programmes running the same cycle).
    async fn dedup_index(&self, p: &Programme) -> Result<DedupIndex> {
        let rows: Vec<CandidateRow> = read_pool!(self.ledger, |pool| {
            sqlx::query_as(
                "SELECT h.id, q.code, h.commune, h.size, h.head_name, h.national_id_index, \
                     h.biometric_index, h.msisdn_index, h.head_birth_year, h.head_sex \
                     FROM households h JOIN programmes q ON q.id = h.programme_id \
                     WHERE h.status <> 'withdrawn' AND q.starts_on <= $1 AND q.ends_on >= $2 \
                     ORDER BY h.id",
            )
            .bind(p.ends_on)
            .bind(p.starts_on)
            .fetch_all(pool)
            .await?
        });
        let mut index = DedupIndex::new(NAME_THRESHOLD_PERMILLE);
        for (id, programme, commune, size, name, nid, bio, msisdn, year, sex) in rows {
            let name = self.keys.open(Field::HeadName, &name)?;
            // Existing households were compared when they were enrolled: adding them raises
            // nothing new worth recording, so their flags are dropped here.
            let _ = index.add(Candidate {
                key: id,
                programme,
                commune,
                size: u16::try_from(size).unwrap_or(0),
                folded_name: fold_name(&name),
                national_id_hash: nid,
                biometric_hash: bio,
                msisdn_hash: msisdn,
                birth_year: Some(year),
                sex: Some(sex),
            });
        }
        Ok(index)
    }

    /// One household, opened or masked.
    pub async fn household(&self, id: i64, reveal: Reveal) -> Result<HouseholdView> {
        let sql = format!(
            "SELECT {HOUSEHOLD_COLUMNS} FROM households h JOIN programmes p ON p.id = h.programme_id \
             WHERE h.id = $1"
        );
        let view = read_pool!(self.ledger, |pool| {
            match sqlx::query(&sql).bind(id).fetch_optional(pool).await? {
                Some(r) => Some(self.view(&r, reveal)?),
                None => None,
            }
        });
        view.ok_or_else(|| RegistryError::NotFound(format!("household {id} does not exist")))
    }

    /// The programme of a household (for scope checks before acting on it).
    pub async fn household_programme(&self, id: i64) -> Result<String> {
        let code: Option<String> = read_pool!(self.ledger, |pool| {
            sqlx::query_scalar(
                "SELECT p.code FROM households h JOIN programmes p ON p.id = h.programme_id WHERE h.id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        code.ok_or_else(|| RegistryError::NotFound(format!("household {id} does not exist")))
    }

    /// A page of a programme's households in id order, after `q.after_id`.
    pub async fn households(
        &self,
        programme: &str,
        q: &HouseholdQuery,
        reveal: Reveal,
    ) -> Result<Vec<HouseholdView>> {
        let p = self.programme(programme).await?;
        if !(1..=1000).contains(&q.limit) {
            return Err(RegistryError::invalid("limit", "must be 1 to 1000"));
        }
        let sql = format!(
            "SELECT {HOUSEHOLD_COLUMNS} FROM households h JOIN programmes p ON p.id = h.programme_id \
             WHERE h.programme_id = $1 AND h.id > $2 AND ($3 IS NULL OR h.status = $3) \
             AND ($4 IS NULL OR h.commune = $4) ORDER BY h.id LIMIT $5"
        );
        let status = q.status.map(Status::as_str);
        Ok(read_pool!(self.ledger, |pool| {
            let rows = sqlx::query(&sql)
                .bind(p.id)
                .bind(q.after_id)
                .bind(status)
                .bind(q.commune.as_deref())
                .bind(q.limit)
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|r| self.view(r, reveal))
                .collect::<Result<Vec<_>>>()?
        }))
    }

    fn view<R: Row>(&self, r: &R, reveal: Reveal) -> Result<HouseholdView>
    where
        for<'a> &'a str: sqlx::ColumnIndex<R>,
        i64: sqlx::Type<R::Database> + for<'a> sqlx::Decode<'a, R::Database>,
        i32: sqlx::Type<R::Database> + for<'a> sqlx::Decode<'a, R::Database>,
        String: sqlx::Type<R::Database> + for<'a> sqlx::Decode<'a, R::Database>,
        Option<String>: sqlx::Type<R::Database> + for<'a> sqlx::Decode<'a, R::Database>,
        DateTime<Utc>: sqlx::Type<R::Database> + for<'a> sqlx::Decode<'a, R::Database>,
    {
        let k = &self.keys;
        let open = |field: Field, sealed: Option<String>| -> Result<Option<String>> {
            let Some(s) = sealed else { return Ok(None) };
            let plain = k.open(field, &s)?;
            Ok(Some(match reveal {
                Reveal::Full => plain,
                Reveal::Masked => match field {
                    Field::HeadName => mask::name(&plain),
                    Field::Msisdn => mask::msisdn(&plain),
                    Field::NationalId | Field::BiometricRef => mask::id(&plain),
                },
            }))
        };
        let status: String = r.try_get("status")?;
        Ok(HouseholdView {
            id: r.try_get("id")?,
            programme: r.try_get("programme")?,
            submission_id: r.try_get("submission_id")?,
            submitted_at: r.try_get("submitted_at")?,
            enumerator: r.try_get("enumerator")?,
            status: Status::parse(&status)
                .map_err(|_| RegistryError::Corrupt("household status".into()))?,
            head_name: open(Field::HeadName, Some(r.try_get("head_name")?))?.unwrap_or_default(),
            head_sex: r.try_get("head_sex")?,
            head_birth_year: r.try_get("head_birth_year")?,
            size: r.try_get("size")?,
            displacement: r.try_get("displacement")?,
            region: r.try_get("region")?,
            cercle: r.try_get("cercle")?,
            commune: r.try_get("commune")?,
            msisdn: open(Field::Msisdn, r.try_get("msisdn")?)?,
            operator: r.try_get("operator")?,
            national_id: open(Field::NationalId, r.try_get("national_id")?)?,
            biometric_ref: open(Field::BiometricRef, r.try_get("biometric_ref")?)?,
            enrolled_by: r.try_get("enrolled_by")?,
            verified_by: r.try_get("verified_by")?,
            open_flags: r.try_get("open_flags")?,
            masked: reveal == Reveal::Masked,
        })
    }

    /// Changes a household's status. Verification refuses whoever enrolled the household
    /// (maker-checker). Audited `household.ACTION`.
    pub async fn set_status(
        &self,
        id: i64,
        action: StatusAction,
        reason: Option<&str>,
        ctx: &AuditContext,
    ) -> Result<HouseholdView> {
        let (from, to) = action.transition();
        let reason = reason.map(str::trim).filter(|r| !r.is_empty());
        if matches!(action, StatusAction::Suspend | StatusAction::Withdraw) && reason.is_none() {
            return Err(RegistryError::invalid(
                "reason",
                "say why (1 to 500 characters)",
            ));
        }
        if reason.is_some_and(|r| r.chars().count() > 500) {
            return Err(RegistryError::invalid("reason", "at most 500 characters"));
        }
        let now = crate::now();
        let rec = AuditRecord::new(
            ctx,
            &format!("household.{}", action.as_str()),
            "household",
            id.to_string(),
            serde_json::json!({"status": to.as_str(), "reason": reason}),
        );
        crate::write_tx!(self.ledger, |tx| {
            let row: Option<(String, String)> =
                sqlx::query_as("SELECT status, enrolled_by FROM households WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let (status, enrolled_by) = row
                .ok_or_else(|| RegistryError::NotFound(format!("household {id} does not exist")))?;
            if !from.contains(&status.as_str()) {
                return Err(RegistryError::Conflict(format!(
                    "household {id} is {status}; it cannot be {}d from there",
                    action.as_str().trim_end_matches('e')
                )));
            }
            if action == StatusAction::Verify {
                // The shared maker-checker rule; the database's CHECK refuses it as well.
                FourEyes::new(enrolled_by)
                    .check("verify", &ctx.actor)
                    .map_err(|_| {
                        RegistryError::SamePerson(format!(
                            "household {id} was enrolled by you; another person must verify it"
                        ))
                    })?;
            }
            let verified_by = if action == StatusAction::Verify {
                Some(ctx.actor.as_str())
            } else {
                None
            };
            sqlx::query(
                "UPDATE households SET status = $1, status_changed_at = $2, status_reason = $3, \
                 verified_by = COALESCE($4, verified_by), verified_at = CASE WHEN $4 IS NULL THEN verified_at ELSE $2 END \
                 WHERE id = $5",
            )
            .bind(to.as_str())
            .bind(now)
            .bind(reason)
            .bind(verified_by)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            AuditConn::append(&mut *tx, &rec).await?;
        });
        self.household(id, Reveal::Full).await
    }
}

/// The key a new household has in the duplicate index before it has an id: `-(i + 1)` for the
/// `i`-th new household (ids in the store are positive).
fn provisional_key(i: usize) -> i64 {
    -(i as i64) - 1
}

/// Seals every record's personal fields, split over one blocking thread per core; order kept.
async fn seal_all(keys: Arc<PiiKeys>, records: Vec<HouseholdRecord>) -> Result<Vec<Sealed>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = records.len().div_ceil(threads).max(1);
    let mut records = records.into_iter();
    let mut tasks = Vec::new();
    loop {
        let part: Vec<HouseholdRecord> = records.by_ref().take(per).collect();
        if part.is_empty() {
            break;
        }
        let keys = keys.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            part.into_iter()
                .map(|r| seal(&keys, r))
                .collect::<Vec<Sealed>>()
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.extend(
            t.await
                .map_err(|e| RegistryError::Corrupt(format!("sealing failed: {e}")))?,
        );
    }
    Ok(out)
}

fn seal(k: &PiiKeys, rec: HouseholdRecord) -> Sealed {
    let msisdn = rec.msisdn.as_ref().map(|m| m.as_str().to_owned());
    Sealed {
        head_name: k.seal(Field::HeadName, &rec.head_name),
        msisdn: msisdn.as_deref().map(|m| k.seal(Field::Msisdn, m)),
        msisdn_index: msisdn.as_deref().map(|m| k.blind_index(Field::Msisdn, m)),
        national_id: rec
            .national_id
            .as_deref()
            .map(|v| k.seal(Field::NationalId, v)),
        national_id_index: rec
            .national_id
            .as_deref()
            .map(|v| k.blind_index(Field::NationalId, v)),
        biometric_ref: rec
            .biometric_ref
            .as_deref()
            .map(|v| k.seal(Field::BiometricRef, v)),
        biometric_index: rec
            .biometric_ref
            .as_deref()
            .map(|v| k.blind_index(Field::BiometricRef, v)),
        rec,
    }
}

/// Inserts households on SQLite: multi-row `VALUES` with positional parameters. Returns the new
/// ids by submission id.
async fn insert_households_sqlite(
    conn: &mut sqlx::SqliteConnection,
    programme_id: i64,
    sealed: &[Sealed],
    actor: &str,
    now: DateTime<Utc>,
    import_id: i64,
) -> Result<HashMap<String, i64>> {
    let mut ids: HashMap<String, i64> = HashMap::with_capacity(sealed.len());
    for chunk in sealed.chunks(CHUNK) {
        let mut sql = String::from(
                "INSERT INTO households (programme_id, submission_id, submitted_at, enumerator, consent, \
                 head_name, head_sex, head_birth_year, size, displacement, region, cercle, commune, \
                 msisdn, msisdn_index, operator, national_id, national_id_index, biometric_ref, \
                 biometric_index, enrolled_by, enrolled_at, import_id, status_changed_at) VALUES ",
            );
        sql.push_str(&crate::values_list(chunk.len(), 24, false));
        sql.push_str(" RETURNING id, submission_id");
        let mut q = sqlx::query(&sql);
        for s in chunk {
            let r = &s.rec;
            q = q
                .bind(programme_id)
                .bind(&r.submission_id)
                .bind(r.submitted_at)
                .bind(&r.enumerator)
                .bind(r.consent)
                .bind(&s.head_name)
                .bind(r.head_sex.as_str())
                .bind(r.head_birth_year)
                .bind(i32::from(r.size))
                .bind(r.displacement.as_str())
                .bind(r.region.as_str())
                .bind(r.cercle.as_str())
                .bind(r.commune.as_str())
                .bind(&s.msisdn)
                .bind(&s.msisdn_index)
                .bind(&r.operator)
                .bind(&s.national_id)
                .bind(&s.national_id_index)
                .bind(&s.biometric_ref)
                .bind(&s.biometric_index)
                .bind(actor)
                .bind(now)
                .bind(import_id)
                .bind(now);
        }
        for row in q.fetch_all(&mut *conn).await? {
            ids.insert(row.try_get(1)?, row.try_get(0)?);
        }
    }
    Ok(ids)
}

/// Inserts households on PostgreSQL: one `INSERT … SELECT FROM UNNEST(arrays)` per chunk, which
/// PostgreSQL parses once and binds as 24 arrays instead of tens of thousands of parameters.
async fn insert_households_pg(
    conn: &mut sqlx::PgConnection,
    programme_id: i64,
    sealed: &[Sealed],
    actor: &str,
    now: DateTime<Utc>,
    import_id: i64,
) -> Result<HashMap<String, i64>> {
    let mut ids: HashMap<String, i64> = HashMap::with_capacity(sealed.len());
    for chunk in sealed.chunks(20_000) {
        let col = |f: &dyn Fn(&Sealed) -> String| chunk.iter().map(f).collect::<Vec<String>>();
        let opt = |f: &dyn Fn(&Sealed) -> Option<String>| {
            chunk.iter().map(f).collect::<Vec<Option<String>>>()
        };
        let rows = sqlx::query(
            "INSERT INTO households (programme_id, submission_id, submitted_at, enumerator, consent, \
             head_name, head_sex, head_birth_year, size, displacement, region, cercle, commune, \
             msisdn, msisdn_index, operator, national_id, national_id_index, biometric_ref, \
             biometric_index, enrolled_by, enrolled_at, import_id, status_changed_at) \
             SELECT $1, u.submission_id, u.submitted_at, u.enumerator, TRUE, u.head_name, u.head_sex, \
             u.head_birth_year, u.size, u.displacement, u.region, u.cercle, u.commune, u.msisdn, \
             u.msisdn_index, u.operator, u.national_id, u.national_id_index, u.biometric_ref, \
             u.biometric_index, $2, $3, $4, $3 \
             FROM UNNEST($5::text[], $6::timestamptz[], $7::text[], $8::text[], $9::text[], $10::int[], \
             $11::int[], $12::text[], $13::text[], $14::text[], $15::text[], $16::text[], $17::text[], \
             $18::text[], $19::text[], $20::text[], $21::text[], $22::text[]) AS u (submission_id, \
             submitted_at, enumerator, head_name, head_sex, head_birth_year, size, displacement, region, \
             cercle, commune, msisdn, msisdn_index, operator, national_id, national_id_index, \
             biometric_ref, biometric_index) \
             RETURNING id, submission_id",
        )
        .bind(programme_id)
        .bind(actor)
        .bind(now)
        .bind(import_id)
        .bind(col(&|s| s.rec.submission_id.clone()))
        .bind(chunk.iter().map(|s| s.rec.submitted_at).collect::<Vec<_>>())
        .bind(col(&|s| s.rec.enumerator.clone()))
        .bind(col(&|s| s.head_name.clone()))
        .bind(col(&|s| s.rec.head_sex.as_str().to_owned()))
        .bind(chunk.iter().map(|s| s.rec.head_birth_year).collect::<Vec<i32>>())
        .bind(chunk.iter().map(|s| i32::from(s.rec.size)).collect::<Vec<i32>>())
        .bind(col(&|s| s.rec.displacement.as_str().to_owned()))
        .bind(col(&|s| s.rec.region.as_str().to_owned()))
        .bind(col(&|s| s.rec.cercle.as_str().to_owned()))
        .bind(col(&|s| s.rec.commune.as_str().to_owned()))
        .bind(opt(&|s| s.msisdn.clone()))
        .bind(opt(&|s| s.msisdn_index.clone()))
        .bind(opt(&|s| s.rec.operator.clone()))
        .bind(opt(&|s| s.national_id.clone()))
        .bind(opt(&|s| s.national_id_index.clone()))
        .bind(opt(&|s| s.biometric_ref.clone()))
        .bind(opt(&|s| s.biometric_index.clone()))
        .fetch_all(&mut *conn)
        .await?;
        for row in rows {
            ids.insert(row.try_get(1)?, row.try_get(0)?);
        }
    }
    Ok(ids)
}

/// id, programme, commune, size, sealed name, national ID hash, biometric hash, phone hash,
/// birth year, sex.
type CandidateRow = (
    i64,
    String,
    String,
    i32,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    i32,
    String,
);

fn candidate(programme: &str, key: i64, s: &Sealed) -> Candidate {
    Candidate {
        key,
        programme: programme.to_owned(),
        commune: s.rec.commune.as_str().to_owned(),
        size: s.rec.size,
        folded_name: fold_name(&s.rec.head_name),
        national_id_hash: s.national_id_index.clone(),
        biometric_hash: s.biometric_index.clone(),
        msisdn_hash: s.msisdn_index.clone(),
        birth_year: Some(s.rec.head_birth_year),
        sex: Some(s.rec.head_sex.as_str().to_owned()),
    }
}

/// Row errors as returned to a caller (row, column, reason), e.g. for a CLI report.
pub fn row_errors_csv(errors: &[RowError]) -> String {
    let mut out = String::from("row,column,reason\n");
    for e in errors {
        let mut w = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(Vec::new());
        let _ = w.write_record([
            e.row.to_string().as_str(),
            e.column.as_str(),
            e.reason.as_str(),
        ]);
        if let Ok(b) = w.into_inner() {
            out.push_str(&String::from_utf8_lossy(&b));
        }
    }
    out
}
