//! `cva demo`: the most complete cycle the project can run today, on a fresh embedded
//! database, with fixture households, progress bars, and reports left behind.
//!
//! The cycle: a programme with its budget line and MPCA rule → the fixture Kobo export imported
//! (personal data sealed, duplicates flagged) → duplicates adjudicated → households verified by a
//! second person → donor funds and provider floats → entitlements generated under budget control
//! → payments released to providers → confirmed (with fees) or failed and returned → one
//! entitlement cancelled by reversal → trial balance and reports.

use std::path::Path;

use anyhow::{bail, Context};
use chrono::NaiveDate;
use cva_ledger::account::{AccountCode, Side};
use cva_ledger::entry::{IdempotencyKey, Line, NewEntry};
use cva_ledger::money::{Amount, Currency};
use cva_ledger::{Ledger, LedgerError};
use indicatif::{ProgressBar, ProgressStyle};

use cva_households::import::ColumnMapping;
use cva_households::pii::PiiKeys;
use cva_programmes::rules::{Modality, Rule};
use cva_registry::entitlements::household_account;
use cva_registry::flags::Decision;
use cva_registry::households::{HouseholdQuery, Reveal, Status, StatusAction};
use cva_registry::programmes::NewProgramme;
use cva_registry::{Registry, RegistryError};

use crate::cli::{DemoArgs, Format};
use crate::commands::connect;

const HOUSEHOLDS_CSV: &str = include_str!("../../fixtures/households.csv");
const PROGRAMME: &str = "MLI-MPCA-2024";
const CYCLE: &str = "2024-03";
const CHUNK: usize = 500;
/// Flat fee per confirmed payment, in XOF (a provider fee schedule arrives with providers).
const FEE_XOF: i64 = 100;
/// MPCA transfer value by household size band (XOF), monthly, one tranche this cycle.
const MPCA_RULE: &str = r#"{"modality":"mpca","amount":{"kind":"by_size","bands":[
    {"min_size":1,"max_size":3,"amount":65000},{"min_size":4,"max_size":6,"amount":85000},
    {"min_size":7,"max_size":9,"amount":100000},{"min_size":10,"max_size":null,"amount":120000}]},
    "tranches":1,"rounding":{"unit":25,"mode":"nearest"}}"#;

/// A household to pay this cycle, from the registry.
#[derive(Debug)]
struct Household {
    household_id: String,
    amount: i64,
    operator: String,
    entitlement_id: i64,
}

fn actor(name: &str) -> cva_ledger::audit::AuditContext {
    cva_ledger::audit::AuditContext {
        actor_id: None,
        actor: format!("demo:{name}"),
        role: "programme_officer".into(),
        request_id: "demo".into(),
    }
}

fn bar(len: u64, label: &str) -> ProgressBar {
    let b = ProgressBar::new(len).with_message(label.to_owned());
    b.set_style(
        ProgressStyle::with_template("{msg:<28} [{bar:30}] {pos}/{len} {per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    b
}

struct Ctx {
    ledger: Ledger,
    xof: Currency,
    run: String,
    date: NaiveDate,
}

impl Ctx {
    fn entry(
        &self,
        key: &str,
        description: &str,
        lines: &[(&str, Side, i64)],
    ) -> anyhow::Result<NewEntry> {
        let lines = lines
            .iter()
            .map(|(a, side, minor)| {
                Ok(Line {
                    account: AccountCode::parse(a)?,
                    side: *side,
                    amount: Amount::from_minor(*minor, self.xof),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut metadata = serde_json::Map::new();
        metadata.insert("programme".into(), PROGRAMME.into());
        metadata.insert("demo_run".into(), self.run.clone().into());
        Ok(NewEntry::new(
            IdempotencyKey::parse(&format!("demo-{}-{key}", self.run))?,
            description.to_owned(),
            self.date,
            metadata,
            lines,
        )?)
    }

    async fn post_chunked(&self, label: &str, entries: Vec<NewEntry>) -> anyhow::Result<()> {
        let bar = ProgressBar::new(entries.len() as u64).with_message(label.to_owned());
        bar.set_style(
            ProgressStyle::with_template("{msg:<28} [{bar:30}] {pos}/{len} entries {per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        for chunk in entries.chunks(CHUNK) {
            self.ledger
                .post_many(chunk)
                .await
                .with_context(|| format!("{label}: batch refused"))?;
            bar.inc(chunk.len() as u64);
        }
        bar.finish();
        println!("  {label}: {} entries posted", entries.len());
        Ok(())
    }
}

pub async fn run(args: DemoArgs, database_url: Option<String>) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let url = match database_url {
        Some(u) => u,
        None => {
            let db = args.dir.join("cva-demo.db");
            for suffix in ["", "-wal", "-shm", ".keys"] {
                let f = format!("{}{suffix}", db.display());
                if Path::new(&f).exists() {
                    std::fs::remove_file(&f).with_context(|| format!("cannot remove {f}"))?;
                }
            }
            format!("sqlite://{}", db.display())
        }
    };
    if args.households == 0 {
        bail!("--households must be at least 1");
    }
    // The first N households of the committed fixture export (one household per line).
    let mut export = String::new();
    for line in HOUSEHOLDS_CSV.lines().take(args.households + 1) {
        export.push_str(line);
        export.push('\n');
    }
    let rows = export.lines().count() - 1;
    println!(
        "CVA demo: programme {PROGRAMME}, {rows} households (fixtures/households.csv), database {}",
        cva_ledger::store::redact_url(&url)
    );
    let ctx = Ctx {
        ledger: connect(&url).await?,
        xof: Currency::parse("XOF")?,
        run: chrono::Utc::now().format("%Y%m%dT%H%M%S%.3f").to_string(),
        date: chrono::Utc::now().date_naive(),
    };
    let reg = match crate::config::registry(&ctx.ledger, &url) {
        Ok(r) => r,
        Err(e) => {
            println!("  ({e:#}; using throw-away keys for this run)");
            Registry::new(
                ctx.ledger.clone(),
                PiiKeys::generate().0,
                crate::config::operators()?,
                &crate::config::default_country(),
            )
        }
    };
    let admin = actor("admin");
    let officer = actor("enrolment-officer");
    let checker = actor("verifier");
    let programme = PROGRAMME.to_owned();
    let exists = reg.programme(&programme).await.is_ok();
    if !exists {
        reg.create_programme(
            NewProgramme {
                code: programme.clone(),
                name: "Multi-purpose cash, central and northern Mali".into(),
                donor: "ECHO".into(),
                grant_ref: "ECHO/-WF/BUD/2024/91011".into(),
                currency: "XOF".into(),
                reporting_currency: "EUR".into(),
                starts_on: NaiveDate::from_ymd_opt(2024, 1, 1).unwrap_or(ctx.date),
                ends_on: NaiveDate::from_ymd_opt(2024, 12, 31).unwrap_or(ctx.date),
                regions: ["ML05", "ML06", "ML07", "ML04", "ML10"]
                    .map(String::from)
                    .to_vec(),
            },
            &admin,
        )
        .await?;
        reg.add_budget_line(&programme, "mpca", Modality::Mpca, "1000000000", &admin)
            .await?;
        reg.add_rule(&programme, Rule::from_json(MPCA_RULE)?, &admin)
            .await?;
        reg.add_rate(
            &programme,
            ctx.date,
            "0.001524",
            "ECB reference rate (XOF is pegged: 655.957 per EUR)",
            &admin,
        )
        .await?;
    }

    println!("\n1. Enrolment: Kobo export imported, personal data sealed, duplicates flagged");
    let report = reg
        .import_households(
            &programme,
            export.as_bytes(),
            &ColumnMapping::kobo_default(),
            false,
            &officer,
        )
        .await?;
    println!(
        "  {} rows: {} households enrolled, {} already enrolled; flags: {} same national ID, {} same biometric reference, {} shared phone, {} similar name ({} households)",
        report.rows, report.created, report.unchanged, report.flags.same_national_id,
        report.flags.same_biometric_ref, report.flags.shared_phone, report.flags.similar_name,
        report.flags.households_flagged
    );

    println!("\n2. Adjudication and verification (by a second person)");
    let flags = reg.flags(&programme, true).await?;
    let (mut dup, mut distinct) = (0, 0);
    let adjudicator = actor("programme-officer");
    let b = bar(flags.len() as u64, "flags decided");
    for f in &flags {
        // Exact ID matches are the same person registered twice: keep the first record.
        // The demo treats the weaker signals as checked on site and distinct.
        let d = if f.kind == "same_national_id" || f.kind == "same_biometric_ref" {
            dup += 1;
            Decision::Duplicate {
                keep: f.household_a,
                reason: "same identity document; registered twice".into(),
            }
        } else {
            distinct += 1;
            Decision::Distinct {
                reason: "checked on site: different households".into(),
            }
        };
        match reg.adjudicate(f.id, &d, &adjudicator).await {
            Ok(_) | Err(RegistryError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
        b.inc(1);
    }
    b.finish_and_clear();
    println!(
        "  {} flags: {dup} duplicates withdrawn, {distinct} distinct",
        flags.len()
    );
    let mut verified = 0;
    let mut after_id = 0;
    let mut refused_self = false;
    let mut self_refusal = None;
    let b = bar(rows as u64, "households verified");
    loop {
        let q = HouseholdQuery {
            status: Some(Status::Registered),
            commune: None,
            after_id,
            limit: 1000,
        };
        let page = reg.households(&programme, &q, Reveal::Masked).await?;
        let Some(last) = page.last() else { break };
        after_id = last.id;
        if !refused_self {
            if let Err(RegistryError::SamePerson(m)) = reg
                .set_status(page[0].id, StatusAction::Verify, None, &officer)
                .await
            {
                self_refusal = Some(m);
                refused_self = true;
            }
        }
        for h in &page {
            reg.set_status(h.id, StatusAction::Verify, None, &checker)
                .await?;
            verified += 1;
            b.inc(1);
        }
    }
    b.finish_and_clear();
    if let Some(m) = self_refusal {
        println!("  the enrolling officer verifying their own household: refused ({m})");
    }
    println!("  {verified} households verified by {}", checker.actor);

    let budget_line = format!("funds:{PROGRAMME}:mpca");
    let entitlement =
        |h: &Household| household_account(PROGRAMME, h.household_id.parse().unwrap_or_default());
    let float = |p: &str| format!("assets:float:{p}");
    let transit = |p: &str| format!("liabilities:in-transit:{p}");
    let fees = |p: &str| format!("expense:fees:{p}");

    println!("\n3. Donor funds and entitlements under budget control");
    let funding = reg
        .fund_budget_line(
            &programme,
            "mpca",
            "400000000",
            &format!("ECHO-TT-{}", ctx.run.replace(['.', ':'], "")),
            ctx.date,
            &actor("finance-officer"),
        )
        .await?;
    println!("  donor funds recorded: entry {}", funding.id());
    let g = reg
        .generate_entitlements(&programme, CYCLE, Modality::Mpca, ctx.date, &officer)
        .await?;
    println!(
        "  cycle {CYCLE}: {} entitlements ({} XOF) by rule v{}, {} already granted; {} not verified, {} flagged left out",
        g.created, g.amount, g.rule_version, g.already_granted, g.not_verified, g.flagged
    );
    let ents = reg
        .cycle_entitlements(&programme, CYCLE, Modality::Mpca)
        .await?;
    let mut households: Vec<Household> = Vec::with_capacity(ents.len());
    let mut after_id = 0;
    let mut operators = std::collections::HashMap::new();
    loop {
        let q = HouseholdQuery {
            status: Some(Status::Verified),
            commune: None,
            after_id,
            limit: 1000,
        };
        let page = reg.households(&programme, &q, Reveal::Masked).await?;
        let Some(last) = page.last() else { break };
        after_id = last.id;
        for h in page {
            operators.insert(h.id, h.operator.unwrap_or_default());
        }
    }
    for e in ents.iter().filter(|e| e.status == "granted") {
        let operator = operators.get(&e.household_id).cloned().unwrap_or_default();
        if operator.is_empty() {
            continue; // no phone number: paid another way (not in this demo)
        }
        households.push(Household {
            household_id: e.household_id.to_string(),
            amount: e.amount,
            operator,
            entitlement_id: e.id,
        });
    }
    let mut providers: Vec<String> = households.iter().map(|h| h.operator.clone()).collect();
    providers.sort();
    providers.dedup();
    let per_provider = |p: &str| -> i64 {
        households
            .iter()
            .filter(|h| h.operator == p)
            .map(|h| h.amount + FEE_XOF)
            .sum()
    };
    let mut setup = Vec::new();
    for p in &providers {
        let need = per_provider(p);
        setup.push(ctx.entry(
            &format!("float-topup-{p}"),
            &format!("Provider float topped up: {p}"),
            &[
                (&float(p), Side::Debit, need),
                ("assets:bank", Side::Credit, need),
            ],
        )?);
    }
    ctx.post_chunked("provider floats", setup).await?;

    // One household in fifty is left unpaid this cycle (e.g. not yet reachable).
    let paid: Vec<&Household> = households
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 50 != 49)
        .map(|(_, h)| h)
        .collect();
    println!("\n3. Payments released to providers");
    let releases: Vec<NewEntry> = paid
        .iter()
        .map(|h| {
            ctx.entry(
                &format!("release-{}", h.household_id),
                &format!("Payment released to {}: {}", h.operator, h.household_id),
                &[
                    (&entitlement(h), Side::Debit, h.amount),
                    (&transit(&h.operator), Side::Credit, h.amount),
                ],
            )
        })
        .collect::<anyhow::Result<_>>()?;
    ctx.post_chunked("payments released", releases).await?;

    println!("\n4. Provider results: confirmed (with fees) or failed and returned");
    let mut results = Vec::with_capacity(paid.len());
    let mut failed: Vec<&Household> = Vec::new();
    for (i, h) in paid.iter().enumerate() {
        let v = h.amount;
        if i % 97 == 13 {
            failed.push(h);
            results.push(ctx.entry(
                &format!("failed-{}", h.household_id),
                &format!(
                    "Payment failed (account not registered), returned: {}",
                    h.household_id
                ),
                &[
                    (&transit(&h.operator), Side::Debit, v),
                    (&entitlement(h), Side::Credit, v),
                ],
            )?);
        } else {
            results.push(ctx.entry(
                &format!("confirmed-{}", h.household_id),
                &format!("Payment confirmed by {}: {}", h.operator, h.household_id),
                &[
                    (&transit(&h.operator), Side::Debit, v),
                    (&float(&h.operator), Side::Credit, v),
                    (&fees(&h.operator), Side::Debit, FEE_XOF),
                    (&float(&h.operator), Side::Credit, FEE_XOF),
                ],
            )?);
        }
    }
    ctx.post_chunked("provider results", results).await?;
    println!(
        "  {} confirmed, {} failed and returned to the household",
        paid.len() - failed.len(),
        failed.len()
    );

    println!("\n5. Corrections and safeguards");
    if let Some(h) = failed.first() {
        let c = reg
            .cancel_entitlement(
                h.entitlement_id,
                "household relocated out of the programme area",
                &officer,
            )
            .await?;
        println!(
            "  entitlement {} of household {} cancelled by reversal {}",
            c.id,
            h.household_id,
            c.cancel_entry_id.map(|u| u.to_string()).unwrap_or_default()
        );
    }
    let again = reg
        .generate_entitlements(&programme, CYCLE, Modality::Mpca, ctx.date, &officer)
        .await?;
    println!(
        "  generating cycle {CYCLE} again creates {} entitlements ({} already granted)",
        again.created, again.already_granted
    );
    let mut over = NewEntry::clone(&ctx.entry(
        "over-budget-probe",
        "Probe: a grant beyond the funded budget",
        &[
            (&budget_line, Side::Debit, 1_000_000_000_000),
            (
                "liabilities:entitlements:probe",
                Side::Credit,
                1_000_000_000_000,
            ),
        ],
    )?);
    over.description.push_str(" (must be refused)");
    match ctx.ledger.post(over).await {
        Err(e @ LedgerError::InsufficientBalance { .. }) => {
            println!("  a grant beyond the budget line: refused by the ledger ({e})")
        }
        other => bail!("expected the over-budget grant to be refused, got {other:?}"),
    }
    if let Some(h) = paid
        .iter()
        .find(|h| !failed.iter().any(|f| f.household_id == h.household_id))
    {
        let again = ctx.entry(
            &format!("release-again-{}", h.household_id),
            "Second payment attempt for an already-paid household",
            &[
                (&entitlement(h), Side::Debit, h.amount),
                (&transit(&h.operator), Side::Credit, h.amount),
            ],
        )?;
        match ctx.ledger.post(again).await {
            Err(e @ LedgerError::InsufficientBalance { .. }) => {
                println!("  paying {} twice: refused ({e})", h.household_id)
            }
            other => bail!("expected the double payment to be refused, got {other:?}"),
        }
    }

    println!("\n6. Verification and reports");
    let report = ctx.ledger.verify().await?;
    if !report.problems.is_empty() {
        bail!("verification found problems: {:?}", report.problems);
    }
    let tb = ctx.ledger.trial_balance().await?;
    if !tb.is_balanced() {
        bail!("the trial balance does not net to zero");
    }
    println!(
        "  verified: {} accounts, {} entries; every balance equals the sum of its lines",
        report.accounts_checked, report.entries_checked
    );

    let shown: Vec<String> = vec!["assets:bank".into(), budget_line.clone()]
        .into_iter()
        .chain(providers.iter().map(|p| float(p)))
        .chain(providers.first().map(|p| transit(p)))
        .chain(providers.first().map(|p| fees(p)))
        .chain(households.first().map(&entitlement))
        .chain(failed.get(1).map(|h| entitlement(h)))
        .chain(
            households
                .iter()
                .enumerate()
                .find(|(i, _)| i % 50 == 49)
                .map(|(_, h)| entitlement(h)),
        )
        .collect();
    println!();
    let mut rows = Vec::new();
    for code in &shown {
        let b = ctx.ledger.balance(&AccountCode::parse(code)?, None).await?;
        rows.push(vec![
            code.clone(),
            b.account_type.to_string(),
            format!("{} {}", b.balance, b.currency),
        ]);
    }
    print!(
        "{}",
        crate::output::table(&["account", "type", "balance (normal side)"], &rows, &[2])
    );

    let dir = &args.dir;
    let mut f = std::fs::File::create(dir.join("trial-balance.csv"))?;
    crate::commands::print_trial_balance(&tb, Format::Csv, &mut f)?;
    let mut f = std::fs::File::create(dir.join("trial-balance.json"))?;
    crate::commands::print_trial_balance(&tb, Format::Json, &mut f)?;
    let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join("journal.ledger"))?);
    let n = cva_ledger::export::write_ledger_journal(&ctx.ledger, &mut f).await?;
    let owed = households_owed(&tb);
    let mut w = csv::Writer::from_path(dir.join("households-owed.csv"))?;
    w.write_record(["account", "currency", "owed"])?;
    for (code, cur, bal) in &owed {
        w.write_record([
            code.as_str(),
            cur.code(),
            &Amount::from_minor(*bal, *cur).number(),
        ])?;
    }
    w.flush()?;
    println!("\nTrial balance (totals per currency):");
    for t in &tb.totals {
        println!(
            "  {}  debits {}  credits {}  net {}",
            t.currency,
            t.debits,
            t.credits,
            t.debits - t.credits
        );
    }
    println!(
        "\nReports in {}: trial-balance.csv, trial-balance.json, journal.ledger ({n} entries; check with `hledger -f {}/journal.ledger balance`), households-owed.csv ({} households still owed)",
        dir.display(),
        dir.display(),
        owed.len()
    );
    ctx.ledger.close().await;
    Ok(())
}

fn households_owed(tb: &cva_ledger::store::TrialBalance) -> Vec<(String, Currency, i64)> {
    tb.accounts
        .iter()
        .filter(|a| a.code.as_str().starts_with("liabilities:entitlements:") && a.balance() > 0)
        .map(|a| {
            (
                a.code.to_string(),
                a.currency,
                i64::try_from(a.balance()).unwrap_or(i64::MAX),
            )
        })
        .collect()
}
