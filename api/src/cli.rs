//! The command-line contract: commands, flags and their defaults.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// CVA disbursement ledger: pay displaced households through mobile money and prove where
/// every franc went.
#[derive(Debug, Parser)]
#[command(name = "cva", version, about)]
pub struct Cli {
    /// Database: sqlite://FILE (default sqlite://cva.db, created if missing) or
    /// postgres://USER@HOST/DB. `cva demo` uses its own fresh SQLite file unless this is given.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,

    /// More log output on stderr (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

/// The embedded default: a SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://cva.db";

impl Cli {
    pub fn database_url(&self) -> &str {
        self.database_url.as_deref().unwrap_or(DEFAULT_DATABASE_URL)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply the database migrations (every other command also applies them first).
    Migrate,
    /// Post, reverse and read journal entries and balances.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Read and verify the hash-chained audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Run the whole cycle on a fresh SQLite database with fixture households, and leave reports.
    Demo(DemoArgs),
    /// Serve the HTTP API (needs CVA_JWT_SECRET or --jwt-secret-file).
    Serve(ServeArgs),
    /// Manage users from the command line (bootstrap the first admin).
    #[command(subcommand)]
    User(UserCommand),
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// File holding the token signing secret (else the CVA_JWT_SECRET environment variable).
    #[arg(long)]
    pub jwt_secret_file: Option<PathBuf>,
    /// Lifetime of access tokens, in minutes.
    #[arg(long, default_value_t = 15)]
    pub token_ttl_minutes: i64,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user; the password is read from standard input (one line).
    Add {
        #[arg(long)]
        username: String,
        /// admin, programme_officer, finance_officer or auditor (repeatable).
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// Limit the user to these programmes (repeatable; none means all).
        #[arg(long = "programme")]
        programmes: Vec<String>,
        /// Read the password from standard input (required: passwords never go on the command line).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// List users.
    List,
}

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Folder for the demo database and its reports (replaced if it holds an earlier demo).
    #[arg(long, default_value = "cva-demo")]
    pub dir: PathBuf,
    /// Number of fixture households to use (at most the fixture size, 3000).
    #[arg(long, default_value_t = 3000)]
    pub households: usize,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Table,
    Csv,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ExportFormat {
    /// ledger / hledger journal syntax.
    Ledger,
    /// One JSON object per entry per line.
    Jsonl,
}

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Post an entry from a JSON file (`-` for standard input); prints the entry id.
    Post {
        #[arg(long)]
        file: PathBuf,
    },
    /// Post many entries from a JSON array file, all or nothing; prints one id per line.
    PostMany {
        #[arg(long)]
        file: PathBuf,
    },
    /// Reverse a posted entry (posts its mirror image, linked to it); prints the reversal's id.
    Reverse {
        entry_id: String,
        #[arg(long)]
        reason: String,
    },
    /// Show one entry with its lines.
    Show { entry_id: String },
    /// Balance of one account, now or as of a time (RFC 3339, or a date meaning its end, UTC).
    Balance {
        account: String,
        #[arg(long)]
        as_of: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Every account's debits, credits and balance (debits − credits), with totals per currency.
    TrialBalance {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// List accounts with their type, currency and balance rule.
    Accounts {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Open an account explicitly (otherwise accounts open on first use; see README).
    Open {
        account: String,
        #[arg(long)]
        currency: String,
        /// asset, liability, fund, income or expense (defaults to the code's root).
        #[arg(long = "type")]
        account_type: Option<String>,
        /// must_not_go_negative or may_overdraw (defaults to the opening policy).
        #[arg(long)]
        rule: Option<String>,
    },
    /// Write the whole journal (default: ledger/hledger syntax) to a file or standard output.
    Export {
        #[arg(long, value_enum, default_value_t = ExportFormat::Ledger)]
        format: ExportFormat,
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Recompute every balance from the lines and check every entry; exit 1 on any problem.
    Verify,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the hash chain; exit 1 naming the first event deleted, reordered or edited.
    Verify {
        /// Head recorded earlier (`SEQ:HASH`, printed by a previous verify): also detects a
        /// deleted or rewritten tail, which the chain alone cannot.
        #[arg(long)]
        expect_head: Option<cva_ledger::audit::AuditAnchor>,
    },
    /// List events, oldest first, with filters and paging.
    List {
        #[arg(long)]
        actor: Option<String>,
        /// e.g. ledger.post, ledger.reverse, ledger.open_account
        #[arg(long)]
        action: Option<String>,
        /// e.g. entry, account
        #[arg(long)]
        object_type: Option<String>,
        #[arg(long)]
        object_id: Option<String>,
        /// Events at or after this time (RFC 3339, or a date meaning its start, UTC).
        #[arg(long)]
        from: Option<String>,
        /// Events before this time (RFC 3339, or a date meaning its start, UTC).
        #[arg(long)]
        to: Option<String>,
        /// Only events after this sequence number (the next page).
        #[arg(long, default_value_t = 0)]
        after_seq: i64,
        /// At most this many events (1 to 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

pub fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CVA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
