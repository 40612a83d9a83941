//! The budget report of one programme: budget consumption per budget line and region, in the
//! programme currency and in the reporting currency.
//!
//! # Rows
//!
//! Budget lines in code order; for each, one `region` row per household region with any
//! entitlement or payment on the line (regions in code order), then the line's `budget_line`
//! total row. Last, one `programme` row: the totals of all lines. The planned budget and the
//! funding exist per budget line only, so on `region` rows `budget`, `funded`, `remaining` and
//! `uncommitted` are empty.
//!
//! # Columns
//!
//! `programme`, `donor`, `grant_ref`, `budget_line`, `modality`, `region` (the household's
//! `households.region`), `row` (`region`, `budget_line` or `programme`), `currency` (the
//! programme's), then the figures, in the programme currency's minor unit written as decimals:
//!
//! | column | definition |
//! |---|---|
//! | `budget` | the line's planned amount (`budget_lines.amount`) |
//! | `funded` | donor money received for the line: the credits of its fund account `funds:P:LINE` less the credits that reversed cancelled entitlements |
//! | `granted` | entitlements granted on the line (`entitlements.amount`, whatever their status) |
//! | `cancelled` | of which cancelled (`status = 'cancelled'`) |
//! | `committed` | `granted − cancelled`: what the line owes households (= debits of `funds:P:LINE` less cancellations) |
//! | `released` | payment lines whose release was posted (Dr household, Cr in-transit): batch lines `in_flight`, `completed`, `failed`, `unknown`, and `pending` lines of a batch already released; a failed entitlement re-issued in a follow-up batch counts once per release |
//! | `paid` | lines the provider confirmed and did not reverse (`completed`) |
//! | `failed` | lines that failed or were returned, money back to the household: `failed`, including reversals after completion (`failure_code = 'reversed'`) |
//! | `reversed` | of which reversed by the provider after completion |
//! | `fees` | provider fees of lines the provider confirmed: `completed` ones and reversed ones (the ledger keeps a reversed payment's fee in `expense:fees:PROVIDER`) |
//! | `in_transit` | `released − paid − failed`: released, outcome not known yet (in flight, unknown, or not sent yet) |
//! | `remaining` | `budget − committed`: budget still to commit |
//! | `uncommitted` | `funded − committed`: money received and not committed (the fund account's balance) |
//! | `unpaid` | `committed − paid`: committed, not (yet) paid (owed to households or in transit) |
//!
//! Then `reporting_currency`, `rate`, `rate_date`, `rate_source` — the recorded exchange
//! rate (`programme_rates`, reporting-currency units per programme-currency unit) that
//! applies on the report's `as_of` date: the latest with `rate_date ≤ as_of`, the last
//! recorded for that date — and each figure again in the reporting currency
//! (`budget_reporting` … `unpaid_reporting`), converted by the rule in [`crate::money`]
//! (half to even). With no rate on or before `as_of`, `rate` and `rate_date` are empty,
//! `rate_source` says so, and every converted figure is empty: a rate is never invented.
//!
//! The figures are the database's state when the report is produced; `as_of` picks the
//! exchange rate only (the payment lines' history is not kept, so earlier figures cannot be
//! rebuilt).

use std::collections::BTreeMap;

use chrono::NaiveDate;
use cva_ledger::read_pool;
use cva_registry::programmes::{BudgetLine, Programme, Rate};
use cva_registry::Registry;
use serde_json::{json, Map, Value};

use crate::error::{ReportError, Result};
use crate::model::{Cell, Table};
use crate::money::{convert, format, rate_on, ROUNDING_RULE};

/// The figures, in column order.
pub const FIGURES: [&str; 14] = [
    "budget",
    "funded",
    "granted",
    "cancelled",
    "committed",
    "released",
    "paid",
    "failed",
    "reversed",
    "fees",
    "in_transit",
    "remaining",
    "uncommitted",
    "unpaid",
];

const LEADING: [&str; 8] = [
    "programme",
    "donor",
    "grant_ref",
    "budget_line",
    "modality",
    "region",
    "row",
    "currency",
];

const RATE_COLUMNS: [&str; 4] = ["reporting_currency", "rate", "rate_date", "rate_source"];

/// The SQL category of a payment line (see the module docs), per line status.
pub(crate) const OUTCOME: &str = "CASE WHEN l.status = 'completed' THEN 'paid' \
     WHEN l.status = 'failed' AND l.failure_code = 'reversed' THEN 'reversed' \
     WHEN l.status = 'failed' THEN 'failed' \
     WHEN l.status IN ('in_flight', 'unknown') THEN 'in_transit' \
     WHEN l.status = 'pending' AND b.status NOT IN ('draft', 'submitted', 'approved', \
       'authorised', 'cancelled') THEN 'in_transit' \
     ELSE 'not_released' END";

/// Sums of one row, minor units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Sums {
    pub granted: i128,
    pub cancelled: i128,
    pub released: i128,
    pub paid: i128,
    pub failed: i128,
    pub reversed: i128,
    pub fees: i128,
}

impl Sums {
    pub(crate) fn committed(&self) -> i128 {
        self.granted - self.cancelled
    }

    pub(crate) fn in_transit(&self) -> i128 {
        self.released - self.paid - self.failed
    }

    fn add(&mut self, o: &Sums) {
        self.granted += o.granted;
        self.cancelled += o.cancelled;
        self.released += o.released;
        self.paid += o.paid;
        self.failed += o.failed;
        self.reversed += o.reversed;
        self.fees += o.fees;
    }

    /// Adds a payment line total of one category (`OUTCOME`).
    pub(crate) fn add_outcome(&mut self, outcome: &str, amount: i64, fee: i64) -> Result<()> {
        let (amount, fee) = (i128::from(amount), i128::from(fee));
        match outcome {
            "paid" => {
                self.released += amount;
                self.paid += amount;
                self.fees += fee;
            }
            "reversed" => {
                self.released += amount;
                self.failed += amount;
                self.reversed += amount;
                self.fees += fee;
            }
            "failed" => {
                self.released += amount;
                self.failed += amount;
            }
            "in_transit" => self.released += amount,
            "not_released" => {}
            other => return Err(ReportError::Corrupt(format!("payment outcome {other:?}"))),
        }
        Ok(())
    }
}

/// Figures of a `budget_line` or `programme` row: the sums and the line's own amounts.
#[derive(Debug, Clone, Copy, Default)]
struct LineFigures {
    budget: i128,
    funded: i128,
    sums: Sums,
}

/// Per budget line id: per region, the sums.
type ByLine = BTreeMap<i64, BTreeMap<String, Sums>>;

/// Builds the budget report of `programme` with the rate of `as_of`.
pub async fn build(registry: &Registry, programme: &str, as_of: NaiveDate) -> Result<Table> {
    let p = registry.programme(programme).await?;
    let mut lines = registry.budget_lines(programme).await?;
    lines.sort_by(|a, b| a.code.as_bytes().cmp(b.code.as_bytes()));
    let rates = registry.rates(programme).await?;
    let by_line = sums(registry, p.id).await?;

    let rate = rate_on(&rates, as_of).cloned();
    let mut table = Table::new(&columns().iter().map(String::as_str).collect::<Vec<_>>());
    table.header = header(&p, as_of, rate.as_ref());
    let row = RowWriter {
        p: &p,
        rate: rate.as_ref(),
        as_of,
    };
    let mut total = LineFigures::default();
    let empty = BTreeMap::new();
    for line in &lines {
        let regions = by_line.get(&line.id).unwrap_or(&empty);
        let mut line_sums = Sums::default();
        for (region, s) in regions {
            line_sums.add(s);
            table.push(row.cells(Some(line), Some(region), None, s)?)?;
        }
        let figures = LineFigures {
            budget: i128::from(line.amount),
            // The fund account's credits include the reversals of cancelled entitlements.
            funded: i128::from(line.funded) - line_sums.cancelled,
            sums: line_sums,
        };
        table.push(row.cells(Some(line), None, Some(&figures), &line_sums)?)?;
        total.budget += figures.budget;
        total.funded += figures.funded;
        total.sums.add(&line_sums);
    }
    table.push(row.cells(None, None, Some(&total), &total.sums)?)?;
    Ok(table)
}

/// Every column name, in order.
pub fn columns() -> Vec<String> {
    LEADING
        .iter()
        .map(|c| (*c).to_owned())
        .chain(FIGURES.iter().map(|c| (*c).to_owned()))
        .chain(RATE_COLUMNS.iter().map(|c| (*c).to_owned()))
        .chain(FIGURES.iter().map(|c| format!("{c}_reporting")))
        .collect()
}

fn header(p: &Programme, as_of: NaiveDate, rate: Option<&Rate>) -> Map<String, Value> {
    let mut h = Map::new();
    h.insert("programme".into(), p.code.as_str().into());
    h.insert("name".into(), p.name.clone().into());
    h.insert("donor".into(), p.donor.clone().into());
    h.insert("grant_ref".into(), p.grant_ref.clone().into());
    h.insert("currency".into(), p.currency.code().into());
    h.insert(
        "reporting_currency".into(),
        p.reporting_currency.code().into(),
    );
    h.insert("as_of".into(), as_of.format("%Y-%m-%d").to_string().into());
    h.insert(
        "rate".into(),
        match rate {
            Some(r) => json!({
                "rate": r.rate.to_string(),
                "rate_date": r.rate_date.format("%Y-%m-%d").to_string(),
                "source": r.source,
                "recorded_by": r.recorded_by,
            }),
            None => Value::Null,
        },
    );
    if rate.is_none() {
        h.insert("rate_note".into(), no_rate(as_of).into());
    }
    h.insert("rounding".into(), ROUNDING_RULE.into());
    h.insert(
        "figures".into(),
        "state of the database when produced; as_of selects the exchange rate".into(),
    );
    h
}

fn no_rate(as_of: NaiveDate) -> String {
    format!(
        "no rate recorded on or before {}: converted figures left empty",
        as_of.format("%Y-%m-%d")
    )
}

struct RowWriter<'a> {
    p: &'a Programme,
    rate: Option<&'a Rate>,
    as_of: NaiveDate,
}

impl RowWriter<'_> {
    /// One row: a region of a line (`line` and `region`), a line total (`line` and
    /// `figures`), or the programme total (`figures` only).
    fn cells(
        &self,
        line: Option<&BudgetLine>,
        region: Option<&str>,
        figures: Option<&LineFigures>,
        s: &Sums,
    ) -> Result<Vec<Cell>> {
        let kind = match (line, region) {
            (Some(_), Some(_)) => "region",
            (Some(_), None) => "budget_line",
            (None, _) => "programme",
        };
        let mut row = vec![
            Cell::text(self.p.code.as_str()),
            Cell::text(self.p.donor.clone()),
            Cell::text(self.p.grant_ref.clone()),
            Cell::opt_text(line.map(|l| l.code.clone())),
            Cell::opt_text(line.map(|l| l.modality.as_str())),
            Cell::opt_text(region),
            Cell::text(kind),
            Cell::text(self.p.currency.code()),
        ];
        let values = values(figures, s);
        let cur = self.p.currency;
        for v in &values {
            row.push(Cell::opt_money(v.map(|m| format(m, cur)).transpose()?));
        }
        let rep = self.p.reporting_currency;
        row.push(Cell::text(rep.code()));
        match self.rate {
            Some(r) => {
                row.push(Cell::text(r.rate.to_string()));
                row.push(Cell::text(r.rate_date.format("%Y-%m-%d").to_string()));
                row.push(Cell::text(r.source.clone()));
                for v in &values {
                    let converted = v.map(|m| convert(m, cur, r.rate, rep)).transpose()?;
                    row.push(Cell::opt_money(converted));
                }
            }
            None => {
                row.push(Cell::Empty);
                row.push(Cell::Empty);
                row.push(Cell::text(no_rate(self.as_of)));
                row.extend(values.iter().map(|_| Cell::Empty));
            }
        }
        Ok(row)
    }
}

/// The figures of [`FIGURES`], `None` where they do not apply (region rows).
fn values(f: Option<&LineFigures>, s: &Sums) -> [Option<i128>; 14] {
    let committed = s.committed();
    [
        f.map(|f| f.budget),
        f.map(|f| f.funded),
        Some(s.granted),
        Some(s.cancelled),
        Some(committed),
        Some(s.released),
        Some(s.paid),
        Some(s.failed),
        Some(s.reversed),
        Some(s.fees),
        Some(s.in_transit()),
        f.map(|f| f.budget - committed),
        f.map(|f| f.funded - committed),
        Some(committed - s.paid),
    ]
}

/// Entitlement and payment sums of the programme per budget line and region.
async fn sums(registry: &Registry, programme_id: i64) -> Result<ByLine> {
    let ledger = registry.ledger();
    let ent_sql = "SELECT e.budget_line_id, h.region, e.status, CAST(SUM(e.amount) AS BIGINT) \
         FROM entitlements e JOIN households h ON h.id = e.household_id \
         WHERE e.programme_id = $1 GROUP BY e.budget_line_id, h.region, e.status";
    let pay_sql = format!(
        "SELECT e.budget_line_id, h.region, {OUTCOME} AS outcome, CAST(SUM(l.amount) AS BIGINT), \
         CAST(SUM(l.fee) AS BIGINT) \
         FROM batch_lines l JOIN batches b ON b.id = l.batch_id \
         JOIN entitlements e ON e.id = l.entitlement_id \
         JOIN households h ON h.id = l.household_id \
         WHERE e.programme_id = $1 GROUP BY 1, 2, 3"
    );
    type EntRow = (i64, String, String, i64);
    type PayRow = (i64, String, String, i64, i64);
    let (ents, pays): (Vec<EntRow>, Vec<PayRow>) = read_pool!(ledger, |pool| {
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
    let mut by_line = ByLine::new();
    for (line, region, status, amount) in ents {
        let s = by_line.entry(line).or_default().entry(region).or_default();
        let amount = i128::from(amount);
        s.granted += amount;
        match status.as_str() {
            "granted" => {}
            "cancelled" => s.cancelled += amount,
            other => {
                return Err(ReportError::Corrupt(format!(
                    "entitlement status {other:?}"
                )))
            }
        }
    }
    for (line, region, outcome, amount, fee) in pays {
        by_line
            .entry(line)
            .or_default()
            .entry(region)
            .or_default()
            .add_outcome(&outcome, amount, fee)?;
    }
    Ok(by_line)
}
