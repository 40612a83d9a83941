//! `cva provider-sim`: the GSMA disbursement simulator of `cva_providers::sim` as a process,
//! until Ctrl-C.

use anyhow::Context;
use cva_providers::sim::{Faults, SimConfig, Simulator};

use crate::cli::ProviderSimArgs;

pub async fn run(args: ProviderSimArgs) -> anyhow::Result<()> {
    let faults = Faults::parse(&args.faults).context("--faults")?;
    let api_key = match &args.api_key_env {
        Some(var) => Some(
            std::env::var(var)
                .with_context(|| format!("--api-key-env: the variable {var} is not set"))?,
        ),
        None => None,
    };
    if args.float < rust_decimal::Decimal::ZERO || args.fee < rust_decimal::Decimal::ZERO {
        anyhow::bail!("--float and --fee cannot be negative");
    }
    let config = SimConfig {
        seed: args.seed,
        currency: args.currency,
        float_balance: args.float,
        fee: args.fee,
        api_key,
        faults,
        ..SimConfig::default()
    };
    let sim = Simulator::spawn(config, args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    println!("provider simulator listening on {}", sim.base_url);
    tokio::signal::ctrl_c()
        .await
        .context("cannot wait for Ctrl-C")?;
    sim.shutdown().await;
    Ok(())
}
