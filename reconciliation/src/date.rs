//! Dates and times as providers write them, turned into UTC instants: [`parse_date`].
//!
//! This module owns the date syntax of statement files, the [`DateOrder`] hint for numeric
//! dates and the [`UtcOffset`] assumed for times written without one.
//!
//! ```
//! use chrono::{TimeZone, Utc};
//! use cva_reconciliation::date::{parse_date, DateOrder, UtcOffset};
//! let utc = UtcOffset::UTC;
//! let at = |text| parse_date(text, DateOrder::Dmy, utc).unwrap();
//! assert_eq!(at("2024-03-01"), Utc.with_ymd_and_hms(2024, 3, 1, 0, 0, 0).unwrap());
//! assert_eq!(at("01/03/2024 10:22"), Utc.with_ymd_and_hms(2024, 3, 1, 10, 22, 0).unwrap());
//! assert_eq!(at("2024-03-01T10:22:33+01:00"), Utc.with_ymd_and_hms(2024, 3, 1, 9, 22, 33).unwrap());
//! let us = parse_date("03/01/2024", DateOrder::Mdy, utc).unwrap();
//! assert_eq!(us, Utc.with_ymd_and_hms(2024, 3, 1, 0, 0, 0).unwrap());
//! ```
//!
//! # Accepted forms
//!
//! A date, optionally followed by `T` or one space and a time, optionally followed by an offset.
//! Surrounding white space is ignored.
//!
//! | part | forms |
//! |---|---|
//! | date, year first | `2024-03-01`, `2024/03/01`, `2024.03.01` (always year, month, day) |
//! | date, year last | `01/03/2024`, `01-03-2024`, `01.03.2024`, and `1/3/2024`: day then month with [`DateOrder::Dmy`] (the default), month then day with [`DateOrder::Mdy`] |
//! | time | `10:22`, `10:22:33`, `10:22:33.123` (1 to 9 decimals); hours `0`–`23`, one or two digits |
//! | offset | `Z`, `+01:00`, `-0530`, `+03` — directly after the time, or after one space |
//!
//! The separators inside one date must be the same (`01/03-2024` is refused). Years have four
//! digits: `01/03/24` is refused (which century?). Months and days have one or two digits. A
//! leap second (`:60`) is refused, as are 12-hour clocks (`AM`/`PM`) and month names.
//!
//! # Time zones
//!
//! A time with an offset is converted to UTC with it. A time without one is taken to be at the
//! [`UtcOffset`] the column mapping gives (`utc_offset`, default `+00:00`: UTC). **A date without
//! a time is midnight at that offset** — with the default, midnight UTC.
//!
//! Error messages never repeat the text.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// How to read a numeric date whose year comes last (`01/03/2024`). Dates with the year first
/// are always year, month, day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DateOrder {
    /// Day, month, year: `01/03/2024` is 1 March 2024 (West Africa, Europe). The default.
    #[default]
    Dmy,
    /// Month, day, year: `03/01/2024` is 1 March 2024 (United States).
    Mdy,
}

/// The offset from UTC of times written without one, e.g. `+03:00` for a provider that reports
/// East Africa Time. Written and read as `±HH:MM`; the default is UTC (`+00:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UtcOffset(FixedOffset);

impl UtcOffset {
    /// `+00:00`.
    pub const UTC: UtcOffset = match FixedOffset::east_opt(0) {
        Some(offset) => UtcOffset(offset),
        None => panic!("zero is a valid offset"),
    };

    /// From seconds east of UTC; `None` beyond ±24 hours.
    pub fn from_seconds(seconds: i32) -> Option<UtcOffset> {
        FixedOffset::east_opt(seconds).map(UtcOffset)
    }

    pub fn fixed(&self) -> FixedOffset {
        self.0
    }
}

impl Default for UtcOffset {
    fn default() -> Self {
        UtcOffset::UTC
    }
}

impl fmt::Display for UtcOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.0.local_minus_utc();
        let sign = if seconds < 0 { '-' } else { '+' };
        let minutes = seconds.unsigned_abs() / 60;
        write!(f, "{sign}{:02}:{:02}", minutes / 60, minutes % 60)
    }
}

impl FromStr for UtcOffset {
    type Err = DateError;
    /// `Z`, `±HH:MM`, `±HHMM` or `±HH`, at most 18 hours.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut cursor = Cursor::new(s.trim());
        let offset = cursor.offset()?.ok_or(DateError::BadOffset)?;
        if !cursor.at_end() {
            return Err(DateError::BadOffset);
        }
        Ok(UtcOffset(offset))
    }
}

impl Serialize for UtcOffset {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for UtcOffset {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(|_| {
            serde::de::Error::custom(
                "utc_offset must be `Z` or `+HH:MM`/`-HH:MM`, at most 18 hours",
            )
        })
    }
}

/// Why a date was refused. The messages describe the rule, never the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum DateError {
    #[error("required, but empty")]
    Empty,
    #[error("not a date: expected 2024-03-01 or 01/03/2024, optionally followed by a time such as 10:22 or 10:22:33 and an offset such as Z or +01:00")]
    Unrecognised,
    #[error("the year must have four digits")]
    ShortYear,
    #[error(
        "no such day (check the day, the month and the day/month order of the column mapping)"
    )]
    NoSuchDay,
    #[error("no such time of day (hours 0-23, minutes and seconds 0-59)")]
    NoSuchTime,
    #[error("bad offset: expected Z, +HH:MM or -HH:MM, at most 18 hours")]
    BadOffset,
}

/// Parses a statement date or date-time into UTC. See the [module documentation](self) for the
/// forms; `order` reads numeric dates with the year last, `offset` places times written without
/// an offset (and dates alone, at midnight).
pub fn parse_date(
    text: &str,
    order: DateOrder,
    offset: UtcOffset,
) -> Result<DateTime<Utc>, DateError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DateError::Empty);
    }
    let mut c = Cursor::new(text);
    let date = c.date(order)?;
    let time = if c.at_end() {
        NaiveTime::MIN
    } else if c.eat(b'T') || c.eat(b't') || c.eat(b' ') {
        c.time()?
    } else {
        return Err(DateError::Unrecognised);
    };
    let written_offset = if c.at_end() {
        None
    } else {
        c.eat(b' ');
        match c.offset()? {
            Some(o) => Some(o),
            None => return Err(DateError::Unrecognised),
        }
    };
    if !c.at_end() {
        return Err(DateError::Unrecognised);
    }
    let naive = NaiveDateTime::new(date, time);
    let offset = written_offset.unwrap_or(offset.0);
    // A fixed offset maps every local time to exactly one instant.
    offset
        .from_local_datetime(&naive)
        .single()
        .map(|t| t.with_timezone(&Utc))
        .ok_or(DateError::NoSuchTime)
}

/// A byte cursor over ASCII date text.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        Cursor {
            bytes: text.as_bytes(),
            at: 0,
        }
    }

    fn at_end(&self) -> bool {
        self.at == self.bytes.len()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    /// A run of 1 to `max` ASCII digits, with its length.
    fn digits(&mut self, max: usize) -> Option<(u32, usize)> {
        let start = self.at;
        let mut value = 0u32;
        while self.at - start < max {
            match self.peek() {
                Some(b @ b'0'..=b'9') => {
                    value = value * 10 + u32::from(b - b'0');
                    self.at += 1;
                }
                _ => break,
            }
        }
        let len = self.at - start;
        (len > 0).then_some((value, len))
    }

    /// `2024-03-01`-like (year first) or `01/03/2024`-like (year last).
    fn date(&mut self, order: DateOrder) -> Result<NaiveDate, DateError> {
        let (first, first_len) = self.digits(4).ok_or(DateError::Unrecognised)?;
        let sep = match self.peek() {
            Some(s @ (b'-' | b'/' | b'.')) => s,
            _ => return Err(DateError::Unrecognised),
        };
        self.at += 1;
        let (second, _) = self.digits(2).ok_or(DateError::Unrecognised)?;
        if !self.eat(sep) {
            return Err(DateError::Unrecognised);
        }
        let (y, m, d) = if first_len == 4 {
            let (third, _) = self.digits(2).ok_or(DateError::Unrecognised)?;
            (first, second, third)
        } else if first_len <= 2 {
            let (year, year_len) = self.digits(4).ok_or(DateError::Unrecognised)?;
            if year_len != 4 {
                return Err(DateError::ShortYear);
            }
            match order {
                DateOrder::Dmy => (year, second, first),
                DateOrder::Mdy => (year, first, second),
            }
        } else {
            return Err(DateError::ShortYear);
        };
        if matches!(self.peek(), Some(b'0'..=b'9')) {
            return Err(DateError::Unrecognised);
        }
        let year = i32::try_from(y).map_err(|_| DateError::NoSuchDay)?;
        NaiveDate::from_ymd_opt(year, m, d).ok_or(DateError::NoSuchDay)
    }

    /// `10:22`, `10:22:33`, `10:22:33.123456789`.
    fn time(&mut self) -> Result<NaiveTime, DateError> {
        let (h, _) = self.digits(2).ok_or(DateError::Unrecognised)?;
        if !self.eat(b':') {
            return Err(DateError::Unrecognised);
        }
        let (m, m_len) = self.digits(2).ok_or(DateError::Unrecognised)?;
        let mut s = 0;
        let mut nanos = 0;
        let mut s_len = 2;
        if self.eat(b':') {
            (s, s_len) = self.digits(2).ok_or(DateError::Unrecognised)?;
            if self.eat(b'.') || self.eat(b',') {
                let (fraction, len) = self.digits(9).ok_or(DateError::Unrecognised)?;
                nanos = fraction * 10u32.pow(9 - len as u32);
            }
        }
        if m_len != 2 || s_len != 2 || matches!(self.peek(), Some(b'0'..=b'9')) {
            return Err(DateError::Unrecognised);
        }
        if h > 23 || m > 59 || s > 59 {
            return Err(DateError::NoSuchTime);
        }
        NaiveTime::from_hms_nano_opt(h, m, s, nanos).ok_or(DateError::NoSuchTime)
    }

    /// `Z`, `±HH:MM`, `±HHMM`, `±HH`; `None` when no offset starts here.
    fn offset(&mut self) -> Result<Option<FixedOffset>, DateError> {
        if self.eat(b'Z') || self.eat(b'z') {
            return Ok(FixedOffset::east_opt(0));
        }
        let sign = match self.peek() {
            Some(b'+') => 1,
            Some(b'-') => -1,
            _ => return Ok(None),
        };
        self.at += 1;
        let (h, h_len) = self.digits(2).ok_or(DateError::BadOffset)?;
        let colon = self.eat(b':');
        let m = match self.digits(2) {
            Some((m, 2)) => m,
            None if !colon => 0,
            _ => return Err(DateError::BadOffset),
        };
        if h_len != 2 || h > 18 || m > 59 || matches!(self.peek(), Some(b'0'..=b'9')) {
            return Err(DateError::BadOffset);
        }
        let seconds = sign * i32::try_from(h * 3600 + m * 60).map_err(|_| DateError::BadOffset)?;
        FixedOffset::east_opt(seconds)
            .map(Some)
            .ok_or(DateError::BadOffset)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    fn dmy(text: &str) -> Result<DateTime<Utc>, DateError> {
        parse_date(text, DateOrder::Dmy, UtcOffset::UTC)
    }

    #[test]
    fn accepts_every_documented_form() {
        let midnight = utc(2024, 3, 1, 0, 0, 0);
        let morning = utc(2024, 3, 1, 10, 22, 33);
        let minute = utc(2024, 3, 1, 10, 22, 0);
        let cases = [
            ("2024-03-01", midnight),
            ("2024/03/01", midnight),
            ("2024.03.01", midnight),
            ("2024-3-1", midnight),
            ("01/03/2024", midnight),
            ("1/3/2024", midnight),
            ("01-03-2024", midnight),
            ("01.03.2024", midnight),
            ("  2024-03-01 ", midnight),
            ("2024-03-01T10:22:33Z", morning),
            ("2024-03-01t10:22:33z", morning),
            ("2024-03-01 10:22:33", morning),
            ("2024-03-01T10:22:33", morning),
            ("2024-03-01T10:22:33+00:00", morning),
            ("2024-03-01T11:22:33+01:00", morning),
            ("2024-03-01T05:22:33-05:00", morning),
            ("2024-03-01T11:22:33+0100", morning),
            ("2024-03-01T11:22:33+01", morning),
            ("2024-03-01 11:22:33 +01:00", morning),
            ("2024-03-01 10:22:33 Z", morning),
            ("01/03/2024 10:22", minute),
            ("01/03/2024 10:22:33", morning),
            ("1/3/2024 9:22", utc(2024, 3, 1, 9, 22, 0)),
            ("2024-03-01T00:30:00+01:00", utc(2024, 2, 29, 23, 30, 0)),
        ];
        for (text, expected) in cases {
            assert_eq!(dmy(text), Ok(expected), "{text:?}");
        }
        assert_eq!(
            dmy("2024-03-01T10:22:33.250Z")
                .unwrap()
                .timestamp_subsec_millis(),
            250
        );
        assert_eq!(
            dmy("2024-03-01T10:22:33.123456789Z")
                .unwrap()
                .timestamp_subsec_nanos(),
            123_456_789
        );
    }

    #[test]
    fn agrees_with_chrono_on_rfc3339() {
        for text in [
            "2024-03-01T10:22:33Z",
            "2024-12-31T23:59:59.999+14:00",
            "2023-06-15T00:00:00-09:30",
        ] {
            let expected = DateTime::parse_from_rfc3339(text)
                .unwrap()
                .with_timezone(&Utc);
            assert_eq!(dmy(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn order_hint_reads_year_last_dates() {
        assert_eq!(dmy("02/03/2024"), Ok(utc(2024, 3, 2, 0, 0, 0)));
        assert_eq!(
            parse_date("02/03/2024", DateOrder::Mdy, UtcOffset::UTC),
            Ok(utc(2024, 2, 3, 0, 0, 0))
        );
        // Year first ignores the hint.
        assert_eq!(
            parse_date("2024-02-03", DateOrder::Mdy, UtcOffset::UTC),
            Ok(utc(2024, 2, 3, 0, 0, 0))
        );
        assert_eq!(dmy("03/13/2024"), Err(DateError::NoSuchDay));
    }

    #[test]
    fn offset_applies_to_naive_times_and_dates() {
        let eat: UtcOffset = "+03:00".parse().unwrap();
        assert_eq!(
            parse_date("01/03/2024 10:22", DateOrder::Dmy, eat),
            Ok(utc(2024, 3, 1, 7, 22, 0))
        );
        assert_eq!(
            parse_date("2024-03-01", DateOrder::Dmy, eat),
            Ok(utc(2024, 2, 29, 21, 0, 0))
        );
        // A written offset wins.
        assert_eq!(
            parse_date("2024-03-01T10:22:00Z", DateOrder::Dmy, eat),
            Ok(utc(2024, 3, 1, 10, 22, 0))
        );
    }

    #[test]
    fn offsets_display_and_parse() {
        for (text, shown) in [
            ("+03:00", "+03:00"),
            ("-0530", "-05:30"),
            ("Z", "+00:00"),
            ("+01", "+01:00"),
        ] {
            assert_eq!(text.parse::<UtcOffset>().unwrap().to_string(), shown);
        }
        for bad in ["", "3", "+3", "+19:00", "+03:60", "+03:00x", "UTC", "+03:0"] {
            assert!(bad.parse::<UtcOffset>().is_err(), "{bad:?}");
        }
        assert_eq!(UtcOffset::default().to_string(), "+00:00");
    }

    #[test]
    fn refuses_bad_dates() {
        use DateError::*;
        let cases = [
            ("", Empty),
            ("  ", Empty),
            ("yesterday", Unrecognised),
            ("1 March 2024", Unrecognised),
            ("01/03-2024", Unrecognised),
            ("20240301", Unrecognised),
            ("2024-03-01X10:22", Unrecognised),
            ("2024-03-01T10", Unrecognised),
            ("2024-03-01T10:2", Unrecognised),
            ("2024-03-01T10:22:3", Unrecognised),
            ("2024-03-01T10:22:33 PM", Unrecognised),
            ("2024-03-01T10:22:33.", Unrecognised),
            ("2024-03-011", Unrecognised),
            ("2024-003-01", Unrecognised),
            ("01/03/24", ShortYear),
            ("01/03/20245", Unrecognised),
            ("2024-02-30", NoSuchDay),
            ("31/04/2024", NoSuchDay),
            ("00/01/2024", NoSuchDay),
            ("2024-03-01T24:00", NoSuchTime),
            ("2024-03-01T10:60", NoSuchTime),
            ("2024-03-01T23:59:60Z", NoSuchTime),
            ("2024-03-01T10:22:33+25:00", BadOffset),
            ("2024-03-01T10:22:33+1", BadOffset),
            ("2024-03-01T10:22:33+01:0", BadOffset),
        ];
        for (text, expected) in cases {
            assert_eq!(dmy(text), Err(expected), "{text:?}");
        }
    }
}
