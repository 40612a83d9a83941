//! `cva`: the command line (and, later, the server) of the CVA disbursement ledger.

use std::process::ExitCode;

use clap::Parser;
use cva_api::{cli, commands};

#[tokio::main]
async fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_tracing(args.verbose);
    match commands::run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The chain of causes, one per line; never a backtrace or a connection string.
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
