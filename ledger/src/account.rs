//! Accounts: hierarchical codes, types with their normal side, balance rules, and the
//! opening-on-first-use policy.
//!
//! An account code is a `:`-separated path whose first segment names its type, as hledger
//! does: `assets:float:orange-money-ml`, `liabilities:entitlements:HH-000123`,
//! `funds:MLI-MPCA-2024:mpca`, `expense:transfers:MLI-MPCA-2024:mpca`, `income:interest`.
//!
//! Accounts are opened explicitly (`Ledger::open_account`) or, when a posted line names an
//! account that does not exist yet, on first use with the currency of that line and the
//! balance rule given by [`OpeningPolicy`] (see the README's chart of accounts).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::money::Currency;

/// Why an account code, type or rule was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    #[error("account code `{0}` is invalid: use 2 to 8 `:`-separated segments of letters, digits, `-`, `_` or `.` (at most 200 characters)")]
    InvalidCode(String),
    #[error("account code `{0}` does not start with a known type (assets, liabilities, funds, equity, income, expense)")]
    UnknownRoot(String),
    #[error("account `{code}` is a {root} account but was declared as {declared}")]
    TypeMismatch {
        code: String,
        root: AccountType,
        declared: AccountType,
    },
    #[error("unknown account type `{0}` (asset, liability, fund, income, expense)")]
    UnknownType(String),
    #[error("unknown balance rule `{0}` (must_not_go_negative, may_overdraw)")]
    UnknownRule(String),
}

/// A validated account code.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct AccountCode(String);

impl AccountCode {
    pub fn parse(code: &str) -> Result<Self, AccountError> {
        let shown = || AccountError::InvalidCode(code.chars().take(60).collect());
        if code.len() > 200 {
            return Err(shown());
        }
        let segments: Vec<&str> = code.split(':').collect();
        if !(2..=8).contains(&segments.len()) {
            return Err(shown());
        }
        let segment_ok = |s: &&str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        };
        if !segments.iter().all(segment_ok) {
            return Err(shown());
        }
        let code = AccountCode(code.to_owned());
        code.root_type()?;
        Ok(code)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The type named by the first segment.
    pub fn root_type(&self) -> Result<AccountType, AccountError> {
        let root = self.0.split(':').next().unwrap_or_default();
        match root {
            "assets" | "asset" => Ok(AccountType::Asset),
            "liabilities" | "liability" => Ok(AccountType::Liability),
            "funds" | "fund" | "equity" => Ok(AccountType::Fund),
            "income" | "revenue" | "revenues" => Ok(AccountType::Income),
            "expense" | "expenses" => Ok(AccountType::Expense),
            _ => Err(AccountError::UnknownRoot(self.0.clone())),
        }
    }
}

impl fmt::Display for AccountCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for AccountCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for AccountCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        AccountCode::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Debit or credit.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Debit,
    Credit,
}

impl Side {
    /// One-letter form used in storage (`D`, `C`).
    pub fn as_db(&self) -> &'static str {
        match self {
            Side::Debit => "D",
            Side::Credit => "C",
        }
    }

    pub fn from_db(s: &str) -> Option<Side> {
        match s {
            "D" => Some(Side::Debit),
            "C" => Some(Side::Credit),
            _ => None,
        }
    }

    pub fn opposite(&self) -> Side {
        match self {
            Side::Debit => Side::Credit,
            Side::Credit => Side::Debit,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Side::Debit => "debit",
            Side::Credit => "credit",
        }
    }
}

/// The five account types; the type fixes the normal side.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountType {
    Asset,
    Liability,
    /// Funds (net assets / equity): donor funding per programme and budget line.
    Fund,
    Income,
    Expense,
}

impl AccountType {
    pub fn normal_side(&self) -> Side {
        match self {
            AccountType::Asset | AccountType::Expense => Side::Debit,
            AccountType::Liability | AccountType::Fund | AccountType::Income => Side::Credit,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            AccountType::Asset => "asset",
            AccountType::Liability => "liability",
            AccountType::Fund => "fund",
            AccountType::Income => "income",
            AccountType::Expense => "expense",
        }
    }

    pub fn parse(s: &str) -> Result<Self, AccountError> {
        match s {
            "asset" => Ok(AccountType::Asset),
            "liability" => Ok(AccountType::Liability),
            "fund" | "equity" => Ok(AccountType::Fund),
            "income" => Ok(AccountType::Income),
            "expense" => Ok(AccountType::Expense),
            _ => Err(AccountError::UnknownType(s.chars().take(30).collect())),
        }
    }
}

impl fmt::Display for AccountType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether an account's balance (on its normal side) may go below zero.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BalanceRule {
    /// The normal-side balance must stay ≥ 0 after every entry (float, budget lines,
    /// household entitlements, in-transit).
    MustNotGoNegative,
    MayOverdraw,
}

impl BalanceRule {
    pub fn as_str(&self) -> &'static str {
        match self {
            BalanceRule::MustNotGoNegative => "must_not_go_negative",
            BalanceRule::MayOverdraw => "may_overdraw",
        }
    }

    pub fn parse(s: &str) -> Result<Self, AccountError> {
        match s {
            "must_not_go_negative" => Ok(BalanceRule::MustNotGoNegative),
            "may_overdraw" => Ok(BalanceRule::MayOverdraw),
            _ => Err(AccountError::UnknownRule(s.chars().take(30).collect())),
        }
    }
}

/// What to open: used for explicit opening and produced by the policy on first use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSpec {
    pub code: AccountCode,
    pub account_type: AccountType,
    pub currency: Currency,
    pub rule: BalanceRule,
}

impl AccountSpec {
    /// Checks that the declared type matches the code's root segment.
    pub fn new(
        code: AccountCode,
        account_type: AccountType,
        currency: Currency,
        rule: BalanceRule,
    ) -> Result<Self, AccountError> {
        let root = code.root_type()?;
        if root != account_type {
            return Err(AccountError::TypeMismatch {
                code: code.0,
                root,
                declared: account_type,
            });
        }
        Ok(AccountSpec {
            code,
            account_type,
            currency,
            rule,
        })
    }
}

/// The rule for opening an account on first use: the type comes from the code's root and the
/// balance rule from the first matching prefix below. Accounts whose balance protects money
/// (provider float, budget lines, household entitlements, money in transit) may not go negative;
/// everything else may overdraw. Open an account explicitly to choose otherwise.
#[derive(Debug, Clone)]
pub struct OpeningPolicy {
    pub protected_prefixes: Vec<String>,
}

impl Default for OpeningPolicy {
    fn default() -> Self {
        OpeningPolicy {
            protected_prefixes: [
                "assets:float:",
                "assets:bank",
                "funds:",
                "liabilities:entitlements:",
                "liabilities:in-transit:",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        }
    }
}

impl OpeningPolicy {
    pub fn spec_for(
        &self,
        code: &AccountCode,
        currency: Currency,
    ) -> Result<AccountSpec, AccountError> {
        let account_type = code.root_type()?;
        let rule = if self
            .protected_prefixes
            .iter()
            .any(|p| code.as_str().starts_with(p.as_str()))
        {
            BalanceRule::MustNotGoNegative
        } else {
            BalanceRule::MayOverdraw
        };
        AccountSpec::new(code.clone(), account_type, currency, rule)
    }
}

/// A stored account with its running totals.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Account {
    #[serde(skip)]
    pub id: i64,
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "liabilities:entitlements:HH-000123"))]
    pub code: AccountCode,
    pub account_type: AccountType,
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "XOF"))]
    pub currency: Currency,
    pub rule: BalanceRule,
    /// Sum of all debit lines, in minor units.
    pub debits: i64,
    /// Sum of all credit lines, in minor units.
    pub credits: i64,
}

impl Account {
    /// Balance on the account's normal side (a household's entitlement account shows what it is
    /// owed as a positive number).
    pub fn balance(&self) -> i128 {
        normal_balance(self.account_type, self.debits, self.credits)
    }

    /// Debits minus credits: positive for debit balances, the sign hledger shows.
    pub fn signed_balance(&self) -> i128 {
        i128::from(self.debits) - i128::from(self.credits)
    }
}

pub fn normal_balance(t: AccountType, debits: i64, credits: i64) -> i128 {
    let (d, c) = (i128::from(debits), i128::from(credits));
    match t.normal_side() {
        Side::Debit => d - c,
        Side::Credit => c - d,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_validated() {
        assert!(AccountCode::parse("liabilities:entitlements:HH-000123").is_ok());
        assert!(AccountCode::parse("assets:float:orange-money.ml").is_ok());
        for bad in [
            "assets",
            "assets::bank",
            "assets:bank account",
            ":assets:bank",
            "assets:bank:",
            "assets:bänk",
            "a:b:c:d:e:f:g:h:i",
        ] {
            assert!(
                matches!(AccountCode::parse(bad), Err(AccountError::InvalidCode(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            AccountCode::parse("cash:bank"),
            Err(AccountError::UnknownRoot(_))
        ));
    }

    #[test]
    fn policy_protects_money_holding_accounts() {
        let xof = Currency::parse("XOF").unwrap();
        let p = OpeningPolicy::default();
        let spec = |c: &str| p.spec_for(&AccountCode::parse(c).unwrap(), xof).unwrap();
        assert_eq!(
            spec("assets:float:orange").rule,
            BalanceRule::MustNotGoNegative
        );
        assert_eq!(
            spec("liabilities:entitlements:HH-1").rule,
            BalanceRule::MustNotGoNegative
        );
        assert_eq!(spec("funds:P:mpca").account_type, AccountType::Fund);
        assert_eq!(
            spec("expense:transfers:P:mpca").rule,
            BalanceRule::MayOverdraw
        );
    }

    #[test]
    fn declared_type_must_match_root() {
        let xof = Currency::parse("XOF").unwrap();
        let code = AccountCode::parse("assets:bank").unwrap();
        assert!(matches!(
            AccountSpec::new(code, AccountType::Expense, xof, BalanceRule::MayOverdraw),
            Err(AccountError::TypeMismatch { .. })
        ));
    }

    #[test]
    fn normal_balance_follows_type() {
        assert_eq!(normal_balance(AccountType::Asset, 10, 3), 7);
        assert_eq!(normal_balance(AccountType::Liability, 10, 3), -7);
    }
}
