//! Throughput and latency benchmark for the ledger, on PostgreSQL or SQLite.
//!
//! ```text
//! cargo run --release -p cva-ledger --bin ledger-bench -- \
//!     --database-url postgres://postgres@127.0.0.1:5432/test --entries 100000
//! cargo run --release -p cva-ledger --bin ledger-bench -- \
//!     --database-url sqlite:///tmp/ledger-bench.db --entries 100000
//! ```
//!
//! The benchmark never writes to the database it is given. On PostgreSQL it connects to that
//! database's server, drops and re-creates a database named after it plus `_bench` (`test` →
//! `test_bench`) and works there; on SQLite it deletes the file (and its `-wal`/`-shm`) first.
//! It then applies the migrations.
//!
//! Setup (timed, but not part of any rate): open the hot budget line `funds:bench:mpca` and fund
//! it with one entry of 10^15 XOF. With `--households pre-opened` or `both`, also open the N
//! household accounts `liabilities:entitlements:BH-000001`… with `Ledger::open_account`, a few
//! at a time. That is one transaction per account (about 2,000 a second on 2 cores, so close to
//! a minute for 100,000), which is why the default, `first-use`, leaves them to `post_many`.
//!
//! Figures, printed on stdout as `name: value` lines (other stdout lines start with `#`):
//!
//! * `setup_seconds` (new database, migrations, hot account and its funding) and, when
//!   households are pre-opened, `open_households_seconds`.
//! * `bulk_entries_per_s`, `bulk_seconds`, `bulk_lines_per_s`: one `post_many` (or one per
//!   `--chunk` entries) of N disbursements, each debiting the hot account and crediting one
//!   household 65000 XOF. By default the household accounts do not exist yet and `post_many`
//!   opens them; with `pre-opened` or `both` they already exist. A `#` line says which. The
//!   entries are built before the clock starts.
//! * `bulk_first_use_*` (with `--households both`): after the above on pre-opened accounts, the
//!   same on N other households (`BF-…`) that `post_many` must open.
//! * PostgreSQL only: `raw_copy_seconds`, `raw_copy_rows_per_s`: a bare `COPY … FROM STDIN` of
//!   the same 2N line rows into `bench_copy`, a copy of `journal_lines` with the same indexes
//!   and constraints but no triggers, in a transaction that commits: the floor for writing these
//!   rows. `bulk_vs_copy_ratio` = `bulk_lines_per_s` / `raw_copy_rows_per_s`.
//! * `concurrent_entries_per_s`, `concurrent_p50_ms`, `concurrent_p99_ms`,
//!   `concurrent_failures`: `--clients` tasks post `--concurrent-entries` single entries in all
//!   through one shared `Committer` (group commit). Clients whose index is a multiple of 3 debit
//!   the hot account; the others debit their own `expense:bench:c{client}`; each credits one of
//!   its 50 households `liabilities:entitlements:BC-{client}-{n}` round-robin (opened on first
//!   use). Latency is measured around each `Committer::post`; percentiles are nearest-rank over
//!   all requests; the rate is `concurrent_entries` over wall time.
//! * `verify_seconds` and `verify: ok`: `Ledger::verify` found no problem, the trial balance is
//!   balanced and the hot account holds exactly what was posted to it.
//!
//! The process exits non-zero if any post fails or verification does not pass.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use chrono::{NaiveDate, Utc};
use clap::{Parser, ValueEnum};
use cva_ledger::account::{AccountCode, AccountSpec, AccountType, BalanceRule, Side};
use cva_ledger::committer::Committer;
use cva_ledger::entry::{IdempotencyKey, Line, NewEntry};
use cva_ledger::money::{Amount, Currency};
use cva_ledger::posting::Posting;
use cva_ledger::Ledger;
use futures::{StreamExt, TryStreamExt};
use sqlx::Row;

const HOT: &str = "funds:bench:mpca";
const SEED: i64 = 1_000_000_000_000_000;
const GRANT: i64 = 65_000;
/// Households per concurrent client, credited round-robin.
const HOUSEHOLDS_PER_CLIENT: usize = 50;
const COPY_CHUNK: usize = 1 << 20;

#[derive(Debug, Parser)]
#[command(about = "Benchmark post_many, raw COPY and group commit on a fresh ledger database")]
struct Args {
    /// postgres://… (a `<db>_bench` database is created next to it) or sqlite://FILE (deleted first)
    #[arg(long)]
    database_url: String,
    /// Disbursement entries posted by post_many (N)
    #[arg(long)]
    entries: usize,
    /// Entries per post_many call (default: all N in one call)
    #[arg(long)]
    chunk: Option<usize>,
    /// Concurrent clients posting single entries through one Committer
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Single entries posted in all by the concurrent clients
    #[arg(long, default_value_t = 20_000)]
    concurrent_entries: usize,
    /// Largest group commit (Committer::start max_batch)
    #[arg(long, default_value_t = 1024)]
    max_batch: usize,
    /// PostgreSQL pool size (SQLite uses its own)
    #[arg(long, default_value_t = 8)]
    pool_size: u32,
    /// Concurrent open_account calls while pre-opening household accounts
    #[arg(long, default_value_t = 8)]
    open_tasks: usize,
    /// Household accounts for the bulk post: opened on first use by post_many, pre-opened with
    /// open_account during setup, or both (two bulk runs)
    #[arg(long, value_enum, default_value_t = Households::FirstUse)]
    households: Households,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Households {
    PreOpened,
    FirstUse,
    Both,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<ExitCode> {
    let args = Args::parse();
    ensure!(args.entries > 0, "--entries must be at least 1");
    ensure!(args.clients > 0, "--clients must be at least 1");
    ensure!(args.chunk != Some(0), "--chunk must be at least 1");
    ensure!(args.max_batch > 0, "--max-batch must be at least 1");
    ensure!(args.open_tasks > 0, "--open-tasks must be at least 1");
    let n = args.entries;
    let xof = Currency::parse("XOF")?;
    let date = Utc::now().date_naive();

    // Setup.
    let started = Instant::now();
    let url = cva_ledger::bench::fresh_database(&args.database_url, "_bench")
        .await
        .context("preparing a fresh benchmark database")?;
    let ledger = Ledger::connect_with(&url, args.pool_size)
        .await
        .context("connecting to the bench database")?;
    ledger.migrate().await.context("migrating")?;
    println!("# backend: {}", ledger.backend_name());
    let hot = AccountCode::parse(HOT)?;
    ledger
        .open_account(AccountSpec::new(
            hot.clone(),
            AccountType::Fund,
            xof,
            BalanceRule::MustNotGoNegative,
        )?)
        .await?;
    let seed = entry(
        "bench:seed",
        "Bench donor funding",
        date,
        2,
        vec![
            line("expense:bench:seed", Side::Debit, SEED, xof)?,
            line(HOT, Side::Credit, SEED, xof)?,
        ],
    )?;
    ledger.post(seed).await.context("posting the seed entry")?;
    println!("setup_seconds: {:.1}", started.elapsed().as_secs_f64());

    if args.households != Households::FirstUse {
        let started = Instant::now();
        open_households(&ledger, "BH", n, xof, args.open_tasks).await?;
        println!(
            "# opened {n} household accounts with open_account, {} at a time",
            args.open_tasks
        );
        println!("open_households_seconds: {:.1}", secs(started.elapsed()));
    } else {
        println!(
            "# household accounts are opened on first use by post_many (pre-opening them with \
             open_account, one transaction each, is too slow for large N; see --households)"
        );
    }
    let mut hot_debits = 0i64;

    // 1. Bulk post_many.
    let chunk = args.chunk.unwrap_or(n);
    println!("# chunk: {chunk} entries per post_many");
    let bulk = bulk_entries("BH", n, date, xof)?;
    let bulk_time = post_bulk(&ledger, &bulk, chunk)
        .await
        .context("bulk post_many")?;
    drop(bulk);
    hot_debits += GRANT * n as i64;
    let bulk_lines_per_s = (2 * n) as f64 / secs(bulk_time);
    println!("bulk_seconds: {:.1}", secs(bulk_time));
    println!("bulk_entries_per_s: {:.1}", n as f64 / secs(bulk_time));
    println!("bulk_lines_per_s: {bulk_lines_per_s:.1}");

    // 2. Raw COPY of the same rows (PostgreSQL only).
    if let Some(pool) = ledger.pg_pool() {
        let copy_time = raw_copy(pool, n).await.context("raw COPY")?;
        let copy_rows_per_s = (2 * n) as f64 / secs(copy_time);
        let ratio = bulk_lines_per_s / copy_rows_per_s;
        println!("raw_copy_seconds: {:.1}", secs(copy_time));
        println!("raw_copy_rows_per_s: {copy_rows_per_s:.1}");
        println!("bulk_vs_copy_ratio: {ratio:.1}");
        println!(
            "# post_many writes lines at {:.1}% of the speed of a bare COPY of the same rows",
            ratio * 100.0
        );
    } else {
        println!("# raw COPY comparison skipped (PostgreSQL only)");
    }

    // 1b. Bulk post_many that also opens every household account.
    if args.households == Households::Both {
        let bulk = bulk_entries("BF", n, date, xof)?;
        let time = post_bulk(&ledger, &bulk, chunk)
            .await
            .context("bulk post_many opening accounts on first use")?;
        drop(bulk);
        hot_debits += GRANT * n as i64;
        println!("# the same on {n} households that do not exist yet (opened by post_many)");
        println!("bulk_first_use_seconds: {:.1}", secs(time));
        println!("bulk_first_use_entries_per_s: {:.1}", n as f64 / secs(time));
        println!(
            "bulk_first_use_lines_per_s: {:.1}",
            (2 * n) as f64 / secs(time)
        );
    }

    // 3. Concurrent single posts through one Committer.
    println!("# clients: {}", args.clients);
    println!("# max_batch: {}", args.max_batch);
    let c = concurrent(
        &ledger,
        args.clients,
        args.concurrent_entries,
        args.max_batch,
        date,
        xof,
    )
    .await?;
    hot_debits += GRANT * c.hot_posted as i64;
    let total = c.latencies.len();
    println!("concurrent_entries: {total}");
    println!(
        "concurrent_entries_per_s: {:.1}",
        total as f64 / secs(c.wall)
    );
    println!("concurrent_p50_ms: {:.1}", percentile_ms(&c.latencies, 50));
    println!("concurrent_p99_ms: {:.1}", percentile_ms(&c.latencies, 99));
    println!("concurrent_failures: {}", c.failures);

    // 4. Verification.
    let verified = verify(&ledger, &hot, SEED - hot_debits).await?;
    ledger.close().await;
    if c.failures > 0 || !verified {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64().max(1e-9)
}

fn code(s: &str) -> Result<AccountCode> {
    Ok(AccountCode::parse(s)?)
}

fn line(account: &str, side: Side, minor: i64, currency: Currency) -> Result<Line> {
    Ok(Line {
        account: code(account)?,
        side,
        amount: Amount::from_minor(minor, currency),
    })
}

fn entry(
    key: &str,
    description: &str,
    date: NaiveDate,
    cycle: u32,
    lines: Vec<Line>,
) -> Result<NewEntry> {
    let mut metadata = serde_json::Map::new();
    metadata.insert("cycle".into(), cycle.into());
    Ok(NewEntry::new(
        IdempotencyKey::parse(key)?,
        description.to_owned(),
        date,
        metadata,
        lines,
    )?)
}

fn household(prefix: &str, i: usize) -> String {
    format!("liabilities:entitlements:{prefix}-{i:06}")
}

async fn open_households(
    ledger: &Ledger,
    prefix: &str,
    n: usize,
    xof: Currency,
    tasks: usize,
) -> Result<()> {
    futures::stream::iter(1..=n)
        .map(|i| async move {
            let spec = AccountSpec::new(
                code(&household(prefix, i))?,
                AccountType::Liability,
                xof,
                BalanceRule::MustNotGoNegative,
            )?;
            ledger.open_account(spec).await?;
            anyhow::Ok(())
        })
        .buffer_unordered(tasks)
        .try_collect::<()>()
        .await
        .context("opening household accounts")
}

/// N disbursements: hot account → household `{prefix}-000001`…
fn bulk_entries(prefix: &str, n: usize, date: NaiveDate, xof: Currency) -> Result<Vec<NewEntry>> {
    (1..=n)
        .map(|i| {
            entry(
                &format!("bench:bulk:{prefix}:{i}"),
                "Bench disbursement",
                date,
                1,
                vec![
                    line(HOT, Side::Debit, GRANT, xof)?,
                    line(&household(prefix, i), Side::Credit, GRANT, xof)?,
                ],
            )
        })
        .collect()
}

async fn post_bulk(ledger: &Ledger, entries: &[NewEntry], chunk: usize) -> Result<Duration> {
    let started = Instant::now();
    for part in entries.chunks(chunk) {
        let outcomes = ledger.post_many(part).await?;
        ensure!(
            outcomes.len() == part.len(),
            "post_many returned {} outcomes for {} entries",
            outcomes.len(),
            part.len()
        );
        if let Some(p) = outcomes.iter().find(|p| !matches!(p, Posting::Posted(_))) {
            bail!("post_many replayed an entry with a fresh key: {p:?}");
        }
    }
    Ok(started.elapsed())
}

/// Times a bare COPY of 2N line rows shaped like the bulk post's into a trigger-less copy of
/// `journal_lines`.
async fn raw_copy(pool: &sqlx::PgPool, n: usize) -> Result<Duration> {
    let hot_id: i64 = sqlx::query_scalar("SELECT id FROM accounts WHERE code = $1")
        .bind(HOT)
        .fetch_one(pool)
        .await?;
    let codes: Vec<String> = (1..=n).map(|i| household("BH", i)).collect();
    let rows = sqlx::query("SELECT code, id FROM accounts WHERE code = ANY($1)")
        .bind(&codes)
        .fetch_all(pool)
        .await?;
    let mut ids = std::collections::HashMap::with_capacity(rows.len());
    for r in &rows {
        ids.insert(r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?);
    }
    let household_ids: Vec<i64> = codes
        .iter()
        .map(|c| {
            ids.get(c)
                .copied()
                .with_context(|| format!("account {c} is missing"))
        })
        .collect::<Result<_>>()?;
    drop(ids);
    sqlx::raw_sql(
        "DROP TABLE IF EXISTS bench_copy; \
         CREATE TABLE bench_copy (LIKE journal_lines INCLUDING ALL)",
    )
    .execute(pool)
    .await?;

    let started = Instant::now();
    let at = Utc::now().to_rfc3339();
    let mut tx = pool.begin().await?;
    let mut copy = tx
        .copy_in_raw(
            "COPY bench_copy (entry_id, line_no, line_count, account_id, side, amount, currency, recorded_at) FROM STDIN",
        )
        .await?;
    let mut buf = String::with_capacity(COPY_CHUNK + 1024);
    for household_id in &household_ids {
        let entry_id = uuid::Uuid::now_v7();
        let _ = writeln!(buf, "{entry_id}\t1\t2\t{hot_id}\tD\t{GRANT}\tXOF\t{at}");
        let _ = writeln!(
            buf,
            "{entry_id}\t2\t2\t{household_id}\tC\t{GRANT}\tXOF\t{at}"
        );
        if buf.len() >= COPY_CHUNK {
            copy.send(std::mem::take(&mut buf).into_bytes()).await?;
            buf.reserve(COPY_CHUNK + 1024);
        }
    }
    if !buf.is_empty() {
        copy.send(buf.into_bytes()).await?;
    }
    let copied = copy.finish().await?;
    tx.commit().await?;
    let elapsed = started.elapsed();
    ensure!(
        copied == 2 * n as u64,
        "COPY wrote {copied} rows, expected {}",
        2 * n
    );
    Ok(elapsed)
}

#[derive(Debug)]
struct Concurrent {
    latencies: Vec<Duration>,
    failures: usize,
    hot_posted: usize,
    wall: Duration,
}

#[derive(Debug, Default)]
struct ClientRun {
    latencies: Vec<Duration>,
    failures: usize,
    hot_posted: usize,
}

async fn concurrent(
    ledger: &Ledger,
    clients: usize,
    total: usize,
    max_batch: usize,
    date: NaiveDate,
    xof: Currency,
) -> Result<Concurrent> {
    let committer = Committer::start(ledger.clone(), max_batch);
    let started = Instant::now();
    let mut handles = Vec::with_capacity(clients);
    for client in 0..clients {
        let count = total / clients + usize::from(client < total % clients);
        handles.push(tokio::spawn(run_client(
            committer.clone(),
            client,
            count,
            date,
            xof,
        )));
    }
    let mut out = Concurrent {
        latencies: Vec::with_capacity(total),
        failures: 0,
        hot_posted: 0,
        wall: Duration::ZERO,
    };
    for h in handles {
        let run = h.await.context("a client task panicked")??;
        out.latencies.extend(run.latencies);
        out.failures += run.failures;
        out.hot_posted += run.hot_posted;
    }
    out.wall = started.elapsed();
    out.latencies.sort_unstable();
    Ok(out)
}

async fn run_client(
    committer: Committer,
    client: usize,
    count: usize,
    date: NaiveDate,
    xof: Currency,
) -> Result<ClientRun> {
    // One client in three debits the hot account (`is_multiple_of` needs Rust 1.87; MSRV is 1.80).
    let third = client % 3;
    let hot = third == 0;
    let debit = if hot {
        HOT.to_owned()
    } else {
        format!("expense:bench:c{client}")
    };
    let mut run = ClientRun {
        latencies: Vec::with_capacity(count),
        ..ClientRun::default()
    };
    for k in 0..count {
        let credit = format!(
            "liabilities:entitlements:BC-{client}-{}",
            k % HOUSEHOLDS_PER_CLIENT
        );
        let e = entry(
            &format!("bench:c:{client}:{k}"),
            "Bench single disbursement",
            date,
            2,
            vec![
                line(&debit, Side::Debit, GRANT, xof)?,
                line(&credit, Side::Credit, GRANT, xof)?,
            ],
        )?;
        let started = Instant::now();
        let outcome = committer.post(e).await;
        run.latencies.push(started.elapsed());
        match outcome {
            Ok(Posting::Posted(_)) => {
                if hot {
                    run.hot_posted += 1;
                }
            }
            Ok(Posting::Replayed(id)) => {
                run.failures += 1;
                eprintln!("client {client} entry {k}: unexpectedly replayed as {id}");
            }
            Err(e) => {
                run.failures += 1;
                if run.failures <= 3 {
                    eprintln!("client {client} entry {k}: {:#}", anyhow::Error::from(e));
                }
            }
        }
    }
    Ok(run)
}

/// Nearest-rank percentile of sorted latencies, in milliseconds.
fn percentile_ms(sorted: &[Duration], p: usize) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted.len()).div_ceil(100).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1000.0
}

/// Runs `Ledger::verify`, the trial balance and a check of the hot account's balance.
async fn verify(ledger: &Ledger, hot: &AccountCode, expected_hot: i64) -> Result<bool> {
    let started = Instant::now();
    let report = ledger.verify().await.context("verify")?;
    let verify_time = started.elapsed();
    let mut ok = true;
    for p in &report.problems {
        eprintln!("verify: {p}");
        ok = false;
    }
    let trial = ledger.trial_balance().await.context("trial balance")?;
    if !trial.is_balanced() {
        eprintln!("trial balance is not balanced: {:?}", trial.totals);
        ok = false;
    }
    let account = ledger
        .account(hot)
        .await?
        .with_context(|| format!("account {hot} is missing"))?;
    if account.balance() != i128::from(expected_hot) {
        eprintln!(
            "{hot} holds {} XOF, expected {expected_hot}",
            account.balance()
        );
        ok = false;
    }
    println!(
        "# verified {} accounts and {} entries",
        report.accounts_checked, report.entries_checked
    );
    println!("verify_seconds: {:.1}", secs(verify_time));
    println!("verify: {}", if ok { "ok" } else { "FAILED" });
    Ok(ok)
}
