//! Provider statements read into [`StatementLine`]s: a streaming [`StatementReader`] and the
//! all-or-nothing [`parse_all`] / [`parse_reader`], which also give the file's SHA-256 and its
//! opening and closing float balances ([`ParsedStatement`]).
//!
//! This module owns the file format (encoding, delimiter, header, row numbers), the per-row
//! checks and the error reporting. Amount and date syntax are [`crate::amount`]'s and
//! [`crate::date`]'s; which column is which is the [`ColumnMapping`]'s.
//!
//! ```
//! use cva_ledger::money::Currency;
//! use cva_reconciliation::mapping::ColumnMapping;
//! use cva_reconciliation::statement::{parse_all, StatementStatus};
//!
//! let csv = "\u{feff}transaction_id;reference;amount;fee;status;date;balance_after\n\
//!            TX1;L-0001;65 000;500;Success;01/03/2024 10:22;934 500\n\
//!            TX1-REV;L-0001;-65 000;0;refund;02/03/2024;999 500\n";
//! let xof = Currency::parse("XOF").unwrap();
//! let parsed = parse_all(csv.as_bytes(), &ColumnMapping::generic(), xof).unwrap();
//! assert_eq!(parsed.lines.len(), 2);
//! assert_eq!(parsed.lines[0].row, 2);
//! assert_eq!(parsed.lines[0].amount_minor, 65_000);
//! assert_eq!(parsed.lines[1].status, StatementStatus::Reversal);
//! assert_eq!(parsed.opening_balance.unwrap().minor(), 1_000_000);
//! assert_eq!(parsed.closing_balance.unwrap().minor(), 999_500);
//! assert_eq!(parsed.sha256.len(), 64);
//! ```
//!
//! # The file
//!
//! * **Encoding**: UTF-8, with or without a byte-order mark. A mapped cell that is not UTF-8 is
//!   a row error (save the file as "CSV UTF-8"); unmapped columns are never decoded.
//! * **Delimiter**: `,` or `;`, whichever occurs more often outside double quotes in the header
//!   line (`,` on a tie).
//! * **Quoting**: fields may be enclosed in double quotes and then contain the delimiter, line
//!   breaks and doubled quotes (`"Diallo, ""Papa"""`). Every value is trimmed.
//! * **Line ends**: LF, CRLF or CR.
//! * **Header**: the first non-blank line. Names are matched to the mapping case-insensitively,
//!   after trimming; other columns are ignored. A required field's column missing is
//!   [`StatementError::MissingColumns`]; a mapped column appearing twice is
//!   [`StatementError::DuplicateColumn`].
//! * **Rows**: one statement line per row. Rows whose cells are all blank are skipped (spreadsheet
//!   exports end with some). A row with fewer cells than the header, or with non-blank cells
//!   beyond the header's, is an error.
//!
//! # Row numbers and errors
//!
//! [`StatementLine::row`] and [`RowError::row`] are spreadsheet row numbers: the header is row 1
//! (or later, after blank lines), the first line after it row 2. Every line end counts except
//! those inside quoted fields: a quoted line break does not start a new row, an empty line does.
//!
//! A [`RowError`] names the row, the column (the header name as written in the file; empty when
//! the problem is the whole row) and the rule broken. **Reasons never contain the cell's value**:
//! a statement carries phone numbers, and a wrongly mapped column could put one anywhere.
//!
//! # The fields
//!
//! | field | rule |
//! |---|---|
//! | `transaction_id` | required, at most 128 characters |
//! | `reference` | optional (empty = none), at most 128 characters |
//! | `msisdn` | optional (empty = none), at most 64 characters, kept as written (matching normalises it) |
//! | `currency` | optional: an ISO 4217 code (any case) known to the ledger; absent or empty = the default currency given to the reader |
//! | `amount` | required, in the line's currency, by the rules of [`crate::amount`]; positive = paid out of the float, negative = money back into it |
//! | `fee` | optional (empty = 0), same rules; taken from the float |
//! | `status` | when the column is mapped, required and translated by [`ColumnMapping::status_word`]; without the column, [`StatementStatus::Completed`] |
//! | `date` | required, by the rules of [`crate::date`] with the mapping's `date_format` and `utc_offset` |
//! | `balance_after` | optional (empty = none), same rules as `amount`: the float after the line |
//!
//! **Duplicate `transaction_id`s are not an error here**: the statement is read as the provider
//! wrote it, and matching reports a repeated id as "duplicate in statement". Nor are the
//! `balance_after` values checked against each other: that is float reconciliation's job.
//!
//! # All or nothing
//!
//! [`parse_all`] (bytes) and [`parse_reader`] (a stream) return every line, or — if any row is
//! bad — no line at all and every row error ([`StatementError::Rejected`]; the first
//! [`MAX_ROW_ERRORS`] are kept, the rest counted). They also return the SHA-256 of the raw
//! bytes (BOM and all), by which an import refuses a file it already holds.
//! [`StatementReader`] is the streaming form underneath: it holds one row at a time, so a
//! statement of millions of lines can be checked, counted or copied in constant memory.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::Read;

use chrono::{DateTime, Utc};
use cva_ledger::money::{Amount, Currency};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::amount::parse_amount;
use crate::date::{parse_date, DateOrder, UtcOffset};
use crate::mapping::{same_text, ColumnMapping, Field, MappingError};
use crate::source::{HeaderLine, Source};

/// At most this many row errors are kept by [`parse_all`]; the others are only counted.
pub const MAX_ROW_ERRORS: usize = 1_000;
/// A header line longer than this (in bytes) is refused.
pub const MAX_HEADER_BYTES: usize = 1 << 20;
/// Longest `transaction_id` and `reference`, in characters.
pub const MAX_ID_CHARS: usize = 128;
/// Longest `msisdn`, in characters.
pub const MAX_MSISDN_CHARS: usize = 64;

/// What the provider says happened to a movement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatementStatus {
    /// Paid (the float moved).
    Completed,
    /// Not paid (the float did not move).
    Failed,
    /// Paid, then reversed: the float moved, and a [`StatementStatus::Reversal`] line moves it
    /// back.
    Reversed,
    /// The movement that undoes a reversed payment (negative amount: back into the float).
    Reversal,
    /// Not settled yet (the float has not moved).
    Pending,
}

impl StatementStatus {
    pub const ALL: [StatementStatus; 5] = [
        StatementStatus::Completed,
        StatementStatus::Failed,
        StatementStatus::Reversed,
        StatementStatus::Reversal,
        StatementStatus::Pending,
    ];

    /// `completed`, `failed`, `reversed`, `reversal`, `pending` (also the JSON form).
    pub fn as_str(self) -> &'static str {
        match self {
            StatementStatus::Completed => "completed",
            StatementStatus::Failed => "failed",
            StatementStatus::Reversed => "reversed",
            StatementStatus::Reversal => "reversal",
            StatementStatus::Pending => "pending",
        }
    }

    /// Whether a line with this status moved the float (completed, reversed, reversal).
    pub fn moves_float(self) -> bool {
        matches!(
            self,
            StatementStatus::Completed | StatementStatus::Reversed | StatementStatus::Reversal
        )
    }
}

impl fmt::Display for StatementStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of a provider statement, checked. Amounts are minor units of `currency`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementLine {
    /// Spreadsheet row number; the header is row 1.
    pub row: usize,
    /// The provider's id of the movement (not unique within a statement, see the module docs).
    pub transaction_id: String,
    /// Our payment line id, when the provider gives it back.
    pub reference: Option<String>,
    /// The number paid, as written. Personal data.
    pub msisdn: Option<String>,
    /// Positive: paid out of the float; negative: back into it.
    pub amount_minor: i64,
    /// Taken from the float with the movement; 0 when the statement has none.
    pub fee_minor: i64,
    pub currency: Currency,
    pub status: StatementStatus,
    pub at: DateTime<Utc>,
    /// The float after this line, when the statement gives it.
    pub balance_after_minor: Option<i64>,
}

impl StatementLine {
    pub fn amount(&self) -> Amount {
        Amount::from_minor(self.amount_minor, self.currency)
    }

    pub fn fee(&self) -> Amount {
        Amount::from_minor(self.fee_minor, self.currency)
    }

    pub fn balance_after(&self) -> Option<Amount> {
        self.balance_after_minor
            .map(|m| Amount::from_minor(m, self.currency))
    }

    /// The float before this line, from `balance_after`: plus amount plus fee when the line
    /// moved the float ([`StatementStatus::moves_float`]), unchanged otherwise. `None` without
    /// `balance_after`, or on overflow.
    pub fn balance_before_minor(&self) -> Option<i64> {
        let after = self.balance_after_minor?;
        if self.status.moves_float() {
            after
                .checked_add(self.amount_minor)?
                .checked_add(self.fee_minor)
        } else {
            Some(after)
        }
    }
}

/// One rule broken by one cell (or by a whole row) of a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// Spreadsheet row number: the header is row 1.
    pub row: usize,
    /// The header name as written in the file; empty when the problem is the whole row.
    pub column: String,
    /// The rule broken. Never contains the cell's value.
    pub reason: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.column.is_empty() {
            write!(f, "row {}: {}", self.row, self.reason)
        } else {
            write!(
                f,
                "row {}, column {}: {}",
                self.row, self.column, self.reason
            )
        }
    }
}

impl std::error::Error for RowError {}

/// Why a statement was refused as a whole. Nothing of it is to be applied.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StatementError {
    #[error(transparent)]
    Mapping(#[from] MappingError),
    #[error("the file is empty: there is no header line")]
    Empty,
    #[error("the first line is longer than {MAX_HEADER_BYTES} bytes: this is not a statement with a header")]
    HeaderTooLong,
    #[error("the header line is not valid UTF-8 text; export or save the file as CSV UTF-8")]
    HeaderNotUtf8,
    #[error("the header has no column {} (required by the column mapping)", columns.join(", "))]
    MissingColumns {
        /// The header names the mapping expects, as it spells them.
        columns: Vec<String>,
    },
    #[error("column {column:?} appears more than once in the header")]
    DuplicateColumn { column: String },
    #[error("the file could not be read: {0}")]
    Read(String),
    #[error("the statement has {} bad row(s); nothing was imported (first: {})", errors.len() + more, errors.first().map(ToString::to_string).unwrap_or_default())]
    Rejected {
        /// The first [`MAX_ROW_ERRORS`] errors, in file order.
        errors: Vec<RowError>,
        /// How many more there were.
        more: usize,
    },
}

impl StatementError {
    /// The error as row errors, for a uniform row/column/reason report: the row errors of
    /// [`StatementError::Rejected`]; a missing or duplicate column as errors of the header
    /// (row 1); anything else as one error of row 0 without a column.
    pub fn to_row_errors(&self) -> Vec<RowError> {
        let whole_file = |reason: String| RowError {
            row: 0,
            column: String::new(),
            reason,
        };
        match self {
            StatementError::Rejected { errors, .. } => errors.clone(),
            StatementError::MissingColumns { columns } => columns
                .iter()
                .map(|column| RowError {
                    row: 1,
                    column: column.clone(),
                    reason: "required by the column mapping, but not in the header".into(),
                })
                .collect(),
            StatementError::DuplicateColumn { column } => vec![RowError {
                row: 1,
                column: column.clone(),
                reason: "appears more than once in the header".into(),
            }],
            other => vec![whole_file(other.to_string())],
        }
    }
}

/// A statement read in full: every line, the file's hash and its float balances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedStatement {
    pub lines: Vec<StatementLine>,
    /// SHA-256 of the raw bytes (BOM included), lower-case hex: the same file imported twice
    /// has the same hash.
    pub sha256: String,
    /// The float before the first line: the first line's
    /// [`balance_before`](StatementLine::balance_before_minor) — its `balance_after` plus its
    /// amount plus its fee, for a line that moved the float. `None` when the first line has no
    /// `balance_after`, the statement has no lines, or its lines are in several currencies.
    pub opening_balance: Option<Amount>,
    /// The last line's `balance_after`; `None` in the same cases.
    pub closing_balance: Option<Amount>,
}

/// SHA-256 of `bytes`, lower-case hex: the hash [`ParsedStatement::sha256`] holds.
pub fn content_sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Reads a whole statement from memory. Every line, or every row error (see the module docs).
pub fn parse_all(
    bytes: &[u8],
    mapping: &ColumnMapping,
    default_currency: Currency,
) -> Result<ParsedStatement, StatementError> {
    parse_reader(bytes, mapping, default_currency)
}

/// Reads a whole statement from a stream (a file, an upload). Every line, or every row error.
/// Memory grows with the lines kept, not with the errors (at most [`MAX_ROW_ERRORS`]).
pub fn parse_reader<R: Read>(
    reader: R,
    mapping: &ColumnMapping,
    default_currency: Currency,
) -> Result<ParsedStatement, StatementError> {
    let mut statement = StatementReader::new(reader, mapping, default_currency)?;
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    let mut more = 0usize;
    for item in statement.by_ref() {
        match item {
            Ok(line) if errors.is_empty() => lines.push(line),
            Ok(_) => {}
            Err(error) => {
                if errors.is_empty() {
                    lines = Vec::new();
                }
                if errors.len() < MAX_ROW_ERRORS {
                    errors.push(error);
                } else {
                    more += 1;
                }
            }
        }
    }
    if let Some(reason) = statement.read_error.take() {
        return Err(StatementError::Read(reason));
    }
    if !errors.is_empty() {
        return Err(StatementError::Rejected { errors, more });
    }
    let sha256 = statement
        .sha256()
        .ok_or_else(|| StatementError::Read("the input was not read to its end".into()))?;
    let (opening_balance, closing_balance) = balances(&lines);
    Ok(ParsedStatement {
        lines,
        sha256,
        opening_balance,
        closing_balance,
    })
}

fn balances(lines: &[StatementLine]) -> (Option<Amount>, Option<Amount>) {
    let (Some(first), Some(last)) = (lines.first(), lines.last()) else {
        return (None, None);
    };
    let currency = first.currency;
    if lines.iter().any(|l| l.currency != currency) {
        return (None, None);
    }
    let amount = |minor: i64| Amount::from_minor(minor, currency);
    (
        first.balance_before_minor().map(amount),
        last.balance_after_minor.map(amount),
    )
}

/// `,` or `;`, whichever occurs more often outside quotes in `line` (`,` on a tie).
fn sniff_delimiter(line: &[u8]) -> u8 {
    let (mut commas, mut semicolons, mut quoted) = (0usize, 0usize, false);
    for &b in line {
        match b {
            b'"' => quoted = !quoted,
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

/// Reads a statement one row at a time: `Ok(line)` per good row, and per bad row one `Err`
/// per bad cell (consecutive, same row), or a single `Err` for a bad row as a whole.
///
/// ```
/// use cva_ledger::money::Currency;
/// use cva_reconciliation::mapping::ColumnMapping;
/// use cva_reconciliation::statement::StatementReader;
///
/// let file = "transaction_id,amount,date\nT1,100,2024-03-01\nT2,oops,2024-03-01\n";
/// let xof = Currency::parse("XOF").unwrap();
/// let mut reader = StatementReader::new(file.as_bytes(), &ColumnMapping::generic(), xof).unwrap();
/// assert_eq!(reader.next().unwrap().unwrap().amount_minor, 100);
/// let error = reader.next().unwrap().unwrap_err();
/// assert_eq!((error.row, error.column.as_str()), (3, "amount"));
/// assert!(reader.next().is_none());
/// assert!(reader.sha256().is_some());
/// ```
pub struct StatementReader<R: Read> {
    csv: csv::Reader<Source<R>>,
    header: Vec<String>,
    delimiter: u8,
    /// The header index of each field's column (by `Field as usize`).
    index: [Option<usize>; Field::ALL.len()],
    decimal: Option<char>,
    date_order: DateOrder,
    utc_offset: UtcOffset,
    /// Lower-cased provider words and status names → status.
    statuses: HashMap<String, StatementStatus>,
    default_currency: Currency,
    record: csv::ByteRecord,
    /// The row number of the record last read.
    row: usize,
    /// The CSV reader's line count after the record last read.
    line: u64,
    pending: VecDeque<RowError>,
    done: bool,
    read_error: Option<String>,
    scratch: String,
}

impl<R: Read> fmt::Debug for StatementReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatementReader")
            .field("header", &self.header)
            .field("delimiter", &char::from(self.delimiter))
            .field("row", &self.row)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<R: Read> StatementReader<R> {
    /// Validates `mapping`, reads the header (dropping a BOM, sniffing the delimiter) and finds
    /// the mapped columns. Lines come from iterating. `default_currency` is the currency of
    /// lines without one.
    pub fn new(
        reader: R,
        mapping: &ColumnMapping,
        default_currency: Currency,
    ) -> Result<Self, StatementError> {
        mapping.validate()?;
        let mut source = Source::new(reader);
        let delimiter = match source
            .header_line(MAX_HEADER_BYTES)
            .map_err(|e| StatementError::Read(e.to_string()))?
        {
            HeaderLine::Found(line) => sniff_delimiter(line),
            HeaderLine::Empty => return Err(StatementError::Empty),
            HeaderLine::TooLong => return Err(StatementError::HeaderTooLong),
        };
        let csv = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .has_headers(false)
            .flexible(true)
            .terminator(csv::Terminator::Any(b'\n'))
            .buffer_capacity(64 * 1024)
            .from_reader(source);

        let mut statuses = HashMap::new();
        for status in StatementStatus::ALL {
            statuses.insert(status.as_str().to_owned(), status);
        }
        for (word, status) in &mapping.status_values {
            statuses.insert(lower(word.trim()), *status);
        }

        let mut reader = StatementReader {
            csv,
            header: Vec::new(),
            delimiter,
            index: [None; Field::ALL.len()],
            decimal: mapping.decimal_separator.as_char(),
            date_order: mapping.date_format,
            utc_offset: mapping.utc_offset,
            statuses,
            default_currency,
            record: csv::ByteRecord::new(),
            row: 0,
            line: 1,
            pending: VecDeque::new(),
            done: false,
            read_error: None,
            scratch: String::new(),
        };
        if !reader
            .next_record()
            .map_err(|e| StatementError::Read(e.to_string()))?
        {
            return Err(StatementError::Empty);
        }
        for field in reader.record.iter() {
            let name = std::str::from_utf8(field).map_err(|_| StatementError::HeaderNotUtf8)?;
            reader
                .header
                .push(name.trim_start_matches('\u{feff}').trim().to_owned());
        }

        let mut missing = Vec::new();
        for field in Field::ALL {
            let Some(column) = mapping.columns.get(field) else {
                continue;
            };
            let column = column.trim();
            let mut hits = reader
                .header
                .iter()
                .enumerate()
                .filter(|(_, h)| same_text(h, column));
            match (hits.next(), hits.next()) {
                (Some(_), Some((_, name))) => {
                    return Err(StatementError::DuplicateColumn {
                        column: name.clone(),
                    })
                }
                (Some((i, _)), None) => reader.index[field as usize] = Some(i),
                (None, _) if field.is_required() => missing.push(column.to_owned()),
                (None, _) => {}
            }
        }
        if !missing.is_empty() {
            return Err(StatementError::MissingColumns { columns: missing });
        }
        Ok(reader)
    }

    /// The header names as in the file (trimmed).
    pub fn header(&self) -> &[String] {
        &self.header
    }

    /// The delimiter found in the header line: `,` or `;`.
    pub fn delimiter(&self) -> char {
        char::from(self.delimiter)
    }

    /// SHA-256 of the raw bytes, lower-case hex — once the iterator has returned `None` (the
    /// whole input has been read); `None` before, or after a read error.
    pub fn sha256(&self) -> Option<String> {
        if self.read_error.is_some() {
            return None;
        }
        self.csv.get_ref().sha256_hex()
    }

    /// Raw bytes read from the input so far (the reader reads ahead by up to 64 KiB).
    pub fn bytes_read(&self) -> u64 {
        self.csv.get_ref().raw_len()
    }

    /// Reads the next record that is not all blank into `self.record`, keeping the row count.
    fn next_record(&mut self) -> Result<bool, csv::Error> {
        loop {
            if !self.csv.read_byte_record(&mut self.record)? {
                return Ok(false);
            }
            let position = self.csv.position();
            let end_line = position.line();
            // Line ends inside quoted fields (kept in the record as LF, see `source`).
            let quoted = self
                .record
                .as_slice()
                .iter()
                .filter(|&&b| b == b'\n')
                .count() as u64;
            let own_end = u64::from(!self.csv.get_ref().ends_without_newline_at(position.byte()));
            let empty_lines = (end_line - self.line).saturating_sub(quoted + own_end);
            self.row += 1 + empty_lines as usize;
            self.line = end_line;
            if !self
                .record
                .iter()
                .all(|cell| cell.iter().all(u8::is_ascii_whitespace))
            {
                return Ok(true);
            }
        }
    }

    /// Checks the record just read.
    fn parse_record(&mut self) -> Result<StatementLine, Vec<RowError>> {
        let row = self.row;
        let width = self.header.len();
        let record = &self.record;
        if record.len() < width {
            return Err(vec![RowError {
                row,
                column: self.header[record.len()].clone(),
                reason: format!(
                    "the row ends early: it has {} cells, the header has {width}",
                    record.len()
                ),
            }]);
        }
        if record.len() > width
            && record
                .iter()
                .skip(width)
                .any(|cell| !cell.iter().all(u8::is_ascii_whitespace))
        {
            let delimiter = char::from(self.delimiter);
            return Err(vec![RowError {
                row,
                column: String::new(),
                reason: format!(
                    "the row has {} cells but the header only {width} (a `{delimiter}` inside a \
                     value that is not in double quotes, such as an amount written 65{delimiter}000?)",
                    record.len()
                ),
            }]);
        }
        let mut cells = Cells {
            row,
            record,
            header: &self.header,
            index: &self.index,
            errors: Vec::new(),
        };

        let transaction_id = cells
            .required(Field::TransactionId)
            .and_then(|id| cells.short(Field::TransactionId, id, MAX_ID_CHARS));
        let reference = cells
            .optional(Field::Reference)
            .and_then(|r| cells.short(Field::Reference, r, MAX_ID_CHARS));
        let msisdn = cells
            .optional(Field::Msisdn)
            .and_then(|m| cells.short(Field::Msisdn, m, MAX_MSISDN_CHARS));

        let currency = match cells.optional(Field::Currency) {
            None if cells.failed(Field::Currency) => None,
            None => Some(self.default_currency),
            Some(code) => {
                let parsed = if code.bytes().all(|b| b.is_ascii_uppercase()) {
                    Currency::parse(code)
                } else {
                    Currency::parse(&code.to_ascii_uppercase())
                };
                match parsed {
                    Ok(currency) => Some(currency),
                    Err(_) => {
                        cells.fail(
                            Field::Currency,
                            "unknown currency: expected an ISO 4217 code such as XOF, USD or EUR"
                                .into(),
                        );
                        None
                    }
                }
            }
        };
        let decimal = self.decimal;
        let money =
            |cells: &mut Cells, field: Field, text: &str, currency: Currency| match parse_amount(
                text,
                decimal,
                currency.exponent(),
            ) {
                Ok(minor) => Some(minor),
                Err(e) => {
                    cells.fail(field, e.to_string());
                    None
                }
            };
        let amount_text = cells.required(Field::Amount);
        let fee_text = cells.optional(Field::Fee);
        let balance_text = cells.optional(Field::BalanceAfter);
        let (mut amount, mut fee, mut balance_after) = (None, Some(0), Some(None));
        if let Some(currency) = currency {
            amount = amount_text.and_then(|t| money(&mut cells, Field::Amount, t, currency));
            if let Some(t) = fee_text {
                fee = money(&mut cells, Field::Fee, t, currency);
            }
            if let Some(t) = balance_text {
                balance_after = money(&mut cells, Field::BalanceAfter, t, currency).map(Some);
            }
        }

        let status = if self.index[Field::Status as usize].is_some() {
            cells.required(Field::Status).and_then(|word| {
                let found = if word
                    .bytes()
                    .all(|b| !b.is_ascii_uppercase() && b.is_ascii())
                {
                    self.statuses.get(word)
                } else {
                    self.scratch.clear();
                    self.scratch
                        .extend(word.chars().flat_map(char::to_lowercase));
                    self.statuses.get(self.scratch.as_str())
                };
                if found.is_none() {
                    cells.fail(
                        Field::Status,
                        "unknown status: expected completed, failed, reversed, reversal, pending \
                         or a word listed in the mapping's status_values"
                            .into(),
                    );
                }
                found.copied()
            })
        } else {
            Some(StatementStatus::Completed)
        };

        let at = cells.required(Field::Date).and_then(|text| {
            match parse_date(text, self.date_order, self.utc_offset) {
                Ok(at) => Some(at),
                Err(e) => {
                    cells.fail(Field::Date, e.to_string());
                    None
                }
            }
        });

        match (
            transaction_id,
            currency,
            amount,
            fee,
            status,
            at,
            balance_after,
        ) {
            (
                Some(transaction_id),
                Some(currency),
                Some(amount_minor),
                Some(fee_minor),
                Some(status),
                Some(at),
                Some(balance_after_minor),
            ) if cells.errors.is_empty() => Ok(StatementLine {
                row,
                transaction_id: transaction_id.to_owned(),
                reference: reference.map(str::to_owned),
                msisdn: msisdn.map(str::to_owned),
                amount_minor,
                fee_minor,
                currency,
                status,
                at,
                balance_after_minor,
            }),
            _ => Err(cells.errors),
        }
    }
}

fn lower(text: &str) -> String {
    text.chars().flat_map(char::to_lowercase).collect()
}

/// The cells of one record, and the errors found in them.
struct Cells<'a> {
    row: usize,
    record: &'a csv::ByteRecord,
    header: &'a [String],
    index: &'a [Option<usize>; Field::ALL.len()],
    errors: Vec<RowError>,
}

impl<'a> Cells<'a> {
    fn fail(&mut self, field: Field, reason: String) {
        let column = self.index[field as usize]
            .map(|i| self.header[i].clone())
            .unwrap_or_else(|| field.name().to_owned());
        self.errors.push(RowError {
            row: self.row,
            column,
            reason,
        });
    }

    /// Whether an error was recorded for `field`'s column.
    fn failed(&self, field: Field) -> bool {
        self.index[field as usize]
            .is_some_and(|i| self.errors.iter().any(|e| e.column == self.header[i]))
    }

    /// The trimmed cell; `None` when the column is absent or the cell not UTF-8 (recorded).
    fn text(&mut self, field: Field) -> Option<&'a str> {
        let i = self.index[field as usize]?;
        let record: &'a csv::ByteRecord = self.record;
        match std::str::from_utf8(&record[i]) {
            Ok(text) => Some(text.trim()),
            Err(_) => {
                self.fail(
                    field,
                    "not valid UTF-8 text; export or save the file as CSV UTF-8".into(),
                );
                None
            }
        }
    }

    /// A non-empty cell, or `None` after recording why not.
    fn required(&mut self, field: Field) -> Option<&'a str> {
        let present = self.index[field as usize].is_some();
        match self.text(field) {
            Some(text) if !text.is_empty() => Some(text),
            Some(_) => {
                self.fail(field, "required, but empty".into());
                None
            }
            None if !present => {
                self.fail(field, "required, but the column is missing".into());
                None
            }
            None => None,
        }
    }

    /// A non-empty cell, or `None` (absent column, empty cell, or an error recorded).
    fn optional(&mut self, field: Field) -> Option<&'a str> {
        self.text(field).filter(|text| !text.is_empty())
    }

    /// `text` if at most `max` characters, else `None` after recording it.
    fn short(&mut self, field: Field, text: &'a str, max: usize) -> Option<&'a str> {
        if text.len() <= max || text.chars().count() <= max {
            Some(text)
        } else {
            self.fail(field, format!("longer than {max} characters"));
            None
        }
    }
}

impl<R: Read> Iterator for StatementReader<R> {
    type Item = Result<StatementLine, RowError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(error) = self.pending.pop_front() {
                return Some(Err(error));
            }
            if self.done {
                return None;
            }
            match self.next_record() {
                Ok(true) => {}
                Ok(false) => {
                    self.done = true;
                    return None;
                }
                Err(e) => {
                    self.done = true;
                    let reason = format!("the file could not be read past this point: {e}");
                    self.read_error = Some(reason.clone());
                    return Some(Err(RowError {
                        row: self.row + 1,
                        column: String::new(),
                        reason,
                    }));
                }
            }
            match self.parse_record() {
                Ok(line) => return Some(Ok(line)),
                Err(errors) => self.pending.extend(errors),
            }
        }
    }
}

impl<R: Read> std::iter::FusedIterator for StatementReader<R> {}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn delimiter_is_sniffed_outside_quotes() {
        assert_eq!(sniff_delimiter(b"a,b,c"), b',');
        assert_eq!(sniff_delimiter(b"a;b;c"), b';');
        assert_eq!(sniff_delimiter(b"\"a,b,c\";d;e"), b';');
        assert_eq!(sniff_delimiter(b"a"), b',');
    }

    #[test]
    fn balance_before_depends_on_status() {
        let line = StatementLine {
            row: 2,
            transaction_id: "T".into(),
            reference: None,
            msisdn: None,
            amount_minor: 100,
            fee_minor: 5,
            currency: Currency::parse("XOF").unwrap(),
            status: StatementStatus::Completed,
            at: DateTime::UNIX_EPOCH,
            balance_after_minor: Some(895),
        };
        assert_eq!(line.balance_before_minor(), Some(1000));
        let failed = StatementLine {
            status: StatementStatus::Failed,
            ..line.clone()
        };
        assert_eq!(failed.balance_before_minor(), Some(895));
        let overflow = StatementLine {
            balance_after_minor: Some(i64::MAX),
            ..line
        };
        assert_eq!(overflow.balance_before_minor(), None);
    }
}
