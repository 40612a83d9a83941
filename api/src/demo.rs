//! `cva demo`: the most complete cycle the project can run today, on a fresh embedded
//! database, with fixture households, progress bars, and reports left behind.
//!
//! The cycle: a programme with its budget line and MPCA rule → the fixture Kobo export imported
//! (personal data sealed, duplicates flagged) → duplicates adjudicated → households verified by a
//! second person → donor funds recorded → entitlements generated under budget control → the
//! real payment flow of `cva-batches` against the in-process provider simulator
//! (`cva_providers::sim`, GSMA Mobile Money API, seed 42, flat fee 100 XOF): a batch prepared
//! and submitted by a programme officer (the preparer approving it is refused), approved,
//! authorised and released by as many distinct people as its amount band asks, the provider's
//! float funded from the bank for the batch total and fees, the batch sent (completions post
//! in transit → float with the fee; rejections return the amount to the household), the
//! ledger float checked against the simulator's, failed lines re-issued in a follow-up batch
//! → one unpaid household's entitlement cancelled by reversal, an over-budget grant and a
//! second payment refused → trial balance and reports (households still owed: no phone, or
//! their payment failed).

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use chrono::NaiveDate;
use cva_batches::{Batches, Filters, PaymentsConfig, SendOptions, Step};
use cva_ledger::account::{AccountCode, Side};
use cva_ledger::entry::{IdempotencyKey, Line, NewEntry};
use cva_ledger::money::{Amount, Currency};
use cva_ledger::{Ledger, LedgerError};
use cva_providers::sim::{Faults, RunningSim, SimConfig, Simulator};
use indicatif::{ProgressBar, ProgressStyle};
use rust_decimal::Decimal;

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
/// The demo's mobile-money provider (serves Orange Mali and Moov Africa Malitel).
const PROVIDER: &str = "orange-money";
/// Flat fee per completed payment, in XOF (the provider's schedule and the simulator's).
const FEE_XOF: i64 = 100;
/// Environment variable the payments configuration names for the provider token; the demo
/// sets it in-process to a throw-away value the simulator expects.
const TOKEN_VAR: &str = "CVA_DEMO_PROVIDER_TOKEN";
const DEMO_TOKEN: &str = "demo-throwaway-token";
/// MPCA transfer value by household size band (XOF), monthly, one tranche this cycle.
const MPCA_RULE: &str = r#"{"modality":"mpca","amount":{"kind":"by_size","bands":[
    {"min_size":1,"max_size":3,"amount":65000},{"min_size":4,"max_size":6,"amount":85000},
    {"min_size":7,"max_size":9,"amount":100000},{"min_size":10,"max_size":null,"amount":120000}]},
    "tranches":1,"rounding":{"unit":25,"mode":"nearest"}}"#;

fn actor(name: &str) -> cva_ledger::audit::AuditContext {
    actor_as(name, "programme_officer")
}

fn actor_as(name: &str, role: &str) -> cva_ledger::audit::AuditContext {
    cva_ledger::audit::AuditContext {
        actor_id: None,
        actor: format!("demo:{name}"),
        role: role.into(),
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

    /// The run's timestamp without `.` and `:`, for references.
    fn reference(&self) -> String {
        self.run.replace(['.', ':'], "")
    }
}

/// What the payment flow did, for the later steps and reports.
#[derive(Debug, Default)]
struct Paid {
    float: String,
    transit: String,
    fees: String,
    /// Households whose payment completed.
    completed: Vec<i64>,
    /// Households whose payment failed (their entitlement is still owed).
    failed: Vec<i64>,
}

/// The payments configuration of the demo: one GSMA provider at the simulator serving both
/// Malian operators, a flat fee, one sign-off of each kind up to 50,000,000 XOF and two
/// approvals above.
/// What the provider's float holds beyond the batches' needs (both sides are funded with it).
const FLOAT_RESERVE: i64 = 100_000;

fn payments_config(base_url: &str) -> anyhow::Result<PaymentsConfig> {
    PaymentsConfig::from_json(&format!(
        r#"{{"providers": [{{"name": "{PROVIDER}", "adapter": "gsma-mmapi", "base_url": "{base_url}",
             "credentials": {{"env": "{TOKEN_VAR}"}}, "currency": "XOF",
             "operators": ["orange-ml", "moov-ml"], "min_amount": "500", "max_amount": "1500000",
             "fees": {{"flat": "{FEE_XOF}"}}}}],
            "approvals": [{{"above": "0", "approvals": 1, "authorisations": 1, "releases": 1}},
                          {{"above": "50000000", "approvals": 2, "authorisations": 1, "releases": 1}}]}}"#
    ))
    .context("the demo's payments configuration")
}

/// Batches of the cycle's due entitlements: prepared, signed off, released, sent to the
/// simulator; failed lines re-issued.
async fn pay(reg: &Registry, sim: &RunningSim, ctx: &Ctx) -> anyhow::Result<Paid> {
    let config = payments_config(&sim.base_url)?;
    let provider = config
        .provider(PROVIDER)
        .context("the demo provider is configured")?
        .clone();
    let batches = Batches::new(reg.clone(), config);
    batches.open_provider_accounts(&actor("admin")).await?;
    let mut paid = Paid {
        float: provider.float_account(),
        transit: provider.in_transit_account(),
        fees: provider.fees_account(),
        ..Paid::default()
    };
    let preparer = actor("payments-officer");
    let treasurer = actor_as("treasurer", "finance_officer");
    let reserve = Amount::from_minor(FLOAT_RESERVE, ctx.xof).number();
    batches
        .fund_float(
            PROVIDER,
            &reserve,
            "assets:bank",
            &format!("BANK-TT-{}-reserve", ctx.reference()),
            &treasurer,
        )
        .await?;
    println!("  float of {PROVIDER} funded with a reserve of {reserve} XOF");
    let made = batches
        .create(
            &Filters {
                programme: PROGRAMME.into(),
                cycle: Some(CYCLE.into()),
                ..Filters::default()
            },
            &preparer,
        )
        .await?;
    println!(
        "  {} batch(es) prepared by {}; {} entitlements left out (no phone or no provider), {} outside the provider's limits",
        made.batches.len(),
        preparer.actor,
        made.no_provider,
        made.outside_limits
    );
    for (i, b) in made.batches.iter().enumerate() {
        println!(
            "  batch {}: {} lines to {}, {} XOF + {} XOF fees",
            b.id, b.line_count, b.provider, b.total, b.fees
        );
        let need = Amount::from_minor(b.total + b.fees, ctx.xof).number();
        let f = batches
            .fund_float(
                &b.provider,
                &need,
                "assets:bank",
                &format!("BANK-TT-{}-{}", ctx.reference(), b.id),
                &treasurer,
            )
            .await?;
        println!(
            "  float of {} funded from assets:bank with {need} XOF (float now {} XOF)",
            b.provider, f.float
        );
        let v = batches.submit(b.id, &preparer).await?;
        println!(
            "  submitted by {}: needs {} approval(s), {} authorisation(s), {} release(s)",
            preparer.actor,
            v.approvals_required.unwrap_or(1),
            v.authorisations_required.unwrap_or(1),
            v.releases_required.unwrap_or(1)
        );
        if i == 0 {
            match batches.sign(b.id, Step::Approve, &preparer).await {
                Err(e) => println!("  the preparer approving their own batch: refused ({e})"),
                Ok(_) => bail!("expected the preparer's approval to be refused"),
            }
        }
        let steps = [
            (
                Step::Approve,
                v.approvals_required,
                "finance-officer",
                "finance_officer",
            ),
            (
                Step::Authorise,
                v.authorisations_required,
                "head-of-finance",
                "finance_manager",
            ),
            (
                Step::Release,
                v.releases_required,
                "country-director",
                "country_director",
            ),
        ];
        for (step, required, who, role) in steps {
            let mut names = Vec::new();
            let mut status = String::new();
            for k in 1..=required.unwrap_or(1).max(1) {
                let signer = actor_as(&format!("{who}-{k}"), role);
                status = batches.sign(b.id, step, &signer).await?.status;
                names.push(signer.actor);
            }
            println!(
                "  {}: signed by {} → {status}",
                step.as_str(),
                names.join(", ")
            );
        }
        let spin = ProgressBar::new_spinner()
            .with_message(format!("sending batch {} to {}", b.id, b.provider));
        spin.enable_steady_tick(Duration::from_millis(100));
        let sent = batches
            .send(
                b.id,
                &SendOptions {
                    poll_interval: Duration::from_millis(20),
                    settle_timeout: Duration::from_secs(60),
                    ..SendOptions::default()
                },
                &treasurer,
            )
            .await;
        spin.finish_and_clear();
        let report = sent?;
        println!(
            "  sent in {} provider request(s): {} completed, {} failed, {} unknown; batch {}",
            report.attempts.len(),
            report.completed,
            report.failed,
            report.unknown,
            report.batch.status
        );
        for l in batches.lines(b.id).await? {
            match l.status.as_str() {
                "completed" => paid.completed.push(l.household),
                "failed" => paid.failed.push(l.household),
                _ => {}
            }
        }
        if report.failed > 0 {
            let f = batches.reissue(b.id, &preparer).await?;
            println!(
                "  {} failed line(s) re-issued in follow-up batch {} ({} lines, {} XOF, {})",
                report.failed, f.id, f.line_count, f.total, f.status
            );
        } else {
            println!(
                "  no line failed (no fixture phone ends in a simulator rejection code): nothing to re-issue"
            );
        }
    }
    let fv = batches.float(PROVIDER).await?;
    println!(
        "  {PROVIDER}: float {} XOF, in transit {} XOF, fees {} XOF",
        fv.float, fv.in_transit, fv.fees
    );
    let sim_float = sim.state().float_balance;
    let ledger_float = Decimal::from(i64::try_from(fv.float).unwrap_or(i64::MAX));
    if ledger_float == sim_float {
        println!("  the ledger float equals the simulator's float ({sim_float} XOF)");
    } else {
        println!(
            "  the ledger float ({ledger_float} XOF) differs from the provider's ({sim_float} XOF): \
             the provider has taken back some payments since; its statement will show which (step 6)"
        );
    }
    Ok(paid)
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
    let entitlement = |household: i64| household_account(PROGRAMME, household);

    println!("\n3. Donor funds and entitlements under budget control");
    let funding = reg
        .fund_budget_line(
            &programme,
            "mpca",
            "400000000",
            &format!("ECHO-TT-{}", ctx.reference()),
            ctx.date,
            &actor_as("finance-officer", "finance_officer"),
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
    // Households with a phone are paid by mobile money; the others (paid another way, not in
    // this demo) stay owed. The simulator's float starts at what the payable ones need.
    let (mut payable_need, mut no_phone) = (0i64, Vec::new());
    for e in ents.iter().filter(|e| e.status == "granted") {
        if operators
            .get(&e.household_id)
            .is_some_and(|o| !o.is_empty())
        {
            payable_need += e.amount + FEE_XOF;
        } else {
            no_phone.push(e);
        }
    }

    println!("\n4. Payments: a batch prepared, signed off, released and sent to the provider");
    std::env::set_var(TOKEN_VAR, DEMO_TOKEN);
    let sim = Simulator::spawn(
        SimConfig {
            seed: 42,
            float_balance: Decimal::from(payable_need.max(0) + FLOAT_RESERVE),
            fee: Decimal::from(FEE_XOF),
            api_key: Some(DEMO_TOKEN.into()),
            // Now and then the provider takes a completed payment back (a wrong recipient
            // reports it): nobody tells us; the statement shows it, and reconciliation books it.
            faults: Faults::parse("reverse_later=0.01")
                .map_err(|e| anyhow::anyhow!("simulator faults: {e}"))?,
            reversal_delay: Duration::from_millis(50),
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse()?,
    )
    .await
    .context("starting the provider simulator")?;
    println!(
        "  provider simulator (GSMA Mobile Money API) at {}, float {} XOF",
        sim.base_url,
        payable_need + FLOAT_RESERVE
    );
    let paid = pay(&reg, &sim, &ctx).await;
    // The provider's statement of its float, as it stands once the reversals have happened.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let statement = sim.statement_csv();
    let sim_url = sim.base_url.clone();
    sim.shutdown().await;
    let paid = paid?;

    println!("\n5. Corrections and safeguards");
    if let Some(e) = no_phone.first() {
        let c = reg
            .cancel_entitlement(
                e.id,
                "household relocated out of the programme area",
                &officer,
            )
            .await?;
        println!(
            "  entitlement {} of household {} (unpaid: no phone) cancelled by reversal {}",
            c.id,
            e.household_id,
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
    if let Some(&h) = paid.completed.first() {
        let amount = ents
            .iter()
            .find(|e| e.household_id == h)
            .map_or(1, |e| e.amount);
        let again = ctx.entry(
            &format!("release-again-{h}"),
            "Second payment attempt for an already-paid household",
            &[
                (&entitlement(h), Side::Debit, amount),
                (&paid.transit, Side::Credit, amount),
            ],
        )?;
        match ctx.ledger.post(again).await {
            Err(e @ LedgerError::InsufficientBalance { .. }) => {
                println!("  paying household {h} twice: refused ({e})")
            }
            other => bail!("expected the double payment to be refused, got {other:?}"),
        }
    }

    let recon = reconcile(&reg, &ctx, &args.dir, &statement, &sim_url).await?;

    println!("\n7. Verification and reports");
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
        paid.float.clone(),
        paid.transit.clone(),
        paid.fees.clone(),
    ]
    .into_iter()
    .chain(paid.completed.first().map(|&h| entitlement(h)))
    .chain(paid.failed.first().map(|&h| entitlement(h)))
    .chain(no_phone.get(1).map(|e| entitlement(e.household_id)))
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
    let budget = produce_reports(&reg, dir, recon.statement).await?;
    println!(
        "\nReports in {}: trial-balance.csv, trial-balance.json, journal.ledger ({n} entries; check with `hledger -f {}/journal.ledger balance`), households-owed.csv ({} households still owed), provider-statement.csv, exceptions.csv, {}",
        dir.display(),
        dir.display(),
        owed.len(),
        budget.join(", ")
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

/// What the reconciliation step leaves for the reports.
struct Reconciled {
    statement: i64,
}

/// Step 6: the provider's statement imported (with one line the demo plants: a transfer the
/// provider says it made from our float and we never sent), reconciled twice, the exception
/// queue written out, and the planted line resolved by an adjusting entry one finance officer
/// proposes and a second approves.
async fn reconcile(
    reg: &Registry,
    ctx: &Ctx,
    dir: &Path,
    statement: &str,
    sim_url: &str,
) -> anyhow::Result<Reconciled> {
    use cva_reconciliation::{
        AdjustmentLine, Category, ExceptionFilter, Exceptions, ImportError, Reconciler, RunOptions,
        Statements,
    };
    println!("\n6. Reconciliation: the provider's statement against the ledger");
    let planted_amount = 35_000i64;
    let last_balance = statement
        .lines()
        .last()
        .and_then(|l| l.rsplit(',').next())
        .and_then(|b| b.parse::<i64>().ok())
        .context("the simulator's statement ends with a running balance")?;
    let mut file = statement.to_owned();
    file.push_str(&format!(
        "SIMTX-PLANTED-1,,,{planted_amount},XOF,0,completed,{},{}\n",
        chrono::Utc::now().to_rfc3339(),
        last_balance - planted_amount
    ));
    std::fs::write(dir.join("provider-statement.csv"), &file)?;
    let treasurer = actor_as("treasurer", "finance_officer");
    let index = |m: &str| reg.msisdn_index(m);
    let statements = Statements::new(ctx.ledger.clone());
    let mapping = cva_reconciliation::ColumnMapping::simulator();
    let st = statements
        .import_indexed(
            PROVIDER,
            file.as_bytes(),
            &mapping,
            ctx.xof,
            &index,
            &treasurer,
        )
        .await?;
    println!(
        "  statement {} imported by {}: {} lines, sha256 {} (the demo added one line: a {planted_amount} XOF \
         transfer out of our float that we never sent)",
        st.id, treasurer.actor, st.lines, st.sha256
    );
    match statements
        .import(PROVIDER, file.as_bytes(), &mapping, ctx.xof, &treasurer)
        .await
    {
        Err(e @ ImportError::AlreadyImported { .. }) => {
            println!("  importing the same file again: refused ({e})")
        }
        other => bail!("expected the second import to be refused, got {other:?}"),
    }
    let batches = Batches::new(reg.clone(), payments_config(sim_url)?);
    let float_account = batches
        .config()
        .provider(PROVIDER)
        .context("the demo provider is configured")?
        .float_account();
    let reconciler = Reconciler::new(batches);
    let run = reconciler
        .run(st.id, RunOptions::default(), &treasurer)
        .await?;
    let s = &run.summary;
    println!(
        "  reconciliation {}: {} payments; matched {}, reversed by provider {}, unexpected in statement {}, \
         missing {}, amount/fee/status mismatches {}/{}/{}, duplicates {}",
        run.id,
        run.payments_considered,
        s.matched,
        s.reversed_by_provider,
        s.unexpected_in_statement,
        s.missing_from_statement,
        s.amount_mismatch,
        s.fee_mismatch,
        s.status_mismatch,
        s.duplicate_in_statement
    );
    println!(
        "  {} outcome(s) posted from the statement (reversals booked: the households are owed again); \
         {} exception(s) opened",
        run.outcomes_posted, run.exceptions_opened
    );
    let f = &run.float;
    println!(
        "  float {}: ledger {} XOF, statement {} XOF; difference {} = explained {} + unexplained {}",
        f.account,
        f.ledger_closing,
        f.statement_closing.unwrap_or_default(),
        f.difference,
        f.explained,
        f.unexplained
    );
    let again = reconciler
        .run(st.id, RunOptions::default(), &treasurer)
        .await?;
    println!(
        "  reconciled again: {} outcome(s) posted, {} exception(s) opened, {} found again (idempotent)",
        again.outcomes_posted, again.exceptions_opened, again.exceptions_seen_again
    );

    let queue = Exceptions::new(ctx.ledger.clone());
    let filter = ExceptionFilter {
        statement_id: Some(st.id),
        ..ExceptionFilter::default()
    };
    let open = queue.list(&filter).await?;
    let planted = open
        .iter()
        .find(|e| e.category == Category::UnexpectedInStatement)
        .context("the planted line is an exception")?;
    let claims = format!("assets:claims:{PROVIDER}");
    ctx.ledger
        .open_account_audited(
            cva_ledger::account::AccountSpec::new(
                AccountCode::parse(&claims)?,
                cva_ledger::account::AccountType::Asset,
                ctx.xof,
                cva_ledger::account::BalanceRule::MustNotGoNegative,
            )?,
            &actor("admin"),
        )
        .await?;
    let lines = [
        AdjustmentLine {
            account: claims.clone(),
            side: Side::Debit,
            amount: planted_amount,
        },
        AdjustmentLine {
            account: float_account.clone(),
            side: Side::Credit,
            amount: planted_amount,
        },
    ];
    queue
        .assign(
            planted.id,
            "treasurer",
            &actor_as("head-of-finance", "finance_officer"),
        )
        .await?;
    let adj = queue
        .propose_adjustment(
            planted.id,
            "Transfer out of the float we never sent: claimed back from the provider",
            &lines,
            &treasurer,
        )
        .await?;
    match queue.approve_adjustment(adj.id, None, &treasurer).await {
        Err(e) => println!(
            "  exception {}: the proposer approving their own adjusting entry: refused ({e})",
            planted.id
        ),
        Ok(_) => bail!("expected the proposer's approval to be refused"),
    }
    let approved = queue
        .approve_adjustment(
            adj.id,
            Some("claim lodged with the provider"),
            &actor_as("head-of-finance", "finance_officer"),
        )
        .await?;
    println!(
        "  exception {} ({}): adjusting entry {} proposed by {}, approved by {}: Dr {claims} / Cr {float_account} {planted_amount} XOF",
        planted.id,
        planted.category,
        approved.entry_id.map(|u| u.to_string()).unwrap_or_default(),
        approved.proposed_by,
        approved.decided_by.clone().unwrap_or_default()
    );
    let third = reconciler
        .run(st.id, RunOptions::default(), &treasurer)
        .await?;
    println!(
        "  after the adjustment, float difference {} XOF (was {})",
        third.float.difference, run.float.difference
    );

    let all = queue.list(&filter).await?;
    let mut w = csv::Writer::from_path(dir.join("exceptions.csv"))?;
    w.write_record([
        "id",
        "category",
        "status",
        "assignee",
        "line",
        "statement_rows",
        "currency",
        "float_effect_minor",
        "detail",
        "resolution",
    ])?;
    for e in &all {
        w.write_record([
            e.id.to_string(),
            e.category.to_string(),
            e.status.as_str().to_owned(),
            e.assignee.clone().unwrap_or_default(),
            e.line_id.map(|l| l.to_string()).unwrap_or_default(),
            e.statement_rows.clone(),
            e.currency.code().to_owned(),
            e.amount.to_string(),
            e.detail.clone(),
            e.resolution.clone().unwrap_or_default(),
        ])?;
    }
    w.flush()?;
    let open_now = all
        .iter()
        .filter(|e| e.status.as_str() != "resolved")
        .count();
    println!(
        "  exception queue: {} exception(s), {open_now} still open (exceptions.csv)",
        all.len()
    );
    Ok(Reconciled { statement: st.id })
}

/// The auditor's reports of the run, each recorded with its SHA-256 in the audit trail; one
/// verified as produced, and the same with one byte changed refused.
async fn produce_reports(
    reg: &Registry,
    dir: &Path,
    statement: i64,
) -> anyhow::Result<Vec<String>> {
    use cva_reports::{Format as ReportFormat, Kind, Reports, Request, Verdict};
    let reports = Reports::new(reg.clone());
    let auditor = actor_as("auditor", "auditor");
    let mut names = Vec::new();
    let mut budget_csv = Vec::new();
    for (request, stem) in [
        (
            Request::new(Kind::Budget).programme(PROGRAMME),
            "budget-report",
        ),
        (
            Request::new(Kind::Reconciliation).statement(statement),
            "reconciliation-report",
        ),
    ] {
        for (format, ext) in [(ReportFormat::Csv, "csv"), (ReportFormat::Json, "json")] {
            let produced = reports.produce(&request, format, &auditor).await?;
            let name = format!("{stem}.{ext}");
            std::fs::write(dir.join(&name), &produced.bytes)?;
            println!(
                "  {name}: sha256 {} recorded in the audit trail (report {})",
                produced.record.sha256, produced.record.id
            );
            if stem == "budget-report" && ext == "csv" {
                budget_csv = produced.bytes.clone();
            }
            names.push(name);
        }
    }
    let v = reports.verify(&budget_csv).await?;
    if v.verdict != Verdict::Verified {
        bail!("the budget report does not verify: {}", v.message);
    }
    println!("  cva reports verify budget-report.csv: {}", v.message);
    if let Some(b) = budget_csv.last_mut() {
        *b ^= 1;
    }
    let v = reports.verify(&budget_csv).await?;
    if v.verdict == Verdict::Verified {
        bail!("a changed budget report verified");
    }
    println!("  the same file with one byte changed: {}", v.message);
    Ok(names)
}
