//! Amounts as providers write them, turned into exact minor units: [`parse_amount`].
//!
//! This module owns the amount syntax of statement files. It never rounds and never goes
//! through floating point: the text is read digit by digit into an `i64` of minor units (XOF
//! has exponent 0, USD 2, TND 3; see [`cva_ledger::money::Currency::exponent`]).
//!
//! ```
//! use cva_reconciliation::amount::{parse_amount, AmountError};
//! assert_eq!(parse_amount("65000", None, 0), Ok(65000));
//! assert_eq!(parse_amount("65 000", None, 0), Ok(65000));
//! assert_eq!(parse_amount("65.000,00", None, 0), Ok(65000));
//! assert_eq!(parse_amount("65,000.00", None, 0), Ok(65000));
//! assert_eq!(parse_amount("65000.5", None, 2), Ok(6500050));
//! assert_eq!(parse_amount("(20000)", None, 0), Ok(-20000));
//! assert_eq!(parse_amount("1.000", None, 0), Ok(1000));
//! assert_eq!(parse_amount("1.000", None, 2), Err(AmountError::Ambiguous));
//! assert_eq!(parse_amount("1.000", Some('.'), 2), Ok(100));
//! assert_eq!(parse_amount("12.345", None, 2), Err(AmountError::Ambiguous));
//! assert_eq!(parse_amount("12.345", Some('.'), 2), Err(AmountError::TooManyDecimals { exponent: 2 }));
//! ```
//!
//! # The rules
//!
//! * Surrounding white space is ignored. Empty text is [`AmountError::Empty`].
//! * **Sign.** A leading `-` (or the minus sign U+2212), or the accounting style `(20000)`, make
//!   the amount negative; a leading `+` is allowed. Only one sign, and nothing outside the
//!   parentheses. A trailing minus (`20000-`) is refused.
//! * **Characters.** ASCII digits, `.`, `,` and the spaces that group digits: space U+0020,
//!   no-break space U+00A0, narrow no-break space U+202F and thin space U+2009. Anything else
//!   (letters, currency symbols or codes, `e` exponents, other digits) is
//!   [`AmountError::BadCharacter`].
//! * **Separators** stand between digits, one at a time: `5.`, `.5`, `1..0`, `1 ,0` are
//!   [`AmountError::BadSeparator`].
//! * **Decimal separator.** At most one, and it comes after every group separator. When the
//!   caller (the column mapping) names it (`Some('.')` or `Some(',')`), that character is the
//!   decimal separator and the other one, or spaces, group thousands. With `None` (auto) the
//!   decision follows the last separator:
//!   1. no `.` or `,` at all: a whole number (`65000`, `65 000`);
//!   2. both `.` and `,` occur: the last one is the decimal separator, the other groups
//!      thousands (`65.000,00`, `65,000.00`);
//!   3. only one of them, several times: it groups thousands (`1.000.000`, `1,000,000`);
//!   4. only one of them, once, and spaces group the digits before it: it is the decimal
//!      separator (`65 000,50`);
//!   5. only one of them, once, followed by other than exactly three digits: decimal
//!      separator (`65000.5`, `12,50`, `65000.00`);
//!   6. only one of them, once, followed by exactly three digits, after more than three
//!      digits or after a leading `0`: decimal separator (`65000.500`, `0.500`), because such
//!      digits cannot be a first group of thousands;
//!   7. otherwise (`1.000`, `650,500`, `12.345`): a thousands group when the currency has no
//!      minor unit (exponent 0: `1.000` XOF is 1000), and [`AmountError::Ambiguous`] for any
//!      other exponent — the mapping must then name the decimal separator.
//! * **Groups of thousands.** A single kind of group separator per amount (`1 000.000,00` mixes
//!   two: refused). The first group has one to three digits and does not start with `0`, every
//!   other group exactly three digits; otherwise [`AmountError::BadGrouping`]. Decimals are
//!   never grouped.
//! * **Precision.** Decimals beyond the currency's exponent must be zeros (`65000.00` XOF is
//!   65000); any other extra decimal is [`AmountError::TooManyDecimals`], never a rounding.
//! * **Range.** The result must fit in an `i64` ([`AmountError::Overflow`]); text longer than
//!   64 characters is refused the same way.
//!
//! Error messages never repeat the text: a wrongly mapped column could hold a phone number.

use thiserror::Error;

/// Why an amount was refused. The messages describe the rule, never the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum AmountError {
    #[error("required, but empty")]
    Empty,
    #[error(
        "not an amount: only digits, `.` and `,`, spaces between groups of digits and a leading \
         `-` (or parentheses) are allowed"
    )]
    BadCharacter,
    #[error("misplaced sign: write `-20000` or `(20000)`")]
    BadSign,
    #[error("misplaced separator: `.`, `,` and spaces must stand alone between digits, with at most one decimal separator, after any group separator")]
    BadSeparator,
    #[error("digits are not grouped by thousands (first group 1 to 3 digits, then groups of 3, with a single kind of group separator)")]
    BadGrouping,
    #[error("ambiguous: one separator followed by three digits could group thousands or mark decimals; set decimal_separator in the column mapping")]
    Ambiguous,
    #[error("more decimals than the currency has ({exponent})")]
    TooManyDecimals { exponent: u32 },
    #[error("too large to store")]
    Overflow,
    #[error("the decimal separator must be `.` or `,`")]
    UnsupportedSeparator,
}

/// Longest text considered (longer is [`AmountError::Overflow`]).
const MAX_LEN: usize = 64;
/// At most this many digit runs (19 digits in groups of 3, plus decimals, fit easily).
const MAX_RUNS: usize = 16;

/// Separator classes between digit runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sep {
    Dot,
    Comma,
    Space,
}

fn sep_of(c: char) -> Option<Sep> {
    match c {
        '.' => Some(Sep::Dot),
        ',' => Some(Sep::Comma),
        ' ' | '\u{a0}' | '\u{202f}' | '\u{2009}' => Some(Sep::Space),
        _ => None,
    }
}

/// Parses a statement amount into minor units of a currency with `exponent` decimals.
///
/// `decimal_separator` is `Some('.')` or `Some(',')` when the column mapping names it, `None`
/// to decide from the text (see the [module rules](self)).
pub fn parse_amount(
    text: &str,
    decimal_separator: Option<char>,
    exponent: u32,
) -> Result<i64, AmountError> {
    let decimal = match decimal_separator {
        None => None,
        Some('.') => Some(Sep::Dot),
        Some(',') => Some(Sep::Comma),
        Some(_) => return Err(AmountError::UnsupportedSeparator),
    };
    let text = text.trim();
    if text.is_empty() {
        return Err(AmountError::Empty);
    }
    if text.len() > MAX_LEN || exponent > 18 {
        return Err(AmountError::Overflow);
    }

    let (negative, body) = split_sign(text)?;

    // Digit runs and the separator before each run (none before the first).
    let mut runs: [(Option<Sep>, &str); MAX_RUNS] = [(None, ""); MAX_RUNS];
    let mut count = 0;
    let mut run_start = 0;
    let mut pending: Option<Sep> = None;
    let mut in_digits = false;
    for (i, c) in body.char_indices() {
        if c.is_ascii_digit() {
            if !in_digits {
                run_start = i;
                in_digits = true;
            }
            continue;
        }
        let sep = match sep_of(c) {
            Some(sep) => sep,
            None if matches!(c, '-' | '+' | '(' | ')' | '\u{2212}') => {
                return Err(AmountError::BadSign)
            }
            None => return Err(AmountError::BadCharacter),
        };
        if !in_digits {
            // At the start, or right after another separator.
            return Err(AmountError::BadSeparator);
        }
        if count == MAX_RUNS {
            return Err(AmountError::Overflow);
        }
        runs[count] = (pending, &body[run_start..i]);
        count += 1;
        pending = Some(sep);
        in_digits = false;
    }
    if !in_digits {
        return Err(if body.is_empty() {
            AmountError::Empty
        } else {
            AmountError::BadSeparator
        });
    }
    if count == MAX_RUNS {
        return Err(AmountError::Overflow);
    }
    runs[count] = (pending, &body[run_start..]);
    count += 1;
    let runs = &runs[..count];

    let decimal_at = decimal_run(runs, decimal, exponent)?;
    let (int_runs, frac) = match decimal_at {
        Some(i) => (&runs[..i], runs[i].1),
        None => (runs, ""),
    };
    check_grouping(int_runs)?;

    let significant = frac.trim_end_matches('0');
    if significant.len() as u32 > exponent {
        return Err(AmountError::TooManyDecimals { exponent });
    }
    let mut value: i128 = 0;
    for (_, digits) in int_runs {
        for b in digits.bytes() {
            value = value * 10 + i128::from(b - b'0');
            if value > i128::from(i64::MAX) + 1 {
                return Err(AmountError::Overflow);
            }
        }
    }
    let mut frac_digits = significant.bytes();
    for _ in 0..exponent {
        let digit = frac_digits.next().map_or(0, |b| i128::from(b - b'0'));
        value = value * 10 + digit;
        if value > i128::from(i64::MAX) + 1 {
            return Err(AmountError::Overflow);
        }
    }
    let value = if negative { -value } else { value };
    i64::try_from(value).map_err(|_| AmountError::Overflow)
}

/// Strips one sign: a leading `-`/U+2212/`+`, or enclosing parentheses.
fn split_sign(text: &str) -> Result<(bool, &str), AmountError> {
    let (negative, body) = if let Some(inner) = text
        .strip_prefix('(')
        .and_then(|rest| rest.strip_suffix(')'))
    {
        (true, inner)
    } else if let Some(rest) = text.strip_prefix('-') {
        (true, rest)
    } else if let Some(rest) = text.strip_prefix('\u{2212}') {
        (true, rest)
    } else if let Some(rest) = text.strip_prefix('+') {
        (false, rest)
    } else {
        (false, text)
    };
    Ok((negative, body))
}

/// The index of the run that holds the decimals, if any, per the module's rules.
fn decimal_run(
    runs: &[(Option<Sep>, &str)],
    decimal: Option<Sep>,
    exponent: u32,
) -> Result<Option<usize>, AmountError> {
    let seps = || runs.iter().filter_map(|(sep, _)| *sep);
    let last = runs.len() - 1;
    if let Some(d) = decimal {
        return match seps().filter(|s| *s == d).count() {
            0 => Ok(None),
            1 if runs[last].0 == Some(d) => Ok(Some(last)),
            _ => Err(AmountError::BadSeparator),
        };
    }
    let dots = seps().filter(|s| *s == Sep::Dot).count();
    let commas = seps().filter(|s| *s == Sep::Comma).count();
    let spaces = seps().filter(|s| *s == Sep::Space).count();
    match (dots, commas) {
        // Rule 1: no punctuation.
        (0, 0) => Ok(None),
        // Rule 2: both; the last one is the decimal separator, once, at the end.
        (d, c) if d > 0 && c > 0 => {
            let decimal = runs[last].0;
            let once = match decimal {
                Some(Sep::Dot) => d == 1,
                Some(Sep::Comma) => c == 1,
                _ => false,
            };
            if once {
                Ok(Some(last))
            } else {
                Err(AmountError::BadSeparator)
            }
        }
        // Rule 3: one kind, several times: groups.
        (d, c) if d + c > 1 => Ok(None),
        // One kind, once.
        _ => {
            let at = runs
                .iter()
                .position(|(sep, _)| matches!(sep, Some(Sep::Dot | Sep::Comma)))
                .unwrap_or(last);
            if at != last {
                // Spaces after the only punctuation: it can only be a group separator, and
                // mixing kinds is refused by the grouping check.
                return Ok(None);
            }
            let after = runs[last].1;
            let before = runs[last - 1].1;
            if spaces > 0 || after.len() != 3 || before.len() > 3 || before.starts_with('0') {
                // Rules 4, 5 and 6.
                Ok(Some(last))
            } else if exponent == 0 {
                // Rule 7, no minor unit: a group of thousands.
                Ok(None)
            } else {
                Err(AmountError::Ambiguous)
            }
        }
    }
}

/// The integer part's runs: one run of any length, or thousands groups of a single kind.
fn check_grouping(runs: &[(Option<Sep>, &str)]) -> Result<(), AmountError> {
    let Some(((_, first), rest)) = runs.split_first() else {
        return Err(AmountError::BadSeparator);
    };
    if rest.is_empty() {
        return Ok(());
    }
    if first.len() > 3 || first.starts_with('0') {
        return Err(AmountError::BadGrouping);
    }
    let kind = rest[0].0;
    for (sep, digits) in rest {
        if *sep != kind || digits.len() != 3 {
            return Err(AmountError::BadGrouping);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_the_issue_examples() {
        assert_eq!(parse_amount("65000", None, 0), Ok(65000));
        assert_eq!(parse_amount("65 000", None, 0), Ok(65000));
        assert_eq!(parse_amount("65\u{a0}000", None, 0), Ok(65000));
        assert_eq!(parse_amount("65\u{202f}000", None, 0), Ok(65000));
        assert_eq!(
            parse_amount("1\u{2009}250\u{2009}000", None, 0),
            Ok(1_250_000)
        );
        assert_eq!(parse_amount("65.000,00", None, 0), Ok(65000));
        assert_eq!(parse_amount("65,000.00", None, 0), Ok(65000));
        assert_eq!(parse_amount("65.000,00", None, 2), Ok(6_500_000));
        assert_eq!(parse_amount("-20000", None, 0), Ok(-20000));
        assert_eq!(parse_amount("(20000)", None, 0), Ok(-20000));
        assert_eq!(parse_amount("\u{2212}20000", None, 0), Ok(-20000));
        assert_eq!(parse_amount("+20000", None, 0), Ok(20000));
        assert_eq!(parse_amount("65000.5", None, 2), Ok(6_500_050));
        assert_eq!(parse_amount("  65000 ", None, 0), Ok(65000));
        assert_eq!(parse_amount("0", None, 2), Ok(0));
        assert_eq!(parse_amount("-0", None, 2), Ok(0));
    }

    #[test]
    fn auto_separator_rules() {
        // Rule 3: several of one kind group thousands.
        assert_eq!(parse_amount("1.000.000", None, 2), Ok(100_000_000));
        assert_eq!(parse_amount("1,000,000", None, 0), Ok(1_000_000));
        // Rule 4: spaces group, so the single comma is decimal.
        assert_eq!(parse_amount("65 000,50", None, 2), Ok(6_500_050));
        assert_eq!(parse_amount("1 000.000", None, 2), Ok(100_000));
        // Rule 5: not three digits after.
        assert_eq!(parse_amount("12,5", None, 2), Ok(1250));
        assert_eq!(parse_amount("65000.00", None, 0), Ok(65000));
        assert_eq!(
            parse_amount("1.2345", None, 3),
            Err(AmountError::TooManyDecimals { exponent: 3 })
        );
        // Rule 6: more than three digits, or a leading zero, before.
        assert_eq!(parse_amount("65000.500", None, 2), Ok(6_500_050));
        assert_eq!(parse_amount("0.500", None, 2), Ok(50));
        assert_eq!(parse_amount("0,250", None, 3), Ok(250));
        // Rule 7.
        assert_eq!(parse_amount("1.000", None, 0), Ok(1000));
        assert_eq!(parse_amount("650,500", None, 0), Ok(650_500));
        assert_eq!(parse_amount("1.000", None, 2), Err(AmountError::Ambiguous));
        assert_eq!(parse_amount("1,000", None, 3), Err(AmountError::Ambiguous));
        assert_eq!(parse_amount("-1.000", None, 2), Err(AmountError::Ambiguous));
    }

    #[test]
    fn explicit_separator_removes_ambiguity() {
        assert_eq!(parse_amount("1.000", Some('.'), 2), Ok(100));
        assert_eq!(parse_amount("1.000", Some(','), 2), Ok(100_000));
        assert_eq!(parse_amount("1,000", Some('.'), 3), Ok(1_000_000));
        assert_eq!(parse_amount("1,000", Some(','), 3), Ok(1000));
        assert_eq!(parse_amount("65 000,5", Some(','), 2), Ok(6_500_050));
        assert_eq!(parse_amount("65000.000", Some('.'), 0), Ok(65000));
        // The named separator may not group, nor come twice.
        assert_eq!(
            parse_amount("1.000.000", Some('.'), 2),
            Err(AmountError::BadSeparator)
        );
        // The other one may not come after it.
        assert_eq!(
            parse_amount("1.000,00", Some('.'), 2),
            Err(AmountError::BadSeparator)
        );
        assert_eq!(
            parse_amount("1", Some(';'), 2),
            Err(AmountError::UnsupportedSeparator)
        );
    }

    #[test]
    fn refuses_bad_text() {
        use AmountError::*;
        let cases: &[(&str, AmountError)] = &[
            ("", Empty),
            ("   ", Empty),
            ("-", Empty),
            ("()", Empty),
            ("65000 XOF", BadCharacter),
            ("XOF 65000", BadCharacter),
            ("$12.50", BadCharacter),
            ("1e5", BadCharacter),
            ("١٢٣", BadCharacter),
            ("12O0", BadCharacter),
            ("20000-", BadSign),
            ("--5", BadSign),
            ("-(5)", BadSign),
            ("(5", BadSign),
            ("+-5", BadSign),
            ("5.", BadSeparator),
            (".5", BadSeparator),
            ("1..0", BadSeparator),
            ("1 ,0", BadSeparator),
            ("65  000", BadSeparator),
            ("1.000,000.00", BadSeparator),
            ("1,000.000,00", BadSeparator),
            ("65 00", BadGrouping),
            ("6 5000", BadGrouping),
            ("1000 000", BadGrouping),
            ("01 000", BadGrouping),
            ("1.00.000", BadGrouping),
            ("1 000.000,00", BadGrouping),
            ("1.000 000", BadGrouping),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_amount(text, None, 2), Err(*expected), "{text:?}");
        }
    }

    #[test]
    fn refuses_over_precision_but_not_trailing_zeros() {
        assert_eq!(
            parse_amount("12.5", None, 0),
            Err(AmountError::TooManyDecimals { exponent: 0 })
        );
        assert_eq!(
            parse_amount("0.001", Some('.'), 2),
            Err(AmountError::TooManyDecimals { exponent: 2 })
        );
        assert_eq!(parse_amount("12.5000", None, 2), Ok(1250));
        assert_eq!(parse_amount("12.0", None, 0), Ok(12));
    }

    #[test]
    fn refuses_overflow_and_accepts_the_extremes() {
        assert_eq!(parse_amount("9223372036854775807", None, 0), Ok(i64::MAX));
        assert_eq!(parse_amount("-9223372036854775808", None, 0), Ok(i64::MIN));
        assert_eq!(
            parse_amount("9223372036854775808", None, 0),
            Err(AmountError::Overflow)
        );
        assert_eq!(
            parse_amount("92233720368547758.08", None, 2),
            Err(AmountError::Overflow)
        );
        assert_eq!(
            parse_amount(&"9".repeat(65), None, 0),
            Err(AmountError::Overflow)
        );
        assert_eq!(parse_amount("1", None, 19), Err(AmountError::Overflow));
    }

    /// How a test writes an amount.
    #[derive(Debug, Clone)]
    struct Style {
        group: Option<char>,
        decimal: char,
        parentheses: bool,
        extra_zeros: usize,
    }

    fn style() -> impl Strategy<Value = Style> {
        (
            prop_oneof![
                Just(None),
                Just(Some(' ')),
                Just(Some('\u{a0}')),
                Just(Some('\u{202f}')),
                Just(Some('\u{2009}')),
                Just(Some('.')),
                Just(Some(',')),
            ],
            prop_oneof![Just('.'), Just(',')],
            any::<bool>(),
            0usize..3,
        )
            .prop_filter("group and decimal separators differ", |(g, d, _, _)| {
                *g != Some(*d)
            })
            .prop_map(|(group, decimal, parentheses, extra_zeros)| Style {
                group,
                decimal,
                parentheses,
                extra_zeros,
            })
    }

    fn format(minor: i64, exponent: u32, style: &Style) -> String {
        let magnitude = minor.unsigned_abs();
        let factor = 10u64.pow(exponent);
        let int = (magnitude / factor).to_string();
        let mut text = String::new();
        for (i, c) in int.chars().enumerate() {
            if i > 0 && i % 3 == int.len() % 3 {
                if let Some(g) = style.group {
                    text.push(g);
                }
            }
            text.push(c);
        }
        if exponent > 0 || style.extra_zeros > 0 {
            text.push(style.decimal);
            if exponent > 0 {
                let frac = magnitude % factor;
                text.push_str(&format!("{frac:0width$}", width = exponent as usize));
            }
            text.push_str(&"0".repeat(style.extra_zeros));
        }
        match (minor < 0, style.parentheses) {
            (false, _) => text,
            (true, true) => format!("({text})"),
            (true, false) => format!("-{text}"),
        }
    }

    /// Rule 7's shape: one `.` or `,`, exactly three digits after it, one to three digits before
    /// it not starting with `0`, no other separator.
    fn rule_seven_shape(text: &str) -> bool {
        let body = text.trim_start_matches(['-', '(']).trim_end_matches(')');
        let puncts: Vec<usize> = body.match_indices(['.', ',']).map(|(i, _)| i).collect();
        let spaced = body.contains([' ', '\u{a0}', '\u{202f}', '\u{2009}']);
        match puncts.as_slice() {
            [i] => {
                let (before, after) = (&body[..*i], &body[i + 1..]);
                !spaced && after.len() == 3 && before.len() <= 3 && !before.starts_with('0')
            }
            _ => false,
        }
    }

    proptest! {
        #[test]
        fn formatted_amounts_parse_back(
            minor in any::<i64>(),
            exponent in prop_oneof![Just(0u32), Just(2u32), Just(3u32)],
            style in style(),
        ) {
            let text = format(minor, exponent, &style);
            // Naming the decimal separator always gives the value back.
            prop_assert_eq!(parse_amount(&text, Some(style.decimal), exponent), Ok(minor), "{}", text);
            // Auto gives it back too, except in rule 7's documented shape.
            let auto = parse_amount(&text, None, exponent);
            if rule_seven_shape(&text) {
                if exponent == 0 {
                    // A group of thousands by the rule, whatever the writer meant.
                    let magnitude = minor.unsigned_abs() as i128;
                    let as_groups = magnitude * 1000 * if minor < 0 { -1 } else { 1 };
                    prop_assert_eq!(auto.map(i128::from), Ok(as_groups), "{}", text);
                } else {
                    prop_assert_eq!(auto, Err(AmountError::Ambiguous), "{}", text);
                }
            } else {
                prop_assert_eq!(auto, Ok(minor), "{}", text);
            }
        }

        #[test]
        fn never_panics(text in "\\PC{0,30}", exponent in 0u32..20, sep in prop_oneof![Just(None), Just(Some('.')), Just(Some(',')), Just(Some('x'))]) {
            let _ = parse_amount(&text, sep, exponent);
        }
    }
}
