//! Reading a million-row result from PostgreSQL fast: `COPY (query) TO STDOUT (FORMAT
//! binary)`, decoded here field by field without building a row object per row.
//!
//! A reconciliation run reads every line of a statement and every payment of a provider;
//! through sqlx's row decoding that took longer on the client than the query on the server.
//! [`copy_rows`] streams the binary COPY format (see the PostgreSQL manual, "COPY — Binary
//! Format") and hands each tuple to a callback as a [`Tuple`], whose getters borrow from the
//! received bytes. COPY takes no bind parameters: callers put values in the query with
//! [`literal`] (text) or as integers.
//!
//! Supported column types (cast in the query): `BIGINT`, `TEXT`, `UUID`, `TIMESTAMPTZ`.

use chrono::{DateTime, Utc};
use futures::TryStreamExt;

use crate::run::RunError;

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
/// 2000-01-01T00:00:00Z, PostgreSQL's timestamp epoch, in Unix microseconds.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// `s` as an SQL string literal (PostgreSQL's `quote_literal`: quotes doubled; with a
/// backslash, the `E'…'` form and backslashes doubled), whatever the server's
/// `standard_conforming_strings`.
pub(crate) fn literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 3);
    if s.contains('\\') {
        out.push('E');
    }
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// One tuple's fields, read in column order.
#[derive(Debug)]
pub(crate) struct Tuple<'a> {
    fields: &'a [u8],
}

fn corrupt(what: &str) -> RunError {
    RunError::Corrupt(format!("binary COPY: {what}"))
}

impl<'a> Tuple<'a> {
    fn raw(&mut self) -> Result<Option<&'a [u8]>, RunError> {
        if self.fields.len() < 4 {
            return Err(corrupt("field length cut short"));
        }
        let (len, rest) = self.fields.split_at(4);
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        if len < 0 {
            self.fields = rest;
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| corrupt("field length"))?;
        if rest.len() < len {
            return Err(corrupt("field cut short"));
        }
        let (value, rest) = rest.split_at(len);
        self.fields = rest;
        Ok(Some(value))
    }

    /// A `BIGINT` (or NULL).
    pub(crate) fn i64(&mut self) -> Result<Option<i64>, RunError> {
        self.raw()?
            .map(|b| {
                <[u8; 8]>::try_from(b)
                    .map(i64::from_be_bytes)
                    .map_err(|_| corrupt("a BIGINT is 8 bytes"))
            })
            .transpose()
    }

    /// A `TEXT` (or NULL), borrowed from the received bytes.
    pub(crate) fn str(&mut self) -> Result<Option<&'a str>, RunError> {
        self.raw()?
            .map(|b| std::str::from_utf8(b).map_err(|_| corrupt("text is not UTF-8")))
            .transpose()
    }

    /// A `UUID` (or NULL).
    pub(crate) fn uuid(&mut self) -> Result<Option<uuid::Uuid>, RunError> {
        self.raw()?
            .map(|b| uuid::Uuid::from_slice(b).map_err(|_| corrupt("a UUID is 16 bytes")))
            .transpose()
    }

    /// A `TIMESTAMPTZ` (or NULL).
    pub(crate) fn time(&mut self) -> Result<Option<DateTime<Utc>>, RunError> {
        let Some(micros) = self.i64()? else {
            return Ok(None);
        };
        micros
            .checked_add(PG_EPOCH_MICROS)
            .and_then(DateTime::<Utc>::from_timestamp_micros)
            .map(Some)
            .ok_or_else(|| corrupt("timestamp out of range"))
    }
}

/// Where a decoder stands in the stream.
#[derive(Debug, PartialEq, Eq)]
enum State {
    Header,
    Tuples,
    Done,
}

/// Decodes the binary COPY stream as it arrives, in chunks cut anywhere.
#[derive(Debug)]
struct Decoder {
    buf: Vec<u8>,
    state: State,
    columns: usize,
}

impl Decoder {
    fn new(columns: usize) -> Decoder {
        Decoder {
            buf: Vec::new(),
            state: State::Header,
            columns,
        }
    }

    /// Adds `chunk` and calls `each` on every tuple now complete.
    fn feed(
        &mut self,
        chunk: &[u8],
        each: &mut impl FnMut(Tuple<'_>) -> Result<(), RunError>,
    ) -> Result<(), RunError> {
        if self.state == State::Tuples && self.buf.is_empty() {
            // The usual case (the server sends a tuple per message): decoded where it lies,
            // only an incomplete end kept.
            let used = tuples(&mut self.state, self.columns, chunk, each)?;
            self.buf.extend_from_slice(&chunk[used..]);
            return Ok(());
        }
        self.buf.extend_from_slice(chunk);
        if self.state == State::Header {
            // Signature, flags (4), header extension length (4) and the extension.
            if self.buf.len() < 19 {
                return Ok(());
            }
            if &self.buf[..11] != SIGNATURE {
                return Err(corrupt("not a binary COPY stream"));
            }
            let ext = u32::from_be_bytes([self.buf[15], self.buf[16], self.buf[17], self.buf[18]]);
            let skip = 19 + usize::try_from(ext).map_err(|_| corrupt("header"))?;
            if self.buf.len() < skip {
                return Ok(());
            }
            self.buf.drain(..skip);
            self.state = State::Tuples;
        }
        let at = tuples(&mut self.state, self.columns, &self.buf, each)?;
        self.buf.drain(..at);
        Ok(())
    }

    fn finish(&self) -> Result<(), RunError> {
        if self.state == State::Done && self.buf.is_empty() {
            Ok(())
        } else {
            Err(corrupt("stream ended inside the data"))
        }
    }
}

/// Calls `each` on every complete tuple at the start of `data`; the bytes used (an incomplete
/// tuple at the end is left). Moves `state` to `Done` at the trailer.
fn tuples(
    state: &mut State,
    columns: usize,
    data: &[u8],
    each: &mut impl FnMut(Tuple<'_>) -> Result<(), RunError>,
) -> Result<usize, RunError> {
    let mut at = 0usize;
    while *state == State::Tuples && data.len() - at >= 2 {
        let count = i16::from_be_bytes([data[at], data[at + 1]]);
        if count == -1 {
            at += 2;
            *state = State::Done;
            break;
        }
        if usize::try_from(count).ok() != Some(columns) {
            return Err(corrupt("unexpected field count"));
        }
        // Find the tuple's end; wait for more bytes if it is not all here.
        let mut end = at + 2;
        let mut complete = true;
        for _ in 0..columns {
            if data.len() < end + 4 {
                complete = false;
                break;
            }
            let len = i32::from_be_bytes([data[end], data[end + 1], data[end + 2], data[end + 3]]);
            end += 4 + usize::try_from(len.max(0)).unwrap_or(0);
            if data.len() < end {
                complete = false;
                break;
            }
        }
        if !complete {
            break;
        }
        each(Tuple {
            fields: &data[at + 2..end],
        })?;
        at = end;
    }
    Ok(at)
}

/// Runs `COPY (query) TO STDOUT (FORMAT binary)` on `conn` and calls `each` on every tuple
/// (`columns` fields each), in the order the server sends them.
pub(crate) async fn copy_rows(
    conn: &mut sqlx::PgConnection,
    query: &str,
    columns: usize,
    mut each: impl FnMut(Tuple<'_>) -> Result<(), RunError>,
) -> Result<(), RunError> {
    let sql = format!("COPY ({query}) TO STDOUT (FORMAT binary)");
    let mut stream = conn.copy_out_raw(&sql).await?;
    let mut decoder = Decoder::new(columns);
    while let Some(chunk) = stream.try_next().await? {
        decoder.feed(&chunk, &mut each)?;
    }
    decoder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(tuples: &[Vec<Option<Vec<u8>>>]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend([0, 0, 0, 0, 0, 0, 0, 0]);
        for t in tuples {
            out.extend(i16::try_from(t.len()).unwrap().to_be_bytes());
            for f in t {
                match f {
                    None => out.extend((-1i32).to_be_bytes()),
                    Some(b) => {
                        out.extend(i32::try_from(b.len()).unwrap().to_be_bytes());
                        out.extend(b);
                    }
                }
            }
        }
        out.extend((-1i16).to_be_bytes());
        out
    }

    type Decoded = Vec<(Option<i64>, Option<String>)>;

    fn decode_all(bytes: &[u8], cut: usize) -> Result<Decoded, RunError> {
        let mut d = Decoder::new(2);
        let mut out = Vec::new();
        for chunk in bytes.chunks(cut) {
            d.feed(chunk, &mut |mut t| {
                out.push((t.i64()?, t.str()?.map(str::to_owned)));
                Ok(())
            })?;
        }
        d.finish()?;
        Ok(out)
    }

    #[test]
    fn tuples_cut_anywhere_decode_the_same() {
        let bytes = stream(&[
            vec![Some(7i64.to_be_bytes().to_vec()), Some(b"MP\\1'x".to_vec())],
            vec![None, None],
            vec![Some((-2i64).to_be_bytes().to_vec()), Some(Vec::new())],
        ]);
        let want = vec![
            (Some(7), Some("MP\\1'x".to_owned())),
            (None, None),
            (Some(-2), Some(String::new())),
        ];
        for cut in 1..=bytes.len() {
            assert_eq!(decode_all(&bytes, cut).unwrap(), want, "cut {cut}");
        }
    }

    #[test]
    fn a_stream_cut_short_or_wrong_is_refused() {
        let bytes = stream(&[vec![Some(7i64.to_be_bytes().to_vec()), None]]);
        assert!(decode_all(&bytes[..bytes.len() - 2], 5).is_err());
        assert!(decode_all(&bytes[1..], 5).is_err());
        let three = stream(&[vec![None, None, None]]);
        assert!(decode_all(&three, 64).is_err());
        let short_int = stream(&[vec![Some(vec![1, 2]), None]]);
        assert!(decode_all(&short_int, 64).is_err());
    }

    #[test]
    fn timestamps_count_from_2000() {
        let fields = [&8i32.to_be_bytes()[..], &0i64.to_be_bytes()[..]].concat();
        let mut t = Tuple { fields: &fields };
        assert_eq!(
            t.time().unwrap().unwrap().to_rfc3339(),
            "2000-01-01T00:00:00+00:00"
        );
    }

    #[test]
    fn literals_are_quoted() {
        assert_eq!(literal("orange-money"), "'orange-money'");
        assert_eq!(literal("o'r"), "'o''r'");
        assert_eq!(literal("a\\b"), "E'a\\\\b'");
    }
}
