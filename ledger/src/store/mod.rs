//! The ledger service over a database: [`Ledger`] connects to PostgreSQL or SQLite, applies
//! migrations, posts entries (single, atomic batch, or independent group commit), reverses,
//! and reads balances, the trial balance and the journal.
//!
//! ```no_run
//! # async fn demo() -> Result<(), cva_ledger::LedgerError> {
//! use cva_ledger::{Ledger, entry::NewEntry};
//! let ledger = Ledger::connect("sqlite://cva.db").await?;
//! ledger.migrate().await?;
//! let entry = NewEntry::from_json(r#"{"idempotency_key":"k","description":"d","effective_date":"2024-03-01",
//!   "lines":[{"account":"assets:bank","side":"debit","amount":"5","currency":"XOF"},
//!            {"account":"funds:p:l","side":"credit","amount":"5","currency":"XOF"}]}"#)?;
//! let posting = ledger.post(entry).await?;
//! # Ok(()) }
//! ```
//!
//! Every write follows the same steps on both backends (see [`Backend`]): begin a write
//! transaction, lock the touched accounts in id order and read their totals and the
//! idempotency keys already used, [`plan`](crate::posting::plan) in Rust, open the accounts the
//! accepted entries need, write lines then headers set-wise (the database re-checks balance and
//! maintains totals), append the audit events of the entries written when the call is audited
//! (`*_audited`, see [`crate::audit`]), commit. Deadlocks, serialization failures and races on a key or an
//! account are retried a bounded number of times; they never reach the caller as such.

mod postgres;
mod sqlite;

pub(crate) use sqlite::multi_insert;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use futures::stream::BoxStream;
use serde::Serialize;

use crate::account::{Account, AccountCode, AccountSpec, OpeningPolicy};
use crate::audit::{
    self, AuditAnchor, AuditContext, AuditEvent, AuditQuery, AuditVerification, EntryAudit, Pending,
};
use crate::entry::{EntryId, IdempotencyKey, Line, NewEntry, PostedEntry};
use crate::error::{LedgerError, Result};
use crate::money::{Amount, Currency};
use crate::posting::{plan, AccountState, BatchMode, Posting, Snapshot};
use crate::scope::Scope;

pub use postgres::PgBackend;
pub use sqlite::SqliteBackend;

const MAX_ATTEMPTS: u32 = 8;

/// Column-wise rows to insert, built once and shipped by each backend in its own way.
#[derive(Debug, Default)]
pub struct WriteSet {
    pub recorded_at: DateTime<Utc>,
    pub e_id: Vec<uuid::Uuid>,
    pub e_key: Vec<String>,
    pub e_digest: Vec<Vec<u8>>,
    pub e_description: Vec<String>,
    pub e_date: Vec<NaiveDate>,
    pub e_metadata: Vec<String>,
    pub e_line_count: Vec<i16>,
    pub e_reverses: Vec<Option<uuid::Uuid>>,
    pub l_entry: Vec<uuid::Uuid>,
    pub l_no: Vec<i16>,
    pub l_count: Vec<i16>,
    pub l_account: Vec<i64>,
    pub l_side: Vec<&'static str>,
    pub l_amount: Vec<i64>,
    pub l_currency: Vec<&'static str>,
}

/// What a backend must provide; the posting algorithm itself lives here, once.
pub trait Backend: Send + Sync {
    type Tx: Send;
    fn begin_write(&self) -> impl Future<Output = Result<Self::Tx>> + Send;
    fn commit(tx: Self::Tx) -> impl Future<Output = Result<()>> + Send;
    /// Reads used keys, existing reversals, and locks and reads the named accounts in id order.
    fn snapshot<'a>(
        tx: &'a mut Self::Tx,
        keys: &'a [&'a str],
        reverses: &'a [uuid::Uuid],
        codes: &'a [&'a str],
    ) -> impl Future<Output = Result<Snapshot>> + Send + 'a;
    /// Opens accounts; returns their ids, or `LedgerError::Contention` when another writer
    /// opened one of them first.
    fn open_accounts<'a>(
        tx: &'a mut Self::Tx,
        specs: &'a [AccountSpec],
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<(String, i64)>>> + Send + 'a;
    fn write<'a>(
        tx: &'a mut Self::Tx,
        rows: &'a WriteSet,
    ) -> impl Future<Output = Result<()>> + Send + 'a;
    /// Appends audit events at the head of the chain (see [`crate::audit`]).
    fn append_audit<'a>(
        tx: &'a mut Self::Tx,
        events: &'a [Pending],
    ) -> impl Future<Output = Result<()>> + Send + 'a;
    /// Runs a caller's [`TxHook`] inside the posting transaction.
    fn run_hook<'a>(
        tx: &'a mut Self::Tx,
        hook: &'a dyn TxHook,
        posted: &'a [(usize, EntryId)],
    ) -> impl Future<Output = Result<()>> + Send + 'a;
}

/// Work that must commit or roll back together with a posting: rows of other modules that
/// record what the entries mean (an entitlement, a batch line). Called once per attempt (a
/// retried posting calls it again in the new transaction), after the entries are written and
/// before the audit events; `posted` holds, for each entry written by this call, its index in
/// the input and its id (replayed entries are not listed). An error rolls everything back.
pub trait TxHook: Send + Sync {
    fn postgres<'a>(
        &'a self,
        conn: &'a mut sqlx::PgConnection,
        posted: &'a [(usize, EntryId)],
    ) -> futures::future::BoxFuture<'a, Result<()>>;
    fn sqlite<'a>(
        &'a self,
        conn: &'a mut sqlx::SqliteConnection,
        posted: &'a [(usize, EntryId)],
    ) -> futures::future::BoxFuture<'a, Result<()>>;
}

/// A ledger's pool, by backend (see [`Ledger::pool`]).
#[derive(Debug, Clone, Copy)]
pub enum PoolRef<'a> {
    Postgres(&'a sqlx::PgPool),
    Sqlite(&'a sqlx::SqlitePool),
}

/// The ledger, on one of the two backends.
#[derive(Debug, Clone)]
pub struct Ledger {
    db: Db,
    policy: OpeningPolicy,
}

#[derive(Debug, Clone)]
enum Db {
    Postgres(PgBackend),
    Sqlite(SqliteBackend),
}

/// Dispatches to the backend with the same code for both.
macro_rules! with_backend {
    ($self:expr, $b:ident => $body:expr) => {
        match &$self.db {
            Db::Postgres($b) => $body,
            Db::Sqlite($b) => $body,
        }
    };
}

/// One account's balance, on its normal side, now or as of a time.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct Balance {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub account: AccountCode,
    pub account_type: crate::account::AccountType,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub currency: Currency,
    #[serde(serialize_with = "ser_minor")]
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub debits: Amount,
    #[serde(serialize_with = "ser_minor")]
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub credits: Amount,
    /// Balance on the normal side (positive = the account holds/owes what its type says).
    pub balance: String,
    pub as_of: Option<DateTime<Utc>>,
}

fn ser_minor<S: serde::Serializer>(a: &Amount, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&a.number())
}

/// Trial balance: every account's totals, and per-currency totals that must net to zero.
#[derive(Debug, Clone, Serialize)]
pub struct TrialBalance {
    pub accounts: Vec<Account>,
    pub totals: Vec<CurrencyTotal>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CurrencyTotal {
    pub currency: Currency,
    pub debits: i128,
    pub credits: i128,
}

impl TrialBalance {
    pub fn is_balanced(&self) -> bool {
        self.totals.iter().all(|t| t.debits == t.credits)
    }
}

/// What `verify` found: empty when the stored totals equal the sum of the lines and every entry
/// is complete and balanced.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub problems: Vec<String>,
    pub accounts_checked: u64,
    pub entries_checked: u64,
}

impl Ledger {
    /// Connects to `sqlite://FILE` (created if missing) or `postgres://…`.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, 16).await
    }

    pub async fn connect_with(url: &str, max_connections: u32) -> Result<Self> {
        let db = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Db::Postgres(PgBackend::connect(url, max_connections).await?)
        } else if url.starts_with("sqlite:") {
            Db::Sqlite(SqliteBackend::connect(url).await?)
        } else {
            return Err(LedgerError::UnsupportedUrl(redact_url(url)));
        };
        Ok(Ledger {
            db,
            policy: OpeningPolicy::default(),
        })
    }

    pub fn backend_name(&self) -> &'static str {
        match self.db {
            Db::Postgres(_) => "postgres",
            Db::Sqlite(_) => "sqlite",
        }
    }

    pub fn policy(&self) -> &OpeningPolicy {
        &self.policy
    }

    /// The pool of whichever backend this ledger uses: what [`write_tx!`](crate::write_tx)
    /// and [`read_pool!`](crate::read_pool) dispatch on.
    pub fn pool(&self) -> PoolRef<'_> {
        match &self.db {
            Db::Postgres(b) => PoolRef::Postgres(&b.pool),
            Db::Sqlite(b) => PoolRef::Sqlite(&b.pool),
        }
    }

    /// The PostgreSQL pool, for tools (benchmarks) that need raw access.
    pub fn pg_pool(&self) -> Option<&sqlx::PgPool> {
        match &self.db {
            Db::Postgres(b) => Some(&b.pool),
            Db::Sqlite(_) => None,
        }
    }

    pub fn sqlite_pool(&self) -> Option<&sqlx::SqlitePool> {
        match &self.db {
            Db::Sqlite(b) => Some(&b.pool),
            Db::Postgres(_) => None,
        }
    }

    #[tracing::instrument(skip(self), fields(backend = self.backend_name()))]
    pub async fn migrate(&self) -> Result<()> {
        with_backend!(self, b => b.migrate().await)
    }

    /// Opens an account. Opening an existing account with the same settings returns it; with
    /// other settings it is an error.
    #[tracing::instrument(skip(self), fields(account = %spec.code))]
    pub async fn open_account(&self, spec: AccountSpec) -> Result<Account> {
        with_backend!(self, b => b.open_account(&spec, None).await)
    }

    /// [`open_account`](Self::open_account), writing a `ledger.open_account` audit event
    /// (object: the account code) in the same transaction when the account is new. Opening an
    /// existing account changes nothing and writes no event.
    #[tracing::instrument(skip(self, audit), fields(account = %spec.code))]
    pub async fn open_account_audited(
        &self,
        spec: AccountSpec,
        audit: &AuditContext,
    ) -> Result<Account> {
        audit.validate()?;
        with_backend!(self, b => b.open_account(&spec, Some(audit)).await)
    }

    pub async fn account(&self, code: &AccountCode) -> Result<Option<Account>> {
        with_backend!(self, b => b.account(code).await)
    }

    /// All accounts, ordered by currency then code.
    pub async fn accounts(&self) -> Result<Vec<Account>> {
        self.accounts_in(&Scope::All).await
    }

    /// The accounts `scope` admits (see [`crate::scope`]), filtered in the query.
    pub async fn accounts_in(&self, scope: &Scope) -> Result<Vec<Account>> {
        with_backend!(self, b => b.accounts(scope).await)
    }

    /// [`balance`](Self::balance) of an account `scope` admits; others are "unknown".
    pub async fn balance_in(
        &self,
        scope: &Scope,
        code: &AccountCode,
        as_of: Option<DateTime<Utc>>,
    ) -> Result<Balance> {
        if !scope.admits(code) {
            return Err(LedgerError::UnknownAccount(code.to_string()));
        }
        self.balance(code, as_of).await
    }

    /// Refuses an entry that touches an account outside `scope` (checked before posting).
    pub fn check_scope(scope: &Scope, entry: &NewEntry) -> Result<()> {
        match scope.first_outside(entry) {
            Some(a) => Err(LedgerError::OutOfScope(a.to_string())),
            None => Ok(()),
        }
    }

    /// [`entry`](Self::entry), if every line is inside `scope`; otherwise "not found".
    pub async fn entry_in(&self, scope: &Scope, id: EntryId) -> Result<PostedEntry> {
        let entry = self.entry(id).await?;
        if scope.admits_entry(&entry) {
            Ok(entry)
        } else {
            Err(LedgerError::EntryNotFound(id))
        }
    }

    /// Posts one entry. Same key and content as an earlier post returns the original entry.
    pub async fn post(&self, entry: NewEntry) -> Result<Posting> {
        self.post_one(entry, None).await
    }

    /// [`post`](Self::post), writing a `ledger.post` audit event (object: the new entry, change:
    /// [`audit::entry_change`]) in the same transaction. A refused entry or an idempotent replay
    /// changes nothing and writes no event.
    pub async fn post_audited(&self, entry: NewEntry, audit: &AuditContext) -> Result<Posting> {
        audit.validate()?;
        let audit = EntryAudit::new(audit, "ledger.post", &entry);
        self.post_one(entry, Some(audit)).await
    }

    async fn post_one(&self, entry: NewEntry, audit: Option<EntryAudit<'_>>) -> Result<Posting> {
        let mut out = self
            .post_batch(std::slice::from_ref(&entry), BatchMode::Atomic, &[audit])
            .await;
        match out {
            Ok(ref mut v) if v.len() == 1 => v.remove(0),
            Ok(_) => Err(LedgerError::Corrupt("post returned no outcome".into())),
            Err(LedgerError::BatchRejected { source, .. }) => Err(*source),
            Err(e) => Err(e),
        }
    }

    /// Posts many entries atomically: all are written, or none is and the error names the
    /// first refused entry (`BatchRejected { index, .. }`).
    #[tracing::instrument(skip_all, fields(entries = entries.len()))]
    pub async fn post_many(&self, entries: &[NewEntry]) -> Result<Vec<Posting>> {
        let out = self.post_batch(entries, BatchMode::Atomic, &[]).await?;
        out.into_iter().collect()
    }

    /// [`post_many`](Self::post_many), writing one `ledger.post` audit event per entry written
    /// (object: that entry), all with the context's request id, in the same transaction. One
    /// event per entry keeps "who posted entry X" a lookup by object, whatever the batch size.
    #[tracing::instrument(skip_all, fields(entries = entries.len()))]
    pub async fn post_many_audited(
        &self,
        entries: &[NewEntry],
        audit: &AuditContext,
    ) -> Result<Vec<Posting>> {
        audit.validate()?;
        let audits: Vec<Option<EntryAudit>> = entries
            .iter()
            .map(|e| Some(EntryAudit::new(audit, "ledger.post", e)))
            .collect();
        let out = self.post_batch(entries, BatchMode::Atomic, &audits).await?;
        out.into_iter().collect()
    }

    /// Posts entries that stand alone: each is accepted or refused on its own, in order,
    /// in one transaction (group commit).
    #[tracing::instrument(skip_all, fields(entries = entries.len()))]
    pub async fn post_independent(&self, entries: &[NewEntry]) -> Result<Vec<Result<Posting>>> {
        self.post_batch(entries, BatchMode::Independent, &[]).await
    }

    /// Posts a batch; `audits` is empty (no audit) or holds, for each entry, how it is audited
    /// if it is written.
    /// [`post_many_audited`](Self::post_many_audited), also running `hook` in the same
    /// transaction (see [`TxHook`]): all entries, the hook's rows and the audit events commit
    /// together or not at all.
    #[tracing::instrument(skip_all, fields(entries = entries.len()))]
    pub async fn post_many_with(
        &self,
        entries: &[NewEntry],
        audit: &AuditContext,
        hook: &dyn TxHook,
    ) -> Result<Vec<Posting>> {
        audit.validate()?;
        let audits: Vec<Option<EntryAudit>> = entries
            .iter()
            .map(|e| Some(EntryAudit::new(audit, "ledger.post", e)))
            .collect();
        let out = self
            .post_batch_with(entries, BatchMode::Atomic, &audits, Some(hook))
            .await?;
        out.into_iter().collect()
    }

    /// Posts entries atomically with `hook` in the same transaction and no per-entry audit
    /// event: for bulk operations whose hook records one event for the whole batch (e.g. an
    /// entitlement cycle, whose event's change lists every entry).
    #[tracing::instrument(skip_all, fields(entries = entries.len()))]
    pub async fn post_many_hooked(
        &self,
        entries: &[NewEntry],
        hook: &dyn TxHook,
    ) -> Result<Vec<Posting>> {
        let out = self
            .post_batch_with(entries, BatchMode::Atomic, &[], Some(hook))
            .await?;
        out.into_iter().collect()
    }

    pub(crate) async fn post_batch(
        &self,
        entries: &[NewEntry],
        mode: BatchMode,
        audits: &[Option<EntryAudit<'_>>],
    ) -> Result<Vec<Result<Posting>>> {
        self.post_batch_with(entries, mode, audits, None).await
    }

    async fn post_batch_with(
        &self,
        entries: &[NewEntry],
        mode: BatchMode,
        audits: &[Option<EntryAudit<'_>>],
        hook: Option<&dyn TxHook>,
    ) -> Result<Vec<Result<Posting>>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let digests = content_digests(entries);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = with_backend!(self, b => post_attempt(b, &self.policy, entries, &digests, mode, audits, hook).await);
            match result {
                Err(e) if e.is_retryable() && attempt < MAX_ATTEMPTS => {
                    tracing::debug!(attempt, error = %e, "retrying posting transaction");
                    let backoff = 2u64.pow(attempt.min(6)) + (rand_jitter() % 5);
                    tokio::time::sleep(Duration::from_millis(backoff)).await;
                }
                other => return other,
            }
        }
    }

    /// Posts the mirror of `entry_id` (every line on the other side), linked to it. An entry
    /// can be reversed once, and a reversal cannot itself be reversed. Balance rules apply: a
    /// grant that was already paid out cannot be reversed.
    #[tracing::instrument(skip(self, reason))]
    pub async fn reverse(&self, entry_id: EntryId, reason: &str) -> Result<Posting> {
        self.reverse_inner(entry_id, reason, None).await
    }

    /// [`reverse`](Self::reverse), writing a `ledger.reverse` audit event in the same
    /// transaction. Its object is the reversal (the entry written), whose change names the
    /// reversed entry (`reverses`) and carries the reason in its metadata.
    #[tracing::instrument(skip(self, reason, audit))]
    pub async fn reverse_audited(
        &self,
        entry_id: EntryId,
        reason: &str,
        audit: &AuditContext,
    ) -> Result<Posting> {
        audit.validate()?;
        self.reverse_inner(entry_id, reason, Some(audit)).await
    }

    async fn reverse_inner(
        &self,
        entry_id: EntryId,
        reason: &str,
        audit: Option<&AuditContext>,
    ) -> Result<Posting> {
        let reason = reason.trim();
        if reason.is_empty() || reason.chars().count() > 500 {
            return Err(
                crate::entry::EntryError::field("reason", "must be 1 to 500 characters").into(),
            );
        }
        let original = self.entry(entry_id).await?;
        if original.reverses.is_some() {
            return Err(LedgerError::ReversalOfReversal(entry_id));
        }
        let lines = original
            .lines
            .iter()
            .map(|l| Line {
                account: l.account.clone(),
                side: l.side.opposite(),
                amount: l.amount,
            })
            .collect();
        let mut metadata = serde_json::Map::new();
        metadata.insert("reverses".into(), entry_id.to_string().into());
        metadata.insert("reason".into(), reason.into());
        let key = IdempotencyKey::parse(&format!("reversal:{entry_id}"))?;
        let mut entry = NewEntry::new(
            key,
            format!("Reversal: {}", truncate(&original.description, 400)),
            Utc::now().date_naive(),
            metadata,
            lines,
        )?;
        entry.reverses = Some(entry_id);
        let audit = audit.map(|ctx| EntryAudit::new(ctx, "ledger.reverse", &entry));
        match self.post_one(entry, audit).await {
            // The reversal key is derived from the entry, so a second reversal with another
            // reason or on another day lands here; report it as what it is.
            Err(LedgerError::IdempotencyConflict { existing, .. }) => {
                Err(LedgerError::AlreadyReversed {
                    entry: entry_id,
                    reversal: existing,
                })
            }
            Ok(Posting::Replayed(existing)) => Err(LedgerError::AlreadyReversed {
                entry: entry_id,
                reversal: existing,
            }),
            other => other,
        }
    }

    pub async fn entry(&self, id: EntryId) -> Result<PostedEntry> {
        with_backend!(self, b => b.entry(id).await)?.ok_or(LedgerError::EntryNotFound(id))
    }

    /// The entry posted under an idempotency key, if any.
    pub async fn entry_by_key(&self, key: &IdempotencyKey) -> Result<Option<PostedEntry>> {
        let id = with_backend!(self, b => b.entry_id_by_key(key.as_str()).await)?;
        match id {
            Some(id) => self.entry(id).await.map(Some),
            None => Ok(None),
        }
    }

    /// Balance of one account now (from the stored totals) or as of a recorded time (from the
    /// lines recorded at or before it).
    pub async fn balance(
        &self,
        code: &AccountCode,
        as_of: Option<DateTime<Utc>>,
    ) -> Result<Balance> {
        let account = self
            .account(code)
            .await?
            .ok_or_else(|| LedgerError::UnknownAccount(code.to_string()))?;
        let (debits, credits) = match as_of {
            None => (account.debits, account.credits),
            Some(t) => with_backend!(self, b => b.totals_as_of(account.id, t).await)?,
        };
        let cur = account.currency;
        let bal = crate::account::normal_balance(account.account_type, debits, credits);
        Ok(Balance {
            account: account.code,
            account_type: account.account_type,
            currency: cur,
            debits: Amount::from_minor(debits, cur),
            credits: Amount::from_minor(credits, cur),
            balance: i64::try_from(bal)
                .map(|m| Amount::from_minor(m, cur).number())
                .unwrap_or_else(|_| bal.to_string()),
            as_of,
        })
    }

    pub async fn trial_balance(&self) -> Result<TrialBalance> {
        let accounts = self.accounts().await?;
        let mut totals: Vec<CurrencyTotal> = Vec::new();
        for a in &accounts {
            match totals.iter_mut().find(|t| t.currency == a.currency) {
                Some(t) => {
                    t.debits += i128::from(a.debits);
                    t.credits += i128::from(a.credits);
                }
                None => totals.push(CurrencyTotal {
                    currency: a.currency,
                    debits: i128::from(a.debits),
                    credits: i128::from(a.credits),
                }),
            }
        }
        totals.sort_by_key(|t| t.currency);
        Ok(TrialBalance { accounts, totals })
    }

    /// Every entry with its lines, oldest first, streamed (memory stays bounded).
    pub fn journal(&self) -> BoxStream<'_, Result<PostedEntry>> {
        with_backend!(self, b => b.journal())
    }

    /// Recomputes every account's totals from its lines and checks every entry is complete and
    /// balanced, comparing with what is stored.
    pub async fn verify(&self) -> Result<VerifyReport> {
        with_backend!(self, b => b.verify().await)
    }

    /// Audit events matching the query's filters, oldest first, one page (see [`AuditQuery`]).
    pub async fn audit_events(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>> {
        query.validate()?;
        match &self.db {
            Db::Postgres(b) => audit::pg_page(&b.pool, query).await,
            Db::Sqlite(b) => audit::sqlite_page(&b.pool, query).await,
        }
    }

    /// Walks the whole audit trail in `seq` order (streaming) and reports the first event that
    /// was deleted, reordered or edited. A truncated tail is not detectable this way; see
    /// [`verify_audit_anchored`](Self::verify_audit_anchored).
    pub async fn verify_audit(&self) -> Result<AuditVerification> {
        self.verify_audit_anchored(None).await
    }

    /// [`verify_audit`](Self::verify_audit), also requiring the trail to reach a head recorded
    /// earlier (`anchor`) with the same hash: this catches a deleted tail and a rewritten one.
    pub async fn verify_audit_anchored(
        &self,
        anchor: Option<&AuditAnchor>,
    ) -> Result<AuditVerification> {
        let rows = match &self.db {
            Db::Postgres(b) => audit::pg_scan(&b.pool),
            Db::Sqlite(b) => audit::sqlite_scan(&b.pool),
        };
        audit::verify_chain(rows, anchor).await
    }

    pub async fn close(&self) {
        with_backend!(self, b => b.close().await)
    }
}

/// Each entry's content digest (canonical JSON, SHA-256), on all cores for large batches (for
/// 100,000 entries this is a few hundred milliseconds of CPU).
fn content_digests(entries: &[NewEntry]) -> Vec<[u8; 32]> {
    crate::parallel::map_ordered(entries, 10_000, NewEntry::content_digest)
}

async fn post_attempt<B: Backend>(
    b: &B,
    policy: &OpeningPolicy,
    entries: &[NewEntry],
    digests: &[[u8; 32]],
    mode: BatchMode,
    audits: &[Option<EntryAudit<'_>>],
    hook: Option<&dyn TxHook>,
) -> Result<Vec<Result<Posting>>> {
    let t0 = std::time::Instant::now();
    let mut tx = b.begin_write().await?;
    let keys: Vec<&str> = entries.iter().map(|e| e.idempotency_key.as_str()).collect();
    let reverses: Vec<uuid::Uuid> = entries
        .iter()
        .filter_map(|e| e.reverses.map(|r| r.0))
        .collect();
    let codes: BTreeSet<&str> = entries
        .iter()
        .flat_map(|e| e.lines.iter().map(|l| l.account.as_str()))
        .collect();
    let codes: Vec<&str> = codes.into_iter().collect();
    let mut snapshot = B::snapshot(&mut tx, &keys, &reverses, &codes).await?;
    let t_snapshot = t0.elapsed();
    // Taken after the locks: writers to the same account are serialised, so its lines' recorded
    // times follow commit order and "balance as of" is stable.
    let recorded_at = now_micros();
    let planned = plan(entries, digests, &mut snapshot, policy, mode)?;
    let t_plan = t0.elapsed();
    if planned.inserts.is_empty() {
        // Nothing new (all replays or refusals): no write, nothing to commit.
        drop(tx);
        return Ok(planned.outcomes);
    }
    let mut ids: HashMap<&str, i64> = snapshot
        .accounts
        .iter()
        .filter_map(|(c, s)| s.id.map(|id| (c.as_str(), id)))
        .collect();
    if !planned.to_open.is_empty() {
        let specs: Vec<AccountSpec> = planned
            .to_open
            .iter()
            .filter_map(|c| {
                snapshot
                    .accounts
                    .get(c)
                    .map(|s: &AccountState| s.spec.clone())
            })
            .collect();
        let opened = B::open_accounts(&mut tx, &specs, recorded_at).await?;
        for (code, id) in opened {
            // `to_open` is sorted: a binary search keeps this linear in the batch size.
            if let Ok(i) = planned
                .to_open
                .binary_search_by(|c| c.as_str().cmp(code.as_str()))
            {
                ids.insert(planned.to_open[i].as_str(), id);
            }
        }
    }
    let t_open = t0.elapsed();
    let rows = write_set(entries, digests, &planned.inserts, &ids, recorded_at)?;
    B::write(&mut tx, &rows).await?;
    let t_rows = t0.elapsed();
    if let Some(hook) = hook {
        B::run_hook(&mut tx, hook, &planned.inserts).await?;
    }
    let t_hook = t0.elapsed();
    // Last before the commit: appending holds the audit lock until the transaction ends.
    let events: Vec<Pending> = planned
        .inserts
        .iter()
        .filter_map(|&(i, id)| audits.get(i)?.as_ref().map(|a| a.pending(id)))
        .collect();
    B::append_audit(&mut tx, &events).await?;
    let t_write = t0.elapsed();
    B::commit(tx).await?;
    tracing::debug!(
        entries = entries.len(),
        written = rows.e_id.len(),
        audited = events.len(),
        snapshot_ms = t_snapshot.as_millis() as u64,
        plan_ms = (t_plan - t_snapshot).as_millis() as u64,
        open_ms = (t_open - t_plan).as_millis() as u64,
        write_ms = (t_rows - t_open).as_millis() as u64,
        hook_ms = (t_hook - t_rows).as_millis() as u64,
        audit_ms = (t_write - t_hook).as_millis() as u64,
        commit_ms = (t0.elapsed() - t_write).as_millis() as u64,
        "posted batch"
    );
    Ok(planned.outcomes)
}

fn write_set(
    entries: &[NewEntry],
    digests: &[[u8; 32]],
    inserts: &[(usize, EntryId)],
    ids: &HashMap<&str, i64>,
    recorded_at: DateTime<Utc>,
) -> Result<WriteSet> {
    let n_lines: usize = inserts.iter().map(|(i, _)| entries[*i].lines.len()).sum();
    let mut w = WriteSet {
        recorded_at,
        ..WriteSet::default()
    };
    w.e_id.reserve(inserts.len());
    w.l_entry.reserve(n_lines);
    for &(i, id) in inserts {
        let e = &entries[i];
        let count = i16::try_from(e.lines.len())
            .map_err(|_| LedgerError::Corrupt("too many lines".into()))?;
        w.e_id.push(id.0);
        w.e_key.push(e.idempotency_key.as_str().to_owned());
        w.e_digest.push(digests[i].to_vec());
        w.e_description.push(e.description.clone());
        w.e_date.push(e.effective_date);
        w.e_metadata.push(
            serde_json::to_string(&e.metadata)
                .map_err(|err| LedgerError::Corrupt(format!("metadata: {err}")))?,
        );
        w.e_line_count.push(count);
        w.e_reverses.push(e.reverses.map(|r| r.0));
        for (n, l) in e.lines.iter().enumerate() {
            let account = *ids.get(l.account.as_str()).ok_or_else(|| {
                LedgerError::Corrupt(format!("account {} has no id after opening", l.account))
            })?;
            w.l_entry.push(id.0);
            w.l_no.push(n as i16 + 1);
            w.l_count.push(count);
            w.l_account.push(account);
            w.l_side.push(l.side.as_db());
            w.l_amount.push(l.amount.minor());
            w.l_currency.push(l.amount.currency().code());
        }
    }
    Ok(w)
}

/// Now, truncated to microseconds (what both databases store).
pub fn now_micros() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

fn rand_jitter() -> u64 {
    u64::from(Utc::now().timestamp_subsec_nanos())
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// Drops credentials from a URL before it goes into a message.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***{}", &url[..scheme], &url[at..])
        }
        _ => url.chars().take(80).collect(),
    }
}

/// Maps a database error raised by one of our own guards (messages start with `cva:`) or a
/// constraint to a refusal the caller can read; other errors stay storage errors.
pub(crate) fn refusal(e: sqlx::Error) -> LedgerError {
    if let sqlx::Error::Database(db) = &e {
        let msg = db.message();
        if let Some(pos) = msg.find("cva: ") {
            return LedgerError::Refused(msg[pos + 5..].to_owned());
        }
        if let Some(c) = db.constraint() {
            if c == "balance_rule_respected" {
                return LedgerError::Refused(
                    "balance rule: a must_not_go_negative account would go negative".into(),
                );
            }
        }
        if msg.contains("CHECK constraint failed") {
            return LedgerError::Refused(msg.to_owned());
        }
    }
    LedgerError::Database(e)
}

/// One row of the journal query: an entry's header repeated with each of its lines.
#[derive(Debug)]
pub(crate) struct JournalRow {
    pub id: EntryId,
    pub key: String,
    pub description: String,
    pub effective_date: NaiveDate,
    pub recorded_at: DateTime<Utc>,
    pub metadata: serde_json::Value,
    pub reverses: Option<EntryId>,
    pub account: String,
    pub side: String,
    pub amount: i64,
    pub currency: String,
}

impl JournalRow {
    fn line(&self) -> Result<crate::entry::PostedLine> {
        let currency = Currency::parse(self.currency.trim())
            .map_err(|e| LedgerError::Corrupt(e.to_string()))?;
        Ok(crate::entry::PostedLine {
            account: AccountCode::parse(&self.account)?,
            side: crate::account::Side::from_db(self.side.trim())
                .ok_or_else(|| LedgerError::Corrupt(format!("side {:?}", self.side)))?,
            amount: Amount::from_minor(self.amount, currency),
        })
    }

    fn into_entry(self) -> Result<PostedEntry> {
        let line = self.line()?;
        let metadata = match self.metadata {
            serde_json::Value::Object(m) => m,
            _ => return Err(LedgerError::Corrupt("metadata is not an object".into())),
        };
        Ok(PostedEntry {
            id: self.id,
            idempotency_key: IdempotencyKey::parse(&self.key)?,
            description: self.description,
            effective_date: self.effective_date,
            recorded_at: self.recorded_at,
            metadata,
            reverses: self.reverses,
            lines: vec![line],
        })
    }
}

/// Groups consecutive rows of the same entry into entries, keeping memory bounded.
pub(crate) fn group_journal<'a>(
    rows: BoxStream<'a, Result<JournalRow>>,
) -> BoxStream<'a, Result<PostedEntry>> {
    use futures::StreamExt;
    futures::stream::unfold(
        (rows, None::<PostedEntry>, false),
        |(mut rows, mut current, done)| async move {
            if done {
                return None;
            }
            loop {
                match rows.next().await {
                    Some(Ok(row)) => match current.as_mut() {
                        Some(c) if c.id == row.id => match row.line() {
                            Ok(l) => c.lines.push(l),
                            Err(e) => return Some((Err(e), (rows, None, true))),
                        },
                        _ => {
                            let next = match row.into_entry() {
                                Ok(e) => e,
                                Err(e) => return Some((Err(e), (rows, None, true))),
                            };
                            if let Some(finished) = current.replace(next) {
                                return Some((Ok(finished), (rows, current, false)));
                            }
                        }
                    },
                    Some(Err(e)) => return Some((Err(e), (rows, None, true))),
                    None => return current.map(|c| (Ok(c), (rows, None, true))),
                }
            }
        },
    )
    .boxed()
}

impl From<Account> for AccountState {
    fn from(a: Account) -> Self {
        AccountState {
            id: Some(a.id),
            spec: AccountSpec {
                code: a.code,
                account_type: a.account_type,
                currency: a.currency,
                rule: a.rule,
            },
            debits: a.debits,
            credits: a.credits,
        }
    }
}

pub(crate) fn account_from_parts(
    id: i64,
    code: String,
    account_type: String,
    currency: String,
    rule: String,
    debits: i64,
    credits: i64,
) -> Result<Account> {
    Ok(Account {
        id,
        code: AccountCode::parse(&code)?,
        account_type: crate::account::AccountType::parse(&account_type)?,
        currency: Currency::parse(currency.trim())
            .map_err(|e| LedgerError::Corrupt(e.to_string()))?,
        rule: crate::account::BalanceRule::parse(&rule)?,
        debits,
        credits,
    })
}

/// An explicit open of an existing account succeeds only if it asks for the same settings.
pub(crate) fn same_settings(account: Account, spec: &AccountSpec) -> Result<Account> {
    if account.account_type == spec.account_type
        && account.currency == spec.currency
        && account.rule == spec.rule
    {
        Ok(account)
    } else {
        Err(LedgerError::AccountExists {
            account: account.code.to_string(),
        })
    }
}
