//! Test support (feature `testing`): a fresh database per test — a SQLite file in a temp dir
//! by default, or a new PostgreSQL database when `CVA_TEST_DATABASE_URL=postgres://…` is set —
//! and small builders for entries. The same tests run on both backends this way.
//!
//! ```ignore
//! # async fn t() {
//! let db = cva_ledger::testing::TestDb::new().await;
//! db.ledger.post(cva_ledger::testing::transfer("k", "assets:bank", "funds:p:l", 5)).await.unwrap();
//! db.cleanup().await;
//! # }
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::atomic::{AtomicU32, Ordering};

use crate::account::{AccountCode, Side};
use crate::entry::{IdempotencyKey, Line, NewEntry};
use crate::money::{Amount, Currency};
use crate::Ledger;
use chrono::NaiveDate;
use sqlx::Connection;

static COUNTER: AtomicU32 = AtomicU32::new(0);

#[derive(Debug)]
pub struct TestDb {
    pub ledger: Ledger,
    pub url: String,
    db: FreshDatabase,
}

pub fn backend_url() -> Option<String> {
    std::env::var("CVA_TEST_DATABASE_URL")
        .ok()
        .filter(|s| !s.is_empty())
}

/// Replaces the database name of a postgres URL.
pub fn with_db_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    format!("{base}/{name}{query}")
}

/// A fresh, empty (not migrated) database for one test: its URL, dropped by `drop_database`.
#[derive(Debug)]
pub struct FreshDatabase {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

impl FreshDatabase {
    pub async fn create() -> FreshDatabase {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        match backend_url() {
            Some(admin) if admin.starts_with("postgres") => {
                let name = format!(
                    "cva_t_{}_{}_{}",
                    std::process::id(),
                    n,
                    &uuid::Uuid::now_v7().simple().to_string()[24..]
                );
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .expect("connect to CVA_TEST_DATABASE_URL");
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                conn.close().await.ok();
                FreshDatabase {
                    url: with_db_name(&admin, &name),
                    _dir: None,
                    pg: Some((admin, name)),
                }
            }
            _ => {
                let dir = tempfile::tempdir().expect("tempdir");
                FreshDatabase {
                    url: format!("sqlite://{}", dir.path().join("test.db").display()),
                    _dir: Some(dir),
                    pg: None,
                }
            }
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.pg.is_some()
    }

    pub async fn drop_database(self) {
        if let Some((admin, name)) = self.pg {
            if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await;
            }
        }
    }
}

impl TestDb {
    pub async fn new() -> TestDb {
        Self::with_pool(8).await
    }

    pub async fn with_pool(max_connections: u32) -> TestDb {
        let db = FreshDatabase::create().await;
        let ledger = Ledger::connect_with(&db.url, max_connections)
            .await
            .expect("connect");
        ledger.migrate().await.expect("migrate");
        TestDb {
            url: db.url.clone(),
            ledger,
            db,
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.db.is_postgres()
    }

    /// Runs raw SQL statements in one transaction, as a stray client would; returns the
    /// database's error message if it refused.
    pub async fn raw(&self, statements: &[&str]) -> Result<(), String> {
        if let Some(pool) = self.ledger.pg_pool() {
            let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
            for s in statements {
                sqlx::query(s)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            tx.commit().await.map_err(|e| e.to_string())
        } else if let Some(pool) = self.ledger.sqlite_pool() {
            let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
            for s in statements {
                sqlx::query(s)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            tx.commit().await.map_err(|e| e.to_string())
        } else {
            Err("no backend".into())
        }
    }

    /// Drops the per-test PostgreSQL database (SQLite files go with the temp dir).
    pub async fn cleanup(self) {
        self.ledger.close().await;
        self.db.drop_database().await;
    }
}

pub fn xof() -> Currency {
    Currency::parse("XOF").expect("XOF")
}

pub fn usd() -> Currency {
    Currency::parse("USD").expect("USD")
}

pub fn date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 3, 1).expect("date")
}

/// Builds an entry from `(account, side, minor, currency)` lines.
pub fn entry(key: &str, lines: &[(&str, Side, i64, Currency)]) -> NewEntry {
    try_entry(key, "test entry", lines).expect("valid entry")
}

pub fn try_entry(
    key: &str,
    description: &str,
    lines: &[(&str, Side, i64, Currency)],
) -> Result<NewEntry, crate::entry::EntryError> {
    NewEntry::new(
        IdempotencyKey::parse(key)?,
        description.to_owned(),
        date(),
        serde_json::Map::new(),
        lines
            .iter()
            .map(|(a, s, m, c)| Line {
                account: AccountCode::parse(a).expect("account code"),
                side: *s,
                amount: Amount::from_minor(*m, *c),
            })
            .collect(),
    )
}

/// A two-line XOF transfer: debit `dr`, credit `cr`.
pub fn transfer(key: &str, dr: &str, cr: &str, minor: i64) -> NewEntry {
    entry(
        key,
        &[
            (dr, Side::Debit, minor, xof()),
            (cr, Side::Credit, minor, xof()),
        ],
    )
}

/// Normal-side balance of an account, as minor units (0 if it does not exist).
pub async fn bal(ledger: &Ledger, code: &str) -> i128 {
    ledger
        .account(&AccountCode::parse(code).expect("code"))
        .await
        .expect("read account")
        .map_or(0, |a| a.balance())
}

pub async fn entry_count(ledger: &Ledger) -> u64 {
    ledger.verify().await.expect("verify").entries_checked
}

pub async fn account_count(ledger: &Ledger) -> u64 {
    ledger.accounts().await.expect("accounts").len() as u64
}

/// Every invariant we promise, checked from the outside.
pub async fn assert_books_sound(ledger: &Ledger) {
    let report = ledger.verify().await.expect("verify");
    assert!(report.problems.is_empty(), "verify: {:?}", report.problems);
    let tb = ledger.trial_balance().await.expect("trial balance");
    assert!(tb.is_balanced(), "trial balance: {:?}", tb.totals);
    for a in &tb.accounts {
        if a.rule == crate::account::BalanceRule::MustNotGoNegative {
            assert!(
                a.balance() >= 0,
                "{} went negative: {}",
                a.code,
                a.balance()
            );
        }
    }
}
