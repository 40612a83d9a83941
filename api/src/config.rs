//! Configuration shared by the CLI and the server: the keys that seal personal data, the phone
//! operator table, and the default calling code.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `CVA_PII_KEYS` | key spec `active=k1;enc=k1:BASE64;index=BASE64` (see `cva_households::pii`) | — |
//! | `CVA_PII_KEY_FILE` | a file holding that spec (created with fresh keys, mode 0600, if missing) | on SQLite: `DBFILE.keys` next to the database |
//! | `CVA_OPERATORS_FILE` | operator prefix table (`country_code,national_length,prefix,operator`) | the built-in `data/operators.csv` |
//! | `CVA_DEFAULT_COUNTRY` | calling code for numbers written without one | `223` |
//! | `CVA_PAYMENTS_CONFIG` (`--payments-config`) | payment providers and approval bands (JSON, see `cva_batches::provider`) | none: batch commands refuse, the server's batch routes answer 503 |
//!
//! On PostgreSQL there is no default key file: a server without `CVA_PII_KEYS` or
//! `CVA_PII_KEY_FILE` refuses to start, so personal data is never sealed with keys nobody chose
//! to keep.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use cva_batches::PaymentsConfig;
use cva_households::msisdn::OperatorTable;
use cva_households::pii::PiiKeys;
use cva_ledger::Ledger;
use cva_registry::Registry;

/// The PII keys for the database at `url`.
pub fn pii_keys(url: &str) -> anyhow::Result<PiiKeys> {
    if let Ok(spec) = std::env::var("CVA_PII_KEYS") {
        if !spec.trim().is_empty() {
            return PiiKeys::from_spec(&spec).context("CVA_PII_KEYS is not a valid key spec");
        }
    }
    let path = match std::env::var("CVA_PII_KEY_FILE") {
        Ok(p) if !p.trim().is_empty() => PathBuf::from(p),
        _ => match sqlite_file(url) {
            Some(db) => PathBuf::from(format!("{db}.keys")),
            None => bail!(
                "no keys for personal data: set CVA_PII_KEYS or CVA_PII_KEY_FILE (a file that does \
                 not exist yet is created with fresh keys; keep it safe and backed up)"
            ),
        },
    };
    PiiKeys::load_or_create(&path)
        .with_context(|| format!("cannot load the personal-data keys from {}", path.display()))
}

fn sqlite_file(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then(|| path.to_owned())
}

pub fn operators() -> anyhow::Result<OperatorTable> {
    match std::env::var("CVA_OPERATORS_FILE") {
        Ok(p) if !p.trim().is_empty() => {
            let text = std::fs::read_to_string(&p)
                .with_context(|| format!("cannot read the operator table {p}"))?;
            OperatorTable::from_csv(&text).with_context(|| format!("operator table {p}"))
        }
        _ => Ok(OperatorTable::default_table()),
    }
}

pub fn default_country() -> String {
    std::env::var("CVA_DEFAULT_COUNTRY")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .unwrap_or_else(|| "223".to_owned())
}

/// The registry over `ledger`, configured from the environment.
pub fn registry(ledger: &Ledger, url: &str) -> anyhow::Result<Registry> {
    Ok(Registry::new(
        ledger.clone(),
        pii_keys(url)?,
        operators()?,
        &default_country(),
    ))
}

/// The payments configuration at `path` (from `--payments-config` or `CVA_PAYMENTS_CONFIG`), or
/// `None` when none is given. A file that cannot be read or is refused is an error naming the
/// file and the field.
pub fn payments(path: Option<&Path>) -> anyhow::Result<Option<PaymentsConfig>> {
    let Some(path) = path.filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read the payments configuration {} (CVA_PAYMENTS_CONFIG)",
            path.display()
        )
    })?;
    let config = PaymentsConfig::from_json(&text).map_err(|e| {
        anyhow::anyhow!(
            "the payments configuration {} is refused: {}: {}",
            path.display(),
            e.field,
            e.reason
        )
    })?;
    Ok(Some(config))
}
