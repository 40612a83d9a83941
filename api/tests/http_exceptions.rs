//! The reconciliation exceptions queue over HTTP, driven in-process with
//! `tower::ServiceExt::oneshot` (real routing, extractors, middleware and database): an
//! adjustment proposed by one finance officer, refused to the same one (403 `same-person`),
//! approved by a second (posted once), an auditor who reads but may not act (403), resolution
//! with a note and its finality, bad input refused naming the field. SQLite, or PostgreSQL with
//! `CVA_TEST_DATABASE_URL`.

#![allow(clippy::unwrap_used)]

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use cva_access::password::Password;
use cva_access::{NewUser, Role, TokenKeys, Username};
use cva_api::http::auth::AppState;
use cva_api::http::startup;
use cva_households::msisdn::OperatorTable;
use cva_households::pii::PiiKeys;
use cva_ledger::account::{AccountCode, AccountSpec, AccountType, BalanceRule};
use cva_ledger::audit::{AuditContext, AuditQuery};
use cva_ledger::money::Currency;
use cva_ledger::testing::{assert_books_sound, bal, entry_count, transfer, TestDb};
use cva_reconciliation::{ColumnMapping, Statements};
use cva_registry::Registry;
use serde_json::{json, Value};
use tower::ServiceExt;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test";
const PASSWORD: &str = "correct horse battery staple";
const FLOAT: &str = "assets:float:sim";
const FEES: &str = "expense:fees:sim";
const FUNDS: &str = "funds:P1:mpca";

const STATEMENT: &str =
    "transaction_id,reference,msisdn,amount,currency,fee,status,completed_at,balance_after\n\
     SIMTX00000001,PL-1,22376123456,65000,XOF,500,completed,2024-03-01T10:22:33+00:00,99934500\n\
     SIMTX00000002,PL-2,22376123457,30000,XOF,250,failed,2024-03-01T11:00:00+00:00,99934500\n";

fn ctx(actor: &str) -> AuditContext {
    AuditContext {
        actor_id: None,
        actor: actor.into(),
        role: "operator".into(),
        request_id: "test".into(),
    }
}

fn xof() -> Currency {
    Currency::parse("XOF").unwrap()
}

struct Api {
    db: TestDb,
    state: AppState,
    app: Router,
}

impl Api {
    async fn new() -> Api {
        let db = TestDb::new().await;
        let keys = TokenKeys::from_secret(SECRET, chrono::Duration::minutes(15)).unwrap();
        let registry = Registry::new(
            db.ledger.clone(),
            PiiKeys::generate().0,
            OperatorTable::default_table(),
            "223",
        );
        let state = startup::state(db.ledger.clone(), keys, registry).await;
        let app = startup::app(state.clone());
        Api { db, state, app }
    }

    /// FIXTURE, not the reconciliation run: a statement, one run and two open exceptions
    /// (XOF) written by raw SQL as `run.rs` would; the accounts adjustments use, the float
    /// funded. Returns the exceptions' ids.
    async fn exceptions(&self) -> (i64, i64) {
        let statement = Statements::new(self.db.ledger.clone())
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
            "INSERT INTO reconciliations (statement_id, run_no, provider, currency, \
             window_seconds, payments_considered, summary, outcomes_posted, statement_opening, \
             statement_closing, ledger_opening, ledger_closing, difference, explained, \
             unexplained, run_by, run_at) VALUES ({statement}, 1, 'sim', 'XOF', 86400, 2, '{{}}', \
             0, 100000000, 99934500, 100000000, 99935000, 500, 500, 0, 'cli:tester', {at})"
        );
        let exception = |key: &str, category: &str| {
            format!(
                "INSERT INTO exceptions (statement_id, key, first_run, last_run, category, \
                 line_id, statement_rows, currency, amount, detail, created_at) VALUES \
                 ({statement}, '{key}', (SELECT MAX(id) FROM reconciliations), \
                 (SELECT MAX(id) FROM reconciliations), '{category}', 1, '2', 'XOF', 500, \
                 'fixture', {at})"
            )
        };
        let opened = format!(
            "INSERT INTO exception_events (exception_id, action, actor, note, at) \
             SELECT id, 'opened', 'cli:tester', NULL, {at} FROM exceptions"
        );
        let sql = [
            run,
            exception("fee_mismatch:1:2", "fee_mismatch"),
            exception("amount_mismatch:1:2", "amount_mismatch"),
            opened,
        ];
        let refs: Vec<&str> = sql.iter().map(String::as_str).collect();
        self.db.raw(&refs).await.unwrap();
        for (code, t, rule) in [
            (FLOAT, AccountType::Asset, BalanceRule::MustNotGoNegative),
            (FUNDS, AccountType::Fund, BalanceRule::MustNotGoNegative),
            (FEES, AccountType::Expense, BalanceRule::MayOverdraw),
        ] {
            let spec = AccountSpec::new(AccountCode::parse(code).unwrap(), t, xof(), rule).unwrap();
            self.db.ledger.open_account(spec).await.unwrap();
        }
        self.db
            .ledger
            .post(transfer("fund-float", FLOAT, FUNDS, 100_000))
            .await
            .unwrap();
        let (s, v) = self
            .get(
                "/v1/exceptions",
                &self.user("setup", &[Role::Auditor]).await,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        (v[0]["id"].as_i64().unwrap(), v[1]["id"].as_i64().unwrap())
    }

    /// Creates a user and logs in: the access token.
    async fn user(&self, name: &str, roles: &[Role]) -> String {
        self.state
            .access
            .create_user(
                NewUser {
                    username: Username::parse(name).unwrap(),
                    password: Password::parse(PASSWORD).unwrap(),
                    roles: roles.to_vec(),
                    programmes: Vec::new(),
                },
                &ctx("setup"),
            )
            .await
            .unwrap();
        let (s, v) = self
            .call(
                "POST",
                "/v1/auth/login",
                None,
                Some(json!({"username": name, "password": PASSWORD})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["access_token"].as_str().unwrap().to_owned()
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 16 * 1024 * 1024)
            .await
            .unwrap();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, value)
    }

    async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call("GET", path, Some(token), None).await
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call("POST", path, Some(token), Some(body)).await
    }
}

fn problem_type(v: &Value) -> &str {
    v["type"]
        .as_str()
        .unwrap_or_default()
        .rsplit('/')
        .next()
        .unwrap_or_default()
}

#[tokio::test]
async fn adjustments_need_a_second_finance_officer_and_auditors_only_read() {
    let api = Api::new().await;
    let (a, b) = api.exceptions().await;
    let amina = api.user("amina", &[Role::FinanceOfficer]).await;
    let moussa = api.user("moussa", &[Role::FinanceOfficer]).await;
    let awa = api.user("awa", &[Role::Auditor]).await;
    let admin = api.user("root", &[Role::Admin]).await;

    // Every role reads.
    for token in [&awa, &admin, &amina] {
        let (s, v) = api.get("/v1/exceptions?status=open", token).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v.as_array().unwrap().len(), 2);
    }
    let (s, v) = api.get(&format!("/v1/exceptions/{a}"), &awa).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["exception"]["status"], "open");
    assert_eq!(v["events"][0]["action"], "opened");

    // An auditor (and an admin) may not act.
    let lines = json!([
        {"account": FEES, "side": "debit", "amount": "500"},
        {"account": FLOAT, "side": "credit", "amount": "500"}
    ]);
    let proposal = json!({"description": "Provider fee not booked", "lines": lines});
    for token in [&awa, &admin] {
        let (s, v) = api
            .post(
                &format!("/v1/exceptions/{a}/adjustments"),
                token,
                proposal.clone(),
            )
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
        let (s, _) = api
            .post(
                &format!("/v1/exceptions/{a}/resolve"),
                token,
                json!({"note": "fine"}),
            )
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN);
    }

    // Bad lines are refused naming the field.
    let over_precise = json!({"description": "Fee", "lines": [
        {"account": FEES, "side": "debit", "amount": "500"},
        {"account": FLOAT, "side": "credit", "amount": "500.5"}]});
    let (s, v) = api
        .post(
            &format!("/v1/exceptions/{a}/adjustments"),
            &amina,
            over_precise,
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("lines[1].amount"),
        "{v}"
    );
    let unbalanced = json!({"description": "Fee", "lines": [
        {"account": FEES, "side": "debit", "amount": "500"},
        {"account": FLOAT, "side": "credit", "amount": "400"}]});
    let (s, v) = api
        .post(
            &format!("/v1/exceptions/{a}/adjustments"),
            &amina,
            unbalanced,
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["detail"].as_str().unwrap().starts_with("lines"), "{v}");
    let number = json!({"description": "Fee", "lines": [
        {"account": FEES, "side": "debit", "amount": 500},
        {"account": FLOAT, "side": "credit", "amount": 500}]});
    let (s, v) = api
        .post(&format!("/v1/exceptions/{a}/adjustments"), &amina, number)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    // Amina proposes.
    let (s, v) = api
        .post(&format!("/v1/exceptions/{a}/adjustments"), &amina, proposal)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["status"], "proposed");
    assert_eq!(v["proposed_by"], "amina");
    assert_eq!(
        v["lines"][1],
        json!({"account": FLOAT, "side": "credit", "amount": 500})
    );
    let adj = v["id"].as_i64().unwrap();
    let entries = entry_count(&api.db.ledger).await;

    // Amina cannot approve it; an auditor cannot either; nothing is posted.
    let (s, v) = api
        .call(
            "POST",
            &format!("/v1/adjustments/{adj}/approve"),
            Some(&amina),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(problem_type(&v), "same-person", "{v}");
    let (s, v) = api
        .post(&format!("/v1/adjustments/{adj}/approve"), &awa, json!({}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(problem_type(&v), "forbidden", "{v}");
    let (s, v) = api
        .post(
            &format!("/v1/adjustments/{adj}/reject"),
            &amina,
            json!({"note": "no"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(entry_count(&api.db.ledger).await, entries);
    // Nor resolve the exception while it awaits approval.
    let (s, v) = api
        .post(
            &format!("/v1/exceptions/{a}/resolve"),
            &moussa,
            json!({"note": "done"}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");

    // Moussa approves: one entry, the exception resolved.
    let (s, v) = api
        .post(
            &format!("/v1/adjustments/{adj}/approve"),
            &moussa,
            json!({"note": "Fee on the provider's invoice"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "approved");
    assert_eq!(v["decided_by"], "moussa");
    assert!(v["entry_id"].is_string(), "{v}");
    assert_eq!(entry_count(&api.db.ledger).await, entries + 1);
    assert_eq!(bal(&api.db.ledger, FEES).await, 500);
    assert_eq!(bal(&api.db.ledger, FLOAT).await, 99_500);

    // Approving again posts nothing.
    let (s, v) = api
        .call(
            "POST",
            &format!("/v1/adjustments/{adj}/approve"),
            Some(&moussa),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(entry_count(&api.db.ledger).await, entries + 1);

    let (s, v) = api.get(&format!("/v1/exceptions/{a}"), &awa).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["exception"]["status"], "resolved");
    assert_eq!(v["exception"]["resolved_by"], "moussa");
    let history: Vec<(&str, &str)> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["actor"].as_str().unwrap()))
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

    // The other exception: assigned to a finance officer only, resolved with a note, final.
    let (s, v) = api
        .post(
            &format!("/v1/exceptions/{b}/assign"),
            &moussa,
            json!({"assignee": "awa"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["detail"].as_str().unwrap().starts_with("assignee"), "{v}");
    let (s, v) = api
        .post(
            &format!("/v1/exceptions/{b}/assign"),
            &moussa,
            json!({"assignee": "amina"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["status"].as_str(), v["assignee"].as_str()),
        (Some("assigned"), Some("amina"))
    );
    let (s, v) = api
        .post(
            &format!("/v1/exceptions/{b}/comment"),
            &amina,
            json!({"note": "Asked the provider"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = api
        .post(
            &format!("/v1/exceptions/{b}/resolve"),
            &amina,
            json!({"note": "  "}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["detail"].as_str().unwrap().starts_with("note"), "{v}");
    let (s, v) = api
        .post(
            &format!("/v1/exceptions/{b}/resolve"),
            &amina,
            json!({"note": "The provider corrected its statement"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "resolved");
    let (s, v) = api
        .post(
            &format!("/v1/exceptions/{b}/resolve"),
            &moussa,
            json!({"note": "again"}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");

    // Filters, unknown ids, bad parameters.
    let (s, v) = api
        .get("/v1/exceptions?status=resolved&category=fee_mismatch", &awa)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["id"], a);
    let (s, v) = api.get("/v1/exceptions?status=closed", &awa).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["detail"].as_str().unwrap().starts_with("status"), "{v}");
    let (s, _) = api.get("/v1/exceptions/9999", &awa).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = api
        .post("/v1/adjustments/9999/reject", &moussa, json!({"note": "x"}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Every change is in the audit trail.
    let events = api
        .db
        .ledger
        .audit_events(&AuditQuery {
            limit: 1000,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    let actions: Vec<&str> = events
        .iter()
        .filter(|e| e.action.starts_with("exception.") || e.action == "ledger.post")
        .map(|e| e.action.as_str())
        .collect();
    assert_eq!(
        actions,
        vec![
            "exception.propose_adjustment",
            "exception.approve_adjustment",
            "ledger.post",
            "exception.assign",
            "exception.comment",
            "exception.resolve",
        ]
    );

    // Documented.
    let (_, doc) = api.call("GET", "/v1/openapi.json", None, None).await;
    for p in [
        "/v1/exceptions",
        "/v1/exceptions/{id}",
        "/v1/exceptions/{id}/adjustments",
        "/v1/adjustments/{id}/approve",
    ] {
        assert!(doc["paths"][p].is_object(), "{p} is not documented");
    }
    assert_books_sound(&api.db.ledger).await;
    api.db.cleanup().await;
}
