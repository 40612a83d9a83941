//! PostgreSQL backend: row locks in id order, `COPY` for large batches and `UNNEST` for small
//! ones, totals and balance checks done by the statement-level triggers of the migration.

use std::fmt::Write as _;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use futures::stream::{BoxStream, StreamExt};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Row, Transaction};
use uuid::Uuid;

use super::{group_journal, refusal, Backend, JournalRow, TxHook, VerifyReport, WriteSet};
use crate::account::{Account, AccountCode, AccountSpec};
use crate::audit::{self, AuditContext, Pending};
use crate::entry::{EntryId, IdempotencyKey, PostedEntry};
use crate::error::{LedgerError, Result};
use crate::posting::{AccountState, Snapshot};
use crate::scope::Scope;

/// Batches at least this large go through `COPY`; smaller ones through one `INSERT … UNNEST`
/// (one round trip, lower latency).
const COPY_THRESHOLD: usize = 256;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

#[derive(Debug, Clone)]
pub struct PgBackend {
    pub(crate) pool: PgPool,
}

const ACCOUNT_COLUMNS: &str =
    "id, code, account_type, currency, balance_rule, debit_total, credit_total";

impl PgBackend {
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)?.application_name("cva");
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(std::time::Duration::from_secs(30))
            // No ping before each checkout: it doubles the round trips of a short request. A
            // connection that died is discarded by the pool when its next query fails, and the
            // caller's transaction (if any) rolls back; nothing is half-written.
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        Ok(PgBackend { pool })
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
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO accounts (code, account_type, normal_side, currency, balance_rule) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (code) DO NOTHING",
        )
        .bind(spec.code.as_str())
        .bind(spec.account_type.as_str())
        .bind(spec.account_type.normal_side().as_db())
        .bind(spec.currency.code())
        .bind(spec.rule.as_str())
        .execute(&mut *tx)
        .await
        .map_err(refusal)?
        .rows_affected()
            == 1;
        if let (true, Some(ctx)) = (inserted, audit) {
            Self::append_audit(&mut tx, &[audit::account_pending(ctx, spec)]).await?;
        }
        let row = sqlx::query(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE code = $1"
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
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE code = $1"
        ))
        .bind(code.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(account_from_row).transpose()
    }

    pub async fn accounts(&self, scope: &Scope) -> Result<Vec<Account>> {
        let (cond, params) = scope.sql(true, 1);
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
            "{JOURNAL_SELECT} WHERE e.id = $1 ORDER BY l.line_no"
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
            sqlx::query_scalar("SELECT id FROM journal_entries WHERE idempotency_key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
        Ok(id.map(EntryId))
    }

    pub async fn totals_as_of(&self, account_id: i64, t: DateTime<Utc>) -> Result<(i64, i64)> {
        let row = sqlx::query(
            "SELECT COALESCE(SUM(amount) FILTER (WHERE side = 'D'), 0)::int8, \
                    COALESCE(SUM(amount) FILTER (WHERE side = 'C'), 0)::int8 \
             FROM journal_lines WHERE account_id = $1 AND recorded_at <= $2",
        )
        .bind(account_id)
        .bind(t)
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
        // Whole-table checks: hash joins, whatever the statistics say. Without statistics (a new
        // database, autovacuum not run yet) the planner would pick nested loops and take minutes.
        let mut conn = self.pool.begin().await?;
        sqlx::query("SET LOCAL enable_nestloop = off")
            .execute(&mut *conn)
            .await?;
        let report = self.verify_in(&mut conn).await;
        conn.rollback().await?;
        report
    }

    async fn verify_in(&self, conn: &mut sqlx::PgConnection) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        let mismatched = sqlx::query(
            "SELECT a.code, a.debit_total, a.credit_total, COALESCE(s.d, 0)::int8, COALESCE(s.c, 0)::int8 \
             FROM accounts a LEFT JOIN ( \
               SELECT account_id, SUM(CASE WHEN side = 'D' THEN amount ELSE 0 END) AS d, \
                                  SUM(CASE WHEN side = 'C' THEN amount ELSE 0 END) AS c \
               FROM journal_lines GROUP BY account_id) s ON s.account_id = a.id \
             WHERE a.debit_total <> COALESCE(s.d, 0) OR a.credit_total <> COALESCE(s.c, 0) \
             ORDER BY a.code LIMIT 100",
        )
        .fetch_all(&mut *conn)
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
                .fetch_all(&mut *conn)
                .await?
            {
                report.problems.push(what.replace("{}", &id.to_string()));
            }
        }
        report.accounts_checked = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM accounts")
            .fetch_one(&mut *conn)
            .await? as u64;
        report.entries_checked =
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM journal_entries")
                .fetch_one(&mut *conn)
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

fn journal_row(r: &sqlx::postgres::PgRow) -> Result<JournalRow> {
    let metadata: serde_json::Value = r.try_get(5)?;
    Ok(JournalRow {
        id: EntryId(r.try_get(0)?),
        key: r.try_get(1)?,
        description: r.try_get(2)?,
        effective_date: r.try_get::<NaiveDate, _>(3)?,
        recorded_at: r.try_get(4)?,
        metadata,
        reverses: r.try_get::<Option<Uuid>, _>(6)?.map(EntryId),
        account: r.try_get(7)?,
        side: r.try_get(8)?,
        amount: r.try_get(9)?,
        currency: r.try_get(10)?,
    })
}

fn account_from_row(r: &sqlx::postgres::PgRow) -> Result<Account> {
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

impl Backend for PgBackend {
    type Tx = Transaction<'static, Postgres>;

    async fn begin_write(&self) -> Result<Self::Tx> {
        Ok(self.pool.begin().await?)
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
        // Lock first, in id order, so that concurrent writers queue instead of deadlocking.
        let rows = sqlx::query(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE code = ANY($1) ORDER BY id FOR UPDATE"
        ))
        .bind(codes)
        .fetch_all(&mut **tx)
        .await?;
        for r in &rows {
            let a = account_from_row(r)?;
            snap.accounts.insert(a.code.clone(), AccountState::from(a));
        }
        let rows = sqlx::query(
            "SELECT idempotency_key, id, content_digest FROM journal_entries \
             WHERE idempotency_key = ANY($1)",
        )
        .bind(keys)
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
        if !reverses.is_empty() {
            let rows =
                sqlx::query("SELECT reverses, id FROM journal_entries WHERE reverses = ANY($1)")
                    .bind(reverses)
                    .fetch_all(&mut **tx)
                    .await?;
            for r in &rows {
                snap.already_reversed
                    .insert(EntryId(r.try_get(0)?), EntryId(r.try_get(1)?));
            }
        }
        Ok(snap)
    }

    async fn open_accounts<'a>(
        tx: &'a mut Self::Tx,
        specs: &'a [AccountSpec],
        at: DateTime<Utc>,
    ) -> Result<Vec<(String, i64)>> {
        let codes: Vec<&str> = specs.iter().map(|s| s.code.as_str()).collect();
        let types: Vec<&str> = specs.iter().map(|s| s.account_type.as_str()).collect();
        let sides: Vec<&str> = specs
            .iter()
            .map(|s| s.account_type.normal_side().as_db())
            .collect();
        let currencies: Vec<&str> = specs.iter().map(|s| s.currency.code()).collect();
        let rules: Vec<&str> = specs.iter().map(|s| s.rule.as_str()).collect();
        let rows = sqlx::query(
            "INSERT INTO accounts (code, account_type, normal_side, currency, balance_rule, opened_at) \
             SELECT c, t, s, cur, r, $6 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) \
               AS x(c, t, s, cur, r) \
             RETURNING code, id",
        )
        .bind(&codes)
        .bind(&types)
        .bind(&sides)
        .bind(&currencies)
        .bind(&rules)
        .bind(at)
        .fetch_all(&mut **tx)
        .await
        .map_err(refusal)?;
        // A plain INSERT: if another writer opened one of these accounts after our snapshot,
        // the unique violation fails this attempt and the posting is retried on fresh state.
        if rows.len() != specs.len() {
            return Err(LedgerError::Contention);
        }
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    async fn write<'a>(tx: &'a mut Self::Tx, w: &'a WriteSet) -> Result<()> {
        if w.e_id.len() >= COPY_THRESHOLD {
            // The checking triggers aggregate the whole batch (hash aggregates over the
            // transition tables); with the default 4 MB they spill to disk above ~20,000 lines.
            // Raised for this transaction only.
            sqlx::query("SET LOCAL work_mem = '64MB'")
                .execute(&mut **tx)
                .await?;
            copy_lines(tx, w).await?;
            copy_entries(tx, w).await?;
        } else {
            sqlx::query(
                "INSERT INTO journal_lines (entry_id, line_no, line_count, account_id, side, amount, currency, recorded_at) \
                 SELECT e, n, c, a, s, m, cur, $8 FROM UNNEST($1::uuid[], $2::int2[], $3::int2[], $4::int8[], $5::text[], $6::int8[], $7::text[]) \
                   AS t(e, n, c, a, s, m, cur)",
            )
            .bind(&w.l_entry)
            .bind(&w.l_no)
            .bind(&w.l_count)
            .bind(&w.l_account)
            .bind(&w.l_side)
            .bind(&w.l_amount)
            .bind(&w.l_currency)
            .bind(w.recorded_at)
            .execute(&mut **tx)
            .await
            .map_err(refusal)?;
            sqlx::query(
                "INSERT INTO journal_entries (id, idempotency_key, content_digest, description, effective_date, recorded_at, metadata, line_count, reverses) \
                 SELECT i, k, d, ds, ed, $6, md::jsonb, lc, r FROM UNNEST($1::uuid[], $2::text[], $3::bytea[], $4::text[], $5::date[], $7::text[], $8::int2[], $9::uuid[]) \
                   AS t(i, k, d, ds, ed, md, lc, r)",
            )
            .bind(&w.e_id)
            .bind(&w.e_key)
            .bind(&w.e_digest)
            .bind(&w.e_description)
            .bind(&w.e_date)
            .bind(w.recorded_at)
            .bind(&w.e_metadata)
            .bind(&w.e_line_count)
            .bind(&w.e_reverses)
            .execute(&mut **tx)
            .await
            .map_err(refusal)?;
        }
        Ok(())
    }

    async fn append_audit<'a>(tx: &'a mut Self::Tx, events: &'a [Pending]) -> Result<()> {
        audit::pg_append(tx, events).await.map(drop)
    }

    async fn run_hook<'a>(
        tx: &'a mut Self::Tx,
        hook: &'a dyn TxHook,
        posted: &'a [(usize, EntryId)],
    ) -> Result<()> {
        hook.postgres(tx, posted).await
    }
}

/// Escapes a value for COPY's text format.
fn copy_text(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

const COPY_CHUNK: usize = 1 << 20;

async fn copy_lines(tx: &mut Transaction<'static, Postgres>, w: &WriteSet) -> Result<()> {
    let at = w.recorded_at.to_rfc3339();
    let mut copy = tx
        .copy_in_raw(
            "COPY journal_lines (entry_id, line_no, line_count, account_id, side, amount, currency, recorded_at) FROM STDIN",
        )
        .await?;
    let mut buf = String::with_capacity(COPY_CHUNK + 1024);
    for i in 0..w.l_entry.len() {
        let _ = writeln!(
            buf,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            w.l_entry[i],
            w.l_no[i],
            w.l_count[i],
            w.l_account[i],
            w.l_side[i],
            w.l_amount[i],
            w.l_currency[i],
            at
        );
        if buf.len() >= COPY_CHUNK {
            copy.send(std::mem::take(&mut buf).into_bytes()).await?;
            buf.reserve(COPY_CHUNK + 1024);
        }
    }
    if !buf.is_empty() {
        copy.send(buf.into_bytes()).await?;
    }
    copy.finish().await.map_err(refusal)?;
    Ok(())
}

async fn copy_entries(tx: &mut Transaction<'static, Postgres>, w: &WriteSet) -> Result<()> {
    let at = w.recorded_at.to_rfc3339();
    let mut copy = tx
        .copy_in_raw(
            "COPY journal_entries (id, idempotency_key, content_digest, description, effective_date, recorded_at, metadata, line_count, reverses) FROM STDIN",
        )
        .await?;
    let mut buf = String::with_capacity(COPY_CHUNK + 4096);
    for i in 0..w.e_id.len() {
        let _ = write!(buf, "{}\t", w.e_id[i]);
        copy_text(&mut buf, &w.e_key[i]);
        let _ = write!(buf, "\t\\\\x{}\t", hex::encode(&w.e_digest[i]));
        copy_text(&mut buf, &w.e_description[i]);
        let _ = write!(buf, "\t{}\t{}\t", w.e_date[i], at);
        copy_text(&mut buf, &w.e_metadata[i]);
        let _ = write!(buf, "\t{}\t", w.e_line_count[i]);
        match w.e_reverses[i] {
            Some(r) => {
                let _ = writeln!(buf, "{r}");
            }
            None => buf.push_str("\\N\n"),
        }
        if buf.len() >= COPY_CHUNK {
            copy.send(std::mem::take(&mut buf).into_bytes()).await?;
            buf.reserve(COPY_CHUNK + 4096);
        }
    }
    if !buf.is_empty() {
        copy.send(buf.into_bytes()).await?;
    }
    copy.finish().await.map_err(refusal)?;
    Ok(())
}
