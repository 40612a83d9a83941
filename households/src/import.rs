//! Bulk enrolment from a KoboToolbox/ODK CSV export: each row becomes a validated
//! [`HouseholdRecord`], or a list of [`RowError`]s naming the row, the column and the rule broken.
//!
//! ```
//! use cva_households::import::{parse, ColumnMapping};
//! use cva_households::msisdn::OperatorTable;
//!
//! let csv = "_uuid,_submission_time,enumerator,consent,household/head_name,household/head_sex,\
//! household/head_birth_year,household/size,household/displacement_status,location/region,\
//! location/cercle,location/commune,contact/msisdn\n\
//! 6f1c2a4e-8d3b-4c5a-9e7f-0a1b2c3d4e5f,2024-03-01T10:22:33,enum01,yes,Aminata Coulibaly,female,\
//! 1985,6,idp,ML06,ML0601,ML060101,76 12 34 56\n";
//! let parsed = parse(
//!     csv.as_bytes(),
//!     &ColumnMapping::kobo_default(),
//!     &OperatorTable::default_table(),
//!     "223",
//!     2024,
//! )
//! .unwrap();
//! assert!(parsed.errors.is_empty());
//! let (row, household) = &parsed.records[0];
//! assert_eq!(*row, 2);
//! assert_eq!(household.operator.as_deref(), Some("orange-ml"));
//! ```
//!
//! # The file
//!
//! UTF-8, with or without a byte-order mark; the delimiter is `,` or `;`, whichever occurs more
//! often (outside quotes) in the header line. Fields may be quoted and then contain delimiters and
//! line breaks. Header names are matched exactly after trimming. Columns the mapping does not
//! name are ignored (Kobo's `start`, `end`, `today`, `_id`, `_index`…). Rows whose fields are all
//! blank are skipped.
//!
//! The default layout is Kobo's "XML values and headers" export with group-prefixed headers
//! ([`ColumnMapping::kobo_default`]). All mapped columns must be present except those of the
//! optional fields `msisdn`, `national_id` and `biometric_ref`; otherwise [`parse`] fails with
//! [`ImportError::MissingColumns`] listing them.
//!
//! # Row numbers and errors
//!
//! Row numbers are spreadsheet row numbers: the header is row 1, the first data row is row 2
//! (a quoted line break does not start a new row; an empty line does). A row may have several
//! errors, one per bad column; a row with any error yields no record. [`RowError::column`] is the
//! header name as in the file, or empty when the error concerns the whole row (more fields than
//! the header). Reasons never repeat the value: names, phone numbers and ID numbers are personal
//! data. P-codes are not, and are shown.
//!
//! | field | Kobo column | rule |
//! |---|---|---|
//! | `submission_id` | `_uuid` | required; a UUID of any version (a `uuid:` prefix is allowed), stored lower-case; unique within the file |
//! | `submitted_at` | `_submission_time` | required; `2024-03-01T10:22:33`, optionally with fractional seconds, `Z` or an offset; a space may replace `T`; without an offset it is UTC |
//! | `enumerator` | `enumerator` | required, at most 100 characters |
//! | `consent` | `consent` | required; yes/no, true/false, 1/0, oui/non; "no" is an error: the household cannot be enrolled |
//! | `head_name` | `household/head_name` | required; whitespace collapsed, Unicode NFC; 2 to 120 characters |
//! | `head_sex` | `household/head_sex` | female/male, f/m, femme/homme |
//! | `head_birth_year` | `household/head_birth_year` | a year from `this_year - 120` to `this_year - 14` |
//! | `size` | `household/size` | a whole number from 1 to 50 |
//! | `displacement_status` | `household/displacement_status` | idp (déplacé), host (hôte, host_community), returnee (retourné) |
//! | `region`, `cercle`, `commune` | `location/…` | p-codes; the commune must lie in the cercle, the cercle in the region |
//! | `msisdn` | `contact/msisdn` | optional; normalised with the operator table, which also fills `operator` |
//! | `national_id`, `biometric_ref` | `identity/…` | optional; at most 64 of `A-Z a-z 0-9 - /`, stored upper-case |
//!
//! Keywords are matched case-insensitively.
//!
//! # Other layouts: the mapping file
//!
//! When a form names its questions differently, give [`ColumnMapping::from_csv`] a two-column CSV
//! file with the header `field,column`: each line maps one of the fields above to the header name
//! used in the export. Fields not listed keep their Kobo default column. Unknown field names, a
//! field listed twice and two fields reading the same column are errors.
//!
//! ```text
//! field,column
//! submission_id,meta/instanceID
//! head_name,chef_menage/nom
//! msisdn,telephone
//! region,admin1
//! cercle,admin2
//! commune,admin3
//! ```

use std::borrow::Cow;
use std::collections::HashMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use thiserror::Error;
use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};
use uuid::Uuid;

use crate::model::{Displacement, HouseholdRecord, PCode, Sex};
use crate::msisdn::OperatorTable;

/// The fields we read, in this order, with their column in Kobo's default export.
const FIELDS: [(&str, &str); 15] = [
    ("submission_id", "_uuid"),
    ("submitted_at", "_submission_time"),
    ("enumerator", "enumerator"),
    ("consent", "consent"),
    ("head_name", "household/head_name"),
    ("head_sex", "household/head_sex"),
    ("head_birth_year", "household/head_birth_year"),
    ("size", "household/size"),
    ("displacement_status", "household/displacement_status"),
    ("region", "location/region"),
    ("cercle", "location/cercle"),
    ("commune", "location/commune"),
    ("msisdn", "contact/msisdn"),
    ("national_id", "identity/national_id"),
    ("biometric_ref", "identity/biometric_ref"),
];
const SUBMISSION_ID: usize = 0;
const SUBMITTED_AT: usize = 1;
const ENUMERATOR: usize = 2;
const CONSENT: usize = 3;
const HEAD_NAME: usize = 4;
const HEAD_SEX: usize = 5;
const HEAD_BIRTH_YEAR: usize = 6;
const SIZE: usize = 7;
const DISPLACEMENT: usize = 8;
const REGION: usize = 9;
const CERCLE: usize = 10;
const COMMUNE: usize = 11;
const MSISDN: usize = 12;
const NATIONAL_ID: usize = 13;
const BIOMETRIC_REF: usize = 14;
/// Fields from this index on are optional, and so are their columns.
const FIRST_OPTIONAL: usize = MSISDN;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Which header name each field is read from. See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnMapping {
    columns: [String; FIELDS.len()],
}

impl Default for ColumnMapping {
    fn default() -> Self {
        ColumnMapping::kobo_default()
    }
}

impl ColumnMapping {
    /// Kobo's "XML values and headers" export with group-prefixed headers.
    pub fn kobo_default() -> ColumnMapping {
        ColumnMapping {
            columns: FIELDS.map(|(_, column)| column.to_owned()),
        }
    }

    /// Reads a mapping file (`field,column`; see the module documentation). Errors carry the
    /// file's line number, the header being line 1.
    pub fn from_csv(text: &str) -> Result<ColumnMapping, ImportError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let error = |line: usize, reason: String| ImportError::Mapping { line, reason };
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        let mut records = reader.records();
        match records.next() {
            Some(Ok(header)) if header.iter().eq(["field", "column"]) => {}
            Some(Err(e)) => return Err(error(1, e.to_string())),
            _ => return Err(error(1, "expected the header field,column".into())),
        }

        let mut mapping = ColumnMapping::kobo_default();
        // The line each field was listed on (0: not listed, Kobo default).
        let mut listed = [0usize; FIELDS.len()];
        for result in records {
            let record =
                result.map_err(|e| error(record_line(text, e.position()), e.to_string()))?;
            let line = record_line(text, record.position());
            if record.len() != 2 {
                return Err(error(
                    line,
                    format!("expected 2 fields (field,column), found {}", record.len()),
                ));
            }
            let (field, column) = (&record[0], &record[1]);
            let index = FIELDS
                .iter()
                .position(|(name, _)| *name == field)
                .ok_or_else(|| {
                    let names: Vec<&str> = FIELDS.iter().map(|(name, _)| *name).collect();
                    error(
                        line,
                        format!(
                            "unknown field {field:?}; the fields are {}",
                            names.join(", ")
                        ),
                    )
                })?;
            if listed[index] != 0 {
                return Err(error(
                    line,
                    format!("field {field} is already mapped at line {}", listed[index]),
                ));
            }
            if column.is_empty() {
                return Err(error(
                    line,
                    format!("field {field} has an empty column name"),
                ));
            }
            listed[index] = line;
            mapping.columns[index] = column.to_owned();
        }

        for a in 0..FIELDS.len() {
            for b in a + 1..FIELDS.len() {
                if mapping.columns[a] == mapping.columns[b] {
                    return Err(error(
                        listed[a].max(listed[b]),
                        format!(
                            "fields {} and {} both read column {:?}",
                            FIELDS[a].0, FIELDS[b].0, mapping.columns[a]
                        ),
                    ));
                }
            }
        }
        Ok(mapping)
    }

    /// The header name `field` is read from, or `None` for an unknown field name.
    pub fn column(&self, field: &str) -> Option<&str> {
        let index = FIELDS.iter().position(|(name, _)| *name == field)?;
        Some(&self.columns[index])
    }
}

/// A problem with the file as a whole: nothing was imported.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ImportError {
    #[error("the file is empty: there is no header line")]
    Empty,
    #[error("the header line is not valid UTF-8 text; export or save the file as CSV UTF-8")]
    HeaderNotUtf8,
    #[error("missing required columns: {}", columns.join(", "))]
    MissingColumns { columns: Vec<String> },
    #[error("column {column:?} appears more than once in the header")]
    DuplicateColumn { column: String },
    #[error("the file cannot be read as CSV: {0}")]
    Csv(String),
    #[error("column mapping, line {line}: {reason}")]
    Mapping { line: usize, reason: String },
}

/// One rule broken by one field of one row.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("row {row}, column {column}: {reason}")]
pub struct RowError {
    /// Spreadsheet row number: the header is row 1.
    pub row: usize,
    /// The header name as in the file; empty for an error about the whole row.
    pub column: String,
    /// The rule broken. Never contains the value.
    pub reason: String,
}

/// The outcome of [`parse`]: the good rows with their row numbers, and every error of the others.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    pub records: Vec<(usize, HouseholdRecord)>,
    pub errors: Vec<RowError>,
}

type Reason = Cow<'static, str>;

const REQUIRED: &str = "required, but empty";

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

/// The line a record starts on. The reader's position is taken before it skips empty lines.
pub(crate) fn record_line(text: &str, position: Option<&csv::Position>) -> usize {
    position.map_or(0, |p| {
        let rest = text.as_bytes().get(p.byte() as usize..).unwrap_or_default();
        p.line() as usize + leading_empty_lines(rest)
    })
}

/// How many empty lines come before the record that starts at or after byte `at`, the reader's
/// position after the previous record. After a CRLF terminator that position lies between `\r`
/// and `\n`: that `\n` ends the previous record and is no empty line.
fn empty_lines_at(bytes: &[u8], at: usize) -> usize {
    let rest = bytes.get(at..).unwrap_or_default();
    let lines = leading_empty_lines(rest);
    let split_crlf = at > 0 && bytes.get(at - 1) == Some(&b'\r') && rest.first() == Some(&b'\n');
    lines - usize::from(split_crlf)
}

/// How many line terminators start `bytes` (`\r\n` counting once). The CSV reader skips empty
/// lines; a spreadsheet shows them.
pub(crate) fn leading_empty_lines(bytes: &[u8]) -> usize {
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

fn csv_error(e: csv::Error) -> ImportError {
    ImportError::Csv(e.to_string())
}

/// Parses an export. `operators` and `default_country` (a calling code such as `223`) normalise
/// phone numbers; `this_year` bounds the head's birth year. File-level problems are an
/// [`ImportError`]; problems with rows are in [`Parsed::errors`].
pub fn parse(
    bytes: &[u8],
    mapping: &ColumnMapping,
    operators: &OperatorTable,
    default_country: &str,
    this_year: i32,
) -> Result<Parsed, ImportError> {
    let bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ImportError::Empty);
    }
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(detect_delimiter(bytes))
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let mut header_record = csv::ByteRecord::new();
    let mut row = leading_empty_lines(bytes);
    if !reader
        .read_byte_record(&mut header_record)
        .map_err(csv_error)?
    {
        return Err(ImportError::Empty);
    }
    let mut header = Vec::with_capacity(header_record.len());
    for field in header_record.iter() {
        let name = std::str::from_utf8(field).map_err(|_| ImportError::HeaderNotUtf8)?;
        header.push(name.trim_start_matches('\u{feff}').trim());
    }

    let mut index = [None; FIELDS.len()];
    let mut missing = Vec::new();
    for (field, column) in mapping.columns.iter().enumerate() {
        let mut hits = header
            .iter()
            .enumerate()
            .filter(|(_, h)| **h == column.as_str());
        match (hits.next(), hits.next()) {
            (Some(_), Some(_)) => {
                return Err(ImportError::DuplicateColumn {
                    column: column.clone(),
                })
            }
            (Some((i, _)), None) => index[field] = Some(i),
            (None, _) if field < FIRST_OPTIONAL => missing.push(column.clone()),
            (None, _) => {}
        }
    }
    if !missing.is_empty() {
        return Err(ImportError::MissingColumns { columns: missing });
    }

    let mut checker = Checker {
        mapping,
        operators,
        default_country,
        birth_years: (this_year - 120)..=(this_year - 14),
        seen: HashMap::new(),
    };
    let mut parsed = Parsed::default();
    row += 1;
    let mut record = csv::ByteRecord::new();

    loop {
        let before = reader.position().byte() as usize;
        if !reader.read_byte_record(&mut record).map_err(csv_error)? {
            break;
        }
        row += 1 + empty_lines_at(bytes, before);
        if record
            .iter()
            .all(|field| field.iter().all(u8::is_ascii_whitespace))
        {
            continue;
        }
        if record.len() < header.len() {
            parsed.errors.push(RowError {
                row,
                column: header[record.len()].to_owned(),
                reason: format!(
                    "the row ends early: it has {} fields, the header has {}",
                    record.len(),
                    header.len()
                ),
            });
            continue;
        }
        if record.len() > header.len()
            && record
                .iter()
                .skip(header.len())
                .any(|field| !field.iter().all(u8::is_ascii_whitespace))
        {
            parsed.errors.push(RowError {
                row,
                column: String::new(),
                reason: format!(
                    "the row has {} fields but the header only {}",
                    record.len(),
                    header.len()
                ),
            });
            continue;
        }
        let mut fields = [""; FIELDS.len()];
        let errors_before = parsed.errors.len();
        for (field, slot) in fields.iter_mut().enumerate() {
            if let Some(i) = index[field] {
                match std::str::from_utf8(&record[i]) {
                    Ok(text) => *slot = text.trim(),
                    Err(_) => parsed.errors.push(RowError {
                        row,
                        column: mapping.columns[field].clone(),
                        reason: "not valid UTF-8 text; export or save the file as CSV UTF-8".into(),
                    }),
                }
            }
        }
        if parsed.errors.len() > errors_before {
            continue;
        }
        if let Some(household) = checker.check(row, &fields, &mut parsed.errors) {
            parsed.records.push((row, household));
        }
    }
    Ok(parsed)
}

/// Validates the fields of one row.
struct Checker<'a> {
    mapping: &'a ColumnMapping,
    operators: &'a OperatorTable,
    default_country: &'a str,
    birth_years: std::ops::RangeInclusive<i32>,
    /// Submission id → the row it was first seen at.
    seen: HashMap<Uuid, usize>,
}

/// Collects the errors of one row.
struct Sink<'a> {
    row: usize,
    mapping: &'a ColumnMapping,
    errors: &'a mut Vec<RowError>,
}

impl Sink<'_> {
    /// The value, or `None` after recording why `field` is wrong.
    fn take<T>(&mut self, field: usize, result: Result<T, Reason>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(reason) => {
                self.errors.push(RowError {
                    row: self.row,
                    column: self.mapping.columns[field].clone(),
                    reason: reason.into_owned(),
                });
                None
            }
        }
    }
}

impl Checker<'_> {
    fn check(
        &mut self,
        row: usize,
        fields: &[&str; FIELDS.len()],
        errors: &mut Vec<RowError>,
    ) -> Option<HouseholdRecord> {
        let before = errors.len();
        let mut sink = Sink {
            row,
            mapping: self.mapping,
            errors,
        };
        let s = &mut sink;

        let uuid = s.take(SUBMISSION_ID, required(fields[SUBMISSION_ID], parse_uuid));
        let submitted_at = s.take(SUBMITTED_AT, required(fields[SUBMITTED_AT], parse_time));
        let enumerator = s.take(ENUMERATOR, required(fields[ENUMERATOR], parse_enumerator));
        let consent = s.take(CONSENT, required(fields[CONSENT], parse_consent));
        let head_name = s.take(HEAD_NAME, required(fields[HEAD_NAME], parse_name));
        let head_sex = s.take(HEAD_SEX, required(fields[HEAD_SEX], parse_sex));
        let birth_years = self.birth_years.clone();
        let head_birth_year = s.take(
            HEAD_BIRTH_YEAR,
            required(fields[HEAD_BIRTH_YEAR], |v| {
                parse_birth_year(v, birth_years)
            }),
        );
        let size = s.take(SIZE, required(fields[SIZE], parse_size));
        let displacement = s.take(
            DISPLACEMENT,
            required(fields[DISPLACEMENT], parse_displacement),
        );
        let region = s.take(REGION, required(fields[REGION], parse_pcode));
        let cercle = s.take(CERCLE, required(fields[CERCLE], parse_pcode));
        let commune = s.take(COMMUNE, required(fields[COMMUNE], parse_pcode));
        if let (Some(region), Some(cercle)) = (&region, &cercle) {
            if !cercle.within(region) {
                s.take::<()>(CERCLE, Err(not_inside("cercle", cercle, "region", region)));
            }
        }
        if let (Some(cercle), Some(commune)) = (&cercle, &commune) {
            if !commune.within(cercle) {
                s.take::<()>(
                    COMMUNE,
                    Err(not_inside("commune", commune, "cercle", cercle)),
                );
            }
        }
        let msisdn = s.take(
            MSISDN,
            optional(fields[MSISDN], |v| {
                self.operators
                    .normalise(v, self.default_country)
                    .map_err(|e| Cow::Owned(e.to_string()))
            }),
        );
        let national_id = s.take(NATIONAL_ID, optional(fields[NATIONAL_ID], parse_identifier));
        let biometric_ref = s.take(
            BIOMETRIC_REF,
            optional(fields[BIOMETRIC_REF], parse_identifier),
        );

        if let Some(uuid) = uuid {
            if let Some(first) = self.seen.get(&uuid) {
                let reason = format!(
                    "duplicate {}, first seen at row {first}",
                    self.mapping.columns[SUBMISSION_ID]
                );
                s.take::<()>(SUBMISSION_ID, Err(reason.into()));
            } else {
                self.seen.insert(uuid, row);
            }
        }

        if sink.errors.len() > before {
            return None;
        }
        let (msisdn, operator) = match msisdn? {
            Some((msisdn, operator)) => (Some(msisdn), Some(operator)),
            None => (None, None),
        };
        Some(HouseholdRecord {
            submission_id: uuid?.hyphenated().to_string(),
            submitted_at: submitted_at?,
            enumerator: enumerator?,
            consent: consent?,
            head_name: head_name?,
            head_sex: head_sex?,
            head_birth_year: head_birth_year?,
            size: size?,
            displacement: displacement?,
            region: region?,
            cercle: cercle?,
            commune: commune?,
            msisdn,
            operator,
            national_id: national_id?,
            biometric_ref: biometric_ref?,
        })
    }
}

fn required<T>(s: &str, parse: impl FnOnce(&str) -> Result<T, Reason>) -> Result<T, Reason> {
    if s.is_empty() {
        Err(REQUIRED.into())
    } else {
        parse(s)
    }
}

fn optional<T>(
    s: &str,
    parse: impl FnOnce(&str) -> Result<T, Reason>,
) -> Result<Option<T>, Reason> {
    if s.is_empty() {
        Ok(None)
    } else {
        parse(s).map(Some)
    }
}

fn not_inside(what: &str, inner: &PCode, parent_name: &str, parent: &PCode) -> Reason {
    Cow::Owned(format!(
        "{what} {} is not inside {parent_name} {}",
        inner.as_str(),
        parent.as_str()
    ))
}

fn parse_uuid(s: &str) -> Result<Uuid, Reason> {
    let s = s.strip_prefix("uuid:").unwrap_or(s);
    Uuid::try_parse(s)
        .map_err(|_| "expected a UUID, e.g. 6f1c2a4e-8d3b-4c5a-9e7f-0a1b2c3d4e5f".into())
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, Reason> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
            return Ok(t.and_utc());
        }
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"] {
        if let Ok(t) = DateTime::parse_from_str(s, format) {
            return Ok(t.with_timezone(&Utc));
        }
    }
    Err(
        "expected a date and time such as 2024-03-01T10:22:33 (optionally with fractional \
         seconds and Z or an offset)"
            .into(),
    )
}

fn parse_enumerator(s: &str) -> Result<String, Reason> {
    if s.chars().count() > 100 {
        Err("must be at most 100 characters".into())
    } else {
        Ok(s.to_owned())
    }
}

fn keyword<T: Copy>(s: &str, table: &[(&str, T)]) -> Option<T> {
    table
        .iter()
        .find(|(word, _)| word.eq_ignore_ascii_case(s))
        .map(|(_, value)| *value)
}

fn parse_consent(s: &str) -> Result<bool, Reason> {
    const WORDS: [(&str, bool); 8] = [
        ("yes", true),
        ("true", true),
        ("1", true),
        ("oui", true),
        ("no", false),
        ("false", false),
        ("0", false),
        ("non", false),
    ];
    match keyword(s, &WORDS) {
        Some(true) => Ok(true),
        Some(false) => Err("the household did not consent; it cannot be enrolled".into()),
        None => Err("expected yes or no (also true/false, 1/0, oui/non)".into()),
    }
}

fn parse_name(s: &str) -> Result<String, Reason> {
    let mut name = String::with_capacity(s.len());
    for word in s.split_whitespace() {
        if !name.is_empty() {
            name.push(' ');
        }
        name.push_str(word);
    }
    if name.chars().any(char::is_control) {
        return Err("contains control characters".into());
    }
    if is_nfc_quick(name.chars()) != IsNormalized::Yes {
        name = name.nfc().collect();
    }
    if (2..=120).contains(&name.chars().count()) {
        Ok(name)
    } else {
        Err("must be 2 to 120 characters long".into())
    }
}

fn parse_sex(s: &str) -> Result<Sex, Reason> {
    const WORDS: [(&str, Sex); 6] = [
        ("female", Sex::Female),
        ("f", Sex::Female),
        ("femme", Sex::Female),
        ("male", Sex::Male),
        ("m", Sex::Male),
        ("homme", Sex::Male),
    ];
    keyword(s, &WORDS).ok_or_else(|| "expected female or male (also f/m, femme/homme)".into())
}

fn parse_birth_year(s: &str, years: std::ops::RangeInclusive<i32>) -> Result<i32, Reason> {
    let year: i32 = s
        .parse()
        .map_err(|_| Cow::Borrowed("expected a year, e.g. 1985"))?;
    if years.contains(&year) {
        Ok(year)
    } else {
        Err(Cow::Owned(format!(
            "must be a year from {} to {} (a head of household aged 14 to 120)",
            years.start(),
            years.end()
        )))
    }
}

fn parse_size(s: &str) -> Result<u16, Reason> {
    match s.parse::<i64>() {
        Ok(n @ 1..=50) => Ok(n as u16),
        Ok(_) => Err("must be from 1 to 50 people".into()),
        Err(_) => Err("expected a whole number of people".into()),
    }
}

fn parse_displacement(s: &str) -> Result<Displacement, Reason> {
    const WORDS: [(&str, Displacement); 10] = [
        ("idp", Displacement::Idp),
        ("déplacé", Displacement::Idp),
        ("deplace", Displacement::Idp),
        ("host", Displacement::Host),
        ("hôte", Displacement::Host),
        ("hote", Displacement::Host),
        ("host_community", Displacement::Host),
        ("returnee", Displacement::Returnee),
        ("retourné", Displacement::Returnee),
        ("retourne", Displacement::Returnee),
    ];
    let found = if s.is_ascii() {
        keyword(s, &WORDS)
    } else {
        let lower: String = s.to_lowercase().nfc().collect();
        keyword(&lower, &WORDS)
    };
    found.ok_or_else(|| {
        "expected idp, host or returnee (also déplacé, hôte, host_community, retourné)".into()
    })
}

fn parse_pcode(s: &str) -> Result<PCode, Reason> {
    PCode::parse(s).map_err(Cow::Borrowed)
}

fn parse_identifier(s: &str) -> Result<String, Reason> {
    if s.len() > 64 {
        return Err("must be at most 64 characters".into());
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'/')
    {
        return Err("may contain only letters A-Z, digits, '-' and '/'".into());
    }
    Ok(s.to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "start,end,today,enumerator,consent,household/head_name,\
        household/head_sex,household/head_birth_year,household/size,\
        household/displacement_status,location/region,location/cercle,location/commune,\
        contact/msisdn,identity/national_id,identity/biometric_ref,_id,_uuid,_submission_time,\
        _index";

    const UUID1: &str = "6f1c2a4e-8d3b-4c5a-9e7f-0a1b2c3d4e5f";
    const UUID2: &str = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
    const UUID3: &str = "2b7e1516-28ae-d2a6-abf7-158809cf4f3c";

    /// A good row of the default layout for `uuid`, fields separated by `,`.
    fn row(uuid: &str) -> String {
        format!(
            "2024-03-01T09:00:00.000+00:00,2024-03-01T09:20:00.000+00:00,2024-03-01,enum01,yes,\
             Aminata Coulibaly,female,1985,6,idp,ML06,ML0601,ML060101,+223 76 12 34 56,\
             ml-123/456,brv-0001,42,{uuid},2024-03-01T10:22:33,1"
        )
    }

    /// `row(uuid)` with the field of `column` replaced by `value` (which must not contain `,`).
    fn row_with(uuid: &str, column: &str, value: &str) -> String {
        let at = HEADER.split(',').position(|h| h == column).unwrap();
        let mut fields: Vec<String> = row(uuid).split(',').map(str::to_owned).collect();
        fields[at] = value.to_owned();
        fields.join(",")
    }

    fn run(text: &str) -> Result<Parsed, ImportError> {
        parse(
            text.as_bytes(),
            &ColumnMapping::kobo_default(),
            &OperatorTable::default_table(),
            "223",
            2024,
        )
    }

    fn ok(text: &str) -> Parsed {
        run(text).unwrap()
    }

    /// The single error of a file with the header and one row with `column` set to `value`.
    fn one_error(column: &str, value: &str) -> RowError {
        let parsed = ok(&format!("{HEADER}\n{}\n", row_with(UUID1, column, value)));
        assert!(parsed.records.is_empty(), "{column}={value:?}");
        assert_eq!(
            parsed.errors.len(),
            1,
            "{column}={value:?}: {:?}",
            parsed.errors
        );
        let error = parsed.errors[0].clone();
        assert_eq!(error.row, 2);
        assert_eq!(error.column, column, "{value:?}");
        let personal = [
            "household/head_name",
            "contact/msisdn",
            "identity/national_id",
        ];
        if personal.contains(&column) && value.len() >= 4 {
            assert!(
                !error.to_string().contains(value),
                "{value:?} echoed: {error}"
            );
        }
        error
    }

    fn accepted(column: &str, value: &str) -> HouseholdRecord {
        let parsed = ok(&format!("{HEADER}\n{}\n", row_with(UUID1, column, value)));
        assert_eq!(parsed.errors, vec![], "{column}={value:?}");
        parsed.records[0].1.clone()
    }

    #[test]
    fn default_layout() {
        let parsed = ok(&format!("{HEADER}\n{}\r\n{}\n", row(UUID1), row(UUID2)));
        assert_eq!(parsed.errors, vec![]);
        assert_eq!(parsed.records.len(), 2);
        let (at, h) = &parsed.records[0];
        assert_eq!(*at, 2);
        assert_eq!(parsed.records[1].0, 3);
        assert_eq!(h.submission_id, UUID1);
        assert_eq!(h.submitted_at.to_rfc3339(), "2024-03-01T10:22:33+00:00");
        assert_eq!(h.enumerator, "enum01");
        assert!(h.consent);
        assert_eq!(h.head_name, "Aminata Coulibaly");
        assert_eq!(h.head_sex, Sex::Female);
        assert_eq!(h.head_birth_year, 1985);
        assert_eq!(h.size, 6);
        assert_eq!(h.displacement, Displacement::Idp);
        assert_eq!(h.region.as_str(), "ML06");
        assert_eq!(h.cercle.as_str(), "ML0601");
        assert_eq!(h.commune.as_str(), "ML060101");
        assert_eq!(h.msisdn.as_ref().unwrap().as_str(), "+22376123456");
        assert_eq!(h.operator.as_deref(), Some("orange-ml"));
        assert_eq!(h.national_id.as_deref(), Some("ML-123/456"));
        assert_eq!(h.biometric_ref.as_deref(), Some("BRV-0001"));
    }

    #[test]
    fn optional_fields_and_columns() {
        let h = accepted("contact/msisdn", "");
        assert_eq!((h.msisdn, h.operator), (None, None));
        assert_eq!(accepted("identity/national_id", "  ").national_id, None);
        assert_eq!(accepted("identity/biometric_ref", "").biometric_ref, None);

        // The optional columns may be missing altogether.
        let keep: Vec<usize> = HEADER
            .split(',')
            .enumerate()
            .filter(|(_, h)| !h.starts_with("identity/") && *h != "contact/msisdn")
            .map(|(i, _)| i)
            .collect();
        let pick = |line: &str| {
            let fields: Vec<&str> = line.split(',').collect();
            keep.iter()
                .map(|&i| fields[i])
                .collect::<Vec<_>>()
                .join(",")
        };
        let parsed = ok(&format!("{}\n{}\n", pick(HEADER), pick(&row(UUID1))));
        assert_eq!(parsed.errors, vec![]);
        assert_eq!(parsed.records[0].1.national_id, None);
    }

    #[test]
    fn bom_semicolons_and_extra_columns() {
        let text = format!(
            "\u{feff}{};extra\n{};\"whatever, really\"\n",
            HEADER.replace(',', ";"),
            row(UUID1).replace(',', ";")
        );
        let parsed = ok(&text);
        assert_eq!(parsed.errors, vec![]);
        assert_eq!(parsed.records.len(), 1);
        assert_eq!(parsed.records[0].1.enumerator, "enum01");
    }

    #[test]
    fn headers_are_trimmed_and_values_case_insensitive() {
        let header = HEADER.replace("enumerator", " enumerator ");
        let line = row_with(UUID1, "_uuid", &UUID1.to_uppercase());
        let parsed = ok(&format!("{header}\n{line}\n"));
        assert_eq!(parsed.errors, vec![]);
        assert_eq!(parsed.records[0].1.submission_id, UUID1);
        assert_eq!(
            accepted("_uuid", &format!("uuid:{UUID1}")).submission_id,
            UUID1
        );
    }

    #[test]
    fn delimiter_detection_ignores_quotes() {
        assert_eq!(detect_delimiter(b"a;b;c\n1,2,3"), b';');
        assert_eq!(detect_delimiter(b"\"a,b,c\";d;e\n"), b';');
        assert_eq!(detect_delimiter(b"\"a;b;c\",d\n"), b',');
        assert_eq!(detect_delimiter(b"a\n;;;;"), b',');
    }

    #[test]
    fn mapping_file_for_another_layout() {
        let mapping = ColumnMapping::from_csv(
            "\u{feff}field,column\n\
             submission_id, meta/instanceID\n\
             head_name,chef_menage/nom\n\
             msisdn,telephone\n\
             \n\
             region,admin1\ncercle,admin2\ncommune,admin3\n",
        )
        .unwrap();
        assert_eq!(mapping.column("submission_id"), Some("meta/instanceID"));
        assert_eq!(mapping.column("enumerator"), Some("enumerator"));
        assert_eq!(mapping.column("nope"), None);

        let text = "admin1;admin2;admin3;meta/instanceID;_submission_time;enumerator;consent;\
             chef_menage/nom;household/head_sex;household/head_birth_year;household/size;\
             household/displacement_status;telephone\n\
             ML06;ML0601;ML060101;uuid:6F1C2A4E-8D3B-4C5A-9E7F-0A1B2C3D4E5F;\
             2024-03-01 10:22:33;enum01;Oui;Fatoumata Diarra;Femme;1990;4;Déplacé;0022366123456\n";
        let parsed = parse(
            text.as_bytes(),
            &mapping,
            &OperatorTable::default_table(),
            "223",
            2024,
        )
        .unwrap();
        assert_eq!(parsed.errors, vec![]);
        let h = &parsed.records[0].1;
        assert_eq!(h.submission_id, UUID1);
        assert_eq!(h.head_name, "Fatoumata Diarra");
        assert_eq!(h.head_sex, Sex::Female);
        assert_eq!(h.displacement, Displacement::Idp);
        assert_eq!(h.commune.as_str(), "ML060101");
        assert_eq!(h.operator.as_deref(), Some("moov-ml"));

        // Errors name the file's own column.
        let bad = text.replace("Fatoumata Diarra", "F");
        let parsed = parse(
            bad.as_bytes(),
            &mapping,
            &OperatorTable::default_table(),
            "223",
            2024,
        )
        .unwrap();
        assert_eq!(parsed.errors[0].column, "chef_menage/nom");
    }

    #[test]
    fn mapping_file_errors() {
        let line_of = |text: &str| match ColumnMapping::from_csv(text) {
            Err(ImportError::Mapping { line, reason }) => (line, reason),
            other => panic!("expected a mapping error, got {other:?}"),
        };
        assert_eq!(line_of("").0, 1);
        let (line, reason) = line_of("field,column\n\nsize,n\n\n\nbogus,x\n");
        assert_eq!(line, 6, "{reason}");
        assert_eq!(line_of("name,header\nsize,n\n").0, 1);
        let (line, reason) = line_of("field,column\nsize,n\nhousehold_size,hh\n");
        assert_eq!(line, 3);
        assert!(reason.contains("unknown field"), "{reason}");
        let (line, reason) = line_of("field,column\nsize,n\nregion,r\nsize,m\n");
        assert_eq!(line, 4);
        assert!(reason.contains("already mapped at line 2"), "{reason}");
        let (line, reason) = line_of("field,column\nsize,n,x\n");
        assert_eq!(line, 2);
        assert!(reason.contains("2 fields"), "{reason}");
        let (line, _) = line_of("field,column\nsize,\n");
        assert_eq!(line, 2);
        // Two fields reading the same column: here `region` and the default of `cercle`.
        let (line, reason) = line_of("field,column\nsize,n\nregion,location/cercle\n");
        assert_eq!(line, 3);
        assert!(reason.contains("region and cercle"), "{reason}");
        // The header alone is the Kobo default.
        assert_eq!(
            ColumnMapping::from_csv("field,column\n").unwrap(),
            ColumnMapping::kobo_default()
        );
    }

    #[test]
    fn file_level_errors() {
        assert_eq!(run(""), Err(ImportError::Empty));
        assert_eq!(run("\u{feff}"), Err(ImportError::Empty));
        assert_eq!(run(" \r\n\n"), Err(ImportError::Empty));
        let header = HEADER
            .replace("household/size,", "")
            .replace(",_uuid", "")
            .replace("contact/msisdn,", "");
        assert_eq!(
            run(&format!("{header}\n")),
            Err(ImportError::MissingColumns {
                columns: vec!["_uuid".into(), "household/size".into()]
            })
        );
        assert_eq!(
            run(&format!("{header}\n")).unwrap_err().to_string(),
            "missing required columns: _uuid, household/size"
        );
        assert_eq!(
            run(&format!("{HEADER},consent\n")),
            Err(ImportError::DuplicateColumn {
                column: "consent".into()
            })
        );
        let mut bad = HEADER.as_bytes().to_vec();
        bad[0] = 0xff;
        assert_eq!(
            parse(
                &bad,
                &ColumnMapping::kobo_default(),
                &OperatorTable::default_table(),
                "223",
                2024
            ),
            Err(ImportError::HeaderNotUtf8)
        );
        // A header alone is a file with no households.
        assert_eq!(ok(HEADER), Parsed::default());
    }

    #[test]
    fn quoted_fields_with_delimiters_and_newlines() {
        let line = row_with(UUID1, "household/head_name", "\"Coulibaly, Aminata\"");
        let line2 = row_with(UUID2, "household/head_name", "\"Moussa\nKeïta\"");
        let line3 = row_with(UUID3, "household/size", "x");
        let parsed = ok(&format!("{HEADER}\n{line}\n{line2}\n{line3}\n"));
        assert_eq!(parsed.records.len(), 2);
        assert_eq!(parsed.records[0].1.head_name, "Coulibaly, Aminata");
        // The line break inside the quotes is collapsed; it does not start a new row.
        assert_eq!(parsed.records[1], (3, parsed.records[1].1.clone()));
        assert_eq!(parsed.records[1].1.head_name, "Moussa Keïta");
        assert_eq!(parsed.errors.len(), 1);
        assert_eq!(
            (parsed.errors[0].row, parsed.errors[0].column.as_str()),
            (4, "household/size")
        );
    }

    #[test]
    fn empty_lines_count_as_rows_and_blank_rows_are_skipped() {
        let blank = ",".repeat(HEADER.split(',').count() - 1);
        let bad = row_with(UUID3, "household/size", "0");
        let text = format!(
            "{HEADER}\n{}\n\n{blank}\n{}\r\n\r\n{bad}\n",
            row(UUID1),
            row(UUID2)
        );
        let parsed = ok(&text);
        let rows: Vec<usize> = parsed.records.iter().map(|(r, _)| *r).collect();
        assert_eq!(rows, vec![2, 5]);
        assert_eq!(parsed.errors.len(), 1);
        assert_eq!(parsed.errors[0].row, 7);
    }

    #[test]
    fn accented_names_are_preserved() {
        for name in [
            "Aïssata Traoré",
            "Hawa  Maïga ",
            "Oumar Sidibé-Tounkara",
            "Ñamé Dembélé",
        ] {
            let h = accepted("household/head_name", name);
            let expected = name.split_whitespace().collect::<Vec<_>>().join(" ");
            assert_eq!(h.head_name, expected);
        }
        // Decomposed accents (e + U+0301) are stored composed, so the same name compares equal.
        let h = accepted("household/head_name", "Traore\u{301}");
        assert_eq!(h.head_name, "Traoré");
    }

    #[test]
    fn accepted_variants() {
        for (value, hour) in [
            ("2024-03-01T10:22:33Z", 10),
            ("2024-03-01T10:22:33.123", 10),
            ("2024-03-01T10:22:33.123456+01:00", 9),
            ("2024-03-01T10:22:33+0100", 9),
            ("2024-03-01 10:22:33", 10),
            ("2024-03-01 10:22:33-02:00", 12),
        ] {
            let h = accepted("_submission_time", value);
            assert_eq!(chrono::Timelike::hour(&h.submitted_at), hour, "{value}");
        }
        for value in ["Yes", "TRUE", "1", "oui", "OUI"] {
            assert!(accepted("consent", value).consent, "{value}");
        }
        for (value, sex) in [
            ("M", Sex::Male),
            ("homme", Sex::Male),
            ("F", Sex::Female),
            ("Femme", Sex::Female),
        ] {
            assert_eq!(accepted("household/head_sex", value).head_sex, sex);
        }
        for (value, status) in [
            ("IDP", Displacement::Idp),
            ("déplacé", Displacement::Idp),
            ("DÉPLACÉ", Displacement::Idp),
            ("deplace", Displacement::Idp),
            ("Host", Displacement::Host),
            ("hôte", Displacement::Host),
            ("hote", Displacement::Host),
            ("host_community", Displacement::Host),
            ("returnee", Displacement::Returnee),
            ("Retourné", Displacement::Returnee),
            ("retourne", Displacement::Returnee),
        ] {
            assert_eq!(
                accepted("household/displacement_status", value).displacement,
                status
            );
        }
        assert_eq!(
            accepted("household/head_birth_year", "1904").head_birth_year,
            1904
        );
        assert_eq!(
            accepted("household/head_birth_year", "2010").head_birth_year,
            2010
        );
        assert_eq!(accepted("household/size", "50").size, 50);
        assert_eq!(accepted("household/size", "1").size, 1);
        assert_eq!(
            accepted("location/commune", "ML0601010").commune.as_str(),
            "ML0601010"
        );
        assert_eq!(
            accepted("contact/msisdn", "99.12.34.56")
                .operator
                .as_deref(),
            Some("moov-ml")
        );
    }

    #[test]
    fn each_bad_field_names_row_and_column() {
        let cases: &[(&str, &str, &str)] = &[
            ("_uuid", "", "required"),
            ("_uuid", "not-a-uuid", "expected a UUID"),
            ("_submission_time", "", "required"),
            (
                "_submission_time",
                "01/03/2024 10:22",
                "expected a date and time",
            ),
            (
                "_submission_time",
                "2024-02-30T10:22:33",
                "expected a date and time",
            ),
            ("enumerator", "", "required"),
            ("enumerator", &"e".repeat(101), "at most 100"),
            ("consent", "no", "did not consent; it cannot be enrolled"),
            ("consent", "Non", "did not consent"),
            ("consent", "0", "did not consent"),
            ("consent", "maybe", "expected yes or no"),
            ("consent", "", "required"),
            ("household/head_name", "", "required"),
            ("household/head_name", "A", "2 to 120"),
            ("household/head_name", &"a".repeat(121), "2 to 120"),
            (
                "household/head_name",
                "Awa\u{7}Diallo",
                "control characters",
            ),
            ("household/head_sex", "x", "expected female or male"),
            ("household/head_sex", "", "required"),
            ("household/head_birth_year", "1903", "from 1904 to 2010"),
            ("household/head_birth_year", "2011", "from 1904 to 2010"),
            ("household/head_birth_year", "198O", "expected a year"),
            ("household/size", "0", "from 1 to 50"),
            ("household/size", "51", "from 1 to 50"),
            ("household/size", "2.5", "whole number"),
            ("household/size", "-3", "from 1 to 50"),
            (
                "household/displacement_status",
                "refugee",
                "expected idp, host or returnee",
            ),
            ("location/region", "ml06", "p-code"),
            (
                "location/commune",
                "ML060201",
                "commune ML060201 is not inside cercle ML0601",
            ),
            (
                "location/commune",
                "ML0601",
                "commune ML0601 is not inside cercle ML0601",
            ),
            (
                "contact/msisdn",
                "7612345",
                "8 digits after the country code",
            ),
            ("contact/msisdn", "76 12 34 5O", "contains letters"),
            (
                "contact/msisdn",
                "20 22 33 44",
                "no operator in the table serves this number's prefix",
            ),
            (
                "contact/msisdn",
                "+226 70 12 34 56",
                "country code is not in the operator table",
            ),
            ("identity/national_id", "ML 123", "only letters"),
            ("identity/national_id", "ML_123", "only letters"),
            ("identity/national_id", &"1".repeat(65), "at most 64"),
            ("identity/biometric_ref", "brv#1", "only letters"),
        ];
        for (column, value, expected) in cases {
            let error = one_error(column, value);
            assert!(
                error.reason.contains(expected),
                "{column}={value:?}: {error}"
            );
        }
        assert_eq!(
            one_error("consent", "no").to_string(),
            "row 2, column consent: the household did not consent; it cannot be enrolled"
        );
    }

    #[test]
    fn pcode_hierarchy() {
        let line = row_with(UUID1, "location/region", "ML07");
        let parsed = ok(&format!("{HEADER}\n{line}\n"));
        assert_eq!(
            parsed.errors,
            vec![RowError {
                row: 2,
                column: "location/cercle".into(),
                reason: "cercle ML0601 is not inside region ML07".into()
            }]
        );
        let line = row_with(UUID1, "location/cercle", "ML0701");
        let parsed = ok(&format!("{HEADER}\n{line}\n"));
        let reasons: Vec<&str> = parsed.errors.iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(
            reasons,
            vec![
                "cercle ML0701 is not inside region ML06",
                "commune ML060101 is not inside cercle ML0701"
            ]
        );
    }

    #[test]
    fn several_errors_in_one_row() {
        let line = row_with(UUID1, "household/size", "0");
        let line = line.replace("female", "x").replace("ML060101", "ML060201");
        let parsed = ok(&format!("{HEADER}\n{}\n{line}\n", row(UUID2)));
        assert_eq!(parsed.records.len(), 1);
        let columns: Vec<(usize, &str)> = parsed
            .errors
            .iter()
            .map(|e| (e.row, e.column.as_str()))
            .collect();
        assert_eq!(
            columns,
            vec![
                (3, "household/head_sex"),
                (3, "household/size"),
                (3, "location/commune")
            ]
        );
    }

    #[test]
    fn duplicate_uuid_is_an_error_on_the_later_row() {
        let upper = row_with(UUID1, "_uuid", &UUID1.to_uppercase());
        let parsed = ok(&format!(
            "{HEADER}\n{}\n{}\n{upper}\n",
            row(UUID1),
            row(UUID2)
        ));
        assert_eq!(parsed.records.len(), 2);
        assert_eq!(
            parsed.errors,
            vec![RowError {
                row: 4,
                column: "_uuid".into(),
                reason: "duplicate _uuid, first seen at row 2".into()
            }]
        );
    }

    #[test]
    fn rows_of_the_wrong_length() {
        let short = row(UUID1).rsplit_once(',').unwrap().0.to_owned();
        let long = format!("{},surprise", row(UUID2));
        let trailing = format!("{},,", row(UUID3));
        let parsed = ok(&format!("{HEADER}\n{short}\n{long}\n{trailing}\n"));
        assert_eq!(parsed.records.len(), 1);
        assert_eq!(parsed.records[0].0, 4);
        assert_eq!(parsed.errors.len(), 2);
        assert_eq!(
            (parsed.errors[0].row, parsed.errors[0].column.as_str()),
            (2, "_index")
        );
        assert_eq!(
            (parsed.errors[1].row, parsed.errors[1].column.as_str()),
            (3, "")
        );
    }

    #[test]
    fn invalid_utf8_is_a_row_error() {
        let text = format!("{HEADER}\n{}\n{}\n", row(UUID1), row(UUID2));
        let mut bytes = text.into_bytes();
        // Latin-1 "é" in the second row's name.
        let at = bytes.windows(8).rposition(|w| w == b"Coulibal").unwrap();
        bytes[at + 1] = 0xe9;
        let parsed = parse(
            &bytes,
            &ColumnMapping::kobo_default(),
            &OperatorTable::default_table(),
            "223",
            2024,
        )
        .unwrap();
        assert_eq!(parsed.records.len(), 1);
        assert_eq!(parsed.errors.len(), 1);
        assert_eq!(
            (parsed.errors[0].row, parsed.errors[0].column.as_str()),
            (3, "household/head_name")
        );
        assert!(parsed.errors[0].reason.contains("UTF-8"));
    }

    #[test]
    fn errors_never_echo_personal_data() {
        let line = row_with(UUID1, "household/size", "0")
            .replace("+223 76 12 34 56", "+223 76 12 34 5")
            .replace("ml-123/456", "ml 123 456");
        let parsed = ok(&format!("{HEADER}\n{line}\n"));
        assert_eq!(parsed.errors.len(), 3);
        for error in &parsed.errors {
            let text = error.to_string();
            for secret in ["Aminata", "Coulibaly", "7612345", "76 12", "123"] {
                assert!(!text.contains(secret), "{text}");
            }
        }
    }

    #[test]
    fn many_rows_quickly() {
        // 100,000 rows must parse well under 2 s in release; debug builds check a fifth.
        const ROWS: usize = if cfg!(debug_assertions) {
            20_000
        } else {
            100_000
        };
        let mut text = String::with_capacity(ROWS * 300);
        text.push_str(HEADER);
        text.push('\n');
        for i in 0..ROWS {
            let uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 | i as u128);
            text.push_str(&row(&uuid.hyphenated().to_string()));
            text.push('\n');
        }
        let started = std::time::Instant::now();
        let parsed = ok(&text);
        let elapsed = started.elapsed();
        assert_eq!(parsed.errors, vec![]);
        assert_eq!(parsed.records.len(), ROWS);
        assert_eq!(parsed.records[ROWS - 1].0, ROWS + 1);
        eprintln!("parsed {ROWS} rows in {elapsed:?}");
        if !cfg!(debug_assertions) {
            assert!(elapsed < std::time::Duration::from_secs(1), "{elapsed:?}");
        }
    }
}
