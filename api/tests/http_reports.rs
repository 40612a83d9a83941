//! Reports over HTTP, through a real TCP round trip (the server on a loopback port, a
//! `reqwest` client): a budget report as CSV with its `X-Report-SHA256`, verified by `POST
//! /v1/reports/verify` and a one-byte change caught; the household report masked for an
//! auditor and opened for a programme officer; programme scope (404) and whole-book reports
//! (403) for a user limited to another programme; bad parameters refused naming the field.
//! SQLite, or PostgreSQL with `CVA_TEST_DATABASE_URL`.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;

use chrono::NaiveDate;
use cva_access::password::Password;
use cva_access::{NewUser, Role, TokenKeys, Username};
use cva_api::http::auth::AppState;
use cva_api::http::startup;
use cva_households::msisdn::OperatorTable;
use cva_households::pii::PiiKeys;
use cva_ledger::audit::{AuditContext, AuditQuery};
use cva_ledger::testing::TestDb;
use cva_registry::Registry;
use reqwest::StatusCode;
use serde_json::{json, Value};

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

struct Api {
    db: TestDb,
    state: AppState,
    base: String,
    client: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
}

/// A response: status, headers, body.
struct Got {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            panic!(
                "{}: not JSON: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name}"))
            .to_str()
            .unwrap()
            .to_owned()
    }
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
        let phones: Vec<String> = ["+223 76 10 00 11", "+223 76 10 00 12", ""]
            .iter()
            .map(|p| (*p).to_owned())
            .collect();
        cva_batches::testing::entitlements(&registry, &phones).await;
        registry
            .add_rate(
                P,
                NaiveDate::from_ymd_opt(2024, 1, 1).unwrap(),
                "0.00152425",
                "BCEAO fixing",
                &ctx("setup"),
            )
            .await
            .unwrap();
        let state = startup::state(db.ledger.clone(), keys, registry).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = startup::app(state.clone());
        let server = tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            .unwrap();
        });
        Api {
            db,
            state,
            base: format!("http://{addr}"),
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
            server,
        }
    }

    /// Creates a user and logs in over HTTP: the access token.
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
        let got = self
            .send(
                self.client
                    .post(format!("{}/v1/auth/login", self.base))
                    .header("content-type", "application/json")
                    .body(json!({"username": name, "password": PASSWORD}).to_string()),
            )
            .await;
        assert_eq!(got.status, StatusCode::OK);
        got.json()["access_token"].as_str().unwrap().to_owned()
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Got {
        let resp = req.send().await.unwrap();
        Got {
            status: resp.status(),
            headers: resp.headers().clone(),
            body: resp.bytes().await.unwrap().to_vec(),
        }
    }

    async fn get(&self, path: &str, token: Option<&str>) -> Got {
        let mut req = self.client.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        self.send(req).await
    }

    async fn verify(&self, bytes: Vec<u8>, token: &str) -> Got {
        self.send(
            self.client
                .post(format!("{}/v1/reports/verify", self.base))
                .bearer_auth(token)
                .header("content-type", "text/csv")
                .body(bytes),
        )
        .await
    }

    async fn cleanup(self) {
        self.server.abort();
        self.db.cleanup().await;
    }
}

fn sha256(bytes: &[u8]) -> String {
    cva_reports::store::sha256_hex(bytes)
}

fn problem(got: &Got, status: u16, words: &str) {
    assert_eq!(
        got.status.as_u16(),
        status,
        "{}",
        String::from_utf8_lossy(&got.body)
    );
    let v = got.json();
    assert!(
        v["detail"].as_str().unwrap().contains(words),
        "`{words}` not in {v}"
    );
}

#[tokio::test]
async fn a_report_over_http_carries_its_hash_and_verifies_and_a_changed_byte_does_not() {
    let api = Api::new().await;
    let auditor = api.user("awa", &[Role::Auditor], &[]).await;
    let officer = api.user("omar", &[Role::ProgrammeOfficer], &[]).await;

    let got = api
        .get(
            &format!("/v1/reports/budget?programme={P}&as_of=2024-03-31&format=csv"),
            Some(&auditor),
        )
        .await;
    assert_eq!(
        got.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&got.body)
    );
    assert!(got.header("content-type").starts_with("text/csv"));
    let hash = got.header("x-report-sha256");
    assert_eq!(hash, sha256(&got.body), "the header is the body's hash");
    let id: i64 = got.header("x-report-id").parse().unwrap();
    let csv = String::from_utf8(got.body.clone()).unwrap();
    assert!(
        csv.starts_with("programme,donor,grant_ref,budget_line,"),
        "{csv}"
    );
    // 3 households × 20,000 = 60,000 XOF committed; × 0.00152425 = 91.455 → 91.46 EUR.
    assert!(csv.contains(",60000,"), "{csv}");
    assert!(csv.contains(",91.46,"), "{csv}");

    // The same report again: the same bytes.
    let again = api
        .get(
            &format!("/v1/reports/budget?programme={P}&as_of=2024-03-31&format=csv"),
            Some(&officer),
        )
        .await;
    assert_eq!(again.body, got.body);
    assert_eq!(again.header("x-report-sha256"), hash);

    // Verified, by whom and when; any role may ask.
    let v = api.verify(got.body.clone(), &officer).await;
    assert_eq!(v.status, StatusCode::OK);
    let v = v.json();
    assert_eq!(v["verdict"], "verified", "{v}");
    assert_eq!(v["sha256"], hash);
    assert_eq!(v["audit_chain"]["intact"], true);
    let first = &v["reports"][0];
    assert_eq!(first["report"]["id"], id);
    assert_eq!(first["report"]["kind"], "budget");
    assert_eq!(first["report"]["produced_by"], "awa");
    assert_eq!(first["audit_event"]["role"], "auditor");
    assert_eq!(first["audit_matches"], true);
    assert_eq!(v["reports"].as_array().unwrap().len(), 2);

    // One byte changed: not produced here.
    let mut changed = got.body.clone();
    let at = changed.len() / 2;
    changed[at] = if changed[at] == b'1' { b'2' } else { b'1' };
    let v = api.verify(changed, &auditor).await.json();
    assert_eq!(v["verdict"], "not_produced");
    assert_eq!(v["message"], "no report with this hash was produced here");

    // The audit trail holds the production, by the auditor.
    let events = api
        .state
        .ledger
        .audit_events(&AuditQuery {
            action: Some("report.produce".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].actor, "awa");
    assert_eq!(events[0].object_id, id.to_string());

    // JSON works too, and the whole-book reports for an unrestricted reader.
    for path in [
        "/v1/reports/trial-balance?format=json".to_owned(),
        "/v1/reports/journal?format=csv".to_owned(),
        format!("/v1/reports/journal?programme={P}&format=json"),
    ] {
        let got = api.get(&path, Some(&auditor)).await;
        assert_eq!(got.status, StatusCode::OK, "{path}");
        assert_eq!(got.header("x-report-sha256"), sha256(&got.body), "{path}");
    }
    api.cleanup().await;
}

#[tokio::test]
async fn household_report_masks_for_auditors_and_scope_and_parameters_are_checked() {
    let api = Api::new().await;
    let auditor = api.user("awa", &[Role::Auditor], &[]).await;
    let finance = api.user("fanta", &[Role::FinanceOfficer], &[]).await;
    let officer = api.user("omar", &[Role::ProgrammeOfficer], &[]).await;
    let elsewhere = api.user("ella", &[Role::Auditor], &["OTHER-PROG"]).await;
    let path = format!("/v1/reports/household?programme={P}&format=json");

    // Masked for the auditor and the finance officer: no name, no phone number.
    for token in [&auditor, &finance] {
        let got = api.get(&path, Some(token)).await;
        assert_eq!(got.status, StatusCode::OK);
        let text = String::from_utf8(got.body.clone()).unwrap();
        assert!(!text.contains("Awa Sangare"), "{text}");
        assert!(!text.contains("76100011"), "{text}");
        let v = got.json();
        assert_eq!(v["parameters"]["personal_data"], "masked");
        assert_eq!(v["rows"][0]["head_name"], "A•• S•••• 0");
        assert_eq!(v["rows"][0]["msisdn"], "+223 •• •• 00 11");
        assert_eq!(v["rows"][0]["balance_owed"], "20000");
    }
    // Opened for programme staff (the registry's role policy).
    let v = api.get(&path, Some(&officer)).await.json();
    assert_eq!(v["parameters"]["personal_data"], "full");
    assert_eq!(v["rows"][0]["head_name"], "Awa Sangare 0");
    assert_eq!(v["rows"][0]["msisdn"], "+22376100011");

    // Limited to another programme: this programme does not exist for them, and the
    // whole-book reports are refused.
    let got = api.get(&path, Some(&elsewhere)).await;
    problem(&got, 404, "does not exist");
    for p in [
        "/v1/reports/trial-balance?format=csv",
        "/v1/reports/journal?format=csv",
        "/v1/reports/reconciliation?statement=1&format=csv",
    ] {
        problem(&api.get(p, Some(&elsewhere)).await, 403, "limited");
    }

    // Bad requests name the field.
    problem(
        &api.get(
            &format!("/v1/reports/budget?programme={P}&format=xml"),
            Some(&auditor),
        )
        .await,
        400,
        "format",
    );
    problem(
        &api.get("/v1/reports/ledger?format=csv", Some(&auditor))
            .await,
        400,
        "kind",
    );
    problem(
        &api.get("/v1/reports/budget?format=csv", Some(&auditor))
            .await,
        400,
        "programme",
    );
    problem(
        &api.get(
            &format!("/v1/reports/budget?programme={P}&statement=1&format=csv"),
            Some(&auditor),
        )
        .await,
        400,
        "statement",
    );
    problem(
        &api.get(
            "/v1/reports/reconciliation?statement=9&format=csv",
            Some(&auditor),
        )
        .await,
        404,
        "statement 9",
    );
    problem(
        &api.get(
            "/v1/reports/budget?programme=NOPE-1&format=csv",
            Some(&auditor),
        )
        .await,
        404,
        "NOPE-1",
    );
    // Without a token: 401, for producing and verifying alike.
    assert_eq!(
        api.get("/v1/reports/trial-balance?format=csv", None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let got = api
        .send(
            api.client
                .post(format!("{}/v1/reports/verify", api.base))
                .body("x"),
        )
        .await;
    assert_eq!(got.status, StatusCode::UNAUTHORIZED);
    // The routes are documented.
    let doc = api.get("/v1/openapi.json", None).await.json();
    assert!(doc["paths"]["/v1/reports/{kind}"]["get"].is_object());
    assert!(doc["paths"]["/v1/reports/verify"]["post"].is_object());
    api.cleanup().await;
}
