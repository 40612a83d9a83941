//! Integration tests of the GSMA MMAPI disbursement simulator over real loopback HTTP: batch lifecycle, paging, magic MSISDNs, float, faults, determinism, error parsing and the statement CSV.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use cva_providers::faults::FaultSpecError;
use cva_providers::gsma::{
    parse_error, rejection_code, BatchStatus, BatchTransaction, Completion, Rejection,
    RequestState, RequestStatus, ResponseObject,
};
use cva_providers::sim::{Faults, RunningSim, SimConfig, Simulator, TxStatus};
use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

const TOKEN: &str = "s3cret-token";

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn config(seed: u64, float: &str) -> SimConfig {
    SimConfig {
        seed,
        currency: "XOF".to_owned(),
        float_balance: dec(float),
        api_key: Some(TOKEN.to_owned()),
        processing_delay: Duration::from_millis(3),
        reversal_delay: Duration::from_millis(10),
        ..SimConfig::default()
    }
}

async fn spawn(config: SimConfig) -> RunningSim {
    Simulator::spawn(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn corr(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

fn tx(reference: &str, msisdn: &str, amount: &str) -> Value {
    json!({
        "type": "disbursement",
        "amount": amount,
        "currency": "XOF",
        "creditParty": [{"key": "msisdn", "value": msisdn}],
        "requestingOrganisationTransactionReference": reference,
    })
}

fn batch(transactions: Vec<Value>) -> Value {
    json!({"batchTitle": "round 1", "batchDescription": "test batch", "transactions": transactions})
}

struct Http {
    client: reqwest::Client,
    base: String,
}

struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json<T: DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    fn header_usize(&self, name: &str) -> usize {
        self.headers[name].to_str().unwrap().parse().unwrap()
    }
}

impl Http {
    fn new(sim: &RunningSim) -> Self {
        Self {
            client: reqwest::Client::new(),
            base: sim.base_url.clone(),
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.unwrap();
        Answer {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.bytes().await.unwrap().to_vec(),
        }
    }

    async fn post(&self, token: Option<&str>, correlation: Option<&str>, body: &Value) -> Answer {
        let mut request = self
            .client
            .post(format!("{}/batchtransactions", self.base))
            .header("content-type", "application/json")
            .header("X-Date", "2025-01-01T00:00:00Z")
            .body(body.to_string());
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        if let Some(correlation) = correlation {
            request = request.header("X-CorrelationID", correlation);
        }
        self.send(request).await
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(
            self.client
                .get(format!("{}{path}", self.base))
                .header("Authorization", format!("Bearer {TOKEN}")),
        )
        .await
    }

    async fn poll_request_state(&self, server_correlation_id: &str) -> RequestState {
        for _ in 0..500 {
            let state: RequestState = self
                .get(&format!("/requeststates/{server_correlation_id}"))
                .await
                .json();
            if state.status != RequestStatus::Pending {
                return state;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("request {server_correlation_id} still pending");
    }

    /// Pages `/batchtransactions/{id}/{kind}` with limit 3, checking the count headers.
    async fn page_all<T: DeserializeOwned>(&self, batch_id: &str, kind: &str) -> Vec<T> {
        let mut all = Vec::new();
        let mut offset = 0;
        loop {
            let answer = self
                .get(&format!(
                    "/batchtransactions/{batch_id}/{kind}?offset={offset}&limit=3"
                ))
                .await;
            assert_eq!(answer.status, StatusCode::OK);
            let available = answer.header_usize("x-records-available-count");
            let page: Vec<T> = answer.json();
            assert!(page.len() <= 3);
            assert_eq!(answer.header_usize("x-records-returned-count"), page.len());
            offset += page.len();
            all.extend(page);
            if page_done(offset, available) {
                assert_eq!(all.len(), available);
                return all;
            }
        }
    }
}

fn page_done(offset: usize, available: usize) -> bool {
    offset >= available
}

async fn wait_until(
    sim: &RunningSim,
    what: &str,
    pred: impl Fn(&cva_providers::sim::SimState) -> bool,
) {
    for _ in 0..500 {
        if pred(&sim.state()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn batch_lifecycle_with_magic_msisdns_and_paging() {
    let mut cfg = config(7, "10000000");
    cfg.fee = dec("100");
    let sim = spawn(cfg).await;
    let http = Http::new(&sim);
    let mut eur = tx("L-eur", "+22370129999", "1000");
    eur["currency"] = json!("EUR");
    let body = batch(vec![
        tx("L-ok1", "+22370120010", "65000"),
        tx("L-0001", "+22370120001", "65000"),
        tx("L-ok2", "+22370120020", "65000.00"),
        tx("L-0002", "+22370120002", "65000"),
        tx("L-0003", "+22370120003", "65000"),
        tx("L-ok3", "+22370120030", "12500.5"),
        tx("L-0004", "+22370120004", "65000"),
        tx("L-0005", "+22370120005", "65000"),
        tx("L-0006", "+22370120006", "40000"),
        tx("L-ok4", "22370120040", "1"),
        eur,
    ]);
    let answer = http.post(Some(TOKEN), Some(&corr(1)), &body).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert!(answer.headers.contains_key("x-date"));
    let accepted: RequestState = answer.json();
    assert_eq!(accepted.status, RequestStatus::Pending);
    assert_eq!(accepted.poll_limit, Some(100));
    let batch_id = accepted.object_reference.clone().unwrap();

    let done = http
        .poll_request_state(&accepted.server_correlation_id)
        .await;
    assert_eq!(done.status, RequestStatus::Completed);
    assert_eq!(done.object_reference.as_deref(), Some(batch_id.as_str()));

    let view: BatchTransaction = http
        .get(&format!("/batchtransactions/{batch_id}"))
        .await
        .json();
    assert_eq!(view.batch_id, batch_id);
    assert_eq!(view.completed_count, 5, "4 normal + ...0006");
    assert_eq!(view.rejection_count, 5, "0001-0004 + wrong currency");
    assert_eq!(view.parsing_success_count, 10);
    // ...0005 is stuck, so the batch is approved but never completes.
    assert_eq!(view.batch_status, BatchStatus::Approved);
    assert!(view.processing_flag);
    assert!(view.completion_date.is_none());
    assert!(view.approval_date.is_some());

    let completions: Vec<Completion> = http.page_all(&batch_id, "completions").await;
    let rejections: Vec<Rejection> = http.page_all(&batch_id, "rejections").await;
    assert_eq!(
        completions.len() + rejections.len(),
        (view.completed_count + view.rejection_count) as usize
    );
    let reasons: HashMap<String, String> = rejections
        .iter()
        .map(|r| {
            (
                r.requesting_organisation_transaction_reference
                    .clone()
                    .unwrap(),
                rejection_code(&r.rejection_reason).to_owned(),
            )
        })
        .collect();
    let expected: HashMap<String, String> = [
        ("L-0001", "formatError"),
        ("L-0002", "identifierError"),
        ("L-0003", "requestDeclined"),
        ("L-0004", "maxBalanceExceeded"),
        ("L-eur", "currencyNotSupported"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_owned(), b.to_owned()))
    .collect();
    assert_eq!(reasons, expected);
    let mut completed: Vec<String> = completions
        .iter()
        .map(|c| {
            c.requesting_organisation_transaction_reference
                .clone()
                .unwrap()
        })
        .collect();
    completed.sort();
    assert_eq!(completed, ["L-0006", "L-ok1", "L-ok2", "L-ok3", "L-ok4"]);

    // The reversal of ...0006 comes later.
    wait_until(&sim, "reversal of L-0006", |s| {
        s.by_reference("L-0006").unwrap().status == TxStatus::Reversed
    })
    .await;
    let state = sim.state();
    assert_eq!(state.batch_ids, std::slice::from_ref(&batch_id));
    assert_eq!(state.transactions.len(), 11);
    for c in &completions {
        let reference = c
            .requesting_organisation_transaction_reference
            .as_deref()
            .unwrap();
        let t = state.by_reference(reference).unwrap();
        assert_eq!(t.provider_transaction_id, c.transaction_reference);
        assert_eq!(c.link, format!("/transactions/{}", c.transaction_reference));
        assert_eq!(t.batch_id, batch_id);
        let want = if reference == "L-0006" {
            TxStatus::Reversed
        } else {
            TxStatus::Completed
        };
        assert_eq!(t.status, want, "{reference}");
        assert_eq!(t.fee, dec("100"));
    }
    for r in &rejections {
        let t = state
            .by_reference(
                r.requesting_organisation_transaction_reference
                    .as_deref()
                    .unwrap(),
            )
            .unwrap();
        assert_eq!(t.status, TxStatus::Failed);
        assert_eq!(
            t.rejection_reason.as_deref(),
            Some(r.rejection_reason.as_str())
        );
    }
    let stuck = state.by_reference("L-0005").unwrap();
    assert_eq!(stuck.status, TxStatus::Pending);
    assert_eq!(stuck.msisdn.as_deref(), Some("+22370120005"));
    // Float: 10,000,000 − (65000 + 65000 + 12500.5 + 1 + 40000) − 5 × 100 fee + 40000 reversed.
    assert_eq!(state.float_balance, dec("9856998.5"));

    // The reversed transaction shows as such on /transactions.
    let reversed_id = &state
        .by_reference("L-0006")
        .unwrap()
        .provider_transaction_id;
    let record: Value = http
        .get(&format!("/transactions/{reversed_id}"))
        .await
        .json();
    assert_eq!(record["transactionStatus"], "reversed");
    assert_eq!(
        record["requestingOrganisationTransactionReference"],
        "L-0006"
    );

    // Bad paging and unknown ids are GSMA errors.
    let bad = http
        .get(&format!(
            "/batchtransactions/{batch_id}/completions?limit=abc"
        ))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        parse_error(&bad.body).unwrap().error_parameters[0].key,
        "limit"
    );
    let missing = http.get("/batchtransactions/nope").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(
        parse_error(&missing.body).unwrap().error_code,
        "genericError"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn duplicate_correlation_id_is_refused_and_processed_once() {
    let sim = spawn(config(1, "1000000")).await;
    let http = Http::new(&sim);
    let body = batch(vec![
        tx("D-1", "+22370121111", "500"),
        tx("D-2", "+22370122222", "700"),
    ]);
    let first = http.post(Some(TOKEN), Some(&corr(9)), &body).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let second = http.post(Some(TOKEN), Some(&corr(9)), &body).await;
    assert_eq!(second.status, StatusCode::BAD_REQUEST);
    let err = parse_error(&second.body).unwrap();
    assert_eq!(err.error_code, "duplicateRequest");
    assert_eq!(err.error_category, "businessRule");
    assert_eq!(err.error_parameters[0].key, "X-CorrelationID");

    let state: RequestState = first.json();
    http.poll_request_state(&state.server_correlation_id).await;
    let state = sim.state();
    assert_eq!(state.batch_ids.len(), 1);
    assert_eq!(state.transactions.len(), 2);
    assert_eq!(state.float_balance, dec("998800"));
    assert!(state
        .transactions
        .iter()
        .all(|t| t.status == TxStatus::Completed));
}

#[tokio::test]
async fn correlation_header_and_token_are_checked() {
    let sim = spawn(config(1, "1000000")).await;
    let http = Http::new(&sim);
    let body = batch(vec![tx("H-1", "+22370121111", "500")]);

    let missing = http.post(Some(TOKEN), None, &body).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    let err = parse_error(&missing.body).unwrap();
    assert_eq!(err.error_category, "validation");
    assert_eq!(err.error_parameters[0].key, "X-CorrelationID");

    let invalid = http.post(Some(TOKEN), Some("not-a-uuid"), &body).await;
    assert_eq!(invalid.status, StatusCode::BAD_REQUEST);
    let err = parse_error(&invalid.body).unwrap();
    assert_eq!(err.error_category, "validation");
    assert_eq!(err.error_code, "formatError");
    assert_eq!(err.error_parameters[0].key, "X-CorrelationID");
    assert_eq!(err.error_parameters[0].value, "not-a-uuid");

    for token in [Some("wrong"), None] {
        let denied = http.post(token, Some(&corr(1)), &body).await;
        assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            parse_error(&denied.body).unwrap().error_category,
            "authorisation"
        );
    }
    let denied_get = http
        .send(
            http.client
                .get(format!("{}/batchtransactions/x", http.base)),
        )
        .await;
    assert_eq!(denied_get.status, StatusCode::UNAUTHORIZED);

    let not_json = http
        .post(Some(TOKEN), Some(&corr(2)), &json!({"nope": 1}))
        .await;
    assert_eq!(not_json.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        parse_error(&not_json.body).unwrap().error_code,
        "formatError"
    );

    // Nothing above was recorded; the same correlation id is still usable.
    assert!(sim.state().batch_ids.is_empty());
    let ok = http.post(Some(TOKEN), Some(&corr(1)), &body).await;
    assert_eq!(ok.status, StatusCode::ACCEPTED);

    let heartbeat: Value = http.get("/heartbeat").await.json();
    assert_eq!(heartbeat["serviceStatus"], "available");
}

#[tokio::test]
async fn insufficient_float_part_way() {
    let mut cfg = config(3, "3030");
    cfg.fee = dec("10");
    let sim = spawn(cfg).await;
    let http = Http::new(&sim);
    let body = batch(
        (1..=5)
            .map(|i| tx(&format!("F-{i}"), &format!("+2237012345{i}"), "1000"))
            .collect(),
    );
    let accepted: RequestState = http.post(Some(TOKEN), Some(&corr(5)), &body).await.json();
    http.poll_request_state(&accepted.server_correlation_id)
        .await;
    let batch_id = accepted.object_reference.unwrap();
    let view: BatchTransaction = http
        .get(&format!("/batchtransactions/{batch_id}"))
        .await
        .json();
    assert_eq!((view.completed_count, view.rejection_count), (3, 2));
    assert_eq!(view.batch_status, BatchStatus::Completed);
    assert!(!view.processing_flag);
    assert!(view.completion_date.is_some());

    let rejections: Vec<Rejection> = http.page_all(&batch_id, "rejections").await;
    let mut refs: Vec<_> = rejections
        .iter()
        .map(|r| {
            assert_eq!(rejection_code(&r.rejection_reason), "insufficientFunds");
            r.requesting_organisation_transaction_reference
                .clone()
                .unwrap()
        })
        .collect();
    refs.sort();
    assert_eq!(refs, ["F-4", "F-5"]);
    assert_eq!(sim.state().float_balance, Decimal::ZERO);
}

#[tokio::test]
async fn lost_response_is_accepted_and_findable() {
    let mut cfg = config(11, "1000000");
    cfg.faults = Faults::parse("lost_response=1").unwrap();
    let sim = spawn(cfg).await;
    let http = Http::new(&sim);
    let body = batch(vec![
        tx("LR-1", "+22370121111", "500"),
        tx("LR-2", "+22370122222", "600"),
    ]);
    let answer = http.post(Some(TOKEN), Some(&corr(77)), &body).await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        parse_error(&answer.body).unwrap().error_category,
        "internal"
    );

    let found = http.get(&format!("/responses/{}", corr(77))).await;
    assert_eq!(found.status, StatusCode::OK);
    let response: ResponseObject = found.json();
    assert!(response.link.starts_with("/batchtransactions/"));
    let mut view: BatchTransaction = http.get(&response.link).await.json();
    for _ in 0..500 {
        if view.batch_status == BatchStatus::Completed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        view = http.get(&response.link).await.json();
    }
    assert_eq!(view.batch_status, BatchStatus::Completed);
    assert_eq!(view.completed_count, 2);

    // A retry with the same correlation id is a duplicate, not a second payment.
    let retry = http.post(Some(TOKEN), Some(&corr(77)), &body).await;
    assert_eq!(
        parse_error(&retry.body).unwrap().error_code,
        "duplicateRequest"
    );
    assert_eq!(sim.state().transactions.len(), 2);

    let unknown = http.get(&format!("/responses/{}", corr(78))).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(
        parse_error(&unknown.body).unwrap().error_code,
        "genericError"
    );

    let heartbeat: Value = http.get("/heartbeat").await.json();
    assert_eq!(heartbeat["serviceStatus"], "degraded");
}

#[tokio::test]
async fn timeout_after_commit_still_processes() {
    let mut cfg = config(12, "1000000");
    cfg.faults = Faults::parse("timeout_after_commit=1").unwrap();
    cfg.response_delay = Duration::from_millis(400);
    let sim = spawn(cfg).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let err = client
        .post(format!("{}/batchtransactions", sim.base_url))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .header("X-CorrelationID", corr(3))
        .body(batch(vec![tx("T-1", "+22370121111", "500")]).to_string())
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    let http = Http::new(&sim);
    let response: ResponseObject = http.get(&format!("/responses/{}", corr(3))).await.json();
    assert!(response.link.starts_with("/batchtransactions/"));
    wait_until(&sim, "T-1 completed", |s| {
        s.by_reference("T-1").map(|t| t.status) == Some(TxStatus::Completed)
    })
    .await;
}

#[tokio::test]
async fn status_503_records_nothing() {
    let mut cfg = config(13, "1000000");
    cfg.faults = Faults::parse("status_503=1").unwrap();
    let sim = spawn(cfg).await;
    let http = Http::new(&sim);
    let answer = http
        .post(
            Some(TOKEN),
            Some(&corr(4)),
            &batch(vec![tx("S-1", "+22370121111", "500")]),
        )
        .await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        parse_error(&answer.body).unwrap().error_category,
        "serviceUnavailable"
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let state = sim.state();
    assert!(state.batch_ids.is_empty());
    assert!(state.transactions.is_empty());
    assert_eq!(state.float_balance, dec("1000000"));
    assert_eq!(
        http.get(&format!("/responses/{}", corr(4))).await.status,
        StatusCode::NOT_FOUND
    );
    let heartbeat: Value = http.get("/heartbeat").await.json();
    assert_eq!(heartbeat["serviceStatus"], "unavailable");
}

/// What a client saw (HTTP status, serverCorrelationId), the books, the float.
type Outcome = (Vec<(u16, Option<String>)>, Vec<String>, Decimal);

/// Runs a fixed scenario and returns what a client saw plus the simulator's books.
async fn scenario(seed: u64) -> Outcome {
    let mut cfg = config(seed, "9000");
    cfg.faults =
        Faults::parse("lost_response=0.3,stuck_pending=0.2,reverse_later=0.5,status_503=0.1")
            .unwrap();
    cfg.processing_delay = Duration::from_millis(1);
    cfg.reversal_delay = Duration::ZERO;
    let sim = spawn(cfg).await;
    let http = Http::new(&sim);
    let mut seen = Vec::new();
    for b in 0..8u32 {
        let body = batch(
            (0..3)
                .map(|i| {
                    tx(
                        &format!("R-{b}-{i}"),
                        &format!("+2237012{b}{i}0{}", i + 1),
                        "1500",
                    )
                })
                .collect(),
        );
        let answer = http.post(Some(TOKEN), Some(&corr(100 + b)), &body).await;
        let server = serde_json::from_slice::<RequestState>(&answer.body)
            .ok()
            .map(|s| s.server_correlation_id);
        seen.push((answer.status.as_u16(), server));
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let state = sim.state();
    let books = state
        .transactions
        .iter()
        .map(|t| {
            format!(
                "{:?}|{}|{}|{:?}|{:?}|{}",
                t.reference,
                t.provider_transaction_id,
                t.batch_id,
                t.status,
                t.rejection_reason,
                t.fee
            )
        })
        .collect();
    sim.shutdown().await;
    (seen, books, state.float_balance)
}

#[tokio::test]
async fn same_seed_same_outcomes() {
    let a = scenario(42).await;
    let b = scenario(42).await;
    assert_eq!(a, b);
    // The scenario exercises more than one outcome.
    let statuses: std::collections::HashSet<u16> = a.0.iter().map(|(s, _)| *s).collect();
    assert!(statuses.len() > 1, "{statuses:?}");
    for outcome in [
        "Reversed",
        "Completed",
        "Failed",
        "Pending",
        "insufficientFunds",
    ] {
        assert!(
            a.1.iter().any(|t| t.contains(outcome)),
            "no {outcome}: {:#?}",
            a
        );
    }
    let c = scenario(43).await;
    let ids = |x: &Outcome| {
        x.0.iter()
            .filter_map(|(_, id)| id.clone())
            .collect::<Vec<_>>()
    };
    assert_ne!(ids(&a), ids(&c));
}

#[test]
fn fault_spec_parsing() {
    let f = Faults::parse(
        "lost_response=0.2,timeout_after_commit=0.05,status_503=0.1,duplicate_callback=0.0,stuck_pending=0.0,reverse_later=0.01",
    )
    .unwrap();
    assert_eq!(f.lost_response, dec("0.2"));
    assert_eq!(f.timeout_after_commit, dec("0.05"));
    assert_eq!(f.status_503, dec("0.1"));
    assert_eq!(f.duplicate_callback, Decimal::ZERO);
    assert_eq!(f.stuck_pending, Decimal::ZERO);
    assert_eq!(f.reverse_later, dec("0.01"));
    assert_eq!(Faults::parse("").unwrap(), Faults::default());
    assert_eq!(
        Faults::parse(" status_503 = 1 , ").unwrap().status_503,
        Decimal::ONE
    );

    let cases: [(&str, &str); 6] = [
        ("lost=0.1", "lost=0.1"),
        ("status_503=1.5", "status_503=1.5"),
        ("status_503=-0.1", "status_503=-0.1"),
        ("status_503=abc", "status_503=abc"),
        ("status_503", "status_503"),
        ("status_503=0.1,status_503=0.2", "status_503=0.2"),
    ];
    for (spec, item) in cases {
        let err = Faults::parse(spec).unwrap_err();
        assert!(err.to_string().contains(item), "{spec}: {err}");
    }
    assert!(matches!(
        Faults::parse("lost=0.1"),
        Err(FaultSpecError::UnknownFault { .. })
    ));
    assert!(matches!(
        Faults::parse("status_503=1.5"),
        Err(FaultSpecError::OutOfRange { .. })
    ));
    assert!(matches!(
        Faults::parse("status_503=1e-1"),
        Err(FaultSpecError::BadRate { .. })
    ));
}

#[test]
fn error_parser_accepts_any_key_case() {
    for body in [
        r#"{"errorCategory":"validation","errorCode":"formatError","errorDescription":"bad","errorParameters":[{"key":"X-CorrelationID","value":"x"}]}"#,
        r#"{"ErrorCategory":"validation","ErrorCode":"formatError","ErrorDescription":"bad","ErrorParameters":[{"Key":"X-CorrelationID","Value":"x"}]}"#,
        r#"{"errorcategory":"validation","errorcode":"formatError","errordescription":"bad","errorparameters":[{"KEY":"X-CorrelationID","VALUE":"x"}]}"#,
    ] {
        let err = parse_error(body.as_bytes()).unwrap();
        assert_eq!(err.error_category, "validation");
        assert_eq!(err.error_code, "formatError");
        assert_eq!(err.error_description.as_deref(), Some("bad"));
        assert_eq!(err.error_parameters.len(), 1);
        assert_eq!(err.error_parameters[0].key, "X-CorrelationID");
        assert_eq!(err.error_parameters[0].value, "x");
    }
    assert!(parse_error(br#"{"errorCategory":"internal"}"#).is_none());
    assert!(parse_error(b"[1,2]").is_none());
    assert!(parse_error(b"<html>").is_none());
    assert_eq!(
        rejection_code("insufficientFunds: float exhausted"),
        "insufficientFunds"
    );
    assert_eq!(rejection_code("genericError"), "genericError");
}

#[tokio::test]
async fn statement_csv_balances() {
    let mut cfg = config(21, "1000000");
    cfg.fee = dec("25");
    let sim = spawn(cfg).await;
    let http = Http::new(&sim);
    let body = batch(vec![
        tx("C-1", "+22370121111", "65000"),
        tx("C-2", "+22370122222", "65000.00"),
        tx("C-3", "+22370120002", "1000"),
        tx("C-4", "+22370120006", "30000"),
        tx("C-5", "+22370123333", "1234.5"),
    ]);
    let accepted: RequestState = http.post(Some(TOKEN), Some(&corr(21)), &body).await.json();
    http.poll_request_state(&accepted.server_correlation_id)
        .await;
    wait_until(&sim, "reversal of C-4", |s| {
        s.by_reference("C-4").unwrap().status == TxStatus::Reversed
    })
    .await;

    let csv = sim.statement_csv();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "transaction_id,reference,msisdn,amount,currency,fee,status,completed_at,balance_after"
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 5, "4 payments + 1 reversal:\n{csv}");
    let mut balance = dec("1000000");
    for row in &rows {
        assert_eq!(row.len(), 9);
        balance = balance - dec(row[3]) - dec(row[5]);
        assert_eq!(dec(row[8]), balance, "{row:?}");
        assert_eq!(row[4], "XOF");
        assert!(chrono::DateTime::parse_from_rfc3339(row[7]).is_ok());
    }
    let state = sim.state();
    assert_eq!(balance, state.float_balance);
    // 1,000,000 − (65000 + 65000 + 30000 + 1234.5) − 4 × 25 + 30000 reversed.
    assert_eq!(balance, dec("868665.5"));
    let by_ref: HashMap<(&str, &str), &Vec<&str>> =
        rows.iter().map(|r| ((r[1], r[6]), r)).collect();
    for reference in ["C-1", "C-2", "C-5"] {
        let row = by_ref[&(reference, "completed")];
        let t = state.by_reference(reference).unwrap();
        assert_eq!(row[0], t.provider_transaction_id);
        assert_eq!(Some(row[2]), t.msisdn.as_deref());
        assert_eq!(Some(dec(row[3])), t.amount);
    }
    assert!(by_ref.contains_key(&("C-4", "reversed")));
    let reversal = by_ref[&("C-4", "reversal")];
    assert_eq!(dec(reversal[3]), dec("-30000"));
    assert!(reversal[0].ends_with("-REV"));
    assert!(
        !rows.iter().any(|r| r[1] == "C-3"),
        "rejected rows are not on the statement"
    );
}
