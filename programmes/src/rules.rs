//! Transfer-value rules: how much a household is owed under each modality (multi-purpose cash,
//! cash-for-work, shelter cash), as pure data with validation, a JSON form and exact computation.
//! Storage and versioning (one rule per programme, modality and version) live elsewhere; this
//! module never touches a database.
//!
//! # Using it
//!
//! Parse a rule with [`Rule::from_json`] (parses *and* validates; an error names the field, e.g.
//! `mpca.amount.bands[2]: overlaps bands[1] (sizes 4 to 6)`), or build the structs and call
//! [`Rule::validate`]. Then compute:
//!
//! ```
//! use cva_programmes::rules::Rule;
//! let rule = Rule::from_json(r#"{
//!     "modality": "mpca",
//!     "amount": {"kind": "by_size", "bands": [
//!         {"min_size": 1, "max_size": 3, "amount": 32500},
//!         {"min_size": 4, "amount": 60000}
//!     ]},
//!     "tranches": 3,
//!     "rounding": {"unit": 25, "mode": "nearest"}
//! }"#).unwrap();
//! let Rule::Mpca(mpca) = &rule else { unreachable!() };
//! assert_eq!(mpca.tranche_amounts(2).unwrap(), vec![32500, 32500, 32500]);
//!
//! let cfw = Rule::from_json(r#"{"modality": "cash_for_work", "daily_rate": 2750,
//!     "max_days_per_cycle": 20, "max_amount_per_household": 50000,
//!     "rounding": {"unit": 100, "mode": "down"}}"#).unwrap();
//! let Rule::CashForWork(cfw) = &cfw else { unreachable!() };
//! let a = cfw.amount(&[12, 11]); // two workers in the household
//! assert_eq!((a.days_counted, a.days_capped_off, a.amount, a.capped_by_amount), (20, 3, 50000, true));
//!
//! let shelter = Rule::from_json(r#"{"modality": "shelter", "total": 100000,
//!     "tranches": [{"percent": "33.33"}, {"percent": "33.33", "condition": "foundation"},
//!                  {"percent": "33.34", "condition": "roof"}],
//!     "rounding": {"unit": 1, "mode": "nearest"}}"#).unwrap();
//! let Rule::Shelter(shelter) = &shelter else { unreachable!() };
//! assert_eq!(shelter.tranche_amounts(), vec![33330, 33330, 33340]);
//! assert!(shelter.tranche_due(1, &["foundation"]) && !shelter.tranche_due(2, &["foundation"]));
//! ```
//!
//! # Money, rounding and remainders (the policy, precisely)
//!
//! * Amounts are `i64` minor units of the programme currency (XOF has none: 1 unit = 1 franc).
//!   Intermediate values are [`rust_decimal::Decimal`]; there are no floats anywhere, and JSON
//!   percentages are written as strings (`"33.33"`) or integers, never as JSON floats.
//! * [`Rounding`] rounds an amount to a multiple of `unit` minor units: `nearest` is half up
//!   (`12.5` units becomes `13` units, `12.49…` becomes `12`), `down` is towards zero, `up` away
//!   from zero (amounts are positive). An amount that is already a multiple is unchanged. Rounding
//!   is applied only where a rule says so below.
//! * **MPCA**: the monthly amount of the household's size band (or the flat amount) is rounded
//!   once; every tranche is that rounded amount; the household's total is tranches × that amount.
//!   There is no remainder.
//! * **Cash-for-work**: days worked are summed over all the household's workers and capped at
//!   `max_days_per_cycle` — the cap is **per household per cycle**, not per worker. Amount =
//!   counted days × daily rate, then rounded, then capped at `max_amount_per_household` rounded
//!   *down* to the unit (so the cap is applied after rounding and a household never gets more
//!   than the cap, and always a multiple of the unit). Days cut by the cap are reported, not paid
//!   later.
//! * **Shelter**: every tranche except the last is computed on its own — a percentage tranche is
//!   `total × percent / 100` rounded by the rule; a fixed-amount tranche is paid as written,
//!   unrounded. **The last tranche takes the remainder**, `total − (sum of the others)`, so the
//!   tranches always sum to `total` exactly; the last tranche is therefore not rounded and is a
//!   multiple of the unit only when `total` is. Mixing percentage and fixed-amount tranches in one
//!   rule is **refused**: either all percentages (summing to exactly 100) or all amounts (summing
//!   to exactly `total`). Validation refuses rules where a tranche would round to 0 or the
//!   remainder would be 0 or negative.
//! * Arithmetic that would not fit in `i64` is a [`RuleError::Overflow`], never a panic or a wrap.
//!
//! # Household sizes
//!
//! Size bands must not overlap and must cover sizes from 1 upwards without gaps, so every size
//! from 1 up to the last band's `max_size` has exactly one band. The last band may be open-ended
//! (`max_size` omitted). If it is closed, larger households get [`RuleError::NoBand`] at
//! computation time ("no band for household size 12"), as does size 0.

use std::fmt;

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Largest number of monthly MPCA tranches.
pub const MAX_MPCA_TRANCHES: u32 = 24;
/// Largest number of shelter tranches.
pub const MAX_SHELTER_TRANCHES: usize = 12;
/// Most decimal places allowed in a shelter percentage (keeps `total × percent` exact).
pub const MAX_PERCENT_DECIMALS: u32 = 6;
/// Longest milestone code.
pub const MAX_CONDITION_LEN: usize = 64;

/// Why a rule was refused or could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// A field breaks a validation rule. `field` is a path such as `mpca.amount.bands[2]`.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// The household size falls outside every band.
    #[error("no band for household size {0}")]
    NoBand(u16),
    /// A computation does not fit in `i64` minor units.
    #[error("{field}: {what} does not fit in 64-bit minor units")]
    Overflow { field: String, what: String },
    /// The JSON text is not a rule (syntax, unknown field, wrong type, unknown modality).
    #[error("not a valid rule: {0}")]
    Json(String),
    #[error("unknown modality `{0}` (expected mpca, cash_for_work or shelter)")]
    UnknownModality(String),
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> RuleError {
    RuleError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

fn overflow(field: impl Into<String>, what: impl Into<String>) -> RuleError {
    RuleError::Overflow {
        field: field.into(),
        what: what.into(),
    }
}

/// The three transfer modalities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Modality {
    /// Multi-purpose cash assistance.
    Mpca,
    CashForWork,
    Shelter,
}

impl Modality {
    pub const ALL: [Modality; 3] = [Modality::Mpca, Modality::CashForWork, Modality::Shelter];

    pub fn as_str(self) -> &'static str {
        match self {
            Modality::Mpca => "mpca",
            Modality::CashForWork => "cash_for_work",
            Modality::Shelter => "shelter",
        }
    }

    /// Parses `mpca`, `cash_for_work` or `shelter` (surrounding spaces ignored; case-sensitive).
    pub fn parse(s: &str) -> Result<Modality, RuleError> {
        let t = s.trim();
        Modality::ALL
            .into_iter()
            .find(|m| m.as_str() == t)
            .ok_or_else(|| RuleError::UnknownModality(t.to_owned()))
    }
}

impl fmt::Display for Modality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Modality {
    type Err = RuleError;
    fn from_str(s: &str) -> Result<Modality, RuleError> {
        Modality::parse(s)
    }
}

/// How amounts are rounded: to a multiple of `unit` minor units (e.g. 5, 25, 100 XOF).
/// `unit` must be at least 1 (1 = whole minor units, i.e. only fractions are rounded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rounding {
    pub unit: i64,
    pub mode: RoundingMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoundingMode {
    /// To the nearest multiple; exactly half way goes up (12.5 units → 13 units).
    Nearest,
    /// To the multiple at or below (floor; towards zero for the positive amounts used here).
    Down,
    /// To the multiple at or above (ceiling).
    Up,
}

impl Rounding {
    pub fn new(unit: i64, mode: RoundingMode) -> Rounding {
        Rounding { unit, mode }
    }

    fn validate(&self, field: &str) -> Result<(), RuleError> {
        if self.unit < 1 {
            return Err(invalid(
                format!("{field}.unit"),
                format!("must be at least 1, got {}", self.unit),
            ));
        }
        Ok(())
    }

    /// Rounds `value` (minor units, possibly fractional) to a multiple of `unit`. Exact: no
    /// division is involved, only the remainder modulo `unit`.
    pub fn round(&self, value: Decimal) -> Result<i64, RuleError> {
        if self.unit < 1 {
            return Err(invalid(
                "rounding.unit",
                format!("must be at least 1, got {}", self.unit),
            ));
        }
        let unit = Decimal::from(self.unit);
        let too_big = || {
            overflow(
                "rounding",
                format!("{value} rounded to a multiple of {unit}"),
            )
        };
        let mut rem = value.checked_rem(unit).ok_or_else(too_big)?;
        if rem.is_sign_negative() && !rem.is_zero() {
            rem += unit; // floor semantics for negative values
        }
        let floor = value.checked_sub(rem).ok_or_else(too_big)?;
        let bump = match self.mode {
            RoundingMode::Down => false,
            RoundingMode::Up => !rem.is_zero(),
            // rem ≥ unit − rem  ⇔  rem/unit ≥ 1/2 (half up)
            RoundingMode::Nearest => rem >= unit - rem,
        };
        let rounded = if bump {
            floor.checked_add(unit).ok_or_else(too_big)?
        } else {
            floor
        };
        rounded.to_i64().ok_or_else(too_big)
    }

    /// Rounds a whole amount of minor units (see [`Rounding::round`]).
    pub fn round_minor(&self, amount: i64) -> Result<i64, RuleError> {
        self.round(Decimal::from(amount))
    }

    /// The largest multiple of `unit` that is ≤ `amount` (whatever the mode).
    pub fn floor_minor(&self, amount: i64) -> Result<i64, RuleError> {
        Rounding::new(self.unit, RoundingMode::Down).round_minor(amount)
    }
}

/// One household-size band of an MPCA rule: sizes `min_size..=max_size` (`None` = and above)
/// receive `amount` minor units per month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SizeBand {
    pub min_size: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u16>,
    pub amount: i64,
}

impl SizeBand {
    pub fn contains(&self, size: u16) -> bool {
        size >= self.min_size
            && match self.max_size {
                Some(max) => size <= max,
                None => true,
            }
    }

    fn describe(&self) -> String {
        match self.max_size {
            Some(max) => format!("sizes {} to {}", self.min_size, max),
            None => format!("sizes {} and above", self.min_size),
        }
    }
}

/// The monthly MPCA amount: the same for every household, or by household size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum MpcaAmount {
    Flat { amount: i64 },
    BySize { bands: Vec<SizeBand> },
}

/// Multi-purpose cash: a monthly amount paid in `tranches` monthly tranches (1 to 24).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MpcaRule {
    pub amount: MpcaAmount,
    pub tranches: u32,
    pub rounding: Rounding,
}

impl MpcaRule {
    /// The unrounded monthly amount for a household of `household_size`.
    pub fn monthly_amount(&self, household_size: u16) -> Result<i64, RuleError> {
        match &self.amount {
            MpcaAmount::Flat { amount } => Ok(*amount),
            MpcaAmount::BySize { bands } => bands
                .iter()
                .find(|b| b.contains(household_size))
                .map(|b| b.amount)
                .ok_or(RuleError::NoBand(household_size)),
        }
    }

    /// One amount per monthly tranche: the band's (or flat) monthly amount, rounded by the rule.
    /// The household's total is the sum, which must itself fit in `i64`.
    pub fn tranche_amounts(&self, household_size: u16) -> Result<Vec<i64>, RuleError> {
        self.check_tranche_count()?;
        let monthly = self.monthly_amount(household_size)?;
        let per_tranche = self.rounding.round_minor(monthly).map_err(|_| {
            overflow(
                "mpca.amount",
                format!("{monthly} rounded to a multiple of {}", self.rounding.unit),
            )
        })?;
        let count = i64::from(self.tranches);
        per_tranche.checked_mul(count).ok_or_else(|| {
            overflow(
                "mpca.tranches",
                format!("{count} tranches of {per_tranche}"),
            )
        })?;
        let count = usize::try_from(self.tranches)
            .map_err(|_| invalid("mpca.tranches", "too many tranches"))?;
        Ok(vec![per_tranche; count])
    }

    pub fn validate(&self) -> Result<(), RuleError> {
        self.rounding.validate("mpca.rounding")?;
        self.check_tranche_count()?;
        match &self.amount {
            MpcaAmount::Flat { amount } => {
                self.check_amount("mpca.amount.amount", *amount)?;
            }
            MpcaAmount::BySize { bands } => {
                validate_bands(bands)?;
                for (i, band) in bands.iter().enumerate() {
                    self.check_amount(&format!("mpca.amount.bands[{i}].amount"), band.amount)?;
                }
            }
        }
        Ok(())
    }

    fn check_tranche_count(&self) -> Result<(), RuleError> {
        if (1..=MAX_MPCA_TRANCHES).contains(&self.tranches) {
            return Ok(());
        }
        Err(invalid(
            "mpca.tranches",
            format!(
                "must be between 1 and {MAX_MPCA_TRANCHES} monthly tranches, got {}",
                self.tranches
            ),
        ))
    }

    /// A monthly amount must be positive, stay positive once rounded, and its total must fit.
    fn check_amount(&self, field: &str, amount: i64) -> Result<(), RuleError> {
        if amount <= 0 {
            return Err(invalid(field, format!("must be positive, got {amount}")));
        }
        let rounded = self
            .rounding
            .round_minor(amount)
            .map_err(|_| overflow(field, format!("{amount} once rounded")))?;
        if rounded <= 0 {
            return Err(invalid(
                field,
                format!(
                    "{amount} rounds to 0 with a rounding unit of {}",
                    self.rounding.unit
                ),
            ));
        }
        rounded
            .checked_mul(i64::from(self.tranches))
            .ok_or_else(|| overflow(field, format!("{} tranches of {rounded}", self.tranches)))?;
        Ok(())
    }
}

fn validate_bands(bands: &[SizeBand]) -> Result<(), RuleError> {
    if bands.is_empty() {
        return Err(invalid("mpca.amount.bands", "at least one band is needed"));
    }
    for (i, b) in bands.iter().enumerate() {
        let field = format!("mpca.amount.bands[{i}]");
        if b.min_size < 1 {
            return Err(invalid(
                format!("{field}.min_size"),
                "must be at least 1 (a household has at least one member)",
            ));
        }
        if let Some(max) = b.max_size {
            if max < b.min_size {
                return Err(invalid(
                    format!("{field}.max_size"),
                    format!("{max} is below min_size {}", b.min_size),
                ));
            }
        }
    }
    // Bands may be listed in any order; check them sorted by min_size (then by index).
    let mut order: Vec<usize> = (0..bands.len()).collect();
    order.sort_by_key(|&i| (bands[i].min_size, i));
    let first = order[0];
    if bands[first].min_size != 1 {
        return Err(invalid(
            format!("mpca.amount.bands[{first}]"),
            format!(
                "the lowest band starts at size {}; household sizes 1 to {} have no band",
                bands[first].min_size,
                bands[first].min_size - 1
            ),
        ));
    }
    for pair in order.windows(2) {
        let (p, n) = (pair[0], pair[1]);
        let (prev, next) = (&bands[p], &bands[n]);
        let (later, earlier, earlier_band) = if n > p { (n, p, prev) } else { (p, n, next) };
        match prev.max_size {
            Some(max) if max < next.min_size => {
                if max + 1 < next.min_size {
                    return Err(invalid(
                        format!("mpca.amount.bands[{n}]"),
                        format!(
                            "starts at size {} but bands[{p}] ends at {max}; sizes {} to {} have no band",
                            next.min_size,
                            max + 1,
                            next.min_size - 1
                        ),
                    ));
                }
            }
            _ => {
                return Err(invalid(
                    format!("mpca.amount.bands[{later}]"),
                    format!("overlaps bands[{earlier}] ({})", earlier_band.describe()),
                ));
            }
        }
    }
    Ok(())
}

/// Cash-for-work: days worked × daily rate, with a per-household cap on days and on amount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CfwRule {
    pub daily_rate: i64,
    /// Cap on the days paid to one household (all its workers together) in one cycle.
    pub max_days_per_cycle: u32,
    /// Cap on the amount paid to one household in one cycle (applied after rounding, itself
    /// rounded down to the unit).
    pub max_amount_per_household: i64,
    pub rounding: Rounding,
}

/// What a household earns in one cash-for-work cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CfwAmount {
    /// Days paid: the sum over the household's workers, capped at `max_days_per_cycle`.
    pub days_counted: u32,
    /// Days worked beyond the cap (not paid; saturates at `u32::MAX`).
    pub days_capped_off: u32,
    /// Minor units owed.
    pub amount: i64,
    /// Whether `max_amount_per_household` cut the amount.
    pub capped_by_amount: bool,
}

impl CfwRule {
    /// The household's amount for one cycle; `days_by_worker` holds the days present of each of
    /// its workers. Never overflows: the result is at most the (rounded-down) amount cap. On a
    /// rule that fails [`CfwRule::validate`] the result is meaningless (but still no panic).
    pub fn amount(&self, days_by_worker: &[u32]) -> CfwAmount {
        let worked: u64 = days_by_worker.iter().map(|&d| u64::from(d)).sum();
        let counted = worked.min(u64::from(self.max_days_per_cycle));
        let days_counted = u32::try_from(counted).unwrap_or(u32::MAX);
        let days_capped_off = u32::try_from(worked - counted).unwrap_or(u32::MAX);

        let cap = self
            .rounding
            .floor_minor(self.max_amount_per_household)
            .unwrap_or(0);
        // u32 × i64 < 2^95 always fits in a Decimal; a failure can only mean "beyond the cap".
        let rounded = Decimal::from(days_counted)
            .checked_mul(Decimal::from(self.daily_rate))
            .ok_or_else(|| overflow("cash_for_work", "days × daily_rate"))
            .and_then(|gross| self.rounding.round(gross));
        let (amount, capped_by_amount) = match rounded {
            Ok(a) if a <= cap => (a, false),
            _ => (cap, true),
        };
        CfwAmount {
            days_counted,
            days_capped_off,
            amount,
            capped_by_amount,
        }
    }

    pub fn validate(&self) -> Result<(), RuleError> {
        self.rounding.validate("cash_for_work.rounding")?;
        if self.daily_rate <= 0 {
            return Err(invalid(
                "cash_for_work.daily_rate",
                format!("must be positive, got {}", self.daily_rate),
            ));
        }
        if self.max_days_per_cycle == 0 {
            return Err(invalid(
                "cash_for_work.max_days_per_cycle",
                "must be positive, got 0",
            ));
        }
        if self.max_amount_per_household <= 0 {
            return Err(invalid(
                "cash_for_work.max_amount_per_household",
                format!("must be positive, got {}", self.max_amount_per_household),
            ));
        }
        if self.max_amount_per_household < self.rounding.unit {
            return Err(invalid(
                "cash_for_work.max_amount_per_household",
                format!(
                    "{} is below the rounding unit {}; every household would be capped to 0",
                    self.max_amount_per_household, self.rounding.unit
                ),
            ));
        }
        Ok(())
    }
}

/// The value of one shelter tranche.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrancheValue {
    /// A percentage of the total, `0 < p ≤ 100`, at most [`MAX_PERCENT_DECIMALS`] decimals.
    Percent(Decimal),
    /// A fixed amount in minor units.
    Amount(i64),
}

/// One shelter tranche. JSON: `{"percent": "40", "condition": "foundation"}` or
/// `{"amount": 60000}`; percentages are strings or integers, never JSON floats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "TrancheRepr", into = "TrancheRepr")]
pub struct ShelterTranche {
    pub value: TrancheValue,
    /// Milestone code (e.g. `foundation`, `roof`) that must be verified, by a second person,
    /// before this tranche is due. `None`: due unconditionally. Codes are 1 to 64 characters of
    /// `a-z`, `0-9`, `_` and `-`.
    pub condition: Option<String>,
}

/// Shelter cash: `total` paid in tranches, each possibly conditional on a verified milestone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShelterRule {
    pub total: i64,
    pub tranches: Vec<ShelterTranche>,
    pub rounding: Rounding,
}

impl ShelterRule {
    /// The amount of each tranche; they sum to `total` exactly (the last takes the remainder).
    /// Exact for a rule that passed [`ShelterRule::validate`]; for an invalid rule whose amounts
    /// cannot be computed it returns an empty `Vec` (use [`ShelterRule::checked_tranche_amounts`]
    /// to get the reason).
    pub fn tranche_amounts(&self) -> Vec<i64> {
        self.checked_tranche_amounts().unwrap_or_default()
    }

    /// [`ShelterRule::tranche_amounts`], with the reason when they cannot be computed.
    pub fn checked_tranche_amounts(&self) -> Result<Vec<i64>, RuleError> {
        let Some((_, init)) = self.tranches.split_last() else {
            return Err(invalid(
                "shelter.tranches",
                "at least one tranche is needed",
            ));
        };
        let mut out = Vec::with_capacity(self.tranches.len());
        let mut paid: i64 = 0;
        for (i, t) in init.iter().enumerate() {
            let field = format!("shelter.tranches[{i}]");
            let amount = match t.value {
                TrancheValue::Amount(a) => a,
                TrancheValue::Percent(p) => {
                    let share = Decimal::from(self.total)
                        .checked_mul(p)
                        .and_then(|x| x.checked_div(Decimal::ONE_HUNDRED))
                        .ok_or_else(|| overflow(&field, "total × percent"))?;
                    self.rounding
                        .round(share)
                        .map_err(|_| overflow(&field, format!("{share} once rounded")))?
                }
            };
            paid = paid
                .checked_add(amount)
                .ok_or_else(|| overflow(&field, "the sum of the tranches"))?;
            out.push(amount);
        }
        let last = self.total.checked_sub(paid).ok_or_else(|| {
            overflow(format!("shelter.tranches[{}]", init.len()), "the remainder")
        })?;
        out.push(last);
        Ok(out)
    }

    /// Whether tranche `index` is due given the milestone codes verified so far: true when it has
    /// no condition or its condition is among `verified_milestones` (exact match). False for an
    /// index past the last tranche. Whether earlier tranches were paid is the caller's concern.
    pub fn tranche_due(&self, index: usize, verified_milestones: &[&str]) -> bool {
        match self.tranches.get(index) {
            None => false,
            Some(t) => match &t.condition {
                None => true,
                Some(c) => verified_milestones.iter().any(|v| *v == c),
            },
        }
    }

    pub fn validate(&self) -> Result<(), RuleError> {
        self.rounding.validate("shelter.rounding")?;
        if self.total <= 0 {
            return Err(invalid(
                "shelter.total",
                format!("must be positive, got {}", self.total),
            ));
        }
        if self.tranches.is_empty() {
            return Err(invalid(
                "shelter.tranches",
                "at least one tranche is needed",
            ));
        }
        if self.tranches.len() > MAX_SHELTER_TRANCHES {
            return Err(invalid(
                "shelter.tranches",
                format!(
                    "at most {MAX_SHELTER_TRANCHES} tranches, got {}",
                    self.tranches.len()
                ),
            ));
        }
        let first_is_percent = matches!(self.tranches[0].value, TrancheValue::Percent(_));
        let mut percent_sum = Decimal::ZERO;
        let mut amount_sum: i64 = 0;
        for (i, t) in self.tranches.iter().enumerate() {
            let field = format!("shelter.tranches[{i}]");
            match t.value {
                TrancheValue::Percent(p) => {
                    if !first_is_percent {
                        return Err(mixed(&field));
                    }
                    if p <= Decimal::ZERO || p > Decimal::ONE_HUNDRED {
                        return Err(invalid(
                            format!("{field}.percent"),
                            format!("must be above 0 and at most 100, got {p}"),
                        ));
                    }
                    if p.normalize().scale() > MAX_PERCENT_DECIMALS {
                        return Err(invalid(
                            format!("{field}.percent"),
                            format!("at most {MAX_PERCENT_DECIMALS} decimal places, got {p}"),
                        ));
                    }
                    percent_sum += p; // ≤ 12 × 100: cannot overflow
                }
                TrancheValue::Amount(a) => {
                    if first_is_percent {
                        return Err(mixed(&field));
                    }
                    if a <= 0 {
                        return Err(invalid(
                            format!("{field}.amount"),
                            format!("must be positive, got {a}"),
                        ));
                    }
                    amount_sum = amount_sum.checked_add(a).ok_or_else(|| {
                        overflow("shelter.tranches", "the sum of the tranche amounts")
                    })?;
                }
            }
            if let Some(c) = &t.condition {
                check_condition(&format!("{field}.condition"), c)?;
            }
        }
        if first_is_percent && percent_sum != Decimal::ONE_HUNDRED {
            return Err(invalid(
                "shelter.tranches",
                format!(
                    "percentages must sum to exactly 100, got {}",
                    percent_sum.normalize()
                ),
            ));
        }
        if !first_is_percent && amount_sum != self.total {
            return Err(invalid(
                "shelter.tranches",
                format!(
                    "amounts must sum to exactly the total {}, got {amount_sum}",
                    self.total
                ),
            ));
        }
        let amounts = self.checked_tranche_amounts()?;
        let last = amounts.len() - 1;
        for (i, a) in amounts.iter().enumerate() {
            if *a <= 0 {
                let reason = if i == last {
                    format!(
                        "the remainder after rounding the other tranches is {a}; \
                         use a smaller rounding unit or another rounding mode"
                    )
                } else {
                    format!(
                        "rounds to {a} with a rounding unit of {}",
                        self.rounding.unit
                    )
                };
                return Err(invalid(format!("shelter.tranches[{i}]"), reason));
            }
        }
        Ok(())
    }
}

fn mixed(field: &str) -> RuleError {
    invalid(
        field,
        "mixes a fixed amount with percentages; use all percentages or all amounts",
    )
}

fn check_condition(field: &str, c: &str) -> Result<(), RuleError> {
    let ok = !c.is_empty()
        && c.len() <= MAX_CONDITION_LEN
        && c.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!(
                "`{c}` is not a milestone code (1 to {MAX_CONDITION_LEN} characters of a-z, 0-9, _ and -)"
            ),
        ))
    }
}

/// A transfer-value rule. JSON: an object tagged by `"modality"` with the fields of the
/// modality's rule, e.g. `{"modality": "cash_for_work", "daily_rate": 2500, ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "modality", rename_all = "snake_case")]
pub enum Rule {
    Mpca(MpcaRule),
    CashForWork(CfwRule),
    Shelter(ShelterRule),
}

impl Rule {
    pub fn modality(&self) -> Modality {
        match self {
            Rule::Mpca(_) => Modality::Mpca,
            Rule::CashForWork(_) => Modality::CashForWork,
            Rule::Shelter(_) => Modality::Shelter,
        }
    }

    /// Checks every constraint listed in the module documentation; the error names the field.
    pub fn validate(&self) -> Result<(), RuleError> {
        match self {
            Rule::Mpca(r) => r.validate(),
            Rule::CashForWork(r) => r.validate(),
            Rule::Shelter(r) => r.validate(),
        }
    }

    /// Parses the JSON form and validates it.
    pub fn from_json(text: &str) -> Result<Rule, RuleError> {
        let rule: Rule = serde_json::from_str(text).map_err(|e| RuleError::Json(e.to_string()))?;
        rule.validate()?;
        Ok(rule)
    }

    /// The JSON form (compact), which [`Rule::from_json`] reads back.
    pub fn to_json(&self) -> String {
        // Serialising these plain types cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

// ---- JSON form of a shelter tranche ----

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrancheRepr {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    percent: Option<Percent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    amount: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    condition: Option<String>,
}

impl TryFrom<TrancheRepr> for ShelterTranche {
    type Error = String;
    fn try_from(r: TrancheRepr) -> Result<ShelterTranche, String> {
        let value = match (r.percent, r.amount) {
            (Some(Percent(p)), None) => TrancheValue::Percent(p),
            (None, Some(a)) => TrancheValue::Amount(a),
            _ => return Err("a shelter tranche needs exactly one of `percent` or `amount`".into()),
        };
        Ok(ShelterTranche {
            value,
            condition: r.condition,
        })
    }
}

impl From<ShelterTranche> for TrancheRepr {
    fn from(t: ShelterTranche) -> TrancheRepr {
        let (percent, amount) = match t.value {
            TrancheValue::Percent(p) => (Some(Percent(p)), None),
            TrancheValue::Amount(a) => (None, Some(a)),
        };
        TrancheRepr {
            percent,
            amount,
            condition: t.condition,
        }
    }
}

/// A percentage in JSON: a string (`"33.33"`) or an integer (`40`); JSON floats are refused so
/// that no value ever passes through binary floating point.
#[derive(Debug, Clone, Copy)]
struct Percent(Decimal);

impl Serialize for Percent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Percent, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Percent;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a percentage as a string such as \"33.33\" or an integer")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Percent, E> {
                let t = v.trim();
                let ok_shape = !t.is_empty()
                    && t.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                    && t.bytes().filter(|&b| b == b'.').count() <= 1;
                if !ok_shape {
                    return Err(E::custom(format!(
                        "`{v}` is not a percentage (digits with an optional `.`, e.g. \"33.33\")"
                    )));
                }
                Decimal::from_str_exact(t)
                    .map(Percent)
                    .map_err(|_| E::custom(format!("`{v}` is not a percentage")))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Percent, E> {
                Ok(Percent(Decimal::from(v)))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Percent, E> {
                Ok(Percent(Decimal::from(v)))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Percent, E> {
                Err(E::custom(
                    "write percentages as strings (e.g. \"33.33\") so that they stay exact",
                ))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn r(unit: i64, mode: RoundingMode) -> Rounding {
        Rounding::new(unit, mode)
    }

    use RoundingMode::{Down, Nearest, Up};

    fn field_of(e: RuleError) -> String {
        match e {
            RuleError::Invalid { field, .. } | RuleError::Overflow { field, .. } => field,
            other => panic!("not a field error: {other}"),
        }
    }

    // ---- rounding ----

    #[test]
    fn rounding_table() {
        let cases: &[(i64, RoundingMode, &str, i64)] = &[
            // exact multiples are unchanged in every mode
            (25, Nearest, "50", 50),
            (25, Down, "50", 50),
            (25, Up, "50", 50),
            (100, Nearest, "0", 0),
            // exactly half: up
            (25, Nearest, "12.5", 25),
            (25, Nearest, "37.5", 50),
            (5, Nearest, "2.5", 5),
            (100, Nearest, "1250", 1300), // 12.5 units → 13 units
            (1, Nearest, "12.5", 13),
            // just below half: down
            (100, Nearest, "1249", 1200),
            (100, Nearest, "1249.999999", 1200),
            (1, Nearest, "12.49", 12),
            (25, Nearest, "12.4999", 0),
            // just above half: up
            (100, Nearest, "1250.000001", 1300),
            // down and up
            (100, Down, "1299", 1200),
            (100, Up, "1201", 1300),
            (100, Up, "1200.0001", 1300),
            (1, Down, "7.99", 7),
            (1, Up, "7.01", 8),
            // unit 1 on whole numbers: identity
            (1, Nearest, "65000", 65000),
            (1, Up, "65000", 65000),
        ];
        for &(unit, mode, value, want) in cases {
            assert_eq!(
                r(unit, mode).round(dec(value)).unwrap(),
                want,
                "unit {unit} {mode:?} {value}"
            );
        }
    }

    #[test]
    fn rounding_large_values_and_overflow() {
        let near = i64::MAX / 1000 * 1000; // a multiple of 1000 near the top
        assert_eq!(r(1000, Up).round_minor(near).unwrap(), near);
        assert_eq!(r(1000, Down).round_minor(i64::MAX).unwrap(), near);
        // rounding i64::MAX up or to nearest goes past i64::MAX: an error, not a panic
        assert!(matches!(
            r(1000, Up).round_minor(i64::MAX),
            Err(RuleError::Overflow { .. })
        ));
        assert!(matches!(
            r(1000, Nearest).round_minor(near + 500),
            Err(RuleError::Overflow { .. })
        ));
        assert_eq!(r(1000, Nearest).round_minor(near + 499).unwrap(), near);
        assert_eq!(r(1, Nearest).round_minor(i64::MAX).unwrap(), i64::MAX);
        // an invalid unit is an error, not a division by zero
        assert!(r(0, Nearest).round_minor(10).is_err());
        assert!(r(-5, Nearest).round_minor(10).is_err());
    }

    // ---- modality ----

    #[test]
    fn modality_strings() {
        for m in Modality::ALL {
            assert_eq!(Modality::parse(m.as_str()).unwrap(), m);
            assert_eq!(
                serde_json::to_string(&m).unwrap(),
                format!("\"{}\"", m.as_str())
            );
        }
        assert_eq!(Modality::parse(" shelter ").unwrap(), Modality::Shelter);
        assert_eq!(
            Modality::parse("cfw").unwrap_err().to_string(),
            "unknown modality `cfw` (expected mpca, cash_for_work or shelter)"
        );
    }

    // ---- MPCA ----

    fn band(min: u16, max: Option<u16>, amount: i64) -> SizeBand {
        SizeBand {
            min_size: min,
            max_size: max,
            amount,
        }
    }

    fn mpca_bands(bands: Vec<SizeBand>, tranches: u32, rounding: Rounding) -> MpcaRule {
        MpcaRule {
            amount: MpcaAmount::BySize { bands },
            tranches,
            rounding,
        }
    }

    fn sahel_bands() -> Vec<SizeBand> {
        vec![
            band(1, Some(3), 32_510),
            band(4, Some(6), 48_740),
            band(7, None, 65_000),
        ]
    }

    #[test]
    fn mpca_band_lookup_edges() {
        let rule = mpca_bands(sahel_bands(), 3, r(25, Nearest));
        rule.validate().unwrap();
        let cases: &[(u16, i64)] = &[
            (1, 32_500), // 32 510 → 32 500 (10 < 12.5)
            (3, 32_500),
            (4, 48_750), // 48 740 → 48 750 (15 ≥ 12.5)
            (6, 48_750),
            (7, 65_000),
            (50, 65_000),
            (u16::MAX, 65_000),
        ];
        for &(size, want) in cases {
            assert_eq!(
                rule.tranche_amounts(size).unwrap(),
                vec![want; 3],
                "size {size}"
            );
        }
        assert_eq!(rule.tranche_amounts(0), Err(RuleError::NoBand(0)));

        let closed = mpca_bands(
            vec![band(1, Some(5), 30_000), band(6, Some(11), 50_000)],
            1,
            r(1, Nearest),
        );
        closed.validate().unwrap();
        assert_eq!(closed.tranche_amounts(11).unwrap(), vec![50_000]);
        let e = closed.tranche_amounts(12).unwrap_err();
        assert_eq!(e, RuleError::NoBand(12));
        assert_eq!(e.to_string(), "no band for household size 12");
    }

    #[test]
    fn mpca_every_size_has_exactly_one_band() {
        let bands = sahel_bands();
        for size in 1..=50u16 {
            assert_eq!(
                bands.iter().filter(|b| b.contains(size)).count(),
                1,
                "{size}"
            );
        }
    }

    #[test]
    fn mpca_flat_and_rounding_modes() {
        let cases: &[(i64, Rounding, u32, i64)] = &[
            (30_000, r(1, Nearest), 1, 30_000),
            (30_000, r(100, Up), 6, 30_000),
            (30_010, r(100, Up), 6, 30_100),
            (30_090, r(100, Down), 2, 30_000),
            (30_050, r(100, Nearest), 24, 30_100),
            (30_049, r(100, Nearest), 24, 30_000),
        ];
        for &(amount, rounding, tranches, want) in cases {
            let rule = MpcaRule {
                amount: MpcaAmount::Flat { amount },
                tranches,
                rounding,
            };
            rule.validate().unwrap();
            let got = rule.tranche_amounts(4).unwrap();
            assert_eq!(got.len(), tranches as usize);
            assert!(
                got.iter().all(|&a| a == want),
                "{amount} {rounding:?}: {got:?}"
            );
        }
    }

    #[test]
    fn mpca_overflow_is_an_error() {
        let huge = i64::MAX / 1000 * 100; // one tranche fits, 24 of them do not
        let rule = MpcaRule {
            amount: MpcaAmount::Flat { amount: huge },
            tranches: 24,
            rounding: r(1, Nearest),
        };
        assert!(matches!(
            rule.tranche_amounts(1),
            Err(RuleError::Overflow { .. })
        ));
        assert_eq!(field_of(rule.validate().unwrap_err()), "mpca.amount.amount");
        let one = MpcaRule {
            tranches: 1,
            ..rule.clone()
        };
        assert_eq!(one.tranche_amounts(1).unwrap(), vec![huge]);
        // rounding up past i64::MAX
        let top = MpcaRule {
            amount: MpcaAmount::Flat {
                amount: i64::MAX - 1,
            },
            tranches: 1,
            rounding: r(1000, Up),
        };
        assert!(matches!(
            top.tranche_amounts(1),
            Err(RuleError::Overflow { .. })
        ));
        // an unvalidated absurd tranche count is an error, not a huge allocation
        let many = MpcaRule {
            tranches: u32::MAX,
            ..one
        };
        assert!(many.tranche_amounts(1).is_err());
    }

    #[test]
    fn mpca_validation_messages() {
        let cases: Vec<(MpcaRule, &str, &str)> = vec![
            (
                mpca_bands(
                    vec![band(1, Some(3), 1), band(4, Some(6), 1), band(5, None, 1)],
                    1,
                    r(1, Nearest),
                ),
                "mpca.amount.bands[2]",
                "mpca.amount.bands[2]: overlaps bands[1] (sizes 4 to 6)",
            ),
            (
                mpca_bands(
                    vec![band(1, None, 1), band(4, None, 1)],
                    1,
                    r(1, Nearest),
                ),
                "mpca.amount.bands[1]",
                "mpca.amount.bands[1]: overlaps bands[0] (sizes 1 and above)",
            ),
            (
                mpca_bands(
                    vec![band(1, Some(3), 1), band(5, None, 1)],
                    1,
                    r(1, Nearest),
                ),
                "mpca.amount.bands[1]",
                "mpca.amount.bands[1]: starts at size 5 but bands[0] ends at 3; sizes 4 to 4 have no band",
            ),
            (
                mpca_bands(vec![band(2, None, 1)], 1, r(1, Nearest)),
                "mpca.amount.bands[0]",
                "mpca.amount.bands[0]: the lowest band starts at size 2; household sizes 1 to 1 have no band",
            ),
            (
                mpca_bands(vec![band(0, None, 1)], 1, r(1, Nearest)),
                "mpca.amount.bands[0].min_size",
                "mpca.amount.bands[0].min_size: must be at least 1 (a household has at least one member)",
            ),
            (
                mpca_bands(vec![band(1, Some(3), 1), band(6, Some(4), 1)], 1, r(1, Nearest)),
                "mpca.amount.bands[1].max_size",
                "mpca.amount.bands[1].max_size: 4 is below min_size 6",
            ),
            (
                mpca_bands(vec![], 1, r(1, Nearest)),
                "mpca.amount.bands",
                "mpca.amount.bands: at least one band is needed",
            ),
            (
                mpca_bands(vec![band(1, Some(2), 100), band(3, None, 0)], 1, r(1, Nearest)),
                "mpca.amount.bands[1].amount",
                "mpca.amount.bands[1].amount: must be positive, got 0",
            ),
            (
                mpca_bands(vec![band(1, None, 10)], 1, r(25, Down)),
                "mpca.amount.bands[0].amount",
                "mpca.amount.bands[0].amount: 10 rounds to 0 with a rounding unit of 25",
            ),
            (
                mpca_bands(vec![band(1, None, 10)], 0, r(1, Down)),
                "mpca.tranches",
                "mpca.tranches: must be between 1 and 24 monthly tranches, got 0",
            ),
            (
                mpca_bands(vec![band(1, None, 10)], 25, r(1, Down)),
                "mpca.tranches",
                "mpca.tranches: must be between 1 and 24 monthly tranches, got 25",
            ),
            (
                mpca_bands(vec![band(1, None, 10)], 1, r(0, Down)),
                "mpca.rounding.unit",
                "mpca.rounding.unit: must be at least 1, got 0",
            ),
            (
                MpcaRule {
                    amount: MpcaAmount::Flat { amount: -5 },
                    tranches: 1,
                    rounding: r(1, Up),
                },
                "mpca.amount.amount",
                "mpca.amount.amount: must be positive, got -5",
            ),
        ];
        for (rule, field, message) in cases {
            let e = Rule::Mpca(rule).validate().unwrap_err();
            assert_eq!(e.to_string(), message);
            assert_eq!(field_of(e), field);
        }
    }

    #[test]
    fn mpca_bands_in_any_order() {
        let mut bands = sahel_bands();
        bands.reverse();
        let rule = mpca_bands(bands, 2, r(1, Nearest));
        rule.validate().unwrap();
        assert_eq!(rule.tranche_amounts(5).unwrap(), vec![48_740, 48_740]);
    }

    // ---- cash-for-work ----

    fn cfw(rate: i64, max_days: u32, cap: i64, rounding: Rounding) -> CfwRule {
        CfwRule {
            daily_rate: rate,
            max_days_per_cycle: max_days,
            max_amount_per_household: cap,
            rounding,
        }
    }

    #[test]
    fn cfw_table() {
        // (rule, days by worker, days_counted, days_capped_off, amount, capped_by_amount)
        let cases: Vec<(CfwRule, Vec<u32>, u32, u32, i64, bool)> = vec![
            // plain: 12 days × 2 500
            (
                cfw(2_500, 20, 100_000, r(1, Nearest)),
                vec![12],
                12,
                0,
                30_000,
                false,
            ),
            // two workers summed, per-household day cap
            (
                cfw(2_500, 20, 100_000, r(1, Nearest)),
                vec![12, 11],
                20,
                3,
                50_000,
                false,
            ),
            // exactly at the day cap
            (
                cfw(2_500, 20, 100_000, r(1, Nearest)),
                vec![10, 10],
                20,
                0,
                50_000,
                false,
            ),
            // no days
            (
                cfw(2_500, 20, 100_000, r(1, Nearest)),
                vec![],
                0,
                0,
                0,
                false,
            ),
            (
                cfw(2_500, 20, 100_000, r(1, Nearest)),
                vec![0, 0],
                0,
                0,
                0,
                false,
            ),
            // rounding: 7 × 1 730 = 12 110 → nearest 25 = 12 100 (10 < 12.5)
            (
                cfw(1_730, 20, 100_000, r(25, Nearest)),
                vec![7],
                7,
                0,
                12_100,
                false,
            ),
            // 5 × 1 730 = 8 650 → up 100 = 8 700
            (
                cfw(1_730, 20, 100_000, r(100, Up)),
                vec![5],
                5,
                0,
                8_700,
                false,
            ),
            // amount cap exactly reached, not cut
            (
                cfw(2_500, 30, 50_000, r(1, Nearest)),
                vec![20],
                20,
                0,
                50_000,
                false,
            ),
            // amount cap cuts
            (
                cfw(2_500, 30, 50_000, r(1, Nearest)),
                vec![21],
                21,
                0,
                50_000,
                true,
            ),
            // cap not a multiple of the unit: 52 510 → 52 500 (down), never above the cap
            (
                cfw(2_500, 30, 52_510, r(100, Nearest)),
                vec![25],
                25,
                0,
                52_500,
                true,
            ),
            // 21 × 2 500 = 52 500 ≤ 52 500: not cut
            (
                cfw(2_500, 30, 52_510, r(100, Nearest)),
                vec![21],
                21,
                0,
                52_500,
                false,
            ),
            // rounding up pushes past the cap: 52 501 → 52 600 > 52 500 → cut to 52 500
            (
                cfw(52_501, 30, 52_510, r(100, Up)),
                vec![1],
                1,
                0,
                52_500,
                true,
            ),
            // both caps
            (
                cfw(3_000, 20, 45_000, r(1, Nearest)),
                vec![15, 15],
                20,
                10,
                45_000,
                true,
            ),
        ];
        for (i, (rule, days, counted, capped_off, amount, capped)) in cases.into_iter().enumerate()
        {
            rule.validate().unwrap();
            let got = rule.amount(&days);
            assert_eq!(
                got,
                CfwAmount {
                    days_counted: counted,
                    days_capped_off: capped_off,
                    amount,
                    capped_by_amount: capped
                },
                "case {i}"
            );
        }
    }

    #[test]
    fn cfw_huge_values_do_not_panic() {
        let rate = i64::MAX / 1000;
        let rule = cfw(rate, u32::MAX, i64::MAX, r(1000, Up));
        rule.validate().unwrap();
        // 1 001 days × (i64::MAX / 1000) is past i64::MAX: capped, not overflowed
        let a = rule.amount(&[1001]);
        assert!(a.capped_by_amount);
        assert_eq!(a.amount, i64::MAX / 1000 * 1000);
        let many = rule.amount(&[u32::MAX, u32::MAX, u32::MAX]);
        assert_eq!(many.days_counted, u32::MAX);
        assert_eq!(many.days_capped_off, u32::MAX);
        assert!(many.capped_by_amount);
        // one day fits exactly
        let one = rule.amount(&[1]);
        assert!(!one.capped_by_amount);
        assert_eq!(one.amount, rate / 1000 * 1000 + 1000);
    }

    #[test]
    fn cfw_validation_messages() {
        let cases: Vec<(CfwRule, &str)> = vec![
            (
                cfw(0, 20, 1000, r(1, Nearest)),
                "cash_for_work.daily_rate: must be positive, got 0",
            ),
            (
                cfw(100, 0, 1000, r(1, Nearest)),
                "cash_for_work.max_days_per_cycle: must be positive, got 0",
            ),
            (
                cfw(100, 5, -1, r(1, Nearest)),
                "cash_for_work.max_amount_per_household: must be positive, got -1",
            ),
            (
                cfw(100, 5, 20, r(25, Nearest)),
                "cash_for_work.max_amount_per_household: 20 is below the rounding unit 25; every household would be capped to 0",
            ),
            (
                cfw(100, 5, 20, r(-1, Nearest)),
                "cash_for_work.rounding.unit: must be at least 1, got -1",
            ),
        ];
        for (rule, message) in cases {
            assert_eq!(
                Rule::CashForWork(rule).validate().unwrap_err().to_string(),
                message
            );
        }
    }

    // ---- shelter ----

    fn pct(p: &str, condition: Option<&str>) -> ShelterTranche {
        ShelterTranche {
            value: TrancheValue::Percent(dec(p)),
            condition: condition.map(str::to_owned),
        }
    }

    fn amt(a: i64, condition: Option<&str>) -> ShelterTranche {
        ShelterTranche {
            value: TrancheValue::Amount(a),
            condition: condition.map(str::to_owned),
        }
    }

    fn shelter(total: i64, tranches: Vec<ShelterTranche>, rounding: Rounding) -> ShelterRule {
        ShelterRule {
            total,
            tranches,
            rounding,
        }
    }

    #[test]
    fn shelter_table() {
        let thirds = || {
            vec![
                pct("33.33", None),
                pct("33.33", Some("foundation")),
                pct("33.34", Some("roof")),
            ]
        };
        let cases: Vec<(ShelterRule, Vec<i64>)> = vec![
            (
                shelter(100_000, thirds(), r(1, Nearest)),
                vec![33_330, 33_330, 33_340],
            ),
            // 33 330 → 33 500 (up to 500); remainder 33 000
            (
                shelter(100_000, thirds(), r(500, Up)),
                vec![33_500, 33_500, 33_000],
            ),
            (
                shelter(100_000, thirds(), r(1000, Down)),
                vec![33_000, 33_000, 34_000],
            ),
            // a total that is not a multiple of the unit: only the last tranche is off-unit
            (
                shelter(100_001, thirds(), r(5, Nearest)),
                vec![33_330, 33_330, 33_341],
            ),
            // 40/60 of 150 000: exact, nothing to round
            (
                shelter(
                    150_000,
                    vec![pct("40", None), pct("60", Some("roof"))],
                    r(25, Nearest),
                ),
                vec![60_000, 90_000],
            ),
            // exactly half: 25 % of 1 250 = 312.5 = 12.5 units of 25 → 13 units = 325
            (
                shelter(
                    1_250,
                    vec![pct("25", None), pct("75", None)],
                    r(25, Nearest),
                ),
                vec![325, 925],
            ),
            // single tranche of 100 %
            (
                shelter(87_650, vec![pct("100", None)], r(100, Nearest)),
                vec![87_650],
            ),
            // amounts only
            (
                shelter(
                    200_000,
                    vec![
                        amt(50_000, None),
                        amt(80_000, Some("walls")),
                        amt(70_000, Some("roof")),
                    ],
                    r(100, Nearest),
                ),
                vec![50_000, 80_000, 70_000],
            ),
        ];
        for (i, (rule, want)) in cases.into_iter().enumerate() {
            rule.validate().unwrap();
            let got = rule.tranche_amounts();
            assert_eq!(got, want, "case {i}");
            assert_eq!(got.iter().sum::<i64>(), rule.total, "case {i}");
        }
    }

    #[test]
    fn shelter_tranche_due() {
        let rule = shelter(
            100_000,
            vec![
                pct("30", None),
                pct("40", Some("foundation")),
                pct("30", Some("roof")),
            ],
            r(1, Nearest),
        );
        assert!(rule.tranche_due(0, &[]));
        assert!(!rule.tranche_due(1, &[]));
        assert!(rule.tranche_due(1, &["foundation"]));
        assert!(!rule.tranche_due(1, &["Foundation"]));
        assert!(!rule.tranche_due(2, &["foundation"]));
        assert!(rule.tranche_due(2, &["foundation", "roof"]));
        assert!(!rule.tranche_due(3, &["foundation", "roof"]));
    }

    #[test]
    fn shelter_validation_messages() {
        let cases: Vec<(ShelterRule, &str)> = vec![
            (
                shelter(100_000, vec![pct("33.33", None), pct("33.33", None), pct("33.33", None)], r(1, Nearest)),
                "shelter.tranches: percentages must sum to exactly 100, got 99.99",
            ),
            (
                shelter(100_000, vec![amt(50_000, None), amt(40_000, None)], r(1, Nearest)),
                "shelter.tranches: amounts must sum to exactly the total 100000, got 90000",
            ),
            (
                shelter(100_000, vec![amt(50_000, None), pct("50", None)], r(1, Nearest)),
                "shelter.tranches[1]: mixes a fixed amount with percentages; use all percentages or all amounts",
            ),
            (
                shelter(100_000, vec![pct("50", None), amt(50_000, None)], r(1, Nearest)),
                "shelter.tranches[1]: mixes a fixed amount with percentages; use all percentages or all amounts",
            ),
            (
                shelter(100_000, vec![pct("0", None), pct("100", None)], r(1, Nearest)),
                "shelter.tranches[0].percent: must be above 0 and at most 100, got 0",
            ),
            (
                shelter(100_000, vec![pct("100.5", None)], r(1, Nearest)),
                "shelter.tranches[0].percent: must be above 0 and at most 100, got 100.5",
            ),
            (
                shelter(100_000, vec![pct("33.3333333", None), pct("66.6666667", None)], r(1, Nearest)),
                "shelter.tranches[0].percent: at most 6 decimal places, got 33.3333333",
            ),
            (
                shelter(100_000, vec![amt(0, None), amt(100_000, None)], r(1, Nearest)),
                "shelter.tranches[0].amount: must be positive, got 0",
            ),
            (
                shelter(0, vec![pct("100", None)], r(1, Nearest)),
                "shelter.total: must be positive, got 0",
            ),
            (
                shelter(100_000, vec![], r(1, Nearest)),
                "shelter.tranches: at least one tranche is needed",
            ),
            (
                shelter(100_000, vec![pct("100", Some("Roof Done"))], r(1, Nearest)),
                "shelter.tranches[0].condition: `Roof Done` is not a milestone code (1 to 64 characters of a-z, 0-9, _ and -)",
            ),
            (
                shelter(100_000, vec![pct("100", Some(""))], r(1, Nearest)),
                "shelter.tranches[0].condition: `` is not a milestone code (1 to 64 characters of a-z, 0-9, _ and -)",
            ),
            (
                shelter(1_000, vec![pct("0.01", None), pct("99.99", None)], r(25, Down)),
                "shelter.tranches[0]: rounds to 0 with a rounding unit of 25",
            ),
            (
                // 97 → 100, 1 → 25, 1 → 25: the remainder is −50
                shelter(100, vec![pct("97", None), pct("1", None), pct("1", None), pct("1", None)], r(25, Up)),
                "shelter.tranches[3]: the remainder after rounding the other tranches is -50; use a smaller rounding unit or another rounding mode",
            ),
            (
                shelter(100_000, vec![pct("100", None)], r(0, Nearest)),
                "shelter.rounding.unit: must be at least 1, got 0",
            ),
        ];
        for (rule, message) in cases {
            assert_eq!(
                Rule::Shelter(rule).validate().unwrap_err().to_string(),
                message
            );
        }
        let too_many = shelter(
            100_000,
            (0..13).map(|_| amt(1, None)).collect(),
            r(1, Nearest),
        );
        assert_eq!(
            too_many.validate().unwrap_err().to_string(),
            "shelter.tranches: at most 12 tranches, got 13"
        );
    }

    #[test]
    fn shelter_large_totals() {
        let total = i64::MAX / 1000 * 1000;
        let rule = shelter(
            total,
            vec![pct("33.33", None), pct("66.67", None)],
            r(1000, Nearest),
        );
        rule.validate().unwrap();
        let got = rule.tranche_amounts();
        assert_eq!(
            got.iter().map(|&a| i128::from(a)).sum::<i128>(),
            i128::from(total)
        );
        // i64::MAX total, the first tranche rounded up past i64::MAX: an error, not a panic
        let top = shelter(
            i64::MAX,
            vec![pct("99.999999", None), pct("0.000001", None)],
            r(10_000_000_000_000, Up),
        );
        assert_eq!(field_of(top.validate().unwrap_err()), "shelter.tranches[0]");
        assert!(matches!(
            top.checked_tranche_amounts(),
            Err(RuleError::Overflow { .. })
        ));
        assert!(top.tranche_amounts().is_empty());
        // amounts summing past i64::MAX
        let sum = shelter(
            i64::MAX,
            vec![amt(i64::MAX, None), amt(1, None)],
            r(1, Nearest),
        );
        assert!(matches!(sum.validate(), Err(RuleError::Overflow { .. })));
        // (unvalidated: still no panic, and still summing to the total)
        assert_eq!(sum.tranche_amounts(), vec![i64::MAX, 0]);
    }

    // ---- JSON ----

    const MPCA_JSON: &str = r#"{
        "modality": "mpca",
        "amount": {"kind": "by_size", "bands": [
            {"min_size": 1, "max_size": 3, "amount": 32510},
            {"min_size": 4, "max_size": 6, "amount": 48740},
            {"min_size": 7, "amount": 65000}
        ]},
        "tranches": 3,
        "rounding": {"unit": 25, "mode": "nearest"}
    }"#;

    const CFW_JSON: &str = r#"{"modality": "cash_for_work", "daily_rate": 2500,
        "max_days_per_cycle": 20, "max_amount_per_household": 50000,
        "rounding": {"unit": 100, "mode": "down"}}"#;

    const SHELTER_JSON: &str = r#"{"modality": "shelter", "total": 100000,
        "tranches": [{"percent": "33.33"}, {"percent": 33.33, "condition": "foundation"}],
        "rounding": {"unit": 1, "mode": "up"}}"#;

    #[test]
    fn json_round_trip() {
        let shelter_ok = SHELTER_JSON.replace("33.33, ", "\"33.33\", ").replace(
            "}],",
            "}, {\"percent\": 33, \"condition\": \"roof\"}, {\"percent\": \"0.34\"}],",
        );
        let flat = r#"{"modality":"mpca","amount":{"kind":"flat","amount":45000},"tranches":6,
            "rounding":{"unit":5,"mode":"up"}}"#;
        let amounts = r#"{"modality":"shelter","total":90000,"tranches":[{"amount":30000},
            {"amount":60000,"condition":"roof"}],"rounding":{"unit":1,"mode":"nearest"}}"#;
        for (text, modality) in [
            (MPCA_JSON, Modality::Mpca),
            (flat, Modality::Mpca),
            (CFW_JSON, Modality::CashForWork),
            (shelter_ok.as_str(), Modality::Shelter),
            (amounts, Modality::Shelter),
        ] {
            let rule = Rule::from_json(text).unwrap();
            assert_eq!(rule.modality(), modality);
            let json = rule.to_json();
            assert_eq!(Rule::from_json(&json).unwrap(), rule, "{json}");
        }
        let rule = Rule::from_json(&shelter_ok).unwrap();
        let json = rule.to_json();
        assert!(json.contains(r#"{"percent":"33.33"}"#), "{json}");
        assert!(
            json.contains(r#"{"percent":"33","condition":"roof"}"#),
            "{json}"
        );
        let Rule::Mpca(m) = Rule::from_json(MPCA_JSON).unwrap() else {
            panic!("not mpca")
        };
        assert_eq!(
            m.amount,
            MpcaAmount::BySize {
                bands: sahel_bands()
            }
        );
        let json = Rule::Mpca(m).to_json();
        assert!(json.starts_with(r#"{"modality":"mpca","amount":{"kind":"by_size","bands":[{"min_size":1,"max_size":3,"amount":32510}"#), "{json}");
    }

    #[test]
    fn json_errors() {
        // JSON floats are refused for percentages
        let e = Rule::from_json(SHELTER_JSON).unwrap_err().to_string();
        assert!(e.contains("write percentages as strings"), "{e}");
        // validation errors name the field
        let e = Rule::from_json(&MPCA_JSON.replace("\"min_size\": 7", "\"min_size\": 6"))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "mpca.amount.bands[2]: overlaps bands[1] (sizes 4 to 6)");
        let cases = [
            (r#"{"modality": "cfw"}"#, "unknown variant `cfw`"),
            (
                &CFW_JSON.replace("daily_rate", "daily_rat") as &str,
                "unknown field `daily_rat`",
            ),
            (
                &CFW_JSON.replace("2500", "2500.5"),
                "invalid type: floating point",
            ),
            (
                &CFW_JSON.replace("\"down\"", "\"half_even\""),
                "unknown variant `half_even`",
            ),
            (
                &MPCA_JSON.replace("\"amount\": 65000", "\"amount\": 65000, \"extra\": 1"),
                "unknown field `extra`",
            ),
            (
                r#"{"modality":"shelter","total":1,"tranches":[{"percent":"50","amount":1}],"rounding":{"unit":1,"mode":"up"}}"#,
                "exactly one of `percent` or `amount`",
            ),
            (
                r#"{"modality":"shelter","total":1,"tranches":[{"percent":"-5"}],"rounding":{"unit":1,"mode":"up"}}"#,
                "`-5` is not a percentage",
            ),
            (
                r#"{"modality":"shelter","total":1,"tranches":[{"percent":"1e2"}],"rounding":{"unit":1,"mode":"up"}}"#,
                "`1e2` is not a percentage",
            ),
            ("[", "EOF"),
        ];
        for (text, needle) in cases {
            let e = Rule::from_json(text).unwrap_err();
            assert!(matches!(e, RuleError::Json(_)), "{text}: {e}");
            assert!(e.to_string().contains(needle), "{text}: {e}");
        }
    }

    // ---- properties ----

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn mode() -> impl Strategy<Value = RoundingMode> {
            prop_oneof![Just(Nearest), Just(Down), Just(Up)]
        }

        proptest! {
            #[test]
            fn shelter_tranches_sum_to_total(
                total in 1i64..=1_000_000_000_000,
                // percentages in hundredths of a percent, at least 1 each
                cuts in proptest::collection::vec(1u32..10_000, 0..6),
                unit in prop_oneof![Just(1i64), Just(5), Just(25), Just(100), 1i64..10_000],
                mode in mode(),
            ) {
                let mut parts: Vec<u32> = Vec::new();
                let mut left = 10_000u32;
                for c in cuts {
                    if c < left { parts.push(c); left -= c; }
                }
                parts.push(left);
                let tranches = parts
                    .iter()
                    .map(|&p| ShelterTranche {
                        value: TrancheValue::Percent(Decimal::new(i64::from(p), 2)),
                        condition: None,
                    })
                    .collect();
                let rule = shelter(total, tranches, r(unit, mode));
                let got = rule.checked_tranche_amounts().unwrap();
                prop_assert_eq!(got.len(), parts.len());
                prop_assert_eq!(got.iter().sum::<i64>(), total);
                // all but the last are multiples of the unit
                for a in &got[..got.len() - 1] {
                    prop_assert_eq!(a % unit, 0);
                }
                if rule.validate().is_ok() {
                    prop_assert!(got.iter().all(|&a| a > 0));
                }
            }

            #[test]
            fn mpca_tranches_are_multiples_near_the_amount(
                amount in 1i64..=i64::MAX / 100,
                unit in prop_oneof![Just(1i64), Just(5), Just(25), Just(100), 1i64..1_000_000],
                tranches in 1u32..=24,
                size in 1u16..=60,
            ) {
                let rule = mpca_bands(
                    vec![band(1, Some(4), amount), band(5, None, amount / 2 + 1)],
                    tranches,
                    r(unit, Nearest),
                );
                let monthly = rule.monthly_amount(size).unwrap();
                match rule.tranche_amounts(size) {
                    Ok(got) => {
                        prop_assert_eq!(got.len(), tranches as usize);
                        for a in got {
                            prop_assert_eq!(a % unit, 0);
                            // within unit/2: |a − monthly| × 2 ≤ unit
                            let diff = (i128::from(a) - i128::from(monthly)).abs();
                            prop_assert!(diff * 2 <= i128::from(unit));
                        }
                    }
                    Err(e) => {
                        let is_overflow = matches!(e, RuleError::Overflow { .. });
                        prop_assert!(is_overflow, "{}", e);
                    }
                }
            }
        }
    }
}
