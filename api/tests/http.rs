//! The HTTP API, driven in-process with `tower::ServiceExt::oneshot` (real routing, extractors,
//! middleware and database; no socket). Runs on SQLite, or PostgreSQL with
//! `CVA_TEST_DATABASE_URL`.

#![allow(clippy::unwrap_used)]

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use chrono::Duration;
use cva_access::password::Password;
use cva_access::{NewUser, Role, TokenKeys, User, Username};
use cva_api::http::auth::AppState;
use cva_api::http::startup;
use cva_ledger::audit::AuditContext;
use cva_ledger::testing::TestDb;
use serde_json::{json, Value};
use tower::ServiceExt;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test";
const PASSWORD: &str = "correct horse battery staple";

struct Api {
    db: TestDb,
    state: AppState,
    app: Router,
}

fn ctx() -> AuditContext {
    AuditContext {
        actor_id: None,
        actor: "test".into(),
        role: "operator".into(),
        request_id: "test".into(),
    }
}

impl Api {
    async fn new() -> Api {
        let db = TestDb::new().await;
        let keys = TokenKeys::from_secret(SECRET, Duration::minutes(15)).unwrap();
        let registry = cva_registry::Registry::new(
            db.ledger.clone(),
            cva_households::pii::PiiKeys::generate().0,
            cva_households::msisdn::OperatorTable::default_table(),
            "223",
        );
        let state = startup::state(db.ledger.clone(), keys, registry).await;
        let app = startup::app(state.clone());
        Api { db, state, app }
    }

    async fn user(&self, name: &str, roles: &[Role]) -> User {
        self.user_in(name, roles, &[]).await
    }

    async fn user_in(&self, name: &str, roles: &[Role], programmes: &[&str]) -> User {
        self.state
            .access
            .create_user(
                NewUser {
                    username: Username::parse(name).unwrap(),
                    password: Password::parse(PASSWORD).unwrap(),
                    roles: roles.to_vec(),
                    programmes: programmes.iter().map(|p| (*p).to_owned()).collect(),
                },
                &ctx(),
            )
            .await
            .unwrap()
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value, axum::http::HeaderMap) {
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
        self.raw(req).await
    }

    async fn raw(&self, req: Request<Body>) -> (StatusCode, Value, axum::http::HeaderMap) {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), 16 * 1024 * 1024)
            .await
            .unwrap();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, value, headers)
    }

    async fn login(&self, name: &str) -> String {
        let (s, v, _) = self
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
}

fn entry(key: &str, amount: &str) -> Value {
    json!({
        "idempotency_key": key, "description": "Donor funds", "effective_date": "2024-03-01",
        "lines": [
            {"account": "assets:bank", "side": "debit", "amount": amount, "currency": "XOF"},
            {"account": "funds:P1:mpca", "side": "credit", "amount": amount, "currency": "XOF"}
        ]
    })
}

#[tokio::test]
async fn health_login_use_logout() {
    let api = Api::new().await;
    let (s, v, h) = api.call("GET", "/healthz", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["database"], "reachable");
    assert!(
        h.get("x-request-id").is_some(),
        "every response carries a request id"
    );

    api.user("fatou", &[Role::FinanceOfficer]).await;
    let (s, v, h) = api
        .call(
            "POST",
            "/v1/auth/login",
            None,
            Some(json!({"username": "fatou", "password": "wrong password!"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(h[header::CONTENT_TYPE], "application/problem+json");
    assert_eq!(
        v["type"],
        "https://cva.example.org/problems/unauthenticated"
    );
    let (s2, v2, _) = api
        .call(
            "POST",
            "/v1/auth/login",
            None,
            Some(json!({"username": "nobody", "password": PASSWORD})),
        )
        .await;
    assert_eq!(
        (s2, &v2["detail"]),
        (s, &v["detail"]),
        "unknown user and wrong password look the same"
    );

    let token = api.login("fatou").await;
    let (s, v, _) = api
        .call(
            "POST",
            "/v1/entries",
            Some(&token),
            Some(entry("k1", "1000")),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    let (s, v, _) = api
        .call(
            "POST",
            "/v1/entries",
            Some(&token),
            Some(entry("k1", "1000")),
        )
        .await;
    assert_eq!(
        (s, v["replayed"].as_bool(), v["id"].as_str()),
        (StatusCode::OK, Some(true), Some(id.as_str()))
    );
    let (s, v, _) = api
        .call(
            "POST",
            "/v1/entries",
            Some(&token),
            Some(entry("k1", "999")),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let (s, v, _) = api
        .call(
            "GET",
            "/v1/accounts/assets:bank/balance",
            Some(&token),
            None,
        )
        .await;
    assert_eq!((s, v["balance"].as_str()), (StatusCode::OK, Some("1000")));
    let (s, v, _) = api
        .call("GET", "/v1/trial-balance", Some(&token), None)
        .await;
    assert_eq!((s, v["balanced"].as_bool()), (StatusCode::OK, Some(true)));

    let (s, _, _) = api
        .call("POST", "/v1/auth/logout", Some(&token), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, _) = api.call("GET", "/v1/accounts", Some(&token), None).await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "a revoked session's token stops working before it expires"
    );
    api.db.cleanup().await;
}

/// Who may call what. `None` in the expected column means "any authenticated role".
#[tokio::test]
async fn role_matrix() {
    let api = Api::new().await;
    let admin = api.user("admin1", &[Role::Admin]).await;
    api.user("prog1", &[Role::ProgrammeOfficer]).await;
    api.user("fin1", &[Role::FinanceOfficer]).await;
    api.user("audit1", &[Role::Auditor]).await;
    let victim = api.user("victim", &[Role::Auditor]).await;
    let tokens = [
        (Role::Admin, api.login("admin1").await),
        (Role::ProgrammeOfficer, api.login("prog1").await),
        (Role::FinanceOfficer, api.login("fin1").await),
        (Role::Auditor, api.login("audit1").await),
    ];
    // A posted entry to read and reverse.
    let (s, v, _) = api
        .call(
            "POST",
            "/v1/entries",
            Some(&tokens[0].1),
            Some(entry("seed", "500")),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let seed = v["id"].as_str().unwrap().to_owned();

    const READERS: &[Role] = &[
        Role::Admin,
        Role::ProgrammeOfficer,
        Role::FinanceOfficer,
        Role::Auditor,
    ];
    const POSTERS: &[Role] = &[Role::Admin, Role::FinanceOfficer];
    const ADMINS: &[Role] = &[Role::Admin];
    const AUDIT_READERS: &[Role] = &[Role::Admin, Role::Auditor];
    type Case = (
        &'static str,
        String,
        &'static [Role],
        Box<dyn Fn(usize) -> Option<Value>>,
    );
    let cases: Vec<Case> = vec![
        ("GET", "/v1/accounts".into(), READERS, Box::new(|_| None)),
        (
            "GET",
            "/v1/accounts/assets:bank/balance".into(),
            READERS,
            Box::new(|_| None),
        ),
        (
            "GET",
            "/v1/trial-balance".into(),
            READERS,
            Box::new(|_| None),
        ),
        ("GET", "/v1/journal".into(), READERS, Box::new(|_| None)),
        (
            "GET",
            format!("/v1/entries/{seed}"),
            READERS,
            Box::new(|_| None),
        ),
        (
            "POST",
            "/v1/entries".into(),
            POSTERS,
            Box::new(|i| Some(entry(&format!("m{i}"), "1"))),
        ),
        ("GET", "/v1/audit".into(), AUDIT_READERS, Box::new(|_| None)),
        ("GET", "/v1/users".into(), ADMINS, Box::new(|_| None)),
        (
            "POST",
            "/v1/users".into(),
            ADMINS,
            Box::new(|i| {
                Some(
                    json!({"username": format!("new{i}"), "password": PASSWORD, "roles": ["auditor"]}),
                )
            }),
        ),
        (
            "PUT",
            format!("/v1/users/{}/roles", victim.id.0),
            ADMINS,
            Box::new(|_| Some(json!({"roles": ["auditor"]}))),
        ),
        (
            "POST",
            format!("/v1/users/{}/password", victim.id.0),
            ADMINS,
            Box::new(|_| Some(json!({"password": PASSWORD}))),
        ),
        (
            "POST",
            format!("/v1/users/{}/enable", victim.id.0),
            ADMINS,
            Box::new(|_| None),
        ),
    ];
    let other_keys = TokenKeys::from_secret(
        b"another-secret-another-secret-0123456789",
        Duration::minutes(15),
    )
    .unwrap();
    let (forged, _) = other_keys
        .issue(&admin, uuid::Uuid::now_v7(), chrono::Utc::now())
        .unwrap();
    let same_keys = TokenKeys::from_secret(SECRET, Duration::minutes(15)).unwrap();
    let (expired, _) = same_keys
        .issue(
            &admin,
            uuid::Uuid::now_v7(),
            chrono::Utc::now() - Duration::minutes(20),
        )
        .unwrap();
    let mut n = 0;
    for (method, path, allowed, body) in &cases {
        for (role, token) in &tokens {
            n += 1;
            let (s, v, _) = api.call(method, path, Some(token), body(n)).await;
            if allowed.contains(role) {
                assert!(s.is_success(), "{role} {method} {path}: {s} {v}");
            } else {
                assert_eq!(s, StatusCode::FORBIDDEN, "{role} {method} {path}: {v}");
            }
        }
        for (what, token) in [
            ("no token", None),
            ("forged", Some(forged.as_str())),
            ("expired", Some(expired.as_str())),
            ("garbage", Some("abc")),
        ] {
            let (s, _, _) = api.call(method, path, token, body(0)).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{what} {method} {path}");
        }
    }
    // Reversal is a posting operation.
    let (s, _, _) = api
        .call(
            "POST",
            &format!("/v1/entries/{seed}/reverse"),
            Some(&tokens[3].1),
            Some(json!({"reason": "x"})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v, _) = api
        .call(
            "POST",
            &format!("/v1/entries/{seed}/reverse"),
            Some(&tokens[2].1),
            Some(json!({"reason": "wrong grant"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    // A disabled user's token stops working at once.
    let victim_token = api.login("victim").await;
    let (s, _, _) = api
        .call("GET", "/v1/accounts", Some(&victim_token), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = api
        .call(
            "POST",
            &format!("/v1/users/{}/disable", victim.id.0),
            Some(&tokens[0].1),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = api
        .call("GET", "/v1/accounts", Some(&victim_token), None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, _) = api
        .call(
            "POST",
            "/v1/auth/login",
            None,
            Some(json!({"username": "victim", "password": PASSWORD})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    api.db.cleanup().await;
}

#[tokio::test]
async fn repeated_failures_are_throttled() {
    let api = Api::new().await;
    api.user("musa", &[Role::Auditor]).await;
    for _ in 0..5 {
        let (s, _, _) = api
            .call(
                "POST",
                "/v1/auth/login",
                None,
                Some(json!({"username": "musa", "password": "not the password"})),
            )
            .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    let (s, v, h) = api
        .call(
            "POST",
            "/v1/auth/login",
            None,
            Some(json!({"username": "musa", "password": PASSWORD})),
        )
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert!(h.get(header::RETRY_AFTER).is_some());
    assert_eq!(v["type"], "https://cva.example.org/problems/throttled");
    api.db.cleanup().await;
}

#[tokio::test]
async fn bad_input_gets_a_problem_naming_the_field_and_writes_nothing() {
    let api = Api::new().await;
    api.user("fin", &[Role::FinanceOfficer]).await;
    let token = api.login("fin").await;
    let bodies: Vec<(&str, String, StatusCode, &str)> = vec![
        ("malformed JSON", "{\"idempotency_key\": ".into(), StatusCode::BAD_REQUEST, ""),
        ("unknown field", json!({"idempotency_key": "k", "description": "d", "effective_date": "2024-03-01", "lines": [], "x": 1}).to_string(), StatusCode::BAD_REQUEST, "unknown field `x`"),
        ("wrong type", json!({"idempotency_key": 5, "description": "d", "effective_date": "2024-03-01", "lines": []}).to_string(), StatusCode::BAD_REQUEST, "idempotency_key"),
        ("number amount", entry("k", "1").to_string().replace("\"1\"", "12.5"), StatusCode::UNPROCESSABLE_ENTITY, "lines[0].amount"),
        ("over-precise", entry("k", "12.5").to_string(), StatusCode::UNPROCESSABLE_ENTITY, "more decimals than XOF"),
        ("negative", entry("k", "-5").to_string(), StatusCode::UNPROCESSABLE_ENTITY, "negative"),
        ("oversized", format!("{{\"description\": \"{}\"}}", "x".repeat(startup::BODY_LIMIT + 10)), StatusCode::PAYLOAD_TOO_LARGE, ""),
    ];
    for (what, body, status, detail) in bodies {
        let req = Request::builder()
            .method("POST")
            .uri("/v1/entries")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap();
        let (s, v, h) = api.raw(req).await;
        assert_eq!(s, status, "{what}: {v}");
        assert_eq!(
            h[header::CONTENT_TYPE],
            "application/problem+json",
            "{what}"
        );
        assert!(
            v["detail"].as_str().unwrap_or_default().contains(detail),
            "{what}: {v}"
        );
        assert!(!v.to_string().contains("sqlx"), "{what}: no internals: {v}");
    }
    let (s, v, _) = api
        .call(
            "GET",
            "/v1/accounts/assets:bank/balance?as_of=yesterday",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, _, _) = api
        .call(
            "GET",
            "/v1/accounts/not-an-account/balance",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        api.state.ledger.accounts().await.unwrap().is_empty(),
        "nothing was written"
    );
    api.db.cleanup().await;
}

#[tokio::test]
async fn every_change_is_audited_in_its_transaction_and_auditors_read_the_trail() {
    let api = Api::new().await;
    api.user("fin", &[Role::FinanceOfficer]).await;
    api.user("aud", &[Role::Auditor]).await;
    let fin = api.login("fin").await;
    let aud = api.login("aud").await;
    let (s, v, h) = api
        .call("POST", "/v1/entries", Some(&fin), Some(entry("a1", "700")))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let entry_id = v["id"].as_str().unwrap().to_owned();
    let request_id = h["x-request-id"].to_str().unwrap().to_owned();
    // Refused: overdraws the bank. No entry, and no audit event.
    let overdraft = json!({
        "idempotency_key": "a2", "description": "too much", "effective_date": "2024-03-01",
        "lines": [
            {"account": "expense:x", "side": "debit", "amount": "701", "currency": "XOF"},
            {"account": "assets:bank", "side": "credit", "amount": "701", "currency": "XOF"}
        ]
    });
    let (s, v, _) = api
        .call("POST", "/v1/entries", Some(&fin), Some(overdraft))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["type"], "https://cva.example.org/problems/balance-rule");

    let (s, v, _) = api
        .call("GET", "/v1/audit?action=ledger.post", Some(&aud), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let events = v["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{v}");
    assert_eq!(events[0]["actor"], "fin");
    assert_eq!(events[0]["role"], "finance_officer");
    assert_eq!(events[0]["object_id"], entry_id.as_str());
    assert_eq!(
        events[0]["request_id"],
        request_id.as_str(),
        "the request id ties the event to the logs"
    );

    // Logins, user creation and the post are all in the chain, which verifies.
    let (s, v, _) = api.call("GET", "/v1/audit?limit=2", Some(&aud), None).await;
    assert_eq!(s, StatusCode::OK);
    let next = v["next_after_seq"].as_i64().unwrap();
    let (_, v2, _) = api
        .call(
            "GET",
            &format!("/v1/audit?limit=2&after_seq={next}"),
            Some(&aud),
            None,
        )
        .await;
    assert!(v2["events"][0]["seq"].as_i64().unwrap() > next);
    assert!(api.state.ledger.verify_audit().await.unwrap().is_intact());

    for bad in [
        "/v1/audit?limit=0",
        "/v1/audit?limit=5000",
        "/v1/audit?after_seq=-1",
        "/v1/audit?limit=abc",
        "/v1/audit?colour=red",
    ] {
        let (s, v, _) = api.call("GET", bad, Some(&aud), None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
    }
    let (s, _, _) = api.call("GET", "/v1/audit", Some(&fin), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    api.db.cleanup().await;
}

/// Every route the server has, as (method, path template). Adding a route means adding it here,
/// and the test fails until the OpenAPI document describes it (and the other way round).
const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("post", "/v1/auth/login"),
    ("post", "/v1/auth/logout"),
    ("post", "/v1/auth/refresh"),
    ("get", "/v1/users"),
    ("post", "/v1/users"),
    ("post", "/v1/users/{id}/disable"),
    ("post", "/v1/users/{id}/enable"),
    ("post", "/v1/users/{id}/password"),
    ("put", "/v1/users/{id}/roles"),
    ("get", "/v1/accounts"),
    ("get", "/v1/accounts/{code}/balance"),
    ("post", "/v1/entries"),
    ("get", "/v1/entries/{id}"),
    ("post", "/v1/entries/{id}/reverse"),
    ("get", "/v1/trial-balance"),
    ("get", "/v1/journal"),
    ("get", "/v1/audit"),
    ("get", "/v1/programmes"),
    ("post", "/v1/programmes"),
    ("get", "/v1/programmes/{code}"),
    ("get", "/v1/programmes/{code}/budget-lines"),
    ("post", "/v1/programmes/{code}/budget-lines"),
    ("post", "/v1/programmes/{code}/budget-lines/{line}/funding"),
    ("get", "/v1/programmes/{code}/rates"),
    ("post", "/v1/programmes/{code}/rates"),
    ("post", "/v1/programmes/{code}/rules"),
    ("get", "/v1/programmes/{code}/households"),
    ("post", "/v1/programmes/{code}/households"),
    ("post", "/v1/programmes/{code}/households/import"),
    ("get", "/v1/households/{id}"),
    ("post", "/v1/households/{id}/verify"),
    ("post", "/v1/households/{id}/suspend"),
    ("post", "/v1/households/{id}/reinstate"),
    ("post", "/v1/households/{id}/withdraw"),
    ("get", "/v1/programmes/{code}/flags"),
    ("post", "/v1/flags/{id}/decision"),
    ("post", "/v1/programmes/{code}/entitlements/generate"),
    ("get", "/v1/households/{id}/entitlements"),
    ("post", "/v1/entitlements/{id}/cancel"),
    ("post", "/v1/batches"),
    ("get", "/v1/batches/{id}"),
    ("get", "/v1/batches/{id}/lines"),
    ("post", "/v1/batches/{id}/submit"),
    ("post", "/v1/batches/{id}/approve"),
    ("post", "/v1/batches/{id}/authorise"),
    ("post", "/v1/batches/{id}/release"),
    ("post", "/v1/batches/{id}/cancel"),
    ("post", "/v1/batches/{id}/reissue"),
    ("post", "/v1/batches/{id}/check-reversals"),
    ("get", "/v1/batches"),
    ("post", "/v1/batches/{id}/export"),
    ("post", "/v1/batches/{id}/results"),
    ("post", "/v1/batches/{id}/send"),
    ("get", "/v1/providers"),
    ("post", "/v1/providers/{name}/float"),
    ("post", "/v1/statements"),
    ("get", "/v1/statements/{id}"),
    ("post", "/v1/statements/{id}/reconcile"),
    ("get", "/v1/reconciliations/{id}"),
    ("get", "/v1/reconciliations/{id}/items"),
    ("get", "/v1/exceptions"),
    ("get", "/v1/exceptions/{id}"),
    ("post", "/v1/exceptions/{id}/assign"),
    ("post", "/v1/exceptions/{id}/comment"),
    ("post", "/v1/exceptions/{id}/resolve"),
    ("post", "/v1/exceptions/{id}/adjustments"),
    ("post", "/v1/adjustments/{id}/approve"),
    ("post", "/v1/adjustments/{id}/reject"),
    ("get", "/v1/reports/{kind}"),
    ("post", "/v1/reports/verify"),
];

#[tokio::test]
async fn the_openapi_document_describes_every_route_and_only_served_ones() {
    let api = Api::new().await;
    let (s, doc, _) = api.call("GET", "/v1/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                documented.push((method.clone(), path.clone()));
            }
        }
    }
    documented.sort();
    let mut expected: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    expected.sort();
    assert_eq!(
        documented, expected,
        "the OpenAPI document and the route list differ"
    );
    // Every documented operation is served: without a token it is refused (401) or answered,
    // never "no such route" (404 from the router) or "method not allowed" (405).
    for (method, path) in &documented {
        let concrete = path.replace("{id}", "1").replace("{code}", "assets:bank");
        let (s, v, _) = api
            .call(&method.to_uppercase(), &concrete, None, None)
            .await;
        assert!(
            s != StatusCode::METHOD_NOT_ALLOWED
                && !(s == StatusCode::NOT_FOUND && v.get("type").is_none()),
            "{method} {path}: {s}"
        );
    }
    // Protected operations declare the bearer scheme; schemas for problems are present.
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert!(doc["components"]["schemas"]["Problem"].is_object());
    api.db.cleanup().await;
}

#[tokio::test]
async fn refresh_renews_the_token_of_an_open_session_only() {
    let api = Api::new().await;
    api.user("aud", &[Role::Auditor]).await;
    let token = api.login("aud").await;
    let (s, v, _) = api
        .call("POST", "/v1/auth/refresh", Some(&token), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let fresh = v["access_token"].as_str().unwrap().to_owned();
    let (s, _, _) = api.call("GET", "/v1/accounts", Some(&fresh), None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = api
        .call("POST", "/v1/auth/logout", Some(&fresh), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    for t in [&token, &fresh] {
        let (s, _, _) = api.call("POST", "/v1/auth/refresh", Some(t), None).await;
        assert_eq!(
            s,
            StatusCode::UNAUTHORIZED,
            "a logged-out session cannot be refreshed"
        );
    }
    api.db.cleanup().await;
}

/// Polls `GET /v1/accounts` with `token` until it is refused; the change was made elsewhere
/// (another server process or `psql`), so on PostgreSQL it arrives by notification.
async fn refused_soon(api: &Api, token: &str) -> bool {
    for _ in 0..200 {
        let (s, _, _) = api.call("GET", "/v1/accounts", Some(token), None).await;
        if s == StatusCode::UNAUTHORIZED {
            return true;
        }
        assert_eq!(s, StatusCode::OK);
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn access_changes_made_elsewhere_end_sessions() {
    let api = Api::new().await;
    assert_eq!(
        api.state.access.session_cache_enabled(),
        api.db.is_postgres(),
        "PostgreSQL servers cache sessions; SQLite ones ask the database each time"
    );
    let a = api.user("amadou", &[Role::Auditor]).await;
    let b = api.user("binta", &[Role::Auditor]).await;
    let c = api.user("cheick", &[Role::Auditor]).await;
    let ta = api.login("amadou").await;
    let tb = api.login("binta").await;
    let tc = api.login("cheick").await;
    for t in [&ta, &tb, &tc] {
        // Twice: the second answer comes from the cache where there is one.
        for _ in 0..2 {
            let (s, _, _) = api.call("GET", "/v1/accounts", Some(t), None).await;
            assert_eq!(s, StatusCode::OK);
        }
    }

    // Another server process (its own store and cache, same database) disables amadou.
    let other = cva_access::AccessStore::new(api.db.ledger.clone());
    other.set_disabled(a.id, true, &ctx()).await.unwrap();
    assert!(refused_soon(&api, &ta).await, "disabled elsewhere");

    // An operator revokes binta's sessions with SQL; the database announces it.
    api.db
        .raw(&[&format!(
            "UPDATE sessions SET revoked_at = expires_at WHERE user_id = {}",
            b.id.0
        )])
        .await
        .unwrap();
    assert!(refused_soon(&api, &tb).await, "revoked with SQL");

    // Untouched sessions keep working.
    let (s, _, _) = api.call("GET", "/v1/accounts", Some(&tc), None).await;
    assert_eq!(s, StatusCode::OK);

    // A password reset ends the user's sessions.
    api.user("root", &[Role::Admin]).await;
    let root = api.login("root").await;
    let (s, v, _) = api
        .call(
            "POST",
            &format!("/v1/users/{}/password", c.id.0),
            Some(&root),
            Some(json!({"password": "another long passphrase"})),
        )
        .await;
    assert!(s.is_success(), "{s} {v}");
    let (s, _, _) = api.call("GET", "/v1/accounts", Some(&tc), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "reset ends sessions at once");

    if api.db.is_postgres() {
        // Fault: the listening connection dies. The cache turns off (notices sent meanwhile are
        // lost), listens again, and a change made after that still ends the session.
        let d = api.user("dede", &[Role::Auditor]).await;
        let td = api.login("dede").await;
        let (s, _, _) = api.call("GET", "/v1/accounts", Some(&td), None).await;
        assert_eq!(s, StatusCode::OK);
        api.db
            .raw(&["SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                    WHERE datname = current_database() AND query LIKE 'LISTEN%'"])
            .await
            .unwrap();
        api.db
            .raw(&[&format!(
                "UPDATE users SET disabled = true WHERE id = {}",
                d.id.0
            )])
            .await
            .unwrap();
        assert!(
            refused_soon(&api, &td).await,
            "change while the listener was down"
        );
        let mut relistened = false;
        for _ in 0..300 {
            if api.state.access.session_cache_enabled() {
                relistened = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(relistened, "the cache comes back once listening again");
    }
    api.db.cleanup().await;
}

fn funding(key: &str, fund: &str, amount: &str) -> Value {
    json!({
        "idempotency_key": key, "description": "Donor funds", "effective_date": "2024-03-01",
        "lines": [
            {"account": "assets:bank", "side": "debit", "amount": amount, "currency": "XOF"},
            {"account": fund, "side": "credit", "amount": amount, "currency": "XOF"}
        ]
    })
}

#[tokio::test]
async fn programme_scoping_hides_and_refuses_other_programmes() {
    let api = Api::new().await;
    api.user("root", &[Role::Admin]).await;
    api.user_in("p1-finance", &[Role::FinanceOfficer], &["P1"])
        .await;
    api.user_in("underscore", &[Role::Auditor], &["P_1"]).await;
    let root = api.login("root").await;
    let mut ids = std::collections::HashMap::new();
    for fund in [
        "funds:P1:mpca",
        "funds:P2:mpca",
        "funds:P_1:cfw",
        "funds:PX1:cfw",
        "funds:P1",
    ] {
        let (s, v, _) = api
            .call(
                "POST",
                "/v1/entries",
                Some(&root),
                Some(funding(fund, fund, "1000")),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        ids.insert(fund, v["id"].as_str().unwrap().to_owned());
    }
    let codes = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|a| a["code"].as_str().unwrap().to_owned())
            .collect()
    };

    let p1 = api.login("p1-finance").await;
    let (s, v, _) = api.call("GET", "/v1/accounts", Some(&p1), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(codes(&v), ["assets:bank", "funds:P1", "funds:P1:mpca"]);
    let under = api.login("underscore").await;
    let (_, v, _) = api.call("GET", "/v1/accounts", Some(&under), None).await;
    assert_eq!(
        codes(&v),
        ["assets:bank", "funds:P_1:cfw"],
        "`_` is not a wildcard"
    );
    let (_, v, _) = api.call("GET", "/v1/accounts", Some(&root), None).await;
    assert_eq!(codes(&v).len(), 6, "an unrestricted user sees everything");
    let (s, _, _) = api.call("GET", "/v1/audit", Some(&under), None).await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "the audit trail covers every programme"
    );

    // Single objects outside the scope are "not found"; inside, readable.
    for (path, want) in [
        (
            "/v1/accounts/funds:P1:mpca/balance".to_owned(),
            StatusCode::OK,
        ),
        (
            "/v1/accounts/assets:bank/balance".to_owned(),
            StatusCode::OK,
        ),
        (
            "/v1/accounts/funds:P2:mpca/balance".to_owned(),
            StatusCode::NOT_FOUND,
        ),
        (
            format!("/v1/entries/{}", ids["funds:P1:mpca"]),
            StatusCode::OK,
        ),
        (
            format!("/v1/entries/{}", ids["funds:P2:mpca"]),
            StatusCode::NOT_FOUND,
        ),
        ("/v1/trial-balance".to_owned(), StatusCode::FORBIDDEN),
        ("/v1/journal".to_owned(), StatusCode::FORBIDDEN),
    ] {
        let (s, v, _) = api.call("GET", &path, Some(&p1), None).await;
        assert_eq!(s, want, "{path}: {v}");
    }

    // Writes outside the scope are refused and leave no trace.
    let before = cva_ledger::testing::entry_count(&api.db.ledger).await;
    let (s, v, _) = api
        .call(
            "POST",
            "/v1/entries",
            Some(&p1),
            Some(funding("p1-into-p2", "funds:P2:mpca", "5")),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("funds:P2:mpca"));
    let (s, _, _) = api
        .call(
            "POST",
            &format!("/v1/entries/{}/reverse", ids["funds:P2:mpca"]),
            Some(&p1),
            Some(json!({"reason": "not mine"})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        cva_ledger::testing::entry_count(&api.db.ledger).await,
        before
    );
    let (s, v, _) = api
        .call(
            "POST",
            "/v1/entries",
            Some(&p1),
            Some(funding("p1-own", "funds:P1:mpca", "5")),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    api.db.cleanup().await;
}
