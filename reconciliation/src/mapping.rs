//! Column mappings: which header of a provider's statement holds which field, and how the
//! provider writes amounts, dates and statuses — as data ([`ColumnMapping`], JSON via serde),
//! so that a new provider needs a mapping file, not code.
//!
//! This module owns the mapping format, its two built-ins ([`ColumnMapping::simulator`] and
//! [`ColumnMapping::generic`]) and its validation ([`ColumnMapping::validate`], whose errors name
//! the bad field).
//!
//! # The fields
//!
//! | field | required | meaning |
//! |---|---|---|
//! | `transaction_id` | yes | the provider's id of the movement |
//! | `reference` | no | our payment line id, as we sent it to the provider |
//! | `msisdn` | no | the mobile number paid (personal data: never shown in errors) |
//! | `amount` | yes | the amount moved; positive = paid out of the float, negative = money back into it |
//! | `currency` | no | ISO 4217 code; when the column is absent or the cell empty, the import's default currency |
//! | `fee` | no | the fee taken from the float for the movement; absent or empty = 0 |
//! | `status` | no | the provider's word, translated by `status_values`; without the column every line is `completed` |
//! | `date` | yes | when the movement happened |
//! | `balance_after` | no | the float after the movement |
//!
//! Header names are matched case-insensitively, after trimming; columns the mapping does not
//! name are ignored. The column of a required field must be in the header (a cell may still be
//! empty only for optional fields); the column of an optional field may be missing altogether.
//!
//! # The generic mapping
//!
//! [`ColumnMapping::generic`] is the layout to ask of a provider (or to produce from its export
//! with a spreadsheet) when there is no mapping for it yet:
//!
//! | field | header |
//! |---|---|
//! | `transaction_id` | `transaction_id` |
//! | `reference` | `reference` |
//! | `msisdn` | `msisdn` |
//! | `amount` | `amount` |
//! | `currency` | `currency` |
//! | `fee` | `fee` |
//! | `status` | `status` |
//! | `date` | `date` |
//! | `balance_after` | `balance_after` |
//!
//! with `decimal_separator` `auto`, `date_format` `dmy`, `utc_offset` `+00:00`, and these
//! provider words besides the status names themselves (case-insensitive):
//!
//! | status | words |
//! |---|---|
//! | `completed` | complete, success, successful, succeeded, paid, ok, réussi, reussi, succès, succes, effectué, effectue, payé, paye |
//! | `failed` | failure, fail, rejected, declined, error, échoué, echoue, échec, echec, rejeté, rejete |
//! | `reversed` | (its name only) |
//! | `reversal` | refund, remboursement |
//! | `pending` | processing, in progress, en attente, en cours |
//!
//! [`ColumnMapping::simulator`] reads the provider simulator's statement
//! (`transaction_id,reference,msisdn,amount,currency,fee,status,completed_at,balance_after`, see
//! `cva_providers::sim::RunningSim::statement_csv`): the same names except `completed_at` for the
//! date, `decimal_separator` `.`.
//!
//! # The JSON form
//!
//! ```
//! use cva_reconciliation::mapping::ColumnMapping;
//! use cva_reconciliation::statement::StatementStatus;
//! let mapping = ColumnMapping::from_json(r#"{
//!   "name": "orange-ml",
//!   "columns": {
//!     "transaction_id": "ID transaction",
//!     "reference": "Référence",
//!     "msisdn": "Bénéficiaire",
//!     "amount": "Montant",
//!     "date": "Date",
//!     "status": "Statut",
//!     "balance_after": "Solde après"
//!   },
//!   "decimal_separator": ",",
//!   "date_format": "dmy",
//!   "utc_offset": "+00:00",
//!   "status_values": { "Succès": "completed", "Echec": "failed" }
//! }"#).unwrap();
//! assert_eq!(mapping.status_word("SUCCÈS"), Some(StatementStatus::Completed));
//! assert_eq!(mapping.status_word("reversal"), Some(StatementStatus::Reversal));
//! ```
//!
//! `columns` needs `transaction_id`, `amount` and `date`; everything else may be left out
//! (`decimal_separator` defaults to `auto`, `date_format` to `dmy`, `utc_offset` to UTC,
//! `status_values` to none). Unknown keys are errors, so that a misspelt option is not silently
//! ignored. `decimal_separator` is `"."`, `","` or `"auto"` (see [`crate::amount`]);
//! `date_format` is `"dmy"` or `"mdy"` (see [`crate::date`]); `status_values` maps provider
//! words to `completed`, `failed`, `reversed`, `reversal` or `pending`, and is consulted before
//! the status names themselves, which are always understood.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::date::{DateOrder, UtcOffset};
use crate::statement::StatementStatus;

/// Longest header name a mapping may give.
const MAX_COLUMN_LEN: usize = 200;

/// One field of a [`crate::statement::StatementLine`] read from a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    TransactionId,
    Reference,
    Msisdn,
    Amount,
    Currency,
    Fee,
    Status,
    Date,
    BalanceAfter,
}

impl Field {
    /// Every field, in the order of the table in the module documentation.
    pub const ALL: [Field; 9] = [
        Field::TransactionId,
        Field::Reference,
        Field::Msisdn,
        Field::Amount,
        Field::Currency,
        Field::Fee,
        Field::Status,
        Field::Date,
        Field::BalanceAfter,
    ];

    /// The field's name in mappings (`transaction_id`, `balance_after`, …).
    pub fn name(self) -> &'static str {
        match self {
            Field::TransactionId => "transaction_id",
            Field::Reference => "reference",
            Field::Msisdn => "msisdn",
            Field::Amount => "amount",
            Field::Currency => "currency",
            Field::Fee => "fee",
            Field::Status => "status",
            Field::Date => "date",
            Field::BalanceAfter => "balance_after",
        }
    }

    /// `transaction_id`, `amount` and `date`: their column must be mapped and present, their
    /// cells filled.
    pub fn is_required(self) -> bool {
        matches!(self, Field::TransactionId | Field::Amount | Field::Date)
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The header name each field is read from (`None`: the provider has no such column).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Columns {
    pub transaction_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msisdn: Option<String>,
    pub amount: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fee: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    pub date: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance_after: Option<String>,
}

impl Columns {
    /// The header name `field` is read from.
    pub fn get(&self, field: Field) -> Option<&str> {
        match field {
            Field::TransactionId => Some(&self.transaction_id),
            Field::Reference => self.reference.as_deref(),
            Field::Msisdn => self.msisdn.as_deref(),
            Field::Amount => Some(&self.amount),
            Field::Currency => self.currency.as_deref(),
            Field::Fee => self.fee.as_deref(),
            Field::Status => self.status.as_deref(),
            Field::Date => Some(&self.date),
            Field::BalanceAfter => self.balance_after.as_deref(),
        }
    }

    /// The same header name for every field: `transaction_id`, `reference`, … `balance_after`.
    fn named_after_fields() -> Columns {
        Columns {
            transaction_id: "transaction_id".into(),
            reference: Some("reference".into()),
            msisdn: Some("msisdn".into()),
            amount: "amount".into(),
            currency: Some("currency".into()),
            fee: Some("fee".into()),
            status: Some("status".into()),
            date: "date".into(),
            balance_after: Some("balance_after".into()),
        }
    }
}

/// The character between units and decimals in amounts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DecimalSeparator {
    /// Decided per amount by the rules of [`crate::amount`]; `1.000` is refused as ambiguous
    /// for currencies with a minor unit.
    #[default]
    #[serde(rename = "auto")]
    Auto,
    #[serde(rename = ".")]
    Dot,
    #[serde(rename = ",")]
    Comma,
}

impl DecimalSeparator {
    /// The argument [`crate::amount::parse_amount`] takes.
    pub fn as_char(self) -> Option<char> {
        match self {
            DecimalSeparator::Auto => None,
            DecimalSeparator::Dot => Some('.'),
            DecimalSeparator::Comma => Some(','),
        }
    }
}

/// How one provider's statement is laid out. See the module documentation for the JSON form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnMapping {
    /// A label for people and for the import record (`simulator`, `orange-ml`…); may be empty.
    #[serde(default)]
    pub name: String,
    pub columns: Columns,
    #[serde(default)]
    pub decimal_separator: DecimalSeparator,
    /// How to read numeric dates with the year last (`01/03/2024`).
    #[serde(default)]
    pub date_format: DateOrder,
    /// The offset of times (and dates) written without one.
    #[serde(default)]
    pub utc_offset: UtcOffset,
    /// Provider words for statuses, matched case-insensitively after trimming, before the
    /// status names themselves.
    #[serde(default)]
    pub status_values: BTreeMap<String, StatementStatus>,
}

impl ColumnMapping {
    /// The provider simulator's statement (`cva_providers::sim::RunningSim::statement_csv`).
    pub fn simulator() -> ColumnMapping {
        ColumnMapping {
            name: "simulator".into(),
            columns: Columns {
                date: "completed_at".into(),
                ..Columns::named_after_fields()
            },
            decimal_separator: DecimalSeparator::Dot,
            date_format: DateOrder::Dmy,
            utc_offset: UtcOffset::UTC,
            status_values: BTreeMap::new(),
        }
    }

    /// The documented generic layout (see the module documentation's table).
    pub fn generic() -> ColumnMapping {
        use StatementStatus::*;
        let words: &[(&str, StatementStatus)] = &[
            ("complete", Completed),
            ("success", Completed),
            ("successful", Completed),
            ("succeeded", Completed),
            ("paid", Completed),
            ("ok", Completed),
            ("réussi", Completed),
            ("reussi", Completed),
            ("succès", Completed),
            ("succes", Completed),
            ("effectué", Completed),
            ("effectue", Completed),
            ("payé", Completed),
            ("paye", Completed),
            ("failure", Failed),
            ("fail", Failed),
            ("rejected", Failed),
            ("declined", Failed),
            ("error", Failed),
            ("échoué", Failed),
            ("echoue", Failed),
            ("échec", Failed),
            ("echec", Failed),
            ("rejeté", Failed),
            ("rejete", Failed),
            ("refund", Reversal),
            ("remboursement", Reversal),
            ("processing", Pending),
            ("in progress", Pending),
            ("en attente", Pending),
            ("en cours", Pending),
        ];
        ColumnMapping {
            name: "generic".into(),
            columns: Columns::named_after_fields(),
            decimal_separator: DecimalSeparator::Auto,
            date_format: DateOrder::Dmy,
            utc_offset: UtcOffset::UTC,
            status_values: words.iter().map(|(w, s)| ((*w).to_owned(), *s)).collect(),
        }
    }

    /// Reads a mapping from JSON and validates it.
    pub fn from_json(text: &str) -> Result<ColumnMapping, MappingError> {
        let mapping: ColumnMapping =
            serde_json::from_str(text).map_err(|e| MappingError::Json(e.to_string()))?;
        mapping.validate()?;
        Ok(mapping)
    }

    /// The mapping as pretty-printed JSON, readable by [`ColumnMapping::from_json`].
    pub fn to_json(&self) -> String {
        // Plain strings, enums and maps with string keys: serialising cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks what serde cannot: every mapped column name is non-empty (after trimming) and at
    /// most 200 characters, no two fields read the same column (compared as headers are,
    /// case-insensitively), status words are non-empty and distinct, and `status_values` is
    /// only given with a `status` column. The error names the first bad field
    /// (`columns.fee`, `status_values`…).
    pub fn validate(&self) -> Result<(), MappingError> {
        let invalid = |field: String, reason: String| MappingError::Invalid { field, reason };
        let mut seen: Vec<(Field, &str)> = Vec::new();
        for field in Field::ALL {
            let Some(column) = self.columns.get(field) else {
                continue;
            };
            let column = column.trim();
            let key = format!("columns.{field}");
            if column.is_empty() {
                return Err(invalid(key, "the column name is empty".into()));
            }
            if column.chars().count() > MAX_COLUMN_LEN {
                return Err(invalid(
                    key,
                    format!("the column name is longer than {MAX_COLUMN_LEN} characters"),
                ));
            }
            if let Some((other, _)) = seen.iter().find(|(_, c)| same_text(c, column)) {
                return Err(invalid(
                    key,
                    format!("reads the same column {column:?} as columns.{other}"),
                ));
            }
            seen.push((field, column));
        }
        if !self.status_values.is_empty() && self.columns.status.is_none() {
            return Err(invalid(
                "status_values".into(),
                "given, but columns.status names no column to read them from".into(),
            ));
        }
        let mut words: Vec<&str> = Vec::new();
        for word in self.status_values.keys() {
            let word = word.trim();
            if word.is_empty() {
                return Err(invalid(
                    "status_values".into(),
                    "a provider word is empty".into(),
                ));
            }
            if words.iter().any(|w| same_text(w, word)) {
                return Err(invalid(
                    format!("status_values.{word}"),
                    "the word is listed twice (words are compared case-insensitively)".into(),
                ));
            }
            words.push(word);
        }
        Ok(())
    }

    /// The status a provider word stands for: `status_values` first, then the status names
    /// (`completed`, `failed`, `reversed`, `reversal`, `pending`); case-insensitive, trimmed.
    pub fn status_word(&self, word: &str) -> Option<StatementStatus> {
        let word = word.trim();
        self.status_values
            .iter()
            .find(|(w, _)| same_text(w.trim(), word))
            .map(|(_, s)| *s)
            .or_else(|| {
                StatementStatus::ALL
                    .into_iter()
                    .find(|s| same_text(s.as_str(), word))
            })
    }
}

/// Equal ignoring case (Unicode lower case), as header names and status words are compared.
pub(crate) fn same_text(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        return a.eq_ignore_ascii_case(b);
    }
    a.chars()
        .flat_map(char::to_lowercase)
        .eq(b.chars().flat_map(char::to_lowercase))
}

/// Why a mapping was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MappingError {
    /// Not JSON, or not the shape of a mapping (serde's message names the key and position:
    /// ``missing field `amount` at line 3 column 1``, ``unknown field `decimal_seperator` ``…).
    #[error("the column mapping is not valid: {0}")]
    Json(String),
    /// A field with a bad value.
    #[error("column mapping, {field}: {reason}")]
    Invalid { field: String, reason: String },
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn built_ins_are_valid_and_round_trip_through_json() {
        for mapping in [ColumnMapping::simulator(), ColumnMapping::generic()] {
            mapping.validate().unwrap();
            let json = mapping.to_json();
            assert_eq!(ColumnMapping::from_json(&json).unwrap(), mapping, "{json}");
        }
    }

    #[test]
    fn minimal_json_takes_defaults() {
        let m = ColumnMapping::from_json(
            r#"{"columns": {"transaction_id": "id", "amount": "amt", "date": "when"}}"#,
        )
        .unwrap();
        assert_eq!(m.decimal_separator, DecimalSeparator::Auto);
        assert_eq!(m.date_format, DateOrder::Dmy);
        assert_eq!(m.utc_offset, UtcOffset::UTC);
        assert_eq!(m.columns.get(Field::Fee), None);
        assert_eq!(m.columns.get(Field::Date), Some("when"));
        assert_eq!(m.status_word("Completed"), Some(StatementStatus::Completed));
        assert_eq!(m.status_word("done"), None);
    }

    #[test]
    fn json_options_are_read() {
        let m = ColumnMapping::from_json(
            r#"{"name": "x", "columns": {"transaction_id": "id", "amount": "amt", "date": "when", "status": "st"},
                "decimal_separator": ",", "date_format": "mdy", "utc_offset": "+03:00",
                "status_values": {"DONE": "completed", "KO": "failed"}}"#,
        )
        .unwrap();
        assert_eq!(m.decimal_separator.as_char(), Some(','));
        assert_eq!(m.date_format, DateOrder::Mdy);
        assert_eq!(m.utc_offset.to_string(), "+03:00");
        assert_eq!(m.status_word(" done "), Some(StatementStatus::Completed));
        assert_eq!(m.status_word("ko"), Some(StatementStatus::Failed));
    }

    #[test]
    fn json_errors_name_the_key() {
        let cases = [
            (
                r#"{"columns": {"transaction_id": "id", "date": "d"}}"#,
                "amount",
            ),
            (
                r#"{"columns": {"transaction_id": "id", "amount": "a", "date": "d"}, "decimal_seperator": "."}"#,
                "decimal_seperator",
            ),
            (
                r#"{"columns": {"transaction_id": "id", "amount": "a", "date": "d", "iban": "x"}}"#,
                "iban",
            ),
            (
                r#"{"columns": {"transaction_id": "id", "amount": "a", "date": "d"}, "decimal_separator": ";"}"#,
                "variant",
            ),
            (
                r#"{"columns": {"transaction_id": "id", "amount": "a", "date": "d"}, "date_format": "ymd"}"#,
                "ymd",
            ),
            (
                r#"{"columns": {"transaction_id": "id", "amount": "a", "date": "d"}, "utc_offset": "EAT"}"#,
                "utc_offset",
            ),
            (
                r#"{"columns": {"transaction_id": "id", "amount": "a", "date": "d", "status": "s"}, "status_values": {"x": "done"}}"#,
                "variant",
            ),
            ("not json", "expected"),
        ];
        for (json, needle) in cases {
            let err = ColumnMapping::from_json(json).unwrap_err();
            assert!(matches!(err, MappingError::Json(_)), "{json}: {err}");
            assert!(err.to_string().contains(needle), "{json}: {err}");
        }
    }

    fn invalid_field(json: &str) -> String {
        match ColumnMapping::from_json(json).unwrap_err() {
            MappingError::Invalid { field, .. } => field,
            other => panic!("{json}: {other}"),
        }
    }

    #[test]
    fn validation_names_the_bad_field() {
        assert_eq!(
            invalid_field(r#"{"columns": {"transaction_id": " ", "amount": "a", "date": "d"}}"#),
            "columns.transaction_id"
        );
        assert_eq!(
            invalid_field(
                r#"{"columns": {"transaction_id": "id", "amount": "a", "date": "d", "fee": "A"}}"#
            ),
            "columns.fee"
        );
        let long = "x".repeat(201);
        assert_eq!(
            invalid_field(&format!(
                r#"{{"columns": {{"transaction_id": "id", "amount": "a", "date": "d", "msisdn": "{long}"}}}}"#
            )),
            "columns.msisdn"
        );
        assert_eq!(
            invalid_field(
                r#"{"columns": {"transaction_id": "id", "amount": "a", "date": "d"}, "status_values": {"ok": "completed"}}"#
            ),
            "status_values"
        );
        assert_eq!(
            invalid_field(
                r#"{"columns": {"transaction_id": "id", "amount": "a", "date": "d", "status": "s"}, "status_values": {"OK": "completed", "ok": "failed"}}"#
            ),
            "status_values.ok"
        );
        assert_eq!(
            invalid_field(
                r#"{"columns": {"transaction_id": "id", "amount": "a", "date": "d", "status": "s"}, "status_values": {" ": "completed"}}"#
            ),
            "status_values"
        );
    }

    #[test]
    fn status_values_come_before_the_names() {
        let mut m = ColumnMapping::generic();
        m.status_values
            .insert("Reversed".into(), StatementStatus::Reversal);
        assert_eq!(m.status_word("REVERSED"), Some(StatementStatus::Reversal));
        assert_eq!(m.status_word("Échoué"), Some(StatementStatus::Failed));
        assert_eq!(m.status_word("EN COURS"), Some(StatementStatus::Pending));
    }

    #[test]
    fn generic_headers_are_the_field_names() {
        let m = ColumnMapping::generic();
        for field in Field::ALL {
            assert_eq!(m.columns.get(field), Some(field.name()));
        }
        let sim = ColumnMapping::simulator();
        assert_eq!(sim.columns.get(Field::Date), Some("completed_at"));
    }
}
