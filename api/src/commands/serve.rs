//! `cva serve`: configuration checks, then the HTTP API until SIGINT/SIGTERM.

use anyhow::{bail, Context};
use chrono::Duration;
use cva_access::TokenKeys;

use crate::cli::ServeArgs;
use crate::http::startup;

pub async fn run(
    url: &str,
    payments_config: Option<&std::path::Path>,
    args: ServeArgs,
) -> anyhow::Result<()> {
    let secret = match &args.jwt_secret_file {
        Some(p) => std::fs::read(p).with_context(|| format!("cannot read the JWT secret file {}", p.display()))?,
        None => match std::env::var("CVA_JWT_SECRET") {
            Ok(s) if !s.is_empty() => s.into_bytes(),
            _ => bail!("no token secret: set CVA_JWT_SECRET or pass --jwt-secret-file (at least 32 random bytes, e.g. `openssl rand -base64 48`)"),
        },
    };
    let secret: Vec<u8> = secret.trim_ascii().to_vec();
    if !(1..=24 * 60).contains(&args.token_ttl_minutes) {
        bail!("--token-ttl-minutes must be between 1 and 1440");
    }
    let keys = TokenKeys::from_secret(&secret, Duration::minutes(args.token_ttl_minutes))
        .context("refusing to start")?;
    // A bad payments configuration stops the server; none at all leaves the batch routes
    // answering 503.
    let payments_config = crate::config::payments(payments_config).context("refusing to start")?;
    let ledger = super::connect(url).await?;
    let registry = crate::config::registry(&ledger, url).context("refusing to start")?;
    let payments = match payments_config {
        Some(config) => {
            let batches = cva_batches::Batches::new(registry.clone(), config);
            batches
                .open_provider_accounts(&super::audit::cli_context())
                .await
                .context("refusing to start: cannot open the providers' accounts")?;
            crate::payments::Payments::new(batches)
        }
        None => {
            eprintln!(
                "note: {}; the batch and provider routes answer 503",
                crate::payments::NOT_CONFIGURED
            );
            crate::payments::Payments::default()
        }
    };
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    eprintln!(
        "cva API listening on http://{addr} ({} database)",
        ledger.backend_name()
    );
    let state = startup::state(ledger.clone(), keys, registry)
        .await
        .with_payments(payments);
    startup::serve(listener, state).await?;
    ledger.close().await;
    Ok(())
}
