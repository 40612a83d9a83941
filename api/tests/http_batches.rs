//! Payment batches over HTTP, driven in-process with `tower::ServiceExt::oneshot` (real routing,
//! extractors, middleware and database) against a real GSMA simulator on a loopback port: the
//! whole lifecycle with separate users (an officer prepares, three finance officers sign off, a
//! background send, a re-issue), the role matrix, the maker-checker refusals, a release refused
//! for want of float with nothing changed, bad bodies refused naming the field, and a server
//! without payments configuration. SQLite, or PostgreSQL with `CVA_TEST_DATABASE_URL`.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use cva_access::password::Password;
use cva_access::{NewUser, Role, TokenKeys, Username};
use cva_api::http::auth::AppState;
use cva_api::http::startup;
use cva_api::payments::Payments;
use cva_batches::{Batches, PaymentsConfig, SendOptions};
use cva_households::msisdn::OperatorTable;
use cva_households::pii::PiiKeys;
use cva_ledger::audit::{AuditContext, AuditQuery};
use cva_ledger::testing::{assert_books_sound, bal, entry_count, TestDb};
use cva_providers::sim::{RunningSim, SimConfig, Simulator};
use cva_registry::Registry;
use serde_json::{json, Value};
use tower::ServiceExt;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test";
const PASSWORD: &str = "correct horse battery staple";
const P: &str = "MLI-MPCA-24";

fn ctx(actor: &str) -> AuditContext {
    AuditContext {
        actor_id: None,
        actor: actor.into(),
        role: "operator".into(),
        request_id: "test".into(),
    }
}

/// Orange (gsma-mmapi, the simulator) and Moov (file adapter); one person per step.
fn config(base_url: &str, token_file: &str) -> String {
    json!({
        "providers": [
            {"name": "orange-money", "adapter": "gsma-mmapi", "base_url": base_url,
             "credentials": {"file": token_file}, "currency": "XOF", "operators": ["orange-ml"],
             "min_amount": "500", "max_amount": "1000000", "fees": {"percent": "1", "minimum": "100"}},
            {"name": "moov-money", "adapter": "file", "currency": "XOF", "operators": ["moov-ml"],
             "min_amount": "500", "max_amount": "1000000", "fees": {"flat": "150"}}
        ],
        "approvals": [{"above": "0", "approvals": 1, "authorisations": 1, "releases": 1}]
    })
    .to_string()
}

/// Six verified households with a granted 20,000 XOF entitlement each: 1, 2 and 3 on Orange
/// (the simulator pays 1 and 2; 3's number ends in 0001, which it rejects), 4 and 5 on Moov,
/// 6 without a phone.
async fn entitlements(reg: &Registry) {
    let phones: Vec<String> = [
        "+223 76 10 00 11",
        "+223 76 10 00 12",
        "+223 76 10 00 01",
        "+223 66 10 00 13",
        "+223 66 10 00 14",
        "",
    ]
    .iter()
    .map(|p| (*p).to_owned())
    .collect();
    cva_batches::testing::entitlements(reg, &phones).await;
}

struct Api {
    db: TestDb,
    state: AppState,
    app: Router,
    sim: Option<RunningSim>,
    _dir: tempfile::TempDir,
}

impl Api {
    /// With payments configured against a fresh simulator, or without any configuration.
    async fn new(configured: bool) -> Api {
        let db = TestDb::new().await;
        let keys = TokenKeys::from_secret(SECRET, chrono::Duration::minutes(15)).unwrap();
        let registry = Registry::new(
            db.ledger.clone(),
            PiiKeys::generate().0,
            OperatorTable::default_table(),
            "223",
        );
        let dir = tempfile::tempdir().unwrap();
        let mut state = startup::state(db.ledger.clone(), keys, registry.clone()).await;
        let mut sim = None;
        if configured {
            let running = Simulator::spawn(SimConfig::default(), "127.0.0.1:0".parse().unwrap())
                .await
                .unwrap();
            let token = dir.path().join("orange.token");
            std::fs::write(&token, "sim-token\n").unwrap();
            let config =
                PaymentsConfig::from_json(&config(&running.base_url, &token.display().to_string()))
                    .unwrap();
            let batches = Batches::new(registry.clone(), config);
            batches
                .open_provider_accounts(&ctx("startup"))
                .await
                .unwrap();
            entitlements(&registry).await;
            let options = SendOptions {
                request_timeout: Duration::from_secs(5),
                poll_interval: Duration::from_millis(50),
                settle_timeout: Duration::from_secs(20),
                ..SendOptions::default()
            };
            state = state.with_payments(Payments::new(batches).with_send_options(options));
            sim = Some(running);
        }
        let app = startup::app(state.clone());
        Api {
            db,
            state,
            app,
            sim,
            _dir: dir,
        }
    }

    /// Creates a user and logs in: the access token.
    async fn user(&self, name: &str, roles: &[Role], programmes: &[&str]) -> String {
        self.state
            .access
            .create_user(
                NewUser {
                    username: Username::parse(name).unwrap(),
                    password: Password::parse(PASSWORD).unwrap(),
                    roles: roles.to_vec(),
                    programmes: programmes.iter().map(|p| (*p).to_owned()).collect(),
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
                Some(json!({"username": name, "password": PASSWORD}).to_string()),
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
        body: Option<String>,
    ) -> (StatusCode, Value) {
        self.call_as(method, path, token, "application/json", body)
            .await
    }

    async fn call_as(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: Option<String>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, content_type)
                .body(Body::from(b)),
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
        self.call("POST", path, Some(token), Some(body.to_string()))
            .await
    }

    async fn post_raw(&self, path: &str, token: &str, body: &str) -> (StatusCode, Value) {
        self.call("POST", path, Some(token), Some(body.to_owned()))
            .await
    }

    async fn post_empty(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call("POST", path, Some(token), None).await
    }

    async fn float(&self, token: &str, provider: &str) -> Value {
        let (s, v) = self.get("/v1/providers", token).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v.as_array()
            .unwrap()
            .iter()
            .find(|f| f["provider"] == provider)
            .cloned()
            .unwrap()
    }

    async fn cleanup(self) {
        if let Some(sim) = self.sim {
            sim.shutdown().await;
        }
        self.db.cleanup().await;
    }
}

fn problem(v: &Value, status: u16, kind: &str, words: &str) {
    assert_eq!(v["status"], status, "{v}");
    assert!(
        v["type"].as_str().unwrap().ends_with(&format!("/{kind}")),
        "{kind}: {v}"
    );
    assert!(
        v["detail"].as_str().unwrap().contains(words),
        "`{words}` not in {v}"
    );
}

#[tokio::test]
async fn a_file_provider_batch_is_exported_and_its_result_file_imported() {
    let api = Api::new(true).await;
    let officer = api.user("officer", &[Role::ProgrammeOfficer], &[]).await;
    let fin1 = api.user("fin1", &[Role::FinanceOfficer], &[]).await;
    let fin2 = api.user("fin2", &[Role::FinanceOfficer], &[]).await;
    let fin3 = api.user("fin3", &[Role::FinanceOfficer], &[]).await;
    let moov = json!({"programme": P, "cycle": "2024-03", "provider": "moov-money"});
    let (s, v) = api.post("/v1/batches", &officer, moov).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["batches"][0]["id"].as_i64().unwrap();
    let batch = |p: &str| format!("/v1/batches/{id}{p}");
    let (s, v) = api.post_empty(&batch("/submit"), &officer).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    for (step, who) in [("/approve", &fin1), ("/authorise", &fin2)] {
        let (s, v) = api.post_empty(&batch(step), who).await;
        assert_eq!(s, StatusCode::OK, "{step}: {v}");
    }
    let (s, v) = api
        .post(
            "/v1/providers/moov-money/float",
            &fin1,
            json!({"amount": "100000", "from": "assets:bank", "reference": "MOOV-1"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = api.post_empty(&batch("/release"), &fin3).await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // The export: programme officers may not; finance gets the CSV, the same twice.
    let (s, _) = api.post_empty(&batch("/export"), &officer).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, csv) = api.post_empty(&batch("/export"), &fin1).await;
    assert_eq!(s, StatusCode::OK);
    let csv = csv.as_str().unwrap().to_owned();
    let (_, again) = api.post_empty(&batch("/export"), &fin1).await;
    assert_eq!(again.as_str().unwrap(), csv);
    let rows: Vec<&str> = csv.lines().collect();
    assert!(
        rows[0].starts_with("reference,msisdn,amount,currency,fee"),
        "{csv}"
    );
    assert_eq!(rows.len(), 3, "two Moov households: {csv}");
    let refs: Vec<&str> = rows[1..]
        .iter()
        .map(|r| r.split(',').next().unwrap())
        .collect();

    // Result files: the wrong content type, an unknown reference: refused, nothing changed.
    let (s, v) = api
        .call_as(
            "POST",
            &batch("/results"),
            Some(&fin1),
            "application/json",
            Some("{}".into()),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let bad = "reference,status,provider_transaction_id,reason\n999999,completed,MV-1,\n";
    let (s, v) = api
        .call_as(
            "POST",
            &batch("/results"),
            Some(&fin1),
            "text/csv",
            Some(bad.into()),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["errors"][0]["row"], 2, "{v}");
    assert_eq!(v["errors"][0]["column"], "reference", "{v}");
    assert_eq!(
        bal(&api.db.ledger, "liabilities:in-transit:moov-money").await,
        40_000
    );
    let good = format!(
        "reference,status,provider_transaction_id,reason\n{},completed,MV-1,\n{},failed,,identifierError: account not registered\n",
        refs[0], refs[1]
    );
    let (s, v) = api
        .call_as(
            "POST",
            &batch("/results"),
            Some(&fin1),
            "text/csv",
            Some(good.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["completed"].as_i64(), v["failed"].as_i64()),
        (Some(1), Some(1)),
        "{v}"
    );
    let (s, v) = api
        .call_as(
            "POST",
            &batch("/results"),
            Some(&fin1),
            "text/csv",
            Some(good),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["already_resolved"], 2,
        "the same file again changes nothing: {v}"
    );
    let (_, v) = api.get(&batch(""), &fin1).await;
    assert_eq!(v["batch"]["status"], "partially_completed", "{v}");
    assert_eq!(
        bal(&api.db.ledger, "liabilities:in-transit:moov-money").await,
        0
    );
    assert_eq!(bal(&api.db.ledger, "expense:fees:moov-money").await, 150);
    assert_books_sound(&api.db.ledger).await;
    api.cleanup().await;
}

#[tokio::test]
async fn a_batch_goes_from_draft_to_paid_with_four_eyes_at_every_step() {
    let api = Api::new(true).await;
    let officer = api.user("officer", &[Role::ProgrammeOfficer], &[]).await;
    let officer2 = api.user("officer2", &[Role::ProgrammeOfficer], &[]).await;
    // Both roles: may prepare and sign, but never sign what they prepared.
    let both = api
        .user("both", &[Role::ProgrammeOfficer, Role::FinanceOfficer], &[])
        .await;
    let fin1 = api.user("fin1", &[Role::FinanceOfficer], &[]).await;
    let fin2 = api.user("fin2", &[Role::FinanceOfficer], &[]).await;
    let fin3 = api.user("fin3", &[Role::FinanceOfficer], &[]).await;
    let admin = api.user("admin", &[Role::Admin], &[]).await;
    let auditor = api.user("auditor", &[Role::Auditor], &[]).await;
    let elsewhere = api.user("elsewhere", &[Role::Auditor], &["OTHER-P"]).await;

    // ---- create: programme officers only; bad bodies refused naming the field, nothing made.
    let orange = json!({"programme": P, "cycle": "2024-03", "provider": "orange-money"});
    for t in [&fin1, &admin, &auditor] {
        let (s, v) = api.post("/v1/batches", t, orange.clone()).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
        problem(&v, 403, "forbidden", "programme_officer");
    }
    for (body, status, words) in [
        (r#"{"programme": "MLI-MPCA-24", "bogus": 1}"#, 400, "bogus"),
        (
            r#"{"programme": "MLI-MPCA-24", "max_lines": "ten"}"#,
            400,
            "max_lines",
        ),
        (
            r#"{"programme": "MLI-MPCA-24", "max_lines": -1}"#,
            400,
            "max_lines",
        ),
        (r#"{"programme": "MLI-MPCA-24", "#, 400, ""),
        (r#"{"cycle": "2024-03"}"#, 400, "programme"),
        (
            r#"{"programme": "MLI-MPCA-24", "max_lines": 0}"#,
            422,
            "max_lines",
        ),
        (
            r#"{"programme": "MLI-MPCA-24", "modality": "cash"}"#,
            422,
            "modality",
        ),
        (
            r#"{"programme": "MLI-MPCA-24", "provider": "wave"}"#,
            422,
            "provider",
        ),
    ] {
        let (s, v) = api.post_raw("/v1/batches", &officer, body).await;
        assert_eq!(s.as_u16(), status, "{body}: {v}");
        assert!(v["detail"].as_str().unwrap().contains(words), "{body}: {v}");
    }
    let (s, v) = api
        .post("/v1/batches", &officer, json!({"programme": "NOPE-P"}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");

    let (s, v) = api.post("/v1/batches", &officer, orange.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let made = v["batches"].as_array().unwrap();
    assert_eq!(made.len(), 1, "{v}");
    let b = &made[0];
    // Listed for every role of its programme; filtered by status; bad parameters named.
    let (s, v) = api.get("/v1/batches?status=draft", &auditor).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v[0]["id"], b["id"]);
    let (_, v) = api
        .get(&format!("/v1/batches?programme={P}&status=sending"), &fin1)
        .await;
    assert_eq!(v.as_array().unwrap().len(), 0, "{v}");
    let (s, v) = api.get("/v1/batches?status=paid", &fin1).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("status"), "{v}");
    let (s, v) = api.get("/v1/batches", &elsewhere).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v.as_array().unwrap().len(),
        0,
        "other programmes' batches are not listed"
    );
    assert_eq!(
        (
            &b["provider"],
            &b["status"],
            &b["line_count"],
            &b["total"],
            &b["fees"],
            &b["prepared_by"]
        ),
        (
            &json!("orange-money"),
            &json!("draft"),
            &json!(3),
            &json!(60_000),
            &json!(600),
            &json!("officer")
        )
    );
    let id = b["id"].as_i64().unwrap();
    let batch = |suffix: &str| format!("/v1/batches/{id}{suffix}");
    // Nothing is due twice.
    let (s, v) = api.post("/v1/batches", &officer, orange.clone()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["batches"], json!([]));
    // The rest (Moov) prepared by the user holding both roles; one household has no phone.
    let (s, v) = api
        .post("/v1/batches", &both, json!({"programme": P}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["no_provider"], 1);
    let moov = v["batches"][0]["id"].as_i64().unwrap();
    assert_eq!(v["batches"][0]["provider"], "moov-money");

    // ---- reads: every role; outside the caller's programmes, not found.
    for t in [&officer, &fin1, &admin, &auditor] {
        let (s, v) = api.get(&batch(""), t).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["lines"]["open"], 3);
    }
    let (s, v) = api.get(&batch(""), &elsewhere).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (s, _) = api.get(&batch("/lines"), &elsewhere).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = api.get("/v1/batches/abc", &auditor).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = api.get("/v1/batches/999999", &auditor).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");

    // ---- submit: the preparer only.
    let (s, v) = api.post_empty(&batch("/submit"), &officer2).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, v) = api.post_empty(&batch("/submit"), &fin1).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, v) = api.post_empty(&batch("/submit"), &officer).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (&v["status"], &v["approvals_required"]),
        (&json!("submitted"), &json!(1))
    );
    let (s, v) = api.post_empty(&batch("/submit"), &officer).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");

    // ---- maker-checker: the preparer never approves, even holding the finance role.
    let (s, v) = api
        .post_empty(&format!("/v1/batches/{moov}/submit"), &both)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = api
        .post_empty(&format!("/v1/batches/{moov}/approve"), &both)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    problem(&v, 403, "same-person", "prepared by you");
    // Roles: programme officers and admins never sign.
    for t in [&officer, &officer2, &admin, &auditor] {
        let (s, v) = api.post_empty(&batch("/approve"), t).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
        problem(&v, 403, "forbidden", "finance_officer");
    }
    let (s, v) = api.post_empty(&batch("/approve"), &fin1).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "approved");
    // The same person never signs twice.
    let (s, v) = api.post_empty(&batch("/authorise"), &fin1).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    problem(&v, 403, "same-person", "already signed");
    let (s, v) = api.post_empty(&batch("/release"), &fin2).await;
    assert_eq!(s, StatusCode::CONFLICT, "out of order: {v}");
    let (s, v) = api.post_empty(&batch("/authorise"), &fin2).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "authorised");

    // ---- release without float: 422, nothing changed.
    let entries = entry_count(&api.db.ledger).await;
    let (s, v) = api.post_empty(&batch("/release"), &fin3).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("cannot cover"),
        "{v}"
    );
    assert_eq!(entry_count(&api.db.ledger).await, entries);
    let (_, v) = api.get(&batch(""), &auditor).await;
    assert_eq!(v["batch"]["status"], "authorised");
    assert_eq!(v["batch"]["signoffs"].as_array().unwrap().len(), 2);
    assert_eq!(
        bal(&api.db.ledger, "liabilities:in-transit:orange-money").await,
        0
    );

    // ---- fund the float: finance only; bad bodies refused naming the field.
    let fund = "/v1/providers/orange-money/float";
    let good = json!({"amount": "100000", "from": "assets:bank", "reference": "BANK-1"});
    for t in [&officer, &admin, &auditor] {
        let (s, v) = api.post(fund, t, good.clone()).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    }
    for (body, status, words) in [
        (
            r#"{"amount": "-5", "from": "assets:bank", "reference": "R"}"#,
            422,
            "amount",
        ),
        (
            r#"{"amount": "0", "from": "assets:bank", "reference": "R"}"#,
            422,
            "amount",
        ),
        (
            r#"{"amount": "100.5", "from": "assets:bank", "reference": "R"}"#,
            422,
            "amount",
        ),
        (
            r#"{"amount": "lots", "from": "assets:bank", "reference": "R"}"#,
            422,
            "amount",
        ),
        (
            r#"{"amount": 100000, "from": "assets:bank", "reference": "R"}"#,
            400,
            "amount",
        ),
        (
            r#"{"amount": "100000", "from": "assets:bank", "reference": "R", "note": 1}"#,
            400,
            "note",
        ),
        (
            r#"{"amount": "100000", "from": "assets:bank"}"#,
            400,
            "reference",
        ),
        (r#"{"amount": "100000", "from": "assets:bank", "#, 400, ""),
        (
            r#"{"amount": "100000", "from": "funds:MLI-MPCA-24:mpca", "reference": "R"}"#,
            422,
            "from",
        ),
        (
            r#"{"amount": "100000", "from": "assets:float:orange-money", "reference": "R"}"#,
            422,
            "from",
        ),
        (
            r#"{"amount": "100000", "from": "assets:bank", "reference": " "}"#,
            422,
            "reference",
        ),
    ] {
        let (s, v) = api.post_raw(fund, &fin1, body).await;
        assert_eq!(s.as_u16(), status, "{body}: {v}");
        assert!(v["detail"].as_str().unwrap().contains(words), "{body}: {v}");
    }
    let (s, v) = api
        .post("/v1/providers/wave/float", &fin1, good.clone())
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(entry_count(&api.db.ledger).await, entries, "nothing posted");
    let (s, v) = api.post(fund, &fin1, good.clone()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (&v["float"], &v["available"]),
        (&json!(100_000), &json!(100_000))
    );
    // Idempotent by reference.
    let (s, v) = api.post(fund, &fin2, good.clone()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["float"], 100_000);

    // ---- release, then send in the background.
    let (s, v) = api.post_empty(&batch("/release"), &fin3).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "released");
    assert_eq!(
        bal(&api.db.ledger, "liabilities:in-transit:orange-money").await,
        60_000
    );
    let (s, v) = api.post_empty(&batch("/cancel"), &officer).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "a reason is required: {v}");
    let (s, v) = api
        .post(&batch("/cancel"), &officer, json!({"reason": "too late"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "released: {v}");
    for t in [&officer, &admin, &auditor] {
        let (s, v) = api.post_empty(&batch("/send"), t).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    }
    // The Moov batch is not released (and its provider takes files).
    let (s, v) = api
        .post_empty(&format!("/v1/batches/{moov}/send"), &fin1)
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let (s, v) = api.post_empty(&batch("/send"), &fin1).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["id"], id);
    let (s, v) = api.post_empty(&batch("/send"), &fin2).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    problem(&v, 409, "send-running", "being sent");

    // Follow it until the send is over.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let detail = loop {
        let (s, v) = api.get(&batch(""), &auditor).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        if v["send"]["running"] == false && v["batch"]["status"] != "sending" {
            break v;
        }
        assert!(tokio::time::Instant::now() < deadline, "still sending: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(detail["send"]["last_error"], Value::Null, "{detail}");
    assert_eq!(detail["batch"]["status"], "partially_completed", "{detail}");
    assert_eq!(
        detail["lines"],
        json!({"open": 0, "completed": 2, "failed": 1, "unknown": 0, "cancelled": 0})
    );
    let attempts = detail["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{detail}");
    assert_eq!(
        (&attempts[0]["status"], &attempts[0]["line_count"]),
        (&json!("settled"), &json!(3))
    );

    // Lines, paged, without personal data.
    let (s, v) = api.get(&batch("/lines?limit=2"), &auditor).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (&v["total"], v["lines"].as_array().unwrap().len()),
        (&json!(3), 2)
    );
    let (s, v) = api.get(&batch("/lines?offset=2"), &auditor).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let last = &v["lines"][0];
    assert_eq!(
        (&last["status"], &last["failure_code"]),
        (&json!("failed"), &json!("invalid_msisdn"))
    );
    let (_, all) = api.get(&batch("/lines"), &fin1).await;
    let text = all.to_string();
    for personal in ["761000", "Sangare", "+223", "NINA"] {
        assert!(!text.contains(personal), "{personal} in {text}");
    }
    assert_eq!(
        all["lines"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["status"] == "completed" && l["provider_transaction_id"].is_string())
            .count(),
        2
    );
    for bad in ["?limit=0", "?limit=5000", "?offset=-1", "?bogus=1"] {
        let (s, v) = api.get(&batch(&format!("/lines{bad}")), &fin1).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
    }

    // The provider's money: 2 × 20,000 paid with 2 × 200 in fees, nothing left in transit.
    let f = api.float(&auditor, "orange-money").await;
    assert_eq!(
        (&f["float"], &f["in_transit"], &f["fees"], &f["available"]),
        (&json!(59_600), &json!(0), &json!(400), &json!(59_600)),
        "{f}"
    );
    let sim = api.sim.as_ref().unwrap().state();
    assert_eq!(
        sim.transactions
            .iter()
            .filter(|t| t.status.as_str() == "completed")
            .count(),
        2
    );
    // The failed household is owed again; the paid ones are not.
    assert_eq!(
        bal(&api.db.ledger, "liabilities:entitlements:MLI-MPCA-24:hh-3").await,
        20_000
    );
    assert_eq!(
        bal(&api.db.ledger, "liabilities:entitlements:MLI-MPCA-24:hh-1").await,
        0
    );

    // ---- asking the provider about reversals: finance only; none of these was reversed.
    let (s, v) = api.post_empty(&batch("/check-reversals"), &officer2).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, v) = api.post_empty(&batch("/check-reversals"), &fin1).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["reversed"], json!([]));

    // ---- re-issue the failed line: programme officers; the caller prepares the follow-up.
    let (s, v) = api.post_empty(&batch("/reissue"), &fin1).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, v) = api.post_empty(&batch("/reissue"), &officer2).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        (
            &v["follow_up_of"],
            &v["line_count"],
            &v["status"],
            &v["prepared_by"]
        ),
        (&json!(id), &json!(1), &json!("draft"), &json!("officer2"))
    );
    let (s, v) = api.post_empty(&batch("/reissue"), &officer2).await;
    assert_eq!(s, StatusCode::CONFLICT, "nothing left: {v}");

    // ---- cancel the Moov batch (before release): its entitlements are due again.
    let (s, v) = api
        .post(
            &format!("/v1/batches/{moov}/cancel"),
            &officer,
            json!({"reason": "wrong provider", "extra": 1}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = api
        .post(
            &format!("/v1/batches/{moov}/cancel"),
            &fin1,
            json!({"reason": "x"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, v) = api
        .post(
            &format!("/v1/batches/{moov}/cancel"),
            &officer,
            json!({"reason": " "}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, v) = api
        .post(
            &format!("/v1/batches/{moov}/cancel"),
            &officer,
            json!({"reason": "wrong provider"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "cancelled");
    let (s, v) = api
        .post(
            "/v1/batches",
            &officer,
            json!({"programme": P, "provider": "moov-money"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["batches"][0]["line_count"], 2);

    // ---- every step audited as the person who took it, under the role that allowed it.
    let events = api
        .db
        .ledger
        .audit_events(&AuditQuery {
            object_type: Some("batch".into()),
            object_id: Some(id.to_string()),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    let who = |action: &str| -> Vec<(String, String)> {
        events
            .iter()
            .filter(|e| e.action == action)
            .map(|e| (e.actor.clone(), e.role.clone()))
            .collect()
    };
    let po = |n: &str| (n.to_owned(), "programme_officer".to_owned());
    let fo = |n: &str| (n.to_owned(), "finance_officer".to_owned());
    assert_eq!(who("batch.create"), [po("officer")]);
    assert_eq!(who("batch.submit"), [po("officer")]);
    assert_eq!(who("batch.approve"), [fo("fin1")]);
    assert_eq!(who("batch.authorise"), [fo("fin2")]);
    assert_eq!(who("batch.release"), [fo("fin3")]);
    assert_eq!(who("batch.send"), [fo("fin1")]);
    assert!(events.iter().all(|e| !e.request_id.is_empty()));
    assert_books_sound(&api.db.ledger).await;
    api.cleanup().await;
}

#[tokio::test]
async fn without_payments_configuration_the_server_runs_and_batch_routes_say_why() {
    let api = Api::new(false).await;
    let officer = api.user("officer", &[Role::ProgrammeOfficer], &[]).await;
    let fin = api.user("fin", &[Role::FinanceOfficer], &[]).await;
    let (s, v) = api.call("GET", "/healthz", None, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    for (method, path, token) in [
        ("POST", "/v1/batches", &officer),
        ("GET", "/v1/batches/1", &fin),
        ("GET", "/v1/batches/1/lines", &fin),
        ("POST", "/v1/batches/1/approve", &fin),
        ("POST", "/v1/batches/1/send", &fin),
        ("GET", "/v1/providers", &officer),
    ] {
        let body = (method == "POST").then(|| json!({"programme": P}).to_string());
        let (s, v) = api.call(method, path, Some(token), body).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{path}: {v}");
        problem(&v, 503, "payments-not-configured", "CVA_PAYMENTS_CONFIG");
    }
    // Authentication and roles come first.
    let (s, _) = api.call("GET", "/v1/providers", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = api.post_empty("/v1/batches/1/approve", &officer).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Documented.
    let (s, doc) = api.get("/v1/openapi.json", &officer).await;
    assert_eq!(s, StatusCode::OK);
    assert!(doc["paths"]["/v1/batches"]["get"].is_object());
    for p in [
        "/v1/batches",
        "/v1/batches/{id}",
        "/v1/batches/{id}/lines",
        "/v1/batches/{id}/submit",
        "/v1/batches/{id}/approve",
        "/v1/batches/{id}/authorise",
        "/v1/batches/{id}/release",
        "/v1/batches/{id}/cancel",
        "/v1/batches/{id}/reissue",
        "/v1/batches/{id}/send",
        "/v1/batches/{id}/check-reversals",
        "/v1/batches/{id}/export",
        "/v1/batches/{id}/results",
        "/v1/providers",
        "/v1/providers/{name}/float",
    ] {
        assert!(doc["paths"][p].is_object(), "{p} is not documented");
    }
    assert!(doc["paths"]["/v1/batches/{id}/send"]["post"]["responses"]["202"].is_object());
    api.cleanup().await;
}

/// A provider statement over HTTP: uploaded by a finance officer (an auditor may not; the
/// same file twice is 409; a bad file is 422 with its row and column), reconciled (201, the
/// paid lines matched, nothing left unexplained in the float), then read back: the statement
/// with its run, the run with its float lines, its items by category.
#[tokio::test]
async fn a_statement_is_uploaded_reconciled_and_read_over_http() {
    let api = Api::new(true).await;
    let fin = api.user("fin", &[Role::FinanceOfficer], &[]).await;
    let auditor = api.user("auditor", &[Role::Auditor], &[]).await;
    let b = api.state.payments.batches().unwrap().clone();
    let ledger = api.db.ledger.clone();
    ledger
        .post(cva_ledger::testing::transfer(
            "bank-topup",
            "assets:bank",
            "income:topup",
            1_000_000,
        ))
        .await
        .unwrap();
    b.fund_float("orange-money", "1000000", "assets:bank", "T-1", &ctx("fo"))
        .await
        .unwrap();
    let made = b
        .create(
            &cva_batches::Filters {
                programme: P.into(),
                provider: Some("orange-money".into()),
                ..cva_batches::Filters::default()
            },
            &ctx("preparer"),
        )
        .await
        .unwrap();
    let id = made.batches[0].id;
    b.submit(id, &ctx("preparer")).await.unwrap();
    b.sign(id, cva_batches::Step::Approve, &ctx("ana"))
        .await
        .unwrap();
    b.sign(id, cva_batches::Step::Authorise, &ctx("bo"))
        .await
        .unwrap();
    b.sign(id, cva_batches::Step::Release, &ctx("cy"))
        .await
        .unwrap();
    let sent = b
        .send(id, &api.state.payments.send_options(), &ctx("cy"))
        .await
        .unwrap();
    assert_eq!((sent.completed, sent.failed), (2, 1), "{sent:?}");
    let csv = api.sim.as_ref().unwrap().statement_csv();

    let upload = "/v1/statements?provider=orange-money&mapping=simulator";
    let (s, v) = api
        .call_as(
            "POST",
            upload,
            Some(&auditor),
            "text/csv",
            Some(csv.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, v) = api
        .call_as(
            "POST",
            upload,
            Some(&fin),
            "application/json",
            Some(csv.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let bad = csv.replacen(",XOF,", ",XOF,abc", 1);
    let (s, v) = api
        .call_as("POST", upload, Some(&fin), "text/csv", Some(bad))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["errors"][0]["row"], 2, "{v}");
    assert_eq!(v["errors"][0]["column"], "fee", "{v}");
    let (s, v) = api
        .call_as(
            "POST",
            "/v1/statements?provider=wave",
            Some(&fin),
            "text/csv",
            Some(csv.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, st) = api
        .call_as("POST", upload, Some(&fin), "text/csv", Some(csv.clone()))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{st}");
    assert_eq!(st["lines"], 2);
    assert!(
        !st.to_string().contains("22376"),
        "no phone number echoed: {st}"
    );
    let (s, v) = api
        .call_as("POST", upload, Some(&fin), "text/csv", Some(csv))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    problem(&v, 409, "already-imported", "already imported");

    let sid = st["id"].as_i64().unwrap();
    let reconcile = format!("/v1/statements/{sid}/reconcile");
    let (s, v) = api.post_empty(&reconcile, &auditor).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, v) = api
        .post(&reconcile, &fin, json!({"window_hours": 9999}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    problem(&v, 422, "invalid-field", "window_hours");
    let (s, run) = api.post_empty(&reconcile, &fin).await;
    assert_eq!(s, StatusCode::CREATED, "{run}");
    // Our fee schedule says 1 %, at least 100 (200 XOF here); the simulator takes its own
    // flat fee: both paid lines are fee mismatches, found and left for a person.
    assert_eq!(run["summary"]["fee_mismatch"], 2, "{run}");
    assert_eq!(run["float"]["unexplained"], 0, "{run}");
    assert_eq!(run["exceptions_opened"], 2, "{run}");

    let rid = run["id"].as_i64().unwrap();
    let (s, detail) = api
        .get(&format!("/v1/reconciliations/{rid}"), &auditor)
        .await;
    assert_eq!(s, StatusCode::OK, "{detail}");
    assert_eq!(detail["run"]["id"], rid);
    assert!(detail["float_lines"].is_array());
    let (s, items) = api
        .get(
            &format!("/v1/reconciliations/{rid}/items?category=fee_mismatch"),
            &auditor,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{items}");
    assert_eq!(items.as_array().unwrap().len(), 2);
    assert_eq!(items[0]["rule"], "provider_transaction_id");
    let (s, v) = api
        .get(
            &format!("/v1/reconciliations/{rid}/items?category=nope"),
            &auditor,
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, v) = api.get(&format!("/v1/statements/{sid}"), &auditor).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["runs"].as_array().unwrap().len(), 1);
    let (s, _) = api.get("/v1/reconciliations/99999", &auditor).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_books_sound(&ledger).await;
    api.cleanup().await;
}
