//! Storing imported statements, on SQLite by default and on PostgreSQL when
//! `CVA_TEST_DATABASE_URL=postgres://…` is set: lines and balances as read, one audit event,
//! a file imported twice refused, a bad file refused with nothing written, and the tables
//! append-only in the database itself.
#![allow(clippy::unwrap_used)]

use cva_ledger::audit::{AuditContext, AuditQuery};
use cva_ledger::money::Currency;
use cva_ledger::testing::TestDb;
use cva_reconciliation::{
    ColumnMapping, ImportError, ImportedStatement, StatementStatus, Statements,
};

const HEADER: &str =
    "transaction_id,reference,msisdn,amount,currency,fee,status,completed_at,balance_after\n";

fn simulator_file() -> String {
    format!(
        "{HEADER}\
         SIMTX00000001,PL-1,22376123456,65000,XOF,500,completed,2024-03-01T10:22:33+00:00,99934500\n\
         SIMTX00000002,PL-2,22376123457,30000,XOF,250,failed,2024-03-01T11:00:00+00:00,99934500\n\
         SIMTX00000003,,22376123458,20000,XOF,0,completed,2024-03-02T09:15:00+00:00,99914500\n"
    )
}

fn xof() -> Currency {
    Currency::parse("XOF").unwrap()
}

fn ctx() -> AuditContext {
    AuditContext {
        actor_id: None,
        actor: "cli:tester".into(),
        role: "admin".into(),
        request_id: "req-statements".into(),
    }
}

async fn import(store: &Statements, bytes: &[u8]) -> Result<ImportedStatement, ImportError> {
    store
        .import("sim", bytes, &ColumnMapping::simulator(), xof(), &ctx())
        .await
}

async fn count(db: &TestDb, table: &str) -> i64 {
    let sql = format!("SELECT COUNT(*) FROM {table}");
    if let Some(pool) = db.ledger.pg_pool() {
        sqlx::query_scalar(&sql).fetch_one(pool).await.unwrap()
    } else {
        let pool = db.ledger.sqlite_pool().unwrap();
        sqlx::query_scalar(&sql).fetch_one(pool).await.unwrap()
    }
}

async fn import_events(db: &TestDb) -> usize {
    db.ledger
        .audit_events(&AuditQuery {
            action: Some("statement.import".into()),
            ..AuditQuery::default()
        })
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn import_stores_every_line_with_balances_and_one_audit_event() {
    let db = TestDb::new().await;
    let store = Statements::new(db.ledger.clone());
    let file = simulator_file();
    let imported = import(&store, file.as_bytes()).await.unwrap();

    assert_eq!(imported.provider, "sim");
    assert_eq!(imported.mapping, "simulator");
    assert_eq!(imported.lines, 3);
    assert_eq!(
        imported.sha256,
        cva_reconciliation::content_sha256(file.as_bytes())
    );
    assert_eq!(imported.opening_balance.unwrap().minor(), 100_000_000);
    assert_eq!(imported.closing_balance.unwrap().minor(), 99_914_500);
    assert_eq!(
        imported.period_start.unwrap().to_rfc3339(),
        "2024-03-01T10:22:33+00:00"
    );
    assert_eq!(
        imported.period_end.unwrap().to_rfc3339(),
        "2024-03-02T09:15:00+00:00"
    );

    // Read back as stored.
    assert_eq!(store.statement(imported.id).await.unwrap(), imported);
    let lines = store.lines(imported.id, 0, 100).await.unwrap();
    let got: Vec<_> = lines
        .iter()
        .map(|l| {
            (
                l.row,
                l.transaction_id.as_str(),
                l.reference.as_deref(),
                l.amount_minor,
                l.fee_minor,
                l.status,
                l.balance_after_minor,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                2,
                "SIMTX00000001",
                Some("PL-1"),
                65_000,
                500,
                StatementStatus::Completed,
                Some(99_934_500)
            ),
            (
                3,
                "SIMTX00000002",
                Some("PL-2"),
                30_000,
                250,
                StatementStatus::Failed,
                Some(99_934_500)
            ),
            (
                4,
                "SIMTX00000003",
                None,
                20_000,
                0,
                StatementStatus::Completed,
                Some(99_914_500)
            ),
        ]
    );
    assert!(lines.iter().all(|l| l.currency == xof()));
    assert_eq!(
        lines[2].at.to_rfc3339(),
        "2024-03-02T09:15:00+00:00".to_owned()
    );
    // Paging.
    let page = store.lines(imported.id, 1, 1).await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].row, 3);

    // No phone number anywhere in the database's statement tables.
    let stored_msisdn = if let Some(pool) = db.ledger.pg_pool() {
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM statement_lines WHERE msisdn_index IS NOT NULL",
        )
        .fetch_one(pool)
        .await
        .unwrap()
    } else {
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM statement_lines WHERE msisdn_index IS NOT NULL",
        )
        .fetch_one(db.ledger.sqlite_pool().unwrap())
        .await
        .unwrap()
    };
    assert_eq!(stored_msisdn, 0);

    let events = db
        .ledger
        .audit_events(&AuditQuery {
            action: Some("statement.import".into()),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].object_type, "statement");
    assert_eq!(events[0].object_id, imported.id.to_string());
    assert_eq!(events[0].actor, "cli:tester");

    assert!(matches!(
        store.statement(imported.id + 1).await,
        Err(ImportError::NotFound { .. })
    ));
    assert!(matches!(
        store.lines(imported.id, 0, 0).await,
        Err(ImportError::Invalid { field: "limit", .. })
    ));
    db.cleanup().await;
}

#[tokio::test]
async fn the_same_file_twice_is_refused_and_writes_nothing() {
    let db = TestDb::new().await;
    let store = Statements::new(db.ledger.clone());
    let file = simulator_file();
    let first = import(&store, file.as_bytes()).await.unwrap();
    match import(&store, file.as_bytes()).await {
        Err(ImportError::AlreadyImported { statement_id }) => assert_eq!(statement_id, first.id),
        other => panic!("{other:?}"),
    }
    // Even under another provider or mapping name: the bytes are the same file.
    let other = store
        .import(
            "other",
            file.as_bytes(),
            &ColumnMapping::simulator(),
            xof(),
            &ctx(),
        )
        .await;
    assert!(matches!(other, Err(ImportError::AlreadyImported { .. })));
    assert_eq!(count(&db, "statements").await, 1);
    assert_eq!(count(&db, "statement_lines").await, 3);
    assert_eq!(import_events(&db).await, 1);
    db.cleanup().await;
}

#[tokio::test]
async fn a_bad_file_is_refused_with_row_and_column_and_writes_nothing() {
    let db = TestDb::new().await;
    let store = Statements::new(db.ledger.clone());
    let bad = simulator_file()
        .replace("30000", "30000 XOF")
        .replace(",2024-03-02T09:15:00+00:00,", ",not a date,");
    match import(&store, bad.as_bytes()).await {
        Err(ImportError::BadRows(errors)) => {
            let at: Vec<_> = errors.iter().map(|e| (e.row, e.column.as_str())).collect();
            assert_eq!(at, vec![(3, "amount"), (4, "completed_at")]);
            // Never the phone number in an error.
            for e in &errors {
                assert!(!e.to_string().contains("2237612345"), "{e}");
            }
        }
        other => panic!("{other:?}"),
    }
    // A missing required column is reported against the header row.
    let no_amount = simulator_file().replace(",amount,", ",montant,");
    match import(&store, no_amount.as_bytes()).await {
        Err(ImportError::BadRows(errors)) => {
            assert_eq!((errors[0].row, errors[0].column.as_str()), (1, "amount"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store
            .import(" ", b"", &ColumnMapping::simulator(), xof(), &ctx())
            .await,
        Err(ImportError::Invalid {
            field: "provider",
            ..
        })
    ));
    assert_eq!(count(&db, "statements").await, 0);
    assert_eq!(count(&db, "statement_lines").await, 0);
    assert_eq!(import_events(&db).await, 0);
    db.cleanup().await;
}

#[tokio::test]
async fn more_lines_than_one_sqlite_chunk_are_all_stored() {
    let db = TestDb::new().await;
    let store = Statements::new(db.ledger.clone());
    let mut file = String::from(HEADER);
    let n = 2_345;
    for i in 0..n {
        file.push_str(&format!(
            "TX{i:06},PL-{i},2237600{i:04},{},XOF,0,completed,2024-03-01T10:00:00+00:00,{}\n",
            100 + i,
            10_000_000 - i
        ));
    }
    let imported = import(&store, file.as_bytes()).await.unwrap();
    assert_eq!(imported.lines, n as u64);
    assert_eq!(count(&db, "statement_lines").await, n as i64);
    let last = store.lines(imported.id, n as u64 - 1, 10).await.unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].transaction_id, format!("TX{:06}", n - 1));
    assert_eq!(last[0].amount_minor, 100 + n as i64 - 1);
    db.cleanup().await;
}

#[tokio::test]
async fn the_database_refuses_changes_deletes_and_duplicate_hashes() {
    let db = TestDb::new().await;
    let store = Statements::new(db.ledger.clone());
    let imported = import(&store, simulator_file().as_bytes()).await.unwrap();
    let id = imported.id;
    for sql in [
        format!("UPDATE statements SET provider = 'x' WHERE id = {id}"),
        format!("UPDATE statements SET closing_balance = 0 WHERE id = {id}"),
        format!("DELETE FROM statements WHERE id = {id}"),
        format!("UPDATE statement_lines SET amount = 1 WHERE statement_id = {id}"),
        format!("UPDATE statement_lines SET status = 'completed' WHERE statement_id = {id}"),
        format!("DELETE FROM statement_lines WHERE statement_id = {id}"),
    ] {
        let err = db.raw(&[&sql]).await.expect_err(&sql);
        assert!(err.contains("append-only"), "{sql}: {err}");
    }
    if db.is_postgres() {
        let err = db
            .raw(&["TRUNCATE statement_lines, statements CASCADE"])
            .await
            .unwrap_err();
        assert!(err.contains("append-only"), "{err}");
    }
    // A second row with the same hash, written by hand, is refused too.
    let dup = format!(
        "INSERT INTO statements (provider, file_sha256, mapping, currency, line_count, \
         imported_by, imported_at) VALUES ('sim', '{}', 'simulator', 'XOF', 0, 'x', \
         '2024-03-01T00:00:00+00:00')",
        imported.sha256
    );
    let err = db.raw(&[&dup]).await.unwrap_err();
    assert!(err.to_lowercase().contains("unique"), "{err}");
    // A line with a status outside the five is refused.
    let bad_status = format!(
        "INSERT INTO statement_lines (statement_id, row_no, transaction_id, amount, fee, \
         currency, status, at) VALUES ({id}, 99, 'T', 1, 0, 'XOF', 'lost', \
         '2024-03-01T00:00:00+00:00')"
    );
    assert!(db.raw(&[&bad_status]).await.is_err());
    assert_eq!(count(&db, "statements").await, 1);
    assert_eq!(count(&db, "statement_lines").await, 3);
    db.cleanup().await;
}

#[tokio::test]
async fn concurrent_imports_of_one_file_store_it_once() {
    let db = TestDb::new().await;
    let store = Statements::new(db.ledger.clone());
    let file = simulator_file();
    let (a, b) = tokio::join!(
        import(&store, file.as_bytes()),
        import(&store, file.as_bytes())
    );
    let (ok, refused) = match (a, b) {
        (Ok(ok), Err(e)) | (Err(e), Ok(ok)) => (ok, e),
        other => panic!("{other:?}"),
    };
    match refused {
        ImportError::AlreadyImported { statement_id } => assert_eq!(statement_id, ok.id),
        other => panic!("{other:?}"),
    }
    assert_eq!(count(&db, "statements").await, 1);
    assert_eq!(count(&db, "statement_lines").await, 3);
    assert_eq!(import_events(&db).await, 1);
    db.cleanup().await;
}
