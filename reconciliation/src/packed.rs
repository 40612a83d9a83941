//! The plain matches of a run, packed (table `reconciliation_matches`, migration 0012).
//!
//! A plain match is a pair that needs no words: matched by the provider's transaction id,
//! one statement row, nothing posted by the run, no effect on the float. A million-row
//! statement is mostly those; they are stored as chunks of [`CHUNK_PAIRS`] `(line, row)`
//! pairs instead of a million item rows, and read back as items by
//! [`Reconciler::items`](crate::Reconciler::items) and the reconciliation report.
//!
//! The encoding: for each pair, the difference to the previous pair's line id and row number
//! (the first pair: to `(0, 0)`), zig-zag mapped to unsigned and written as LEB128 varints.
//! Statements list payments roughly in the order we sent them, so most pairs take two bytes.
//!
//! ```
//! use cva_reconciliation::packed::{decode, encode};
//!
//! let pairs = [(1_001, 2), (1_002, 3), (990, 7)];
//! let bytes = encode(&pairs);
//! assert_eq!(bytes.len(), 7);
//! assert_eq!(decode(&bytes, 3).unwrap(), pairs);
//! assert!(decode(&bytes[..6], 3).is_err());
//! ```

use cva_ledger::{read_pool, Ledger};
use thiserror::Error;

/// Pairs per stored chunk (a page of items decodes at most two chunks).
pub const CHUNK_PAIRS: usize = 65_536;

/// Stored bytes that are not what [`encode`] wrote.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("packed matches: {0}")]
pub struct PackedError(&'static str);

/// `pairs` of (payment line id, statement row number), packed.
pub fn encode(pairs: &[(i64, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pairs.len() * 2 + 8);
    let (mut line, mut row) = (0i64, 0i64);
    for &(l, r) in pairs {
        // Row numbers are spreadsheet rows: far below i64::MAX.
        let r = i64::try_from(r).unwrap_or(i64::MAX);
        put(&mut out, zigzag(l.wrapping_sub(line)));
        put(&mut out, zigzag(r.wrapping_sub(row)));
        (line, row) = (l, r);
    }
    out
}

/// The `count` pairs [`encode`] packed into `bytes`; an error if the bytes hold anything else.
pub fn decode(bytes: &[u8], count: usize) -> Result<Vec<(i64, u64)>, PackedError> {
    let mut out = Vec::with_capacity(count);
    let (mut line, mut row) = (0i64, 0i64);
    let mut at = 0usize;
    while at < bytes.len() {
        if out.len() == count {
            return Err(PackedError("more pairs than counted"));
        }
        line = line.wrapping_add(unzigzag(get(bytes, &mut at)?));
        row = row.wrapping_add(unzigzag(get(bytes, &mut at)?));
        let r = u64::try_from(row).map_err(|_| PackedError("negative row number"))?;
        out.push((line, r));
    }
    if out.len() != count {
        return Err(PackedError("fewer pairs than counted"));
    }
    Ok(out)
}

/// Why [`read`] failed.
#[derive(Debug, Error)]
pub enum ReadError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("reconciliation {run}, chunk {chunk}: {error}")]
    Corrupt {
        run: i64,
        chunk: i32,
        error: PackedError,
    },
}

/// The plain matches of run `run`, in the order the run found them, skipping the first
/// `skip`, at most `take` (only the chunks needed are read).
pub async fn read(
    ledger: &Ledger,
    run: i64,
    skip: u64,
    take: u64,
) -> Result<Vec<(i64, u64)>, ReadError> {
    let (from, to) = (
        i64::try_from(skip).unwrap_or(i64::MAX),
        i64::try_from(skip.saturating_add(take)).unwrap_or(i64::MAX),
    );
    let chunks: Vec<(i32, i32, i64, Vec<u8>)> = read_pool!(ledger, |pool| {
        sqlx::query_as(
            "SELECT chunk_no, pairs, first_pair, data FROM reconciliation_matches \
             WHERE reconciliation_id = $1 AND first_pair + pairs > $2 AND first_pair < $3 \
             ORDER BY chunk_no",
        )
        .bind(run)
        .bind(from)
        .bind(to)
        .fetch_all(pool)
        .await?
    });
    let mut out = Vec::new();
    for (chunk, pairs, first, data) in chunks {
        let corrupt = |error| ReadError::Corrupt { run, chunk, error };
        let n = usize::try_from(pairs).map_err(|_| corrupt(PackedError("negative count")))?;
        let first = u64::try_from(first).map_err(|_| corrupt(PackedError("negative start")))?;
        let pairs = decode(&data, n).map_err(corrupt)?;
        let start = usize::try_from(skip.saturating_sub(first)).unwrap_or(usize::MAX);
        out.extend(pairs.into_iter().skip(start));
    }
    out.truncate(usize::try_from(take).unwrap_or(usize::MAX));
    Ok(out)
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get(bytes: &[u8], at: &mut usize) -> Result<u64, PackedError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at).ok_or(PackedError("truncated"))?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(PackedError("varint too long"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_pairs_round_trip(pairs in proptest::collection::vec((any::<i64>(), 0u64..=i64::MAX as u64), 0..300)) {
            let bytes = encode(&pairs);
            prop_assert_eq!(decode(&bytes, pairs.len()).unwrap(), pairs.clone());
            if !pairs.is_empty() {
                prop_assert!(decode(&bytes, pairs.len() - 1).is_err());
                prop_assert!(decode(&bytes[..bytes.len() - 1], pairs.len()).is_err());
            }
        }
    }

    #[test]
    fn consecutive_pairs_take_two_bytes() {
        let pairs: Vec<(i64, u64)> = (0..1_000).map(|i| (i + 1, i as u64 + 2)).collect();
        assert_eq!(encode(&pairs).len(), 2_000);
    }

    #[test]
    fn garbage_is_refused() {
        assert_eq!(decode(&[0x80], 1), Err(PackedError("truncated")));
        assert_eq!(decode(&[0xff; 11], 1), Err(PackedError("varint too long")));
        // Row −1.
        assert_eq!(decode(&[0, 1], 1), Err(PackedError("negative row number")));
    }
}
