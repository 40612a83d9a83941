//! Shared by the benchmark binaries (`ledger-bench`, `api-bench`, `registry-bench`): a fresh,
//! empty database for a run, so that a benchmark never writes to the database it is given.

use std::path::PathBuf;
use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

#[derive(Debug, thiserror::Error)]
pub enum BenchDbError {
    #[error("{0}")]
    Invalid(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("deleting {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// On PostgreSQL, drops and re-creates the database named after the one in `url` plus `suffix`
/// (`test` + `_bench` → `test_bench`) and returns its URL; on SQLite, deletes the file and its
/// `-wal`/`-shm` and returns `url`. Prints a `# database:` line saying which.
pub async fn fresh_database(url: &str, suffix: &str) -> Result<String, BenchDbError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let options = PgConnectOptions::from_str(url)?;
        let given = options
            .get_database()
            .unwrap_or(options.get_username())
            .to_owned();
        let name = format!("{given}{suffix}");
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(BenchDbError::Invalid(format!(
                "database name {given:?}: use letters, digits, `_` or `-` only"
            )));
        }
        let mut conn = options.connect().await?;
        sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .execute(&mut conn)
            .await?;
        sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        println!("# database: {name} (dropped and re-created)");
        Ok(with_database(url, &name))
    } else if let Some(rest) = url.strip_prefix("sqlite:") {
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let path = rest.split('?').next().unwrap_or_default();
        if path.is_empty() || path.contains(":memory:") {
            return Err(BenchDbError::Invalid(
                "the SQLite benchmark needs a file: sqlite:///tmp/bench.db".into(),
            ));
        }
        for s in ["", "-wal", "-shm"] {
            let file = PathBuf::from(format!("{path}{s}"));
            match std::fs::remove_file(&file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(BenchDbError::Io { path: file, source }),
            }
        }
        println!("# database: {path} (deleted and re-created)");
        Ok(url.to_owned())
    } else {
        Err(BenchDbError::Invalid(
            "unsupported database URL (use postgres://… or sqlite://FILE)".into(),
        ))
    }
}

/// The same PostgreSQL URL with another database name (query parameters kept).
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.find('?') {
        Some(q) => url.split_at(q),
        None => (url, ""),
    };
    let authority = base.find("://").map_or(0, |i| i + 3);
    let server = match base[authority..].find('/') {
        Some(slash) => &base[..authority + slash],
        None => base,
    };
    format!("{server}/{name}{query}")
}
