//! `cva programmes | households | flags | entitlements | fixtures`: the programme registry from
//! the command line. Changes are audited as `cli:$USER`, like the ledger commands.

use anyhow::{bail, Context};
use chrono::Utc;
use cva_households::import::ColumnMapping;
use cva_programmes::rules::{Modality, Rule};
use cva_registry::flags::Decision;
use cva_registry::households::{HouseholdQuery, Reveal, Status, StatusAction};
use cva_registry::programmes::NewProgramme;
use cva_registry::{Registry, RegistryError};

use crate::cli::{
    CfwCommand, Command, EntitlementCommand, FixturesCommand, FlagCommand, HouseholdCommand,
    MilestoneCommand, ProgrammeCommand,
};
use crate::output::emit;

/// Largest file read (a 100,000-household export is about 25 MB).
const MAX_FILE_BYTES: u64 = 512 * 1024 * 1024;

fn read_file(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.len() > MAX_FILE_BYTES {
        bail!("{} is larger than {MAX_FILE_BYTES} bytes", path.display());
    }
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn modality(s: &str) -> anyhow::Result<Modality> {
    Modality::parse(s).map_err(|e| anyhow::anyhow!("--modality: {e}"))
}

/// Turns a registry refusal into a message; bad rows are printed as a CSV report on stderr.
fn refused(e: RegistryError) -> anyhow::Error {
    if let RegistryError::BadRows(rows) = &e {
        eprint!("{}", cva_registry::households::row_errors_csv(rows));
    }
    anyhow::Error::new(e).context("refused")
}

fn today() -> chrono::NaiveDate {
    Utc::now().date_naive()
}

pub async fn run(reg: &Registry, cmd: Command) -> anyhow::Result<()> {
    let ctx = super::audit::cli_context();
    match cmd {
        Command::Programmes(cmd) => programmes(reg, cmd, &ctx).await,
        Command::Households(cmd) => households(reg, cmd, &ctx).await,
        Command::Flags(cmd) => flags(reg, cmd, &ctx).await,
        Command::Entitlements(cmd) => entitlements(reg, cmd, &ctx).await,
        Command::Cfw(CfwCommand::ImportAttendance {
            programme,
            cycle,
            from,
            to,
            file,
        }) => {
            let bytes = read_file(&file)?;
            let r = reg
                .import_attendance(&programme, &cycle, from, to, &bytes, &ctx)
                .await
                .map_err(refused)?;
            println!("{}", serde_json::to_string_pretty(&r)?);
            Ok(())
        }
        Command::Milestones(cmd) => {
            let out = match cmd {
                MilestoneCommand::Report {
                    household,
                    milestone,
                    on,
                } => serde_json::to_string_pretty(
                    &reg.report_milestone(household, &milestone, on.unwrap_or_else(today), &ctx)
                        .await
                        .map_err(refused)?,
                )?,
                MilestoneCommand::Verify {
                    household,
                    milestone,
                } => serde_json::to_string_pretty(
                    &reg.verify_milestone(household, &milestone, &ctx)
                        .await
                        .map_err(refused)?,
                )?,
                MilestoneCommand::List { household } => serde_json::to_string_pretty(
                    &reg.milestones(household).await.map_err(refused)?,
                )?,
            };
            println!("{out}");
            Ok(())
        }
        _ => bail!("not a registry command"),
    }
}

async fn programmes(
    reg: &Registry,
    cmd: ProgrammeCommand,
    ctx: &cva_registry::AuditContext,
) -> anyhow::Result<()> {
    match cmd {
        ProgrammeCommand::Create {
            code,
            name,
            donor,
            grant,
            currency,
            reporting_currency,
            starts,
            ends,
            regions,
        } => {
            let p = reg
                .create_programme(
                    NewProgramme {
                        code,
                        name,
                        donor,
                        grant_ref: grant,
                        currency,
                        reporting_currency,
                        starts_on: starts,
                        ends_on: ends,
                        regions,
                    },
                    ctx,
                )
                .await
                .map_err(refused)?;
            println!("programme {} created", p.code);
        }
        ProgrammeCommand::List { format } => {
            let ps = reg.programmes(&[]).await?;
            let rows = ps
                .iter()
                .map(|p| {
                    vec![
                        p.code.to_string(),
                        p.name.clone(),
                        p.donor.clone(),
                        p.grant_ref.clone(),
                        p.currency.code().to_owned(),
                        format!("{}..{}", p.starts_on, p.ends_on),
                        p.regions.join(" "),
                    ]
                })
                .collect();
            emit(
                format,
                &ps,
                &[
                    "code", "name", "donor", "grant", "currency", "period", "regions",
                ],
                rows,
                &[],
            )?;
        }
        ProgrammeCommand::BudgetLine {
            programme,
            code,
            modality: m,
            amount,
        } => {
            let l = reg
                .add_budget_line(&programme, &code, modality(&m)?, &amount, ctx)
                .await
                .map_err(refused)?;
            println!(
                "budget line {} ({}) created: account {}",
                l.code,
                l.modality.as_str(),
                l.account
            );
        }
        ProgrammeCommand::Budget { programme, format } => {
            let lines = reg.budget_lines(&programme).await.map_err(refused)?;
            let rows = lines
                .iter()
                .map(|l| {
                    vec![
                        l.code.clone(),
                        l.modality.as_str().to_owned(),
                        l.amount.to_string(),
                        l.funded.to_string(),
                        l.committed.to_string(),
                        l.available.to_string(),
                        (l.amount - l.committed).to_string(),
                    ]
                })
                .collect();
            emit(
                format,
                &lines,
                &[
                    "line",
                    "modality",
                    "planned",
                    "funded",
                    "committed",
                    "available",
                    "plan_left",
                ],
                rows,
                &[2, 3, 4, 5, 6],
            )?;
        }
        ProgrammeCommand::Fund {
            programme,
            line,
            amount,
            reference,
            date,
        } => {
            let p = reg
                .fund_budget_line(
                    &programme,
                    &line,
                    &amount,
                    &reference,
                    date.unwrap_or_else(today),
                    ctx,
                )
                .await
                .map_err(refused)?;
            println!("{}", p.id());
        }
        ProgrammeCommand::Rate {
            programme,
            date,
            rate,
            source,
        } => {
            let r = reg
                .add_rate(&programme, date, &rate, &source, ctx)
                .await
                .map_err(refused)?;
            println!("rate {} on {} recorded ({})", r.rate, r.rate_date, r.source);
        }
        ProgrammeCommand::Rule { programme, file } => {
            let text =
                String::from_utf8(read_file(&file)?).context("the rule file is not UTF-8")?;
            let rule =
                Rule::from_json(&text).map_err(|e| anyhow::anyhow!("the rule was refused: {e}"))?;
            let v = reg.add_rule(&programme, rule, ctx).await.map_err(refused)?;
            println!("rule version {v}");
        }
    }
    Ok(())
}

async fn households(
    reg: &Registry,
    cmd: HouseholdCommand,
    ctx: &cva_registry::AuditContext,
) -> anyhow::Result<()> {
    match cmd {
        HouseholdCommand::Import {
            programme,
            file,
            mapping,
            dry_run,
        } => {
            let bytes = read_file(&file)?;
            let mapping = match mapping {
                Some(m) => {
                    let text = String::from_utf8(read_file(&m)?)
                        .context("the mapping file is not UTF-8")?;
                    ColumnMapping::from_csv(&text).map_err(|e| anyhow::anyhow!("{e}"))?
                }
                None => ColumnMapping::kobo_default(),
            };
            let spinner = indicatif::ProgressBar::new_spinner();
            spinner.set_message(format!(
                "importing {} ({} bytes)",
                file.display(),
                bytes.len()
            ));
            spinner.enable_steady_tick(std::time::Duration::from_millis(120));
            let report = reg
                .import_households(&programme, &bytes, &mapping, dry_run, ctx)
                .await;
            spinner.finish_and_clear();
            let r = report.map_err(refused)?;
            println!("{}", serde_json::to_string_pretty(&r)?);
        }
        HouseholdCommand::List {
            programme,
            status,
            reveal,
            limit,
            format,
        } => {
            let q = HouseholdQuery {
                status: status
                    .as_deref()
                    .map(Status::parse)
                    .transpose()
                    .map_err(refused)?,
                commune: None,
                after_id: 0,
                limit,
            };
            let hs = reg
                .households(
                    &programme,
                    &q,
                    if reveal { Reveal::Full } else { Reveal::Masked },
                )
                .await
                .map_err(refused)?;
            let rows = hs
                .iter()
                .map(|h| {
                    vec![
                        h.id.to_string(),
                        h.status.as_str().to_owned(),
                        h.head_name.clone(),
                        h.size.to_string(),
                        h.commune.clone(),
                        h.msisdn.clone().unwrap_or_default(),
                        h.operator.clone().unwrap_or_default(),
                        h.open_flags.to_string(),
                    ]
                })
                .collect();
            emit(
                format,
                &hs,
                &[
                    "id",
                    "status",
                    "head",
                    "size",
                    "commune",
                    "msisdn",
                    "operator",
                    "open_flags",
                ],
                rows,
                &[0, 3, 7],
            )?;
        }
        HouseholdCommand::Verify { id } => status(reg, id, StatusAction::Verify, None, ctx).await?,
        HouseholdCommand::Suspend { id, reason } => {
            status(reg, id, StatusAction::Suspend, Some(&reason), ctx).await?
        }
        HouseholdCommand::Reinstate { id } => {
            status(reg, id, StatusAction::Reinstate, None, ctx).await?
        }
        HouseholdCommand::Withdraw { id, reason } => {
            status(reg, id, StatusAction::Withdraw, Some(&reason), ctx).await?
        }
    }
    Ok(())
}

async fn status(
    reg: &Registry,
    id: i64,
    action: StatusAction,
    reason: Option<&str>,
    ctx: &cva_registry::AuditContext,
) -> anyhow::Result<()> {
    let h = reg
        .set_status(id, action, reason, ctx)
        .await
        .map_err(refused)?;
    println!("household {} is {}", h.id, h.status.as_str());
    Ok(())
}

async fn flags(
    reg: &Registry,
    cmd: FlagCommand,
    ctx: &cva_registry::AuditContext,
) -> anyhow::Result<()> {
    match cmd {
        FlagCommand::List {
            programme,
            all,
            format,
        } => {
            let fs = reg.flags(&programme, !all).await.map_err(refused)?;
            let rows = fs
                .iter()
                .map(|f| {
                    vec![
                        f.id.to_string(),
                        f.kind.clone(),
                        f.score_permille.map(|s| s.to_string()).unwrap_or_default(),
                        f.household_a.to_string(),
                        f.household_b.to_string(),
                        f.status.clone(),
                    ]
                })
                .collect();
            emit(
                format,
                &fs,
                &[
                    "id",
                    "kind",
                    "score",
                    "household_a",
                    "household_b",
                    "status",
                ],
                rows,
                &[0, 2, 3, 4],
            )?;
        }
        FlagCommand::Decide {
            id,
            distinct,
            keep,
            reason,
        } => {
            let d = match (distinct, keep) {
                (true, None) => Decision::Distinct { reason },
                (false, Some(keep)) => Decision::Duplicate { keep, reason },
                _ => bail!("say --distinct, or --keep ID for a duplicate"),
            };
            let f = reg.adjudicate(id, &d, ctx).await.map_err(refused)?;
            println!("flag {} is {}", f.id, f.status);
        }
    }
    Ok(())
}

async fn entitlements(
    reg: &Registry,
    cmd: EntitlementCommand,
    ctx: &cva_registry::AuditContext,
) -> anyhow::Result<()> {
    match cmd {
        EntitlementCommand::Generate {
            programme,
            cycle,
            modality: m,
            date,
        } => {
            let r = reg
                .generate_entitlements(
                    &programme,
                    &cycle,
                    modality(&m)?,
                    date.unwrap_or_else(today),
                    ctx,
                )
                .await
                .map_err(refused)?;
            println!("{}", serde_json::to_string_pretty(&r)?);
        }
        EntitlementCommand::List { household, format } => {
            let es = reg.entitlements(household).await.map_err(refused)?;
            let rows = es
                .iter()
                .map(|e| {
                    vec![
                        e.id.to_string(),
                        e.modality.clone(),
                        e.cycle.clone(),
                        e.tranche.to_string(),
                        e.amount.to_string(),
                        e.currency.clone(),
                        e.status.clone(),
                        format!("v{}", e.rule_version),
                    ]
                })
                .collect();
            emit(
                format,
                &es,
                &[
                    "id", "modality", "cycle", "tranche", "amount", "currency", "status", "rule",
                ],
                rows,
                &[0, 3, 4],
            )?;
        }
        EntitlementCommand::Cancel { id, reason } => {
            let e = reg
                .cancel_entitlement(id, &reason, ctx)
                .await
                .map_err(refused)?;
            println!("entitlement {} is {}", e.id, e.status);
        }
    }
    Ok(())
}

pub fn fixtures(cmd: FixturesCommand) -> anyhow::Result<()> {
    match cmd {
        FixturesCommand::Generate {
            households,
            seed,
            out,
        } => {
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            let m = cva_households::fixtures::generate(households, seed, &out)
                .with_context(|| format!("cannot write fixtures to {}", out.display()))?;
            println!(
                "{} households (seed {}) written to {}: {} planted duplicate pairs, {} bad rows",
                m.households,
                m.seed,
                out.display(),
                m.planted.same_national_id.len()
                    + m.planted.same_biometric_ref.len()
                    + m.planted.shared_phone.len()
                    + m.planted.similar_name.len(),
                m.bad_rows
            );
        }
    }
    Ok(())
}
