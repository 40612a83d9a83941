//! Programmes: identity (code, donor, grant), currency and period, regions, budget lines per
//! modality (each a fund account in the ledger, `funds:PROGRAMME:LINE`, that may not go
//! negative), dated exchange rates to the reporting currency, and versioned transfer-value rules.
//!
//! Budget figures come from the ledger alone: a line's fund account is credited when donor money
//! is received for it ([`Registry::fund_budget_line`]) and debited by every entitlement granted
//! against it, so its balance is what remains to commit and its debits are what was committed.

use chrono::NaiveDate;
use cva_households::model::PCode;
use cva_ledger::account::{AccountCode, AccountSpec, AccountType, BalanceRule, Side};
use cva_ledger::audit::{AuditConn, AuditContext, AuditRecord};
use cva_ledger::entry::{IdempotencyKey, Line, NewEntry};
use cva_ledger::money::{Amount, Currency};
use cva_ledger::posting::Posting;
use cva_programmes::rules::{Modality, Rule};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::{Registry, RegistryError, Result};

/// The bank account donor money arrives in.
pub const BANK: &str = "assets:bank";

/// 2–40 characters: letters, digits, `.`, `_`, `-`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProgrammeCode(String);

impl ProgrammeCode {
    pub fn parse(s: &str) -> Result<ProgrammeCode> {
        let b = s.as_bytes();
        let ok = (2..=40).contains(&b.len())
            && b[0].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
        if ok {
            Ok(ProgrammeCode(s.to_owned()))
        } else {
            Err(RegistryError::invalid(
                "programme",
                "use 2 to 40 letters, digits, `.`, `_` or `-`, starting with a letter or digit",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ProgrammeCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewProgramme {
    pub code: String,
    pub name: String,
    pub donor: String,
    pub grant_ref: String,
    pub currency: String,
    pub reporting_currency: String,
    pub starts_on: NaiveDate,
    pub ends_on: NaiveDate,
    /// Admin p-codes of the regions covered, e.g. `ML05`.
    pub regions: Vec<String>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Programme {
    pub id: i64,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub code: ProgrammeCode,
    pub name: String,
    pub donor: String,
    pub grant_ref: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub currency: Currency,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub reporting_currency: Currency,
    pub starts_on: NaiveDate,
    pub ends_on: NaiveDate,
    pub regions: Vec<String>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetLine {
    pub id: i64,
    pub code: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub modality: Modality,
    /// Planned amount, minor units.
    pub amount: i64,
    /// The fund account in the ledger.
    pub account: String,
    /// Received from the donor so far (credits to the fund account), minor units.
    pub funded: i64,
    /// Committed to households (debits), minor units.
    pub committed: i64,
    /// Funded and not yet committed (the fund account's balance).
    pub available: i64,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rate {
    pub rate_date: NaiveDate,
    /// Reporting-currency units per programme-currency unit.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub rate: Decimal,
    pub source: String,
    pub recorded_by: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleVersion {
    pub version: i32,
    pub rule: Rule,
    pub created_by: String,
}

const PROGRAMME_COLUMNS: &str = "id, code, name, donor, grant_ref, currency, reporting_currency, \
                                 starts_on, ends_on, regions";

fn text_field(field: &str, v: &str, max: usize) -> Result<String> {
    let v = v.trim();
    if v.is_empty() || v.chars().count() > max {
        return Err(RegistryError::invalid(
            field,
            format!("must be 1 to {max} characters"),
        ));
    }
    Ok(v.to_owned())
}

fn currency(field: &str, code: &str) -> Result<Currency> {
    Currency::parse(code).map_err(|e| RegistryError::invalid(field, e.to_string()))
}

impl Registry {
    /// Creates a programme (audited `programme.create`).
    pub async fn create_programme(
        &self,
        new: NewProgramme,
        ctx: &AuditContext,
    ) -> Result<Programme> {
        let code = ProgrammeCode::parse(&new.code)?;
        let name = text_field("name", &new.name, 200)?;
        let donor = text_field("donor", &new.donor, 200)?;
        let grant_ref = text_field("grant_ref", &new.grant_ref, 100)?;
        let cur = currency("currency", &new.currency)?;
        let rep = currency("reporting_currency", &new.reporting_currency)?;
        if new.ends_on < new.starts_on {
            return Err(RegistryError::invalid(
                "ends_on",
                "must not be before starts_on",
            ));
        }
        let mut regions = Vec::with_capacity(new.regions.len());
        for (i, r) in new.regions.iter().enumerate() {
            let p =
                PCode::parse(r).map_err(|e| RegistryError::invalid(format!("regions[{i}]"), e))?;
            regions.push(p.as_str().to_owned());
        }
        if regions.is_empty() {
            return Err(RegistryError::invalid(
                "regions",
                "name at least one region p-code",
            ));
        }
        regions.sort();
        regions.dedup();
        let regions_json =
            serde_json::to_string(&regions).map_err(|e| RegistryError::Corrupt(e.to_string()))?;
        let now = crate::now();
        let rec = AuditRecord::new(
            ctx,
            "programme.create",
            "programme",
            code.as_str(),
            serde_json::json!({"name": name, "donor": donor, "grant_ref": grant_ref,
                "currency": cur.code(), "reporting_currency": rep.code(),
                "starts_on": new.starts_on, "ends_on": new.ends_on, "regions": regions}),
        );
        let id: i64 = write_tx!(self.ledger, |tx| {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO programmes (code, name, donor, grant_ref, currency, reporting_currency, \
                 starts_on, ends_on, regions, created_at, created_by) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
            )
            .bind(code.as_str())
            .bind(&name)
            .bind(&donor)
            .bind(&grant_ref)
            .bind(cur.code())
            .bind(rep.code())
            .bind(new.starts_on)
            .bind(new.ends_on)
            .bind(&regions_json)
            .bind(now)
            .bind(&ctx.actor)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(d) if d.is_unique_violation() => {
                    RegistryError::Conflict(format!("programme `{code}` already exists"))
                }
                _ => e.into(),
            })?;
            AuditConn::append(&mut *tx, &rec).await?;
            id
        });
        Ok(Programme {
            id,
            code,
            name,
            donor,
            grant_ref,
            currency: cur,
            reporting_currency: rep,
            starts_on: new.starts_on,
            ends_on: new.ends_on,
            regions,
        })
    }

    pub async fn programme(&self, code: &str) -> Result<Programme> {
        let code = ProgrammeCode::parse(code)?;
        let sql = format!("SELECT {PROGRAMME_COLUMNS} FROM programmes WHERE code = $1");
        let row = read_pool!(self.ledger, |pool| {
            sqlx::query(&sql)
                .bind(code.as_str())
                .fetch_optional(pool)
                .await?
                .map(|r| programme_from_row(&r))
                .transpose()?
        });
        row.ok_or_else(|| RegistryError::NotFound(format!("programme `{code}` does not exist")))
    }

    /// Programmes in code order; `only` limits them (a user's programme scope; empty = all).
    pub async fn programmes(&self, only: &[String]) -> Result<Vec<Programme>> {
        let sql = format!("SELECT {PROGRAMME_COLUMNS} FROM programmes ORDER BY code");
        let all: Vec<Programme> = read_pool!(self.ledger, |pool| {
            let rows = sqlx::query(&sql).fetch_all(pool).await?;
            rows.iter()
                .map(programme_from_row)
                .collect::<Result<Vec<_>>>()?
        });
        Ok(all
            .into_iter()
            .filter(|p| only.is_empty() || only.iter().any(|o| o == p.code.as_str()))
            .collect())
    }

    /// Adds a budget line and opens its fund account (`funds:PROGRAMME:LINE`, may not go
    /// negative). Audited `budget_line.create`.
    pub async fn add_budget_line(
        &self,
        programme: &str,
        code: &str,
        modality: Modality,
        amount: &str,
        ctx: &AuditContext,
    ) -> Result<BudgetLine> {
        let p = self.programme(programme).await?;
        let ok = (1..=40).contains(&code.len())
            && code.bytes().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
            });
        if !ok {
            return Err(RegistryError::invalid(
                "code",
                "use 1 to 40 lower-case letters, digits, `.`, `_` or `-`",
            ));
        }
        let amount = Amount::parse_positive(amount, p.currency)
            .map_err(|e| RegistryError::invalid("amount", e.to_string()))?;
        let account = format!("funds:{}:{code}", p.code);
        let spec = AccountSpec {
            code: AccountCode::parse(&account)
                .map_err(|e| RegistryError::invalid("code", e.to_string()))?,
            account_type: AccountType::Fund,
            currency: p.currency,
            rule: BalanceRule::MustNotGoNegative,
        };
        self.ledger.open_account_audited(spec, ctx).await?;
        let rec = AuditRecord::new(
            ctx,
            "budget_line.create",
            "budget_line",
            account.clone(),
            serde_json::json!({"modality": modality.as_str(), "amount": amount.minor()}),
        );
        let now = crate::now();
        let id: i64 = write_tx!(self.ledger, |tx| {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO budget_lines (programme_id, code, modality, amount, account, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            )
            .bind(p.id)
            .bind(code)
            .bind(modality.as_str())
            .bind(amount.minor())
            .bind(&account)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(d) if d.is_unique_violation() => RegistryError::Conflict(
                    format!("budget line `{code}` already exists in programme `{}`", p.code),
                ),
                _ => e.into(),
            })?;
            AuditConn::append(&mut *tx, &rec).await?;
            id
        });
        Ok(BudgetLine {
            id,
            code: code.to_owned(),
            modality,
            amount: amount.minor(),
            account,
            funded: 0,
            committed: 0,
            available: 0,
        })
    }

    /// The programme's budget lines with their ledger figures.
    pub async fn budget_lines(&self, programme: &str) -> Result<Vec<BudgetLine>> {
        let p = self.programme(programme).await?;
        let rows: Vec<(i64, String, String, i64, String)> = read_pool!(self.ledger, |pool| {
            sqlx::query_as(
                "SELECT id, code, modality, amount, account FROM budget_lines \
                 WHERE programme_id = $1 ORDER BY code",
            )
            .bind(p.id)
            .fetch_all(pool)
            .await?
        });
        let mut out = Vec::with_capacity(rows.len());
        for (id, code, modality, amount, account) in rows {
            let modality = Modality::parse(&modality)
                .map_err(|_| RegistryError::Corrupt(format!("budget line {id} modality")))?;
            let acc = self
                .ledger
                .account(
                    &AccountCode::parse(&account)
                        .map_err(|e| RegistryError::Corrupt(e.to_string()))?,
                )
                .await?;
            let (funded, committed) = acc.map(|a| (a.credits, a.debits)).unwrap_or((0, 0));
            out.push(BudgetLine {
                id,
                code,
                modality,
                amount,
                account,
                funded,
                committed,
                available: funded - committed,
            });
        }
        Ok(out)
    }

    /// Records donor money received for a budget line: `assets:bank` ← `funds:P:LINE`.
    /// `reference` (the donor's transfer reference) makes it idempotent.
    pub async fn fund_budget_line(
        &self,
        programme: &str,
        line: &str,
        amount: &str,
        reference: &str,
        effective_date: NaiveDate,
        ctx: &AuditContext,
    ) -> Result<Posting> {
        let p = self.programme(programme).await?;
        let lines = self.budget_lines(programme).await?;
        let bl = lines.iter().find(|l| l.code == line).ok_or_else(|| {
            RegistryError::NotFound(format!(
                "budget line `{line}` does not exist in `{}`",
                p.code
            ))
        })?;
        let amount = Amount::parse_positive(amount, p.currency)
            .map_err(|e| RegistryError::invalid("amount", e.to_string()))?;
        let reference = text_field("reference", reference, 100)?;
        let key = IdempotencyKey::parse(&format!("funding:{}:{line}:{reference}", p.code))
            .map_err(|e| RegistryError::invalid("reference", e.to_string()))?;
        let code =
            |s: &str| AccountCode::parse(s).map_err(|e| RegistryError::Corrupt(e.to_string()));
        let mut metadata = serde_json::Map::new();
        metadata.insert("programme".into(), p.code.as_str().into());
        metadata.insert("budget_line".into(), line.into());
        metadata.insert("donor".into(), p.donor.clone().into());
        metadata.insert("grant_ref".into(), p.grant_ref.clone().into());
        let entry = NewEntry::new(
            key,
            format!("Donor funds for {}/{line} ({reference})", p.code),
            effective_date,
            metadata,
            vec![
                Line {
                    account: code(BANK)?,
                    side: Side::Debit,
                    amount,
                },
                Line {
                    account: code(&bl.account)?,
                    side: Side::Credit,
                    amount,
                },
            ],
        )
        .map_err(cva_ledger::LedgerError::from)?;
        Ok(self.ledger.post_audited(entry, ctx).await?)
    }

    /// Records an exchange rate to the reporting currency (append-only; the latest recording
    /// for a date wins).
    pub async fn add_rate(
        &self,
        programme: &str,
        rate_date: NaiveDate,
        rate: &str,
        source: &str,
        ctx: &AuditContext,
    ) -> Result<Rate> {
        let p = self.programme(programme).await?;
        let r: Decimal = rate.trim().parse().map_err(|_| {
            RegistryError::invalid("rate", "must be a decimal number, e.g. 0.001524")
        })?;
        if r <= Decimal::ZERO {
            return Err(RegistryError::invalid("rate", "must be greater than zero"));
        }
        let source = text_field("source", source, 200)?;
        let rec = AuditRecord::new(
            ctx,
            "programme.rate",
            "programme",
            p.code.as_str(),
            serde_json::json!({"rate_date": rate_date, "rate": r.to_string(), "source": source}),
        );
        let now = crate::now();
        write_tx!(self.ledger, |tx| {
            sqlx::query(
                "INSERT INTO programme_rates (programme_id, rate_date, rate, source, recorded_at, recorded_by) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(p.id)
            .bind(rate_date)
            .bind(r.to_string())
            .bind(&source)
            .bind(now)
            .bind(&ctx.actor)
            .execute(&mut *tx)
            .await?;
            AuditConn::append(&mut *tx, &rec).await?;
        });
        Ok(Rate {
            rate_date,
            rate: r,
            source,
            recorded_by: ctx.actor.clone(),
        })
    }

    pub async fn rates(&self, programme: &str) -> Result<Vec<Rate>> {
        let p = self.programme(programme).await?;
        let rows: Vec<(NaiveDate, String, String, String)> = read_pool!(self.ledger, |pool| {
            sqlx::query_as(
                "SELECT rate_date, rate, source, recorded_by FROM programme_rates \
                 WHERE programme_id = $1 ORDER BY rate_date, id",
            )
            .bind(p.id)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(rate_date, rate, source, recorded_by)| {
                Ok(Rate {
                    rate_date,
                    rate: rate
                        .parse()
                        .map_err(|_| RegistryError::Corrupt("stored rate".into()))?,
                    source,
                    recorded_by,
                })
            })
            .collect()
    }

    /// Adds a new version of the programme's rule for the rule's modality. Audited
    /// `rule.create`.
    pub async fn add_rule(&self, programme: &str, rule: Rule, ctx: &AuditContext) -> Result<i32> {
        let p = self.programme(programme).await?;
        rule.validate()
            .map_err(|e| RegistryError::invalid("rule", e.to_string()))?;
        let json =
            serde_json::to_string(&rule).map_err(|e| RegistryError::Corrupt(e.to_string()))?;
        let modality = rule.modality();
        let now = crate::now();
        let version: i32 = write_tx!(self.ledger, |tx| {
            let last: Option<i32> = sqlx::query_scalar(
                "SELECT max(version) FROM transfer_rules WHERE programme_id = $1 AND modality = $2",
            )
            .bind(p.id)
            .bind(modality.as_str())
            .fetch_one(&mut *tx)
            .await?;
            let version = last.unwrap_or(0) + 1;
            sqlx::query(
                "INSERT INTO transfer_rules (programme_id, modality, version, rule, created_at, created_by) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(p.id)
            .bind(modality.as_str())
            .bind(version)
            .bind(&json)
            .bind(now)
            .bind(&ctx.actor)
            .execute(&mut *tx)
            .await?;
            let rec = AuditRecord::new(
                ctx,
                "rule.create",
                "rule",
                format!("{}:{}:v{version}", p.code, modality.as_str()),
                serde_json::from_str(&json).unwrap_or_default(),
            );
            AuditConn::append(&mut *tx, &rec).await?;
            version
        });
        Ok(version)
    }

    /// The latest rule version for a modality.
    pub async fn current_rule(&self, programme_id: i64, modality: Modality) -> Result<RuleVersion> {
        let row: Option<(i32, String, String)> = read_pool!(self.ledger, |pool| {
            sqlx::query_as(
                "SELECT version, rule, created_by FROM transfer_rules \
                 WHERE programme_id = $1 AND modality = $2 ORDER BY version DESC LIMIT 1",
            )
            .bind(programme_id)
            .bind(modality.as_str())
            .fetch_optional(pool)
            .await?
        });
        let (version, rule, created_by) = row.ok_or_else(|| {
            RegistryError::NotFound(format!(
                "the programme has no {} rule yet",
                modality.as_str()
            ))
        })?;
        let rule = Rule::from_json(&rule)
            .map_err(|e| RegistryError::Corrupt(format!("stored rule: {e}")))?;
        Ok(RuleVersion {
            version,
            rule,
            created_by,
        })
    }
}

fn programme_from_row<R: Row>(r: &R) -> Result<Programme>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    i64: sqlx::Type<R::Database> + for<'a> sqlx::Decode<'a, R::Database>,
    String: sqlx::Type<R::Database> + for<'a> sqlx::Decode<'a, R::Database>,
    NaiveDate: sqlx::Type<R::Database> + for<'a> sqlx::Decode<'a, R::Database>,
{
    let code: String = r.try_get("code")?;
    let currency: String = r.try_get("currency")?;
    let reporting: String = r.try_get("reporting_currency")?;
    let regions: String = r.try_get("regions")?;
    let corrupt = |what: &str| RegistryError::Corrupt(format!("programme {code}: {what}"));
    Ok(Programme {
        id: r.try_get("id")?,
        code: ProgrammeCode(code.clone()),
        name: r.try_get("name")?,
        donor: r.try_get("donor")?,
        grant_ref: r.try_get("grant_ref")?,
        currency: Currency::parse(&currency).map_err(|_| corrupt("currency"))?,
        reporting_currency: Currency::parse(&reporting)
            .map_err(|_| corrupt("reporting currency"))?,
        starts_on: r.try_get("starts_on")?,
        ends_on: r.try_get("ends_on")?,
        regions: serde_json::from_str(&regions).map_err(|_| corrupt("regions"))?,
    })
}
