//! The report model: the kinds and formats, the parameters a request names (checked and
//! resolved into [`Parameters`], which are stored and hashed with the report), and the
//! [`Table`] every report is before it is rendered.

use std::fmt;
use std::str::FromStr;

use chrono::NaiveDate;
use cva_registry::households::Reveal;
use serde_json::{Map, Value};

use crate::error::{ReportError, Result};

/// The kinds of report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Budget consumption per budget line and region (see [`crate::budget`]).
    Budget,
    /// What each household was granted, paid and is owed (see [`crate::household`]).
    Household,
    /// Every account's totals (see [`crate::trial_balance`]).
    TrialBalance,
    /// Journal entries with their lines (see [`crate::journal`]).
    Journal,
    /// One reconciliation run of a provider statement (see [`crate::reconciliation`]).
    Reconciliation,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Budget,
        Kind::Household,
        Kind::TrialBalance,
        Kind::Journal,
        Kind::Reconciliation,
    ];

    /// The name used on the command line, in URLs and in the `reports` table.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Budget => "budget",
            Kind::Household => "household",
            Kind::TrialBalance => "trial-balance",
            Kind::Journal => "journal",
            Kind::Reconciliation => "reconciliation",
        }
    }

    pub fn parse(s: &str) -> Result<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                ReportError::invalid(
                    "kind",
                    "must be budget, household, trial-balance, journal or reconciliation",
                )
            })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = ReportError;
    fn from_str(s: &str) -> Result<Kind> {
        Kind::parse(s)
    }
}

/// The file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// RFC 4180 CSV, UTF-8, a header row, `\n` line ends.
    Csv,
    /// One pretty-printed JSON document followed by `\n`.
    Json,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Json => "json",
        }
    }

    pub fn parse(s: &str) -> Result<Format> {
        match s {
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            _ => Err(ReportError::invalid("format", "must be csv or json")),
        }
    }

    /// The media type to serve it with.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Json => "application/json",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Format {
    type Err = ReportError;
    fn from_str(s: &str) -> Result<Format> {
        Format::parse(s)
    }
}

/// What a caller asks for. [`Request::resolve`] checks that the parameters fit the kind.
///
/// | kind | programme | statement / run | as_of | reveal |
/// |---|---|---|---|---|
/// | budget | required | — | optional (default: today, UTC) | — |
/// | household | required | — | — | used |
/// | trial-balance | — | — | — | — |
/// | journal | optional | — | — | — |
/// | reconciliation | — | exactly one | — | — |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub kind: Kind,
    pub programme: Option<String>,
    /// A statement id: its latest reconciliation run.
    pub statement: Option<i64>,
    /// A reconciliation run id.
    pub run: Option<i64>,
    /// The exchange-rate date of the budget report.
    pub as_of: Option<NaiveDate>,
    /// How personal data is shown in the household report; the caller decides from the
    /// requester's role (the API's role → reveal policy).
    pub reveal: Reveal,
}

impl Request {
    /// A request of `kind` without parameters, personal data masked.
    pub fn new(kind: Kind) -> Request {
        Request {
            kind,
            programme: None,
            statement: None,
            run: None,
            as_of: None,
            reveal: Reveal::Masked,
        }
    }

    pub fn programme(mut self, code: impl Into<String>) -> Request {
        self.programme = Some(code.into());
        self
    }

    pub fn statement(mut self, id: i64) -> Request {
        self.statement = Some(id);
        self
    }

    pub fn run(mut self, id: i64) -> Request {
        self.run = Some(id);
        self
    }

    pub fn as_of(mut self, date: NaiveDate) -> Request {
        self.as_of = Some(date);
        self
    }

    pub fn reveal(mut self, reveal: Reveal) -> Request {
        self.reveal = reveal;
        self
    }

    /// Checks the parameters against the kind (see the table above) and fills the defaults:
    /// the budget report's `as_of` is `today` when not given.
    pub fn resolve(&self, today: NaiveDate) -> Result<Parameters> {
        let k = self.kind;
        let programme = match self.programme.as_deref().map(str::trim) {
            Some("") => return Err(ReportError::invalid("programme", "must not be empty")),
            p => p.map(str::to_owned),
        };
        let refuse = |field: &'static str| {
            Err(ReportError::invalid(
                field,
                format!("is not a parameter of the {k} report"),
            ))
        };
        match k {
            Kind::Budget | Kind::Household if programme.is_none() => {
                return Err(ReportError::invalid(
                    "programme",
                    format!("the {k} report needs a programme"),
                ))
            }
            Kind::TrialBalance | Kind::Reconciliation if programme.is_some() => {
                return refuse("programme")
            }
            _ => {}
        }
        if k == Kind::Reconciliation {
            if self.statement.is_some() == self.run.is_some() {
                return Err(ReportError::invalid(
                    "statement",
                    "name either a statement (its latest run) or a run, not both",
                ));
            }
        } else if self.statement.is_some() {
            return refuse("statement");
        } else if self.run.is_some() {
            return refuse("run");
        }
        if k != Kind::Budget && self.as_of.is_some() {
            return refuse("as_of");
        }
        for (field, id) in [("statement", self.statement), ("run", self.run)] {
            if id.is_some_and(|i| i < 1) {
                return Err(ReportError::invalid(field, "must be a positive id"));
            }
        }
        Ok(Parameters {
            kind: k,
            programme,
            statement: self.statement,
            run: self.run,
            as_of: (k == Kind::Budget).then(|| self.as_of.unwrap_or(today)),
            reveal: (k == Kind::Household).then_some(self.reveal),
        })
    }
}

/// Checked parameters with their defaults filled: what a report is built from, stored with
/// it (as [`Parameters::to_json`]) and shown in its JSON form. The same parameters over the
/// same database state give the same bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parameters {
    pub kind: Kind,
    pub programme: Option<String>,
    pub statement: Option<i64>,
    pub run: Option<i64>,
    pub as_of: Option<NaiveDate>,
    /// Household report only.
    pub reveal: Option<Reveal>,
}

impl Parameters {
    /// The parameters that apply, in a fixed key order: `programme`, `statement`, `run`,
    /// `as_of` (`YYYY-MM-DD`), `personal_data` (`masked` or `full`).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        if let Some(p) = &self.programme {
            m.insert("programme".into(), p.clone().into());
        }
        if let Some(s) = self.statement {
            m.insert("statement".into(), s.into());
        }
        if let Some(r) = self.run {
            m.insert("run".into(), r.into());
        }
        if let Some(d) = self.as_of {
            m.insert("as_of".into(), d.format("%Y-%m-%d").to_string().into());
        }
        if let Some(r) = self.reveal {
            m.insert("personal_data".into(), reveal_name(r).into());
        }
        Value::Object(m)
    }

    pub(crate) fn require_programme(&self) -> Result<&str> {
        self.programme
            .as_deref()
            .ok_or_else(|| ReportError::invalid("programme", "is required"))
    }
}

/// `masked` or `full`.
pub fn reveal_name(r: Reveal) -> &'static str {
    match r {
        Reveal::Masked => "masked",
        Reveal::Full => "full",
    }
}

/// One cell of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    /// Nothing: an empty CSV field, JSON `null`.
    Empty,
    Text(String),
    /// A whole number (ids, counts): a JSON number.
    Int(i64),
    /// An amount as a decimal string with the currency's decimals (`20000`, `30.48`): a JSON
    /// string, so no reader turns it into a float.
    Money(String),
    Bool(bool),
}

impl Cell {
    pub fn text(s: impl Into<String>) -> Cell {
        Cell::Text(s.into())
    }

    /// `Some` as text, `None` as empty.
    pub fn opt_text(s: Option<impl Into<String>>) -> Cell {
        s.map_or(Cell::Empty, |s| Cell::Text(s.into()))
    }

    /// `Some` as money, `None` as empty.
    pub fn opt_money(s: Option<String>) -> Cell {
        s.map_or(Cell::Empty, Cell::Money)
    }

    /// The CSV field.
    pub fn csv(&self) -> String {
        match self {
            Cell::Empty => String::new(),
            Cell::Text(s) | Cell::Money(s) => s.clone(),
            Cell::Int(i) => i.to_string(),
            Cell::Bool(b) => b.to_string(),
        }
    }

    /// The JSON value.
    pub fn json(&self) -> Value {
        match self {
            Cell::Empty => Value::Null,
            Cell::Text(s) | Cell::Money(s) => Value::String(s.clone()),
            Cell::Int(i) => Value::from(*i),
            Cell::Bool(b) => Value::Bool(*b),
        }
    }
}

/// A report before rendering: facts about the whole report (`header`, JSON only), the
/// column names, and the rows (each as long as `columns`), in their final order.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub header: Map<String, Value>,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

impl Table {
    pub fn new(columns: &[&str]) -> Table {
        Table {
            header: Map::new(),
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// The index of a column (for tests and readers).
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    /// The cell of `row` in column `name`.
    pub fn cell(&self, row: usize, name: &str) -> Option<&Cell> {
        self.rows.get(row)?.get(self.column(name)?)
    }

    pub(crate) fn push(&mut self, row: Vec<Cell>) -> Result<()> {
        if row.len() != self.columns.len() {
            return Err(ReportError::Render(format!(
                "a row has {} cells for {} columns",
                row.len(),
                self.columns.len()
            )));
        }
        self.rows.push(row);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2024, 5, 1).unwrap()
    }

    #[test]
    fn parameters_fit_the_kind() {
        let p = Request::new(Kind::Budget)
            .programme("P1")
            .resolve(day())
            .unwrap();
        assert_eq!(p.as_of, Some(day()));
        assert_eq!(
            p.to_json().to_string(),
            r#"{"programme":"P1","as_of":"2024-05-01"}"#
        );
        assert!(Request::new(Kind::Budget).resolve(day()).is_err());
        assert!(Request::new(Kind::Household).resolve(day()).is_err());
        let h = Request::new(Kind::Household)
            .programme("P1")
            .reveal(Reveal::Full)
            .resolve(day())
            .unwrap();
        assert_eq!(h.to_json()["personal_data"], "full");
        assert!(Request::new(Kind::TrialBalance)
            .programme("P1")
            .resolve(day())
            .is_err());
        assert!(Request::new(Kind::Journal)
            .as_of(day())
            .resolve(day())
            .is_err());
        assert!(Request::new(Kind::Reconciliation).resolve(day()).is_err());
        assert!(Request::new(Kind::Reconciliation)
            .statement(1)
            .run(2)
            .resolve(day())
            .is_err());
        assert!(Request::new(Kind::Reconciliation)
            .run(0)
            .resolve(day())
            .is_err());
        let r = Request::new(Kind::Reconciliation)
            .run(2)
            .resolve(day())
            .unwrap();
        assert_eq!(r.to_json().to_string(), r#"{"run":2}"#);
        assert!(Request::new(Kind::Journal)
            .statement(1)
            .resolve(day())
            .is_err());
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()).unwrap(), k);
        }
        assert!(Format::parse("xml").is_err());
    }
}
