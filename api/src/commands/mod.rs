//! Runs a parsed command line against the ledger.

mod audit;
mod batches;
mod exceptions;
mod ledger;
mod provider_sim;
mod registry;
pub mod reports;
mod serve;
mod statements;
mod user;

pub use ledger::{parse_time, print_trial_balance, TrialBalanceReport, TrialBalanceRow};

use anyhow::Context;
use cva_ledger::store::redact_url;
use cva_ledger::Ledger;

use crate::cli::{Cli, Command};

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let url = cli.database_url().to_owned();
    match cli.command {
        Command::Demo(args) => crate::demo::run(args, cli.database_url).await,
        Command::Migrate => {
            let ledger = connect(&url).await?;
            println!(
                "migrations applied ({} at {})",
                ledger.backend_name(),
                redact_url(&url)
            );
            ledger.close().await;
            Ok(())
        }
        Command::Serve(args) => serve::run(&url, cli.payments_config.as_deref(), args).await,
        Command::User(cmd) => {
            let ledger = connect(&url).await?;
            let result = user::run(&ledger, cmd).await;
            ledger.close().await;
            result
        }
        Command::Ledger(cmd) => {
            let ledger = connect(&url).await?;
            let result = ledger::run(&ledger, cmd).await;
            ledger.close().await;
            result
        }
        Command::Fixtures(cmd) => registry::fixtures(cmd),
        Command::ProviderSim(args) => provider_sim::run(args).await,
        Command::Programmes(_)
        | Command::Households(_)
        | Command::Flags(_)
        | Command::Entitlements(_)
        | Command::Cfw(_)
        | Command::Milestones(_) => {
            let ledger = connect(&url).await?;
            let reg = crate::config::registry(&ledger, &url)?;
            let result = registry::run(&reg, cli.command).await;
            ledger.close().await;
            result
        }
        Command::Batches(_) | Command::Providers(_) | Command::Statements(_) => {
            // The configuration first: without one, nothing is asked or opened.
            let config = crate::config::payments(cli.payments_config.as_deref())?
                .ok_or_else(|| anyhow::anyhow!(crate::payments::NOT_CONFIGURED))?;
            let ledger = connect(&url).await?;
            let result = batches::run(&ledger, &url, config, cli.command).await;
            ledger.close().await;
            result
        }
        Command::Exceptions(args) => {
            let ledger = connect(&url).await?;
            let result = exceptions::run(&ledger, args).await;
            ledger.close().await;
            result
        }
        Command::Reports(args) => {
            let ledger = connect(&url).await?;
            let result = reports::run(&ledger, &url, args).await;
            ledger.close().await;
            result
        }
        Command::Audit(cmd) => {
            let ledger = connect(&url).await?;
            let result = audit::run(&ledger, cmd).await;
            ledger.close().await;
            result
        }
    }
}

/// Connects and applies pending migrations (they are idempotent and cheap).
pub async fn connect(url: &str) -> anyhow::Result<Ledger> {
    let ledger = Ledger::connect(url)
        .await
        .with_context(|| format!("cannot open the database {}", redact_url(url)))?;
    ledger
        .migrate()
        .await
        .context("cannot apply the database migrations")?;
    Ok(ledger)
}
