//! Cash-for-work attendance sheets: a CSV listing, per worker and day, whether the worker was
//! present, turned into the days each household's workers worked in one cycle.
//!
//! # Using it
//!
//! ```
//! use chrono::NaiveDate;
//! use cva_programmes::attendance;
//! let sheet = "household_id;worker;date;site;present\n\
//!              hh-1;1;04/03/2024;water point Sévaré 3;oui\n\
//!              hh-1;2;2024-03-04;water point Sévaré 3;1\n\
//!              hh-1;2;2024-03-05;water point Sévaré 3;non\n";
//! let start = NaiveDate::from_ymd_opt(2024, 3, 1).unwrap();
//! let end = NaiveDate::from_ymd_opt(2024, 3, 31).unwrap();
//! let att = attendance::parse(sheet.as_bytes(), start, end).unwrap();
//! assert!(att.errors.is_empty());
//! assert_eq!(att.days["hh-1"], vec![1, 1]);
//! ```
//!
//! Feed each household's `days` to [`crate::rules::CfwRule::amount`]. **All or nothing is the
//! caller's job**: `parse` reports every row error it finds and still fills `days` from the rows
//! that were valid, but a caller must apply nothing when [`Attendance::errors`] is not empty.
//! Whether each `household_id` is an enrolled household is also the caller's check.
//!
//! # The sheet
//!
//! * UTF-8, with or without a byte-order mark (anything else is refused as a whole: save the
//!   sheet as "CSV UTF-8").
//! * The delimiter is `,` or `;`, whichever the header line contains more of.
//! * Header (any order, case and surrounding spaces ignored; extra columns are ignored):
//!   `household_id,worker,date,site,present`.
//!   - `household_id`: the household's submission id (`_uuid`), 1 to 100 characters;
//!   - `worker`: the worker's number within the household, 1 to 20;
//!   - `date`: `YYYY-MM-DD` or `DD/MM/YYYY`, within the cycle (both ends included);
//!   - `site`: free text, at most 100 characters (may be empty);
//!   - `present`: `yes`/`no`, `1`/`0`, `oui`/`non` (any case).
//! * Row numbers in errors are spreadsheet rows: the header is row 1, blank lines count, and a
//!   quoted field spanning lines stays one row.
//! * The same (household, worker, date) twice is an error on the later row, whatever `present`
//!   says: a worker cannot be paid twice for one day, and two contradicting rows need a human.
//! * Rows with `present` = no count nothing. `days` holds only households with at least one
//!   present day; its vector has one entry per worker up to the highest worker number present
//!   (index = worker − 1; a worker between with no present day has 0).

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDate;
use serde::Serialize;

/// Highest worker number within a household.
pub const MAX_WORKER: u32 = 20;
/// Longest `household_id`, in characters.
pub const MAX_HOUSEHOLD_ID_CHARS: usize = 100;
/// Longest `site`, in characters.
pub const MAX_SITE_CHARS: usize = 100;

const COLUMNS: [&str; 5] = ["household_id", "worker", "date", "site", "present"];

/// The parsed sheet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Attendance {
    /// Days present per worker, by household id; index = worker number − 1.
    pub days: BTreeMap<String, Vec<u32>>,
    /// Every problem found, in row order. Not empty → apply nothing.
    pub errors: Vec<RowError>,
}

/// A problem with one row (and, when it is one cell's fault, its column).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowError {
    /// Spreadsheet row number (header = 1).
    pub row: u64,
    /// Column name, `None` when the row as a whole is wrong.
    pub column: Option<String>,
    pub reason: String,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.column {
            Some(c) => write!(f, "row {}, column {}: {}", self.row, c, self.reason),
            None => write!(f, "row {}: {}", self.row, self.reason),
        }
    }
}

/// Why a sheet could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttendanceError {
    #[error("the attendance sheet is not UTF-8 (first bad byte on line {line}); save it as \"CSV UTF-8\"")]
    NotUtf8 { line: u64 },
    #[error("the attendance sheet is empty; expected a header row: household_id,worker,date,site,present")]
    Empty,
    #[error("the header has no `{0}` column; expected household_id,worker,date,site,present")]
    MissingColumn(&'static str),
    #[error("the header has the column `{0}` twice")]
    DuplicateColumn(&'static str),
    #[error("the cycle starts on {start} but ends on {end}")]
    InvalidCycle { start: NaiveDate, end: NaiveDate },
    #[error("the attendance sheet is not valid CSV: {0}")]
    Csv(String),
}

/// Parses an attendance sheet for the cycle `cycle_start..=cycle_end`.
pub fn parse(
    bytes: &[u8],
    cycle_start: NaiveDate,
    cycle_end: NaiveDate,
) -> Result<Attendance, AttendanceError> {
    if cycle_start > cycle_end {
        return Err(AttendanceError::InvalidCycle {
            start: cycle_start,
            end: cycle_end,
        });
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count() as u64
            + 1;
        AttendanceError::NotUtf8 { line }
    })?;
    if text.trim().is_empty() {
        return Err(AttendanceError::Empty);
    }
    let header_line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let delimiter = if header_line.matches(';').count() > header_line.matches(',').count() {
        b';'
    } else {
        b','
    };

    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut records = reader.records();

    // Spreadsheet row = physical line of the record's first byte − newlines inside quoted fields
    // of earlier records. The reader positions a record where the previous one ended, i.e.
    // before any blank lines (and the `\n` of a `\r\n`) that it skips: step over those.
    let raw = text.as_bytes();
    let mut embedded_newlines: u64 = 0;
    let mut row_of = |record: &csv::StringRecord| -> u64 {
        let (mut line, byte) = record.position().map_or((1, 0), |p| (p.line(), p.byte()));
        let start = usize::try_from(byte).unwrap_or(usize::MAX);
        line += raw
            .get(start..)
            .unwrap_or_default()
            .iter()
            .take_while(|&&b| b == b'\n' || b == b'\r')
            .filter(|&&b| b == b'\n')
            .count() as u64;
        let row = line.saturating_sub(embedded_newlines);
        embedded_newlines += record
            .iter()
            .map(|f| f.matches('\n').count() as u64)
            .sum::<u64>();
        row
    };

    let header = match records.next() {
        None => return Err(AttendanceError::Empty),
        Some(r) => r.map_err(|e| AttendanceError::Csv(e.to_string()))?,
    };
    row_of(&header);
    let columns = Columns::locate(&header)?;

    let mut att = Attendance::default();
    // (household, worker, date) → row where first seen
    let mut seen: HashMap<(String, u32, NaiveDate), u64> = HashMap::new();
    let mut present_days: BTreeMap<String, BTreeMap<u32, u32>> = BTreeMap::new();

    for record in records {
        let record = record.map_err(|e| AttendanceError::Csv(e.to_string()))?;
        let row = row_of(&record);
        if record.iter().all(|f| f.trim().is_empty()) {
            continue; // a blank row (e.g. ";;;;" left by a spreadsheet)
        }
        let errors_before = att.errors.len();
        let mut error = |column: Option<&str>, reason: String| {
            att.errors.push(RowError {
                row,
                column: column.map(str::to_owned),
                reason,
            })
        };
        if record.len() < columns.needed_len() {
            error(
                None,
                format!(
                    "has {} fields but the header has {}; is a delimiter missing?",
                    record.len(),
                    header.len()
                ),
            );
            continue;
        }
        let cell = |i: usize| record.get(i).unwrap_or("").trim();

        let household = parse_household(cell(columns.household_id))
            .map_err(|r| error(Some("household_id"), r))
            .ok();
        let worker = parse_worker(cell(columns.worker))
            .map_err(|r| error(Some("worker"), r))
            .ok();
        let date = parse_date(cell(columns.date))
            .map_err(|r| error(Some("date"), r))
            .ok();
        if let Some(d) = date {
            if d < cycle_start || d > cycle_end {
                error(
                    Some("date"),
                    format!("{d} is outside the cycle {cycle_start} to {cycle_end}"),
                );
            }
        }
        let site = cell(columns.site);
        let site_chars = site.chars().count();
        if site_chars > MAX_SITE_CHARS {
            error(
                Some("site"),
                format!("{site_chars} characters; at most {MAX_SITE_CHARS}"),
            );
        }
        let present = parse_present(cell(columns.present))
            .map_err(|r| error(Some("present"), r))
            .ok();

        if let (Some(h), Some(w), Some(d)) = (&household, worker, date) {
            match seen.get(&(h.clone(), w, d)) {
                Some(first) => error(
                    Some("date"),
                    format!(
                        "household {h} worker {w} already has a row for {d} (row {first}); \
                         a worker cannot be paid twice for one day"
                    ),
                ),
                None => {
                    seen.insert((h.clone(), w, d), row);
                }
            }
        }
        if att.errors.len() == errors_before && present == Some(true) {
            if let (Some(h), Some(w)) = (household, worker) {
                *present_days.entry(h).or_default().entry(w).or_default() += 1;
            }
        }
    }

    att.days = present_days
        .into_iter()
        .map(|(h, by_worker)| {
            let highest = by_worker.keys().copied().max().unwrap_or(0);
            let days = (1..=highest)
                .map(|w| by_worker.get(&w).copied().unwrap_or(0))
                .collect();
            (h, days)
        })
        .collect();
    Ok(att)
}

/// Where each required column is.
struct Columns {
    household_id: usize,
    worker: usize,
    date: usize,
    site: usize,
    present: usize,
}

impl Columns {
    fn locate(header: &csv::StringRecord) -> Result<Columns, AttendanceError> {
        let mut found = [None::<usize>; 5];
        for (i, name) in header.iter().enumerate() {
            let name = name.trim().to_lowercase();
            if let Some(k) = COLUMNS.iter().position(|c| *c == name) {
                if found[k].is_some() {
                    return Err(AttendanceError::DuplicateColumn(COLUMNS[k]));
                }
                found[k] = Some(i);
            }
        }
        let get = |k: usize| found[k].ok_or(AttendanceError::MissingColumn(COLUMNS[k]));
        Ok(Columns {
            household_id: get(0)?,
            worker: get(1)?,
            date: get(2)?,
            site: get(3)?,
            present: get(4)?,
        })
    }

    fn needed_len(&self) -> usize {
        [
            self.household_id,
            self.worker,
            self.date,
            self.site,
            self.present,
        ]
        .into_iter()
        .max()
        .unwrap_or(0)
            + 1
    }
}

fn parse_household(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("is empty; expected the household's submission id (_uuid)".into());
    }
    let n = s.chars().count();
    if n > MAX_HOUSEHOLD_ID_CHARS {
        return Err(format!("{n} characters; at most {MAX_HOUSEHOLD_ID_CHARS}"));
    }
    if s.chars().any(char::is_control) {
        return Err("contains a control character".into());
    }
    Ok(s.to_owned())
}

fn parse_worker(s: &str) -> Result<u32, String> {
    // The value is not echoed: a sheet may carry a worker's name in this column.
    let bad = || format!("is not a worker number from 1 to {MAX_WORKER}");
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.len() > 3 {
        return Err(bad());
    }
    match s.parse::<u32>() {
        Ok(w) if (1..=MAX_WORKER).contains(&w) => Ok(w),
        _ => Err(bad()),
    }
}

/// `YYYY-MM-DD` or `DD/MM/YYYY`, exactly (two-digit day and month, four-digit year).
fn parse_date(s: &str) -> Result<NaiveDate, String> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(r)?;
        if part.iter().all(u8::is_ascii_digit) {
            std::str::from_utf8(part).ok()?.parse().ok()
        } else {
            None
        }
    };
    let ymd = if b.len() != 10 {
        None
    } else if b[4] == b'-' && b[7] == b'-' {
        digits(0..4).zip(digits(5..7)).zip(digits(8..10))
    } else if b[2] == b'/' && b[5] == b'/' {
        digits(6..10).zip(digits(3..5)).zip(digits(0..2))
    } else {
        None
    };
    let Some(((y, m), d)) = ymd else {
        return Err(format!(
            "`{s}` is not a date (expected YYYY-MM-DD or DD/MM/YYYY)"
        ));
    };
    i32::try_from(y)
        .ok()
        .and_then(|y| NaiveDate::from_ymd_opt(y, m, d))
        .ok_or_else(|| format!("`{s}` is not a calendar date"))
}

fn parse_present(s: &str) -> Result<bool, String> {
    match s.to_lowercase().as_str() {
        "yes" | "1" | "oui" => Ok(true),
        "no" | "0" | "non" => Ok(false),
        _ => Err(format!("`{s}` is not yes/no, 1/0 or oui/non")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    fn march(sheet: &str) -> Attendance {
        parse(sheet.as_bytes(), d(2024, 3, 1), d(2024, 3, 31)).unwrap()
    }

    fn errs(att: &Attendance) -> Vec<(u64, Option<&str>)> {
        att.errors
            .iter()
            .map(|e| (e.row, e.column.as_deref()))
            .collect()
    }

    const HEADER: &str = "household_id,worker,date,site,present\n";

    #[test]
    fn counts_present_days_per_worker() {
        let sheet = format!(
            "{HEADER}\
             hh-a,1,2024-03-04,water point Sévaré 3,yes\n\
             hh-a,1,2024-03-05,water point Sévaré 3,YES\n\
             hh-a,3,05/03/2024,water point Sévaré 3,Oui\n\
             hh-a,2,2024-03-05,water point Sévaré 3,no\n\
             hh-b,1,2024-03-04,\"canal, Mopti\",1\n\
             hh-b,1,2024-03-06,canal,0\n\
             hh-c,1,2024-03-04,canal,non\n"
        );
        let att = march(&sheet);
        assert_eq!(att.errors, vec![]);
        let want: BTreeMap<String, Vec<u32>> = [
            ("hh-a".to_owned(), vec![2, 0, 1]),
            ("hh-b".to_owned(), vec![1]),
        ]
        .into_iter()
        .collect();
        assert_eq!(att.days, want); // hh-c has only an absent row: not listed
    }

    #[test]
    fn semicolons_bom_crlf_and_column_order() {
        let sheet = "\u{FEFF}Present ; Date;Worker;Household_ID;site\r\n\
                     oui;01/03/2024;2;uuid-1;Bandiagara; marché\r\n\
                     1;31/03/2024;2;uuid-1;Bandiagara\r\n";
        let att = march(sheet);
        assert_eq!(att.errors, vec![]);
        assert_eq!(att.days["uuid-1"], vec![0, 2]);
        // with a comma-heavy header a `;` in a field does not confuse detection
        let att = march("household_id,worker,date,site,present\nh,1,2024-03-01,a;b;c;d;e,yes\n");
        assert_eq!(att.errors, vec![]);
        assert_eq!(att.days["h"], vec![1]);
    }

    #[test]
    fn extra_columns_are_ignored() {
        let att = march(
            "_index,household_id,worker,date,site,present,_notes\n7,h,1,2024-03-02,x,yes,ok\n",
        );
        assert_eq!(att.errors, vec![]);
        assert_eq!(att.days["h"], vec![1]);
    }

    #[test]
    fn date_outside_cycle_is_a_row_error() {
        let sheet = format!(
            "{HEADER}\
             h,1,2024-02-29,s,yes\n\
             h,1,2024-03-01,s,yes\n\
             h,1,31/03/2024,s,yes\n\
             h,1,01/04/2024,s,yes\n"
        );
        let att = march(&sheet);
        assert_eq!(errs(&att), vec![(2, Some("date")), (5, Some("date"))]);
        assert_eq!(
            att.errors[0].reason,
            "2024-02-29 is outside the cycle 2024-03-01 to 2024-03-31"
        );
        assert_eq!(att.days["h"], vec![2]); // both ends of the cycle count
    }

    #[test]
    fn same_worker_same_day_twice_is_an_error_on_the_later_row() {
        let sheet = format!(
            "{HEADER}\
             h,1,2024-03-04,s,yes\n\
             h,2,2024-03-04,s,yes\n\
             h,1,04/03/2024,other site,yes\n\
             g,1,2024-03-04,s,yes\n\
             h,2,2024-03-04,s,no\n"
        );
        let att = march(&sheet);
        assert_eq!(errs(&att), vec![(4, Some("date")), (6, Some("date"))]);
        assert_eq!(
            att.errors[0].to_string(),
            "row 4, column date: household h worker 1 already has a row for 2024-03-04 (row 2); \
             a worker cannot be paid twice for one day"
        );
        assert_eq!(att.days["h"], vec![1, 1]);
        assert_eq!(att.days["g"], vec![1]);
    }

    #[test]
    fn cell_errors_name_row_and_column() {
        let long_site = "é".repeat(101);
        let sheet = format!(
            "{HEADER}\
             ,1,2024-03-04,s,yes\n\
             h,0,2024-03-04,s,yes\n\
             h,21,2024-03-04,s,yes\n\
             h,x,2024-03-04,s,yes\n\
             h,1,2024-3-4,s,yes\n\
             h,1,03/31/2024,s,yes\n\
             h,1,2024-02-30,s,yes\n\
             h,1,2024-03-10,{long_site},yes\n\
             h,1,2024-03-11,s,peut-être\n\
             h,1,2024-03-12\n\
             ,99,never,s,maybe\n"
        );
        let att = march(&sheet);
        assert_eq!(
            errs(&att),
            vec![
                (2, Some("household_id")),
                (3, Some("worker")),
                (4, Some("worker")),
                (5, Some("worker")),
                (6, Some("date")),
                (7, Some("date")),
                (8, Some("date")),
                (9, Some("site")),
                (10, Some("present")),
                (11, None),
                (12, Some("household_id")),
                (12, Some("worker")),
                (12, Some("date")),
                (12, Some("present")),
            ]
        );
        let reasons: Vec<&str> = att.errors.iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(reasons[2], "is not a worker number from 1 to 20");
        assert_eq!(
            reasons[4],
            "`2024-3-4` is not a date (expected YYYY-MM-DD or DD/MM/YYYY)"
        );
        assert_eq!(reasons[6], "`2024-02-30` is not a calendar date");
        assert_eq!(reasons[7], "101 characters; at most 100");
        assert_eq!(reasons[8], "`peut-être` is not yes/no, 1/0 or oui/non");
        assert_eq!(
            reasons[9],
            "has 3 fields but the header has 5; is a delimiter missing?"
        );
        assert!(att.days.is_empty()); // no valid present row
    }

    #[test]
    fn a_site_of_exactly_100_characters_is_fine() {
        let sheet = format!("{HEADER}h,1,2024-03-04,{},yes\n", "é".repeat(100));
        let att = march(&sheet);
        assert_eq!(att.errors, vec![]);
    }

    #[test]
    fn row_numbers_are_spreadsheet_rows() {
        // blank line = a row; a quoted field over two lines = one row
        let sheet = format!(
            "{HEADER}\
             h,1,2024-03-04,\"site on\ntwo lines\",yes\n\
             \n\
             h,1,2024-03-04,s,yes\n\
             ,,,,\n\
             h,9,2099-01-01,s,yes\n"
        );
        let att = march(&sheet);
        assert_eq!(errs(&att), vec![(4, Some("date")), (6, Some("date"))]);
        assert_eq!(att.days["h"], vec![1]);

        let crlf = "\r\n\
                    household_id;worker;date;site;present\r\n\
                    \r\n\
                    h;1;2024-03-04;s;yes\r\n\
                    h;1;2024-03-04;s;yes\r\n\
                    \r\n\
                    \r\n\
                    h;1;x;s;yes";
        assert_eq!(
            errs(&march(crlf)),
            vec![(5, Some("date")), (8, Some("date"))]
        );
    }

    #[test]
    fn whole_file_errors() {
        let start = d(2024, 3, 1);
        let end = d(2024, 3, 31);
        assert_eq!(parse(b"", start, end), Err(AttendanceError::Empty));
        assert_eq!(
            parse(b"\xEF\xBB\xBF\n\n", start, end),
            Err(AttendanceError::Empty)
        );
        assert_eq!(
            parse(b"household_id,worker,date,present\n", start, end),
            Err(AttendanceError::MissingColumn("site"))
        );
        assert_eq!(
            parse(
                b"household_id,worker,date,site,present,Worker\n",
                start,
                end
            ),
            Err(AttendanceError::DuplicateColumn("worker"))
        );
        // Latin-1 "é" on line 2
        assert_eq!(
            parse(
                b"household_id,worker,date,site,present\nh,1,2024-03-04,S\xE9var\xE9,yes\n",
                start,
                end
            ),
            Err(AttendanceError::NotUtf8 { line: 2 })
        );
        assert_eq!(
            parse(HEADER.as_bytes(), end, start),
            Err(AttendanceError::InvalidCycle {
                start: end,
                end: start
            })
        );
        // header only: nothing, no errors
        assert_eq!(
            parse(HEADER.as_bytes(), start, end),
            Ok(Attendance::default())
        );
    }

    #[test]
    fn feeds_the_cfw_rule() {
        use crate::rules::{CfwRule, Rounding, RoundingMode};
        let mut sheet = HEADER.to_owned();
        for day in 1..=12 {
            sheet.push_str(&format!(
                "h,1,2024-03-{day:02},s,yes\nh,2,2024-03-{day:02},s,yes\n"
            ));
        }
        let att = march(&sheet);
        assert!(att.errors.is_empty());
        let rule = CfwRule {
            daily_rate: 2_500,
            max_days_per_cycle: 20,
            max_amount_per_household: 100_000,
            rounding: Rounding::new(100, RoundingMode::Nearest),
        };
        let a = rule.amount(&att.days["h"]);
        assert_eq!(
            (a.days_counted, a.days_capped_off, a.amount),
            (20, 4, 50_000)
        );
    }
}
