//! Amounts as reports write them, and the one rounding rule of conversion.
//!
//! Figures are summed as integers of the programme currency's minor unit (`i128`, never a
//! float) and written as decimal strings with exactly the currency's decimals (`20000` XOF,
//! `30.50` EUR). A figure in the reporting currency is
//!
//! > `Decimal(figure) × rate`, rounded **half to even** ("banker's rounding") to the
//! > reporting currency's minor unit ([`cva_ledger::money::Currency::exponent`]).
//!
//! That is the only rounding anywhere in the reports ([`ROUNDING_RULE`]). Each figure is
//! converted on its own, so converted figures may differ by a minor unit from the sum or
//! difference of other converted figures; the programme-currency figures are exact.

use chrono::NaiveDate;
use cva_ledger::money::Currency;
use cva_registry::programmes::Rate;
use rust_decimal::{Decimal, RoundingStrategy};

use crate::error::{ReportError, Result};

/// The rounding rule, as reports state it.
pub const ROUNDING_RULE: &str = "each figure converted on its own: amount × rate, rounded half \
                                 to even to the reporting currency's minor unit";

/// `minor` units of `currency` as a decimal string with the currency's decimals.
pub fn format(minor: i128, currency: Currency) -> Result<String> {
    let d = Decimal::try_from_i128_with_scale(minor, currency.exponent())
        .map_err(|_| ReportError::Corrupt(format!("amount {minor} is out of range")))?;
    Ok(d.to_string())
}

/// `minor` units of `from` in `to` at `rate` (units of `to` per unit of `from`), rounded half
/// to even to `to`'s minor unit, as a decimal string with `to`'s decimals.
pub fn convert(minor: i128, from: Currency, rate: Decimal, to: Currency) -> Result<String> {
    let out_of_range = || ReportError::Corrupt(format!("amount {minor} × {rate} is out of range"));
    let amount =
        Decimal::try_from_i128_with_scale(minor, from.exponent()).map_err(|_| out_of_range())?;
    let mut converted = amount
        .checked_mul(rate)
        .ok_or_else(out_of_range)?
        .round_dp_with_strategy(to.exponent(), RoundingStrategy::MidpointNearestEven);
    converted.rescale(to.exponent());
    if converted.is_zero() {
        converted.set_sign_positive(true);
    }
    Ok(converted.to_string())
}

/// The rate that applies on `as_of`: the latest with `rate_date <= as_of`, and of several
/// recorded for that date the last recorded. `rates` in the registry's order (date, then
/// recording).
pub fn rate_on(rates: &[Rate], as_of: NaiveDate) -> Option<&Rate> {
    rates.iter().rev().find(|r| r.rate_date <= as_of)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn cur(c: &str) -> Currency {
        Currency::parse(c).unwrap()
    }

    #[test]
    fn amounts_have_the_currency_decimals() {
        assert_eq!(format(20_000, cur("XOF")).unwrap(), "20000");
        assert_eq!(format(1_250, cur("USD")).unwrap(), "12.50");
        assert_eq!(format(-5, cur("USD")).unwrap(), "-0.05");
        assert_eq!(format(1, cur("TND")).unwrap(), "0.001");
        assert_eq!(format(0, cur("EUR")).unwrap(), "0.00");
    }

    #[test]
    fn conversion_rounds_half_to_even() {
        let r: Decimal = "0.00152425".parse().unwrap();
        // 20,000 × 0.00152425 = 30.485 → 30.48 (half to even), not 30.49.
        assert_eq!(convert(20_000, cur("XOF"), r, cur("EUR")).unwrap(), "30.48");
        // 60,000 × … = 91.455 → 91.46 (the even neighbour is up).
        assert_eq!(convert(60_000, cur("XOF"), r, cur("EUR")).unwrap(), "91.46");
        assert_eq!(
            convert(-20_000, cur("XOF"), r, cur("EUR")).unwrap(),
            "-30.48"
        );
        assert_eq!(convert(0, cur("XOF"), r, cur("EUR")).unwrap(), "0.00");
        // Below half a cent, negative: zero without a sign.
        assert_eq!(convert(-1, cur("XOF"), r, cur("EUR")).unwrap(), "0.00");
        // Into a currency without decimals: 12.50 USD × 600.5 = 7506.25 → 7506.
        let r: Decimal = "600.5".parse().unwrap();
        assert_eq!(convert(1_250, cur("USD"), r, cur("XOF")).unwrap(), "7506");
        // 0.50 × 5 = 2.5 → 2; 0.70 × 5 = 3.5 → 4.
        let five = Decimal::from(5);
        assert_eq!(convert(50, cur("USD"), five, cur("XOF")).unwrap(), "2");
        assert_eq!(convert(70, cur("USD"), five, cur("XOF")).unwrap(), "4");
        // A whole rate still writes the decimals.
        assert_eq!(
            convert(3, cur("XOF"), Decimal::ONE, cur("EUR")).unwrap(),
            "3.00"
        );
    }

    #[test]
    fn the_rate_of_a_date_is_the_latest_recorded_on_or_before_it() {
        let d = |m, day| NaiveDate::from_ymd_opt(2024, m, day).unwrap();
        let rate = |date, r: &str| Rate {
            rate_date: date,
            rate: r.parse().unwrap(),
            source: "s".into(),
            recorded_by: "x".into(),
        };
        let rates = vec![
            rate(d(1, 1), "1"),
            rate(d(3, 1), "2"),
            rate(d(3, 1), "3"),
            rate(d(6, 1), "4"),
        ];
        assert!(rate_on(&rates, d(1, 1).pred_opt().unwrap()).is_none());
        assert_eq!(rate_on(&rates, d(1, 1)).unwrap().rate, Decimal::from(1));
        assert_eq!(rate_on(&rates, d(5, 31)).unwrap().rate, Decimal::from(3));
        assert_eq!(rate_on(&rates, d(12, 31)).unwrap().rate, Decimal::from(4));
    }
}
