//! The reconciliation benchmark (issue 6): N payments (default 1,000,000) in the database
//! reconciled against a provider statement of about N + N/250 lines with planted exceptions of
//! every category, end to end through `Reconciler::run`; with `--pandas`, the same three-rule
//! matching done with pandas merges (`examples/pandas_match.py`) on the same files, in the same
//! run, and the ratio of the two times.
//!
//! ```text
//! cargo run --release -p cva-reconciliation --example reconcile_bench -- \
//!     --database-url postgres://postgres@127.0.0.1:5432/test --payments 1000000 [--pandas]
//! cargo run --release -p cva-reconciliation --example reconcile_bench -- \
//!     --database-url sqlite:///tmp/recbench/r.db --payments 2000 [--pandas]
//! ```
//!
//! Target: the run (`reconcile_seconds`) ≤ 10 s and the whole process ≤ 1 GiB resident for a
//! million payments.
//!
//! # What it does
//!
//! 1. **Fresh database** (`cva_ledger::bench::fresh_database`, suffix `_recbench`: on
//!    PostgreSQL `test` → `test_recbench`, dropped and re-created; on SQLite the file is
//!    deleted first), migrated. Dropped (PostgreSQL) or deleted (SQLite) again at the end unless
//!    `--keep-database`: a million-payment database is several GB.
//! 2. **Set-up** (`setup_seconds`, not part of the target). Through the registry: programme
//!    `BENCH-REC-24` with its budget line (funded), MPCA rule, provider configuration
//!    `cva_batches::testing::config` (`orange-money`, XOF, fee 100) and its accounts
//!    (`Batches::open_provider_accounts`), the float funded with the statement's opening balance.
//!    Then, as bulk SQL fixture rows (multi-row inserts in one transaction per table: `UNNEST` of
//!    arrays on PostgreSQL, 1,000-row `VALUES` lists on SQLite; the rows are what the product
//!    would have written, ids 1..N, the schema's triggers and checks all apply): N verified
//!    households (name and phone sealed with the registry's keys, `msisdn_index` =
//!    `Registry::msisdn_index(phone)`, one distinct Orange Mali number each), one entitlement
//!    each (cycle 2024-03), batches of `--lines-per-batch` lines (default 10,000, the product's
//!    default) with their three sign-offs, provider attempts of 100 lines, and the batch lines
//!    directly in their final status. Payment `i` (line id `i + 1`) is sent at
//!    2024-03-01T00:00:00Z + 2·i s; the statement shows it 2 minutes earlier (the provider's
//!    completion time is before we hear of it).
//!
//!    **Ledger**: the float as the product leaves it. The lines still open (`unknown`) get
//!    their real entitlement (`funds → household`) and release (`household → in transit`)
//!    entries, so the run can confirm or fail them; every line we hold paid gets the sender's
//!    `pay:LINE:confirm` entry (in transit and fees → float) and a reversal booked before its
//!    `pay:LINE:reversal` (float → household) — about N entries, so the run reads a million
//!    float movements. The release side of the paid lines is one entry per batch (funds → in
//!    transit), which the run never reads. The float reconciliation's difference is then the
//!    planted exceptions' and the run's own postings', explained line by line (`unexplained`
//!    must be 0, checked).
//! 3. **Statement file** (simulator format,
//!    `transaction_id,reference,msisdn,amount,currency,fee,status,completed_at,balance_after`,
//!    with running balances) and, with `--pandas`, the payments as CSV, written to a temporary
//!    directory. Then `Statements::import_indexed` with `Registry::msisdn_index` (the file read
//!    from disk included): `import_seconds`, not part of the target.
//! 4. **The run**: `Reconciler::run(statement, RunOptions::default(), ctx)` timed end to end
//!    (`reconcile_seconds`) in a fresh child process (this program with `--child-run`) that
//!    does nothing else, so that its peak RSS (`VmHWM` of /proc/self/status, read at its end)
//!    is the run's own; `--in-process` runs it in the bench process instead (the high-water
//!    mark is then reset through /proc/self/clear_refs just before). Its summary must equal the
//!    planted counts category by category, as must the outcomes it posted and the exceptions it
//!    opened; `payments_considered` must be N; the float's `unexplained` must be 0. The run's
//!    own log line (`phases=…`: reads, match, plan, item rows (built while the postings
//!    run), postings, float snapshot (the wait for it), float read, float rows, items,
//!    matches, float lines, exceptions, commit) is printed (`RUST_LOG` shows more, e.g.
//!    `cva_ledger=debug` for each posting's timings). On PostgreSQL the tables are
//!    `VACUUM (ANALYZE)`d after the import (what autovacuum does in a database in use — done
//!    before the timed run, not during it); SQLite is left as the product leaves it (no
//!    statistics). `--setup-only` stops before the run and keeps the database, to time runs
//!    on copies of it (`--child-run 1 --database-url` a copy).
//! 5. With `--pandas`: `python3 examples/pandas_match.py` (pandas must be installed:
//!    `python3 -m pip install pandas`) on the same two files, as a subprocess. It prints its
//!    CSV load time and its matching time (the three rules as merges, reversals, categories)
//!    and its counts, which must equal the planted counts *before* the run's postings (pandas
//!    does not post: the `unknown` lines the statement answers stay status mismatches there).
//!
//! # Planted exceptions
//!
//! Payment `i` is of kind `i % 500` (so 2,000 of each per million):
//!
//! | kind | ours | statement | item (after the run) |
//! |---|---|---|---|
//! | 1 | completed | amount + 100 | amount mismatch |
//! | 2 | completed | fee 150 instead of 100 | fee mismatch |
//! | 3 | completed | failed | status mismatch |
//! | 4 | completed | absent | missing from statement |
//! | 5 | completed | its row, then a row paid to a stranger | matched + unexpected |
//! | 6 | completed | its row twice | matched + duplicate |
//! | 7 | completed | `reversed`, then its `-REV` reversal | reversed by provider (booked by the run) |
//! | 8 | unknown, no transaction id | completed, reference = line id | matched by reference (confirmed by the run) |
//! | 9 | unknown, no transaction id | completed, no reference, phone as `223…` | matched by payee, amount and date (confirmed) |
//! | 10 | completed | other transaction id, reference = line id | matched by reference |
//! | 11 | completed | other transaction id, no reference, phone as `+223 7x xx xx xx` | matched by payee, amount and date |
//! | 12 | failed | failed, reference = line id | matched by reference |
//! | 13 | failed | absent | no item (skipped payment) |
//! | 14 | unknown | failed, reference = line id | matched (failed by the run) |
//! | 15 | unknown | absent | missing from statement |
//! | 16 | failed (reversal already booked) | `reversed` + reversal | reversed by provider (nothing to do) |
//! | 17 | completed | its row, then a reversal of an unknown transaction | matched + unexpected |
//! | other | completed | its row | matched by transaction id |
//!
//! Before the run's postings (and in pandas), kinds 8, 9 and 14 are status mismatches.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use clap::Parser;
use cva_batches::Batches;
use cva_households::msisdn::OperatorTable;
use cva_households::pii::{Field, PiiKeys};
use cva_ledger::account::{AccountCode, Side};
use cva_ledger::audit::AuditContext;
use cva_ledger::entry::{IdempotencyKey, Line, NewEntry};
use cva_ledger::money::{Amount, Currency};
use cva_ledger::store::PoolRef;
use cva_ledger::Ledger;
use cva_programmes::rules::{Modality, Rule};
use cva_reconciliation::{ColumnMapping, Reconciler, RunOptions, Summary};
use cva_registry::programmes::NewProgramme;
use cva_registry::Registry;
use uuid::Uuid;

const PROVIDER: &str = "orange-money";
const PROGRAMME: &str = "BENCH-REC-24";
const CYCLE: &str = "2024-03";
const FEE: i64 = 100;
/// One planted exception of each kind per this many payments.
const PERIOD: usize = 500;
/// Lines per provider attempt (the lines of an attempt share its time).
const PER_ATTEMPT: usize = 100;
/// The statement's opening balance, and the float funded in the ledger.
const OPENING: i64 = 100_000_000_000;
const BUDGET: i64 = 1_000_000_000_000;
const PG_CHUNK: usize = 50_000;
const SQLITE_CHUNK: usize = 1_000;
/// Ledger entries per `post_many`.
const POST_CHUNK: usize = 5_000;
const MIB: f64 = 1024.0 * 1024.0;

#[derive(Debug, Parser)]
#[command(about = "Benchmark reconciling a provider statement against N payments")]
struct Args {
    /// postgres://… (a `<db>_recbench` database is created next to it) or sqlite://FILE
    #[arg(long)]
    database_url: String,
    /// Payments (batch lines) of the provider
    #[arg(long, default_value_t = 1_000_000)]
    payments: usize,
    /// Also time the same matching with pandas (examples/pandas_match.py) on the same files
    #[arg(long)]
    pandas: bool,
    /// Python interpreter for --pandas
    #[arg(long, default_value = "python3")]
    python: String,
    /// Lines per batch (a multiple of 100)
    #[arg(long, default_value_t = 10_000)]
    lines_per_batch: usize,
    /// Run the reconciliation in this process (after the set-up and the import) instead of a
    /// fresh child process
    #[arg(long)]
    in_process: bool,
    /// Keep the benchmark database (and the files) at the end
    #[arg(long)]
    keep_database: bool,
    /// Stop after the set-up and the import, keeping the database (to copy it and time runs
    /// on copies: `--child-run 1` against a copy)
    #[arg(long)]
    setup_only: bool,
    /// (internal) Reconcile this statement of the database given and print the result as JSON
    #[arg(long, hide = true)]
    child_run: Option<i64>,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<ExitCode> {
    let args = Args::parse();
    // The run's own log line (its phase times) on standard error; a child's is shown by the
    // parent.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        // `RUST_LOG` to see more (e.g. `cva_ledger=debug`: each posting's timings).
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "cva_reconciliation::run=info".into()),
        )
        .init();
    if let Some(statement) = args.child_run {
        child_run(&args.database_url, statement).await?;
        return Ok(ExitCode::SUCCESS);
    }
    ensure!(
        (1..=9_000_000).contains(&args.payments),
        "--payments must be 1 to 9,000,000"
    );
    ensure!(
        args.lines_per_batch > 0 && args.lines_per_batch % PER_ATTEMPT == 0,
        "--lines-per-batch must be a positive multiple of {PER_ATTEMPT}"
    );
    let work_dir = std::env::temp_dir().join(format!("cva-recbench-{}", std::process::id()));
    std::fs::create_dir_all(&work_dir).context("creating the work directory")?;
    let outcome = run(&args, &work_dir).await;
    if !args.keep_database {
        let _ = std::fs::remove_dir_all(&work_dir);
    } else {
        println!("# files kept in {}", work_dir.display());
    }
    outcome
}

// ---------------------------------------------------------------------------------------------
// The generated data.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Normal,
    AmountMismatch,
    FeeMismatch,
    StatusMismatch,
    Missing,
    Unexpected,
    Duplicate,
    Reversed,
    UnknownByReference,
    UnknownByPayee,
    ByReference,
    ByPayee,
    FailedOnBoth,
    FailedAbsent,
    UnknownFailed,
    UnknownMissing,
    ReversalBooked,
    LoneReversal,
}

impl Kind {
    fn of(i: usize) -> Kind {
        match i % PERIOD {
            1 => Kind::AmountMismatch,
            2 => Kind::FeeMismatch,
            3 => Kind::StatusMismatch,
            4 => Kind::Missing,
            5 => Kind::Unexpected,
            6 => Kind::Duplicate,
            7 => Kind::Reversed,
            8 => Kind::UnknownByReference,
            9 => Kind::UnknownByPayee,
            10 => Kind::ByReference,
            11 => Kind::ByPayee,
            12 => Kind::FailedOnBoth,
            13 => Kind::FailedAbsent,
            14 => Kind::UnknownFailed,
            15 => Kind::UnknownMissing,
            16 => Kind::ReversalBooked,
            17 => Kind::LoneReversal,
            _ => Kind::Normal,
        }
    }

    fn ours(self) -> Ours {
        match self {
            Kind::UnknownByReference
            | Kind::UnknownByPayee
            | Kind::UnknownFailed
            | Kind::UnknownMissing => Ours::Unknown,
            Kind::FailedOnBoth | Kind::FailedAbsent => Ours::Failed,
            Kind::ReversalBooked => Ours::ReversedBefore,
            _ => Ours::Completed,
        }
    }
}

/// Our line's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ours {
    Completed,
    Failed,
    Unknown,
    /// Completed, then reversed (booked before): `failed` with code `reversed`.
    ReversedBefore,
}

impl Ours {
    fn db_status(self) -> &'static str {
        match self {
            Ours::Completed => "completed",
            Ours::Failed | Ours::ReversedBefore => "failed",
            Ours::Unknown => "unknown",
        }
    }

    /// As matching sees it (a reversed line was paid: completed).
    fn matched_as(self) -> &'static str {
        match self {
            Ours::Completed | Ours::ReversedBefore => "completed",
            Ours::Failed => "failed",
            Ours::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Gen {
    t0: DateTime<Utc>,
    lines_per_batch: usize,
}

impl Gen {
    /// When payment `i` was sent and (unless still open) resolved.
    fn at(&self, i: usize) -> DateTime<Utc> {
        self.t0 + Duration::seconds(2 * i as i64)
    }
    fn line(i: usize) -> i64 {
        i as i64 + 1
    }
    fn batch(&self, i: usize) -> i64 {
        (i / self.lines_per_batch) as i64 + 1
    }
    fn attempt(i: usize) -> i64 {
        (i / PER_ATTEMPT) as i64 + 1
    }
    /// The time the run reads for the line: resolved_at, or for an open line its attempt's
    /// `updated_at` (the time of the attempt's first line).
    fn seen_at(&self, i: usize) -> DateTime<Utc> {
        match Kind::of(i).ours() {
            Ours::Unknown => self.at(i / PER_ATTEMPT * PER_ATTEMPT),
            _ => self.at(i),
        }
    }
    fn amount(i: usize) -> i64 {
        10_000 + (i % 50) as i64 * 500
    }
    fn provider_tx(i: usize) -> Option<String> {
        match Kind::of(i).ours() {
            Ours::Completed | Ours::ReversedBefore => Some(tx(i)),
            Ours::Failed | Ours::Unknown => None,
        }
    }
}

fn tx(i: usize) -> String {
    format!("MP{:010}", i + 1)
}

/// Household `i`'s phone (E.164), one Orange Mali number each (70 00 00 00 upwards).
fn e164(i: usize) -> String {
    format!("+223{}", 70_000_000 + i)
}

/// The same number written with blanks: `+223 70 00 01 23`.
fn spaced(i: usize) -> String {
    let d = 70_000_000 + i;
    format!(
        "+223 {:02} {:02} {:02} {:02}",
        d / 1_000_000,
        d / 10_000 % 100,
        d / 100 % 100,
        d % 100
    )
}

/// A number nobody in the registry has (Orange Mali 79…).
fn stranger(i: usize) -> String {
    format!("+22379{:06}", i % 1_000_000)
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
}

/// Writes statement rows with their running balance.
struct StatementFile<W: Write> {
    out: W,
    balance: i64,
    rows: usize,
    min_at: Option<DateTime<Utc>>,
    max_at: Option<DateTime<Utc>>,
}

impl<W: Write> StatementFile<W> {
    #[allow(clippy::too_many_arguments)]
    fn row(
        &mut self,
        tx: &str,
        reference: &str,
        msisdn: &str,
        amount: i64,
        fee: i64,
        status: &str,
        at: DateTime<Utc>,
    ) -> std::io::Result<()> {
        if matches!(status, "completed" | "reversed" | "reversal") {
            self.balance -= amount + fee;
        }
        self.rows += 1;
        self.min_at = Some(self.min_at.map_or(at, |m| m.min(at)));
        self.max_at = Some(self.max_at.map_or(at, |m| m.max(at)));
        writeln!(
            self.out,
            "{tx},{reference},{msisdn},{amount},XOF,{fee},{status},{},{}",
            rfc3339(at),
            self.balance
        )
    }
}

/// What the run must find.
#[derive(Debug, Default, Clone)]
struct Expected {
    /// Matching alone (what pandas computes).
    raw: Summary,
    /// After the run's postings (the run's summary).
    after: Summary,
    outcomes_posted: i64,
    exceptions_opened: i64,
    statement_rows: usize,
    /// Opening, closing balance and period of the statement.
    closing: i64,
}

/// Writes the statement (and with `payments_csv` the payments) and counts what was planted.
fn write_files(
    gen: &Gen,
    n: usize,
    statement_path: &Path,
    payments_path: Option<&Path>,
) -> Result<Expected> {
    let file = std::fs::File::create(statement_path).context("creating the statement file")?;
    let mut st = StatementFile {
        out: BufWriter::with_capacity(1 << 20, file),
        balance: OPENING,
        rows: 0,
        min_at: None,
        max_at: None,
    };
    st.out.write_all(
        b"transaction_id,reference,msisdn,amount,currency,fee,status,completed_at,balance_after\n",
    )?;
    let mut pay = match payments_path {
        Some(p) => {
            let mut w = BufWriter::with_capacity(
                1 << 20,
                std::fs::File::create(p).context("creating the payments file")?,
            );
            w.write_all(b"line,provider_tx,payee_key,amount,fee,currency,status,at\n")?;
            Some(w)
        }
        None => None,
    };
    let mut e = Expected::default();
    let mut missing_at: Vec<DateTime<Utc>> = Vec::new();
    for i in 0..n {
        let kind = Kind::of(i);
        let line = Gen::line(i);
        let amount = Gen::amount(i);
        let at = gen.at(i) - Duration::minutes(2);
        let tx = tx(i);
        let reference = line.to_string();
        let phone = e164(i);
        if let Some(w) = pay.as_mut() {
            writeln!(
                w,
                "{line},{},{},{amount},{FEE},XOF,{},{}",
                Gen::provider_tx(i).unwrap_or_default(),
                &phone[1..],
                kind.ours().matched_as(),
                rfc3339(gen.seen_at(i))
            )?;
        }
        let (raw, after) = (&mut e.raw, &mut e.after);
        let mut both = |f: fn(&mut Summary) -> &mut usize| {
            *f(raw) += 1;
            *f(after) += 1;
        };
        match kind {
            Kind::Normal => {
                st.row(&tx, &reference, &phone, amount, FEE, "completed", at)?;
                both(|s| &mut s.matched);
            }
            Kind::AmountMismatch => {
                st.row(&tx, &reference, &phone, amount + 100, FEE, "completed", at)?;
                both(|s| &mut s.amount_mismatch);
            }
            Kind::FeeMismatch => {
                st.row(&tx, &reference, &phone, amount, 150, "completed", at)?;
                both(|s| &mut s.fee_mismatch);
            }
            Kind::StatusMismatch => {
                st.row(&tx, &reference, &phone, amount, 0, "failed", at)?;
                both(|s| &mut s.status_mismatch);
            }
            Kind::Missing | Kind::UnknownMissing => missing_at.push(gen.seen_at(i)),
            Kind::Unexpected => {
                st.row(&tx, &reference, &phone, amount, FEE, "completed", at)?;
                let other = format!("UX{line:010}");
                st.row(&other, "", &stranger(i), amount, FEE, "completed", at)?;
                both(|s| &mut s.matched);
                both(|s| &mut s.unexpected_in_statement);
            }
            Kind::Duplicate => {
                st.row(&tx, &reference, &phone, amount, FEE, "completed", at)?;
                st.row(&tx, &reference, &phone, amount, FEE, "completed", at)?;
                both(|s| &mut s.matched);
                both(|s| &mut s.duplicate_in_statement);
            }
            Kind::Reversed | Kind::ReversalBooked => {
                st.row(&tx, &reference, &phone, amount, FEE, "reversed", at)?;
                let rev = format!("{tx}-REV");
                let back = at + Duration::hours(1);
                st.row(&rev, &reference, &phone, -amount, 0, "reversal", back)?;
                both(|s| &mut s.reversed_by_provider);
                if kind == Kind::Reversed {
                    e.outcomes_posted += 1;
                }
            }
            Kind::UnknownByReference => {
                st.row(&tx, &reference, &phone, amount, FEE, "completed", at)?;
                e.raw.status_mismatch += 1;
                e.after.matched += 1;
                e.outcomes_posted += 1;
            }
            Kind::UnknownByPayee => {
                st.row(&tx, "", &phone[1..], amount, FEE, "completed", at)?;
                e.raw.status_mismatch += 1;
                e.after.matched += 1;
                e.outcomes_posted += 1;
            }
            Kind::ByReference => {
                let other = format!("ST{line:010}");
                st.row(&other, &reference, &phone, amount, FEE, "completed", at)?;
                both(|s| &mut s.matched);
            }
            Kind::ByPayee => {
                let other = format!("ST{line:010}");
                st.row(&other, "", &spaced(i), amount, FEE, "completed", at)?;
                both(|s| &mut s.matched);
            }
            Kind::FailedOnBoth => {
                let other = format!("FX{line:010}");
                st.row(&other, &reference, &phone, amount, 0, "failed", at)?;
                both(|s| &mut s.matched);
            }
            Kind::FailedAbsent => both(|s| &mut s.skipped_payments),
            Kind::UnknownFailed => {
                let other = format!("FX{line:010}");
                st.row(&other, &reference, &phone, amount, 0, "failed", at)?;
                e.raw.status_mismatch += 1;
                e.after.matched += 1;
                e.outcomes_posted += 1;
            }
            Kind::LoneReversal => {
                st.row(&tx, &reference, &phone, amount, FEE, "completed", at)?;
                let lone = format!("LX{line:010}-REV");
                st.row(&lone, "", "", -5_000, 0, "reversal", at)?;
                both(|s| &mut s.matched);
                both(|s| &mut s.unexpected_in_statement);
            }
        }
    }
    st.out.flush()?;
    if let Some(mut w) = pay {
        w.flush()?;
    }
    // A payment outside the statement's period is never "missing" (it is skipped).
    let (start, end) = (st.min_at, st.max_at);
    for at in missing_at {
        let inside = start.is_some_and(|s| at >= s) && end.is_some_and(|e| at <= e);
        let (raw, after) = (&mut e.raw, &mut e.after);
        if inside {
            raw.missing_from_statement += 1;
            after.missing_from_statement += 1;
        } else {
            raw.skipped_payments += 1;
            after.skipped_payments += 1;
        }
    }
    let a = &e.after;
    e.exceptions_opened = (a.amount_mismatch
        + a.fee_mismatch
        + a.status_mismatch
        + a.missing_from_statement
        + a.unexpected_in_statement
        + a.duplicate_in_statement) as i64;
    e.statement_rows = st.rows;
    e.closing = st.balance;
    Ok(e)
}

// ---------------------------------------------------------------------------------------------
// The database fixture.

fn ctx(actor: &str, role: &str) -> AuditContext {
    AuditContext {
        actor_id: None,
        actor: actor.into(),
        role: role.into(),
        request_id: "reconcile-bench".into(),
    }
}

fn entry(key: &str, description: String, lines: Vec<Line>) -> Result<NewEntry> {
    let date = NaiveDate::from_ymd_opt(2024, 3, 1).context("date")?;
    let mut meta = serde_json::Map::new();
    meta.insert("bench".into(), "reconcile_bench".into());
    Ok(NewEntry::new(
        IdempotencyKey::parse(key)?,
        description,
        date,
        meta,
        lines,
    )?)
}

fn code(s: &str) -> Result<AccountCode> {
    Ok(AccountCode::parse(s)?)
}

/// Programme, budget line (planned and funded), rule; provider accounts; float funded.
async fn setup_programme(registry: &Registry, batches: &Batches) -> Result<(i64, i64, String)> {
    let officer = ctx("bench-officer", "programme_officer");
    let date = |m, d| NaiveDate::from_ymd_opt(2024, m, d).context("date");
    registry
        .create_programme(
            NewProgramme {
                code: PROGRAMME.into(),
                name: "Reconciliation bench programme".into(),
                donor: "Bench donor".into(),
                grant_ref: "BENCH/2024/REC".into(),
                currency: "XOF".into(),
                reporting_currency: "EUR".into(),
                starts_on: date(1, 1)?,
                ends_on: date(12, 31)?,
                regions: vec!["ML05".into()],
            },
            &officer,
        )
        .await?;
    registry
        .add_budget_line(
            PROGRAMME,
            "mpca",
            Modality::Mpca,
            &BUDGET.to_string(),
            &officer,
        )
        .await?;
    registry
        .fund_budget_line(
            PROGRAMME,
            "mpca",
            &BUDGET.to_string(),
            "bench-funding",
            date(1, 15)?,
            &officer,
        )
        .await?;
    let rule = Rule::from_json(
        r#"{"modality":"mpca","amount":{"kind":"flat","amount":20000},"tranches":1,"rounding":{"unit":25,"mode":"nearest"}}"#,
    )
    .map_err(|e| anyhow::anyhow!("rule: {e:?}"))?;
    registry.add_rule(PROGRAMME, rule, &officer).await?;
    let finance = ctx("bench-finance", "finance_officer");
    batches.open_provider_accounts(&finance).await?;
    batches
        .fund_float(
            PROVIDER,
            &OPENING.to_string(),
            "assets:bank",
            "BENCH-FLOAT",
            &finance,
        )
        .await?;
    let p = registry.programme(PROGRAMME).await?;
    let line = registry
        .budget_lines(PROGRAMME)
        .await?
        .into_iter()
        .find(|l| l.code == "mpca")
        .context("budget line")?;
    Ok((p.id, line.id, line.account))
}

fn chunks(n: usize, size: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    (0..n.div_ceil(size)).map(move |c| c * size..((c + 1) * size).min(n))
}

fn sqlite_values(rows: usize, group: &str) -> String {
    let mut s = String::with_capacity(rows * (group.len() + 1));
    for r in 0..rows {
        if r > 0 {
            s.push(',');
        }
        s.push_str(group);
    }
    s
}

const HOUSEHOLD_COLUMNS: &str = "id, programme_id, submission_id, submitted_at, enumerator, \
    consent, head_name, head_sex, head_birth_year, size, displacement, region, cercle, commune, \
    msisdn, msisdn_index, operator, status, enrolled_by, enrolled_at, verified_by, verified_at, \
    status_changed_at";

type SealedHousehold = (i64, String, String, Option<String>);

/// Households `range`, sealed with the registry's keys (on every core).
fn seal(
    registry: &Registry,
    keys: &PiiKeys,
    range: std::ops::Range<usize>,
) -> Vec<SealedHousehold> {
    let idx: Vec<usize> = range.collect();
    cva_ledger::parallel::map_ordered(&idx, 2_000, |&i| {
        let phone = e164(i);
        (
            i as i64 + 1,
            keys.seal(Field::HeadName, &format!("Bench Household {}", i + 1)),
            keys.seal(Field::Msisdn, &phone),
            registry.msisdn_index(&phone),
        )
    })
}

/// N verified households, sealed with the registry's keys: each part of 50,000 is sealed
/// while the previous one is written.
async fn insert_households(
    ledger: &Ledger,
    registry: &Registry,
    keys: Arc<PiiKeys>,
    programme: i64,
    n: usize,
    at: DateTime<Utc>,
) -> Result<()> {
    let parts: Vec<std::ops::Range<usize>> = chunks(n, PG_CHUNK).collect();
    let spawn = |range: std::ops::Range<usize>| {
        let (registry, keys) = (registry.clone(), keys.clone());
        tokio::task::spawn_blocking(move || seal(&registry, &keys, range))
    };
    let mut next = parts.first().cloned().map(spawn);
    let mut k = 0;
    let pg_sql = format!(
        "INSERT INTO households ({HOUSEHOLD_COLUMNS}) OVERRIDING SYSTEM VALUE \
         SELECT t.id, $1, 'bench-' || t.id, $2, 'enum-01', TRUE, t.name, 'female', 1980, \
         4, 'idp', 'ML05', 'ML0501', 'ML050101', t.m, t.mi, 'orange-ml', 'verified', \
         'bench-officer', $2, 'bench-checker', $2, $2 \
         FROM UNNEST($3::BIGINT[], $4::TEXT[], $5::TEXT[], $6::TEXT[]) AS t(id, name, m, mi)"
    );
    let sqlite_group = format!(
        "(?, {programme}, ?, ?, 'enum-01', 1, ?, 'female', 1980, 4, 'idp', 'ML05', \
         'ML0501', 'ML050101', ?, ?, 'orange-ml', 'verified', 'bench-officer', ?, \
         'bench-checker', ?, ?)"
    );
    match ledger.pool() {
        PoolRef::Postgres(pool) => {
            let mut tx = pool.begin().await?;
            while let Some(task) = next.take() {
                let rows = task.await?;
                k += 1;
                next = parts.get(k).cloned().map(spawn);
                sqlx::query(&pg_sql)
                    .bind(programme)
                    .bind(at)
                    .bind(rows.iter().map(|r| r.0).collect::<Vec<_>>())
                    .bind(rows.iter().map(|r| r.1.as_str()).collect::<Vec<_>>())
                    .bind(rows.iter().map(|r| r.2.as_str()).collect::<Vec<_>>())
                    .bind(rows.iter().map(|r| r.3.as_deref()).collect::<Vec<_>>())
                    .execute(&mut *tx)
                    .await
                    .context("inserting households")?;
            }
            tx.commit().await?;
        }
        PoolRef::Sqlite(pool) => {
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            while let Some(task) = next.take() {
                let sealed = task.await?;
                k += 1;
                next = parts.get(k).cloned().map(spawn);
                for rows in sealed.chunks(SQLITE_CHUNK) {
                    let sql = format!(
                        "INSERT INTO households ({HOUSEHOLD_COLUMNS}) VALUES {}",
                        sqlite_values(rows.len(), &sqlite_group)
                    );
                    let mut q = sqlx::query(&sql);
                    for r in rows {
                        q = q
                            .bind(r.0)
                            .bind(format!("bench-{}", r.0))
                            .bind(at)
                            .bind(r.1.as_str())
                            .bind(r.2.as_str())
                            .bind(r.3.as_deref())
                            .bind(at)
                            .bind(at)
                            .bind(at);
                    }
                    q.execute(&mut *tx).await.context("inserting households")?;
                }
            }
            tx.commit().await?;
        }
    }
    Ok(())
}

/// One entitlement per household (id = household id); `entries` gives the ledger entry of
/// those that have one.
async fn insert_entitlements(
    ledger: &Ledger,
    programme: i64,
    budget_line: i64,
    n: usize,
    entries: &HashMap<i64, Uuid>,
    at: DateTime<Utc>,
) -> Result<()> {
    let entry_of = |id: i64| entries.get(&id).copied().unwrap_or_else(Uuid::now_v7);
    match ledger.pool() {
        PoolRef::Postgres(pool) => {
            let mut tx = pool.begin().await?;
            for range in chunks(n, PG_CHUNK) {
                let ids: Vec<i64> = range.clone().map(Gen::line).collect();
                sqlx::query(
                    "INSERT INTO entitlements (id, household_id, programme_id, budget_line_id, \
                     modality, cycle, tranche, amount, currency, rule_version, entry_id, status, \
                     created_at, created_by) OVERRIDING SYSTEM VALUE \
                     SELECT t.id, t.id, $1, $2, 'mpca', $3, 1, t.amount, 'XOF', 1, t.entry, \
                     'granted', $4, 'bench-officer' \
                     FROM UNNEST($5::BIGINT[], $6::BIGINT[], $7::UUID[]) AS t(id, amount, entry)",
                )
                .bind(programme)
                .bind(budget_line)
                .bind(CYCLE)
                .bind(at)
                .bind(&ids)
                .bind(range.clone().map(Gen::amount).collect::<Vec<_>>())
                .bind(ids.iter().map(|&id| entry_of(id)).collect::<Vec<_>>())
                .execute(&mut *tx)
                .await
                .context("inserting entitlements")?;
            }
            tx.commit().await?;
        }
        PoolRef::Sqlite(pool) => {
            let group = format!(
                "(?, ?, {programme}, {budget_line}, 'mpca', '{CYCLE}', 1, ?, 'XOF', 1, ?, \
                 'granted', ?, 'bench-officer')"
            );
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            for range in chunks(n, SQLITE_CHUNK) {
                let sql = format!(
                    "INSERT INTO entitlements (id, household_id, programme_id, budget_line_id, \
                     modality, cycle, tranche, amount, currency, rule_version, entry_id, status, \
                     created_at, created_by) VALUES {}",
                    sqlite_values(range.len(), &group)
                );
                let mut q = sqlx::query(&sql);
                for i in range {
                    let id = Gen::line(i);
                    q = q
                        .bind(id)
                        .bind(id)
                        .bind(Gen::amount(i))
                        .bind(entry_of(id))
                        .bind(at);
                }
                q.execute(&mut *tx)
                    .await
                    .context("inserting entitlements")?;
            }
            tx.commit().await?;
        }
    }
    Ok(())
}

/// Batches (with their sign-offs), attempts and lines.
async fn insert_batches(ledger: &Ledger, gen: &Gen, programme: i64, n: usize) -> Result<()> {
    // Batches.
    struct B {
        id: i64,
        status: &'static str,
        lines: i64,
        total: i64,
        fees: i64,
        created: DateTime<Utc>,
        changed: DateTime<Utc>,
    }
    let mut list: Vec<B> = Vec::new();
    for range in chunks(n, gen.lines_per_batch) {
        let (first, last) = (range.start, range.end - 1);
        let mut unknown = false;
        let mut failed = false;
        let mut total = 0;
        for i in range.clone() {
            match Kind::of(i).ours() {
                Ours::Unknown => unknown = true,
                Ours::Failed | Ours::ReversedBefore => failed = true,
                Ours::Completed => {}
            }
            total += Gen::amount(i);
        }
        list.push(B {
            id: gen.batch(first),
            status: if unknown {
                "sending"
            } else if failed {
                "partially_completed"
            } else {
                "completed"
            },
            lines: range.len() as i64,
            total,
            fees: FEE * range.len() as i64,
            created: gen.at(first) - Duration::days(1),
            changed: gen.at(last) + Duration::minutes(1),
        });
    }
    let filters = format!(
        r#"{{"programme":"{PROGRAMME}","max_lines":{}}}"#,
        gen.lines_per_batch
    );
    let batch_sql = |overriding: &str| {
        format!(
            "INSERT INTO batches (id, programme_id, provider, currency, status, line_count, total, \
             fees, approvals_required, authorisations_required, releases_required, filters, \
             prepared_by, created_at, status_changed_at) {overriding} VALUES ($1, $2, $3, 'XOF', \
             $4, $5, $6, $7, 1, 1, 1, $8, 'bench-officer', $9, $10)"
        )
    };
    const SIGNOFF: &str =
        "INSERT INTO batch_signoffs (batch_id, step, actor, at) VALUES ($1, $2, $3, $4)";
    const SIGNERS: [(&str, &str); 3] = [
        ("approve", "bench-approver"),
        ("authorise", "bench-authoriser"),
        ("release", "bench-finance"),
    ];
    // Attempts: (id, batch, correlation, status, lines, time of the first line).
    type Attempt = (i64, i64, String, &'static str, i32, DateTime<Utc>);
    let attempts: Vec<Attempt> = chunks(n, PER_ATTEMPT)
        .map(|r| {
            let open = r.clone().any(|i| Kind::of(i).ours() == Ours::Unknown);
            (
                Gen::attempt(r.start),
                gen.batch(r.start),
                Uuid::now_v7().to_string(),
                if open { "accepted" } else { "settled" },
                r.len() as i32,
                gen.at(r.start),
            )
        })
        .collect();
    // Line values.
    let status = |i: usize| Kind::of(i).ours().db_status();
    let failure = |i: usize| match Kind::of(i).ours() {
        Ours::Failed => Some("provider_rejected"),
        Ours::ReversedBefore => Some("reversed"),
        _ => None,
    };
    let reason = |i: usize| match Kind::of(i).ours() {
        Ours::Failed => Some("rejected by the provider"),
        Ours::ReversedBefore => Some("reversed by the provider"),
        _ => None,
    };
    let resolved = |i: usize| (Kind::of(i).ours() != Ours::Unknown).then(|| gen.at(i));
    let resolved_by = |i: usize| (Kind::of(i).ours() != Ours::Unknown).then_some("provider");

    match ledger.pool() {
        PoolRef::Postgres(pool) => {
            let mut tx = pool.begin().await?;
            let sql = batch_sql("OVERRIDING SYSTEM VALUE");
            for b in &list {
                sqlx::query(&sql)
                    .bind(b.id)
                    .bind(programme)
                    .bind(PROVIDER)
                    .bind(b.status)
                    .bind(b.lines as i32)
                    .bind(b.total)
                    .bind(b.fees)
                    .bind(&filters)
                    .bind(b.created)
                    .bind(b.changed)
                    .execute(&mut *tx)
                    .await
                    .context("inserting a batch")?;
                for (step, actor) in SIGNERS {
                    sqlx::query(SIGNOFF)
                        .bind(b.id)
                        .bind(step)
                        .bind(actor)
                        .bind(b.created)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            for part in attempts.chunks(PG_CHUNK) {
                sqlx::query(
                    "INSERT INTO payment_attempts (id, batch_id, correlation_id, adapter, status, \
                     line_count, tries, provider_batch_id, created_at, updated_at) \
                     OVERRIDING SYSTEM VALUE \
                     SELECT t.id, t.b, t.c, 'gsma-mmapi', t.s, t.n, 1, 'PB' || t.id, t.at, t.at \
                     FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::INT[], \
                     $6::TIMESTAMPTZ[]) AS t(id, b, c, s, n, at)",
                )
                .bind(part.iter().map(|a| a.0).collect::<Vec<_>>())
                .bind(part.iter().map(|a| a.1).collect::<Vec<_>>())
                .bind(part.iter().map(|a| a.2.as_str()).collect::<Vec<_>>())
                .bind(part.iter().map(|a| a.3).collect::<Vec<_>>())
                .bind(part.iter().map(|a| a.4).collect::<Vec<_>>())
                .bind(part.iter().map(|a| a.5).collect::<Vec<_>>())
                .execute(&mut *tx)
                .await
                .context("inserting attempts")?;
            }
            for range in chunks(n, PG_CHUNK) {
                let ids: Vec<i64> = range.clone().map(Gen::line).collect();
                sqlx::query(
                    "INSERT INTO batch_lines (id, batch_id, entitlement_id, household_id, amount, \
                     fee, status, attempt_id, provider_transaction_id, failure_code, \
                     failure_reason, resolved_by, resolved_at) OVERRIDING SYSTEM VALUE \
                     SELECT t.id, t.b, t.id, t.id, t.a, $1, t.s, t.att, t.tx, t.fc, t.fr, t.rb, \
                     t.ra FROM UNNEST($2::BIGINT[], $3::BIGINT[], $4::BIGINT[], $5::TEXT[], \
                     $6::BIGINT[], $7::TEXT[], $8::TEXT[], $9::TEXT[], $10::TEXT[], \
                     $11::TIMESTAMPTZ[]) AS t(id, b, a, s, att, tx, fc, fr, rb, ra)",
                )
                .bind(FEE)
                .bind(&ids)
                .bind(range.clone().map(|i| gen.batch(i)).collect::<Vec<_>>())
                .bind(range.clone().map(Gen::amount).collect::<Vec<_>>())
                .bind(range.clone().map(status).collect::<Vec<_>>())
                .bind(range.clone().map(Gen::attempt).collect::<Vec<_>>())
                .bind(range.clone().map(Gen::provider_tx).collect::<Vec<_>>())
                .bind(range.clone().map(failure).collect::<Vec<_>>())
                .bind(range.clone().map(reason).collect::<Vec<_>>())
                .bind(range.clone().map(resolved_by).collect::<Vec<_>>())
                .bind(range.clone().map(resolved).collect::<Vec<_>>())
                .execute(&mut *tx)
                .await
                .context("inserting batch lines")?;
            }
            // The identities continue after the fixture's explicit ids.
            for table in [
                "households",
                "entitlements",
                "batches",
                "payment_attempts",
                "batch_lines",
            ] {
                sqlx::query(&format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', 'id'), \
                     (SELECT MAX(id) FROM {table}))"
                ))
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        }
        PoolRef::Sqlite(pool) => {
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            let sql = batch_sql("");
            for b in &list {
                sqlx::query(&sql)
                    .bind(b.id)
                    .bind(programme)
                    .bind(PROVIDER)
                    .bind(b.status)
                    .bind(b.lines as i32)
                    .bind(b.total)
                    .bind(b.fees)
                    .bind(&filters)
                    .bind(b.created)
                    .bind(b.changed)
                    .execute(&mut *tx)
                    .await
                    .context("inserting a batch")?;
                for (step, actor) in SIGNERS {
                    sqlx::query(SIGNOFF)
                        .bind(b.id)
                        .bind(step)
                        .bind(actor)
                        .bind(b.created)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            for part in attempts.chunks(SQLITE_CHUNK) {
                let sql = format!(
                    "INSERT INTO payment_attempts (id, batch_id, correlation_id, adapter, status, \
                     line_count, tries, provider_batch_id, created_at, updated_at) VALUES {}",
                    sqlite_values(part.len(), "(?, ?, ?, 'gsma-mmapi', ?, ?, 1, ?, ?, ?)")
                );
                let mut q = sqlx::query(&sql);
                for a in part {
                    q = q
                        .bind(a.0)
                        .bind(a.1)
                        .bind(a.2.as_str())
                        .bind(a.3)
                        .bind(a.4)
                        .bind(format!("PB{}", a.0))
                        .bind(a.5)
                        .bind(a.5);
                }
                q.execute(&mut *tx).await.context("inserting attempts")?;
            }
            for range in chunks(n, SQLITE_CHUNK) {
                let sql = format!(
                    "INSERT INTO batch_lines (id, batch_id, entitlement_id, household_id, amount, \
                     fee, status, attempt_id, provider_transaction_id, failure_code, \
                     failure_reason, resolved_by, resolved_at) VALUES {}",
                    sqlite_values(range.len(), "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
                );
                let mut q = sqlx::query(&sql);
                for i in range {
                    let id = Gen::line(i);
                    q = q
                        .bind(id)
                        .bind(gen.batch(i))
                        .bind(id)
                        .bind(id)
                        .bind(Gen::amount(i))
                        .bind(FEE)
                        .bind(status(i))
                        .bind(Gen::attempt(i))
                        .bind(Gen::provider_tx(i))
                        .bind(failure(i))
                        .bind(reason(i))
                        .bind(resolved_by(i))
                        .bind(resolved(i));
                }
                q.execute(&mut *tx).await.context("inserting batch lines")?;
            }
            tx.commit().await?;
        }
    }
    Ok(())
}

/// The open lines' entitlement entries (their entry ids by household) — posted before the
/// entitlement rows that name them.
async fn post_entitlements(
    ledger: &Ledger,
    fund: &str,
    open: &[usize],
) -> Result<HashMap<i64, Uuid>> {
    let xof = Currency::parse("XOF")?;
    let fund = code(fund)?;
    let mut out = HashMap::new();
    for part in open.chunks(POST_CHUNK) {
        let entries = part
            .iter()
            .map(|&i| {
                let hh = Gen::line(i);
                let amount = Amount::from_minor(Gen::amount(i), xof);
                entry(
                    &format!("ent:{PROGRAMME}:{hh}:mpca:{CYCLE}:1"),
                    format!("Entitlement mpca {CYCLE} tranche 1"),
                    vec![
                        Line {
                            account: fund.clone(),
                            side: Side::Debit,
                            amount,
                        },
                        Line {
                            account: code(&cva_registry::entitlements::household_account(
                                PROGRAMME, hh,
                            ))?,
                            side: Side::Credit,
                            amount,
                        },
                    ],
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let posted = ledger.post_many(&entries).await?;
        for (&i, p) in part.iter().zip(posted) {
            out.insert(Gen::line(i), p.id().0);
        }
    }
    Ok(out)
}

/// The open lines' release entries (household → in transit), as the release sign-off posts.
async fn post_releases(
    ledger: &Ledger,
    batches: &Batches,
    gen: &Gen,
    open: &[usize],
) -> Result<()> {
    let xof = Currency::parse("XOF")?;
    let provider = batches
        .config()
        .provider(PROVIDER)
        .context("provider configured")?;
    let in_transit = code(&provider.in_transit_account())?;
    for part in open.chunks(POST_CHUNK) {
        let entries = part
            .iter()
            .map(|&i| {
                let line = Gen::line(i);
                let amount = Amount::from_minor(Gen::amount(i), xof);
                entry(
                    &format!("pay:{line}:release"),
                    format!("Payment released to {PROVIDER} (batch {})", gen.batch(i)),
                    vec![
                        Line {
                            account: code(&cva_registry::entitlements::household_account(
                                PROGRAMME, line,
                            ))?,
                            side: Side::Debit,
                            amount,
                        },
                        Line {
                            account: in_transit.clone(),
                            side: Side::Credit,
                            amount,
                        },
                    ],
                )
            })
            .collect::<Result<Vec<_>>>()?;
        ledger.post_many(&entries).await?;
    }
    Ok(())
}

/// The paid lines' ledger entries, as the sender posts them: `pay:LINE:confirm` (in transit
/// and fees → float) for every line we hold completed, and `pay:LINE:reversal` (float →
/// household) for a reversal booked before. What the float sees is exactly the product's; the
/// release side the confirmations draw on is posted as one entry per batch (funds → in
/// transit, `fixture:release:BATCH`), which the run never reads.
async fn post_confirmations(
    ledger: &Ledger,
    batches: &Batches,
    gen: &Gen,
    fund: &str,
    n: usize,
) -> Result<usize> {
    let xof = Currency::parse("XOF")?;
    let provider = batches
        .config()
        .provider(PROVIDER)
        .context("provider configured")?;
    let (in_transit, float, fees, fund) = (
        code(&provider.in_transit_account())?,
        code(&provider.float_account())?,
        code(&provider.fees_account())?,
        code(fund)?,
    );
    let paid: Vec<usize> = (0..n)
        .filter(|&i| matches!(Kind::of(i).ours(), Ours::Completed | Ours::ReversedBefore))
        .collect();
    let mut per_batch: std::collections::BTreeMap<i64, i64> = std::collections::BTreeMap::new();
    for &i in &paid {
        *per_batch.entry(gen.batch(i)).or_default() += Gen::amount(i);
    }
    let releases = per_batch
        .iter()
        .map(|(&batch, &total)| {
            let amount = Amount::from_minor(total, xof);
            entry(
                &format!("fixture:release:{batch}"),
                format!("Bench fixture: batch {batch}'s paid lines released, in one entry"),
                vec![
                    Line {
                        account: fund.clone(),
                        side: Side::Debit,
                        amount,
                    },
                    Line {
                        account: in_transit.clone(),
                        side: Side::Credit,
                        amount,
                    },
                ],
            )
        })
        .collect::<Result<Vec<_>>>()?;
    ledger.post_many(&releases).await?;
    let mut posted = releases.len();
    for part in paid.chunks(POST_CHUNK) {
        let mut entries = Vec::with_capacity(part.len());
        for &i in part {
            let line = Gen::line(i);
            let amount = Amount::from_minor(Gen::amount(i), xof);
            entries.push(entry(
                &format!("pay:{line}:confirm"),
                format!("Payment confirmed by {PROVIDER} (batch {})", gen.batch(i)),
                vec![
                    Line {
                        account: in_transit.clone(),
                        side: Side::Debit,
                        amount,
                    },
                    Line {
                        account: fees.clone(),
                        side: Side::Debit,
                        amount: Amount::from_minor(FEE, xof),
                    },
                    Line {
                        account: float.clone(),
                        side: Side::Credit,
                        amount: Amount::from_minor(Gen::amount(i) + FEE, xof),
                    },
                ],
            )?);
            if Kind::of(i).ours() == Ours::ReversedBefore {
                entries.push(entry(
                    &format!("pay:{line}:reversal"),
                    format!("Payment reversed by {PROVIDER} (batch {})", gen.batch(i)),
                    vec![
                        Line {
                            account: float.clone(),
                            side: Side::Debit,
                            amount,
                        },
                        Line {
                            account: code(&cva_registry::entitlements::household_account(
                                PROGRAMME, line,
                            ))?,
                            side: Side::Credit,
                            amount,
                        },
                    ],
                )?);
            }
        }
        posted += entries.len();
        ledger.post_many(&entries).await?;
    }
    Ok(posted)
}

// ---------------------------------------------------------------------------------------------
// Measuring.

/// A `kB` field of /proc/self/status, in MiB.
fn proc_status_mib(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024.0 / MIB)
}

/// Resets the peak RSS (`VmHWM`) to the current RSS. False where the kernel refuses.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| format!(", {:.0} GiB RAM", kb / 1024.0 / 1024.0))
        .unwrap_or_default();
    format!("nproc {cpus}, {model}{mem}")
}

async fn database_version(ledger: &Ledger) -> Result<String> {
    Ok(match ledger.pool() {
        PoolRef::Postgres(pool) => {
            let v: String = sqlx::query_scalar("SHOW server_version")
                .fetch_one(pool)
                .await?;
            format!("PostgreSQL {v}")
        }
        PoolRef::Sqlite(pool) => {
            let v: String = sqlx::query_scalar("SELECT sqlite_version()")
                .fetch_one(pool)
                .await?;
            format!("SQLite {v}")
        }
    })
}

fn rss() -> f64 {
    proc_status_mib("VmRSS:").unwrap_or(f64::NAN)
}

fn hwm() -> f64 {
    proc_status_mib("VmHWM:").unwrap_or(f64::NAN)
}

/// Registry (fresh keys: the run needs none) and batches over `ledger`.
fn services(ledger: &Ledger) -> (Registry, Batches) {
    let registry = Registry::new(
        ledger.clone(),
        PiiKeys::generate().0,
        OperatorTable::default_table(),
        "223",
    );
    let config = cva_batches::testing::config("http://127.0.0.1:9", FEE, None);
    let batches = Batches::new(registry.clone(), config);
    (registry, batches)
}

/// `Reconciler::run` of `statement`, timed: the view and the measures as JSON.
async fn reconcile_once(batches: &Batches, statement: i64) -> Result<serde_json::Value> {
    let reconciler = Reconciler::new(batches.clone());
    // The pool's connections are open before the clock starts.
    reconciler.statements().statement(statement).await?;
    let officer = ctx("bench-reconciler", "finance_officer");
    let rss_before = rss();
    let load_before = loadavg();
    let wall_start = cva_ledger::store::now_micros();
    let t = Instant::now();
    let view = reconciler
        .run(statement, RunOptions::default(), &officer)
        .await
        .context("Reconciler::run")?;
    let seconds = t.elapsed().as_secs_f64();
    let wall_end = cva_ledger::store::now_micros();
    Ok(serde_json::json!({
        "seconds": seconds,
        "wall_start": wall_start,
        "wall_end": wall_end,
        "peak_rss_mb": hwm(),
        "rss_before_mb": rss_before,
        "rss_after_mb": rss(),
        "load_before": load_before,
        "load_after": loadavg(),
        "view": view,
    }))
}

/// `--child-run`: one run in this fresh process, its result as one JSON line.
async fn child_run(url: &str, statement: i64) -> Result<()> {
    let ledger = Ledger::connect(url).await.context("connecting")?;
    let (_, batches) = services(&ledger);
    let out = reconcile_once(&batches, statement).await?;
    println!("{out}");
    ledger.close().await;
    Ok(())
}

/// This program again with `args`; its standard output.
fn child(args: &[String]) -> Result<String> {
    let exe = std::env::current_exe().context("this program's path")?;
    let out = Command::new(exe)
        .args(args)
        .output()
        .context("starting the child process")?;
    if !out.status.success() {
        bail!(
            "the child process failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        println!("# child: {line}");
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The 1-minute load average.
fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(f64::NAN)
}

// ---------------------------------------------------------------------------------------------
// pandas.

#[derive(Debug)]
struct PandasResult {
    version: String,
    load_s: f64,
    match_s: f64,
    peak_rss_mb: f64,
    counts: serde_json::Value,
}

fn run_pandas(
    python: &str,
    payments: &Path,
    statement: &Path,
    window_days: i64,
) -> Result<PandasResult> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/pandas_match.py");
    let out = Command::new(python)
        .arg(&script)
        .arg("--payments")
        .arg(payments)
        .arg("--statement")
        .arg(statement)
        .arg("--window-days")
        .arg(window_days.to_string())
        .output()
        .with_context(|| format!("running {python} {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("reading the pandas script's JSON")?;
    let num = |k: &str| v.get(k).and_then(|x| x.as_f64()).unwrap_or(f64::NAN);
    Ok(PandasResult {
        version: v
            .get("pandas")
            .and_then(|x| x.as_str())
            .unwrap_or("?")
            .to_owned(),
        load_s: num("load_s"),
        match_s: num("match_s"),
        peak_rss_mb: num("peak_rss_mb"),
        counts: v.get("counts").cloned().unwrap_or_default(),
    })
}

// ---------------------------------------------------------------------------------------------

const CATEGORIES: [&str; 10] = [
    "matched",
    "amount_mismatch",
    "fee_mismatch",
    "status_mismatch",
    "missing_from_statement",
    "unexpected_in_statement",
    "duplicate_in_statement",
    "reversed_by_provider",
    "skipped_payments",
    "skipped_rows",
];

fn count_of(s: &Summary, name: &str) -> usize {
    match name {
        "matched" => s.matched,
        "amount_mismatch" => s.amount_mismatch,
        "fee_mismatch" => s.fee_mismatch,
        "status_mismatch" => s.status_mismatch,
        "missing_from_statement" => s.missing_from_statement,
        "unexpected_in_statement" => s.unexpected_in_statement,
        "duplicate_in_statement" => s.duplicate_in_statement,
        "reversed_by_provider" => s.reversed_by_provider,
        "skipped_payments" => s.skipped_payments,
        "skipped_rows" => s.skipped_rows,
        _ => usize::MAX,
    }
}

async fn run(args: &Args, work_dir: &Path) -> Result<ExitCode> {
    let n = args.payments;
    let gen = Gen {
        t0: Utc
            .with_ymd_and_hms(2024, 3, 1, 0, 0, 0)
            .single()
            .context("date")?,
        lines_per_batch: args.lines_per_batch,
    };
    let mut failures: Vec<String> = Vec::new();
    let mut expect_eq = |what: &str, got: String, want: String| {
        if got != want {
            failures.push(format!("{what}: got {got}, planted {want}"));
        }
    };

    // 1. Fresh database.
    let started = Instant::now();
    let url = cva_ledger::bench::fresh_database(&args.database_url, "_recbench")
        .await
        .context("preparing a fresh benchmark database")?;
    let ledger = Ledger::connect(&url).await.context("connecting")?;
    ledger.migrate().await.context("migrating")?;
    let database = database_version(&ledger).await?;
    println!("# backend: {}, payments: {n}", ledger.backend_name());

    // 2. Set-up.
    let (keys, spec) = PiiKeys::generate();
    let sealing_keys = Arc::new(PiiKeys::from_spec(&spec)?);
    let registry = Registry::new(ledger.clone(), keys, OperatorTable::default_table(), "223");
    let config = cva_batches::testing::config("http://127.0.0.1:9", FEE, None);
    let batches = Batches::new(registry.clone(), config);
    let (programme, budget_line, fund) = setup_programme(&registry, &batches).await?;
    let fixture_at = gen.t0 - Duration::days(10);
    let t = Instant::now();
    insert_households(&ledger, &registry, sealing_keys, programme, n, fixture_at).await?;
    println!("setup_households_seconds: {:.2}", t.elapsed().as_secs_f64());
    let open: Vec<usize> = (0..n)
        .filter(|&i| Kind::of(i).ours() == Ours::Unknown)
        .collect();
    let t = Instant::now();
    let entries = post_entitlements(&ledger, &fund, &open).await?;
    insert_entitlements(&ledger, programme, budget_line, n, &entries, fixture_at).await?;
    println!(
        "setup_entitlements_seconds: {:.2}",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    insert_batches(&ledger, &gen, programme, n).await?;
    post_releases(&ledger, &batches, &gen, &open).await?;
    println!("setup_batches_seconds: {:.2}", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let confirmations = post_confirmations(&ledger, &batches, &gen, &fund, n).await?;
    println!(
        "setup_ledger_seconds: {:.2} ({confirmations} entries: the paid lines' confirmations \
         and reversals)",
        t.elapsed().as_secs_f64()
    );
    let db_setup = started.elapsed().as_secs_f64();

    // 3. Files.
    let t = Instant::now();
    let statement_path = work_dir.join("statement.csv");
    let payments_path = work_dir.join("payments.csv");
    let expected = write_files(
        &gen,
        n,
        &statement_path,
        args.pandas.then_some(payments_path.as_path()),
    )?;
    let files = t.elapsed().as_secs_f64();
    let setup = started.elapsed().as_secs_f64();
    println!("setup_files_seconds: {files:.2}");
    println!("setup_seconds: {setup:.2} (database {db_setup:.2}, files {files:.2})");
    println!(
        "statement_lines: {} ({:.1} MB)",
        expected.statement_rows,
        std::fs::metadata(&statement_path)?.len() as f64 / 1e6
    );

    let t = Instant::now();
    let bytes = std::fs::read(&statement_path).context("reading the statement")?;
    let index = |m: &str| registry.msisdn_index(m);
    let finance = ctx("bench-finance", "finance_officer");
    let imported = cva_reconciliation::Statements::new(ledger.clone())
        .import_indexed(
            PROVIDER,
            &bytes,
            &ColumnMapping::simulator(),
            Currency::parse("XOF")?,
            &index,
            &finance,
        )
        .await
        .context("importing the statement")?;
    drop(bytes);
    let import = t.elapsed().as_secs_f64();
    println!("import_seconds: {import:.2}");
    if let Some(pool) = ledger.pg_pool() {
        // What autovacuum does to the tables of a database in use, done now rather than
        // during the timed run: statistics (without them the planner takes the freshly
        // filled tables for empty ones) and the visibility map.
        let t = Instant::now();
        sqlx::raw_sql(
            "VACUUM (ANALYZE) households, entitlements, batches, payment_attempts, batch_lines, \
             journal_entries, journal_lines, accounts, statements, statement_lines",
        )
        .execute(pool)
        .await?;
        println!("vacuum_analyze_seconds: {:.2}", t.elapsed().as_secs_f64());
    }
    expect_eq(
        "statement lines imported",
        imported.lines.to_string(),
        expected.statement_rows.to_string(),
    );

    if args.setup_only {
        println!("# --setup-only: database kept, statement {}", imported.id);
        ledger.close().await;
        return Ok(ExitCode::SUCCESS);
    }

    // 4. The run: in a fresh process (unless --in-process), so that its peak RSS is its own.
    let setup_peak = hwm();
    let (v, where_run) = if args.in_process {
        let reset = reset_peak_rss();
        let v = reconcile_once(&batches, imported.id).await?;
        let how = if reset {
            "in the bench process (peak reset before the run)"
        } else {
            "in the bench process (peak NOT reset: includes set-up and import)"
        };
        (v, how)
    } else {
        let out = child(&[
            "--database-url".into(),
            url.clone(),
            "--child-run".into(),
            imported.id.to_string(),
        ])?;
        let line = out.lines().last().unwrap_or_default();
        (
            serde_json::from_str(line).context("reading the run's result")?,
            "in a fresh process that only runs it",
        )
    };
    let num = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    let reconcile = num(&v["seconds"]);
    let run_peak = num(&v["peak_rss_mb"]);
    let view = &v["view"];
    let summary: Summary =
        serde_json::from_value(view["summary"].clone()).context("the run's summary")?;
    println!("reconcile_seconds: {reconcile:.2}");
    println!(
        "lines_per_second: {:.0} (statement lines + payments)",
        (expected.statement_rows + n) as f64 / reconcile
    );
    println!(
        "# load average (1 min) {:.2} before the run, {:.2} after, on {} CPUs",
        num(&v["load_before"]),
        num(&v["load_after"]),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // What the run found, against what was planted.
    println!("\n{:<26} {:>10} {:>10}", "category", "planted", "run");
    for c in CATEGORIES {
        let want = count_of(&expected.after, c);
        let got = count_of(&summary, c);
        println!(
            "{c:<26} {want:>10} {got:>10}{}",
            if want == got { "" } else { "   <-- differs" }
        );
        expect_eq(c, got.to_string(), want.to_string());
    }
    // And what the run stored (COPY on PostgreSQL, multi-row inserts on SQLite).
    let stored = stored_counts(&ledger, view["id"].as_i64().unwrap_or_default()).await?;
    for c in CATEGORIES.iter().filter(|c| !c.starts_with("skipped")) {
        let want = count_of(&expected.after, c);
        let got = stored.get(*c).copied().unwrap_or(0);
        expect_eq(&format!("stored {c}"), got.to_string(), want.to_string());
    }
    let int = |x: &serde_json::Value| x.as_i64().map_or("?".to_owned(), |v| v.to_string());
    for (what, got, want) in [
        (
            "outcomes_posted",
            int(&view["outcomes_posted"]),
            expected.outcomes_posted.to_string(),
        ),
        (
            "exceptions_opened",
            int(&view["exceptions_opened"]),
            expected.exceptions_opened.to_string(),
        ),
        (
            "payments_considered",
            int(&view["payments_considered"]),
            n.to_string(),
        ),
    ] {
        println!("{what:<26} {want:>10} {got:>10}");
        expect_eq(what, got, want);
    }
    let f = &view["float"];
    println!(
        "\nfloat {}: statement {} → {}, ledger {} → {}, difference {}, explained {}, \
         unexplained {}",
        f["account"].as_str().unwrap_or("?"),
        int(&f["statement_opening"]),
        int(&f["statement_closing"]),
        int(&f["ledger_opening"]),
        int(&f["ledger_closing"]),
        int(&f["difference"]),
        int(&f["explained"]),
        int(&f["unexplained"])
    );
    expect_eq("float unexplained", int(&f["unexplained"]), "0".into());
    expect_eq(
        "statement closing balance",
        int(&f["statement_closing"]),
        expected.closing.to_string(),
    );

    // 5. pandas.
    let pandas = if args.pandas {
        let p = run_pandas(&args.python, &payments_path, &statement_path, 3)?;
        println!(
            "\n{:<26} {:>10} {:>10}",
            "category (matching only)", "planted", "pandas"
        );
        for c in CATEGORIES {
            let want = count_of(&expected.raw, c);
            let got = p
                .counts
                .get(c)
                .and_then(|v| v.as_u64())
                .map_or(-1, |v| v as i64);
            println!(
                "{c:<26} {want:>10} {got:>10}{}",
                if want as i64 == got {
                    ""
                } else {
                    "   <-- differs"
                }
            );
            expect_eq(&format!("pandas {c}"), got.to_string(), want.to_string());
        }
        Some(p)
    } else {
        None
    };

    // 6. Summary.
    let process_peak = if args.in_process {
        setup_peak.max(run_peak)
    } else {
        run_peak
    };
    println!("\n=== reconciliation benchmark ===");
    println!("machine:         {}", machine());
    println!(
        "database:        {database} ({})",
        if ledger.pg_pool().is_some() {
            url.rsplit('/').next().unwrap_or_default().to_owned()
        } else {
            url.clone()
        }
    );
    println!(
        "N:               {n} payments, {} statement lines",
        expected.statement_rows
    );
    println!(
        "set-up:          {setup:.1} s (database fixtures {db_setup:.1} s, files {files:.1} s)"
    );
    println!("import:          {import:.1} s");
    println!(
        "reconcile:       {reconcile:.2} s, {where_run} (target ≤ 10 s: {})",
        if reconcile <= 10.0 { "met" } else { "NOT met" }
    );
    println!(
        "peak RSS:        {process_peak:.0} MB reconciling (VmHWM, target ≤ 1024 MB: {}); \
         set-up and import {setup_peak:.0} MB (the bench process)",
        if process_peak <= 1024.0 {
            "met"
        } else {
            "NOT met"
        }
    );
    match &pandas {
        Some(p) => {
            println!(
                "pandas {}:    load {:.2} s, match {:.2} s (peak RSS {:.0} MB)",
                p.version, p.load_s, p.match_s, p.peak_rss_mb
            );
            println!(
                "ratio:           Rust reconcile / pandas match = {:.2}, Rust reconcile / \
                 (pandas load + match) = {:.2} (Rust: the whole run, database reads, postings \
                 and writes included; pandas: in-memory matching and counts only)",
                reconcile / p.match_s,
                reconcile / (p.load_s + p.match_s)
            );
        }
        None => println!("pandas:          not run (--pandas)"),
    }
    println!(
        "checks:          {}",
        if failures.is_empty() {
            "all planted counts found".to_owned()
        } else {
            format!("{} FAILED", failures.len())
        }
    );

    ledger.close().await;
    if !args.keep_database {
        drop_database(&args.database_url, &url).await?;
    }
    if failures.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        for f in &failures {
            eprintln!("check failed: {f}");
        }
        Ok(ExitCode::FAILURE)
    }
}

/// Drops the benchmark database (PostgreSQL) or deletes its file (SQLite).
async fn drop_database(admin_url: &str, url: &str) -> Result<()> {
    use sqlx::{ConnectOptions, Connection};
    if url.starts_with("postgres") {
        let name = url
            .split('?')
            .next()
            .and_then(|u| u.rsplit('/').next())
            .unwrap_or_default()
            .to_owned();
        let mut conn =
            <sqlx::postgres::PgConnectOptions as std::str::FromStr>::from_str(admin_url)?
                .connect()
                .await?;
        sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        println!("# database {name} dropped (--keep-database keeps it)");
    } else if let Some(rest) = url.strip_prefix("sqlite:") {
        let path = rest.strip_prefix("//").unwrap_or(rest);
        let path = path.split('?').next().unwrap_or_default();
        for s in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{path}{s}"));
        }
        println!("# database file {path} deleted (--keep-database keeps it)");
    }
    Ok(())
}

/// Items stored for run `id`, per category (item rows and packed plain matches).
async fn stored_counts(
    ledger: &Ledger,
    id: i64,
) -> Result<std::collections::HashMap<String, usize>> {
    const SQL: &str = "SELECT category, COUNT(*) FROM reconciliation_items \
        WHERE reconciliation_id = $1 GROUP BY category";
    let rows: Vec<(String, i64)> = match ledger.pool() {
        cva_ledger::store::PoolRef::Postgres(p) => {
            sqlx::query_as(SQL).bind(id).fetch_all(p).await?
        }
        cva_ledger::store::PoolRef::Sqlite(p) => sqlx::query_as(SQL).bind(id).fetch_all(p).await?,
    };
    let mut out: std::collections::HashMap<String, usize> = rows
        .into_iter()
        .map(|(c, n)| (c, usize::try_from(n).unwrap_or(0)))
        .collect();
    // The plain matches, stored packed: every pair decoded.
    let plain = cva_reconciliation::packed::read(ledger, id, 0, u64::MAX).await?;
    *out.entry("matched".into()).or_default() += plain.len();
    Ok(out)
}
