//! Integration tests of the GSMA MMAPI disbursement simulator over real loopback HTTP: batch lifecycle, paging, magic MSISDNs, float, faults, determinism, error parsing, the statement CSV, spec validation of requests, large batches and callbacks.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cva_providers::faults::FaultSpecError;
use cva_providers::gsma::{
    parse_error, rejection_code, BatchStatus, BatchTransaction, Completion, NotificationMethod,
    Rejection, RequestState, RequestStatus, ResponseObject,
};
use cva_providers::sim::{Faults, RunningSim, SimConfig, Simulator, TxStatus};
use cva_providers::spec::SpecValidator;
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
        // The spec's requestTransaction requires a debit party.
        "debitParty": [{"key": "walletid", "value": "cva-disbursement-float"}],
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
        self.post_with(token, correlation, &[], body).await
    }

    /// [`Http::post`] with extra headers.
    async fn post_with(
        &self,
        token: Option<&str>,
        correlation: Option<&str>,
        extra: &[(&str, &str)],
        body: &Value,
    ) -> Answer {
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
        for (name, value) in extra {
            request = request.header(*name, *value);
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
        // Not "65000.00": the spec's amount pattern forbids trailing zeros.
        tx("L-ok2", "+22370120020", "65000"),
        tx("L-0002", "+22370120002", "65000"),
        tx("L-0003", "+22370120003", "65000"),
        tx("L-ok3", "+22370120030", "12500"),
        // More decimals than a franc has: refused, as a provider's ledger would.
        tx("L-frac", "+22370120050", "12500.5"),
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
    assert_eq!(
        view.rejection_count, 6,
        "0001-0004 + wrong currency + a fraction of a franc"
    );
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
        ("L-frac", "formatError"),
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
    assert_eq!(state.transactions.len(), 12);
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
    // Float: 10,000,000 − (65000 + 65000 + 12500 + 1 + 40000) − 5 × 100 fee + 40000 reversed.
    assert_eq!(state.float_balance, dec("9856999"));

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
        tx("C-2", "+22370122222", "65000"),
        tx("C-3", "+22370120002", "1000"),
        tx("C-4", "+22370120006", "30000"),
        tx("C-5", "+22370123333", "1234"),
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
    // 1,000,000 − (65000 + 65000 + 30000 + 1234) − 4 × 25 + 30000 reversed.
    assert_eq!(balance, dec("868666"));
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

// ---------------------------------------------------------------------------------------
// Spec validation of requests

#[tokio::test]
async fn requests_breaking_the_spec_get_400_naming_the_field() {
    let sim = spawn(config(31, "1000000")).await;
    let http = Http::new(&sim);
    let spec = SpecValidator::bundled().unwrap();

    let mut no_credit = tx("V-2", "+22370121111", "500");
    no_credit.as_object_mut().unwrap().remove("creditParty");
    let mut payout = tx("V-3", "+22370121111", "500");
    payout["type"] = json!("payout");
    let cases = [
        (
            tx("V-1", "+22370121111", "65000.00"),
            "transactions[0].amount",
            "65000.00",
        ),
        (
            no_credit,
            "transactions[0].creditParty",
            "required property is missing",
        ),
        (payout, "transactions[0].type", "payout"),
    ];
    for (n, (transaction, path, value)) in cases.into_iter().enumerate() {
        let body = batch(vec![tx("V-ok", "+22370122222", "1"), transaction]);
        let path = path.replace("[0]", "[1]");
        let answer = http
            .post(Some(TOKEN), Some(&corr(300 + n as u32)), &body)
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{path}");
        assert!(answer.headers.contains_key("x-date"));
        let err = parse_error(&answer.body).unwrap();
        assert_eq!(err.error_category, "validation");
        assert_eq!(err.error_code, "formatError");
        assert_eq!(err.error_parameters.len(), 1, "{err:?}");
        assert_eq!(err.error_parameters[0].key, path);
        assert_eq!(err.error_parameters[0].value, value);
        let description = err.error_description.unwrap();
        assert!(description.contains(&format!("{path}: ")), "{description}");
        // The 400 itself conforms to the spec.
        let raw: Value = serde_json::from_slice(&answer.body).unwrap();
        spec.validate_response("POST", "/batchtransactions", 400, Some(&raw))
            .unwrap();
    }

    // Several violations: the first few are listed, the rest counted.
    let body = batch(
        (0..8)
            .map(|i| tx(&format!("V-many-{i}"), "+22370121111", "1.50"))
            .collect(),
    );
    let answer = http.post(Some(TOKEN), Some(&corr(310)), &body).await;
    let err = parse_error(&answer.body).unwrap();
    assert_eq!(err.error_parameters.len(), 5);
    assert_eq!(err.error_parameters[4].key, "transactions[4].amount");
    assert!(err.error_description.unwrap().ends_with("(and 3 more)"));

    // Headers are checked too (present ones against their schema), before the token.
    let answer = http
        .post_with(
            None,
            Some(&corr(311)),
            &[("X-Callback-URL", "not a url")],
            &batch(vec![tx("V-h", "+22370121111", "5")]),
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        parse_error(&answer.body).unwrap().error_parameters[0].key,
        "X-Callback-URL"
    );
    let not_json = http
        .send(
            http.client
                .post(format!("{}/batchtransactions", http.base))
                .header("Authorization", format!("Bearer {TOKEN}"))
                .header("X-CorrelationID", corr(312))
                .body("{not json"),
        )
        .await;
    assert_eq!(not_json.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        parse_error(&not_json.body).unwrap().error_code,
        "formatError"
    );

    // Nothing above was recorded; a valid batch goes through and its 202 conforms.
    assert!(sim.state().batch_ids.is_empty());
    let ok = http
        .post(
            Some(TOKEN),
            Some(&corr(313)),
            &batch(vec![tx("V-ok", "+22370122222", "1")]),
        )
        .await;
    assert_eq!(ok.status, StatusCode::ACCEPTED);
    let raw: Value = serde_json::from_slice(&ok.body).unwrap();
    spec.validate_response("POST", "/batchtransactions", 202, Some(&raw))
        .unwrap();
    assert_eq!(raw["notificationMethod"], "polling");
}

#[tokio::test]
async fn validation_can_be_turned_off() {
    let mut cfg = config(32, "1000000");
    cfg.validate_requests = false;
    let sim = spawn(cfg).await;
    let http = Http::new(&sim);
    // Off the spec (trailing zeros, no debit party) but within what the simulator parses.
    let mut t = tx("O-1", "+22370121111", "65000.00");
    t.as_object_mut().unwrap().remove("debitParty");
    let accepted: RequestState = http
        .post(Some(TOKEN), Some(&corr(1)), &batch(vec![t]))
        .await
        .json();
    http.poll_request_state(&accepted.server_correlation_id)
        .await;
    let state = sim.state();
    assert_eq!(state.transactions[0].status, TxStatus::Completed);
    assert_eq!(state.transactions[0].amount, Some(dec("65000")));
    // The simulator's own checks still apply.
    let empty = http.post(Some(TOKEN), Some(&corr(2)), &batch(vec![])).await;
    assert_eq!(
        parse_error(&empty.body).unwrap().error_code,
        "mandatoryValueNotSupplied"
    );
}

// ---------------------------------------------------------------------------------------
// Body limit

#[tokio::test]
async fn a_batch_of_20000_transactions_is_processed() {
    let sim = spawn(config(33, "100000000")).await;
    let http = Http::new(&sim);
    let body = batch(
        (0..20_000)
            .map(|i| {
                tx(
                    &format!("BIG-{i:05}"),
                    &format!("+2237{:07}", 1_000_000 + i * 10),
                    "1",
                )
            })
            .collect(),
    );
    let text = body.to_string();
    assert!(text.len() > 2 * 1024 * 1024, "{} bytes", text.len());
    let answer = http.post(Some(TOKEN), Some(&corr(1)), &body).await;
    assert_eq!(
        answer.status,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let accepted: RequestState = answer.json();
    let done = http
        .poll_request_state(&accepted.server_correlation_id)
        .await;
    assert_eq!(done.status, RequestStatus::Completed);
    let view: BatchTransaction = http
        .get(&format!(
            "/batchtransactions/{}",
            accepted.object_reference.unwrap()
        ))
        .await
        .json();
    assert_eq!(view.batch_status, BatchStatus::Completed);
    assert_eq!(view.completed_count, 20_000);
    let state = sim.state();
    assert_eq!(state.transactions.len(), 20_000);
    assert_eq!(state.float_balance, dec("99980000"));
    assert!(state.by_reference("BIG-19999").is_some());
}

// ---------------------------------------------------------------------------------------
// Callbacks

/// One callback as received: the path's tag, the `X-CorrelationID` header, the body.
type Received = (String, Option<String>, Value);

/// A tiny client endpoint recording every `PUT /callbacks/{tag}`.
struct CallbackSink {
    base: String,
    got: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CallbackSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CallbackSink {
    async fn start() -> Self {
        use axum::extract::{Path, State};
        use axum::http::HeaderMap;

        async fn record(
            State(got): State<Arc<Mutex<Vec<Received>>>>,
            Path(tag): Path<String>,
            headers: HeaderMap,
            axum::Json(body): axum::Json<Value>,
        ) -> axum::http::StatusCode {
            let correlation = headers
                .get("x-correlationid")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            got.lock().unwrap().push((tag, correlation, body));
            axum::http::StatusCode::NO_CONTENT
        }

        let got = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .route("/callbacks/{tag}", axum::routing::put(record))
            .with_state(Arc::clone(&got));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { base, got, task }
    }

    fn url(&self, tag: &str) -> String {
        format!("{}/callbacks/{tag}", self.base)
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    async fn wait_for(&self, n: usize) -> Vec<Received> {
        for _ in 0..600 {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("expected {n} callbacks, got {:?}", self.received());
    }

    fn tags(&self) -> Vec<String> {
        self.received().into_iter().map(|(tag, _, _)| tag).collect()
    }
}

/// Posts a two-transaction batch with `X-Callback-URL` = the sink's `/callbacks/{tag}`,
/// waits until it is processed, and returns its accepted request state.
async fn post_with_callback(http: &Http, sink: &CallbackSink, n: u32, tag: &str) -> RequestState {
    let url = sink.url(tag);
    let answer = http
        .post_with(
            Some(TOKEN),
            Some(&corr(n)),
            &[("X-Callback-URL", url.as_str())],
            &batch(vec![
                tx(&format!("{tag}-1"), "+22370121111", "500"),
                tx(&format!("{tag}-2"), "+22370120002", "700"),
            ]),
        )
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    let accepted: RequestState = answer.json();
    assert_eq!(accepted.notification_method, NotificationMethod::Callback);
    let done = http
        .poll_request_state(&accepted.server_correlation_id)
        .await;
    assert_eq!(done.notification_method, NotificationMethod::Callback);
    accepted
}

fn callback_config(seed: u64, faults: &str) -> SimConfig {
    let mut cfg = config(seed, "1000000");
    cfg.faults = Faults::parse(faults).unwrap();
    cfg
}

#[tokio::test]
async fn callback_is_delivered_once_with_the_batch() {
    let sim = spawn(callback_config(41, "")).await;
    let http = Http::new(&sim);
    let sink = CallbackSink::start().await;
    let accepted = post_with_callback(&http, &sink, 1, "a").await;
    let got = sink.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(sink.received().len(), 1, "delivered once");
    let (tag, correlation, body) = &got[0];
    assert_eq!(tag, "a");
    assert_eq!(correlation.as_deref(), Some(corr(1).as_str()));
    // The spec's batchTransactionsSuccessEvent body: responseBatchTransaction.
    let view: BatchTransaction = serde_json::from_value(body.clone()).unwrap();
    assert_eq!(Some(view.batch_id), accepted.object_reference);
    assert_eq!(view.batch_status, BatchStatus::Completed);
    assert_eq!((view.completed_count, view.rejection_count), (1, 1));
    SpecValidator::bundled()
        .unwrap()
        .validate_schema("responseBatchTransaction", body)
        .unwrap();

    // A batch without X-Callback-URL is polling only and calls nobody.
    let polled: RequestState = http
        .post(
            Some(TOKEN),
            Some(&corr(2)),
            &batch(vec![tx("p-1", "+22370121111", "5")]),
        )
        .await
        .json();
    assert_eq!(polled.notification_method, NotificationMethod::Polling);
    http.poll_request_state(&polled.server_correlation_id).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(sink.received().len(), 1);

    // An unreachable callback URL does not disturb the simulator.
    let dead = CallbackSink::start().await;
    let dead_url = dead.url("x");
    drop(dead);
    let answer = http
        .post_with(
            Some(TOKEN),
            Some(&corr(3)),
            &[("X-Callback-URL", dead_url.as_str())],
            &batch(vec![tx("d-1", "+22370121111", "5")]),
        )
        .await;
    let state: RequestState = answer.json();
    http.poll_request_state(&state.server_correlation_id).await;
    let _ = post_with_callback(&http, &sink, 4, "b").await;
    assert_eq!(sink.wait_for(2).await[1].0, "b");
}

#[tokio::test]
async fn duplicate_callback_is_delivered_twice() {
    let sim = spawn(callback_config(42, "duplicate_callback=1")).await;
    let http = Http::new(&sim);
    let sink = CallbackSink::start().await;
    post_with_callback(&http, &sink, 1, "a").await;
    let got = sink.wait_for(2).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(sink.tags(), ["a", "a"]);
    assert_eq!(got[0].2, got[1].2, "the same body twice");
    assert_eq!(got[0].1, got[1].1);
}

#[tokio::test]
async fn dropped_callback_is_never_delivered() {
    let sim = spawn(callback_config(
        43,
        "dropped_callback=1,duplicate_callback=1",
    ))
    .await;
    let http = Http::new(&sim);
    let sink = CallbackSink::start().await;
    let accepted = post_with_callback(&http, &sink, 1, "a").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(sink.received().is_empty(), "{:?}", sink.received());
    // Polling still tells the outcome.
    let done = http
        .poll_request_state(&accepted.server_correlation_id)
        .await;
    assert_eq!(done.status, RequestStatus::Completed);
}

#[tokio::test]
async fn out_of_order_callbacks_arrive_swapped() {
    let mut cfg = callback_config(44, "out_of_order_callback=1");
    cfg.callback_hold = Duration::from_millis(1500);
    let sim = spawn(cfg).await;
    let http = Http::new(&sim);
    let sink = CallbackSink::start().await;
    post_with_callback(&http, &sink, 1, "first").await;
    post_with_callback(&http, &sink, 2, "second").await;
    sink.wait_for(2).await;
    assert_eq!(sink.tags(), ["second", "first"]);
    // With no later batch to overtake it, a held callback comes after the hold.
    post_with_callback(&http, &sink, 3, "third").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.received().len(), 2, "still held");
    sink.wait_for(3).await;
    assert_eq!(sink.tags(), ["second", "first", "third"]);
}

/// Callback faults come from the seeded stream: same seed, same deliveries.
#[tokio::test]
async fn callback_faults_are_seeded() {
    async fn run(seed: u64) -> Vec<String> {
        let sim = spawn(callback_config(
            seed,
            "duplicate_callback=0.5,dropped_callback=0.3",
        ))
        .await;
        let http = Http::new(&sim);
        let sink = CallbackSink::start().await;
        for n in 0..8u32 {
            post_with_callback(&http, &sink, n + 1, &format!("b{n}")).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        sink.tags()
    }
    let a = run(7).await;
    assert_eq!(a, run(7).await);
    let distinct: std::collections::HashSet<&String> = a.iter().collect();
    assert!(a.len() > distinct.len(), "some duplicated: {a:?}");
    assert!(distinct.len() < 8, "some dropped: {a:?}");
}

/// What the simulator answers conforms to the spec's response schemas (a completed batch;
/// see the `spec` module docs for why an unfinished one cannot).
#[tokio::test]
async fn simulator_answers_conform_to_the_spec() {
    let spec = SpecValidator::bundled().unwrap();
    let sim = spawn(config(51, "1000000")).await;
    let http = Http::new(&sim);
    let conforms = |method: &str, template: &str, answer: &Answer| {
        let body: Value = serde_json::from_slice(&answer.body).unwrap();
        if let Err(e) =
            spec.validate_response(method, template, answer.status.as_u16(), Some(&body))
        {
            panic!("{method} {template} {}: {e:?}\n{body:#}", answer.status);
        }
    };
    let body = batch(vec![
        tx("S-1", "+22370121111", "500"),
        tx("S-2", "+22370120002", "700"),
    ]);
    let answer = http.post(Some(TOKEN), Some(&corr(1)), &body).await;
    conforms("POST", "/batchtransactions", &answer);
    let accepted: RequestState = answer.json();
    let path = format!("/requeststates/{}", accepted.server_correlation_id);
    conforms(
        "GET",
        "/requeststates/{serverCorrelationId}",
        &http.get(&path).await,
    );
    http.poll_request_state(&accepted.server_correlation_id)
        .await;
    conforms(
        "GET",
        "/requeststates/{serverCorrelationId}",
        &http.get(&path).await,
    );
    let batch_id = accepted.object_reference.unwrap();
    for (template, path) in [
        (
            "/batchtransactions/{batchId}",
            format!("/batchtransactions/{batch_id}"),
        ),
        (
            "/batchtransactions/{batchId}/completions",
            format!("/batchtransactions/{batch_id}/completions"),
        ),
        (
            "/batchtransactions/{batchId}/rejections",
            format!("/batchtransactions/{batch_id}/rejections"),
        ),
        (
            "/responses/{clientCorrelationId}",
            format!("/responses/{}", corr(1)),
        ),
        ("/heartbeat", "/heartbeat".to_owned()),
        (
            "/batchtransactions/{batchId}",
            "/batchtransactions/nope".to_owned(),
        ),
    ] {
        let answer = http.get(&path).await;
        conforms("GET", template, &answer);
    }
    let completions: Vec<Completion> = http
        .get(&format!("/batchtransactions/{batch_id}/completions"))
        .await
        .json();
    conforms(
        "GET",
        "/transactions/{transactionReference}",
        &http.get(&completions[0].link).await,
    );
    let missing = http.post(Some(TOKEN), None, &body).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    conforms("POST", "/batchtransactions", &missing);
    let denied = http.post(Some("wrong"), Some(&corr(2)), &body).await;
    conforms("POST", "/batchtransactions", &denied);
}
