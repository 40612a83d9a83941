//! Providers as configuration: who pays which households (by mobile operator), in which
//! currency, within which per-transaction limits, for which fee, and through which adapter.
//!
//! A configuration file is JSON (see [`PaymentsConfig::from_json`] and the README):
//!
//! ```json
//! {"providers": [{"name": "orange-money", "adapter": "gsma-mmapi",
//!    "base_url": "https://api.example.org/mm/v1.2", "credentials": {"env": "CVA_ORANGE_TOKEN"},
//!    "currency": "XOF", "operators": ["orange-ml"], "min_amount": "500",
//!    "max_amount": "1500000", "fees": {"flat": "0", "percent": "1", "minimum": "100"}}],
//!  "approvals": [{"above": "0", "approvals": 1, "authorisations": 1, "releases": 1},
//!                {"above": "10000000", "approvals": 1, "authorisations": 2, "releases": 1}]}
//! ```
//!
//! Credentials are a *reference* (an environment variable or a file path), never the secret:
//! nothing here stores or prints one. Each provider has three ledger accounts:
//! [`Provider::float_account`] (may not go negative), [`Provider::in_transit_account`] and
//! [`Provider::fees_account`].

use std::collections::BTreeSet;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::Deserialize;

/// A configuration error, naming the field (`providers[0].currency`) and the reason.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {reason}")]
pub struct ConfigError {
    pub field: String,
    pub reason: String,
}

fn err(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// How the batch reaches the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum AdapterKind {
    /// GSMA Mobile Money API v1.2 (`/batchtransactions`).
    #[serde(rename = "gsma-mmapi")]
    GsmaMmapi,
    /// A bulk-payment CSV exported for the provider and a result file imported back.
    #[serde(rename = "file")]
    File,
}

/// Where the provider's secret is, never the secret itself.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// Name of an environment variable holding the token.
    pub env: Option<String>,
    /// Path of a file holding the token.
    pub file: Option<String>,
}

impl Credentials {
    /// Reads the secret from where it is referenced (environment variable or file; the file's
    /// content trimmed). The error names the reference, never the secret.
    pub fn secret(&self) -> Result<String, String> {
        if let Some(var) = &self.env {
            return std::env::var(var)
                .map(|v| v.trim().to_owned())
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("environment variable `{var}` is not set or empty"));
        }
        if let Some(path) = &self.file {
            return std::fs::read_to_string(path)
                .map(|v| v.trim().to_owned())
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("secret file `{path}` cannot be read or is empty"));
        }
        Err("no credential reference".into())
    }
}

/// Fee per transaction: `flat + amount × percent / 100`, at least `minimum`, rounded up to the
/// currency's whole minor unit (the provider never charges a fraction).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FeeSchedule {
    #[serde(default)]
    pub flat: Decimal,
    #[serde(default)]
    pub percent: Decimal,
    #[serde(default)]
    pub minimum: Decimal,
}

impl FeeSchedule {
    /// The fee for a transaction of `amount` (major units of a currency with `exponent`
    /// decimals), in minor units.
    pub fn fee_minor(&self, amount_minor: i64, exponent: u32) -> Option<i64> {
        let amount = Decimal::from(amount_minor);
        let scale = Decimal::from(10i64.checked_pow(exponent)?);
        let variable = amount
            .checked_mul(self.percent)?
            .checked_div(Decimal::ONE_HUNDRED)?;
        let fee = (self.flat.checked_mul(scale)?)
            .checked_add(variable)?
            .max(self.minimum.checked_mul(scale)?);
        let fee = fee.round_dp_with_strategy(0, RoundingStrategy::AwayFromZero);
        i64::try_from(fee).ok()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    name: String,
    adapter: AdapterKind,
    #[serde(default)]
    base_url: Option<String>,
    #[serde(default)]
    credentials: Option<Credentials>,
    currency: String,
    operators: Vec<String>,
    min_amount: Decimal,
    max_amount: Decimal,
    #[serde(default)]
    fees: FeeSchedule,
    #[serde(default)]
    debit_party: Option<DebitParty>,
}

/// How the provider knows the organisation's disbursement account: the GSMA `debitParty`
/// sent with every transaction (the spec requires one), e.g. `{"key": "walletid", "value":
/// "123"}`. Defaults to `{"key": "organisationid", "value": <provider name>}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebitParty {
    pub key: String,
    pub value: String,
}

/// One provider, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Provider {
    pub name: String,
    pub adapter: AdapterKind,
    pub base_url: Option<String>,
    pub credentials: Option<Credentials>,
    pub currency: cva_ledger::money::Currency,
    /// Mobile operators served (names from the operator prefix table, e.g. `orange-ml`).
    pub operators: BTreeSet<String>,
    /// Per-transaction limits, minor units.
    pub min_minor: i64,
    pub max_minor: i64,
    pub fees: FeeSchedule,
    pub debit_party: DebitParty,
}

impl Provider {
    pub fn float_account(&self) -> String {
        format!("assets:float:{}", self.name)
    }
    pub fn in_transit_account(&self) -> String {
        format!("liabilities:in-transit:{}", self.name)
    }
    pub fn fees_account(&self) -> String {
        format!("expense:fees:{}", self.name)
    }
    /// The fee of one transaction, minor units.
    pub fn fee_minor(&self, amount_minor: i64) -> Option<i64> {
        self.fees.fee_minor(amount_minor, self.currency.exponent())
    }
}

/// How many distinct people must approve, authorise and release a batch whose total is above
/// `above` (major units of the programme's currency).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalBand {
    pub above: Decimal,
    pub approvals: u8,
    pub authorisations: u8,
    pub releases: u8,
}

/// The whole payments configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentsConfig {
    pub providers: Vec<Provider>,
    /// The default bands, sorted by `above`, the first one at 0.
    pub approvals: Vec<ApprovalBand>,
    /// Bands of programmes that have their own (programme code → bands, validated the same
    /// way); other programmes use [`PaymentsConfig::approvals`].
    pub programme_approvals: std::collections::BTreeMap<String, Vec<ApprovalBand>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    providers: Vec<RawProvider>,
    approvals: Vec<ApprovalBand>,
    #[serde(default)]
    programme_approvals: std::collections::BTreeMap<String, Vec<ApprovalBand>>,
}

/// Sorts and checks one list of bands; `field` names it in errors.
fn bands(mut approvals: Vec<ApprovalBand>, field: &str) -> Result<Vec<ApprovalBand>, ConfigError> {
    approvals.sort_by_key(|b| b.above);
    match approvals.first() {
        Some(b) if b.above == Decimal::ZERO => {}
        _ => return Err(err(field, "the first band must start at `above: \"0\"`")),
    }
    for (i, b) in approvals.iter().enumerate() {
        if b.approvals == 0 || b.authorisations == 0 || b.releases == 0 {
            return Err(err(
                format!("{field}[{i}]"),
                "each step needs at least one person",
            ));
        }
        if i > 0 && approvals[i - 1].above == b.above {
            return Err(err(format!("{field}[{i}].above"), "two bands start here"));
        }
    }
    Ok(approvals)
}

impl PaymentsConfig {
    /// Parses and validates a configuration; the error names the field.
    pub fn from_json(text: &str) -> Result<PaymentsConfig, ConfigError> {
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| {
            err(
                format!("line {} column {}", e.line(), e.column()),
                e.to_string(),
            )
        })?;
        let mut names = BTreeSet::new();
        let mut served = BTreeSet::new();
        let mut providers = Vec::with_capacity(raw.providers.len());
        for (i, p) in raw.providers.into_iter().enumerate() {
            let f = |name: &str| format!("providers[{i}].{name}");
            let ok_name = (2..=40).contains(&p.name.len())
                && p.name
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
            if !ok_name {
                return Err(err(
                    f("name"),
                    "use 2 to 40 lowercase letters, digits or `-`",
                ));
            }
            if !names.insert(p.name.clone()) {
                return Err(err(f("name"), "two providers have this name"));
            }
            let currency = cva_ledger::money::Currency::parse(&p.currency)
                .map_err(|e| err(f("currency"), e.to_string()))?;
            if p.adapter == AdapterKind::GsmaMmapi {
                let url = p.base_url.as_deref().unwrap_or("");
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(err(
                        f("base_url"),
                        "a gsma-mmapi provider needs an http(s) URL",
                    ));
                }
                match &p.credentials {
                    Some(Credentials {
                        env: Some(_),
                        file: None,
                    })
                    | Some(Credentials {
                        env: None,
                        file: Some(_),
                    }) => {}
                    _ => {
                        return Err(err(
                            f("credentials"),
                            "give exactly one of `env` (a variable name) or `file` (a path)",
                        ))
                    }
                }
            }
            if p.operators.is_empty() {
                return Err(err(f("operators"), "name at least one mobile operator"));
            }
            for o in &p.operators {
                if !served.insert(o.clone()) {
                    return Err(err(
                        f("operators"),
                        format!("operator `{o}` is served by two providers"),
                    ));
                }
            }
            let exp = currency.exponent();
            let minor = |v: Decimal, name: &str| -> Result<i64, ConfigError> {
                let scaled = v * Decimal::from(10i64.pow(exp));
                if v <= Decimal::ZERO || scaled.fract() != Decimal::ZERO {
                    return Err(err(
                        f(name),
                        format!("must be positive with at most {exp} decimals"),
                    ));
                }
                i64::try_from(scaled).map_err(|_| err(f(name), "too large"))
            };
            let (min_minor, max_minor) = (
                minor(p.min_amount, "min_amount")?,
                minor(p.max_amount, "max_amount")?,
            );
            if min_minor > max_minor {
                return Err(err(f("max_amount"), "is below min_amount"));
            }
            for (v, name) in [
                (p.fees.flat, "fees.flat"),
                (p.fees.percent, "fees.percent"),
                (p.fees.minimum, "fees.minimum"),
            ] {
                if v < Decimal::ZERO {
                    return Err(err(f(name), "cannot be negative"));
                }
            }
            let debit_party = match p.debit_party {
                Some(d) => {
                    if d.key.trim().is_empty()
                        || d.value.trim().is_empty()
                        || d.key.len() > 256
                        || d.value.len() > 256
                    {
                        return Err(err(
                            f("debit_party"),
                            "give a key and a value of 1 to 256 characters",
                        ));
                    }
                    d
                }
                None => DebitParty {
                    key: "organisationid".into(),
                    value: p.name.clone(),
                },
            };
            providers.push(Provider {
                debit_party,
                name: p.name,
                adapter: p.adapter,
                base_url: p.base_url,
                credentials: p.credentials,
                currency,
                operators: p.operators.into_iter().collect(),
                min_minor,
                max_minor,
                fees: p.fees,
            });
        }
        let approvals = bands(raw.approvals, "approvals")?;
        let mut programme_approvals = std::collections::BTreeMap::new();
        for (code, list) in raw.programme_approvals {
            let checked = bands(list, &format!("programme_approvals.{code}"))?;
            programme_approvals.insert(code, checked);
        }
        Ok(PaymentsConfig {
            providers,
            approvals,
            programme_approvals,
        })
    }

    /// The provider serving a mobile operator, if any.
    pub fn provider_for_operator(&self, operator: &str) -> Option<&Provider> {
        self.providers
            .iter()
            .find(|p| p.operators.contains(operator))
    }

    pub fn provider(&self, name: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.name == name)
    }

    /// The band of a batch total (minor units of a currency with `exponent` decimals) under
    /// the default bands: the highest band whose `above` the total exceeds (or the first).
    pub fn band(&self, total_minor: i64, exponent: u32) -> ApprovalBand {
        self.band_for("", total_minor, exponent)
    }

    /// The band of a batch total of `programme`: its own bands if it has some, else the
    /// default ones.
    pub fn band_for(&self, programme: &str, total_minor: i64, exponent: u32) -> ApprovalBand {
        let approvals = self
            .programme_approvals
            .get(programme)
            .unwrap_or(&self.approvals);
        let total = Decimal::new(total_minor, exponent);
        // Validated configurations have a band at 0; a hand-built empty one asks for the most
        // cautious default rather than none.
        let mut band = approvals.first().copied().unwrap_or(ApprovalBand {
            above: Decimal::ZERO,
            approvals: 1,
            authorisations: 1,
            releases: 1,
        });
        for b in approvals {
            if total > b.above {
                band = *b;
            }
        }
        band
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const GOOD: &str = r#"{"providers": [
        {"name": "orange-money", "adapter": "gsma-mmapi", "base_url": "https://mm.example/v1.2",
         "credentials": {"env": "TOKEN"}, "currency": "XOF", "operators": ["orange-ml"],
         "min_amount": "500", "max_amount": "1500000", "fees": {"percent": "1.5", "minimum": "100"}},
        {"name": "moov-money", "adapter": "file", "currency": "XOF", "operators": ["moov-ml"],
         "min_amount": "500", "max_amount": "1500000"}],
      "approvals": [{"above": "10000000", "approvals": 1, "authorisations": 2, "releases": 1},
                    {"above": "0", "approvals": 1, "authorisations": 1, "releases": 1}]}"#;

    fn with(from: &str, to: &str) -> Result<PaymentsConfig, ConfigError> {
        assert!(GOOD.contains(from), "{from}");
        PaymentsConfig::from_json(&GOOD.replacen(from, to, 1))
    }

    #[test]
    fn a_good_configuration_routes_by_operator_and_bands_by_total() {
        let c = PaymentsConfig::from_json(GOOD).unwrap();
        assert_eq!(
            c.provider_for_operator("moov-ml").unwrap().name,
            "moov-money"
        );
        assert!(c.provider_for_operator("telecel-ml").is_none());
        let p = c.provider("orange-money").unwrap();
        assert_eq!((p.min_minor, p.max_minor), (500, 1_500_000));
        assert_eq!(p.float_account(), "assets:float:orange-money");
        // Bands sorted; "above" is strict.
        assert_eq!(c.band(10_000_000, 0).authorisations, 1);
        assert_eq!(c.band(10_000_001, 0).authorisations, 2);
        assert_eq!(c.band_for("OTHER", 10_000_001, 0).authorisations, 2);
    }

    #[test]
    fn the_example_configuration_in_data_is_valid() {
        let c =
            PaymentsConfig::from_json(include_str!("../../data/payments.example.json")).unwrap();
        assert_eq!(c.providers.len(), 2);
        assert_eq!(c.band_for("MLI-CFW-24", 1, 0).approvals, 2);
    }

    #[test]
    fn a_programme_can_have_its_own_bands() {
        let c = with(
            r#""approvals": ["#,
            r#""programme_approvals": {"MLI-CFW-24": [{"above": "0", "approvals": 1, "authorisations": 1, "releases": 1},
               {"above": "1000000", "approvals": 3, "authorisations": 2, "releases": 2}]},
               "approvals": ["#,
        )
        .unwrap();
        assert_eq!(c.band_for("MLI-CFW-24", 1_000_001, 0).approvals, 3);
        assert_eq!(c.band_for("MLI-CFW-24", 1_000_000, 0).approvals, 1);
        assert_eq!(c.band_for("MLI-MPCA-24", 10_000_001, 0).authorisations, 2);
        let e = with(
            r#""approvals": ["#,
            r#""programme_approvals": {"P": [{"above": "5", "approvals": 1, "authorisations": 1, "releases": 1}]},
               "approvals": ["#,
        )
        .unwrap_err();
        assert_eq!(e.field, "programme_approvals.P");
    }

    #[test]
    fn fees_are_rounded_up_to_the_minor_unit_with_a_minimum() {
        let c = PaymentsConfig::from_json(GOOD).unwrap();
        let p = c.provider("orange-money").unwrap();
        assert_eq!(p.fee_minor(20_000), Some(300)); // 1.5 %
        assert_eq!(p.fee_minor(5_000), Some(100)); // 75 → minimum 100
        assert_eq!(p.fee_minor(20_001), Some(301)); // 300.015 → up
        let usd = FeeSchedule {
            flat: Decimal::new(25, 2),
            percent: Decimal::ONE,
            minimum: Decimal::ZERO,
        };
        // 0.25 USD + 1 % of 10.01 USD = 0.3501 USD → 36 cents.
        assert_eq!(usd.fee_minor(1001, 2), Some(36));
        assert_eq!(c.provider("moov-money").unwrap().fee_minor(20_000), Some(0));
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases = [
            (
                r#""name": "orange-money""#,
                r#""name": "Orange Money""#,
                "providers[0].name",
            ),
            (
                r#""name": "moov-money""#,
                r#""name": "orange-money""#,
                "providers[1].name",
            ),
            (
                r#""currency": "XOF", "operators": ["orange-ml"]"#,
                r#""currency": "XYZ", "operators": ["orange-ml"]"#,
                "providers[0].currency",
            ),
            (
                r#""base_url": "https://mm.example/v1.2""#,
                r#""base_url": "mm.example""#,
                "providers[0].base_url",
            ),
            (
                r#"{"env": "TOKEN"}"#,
                r#"{"env": "TOKEN", "file": "/run/token"}"#,
                "providers[0].credentials",
            ),
            (
                r#""operators": ["moov-ml"]"#,
                r#""operators": ["orange-ml"]"#,
                "providers[1].operators",
            ),
            (
                r#""min_amount": "500", "max_amount": "1500000", "fees""#,
                r#""min_amount": "0.5", "max_amount": "1500000", "fees""#,
                "providers[0].min_amount",
            ),
            (
                r#""max_amount": "1500000"}]"#,
                r#""max_amount": "100"}]"#,
                "providers[1].max_amount",
            ),
            (
                r#""percent": "1.5""#,
                r#""percent": "-1""#,
                "providers[0].fees.percent",
            ),
            (
                r#"{"above": "0", "approvals": 1"#,
                r#"{"above": "5", "approvals": 1"#,
                "approvals",
            ),
            (
                r#""authorisations": 2"#,
                r#""authorisations": 0"#,
                "approvals[1]",
            ),
        ];
        for (from, to, field) in cases {
            let e = with(from, to).unwrap_err();
            assert_eq!(e.field, field, "{to}: {e}");
        }
        let e = PaymentsConfig::from_json(r#"{"providers": [], "approvals": [], "secret": 1}"#)
            .unwrap_err();
        assert!(e.reason.contains("unknown field"), "{e}");
    }
}
