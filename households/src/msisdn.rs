//! Phone numbers (MSISDNs) normalised to E.164, with the mobile-money operator that serves them.
//!
//! Field teams write numbers in many shapes: `+223 76 12 34 56`, `0022376123456`, `76.12.34.56`,
//! `(+223) 76123456` or just the national `76123456`. [`OperatorTable::normalise`] turns any of them
//! into one [`Msisdn`] (`+22376123456`) and names the operator from a prefix table that is data,
//! not code:
//!
//! ```
//! use cva_households::msisdn::OperatorTable;
//!
//! let table = OperatorTable::default_table();
//! let (msisdn, operator) = table.normalise("76 12 34 56", "223").unwrap();
//! assert_eq!(msisdn.as_str(), "+22376123456");
//! assert_eq!(operator, "orange-ml");
//! ```
//!
//! Values read back from the database are already normalised: check them with
//! [`Msisdn::parse_e164`].
//!
//! # The operator table
//!
//! A CSV file with the header `country_code,national_length,prefix,operator`, one prefix a line:
//!
//! ```text
//! country_code,national_length,prefix,operator
//! 223,8,76,orange-ml
//! 223,8,66,moov-ml
//! ```
//!
//! * `country_code`: the calling code without `+` (1 to 3 digits, not starting with 0). No
//!   country code may be the start of another.
//! * `national_length`: how many digits follow the country code (4 to 14, the same on every line
//!   of a country, at most 15 digits in all).
//! * `prefix`: the leading national digits the operator serves, shorter than the national
//!   length. When several prefixes match a number the longest wins, so a table may list `7` for
//!   one operator and `76` for another.
//! * `operator`: the operator's identifier, lower-case ASCII letters, digits, `-` and `_`.
//!
//! The bundled `data/operators.csv` ([`OperatorTable::default_table`]) is illustrative: Mali
//! (+223, 8 national digits) with Orange Mali on 70–79, 82, 83, 84 and 89 (`orange-ml`) and Moov
//! Africa Malitel on 60–69 and 90–99 (`moov-ml`). Telecel Mali and fixed lines are not listed, so
//! their numbers are rejected. Check the table against the operators' current numbering plans
//! before a programme uses it, and load your own with [`OperatorTable::from_csv`].
//!
//! # What is accepted
//!
//! Surrounding whitespace is ignored; spaces, `.`, `-`, `/`, `(` and `)` may separate digits. A
//! number is international when it starts with `+` or `00`; otherwise it is national and taken
//! in the caller's default country (a calling code such as `223` or `+223`). A national-looking
//! number that is exactly the default country code followed by a full national number (a
//! spreadsheet dropped the `+`: `22376123456`) is read as international.
//!
//! Error messages never repeat the number: they name the rule it breaks.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::import::record_line;

/// A phone number in E.164 form, e.g. `+22376123456`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Msisdn(pub(crate) String);

impl Msisdn {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Checks a value that is already normalised (read from the database): `+` then 7 to 15
    /// digits, the first not `0`. No whitespace or separators are allowed.
    pub fn parse_e164(s: &str) -> Result<Msisdn, MsisdnError> {
        let digits = s.strip_prefix('+').ok_or(MsisdnError::NotE164)?;
        let ok = (7..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        if ok {
            Ok(Msisdn(s.to_owned()))
        } else {
            Err(MsisdnError::NotE164)
        }
    }
}

/// Why a phone number or an operator table was refused. The messages never contain the number.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MsisdnError {
    #[error("the phone number is empty")]
    Empty,
    #[error("the phone number contains no digits")]
    NoDigits,
    #[error("the phone number contains letters")]
    Letters,
    #[error(
        "the phone number contains a character other than digits, a leading '+' and the \
         separators space . - / ( )"
    )]
    InvalidCharacter,
    #[error("'+' may only appear at the start of the phone number")]
    MisplacedPlus,
    #[error("the phone number's country code is not in the operator table")]
    UnknownCountry,
    #[error("the default country code {country:?} is not in the operator table")]
    UnknownDefaultCountry { country: String },
    #[error(
        "a number in country +{country_code} has {expected} digits after the country code; \
         this one has {found}"
    )]
    WrongLength {
        country_code: String,
        expected: usize,
        found: usize,
    },
    #[error("no operator in the table serves this number's prefix")]
    NoOperator,
    #[error("not an E.164 number: expected '+' then 7 to 15 digits, the first not 0")]
    NotE164,
    #[error("operator table, line {line}: {reason}")]
    Table { line: usize, reason: String },
    #[error("the operator table lists no operators")]
    EmptyTable,
}

const TABLE_HEADER: [&str; 4] = ["country_code", "national_length", "prefix", "operator"];

/// The prefixes of one country, longest first.
#[derive(Debug, Clone)]
struct Country {
    code: String,
    national_length: usize,
    /// `(prefix, operator)`, sorted by decreasing prefix length.
    prefixes: Vec<(String, String)>,
}

/// Which operator serves which numbers: see the module documentation for the file format.
#[derive(Debug, Clone)]
pub struct OperatorTable {
    countries: Vec<Country>,
}

fn table_error(line: usize, reason: impl Into<String>) -> MsisdnError {
    MsisdnError::Table {
        line,
        reason: reason.into(),
    }
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

impl OperatorTable {
    /// Reads a table (see the module documentation). Each bad line is reported with its line
    /// number, the header being line 1.
    pub fn from_csv(text: &str) -> Result<OperatorTable, MsisdnError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        let mut records = reader.records();

        match records.next() {
            None => return Err(table_error(1, "the header line is missing")),
            Some(Err(e)) => return Err(table_error(1, e.to_string())),
            Some(Ok(header)) => {
                if header.iter().ne(TABLE_HEADER) {
                    return Err(table_error(
                        1,
                        format!("expected the header {}", TABLE_HEADER.join(",")),
                    ));
                }
            }
        }

        // Country code → (index in `countries`, line where it was first seen).
        let mut by_code: HashMap<String, (usize, usize)> = HashMap::new();
        // (country code, prefix) → line where it was listed.
        let mut seen_prefix: HashMap<(String, String), usize> = HashMap::new();
        let mut countries: Vec<Country> = Vec::new();

        for result in records {
            let record =
                result.map_err(|e| table_error(record_line(text, e.position()), e.to_string()))?;
            let line = record_line(text, record.position());
            if record.len() != 4 {
                return Err(table_error(
                    line,
                    format!(
                        "expected 4 fields ({}), found {}",
                        TABLE_HEADER.join(","),
                        record.len()
                    ),
                ));
            }
            let (code, length, prefix, operator) = (&record[0], &record[1], &record[2], &record[3]);

            if !(all_digits(code) && code.len() <= 3 && !code.starts_with('0')) {
                return Err(table_error(
                    line,
                    "country_code must be 1 to 3 digits, not starting with 0",
                ));
            }
            let national_length: usize = length
                .parse()
                .ok()
                .filter(|n| (4..=14).contains(n) && code.len() + n <= 15)
                .ok_or_else(|| {
                    table_error(
                        line,
                        "national_length must be a whole number from 4 to 14, and with the \
                         country code at most 15 digits",
                    )
                })?;
            if !all_digits(prefix) || prefix.len() >= national_length {
                return Err(table_error(
                    line,
                    "prefix must be digits, fewer than national_length",
                ));
            }
            let operator_ok = !operator.is_empty()
                && operator.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                });
            if !operator_ok {
                return Err(table_error(
                    line,
                    "operator must be lower-case ASCII letters, digits, '-' or '_'",
                ));
            }

            let index = match by_code.get(code) {
                Some(&(index, first_line)) => {
                    if countries[index].national_length != national_length {
                        return Err(table_error(
                            line,
                            format!(
                                "country {code} was given national_length {} at line {first_line}",
                                countries[index].national_length
                            ),
                        ));
                    }
                    index
                }
                None => {
                    if let Some((other, &(_, other_line))) = by_code.iter().find(|(other, _)| {
                        other.starts_with(code) || code.starts_with(other.as_str())
                    }) {
                        return Err(table_error(
                            line,
                            format!(
                                "country code {code} and country code {other} (line {other_line}) \
                                 would make numbers ambiguous: one starts the other"
                            ),
                        ));
                    }
                    countries.push(Country {
                        code: code.to_owned(),
                        national_length,
                        prefixes: Vec::new(),
                    });
                    by_code.insert(code.to_owned(), (countries.len() - 1, line));
                    countries.len() - 1
                }
            };
            if let Some(first) = seen_prefix.insert((code.to_owned(), prefix.to_owned()), line) {
                return Err(table_error(
                    line,
                    format!("prefix {prefix} of country {code} is already listed at line {first}"),
                ));
            }
            countries[index]
                .prefixes
                .push((prefix.to_owned(), operator.to_owned()));
        }

        if countries.is_empty() {
            return Err(MsisdnError::EmptyTable);
        }
        for country in &mut countries {
            // Stable: equal lengths keep file order (they cannot both match anyway).
            country
                .prefixes
                .sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        }
        Ok(OperatorTable { countries })
    }

    /// The bundled table, `data/operators.csv` (illustrative; see the module documentation).
    ///
    /// # Panics
    ///
    /// If the bundled file is invalid, which the unit tests rule out.
    pub fn default_table() -> OperatorTable {
        match OperatorTable::from_csv(include_str!("../../data/operators.csv")) {
            Ok(table) => table,
            Err(e) => panic!("the bundled data/operators.csv is invalid: {e}"),
        }
    }

    fn country(&self, code: &str) -> Option<&Country> {
        self.countries.iter().find(|c| c.code == code)
    }

    /// Normalises `raw` to E.164 and names its operator. `default_country` is the calling code
    /// (`223` or `+223`) used for numbers written without one.
    pub fn normalise(
        &self,
        raw: &str,
        default_country: &str,
    ) -> Result<(Msisdn, String), MsisdnError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(MsisdnError::Empty);
        }
        let mut digits = String::with_capacity(16);
        let mut plus = false;
        for c in raw.chars() {
            match c {
                '0'..='9' => digits.push(c),
                '+' if !plus && digits.is_empty() => plus = true,
                '+' => return Err(MsisdnError::MisplacedPlus),
                '.' | '-' | '/' | '(' | ')' => {}
                c if c.is_whitespace() => {}
                c if c.is_alphabetic() => return Err(MsisdnError::Letters),
                _ => return Err(MsisdnError::InvalidCharacter),
            }
        }
        if digits.is_empty() {
            return Err(MsisdnError::NoDigits);
        }

        let international = if plus {
            Some(digits.as_str())
        } else {
            digits.strip_prefix("00")
        };
        let (country, national) = match international {
            Some(number) => {
                let country = self
                    .countries
                    .iter()
                    .find(|c| number.starts_with(&c.code))
                    .ok_or(MsisdnError::UnknownCountry)?;
                (country, &number[country.code.len()..])
            }
            None => {
                let code = default_country.trim();
                let code = code.strip_prefix('+').unwrap_or(code);
                let country =
                    self.country(code)
                        .ok_or_else(|| MsisdnError::UnknownDefaultCountry {
                            country: default_country.to_owned(),
                        })?;
                let national = match digits.strip_prefix(&country.code) {
                    Some(rest) if rest.len() == country.national_length => rest,
                    _ => digits.as_str(),
                };
                (country, national)
            }
        };

        if national.len() != country.national_length {
            return Err(MsisdnError::WrongLength {
                country_code: country.code.clone(),
                expected: country.national_length,
                found: national.len(),
            });
        }
        let operator = country
            .prefixes
            .iter()
            .find(|(prefix, _)| national.starts_with(prefix.as_str()))
            .map(|(_, operator)| operator.clone())
            .ok_or(MsisdnError::NoOperator)?;

        let mut e164 = String::with_capacity(1 + country.code.len() + national.len());
        e164.push('+');
        e164.push_str(&country.code);
        e164.push_str(national);
        Ok((Msisdn(e164), operator))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ml(raw: &str) -> Result<(Msisdn, String), MsisdnError> {
        OperatorTable::default_table().normalise(raw, "223")
    }

    fn table_err(text: &str) -> (usize, String) {
        match OperatorTable::from_csv(text) {
            Err(MsisdnError::Table { line, reason }) => (line, reason),
            other => panic!("expected a table error, got {other:?}"),
        }
    }

    #[test]
    fn bundled_table_is_valid() {
        let table = OperatorTable::default_table();
        assert_eq!(table.countries.len(), 1);
        assert_eq!(table.countries[0].prefixes.len(), 34);
    }

    #[test]
    fn accepted_forms() {
        for raw in [
            "+223 76 12 34 56",
            "0022376123456",
            "76.12.34.56",
            "76-12-34-56",
            "(+223) 76123456",
            "76123456",
            "  76 12 34 56\t",
            "\u{a0}76/12/34/56\u{a0}",
            "22376123456",
        ] {
            let (msisdn, operator) = ml(raw).unwrap_or_else(|e| panic!("{raw:?}: {e}"));
            assert_eq!(msisdn.as_str(), "+22376123456", "{raw:?}");
            assert_eq!(operator, "orange-ml", "{raw:?}");
        }
    }

    #[test]
    fn operators_by_prefix() {
        assert_eq!(ml("66 12 34 56").unwrap().1, "moov-ml");
        assert_eq!(ml("99 12 34 56").unwrap().1, "moov-ml");
        assert_eq!(ml("89 12 34 56").unwrap().1, "orange-ml");
        assert_eq!(ml("70 12 34 56").unwrap().1, "orange-ml");
    }

    #[test]
    fn default_country_may_carry_a_plus() {
        let table = OperatorTable::default_table();
        let (msisdn, _) = table.normalise("76123456", "+223").unwrap();
        assert_eq!(msisdn.as_str(), "+22376123456");
        assert_eq!(
            table.normalise("76123456", "226"),
            Err(MsisdnError::UnknownDefaultCountry {
                country: "226".into()
            })
        );
        // An international number does not need the default country.
        assert!(table.normalise("+22376123456", "226").is_ok());
    }

    #[test]
    fn rejections() {
        assert_eq!(ml(""), Err(MsisdnError::Empty));
        assert_eq!(ml("   "), Err(MsisdnError::Empty));
        assert_eq!(ml("+ ()"), Err(MsisdnError::NoDigits));
        assert_eq!(ml("76 12 34 5O"), Err(MsisdnError::Letters));
        assert_eq!(ml("tel: 76123456"), Err(MsisdnError::Letters));
        assert_eq!(ml("76123456#"), Err(MsisdnError::InvalidCharacter));
        assert_eq!(ml("76+123456"), Err(MsisdnError::MisplacedPlus));
        assert_eq!(ml("++22376123456"), Err(MsisdnError::MisplacedPlus));
        assert_eq!(ml("+226 70 12 34 56"), Err(MsisdnError::UnknownCountry));
        assert_eq!(ml("0033612345678"), Err(MsisdnError::UnknownCountry));
        assert_eq!(
            ml("7612345"),
            Err(MsisdnError::WrongLength {
                country_code: "223".into(),
                expected: 8,
                found: 7
            })
        );
        assert_eq!(
            ml("+223 76 12 34 56 7"),
            Err(MsisdnError::WrongLength {
                country_code: "223".into(),
                expected: 8,
                found: 9
            })
        );
        // Fixed lines (20…) and unassigned prefixes (5…) have no operator.
        assert_eq!(ml("20 22 33 44"), Err(MsisdnError::NoOperator));
        assert_eq!(ml("+223 50 12 34 56"), Err(MsisdnError::NoOperator));
    }

    #[test]
    fn messages_do_not_repeat_the_number() {
        for raw in [
            "76 12 34 5O",
            "76123456#",
            "76+123456",
            "+226 70 12 34 56",
            "7612345",
            "20 22 33 44",
        ] {
            let message = ml(raw).unwrap_err().to_string();
            let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
            assert!(!message.contains(&digits), "{message}");
            assert!(!message.contains(&digits[..4]), "{message}");
        }
        assert_eq!(
            ml("20 22 33 44").unwrap_err().to_string(),
            "no operator in the table serves this number's prefix"
        );
    }

    #[test]
    fn longest_prefix_wins() {
        let table = OperatorTable::from_csv(
            "country_code,national_length,prefix,operator\n\
             223,8,7,orange-ml\n\
             223,8,766,special\n\
             223,8,76,telecel-ml\n",
        )
        .unwrap();
        assert_eq!(table.normalise("77123456", "223").unwrap().1, "orange-ml");
        assert_eq!(table.normalise("76123456", "223").unwrap().1, "telecel-ml");
        assert_eq!(table.normalise("76623456", "223").unwrap().1, "special");
    }

    #[test]
    fn several_countries() {
        let table = OperatorTable::from_csv(
            " country_code , national_length , prefix , operator \r\n\
             223,8,7,orange-ml\r\n\
             226,8,7,orange-bf\r\n\
             1,10,212,us-nyc\r\n",
        )
        .unwrap();
        assert_eq!(
            table.normalise("+226 70 12 34 56", "223").unwrap().1,
            "orange-bf"
        );
        assert_eq!(
            table.normalise("70 12 34 56", "226").unwrap().1,
            "orange-bf"
        );
        let (msisdn, operator) = table.normalise("+1 212 555 0100", "223").unwrap();
        assert_eq!(
            (msisdn.as_str(), operator.as_str()),
            ("+12125550100", "us-nyc")
        );
    }

    #[test]
    fn table_errors_name_the_line() {
        const H: &str = "country_code,national_length,prefix,operator\n";
        assert_eq!(table_err("").0, 1);
        assert_eq!(
            table_err("country,length,prefix,operator\n223,8,7,x\n").0,
            1
        );
        assert_eq!(
            OperatorTable::from_csv(H).unwrap_err(),
            MsisdnError::EmptyTable
        );

        let cases = [
            ("223,8,7\n", "expected 4 fields"),
            ("2a3,8,7,orange-ml\n", "country_code"),
            ("0223,8,7,orange-ml\n", "country_code"),
            ("223,eight,7,orange-ml\n", "national_length"),
            ("223,20,7,orange-ml\n", "national_length"),
            ("223,8,7x,orange-ml\n", "prefix"),
            ("223,8,761234567,orange-ml\n", "prefix"),
            ("223,8,7,Orange Mali\n", "operator"),
            ("223,8,7,\n", "operator"),
        ];
        for (line, expected) in cases {
            let text = format!("{H}223,8,6,moov-ml\n{line}");
            let (at, reason) = table_err(&text);
            assert_eq!(at, 3, "{line:?}: {reason}");
            assert!(reason.contains(expected), "{line:?}: {reason}");
        }

        let (at, reason) = table_err(&format!("{H}223,8,7,a\n223,8,6,b\n\n223,8,7,c\n"));
        assert_eq!(at, 5);
        assert!(reason.contains("already listed at line 2"), "{reason}");

        let (at, reason) = table_err(&format!("{H}223,8,7,a\n223,9,6,b\n"));
        assert_eq!(at, 3);
        assert!(reason.contains("national_length 8 at line 2"), "{reason}");

        let (at, reason) = table_err(&format!("{H}223,8,7,a\n22,8,6,b\n"));
        assert_eq!(at, 3);
        assert!(reason.contains("ambiguous"), "{reason}");

        assert_eq!(
            OperatorTable::from_csv(&format!("{H}223,8,7,a\n223,8,7\n"))
                .unwrap_err()
                .to_string(),
            "operator table, line 3: expected 4 fields \
             (country_code,national_length,prefix,operator), found 3"
        );
    }

    #[test]
    fn parse_e164() {
        assert_eq!(
            Msisdn::parse_e164("+22376123456").unwrap().as_str(),
            "+22376123456"
        );
        for bad in [
            "22376123456",
            "+223 76123456",
            "+0223761234",
            "+123456",
            "+1234567890123456",
            "+2237612345a",
            "",
            "+",
        ] {
            assert_eq!(
                Msisdn::parse_e164(bad),
                Err(MsisdnError::NotE164),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn serde_is_transparent() {
        let (msisdn, _) = ml("76123456").unwrap();
        let json = serde_json::to_string(&msisdn).unwrap();
        assert_eq!(json, "\"+22376123456\"");
        assert_eq!(serde_json::from_str::<Msisdn>(&json).unwrap(), msisdn);
    }
}
