//! `cva batches …` and `cva providers …`: payment batches and provider floats from the command
//! line, acting as an authenticated user (`--user NAME` or `CVA_USER`; the password from
//! `CVA_PASSWORD`, else one line of standard input), checked as the API's login checks it and
//! held to the API's role matrix ([`crate::payments::Action`]). Every change is audited by the
//! batches crate as that user, under the role that allowed it, with a request id `cli-<uuid>`.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use cva_access::{AccessError, AccessStore, User};
use cva_batches::{BatchView, Batches, SendOptions, Step};
use cva_ledger::audit::AuditContext;
use cva_ledger::money::Currency;
use cva_registry::RegistryError;
use rust_decimal::Decimal;
use serde::Serialize;

use crate::cli::{ActAs, BatchCommand, Command, ProviderCommand, ShowFormat};
use crate::output::{emit, table};
use crate::payments::{
    check_sendable, Action, Batch, BatchDetail, Creation, Float, Line, NewBatches, SendResult,
};

/// A refusal of the batches crate as a message (its errors name no personal data).
fn refused(e: RegistryError) -> anyhow::Error {
    anyhow::Error::new(e).context("refused")
}

/// Runs a `batches` or `providers` command with the validated payments configuration.
pub async fn run(
    ledger: &cva_ledger::Ledger,
    url: &str,
    config: cva_batches::PaymentsConfig,
    cmd: Command,
) -> anyhow::Result<()> {
    let act_as = match &cmd {
        Command::Batches(a) => &a.act_as,
        Command::Providers(a) => &a.act_as,
        Command::Statements(a) => &a.act_as,
        _ => bail!("not a batch or provider command"),
    };
    let user = authenticate(&AccessStore::new(ledger.clone()), act_as).await?;
    let registry = crate::config::registry(ledger, url)?;
    let batches = Batches::new(registry, config);
    // Idempotent: audited (as the command line) only when an account is new.
    batches
        .open_provider_accounts(&super::audit::cli_context())
        .await
        .map_err(refused)
        .context("cannot open the providers' accounts")?;
    let me = Me {
        user,
        request_id: format!("cli-{}", uuid::Uuid::now_v7()),
    };
    match cmd {
        Command::Batches(a) => batch_command(&batches, &me, a.command).await,
        Command::Providers(a) => provider_command(&batches, &me, a.command).await,
        Command::Statements(a) => super::statements::run(ledger, &batches, &me, a.command).await,
        _ => bail!("not a batch or provider command"),
    }
}

/// The authenticated user of this invocation.
pub(super) struct Me {
    pub(super) user: User,
    pub(super) request_id: String,
}

impl Me {
    /// The audit context for `action`, or the refusal (the API's role matrix).
    pub(super) fn may(&self, action: Action) -> anyhow::Result<AuditContext> {
        action
            .context(&self.user, self.request_id.clone())
            .map_err(|m| anyhow!("{m}; `{}` has none of them", self.user.username.as_str()))
            .context("refused")
    }

    /// Batch `id`, if it exists and its programme lies inside the user's programmes.
    async fn batch(&self, batches: &Batches, id: i64) -> anyhow::Result<BatchView> {
        let b = batches.batch(id).await.map_err(refused)?;
        if self.user.may_access_programme(&b.programme) {
            Ok(b)
        } else {
            Err(anyhow!("batch {id} does not exist").context("refused"))
        }
    }
}

/// Verifies `--user` and the password as `POST /v1/auth/login` does: unknown users, wrong
/// passwords and disabled users are refused alike.
pub(super) async fn authenticate(store: &AccessStore, act_as: &ActAs) -> anyhow::Result<User> {
    let name = act_as
        .user
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| anyhow!("say who acts: --user NAME (or CVA_USER), with the password in CVA_PASSWORD or on standard input"))?;
    let password = password(name)?;
    match store.login(name, &password).await {
        Ok(u) => Ok(u),
        Err(AccessError::InvalidCredentials) => Err(anyhow!(
            "cannot act as `{}`: unknown user, wrong password or disabled user",
            name.chars().take(64).collect::<String>()
        )
        .context("refused")),
        Err(e) => Err(anyhow::Error::new(e).context("cannot check the user")),
    }
}

/// `CVA_PASSWORD`, else one line of standard input (no echo control: pipe it or use the
/// variable).
fn password(name: &str) -> anyhow::Result<String> {
    if let Ok(p) = std::env::var("CVA_PASSWORD") {
        if !p.is_empty() {
            return Ok(p);
        }
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("password of {name}: ");
        std::io::stderr().flush().ok();
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let p = line.trim_end_matches(['\n', '\r']).to_owned();
    if p.is_empty() {
        bail!("no password: set CVA_PASSWORD or write it on standard input (one line)");
    }
    Ok(p)
}

// ---- batches ---------------------------------------------------------------------------------

async fn batch_command(batches: &Batches, me: &Me, cmd: BatchCommand) -> anyhow::Result<()> {
    match cmd {
        BatchCommand::Create {
            programme,
            modality,
            cycle,
            region,
            provider,
            max_lines,
            format,
        } => {
            let ctx = me.may(Action::Create)?;
            let filters = NewBatches {
                programme,
                modality,
                cycle,
                region,
                provider,
                max_lines,
            }
            .filters()
            .map_err(refused)?;
            if !me.user.may_access_programme(&filters.programme) {
                return Err(
                    anyhow!("programme `{}` does not exist", filters.programme).context("refused")
                );
            }
            let report = batches.create(&filters, &ctx).await.map_err(refused)?;
            print_creation(format, &report)
        }
        BatchCommand::Submit { id, format } => {
            let ctx = me.may(Action::Submit)?;
            let b = me.batch(batches, id).await?;
            let b = batches.submit(b.id, &ctx).await.map_err(refused)?;
            print_batch(format, &b)
        }
        BatchCommand::Approve { id, format } => {
            sign(batches, me, id, Step::Approve, Action::Approve, format).await
        }
        BatchCommand::Authorise { id, format } => {
            sign(batches, me, id, Step::Authorise, Action::Authorise, format).await
        }
        BatchCommand::Release { id, format } => {
            sign(batches, me, id, Step::Release, Action::Release, format).await
        }
        BatchCommand::Cancel { id, reason, format } => {
            let ctx = me.may(Action::Cancel)?;
            let b = me.batch(batches, id).await?;
            let b = batches.cancel(b.id, &reason, &ctx).await.map_err(refused)?;
            print_batch(format, &b)
        }
        BatchCommand::CheckReversals { id } => {
            let ctx = me.may(Action::Send)?;
            let b = me.batch(batches, id).await?;
            let reversed = batches
                .check_reversals(b.id, &send_options(30, 1000, 600, 5000)?, &ctx)
                .await
                .map_err(refused)?;
            if reversed.is_empty() {
                println!("batch {}: no completed payment has been reversed", b.id);
            } else {
                println!(
                    "batch {}: {} payment(s) reversed by the provider, booked back to the households: lines {:?}",
                    b.id,
                    reversed.len(),
                    reversed
                );
            }
            Ok(())
        }
        BatchCommand::Export { id, out } => {
            let ctx = me.may(Action::Send)?;
            let b = me.batch(batches, id).await?;
            let file = batches.export_file(b.id, &ctx).await.map_err(refused)?;
            std::fs::write(&out, file.content.as_bytes())
                .with_context(|| format!("cannot write {}", out.display()))?;
            println!(
                "batch {}: {} lines, total {} (minor units) written to {} as {}; sha256 {}",
                b.id,
                file.lines,
                file.total_minor,
                out.display(),
                file.file_name,
                file.sha256
            );
            Ok(())
        }
        BatchCommand::ImportResults { id, file, format } => {
            let ctx = me.may(Action::Send)?;
            let b = me.batch(batches, id).await?;
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let applied = batches
                .import_results(b.id, &bytes, &ctx)
                .await
                .map_err(refused)?;
            println!(
                "batch {}: {} completed, {} failed, {} unknown, {} already resolved",
                b.id, applied.completed, applied.failed, applied.unknown, applied.already_resolved
            );
            let after = me.batch(batches, id).await?;
            print_batch(format, &after)
        }
        BatchCommand::Reissue { id, format } => {
            let ctx = me.may(Action::Reissue)?;
            let b = me.batch(batches, id).await?;
            let b = batches.reissue(b.id, &ctx).await.map_err(refused)?;
            print_batch(format, &b)
        }
        BatchCommand::Send {
            id,
            timeout_secs,
            poll_ms,
            settle_secs,
            lines_per_request,
            format,
        } => {
            let ctx = me.may(Action::Send)?;
            let options = send_options(timeout_secs, poll_ms, settle_secs, lines_per_request)?;
            let b = me.batch(batches, id).await?;
            check_sendable(batches, &b).map_err(refused)?;
            let report = send_with_spinner(batches, &b, &options, &ctx).await?;
            print_send(format, &report)
        }
        BatchCommand::List {
            programme,
            status,
            limit,
            format,
        } => {
            me.may(Action::Read)?;
            let found: Vec<Batch> = batches
                .list(programme.as_deref(), status.as_deref(), None, limit)
                .await
                .map_err(refused)?
                .into_iter()
                .filter(|b| me.user.may_access_programme(&b.programme))
                .collect();
            if format == ShowFormat::Json {
                return json_out(&found);
            }
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{:>6}  {:<14} {:<16} {:<20} {:>7} {:>16}",
                "id", "programme", "provider", "status", "lines", "total"
            )?;
            for b in &found {
                writeln!(
                    out,
                    "{:>6}  {:<14} {:<16} {:<20} {:>7} {:>16}",
                    b.id,
                    b.programme,
                    b.provider,
                    b.status,
                    b.line_count,
                    format!("{} {}", major(b.total, &b.currency), b.currency)
                )?;
            }
            Ok(())
        }
        BatchCommand::Show { id, format } => {
            me.may(Action::Read)?;
            let b = me.batch(batches, id).await?;
            let detail = BatchDetail::read(batches, b.id).await.map_err(refused)?;
            print_detail(format, &detail)
        }
        BatchCommand::Lines { id, format } => {
            me.may(Action::Read)?;
            let b = me.batch(batches, id).await?;
            let lines: Vec<Line> = batches
                .lines(b.id)
                .await
                .map_err(refused)?
                .into_iter()
                .collect();
            let rows = lines
                .iter()
                .map(|l| {
                    vec![
                        l.id.to_string(),
                        l.entitlement.to_string(),
                        l.household.to_string(),
                        major(l.amount, &b.currency),
                        major(l.fee, &b.currency),
                        l.status.clone(),
                        l.provider_transaction_id.clone().unwrap_or_default(),
                        l.failure_code.clone().unwrap_or_default(),
                        l.resolved_by.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            emit(
                format,
                &lines,
                &[
                    "line",
                    "entitlement",
                    "household",
                    "amount",
                    "fee",
                    "status",
                    "provider_transaction",
                    "failure_code",
                    "resolved_by",
                ],
                rows,
                &[0, 1, 2, 3, 4],
            )
        }
    }
}

async fn sign(
    batches: &Batches,
    me: &Me,
    id: i64,
    step: Step,
    action: Action,
    format: ShowFormat,
) -> anyhow::Result<()> {
    let ctx = me.may(action)?;
    let b = me.batch(batches, id).await?;
    let b = batches.sign(b.id, step, &ctx).await.map_err(refused)?;
    print_batch(format, &b)
}

fn send_options(
    timeout_secs: u64,
    poll_ms: u64,
    settle_secs: u64,
    lines_per_request: usize,
) -> anyhow::Result<SendOptions> {
    if !(1..=600).contains(&timeout_secs) {
        bail!("--timeout-secs: give 1 to 600");
    }
    if !(10..=60_000).contains(&poll_ms) {
        bail!("--poll-ms: give 10 to 60000");
    }
    if settle_secs > 86_400 {
        bail!("--settle-secs: give 0 to 86400");
    }
    if !(1..=cva_batches::MAX_LINES).contains(&lines_per_request) {
        bail!("--lines-per-request: give 1 to {}", cva_batches::MAX_LINES);
    }
    Ok(SendOptions {
        request_timeout: Duration::from_secs(timeout_secs),
        poll_interval: Duration::from_millis(poll_ms),
        settle_timeout: Duration::from_secs(settle_secs),
        lines_per_request,
        ..SendOptions::default()
    })
}

/// Runs the send with a spinner on standard error showing the lines' progress.
async fn send_with_spinner(
    batches: &Batches,
    b: &BatchView,
    options: &SendOptions,
    ctx: &AuditContext,
) -> anyhow::Result<SendResult> {
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_message(format!(
        "sending batch {} ({} lines) to {}",
        b.id, b.line_count, b.provider
    ));
    spinner.enable_steady_tick(Duration::from_millis(120));
    let send = batches.send(b.id, options, ctx);
    tokio::pin!(send);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let result = loop {
        tokio::select! {
            r = &mut send => break r,
            _ = tick.tick() => {
                if let Ok((completed, failed, unknown, open)) = batches.line_counts(b.id).await {
                    spinner.set_message(format!(
                        "sending batch {} to {}: {completed} completed, {failed} failed, {unknown} unknown, {open} waiting",
                        b.id, b.provider
                    ));
                }
            }
        }
    };
    spinner.finish_and_clear();
    result.map_err(refused)
}

// ---- providers -------------------------------------------------------------------------------

async fn provider_command(batches: &Batches, me: &Me, cmd: ProviderCommand) -> anyhow::Result<()> {
    match cmd {
        ProviderCommand::List { format } => {
            me.may(Action::Read)?;
            let floats: Vec<Float> = batches
                .floats()
                .await
                .map_err(refused)?
                .into_iter()
                .collect();
            let rows = floats.iter().map(float_row).collect();
            emit(format, &floats, &FLOAT_HEADER, rows, &[3, 4, 5, 6])
        }
        ProviderCommand::Fund {
            provider,
            amount,
            from,
            reference,
            format,
        } => {
            let ctx = me.may(Action::FundFloat)?;
            let f = batches
                .fund_float(&provider, &amount, &from, &reference, &ctx)
                .await
                .map_err(refused)?;
            match format {
                ShowFormat::Json => json_out(&f),
                ShowFormat::Table => {
                    print!("{}", table(&FLOAT_HEADER, &[float_row(&f)], &[3, 4, 5, 6]));
                    Ok(())
                }
            }
        }
    }
}

const FLOAT_HEADER: [&str; 7] = [
    "provider",
    "adapter",
    "currency",
    "float",
    "in_transit",
    "fees",
    "available",
];

fn float_row(f: &Float) -> Vec<String> {
    vec![
        f.provider.clone(),
        f.adapter.clone(),
        f.currency.clone(),
        major(f.float, &f.currency),
        major(f.in_transit, &f.currency),
        major(f.fees, &f.currency),
        major(f.available, &f.currency),
    ]
}

// ---- output ----------------------------------------------------------------------------------

/// Minor units shown in major units of `currency` (as stored when the currency is unknown).
pub(super) fn major(minor: impl Into<i128>, currency: &str) -> String {
    let minor = minor.into();
    match Currency::parse(currency) {
        Ok(c) => Decimal::try_from_i128_with_scale(minor, c.exponent())
            .map_or_else(|_| minor.to_string(), |d| d.to_string()),
        Err(_) => minor.to_string(),
    }
}

pub(super) fn json_out<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string_pretty(value)?)?;
    Ok(())
}

fn batch_rows(batches: &[Batch]) -> Vec<Vec<String>> {
    batches
        .iter()
        .map(|b| {
            vec![
                b.id.to_string(),
                b.programme.clone(),
                b.provider.clone(),
                b.status.clone(),
                b.line_count.to_string(),
                major(b.total, &b.currency),
                major(b.fees, &b.currency),
                b.currency.clone(),
                b.prepared_by.clone(),
            ]
        })
        .collect()
}

const BATCH_HEADER: [&str; 9] = [
    "batch",
    "programme",
    "provider",
    "status",
    "lines",
    "total",
    "fees",
    "currency",
    "prepared_by",
];

fn print_creation(format: ShowFormat, report: &Creation) -> anyhow::Result<()> {
    if format == ShowFormat::Json {
        return json_out(report);
    }
    if report.batches.is_empty() {
        println!("nothing due: no batch created");
    } else {
        print!(
            "{}",
            table(&BATCH_HEADER, &batch_rows(&report.batches), &[0, 4, 5, 6])
        );
    }
    println!(
        "left out: {} without a provider for the household's operator, {} outside the provider's limits",
        report.no_provider, report.outside_limits
    );
    Ok(())
}

fn print_batch(format: ShowFormat, b: &Batch) -> anyhow::Result<()> {
    if format == ShowFormat::Json {
        return json_out(b);
    }
    let mut out = std::io::stdout().lock();
    write_batch(&mut out, b)?;
    Ok(())
}

fn write_batch(out: &mut impl Write, b: &Batch) -> std::io::Result<()> {
    let required = |n: Option<i32>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
    writeln!(out, "batch {}: {}", b.id, b.status)?;
    writeln!(out, "  programme    {}", b.programme)?;
    writeln!(out, "  provider     {}", b.provider)?;
    writeln!(
        out,
        "  lines        {} for {} {} (fees {})",
        b.line_count,
        major(b.total, &b.currency),
        b.currency,
        major(b.fees, &b.currency)
    )?;
    writeln!(out, "  prepared by  {}", b.prepared_by)?;
    if let Some(f) = b.follow_up_of {
        writeln!(out, "  follow-up of batch {f}")?;
    }
    writeln!(
        out,
        "  sign-offs    approvals {}, authorisations {}, releases {} required",
        required(b.approvals_required),
        required(b.authorisations_required),
        required(b.releases_required)
    )?;
    for s in &b.signoffs {
        writeln!(out, "    {:<10} {}", s.step, s.by)?;
    }
    Ok(())
}

fn print_detail(format: ShowFormat, d: &BatchDetail) -> anyhow::Result<()> {
    if format == ShowFormat::Json {
        return json_out(d);
    }
    let mut out = std::io::stdout().lock();
    write_batch(&mut out, &d.batch)?;
    let c = &d.lines;
    writeln!(
        out,
        "  by status    {} open, {} completed, {} failed, {} unknown, {} cancelled",
        c.open, c.completed, c.failed, c.unknown, c.cancelled
    )?;
    write_attempts(&mut out, &d.attempts)?;
    Ok(())
}

fn write_attempts(
    out: &mut impl Write,
    attempts: &[crate::payments::Attempt],
) -> anyhow::Result<()> {
    if attempts.is_empty() {
        writeln!(out, "no attempt sent to the provider")?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = attempts
        .iter()
        .map(|a| {
            vec![
                a.id.to_string(),
                a.correlation_id.clone(),
                a.status.clone(),
                a.line_count.to_string(),
                a.tries.to_string(),
                a.provider_batch_id.clone().unwrap_or_default(),
                a.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    write!(
        out,
        "{}",
        table(
            &[
                "attempt",
                "correlation_id",
                "status",
                "lines",
                "tries",
                "provider_batch",
                "last_error"
            ],
            &rows,
            &[0, 3, 4]
        )
    )?;
    Ok(())
}

fn print_send(format: ShowFormat, r: &SendResult) -> anyhow::Result<()> {
    if format == ShowFormat::Json {
        return json_out(r);
    }
    let mut out = std::io::stdout().lock();
    write_batch(&mut out, &r.batch)?;
    writeln!(
        out,
        "  outcomes     {} completed, {} failed, {} unknown, {} in flight (this run applied {} completed, {} failed, {} unknown)",
        r.completed,
        r.failed,
        r.unknown,
        r.in_flight,
        r.applied.completed,
        r.applied.failed,
        r.applied.unknown
    )?;
    write_attempts(&mut out, &r.attempts)?;
    for a in &r.anomalies {
        writeln!(out, "anomaly: {a}")?;
    }
    if r.unknown > 0 || r.in_flight > 0 {
        writeln!(
            out,
            "some lines have no outcome yet: run `cva batches send {}` again later (it asks the provider first and pays nothing twice)",
            r.batch.id
        )?;
    }
    Ok(())
}
