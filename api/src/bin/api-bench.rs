//! Throughput and latency benchmark of the HTTP API, over real HTTP on loopback, on PostgreSQL or
//! SQLite.
//!
//! ```text
//! cargo run --release -p cva --bin api-bench -- \
//!     --database-url postgres://postgres@127.0.0.1:5432/test [--clients 32] [--requests 20000]
//! cargo run --release -p cva --bin api-bench -- \
//!     --database-url sqlite:///tmp/api-bench.db [--clients 32] [--requests 20000]
//! ```
//!
//! The benchmark never writes to the database it is given. On PostgreSQL it connects to that
//! database's server, drops and re-creates a database named after it plus `_apibench` (`test` →
//! `test_apibench`, not the `test_bench` of `ledger-bench`) and works there; on SQLite it deletes
//! the file (and its `-wal`/`-shm`) first. It then connects with `Ledger::connect` (the pool `cva
//! serve` uses) and applies the migrations.
//!
//! Setup: build the server's state as `cva serve` does (`startup::state`, a fixed 48-byte token
//! secret, 15-minute tokens), create the finance officer `bench-officer` with
//! `AccessStore::create_user`, post one donor funding entry (`assets:bank` ← `funds:bench:mpca`,
//! 1,000,000,000 XOF) through the ledger, and serve `startup::app` on 127.0.0.1 with an ephemeral
//! port in a task of the same process (no tracing subscriber, so request spans cost nothing).
//!
//! Figures, printed on stdout as `name: value` lines (other stdout lines start with `#`):
//!
//! * `setup_seconds`: new database, migrations, user (one argon2id hash), funding entry.
//! * `argon2_verify_ms`: mean time of one `cva_access::password::verify` over 10 runs against a
//!   hash made once with `password::hash`, on this thread. A `#` line gives the parameters
//!   (m=19456 KiB, t=2, p=1: OWASP's argon2id recommendation). Every login pays this once.
//! * `login_ms`: one `POST /v1/auth/login` over HTTP, on a new connection: argon2id verify,
//!   throttle check, session row and its audit event, JWT.
//! * `balance_get_per_s`, `balance_get_seconds`, `balance_get_p50_ms`, `balance_get_p99_ms`,
//!   `balance_get_errors`: `--clients` tokio tasks, each with its own `reqwest::Client` holding
//!   one keep-alive HTTP/1.1 connection (requests are sequential within a task, so the pool of
//!   one idle connection per host is reused), send `--requests` `GET
//!   /v1/accounts/assets:bank/balance` with the bearer token in all, split evenly. Each request
//!   is authenticated as in production: JWT check, then the session (open, user not disabled,
//!   roles and programmes) — on SQLite read from the database every time, on PostgreSQL from the
//!   session cache that the database's notifications keep exact (`cva_access::session_cache`,
//!   as `cva serve` runs it) — then the balance read from the database. Latency is measured around each
//!   request, from send to the last byte of the body (the first request of a task also opens its
//!   connection); percentiles are nearest-rank over all requests; the rate is `--requests` over
//!   wall time. An error is a transport error, a status other than 200, or a body different from
//!   the first one: each client's first body is parsed and its `balance` must equal the funded
//!   amount; later bodies must be byte-identical to it.
//!
//! Targets (the issue): at least 5,000 balance reads a second with p99 ≤ 20 ms for 32 clients, on
//! SQLite and on PostgreSQL. argon2id at 50 ms or more per verify is expected and fine: it is paid
//! once per login, not per request. The load generator runs on the same machine and in the same
//! runtime as the server and the database, so on a small machine the figures are a lower bound.
//!
//! The process exits non-zero if any request fails.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use chrono::Utc;
use clap::Parser;
use cva_access::password::{self, Password};
use cva_access::{NewUser, Role, TokenKeys, Username};
use cva_api::http::startup;
use cva_ledger::account::{AccountCode, Side};
use cva_ledger::audit::AuditContext;
use cva_ledger::entry::{IdempotencyKey, Line, NewEntry};
use cva_ledger::money::{Amount, Currency};
use cva_ledger::Ledger;
use reqwest::header::CONTENT_TYPE;
use reqwest::StatusCode;

/// A fixed, strong (48 bytes, many distinct) token secret: the tokens live only in this process.
const SECRET: &[u8] = b"api-bench:7Qz3xK9pL2mV8nR4tW6yB1cD5fG0hJ-sE_uA.o";
const USERNAME: &str = "bench-officer";
const PASSWORD: &str = "api bench passphrase, long enough";
const BANK: &str = "assets:bank";
const FUND: &str = "funds:bench:mpca";
/// Funded amount, in minor units of XOF (which has none): one billion.
const FUNDING: i64 = 1_000_000_000;
const ARGON2_RUNS: u32 = 10;
/// Failed requests reported on stderr, per client.
const REPORTED_ERRORS: usize = 3;

#[derive(Debug, Parser)]
#[command(about = "Benchmark login and authenticated balance reads over HTTP on a fresh database")]
struct Args {
    /// postgres://… (a `<db>_apibench` database is created next to it) or sqlite://FILE (deleted
    /// first)
    #[arg(long)]
    database_url: String,
    /// Concurrent clients, each with its own keep-alive HTTP/1.1 connection
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Balance reads sent in all, split evenly between the clients
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<ExitCode> {
    let args = Args::parse();
    ensure!(args.clients > 0, "--clients must be at least 1");
    ensure!(args.requests > 0, "--requests must be at least 1");
    let xof = Currency::parse("XOF")?;
    let expected_balance = Amount::from_minor(FUNDING, xof).number();

    // Setup.
    let started = Instant::now();
    let url = cva_ledger::bench::fresh_database(&args.database_url, "_apibench")
        .await
        .context("preparing a fresh benchmark database")?;
    let ledger = Ledger::connect(&url)
        .await
        .context("connecting to the bench database")?;
    ledger.migrate().await.context("migrating")?;
    println!("# backend: {}", ledger.backend_name());
    let keys = TokenKeys::from_secret(SECRET, chrono::Duration::minutes(15))?;
    let registry = cva_registry::Registry::new(
        ledger.clone(),
        cva_households::pii::PiiKeys::generate().0,
        cva_households::msisdn::OperatorTable::default_table(),
        "223",
    );
    let state = startup::state(ledger.clone(), keys, registry).await;
    let ctx = AuditContext {
        actor_id: None,
        actor: "api-bench".into(),
        role: "operator".into(),
        request_id: "api-bench".into(),
    };
    state
        .access
        .create_user(
            NewUser {
                username: Username::parse(USERNAME)?,
                password: Password::parse(PASSWORD)?,
                roles: vec![Role::FinanceOfficer],
                programmes: vec![],
            },
            &ctx,
        )
        .await
        .context("creating the bench user")?;
    ledger
        .post(funding(xof)?)
        .await
        .context("posting the funding entry")?;
    println!("setup_seconds: {:.1}", secs(started.elapsed()));

    // argon2id.
    let params = password::argon2().params().clone();
    println!(
        "# argon2id: m={} KiB, t={}, p={} (version 0x13)",
        params.m_cost(),
        params.t_cost(),
        params.p_cost()
    );
    let hash = password::hash(&Password::parse(PASSWORD)?)?;
    let started = Instant::now();
    for _ in 0..ARGON2_RUNS {
        ensure!(
            password::verify(&hash, PASSWORD),
            "argon2id refused the right password"
        );
    }
    println!(
        "argon2_verify_ms: {:.1}",
        ms(started.elapsed()) / f64::from(ARGON2_RUNS)
    );

    // Server.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding 127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(startup::serve(listener, state));
    let base = format!("http://{addr}");
    println!("# server: {base}");

    // Login.
    let login_client = client()?;
    let body = serde_json::json!({"username": USERNAME, "password": PASSWORD}).to_string();
    let started = Instant::now();
    let resp = login_client
        .post(format!("{base}/v1/auth/login"))
        .header(CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .context("POST /v1/auth/login")?;
    let status = resp.status();
    let bytes = resp.bytes().await.context("reading the login response")?;
    let login_time = started.elapsed();
    if status != StatusCode::OK {
        bail!(
            "login answered {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    let login: serde_json::Value =
        serde_json::from_slice(&bytes).context("parsing the login response")?;
    let token = login["access_token"]
        .as_str()
        .context("the login response has no access_token")?
        .to_owned();
    drop(login_client);
    println!("login_ms: {:.1}", ms(login_time));

    // Concurrent balance reads.
    println!(
        "# clients: {} (one reqwest Client and one keep-alive HTTP/1.1 connection each)",
        args.clients
    );
    println!(
        "# requests: {} x GET /v1/accounts/{BANK}/balance",
        args.requests
    );
    let balance_url = format!("{base}/v1/accounts/{BANK}/balance");
    let started = Instant::now();
    let mut handles = Vec::with_capacity(args.clients);
    for c in 0..args.clients {
        let count = args.requests / args.clients + usize::from(c < args.requests % args.clients);
        handles.push(tokio::spawn(run_client(
            c,
            count,
            balance_url.clone(),
            token.clone(),
            expected_balance.clone(),
        )));
    }
    let mut latencies = Vec::with_capacity(args.requests);
    let mut errors = 0usize;
    for h in handles {
        let run = h.await.context("a client task panicked")??;
        latencies.extend(run.latencies);
        errors += run.errors;
    }
    let wall = started.elapsed();
    latencies.sort_unstable();
    println!("balance_get_requests: {}", latencies.len());
    println!("balance_get_seconds: {:.2}", secs(wall));
    println!(
        "balance_get_per_s: {:.1}",
        latencies.len() as f64 / secs(wall)
    );
    println!("balance_get_p50_ms: {:.2}", percentile_ms(&latencies, 50));
    println!("balance_get_p99_ms: {:.2}", percentile_ms(&latencies, 99));
    println!("balance_get_errors: {errors}");
    println!("# targets: balance_get_per_s >= 5000 and balance_get_p99_ms <= 20 with 32 clients");

    server.abort();
    // The aborted server task drops its state (and the committer's ledger) when it is polled
    // again; close the pool without waiting for them.
    drop(server);
    ledger.close().await;
    if errors > 0 {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64().max(1e-9)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A client for one connection to the loopback server: HTTP/1.1 only, no proxy (whatever the
/// environment says), Nagle off.
fn client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(60))
        .build()
        .context("building the HTTP client")
}

/// The donor funding: `assets:bank` debit, `funds:bench:mpca` credit.
fn funding(xof: Currency) -> Result<NewEntry> {
    let amount = Amount::from_minor(FUNDING, xof);
    let mut metadata = serde_json::Map::new();
    metadata.insert("source".into(), "api-bench".into());
    Ok(NewEntry::new(
        IdempotencyKey::parse("api-bench:funding")?,
        "Bench donor funding".to_owned(),
        Utc::now().date_naive(),
        metadata,
        vec![
            Line {
                account: AccountCode::parse(BANK)?,
                side: Side::Debit,
                amount,
            },
            Line {
                account: AccountCode::parse(FUND)?,
                side: Side::Credit,
                amount,
            },
        ],
    )?)
}

#[derive(Debug, Default)]
struct ClientRun {
    latencies: Vec<Duration>,
    errors: usize,
}

async fn run_client(
    c: usize,
    count: usize,
    url: String,
    token: String,
    expected_balance: String,
) -> Result<ClientRun> {
    let http = client()?;
    let mut run = ClientRun {
        latencies: Vec::with_capacity(count),
        errors: 0,
    };
    // Each client's first 200 body, checked; the later ones must equal it.
    let mut first: Option<Vec<u8>> = None;
    for k in 0..count {
        let started = Instant::now();
        let outcome = match http.get(&url).bearer_auth(&token).send().await {
            Ok(resp) => {
                let status = resp.status();
                resp.bytes().await.map(|b| (status, b))
            }
            Err(e) => Err(e),
        };
        run.latencies.push(started.elapsed());
        let problem = match outcome {
            Err(e) => Some(format!("{e:#}")),
            Ok((status, body)) if status != StatusCode::OK => Some(format!(
                "status {status}: {}",
                String::from_utf8_lossy(&body)
            )),
            Ok((_, body)) => match &first {
                Some(f) if f[..] == body[..] => None,
                Some(_) => Some(format!(
                    "body differs from the first: {}",
                    String::from_utf8_lossy(&body)
                )),
                None => match check_balance(&body, &expected_balance) {
                    Ok(()) => {
                        first = Some(body.to_vec());
                        None
                    }
                    Err(e) => Some(format!("{e:#}")),
                },
            },
        };
        if let Some(p) = problem {
            run.errors += 1;
            if run.errors <= REPORTED_ERRORS {
                eprintln!("client {c} request {k}: {p}");
            }
        }
    }
    Ok(run)
}

fn check_balance(body: &[u8], expected: &str) -> Result<()> {
    let v: serde_json::Value =
        serde_json::from_slice(body).context("the balance response is not JSON")?;
    let got = v["balance"]
        .as_str()
        .with_context(|| format!("the balance response has no balance: {v}"))?;
    ensure!(
        got == expected,
        "assets:bank balance is {got}, expected {expected}"
    );
    Ok(())
}

/// Nearest-rank percentile of sorted latencies, in milliseconds.
fn percentile_ms(sorted: &[Duration], p: usize) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted.len()).div_ceil(100).clamp(1, sorted.len());
    ms(sorted[rank - 1])
}
