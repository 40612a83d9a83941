//! The reconciliation exceptions queue, on SQLite by default and on PostgreSQL when
//! `CVA_TEST_DATABASE_URL=postgres://…` is set: maker-checker adjustments posted once, in the
//! transaction that resolves the exception; rejection and a new proposal; resolution with a
//! note, final in the code and in the database; an audit event for every action; bad input
//! refused naming the field with nothing changed; listing with filters and pages.
#![allow(clippy::unwrap_used)]

use cva_ledger::account::{AccountCode, AccountSpec, AccountType, BalanceRule, Side};
use cva_ledger::audit::{AuditContext, AuditQuery, MAX_PAGE};
use cva_ledger::entry::IdempotencyKey;
use cva_ledger::money::Currency;
use cva_ledger::testing::{assert_books_sound, bal, entry_count, transfer, TestDb};
use cva_reconciliation::exceptions::adjustment_key;
use cva_reconciliation::{
    AdjustmentLine, AdjustmentStatus, Category, ColumnMapping, ExceptionError, ExceptionFilter,
    ExceptionStatus, Exceptions, Statements,
};

const FLOAT: &str = "assets:float:sim";
const FEES: &str = "expense:fees:sim";
const USD_FEES: &str = "expense:fees:usd-sim";
const FUNDS: &str = "funds:P1:mpca";

fn xof() -> Currency {
    Currency::parse("XOF").unwrap()
}

fn usd() -> Currency {
    Currency::parse("USD").unwrap()
}

fn ctx(actor: &str) -> AuditContext {
    AuditContext {
        actor_id: None,
        actor: actor.to_owned(),
        role: "finance_officer".into(),
        request_id: format!("req-{actor}"),
    }
}

fn amina() -> AuditContext {
    ctx("amina")
}

fn moussa() -> AuditContext {
    ctx("moussa")
}

fn line(account: &str, side: Side, amount: i64) -> AdjustmentLine {
    AdjustmentLine {
        account: account.to_owned(),
        side,
        amount,
    }
}

/// Fees of 500 XOF the statement shows and the ledger does not: debit fees, credit the float.
fn fee_lines() -> Vec<AdjustmentLine> {
    vec![line(FEES, Side::Debit, 500), line(FLOAT, Side::Credit, 500)]
}

const STATEMENT: &str =
    "transaction_id,reference,msisdn,amount,currency,fee,status,completed_at,balance_after\n\
     SIMTX00000001,PL-1,22376123456,65000,XOF,500,completed,2024-03-01T10:22:33+00:00,99934500\n\
     SIMTX00000002,PL-2,22376123457,30000,XOF,250,failed,2024-03-01T11:00:00+00:00,99934500\n";

/// The queue of one statement: `ids[0]` and `ids[1]` in XOF, `ids[2]` in USD.
struct Fixture {
    db: TestDb,
    queue: Exceptions,
    statement: i64,
    ids: Vec<i64>,
}

/// FIXTURE, not the reconciliation run: imports a statement, then writes one
/// `reconciliations` row and three open exceptions (with their `opened` events) by raw SQL,
/// as `run.rs` would; opens the ledger accounts adjustments use and funds the float.
async fn fixture() -> Fixture {
    let db = TestDb::new().await;
    let statement = Statements::new(db.ledger.clone())
        .import(
            "sim",
            STATEMENT.as_bytes(),
            &ColumnMapping::simulator(),
            xof(),
            &ctx("cli:tester"),
        )
        .await
        .unwrap()
        .id;
    let at = "'2024-03-05T10:00:00+00:00'";
    let run = format!(
        "INSERT INTO reconciliations (statement_id, run_no, provider, currency, window_seconds, \
         payments_considered, summary, outcomes_posted, statement_opening, statement_closing, \
         ledger_opening, ledger_closing, difference, explained, unexplained, run_by, run_at) \
         VALUES ({statement}, 1, 'sim', 'XOF', 86400, 2, '{{}}', 0, 100000000, 99934500, \
         100000000, 99935000, 500, 500, 0, 'cli:tester', {at})"
    );
    let exception = |key: &str, category: &str, line: &str, rows: &str, currency: &str| {
        format!(
            "INSERT INTO exceptions (statement_id, key, first_run, last_run, category, line_id, \
             statement_rows, currency, amount, detail, created_at) VALUES ({statement}, '{key}', \
             (SELECT MAX(id) FROM reconciliations), (SELECT MAX(id) FROM reconciliations), \
             '{category}', {line}, '{rows}', '{currency}', 500, 'fixture: {category}', {at})"
        )
    };
    let opened = format!(
        "INSERT INTO exception_events (exception_id, action, actor, note, at) \
         SELECT id, 'opened', 'cli:tester', NULL, {at} FROM exceptions WHERE statement_id = {statement}"
    );
    let statements = [
        run,
        exception("fee_mismatch:1:2", "fee_mismatch", "1", "2", "XOF"),
        exception(
            "unexpected_in_statement::3",
            "unexpected_in_statement",
            "NULL",
            "3",
            "XOF",
        ),
        exception("amount_mismatch:9:", "amount_mismatch", "9", "", "USD"),
        opened,
    ];
    let refs: Vec<&str> = statements.iter().map(String::as_str).collect();
    db.raw(&refs).await.unwrap();

    let open = |code: &str, t: AccountType, c: Currency, r: BalanceRule| {
        AccountSpec::new(AccountCode::parse(code).unwrap(), t, c, r).unwrap()
    };
    for spec in [
        open(
            FLOAT,
            AccountType::Asset,
            xof(),
            BalanceRule::MustNotGoNegative,
        ),
        open(
            FUNDS,
            AccountType::Fund,
            xof(),
            BalanceRule::MustNotGoNegative,
        ),
        open(FEES, AccountType::Expense, xof(), BalanceRule::MayOverdraw),
        open(
            USD_FEES,
            AccountType::Expense,
            usd(),
            BalanceRule::MayOverdraw,
        ),
    ] {
        db.ledger.open_account(spec).await.unwrap();
    }
    db.ledger
        .post(transfer("fund-float", FLOAT, FUNDS, 100_000))
        .await
        .unwrap();

    let queue = Exceptions::new(db.ledger.clone());
    let ids = queue
        .list(&ExceptionFilter {
            statement_id: Some(statement),
            ..ExceptionFilter::default()
        })
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    Fixture {
        db,
        queue,
        statement,
        ids,
    }
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

async fn audit_actions(db: &TestDb) -> Vec<(String, String, String)> {
    db.ledger
        .audit_events(&AuditQuery {
            limit: MAX_PAGE,
            ..AuditQuery::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.action, e.actor, e.object_id))
        .collect()
}

/// What must not move when a call is refused.
async fn snapshot(f: &Fixture) -> (i64, i64, i64, u64, usize, Vec<ExceptionStatus>) {
    let mut statuses = Vec::new();
    for id in &f.ids {
        statuses.push(f.queue.exception(*id).await.unwrap().status);
    }
    (
        count(&f.db, "adjustments").await,
        count(&f.db, "exception_events").await,
        count(&f.db, "exceptions").await,
        entry_count(&f.db.ledger).await,
        audit_actions(&f.db).await.len(),
        statuses,
    )
}

fn assert_invalid<T: std::fmt::Debug>(r: Result<T, ExceptionError>, field: &str) {
    match r {
        Err(ExceptionError::Invalid { field: f, reason }) => {
            assert_eq!(f, field, "{reason}");
            assert!(!reason.is_empty());
        }
        other => panic!("expected Invalid {{ field: {field} }}, got {other:?}"),
    }
}

#[tokio::test]
async fn an_adjustment_is_posted_once_when_a_second_person_approves_it() {
    let f = fixture().await;
    let id = f.ids[0];
    let entries_before = entry_count(&f.db.ledger).await;

    let adj = f
        .queue
        .propose_adjustment(id, "Provider fee not booked", &fee_lines(), &amina())
        .await
        .unwrap();
    assert_eq!(adj.status, AdjustmentStatus::Proposed);
    assert_eq!((adj.exception_id, adj.proposed_by.as_str()), (id, "amina"));
    assert_eq!(adj.lines, fee_lines());
    assert_eq!(adj.currency, xof());
    assert_eq!(adj.entry_id, None);
    assert_eq!(
        f.queue.exception(id).await.unwrap().status,
        ExceptionStatus::AwaitingApproval
    );

    // The proposer cannot approve: a clear error, nothing posted, nothing decided.
    let err = f
        .queue
        .approve_adjustment(adj.id, None, &amina())
        .await
        .unwrap_err();
    assert!(matches!(err, ExceptionError::SameActor(_)), "{err:?}");
    assert!(err.to_string().contains("proposed"), "{err}");
    assert_eq!(entry_count(&f.db.ledger).await, entries_before);
    assert_eq!(
        f.queue.adjustment(adj.id).await.unwrap().status,
        AdjustmentStatus::Proposed
    );
    // Nor reject it.
    let err = f
        .queue
        .reject_adjustment(adj.id, "no", &amina())
        .await
        .unwrap_err();
    assert!(matches!(err, ExceptionError::SameActor(_)), "{err:?}");

    // A second person approves: one entry, the right lines, the exception resolved.
    let approved = f
        .queue
        .approve_adjustment(
            adj.id,
            Some("Fee confirmed on the provider's invoice"),
            &moussa(),
        )
        .await
        .unwrap();
    assert_eq!(approved.status, AdjustmentStatus::Approved);
    assert_eq!(approved.decided_by.as_deref(), Some("moussa"));
    assert_eq!(
        approved.decision_note.as_deref(),
        Some("Fee confirmed on the provider's invoice")
    );
    let entry_id = approved.entry_id.unwrap();
    assert_eq!(entry_count(&f.db.ledger).await, entries_before + 1);
    let key = IdempotencyKey::parse(&adjustment_key(id, adj.id)).unwrap();
    assert_eq!(
        key.as_str(),
        format!("exception:{id}:adjustment:{}", adj.id)
    );
    let entry = f.db.ledger.entry_by_key(&key).await.unwrap().unwrap();
    assert_eq!(entry.id, entry_id);
    let lines: Vec<(String, Side, i64, Currency)> = entry
        .lines
        .iter()
        .map(|l| {
            (
                l.account.to_string(),
                l.side,
                l.amount.minor(),
                l.amount.currency(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        vec![
            (FEES.to_owned(), Side::Debit, 500, xof()),
            (FLOAT.to_owned(), Side::Credit, 500, xof()),
        ]
    );
    assert_eq!(entry.metadata["exception"], id);
    assert_eq!(entry.metadata["adjustment"], adj.id);
    assert_eq!(bal(&f.db.ledger, FLOAT).await, 99_500);
    assert_eq!(bal(&f.db.ledger, FEES).await, 500);

    let detail = f.queue.get(id).await.unwrap();
    assert_eq!(detail.exception.status, ExceptionStatus::Resolved);
    assert_eq!(detail.exception.resolved_by.as_deref(), Some("moussa"));
    assert_eq!(
        detail.exception.resolution.as_deref(),
        Some("Fee confirmed on the provider's invoice")
    );
    assert!(detail.exception.resolved_at.is_some());
    let history: Vec<(&str, &str)> = detail
        .events
        .iter()
        .map(|e| (e.action.as_str(), e.actor.as_str()))
        .collect();
    assert_eq!(
        history,
        vec![
            ("opened", "cli:tester"),
            ("adjustment_proposed", "amina"),
            ("adjustment_approved", "moussa"),
            ("resolved", "moussa"),
        ]
    );
    assert!(detail.events[2]
        .note
        .as_deref()
        .unwrap()
        .contains(&entry_id.to_string()));
    assert_eq!(detail.adjustments, vec![approved.clone()]);

    // Approving again — by anyone — posts nothing twice.
    for who in [moussa(), ctx("fatou")] {
        let err = f
            .queue
            .approve_adjustment(adj.id, None, &who)
            .await
            .unwrap_err();
        assert!(matches!(err, ExceptionError::Conflict(_)), "{err:?}");
        assert!(err.to_string().contains("already approved"), "{err}");
    }
    assert_eq!(entry_count(&f.db.ledger).await, entries_before + 1);
    assert_eq!(f.queue.adjustment(adj.id).await.unwrap(), approved);
    assert_books_sound(&f.db.ledger).await;
    f.db.cleanup().await;
}

#[tokio::test]
async fn the_database_refuses_the_proposer_as_decider_and_changes_to_a_decision() {
    let f = fixture().await;
    let adj = f
        .queue
        .propose_adjustment(f.ids[0], "Provider fee not booked", &fee_lines(), &amina())
        .await
        .unwrap();
    // Maker-checker in the database too: a stray client cannot decide as the proposer.
    let same = format!(
        "UPDATE adjustments SET status = 'rejected', decided_by = proposed_by, \
         decided_at = proposed_at WHERE id = {}",
        adj.id
    );
    let err = f.db.raw(&[&same]).await.unwrap_err();
    assert!(err.to_lowercase().contains("check"), "{err}");
    assert_eq!(
        f.queue.adjustment(adj.id).await.unwrap().status,
        AdjustmentStatus::Proposed
    );
    // Approved without an entry: refused by the CHECK.
    let no_entry = format!(
        "UPDATE adjustments SET status = 'approved', decided_by = 'moussa', \
         decided_at = proposed_at WHERE id = {}",
        adj.id
    );
    assert!(f.db.raw(&[&no_entry]).await.is_err());

    f.queue
        .approve_adjustment(adj.id, None, &moussa())
        .await
        .unwrap();
    // Decided once: its decision and what it posted never change.
    for sql in [
        format!(
            "UPDATE adjustments SET decision_note = 'edited' WHERE id = {}",
            adj.id
        ),
        format!("UPDATE adjustments SET lines = '[]' WHERE id = {}", adj.id),
        format!("DELETE FROM adjustments WHERE id = {}", adj.id),
    ] {
        let err = f.db.raw(&[&sql]).await.unwrap_err();
        assert!(err.contains("cva:"), "{sql}: {err}");
    }
    let exception = f.queue.exception(f.ids[0]).await.unwrap();
    assert_eq!(exception.status, ExceptionStatus::Resolved);
    assert_eq!(
        exception.resolution.as_deref(),
        Some(format!("adjusting entry of adjustment {} approved", adj.id).as_str())
    );
    f.db.cleanup().await;
}

#[tokio::test]
async fn a_rejected_adjustment_sends_the_exception_back_and_a_new_one_can_be_proposed() {
    let f = fixture().await;
    let id = f.ids[0];
    let assigned = f.queue.assign(id, "amina", &moussa()).await.unwrap();
    assert_eq!(assigned.status, ExceptionStatus::Assigned);
    assert_eq!(assigned.assignee.as_deref(), Some("amina"));

    let wrong = vec![
        line(FEES, Side::Debit, 5_000),
        line(FLOAT, Side::Credit, 5_000),
    ];
    let first = f
        .queue
        .propose_adjustment(id, "Provider fee not booked", &wrong, &amina())
        .await
        .unwrap();
    // Only one adjustment awaits approval at a time.
    let err = f
        .queue
        .propose_adjustment(id, "Another", &fee_lines(), &amina())
        .await
        .unwrap_err();
    assert!(matches!(err, ExceptionError::Conflict(_)), "{err:?}");
    // Reassigning while awaiting approval keeps the status.
    let reassigned = f.queue.assign(id, "fatou", &moussa()).await.unwrap();
    assert_eq!(reassigned.status, ExceptionStatus::AwaitingApproval);
    f.queue.assign(id, "amina", &moussa()).await.unwrap();

    let entries = entry_count(&f.db.ledger).await;
    let err = f
        .queue
        .reject_adjustment(first.id, "  ", &moussa())
        .await
        .unwrap_err();
    assert!(matches!(err, ExceptionError::Invalid { ref field, .. } if field == "note"));
    let rejected = f
        .queue
        .reject_adjustment(first.id, "The fee was 500, not 5,000", &moussa())
        .await
        .unwrap();
    assert_eq!(rejected.status, AdjustmentStatus::Rejected);
    assert_eq!(rejected.decided_by.as_deref(), Some("moussa"));
    assert_eq!(rejected.entry_id, None);
    assert_eq!(entry_count(&f.db.ledger).await, entries, "nothing posted");
    let back = f.queue.exception(id).await.unwrap();
    assert_eq!(back.status, ExceptionStatus::Assigned);
    assert_eq!(back.assignee.as_deref(), Some("amina"));
    // Decided once.
    let err = f
        .queue
        .approve_adjustment(first.id, None, &ctx("fatou"))
        .await
        .unwrap_err();
    assert!(matches!(err, ExceptionError::Conflict(_)), "{err:?}");

    let second = f
        .queue
        .propose_adjustment(id, "Provider fee not booked", &fee_lines(), &amina())
        .await
        .unwrap();
    f.queue
        .approve_adjustment(second.id, None, &moussa())
        .await
        .unwrap();
    assert_eq!(entry_count(&f.db.ledger).await, entries + 1);
    assert_eq!(bal(&f.db.ledger, FEES).await, 500);

    let detail = f.queue.get(id).await.unwrap();
    assert_eq!(detail.exception.status, ExceptionStatus::Resolved);
    let actions: Vec<&str> = detail.events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        vec![
            "opened",
            "assigned",
            "adjustment_proposed",
            "assigned",
            "assigned",
            "adjustment_rejected",
            "adjustment_proposed",
            "adjustment_approved",
            "resolved",
        ]
    );
    let statuses: Vec<_> = detail.adjustments.iter().map(|a| a.status).collect();
    assert_eq!(
        statuses,
        vec![AdjustmentStatus::Rejected, AdjustmentStatus::Approved]
    );

    // Without an assignee, a rejection sends the exception back to open.
    let other = f.ids[1];
    let adj = f
        .queue
        .propose_adjustment(other, "Unknown credit", &fee_lines(), &amina())
        .await
        .unwrap();
    f.queue
        .reject_adjustment(adj.id, "Ask the provider first", &moussa())
        .await
        .unwrap();
    assert_eq!(
        f.queue.exception(other).await.unwrap().status,
        ExceptionStatus::Open
    );
    assert_books_sound(&f.db.ledger).await;
    f.db.cleanup().await;
}

#[tokio::test]
async fn resolving_needs_a_note_and_is_final_in_the_code_and_the_database() {
    let f = fixture().await;
    let id = f.ids[1];
    let before = snapshot(&f).await;
    assert_invalid(f.queue.resolve(id, "", &amina()).await, "note");
    assert_invalid(f.queue.resolve(id, " \n\t ", &amina()).await, "note");
    assert_invalid(
        f.queue
            .resolve(
                id,
                &"x".repeat(cva_reconciliation::exceptions::MAX_NOTE_CHARS + 1),
                &amina(),
            )
            .await,
        "note",
    );
    assert_eq!(snapshot(&f).await, before, "nothing changed");

    let resolved = f
        .queue
        .resolve(
            id,
            "Provider credited our float by mistake; refunded on 6 March",
            &amina(),
        )
        .await
        .unwrap();
    assert_eq!(resolved.status, ExceptionStatus::Resolved);
    assert_eq!(resolved.resolved_by.as_deref(), Some("amina"));
    assert_eq!(
        resolved.resolution.as_deref(),
        Some("Provider credited our float by mistake; refunded on 6 March")
    );

    // Final in the code.
    let entries = entry_count(&f.db.ledger).await;
    for err in [
        f.queue.resolve(id, "again", &moussa()).await.unwrap_err(),
        f.queue.assign(id, "moussa", &moussa()).await.unwrap_err(),
        f.queue
            .propose_adjustment(id, "Late", &fee_lines(), &moussa())
            .await
            .unwrap_err(),
    ] {
        assert!(matches!(err, ExceptionError::Conflict(_)), "{err:?}");
        assert!(err.to_string().contains("resolved"), "{err}");
    }
    assert_eq!(entry_count(&f.db.ledger).await, entries);
    assert_eq!(count(&f.db, "adjustments").await, 0);
    // A comment may still follow it up; it changes nothing.
    let after = f
        .queue
        .comment(id, "Refund seen on the 7 March statement", &moussa())
        .await
        .unwrap();
    assert_eq!(after, resolved);

    // Final in the database: a stray UPDATE of the resolved row is refused.
    for sql in [
        format!("UPDATE exceptions SET status = 'open', resolution = NULL, resolved_by = NULL, resolved_at = NULL WHERE id = {id}"),
        format!("UPDATE exceptions SET resolution = 'rewritten' WHERE id = {id}"),
        format!("UPDATE exceptions SET resolved_by = 'mallory' WHERE id = {id}"),
        format!("UPDATE exceptions SET amount = 0 WHERE id = {id}"),
        format!("DELETE FROM exceptions WHERE id = {id}"),
        format!("DELETE FROM exception_events WHERE exception_id = {id}"),
    ] {
        let err = f.db.raw(&[&sql]).await.unwrap_err();
        assert!(err.contains("cva:"), "{sql}: {err}");
    }
    // Nor does its id: its events, adjustments and the audit trail name it.
    let other_id = if f.db.ledger.pg_pool().is_some() {
        "DEFAULT"
    } else {
        "id + 1000"
    };
    let sql = format!("UPDATE exceptions SET id = {other_id} WHERE id = {id}");
    let err = f.db.raw(&[&sql]).await.unwrap_err();
    assert!(err.contains("identity never changes"), "{sql}: {err}");
    // Rows naming an exception, a run or a statement that does not exist are refused (a
    // foreign key on SQLite, a check per statement on PostgreSQL).
    let events = count(&f.db, "exception_events").await;
    let exceptions = count(&f.db, "exceptions").await;
    for sql in [
        "INSERT INTO exception_events (exception_id, action, actor, note, at) \
         VALUES (999999, 'commented', 'amina', NULL, '2024-03-01T00:00:00Z')"
            .to_owned(),
        format!(
            "INSERT INTO exceptions (statement_id, key, first_run, last_run, category, line_id, \
             statement_rows, currency, amount, detail, created_at) SELECT statement_id, 'stray', \
             first_run, 999999, category, line_id, statement_rows, currency, amount, detail, \
             created_at FROM exceptions WHERE id = {id}"
        ),
        format!(
            "UPDATE exceptions SET last_run = 999999 WHERE id = {other}",
            other = f.ids[1]
        ),
    ] {
        let err = f.db.raw(&[&sql]).await.unwrap_err();
        assert!(
            err.contains("names no row") || err.contains("FOREIGN KEY"),
            "{sql}: {err}"
        );
    }
    assert_eq!(count(&f.db, "exception_events").await, events);
    assert_eq!(count(&f.db, "exceptions").await, exceptions);
    assert_eq!(f.queue.exception(id).await.unwrap(), resolved);

    // Refused while an adjustment awaits approval.
    let other = f.ids[0];
    f.queue
        .propose_adjustment(other, "Fee", &fee_lines(), &amina())
        .await
        .unwrap();
    let err = f
        .queue
        .resolve(other, "Nothing to post after all", &moussa())
        .await
        .unwrap_err();
    assert!(matches!(err, ExceptionError::Conflict(_)), "{err:?}");
    assert!(err.to_string().contains("awaiting approval"), "{err}");
    f.db.cleanup().await;
}

#[tokio::test]
async fn every_action_leaves_an_audit_event() {
    let f = fixture().await;
    let before = audit_actions(&f.db).await.len();
    let (a, b) = (f.ids[0], f.ids[1]);
    f.queue.assign(a, "amina", &moussa()).await.unwrap();
    f.queue
        .comment(a, "Looking into it", &amina())
        .await
        .unwrap();
    let rejected = f
        .queue
        .propose_adjustment(a, "Fee", &fee_lines(), &amina())
        .await
        .unwrap();
    f.queue
        .reject_adjustment(rejected.id, "Wrong account", &moussa())
        .await
        .unwrap();
    let approved = f
        .queue
        .propose_adjustment(a, "Fee", &fee_lines(), &amina())
        .await
        .unwrap();
    let entry = f
        .queue
        .approve_adjustment(approved.id, None, &moussa())
        .await
        .unwrap()
        .entry_id
        .unwrap();
    f.queue
        .resolve(b, "Duplicate line", &amina())
        .await
        .unwrap();

    let events = audit_actions(&f.db).await;
    let s = |x: &str| x.to_owned();
    assert_eq!(
        events[before..].to_vec(),
        vec![
            (s("exception.assign"), s("moussa"), a.to_string()),
            (s("exception.comment"), s("amina"), a.to_string()),
            (
                s("exception.propose_adjustment"),
                s("amina"),
                rejected.id.to_string()
            ),
            (
                s("exception.reject_adjustment"),
                s("moussa"),
                rejected.id.to_string()
            ),
            (
                s("exception.propose_adjustment"),
                s("amina"),
                approved.id.to_string()
            ),
            (
                s("exception.approve_adjustment"),
                s("moussa"),
                approved.id.to_string()
            ),
            (s("ledger.post"), s("moussa"), entry.to_string()),
            (s("exception.resolve"), s("amina"), b.to_string()),
        ]
    );
    // Refusals leave none.
    let n = events.len();
    f.queue
        .approve_adjustment(approved.id, None, &ctx("fatou"))
        .await
        .unwrap_err();
    f.queue.resolve(b, "again", &amina()).await.unwrap_err();
    assert_eq!(audit_actions(&f.db).await.len(), n);
    let v = f.db.ledger.verify_audit().await.unwrap();
    assert!(v.is_intact(), "{v:?}");
    f.db.cleanup().await;
}

#[tokio::test]
async fn bad_input_is_refused_naming_the_field_and_nothing_changes() {
    let f = fixture().await;
    let id = f.ids[0];
    let usd_id = f.ids[2];
    let before = snapshot(&f).await;
    let propose = |lines: Vec<AdjustmentLine>| {
        let queue = f.queue.clone();
        async move { queue.propose_adjustment(id, "Fee", &lines, &amina()).await }
    };

    // Unbalanced.
    assert_invalid(
        propose(vec![
            line(FEES, Side::Debit, 500),
            line(FLOAT, Side::Credit, 400),
        ])
        .await,
        "lines",
    );
    // One line only, and none.
    assert_invalid(propose(vec![line(FEES, Side::Debit, 500)]).await, "lines");
    assert_invalid(propose(vec![]).await, "lines");
    // An account that does not exist, and one that is not an account code.
    assert_invalid(
        propose(vec![
            line(FEES, Side::Debit, 500),
            line("assets:float:nobody", Side::Credit, 500),
        ])
        .await,
        "lines[1].account",
    );
    assert_invalid(
        propose(vec![
            line("float", Side::Debit, 500),
            line(FLOAT, Side::Credit, 500),
        ])
        .await,
        "lines[0].account",
    );
    // An account kept in another currency than the exception's.
    let err = propose(vec![
        line(USD_FEES, Side::Debit, 500),
        line(FLOAT, Side::Credit, 500),
    ])
    .await;
    assert_invalid(err, "lines[0].account");
    let err = f
        .queue
        .propose_adjustment(usd_id, "Fee", &fee_lines(), &amina())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("USD"), "{err}");
    // Negative and zero amounts.
    assert_invalid(
        propose(vec![
            line(FEES, Side::Debit, -500),
            line(FLOAT, Side::Credit, -500),
        ])
        .await,
        "lines[0].amount",
    );
    assert_invalid(
        propose(vec![
            line(FEES, Side::Debit, 500),
            line(FLOAT, Side::Credit, 0),
        ])
        .await,
        "lines[1].amount",
    );
    // Amounts typed in major units: exact, positive, never rounded.
    assert_invalid(
        AdjustmentLine::parse(0, USD_FEES, "debit", "12.505", usd()),
        "lines[0].amount",
    );
    assert_invalid(
        AdjustmentLine::parse(1, FEES, "credit", "500.5", xof()),
        "lines[1].amount",
    );
    assert_invalid(
        AdjustmentLine::parse(2, FEES, "credit", "-500", xof()),
        "lines[2].amount",
    );
    assert_invalid(
        AdjustmentLine::parse(0, FEES, "credit", "1e3", xof()),
        "lines[0].amount",
    );
    assert_invalid(
        AdjustmentLine::parse(0, FEES, "both", "500", xof()),
        "lines[0].side",
    );
    assert_eq!(
        AdjustmentLine::parse(0, USD_FEES, "debit", "12.50", usd()).unwrap(),
        line(USD_FEES, Side::Debit, 1250)
    );
    assert_eq!(
        AdjustmentLine::parse(0, FEES, "credit", "500.00", xof()).unwrap(),
        line(FEES, Side::Credit, 500)
    );
    // Description, notes, assignee.
    assert_invalid(
        f.queue
            .propose_adjustment(id, "   ", &fee_lines(), &amina())
            .await,
        "description",
    );
    assert_invalid(f.queue.comment(id, "", &amina()).await, "note");
    assert_invalid(f.queue.comment(id, "a\u{0}b", &amina()).await, "note");
    assert_invalid(f.queue.resolve(id, "  ", &amina()).await, "note");
    assert_invalid(f.queue.assign(id, " ", &amina()).await, "assignee");
    assert_invalid(f.queue.assign(id, "two words", &amina()).await, "assignee");
    assert_invalid(
        f.queue
            .list(&ExceptionFilter {
                limit: 0,
                ..ExceptionFilter::default()
            })
            .await,
        "limit",
    );
    assert_invalid(
        cva_reconciliation::ExceptionStatus::parse("closed"),
        "status",
    );
    // Errors never repeat a note.
    let err = f
        .queue
        .comment(id, &format!("secret {}", "x".repeat(3000)), &amina())
        .await
        .unwrap_err();
    assert!(!err.to_string().contains("secret"), "{err}");

    assert_eq!(snapshot(&f).await, before, "nothing changed");

    // Unknown ids.
    for err in [
        f.queue.assign(9_999, "amina", &amina()).await.unwrap_err(),
        f.queue.comment(9_999, "x", &amina()).await.unwrap_err(),
        f.queue.resolve(9_999, "x", &amina()).await.unwrap_err(),
        f.queue
            .propose_adjustment(9_999, "x", &fee_lines(), &amina())
            .await
            .unwrap_err(),
        f.queue
            .approve_adjustment(9_999, None, &amina())
            .await
            .unwrap_err(),
        f.queue
            .reject_adjustment(9_999, "x", &amina())
            .await
            .unwrap_err(),
        f.queue.get(9_999).await.unwrap_err(),
    ] {
        assert!(matches!(err, ExceptionError::NotFound { .. }), "{err:?}");
    }
    assert_eq!(snapshot(&f).await, before, "nothing changed");
    f.db.cleanup().await;
}

#[tokio::test]
async fn an_approval_the_ledger_refuses_changes_nothing() {
    let f = fixture().await;
    let id = f.ids[0];
    // More than the float holds: the ledger's balance rule refuses it at approval.
    let lines = vec![
        line(FEES, Side::Debit, 200_000),
        line(FLOAT, Side::Credit, 200_000),
    ];
    let adj = f
        .queue
        .propose_adjustment(id, "Too much", &lines, &amina())
        .await
        .unwrap();
    let before = snapshot(&f).await;
    let err = f
        .queue
        .approve_adjustment(adj.id, None, &moussa())
        .await
        .unwrap_err();
    assert!(matches!(err, ExceptionError::Ledger(_)), "{err:?}");
    assert!(err.to_string().contains(FLOAT), "{err}");
    assert_eq!(snapshot(&f).await, before, "nothing changed");
    assert_eq!(
        f.queue.adjustment(adj.id).await.unwrap().status,
        AdjustmentStatus::Proposed
    );
    // It can still be rejected, and a correct one proposed.
    f.queue
        .reject_adjustment(adj.id, "Amount too large", &moussa())
        .await
        .unwrap();
    assert_books_sound(&f.db.ledger).await;
    f.db.cleanup().await;
}

#[tokio::test]
async fn the_queue_lists_with_filters_and_pages() {
    let f = fixture().await;
    let (a, b, c) = (f.ids[0], f.ids[1], f.ids[2]);
    assert_eq!(f.ids.len(), 3);
    f.queue.assign(b, "amina", &moussa()).await.unwrap();
    f.queue.resolve(c, "Not ours", &moussa()).await.unwrap();

    let ids =
        |v: Vec<cva_reconciliation::ExceptionView>| v.iter().map(|e| e.id).collect::<Vec<_>>();
    let list = |filter: ExceptionFilter| {
        let queue = f.queue.clone();
        async move { ids(queue.list(&filter).await.unwrap()) }
    };
    assert_eq!(list(ExceptionFilter::default()).await, vec![a, b, c]);
    assert_eq!(
        list(ExceptionFilter {
            status: Some(ExceptionStatus::Open),
            ..ExceptionFilter::default()
        })
        .await,
        vec![a]
    );
    assert_eq!(
        list(ExceptionFilter {
            assignee: Some("amina".into()),
            ..ExceptionFilter::default()
        })
        .await,
        vec![b]
    );
    assert_eq!(
        list(ExceptionFilter {
            category: Some(Category::AmountMismatch),
            ..ExceptionFilter::default()
        })
        .await,
        vec![c]
    );
    assert_eq!(
        list(ExceptionFilter {
            statement_id: Some(f.statement),
            status: Some(ExceptionStatus::Resolved),
            ..ExceptionFilter::default()
        })
        .await,
        vec![c]
    );
    assert_eq!(
        list(ExceptionFilter {
            statement_id: Some(f.statement + 1),
            ..ExceptionFilter::default()
        })
        .await,
        Vec::<i64>::new()
    );
    // Pages by id.
    assert_eq!(
        list(ExceptionFilter {
            limit: 2,
            ..ExceptionFilter::default()
        })
        .await,
        vec![a, b]
    );
    assert_eq!(
        list(ExceptionFilter {
            after_id: b,
            limit: 2,
            ..ExceptionFilter::default()
        })
        .await,
        vec![c]
    );
    let view = f.queue.exception(a).await.unwrap();
    assert_eq!(
        (view.category, view.currency, view.amount, view.line_id),
        (Category::FeeMismatch, xof(), 500, Some(1))
    );
    assert_eq!(
        (view.key.as_str(), view.statement_rows.as_str()),
        ("fee_mismatch:1:2", "2")
    );
    f.db.cleanup().await;
}

#[tokio::test]
async fn two_approvals_at_once_post_one_entry() {
    let f = fixture().await;
    let entries = entry_count(&f.db.ledger).await;
    let mut adjustments = Vec::new();
    for id in [f.ids[0], f.ids[1]] {
        adjustments.push(
            f.queue
                .propose_adjustment(id, "Fee", &fee_lines(), &amina())
                .await
                .unwrap()
                .id,
        );
    }
    for adj in adjustments {
        let (q1, q2) = (f.queue.clone(), f.queue.clone());
        let (r1, r2) = tokio::join!(
            tokio::spawn(async move { q1.approve_adjustment(adj, None, &moussa()).await }),
            tokio::spawn(async move { q2.approve_adjustment(adj, None, &ctx("fatou")).await }),
        );
        let results = [r1.unwrap(), r2.unwrap()];
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, 1, "{results:?}");
        for r in &results {
            if let Err(e) = r {
                assert!(matches!(e, ExceptionError::Conflict(_)), "{e:?}");
            }
        }
    }
    assert_eq!(entry_count(&f.db.ledger).await, entries + 2);
    assert_eq!(bal(&f.db.ledger, FEES).await, 1_000);
    assert_books_sound(&f.db.ledger).await;
    f.db.cleanup().await;
}
