//! Wire types of the GSMA Mobile Money API v1.2 disbursement subset (batch transactions, request states, responses, heartbeat, error objects) and the case-insensitive error parser; shared by the simulator and client adapters.
//!
//! Field names follow `/work/shared/specs/gsma-mmapi-1.2-disbursement.yaml`. Where the spec
//! itself is inconsistent in case, we serialise the camel-case form and accept the others:
//!
//! * error objects: the spec's schema says `errordescription`, its prose and real providers
//!   say `errorDescription`; we write `errorDescription` and [`parse_error`] accepts any case of
//!   every key;
//! * batches: the spec's schema says `batchdescription`; we write `batchdescription` (as the
//!   schema) and also accept `batchDescription` when reading.
//!
//! Amounts stay strings on the wire (the spec's `amount` is a string); parse them with
//! [`rust_decimal::Decimal`], never with floats.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A key/value identifier of a party (`creditParty` / `debitParty` items), e.g. `msisdn`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Party {
    /// Identifier type, e.g. `msisdn`, `walletid`.
    pub key: String,
    /// Identifier value, e.g. `+22370123456`.
    pub value: String,
}

impl Party {
    /// A `msisdn` party.
    pub fn msisdn(value: impl Into<String>) -> Self {
        Self {
            key: "msisdn".to_owned(),
            value: value.into(),
        }
    }
}

/// A key/value pair of `errorParameters` / `metadata`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Name of the item.
    pub key: String,
    /// Its value.
    pub value: String,
}

/// The GSMA error object (`errorObject` in the spec).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GsmaError {
    /// `businessRule`, `validation`, `authorisation`, `identification`, `internal` or
    /// `serviceUnavailable`.
    pub error_category: String,
    /// Harmonised code, e.g. `formatError`, `duplicateRequest`, `insufficientFunds`.
    pub error_code: String,
    /// Free text.
    #[serde(
        default,
        alias = "errordescription",
        skip_serializing_if = "Option::is_none"
    )]
    pub error_description: Option<String>,
    /// When the error occurred (RFC 3339 text as received).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_date_time: Option<String>,
    /// Diagnostic key/value pairs, e.g. the offending header.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_parameters: Vec<Metadata>,
}

impl GsmaError {
    /// An error with a category, a code and a description, stamped now.
    pub fn new(category: &str, code: &str, description: impl Into<String>) -> Self {
        Self {
            error_category: category.to_owned(),
            error_code: code.to_owned(),
            error_description: Some(description.into()),
            error_date_time: Some(Utc::now().to_rfc3339()),
            error_parameters: Vec::new(),
        }
    }

    /// Adds an `errorParameters` item.
    #[must_use]
    pub fn with_parameter(mut self, key: &str, value: impl Into<String>) -> Self {
        self.error_parameters.push(Metadata {
            key: key.to_owned(),
            value: value.into(),
        });
        self
    }
}

/// Parses a GSMA error object whose keys may come in any case (`errorCategory`,
/// `ErrorCategory`, `errorcategory`, `errordescription`, …), as the spec's own examples and
/// real providers differ. Returns `None` unless the body is a JSON object carrying at least
/// an error category and an error code (both strings).
pub fn parse_error(body: &[u8]) -> Option<GsmaError> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let object = value.as_object()?;
    let get = |name: &str| {
        object
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    };
    let get_str = |name: &str| get(name).and_then(|v| v.as_str()).map(str::to_owned);
    let error_parameters = get("errorParameters")
        .and_then(|v| v.as_array())
        .map(|items| {
            items
                .iter()
                .filter_map(|item| {
                    let item = item.as_object()?;
                    let field = |name: &str| {
                        item.iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case(name))
                            .and_then(|(_, v)| match v {
                                serde_json::Value::String(s) => Some(s.clone()),
                                serde_json::Value::Null => None,
                                other => Some(other.to_string()),
                            })
                    };
                    Some(Metadata {
                        key: field("key")?,
                        value: field("value").unwrap_or_default(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Some(GsmaError {
        error_category: get_str("errorCategory")?,
        error_code: get_str("errorCode")?,
        error_description: get_str("errorDescription"),
        error_date_time: get_str("errorDateTime"),
        error_parameters,
    })
}

/// The harmonised error code at the start of a `rejectionReason`: the simulator writes
/// reasons as `"<errorCode>: <text>"` (e.g. `"insufficientFunds: disbursement float
/// exhausted"`); a reason without a colon is returned whole, trimmed.
pub fn rejection_code(reason: &str) -> &str {
    reason.split(':').next().unwrap_or(reason).trim()
}

/// One transaction of a batch request (`requestTransaction` in the spec).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Transaction {
    /// Harmonised type; the simulator accepts only `disbursement`.
    #[serde(rename = "type")]
    pub transaction_type: String,
    /// Amount as a decimal string, e.g. `"65000"` or `"12500.5"`: the spec's pattern allows
    /// at most 4 decimals and no trailing fraction zeros (`"65000.00"` is invalid; use
    /// `Decimal::normalize` before `to_string`).
    pub amount: String,
    /// ISO 4217 code, e.g. `XOF`.
    pub currency: String,
    /// The payee; the simulator needs an `msisdn` item.
    #[serde(default)]
    pub credit_party: Vec<Party>,
    /// The payer. The spec's `requestTransaction` requires it (the simulator's spec
    /// validation refuses a batch without it); optional here only so lenient answers parse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debit_party: Option<Vec<Party>>,
    /// Our reference (the ledger's line id), echoed in completions and rejections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requesting_organisation_transaction_reference: Option<String>,
    /// Free text shown to the payee.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description_text: Option<String>,
}

impl Transaction {
    /// The first `msisdn` credit-party value (key compared case-insensitively).
    pub fn msisdn(&self) -> Option<&str> {
        self.credit_party
            .iter()
            .find(|p| p.key.eq_ignore_ascii_case("msisdn"))
            .map(|p| p.value.as_str())
    }
}

/// Body of `POST /batchtransactions` (`requestBatchTransaction` in the spec).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchTransactionRequest {
    /// Client title of the batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_title: Option<String>,
    /// Client description (`batchdescription` in the spec's schema).
    #[serde(
        default,
        rename = "batchdescription",
        alias = "batchDescription",
        skip_serializing_if = "Option::is_none"
    )]
    pub batch_description: Option<String>,
    /// The transactions, at least one.
    pub transactions: Vec<Transaction>,
}

/// `status` of a [`RequestState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestStatus {
    /// Not processed yet.
    Pending,
    /// Processed; see `objectReference`.
    Completed,
    /// Failed; see `error`.
    Failed,
}

/// `notificationMethod` of a [`RequestState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotificationMethod {
    /// The provider will call the client's `X-Callback-URL`.
    Callback,
    /// The client polls `/requeststates/{serverCorrelationId}`.
    Polling,
}

/// The asynchronous request state (`requestStateObject` in the spec): the 202 body of
/// `POST /batchtransactions` and the body of `GET /requeststates/{serverCorrelationId}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestState {
    /// The provider's id of the request (a UUID).
    pub server_correlation_id: String,
    /// `pending`, `completed` or `failed`.
    pub status: RequestStatus,
    /// `callback` when the request carried `X-Callback-URL`, else `polling`.
    pub notification_method: NotificationMethod,
    /// The batch id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_reference: Option<String>,
    /// Why still pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_reason: Option<String>,
    /// Allowed number of polls (advisory; the simulator does not enforce it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_limit: Option<u32>,
    /// Set when `status` is `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<GsmaError>,
}

/// `batchStatus` of a [`BatchTransaction`] (the spec's enum has exactly these three).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchStatus {
    /// Received, not yet processed.
    Created,
    /// Approved and processed in part: some transactions are still pending.
    Approved,
    /// Every transaction reached a final state (completed or rejected).
    Completed,
}

/// `GET /batchtransactions/{batchId}` (`responseBatchTransaction` in the spec).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchTransaction {
    /// Provider's batch id.
    pub batch_id: String,
    /// See [`BatchStatus`].
    pub batch_status: BatchStatus,
    /// When the batch was approved (the simulator approves on receipt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_date: Option<DateTime<Utc>>,
    /// When the last transaction reached a final state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_date: Option<DateTime<Utc>>,
    /// Client title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_title: Option<String>,
    /// Client description.
    #[serde(
        default,
        rename = "batchdescription",
        alias = "batchDescription",
        skip_serializing_if = "Option::is_none"
    )]
    pub batch_description: Option<String>,
    /// True while transactions of the batch are still being processed.
    pub processing_flag: bool,
    /// Transactions completed (including ones reversed afterwards).
    pub completed_count: u32,
    /// Transactions rejected, while parsing or while processing.
    pub rejection_count: u32,
    /// Transactions that passed parsing.
    pub parsing_success_count: u32,
    /// When the provider created the batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_date: Option<DateTime<Utc>>,
    /// Last change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modification_date: Option<DateTime<Utc>>,
}

/// One item of `GET /batchtransactions/{batchId}/completions`
/// (`responseBatchTransactionCompletion` in the spec).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Completion {
    /// Provider transaction id.
    pub transaction_reference: String,
    /// Our reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requesting_organisation_transaction_reference: Option<String>,
    /// Payee.
    pub credit_party: Vec<Party>,
    /// Payer.
    pub debit_party: Vec<Party>,
    /// When it completed.
    pub completion_date: DateTime<Utc>,
    /// Path of the transaction resource, `/transactions/{transactionReference}`.
    pub link: String,
}

/// One item of `GET /batchtransactions/{batchId}/rejections`
/// (`responseBatchTransactionRejection` in the spec).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rejection {
    /// Provider transaction id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_reference: Option<String>,
    /// Our reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requesting_organisation_transaction_reference: Option<String>,
    /// Payee as requested.
    pub credit_party: Vec<Party>,
    /// Payer.
    pub debit_party: Vec<Party>,
    /// `"<errorCode>: <text>"`; see [`rejection_code`].
    pub rejection_reason: String,
    /// When it was rejected.
    pub rejection_date: DateTime<Utc>,
}

/// `GET /responses/{clientCorrelationId}` (`responseResponse` in the spec): where the
/// resource created by the client's request lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseObject {
    /// Path of the resource, e.g. `/batchtransactions/{batchId}`.
    pub link: String,
}

/// `GET /transactions/{transactionReference}` (subset of `responseTransaction`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransactionRecord {
    /// Provider transaction id.
    pub transaction_reference: String,
    /// Our reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requesting_organisation_transaction_reference: Option<String>,
    /// `pending`, `completed`, `failed` or `reversed`.
    pub transaction_status: String,
    /// Always `disbursement` here.
    #[serde(rename = "type")]
    pub transaction_type: String,
    /// Amount as requested.
    pub amount: String,
    /// Currency as requested.
    pub currency: String,
    /// Payee.
    pub credit_party: Vec<Party>,
    /// Payer.
    pub debit_party: Vec<Party>,
    /// When the provider received it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_date: Option<DateTime<Utc>>,
    /// Last change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modification_date: Option<DateTime<Utc>>,
}

/// `serviceStatus` of a [`Heartbeat`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceStatus {
    /// Normal service.
    Available,
    /// Accepting requests, with faults.
    Degraded,
    /// Not accepting requests.
    Unavailable,
}

/// `GET /heartbeat` (`responseHeartbeat` in the spec).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    /// See [`ServiceStatus`].
    pub service_status: ServiceStatus,
}
