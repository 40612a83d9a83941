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

    /// Payment providers and approval bands: a JSON file (see the README). Batch and provider
    /// commands (and the server's batch routes) need it.
    #[arg(long, env = "CVA_PAYMENTS_CONFIG", global = true, value_name = "FILE")]
    pub payments_config: Option<PathBuf>,

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
    /// Programmes: budget lines, funding, exchange rates, transfer-value rules.
    #[command(subcommand)]
    Programmes(ProgrammeCommand),
    /// Households: import from Kobo/ODK exports, list, verify, suspend, withdraw.
    #[command(subcommand)]
    Households(HouseholdCommand),
    /// Possible duplicates waiting for a decision.
    #[command(subcommand)]
    Flags(FlagCommand),
    /// Entitlements: generate a cycle, list a household's, cancel one.
    #[command(subcommand)]
    Entitlements(EntitlementCommand),
    /// Cash-for-work attendance sheets.
    #[command(subcommand)]
    Cfw(CfwCommand),
    /// Shelter construction milestones (reported by one person, verified by another).
    #[command(subcommand)]
    Milestones(MilestoneCommand),
    /// Deterministic test data.
    #[command(subcommand)]
    Fixtures(FixturesCommand),
    /// Run the GSMA Mobile Money API v1.2 disbursement simulator (for tests and demos).
    ProviderSim(ProviderSimArgs),
    /// Payment batches: create, submit, sign off, send and follow them, as an authenticated user.
    Batches(BatchesArgs),
    /// Payment providers: float balances, and funding a float, as an authenticated user.
    Providers(ProvidersArgs),
    /// Provider statements: import, reconcile against the payments, read runs, as an
    /// authenticated user.
    Statements(StatementsArgs),
    /// The reconciliation exceptions queue: list, show, assign, comment, resolve, and
    /// adjusting entries (proposed by one finance officer, approved by another), as an
    /// authenticated user.
    Exceptions(ExceptionsArgs),
    /// Reports for auditors (budget, household, trial balance, journal, reconciliation) with
    /// their SHA-256, and verification of a report file, as an authenticated user.
    Reports(crate::commands::reports::ReportsArgs),
}

/// Who a batch or provider command acts as. The password comes from `CVA_PASSWORD`, else one
/// line of standard input; it is checked as the API's login checks it.
#[derive(Debug, clap::Args)]
pub struct ActAs {
    /// The user to act as (a user of `cva user add`); the role matrix is the API's.
    #[arg(long = "user", env = "CVA_USER", global = true, value_name = "NAME")]
    pub user: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct BatchesArgs {
    #[command(flatten)]
    pub act_as: ActAs,
    #[command(subcommand)]
    pub command: BatchCommand,
}

#[derive(Debug, clap::Args)]
pub struct StatementsArgs {
    #[command(flatten)]
    pub act_as: ActAs,
    #[command(subcommand)]
    pub command: StatementCommand,
}

#[derive(Debug, Subcommand)]
pub enum StatementCommand {
    /// Import a provider's statement (CSV): every row is checked first and a bad file changes
    /// nothing; a file already imported (same SHA-256) is refused.
    Import {
        /// A configured provider.
        #[arg(long)]
        provider: String,
        #[arg(long)]
        file: std::path::PathBuf,
        /// `simulator`, `generic`, or a JSON mapping file.
        #[arg(long, default_value = "generic")]
        mapping: String,
        #[arg(long, value_enum, default_value_t = ShowFormat::Table)]
        format: ShowFormat,
    },
    /// A statement and its reconciliation runs (every role).
    Show {
        id: i64,
        #[arg(long, value_enum, default_value_t = ShowFormat::Table)]
        format: ShowFormat,
    },
    /// Reconcile a statement against the payments: match, post what the statement settles
    /// (unknown lines it shows paid or failed, reversals), reconcile the float, open the
    /// exceptions. Safe to repeat (finance_officer).
    Reconcile {
        id: i64,
        /// The fallback rule's time window (payee, amount and date), hours.
        #[arg(long, default_value_t = 72)]
        window_hours: i64,
        #[arg(long, value_enum, default_value_t = ShowFormat::Table)]
        format: ShowFormat,
    },
    /// A reconciliation run: summary, float reconciliation, and its items (every role).
    Run {
        id: i64,
        /// Only items of this category (e.g. amount_mismatch); `all` for every item.
        #[arg(long, default_value = "exceptions")]
        items: String,
        /// Most items to show.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long, value_enum, default_value_t = ShowFormat::Table)]
        format: ShowFormat,
    },
}

#[derive(Debug, clap::Args)]
pub struct ExceptionsArgs {
    #[command(flatten)]
    pub act_as: ActAs,
    #[command(subcommand)]
    pub command: ExceptionCommand,
}

/// The exceptions queue. Every role reads; finance officers act (an adjustment is approved or
/// rejected by another finance officer than its proposer).
#[derive(Debug, Subcommand)]
pub enum ExceptionCommand {
    /// Exceptions, oldest first (every role).
    List {
        /// open, assigned, awaiting_approval or resolved.
        #[arg(long)]
        status: Option<String>,
        /// Only this statement's exceptions.
        #[arg(long)]
        statement: Option<i64>,
        /// Only exceptions assigned to this user.
        #[arg(long)]
        assignee: Option<String>,
        /// Only this category, e.g. amount_mismatch.
        #[arg(long)]
        category: Option<String>,
        /// Only exceptions with a greater id (the last id of the previous page).
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// 1 to 1000.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long, value_enum, default_value_t = ShowFormat::Table)]
        format: ShowFormat,
    },
    /// An exception with its history and adjustments (every role).
    Show {
        id: i64,
        #[arg(long, value_enum, default_value_t = ShowFormat::Table)]
        format: ShowFormat,
    },
    /// Assign an exception to a finance officer (finance_officer).
    Assign {
        id: i64,
        /// The user who works it (an enabled finance officer).
        #[arg(long)]
        to: String,
        #[arg(long, value_enum, default_value_t = ShowFormat::Table)]
        format: ShowFormat,
    },
    /// Add a note to an exception's history (finance_officer).
    Comment {
        id: i64,
        #[arg(long)]
        note: String,
        #[arg(long, value_enum, default_value_t = ShowFormat::Table)]
        format: ShowFormat,
    },
    /// Resolve an exception without moving money; the note says why. Final (finance_officer).
    Resolve {
        id: i64,
        #[arg(long)]
        note: String,
        #[arg(long, value_enum, default_value_t = ShowFormat::Table)]
        format: ShowFormat,
    },
    /// Propose the adjusting entry that settles an exception; another finance officer must
    /// approve it before anything is posted (finance_officer).
    ProposeAdjustment {
        id: i64,
        #[arg(long)]
        description: String,
        /// ACCOUNT:debit|credit:AMOUNT, the amount in major units of the exception's currency
        /// (e.g. expense:fees:orange-money:debit:500); repeat for each line.
        #[arg(long = "line", required = true, value_name = "ACCOUNT:SIDE:AMOUNT")]
        lines: Vec<String>,
        #[arg(long, value_enum, default_value_t = ShowFormat::Table)]
        format: ShowFormat,
    },
    /// Approve an adjustment: posts its entry and resolves the exception (finance_officer;
    /// not its proposer).
    ApproveAdjustment {
        /// The adjustment's id.
        id: i64,
        /// Becomes the exception's resolution.
        #[arg(long)]
        note: Option<String>,
        #[arg(long, value_enum, default_value_t = ShowFormat::Table)]
        format: ShowFormat,
    },
    /// Reject an adjustment; nothing is posted and the exception is open again
    /// (finance_officer; not its proposer).
    RejectAdjustment {
        /// The adjustment's id.
        id: i64,
        #[arg(long)]
        note: String,
        #[arg(long, value_enum, default_value_t = ShowFormat::Table)]
        format: ShowFormat,
    },
}

#[derive(Debug, clap::Args)]
pub struct ProvidersArgs {
    #[command(flatten)]
    pub act_as: ActAs,
    #[command(subcommand)]
    pub command: ProviderCommand,
}

/// Human-readable table, or JSON.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ShowFormat {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum BatchCommand {
    /// Build draft batches from a programme's due entitlements (programme_officer).
    Create {
        #[arg(long)]
        programme: String,
        /// mpca, cash_for_work or shelter.
        #[arg(long)]
        modality: Option<String>,
        #[arg(long)]
        cycle: Option<String>,
        /// Region p-code of the households, e.g. ML05.
        #[arg(long)]
        region: Option<String>,
        /// Only this provider's households.
        #[arg(long)]
        provider: Option<String>,
        /// Most lines per batch (1 to 100,000; default 10,000).
        #[arg(long)]
        max_lines: Option<usize>,
        #[arg(long, value_enum, default_value_t = ShowFormat::Table)]
        format: ShowFormat,
    },
    /// Submit a draft for sign-off (programme_officer; the preparer only).
    Submit {
        id: i64,
        #[arg(long, value_enum, default_value_t = ShowFormat::Table)]
        format: ShowFormat,
    },
    /// Approve a submitted batch (finance_officer; not the preparer, not twice).
    Approve {
        id: i64,
        #[arg(long, value_enum, default_value_t = ShowFormat::Table)]
        format: ShowFormat,
    },
    /// Authorise an approved batch (finance_officer; not the preparer, not twice).
    Authorise {
        id: i64,
        #[arg(long, value_enum, default_value_t = ShowFormat::Table)]
        format: ShowFormat,
    },
    /// Release an authorised batch: moves its money to the provider's in-transit account
    /// (finance_officer; refused when the float cannot cover it).
    Release {
        id: i64,
        #[arg(long, value_enum, default_value_t = ShowFormat::Table)]
        format: ShowFormat,
    },
    /// Send a released batch to its provider and wait for the outcomes, or resume a send
    /// (finance_officer).
    Send {
        id: i64,
        /// Time limit of each HTTP call to the provider, seconds.
        #[arg(long, default_value_t = 30)]
        timeout_secs: u64,
        /// Pause between two polls of the provider, milliseconds.
        #[arg(long, default_value_t = 1000)]
        poll_ms: u64,
        /// How long to wait for every line's outcome before the rest are `unknown`, seconds.
        #[arg(long, default_value_t = 600)]
        settle_secs: u64,
        /// Most lines per request to the provider.
        #[arg(long, default_value_t = 5000)]
        lines_per_request: usize,
        #[arg(long, value_enum, default_value_t = ShowFormat::Table)]
        format: ShowFormat,
    },
    /// Batches, newest first (every role; the user's programmes only).
    List {
        #[arg(long)]
        programme: Option<String>,
        /// draft, submitted, approved, authorised, released, sending, completed,
        /// partially_completed, failed or cancelled.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long, value_enum, default_value_t = ShowFormat::Table)]
        format: ShowFormat,
    },
    /// A batch: its sign-offs, lines by status and provider attempts (every role).
    Show {
        id: i64,
        #[arg(long, value_enum, default_value_t = ShowFormat::Table)]
        format: ShowFormat,
    },
    /// A batch's lines, without personal data (the household is its id) (every role). Tables
    /// and CSV show amounts in major units, JSON in minor units (as the API).
    Lines {
        id: i64,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Cancel a batch not yet released; its entitlements are due again (programme_officer).
    Cancel {
        id: i64,
        #[arg(long)]
        reason: String,
        #[arg(long, value_enum, default_value_t = ShowFormat::Table)]
        format: ShowFormat,
    },
    /// For a provider that takes files: write the released batch's bulk-payment CSV (records
    /// the attempt; exporting again writes the same file) (finance_officer). The file holds
    /// phone numbers: hand it to the provider only.
    Export {
        id: i64,
        /// Where to write the CSV.
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// For a provider that takes files: import its result file
    /// (`reference,status,provider_transaction_id,reason`); every row is checked first and a
    /// bad file changes nothing (finance_officer).
    ImportResults {
        id: i64,
        #[arg(long)]
        file: std::path::PathBuf,
        #[arg(long, value_enum, default_value_t = ShowFormat::Table)]
        format: ShowFormat,
    },
    /// Ask the provider about every completed line and book those it has reversed since
    /// (finance_officer).
    CheckReversals { id: i64 },
    /// A follow-up draft for a sent batch's failed lines (programme_officer).
    Reissue {
        id: i64,
        #[arg(long, value_enum, default_value_t = ShowFormat::Table)]
        format: ShowFormat,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProviderCommand {
    /// Each configured provider's float, in-transit and fee balances (every role).
    List {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Record the transfer that funds a provider's float (finance_officer; idempotent by
    /// reference).
    Fund {
        #[arg(long)]
        provider: String,
        /// Major units, e.g. 5000000.
        #[arg(long)]
        amount: String,
        /// The asset account the money leaves, e.g. assets:bank or assets:bank:ecobank.
        #[arg(long)]
        from: String,
        /// The transfer's reference.
        #[arg(long)]
        reference: String,
        #[arg(long, value_enum, default_value_t = ShowFormat::Table)]
        format: ShowFormat,
    },
}

#[derive(Debug, clap::Args)]
pub struct ProviderSimArgs {
    /// Address to listen on (port 0: any free port; the URL is printed).
    #[arg(long, default_value = "127.0.0.1:8089")]
    pub listen: std::net::SocketAddr,
    /// Seed: the same seed and the same requests give the same outcomes.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Faults as `name=rate,…` (rates 0 to 1), e.g.
    /// `lost_response=0.2,timeout_after_commit=0.05,status_503=0.1,stuck_pending=0,reverse_later=0.01`.
    #[arg(long, default_value = "")]
    pub faults: String,
    /// The one currency the simulated provider pays in.
    #[arg(long, default_value = "XOF")]
    pub currency: String,
    /// Opening float, major units.
    #[arg(long, default_value = "100000000")]
    pub float: rust_decimal::Decimal,
    /// Flat fee per completed payment, major units.
    #[arg(long, default_value = "0")]
    pub fee: rust_decimal::Decimal,
    /// Environment variable holding the token clients must send (unset: no check).
    #[arg(long)]
    pub api_key_env: Option<String>,
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
    // sqlx reports statements slower than 1 s at warn, with their full text: bulk inserts are
    // long and expected to take time, so those reports are kept for `-vv` only.
    let level = match verbose {
        0 => "warn,sqlx::query=error",
        1 => "info,sqlx::query=error",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CVA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[derive(Debug, Subcommand)]
pub enum ProgrammeCommand {
    /// Create a programme.
    Create {
        #[arg(long)]
        code: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        donor: String,
        /// The donor's grant reference.
        #[arg(long)]
        grant: String,
        /// ISO 4217 code of the programme's currency (e.g. XOF).
        #[arg(long)]
        currency: String,
        /// ISO 4217 code donors report in (e.g. EUR).
        #[arg(long)]
        reporting_currency: String,
        /// First day, YYYY-MM-DD.
        #[arg(long)]
        starts: chrono::NaiveDate,
        /// Last day, YYYY-MM-DD.
        #[arg(long)]
        ends: chrono::NaiveDate,
        /// Region p-code (repeatable), e.g. ML05.
        #[arg(long = "region", required = true)]
        regions: Vec<String>,
    },
    /// List programmes.
    List {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Add a budget line (opens its fund account `funds:PROGRAMME:LINE`).
    BudgetLine {
        #[arg(long)]
        programme: String,
        #[arg(long)]
        code: String,
        /// mpca, cash_for_work or shelter.
        #[arg(long)]
        modality: String,
        /// Planned amount, e.g. 250000000.
        #[arg(long)]
        amount: String,
    },
    /// Show the budget lines with what is funded, committed and available (from the ledger).
    Budget {
        #[arg(long)]
        programme: String,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Record donor money received for a budget line (idempotent per reference).
    Fund {
        #[arg(long)]
        programme: String,
        #[arg(long)]
        line: String,
        #[arg(long)]
        amount: String,
        /// The donor transfer's reference.
        #[arg(long)]
        reference: String,
        /// Value date, YYYY-MM-DD (default: today).
        #[arg(long)]
        date: Option<chrono::NaiveDate>,
    },
    /// Record an exchange rate to the reporting currency.
    Rate {
        #[arg(long)]
        programme: String,
        #[arg(long)]
        date: chrono::NaiveDate,
        /// Reporting units per programme unit, e.g. 0.001524.
        #[arg(long)]
        rate: String,
        #[arg(long)]
        source: String,
    },
    /// Add a new version of a transfer-value rule from a JSON file.
    Rule {
        #[arg(long)]
        programme: String,
        #[arg(long)]
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum HouseholdCommand {
    /// Import a Kobo/ODK CSV export: all or nothing; bad rows are listed with row, column and reason.
    Import {
        #[arg(long)]
        programme: String,
        #[arg(long)]
        file: PathBuf,
        /// A `field,column` CSV naming the columns of another layout.
        #[arg(long)]
        mapping: Option<PathBuf>,
        /// Check everything, duplicates included, and write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// List a programme's households (personal data masked unless --reveal).
    List {
        #[arg(long)]
        programme: String,
        /// registered, verified, suspended or withdrawn.
        #[arg(long)]
        status: Option<String>,
        /// Show names, phone numbers and IDs in full (audited access is the API's; the CLI is an operator tool).
        #[arg(long)]
        reveal: bool,
        #[arg(long, default_value_t = 1000)]
        limit: i64,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Verify a household (someone other than whoever enrolled it).
    Verify { id: i64 },
    /// Suspend a verified household.
    Suspend {
        id: i64,
        #[arg(long)]
        reason: String,
    },
    /// Reinstate a suspended household.
    Reinstate { id: i64 },
    /// Withdraw a household.
    Withdraw {
        id: i64,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum FlagCommand {
    /// List a programme's flags (open ones unless --all).
    List {
        #[arg(long)]
        programme: String,
        #[arg(long)]
        all: bool,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Decide a flag: --distinct, or --keep ID (the other household is withdrawn as a duplicate).
    Decide {
        id: i64,
        #[arg(long, conflicts_with = "keep")]
        distinct: bool,
        #[arg(long)]
        keep: Option<i64>,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum EntitlementCommand {
    /// Create the cycle's entitlements (idempotent; refused whole if the budget would be exceeded).
    Generate {
        #[arg(long)]
        programme: String,
        #[arg(long)]
        cycle: String,
        /// mpca, cash_for_work or shelter.
        #[arg(long, default_value = "mpca")]
        modality: String,
        /// Effective date of the entries (default: today).
        #[arg(long)]
        date: Option<chrono::NaiveDate>,
    },
    /// A household's entitlements.
    List {
        #[arg(long)]
        household: i64,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Cancel an entitlement (posts the reversal of its entry).
    Cancel {
        id: i64,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum FixturesCommand {
    /// Write households.csv (Kobo layout, with planted duplicates), households-bad.csv and its
    /// expected errors, attendance.csv, milestones.csv and manifest.json.
    Generate {
        #[arg(long, default_value_t = 1000)]
        households: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum CfwCommand {
    /// Record the days worked in a cycle from an attendance sheet
    /// (`household_id,worker,date,site,present`); all or nothing.
    ImportAttendance {
        #[arg(long)]
        programme: String,
        #[arg(long)]
        cycle: String,
        /// First day of the cycle, YYYY-MM-DD.
        #[arg(long)]
        from: chrono::NaiveDate,
        /// Last day of the cycle, YYYY-MM-DD.
        #[arg(long)]
        to: chrono::NaiveDate,
        #[arg(long)]
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum MilestoneCommand {
    /// Report a milestone reached by a household (e.g. foundation, walls, roof).
    Report {
        #[arg(long)]
        household: i64,
        #[arg(long)]
        milestone: String,
        /// Date observed, YYYY-MM-DD (default: today).
        #[arg(long)]
        on: Option<chrono::NaiveDate>,
    },
    /// Verify a reported milestone (not the person who reported it).
    Verify {
        #[arg(long)]
        household: i64,
        #[arg(long)]
        milestone: String,
    },
    /// A household's milestones.
    List {
        #[arg(long)]
        household: i64,
    },
}
