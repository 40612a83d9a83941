//! Benchmark of household import (with duplicate detection) and entitlement generation at
//! scale, on PostgreSQL or SQLite.
//!
//! ```text
//! cargo run --release -p cva --bin registry-bench -- \
//!     --database-url postgres://postgres@127.0.0.1:5432/test [--households 100000] [--seed 7]
//! cargo run --release -p cva --bin registry-bench -- \
//!     --database-url sqlite:///tmp/regbench.db [--households 100000] [--seed 7]
//! ```
//!
//! The benchmark never writes to the database it is given. On PostgreSQL it connects to that
//! database's server, drops and re-creates a database named after it plus `_regbench` (`test` →
//! `test_regbench`) and works there; on SQLite it deletes the file (and its `-wal`/`-shm`)
//! first. It then connects with `Ledger::connect` (the pool `cva serve` uses) and applies the
//! migrations. The fixture files are written to `--work-dir` (default: a new directory
//! `cva-regbench-PID` under the system temporary directory, removed at the end; a directory
//! given with `--work-dir` is kept).
//!
//! Steps and figures, printed on stdout as `name: value` lines (other stdout lines start with
//! `#`):
//!
//! * `fixtures_seconds`: `cva_households::fixtures::generate(N, seed, dir)`, which writes
//!   `households.csv` (N Kobo submissions with planted duplicates) and the other fixture files.
//!   `#` lines give the planted pairs by kind.
//! * `setup_seconds`: new database, migrations, then through the `Registry` (built with freshly
//!   generated PII keys, the default operator table and calling code 223): programme
//!   `BENCH-MPCA-24` (XOF, reporting EUR, 2024-01-01 to 2024-12-31, the ten regions of Mali),
//!   budget line `mpca` (modality mpca, planned 10^12 XOF), funded with one donor entry of
//!   10^12 XOF (`fund_budget_line`), and MPCA rule version 1: flat 75,000 XOF, one tranche,
//!   rounded to the nearest 25. Actors: `bench-officer` for every change except verification,
//!   `bench-checker` for verification (four eyes).
//! * `import_seconds`, `import_rows_per_s`: reading `households.csv` from disk (included in the
//!   time) and one `Registry::import_households` of it with `ColumnMapping::kobo_default()`, not
//!   a dry run: parse and validate every row, seal the personal fields, compare each household
//!   with every other (duplicate detection) and write the households, the flags and the audit
//!   event in one transaction. The rate is data rows over `import_seconds`.
//!   `import_created` (must be N), `import_flags_same_national_id`,
//!   `import_flags_same_biometric_ref`, `import_flags_shared_phone` (each must equal the pairs
//!   planted of that kind: identifiers are otherwise unique), `import_flags_similar_name`
//!   (planted pairs plus chance look-alikes) and `import_households_flagged` come from the
//!   import's report.
//! * `verify_sql_seconds`: setup, not a product path. Two plain SQL statements through the
//!   ledger's pool mark every household of the programme verified by `bench-checker` and every
//!   open flag resolved `distinct` by `bench-checker` (reason `bench`), so that all N households
//!   are eligible. Verification and adjudication are one-by-one human decisions in the product
//!   and are not part of the targets. `verified_households` and `resolved_flags` are the rows
//!   the two statements changed.
//! * `generate_seconds`, `entitlements_per_s`: one `Registry::generate_entitlements` for cycle
//!   `2024-03`, modality mpca, effective 2024-03-01: eligibility of every household, the rule,
//!   the budget checks, and one ledger entry per household (debit the budget line's fund
//!   account, credit the household's entitlement account, opened on first use) with its
//!   entitlement row, and the run's one audit event, all in one transaction. The rate is
//!   entitlements created over `generate_seconds`. `generate_created` must be N (no household is withdrawn) and
//!   `generate_amount` 75,000 × N.
//! * `regenerate_seconds`: the same call again, which must create nothing
//!   (`regenerate_created` 0, `regenerate_already_granted` N): the idempotency path.
//!
//! Targets (the issue): `import_seconds` ≤ 10 and `generate_seconds` ≤ 10 for 100,000
//! households, on SQLite and on PostgreSQL.
//!
//! With `RUST_LOG` set (e.g. `RUST_LOG=cva_ledger=debug,cva_registry=debug`), a tracing
//! subscriber writes to stderr, including the close (busy/idle time) of each instrumented span
//! and the ledger's per-phase timing of each posted batch; without it none is installed.
//!
//! The process exits non-zero if any step fails or a count above is not what it must be.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use chrono::NaiveDate;
use clap::Parser;
use cva_households::fixtures;
use cva_households::import::ColumnMapping;
use cva_households::msisdn::OperatorTable;
use cva_households::pii::PiiKeys;
use cva_ledger::Ledger;
use cva_programmes::rules::Modality;
use cva_registry::Registry;

#[path = "bench_common/mod.rs"]
mod bench_common;
use bench_common::{check, ctx, secs, verify_all};

const PROGRAMME: &str = "BENCH-MPCA-24";
/// Planned and funded amount of the budget line, XOF (no minor unit).
const BUDGET: &str = "1000000000000";
const CYCLE: &str = "2024-03";
/// Monthly flat amount of the rule, XOF.
const FLAT: i64 = 75_000;
const RULE: &str = r#"{"modality":"mpca","amount":{"kind":"flat","amount":75000},"tranches":1,"rounding":{"unit":25,"mode":"nearest"}}"#;
const OFFICER: &str = "bench-officer";

#[derive(Debug, Parser)]
#[command(about = "Benchmark household import and entitlement generation on a fresh database")]
struct Args {
    /// postgres://… (a `<db>_regbench` database is created next to it) or sqlite://FILE
    /// (deleted first)
    #[arg(long)]
    database_url: String,
    /// Households in the generated `households.csv`
    #[arg(long, default_value_t = 100_000)]
    households: usize,
    /// Seed of the fixture generator
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Where the fixture files are written (default: a temporary directory, removed at the end)
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<ExitCode> {
    let args = Args::parse();
    ensure!(args.households > 0, "--households must be at least 1");
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .init();
    }
    let (work_dir, temporary) = match &args.work_dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("cva-regbench-{}", std::process::id())),
            true,
        ),
    };
    let outcome = run(&args, &work_dir).await;
    if temporary {
        let _ = std::fs::remove_dir_all(&work_dir);
    }
    outcome
}

async fn run(args: &Args, work_dir: &Path) -> Result<ExitCode> {
    let n = args.households;
    let mut failures: Vec<String> = Vec::new();

    // Fixtures.
    println!("# households: {n}, seed: {}", args.seed);
    println!("# work dir: {}", work_dir.display());
    let started = Instant::now();
    let manifest = fixtures::generate(n, args.seed, work_dir)
        .with_context(|| format!("writing the fixtures into {}", work_dir.display()))?;
    println!("fixtures_seconds: {:.2}", secs(started.elapsed()));
    let planted = &manifest.planted;
    println!(
        "# planted pairs: same_national_id {}, same_biometric_ref {}, shared_phone {}, similar_name {}",
        planted.same_national_id.len(),
        planted.same_biometric_ref.len(),
        planted.shared_phone.len(),
        planted.similar_name.len()
    );

    // Setup.
    let started = Instant::now();
    let url = cva_ledger::bench::fresh_database(&args.database_url, "_regbench")
        .await
        .context("preparing a fresh benchmark database")?;
    let ledger = Ledger::connect(&url)
        .await
        .context("connecting to the bench database")?;
    ledger.migrate().await.context("migrating")?;
    println!("# backend: {}", ledger.backend_name());
    let registry = Registry::new(
        ledger.clone(),
        PiiKeys::generate().0,
        OperatorTable::default_table(),
        "223",
    );
    let officer = ctx(OFFICER, "registry-bench");
    bench_common::setup_programme(&registry, &officer, PROGRAMME, BUDGET, RULE).await?;
    println!("# rule: {RULE}");
    println!("setup_seconds: {:.2}", secs(started.elapsed()));

    // Import.
    let csv_path = work_dir.join("households.csv");
    let started = Instant::now();
    let bytes =
        std::fs::read(&csv_path).with_context(|| format!("reading {}", csv_path.display()))?;
    let report = registry
        .import_households(
            PROGRAMME,
            &bytes,
            &ColumnMapping::kobo_default(),
            false,
            &officer,
        )
        .await
        .context("importing households.csv")?;
    let import_time = started.elapsed();
    println!("# households.csv: {} bytes", bytes.len());
    drop(bytes);
    println!("import_seconds: {:.2}", secs(import_time));
    println!(
        "import_rows_per_s: {:.0}",
        report.rows as f64 / secs(import_time)
    );
    println!("import_created: {}", report.created);
    let f = &report.flags;
    println!("import_flags_same_national_id: {}", f.same_national_id);
    println!("import_flags_same_biometric_ref: {}", f.same_biometric_ref);
    println!("import_flags_shared_phone: {}", f.shared_phone);
    println!("import_flags_similar_name: {}", f.similar_name);
    println!("import_households_flagged: {}", f.households_flagged);
    check(&mut failures, "import rows", report.rows, n);
    check(&mut failures, "import_created", report.created, n);
    check(
        &mut failures,
        "import_flags_same_national_id",
        f.same_national_id,
        planted.same_national_id.len(),
    );
    check(
        &mut failures,
        "import_flags_same_biometric_ref",
        f.same_biometric_ref,
        planted.same_biometric_ref.len(),
    );
    check(
        &mut failures,
        "import_flags_shared_phone",
        f.shared_phone,
        planted.shared_phone.len(),
    );

    // Verification and adjudication by SQL (setup, not a product path).
    let started = Instant::now();
    let (verified, resolved) = verify_all(&ledger, PROGRAMME).await?;
    println!("verify_sql_seconds: {:.2}", secs(started.elapsed()));
    println!("verified_households: {verified}");
    println!("resolved_flags: {resolved}");
    check(&mut failures, "verified_households", verified as usize, n);

    // Generation.
    let effective = NaiveDate::from_ymd_opt(2024, 3, 1).context("date")?;
    let started = Instant::now();
    let gen = registry
        .generate_entitlements(PROGRAMME, CYCLE, Modality::Mpca, effective, &officer)
        .await
        .context("generating the entitlements")?;
    let gen_time = started.elapsed();
    println!("generate_seconds: {:.2}", secs(gen_time));
    println!(
        "entitlements_per_s: {:.0}",
        gen.created as f64 / secs(gen_time)
    );
    println!("generate_eligible: {}", gen.eligible_households);
    println!("generate_created: {}", gen.created);
    println!("generate_amount: {}", gen.amount);
    check(&mut failures, "generate_created", gen.created, n);
    check(
        &mut failures,
        "generate_amount",
        gen.amount,
        FLAT * n as i64,
    );

    let started = Instant::now();
    let again = registry
        .generate_entitlements(PROGRAMME, CYCLE, Modality::Mpca, effective, &officer)
        .await
        .context("generating the entitlements again")?;
    println!("regenerate_seconds: {:.2}", secs(started.elapsed()));
    println!("regenerate_created: {}", again.created);
    println!("regenerate_already_granted: {}", again.already_granted);
    check(&mut failures, "regenerate_created", again.created, 0);
    check(
        &mut failures,
        "regenerate_already_granted",
        again.already_granted,
        n,
    );

    println!("# targets: import_seconds <= 10 and generate_seconds <= 10 for 100000 households");
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
