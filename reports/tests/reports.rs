//! The reports over a programme paid for real (see `common`): budget figures checked against
//! sums computed here from the ledger alone, conversion at the recorded rate, personal data
//! masked per reveal policy, byte-determinism, hash verification (a one-byte change is
//! caught), and the append-only `reports` table. SQLite by default; PostgreSQL with
//! `CVA_TEST_DATABASE_URL`.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap};

use common::{auditor, day, scenario, Scenario, ENTITLEMENT, FEE, HOUSEHOLDS, PROGRAMME as P};
use cva_ledger::account::Side;
use cva_ledger::testing::{assert_books_sound, bal};
use cva_registry::entitlements::household_account;
use cva_registry::households::{HouseholdQuery, Reveal};
use cva_reports::{Cell, Format, Kind, Reports, Request, Table, Verdict};
use futures::StreamExt;

const FUND: &str = "funds:MLI-MPCA-24:mpca";
const IN_TRANSIT: &str = "liabilities:in-transit:orange-money";
const FEES: &str = "expense:fees:orange-money";

/// Budget figures computed from the ledger's journal only (not from the tables the report
/// reads), per region and in total.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Fig {
    funded: i64,
    granted: i64,
    cancelled: i64,
    released: i64,
    paid: i64,
    failed: i64,
    reversed: i64,
    fees: i64,
}

impl Fig {
    fn add(&mut self, o: &Fig) {
        self.funded += o.funded;
        self.granted += o.granted;
        self.cancelled += o.cancelled;
        self.released += o.released;
        self.paid += o.paid;
        self.failed += o.failed;
        self.reversed += o.reversed;
        self.fees += o.fees;
    }
}

/// The household a household entitlement account belongs to.
fn household_of(account: &str) -> Option<i64> {
    account
        .strip_prefix(&format!("liabilities:entitlements:{P}:hh-"))
        .and_then(|id| id.parse().ok())
}

/// Walks the journal: grants and cancellations on the fund account, releases, confirmations
/// (`pay:L:confirm`), failures (`pay:L:fail`) and reversals (`pay:L:reversal`), each put in
/// the region of its household (confirmations through the line's household).
async fn ledger_figures(s: &Scenario) -> BTreeMap<String, Fig> {
    let ledger = s.reg.ledger();
    let mut region: HashMap<i64, String> = HashMap::new();
    let q = HouseholdQuery {
        limit: 100,
        ..HouseholdQuery::default()
    };
    for h in s.reg.households(P, &q, Reveal::Masked).await.unwrap() {
        region.insert(h.id, h.region);
    }
    let mut line_household: HashMap<i64, i64> = HashMap::new();
    for b in [s.first, s.follow_up] {
        for l in s.batches.lines(b).await.unwrap() {
            line_household.insert(l.id, l.household);
        }
    }
    let mut out: BTreeMap<String, Fig> = BTreeMap::new();
    let mut funded = 0;
    let mut journal = ledger.journal();
    while let Some(e) = journal.next().await {
        let e = e.unwrap();
        let key = e.idempotency_key.as_str().to_owned();
        let hh_line = e
            .lines
            .iter()
            .find_map(|l| household_of(l.account.as_str()).map(|h| (h, l)));
        let on_fund = e.lines.iter().find(|l| l.account.as_str() == FUND);
        if let Some(f) = on_fund {
            match (f.side, e.reverses.is_some(), hh_line) {
                (Side::Credit, false, None) => funded += f.amount.minor(),
                (Side::Debit, false, Some((h, _))) => {
                    out.entry(region[&h].clone()).or_default().granted += f.amount.minor()
                }
                (Side::Credit, true, Some((h, _))) => {
                    out.entry(region[&h].clone()).or_default().cancelled += f.amount.minor()
                }
                other => panic!("unexpected fund entry {key}: {other:?}"),
            }
            continue;
        }
        let Some(rest) = key.strip_prefix("pay:") else {
            continue;
        };
        let (line, what) = rest.split_once(':').unwrap();
        let line: i64 = line.parse().unwrap();
        let amount_on = |account: &str| -> i64 {
            e.lines
                .iter()
                .filter(|l| l.account.as_str() == account)
                .map(|l| l.amount.minor())
                .sum()
        };
        let hh = line_household[&line];
        let fig = out.entry(region[&hh].clone()).or_default();
        match what {
            "release" => fig.released += amount_on(IN_TRANSIT),
            "confirm" => {
                fig.paid += amount_on(IN_TRANSIT);
                fig.fees += amount_on(FEES);
            }
            "fail" => fig.failed += amount_on(IN_TRANSIT),
            "reversal" => {
                let a = hh_line.unwrap().1.amount.minor();
                fig.paid -= a;
                fig.failed += a;
                fig.reversed += a;
            }
            other => panic!("unexpected payment entry {key} ({other})"),
        }
    }
    let mut total = Fig {
        funded,
        ..Fig::default()
    };
    for f in out.values() {
        total.add(f);
    }
    out.insert(String::new(), total);
    out
}

fn money(t: &Table, row: usize, col: &str) -> Option<String> {
    match t.cell(row, col) {
        Some(Cell::Money(m)) => Some(m.clone()),
        Some(Cell::Empty) => None,
        other => panic!("{col}: {other:?}"),
    }
}

fn text(t: &Table, row: usize, col: &str) -> String {
    match t.cell(row, col) {
        Some(Cell::Text(s)) => s.clone(),
        Some(Cell::Int(i)) => i.to_string(),
        Some(Cell::Empty) => String::new(),
        other => panic!("{col}: {other:?}"),
    }
}

fn row_of(t: &Table, kind: &str, region: &str) -> usize {
    (0..t.rows.len())
        .find(|&r| text(t, r, "row") == kind && text(t, r, "region") == region)
        .unwrap_or_else(|| panic!("no {kind} row for region {region:?}"))
}

/// Checks one report row against the ledger's figures.
fn check_row(t: &Table, row: usize, f: &Fig) {
    let m = |c: &str| money(t, row, c).unwrap_or_else(|| panic!("{c} empty on row {row}"));
    let n = |v: i64| v.to_string();
    let committed = f.granted - f.cancelled;
    assert_eq!(m("granted"), n(f.granted), "granted, row {row}");
    assert_eq!(m("cancelled"), n(f.cancelled), "cancelled, row {row}");
    assert_eq!(m("committed"), n(committed), "committed, row {row}");
    assert_eq!(m("released"), n(f.released), "released, row {row}");
    assert_eq!(m("paid"), n(f.paid), "paid, row {row}");
    assert_eq!(m("failed"), n(f.failed), "failed, row {row}");
    assert_eq!(m("reversed"), n(f.reversed), "reversed, row {row}");
    assert_eq!(m("fees"), n(f.fees), "fees, row {row}");
    assert_eq!(
        m("in_transit"),
        n(f.released - f.paid - f.failed),
        "in transit, row {row}"
    );
    assert_eq!(m("unpaid"), n(committed - f.paid), "unpaid, row {row}");
}

#[tokio::test]
async fn budget_report_figures_equal_the_ledger() {
    let s = scenario().await;
    let ledger = s.reg.ledger();
    assert_books_sound(ledger).await;
    let reports = Reports::new(s.reg.clone());
    let params = Request::new(Kind::Budget)
        .programme(P)
        .as_of(day(2024, 3, 31))
        .resolve(day(2030, 1, 1))
        .unwrap();
    let t = reports.table(&params).await.unwrap();
    let figs = ledger_figures(&s).await;

    // Shape: regions of the line in code order, the line total, the programme total.
    let kinds: Vec<(String, String)> = (0..t.rows.len())
        .map(|r| (text(&t, r, "row"), text(&t, r, "region")))
        .collect();
    let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    assert_eq!(
        kinds,
        [
            pair("region", "ML05"),
            pair("region", "ML06"),
            pair("budget_line", ""),
            pair("programme", "")
        ]
    );
    for region in ["ML05", "ML06"] {
        let row = row_of(&t, "region", region);
        check_row(&t, row, &figs[region]);
        assert_eq!(text(&t, row, "budget_line"), "mpca");
        assert_eq!(text(&t, row, "modality"), "mpca");
        assert_eq!(text(&t, row, "donor"), "ECHO");
        for c in ["budget", "funded", "remaining", "uncommitted"] {
            assert_eq!(money(&t, row, c), None, "{c} exists per budget line only");
        }
    }
    let total = &figs[""];
    for kind in ["budget_line", "programme"] {
        let row = row_of(&t, kind, "");
        check_row(&t, row, total);
        let budget = i64::try_from(HOUSEHOLDS).unwrap() * ENTITLEMENT;
        let committed = total.granted - total.cancelled;
        assert_eq!(money(&t, row, "budget").unwrap(), budget.to_string());
        assert_eq!(money(&t, row, "funded").unwrap(), total.funded.to_string());
        assert_eq!(
            money(&t, row, "remaining").unwrap(),
            (budget - committed).to_string()
        );
        // Uncommitted funds are the fund account's balance.
        assert_eq!(
            money(&t, row, "uncommitted").unwrap(),
            bal(ledger, FUND).await.to_string()
        );
    }

    // Independent ledger balances agree with the totals too.
    assert_eq!(
        i128::from(total.fees),
        bal(ledger, FEES).await,
        "fees = expense:fees"
    );
    assert_eq!(
        i128::from(total.released - total.paid - total.failed),
        bal(ledger, IN_TRANSIT).await,
        "in transit = the in-transit account"
    );
    let fund = ledger
        .account(&cva_ledger::account::AccountCode::parse(FUND).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fund.debits, total.granted, "grants debit the fund account");
    assert_eq!(
        fund.credits,
        total.funded + total.cancelled,
        "funding and cancellations credit it"
    );
    // And the figures the scenario was built to give.
    let e = ENTITLEMENT;
    assert_eq!(
        (
            total.granted,
            total.cancelled,
            total.released,
            total.paid,
            total.failed,
            total.reversed,
            total.fees
        ),
        (10 * e, e, 14 * e, 4 * e, 5 * e, e, 5 * FEE)
    );
    s.db.cleanup().await;
}

#[tokio::test]
async fn budget_report_converts_at_the_recorded_rate_half_to_even() {
    let s = scenario().await;
    let reports = Reports::new(s.reg.clone());
    let at = |d| {
        Request::new(Kind::Budget)
            .programme(P)
            .as_of(d)
            .resolve(day(2030, 1, 1))
            .unwrap()
    };
    let t = reports.table(&at(day(2024, 3, 31))).await.unwrap();
    let row = row_of(&t, "budget_line", "");
    assert_eq!(text(&t, row, "currency"), "XOF");
    assert_eq!(text(&t, row, "reporting_currency"), "EUR");
    assert_eq!(text(&t, row, "rate"), common::RATE_JAN);
    assert_eq!(text(&t, row, "rate_date"), "2024-01-01");
    assert_eq!(text(&t, row, "rate_source"), "BCEAO fixing");
    // committed 180,000 × 0.00152425 = 274.365 → 274.36 (half to even).
    assert_eq!(money(&t, row, "committed").unwrap(), "180000");
    assert_eq!(money(&t, row, "committed_reporting").unwrap(), "274.36");
    // cancelled 20,000 × 0.00152425 = 30.485 → 30.48.
    assert_eq!(money(&t, row, "cancelled_reporting").unwrap(), "30.48");
    // paid 80,000 → 121.94 exactly; fees 500 → 0.762125 → 0.76.
    assert_eq!(money(&t, row, "paid_reporting").unwrap(), "121.94");
    assert_eq!(money(&t, row, "fees_reporting").unwrap(), "0.76");
    // Region rows carry the rate and convert only their own figures.
    let r6 = row_of(&t, "region", "ML06");
    assert_eq!(text(&t, r6, "rate"), common::RATE_JAN);
    assert_eq!(money(&t, r6, "budget_reporting"), None);

    // Another date, the later rate.
    let t = reports.table(&at(day(2024, 7, 1))).await.unwrap();
    let row = row_of(&t, "budget_line", "");
    assert_eq!(text(&t, row, "rate_date"), "2024-06-01");
    assert_eq!(money(&t, row, "committed_reporting").unwrap(), "270.00");

    // Before any rate: said so, nothing converted, nothing invented.
    let params = at(day(2023, 12, 31));
    let t = reports.table(&params).await.unwrap();
    for row in 0..t.rows.len() {
        assert_eq!(text(&t, row, "rate"), "");
        assert_eq!(
            text(&t, row, "rate_source"),
            "no rate recorded on or before 2023-12-31: converted figures left empty"
        );
        for c in cva_reports::budget::FIGURES {
            assert_eq!(money(&t, row, &format!("{c}_reporting")), None);
        }
        assert!(money(&t, row, "committed").is_some());
    }
    let json: serde_json::Value =
        serde_json::from_slice(&reports.render(&params, Format::Json).await.unwrap()).unwrap();
    assert_eq!(json["header"]["rate"], serde_json::Value::Null);
    assert!(json["header"]["rate_note"]
        .as_str()
        .unwrap()
        .contains("no rate"));
    assert_eq!(json["parameters"]["as_of"], "2023-12-31");
    s.db.cleanup().await;
}

#[tokio::test]
async fn household_report_masks_personal_data_unless_revealed() {
    let s = scenario().await;
    let ledger = s.reg.ledger();
    let reports = Reports::new(s.reg.clone());
    let req = Request::new(Kind::Household).programme(P);
    let masked_p = reports.resolve(&req).unwrap();
    let full_p = reports.resolve(&req.clone().reveal(Reveal::Full)).unwrap();
    let masked = reports.table(&masked_p).await.unwrap();
    let full = reports.table(&full_p).await.unwrap();
    assert_eq!(masked.rows.len(), HOUSEHOLDS);
    assert_eq!(full.rows.len(), HOUSEHOLDS);
    let masked_bytes =
        String::from_utf8(reports.render(&masked_p, Format::Csv).await.unwrap()).unwrap();
    let masked_json =
        String::from_utf8(reports.render(&masked_p, Format::Json).await.unwrap()).unwrap();
    for row in 0..HOUSEHOLDS {
        let name = text(&full, row, "head_name");
        let phone = text(&full, row, "msisdn");
        assert!(name.contains(' ') && !name.contains('•'), "{name}");
        assert!(phone.starts_with("+223") && !phone.contains('•'), "{phone}");
        let mn = text(&masked, row, "head_name");
        let mp = text(&masked, row, "msisdn");
        assert_eq!(mn, cva_households_mask_name(&name));
        assert!(mp.contains("•• ••"), "{mp}");
        assert_ne!(mp, phone);
        assert_eq!(text(&masked, row, "personal_data"), "masked");
        assert_eq!(text(&full, row, "personal_data"), "full");
        for bytes in [&masked_bytes, &masked_json] {
            assert!(!bytes.contains(&name), "a name leaked");
            assert!(!bytes.contains(&phone), "a phone number leaked");
            assert!(!bytes.contains(&phone[4..]), "a phone number leaked");
        }
        // Figures: the balance owed is the ledger account's, and adds up.
        let hh: i64 = text(&masked, row, "household_id").parse().unwrap();
        let owed = bal(ledger, &household_account(P, hh)).await;
        let m = |c: &str| -> i128 { money(&masked, row, c).unwrap().parse().unwrap() };
        assert_eq!(m("balance_owed"), owed, "household {hh}");
        assert_eq!(
            m("entitlements") - m("paid") - m("in_transit"),
            owed,
            "household {hh}"
        );
        if hh == s.cancelled {
            assert_eq!(m("entitlements"), 0);
        } else {
            assert_eq!(m("entitlements"), i128::from(ENTITLEMENT));
        }
    }
    // Households moved to ML06 say so.
    for row in 0..HOUSEHOLDS {
        let hh: i64 = text(&masked, row, "household_id").parse().unwrap();
        let expect = if s.moved.contains(&hh) {
            "ML06"
        } else {
            "ML05"
        };
        assert_eq!(text(&masked, row, "region"), expect);
    }
    // The parameters say how personal data is shown.
    let json: serde_json::Value = serde_json::from_str(&masked_json).unwrap();
    assert_eq!(json["parameters"]["personal_data"], "masked");
    s.db.cleanup().await;
}

/// What the registry shows a masked name as (`cva_households::mask::name`), recomputed from
/// its rule: each word keeps its first letter, the rest becomes at most four bullets.
fn cva_households_mask_name(full: &str) -> String {
    full.split_whitespace()
        .map(|w| {
            let mut c = w.chars();
            let first = c.next().unwrap();
            format!("{first}{}", "•".repeat(c.count().min(4)))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test]
async fn reports_are_deterministic_recorded_and_verified_and_a_changed_byte_is_caught() {
    let s = scenario().await;
    let ledger = s.reg.ledger();
    let reports = Reports::new(s.reg.clone());
    let budget = Request::new(Kind::Budget)
        .programme(P)
        .as_of(day(2024, 3, 31));

    // Every kind, both formats: the same bytes twice.
    let kinds = [
        budget.clone(),
        Request::new(Kind::Household).programme(P),
        Request::new(Kind::TrialBalance),
        Request::new(Kind::Journal),
        Request::new(Kind::Journal).programme(P),
    ];
    for req in &kinds {
        let p = reports.resolve(req).unwrap();
        for f in [Format::Csv, Format::Json] {
            let a = reports.render(&p, f).await.unwrap();
            let b = reports.render(&p, f).await.unwrap();
            assert_eq!(a, b, "{:?} {f}", req.kind);
            assert!(!a.is_empty());
        }
    }

    // Produced: recorded with its hash and an audit event in the same transaction.
    let produced = reports
        .produce(&budget, Format::Csv, &auditor())
        .await
        .unwrap();
    let rec = &produced.record;
    assert_eq!(rec.kind, "budget");
    assert_eq!(rec.format, "csv");
    assert_eq!(rec.produced_by, "awa");
    assert_eq!(rec.byte_len, i64::try_from(produced.bytes.len()).unwrap());
    assert_eq!(rec.sha256, cva_reports::store::sha256_hex(&produced.bytes));
    assert_eq!(
        rec.parameters.to_string(),
        r#"{"programme":"MLI-MPCA-24","as_of":"2024-03-31"}"#
    );
    let events = ledger
        .audit_events(&cva_ledger::audit::AuditQuery {
            action: Some("report.produce".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].seq, produced.audit_seq);
    assert_eq!(events[0].object_type, "report");
    assert_eq!(events[0].object_id, rec.id.to_string());
    assert_eq!(
        events[0].digest,
        cva_ledger::audit::change_digest(&serde_json::json!({
            "kind": "budget", "parameters": {"programme": P, "as_of": "2024-03-31"},
            "format": "csv", "sha256": rec.sha256, "bytes": rec.byte_len,
        }))
    );

    // Verified: who, when, what.
    let v = reports.verify(&produced.bytes).await.unwrap();
    assert_eq!(v.verdict, Verdict::Verified, "{}", v.message);
    assert!(v.audit_chain.intact);
    assert_eq!(v.reports.len(), 1);
    assert!(v.reports[0].audit_matches);
    assert_eq!(v.reports[0].audit_event.as_ref().unwrap().role, "auditor");
    assert!(
        v.message.starts_with("produced here: budget report (csv)"),
        "{}",
        v.message
    );
    assert!(v.message.contains("by awa (auditor)"), "{}", v.message);

    // One byte changed anywhere: not produced here.
    for at in [0, produced.bytes.len() / 2, produced.bytes.len() - 1] {
        let mut changed = produced.bytes.clone();
        changed[at] ^= 0x01;
        let v = reports.verify(&changed).await.unwrap();
        assert_eq!(v.verdict, Verdict::NotProduced, "byte {at}");
        assert_eq!(v.message, "no report with this hash was produced here");
        assert!(v.reports.is_empty());
    }
    // A byte appended, or one removed, neither.
    let mut longer = produced.bytes.clone();
    longer.push(b'\n');
    assert_eq!(
        reports.verify(&longer).await.unwrap().verdict,
        Verdict::NotProduced
    );
    let shorter = &produced.bytes[..produced.bytes.len() - 1];
    assert_eq!(
        reports.verify(shorter).await.unwrap().verdict,
        Verdict::NotProduced
    );

    // The same report again: the same bytes, a second record; both found.
    let again = reports
        .produce(&budget, Format::Csv, &auditor())
        .await
        .unwrap();
    assert_eq!(again.bytes, produced.bytes);
    assert_ne!(again.record.id, rec.id);
    let v = reports.verify(&produced.bytes).await.unwrap();
    assert_eq!(v.verdict, Verdict::Verified);
    assert_eq!(v.reports.len(), 2);
    assert!(v.message.contains("produced 2 times"), "{}", v.message);

    // A record slipped into the table without its audit event proves nothing.
    let forged = b"forged report\n";
    let hash = cva_reports::store::sha256_hex(forged);
    s.db.raw(&[&format!(
        "INSERT INTO reports (kind, parameters, format, sha256, byte_len, produced_by, produced_at) \
         VALUES ('journal', '{{}}', 'csv', '{hash}', 14, 'mallory', '2024-03-02T10:00:00+00:00')"
    )])
    .await
    .unwrap();
    let v = reports.verify(forged).await.unwrap();
    assert_eq!(v.verdict, Verdict::Unproven, "{}", v.message);
    assert!(
        v.message.contains("no audit event matches"),
        "{}",
        v.message
    );
    s.db.cleanup().await;
}

#[tokio::test]
async fn the_reports_table_is_append_only() {
    let s = scenario().await;
    let reports = Reports::new(s.reg.clone());
    let p = reports
        .produce(&Request::new(Kind::TrialBalance), Format::Json, &auditor())
        .await
        .unwrap();
    let id = p.record.id;
    for sql in [
        format!(
            "UPDATE reports SET sha256 = '{}' WHERE id = {id}",
            "0".repeat(64)
        ),
        format!("UPDATE reports SET produced_by = 'someone' WHERE id = {id}"),
        format!("DELETE FROM reports WHERE id = {id}"),
    ] {
        let e = s.db.raw(&[&sql]).await.unwrap_err();
        assert!(e.contains("append-only"), "{sql}: {e}");
    }
    if s.db.is_postgres() {
        let e = s.db.raw(&["TRUNCATE reports"]).await.unwrap_err();
        assert!(e.contains("append-only"), "{e}");
    }
    // Malformed rows are refused by the table itself.
    for sql in [
        "INSERT INTO reports (kind, parameters, format, sha256, byte_len, produced_by, produced_at) \
         VALUES ('budget', '{}', 'csv', 'ABC', 1, 'x', '2024-03-02T10:00:00+00:00')",
        "INSERT INTO reports (kind, parameters, format, sha256, byte_len, produced_by, produced_at) \
         VALUES ('pdf-magic', '{}', 'csv', '0000000000000000000000000000000000000000000000000000000000000000', 1, 'x', '2024-03-02T10:00:00+00:00')",
    ] {
        assert!(s.db.raw(&[sql]).await.is_err(), "{sql}");
    }
    let v = reports.verify(&p.bytes).await.unwrap();
    assert_eq!(v.verdict, Verdict::Verified, "{}", v.message);
    s.db.cleanup().await;
}

#[tokio::test]
async fn trial_balance_and_journal_reports_follow_the_ledger() {
    let s = scenario().await;
    let ledger = s.reg.ledger();
    let reports = Reports::new(s.reg.clone());

    let tb = ledger.trial_balance().await.unwrap();
    let t = reports
        .table(&reports.resolve(&Request::new(Kind::TrialBalance)).unwrap())
        .await
        .unwrap();
    assert_eq!(t.rows.len(), tb.accounts.len() + tb.totals.len());
    assert_eq!(t.header["balanced"], true);
    for a in &tb.accounts {
        let row = (0..t.rows.len())
            .find(|&r| text(&t, r, "account") == a.code.as_str())
            .unwrap();
        assert_eq!(money(&t, row, "debit").unwrap(), a.debits.to_string());
        assert_eq!(money(&t, row, "credit").unwrap(), a.credits.to_string());
        assert_eq!(
            money(&t, row, "balance").unwrap(),
            a.signed_balance().to_string()
        );
    }
    let last = t.rows.len() - 1;
    assert_eq!(text(&t, last, "account"), "total XOF");
    assert_eq!(money(&t, last, "balance").unwrap(), "0");

    // The whole journal: every line of every entry.
    let mut entries = Vec::new();
    let mut j = ledger.journal();
    while let Some(e) = j.next().await {
        entries.push(e.unwrap());
    }
    let all = reports
        .table(&reports.resolve(&Request::new(Kind::Journal)).unwrap())
        .await
        .unwrap();
    let lines: usize = entries.iter().map(|e| e.lines.len()).sum();
    assert_eq!(all.rows.len(), lines);
    assert_eq!(text(&all, 0, "entry_id"), entries[0].id.to_string());

    // The programme's journal: grants, cancellation, releases, confirmations, failures,
    // reversals and the donor funding; not the float top-up nor the bank top-up.
    let mine = reports
        .table(
            &reports
                .resolve(&Request::new(Kind::Journal).programme(P))
                .unwrap(),
        )
        .await
        .unwrap();
    let keys: std::collections::BTreeSet<String> = (0..mine.rows.len())
        .map(|r| text(&mine, r, "idempotency_key"))
        .collect();
    let confirms = keys.iter().filter(|k| k.ends_with(":confirm")).count();
    let fails = keys.iter().filter(|k| k.ends_with(":fail")).count();
    let reversals = keys.iter().filter(|k| k.ends_with(":reversal")).count();
    let releases = keys.iter().filter(|k| k.ends_with(":release")).count();
    assert_eq!((confirms, fails, reversals, releases), (5, 4, 1, 14));
    assert!(keys.iter().any(|k| k.starts_with("funding:")));
    assert!(!keys.contains("bank-topup"));
    let expected: usize = entries
        .iter()
        .filter(|e| {
            let k = e.idempotency_key.as_str();
            k != "bank-topup" && !k.starts_with("float:")
        })
        .count();
    assert_eq!(keys.len(), expected, "{keys:?}");
    s.db.cleanup().await;
}
