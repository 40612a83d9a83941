//! Imported statements in the database: [`Statements::import`] stores a provider statement
//! (tables `statements` and `statement_lines`, migration 0009) and [`Statements::statement`] /
//! [`Statements::lines`] read it back.
//!
//! An import is all or nothing:
//!
//! 1. the whole file is parsed first ([`parse_all`]); a bad file is
//!    [`ImportError::BadRows`] — every row error with its row, column and reason — and nothing
//!    is written;
//! 2. a file whose SHA-256 is already stored is [`ImportError::AlreadyImported`] with the id of
//!    the earlier import. The code looks the hash up first; the database's unique constraint
//!    on `statements.file_sha256` settles a race between two imports of the same file, and
//!    its violation is reported as the same error;
//! 3. otherwise one transaction writes the statement row, its lines (multi-row inserts:
//!    `UNNEST` of arrays on PostgreSQL, at most [`SQLITE_CHUNK`] rows per `INSERT` on SQLite)
//!    and one audit event `statement.import` (provider, hash, mapping, line count, period,
//!    balances: no personal data).
//!
//! **Phone numbers are not stored**, not even hashed: a phone number has so few digits that a
//! plain hash is reversed by hashing every number of the country. `statement_lines.msisdn_index`
//! holds a keyed blind index instead when the caller gives one ([`Statements::import_indexed`]
//! with the registry's HMAC, as for `households.msisdn_index`): without the key it reveals
//! nothing, and matching compares it with the household's. Errors never
//! carry a phone number either: row errors never repeat a cell's value (see
//! [`crate::statement`]).
//!
//! Both tables are append-only in the database (UPDATE and DELETE refused by triggers).

use chrono::{DateTime, Utc};
use cva_ledger::audit::{AuditConn, AuditContext, AuditRecord};
use cva_ledger::money::{Amount, Currency};
use cva_ledger::{read_pool, write_tx, Ledger, LedgerError};
use futures::future::BoxFuture;
use serde::Serialize;
use thiserror::Error;

use crate::mapping::ColumnMapping;
use crate::statement::{parse_all, RowError, StatementLine, StatementStatus};

/// Lines per `INSERT` on SQLite (10 parameters a row: far under SQLite's parameter limit).
pub const SQLITE_CHUNK: usize = 1_000;
/// Most lines [`Statements::lines`] returns at once.
pub const MAX_LINES_PAGE: u32 = 1_000;
/// Longest provider name, in characters.
pub const MAX_PROVIDER_CHARS: usize = 64;

/// Why an import or a read failed. Messages name the field, row or statement; never a
/// phone number or other cell value.
#[derive(Debug, Error)]
pub enum ImportError {
    /// The file was refused as read: every row error (row, column, reason). Nothing written.
    #[error("the statement has {} bad row(s); nothing was imported (first: {})", .0.len(), .0.first().map(ToString::to_string).unwrap_or_default())]
    BadRows(Vec<RowError>),
    /// The same bytes were imported before, as statement `statement_id`. Nothing written.
    #[error("this file was already imported as statement {statement_id}")]
    AlreadyImported { statement_id: i64 },
    /// An argument is unusable.
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// No statement with this id.
    #[error("statement {statement_id} not found")]
    NotFound { statement_id: i64 },
    /// A stored value could not be read back (a column that should not hold it).
    #[error("statement data is corrupt: {0}")]
    Corrupt(String),
    #[error("audit trail: {0}")]
    Audit(#[from] LedgerError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

pub type Result<T, E = ImportError> = std::result::Result<T, E>;

/// A stored statement: what [`Statements::import`] wrote, or [`Statements::statement`] reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportedStatement {
    pub id: i64,
    pub provider: String,
    /// SHA-256 of the file's raw bytes, lower-case hex.
    pub sha256: String,
    /// The column mapping's name.
    pub mapping: String,
    /// Currency of the balances: the lines' own when they share one, else the import's default.
    pub currency: Currency,
    /// How many lines the statement has.
    pub lines: u64,
    /// The float before the first line (serialised as minor units).
    #[serde(serialize_with = "minor_units")]
    pub opening_balance: Option<Amount>,
    /// The float after the last line (serialised as minor units).
    #[serde(serialize_with = "minor_units")]
    pub closing_balance: Option<Amount>,
    /// Earliest line time; `None` without lines.
    pub period_start: Option<DateTime<Utc>>,
    /// Latest line time; `None` without lines.
    pub period_end: Option<DateTime<Utc>>,
    pub imported_by: String,
    pub imported_at: DateTime<Utc>,
}

fn minor_units<S: serde::Serializer>(
    amount: &Option<Amount>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    amount.map(|a| a.minor()).serialize(s)
}

/// One stored statement line. The phone number is not kept (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredLine {
    pub id: i64,
    pub statement_id: i64,
    /// Spreadsheet row number in the file (the header is row 1).
    pub row: u64,
    pub transaction_id: String,
    pub reference: Option<String>,
    pub amount_minor: i64,
    pub fee_minor: i64,
    pub currency: Currency,
    pub status: StatementStatus,
    pub at: DateTime<Utc>,
    pub balance_after_minor: Option<i64>,
}

/// The statement store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Statements {
    ledger: Ledger,
}

type StatementRow = (
    i64,
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    String,
    DateTime<Utc>,
);

type LineRow = (
    i64,
    i64,
    i64,
    String,
    Option<String>,
    i64,
    i64,
    String,
    String,
    DateTime<Utc>,
    Option<i64>,
);

const STATEMENT_COLUMNS: &str = "id, provider, file_sha256, mapping, currency, line_count, \
     opening_balance, closing_balance, period_start, period_end, imported_by, imported_at";

impl Statements {
    pub fn new(ledger: Ledger) -> Statements {
        Statements { ledger }
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Imports a provider statement: parse all, refuse a file already imported, then write
    /// the statement, its lines and one audit event in one transaction (see the module docs).
    /// `currency` is the default for lines without a currency column.
    pub async fn import(
        &self,
        provider: &str,
        bytes: &[u8],
        mapping: &ColumnMapping,
        currency: Currency,
        ctx: &AuditContext,
    ) -> Result<ImportedStatement> {
        self.import_indexed(provider, bytes, mapping, currency, &|_| None, ctx)
            .await
    }

    /// [`import`](Self::import), keeping for each line the keyed blind index of its phone
    /// number that `msisdn_index` computes (the registry's
    /// `Registry::msisdn_index`, the same HMAC as `households.msisdn_index`), so matching's
    /// fallback rule can compare payees without any phone number being stored.
    pub async fn import_indexed(
        &self,
        provider: &str,
        bytes: &[u8],
        mapping: &ColumnMapping,
        currency: Currency,
        msisdn_index: &(dyn Fn(&str) -> Option<String> + Sync),
        ctx: &AuditContext,
    ) -> Result<ImportedStatement> {
        let provider = provider.trim();
        if provider.is_empty()
            || provider.chars().count() > MAX_PROVIDER_CHARS
            || provider.chars().any(char::is_control)
        {
            return Err(ImportError::Invalid {
                field: "provider",
                reason: format!(
                    "must be 1 to {MAX_PROVIDER_CHARS} characters, without control characters"
                ),
            });
        }
        ctx.validate()?;
        let parsed = parse_all(bytes, mapping, currency)
            .map_err(|e| ImportError::BadRows(e.to_row_errors()))?;
        if let Some(statement_id) = self.find_by_sha256(&parsed.sha256).await? {
            return Err(ImportError::AlreadyImported { statement_id });
        }

        let mut lines = parsed.lines;
        // The number itself goes no further than this: it is replaced by its keyed index.
        for l in &mut lines {
            l.msisdn = l.msisdn.take().and_then(|m| msisdn_index(&m));
        }
        let balance_currency = parsed
            .opening_balance
            .or(parsed.closing_balance)
            .map(|a| a.currency())
            .or_else(|| {
                let first = lines.first()?.currency;
                lines.iter().all(|l| l.currency == first).then_some(first)
            })
            .unwrap_or(currency);
        let period_start = lines.iter().map(|l| l.at).min();
        let period_end = lines.iter().map(|l| l.at).max();
        let imported_at = cva_ledger::store::now_micros();
        let line_count = i64::try_from(lines.len()).map_err(|_| ImportError::Invalid {
            field: "lines",
            reason: "too many lines".into(),
        })?;
        let sha256 = parsed.sha256;
        let change = serde_json::json!({
            "provider": provider,
            "sha256": sha256,
            "mapping": mapping.name,
            "currency": balance_currency.code(),
            "lines": lines.len(),
            "period_start": period_start,
            "period_end": period_end,
            "opening_balance": parsed.opening_balance.map(|a| a.minor()),
            "closing_balance": parsed.closing_balance.map(|a| a.minor()),
        });

        let id: i64 = write_tx!(self.ledger, |tx| {
            let id: std::result::Result<i64, sqlx::Error> = sqlx::query_scalar(
                "INSERT INTO statements (provider, file_sha256, mapping, currency, line_count, \
                 opening_balance, closing_balance, period_start, period_end, imported_by, \
                 imported_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
            )
            .bind(provider)
            .bind(&sha256)
            .bind(&mapping.name)
            .bind(balance_currency.code())
            .bind(line_count)
            .bind(parsed.opening_balance.map(|a| a.minor()))
            .bind(parsed.closing_balance.map(|a| a.minor()))
            .bind(period_start)
            .bind(period_end)
            .bind(&ctx.actor)
            .bind(imported_at)
            .fetch_one(&mut *tx)
            .await;
            let id = match id {
                Ok(id) => id,
                Err(sqlx::Error::Database(d)) if d.is_unique_violation() => {
                    // Another import of the same file committed since the check.
                    drop(tx);
                    let statement_id = self.find_by_sha256(&sha256).await?.unwrap_or_default();
                    return Err(ImportError::AlreadyImported { statement_id });
                }
                Err(e) => return Err(e.into()),
            };
            LineSink::insert_lines(&mut *tx, id, &lines).await?;
            let rec =
                AuditRecord::new(ctx, "statement.import", "statement", id.to_string(), change);
            AuditConn::append(&mut *tx, &rec).await?;
            id
        });

        Ok(ImportedStatement {
            id,
            provider: provider.to_owned(),
            sha256,
            mapping: mapping.name.clone(),
            currency: balance_currency,
            lines: lines.len() as u64,
            opening_balance: parsed.opening_balance,
            closing_balance: parsed.closing_balance,
            period_start,
            period_end,
            imported_by: ctx.actor.clone(),
            imported_at,
        })
    }

    /// The statement with this id.
    pub async fn statement(&self, id: i64) -> Result<ImportedStatement> {
        let sql = format!("SELECT {STATEMENT_COLUMNS} FROM statements WHERE id = $1");
        let row: Option<StatementRow> = read_pool!(self.ledger, |pool| {
            sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?
        });
        let row = row.ok_or(ImportError::NotFound { statement_id: id })?;
        statement_from_row(row)
    }

    /// The id of the statement imported from a file with this SHA-256, if any.
    pub async fn find_by_sha256(&self, sha256: &str) -> Result<Option<i64>> {
        Ok(read_pool!(self.ledger, |pool| {
            sqlx::query_scalar("SELECT id FROM statements WHERE file_sha256 = $1")
                .bind(sha256)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Up to `limit` (1 to [`MAX_LINES_PAGE`]) lines of statement `id` in file order,
    /// skipping the first `offset`. An unknown statement is [`ImportError::NotFound`].
    pub async fn lines(&self, id: i64, offset: u64, limit: u32) -> Result<Vec<StoredLine>> {
        if limit == 0 || limit > MAX_LINES_PAGE {
            return Err(ImportError::Invalid {
                field: "limit",
                reason: format!("must be 1 to {MAX_LINES_PAGE}"),
            });
        }
        let offset = i64::try_from(offset).map_err(|_| ImportError::Invalid {
            field: "offset",
            reason: "too large".into(),
        })?;
        let (exists, rows): (Option<i64>, Vec<LineRow>) = read_pool!(self.ledger, |pool| {
            let exists = sqlx::query_scalar("SELECT id FROM statements WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?;
            let rows = sqlx::query_as(
                "SELECT id, statement_id, row_no, transaction_id, reference, amount, fee, \
                 currency, status, at, balance_after FROM statement_lines \
                 WHERE statement_id = $1 ORDER BY row_no LIMIT $2 OFFSET $3",
            )
            .bind(id)
            .bind(i64::from(limit))
            .bind(offset)
            .fetch_all(pool)
            .await?;
            (exists, rows)
        });
        if exists.is_none() {
            return Err(ImportError::NotFound { statement_id: id });
        }
        rows.into_iter().map(line_from_row).collect()
    }
}

fn currency_of(code: &str) -> Result<Currency> {
    Currency::parse(code).map_err(|_| ImportError::Corrupt(format!("unknown currency {code:?}")))
}

fn statement_from_row(row: StatementRow) -> Result<ImportedStatement> {
    let (id, provider, sha256, mapping, currency, count, opening, closing, start, end, by, at) =
        row;
    let currency = currency_of(&currency)?;
    Ok(ImportedStatement {
        id,
        provider,
        sha256,
        mapping,
        currency,
        lines: u64::try_from(count)
            .map_err(|_| ImportError::Corrupt(format!("statement {id}: negative line count")))?,
        opening_balance: opening.map(|m| Amount::from_minor(m, currency)),
        closing_balance: closing.map(|m| Amount::from_minor(m, currency)),
        period_start: start,
        period_end: end,
        imported_by: by,
        imported_at: at,
    })
}

fn line_from_row(row: LineRow) -> Result<StoredLine> {
    let (
        id,
        statement_id,
        row_no,
        transaction_id,
        reference,
        amount,
        fee,
        currency,
        status,
        at,
        balance,
    ) = row;
    let status = StatementStatus::ALL
        .into_iter()
        .find(|s| s.as_str() == status)
        .ok_or_else(|| ImportError::Corrupt(format!("line {id}: unknown status")))?;
    Ok(StoredLine {
        id,
        statement_id,
        row: u64::try_from(row_no)
            .map_err(|_| ImportError::Corrupt(format!("line {id}: negative row number")))?,
        transaction_id,
        reference,
        amount_minor: amount,
        fee_minor: fee,
        currency: currency_of(&currency)?,
        status,
        at,
        balance_after_minor: balance,
    })
}

/// Writes a statement's lines in multi-row inserts, the way each backend does best.
trait LineSink: Send {
    fn insert_lines<'a>(
        &'a mut self,
        statement_id: i64,
        lines: &'a [StatementLine],
    ) -> BoxFuture<'a, Result<(), sqlx::Error>>;
}

fn row_no(line: &StatementLine) -> i64 {
    i64::try_from(line.row).unwrap_or(i64::MAX)
}

impl LineSink for sqlx::PgConnection {
    fn insert_lines<'a>(
        &'a mut self,
        statement_id: i64,
        lines: &'a [StatementLine],
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async move {
            if lines.is_empty() {
                return Ok(());
            }
            // One statement for every line: ten arrays, unnested side by side.
            sqlx::query(
                "INSERT INTO statement_lines (statement_id, row_no, transaction_id, reference, \
                 amount, fee, currency, status, at, balance_after, msisdn_index) \
                 SELECT $1, * FROM UNNEST($2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::BIGINT[], \
                 $6::BIGINT[], $7::TEXT[], $8::TEXT[], $9::TIMESTAMPTZ[], $10::BIGINT[], \
                 $11::TEXT[])",
            )
            .bind(statement_id)
            .bind(lines.iter().map(row_no).collect::<Vec<_>>())
            .bind(
                lines
                    .iter()
                    .map(|l| l.transaction_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                lines
                    .iter()
                    .map(|l| l.reference.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(lines.iter().map(|l| l.amount_minor).collect::<Vec<_>>())
            .bind(lines.iter().map(|l| l.fee_minor).collect::<Vec<_>>())
            .bind(lines.iter().map(|l| l.currency.code()).collect::<Vec<_>>())
            .bind(lines.iter().map(|l| l.status.as_str()).collect::<Vec<_>>())
            .bind(lines.iter().map(|l| l.at).collect::<Vec<_>>())
            .bind(
                lines
                    .iter()
                    .map(|l| l.balance_after_minor)
                    .collect::<Vec<_>>(),
            )
            .bind(
                lines
                    .iter()
                    .map(|l| l.msisdn.as_deref())
                    .collect::<Vec<_>>(),
            )
            .execute(&mut *self)
            .await?;
            Ok(())
        })
    }
}

impl LineSink for sqlx::SqliteConnection {
    fn insert_lines<'a>(
        &'a mut self,
        statement_id: i64,
        lines: &'a [StatementLine],
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async move {
            for chunk in lines.chunks(SQLITE_CHUNK) {
                let mut sql = String::from(
                    "INSERT INTO statement_lines (statement_id, row_no, transaction_id, \
                     reference, amount, fee, currency, status, at, balance_after, \
                     msisdn_index) VALUES ",
                );
                sql.push_str(&values_list(chunk.len(), 11));
                let mut q = sqlx::query(&sql);
                for l in chunk {
                    q = q
                        .bind(statement_id)
                        .bind(row_no(l))
                        .bind(l.transaction_id.as_str())
                        .bind(l.reference.as_deref())
                        .bind(l.amount_minor)
                        .bind(l.fee_minor)
                        .bind(l.currency.code())
                        .bind(l.status.as_str())
                        .bind(l.at)
                        .bind(l.balance_after_minor)
                        .bind(l.msisdn.as_deref());
                }
                q.execute(&mut *self).await?;
            }
            Ok(())
        })
    }
}

/// `rows` groups of `cols` plain `?` placeholders (SQLite binds them by position; numbered
/// ones are resolved by name, quadratic in a statement with thousands of them).
fn values_list(rows: usize, cols: usize) -> String {
    let group = format!("({})", vec!["?"; cols].join(","));
    vec![group.as_str(); rows].join(",")
}
