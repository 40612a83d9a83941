//! The file adapter, for providers without an API: a bulk-payment CSV exported for the
//! provider, and the provider's result file imported back, with the same outcomes as the API.
//!
//! # Export
//!
//! [`Batches::export_file`] takes a `released` batch of a provider configured with
//! `"adapter": "file"` and, in one transaction with its audit event (`batch.export`): moves the
//! batch to `sending`, records one `payment_attempts` row (adapter `file`, a new UUID as the
//! file's reference, status `accepted`), and moves every line to `in_flight` under that
//! attempt. From then on the lines are in the provider's hands as far as the ledger is
//! concerned: whoever holds the file can have it paid. Exporting a `sending` batch again gives
//! the very same file (same reference, same rows, same SHA-256; audited `batch.export.again`),
//! and is refused if it can no longer be reproduced byte for byte (a household's phone number
//! changed since), so the provider is never handed two different instructions under one
//! reference.
//!
//! The file is UTF-8 CSV (RFC 4180: `,` delimiter, fields quoted where needed, lines ending in
//! CRLF) with a header row and one row per line, in line order:
//!
//! | column            | content                                                           |
//! |-------------------|-------------------------------------------------------------------|
//! | `reference`       | our line id: the provider must return it in the result file       |
//! | `msisdn`          | the household's phone number, E.164 as stored (`+22376123456`)   |
//! | `amount`          | the amount to pay, major units, decimal string (`20000` XOF)      |
//! | `currency`        | ISO 4217 code (`XOF`)                                             |
//! | `fee`             | the fee we expect the provider to charge, major units            |
//! | `batch_reference` | the file's reference (a UUID), the same on every row             |
//! | `description`     | `Cash assistance {programme} batch {batch id}`                    |
//!
//! The file holds phone numbers: it goes to the provider and nowhere else. Its audit event
//! holds the line ids, count, total and the file's SHA-256, never a phone number; its name
//! (`{provider}-batch-{id}-{reference}.csv`) neither. The SHA-256 is also kept in the
//! attempt's `server_correlation_id` (a file has no server side) to check re-exports against.
//!
//! # Result file
//!
//! [`Batches::import_results`] reads the provider's answer: a CSV with the header
//! `reference,status,provider_transaction_id,reason` (columns found by name, any case, any
//! order, other columns ignored; a UTF-8 byte-order mark and the `;` delimiter are accepted).
//!
//! | `status`                        | meaning                                                  |
//! |---------------------------------|----------------------------------------------------------|
//! | `completed`, `paid`, `success`  | paid; `provider_transaction_id` is required              |
//! | `failed`, `rejected`            | not paid; `reason` is required: its first word, a GSMA error code such as `identifierError`, gives our failure code (`account_not_registered`) |
//! | `pending`                       | not resolved yet: the line stays in flight            |
//!
//! Every row is checked before anything is applied. A reference that is not a line of the
//! batch, a reference twice, an unknown status, a missing transaction id or reason, a provider
//! transaction id given for two lines, or an outcome contradicting one already recorded
//! (completed before, failed or pending now; another transaction id) refuses the whole file
//! ([`RegistryError::BadRows`], each error with its row — the header is row 1 — column and
//! reason, never a value from the file) and nothing changes. Rows repeating an outcome already
//! recorded are accepted and change nothing, so importing the same file twice is harmless
//! (a line paid and later reversed by the provider still accepts its old `paid` row, with the
//! same transaction id). A `pending` row for a line resolved since is a contradiction too: the
//! file is older than what is known.
//! Outcomes are then applied exactly as the API's ([`Batches::apply_outcomes`], source `file`);
//! an attempt with no open line left becomes `settled`, in one transaction with the
//! `batch.import` audit event (the result file's SHA-256 and counts).

use std::collections::HashMap;

use cva_households::import::RowError;
use cva_ledger::audit::{AuditConn, AuditContext, AuditRecord};
use cva_registry::{read_pool, write_tx, RegistryError};
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::outcomes::{failure_code, Applied, LineOutcome, Outcome};
use crate::provider::AdapterKind;
use crate::{now, BatchView, Batches, LineView, Provider, Result};

/// The columns of an exported payment file, in order.
pub const EXPORT_COLUMNS: [&str; 7] = [
    "reference",
    "msisdn",
    "amount",
    "currency",
    "fee",
    "batch_reference",
    "description",
];

/// The columns of a provider's result file (found by name, in any order).
pub const RESULT_COLUMNS: [&str; 4] = ["reference", "status", "provider_transaction_id", "reason"];

/// Longest provider transaction id accepted from a result file.
const MAX_PROVIDER_TX: usize = 256;

/// An exported payment file. `content` holds phone numbers: hand it to the provider only
/// (its `Debug` form leaves it out).
#[derive(Clone, PartialEq, Eq)]
pub struct FileExport {
    /// `{provider}-batch-{id}-{reference}.csv`: no personal data.
    pub file_name: String,
    /// The CSV (see the module documentation).
    pub content: String,
    /// Hex SHA-256 of `content`.
    pub sha256: String,
    /// Rows (batch lines) in the file.
    pub lines: usize,
    /// Sum of the amounts, minor units (fees not included).
    pub total_minor: i64,
}

impl std::fmt::Debug for FileExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileExport")
            .field("file_name", &self.file_name)
            .field(
                "content",
                &format_args!("<{} bytes, not shown>", self.content.len()),
            )
            .field("sha256", &self.sha256)
            .field("lines", &self.lines)
            .field("total_minor", &self.total_minor)
            .finish()
    }
}

/// One row of the export: (line id, sealed msisdn, amount, fee), minor units.
type ExportRow = (i64, Option<String>, i64, i64);

/// What a result file says of one line.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Said {
    Completed(String),
    Failed { code: String, reason: String },
    Pending,
}

impl Said {
    fn as_str(&self) -> &'static str {
        match self {
            Said::Completed(_) => "completed",
            Said::Failed { .. } => "failed",
            Said::Pending => "pending",
        }
    }
}

/// One data row of a result file, fields trimmed (absent fields empty).
struct ResultRow {
    row: usize,
    reference: String,
    status: String,
    provider_tx: String,
    reason: String,
}

impl Batches {
    /// Exports a batch of a file-adapter provider as the provider's payment file: the first
    /// export of a `released` batch records the hand-over (batch `sending`, one `file` attempt,
    /// lines `in_flight`, audit `batch.export`) in one transaction; exporting a `sending` batch
    /// again returns the same file. Refused for a provider with an API, and in other statuses.
    pub async fn export_file(&self, id: i64, ctx: &AuditContext) -> Result<FileExport> {
        let b = self.batch(id).await?;
        let provider = self.file_provider(&b)?;
        match b.status.as_str() {
            "released" => {
                if let Some(export) = self.first_export(&b, provider, ctx).await? {
                    return Ok(export);
                }
                // Another export recorded the hand-over first: give the same file.
            }
            "sending" => {}
            other => {
                return Err(RegistryError::Conflict(format!(
                    "batch {id} is {other}; only a released batch is exported (or a sending one \
                     exported again)"
                )))
            }
        }
        self.export_again(&b, provider, ctx).await
    }

    /// Imports the provider's result file for batch `id` (see the module documentation):
    /// every row is checked first, and any bad row refuses the whole file with
    /// [`RegistryError::BadRows`], nothing changed. Returns what was applied.
    pub async fn import_results(
        &self,
        id: i64,
        bytes: &[u8],
        ctx: &AuditContext,
    ) -> Result<Applied> {
        let b = self.batch(id).await?;
        self.file_provider(&b)?;
        if !matches!(
            b.status.as_str(),
            "sending" | "completed" | "partially_completed" | "failed"
        ) {
            return Err(RegistryError::Conflict(format!(
                "batch {id} is {}; results are imported for an exported batch",
                b.status
            )));
        }
        let rows = parse_results(bytes)?;
        let lines = self.lines(id).await?;
        let outcomes = check_results(&b, &rows, &lines)?;
        let pending = rows.len() - outcomes.len();
        let applied = self.apply_outcomes(&b, &outcomes, "file", ctx).await?;

        let sha = hex::encode(Sha256::digest(bytes));
        let at = now();
        write_tx!(self.registry.ledger(), |tx| {
            let done: Vec<(i64, String)> = sqlx::query_as(
                "SELECT a.id, a.correlation_id FROM payment_attempts a WHERE a.batch_id = $1 \
                 AND a.adapter = 'file' AND a.status <> 'settled' AND NOT EXISTS (SELECT 1 \
                 FROM batch_lines l WHERE l.attempt_id = a.id AND l.status IN ('in_flight', 'unknown')) \
                 ORDER BY a.id",
            )
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
            for (attempt, _) in &done {
                sqlx::query(
                    "UPDATE payment_attempts SET status = 'settled', updated_at = $1 \
                     WHERE id = $2 AND status <> 'settled'",
                )
                .bind(at)
                .bind(attempt)
                .execute(&mut *tx)
                .await?;
            }
            let rec = AuditRecord::new(
                ctx,
                "batch.import",
                "batch",
                id.to_string(),
                serde_json::json!({
                    "sha256": sha, "rows": rows.len(), "completed": applied.completed,
                    "failed": applied.failed, "pending": pending,
                    "already_resolved": applied.already_resolved,
                    "settled": done.iter().map(|(a, c)| serde_json::json!({"attempt": a, "correlation_id": c})).collect::<Vec<_>>(),
                }),
            );
            AuditConn::append(&mut *tx, &rec).await?;
        });
        Ok(applied)
    }

    /// The batch's provider, which must take files.
    fn file_provider(&self, b: &BatchView) -> Result<&Provider> {
        let provider = self.provider_of(b)?;
        if provider.adapter != AdapterKind::File {
            return Err(RegistryError::Conflict(format!(
                "provider `{}` has an API (gsma-mmapi): send batch {} instead of exporting a file",
                provider.name, b.id
            )));
        }
        Ok(provider)
    }

    /// The first export: the file is built from the pending lines, then the hand-over is
    /// recorded in one transaction. `None` when another export recorded it first.
    async fn first_export(
        &self,
        b: &BatchView,
        provider: &Provider,
        ctx: &AuditContext,
    ) -> Result<Option<FileExport>> {
        let rows: Vec<ExportRow> = read_pool!(self.registry.ledger(), |pool| {
            sqlx::query_as(
                "SELECT l.id, h.msisdn, l.amount, l.fee FROM batch_lines l \
                 JOIN households h ON h.id = l.household_id \
                 WHERE l.batch_id = $1 AND l.status = 'pending' ORDER BY l.id",
            )
            .bind(b.id)
            .fetch_all(pool)
            .await?
        });
        if rows.is_empty() {
            return Err(RegistryError::Conflict(format!(
                "batch {} has no pending line to export",
                b.id
            )));
        }
        let reference = Uuid::new_v4().to_string();
        let export = self.render(b, provider, &reference, &rows)?;
        let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let at = now();
        write_tx!(self.registry.ledger(), |tx| {
            let moved = sqlx::query(
                "UPDATE batches SET status = 'sending', status_changed_at = $1 WHERE id = $2 AND status = 'released'",
            )
            .bind(at)
            .bind(b.id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if moved != 1 {
                return Ok(None);
            }
            // The attempt is `accepted` at once: a file has no submission we could watch
            // succeed or fail. Once it exists it may be uploaded to the provider at any time,
            // so its lines are in flight from now on, and it is never "sent again" except as
            // this same file under this same reference.
            let attempt: i64 = sqlx::query_scalar(
                "INSERT INTO payment_attempts (batch_id, correlation_id, adapter, status, line_count, \
                 server_correlation_id, created_at, updated_at) \
                 VALUES ($1, $2, 'file', 'accepted', $3, $4, $5, $5) RETURNING id",
            )
            .bind(b.id)
            .bind(&reference)
            .bind(ids.len() as i64)
            .bind(&export.sha256)
            .bind(at)
            .fetch_one(&mut *tx)
            .await?;
            let n = sqlx::query(
                "UPDATE batch_lines SET status = 'in_flight', attempt_id = $1 \
                 WHERE batch_id = $2 AND status = 'pending'",
            )
            .bind(attempt)
            .bind(b.id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n != ids.len() as u64 {
                return Err(RegistryError::Conflict(format!(
                    "batch {} changed while its file was being exported; nothing was exported",
                    b.id
                )));
            }
            let rec = AuditRecord::new(
                ctx,
                "batch.export",
                "batch",
                b.id.to_string(),
                serde_json::json!({
                    "attempt": attempt, "batch_reference": reference, "lines": ids,
                    "count": export.lines, "total": export.total_minor, "sha256": export.sha256,
                }),
            );
            AuditConn::append(&mut *tx, &rec).await?;
        });
        Ok(Some(export))
    }

    /// The file of an exported batch, rebuilt from its attempt and checked against the
    /// SHA-256 recorded at the first export.
    async fn export_again(
        &self,
        b: &BatchView,
        provider: &Provider,
        ctx: &AuditContext,
    ) -> Result<FileExport> {
        let attempts: Vec<(i64, String, Option<String>)> =
            read_pool!(self.registry.ledger(), |pool| {
                sqlx::query_as(
                    "SELECT id, correlation_id, server_correlation_id FROM payment_attempts \
                 WHERE batch_id = $1 AND adapter = 'file' ORDER BY id",
                )
                .bind(b.id)
                .fetch_all(pool)
                .await?
            });
        let [(attempt, reference, recorded)] = attempts.as_slice() else {
            return Err(RegistryError::Corrupt(format!(
                "batch {} is sending with {} exported files instead of one",
                b.id,
                attempts.len()
            )));
        };
        let rows: Vec<ExportRow> = read_pool!(self.registry.ledger(), |pool| {
            sqlx::query_as(
                "SELECT l.id, h.msisdn, l.amount, l.fee FROM batch_lines l \
                 JOIN households h ON h.id = l.household_id \
                 WHERE l.attempt_id = $1 ORDER BY l.id",
            )
            .bind(attempt)
            .fetch_all(pool)
            .await?
        });
        let export = self.render(b, provider, reference, &rows)?;
        if recorded.as_deref().is_some_and(|s| s != export.sha256) {
            return Err(RegistryError::Conflict(format!(
                "batch {}: its file can no longer be reproduced as exported (a household's phone \
                 number changed since); use the file handed over on the first export",
                b.id
            )));
        }
        let attempt = *attempt;
        write_tx!(self.registry.ledger(), |tx| {
            let rec = AuditRecord::new(
                ctx,
                "batch.export.again",
                "batch",
                b.id.to_string(),
                serde_json::json!({
                    "attempt": attempt, "batch_reference": reference, "count": export.lines,
                    "total": export.total_minor, "sha256": export.sha256,
                }),
            );
            AuditConn::append(&mut *tx, &rec).await?;
        });
        Ok(export)
    }

    /// Builds the CSV (columns in [`EXPORT_COLUMNS`] order), opening each phone number.
    fn render(
        &self,
        b: &BatchView,
        provider: &Provider,
        reference: &str,
        rows: &[ExportRow],
    ) -> Result<FileExport> {
        let corrupt = |e: csv::Error| RegistryError::Corrupt(format!("export file: {e}"));
        let exponent = provider.currency.exponent();
        let currency = provider.currency.code();
        let description = format!("Cash assistance {} batch {}", b.programme, b.id);
        let mut w = csv::WriterBuilder::new()
            .terminator(csv::Terminator::CRLF)
            .from_writer(Vec::new());
        w.write_record(EXPORT_COLUMNS).map_err(corrupt)?;
        let mut total: i64 = 0;
        for (line, sealed, amount, fee) in rows {
            let sealed = sealed.as_deref().ok_or_else(|| {
                RegistryError::Corrupt(format!("line {line}: the household has no phone number"))
            })?;
            let msisdn = self.registry.open_msisdn(sealed)?;
            total = total
                .checked_add(*amount)
                .ok_or_else(|| RegistryError::Corrupt(format!("batch {} total overflows", b.id)))?;
            w.write_record([
                line.to_string().as_str(),
                msisdn.as_str(),
                Decimal::new(*amount, exponent).to_string().as_str(),
                currency,
                Decimal::new(*fee, exponent).to_string().as_str(),
                reference,
                description.as_str(),
            ])
            .map_err(corrupt)?;
        }
        let bytes = w
            .into_inner()
            .map_err(|e| RegistryError::Corrupt(format!("export file: {}", e.error())))?;
        let content = String::from_utf8(bytes)
            .map_err(|_| RegistryError::Corrupt("export file is not UTF-8".into()))?;
        Ok(FileExport {
            file_name: format!("{}-batch-{}-{reference}.csv", provider.name, b.id),
            sha256: hex::encode(Sha256::digest(content.as_bytes())),
            content,
            lines: rows.len(),
            total_minor: total,
        })
    }
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// `,` or `;`, whichever occurs more often outside quotes in the first line (`,` on a tie).
fn detect_delimiter(bytes: &[u8]) -> u8 {
    let (mut commas, mut semicolons, mut quoted) = (0usize, 0usize, false);
    for &b in bytes {
        match b {
            b'"' => quoted = !quoted,
            b'\n' | b'\r' if !quoted => break,
            b',' if !quoted => commas += 1,
            b';' if !quoted => semicolons += 1,
            _ => {}
        }
    }
    if semicolons > commas {
        b';'
    } else {
        b','
    }
}

/// How many line terminators start `bytes` (`\r\n` counting once): the CSV reader skips empty
/// lines, a spreadsheet shows them.
fn leading_empty_lines(bytes: &[u8]) -> usize {
    let mut lines = 0;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\n' => lines += 1,
            b'\r' if bytes.get(i + 1) != Some(&b'\n') => lines += 1,
            b'\r' => {}
            _ => break,
        }
    }
    lines
}

/// Empty lines before the record starting at or after byte `at` (the reader's position after
/// the previous record, which after a CRLF lies between `\r` and `\n`).
fn empty_lines_at(bytes: &[u8], at: usize) -> usize {
    let rest = bytes.get(at..).unwrap_or_default();
    let lines = leading_empty_lines(rest);
    let split_crlf = at > 0 && bytes.get(at - 1) == Some(&b'\r') && rest.first() == Some(&b'\n');
    lines.saturating_sub(usize::from(split_crlf))
}

fn bad_file(reason: impl Into<String>) -> RegistryError {
    RegistryError::invalid("file", reason)
}

/// Reads a result file into rows (spreadsheet row numbers, the header being row 1). A header
/// without `reference` or `status`, or with one of the result columns twice, is refused.
fn parse_results(bytes: &[u8]) -> Result<Vec<ResultRow>> {
    let bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
    if std::str::from_utf8(bytes).is_err() {
        return Err(bad_file("the result file is not UTF-8 text"));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(bad_file("the result file is empty"));
    }
    let csv_error = |e: csv::Error| bad_file(format!("the result file cannot be read as CSV: {e}"));
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(detect_delimiter(bytes))
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let mut record = csv::StringRecord::new();
    let mut row = leading_empty_lines(bytes);
    if !reader.read_record(&mut record).map_err(csv_error)? {
        return Err(bad_file("the result file is empty"));
    }
    row += 1;
    let header_row = row;
    let header: Vec<String> = record
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').trim().to_ascii_lowercase())
        .collect();
    let mut index = [None; RESULT_COLUMNS.len()];
    let mut errors = Vec::new();
    for (k, name) in RESULT_COLUMNS.iter().enumerate() {
        let mut hits = header.iter().enumerate().filter(|(_, h)| h == name);
        match (hits.next(), hits.next()) {
            (Some(_), Some(_)) => errors.push(RowError {
                row: header_row,
                column: (*name).to_owned(),
                reason: "the column appears twice in the header".into(),
            }),
            (Some((i, _)), None) => index[k] = Some(i),
            (None, _) if k < 2 => errors.push(RowError {
                row: header_row,
                column: (*name).to_owned(),
                reason: format!(
                    "the header has no `{name}` column (expected {})",
                    RESULT_COLUMNS.join(",")
                ),
            }),
            (None, _) => {}
        }
    }
    if !errors.is_empty() {
        return Err(RegistryError::BadRows(errors));
    }
    let field = |record: &csv::StringRecord, k: usize| -> String {
        index[k]
            .and_then(|i| record.get(i))
            .map_or_else(String::new, |v| v.trim().to_owned())
    };
    let mut rows = Vec::new();
    loop {
        let before = usize::try_from(reader.position().byte()).unwrap_or(usize::MAX);
        if !reader.read_record(&mut record).map_err(csv_error)? {
            break;
        }
        row += 1 + empty_lines_at(bytes, before);
        if record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        rows.push(ResultRow {
            row,
            reference: field(&record, 0),
            status: field(&record, 1),
            provider_tx: field(&record, 2),
            reason: field(&record, 3),
        });
    }
    if rows.is_empty() {
        return Err(bad_file("the result file has a header but no result row"));
    }
    Ok(rows)
}

/// What one row says, or why it cannot be read.
fn said(r: &ResultRow) -> std::result::Result<Said, (&'static str, String)> {
    match r.status.to_ascii_lowercase().as_str() {
        "completed" | "paid" | "success" => {
            if r.provider_tx.is_empty() {
                Err((
                    RESULT_COLUMNS[2],
                    "required when the status says the line is paid".into(),
                ))
            } else if r.provider_tx.chars().count() > MAX_PROVIDER_TX {
                Err((
                    RESULT_COLUMNS[2],
                    format!("longer than {MAX_PROVIDER_TX} characters"),
                ))
            } else {
                Ok(Said::Completed(r.provider_tx.clone()))
            }
        }
        "failed" | "rejected" => {
            if r.reason.is_empty() {
                return Err((
                    RESULT_COLUMNS[3],
                    "required when the status says the line failed".into(),
                ));
            }
            let first = r
                .reason
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .next()
                .unwrap_or_default();
            Ok(Said::Failed {
                code: failure_code(first).to_owned(),
                reason: r.reason.clone(),
            })
        }
        "pending" => Ok(Said::Pending),
        "" => Err((RESULT_COLUMNS[1], "required, but empty".into())),
        _ => Err((
            RESULT_COLUMNS[1],
            "not a known status: use completed, paid, success, failed, rejected or pending".into(),
        )),
    }
}

/// Checks every row against the batch's lines and returns the outcomes to apply (rows saying
/// `pending` give none), or every problem found.
fn check_results(
    b: &BatchView,
    rows: &[ResultRow],
    lines: &[LineView],
) -> Result<Vec<LineOutcome>> {
    let by_id: HashMap<i64, &LineView> = lines.iter().map(|l| (l.id, l)).collect();
    // Provider transaction ids already recorded, and the line each confirms.
    let recorded_tx: HashMap<&str, i64> = lines
        .iter()
        .filter_map(|l| l.provider_transaction_id.as_deref().map(|t| (t, l.id)))
        .collect();
    let mut errors = Vec::new();
    let mut seen_line: HashMap<i64, usize> = HashMap::new();
    let mut seen_tx: HashMap<&str, usize> = HashMap::new();
    let mut outcomes = Vec::new();
    let mut bad = |row: usize, column: &str, reason: String| {
        errors.push(RowError {
            row,
            column: column.to_owned(),
            reason,
        })
    };
    for r in rows {
        // The reference: a line of this batch, once. Never echoed: it could be anything.
        let line = match r
            .reference
            .parse::<i64>()
            .ok()
            .and_then(|id| by_id.get(&id))
        {
            Some(l) => Some(*l),
            None if r.reference.is_empty() => {
                bad(r.row, RESULT_COLUMNS[0], "required, but empty".into());
                None
            }
            None => {
                bad(
                    r.row,
                    RESULT_COLUMNS[0],
                    format!(
                        "not a line of batch {}: give the `reference` of the exported file",
                        b.id
                    ),
                );
                None
            }
        };
        if let Some(l) = line {
            if let Some(first) = seen_line.insert(l.id, r.row) {
                bad(
                    r.row,
                    RESULT_COLUMNS[0],
                    format!("line {} is also in row {first}", l.id),
                );
                continue;
            }
        }
        let said = match said(r) {
            Ok(s) => s,
            Err((column, reason)) => {
                bad(r.row, column, reason);
                continue;
            }
        };
        if let Said::Completed(tx) = &said {
            if let Some(first) = seen_tx.insert(r.provider_tx.as_str(), r.row) {
                bad(
                    r.row,
                    RESULT_COLUMNS[2],
                    format!("the same provider transaction is also in row {first}"),
                );
                continue;
            }
            if let Some(&other) = recorded_tx.get(tx.as_str()) {
                if line.is_some_and(|l| l.id != other) {
                    bad(
                        r.row,
                        RESULT_COLUMNS[2],
                        format!("this provider transaction already confirmed line {other}"),
                    );
                    continue;
                }
            }
        }
        let Some(l) = line else { continue };
        let contradiction = |was: &str| {
            format!(
                "line {} is already {was}; the file says {}",
                l.id,
                said.as_str()
            )
        };
        let same_tx = |tx: &str| l.provider_transaction_id.as_deref() == Some(tx);
        let outcome = match (l.status.as_str(), &said) {
            ("in_flight" | "unknown", Said::Pending) => None,
            ("in_flight" | "unknown", Said::Completed(tx)) => Some(Outcome::Completed {
                provider_tx: tx.clone(),
            }),
            ("in_flight" | "unknown", Said::Failed { code, reason }) => Some(Outcome::Failed {
                code: code.clone(),
                reason: reason.clone(),
            }),
            // The same outcome again: nothing changes (counted as already resolved).
            ("completed", Said::Completed(tx)) if same_tx(tx) => Some(Outcome::Completed {
                provider_tx: tx.clone(),
            }),
            ("completed", Said::Completed(_)) => {
                bad(
                    r.row,
                    RESULT_COLUMNS[2],
                    format!(
                        "line {} is already completed under another provider transaction",
                        l.id
                    ),
                );
                continue;
            }
            ("failed", Said::Failed { code, reason }) => Some(Outcome::Failed {
                code: code.clone(),
                reason: reason.clone(),
            }),
            // Paid, then reversed by the provider later: an old file saying paid is true.
            ("failed", Said::Completed(tx))
                if l.failure_code.as_deref() == Some("reversed") && same_tx(tx) =>
            {
                Some(Outcome::Completed {
                    provider_tx: tx.clone(),
                })
            }
            ("completed" | "failed", _) => {
                bad(r.row, RESULT_COLUMNS[1], contradiction(&l.status));
                continue;
            }
            (other, _) => {
                bad(
                    r.row,
                    RESULT_COLUMNS[0],
                    format!("line {} is {other}: it was not exported", l.id),
                );
                continue;
            }
        };
        if let Some(outcome) = outcome {
            outcomes.push(LineOutcome {
                line: l.id,
                outcome,
            });
        }
    }
    if errors.is_empty() {
        Ok(outcomes)
    } else {
        Err(RegistryError::BadRows(errors))
    }
}
