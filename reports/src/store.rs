//! The record of every report produced (table `reports`, migration 0011) and verification of
//! a file against it.
//!
//! **Producing** a report writes, in one transaction, a `reports` row (kind, parameters as
//! canonical JSON text, format, SHA-256 of the bytes in lower-case hex, byte length, who, when)
//! and an audit event `report.produce` on object `report` (the row's id) whose change is
//! `{"kind", "parameters", "format", "sha256", "bytes"}` — the audit trail stores that
//! change's digest, chained to every other event. The table is append-only in the database.
//!
//! **Verifying** a file ([`verify`]) hashes its bytes, looks up every report recorded with that
//! hash, and for each finds its audit event and recomputes the digest of the change from the
//! row (so a row edited behind the trail's back no longer matches), then walks the whole audit
//! chain ([`cva_ledger::Ledger::verify_audit`]). A file is [`Verdict::Verified`] when some
//! record matches its event and the chain is intact; a file changed by one byte has another
//! hash and is [`Verdict::NotProduced`]: "no report with this hash was produced here".

use chrono::{DateTime, SecondsFormat, Utc};
use cva_ledger::audit::{change_digest, AuditConn, AuditContext, AuditQuery, AuditRecord};
use cva_ledger::{read_pool, write_tx, Ledger};
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::error::{ReportError, Result};
use crate::model::{Format, Parameters};

/// The audit action of a produced report.
pub const ACTION: &str = "report.produce";
/// The audit object type of a produced report.
pub const OBJECT: &str = "report";

const COLUMNS: &str = "id, kind, parameters, format, sha256, byte_len, produced_by, produced_at";

/// A report produced and recorded: its bytes and its record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Produced {
    pub record: ReportRecord,
    /// The audit event written with the record.
    pub audit_seq: i64,
    /// The file.
    #[serde(skip)]
    pub bytes: Vec<u8>,
}

/// One row of the `reports` table.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportRecord {
    pub id: i64,
    pub kind: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub parameters: Value,
    pub format: String,
    pub sha256: String,
    pub byte_len: i64,
    pub produced_by: String,
    pub produced_at: DateTime<Utc>,
}

impl ReportRecord {
    /// The change its audit event recorded the digest of.
    pub fn change(&self) -> Value {
        change(
            &self.kind,
            &self.parameters,
            &self.format,
            &self.sha256,
            self.byte_len,
        )
    }
}

fn change(kind: &str, parameters: &Value, format: &str, sha256: &str, bytes: i64) -> Value {
    json!({
        "kind": kind,
        "parameters": parameters,
        "format": format,
        "sha256": sha256,
        "bytes": bytes,
    })
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Records report `bytes` (built from `params` in `format`) and its audit event in one
/// transaction.
pub async fn record(
    ledger: &Ledger,
    params: &Parameters,
    format: Format,
    bytes: Vec<u8>,
    ctx: &AuditContext,
) -> Result<Produced> {
    ctx.validate()?;
    let sha256 = sha256_hex(&bytes);
    let byte_len = i64::try_from(bytes.len())
        .map_err(|_| ReportError::invalid("bytes", "the report is too large"))?;
    let parameters = params.to_json();
    let parameters_text = parameters.to_string();
    let kind = params.kind.as_str();
    let produced_at = cva_ledger::store::now_micros();
    let (id, seq): (i64, i64) = write_tx!(ledger, |tx| {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO reports (kind, parameters, format, sha256, byte_len, produced_by, \
             produced_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(kind)
        .bind(&parameters_text)
        .bind(format.as_str())
        .bind(&sha256)
        .bind(byte_len)
        .bind(&ctx.actor)
        .bind(produced_at)
        .fetch_one(&mut *tx)
        .await?;
        let rec = AuditRecord::new(
            ctx,
            ACTION,
            OBJECT,
            id.to_string(),
            change(kind, &parameters, format.as_str(), &sha256, byte_len),
        );
        let event = AuditConn::append(&mut *tx, &rec).await?;
        (id, event.seq)
    });
    Ok(Produced {
        record: ReportRecord {
            id,
            kind: kind.to_owned(),
            parameters,
            format: format.as_str().to_owned(),
            sha256,
            byte_len,
            produced_by: ctx.actor.clone(),
            produced_at,
        },
        audit_seq: seq,
        bytes,
    })
}

type RecordRow = (
    i64,
    String,
    String,
    String,
    String,
    i64,
    String,
    DateTime<Utc>,
);

/// Every report recorded with this SHA-256 (lower-case hex), oldest first.
pub async fn records_with_hash(ledger: &Ledger, sha256: &str) -> Result<Vec<ReportRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM reports WHERE sha256 = $1 ORDER BY id");
    let rows: Vec<RecordRow> = read_pool!(ledger, |pool| {
        sqlx::query_as(&sql).bind(sha256).fetch_all(pool).await?
    });
    rows.into_iter().map(record_from_row).collect()
}

/// The report recorded with this id.
pub async fn record_by_id(ledger: &Ledger, id: i64) -> Result<ReportRecord> {
    let sql = format!("SELECT {COLUMNS} FROM reports WHERE id = $1");
    let row: Option<RecordRow> = read_pool!(ledger, |pool| {
        sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?
    });
    record_from_row(
        row.ok_or_else(|| ReportError::NotFound(format!("report {id} does not exist")))?,
    )
}

fn record_from_row(row: RecordRow) -> Result<ReportRecord> {
    let (id, kind, parameters, format, sha256, byte_len, produced_by, produced_at) = row;
    let parameters = serde_json::from_str(&parameters)
        .map_err(|_| ReportError::Corrupt(format!("report {id}: parameters are not JSON")))?;
    Ok(ReportRecord {
        id,
        kind,
        parameters,
        format,
        sha256,
        byte_len,
        produced_by,
        produced_at,
    })
}

/// The outcome of [`verify`].
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Produced here: a record with this hash matches its audit event, and the audit chain
    /// is intact.
    Verified,
    /// No report with this hash was produced here (a changed file lands here).
    NotProduced,
    /// A record with this hash exists, but its audit event is missing or does not match it,
    /// or the audit chain is broken: the record cannot be trusted.
    Unproven,
}

/// The audit event of a report, as stored.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventRef {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub role: String,
    pub request_id: String,
    pub hash: String,
}

/// One record found for the hash, with its audit event.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Found {
    pub report: ReportRecord,
    /// Its `report.produce` event, if there is one.
    pub audit_event: Option<EventRef>,
    /// Whether that event's digest is the digest of the change rebuilt from the record, by the
    /// same actor.
    pub audit_matches: bool,
}

/// The audit chain as verification found it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainCheck {
    pub intact: bool,
    /// Events checked (up to the first break).
    pub events: u64,
    /// The first break, in words.
    pub broken: Option<String>,
}

/// What [`verify`] found about a file.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verification {
    pub verdict: Verdict,
    /// One sentence: who produced what and when, or why it is not proven.
    pub message: String,
    pub sha256: String,
    pub bytes: u64,
    pub reports: Vec<Found>,
    pub audit_chain: ChainCheck,
}

/// Verifies a file against the reports produced here (see the module docs).
pub async fn verify(ledger: &Ledger, bytes: &[u8]) -> Result<Verification> {
    let sha256 = sha256_hex(bytes);
    let records = records_with_hash(ledger, &sha256).await?;
    let mut found = Vec::with_capacity(records.len());
    for r in records {
        let q = AuditQuery {
            action: Some(ACTION.into()),
            object_type: Some(OBJECT.into()),
            object_id: Some(r.id.to_string()),
            limit: 10,
            ..AuditQuery::default()
        };
        let events = ledger.audit_events(&q).await?;
        let digest = change_digest(&r.change());
        let matching = events
            .iter()
            .find(|e| e.digest == digest && e.actor == r.produced_by);
        let event = matching.or_else(|| events.first()).map(|e| EventRef {
            seq: e.seq,
            at: e.at,
            actor: e.actor.clone(),
            role: e.role.clone(),
            request_id: e.request_id.clone(),
            hash: e.hash.clone(),
        });
        found.push(Found {
            audit_matches: matching.is_some(),
            audit_event: event,
            report: r,
        });
    }
    let chain = ledger.verify_audit().await?;
    let audit_chain = ChainCheck {
        intact: chain.is_intact(),
        events: chain.events,
        broken: chain.broken.as_ref().map(ToString::to_string),
    };
    let proven = found.iter().find(|f| f.audit_matches);
    let (verdict, message) = match (found.is_empty(), proven, &audit_chain.broken) {
        (true, _, _) => (
            Verdict::NotProduced,
            "no report with this hash was produced here".to_owned(),
        ),
        (false, Some(f), None) => (Verdict::Verified, verified_message(f, found.len())),
        (false, Some(f), Some(b)) => (
            Verdict::Unproven,
            format!(
                "report {} has this hash, but the audit trail is broken: {b}",
                f.report.id
            ),
        ),
        (false, None, _) => (
            Verdict::Unproven,
            format!(
                "report {} has this hash, but no audit event matches its record",
                found[0].report.id
            ),
        ),
    };
    Ok(Verification {
        verdict,
        message,
        sha256,
        bytes: bytes.len() as u64,
        reports: found,
        audit_chain,
    })
}

fn verified_message(f: &Found, n: usize) -> String {
    let r = &f.report;
    let role = f
        .audit_event
        .as_ref()
        .map(|e| format!(" ({}), audit event {}", e.role, e.seq))
        .unwrap_or_default();
    let more = if n > 1 {
        format!("; produced {n} times with the same bytes")
    } else {
        String::new()
    };
    format!(
        "produced here: {} report ({}) {} by {}{role} at {}, report {}; the audit trail is intact{more}",
        r.kind,
        r.format,
        r.parameters,
        r.produced_by,
        r.produced_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        r.id
    )
}
