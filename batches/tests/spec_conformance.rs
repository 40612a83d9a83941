//! The requests the GSMA adapter sends, captured on the wire (headers and body) and checked
//! against the GSMA Mobile Money API v1.2 spec's schemas: the shared copy in
//! `../shared/specs/` when it is there, else the copy vendored in `providers/testdata/`.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{households, phone, released};
use cva_batches::mmapi::MmapiClient;
use cva_providers::spec::SpecValidator;

type Captured = Arc<Mutex<Vec<(String, Vec<(String, String)>, Vec<u8>)>>>;

/// A server that records every request and answers 503 (so nothing else happens).
async fn capture() -> (String, Captured) {
    let seen: Captured = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    let app = axum::Router::new().fallback(
        move |method: axum::http::Method,
              uri: axum::http::Uri,
              headers: axum::http::HeaderMap,
              body: axum::body::Bytes| {
            let s = Arc::clone(&s);
            async move {
                let headers = headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                    .collect();
                s.lock().unwrap().push((
                    format!("{method} {}", uri.path()),
                    headers,
                    body.to_vec(),
                ));
                axum::http::StatusCode::SERVICE_UNAVAILABLE
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, seen)
}

fn spec() -> SpecValidator {
    let shared = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/specs/gsma-mmapi-1.2-disbursement.yaml");
    if shared.exists() {
        SpecValidator::load(&shared).unwrap()
    } else {
        SpecValidator::bundled().unwrap()
    }
}

#[tokio::test]
async fn the_batch_request_the_adapter_sends_conforms_to_the_gsma_spec() {
    let phones: Vec<String> = (0..3).map(|n| phone(n, None)).collect();
    let (db, reg) = households(&phones).await;
    let (url, captured) = capture().await;
    let b = common::batches(&reg, common::config(&url, 100, None), 1_000_000).await;
    let batch = released(&b, 100).await;
    let opts = cva_batches::SendOptions {
        request_timeout: Duration::from_millis(500),
        poll_interval: Duration::from_millis(5),
        max_tries: 1,
        callback_url: Some("https://cva.example/callbacks/orange-money".into()),
        ..cva_batches::SendOptions::default()
    };
    // The capture server answers 503: the send leaves the attempt unknown; what matters here
    // is what went out.
    let r = b.send(batch.id, &opts, &common::ctx("cy")).await.unwrap();
    assert_eq!(r.unknown, 3);
    let seen = captured.lock().unwrap().clone();
    let posts: Vec<_> = seen
        .iter()
        .filter(|(m, _, _)| m == "POST /batchtransactions")
        .collect();
    assert_eq!(
        posts.len(),
        1,
        "{:?}",
        seen.iter().map(|s| &s.0).collect::<Vec<_>>()
    );
    let (_, headers, body) = posts[0];
    let body: serde_json::Value = serde_json::from_slice(body).unwrap();
    let v = spec();
    v.validate_request("post", "/batchtransactions", headers, Some(&body))
        .unwrap_or_else(|e| panic!("the request breaks the spec: {e:?}\n{body:#}"));
    // What the issue asks for, beyond the schema.
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    assert!(uuid::Uuid::parse_str(&header("x-correlationid").unwrap()).is_ok());
    assert!(chrono::DateTime::parse_from_rfc3339(&header("x-date").unwrap()).is_ok());
    assert_eq!(header("authorization").as_deref(), Some("Bearer unused"));
    assert_eq!(
        header("x-callback-url").as_deref(),
        Some("https://cva.example/callbacks/orange-money")
    );
    let lines = b.lines(batch.id).await.unwrap();
    let txs = body["transactions"].as_array().unwrap();
    assert_eq!(txs.len(), 3);
    for (t, l) in txs.iter().zip(&lines) {
        assert_eq!(t["type"], "disbursement");
        assert_eq!(t["amount"], "20000");
        assert_eq!(t["currency"], "XOF");
        assert_eq!(t["creditParty"][0]["key"], "msisdn");
        assert_eq!(
            t["requestingOrganisationTransactionReference"],
            l.id.to_string()
        );
        assert_eq!(t["debitParty"][0]["key"], "organisationid");
    }

    // The other calls the adapter makes: GETs on the spec's paths, with its headers.
    let client = MmapiClient::new(&url, None, Duration::from_millis(500)).unwrap();
    let cid = uuid::Uuid::new_v4();
    let _ = client.batch_for(cid).await;
    let _ = client.request_state("abc").await;
    let _ = client.batch("b1").await;
    let _ = client.completions("b1").await;
    let _ = client.rejections("b1").await;
    let _ = client.transaction("t1").await;
    let _ = client.heartbeat().await;
    let gets: Vec<(String, Vec<(String, String)>)> = captured.lock().unwrap()[seen.len()..]
        .iter()
        .map(|(m, h, _)| (m.clone(), h.clone()))
        .collect();
    let expected = [
        (
            format!("GET /responses/{cid}"),
            "/responses/{clientCorrelationId}",
        ),
        (
            "GET /requeststates/abc".to_owned(),
            "/requeststates/{serverCorrelationId}",
        ),
        (
            "GET /batchtransactions/b1".to_owned(),
            "/batchtransactions/{batchId}",
        ),
        (
            "GET /batchtransactions/b1/completions".to_owned(),
            "/batchtransactions/{batchId}/completions",
        ),
        (
            "GET /batchtransactions/b1/rejections".to_owned(),
            "/batchtransactions/{batchId}/rejections",
        ),
        (
            "GET /transactions/t1".to_owned(),
            "/transactions/{transactionReference}",
        ),
        ("GET /heartbeat".to_owned(), "/heartbeat"),
    ];
    assert_eq!(
        gets.iter().map(|g| g.0.as_str()).collect::<Vec<_>>(),
        expected.iter().map(|e| e.0.as_str()).collect::<Vec<_>>()
    );
    for ((_, headers), (_, template)) in gets.iter().zip(&expected) {
        v.validate_request("get", template, headers, None)
            .unwrap_or_else(|e| panic!("GET {template}: {e:?}"));
    }
    db.cleanup().await;
}
