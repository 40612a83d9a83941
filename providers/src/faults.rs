//! Fault injection of the simulator: the `name=rate,...` spec parser ([`Faults::parse`]) and the seeded draw deciding whether a fault fires.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use rust_decimal::Decimal;

/// Probabilities (each in `[0, 1]`) of the faults the simulator injects. All zero by default.
///
/// | name | effect |
/// | --- | --- |
/// | `status_503` | `POST /batchtransactions` answers 503 and records nothing |
/// | `lost_response` | the batch is accepted and processed, but the answer is a 500 |
/// | `timeout_after_commit` | accepted and processed, but the 202 comes after `SimConfig::response_delay` |
/// | `stuck_pending` | accepted, but the batch is never processed (request state stays `pending`) |
/// | `reverse_later` | each completed transaction is reversed after `SimConfig::reversal_delay` |
/// | `duplicate_callback` | the batch's callback (`X-Callback-URL`) is delivered twice |
/// | `dropped_callback` | the batch's callback is never delivered (polling still works) |
/// | `out_of_order_callback` | the batch's callback is held back and delivered right after the next batch's callback (so consecutive callbacks arrive swapped), or after `SimConfig::callback_hold` if no other callback comes first |
///
/// The three callback faults are drawn per accepted batch (see the `sim` module docs) and
/// only matter for batches posted with `X-Callback-URL`; `dropped_callback` wins over the
/// other two.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Rate of 500 answers to accepted batches.
    pub lost_response: Decimal,
    /// Rate of late 202 answers to accepted batches.
    pub timeout_after_commit: Decimal,
    /// Rate of 503 answers (nothing recorded).
    pub status_503: Decimal,
    /// Rate of batch callbacks delivered twice.
    pub duplicate_callback: Decimal,
    /// Rate of batches that never get processed.
    pub stuck_pending: Decimal,
    /// Rate of completed transactions reversed later.
    pub reverse_later: Decimal,
    /// Rate of batch callbacks never delivered.
    pub dropped_callback: Decimal,
    /// Rate of batch callbacks delivered after the next batch's.
    pub out_of_order_callback: Decimal,
}

/// Why a fault spec was refused; each variant names the offending item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultSpecError {
    /// Not of the form `name=rate`.
    #[error("fault spec item `{item}` is not of the form name=rate")]
    Malformed {
        /// The item as written.
        item: String,
    },
    /// The name is not one of the known faults.
    #[error("unknown fault `{name}` in `{item}` (known: lost_response, timeout_after_commit, status_503, duplicate_callback, stuck_pending, reverse_later, dropped_callback, out_of_order_callback)")]
    UnknownFault {
        /// The name.
        name: String,
        /// The item as written.
        item: String,
    },
    /// The rate is not a decimal number.
    #[error("fault rate in `{item}` is not a decimal number")]
    BadRate {
        /// The item as written.
        item: String,
    },
    /// The rate is outside `[0, 1]`.
    #[error("fault rate in `{item}` is outside [0, 1]")]
    OutOfRange {
        /// The item as written.
        item: String,
    },
    /// The same fault appears twice.
    #[error("fault `{name}` is given twice (second time in `{item}`)")]
    Duplicate {
        /// The name.
        name: String,
        /// The second item.
        item: String,
    },
}

const NAMES: [&str; 8] = [
    "lost_response",
    "timeout_after_commit",
    "status_503",
    "duplicate_callback",
    "stuck_pending",
    "reverse_later",
    "dropped_callback",
    "out_of_order_callback",
];

impl Faults {
    /// Parses `lost_response=0.2,status_503=0.1,...`: comma-separated `name=rate` items,
    /// whitespace around items ignored, empty items skipped (so `""` is no faults). Rates are
    /// decimals in `[0, 1]` (parsed with [`Decimal`], e.g. `0.05`, `1`, `0`).
    pub fn parse(spec: &str) -> Result<Faults, FaultSpecError> {
        let mut faults = Faults::default();
        let mut seen = [false; NAMES.len()];
        for raw in spec.split(',') {
            let item = raw.trim();
            if item.is_empty() {
                continue;
            }
            let Some((name, rate)) = item.split_once('=') else {
                return Err(FaultSpecError::Malformed {
                    item: item.to_owned(),
                });
            };
            let name = name.trim();
            let Some(pos) = NAMES.iter().position(|n| *n == name) else {
                return Err(FaultSpecError::UnknownFault {
                    name: name.to_owned(),
                    item: item.to_owned(),
                });
            };
            let rate = rate.trim();
            // Plain decimals only: no exponent forms.
            let rate = if rate.is_empty() || rate.contains(['e', 'E']) {
                None
            } else {
                Decimal::from_str(rate).ok()
            }
            .ok_or_else(|| FaultSpecError::BadRate {
                item: item.to_owned(),
            })?;
            if rate < Decimal::ZERO || rate > Decimal::ONE {
                return Err(FaultSpecError::OutOfRange {
                    item: item.to_owned(),
                });
            }
            if seen[pos] {
                return Err(FaultSpecError::Duplicate {
                    name: name.to_owned(),
                    item: item.to_owned(),
                });
            }
            seen[pos] = true;
            *faults.slot(pos) = rate;
        }
        Ok(faults)
    }

    fn slot(&mut self, pos: usize) -> &mut Decimal {
        match pos {
            0 => &mut self.lost_response,
            1 => &mut self.timeout_after_commit,
            2 => &mut self.status_503,
            3 => &mut self.duplicate_callback,
            4 => &mut self.stuck_pending,
            5 => &mut self.reverse_later,
            6 => &mut self.dropped_callback,
            _ => &mut self.out_of_order_callback,
        }
    }

    fn rates(&self) -> [Decimal; NAMES.len()] {
        [
            self.lost_response,
            self.timeout_after_commit,
            self.status_503,
            self.duplicate_callback,
            self.stuck_pending,
            self.reverse_later,
            self.dropped_callback,
            self.out_of_order_callback,
        ]
    }
}

impl FromStr for Faults {
    type Err = FaultSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Faults::parse(s)
    }
}

/// Writes the spec back in [`Faults::parse`] form, every fault listed.
impl fmt::Display for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, rate)) in NAMES.iter().zip(self.rates()).enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{name}={rate}")?;
        }
        Ok(())
    }
}

/// Draws once from `rng` and says whether an event of probability `rate` happens. Always
/// consumes exactly one `u32` so the stream stays aligned whatever the rates.
pub(crate) fn draw<R: Rng>(rng: &mut R, rate: Decimal) -> bool {
    let sample = Decimal::from(rng.gen::<u32>()) / Decimal::from(1u64 << 32);
    sample < rate
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn draw_bounds() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..1000 {
            assert!(!draw(&mut rng, Decimal::ZERO));
            assert!(draw(&mut rng, Decimal::ONE));
        }
        let half = Decimal::from_str("0.5").unwrap();
        let hits = (0..10_000).filter(|_| draw(&mut rng, half)).count();
        assert!((4_500..5_500).contains(&hits), "{hits}");
    }

    #[test]
    fn display_round_trips() {
        let f = Faults::parse("lost_response=0.2,reverse_later=0.01").unwrap();
        assert_eq!(Faults::parse(&f.to_string()).unwrap(), f);
        let f =
            Faults::parse("duplicate_callback=0.5,dropped_callback=0.25,out_of_order_callback=1")
                .unwrap();
        assert_eq!(f.dropped_callback, Decimal::from_str("0.25").unwrap());
        assert_eq!(f.out_of_order_callback, Decimal::ONE);
        assert_eq!(Faults::parse(&f.to_string()).unwrap(), f);
    }
}
