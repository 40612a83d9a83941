//! The programme registry over HTTP, driven in-process with `tower::ServiceExt::oneshot` (real
//! routing, extractors, middleware and database): programmes, budget lines and funding, rules,
//! Kobo CSV imports (good, bad, dry run), four-eyes verification, masking per role, programme
//! scoping, duplicate adjudication, entitlements under budget control, and who may call what.
//! Runs on SQLite, or PostgreSQL with `CVA_TEST_DATABASE_URL`.

#![allow(clippy::unwrap_used)]

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use chrono::Duration;
use cva_access::password::Password;
use cva_access::{NewUser, Role, TokenKeys, Username};
use cva_api::http::auth::AppState;
use cva_api::http::startup;
use cva_ledger::audit::AuditContext;
use cva_ledger::testing::TestDb;
use serde_json::{json, Value};
use tower::ServiceExt;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test";
const PASSWORD: &str = "correct horse battery staple";
const P: &str = "MLI-MPCA-24";
const P2: &str = "MLI-CFW-24";
const HEADER: &str = "start,end,today,enumerator,consent,household/head_name,household/head_sex,household/head_birth_year,household/size,household/displacement_status,location/region,location/cercle,location/commune,contact/msisdn,identity/national_id,identity/biometric_ref,_id,_uuid,_submission_time,_index";
const RULE: &str = r#"{"modality":"mpca","amount":{"kind":"by_size","bands":[
    {"min_size":1,"max_size":4,"amount":50000},{"min_size":5,"max_size":null,"amount":75000}]},
    "tranches":2,"rounding":{"unit":25,"mode":"nearest"}}"#;

struct Api {
    db: TestDb,
    state: AppState,
    app: Router,
}

/// What a request carries.
enum Payload {
    Nothing,
    Json(Value),
    Csv(Vec<u8>),
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

    /// Creates the user and returns a token.
    async fn user(&self, name: &str, roles: &[Role]) -> String {
        self.user_in(name, roles, &[]).await
    }

    async fn user_in(&self, name: &str, roles: &[Role], programmes: &[&str]) -> String {
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
            .unwrap();
        self.login(name).await
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Payload,
    ) -> (StatusCode, Value, String) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match body {
            Payload::Json(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b.to_string())),
            Payload::Csv(b) => req
                .header(header::CONTENT_TYPE, "text/csv")
                .body(Body::from(b)),
            Payload::Nothing => req.body(Body::empty()),
        }
        .unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let problem = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v == "application/problem+json");
        let bytes = axum::body::to_bytes(resp.into_body(), 16 * 1024 * 1024)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let value = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(text.clone()));
        if !status.is_success() {
            assert!(
                problem,
                "{method} {path}: {status} is not problem+json: {text}"
            );
        }
        (status, value, text)
    }

    async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        let (s, v, _) = self.send("GET", path, Some(token), Payload::Nothing).await;
        (s, v)
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        let (s, v, _) = self
            .send("POST", path, Some(token), Payload::Json(body))
            .await;
        (s, v)
    }

    async fn import(
        &self,
        programme: &str,
        token: &str,
        csv: Vec<u8>,
        dry_run: bool,
    ) -> (StatusCode, Value) {
        let path = format!("/v1/programmes/{programme}/households/import?dry_run={dry_run}");
        let (s, v, _) = self
            .send("POST", &path, Some(token), Payload::Csv(csv))
            .await;
        (s, v)
    }

    async fn login(&self, name: &str) -> String {
        let (s, v, _) = self
            .send(
                "POST",
                "/v1/auth/login",
                None,
                Payload::Json(json!({"username": name, "password": PASSWORD})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["access_token"].as_str().unwrap().to_owned()
    }

    /// Every household of a programme, as an admin sees them.
    async fn households(&self, programme: &str, token: &str) -> Vec<Value> {
        let (s, v) = self
            .get(
                &format!("/v1/programmes/{programme}/households?limit=1000"),
                token,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["households"].as_array().unwrap().clone()
    }

    /// Creates a programme with one MPCA budget line (`mpca`, 10,000,000 XOF planned) and the
    /// MPCA rule, as `token`.
    async fn programme(&self, code: &str, token: &str) {
        let (s, v) = self.post("/v1/programmes", token, programme(code)).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let (s, v) = self
            .post(
                &format!("/v1/programmes/{code}/budget-lines"),
                token,
                json!({"code": "mpca", "modality": "mpca", "amount": "10000000"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let (s, v) = self.rule(code, token, RULE).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }

    async fn rule(&self, code: &str, token: &str, rule: &str) -> (StatusCode, Value) {
        let req = Request::builder()
            .method("POST")
            .uri(format!("/v1/programmes/{code}/rules"))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(rule.to_owned()))
            .unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let s = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (s, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn entries(&self) -> u64 {
        cva_ledger::testing::entry_count(&self.db.ledger).await
    }
}

fn programme(code: &str) -> Value {
    json!({
        "code": code, "name": "MPCA Mopti 2024", "donor": "ECHO", "grant_ref": "ECHO/2024/91011",
        "currency": "XOF", "reporting_currency": "EUR", "starts_on": "2024-01-01",
        "ends_on": "2024-12-31", "regions": ["ML05", "ML07"]
    })
}

/// One Kobo row; `n` makes the `_uuid` unique.
fn row(n: u32, name: &str, size: u32, commune: &str, msisdn: &str, nid: &str) -> String {
    let cercle = &commune[..6];
    let region = &commune[..4];
    format!(
        "2024-03-01T08:00:00,2024-03-01T08:20:00,2024-03-01,enum-01,yes,{name},female,1980,{size},idp,{region},{cercle},{commune},{msisdn},{nid},,{n},6f1c2a4e-8d3b-4c5a-9e7f-{n:012},2024-03-01T10:22:33,{n}"
    )
}

fn file(rows: &[String]) -> Vec<u8> {
    let mut s = String::from(HEADER);
    for r in rows {
        s.push('\n');
        s.push_str(r);
    }
    s.push('\n');
    s.into_bytes()
}

/// Three distinct households (no duplicate flags): sizes 5, 4 and 3, so one MPCA cycle is
/// 2 × 75,000 + 2 × 50,000 + 2 × 50,000 = 350,000 XOF.
fn three() -> Vec<String> {
    vec![
        row(
            1,
            "Aminata Traoré",
            5,
            "ML050101",
            "+223 76 12 34 56",
            "NINA0000000001A",
        ),
        row(2, "Moussa Diarra", 4, "ML050101", "+223 66 00 00 02", ""),
        row(3, "Seydou Coulibaly", 3, "ML070101", "", "NINA0000000003C"),
    ]
}

fn household_json(n: u32) -> Value {
    json!({
        "submission_id": format!("6f1c2a4e-8d3b-4c5a-9e7f-{n:012}"),
        "submitted_at": "2024-03-01T10:22:33",
        "enumerator": "enum-02",
        "consent": "yes",
        "head_name": format!("Fanta Sangaré {}", "X".repeat(n as usize % 5 + 1)),
        "head_sex": "female",
        "head_birth_year": "1990",
        "size": "4",
        "displacement_status": "host",
        "region": "ML07",
        "cercle": "ML0701",
        "commune": "ML070101",
        "msisdn": null,
        "national_id": format!("NINA{n:011}Z"),
        "biometric_ref": null
    })
}

fn ids(list: &[Value]) -> Vec<i64> {
    list.iter().map(|h| h["id"].as_i64().unwrap()).collect()
}

#[tokio::test]
async fn an_officer_sets_up_a_programme_and_imports_and_another_verifies() {
    let api = Api::new().await;
    let maker = api.user("maker", &[Role::ProgrammeOfficer]).await;
    let checker = api.user("checker", &[Role::ProgrammeOfficer]).await;

    // Programme, budget line, rule.
    let (s, v) = api.post("/v1/programmes", &maker, programme(P)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        (v["code"].as_str(), v["currency"].as_str()),
        (Some(P), Some("XOF"))
    );
    let (s, v) = api.post("/v1/programmes", &maker, programme(P)).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let mut bad = programme("OTHER-1");
    bad["regions"] = json!(["ML05", "nowhere"]);
    let (s, v) = api.post("/v1/programmes", &maker, bad).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["type"], "https://cva.example.org/problems/invalid-field");
    assert!(
        v["detail"].as_str().unwrap().starts_with("regions[1]"),
        "{v}"
    );
    let (s, v) = api
        .post(
            &format!("/v1/programmes/{P}/budget-lines"),
            &maker,
            json!({"code": "mpca", "modality": "mpca", "amount": "1000000"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["account"], format!("funds:{P}:mpca"));
    let (s, v) = api
        .post(
            &format!("/v1/programmes/{P}/budget-lines"),
            &maker,
            json!({"code": "cfw", "modality": "cash_for_work", "amount": "12.5"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["detail"].as_str().unwrap().starts_with("amount"), "{v}");
    let (s, v) = api.rule(P, &maker, RULE).await;
    assert_eq!(
        (s, v["version"].as_i64()),
        (StatusCode::CREATED, Some(1)),
        "{v}"
    );
    let overlapping = r#"{"modality":"mpca","amount":{"kind":"by_size","bands":[
        {"min_size":1,"max_size":4,"amount":50000},{"min_size":3,"max_size":null,"amount":75000}]},
        "tranches":2,"rounding":{"unit":25,"mode":"nearest"}}"#;
    let (s, v) = api.rule(P, &maker, overlapping).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .starts_with("mpca.amount.bands[1]"),
        "{v}"
    );
    let (s, v) = api.get(&format!("/v1/programmes/{P}"), &maker).await;
    assert_eq!(
        (s, v["regions"].clone()),
        (StatusCode::OK, json!(["ML05", "ML07"]))
    );

    // A bad file: every bad row listed (row, column, reason, never the value); nothing written.
    let mut rows = three();
    rows.push(row(4, "Oumar Keïta", 0, "ML050101", "", ""));
    rows.push(row(5, "Awa Touré", 3, "ML050101", "12", "").replace(",yes,", ",no,"));
    let before = api.entries().await;
    let (s, v) = api.import(P, &maker, file(&rows), false).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["type"], "https://cva.example.org/problems/bad-rows");
    let errors = v["errors"].as_array().unwrap();
    let cells: Vec<(i64, &str)> = errors
        .iter()
        .map(|e| (e["row"].as_i64().unwrap(), e["column"].as_str().unwrap()))
        .collect();
    assert!(cells.contains(&(5, "household/size")), "{v}");
    assert!(cells.contains(&(6, "consent")), "{v}");
    assert!(errors
        .iter()
        .all(|e| !e["reason"].as_str().unwrap().is_empty()));
    assert!(!v.to_string().contains("Keïta") && !v.to_string().contains("Touré"));
    assert!(api.households(P, &maker).await.is_empty());
    assert_eq!(api.entries().await, before);

    // A dry run reports and writes nothing; the real import enrols; importing again changes
    // nothing.
    let (s, v) = api.import(P, &maker, file(&three()), true).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (
            v["dry_run"].as_bool(),
            v["rows"].as_i64(),
            v["created"].as_i64()
        ),
        (Some(true), Some(3), Some(3))
    );
    assert!(v["import_id"].is_null());
    assert!(api.households(P, &maker).await.is_empty());
    let (s, v) = api.import(P, &maker, file(&three()), false).await;
    assert_eq!((s, v["created"].as_i64()), (StatusCode::OK, Some(3)), "{v}");
    assert!(v["import_id"].is_i64());
    let (s, v) = api.import(P, &maker, file(&three()), false).await;
    assert_eq!(
        (s, v["created"].as_i64(), v["unchanged"].as_i64()),
        (StatusCode::OK, Some(0), Some(3)),
        "{v}"
    );
    let list = api.households(P, &maker).await;
    assert_eq!(list.len(), 3);
    assert_eq!(list[0]["head_name"], "Aminata Traoré");
    assert_eq!(list[0]["enrolled_by"], "maker");
    assert_eq!(list[0]["status"], "registered");

    // One more by JSON.
    let (s, v) = api
        .post(
            &format!("/v1/programmes/{P}/households"),
            &maker,
            household_json(9),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["household"]["status"], "registered");
    assert_eq!(v["flags"]["households_flagged"], 0);
    let (s, v) = api
        .post(
            &format!("/v1/programmes/{P}/households"),
            &maker,
            household_json(9),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");

    // Four eyes: whoever enrolled cannot verify; another officer can.
    let id = list[0]["id"].as_i64().unwrap();
    let (s, v) = api
        .post(&format!("/v1/households/{id}/verify"), &maker, json!({}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["type"], "https://cva.example.org/problems/same-person");
    let (s, v, _) = api
        .send(
            "POST",
            &format!("/v1/households/{id}/verify"),
            Some(&checker),
            Payload::Nothing,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["status"].as_str(), v["verified_by"].as_str()),
        (Some("verified"), Some("checker"))
    );
    let (s, v) = api
        .post(&format!("/v1/households/{id}/verify"), &checker, json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "already verified: {v}");
    // Suspending needs a reason; suspend, reinstate, withdraw.
    let (s, v) = api
        .post(&format!("/v1/households/{id}/suspend"), &maker, json!({}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["detail"].as_str().unwrap().starts_with("reason"));
    let (s, v) = api
        .post(
            &format!("/v1/households/{id}/suspend"),
            &maker,
            json!({"reason": "moved away"}),
        )
        .await;
    assert_eq!(
        (s, v["status"].as_str()),
        (StatusCode::OK, Some("suspended")),
        "{v}"
    );
    let (s, v) = api
        .post(&format!("/v1/households/{id}/reinstate"), &maker, json!({}))
        .await;
    assert_eq!(
        (s, v["status"].as_str()),
        (StatusCode::OK, Some("verified")),
        "{v}"
    );
    let other = list[1]["id"].as_i64().unwrap();
    let (s, v) = api
        .post(
            &format!("/v1/households/{other}/withdraw"),
            &maker,
            json!({"reason": "left the area"}),
        )
        .await;
    assert_eq!(
        (s, v["status"].as_str()),
        (StatusCode::OK, Some("withdrawn")),
        "{v}"
    );

    // Filters and paging.
    let (s, v) = api
        .get(
            &format!("/v1/programmes/{P}/households?status=verified"),
            &maker,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(ids(v["households"].as_array().unwrap()), [id]);
    let (_, v) = api
        .get(
            &format!("/v1/programmes/{P}/households?commune=ML070101"),
            &maker,
        )
        .await;
    assert_eq!(v["households"].as_array().unwrap().len(), 2, "{v}");
    let (_, page1) = api
        .get(&format!("/v1/programmes/{P}/households?limit=2"), &maker)
        .await;
    let next = page1["next_after_id"].as_i64().unwrap();
    let (_, page2) = api
        .get(
            &format!("/v1/programmes/{P}/households?limit=2&after_id={next}"),
            &maker,
        )
        .await;
    assert_eq!(page2["households"].as_array().unwrap().len(), 2);
    assert!(page2["next_after_id"].is_i64() || page2["next_after_id"].is_null());
    api.db.cleanup().await;
}

#[tokio::test]
async fn personal_data_is_masked_for_finance_officers_and_auditors() {
    let api = Api::new().await;
    let officer = api.user("officer", &[Role::ProgrammeOfficer]).await;
    let admin = api.user("admin", &[Role::Admin]).await;
    let finance = api.user("finance", &[Role::FinanceOfficer]).await;
    let auditor = api.user("auditor", &[Role::Auditor]).await;
    let both = api
        .user("both", &[Role::Auditor, Role::ProgrammeOfficer])
        .await;
    api.programme(P, &officer).await;
    let (s, v) = api.import(P, &officer, file(&three()), false).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let id = api.households(P, &officer).await[0]["id"].as_i64().unwrap();
    let list_path = format!("/v1/programmes/{P}/households");
    let one_path = format!("/v1/households/{id}");
    const NAME: &str = "Aminata Traoré";
    const NUMBER: &str = "+22376123456";
    const NID: &str = "NINA0000000001A";

    for (who, token) in [
        ("officer", &officer),
        ("admin", &admin),
        ("both roles", &both),
    ] {
        let (s, v) = api.get(&list_path, token).await;
        assert_eq!(s, StatusCode::OK, "{who}: {v}");
        let first = &v["households"][0];
        assert_eq!(first["head_name"], NAME, "{who}");
        assert_eq!(first["msisdn"], NUMBER, "{who}");
        assert_eq!(first["national_id"], NID, "{who}");
        assert_eq!(first["masked"], false, "{who}");
        let (s, v) = api.get(&one_path, token).await;
        assert_eq!(
            (s, v["head_name"].as_str()),
            (StatusCode::OK, Some(NAME)),
            "{who}"
        );
    }
    for (who, token) in [("finance", &finance), ("auditor", &auditor)] {
        for path in [&list_path, &one_path] {
            let (s, _, text) = api.send("GET", path, Some(token), Payload::Nothing).await;
            assert_eq!(s, StatusCode::OK, "{who} {path}");
            for secret in [
                NAME,
                "Aminata",
                "Traoré",
                NUMBER,
                "76123456",
                "76 12 34 56",
                NID,
                "Moussa",
                "Seydou",
                "66000002",
            ] {
                assert!(!text.contains(secret), "{who} {path} sees {secret}: {text}");
            }
        }
        let (_, v) = api.get(&one_path, token).await;
        assert_eq!(v["masked"], true);
        assert_eq!(v["head_name"], "A•••• T••••");
        assert_eq!(v["msisdn"], "+223 •• •• 34 56");
        // What is not personal stays readable.
        assert_eq!(
            (v["commune"].as_str(), v["size"].as_i64()),
            (Some("ML050101"), Some(5))
        );
    }
    api.db.cleanup().await;
}

#[tokio::test]
async fn a_user_limited_to_another_programme_sees_nothing_of_this_one() {
    let api = Api::new().await;
    let admin = api.user("admin", &[Role::Admin]).await;
    let checker = api.user("checker", &[Role::ProgrammeOfficer]).await;
    api.programme(P, &admin).await;
    api.programme(P2, &admin).await;
    let (s, v) = api.import(P, &admin, file(&three()), false).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = api
        .import(
            P2,
            &admin,
            file(&[row(7, "Bintou Dembélé", 2, "ML070101", "", "")]),
            false,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let theirs = ids(&api.households(P, &admin).await);
    let mine = ids(&api.households(P2, &admin).await);
    // One verified household of P with an entitlement.
    let (s, _) = api
        .post(
            &format!("/v1/households/{}/verify", theirs[0]),
            &checker,
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let finance = api.user("finance", &[Role::FinanceOfficer]).await;
    let (s, v) = api
        .post(
            &format!("/v1/programmes/{P}/budget-lines/mpca/funding"),
            &finance,
            json!({"amount": "1000000", "reference": "ECHO-1", "effective_date": "2024-03-01"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = api
        .post(
            &format!("/v1/programmes/{P}/entitlements/generate"),
            &admin,
            json!({"cycle": "2024-03", "modality": "mpca", "effective_date": "2024-03-01"}),
        )
        .await;
    assert_eq!((s, v["created"].as_i64()), (StatusCode::OK, Some(2)), "{v}");
    let (_, v) = api
        .get(
            &format!("/v1/households/{}/entitlements", theirs[0]),
            &admin,
        )
        .await;
    let entitlement = v[0]["id"].as_i64().unwrap();

    let limited = api
        .user_in("limited", &[Role::ProgrammeOfficer], &[P2])
        .await;
    let limited_auditor = api.user_in("laud", &[Role::Auditor], &[P2]).await;
    let limited_finance = api.user_in("lfin", &[Role::FinanceOfficer], &[P2]).await;
    for token in [&limited, &limited_auditor, &limited_finance] {
        let (s, v) = api.get("/v1/programmes", token).await;
        assert_eq!(s, StatusCode::OK);
        let codes: Vec<&str> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["code"].as_str().unwrap())
            .collect();
        assert_eq!(codes, [P2]);
        let (s, _) = api.get(&format!("/v1/programmes/{P2}"), token).await;
        assert_eq!(s, StatusCode::OK);
        let (s, v) = api.get(&format!("/v1/households/{}", mine[0]), token).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let (_, v) = api.get("/v1/programmes", &admin).await;
    assert_eq!(
        v.as_array().unwrap().len(),
        2,
        "an unrestricted user sees every programme"
    );

    // Outside the scope: the same 404 as something that does not exist.
    let (_, unknown) = api.get("/v1/programmes/NOPE-1", &limited).await;
    let (s, v) = api.get(&format!("/v1/programmes/{P}"), &limited).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        v["detail"].as_str().unwrap().replace(P, "X"),
        unknown["detail"].as_str().unwrap().replace("NOPE-1", "X")
    );
    for path in [
        format!("/v1/programmes/{P}/households"),
        format!("/v1/programmes/{P}/budget-lines"),
        format!("/v1/programmes/{P}/rates"),
        format!("/v1/programmes/{P}/flags"),
        format!("/v1/households/{}", theirs[0]),
        format!("/v1/households/{}/entitlements", theirs[0]),
    ] {
        for token in [&limited, &limited_auditor] {
            let (s, v) = api.get(&path, token).await;
            assert_eq!(s, StatusCode::NOT_FOUND, "{path}: {v}");
            assert!(!v.to_string().contains("Aminata"));
        }
    }
    let before = api.entries().await;
    for (path, body) in [
        (format!("/v1/households/{}/verify", theirs[1]), json!({})),
        (
            format!("/v1/households/{}/withdraw", theirs[1]),
            json!({"reason": "x"}),
        ),
        (format!("/v1/programmes/{P}/households"), household_json(5)),
        (
            format!("/v1/programmes/{P}/budget-lines"),
            json!({"code": "x", "modality": "shelter", "amount": "1"}),
        ),
        (
            format!("/v1/programmes/{P}/entitlements/generate"),
            json!({"cycle": "2024-04", "modality": "mpca", "effective_date": "2024-04-01"}),
        ),
        (
            format!("/v1/entitlements/{entitlement}/cancel"),
            json!({"reason": "not mine"}),
        ),
    ] {
        let (s, v) = api.post(&path, &limited, body).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}: {v}");
    }
    let (s, _, _) = api
        .send(
            "POST",
            &format!("/v1/programmes/{P}/households/import"),
            Some(&limited),
            Payload::Csv(file(&three())),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = api
        .post(
            &format!("/v1/programmes/{P}/budget-lines/mpca/funding"),
            &limited_finance,
            json!({"amount": "5", "reference": "x", "effective_date": "2024-03-01"}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(api.entries().await, before, "nothing was written");
    let (_, v) = api
        .get(&format!("/v1/households/{}", theirs[1]), &admin)
        .await;
    assert_eq!(v["status"], "registered");
    // A limited officer cannot create a programme outside their scope, only inside it.
    let (s, v) = api
        .post("/v1/programmes", &limited, programme("MLI-NEW-24"))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    api.db.cleanup().await;
}

#[tokio::test]
async fn funding_rates_and_entitlements_under_budget_control() {
    let api = Api::new().await;
    let officer = api.user("officer", &[Role::ProgrammeOfficer]).await;
    let checker = api.user("checker", &[Role::ProgrammeOfficer]).await;
    let finance = api.user("finance", &[Role::FinanceOfficer]).await;
    let auditor = api.user("auditor", &[Role::Auditor]).await;
    api.programme(P, &officer).await;
    let (s, v) = api.import(P, &officer, file(&three()), false).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let hh = ids(&api.households(P, &officer).await);
    for id in &hh {
        let (s, v) = api
            .post(&format!("/v1/households/{id}/verify"), &checker, json!({}))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }

    // Rates: finance records, everyone reads.
    let (s, v) = api
        .post(
            &format!("/v1/programmes/{P}/rates"),
            &finance,
            json!({"rate_date": "2024-03-01", "rate": "0.001524", "source": "ECB"}),
        )
        .await;
    assert_eq!(
        (s, v["rate"].as_str()),
        (StatusCode::CREATED, Some("0.001524")),
        "{v}"
    );
    let (s, v) = api
        .post(
            &format!("/v1/programmes/{P}/rates"),
            &finance,
            json!({"rate_date": "2024-03-01", "rate": "-1", "source": "ECB"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, v) = api
        .get(&format!("/v1/programmes/{P}/rates"), &auditor)
        .await;
    assert_eq!((s, v.as_array().unwrap().len()), (StatusCode::OK, 1));

    // Funding: 100,000 received; the cycle needs 350,000.
    let funding = |amount: &str, reference: &str| json!({"amount": amount, "reference": reference, "effective_date": "2024-03-01"});
    let fund_path = format!("/v1/programmes/{P}/budget-lines/mpca/funding");
    let (s, v) = api
        .post(&fund_path, &finance, funding("100000", "ECHO-1"))
        .await;
    assert_eq!(
        (s, v["replayed"].as_bool()),
        (StatusCode::CREATED, Some(false)),
        "{v}"
    );
    let first = v["id"].clone();
    let (s, v) = api
        .post(&fund_path, &finance, funding("100000", "ECHO-1"))
        .await;
    assert_eq!(
        (s, v["replayed"].as_bool(), &v["id"]),
        (StatusCode::OK, Some(true), &first),
        "{v}"
    );
    let (s, v) = api
        .post(&fund_path, &finance, funding("99", "ECHO-1"))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let (s, v) = api
        .post(
            &format!("/v1/programmes/{P}/budget-lines/nope/funding"),
            &finance,
            funding("1", "X"),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (s, v) = api
        .get(&format!("/v1/programmes/{P}/budget-lines"), &auditor)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (
            v[0]["funded"].as_i64(),
            v[0]["committed"].as_i64(),
            v[0]["available"].as_i64()
        ),
        (Some(100_000), Some(0), Some(100_000))
    );

    let generate = json!({"cycle": "2024-03", "modality": "mpca", "effective_date": "2024-03-01"});
    let gen_path = format!("/v1/programmes/{P}/entitlements/generate");
    let before = api.entries().await;
    let (s, v) = api.post(&gen_path, &officer, generate.clone()).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(
        v["type"],
        "https://cva.example.org/problems/budget-exceeded"
    );
    assert!(v["detail"].as_str().unwrap().contains("350000"), "{v}");
    assert_eq!(api.entries().await, before, "no entry written");
    let (_, v) = api
        .get(&format!("/v1/households/{}/entitlements", hh[0]), &officer)
        .await;
    assert_eq!(v, json!([]));

    let (s, v) = api
        .post(&fund_path, &finance, funding("300000", "ECHO-2"))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = api.post(&gen_path, &officer, generate.clone()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (
            v["eligible_households"].as_i64(),
            v["created"].as_i64(),
            v["amount"].as_i64(),
            v["rule_version"].as_i64()
        ),
        (Some(3), Some(6), Some(350_000), Some(1))
    );
    assert_eq!(
        api.entries().await,
        before + 1 + 6,
        "one funding, six entitlements"
    );
    let (s, v) = api.post(&gen_path, &officer, generate.clone()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (
            v["created"].as_i64(),
            v["already_granted"].as_i64(),
            v["amount"].as_i64()
        ),
        (Some(0), Some(6), Some(0))
    );
    let (_, v) = api
        .get(&format!("/v1/programmes/{P}/budget-lines"), &finance)
        .await;
    assert_eq!(
        (v[0]["committed"].as_i64(), v[0]["available"].as_i64()),
        (Some(350_000), Some(50_000))
    );

    // Entitlements of a household, readable by every role; cancelling reverses the entry.
    let (s, v) = api
        .get(&format!("/v1/households/{}/entitlements", hh[0]), &auditor)
        .await;
    assert_eq!(s, StatusCode::OK);
    let list = v.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(
        (list[0]["amount"].as_i64(), list[0]["status"].as_str()),
        (Some(75_000), Some("granted"))
    );
    let ent = list[0]["id"].as_i64().unwrap();
    let (s, v) = api
        .post(
            &format!("/v1/entitlements/{ent}/cancel"),
            &officer,
            json!({"reason": ""}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, v) = api
        .post(
            &format!("/v1/entitlements/{ent}/cancel"),
            &officer,
            json!({"reason": "household left"}),
        )
        .await;
    assert_eq!(
        (s, v["status"].as_str()),
        (StatusCode::OK, Some("cancelled")),
        "{v}"
    );
    assert!(v["cancel_entry_id"].is_string());
    let (s, v) = api
        .post(
            &format!("/v1/entitlements/{ent}/cancel"),
            &officer,
            json!({"reason": "again"}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let (s, _) = api
        .post(
            "/v1/entitlements/999999/cancel",
            &officer,
            json!({"reason": "x"}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, v) = api
        .get(&format!("/v1/programmes/{P}/budget-lines"), &finance)
        .await;
    assert_eq!(v[0]["available"].as_i64(), Some(125_000));
    cva_ledger::testing::assert_books_sound(&api.db.ledger).await;
    api.db.cleanup().await;
}

#[tokio::test]
async fn duplicate_flags_are_listed_and_decided() {
    let api = Api::new().await;
    let officer = api.user("officer", &[Role::ProgrammeOfficer]).await;
    let auditor = api.user("auditor", &[Role::Auditor]).await;
    let finance = api.user("finance", &[Role::FinanceOfficer]).await;
    api.programme(P, &officer).await;
    // 1 and 2 share a national ID; 3 and 4 share a phone.
    let rows = vec![
        row(
            1,
            "Aminata Traoré",
            5,
            "ML050101",
            "+223 76 12 34 56",
            "NINA0000000001A",
        ),
        row(
            2,
            "Aminata Traore",
            7,
            "ML070101",
            "+223 66 00 00 02",
            "NINA0000000001A",
        ),
        row(3, "Moussa Diarra", 4, "ML050101", "76.00.00.03", ""),
        row(4, "Oumar Keïta", 6, "ML050102", "0022376000003", ""),
    ];
    let (s, v) = api.import(P, &officer, file(&rows), false).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (
            v["flags"]["same_national_id"].as_i64(),
            v["flags"]["shared_phone"].as_i64()
        ),
        (Some(1), Some(1)),
        "{v}"
    );
    let hh = ids(&api.households(P, &officer).await);
    let flags_path = format!("/v1/programmes/{P}/flags?open=true");
    let (s, v) = api.get(&flags_path, &officer).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let open = v.as_array().unwrap().clone();
    assert_eq!(open.len(), 2);
    let (s, v) = api.get(&flags_path, &auditor).await;
    assert_eq!((s, v.as_array().unwrap().len()), (StatusCode::OK, 2));
    let (s, _) = api.get(&flags_path, &finance).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (_, h) = api
        .get(&format!("/v1/households/{}", hh[0]), &officer)
        .await;
    assert_eq!(h["open_flags"], 1);

    let by_kind = |kind: &str| {
        open.iter().find(|f| f["kind"] == kind).unwrap()["id"]
            .as_i64()
            .unwrap()
    };
    let nid = by_kind("same_national_id");
    let phone = by_kind("shared_phone");
    let (s, v) = api
        .post(
            &format!("/v1/flags/{phone}/decision"),
            &officer,
            json!({"decision": "distinct", "reason": "two families, one phone"}),
        )
        .await;
    assert_eq!(
        (s, v["status"].as_str()),
        (StatusCode::OK, Some("distinct")),
        "{v}"
    );
    let (s, v) = api
        .post(
            &format!("/v1/flags/{phone}/decision"),
            &officer,
            json!({"decision": "distinct", "reason": "again"}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let (s, v) = api
        .post(
            &format!("/v1/flags/{nid}/decision"),
            &officer,
            json!({"decision": "duplicate", "keep": 424242, "reason": "same person"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["detail"].as_str().unwrap().starts_with("keep"));
    let (s, v) = api
        .post(
            &format!("/v1/flags/{nid}/decision"),
            &officer,
            json!({"decision": "maybe", "reason": "x"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = api
        .post(
            &format!("/v1/flags/{nid}/decision"),
            &auditor,
            json!({"decision": "distinct", "reason": "x"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, v) = api
        .post(&format!("/v1/flags/{nid}/decision"), &officer, json!({"decision": "duplicate", "keep": hh[0], "reason": "same person, registered twice"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["status"].as_str(), v["withdrawn"].as_i64()),
        (Some("duplicate"), Some(hh[1]))
    );
    let (_, v) = api
        .get(&format!("/v1/households/{}", hh[1]), &officer)
        .await;
    assert_eq!(v["status"], "withdrawn");
    let (_, v) = api.get(&flags_path, &officer).await;
    assert_eq!(v, json!([]), "the queue is empty");
    let (_, v) = api
        .get(&format!("/v1/programmes/{P}/flags"), &officer)
        .await;
    assert_eq!(
        v.as_array().unwrap().len(),
        2,
        "without open=true: every flag"
    );
    let (s, _) = api
        .post(
            "/v1/flags/999999/decision",
            &officer,
            json!({"decision": "distinct", "reason": "x"}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    api.db.cleanup().await;
}

#[tokio::test]
async fn bad_requests_get_problems_that_name_the_field_and_no_personal_data() {
    let api = Api::new().await;
    let officer = api.user("officer", &[Role::ProgrammeOfficer]).await;
    api.programme(P, &officer).await;
    for path in [
        "/v1/households/abc".to_owned(),
        "/v1/households/1.5/entitlements".to_owned(),
        format!("/v1/programmes/{P}/households?limit=0"),
        format!("/v1/programmes/{P}/households?limit=1001"),
        format!("/v1/programmes/{P}/households?status=happy"),
        format!("/v1/programmes/{P}/households?colour=red"),
        format!("/v1/programmes/{P}/flags?open=perhaps"),
        "/v1/programmes/x/budget-lines".to_owned(),
    ] {
        let (s, v) = api.get(&path, &officer).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}: {v}");
    }
    for path in [
        "/v1/households/abc/verify",
        "/v1/flags/x/decision",
        "/v1/entitlements/x/cancel",
    ] {
        let (s, v) = api.post(path, &officer, json!({"reason": "x"})).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}: {v}");
    }
    // A value of the wrong type is named by its field, not repeated.
    let mut h = household_json(1);
    h["msisdn"] = json!(76123456);
    let (s, v) = api
        .post(&format!("/v1/programmes/{P}/households"), &officer, h)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let detail = v["detail"].as_str().unwrap();
    assert!(
        detail.contains("msisdn") && !detail.contains("76123456"),
        "{detail}"
    );
    // A rule broken by a field: named, the value not shown.
    let mut h = household_json(2);
    h["head_birth_year"] = json!("1700");
    let (s, v) = api
        .post(&format!("/v1/programmes/{P}/households"), &officer, h)
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["type"], "https://cva.example.org/problems/invalid-field");
    assert!(
        v["detail"].as_str().unwrap().starts_with("head_birth_year"),
        "{v}"
    );
    let (s, v) = api
        .post(
            &format!("/v1/programmes/{P}/households"),
            &officer,
            json!({"head_name": "A B", "extra": 1}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    // The import wants CSV; a file without the required columns is refused by name.
    let (s, v, _) = api
        .send(
            "POST",
            &format!("/v1/programmes/{P}/households/import"),
            Some(&officer),
            Payload::Json(json!({})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = api
        .import(P, &officer, b"_uuid,consent\n".to_vec(), false)
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("household/head_name"),
        "{v}"
    );
    let (s, v, _) = api
        .send(
            "POST",
            &format!("/v1/programmes/{P}/households/import?dry=1"),
            Some(&officer),
            Payload::Csv(file(&three())),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    // The rule body must be JSON; a rule that is not one names why.
    let (s, v) = api.rule(P, &officer, r#"{"modality":"teleport"}"#).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, v) = api.rule(P, &officer, r#"{"modality":"mpca","amount":{"kind":"flat","amount":1000},"tranches":0,"rounding":{"unit":1,"mode":"down"}}"#).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["detail"].as_str().unwrap().starts_with("mpca.tranches"),
        "{v}"
    );
    let (s, v, _) = api
        .send(
            "POST",
            &format!("/v1/programmes/{P}/rules"),
            Some(&officer),
            Payload::Csv(RULE.as_bytes().to_vec()),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    // Too large.
    let big = vec![b'a'; 2 * 1024 * 1024];
    let (s, _, _) = api
        .send(
            "POST",
            &format!("/v1/programmes/{P}/households/import"),
            Some(&officer),
            Payload::Csv(big),
        )
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    api.db.cleanup().await;
}

/// Who may call what on the registry routes: each route × admin, programme officer, finance
/// officer, auditor and no token. Allowed calls succeed (each gets fresh objects to act on);
/// the others are refused with 403, or 401 without a token.
#[tokio::test]
async fn role_matrix_for_the_registry_routes() {
    let api = Api::new().await;
    let tokens = [
        (Role::Admin, api.user("admin1", &[Role::Admin]).await),
        (
            Role::ProgrammeOfficer,
            api.user("prog1", &[Role::ProgrammeOfficer]).await,
        ),
        (
            Role::FinanceOfficer,
            api.user("fin1", &[Role::FinanceOfficer]).await,
        ),
        (Role::Auditor, api.user("audit1", &[Role::Auditor]).await),
    ];
    let admin = tokens[0].1.clone();
    let seeder = api.user("seeder", &[Role::ProgrammeOfficer]).await;
    api.programme(P, &admin).await;
    api.programme(P2, &admin).await;
    let (s, _) = api
        .post(
            &format!("/v1/programmes/{P}/budget-lines/mpca/funding"),
            &admin,
            json!({"amount": "10000000", "reference": "seed", "effective_date": "2024-03-01"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    // Pools of households, 5 each (one per caller): to verify, to suspend, to reinstate, to
    // withdraw, with entitlements to cancel; and 5 pairs sharing a national ID (5 flags).
    let mut rows = Vec::new();
    // Each in its own commune, so that no two names are compared.
    for n in 0..25u32 {
        rows.push(row(
            100 + n,
            "Fatoumata Konaté",
            3,
            &format!("ML0501{:02}", n + 1),
            "",
            "",
        ));
    }
    for n in 0..5u32 {
        let nid = format!("DUP{n:04}");
        rows.push(row(
            200 + n,
            "Kadiatou Sow",
            2,
            &format!("ML0502{:02}", n + 1),
            "",
            &nid,
        ));
        rows.push(row(
            300 + n,
            "Hawa Cissé",
            6,
            &format!("ML0702{:02}", n + 1),
            "",
            &nid,
        ));
    }
    let (s, v) = api.import(P, &seeder, file(&rows), false).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let hh = ids(&api.households(P, &admin).await);
    let pool = |k: usize| hh[k * 5..k * 5 + 5].to_vec();
    let (to_verify, to_suspend, to_reinstate, to_withdraw, to_pay) =
        (pool(0), pool(1), pool(2), pool(3), pool(4));
    for id in to_suspend.iter().chain(&to_reinstate).chain(&to_pay) {
        let (s, _) = api
            .post(&format!("/v1/households/{id}/verify"), &admin, json!({}))
            .await;
        assert_eq!(s, StatusCode::OK);
    }
    for id in &to_reinstate {
        let (s, _) = api
            .post(
                &format!("/v1/households/{id}/suspend"),
                &admin,
                json!({"reason": "absent"}),
            )
            .await;
        assert_eq!(s, StatusCode::OK);
    }
    let (s, v) = api
        .post(
            &format!("/v1/programmes/{P}/entitlements/generate"),
            &admin,
            json!({"cycle": "seed", "modality": "mpca", "effective_date": "2024-03-01"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let mut to_cancel = Vec::new();
    for id in &to_pay {
        let (_, v) = api
            .get(&format!("/v1/households/{id}/entitlements"), &admin)
            .await;
        to_cancel.push(v[0]["id"].as_i64().unwrap());
    }
    let (_, v) = api
        .get(&format!("/v1/programmes/{P}/flags?open=true"), &admin)
        .await;
    let flags: Vec<i64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_i64().unwrap())
        .collect();
    assert_eq!(flags.len(), 5, "{v}");
    let any = hh[0];

    const READ: &[Role] = &[
        Role::Admin,
        Role::ProgrammeOfficer,
        Role::FinanceOfficer,
        Role::Auditor,
    ];
    const STAFF: &[Role] = &[Role::Admin, Role::ProgrammeOfficer];
    const FINANCE: &[Role] = &[Role::Admin, Role::FinanceOfficer];
    const FLAGS: &[Role] = &[Role::Admin, Role::ProgrammeOfficer, Role::Auditor];
    type Make = Box<dyn Fn(usize) -> (String, Payload)>;
    let get = |path: String| -> Make { Box::new(move |_| (path.clone(), Payload::Nothing)) };
    let cases: Vec<(&str, &[Role], Make)> = vec![
        ("GET", READ, get("/v1/programmes".into())),
        (
            "POST",
            STAFF,
            Box::new(|i| {
                (
                    "/v1/programmes".into(),
                    Payload::Json(programme(&format!("RM-{i}"))),
                )
            }),
        ),
        ("GET", READ, get(format!("/v1/programmes/{P}"))),
        ("GET", READ, get(format!("/v1/programmes/{P}/budget-lines"))),
        (
            "POST",
            STAFF,
            Box::new(|i| {
                (
                    format!("/v1/programmes/{P2}/budget-lines"),
                    Payload::Json(
                        json!({"code": format!("line-{i}"), "modality": "shelter", "amount": "1000"}),
                    ),
                )
            }),
        ),
        (
            "POST",
            FINANCE,
            Box::new(|i| {
                (
                    format!("/v1/programmes/{P2}/budget-lines/mpca/funding"),
                    Payload::Json(
                        json!({"amount": "10", "reference": format!("r-{i}"), "effective_date": "2024-03-01"}),
                    ),
                )
            }),
        ),
        ("GET", READ, get(format!("/v1/programmes/{P}/rates"))),
        (
            "POST",
            FINANCE,
            Box::new(|_| {
                (
                    format!("/v1/programmes/{P}/rates"),
                    Payload::Json(
                        json!({"rate_date": "2024-03-01", "rate": "0.0015", "source": "ECB"}),
                    ),
                )
            }),
        ),
        (
            "POST",
            STAFF,
            Box::new(|_| {
                (
                    format!("/v1/programmes/{P2}/rules"),
                    Payload::Json(serde_json::from_str(RULE).unwrap()),
                )
            }),
        ),
        ("GET", READ, get(format!("/v1/programmes/{P}/households"))),
        (
            "POST",
            STAFF,
            Box::new(|i| {
                (
                    format!("/v1/programmes/{P2}/households"),
                    Payload::Json(household_json(500 + i as u32)),
                )
            }),
        ),
        (
            "POST",
            STAFF,
            Box::new(|i| {
                let n = 600 + i as u32;
                (
                    format!("/v1/programmes/{P2}/households/import?dry_run=false"),
                    Payload::Csv(file(&[row(n, "Nana Ba", 2, "ML050101", "", "")])),
                )
            }),
        ),
        ("GET", READ, get(format!("/v1/households/{any}"))),
        (
            "POST",
            STAFF,
            Box::new(move |i| {
                (
                    format!("/v1/households/{}/verify", to_verify[i]),
                    Payload::Nothing,
                )
            }),
        ),
        (
            "POST",
            STAFF,
            Box::new(move |i| {
                (
                    format!("/v1/households/{}/suspend", to_suspend[i]),
                    Payload::Json(json!({"reason": "absent at distribution"})),
                )
            }),
        ),
        (
            "POST",
            STAFF,
            Box::new(move |i| {
                (
                    format!("/v1/households/{}/reinstate", to_reinstate[i]),
                    Payload::Json(json!({})),
                )
            }),
        ),
        (
            "POST",
            STAFF,
            Box::new(move |i| {
                (
                    format!("/v1/households/{}/withdraw", to_withdraw[i]),
                    Payload::Json(json!({"reason": "moved"})),
                )
            }),
        ),
        (
            "GET",
            FLAGS,
            get(format!("/v1/programmes/{P}/flags?open=true")),
        ),
        (
            "POST",
            STAFF,
            Box::new(move |i| {
                (
                    format!("/v1/flags/{}/decision", flags[i]),
                    Payload::Json(json!({"decision": "distinct", "reason": "different people"})),
                )
            }),
        ),
        (
            "POST",
            STAFF,
            Box::new(|i| {
                (
                    format!("/v1/programmes/{P}/entitlements/generate"),
                    Payload::Json(
                        json!({"cycle": format!("c-{i}"), "modality": "mpca", "effective_date": "2024-03-01"}),
                    ),
                )
            }),
        ),
        (
            "GET",
            READ,
            get(format!("/v1/households/{any}/entitlements")),
        ),
        (
            "POST",
            STAFF,
            Box::new(move |i| {
                (
                    format!("/v1/entitlements/{}/cancel", to_cancel[i]),
                    Payload::Json(json!({"reason": "error"})),
                )
            }),
        ),
    ];
    for (method, allowed, make) in &cases {
        for (i, (role, token)) in tokens.iter().enumerate() {
            let (path, body) = make(i);
            let (s, v, _) = api.send(method, &path, Some(token), body).await;
            if allowed.contains(role) {
                assert!(s.is_success(), "{role} {method} {path}: {s} {v}");
            } else {
                assert_eq!(s, StatusCode::FORBIDDEN, "{role} {method} {path}: {v}");
                assert_eq!(v["type"], "https://cva.example.org/problems/forbidden");
            }
        }
        let (path, body) = make(4);
        let (s, _, _) = api.send(method, &path, None, body).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "no token: {method} {path}");
    }
    cva_ledger::testing::assert_books_sound(&api.db.ledger).await;
    api.db.cleanup().await;
}
