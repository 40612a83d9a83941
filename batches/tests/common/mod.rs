//! Shared set-up of the batch tests: [`cva_batches::testing`]'s fixtures on a fresh database.

#![allow(clippy::unwrap_used, dead_code)]

pub use cva_batches::testing::*;
use cva_ledger::testing::TestDb;
use cva_registry::Registry;

/// A fresh database with [`entitlements`] for households with these phones.
pub async fn households(phones: &[String]) -> (TestDb, Registry) {
    let db = TestDb::new().await;
    let reg = registry(db.ledger.clone());
    entitlements(&reg, phones).await;
    (db, reg)
}
