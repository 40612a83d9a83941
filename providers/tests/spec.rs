//! The spec validator against the bundled GSMA MMAPI v1.2 disbursement spec: valid batch requests pass, each broken rule is named with its JSON path, required headers are enforced (on a copy of the spec that requires one), and the vendored copy matches the shared spec.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use cva_providers::spec::{SpecError, SpecValidator};
use serde_json::{json, Value};

fn spec() -> SpecValidator {
    SpecValidator::bundled().unwrap()
}

fn headers() -> Vec<(String, String)> {
    vec![
        ("X-Date".to_owned(), "2025-01-01T00:00:00Z".to_owned()),
        (
            "X-CorrelationID".to_owned(),
            "00000000-0000-4000-8000-000000000001".to_owned(),
        ),
        ("Content-Type".to_owned(), "application/json".to_owned()),
    ]
}

fn tx(amount: &str) -> Value {
    json!({
        "type": "disbursement",
        "amount": amount,
        "currency": "XOF",
        "creditParty": [{"key": "msisdn", "value": "+22370120010"}],
        "debitParty": [{"key": "walletid", "value": "cva-disbursement-float"}],
        "requestingOrganisationTransactionReference": "L-1",
    })
}

fn batch(transactions: Vec<Value>) -> Value {
    json!({"batchTitle": "round 1", "batchdescription": "test", "transactions": transactions})
}

fn errors(body: &Value) -> Vec<String> {
    spec()
        .validate_request("POST", "/batchtransactions", &headers(), Some(body))
        .err()
        .unwrap_or_default()
}

/// The one error of `body`, which must start with `path: `.
fn one_error(body: &Value, path: &str) -> String {
    let errors = errors(body);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].starts_with(&format!("{path}: ")),
        "{path}: {errors:?}"
    );
    errors[0].clone()
}

#[test]
fn a_valid_batch_passes() {
    let body = batch(vec![tx("65000"), tx("12500.5"), tx("0.0001"), tx("1")]);
    assert_eq!(errors(&body), Vec::<String>::new());
    // Headers are optional in this spec, and their names are case-insensitive.
    let v = spec();
    assert!(v
        .validate_request("post", "/batchtransactions", &[], Some(&body))
        .is_ok());
    let lower = vec![(
        "x-correlationid".to_owned(),
        "00000000-0000-4000-8000-000000000001".to_owned(),
    )];
    assert!(v
        .validate_request("POST", "/batchtransactions", &lower, Some(&body))
        .is_ok());
}

#[test]
fn amount_must_match_the_spec_pattern() {
    for bad in ["65000.00", "12,50", "-5", "1.23456", "01", ""] {
        let body = batch(vec![tx("5"), tx(bad)]);
        let errors = errors(&body);
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("transactions[1].amount: does not match pattern ")),
            "{bad}: {errors:?}"
        );
        assert!(
            errors
                .iter()
                .all(|e| e.starts_with("transactions[1].amount")),
            "{errors:?}"
        );
    }
    // A number is not a string.
    let mut t = tx("5");
    t["amount"] = json!(5);
    let e = one_error(&batch(vec![t]), "transactions[0].amount");
    assert!(e.contains("expected type string, found integer"), "{e}");
}

#[test]
fn missing_credit_party_is_named() {
    let mut t = tx("5");
    t.as_object_mut().unwrap().remove("creditParty");
    let e = one_error(
        &batch(vec![tx("1"), tx("2"), t]),
        "transactions[2].creditParty",
    );
    assert!(e.ends_with("required property is missing"), "{e}");

    // An empty party list and a party without a value are named too.
    let mut t = tx("5");
    t["creditParty"] = json!([]);
    let e = one_error(&batch(vec![t]), "transactions[0].creditParty");
    assert!(e.contains("fewer than minItems 1"), "{e}");
    let mut t = tx("5");
    t["creditParty"] = json!([{"key": "msisdn"}]);
    one_error(&batch(vec![t]), "transactions[0].creditParty[0].value");
    // The spec requires a debit party too.
    let mut t = tx("5");
    t.as_object_mut().unwrap().remove("debitParty");
    one_error(&batch(vec![t]), "transactions[0].debitParty");
}

#[test]
fn wrong_type_enum_value_is_named() {
    let mut t = tx("5");
    t["type"] = json!("payout");
    let e = one_error(&batch(vec![t]), "transactions[0].type");
    assert!(
        e.contains("\"payout\" is not one of [billpay, deposit, disbursement"),
        "{e}"
    );
    let mut t = tx("5");
    t["currency"] = json!("XYZ");
    let e = one_error(&batch(vec![t]), "transactions[0].currency");
    assert!(e.contains("values)]"), "long enums are elided: {e}");
}

#[test]
fn batch_level_rules() {
    assert_eq!(
        errors(&json!({"nope": 1})),
        ["transactions: required property is missing"]
    );
    let e = one_error(&batch(vec![]), "transactions");
    assert!(e.contains("fewer than minItems 1"), "{e}");
    let e = one_error(&json!([1, 2]), "body");
    assert!(e.contains("expected type object, found array"), "{e}");
    let mut body = batch(vec![tx("1")]);
    body["batchTitle"] = json!("x".repeat(257));
    let e = one_error(&body, "batchTitle");
    assert!(e.contains("length 257 is above maxLength 256"), "{e}");
    assert_eq!(
        spec().validate_request("POST", "/batchtransactions", &headers(), None),
        Err(vec!["body: request body is required".to_owned()])
    );
    // Many errors are all reported, each with its path.
    let bad: Vec<Value> = (0..5).map(|_| tx("1.10")).collect();
    assert_eq!(errors(&batch(bad)).len(), 5);
}

#[test]
fn present_headers_are_checked_against_their_schema() {
    let v = spec();
    let body = batch(vec![tx("1")]);
    let bad = vec![
        ("X-CorrelationID".to_owned(), "not-a-uuid".to_owned()),
        ("X-Callback-URL".to_owned(), "not a url".to_owned()),
        (
            "X-Account-Holding-Institution-Identifier-Type".to_owned(),
            "iban".to_owned(),
        ),
    ];
    let errors = v
        .validate_request("POST", "/batchtransactions", &bad, Some(&body))
        .unwrap_err();
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(errors[0].starts_with("X-CorrelationID: does not match pattern"));
    assert!(errors[1].starts_with("X-Callback-URL: is not an absolute URI"));
    assert!(errors[2]
        .starts_with("X-Account-Holding-Institution-Identifier-Type: \"iban\" is not one of"));
    let good = vec![(
        "X-Callback-URL".to_owned(),
        "http://127.0.0.1:9/callbacks/1".to_owned(),
    )];
    assert!(v
        .validate_request("POST", "/batchtransactions", &good, Some(&body))
        .is_ok());
    // X-Date is a date-time, loosely: RFC 3339 or an HTTP date.
    for (date, ok) in [
        ("2025-01-01T00:00:00Z", true),
        ("Wed, 01 Jan 2025 00:00:00 GMT", true),
        ("yesterday", false),
    ] {
        let h = vec![("X-Date".to_owned(), date.to_owned())];
        assert_eq!(
            v.validate_request("POST", "/batchtransactions", &h, Some(&body))
                .is_ok(),
            ok,
            "{date}"
        );
    }
}

/// The bundled spec marks no header of `POST /batchtransactions` required; a copy that
/// requires `X-Date` (loaded from disk) enforces it, case-insensitively.
#[test]
fn required_headers_are_enforced() {
    let mut yaml: serde_yaml::Value =
        serde_yaml::from_str(include_str!("../testdata/gsma-mmapi-1.2-disbursement.yaml")).unwrap();
    yaml["components"]["parameters"]["X-Date"]["required"] = serde_yaml::Value::Bool(true);
    let dir = std::env::temp_dir().join(format!("cva-providers-spec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("strict.yaml");
    std::fs::write(&path, serde_yaml::to_string(&yaml).unwrap()).unwrap();
    let strict = SpecValidator::load(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();

    let body = batch(vec![tx("1")]);
    let without: Vec<(String, String)> = headers()
        .into_iter()
        .filter(|(n, _)| n != "X-Date")
        .collect();
    assert_eq!(
        strict.validate_request("POST", "/batchtransactions", &without, Some(&body)),
        Err(vec!["X-Date: required header is missing".to_owned()])
    );
    let lower = vec![("x-date".to_owned(), "2025-01-01T00:00:00Z".to_owned())];
    assert!(strict
        .validate_request("POST", "/batchtransactions", &lower, Some(&body))
        .is_ok());
    // The bundled spec does not require it.
    assert!(spec()
        .validate_request("POST", "/batchtransactions", &without, Some(&body))
        .is_ok());

    assert!(matches!(
        SpecValidator::load(dir.join("absent.yaml")),
        Err(SpecError::Read { .. })
    ));
}

#[test]
fn unknown_operations_are_errors() {
    let e = spec()
        .validate_request("DELETE", "/batchtransactions", &[], None)
        .unwrap_err();
    assert_eq!(
        e,
        ["operation: the spec has no operation DELETE /batchtransactions"]
    );
    // Concrete paths match their template.
    assert!(spec()
        .validate_request("GET", "/batchtransactions/SIMBATCH00000001", &[], None)
        .is_ok());
}

#[test]
fn responses_and_schemas() {
    let v = spec();
    let state = json!({
        "serverCorrelationId": "5b2b6c1e-3c0d-4f53-9a57-0d1e2f3a4b5c",
        "status": "pending",
        "notificationMethod": "callback",
        "objectReference": "SIMBATCH00000001",
        "pollLimit": 100,
    });
    assert!(v
        .validate_response("POST", "/batchtransactions", 202, Some(&state))
        .is_ok());
    let mut bad = state.clone();
    bad["status"] = json!("done");
    bad["pollLimit"] = json!(0);
    let e = v
        .validate_response("POST", "/batchtransactions", 202, Some(&bad))
        .unwrap_err();
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(e[0].starts_with("status: \"done\" is not one of"), "{e:?}");
    assert!(e[1].starts_with("pollLimit: 0 is not above 0"), "{e:?}");
    let error = json!({"errorCategory": "validation", "errorCode": "formatError"});
    assert!(v
        .validate_response("POST", "/batchtransactions", 400, Some(&error))
        .is_ok());
    assert!(v
        .validate_response("POST", "/batchtransactions", 418, Some(&error))
        .is_err());
    let batch = json!({
        "batchId": "SIMBATCH00000001",
        "batchStatus": "completed",
        "approvalDate": "2025-01-01T00:00:00Z",
        "completionDate": "2025-01-01T00:00:01Z",
        "completedCount": 2,
    });
    assert!(v
        .validate_schema("responseBatchTransaction", &batch)
        .is_ok());
    let mut incomplete = batch.clone();
    incomplete.as_object_mut().unwrap().remove("completionDate");
    assert_eq!(
        v.validate_schema("responseBatchTransaction", &incomplete),
        Err(vec![
            "completionDate: required property is missing".to_owned()
        ])
    );
    assert!(v.validate_schema("noSuchSchema", &batch).is_err());
}

/// `testdata/` holds a byte-for-byte copy of `shared/specs/…`; skipped where `shared/` is
/// not beside the work tree.
#[test]
fn vendored_spec_matches_the_shared_copy() {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let vendored =
        std::fs::read(manifest.join("testdata/gsma-mmapi-1.2-disbursement.yaml")).unwrap();
    let shared = manifest.join("../../shared/specs/gsma-mmapi-1.2-disbursement.yaml");
    match Some(&shared).filter(|p| p.exists()) {
        Some(shared) => assert!(
            std::fs::read(shared).unwrap() == vendored,
            "testdata/gsma-mmapi-1.2-disbursement.yaml differs from {}: copy it again",
            shared.display()
        ),
        None => eprintln!("shared spec not found; vendored copy not compared"),
    }
}
