//! Benchmark of pushing and settling one batch of N payments (default 100,000) against the
//! provider simulator over loopback HTTP, on PostgreSQL or SQLite.
//!
//! ```text
//! cargo run --release -p cva --bin payments-bench -- \
//!     --database-url postgres://postgres@127.0.0.1:5432/test [--payments 100000]
//! ```
//!
//! Like `registry-bench`, it never writes to the database it is given: on PostgreSQL it
//! re-creates `<db>_paybench` next to it, on SQLite it deletes the file first.
//!
//! Set-up (timed, not part of the target): fixtures of N + N/8 households (about 7 % have no
//! phone)
//! (`cva_households::fixtures::generate`), programme `BENCH-PAY-24`, import, verification and
//! flag resolution by SQL, one cycle of entitlements (75,000 XOF each), a payments
//! configuration with one GSMA provider `bench-money` serving Orange and Moov Mali (flat fee
//! 100 XOF), its float funded with the batch total and fees, and the in-process simulator
//! (seed 1, fee 100, no faults, magic MSISDN endings off so that fixture phones ending in
//! 0001–0006 are ordinary), on 127.0.0.1 port 0. Then batches of the payable entitlements
//! (`create` with `max_lines` N): the first, of N lines, is submitted, approved and authorised
//! by three other people (the small remainder stays a draft).
//!
//! Figures (stdout, `name: value`):
//!
//! * `release_seconds`: the release sign-off: N entries (entitlement → in transit) under the
//!   float check, in one transaction.
//! * `send_seconds`: `Batches::send`: attempts recorded, N lines sent as provider batches of
//!   `--lines-per-request` (default 10,000) transactions, request states polled, completions
//!   paged, N confirmation entries (in transit → float, fee) posted.
//! * `release_to_resolved_seconds` (target ≤ 60 s on PostgreSQL for 100,000) and
//!   `payments_per_s` = N / that time.
//! * checks: every line completed, the ledger float equal to the simulator's, nothing in
//!   transit. The process exits non-zero if a check fails.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use chrono::NaiveDate;
use clap::Parser;
use cva_batches::{Batches, Filters, PaymentsConfig, SendOptions, Step};
use cva_households::fixtures;
use cva_households::import::ColumnMapping;
use cva_households::msisdn::OperatorTable;
use cva_households::pii::PiiKeys;
use cva_ledger::Ledger;
use cva_programmes::rules::Modality;
use cva_providers::sim::{SimConfig, Simulator};
use cva_registry::Registry;
use rust_decimal::Decimal;

#[path = "bench_common/mod.rs"]
mod bench_common;
use bench_common::{check, ctx, secs, verify_all};

const PROGRAMME: &str = "BENCH-PAY-24";
const BUDGET: &str = "1000000000000";
const RULE: &str = r#"{"modality":"mpca","amount":{"kind":"flat","amount":75000},"tranches":1,"rounding":{"unit":25,"mode":"nearest"}}"#;
const FLAT: i64 = 75_000;
const FEE: i64 = 100;
const TOKEN_VAR: &str = "CVA_PAYBENCH_TOKEN";

#[derive(Debug, Parser)]
#[command(about = "Benchmark pushing and settling one batch of payments against the simulator")]
struct Args {
    /// postgres://… (a `<db>_paybench` database is created next to it) or sqlite://FILE
    #[arg(long)]
    database_url: String,
    /// Payments in the batch (one per household)
    #[arg(long, default_value_t = 100_000)]
    payments: usize,
    /// Transactions per provider batch request
    #[arg(long, default_value_t = 10_000)]
    lines_per_request: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<ExitCode> {
    let args = Args::parse();
    ensure!(args.payments > 0, "--payments must be at least 1");
    let work_dir: PathBuf =
        std::env::temp_dir().join(format!("cva-paybench-{}", std::process::id()));
    let outcome = run(&args, &work_dir).await;
    let _ = std::fs::remove_dir_all(&work_dir);
    outcome
}

async fn run(args: &Args, work_dir: &std::path::Path) -> Result<ExitCode> {
    let n = args.payments;
    let mut failures = Vec::new();
    let started = Instant::now();
    // About 7 % of fixture households have no phone: generate enough for N payable ones.
    let households = n + n / 8 + 10;
    fixtures::generate(households, args.seed, work_dir).context("writing the fixtures")?;
    let url = cva_ledger::bench::fresh_database(&args.database_url, "_paybench")
        .await
        .context("preparing a fresh benchmark database")?;
    let ledger = Ledger::connect(&url).await.context("connecting")?;
    ledger.migrate().await.context("migrating")?;
    println!("# backend: {}, payments: {n}", ledger.backend_name());
    let registry = Registry::new(
        ledger.clone(),
        PiiKeys::generate().0,
        OperatorTable::default_table(),
        "223",
    );
    let officer = ctx("bench-officer", "payments-bench");
    bench_common::setup_programme(&registry, &officer, PROGRAMME, BUDGET, RULE).await?;
    let bytes = std::fs::read(work_dir.join("households.csv")).context("reading households")?;
    let imported = registry
        .import_households(
            PROGRAMME,
            &bytes,
            &ColumnMapping::kobo_default(),
            false,
            &officer,
        )
        .await
        .context("importing")?;
    check(&mut failures, "imported", imported.created, households);
    verify_all(&ledger, PROGRAMME).await?;
    let effective = NaiveDate::from_ymd_opt(2024, 3, 1).context("date")?;
    let gen = registry
        .generate_entitlements(PROGRAMME, "2024-03", Modality::Mpca, effective, &officer)
        .await
        .context("generating entitlements")?;
    check(&mut failures, "entitlements", gen.created, households);

    let sim = Simulator::spawn(
        SimConfig {
            seed: 1,
            float_balance: Decimal::from(FLAT.saturating_add(FEE) * n as i64),
            fee: Decimal::from(FEE),
            magic_msisdns: false,
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().context("address")?,
    )
    .await
    .context("starting the simulator")?;
    std::env::set_var(TOKEN_VAR, "bench-token");
    let config = PaymentsConfig::from_json(&format!(
        r#"{{"providers": [{{"name": "bench-money", "adapter": "gsma-mmapi", "base_url": "{}",
             "credentials": {{"env": "{TOKEN_VAR}"}}, "currency": "XOF",
             "operators": ["orange-ml", "moov-ml"], "min_amount": "1", "max_amount": "10000000",
             "fees": {{"flat": "{FEE}"}}}}],
            "approvals": [{{"above": "0", "approvals": 1, "authorisations": 1, "releases": 1}}]}}"#,
        sim.base_url
    ))
    .map_err(|e| anyhow::anyhow!("payments config: {e:?}"))?;
    let batches = Batches::new(registry.clone(), config);
    batches.open_provider_accounts(&officer).await?;
    let finance = ctx("bench-finance", "payments-bench");
    let total = (FLAT + FEE) * n as i64;
    batches
        .fund_float(
            "bench-money",
            &total.to_string(),
            "assets:bank",
            "BENCH-FLOAT",
            &finance,
        )
        .await?;
    let made = batches
        .create(
            &Filters {
                programme: PROGRAMME.into(),
                max_lines: Some(n),
                ..Filters::default()
            },
            &officer,
        )
        .await?;
    // The first batch holds N lines; the rest (a small second batch) stays a draft.
    ensure!(!made.batches.is_empty(), "no batch was created");
    let id = made.batches[0].id;
    println!(
        "# households without a phone (not payable): {}",
        made.no_provider
    );
    check(
        &mut failures,
        "batch lines",
        made.batches[0].line_count,
        n as i64,
    );
    batches.submit(id, &officer).await?;
    batches
        .sign(id, Step::Approve, &ctx("bench-approver", "payments-bench"))
        .await?;
    batches
        .sign(
            id,
            Step::Authorise,
            &ctx("bench-authoriser", "payments-bench"),
        )
        .await?;
    println!("setup_seconds: {:.2}", secs(started.elapsed()));

    let t0 = Instant::now();
    let released = batches.sign(id, Step::Release, &finance).await?;
    let release = t0.elapsed();
    check(
        &mut failures,
        "status after release",
        released.status.as_str(),
        "released",
    );
    let t1 = Instant::now();
    let opts = SendOptions {
        poll_interval: Duration::from_millis(20),
        lines_per_request: args.lines_per_request,
        ..SendOptions::default()
    };
    let report = batches.send(id, &opts, &finance).await?;
    let send = t1.elapsed();
    let all = t0.elapsed();
    println!("release_seconds: {:.2}", secs(release));
    println!("send_seconds: {:.2}", secs(send));
    println!("release_to_resolved_seconds: {:.2}", secs(all));
    println!("payments_per_s: {:.0}", n as f64 / secs(all));
    println!("provider_batches: {}", report.attempts.len());
    println!("completed: {}", report.completed);
    check(&mut failures, "completed", report.completed, n as i64);
    check(&mut failures, "unknown", report.unknown, 0);
    check(
        &mut failures,
        "batch status",
        report.batch.status.as_str(),
        "completed",
    );
    let state = sim.state();
    let float = batches.float("bench-money").await?;
    check(
        &mut failures,
        "ledger float = simulator float",
        Decimal::from(float.float as i64),
        state.float_balance,
    );
    check(&mut failures, "in transit", float.in_transit, 0);
    println!("# target: release_to_resolved_seconds <= 60 for 100000 payments on PostgreSQL");
    sim.shutdown().await;
    ledger.close().await;
    if failures.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        for f in &failures {
            eprintln!("check failed: {f}");
        }
        Ok(ExitCode::FAILURE)
    }
}
