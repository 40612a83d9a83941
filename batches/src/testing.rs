//! Fixtures for tests (feature `testing`): a programme with verified households (phones chosen
//! by the test, including the provider simulator's magic endings), their entitlements, a GSMA
//! payments configuration, and the sign-offs that take a batch to `released`. They panic on
//! any error: they are for tests only.
//!
//! ```ignore
//! let reg = cva_batches::testing::registry(ledger);
//! cva_batches::testing::entitlements(&reg, &[phone(0, None), phone(1, Some("0003"))]).await;
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::{BatchView, Batches, Filters, PaymentsConfig, Step};
use chrono::NaiveDate;
use cva_households::import::ColumnMapping;
use cva_households::msisdn::OperatorTable;
use cva_households::pii::PiiKeys;
use cva_ledger::audit::AuditContext;
use cva_programmes::rules::{Modality, Rule};
use cva_registry::households::{HouseholdQuery, Reveal, StatusAction};
use cva_registry::programmes::NewProgramme;
use cva_registry::Registry;

pub const P: &str = "MLI-MPCA-24";
pub const AMOUNT: i64 = 20_000;
pub const HEADER: &str = "start,end,today,enumerator,consent,household/head_name,household/head_sex,household/head_birth_year,household/size,household/displacement_status,location/region,location/cercle,location/commune,contact/msisdn,identity/national_id,identity/biometric_ref,_id,_uuid,_submission_time,_index";

pub fn ctx(actor: &str) -> AuditContext {
    AuditContext {
        actor_id: None,
        actor: actor.into(),
        role: "finance_officer".into(),
        request_id: "test".into(),
    }
}

/// The phone of household `n` (0-based) on Orange Mali: the last four digits are 1000 + n %
/// 1000 (never a magic ending), or `magic` (e.g. `"0003"`) after a prefix from `n / 10` (give
/// households sharing a magic ending numbers at least 10 apart).
pub fn phone(n: usize, magic: Option<&str>) -> String {
    match magic {
        Some(m) => format!("+223 76 {:02} {} {}", 10 + (n / 10) % 90, &m[..2], &m[2..]),
        None => {
            let tail = 1000 + n % 1000;
            format!(
                "+223 76 {:02} {:02} {:02}",
                10 + n / 1000,
                tail / 100,
                tail % 100
            )
        }
    }
}

/// One Kobo row; households differ by commune and birth year so none looks like another.
fn row(n: usize, phone: &str) -> String {
    let names = [
        "Awa Sangare",
        "Bakary Cisse",
        "Fatoumata Diallo",
        "Ibrahim Maiga",
        "Kadiatou Toure",
        "Mamadou Sidibe",
        "Oumar Keita",
        "Safiatou Traore",
        "Youssouf Coulibaly",
        "Hawa Dembele",
    ];
    let name = format!("{} {}", names[n % 10], n);
    let year = 1940 + 5 * (n / 100 % 12);
    format!(
        "2024-03-01T08:00:00,2024-03-01T08:20:00,2024-03-01,enum-01,yes,{name},female,{year},4,idp,ML05,ML0501,ML0501{:02},{phone},NINA{n:010}A,,{n},6f1c2a4e-8d3b-4c5a-9e7f-{n:012},2024-03-01T10:22:33,{n}",
        n % 100
    )
}

/// A payments configuration with one GSMA provider at `base_url` (Orange Mali), a flat fee,
/// and one sign-off of each kind.
pub fn config(base_url: &str, fee: i64, token_env: Option<&str>) -> PaymentsConfig {
    // The simulator only checks a token when it is given one; the configuration always names
    // where the token is.
    let var = token_env.unwrap_or("CVA_TEST_SIM_TOKEN");
    if token_env.is_none() {
        std::env::set_var(var, "unused");
    }
    let creds = format!(r#""credentials": {{"env": "{var}"}},"#);
    PaymentsConfig::from_json(&format!(
        r#"{{"providers": [{{"name": "orange-money", "adapter": "gsma-mmapi", "base_url": "{base_url}", {creds}
            "currency": "XOF", "operators": ["orange-ml"], "min_amount": "500", "max_amount": "1000000",
            "fees": {{"flat": "{fee}"}}}}],
           "approvals": [{{"above": "0", "approvals": 1, "authorisations": 1, "releases": 1}}]}}"#
    ))
    .unwrap()
}

/// A registry over `ledger` with fresh PII keys, the default operator table and calling code
/// 223.
pub fn registry(ledger: cva_ledger::Ledger) -> Registry {
    let (keys, _) = PiiKeys::generate();
    Registry::new(ledger, keys, OperatorTable::default_table(), "223")
}

/// Programme [`P`] with verified households with the given phones (`""`: no phone), an
/// entitlement of [`AMOUNT`] XOF each (cycle `2024-03`), and the budget funded for them.
pub async fn entitlements(reg: &Registry, phones: &[String]) {
    let admin = ctx("admin");
    reg.create_programme(
        NewProgramme {
            code: P.into(),
            name: "MPCA Mopti 2024".into(),
            donor: "ECHO".into(),
            grant_ref: "ECHO/2024/1".into(),
            currency: "XOF".into(),
            reporting_currency: "EUR".into(),
            starts_on: NaiveDate::from_ymd_opt(2024, 1, 1).unwrap(),
            ends_on: NaiveDate::from_ymd_opt(2024, 12, 31).unwrap(),
            regions: vec!["ML05".into()],
        },
        &admin,
    )
    .await
    .unwrap();
    let budget = (phones.len() as i64 * AMOUNT).to_string();
    reg.add_budget_line(P, "mpca", Modality::Mpca, &budget, &admin)
        .await
        .unwrap();
    let date = NaiveDate::from_ymd_opt(2024, 3, 1).unwrap();
    reg.fund_budget_line(P, "mpca", &budget, "ECHO-1", date, &admin)
        .await
        .unwrap();
    let rule = Rule::from_json(&format!(
        r#"{{"modality":"mpca","amount":{{"kind":"flat","amount":{AMOUNT}}},"tranches":1,"rounding":{{"unit":25,"mode":"nearest"}}}}"#
    ))
    .unwrap();
    reg.add_rule(P, rule, &admin).await.unwrap();
    let rows: Vec<String> = phones.iter().enumerate().map(|(n, p)| row(n, p)).collect();
    let csv = format!("{HEADER}\n{}\n", rows.join("\n"));
    let officer = ctx("officer");
    let r = reg
        .import_households(
            P,
            csv.as_bytes(),
            &ColumnMapping::kobo_default(),
            false,
            &officer,
        )
        .await
        .unwrap();
    assert_eq!(r.created, phones.len(), "{r:?}");
    let mut after = 0;
    loop {
        let q = HouseholdQuery {
            limit: 1000,
            after_id: after,
            ..HouseholdQuery::default()
        };
        let page = reg.households(P, &q, Reveal::Masked).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.id;
        for h in &page {
            reg.set_status(h.id, StatusAction::Verify, None, &ctx("checker"))
                .await
                .unwrap();
        }
    }
    let g = reg
        .generate_entitlements(P, "2024-03", Modality::Mpca, date, &officer)
        .await
        .unwrap();
    assert_eq!(g.created, phones.len());
}

/// Batches over `reg` with `config`, provider accounts open, the float funded with `float`.
pub async fn batches(reg: &Registry, config: PaymentsConfig, float: i64) -> Batches {
    let b = Batches::new(reg.clone(), config);
    b.open_provider_accounts(&ctx("admin")).await.unwrap();
    if float > 0 {
        // The bank holds the budget's funding; top it up so the float can exceed it.
        reg.ledger()
            .post(cva_ledger::testing::transfer(
                "bank-topup",
                "assets:bank",
                "income:topup",
                float,
            ))
            .await
            .unwrap();
        b.fund_float(
            "orange-money",
            &float.to_string(),
            "assets:bank",
            "TOPUP-1",
            &ctx("finance"),
        )
        .await
        .unwrap();
    }
    b
}

/// Creates one batch of every due entitlement (at most `max` lines) and signs it to
/// `released` with four different people.
pub async fn released(b: &Batches, max: usize) -> BatchView {
    let made = b
        .create(
            &Filters {
                programme: P.into(),
                max_lines: Some(max),
                ..Filters::default()
            },
            &ctx("preparer"),
        )
        .await
        .unwrap();
    assert_eq!(made.batches.len(), 1, "{made:?}");
    let id = made.batches[0].id;
    b.submit(id, &ctx("preparer")).await.unwrap();
    b.sign(id, Step::Approve, &ctx("ana")).await.unwrap();
    b.sign(id, Step::Authorise, &ctx("bo")).await.unwrap();
    let v = b.sign(id, Step::Release, &ctx("cy")).await.unwrap();
    assert_eq!(v.status, "released");
    v
}
