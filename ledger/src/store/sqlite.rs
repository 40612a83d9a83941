//! SQLite backend (the embedded default): one writer at a time (`BEGIN IMMEDIATE`), WAL
//! journal with `synchronous = FULL`, multi-row inserts in chunks, row triggers that maintain
//! totals and check each entry as its header is inserted.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use futures::stream::{BoxStream, StreamExt};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, SqlitePool, Transaction};
use uuid::Uuid;

use super::{group_journal, refusal, Backend, JournalRow, TxHook, VerifyReport, WriteSet};
use crate::account::{Account, AccountCode, AccountSpec};
use crate::audit::{self, AuditContext, Pending};
use crate::entry::{EntryId, IdempotencyKey, PostedEntry};
use crate::error::{LedgerError, Result};
use crate::posting::{AccountState, Snapshot};
use crate::scope::Scope;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// Rows per multi-row INSERT (columns × rows stays well under SQLite's 32766 parameters).
const CHUNK_ROWS: usize = 1000;

const ACCOUNT_COLUMNS: &str =
    "id, code, account_type, currency, balance_rule, debit_total, credit_total";

#[derive(Debug, Clone)]
pub struct SqliteBackend {
    pub(crate) pool: SqlitePool,
}

impl SqliteBackend {
    pub async fn connect(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Money: a committed entry must survive a power cut, so FULL, not NORMAL.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true)
            // SQLite's default page cache is 2 MiB per connection: a bulk import or an
            // entitlement cycle touches far more pages than that, and a full cache spills dirty
            // pages to the WAL in the middle of the transaction and re-reads index pages from
            // the file. 64 MiB per connection (allocated only as used) keeps a 100,000-household
            // transaction in memory.
            .pragma("cache_size", "-65536")
            .pragma("temp_store", "memory");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            // An embedded file cannot drop the connection; the ping would only cost time.
            .test_before_acquire(false)
            // A task cancelled just after its BEGIN ran but before sqlx built the
            // `Transaction` (a cancellation race in sqlx 0.8) leaves the connection inside a
            // transaction nobody will end; reused, every later `BEGIN IMMEDIATE` on it fails.
            // Probe each released connection (the probe queues behind any pending rollback of
            // a dropped transaction) and close it if it is still inside one. Found by the
            // batches chaos test, which aborts senders at random points.
            .after_release(|conn, _meta| {
                Box::pin(async move {
                    match sqlx::Connection::begin_with(&mut *conn, "BEGIN DEFERRED").await {
                        Ok(probe) => {
                            probe.rollback().await?;
                            Ok(true)
                        }
                        Err(sqlx::Error::InvalidSavePointStatement) => Ok(false),
                        Err(e) => Err(e),
                    }
                })
            })
            .connect_with(options)
            .await?;
        Ok(SqliteBackend { pool })
    }

    pub async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await
    }

    pub async fn open_account(
        &self,
        spec: &AccountSpec,
        audit: Option<&AuditContext>,
    ) -> Result<Account> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let inserted = sqlx::query(
            "INSERT INTO accounts (code, account_type, normal_side, currency, balance_rule, opened_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (code) DO NOTHING",
        )
        .bind(spec.code.as_str())
        .bind(spec.account_type.as_str())
        .bind(spec.account_type.normal_side().as_db())
        .bind(spec.currency.code())
        .bind(spec.rule.as_str())
        .bind(super::now_micros().timestamp_micros())
        .execute(&mut *tx)
        .await
        .map_err(refusal)?
        .rows_affected()
            == 1;
        if let (true, Some(ctx)) = (inserted, audit) {
            Self::append_audit(&mut tx, &[audit::account_pending(ctx, spec)]).await?;
        }
        let row = sqlx::query(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE code = ?1"
        ))
        .bind(spec.code.as_str())
        .fetch_one(&mut *tx)
        .await?;
        let account = account_from_row(&row)?;
        tx.commit().await?;
        super::same_settings(account, spec)
    }

    pub async fn account(&self, code: &AccountCode) -> Result<Option<Account>> {
        let row = sqlx::query(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE code = ?1"
        ))
        .bind(code.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(account_from_row).transpose()
    }

    pub async fn accounts(&self, scope: &Scope) -> Result<Vec<Account>> {
        let (cond, params) = scope.sql(false, 1);
        let sql =
            format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE {cond} ORDER BY currency, code");
        let mut q = sqlx::query(&sql);
        for p in &params {
            q = q.bind(p.as_str());
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(account_from_row).collect()
    }

    pub async fn entry(&self, id: EntryId) -> Result<Option<PostedEntry>> {
        let rows = sqlx::query(&format!(
            "{JOURNAL_SELECT} WHERE e.id = ?1 ORDER BY l.line_no"
        ))
        .bind(id.0)
        .fetch_all(&self.pool)
        .await?;
        let rows: Vec<Result<JournalRow>> = rows.iter().map(journal_row).collect();
        let mut entries = group_journal(futures::stream::iter(rows).boxed());
        entries.next().await.transpose()
    }

    pub async fn entry_id_by_key(&self, key: &str) -> Result<Option<EntryId>> {
        let id: Option<Uuid> =
            sqlx::query_scalar("SELECT id FROM journal_entries WHERE idempotency_key = ?1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
        Ok(id.map(EntryId))
    }

    pub async fn totals_as_of(&self, account_id: i64, t: DateTime<Utc>) -> Result<(i64, i64)> {
        let row = sqlx::query(
            "SELECT COALESCE(SUM(CASE WHEN side = 'D' THEN amount END), 0), \
                    COALESCE(SUM(CASE WHEN side = 'C' THEN amount END), 0) \
             FROM journal_lines WHERE account_id = ?1 AND recorded_at <= ?2",
        )
        .bind(account_id)
        .bind(t.timestamp_micros())
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }

    pub fn journal(&self) -> BoxStream<'_, Result<PostedEntry>> {
        let rows = sqlx::query(JOURNAL_ORDERED)
            .fetch(&self.pool)
            .map(|r| {
                r.map_err(LedgerError::from)
                    .and_then(|row| journal_row(&row))
            })
            .boxed();
        group_journal(rows)
    }

    pub async fn verify(&self) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        let mismatched = sqlx::query(
            "SELECT a.code, a.debit_total, a.credit_total, COALESCE(s.d, 0), COALESCE(s.c, 0) \
             FROM accounts a LEFT JOIN ( \
               SELECT account_id, SUM(CASE WHEN side = 'D' THEN amount ELSE 0 END) AS d, \
                                  SUM(CASE WHEN side = 'C' THEN amount ELSE 0 END) AS c \
               FROM journal_lines GROUP BY account_id) s ON s.account_id = a.id \
             WHERE a.debit_total <> COALESCE(s.d, 0) OR a.credit_total <> COALESCE(s.c, 0) \
             ORDER BY a.code LIMIT 100",
        )
        .fetch_all(&self.pool)
        .await?;
        for r in mismatched {
            let code: String = r.try_get(0)?;
            report.problems.push(format!(
                "account {code}: stored totals D {} / C {} but its lines sum to D {} / C {}",
                r.try_get::<i64, _>(1)?,
                r.try_get::<i64, _>(2)?,
                r.try_get::<i64, _>(3)?,
                r.try_get::<i64, _>(4)?
            ));
        }
        let checks: [(&str, &str); 4] = [
            ("entry {} is unbalanced",
             "SELECT DISTINCT entry_id FROM journal_lines GROUP BY entry_id, currency \
              HAVING SUM(CASE side WHEN 'D' THEN amount ELSE -amount END) <> 0 LIMIT 100"),
            ("lines of entry {} have no entry header",
             "SELECT DISTINCT l.entry_id FROM journal_lines l \
              LEFT JOIN journal_entries e ON e.id = l.entry_id WHERE e.id IS NULL LIMIT 100"),
            ("entry {} does not have the number of lines its header declares",
             "SELECT e.id FROM journal_entries e LEFT JOIN ( \
                SELECT entry_id, count(*) AS n FROM journal_lines GROUP BY entry_id) c \
              ON c.entry_id = e.id WHERE COALESCE(c.n, 0) <> e.line_count LIMIT 100"),
            ("entry {} has a line on an unknown account or in another currency than its account",
             "SELECT DISTINCT l.entry_id FROM journal_lines l LEFT JOIN accounts a ON a.id = l.account_id \
              WHERE a.id IS NULL OR a.currency <> l.currency LIMIT 100"),
        ];
        for (what, sql) in checks {
            for id in sqlx::query_scalar::<_, Uuid>(sql)
                .fetch_all(&self.pool)
                .await?
            {
                report.problems.push(what.replace("{}", &id.to_string()));
            }
        }
        report.accounts_checked = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM accounts")
            .fetch_one(&self.pool)
            .await? as u64;
        report.entries_checked =
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM journal_entries")
                .fetch_one(&self.pool)
                .await? as u64;
        Ok(report)
    }
}

const JOURNAL_SELECT: &str = "SELECT e.id, e.idempotency_key, e.description, e.effective_date, \
     e.recorded_at, e.metadata, e.reverses, a.code, l.side, l.amount, l.currency \
     FROM journal_entries e JOIN journal_lines l ON l.entry_id = e.id \
     JOIN accounts a ON a.id = l.account_id";

const JOURNAL_ORDERED: &str = "SELECT e.id, e.idempotency_key, e.description, e.effective_date, \
     e.recorded_at, e.metadata, e.reverses, a.code, l.side, l.amount, l.currency \
     FROM journal_entries e JOIN journal_lines l ON l.entry_id = e.id \
     JOIN accounts a ON a.id = l.account_id ORDER BY e.id, l.line_no";

fn journal_row(r: &SqliteRow) -> Result<JournalRow> {
    let date: String = r.try_get(3)?;
    let micros: i64 = r.try_get(4)?;
    let metadata: String = r.try_get(5)?;
    Ok(JournalRow {
        id: EntryId(r.try_get(0)?),
        key: r.try_get(1)?,
        description: r.try_get(2)?,
        effective_date: NaiveDate::parse_from_str(&date, "%Y-%m-%d")
            .map_err(|_| LedgerError::Corrupt(format!("effective date {date:?}")))?,
        recorded_at: DateTime::from_timestamp_micros(micros)
            .ok_or_else(|| LedgerError::Corrupt(format!("recorded time {micros}")))?,
        metadata: serde_json::from_str(&metadata)
            .map_err(|_| LedgerError::Corrupt("metadata is not JSON".into()))?,
        reverses: r.try_get::<Option<Uuid>, _>(6)?.map(EntryId),
        account: r.try_get(7)?,
        side: r.try_get(8)?,
        amount: r.try_get(9)?,
        currency: r.try_get(10)?,
    })
}

fn account_from_row(r: &SqliteRow) -> Result<Account> {
    super::account_from_parts(
        r.try_get(0)?,
        r.try_get(1)?,
        r.try_get(2)?,
        r.try_get(3)?,
        r.try_get(4)?,
        r.try_get(5)?,
        r.try_get(6)?,
    )
}

/// `INSERT INTO table (cols) VALUES (?,…),(?,…)…` for `rows` rows.
pub(crate) fn multi_insert(head: &str, columns: usize, rows: usize) -> String {
    let one = format!("({})", vec!["?"; columns].join(","));
    let mut sql = String::with_capacity(head.len() + rows * (one.len() + 1));
    sql.push_str(head);
    sql.push_str(" VALUES ");
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(&one);
    }
    sql
}

impl Backend for SqliteBackend {
    type Tx = Transaction<'static, Sqlite>;

    async fn begin_write(&self) -> Result<Self::Tx> {
        // IMMEDIATE takes the write lock now, so two writers never both read then both try to
        // upgrade (which SQLite would refuse with SQLITE_BUSY mid-transaction).
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    async fn commit(tx: Self::Tx) -> Result<()> {
        tx.commit().await.map_err(refusal)
    }

    async fn snapshot<'a>(
        tx: &'a mut Self::Tx,
        keys: &'a [&'a str],
        reverses: &'a [Uuid],
        codes: &'a [&'a str],
    ) -> Result<Snapshot> {
        let mut snap = Snapshot::default();
        let codes_json =
            serde_json::to_string(codes).map_err(|e| LedgerError::Corrupt(e.to_string()))?;
        let rows = sqlx::query(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts \
             WHERE code IN (SELECT value FROM json_each(?1)) ORDER BY id"
        ))
        .bind(codes_json)
        .fetch_all(&mut **tx)
        .await?;
        for r in &rows {
            let a = account_from_row(r)?;
            snap.accounts.insert(a.code.clone(), AccountState::from(a));
        }
        let keys_json =
            serde_json::to_string(keys).map_err(|e| LedgerError::Corrupt(e.to_string()))?;
        let rows = sqlx::query(
            "SELECT idempotency_key, id, content_digest FROM journal_entries \
             WHERE idempotency_key IN (SELECT value FROM json_each(?1))",
        )
        .bind(keys_json)
        .fetch_all(&mut **tx)
        .await?;
        for r in &rows {
            let key: String = r.try_get(0)?;
            let digest: Vec<u8> = r.try_get(2)?;
            let digest: [u8; 32] = digest
                .try_into()
                .map_err(|_| LedgerError::Corrupt("content digest is not 32 bytes".into()))?;
            snap.existing_keys.insert(
                IdempotencyKey::parse(&key)?,
                (EntryId(r.try_get(1)?), digest),
            );
        }
        for target in reverses {
            let id: Option<Uuid> =
                sqlx::query_scalar("SELECT id FROM journal_entries WHERE reverses = ?1")
                    .bind(target)
                    .fetch_optional(&mut **tx)
                    .await?;
            if let Some(id) = id {
                snap.already_reversed.insert(EntryId(*target), EntryId(id));
            }
        }
        Ok(snap)
    }

    async fn open_accounts<'a>(
        tx: &'a mut Self::Tx,
        specs: &'a [AccountSpec],
        at: DateTime<Utc>,
    ) -> Result<Vec<(String, i64)>> {
        let mut out = Vec::with_capacity(specs.len());
        for chunk in specs.chunks(CHUNK_ROWS) {
            let mut sql = multi_insert(
                "INSERT INTO accounts (code, account_type, normal_side, currency, balance_rule, opened_at)",
                6,
                chunk.len(),
            );
            sql.push_str(" RETURNING code, id");
            let mut q = sqlx::query(&sql);
            for s in chunk {
                q = q
                    .bind(s.code.as_str())
                    .bind(s.account_type.as_str())
                    .bind(s.account_type.normal_side().as_db())
                    .bind(s.currency.code())
                    .bind(s.rule.as_str())
                    .bind(at.timestamp_micros());
            }
            for r in q.fetch_all(&mut **tx).await.map_err(refusal)? {
                out.push((r.try_get(0)?, r.try_get(1)?));
            }
        }
        Ok(out)
    }

    async fn write<'a>(tx: &'a mut Self::Tx, w: &'a WriteSet) -> Result<()> {
        let at = w.recorded_at.timestamp_micros();
        let n = w.l_entry.len();
        let mut start = 0;
        while start < n {
            let end = (start + CHUNK_ROWS).min(n);
            let sql = multi_insert(
                "INSERT INTO journal_lines (entry_id, line_no, line_count, account_id, side, amount, currency, recorded_at)",
                8,
                end - start,
            );
            let mut q = sqlx::query(&sql);
            for i in start..end {
                q = q
                    .bind(w.l_entry[i])
                    .bind(w.l_no[i])
                    .bind(w.l_count[i])
                    .bind(w.l_account[i])
                    .bind(w.l_side[i])
                    .bind(w.l_amount[i])
                    .bind(w.l_currency[i])
                    .bind(at);
            }
            q.execute(&mut **tx).await.map_err(refusal)?;
            start = end;
        }
        let n = w.e_id.len();
        let mut start = 0;
        while start < n {
            let end = (start + CHUNK_ROWS).min(n);
            let sql = multi_insert(
                "INSERT INTO journal_entries (id, idempotency_key, content_digest, description, effective_date, recorded_at, metadata, line_count, reverses)",
                9,
                end - start,
            );
            let mut q = sqlx::query(&sql);
            for i in start..end {
                q = q
                    .bind(w.e_id[i])
                    .bind(w.e_key[i].as_str())
                    .bind(w.e_digest[i].as_slice())
                    .bind(w.e_description[i].as_str())
                    .bind(w.e_date[i].to_string())
                    .bind(at)
                    .bind(w.e_metadata[i].as_str())
                    .bind(w.e_line_count[i])
                    .bind(w.e_reverses[i]);
            }
            q.execute(&mut **tx).await.map_err(refusal)?;
            start = end;
        }
        Ok(())
    }

    async fn append_audit<'a>(tx: &'a mut Self::Tx, events: &'a [Pending]) -> Result<()> {
        audit::sqlite_append(tx, events).await.map(drop)
    }

    async fn run_hook<'a>(
        tx: &'a mut Self::Tx,
        hook: &'a dyn TxHook,
        posted: &'a [(usize, EntryId)],
    ) -> Result<()> {
        hook.sqlite(tx, posted).await
    }
}
