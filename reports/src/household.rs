//! The household report of one programme: one row per enrolled household (every status), in
//! id order, with what it was granted, paid and is owed.
//!
//! # Columns
//!
//! | column | definition |
//! |---|---|
//! | `programme`, `household_id`, `status`, `region` | the household (`households`) |
//! | `head_name`, `msisdn` | personal data, **masked** (`A•••• T••••`, `+223 •• •• 34 56`) or opened, as the registry shows it for the requester's role ([`Reveal`]; the API's policy: opened for administrators and programme officers, masked for everyone else — auditors never see them opened) |
//! | `personal_data` | `masked` or `full`: how the two columns above are shown |
//! | `currency` | the programme's |
//! | `entitlements` | entitlements granted to the household and not cancelled |
//! | `paid` | its payment lines the provider confirmed and did not reverse (`completed`) |
//! | `in_transit` | its lines released with no outcome yet (`in_flight`, `unknown`, released and not sent) |
//! | `failed` | its lines that failed or were reversed (money back on its account) |
//! | `balance_owed` | the balance of its ledger account `liabilities:entitlements:P:hh-ID` (see [`household_account`]): what it is still owed; `entitlements − paid − in_transit` when the books agree |
//!
//! Amounts are in the programme currency, written with its decimals.

use std::collections::HashMap;

use cva_ledger::read_pool;
use cva_ledger::scope::Scope;
use cva_registry::entitlements::household_account;
use cva_registry::households::{HouseholdQuery, Reveal};
use cva_registry::Registry;
use serde_json::Map;

use crate::budget::Sums;
use crate::error::{ReportError, Result};
use crate::model::{reveal_name, Cell, Table};
use crate::money::format;

pub const COLUMNS: [&str; 13] = [
    "programme",
    "household_id",
    "status",
    "region",
    "head_name",
    "msisdn",
    "personal_data",
    "currency",
    "entitlements",
    "paid",
    "in_transit",
    "failed",
    "balance_owed",
];

/// Households read per page.
const PAGE: i64 = 1000;

/// Builds the household report of `programme`, personal data shown as `reveal` says.
pub async fn build(registry: &Registry, programme: &str, reveal: Reveal) -> Result<Table> {
    let p = registry.programme(programme).await?;
    let sums = sums(registry, p.id).await?;
    let balances = balances(registry, p.code.as_str()).await?;
    let mut table = Table::new(&COLUMNS);
    let mut header = Map::new();
    header.insert("programme".into(), p.code.as_str().into());
    header.insert("currency".into(), p.currency.code().into());
    header.insert("personal_data".into(), reveal_name(reveal).into());
    table.header = header;
    let cur = p.currency;
    let mut after = 0;
    loop {
        let q = HouseholdQuery {
            after_id: after,
            limit: PAGE,
            ..HouseholdQuery::default()
        };
        let page = registry.households(programme, &q, reveal).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for h in &page {
            let s = sums.get(&h.id).copied().unwrap_or_default();
            let owed = balances
                .get(&household_account(p.code.as_str(), h.id))
                .copied()
                .unwrap_or(0);
            table.push(vec![
                Cell::text(p.code.as_str()),
                Cell::Int(h.id),
                Cell::text(h.status.as_str()),
                Cell::text(h.region.clone()),
                Cell::text(h.head_name.clone()),
                Cell::opt_text(h.msisdn.clone()),
                Cell::text(reveal_name(reveal)),
                Cell::text(cur.code()),
                Cell::Money(format(s.committed(), cur)?),
                Cell::Money(format(s.paid, cur)?),
                Cell::Money(format(s.in_transit(), cur)?),
                Cell::Money(format(s.failed, cur)?),
                Cell::Money(format(owed, cur)?),
            ])?;
        }
        if i64::try_from(page.len()).unwrap_or(PAGE) < PAGE {
            break;
        }
    }
    Ok(table)
}

/// Entitlement and payment sums per household.
async fn sums(registry: &Registry, programme_id: i64) -> Result<HashMap<i64, Sums>> {
    let ent_sql = "SELECT household_id, status, CAST(SUM(amount) AS BIGINT) FROM entitlements \
                   WHERE programme_id = $1 GROUP BY household_id, status";
    let pay_sql = format!(
        "SELECT l.household_id, {} AS outcome, CAST(SUM(l.amount) AS BIGINT), \
         CAST(SUM(l.fee) AS BIGINT) FROM batch_lines l JOIN batches b ON b.id = l.batch_id \
         WHERE b.programme_id = $1 GROUP BY 1, 2",
        crate::budget::OUTCOME
    );
    type EntRow = (i64, String, i64);
    type PayRow = (i64, String, i64, i64);
    let (ents, pays): (Vec<EntRow>, Vec<PayRow>) = read_pool!(registry.ledger(), |pool| {
        let ents = sqlx::query_as(ent_sql)
            .bind(programme_id)
            .fetch_all(pool)
            .await?;
        let pays = sqlx::query_as(&pay_sql)
            .bind(programme_id)
            .fetch_all(pool)
            .await?;
        (ents, pays)
    });
    let mut out: HashMap<i64, Sums> = HashMap::new();
    for (hh, status, amount) in ents {
        let s = out.entry(hh).or_default();
        s.granted += i128::from(amount);
        match status.as_str() {
            "granted" => {}
            "cancelled" => s.cancelled += i128::from(amount),
            other => {
                return Err(ReportError::Corrupt(format!(
                    "entitlement status {other:?}"
                )))
            }
        }
    }
    for (hh, outcome, amount, fee) in pays {
        out.entry(hh)
            .or_default()
            .add_outcome(&outcome, amount, fee)?;
    }
    Ok(out)
}

/// Normal-side balances of the programme's household entitlement accounts, by code.
async fn balances(registry: &Registry, programme: &str) -> Result<HashMap<String, i128>> {
    let prefix = format!("liabilities:entitlements:{programme}:");
    let accounts = registry
        .ledger()
        .accounts_in(&Scope::of(&[programme.to_owned()]))
        .await?;
    Ok(accounts
        .into_iter()
        .filter(|a| a.code.as_str().starts_with(&prefix))
        .map(|a| (a.code.as_str().to_owned(), a.balance()))
        .collect())
}
