//! `cva demo`: the most complete cycle the project can run today, on a fresh embedded
//! database, with fixture households, progress bars, and reports left behind.
//!
//! The cycle follows the chart of accounts in the README: donor funds → provider floats →
//! entitlements per household → payments released to providers → confirmed (with fees) or
//! failed and returned → one entitlement cancelled by reversal → trial balance and reports.

use std::path::Path;

use anyhow::{bail, Context};
use chrono::NaiveDate;
use cva_ledger::account::{AccountCode, Side};
use cva_ledger::entry::{IdempotencyKey, Line, NewEntry};
use cva_ledger::money::{Amount, Currency};
use cva_ledger::{Ledger, LedgerError};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::{DemoArgs, Format};
use crate::commands::connect;

const HOUSEHOLDS_CSV: &str = include_str!("../../fixtures/households.csv");
const PROGRAMME: &str = "MLI-MPCA-2024";
const CHUNK: usize = 500;
/// Flat fee per confirmed payment, in XOF (a provider fee schedule arrives with providers).
const FEE_XOF: i64 = 100;

#[derive(Debug, serde::Deserialize)]
struct Household {
    household_id: String,
    size: u32,
    operator: String,
}

/// MPCA transfer value by household size band (XOF), a stand-in for the programme rules of the
/// entitlements issue.
fn transfer_value(size: u32) -> i64 {
    match size {
        0..=3 => 65_000,
        4..=6 => 90_000,
        _ => 120_000,
    }
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
            for suffix in ["", "-wal", "-shm"] {
                let f = format!("{}{suffix}", db.display());
                if Path::new(&f).exists() {
                    std::fs::remove_file(&f).with_context(|| format!("cannot remove {f}"))?;
                }
            }
            format!("sqlite://{}", db.display())
        }
    };
    let mut households: Vec<Household> = Vec::new();
    for (i, row) in csv::Reader::from_reader(HOUSEHOLDS_CSV.as_bytes())
        .deserialize()
        .enumerate()
    {
        households.push(row.with_context(|| format!("fixtures/households.csv row {}", i + 2))?);
    }
    households.truncate(args.households);
    if households.is_empty() {
        bail!("--households must be at least 1");
    }

    println!(
        "CVA demo: programme {PROGRAMME}, {} households, database {}",
        households.len(),
        cva_ledger::store::redact_url(&url)
    );
    let ctx = Ctx {
        ledger: connect(&url).await?,
        xof: Currency::parse("XOF")?,
        run: chrono::Utc::now().format("%Y%m%dT%H%M%S%.3f").to_string(),
        date: chrono::Utc::now().date_naive(),
    };
    let budget_line = format!("funds:{PROGRAMME}:mpca");
    let expense = format!("expense:transfers:{PROGRAMME}:mpca");
    let entitlement =
        |h: &Household| format!("liabilities:entitlements:{PROGRAMME}:{}", h.household_id);
    let float = |p: &str| format!("assets:float:{p}");
    let transit = |p: &str| format!("liabilities:in-transit:{p}");
    let fees = |p: &str| format!("expense:fees:{p}");

    let total: i64 = households.iter().map(|h| transfer_value(h.size)).sum();
    let per_provider = |p: &str| -> i64 {
        households
            .iter()
            .filter(|h| h.operator == p)
            .map(|h| transfer_value(h.size) + FEE_XOF)
            .sum()
    };
    let providers = ["orange-money-ml", "moov-money-ml"];

    println!("\n1. Donor funds and provider floats");
    let funding = total + total / 10;
    let mut setup = vec![ctx.entry(
        "donor-funds",
        "Donor funds received: ECHO grant, MPCA budget line",
        &[
            ("assets:bank", Side::Debit, funding),
            (&budget_line, Side::Credit, funding),
        ],
    )?];
    for p in providers {
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
    ctx.post_chunked("funds and floats", setup).await?;

    println!("\n2. Entitlements (MPCA, by household size)");
    let grants: Vec<NewEntry> = households
        .iter()
        .map(|h| {
            ctx.entry(
                &format!("grant-{}", h.household_id),
                &format!("MPCA entitlement, cycle 1: {}", h.household_id),
                &[
                    (&expense, Side::Debit, transfer_value(h.size)),
                    (&entitlement(h), Side::Credit, transfer_value(h.size)),
                ],
            )
        })
        .collect::<anyhow::Result<_>>()?;
    let first_grant = grants[0].clone();
    ctx.post_chunked("entitlements granted", grants).await?;

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
                    (&entitlement(h), Side::Debit, transfer_value(h.size)),
                    (&transit(&h.operator), Side::Credit, transfer_value(h.size)),
                ],
            )
        })
        .collect::<anyhow::Result<_>>()?;
    ctx.post_chunked("payments released", releases).await?;

    println!("\n4. Provider results: confirmed (with fees) or failed and returned");
    let mut results = Vec::with_capacity(paid.len());
    let mut failed: Vec<&Household> = Vec::new();
    for (i, h) in paid.iter().enumerate() {
        let v = transfer_value(h.size);
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
        let key = IdempotencyKey::parse(&format!("demo-{}-grant-{}", ctx.run, h.household_id))?;
        if let Some(grant) = ctx.ledger.entry_by_key(&key).await? {
            let r = ctx
                .ledger
                .reverse(grant.id, "household relocated out of the programme area")
                .await?;
            println!(
                "  entitlement of {} cancelled by reversal {} (of {})",
                h.household_id,
                r.id(),
                grant.id
            );
        }
    }
    let replay = ctx.ledger.post(first_grant.clone()).await?;
    println!("  re-posting the first grant with the same key returns the original entry {} (nothing written)", replay.id());
    let mut conflicting = first_grant.clone();
    conflicting.description.push_str(" (edited)");
    match ctx.ledger.post(conflicting).await {
        Err(e @ LedgerError::IdempotencyConflict { .. }) => {
            println!("  same key, different content: refused ({e})")
        }
        other => bail!("expected an idempotency conflict, got {other:?}"),
    }
    if let Some(h) = paid
        .iter()
        .find(|h| !failed.iter().any(|f| f.household_id == h.household_id))
    {
        let again = ctx.entry(
            &format!("release-again-{}", h.household_id),
            "Second payment attempt for an already-paid household",
            &[
                (&entitlement(h), Side::Debit, transfer_value(h.size)),
                (&transit(&h.operator), Side::Credit, transfer_value(h.size)),
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

    let shown: Vec<String> = vec![
        "assets:bank".into(),
        budget_line.clone(),
        expense.clone(),
        float(providers[0]),
        float(providers[1]),
        transit(providers[0]),
        fees(providers[0]),
        entitlement(&households[0]),
    ]
    .into_iter()
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
