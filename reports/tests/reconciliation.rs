//! The reconciliation report, written against the schema of migration 0010: a statement with
//! two runs, their items and float lines, and exceptions, inserted with raw SQL as the
//! reconciliation code would leave them. By statement (the latest run) or by run id; both
//! backends.

#![allow(clippy::unwrap_used)]

use cva_ledger::testing::TestDb;
use cva_reports::{Cell, Format, Kind, ReportError, Reports, Request, Table, Verdict};

const AT: &str = "2024-03-02T10:00:00+00:00";

fn text(t: &Table, row: usize, col: &str) -> String {
    match t.cell(row, col).unwrap() {
        Cell::Text(s) | Cell::Money(s) => s.clone(),
        Cell::Int(i) => i.to_string(),
        Cell::Empty => String::new(),
        Cell::Bool(b) => b.to_string(),
    }
}

async fn setup() -> (TestDb, Reports) {
    let db = TestDb::new().await;
    let sha = "ab".repeat(32);
    let run = |n: i64, unexplained: i64| {
        format!(
            "INSERT INTO reconciliations (statement_id, run_no, provider, currency, window_seconds, \
             payments_considered, summary, outcomes_posted, statement_opening, statement_closing, \
             ledger_opening, ledger_closing, difference, explained, unexplained, run_by, run_at) \
             VALUES (1, {n}, 'orange-money', 'XOF', 86400, 3, '{{\"matched\":2,\"amount_mismatch\":1}}', \
             1, 1000000, 959800, 1000000, 959700, -100, {e}, {unexplained}, 'fatou', '{AT}')",
            e = -100 - unexplained
        )
    };
    db.raw(&[
        &format!(
            "INSERT INTO statements (provider, file_sha256, mapping, currency, line_count, \
             opening_balance, closing_balance, period_start, period_end, imported_by, imported_at) \
             VALUES ('orange-money', '{sha}', 'simulator', 'XOF', 3, 1000000, 959800, '{AT}', '{AT}', \
             'fatou', '{AT}')"
        ),
        &run(1, -100),
        &run(2, 0),
        // Run 1: one mismatch; run 2: matched everything but the mismatch, explained.
        "INSERT INTO reconciliation_items (reconciliation_id, category, rule, line_id, \
         statement_rows, float_effect, action, detail) VALUES \
         (1, 'amount_mismatch', 'reference', 7, '3', -100, NULL, 'paid 20100, sent 20000')",
        "INSERT INTO reconciliation_items (reconciliation_id, category, rule, line_id, \
         statement_rows, float_effect, action, detail) VALUES \
         (2, 'matched', 'provider_transaction_id', 5, '2', 0, 'confirmed', 'confirmed by the statement')",
        "INSERT INTO reconciliation_items (reconciliation_id, category, rule, line_id, \
         statement_rows, float_effect, action, detail) VALUES \
         (2, 'amount_mismatch', 'reference', 7, '3', -100, NULL, 'paid 20100, sent 20000')",
        "INSERT INTO reconciliation_float_lines (reconciliation_id, kind, entry_id, row_no, amount, detail) \
         VALUES (2, 'ledger_only', '0190f5c2-0000-7000-8000-000000000001', NULL, 0, 'float top-up not on the statement')",
        "INSERT INTO reconciliation_float_lines (reconciliation_id, kind, entry_id, row_no, amount, detail) \
         VALUES (2, 'running_balance_break', NULL, 3, -100, 'balance_after jumps')",
        &format!(
            "INSERT INTO exceptions (statement_id, key, first_run, last_run, category, line_id, \
             statement_rows, currency, amount, detail, status, assignee, resolution, resolved_by, \
             resolved_at, created_at) VALUES (1, 'amount_mismatch:7:3', 1, 2, 'amount_mismatch', 7, \
             '3', 'XOF', -100, 'paid 20100, sent 20000', 'resolved', 'moussa', 'fee charged twice', \
             'moussa', '{AT}', '{AT}')"
        ),
    ])
    .await
    .unwrap();
    let reg = cva_batches::testing::registry(db.ledger.clone());
    (db, Reports::new(reg))
}

#[tokio::test]
async fn a_statement_reports_its_latest_run_and_a_run_itself() {
    let (db, reports) = setup().await;
    let latest = reports
        .resolve(&Request::new(Kind::Reconciliation).statement(1))
        .unwrap();
    let t = reports.table(&latest).await.unwrap();
    assert_eq!(t.header["run"]["id"], 2);
    assert_eq!(t.header["run"]["run_no"], 2);
    assert_eq!(t.header["run"]["summary"]["amount_mismatch"], 1);
    assert_eq!(t.header["run"]["run_at"], "2024-03-02T10:00:00.000000Z");
    assert_eq!(t.header["statement"]["sha256"], "ab".repeat(32));
    let sections: Vec<String> = (0..t.rows.len()).map(|r| text(&t, r, "section")).collect();
    assert_eq!(
        sections,
        [
            "float",
            "float",
            "float",
            "float",
            "float",
            "float",
            "float",
            "item",
            "item",
            "float_line",
            "float_line",
            "exception"
        ]
    );
    for r in 0..t.rows.len() {
        assert_eq!(text(&t, r, "run_id"), "2");
        assert_eq!(text(&t, r, "statement_id"), "1");
    }
    let float = |name: &str| {
        let r = (0..7).find(|&r| text(&t, r, "category") == name).unwrap();
        text(&t, r, "amount")
    };
    assert_eq!(float("statement_closing"), "959800");
    assert_eq!(float("ledger_closing"), "959700");
    assert_eq!(float("difference"), "-100");
    assert_eq!(float("explained"), "-100");
    assert_eq!(float("unexplained"), "0");
    assert_eq!(text(&t, 7, "category"), "matched");
    assert_eq!(text(&t, 7, "rule"), "provider_transaction_id");
    assert_eq!(text(&t, 7, "action"), "confirmed");
    assert_eq!(text(&t, 8, "line_id"), "7");
    assert_eq!(text(&t, 8, "amount"), "-100");
    assert_eq!(
        text(&t, 9, "entry_id"),
        "0190f5c2-0000-7000-8000-000000000001"
    );
    assert_eq!(text(&t, 10, "row_no"), "3");
    assert_eq!(text(&t, 11, "status"), "resolved");
    assert_eq!(text(&t, 11, "resolution"), "fee charged twice");
    assert_eq!(text(&t, 11, "resolved_at"), "2024-03-02T10:00:00.000000Z");

    // Run 1 by its id: its own item and figures; the exception it opened.
    let first = reports
        .resolve(&Request::new(Kind::Reconciliation).run(1))
        .unwrap();
    let t1 = reports.table(&first).await.unwrap();
    assert_eq!(t1.header["run"]["run_no"], 1);
    let items = (0..t1.rows.len())
        .filter(|&r| text(&t1, r, "section") == "item")
        .count();
    assert_eq!(items, 1);
    let unexplained = (0..7)
        .find(|&r| text(&t1, r, "category") == "unexplained")
        .unwrap();
    assert_eq!(text(&t1, unexplained, "amount"), "-100");

    // Both formats render the same bytes twice; a produced report verifies.
    for f in [Format::Csv, Format::Json] {
        assert_eq!(
            reports.render(&latest, f).await.unwrap(),
            reports.render(&latest, f).await.unwrap()
        );
    }
    let ctx = cva_ledger::audit::AuditContext {
        actor_id: None,
        actor: "awa".into(),
        role: "auditor".into(),
        request_id: "t".into(),
    };
    let p = reports
        .produce(
            &Request::new(Kind::Reconciliation).statement(1),
            Format::Json,
            &ctx,
        )
        .await
        .unwrap();
    assert_eq!(p.record.parameters.to_string(), r#"{"statement":1}"#);
    assert_eq!(
        reports.verify(&p.bytes).await.unwrap().verdict,
        Verdict::Verified
    );

    // Unknown statement or run: not found.
    for req in [
        Request::new(Kind::Reconciliation).statement(99),
        Request::new(Kind::Reconciliation).run(99),
    ] {
        let e = reports
            .table(&reports.resolve(&req).unwrap())
            .await
            .unwrap_err();
        assert!(matches!(e, ReportError::NotFound(_)), "{e}");
    }
    db.cleanup().await;
}
