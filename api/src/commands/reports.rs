//! `cva reports …`: reports for auditors with provable hashes (crate `cva_reports`), acting as
//! an authenticated user (`--user NAME` or `CVA_USER`; the password from `CVA_PASSWORD`, else
//! one line of standard input), checked as the API's login checks it.
//!
//! - `cva reports budget|household|trial-balance|journal|reconciliation [--programme P]
//!   [--statement ID | --run ID] [--as-of DATE] --format csv|json [--out FILE]` writes the
//!   report to `FILE` (or standard output), records it (table `reports`, audit event
//!   `report.produce`) and prints its SHA-256 on standard error.
//! - `cva reports verify FILE [--format table|json]` says whether the file is a report produced
//!   here, by whom and when; it exits non-zero when it is not (or cannot be proven).
//!
//! Who (the API's rules, [`crate::http::reports`]): every role reads reports (`auditor`,
//! `finance_officer`, `programme_officer`, `admin`), verification included. A user limited to
//! some programmes gets only those programmes' budget, household and journal reports; the
//! whole-book ones (trial balance, the full journal, reconciliation runs) need unrestricted
//! access. Personal data in the household report follows the registry's role policy
//! ([`crate::http::registry::reveal`]): opened for administrators and programme officers,
//! masked for everyone else.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context};
use chrono::NaiveDate;
use clap::{Subcommand, ValueEnum};
use cva_access::AccessStore;

use super::batches::authenticate;
use cva_ledger::audit::AuditContext;
use cva_reports::{Format as ReportFormat, Kind, Reports, Request, Verdict};

use crate::cli::{ActAs, Format};
use crate::http::auth::{Caller, READERS};
use crate::http::problem::ApiError;

/// `cva reports`: who acts, and which report.
#[derive(Debug, clap::Args)]
pub struct ReportsArgs {
    #[command(flatten)]
    pub act_as: ActAs,
    #[command(subcommand)]
    pub command: ReportCommand,
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Budget consumption per budget line, modality and region, in the programme and the
    /// reporting currency (needs --programme; --as-of picks the exchange rate).
    Budget(ReportOptions),
    /// Per household: entitlements, paid, in transit, failed, balance owed (needs
    /// --programme; personal data masked unless the role may see it).
    Household(ReportOptions),
    /// Every account's debits, credits and balance.
    TrialBalance(ReportOptions),
    /// Journal entries with their lines (all, or one programme's with --programme).
    Journal(ReportOptions),
    /// A reconciliation run: --statement ID (its latest run) or --run ID.
    Reconciliation(ReportOptions),
    /// Whether FILE is a report produced here: by whom, when, and whether the audit trail is
    /// intact. Exits non-zero when it is not.
    Verify {
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

/// The file format of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FileFormat {
    Csv,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct ReportOptions {
    /// Programme code.
    #[arg(long)]
    pub programme: Option<String>,
    /// A statement id: its latest reconciliation run.
    #[arg(long)]
    pub statement: Option<i64>,
    /// A reconciliation run id.
    #[arg(long)]
    pub run: Option<i64>,
    /// Budget report: the date whose exchange rate applies (default: today, UTC).
    #[arg(long, value_name = "DATE")]
    pub as_of: Option<NaiveDate>,
    #[arg(long, value_enum)]
    pub format: FileFormat,
    /// Write the report here instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Runs a `reports` command.
pub async fn run(ledger: &cva_ledger::Ledger, url: &str, args: ReportsArgs) -> anyhow::Result<()> {
    let user = authenticate(&AccessStore::new(ledger.clone()), &args.act_as).await?;
    if !user.has_any(READERS) {
        bail!(anyhow!("reading reports needs a role").context("refused"));
    }
    let request_id = format!("cli-{}", uuid::Uuid::now_v7());
    let caller = Caller {
        user,
        session: uuid::Uuid::nil(),
        request_id,
    };
    let registry = crate::config::registry(ledger, url)?;
    let reports = Reports::new(registry);
    let (kind, opts) = match args.command {
        ReportCommand::Verify { file, format } => return verify(&reports, &file, format).await,
        ReportCommand::Budget(o) => (Kind::Budget, o),
        ReportCommand::Household(o) => (Kind::Household, o),
        ReportCommand::TrialBalance(o) => (Kind::TrialBalance, o),
        ReportCommand::Journal(o) => (Kind::Journal, o),
        ReportCommand::Reconciliation(o) => (Kind::Reconciliation, o),
    };
    let request = Request {
        kind,
        programme: opts.programme,
        statement: opts.statement,
        run: opts.run,
        as_of: opts.as_of,
        reveal: crate::http::registry::reveal(&caller),
    };
    crate::http::reports::check_scope(&caller, &request).map_err(|e| {
        match e {
            ApiError::NotFound(d) | ApiError::Forbidden(d) => anyhow!(d),
            other => anyhow!("{other:?}"),
        }
        .context("refused")
    })?;
    let format = match opts.format {
        FileFormat::Csv => ReportFormat::Csv,
        FileFormat::Json => ReportFormat::Json,
    };
    let ctx = context(&caller);
    let produced = reports
        .produce(&request, format, &ctx)
        .await
        .map_err(|e| anyhow::Error::new(e).context("refused"))?;
    match &opts.out {
        Some(path) => std::fs::write(path, &produced.bytes)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(&produced.bytes)?;
            out.flush()?;
        }
    }
    let r = &produced.record;
    eprintln!(
        "report {}: {} ({}), {} bytes, audit event {}",
        r.id, r.kind, r.format, r.byte_len, produced.audit_seq
    );
    eprintln!("sha256 {}", r.sha256);
    Ok(())
}

/// The audit context of a report produced by `caller` (the role recorded is the most powerful
/// one held, as for the API's reads).
fn context(caller: &Caller) -> AuditContext {
    AuditContext {
        actor_id: Some(caller.user.id.0),
        actor: caller.user.username.as_str().to_owned(),
        role: caller.user.primary_role().as_str().to_owned(),
        request_id: caller.request_id.clone(),
    }
}

async fn verify(reports: &Reports, file: &std::path::Path, format: Format) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let v = reports
        .verify(&bytes)
        .await
        .context("cannot verify the report")?;
    let rows: Vec<Vec<String>> = v
        .reports
        .iter()
        .map(|f| {
            vec![
                f.report.id.to_string(),
                f.report.kind.clone(),
                f.report.format.clone(),
                f.report.parameters.to_string(),
                f.report.produced_by.clone(),
                f.report.produced_at.to_rfc3339(),
                f.audit_event
                    .as_ref()
                    .map(|e| e.seq.to_string())
                    .unwrap_or_default(),
                if f.audit_matches { "yes" } else { "no" }.to_owned(),
            ]
        })
        .collect();
    if format == Format::Table {
        println!("sha256 {} ({} bytes)", v.sha256, v.bytes);
        println!("{}", v.message);
        if !rows.is_empty() {
            println!();
        }
    }
    if format != Format::Table || !rows.is_empty() {
        crate::output::emit(
            format,
            &v,
            &[
                "report",
                "kind",
                "format",
                "parameters",
                "produced_by",
                "produced_at",
                "audit_event",
                "audit_matches",
            ],
            rows,
            &[0, 6],
        )?;
    }
    if v.verdict != Verdict::Verified {
        bail!(anyhow!("{}", v.message).context("not verified"));
    }
    Ok(())
}
