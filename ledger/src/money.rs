//! Money: ISO 4217 currencies and exact amounts in minor units.
//!
//! Amounts are stored as `i64` minor units (XOF has exponent 0, USD 2) and shown or computed
//! through [`rust_decimal::Decimal`]. They are parsed from strings only; there is no `From<f64>`.
//!
//! ```
//! use cva_ledger::money::{Amount, Currency};
//! let usd = Currency::parse("USD").unwrap();
//! let a = Amount::parse_positive("12.50", usd).unwrap();
//! assert_eq!(a.minor(), 1250);
//! assert_eq!(a.to_string(), "12.50 USD");
//! assert!(Amount::parse_positive("12.5", Currency::parse("XOF").unwrap()).is_err());
//! ```

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Why a currency or an amount was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("unknown currency `{0}` (expected an ISO 4217 code such as XOF, USD or EUR)")]
    UnknownCurrency(String),
    #[error("`{0}` is not a decimal amount (expected digits with an optional `.` and decimals, e.g. \"65000\" or \"12.50\")")]
    NotANumber(String),
    #[error("`{text}` has more decimals than {currency} allows ({exponent})")]
    TooManyDecimals {
        text: String,
        currency: &'static str,
        exponent: u32,
    },
    #[error("`{0}` is negative; amounts here must be positive")]
    Negative(String),
    #[error("`{0}` is zero; amounts here must be positive")]
    Zero(String),
    #[error("`{0}` is too large to store")]
    Overflow(String),
}

/// ISO 4217 codes and their minor-unit exponents. Data, not code: add a row to support a currency.
const CURRENCIES: &[(&str, u32)] = &[
    ("AFN", 2),
    ("AUD", 2),
    ("BDT", 2),
    ("BHD", 3),
    ("BIF", 0),
    ("CAD", 2),
    ("CDF", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("COP", 2),
    ("DJF", 0),
    ("DKK", 2),
    ("DZD", 2),
    ("EGP", 2),
    ("ETB", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("GHS", 2),
    ("GNF", 0),
    ("HTG", 2),
    ("IQD", 3),
    ("ISK", 0),
    ("JOD", 3),
    ("JPY", 0),
    ("KES", 2),
    ("KMF", 0),
    ("KRW", 0),
    ("KWD", 3),
    ("LBP", 2),
    ("LYD", 3),
    ("MAD", 2),
    ("MMK", 2),
    ("MRU", 2),
    ("MWK", 2),
    ("MZN", 2),
    ("NGN", 2),
    ("NOK", 2),
    ("OMR", 3),
    ("PKR", 2),
    ("PYG", 0),
    ("RWF", 0),
    ("SDG", 2),
    ("SEK", 2),
    ("SLE", 2),
    ("SOS", 2),
    ("SSP", 2),
    ("SYP", 2),
    ("TND", 3),
    ("TZS", 2),
    ("UAH", 2),
    ("UGX", 0),
    ("USD", 2),
    ("VES", 2),
    ("VND", 0),
    ("VUV", 0),
    ("XAF", 0),
    ("XOF", 0),
    ("XPF", 0),
    ("YER", 2),
    ("ZMW", 2),
];

/// An ISO 4217 currency known to the ledger.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    code: &'static str,
    exponent: u32,
}

impl Currency {
    /// Looks a code up in the currency table (case-sensitive: ISO codes are upper case).
    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        CURRENCIES
            .binary_search_by(|(c, _)| (*c).cmp(code))
            .map(|i| Currency {
                code: CURRENCIES[i].0,
                exponent: CURRENCIES[i].1,
            })
            .map_err(|_| MoneyError::UnknownCurrency(code.chars().take(16).collect()))
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    /// Number of decimal places of the minor unit (XOF 0, USD 2, TND 3).
    pub fn exponent(&self) -> u32 {
        self.exponent
    }

    /// All currencies in the table, for documentation and tests.
    pub fn all() -> impl Iterator<Item = Currency> {
        CURRENCIES
            .iter()
            .map(|&(code, exponent)| Currency { code, exponent })
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

impl FromStr for Currency {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::parse(s)
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code)
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Currency::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// An exact amount of one currency, held in minor units. May be negative (a balance can be);
/// journal lines only ever carry positive amounts, see [`Amount::parse_positive`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Amount {
    minor: i64,
    currency: Currency,
}

impl Amount {
    pub fn from_minor(minor: i64, currency: Currency) -> Self {
        Amount { minor, currency }
    }

    pub fn zero(currency: Currency) -> Self {
        Amount { minor: 0, currency }
    }

    pub fn minor(&self) -> i64 {
        self.minor
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// The value as a decimal with the currency's scale (`1250` USD cents → `12.50`).
    pub fn to_decimal(&self) -> Decimal {
        Decimal::new(self.minor, self.currency.exponent)
    }

    /// Converts an exact decimal to minor units, refusing anything that would need rounding.
    pub fn from_decimal(value: Decimal, currency: Currency) -> Result<Self, MoneyError> {
        let text = value.to_string();
        let normalized = value.normalize();
        if normalized.scale() > currency.exponent {
            return Err(MoneyError::TooManyDecimals {
                text,
                currency: currency.code,
                exponent: currency.exponent,
            });
        }
        let factor = Decimal::from(10_i64.pow(currency.exponent));
        let minor = normalized
            .checked_mul(factor)
            .ok_or_else(|| MoneyError::Overflow(text.clone()))?;
        let minor = i64::try_from(minor).map_err(|_| MoneyError::Overflow(text))?;
        Ok(Amount { minor, currency })
    }

    /// Parses a signed decimal string (`"-12.50"`). Strict syntax: optional `-`, digits,
    /// optionally `.` and digits. No exponent, no thousands separators, no `+`, no spaces.
    /// Trailing zeros beyond the currency's exponent are accepted (`"65000.00"` XOF is exactly
    /// 65000); any other extra decimal is an error, never a rounding.
    pub fn parse(text: &str, currency: Currency) -> Result<Self, MoneyError> {
        let shown: String = text.chars().take(40).collect();
        let body = text.strip_prefix('-').unwrap_or(text);
        let (int, frac) = match body.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (body, None),
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(int) || frac.is_some_and(|f| !digits(f)) {
            return Err(MoneyError::NotANumber(shown));
        }
        if let Some(f) = frac {
            let significant = f.trim_end_matches('0').len() as u32;
            if significant > currency.exponent {
                return Err(MoneyError::TooManyDecimals {
                    text: shown,
                    currency: currency.code,
                    exponent: currency.exponent,
                });
            }
        }
        if int.len() + frac.map_or(0, str::len) > 27 {
            return Err(MoneyError::Overflow(shown));
        }
        let value = Decimal::from_str_exact(text).map_err(|_| MoneyError::Overflow(shown))?;
        Amount::from_decimal(value, currency)
    }

    /// Parses an amount that must be strictly positive (journal lines, transfers).
    pub fn parse_positive(text: &str, currency: Currency) -> Result<Self, MoneyError> {
        let a = Amount::parse(text, currency)?;
        let shown: String = text.chars().take(40).collect();
        match a.minor.signum() {
            1 => Ok(a),
            0 => Err(MoneyError::Zero(shown)),
            _ => Err(MoneyError::Negative(shown)),
        }
    }

    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        if self.currency != other.currency {
            return None;
        }
        Some(Amount {
            minor: self.minor.checked_add(other.minor)?,
            currency: self.currency,
        })
    }

    /// The number alone, with the currency's scale (`"12.50"`).
    pub fn number(&self) -> String {
        self.to_decimal().to_string()
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.to_decimal(), self.currency)
    }
}

impl fmt::Debug for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(code: &str) -> Currency {
        Currency::parse(code).expect("known currency")
    }

    #[test]
    fn table_is_sorted_and_unique_so_binary_search_is_valid() {
        for w in CURRENCIES.windows(2) {
            assert!(w[0].0 < w[1].0, "{} must sort before {}", w[0].0, w[1].0);
        }
    }

    #[test]
    fn exponents_follow_iso_4217() {
        assert_eq!(c("XOF").exponent(), 0);
        assert_eq!(c("USD").exponent(), 2);
        assert_eq!(c("EUR").exponent(), 2);
        assert_eq!(c("TND").exponent(), 3);
        assert!(matches!(
            Currency::parse("XYZ"),
            Err(MoneyError::UnknownCurrency(_))
        ));
        assert!(Currency::parse("usd").is_err());
    }

    #[test]
    fn parses_exact_amounts() {
        assert_eq!(Amount::parse("65000", c("XOF")).unwrap().minor(), 65000);
        assert_eq!(Amount::parse("12.50", c("USD")).unwrap().minor(), 1250);
        assert_eq!(Amount::parse("12.5", c("USD")).unwrap().minor(), 1250);
        assert_eq!(Amount::parse("0.01", c("EUR")).unwrap().minor(), 1);
        assert_eq!(Amount::parse("65000.00", c("XOF")).unwrap().minor(), 65000);
        assert_eq!(Amount::parse("-3.25", c("USD")).unwrap().minor(), -325);
        assert_eq!(Amount::parse("1.234", c("TND")).unwrap().minor(), 1234);
    }

    #[test]
    fn refuses_rounding_and_bad_syntax() {
        assert!(matches!(
            Amount::parse("12.5", c("XOF")),
            Err(MoneyError::TooManyDecimals { .. })
        ));
        assert!(matches!(
            Amount::parse("0.001", c("USD")),
            Err(MoneyError::TooManyDecimals { .. })
        ));
        for bad in [
            "", "-", ".5", "5.", "1e5", "+5", " 5", "5 ", "1,000", "12.5.0", "NaN", "٣",
        ] {
            assert!(
                matches!(Amount::parse(bad, c("USD")), Err(MoneyError::NotANumber(_))),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn refuses_overflow() {
        assert!(matches!(
            Amount::parse("9223372036854775808", c("XOF")),
            Err(MoneyError::Overflow(_))
        ));
        assert!(matches!(
            Amount::parse("92233720368547758.08", c("USD")),
            Err(MoneyError::Overflow(_))
        ));
        assert!(matches!(
            Amount::parse(&"9".repeat(60), c("USD")),
            Err(MoneyError::Overflow(_))
        ));
        assert_eq!(
            Amount::parse("9223372036854775807", c("XOF"))
                .unwrap()
                .minor(),
            i64::MAX
        );
    }

    #[test]
    fn positive_only_where_asked() {
        assert!(matches!(
            Amount::parse_positive("-1", c("XOF")),
            Err(MoneyError::Negative(_))
        ));
        assert!(matches!(
            Amount::parse_positive("0", c("XOF")),
            Err(MoneyError::Zero(_))
        ));
        assert!(matches!(
            Amount::parse_positive("0.00", c("USD")),
            Err(MoneyError::Zero(_))
        ));
    }

    #[test]
    fn displays_with_currency_scale() {
        assert_eq!(Amount::from_minor(1250, c("USD")).to_string(), "12.50 USD");
        assert_eq!(Amount::from_minor(-5, c("USD")).number(), "-0.05");
        assert_eq!(Amount::from_minor(65000, c("XOF")).to_string(), "65000 XOF");
    }

    proptest::proptest! {
        #[test]
        fn display_then_parse_round_trips(minor in proptest::num::i64::ANY, idx in 0usize..CURRENCIES.len()) {
            let cur = Currency::all().nth(idx).unwrap();
            let a = Amount::from_minor(minor, cur);
            proptest::prop_assert_eq!(Amount::parse(&a.number(), cur).unwrap(), a);
        }
    }
}
