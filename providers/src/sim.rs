//! The GSMA Mobile Money API v1.2 disbursement simulator: an axum HTTP server with an in-memory, seeded-deterministic provider (float, batches, transactions, statement) and injected faults.
//!
//! Start it with [`Simulator::spawn`]; read back what it paid with [`RunningSim::state`] and
//! [`RunningSim::statement_csv`].
//!
//! # Endpoints (JSON; types in [`crate::gsma`])
//!
//! | method and path | answer |
//! | --- | --- |
//! | `POST /batchtransactions` | 202 [`RequestState`](crate::gsma::RequestState) (`pending`, `polling` — `callback` with `X-Callback-URL` —, `objectReference` = batch id) |
//! | `GET /requeststates/{serverCorrelationId}` | `pending` until the batch is processed, then `completed` |
//! | `GET /batchtransactions/{batchId}` | [`BatchTransaction`](crate::gsma::BatchTransaction) |
//! | `GET /batchtransactions/{batchId}/completions?offset&limit` | [`Completion`](crate::gsma::Completion) list, `X-Records-Available-Count` / `X-Records-Returned-Count` headers |
//! | `GET /batchtransactions/{batchId}/rejections?offset&limit` | [`Rejection`](crate::gsma::Rejection) list, same headers |
//! | `GET /transactions/{transactionReference}` | [`TransactionRecord`](crate::gsma::TransactionRecord) (shows `reversed`) |
//! | `GET /responses/{clientCorrelationId}` | [`ResponseObject`](crate::gsma::ResponseObject) `{"link": "/batchtransactions/{batchId}"}` |
//! | `GET /heartbeat` | `{"serviceStatus": "available" \| "degraded" \| "unavailable"}` |
//!
//! Every answer carries an `X-Date` header. Errors are GSMA error objects
//! ([`GsmaError`]); `limit` defaults to 50, `offset` to 0. `POST /batchtransactions` takes
//! bodies up to [`MAX_BODY_BYTES`] (64 MiB; 100,000 transactions are about 30 MB), larger
//! ones get axum's plain 413.
//!
//! `POST /batchtransactions` is checked in this order:
//!
//! 1. **Against the spec** when [`SimConfig::validate_requests`] is set (the default): its
//!    headers and JSON body go through [`SpecValidator::check_request`] with the bundled spec
//!    ([`crate::spec`], loaded once per process), before anything else — so before the
//!    token. A body that is not JSON, or any violation → 400 `validation` / `formatError`,
//!    `errorDescription` listing the first 5 violations (`path: rule`, then `(and N more)`),
//!    `errorParameters` one item per listed violation: key the path
//!    (`transactions[1].amount`, `X-CorrelationID`, …), value the offending value (the rule
//!    when the value is missing). Nothing is recorded and no fault is drawn. Note what the
//!    spec demands ([`crate::spec`] docs): `debitParty` on every transaction, amounts without
//!    trailing fraction zeros (`"65000"`, not `"65000.00"`), a `type` and `currency` from its
//!    enums; it requires no header. With validation off, the simulator's own, more lenient
//!    parsing below is all there is.
//! 2. `Authorization: Bearer <token>` (or `X-API-Key: <token>`) when [`SimConfig::api_key`]
//!    is set, else 401 `authorisation` / `clientAuthorisationError` (all requests but
//!    `/heartbeat` need it).
//! 3. `X-CorrelationID` as a UUID: missing → 400 `validation` / `mandatoryValueNotSupplied`,
//!    not a UUID → 400 `validation` / `formatError`, both with
//!    `errorParameters: [{"key": "X-CorrelationID", ...}]` (with validation on, the spec's
//!    UUID pattern catches the second case first, with the same answer).
//! 4. The body as a [`BatchTransactionRequest`] with at least one transaction, else 400
//!    `validation` (`formatError` / `mandatoryValueNotSupplied`).
//! 5. A correlation id already accepted → 400 `businessRule` / `duplicateRequest` (the spec's
//!    category enum has no `conflict`), and the batch is not processed again.
//!
//! `X-Date` is accepted, not required; with validation on, a present one must be a date-time
//! (RFC 3339 or an HTTP date).
//!
//! # Processing
//!
//! A batch is processed [`SimConfig::processing_delay`] after it was accepted, by a
//! background ticker or by the next request that comes after that time, whichever first.
//! Batches are processed in the order they were accepted, transactions in request order, so
//! the float is consumed deterministically. Each transaction is checked when parsed (type
//! `disbursement` — other types of the spec's enum such as `transfer` pass validation and
//! are rejected here —, currency = [`SimConfig::currency`], amount a positive decimal with at
//! most 4 places, an `msisdn` credit party of 6–15 digits with optional `+`); failures are
//! rejections counted in `rejectionCount` but not in `parsingSuccessCount`. Then, by the last
//! four digits of the MSISDN:
//!
//! | MSISDN ends in | outcome | `rejectionReason` |
//! | --- | --- | --- |
//! | `0001` | rejected: invalid MSISDN | `formatError: invalid MSISDN` |
//! | `0002` | rejected: account not registered | `identifierError: account not registered` |
//! | `0003` | rejected: payee account blocked | `requestDeclined: payee account blocked` |
//! | `0004` | rejected: payee KYC / balance limit exceeded | `maxBalanceExceeded: payee KYC balance limit exceeded` |
//! | `0005` | stays `pending` forever (batch stays `approved`, `processingFlag` true) | — |
//! | `0006` | completed, then reversed after [`SimConfig::reversal_delay`] | — |
//! | anything else | completed if the float covers amount + fee | `insufficientFunds: disbursement float exhausted` otherwise |
//!
//! Rejection reasons are `"<errorCode>: <text>"`; [`crate::gsma::rejection_code`] extracts the
//! code. A completed transaction costs the float `amount + fee` ([`SimConfig::fee`], flat); a
//! reversal gives back the amount, not the fee. Reversed transactions still count as
//! completions of their batch (they did complete); their status is `reversed` in
//! `/transactions/{ref}`, in [`RunningSim::state`] and in the statement.
//!
//! # Callbacks
//!
//! A `POST /batchtransactions` with an `X-Callback-URL` header gets `notificationMethod:
//! callback` in its request states (polling still works). When the batch has been processed
//! (the moment its request state turns `completed`), the simulator sends the spec's
//! `batchTransactionsSuccessEvent`: an HTTP `PUT` to that URL whose JSON body is the batch as
//! `GET /batchtransactions/{batchId}` shows it at that moment
//! ([`BatchTransaction`](crate::gsma::BatchTransaction), the spec's
//! `responseBatchTransaction` via `requestBodies/updateBatchTransaction`; usually
//! `completed`, `approved` when a `...0005` transaction stays pending), with headers `X-Date`
//! and `X-CorrelationID` (the client's, from the POST). Later changes (reversals) send
//! nothing, a `stuck_pending` batch never calls back, and the spec's
//! `batchTransactionsFailureEvent` (an error object) is never sent since an accepted batch
//! never fails as a whole. Callbacks are delivered one at a time in processing order by a
//! background task with plain HTTP (no TLS), each `PUT` given 5 s; a failure (unreachable
//! URL, non-2xx answer) is logged at debug and not retried.
//!
//! # Faults
//!
//! See [`Faults`] for the table. Per `POST /batchtransactions` that passed the checks above
//! the simulator draws, in this order, `status_503`, `lost_response`,
//! `timeout_after_commit`, `stuck_pending` from a `ChaCha8Rng` seeded with
//! [`SimConfig::seed`]; `reverse_later` is drawn per completed transaction from a second
//! seeded stream; `duplicate_callback`, `dropped_callback`, `out_of_order_callback` are drawn,
//! in this order, per accepted batch (with or without `X-Callback-URL`, so the draws do not
//! depend on which batches ask for callbacks) from a third seeded stream. Same seed + same
//! sequence of requests ⇒ same ids, same outcomes, same callbacks (requests must be sent one
//! after another: concurrent POSTs draw in arrival order). `status_503` applies to
//! `POST /batchtransactions` only. Under `lost_response` / `timeout_after_commit` the batch
//! is accepted, so its callback is still sent. `dropped_callback` wins over the other two
//! callback faults; `duplicate_callback` sends the same `PUT` twice in a row;
//! `out_of_order_callback` holds the callback back until the next batch's callback has been
//! delivered, then sends it (two consecutive batches' callbacks arrive swapped; the
//! overtaking one is not held itself), or sends it after [`SimConfig::callback_hold`] if no
//! other callback comes first. `pollLimit` is
//! advertised, not enforced. `/heartbeat` says `unavailable` when `status_503` is 1,
//! `degraded` when any of `status_503`, `lost_response`, `timeout_after_commit`,
//! `stuck_pending` is above 0, else `available` (callback faults do not count).

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::OnceLock;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

use crate::faults::draw;
pub use crate::faults::{FaultSpecError, Faults};
use crate::gsma::{
    BatchStatus, BatchTransaction, BatchTransactionRequest, Completion, GsmaError, Heartbeat,
    NotificationMethod, Party, Rejection, RequestState, RequestStatus, ResponseObject,
    ServiceStatus, TransactionRecord,
};
use crate::spec::{SpecError, SpecValidator, Violation};

/// Largest `POST /batchtransactions` body accepted (64 MiB: 100,000 transactions take about
/// 30 MB). Larger bodies get axum's 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// How many violations a 400 for a request that breaks the spec lists.
const VIOLATIONS_REPORTED: usize = 5;

/// How long one callback `PUT` may take before it is given up.
const CALLBACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Configuration of a simulator.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seed of the random streams (fault draws, ids): same seed, same requests ⇒ same outcomes.
    pub seed: u64,
    /// The only currency accepted, e.g. `XOF`.
    pub currency: String,
    /// Opening balance of the disbursement float.
    pub float_balance: Decimal,
    /// Flat fee taken from the float per completed transaction (default 0).
    pub fee: Decimal,
    /// Expected bearer token / API key; `None` disables the check.
    pub api_key: Option<String>,
    /// Fault rates.
    pub faults: Faults,
    /// Delay between acceptance and processing of a batch (default 5 ms).
    pub processing_delay: Duration,
    /// Delay between completion and reversal of a `...0006` / `reverse_later` transaction
    /// (default 20 ms).
    pub reversal_delay: Duration,
    /// How late the 202 comes under `timeout_after_commit` (default 2 s).
    pub response_delay: Duration,
    /// `pollLimit` advertised in request states (default 100).
    pub poll_limit: u32,
    /// Check every `POST /batchtransactions` (headers and body) against the bundled GSMA
    /// spec ([`SpecValidator::bundled`]) before anything else, answering 400 when it breaks
    /// it (default true).
    pub validate_requests: bool,
    /// Whether the magic MSISDN endings `0001`–`0006` drive outcomes (default true); off,
    /// every MSISDN is an ordinary payee (benchmarks on random fixture phones).
    pub magic_msisdns: bool,
    /// How long an `out_of_order_callback` callback waits for a later batch's callback to
    /// overtake it before it is delivered anyway (default 1 s).
    pub callback_hold: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            currency: "XOF".to_owned(),
            float_balance: Decimal::from(100_000_000u64),
            fee: Decimal::ZERO,
            api_key: None,
            faults: Faults::default(),
            processing_delay: Duration::from_millis(5),
            reversal_delay: Duration::from_millis(20),
            response_delay: Duration::from_secs(2),
            poll_limit: 100,
            validate_requests: true,
            magic_msisdns: true,
            callback_hold: Duration::from_secs(1),
        }
    }
}

/// Status of a transaction as the simulator holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TxStatus {
    /// Not processed yet, or stuck (`...0005`, `stuck_pending`).
    Pending,
    /// Paid.
    Completed,
    /// Rejected (see `rejection_reason`).
    Failed,
    /// Paid, then reversed.
    Reversed,
}

impl TxStatus {
    /// `pending`, `completed`, `failed`, `reversed`.
    pub fn as_str(self) -> &'static str {
        match self {
            TxStatus::Pending => "pending",
            TxStatus::Completed => "completed",
            TxStatus::Failed => "failed",
            TxStatus::Reversed => "reversed",
        }
    }
}

/// One transaction as the simulator recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimTransaction {
    /// The provider's transaction id (`transactionReference`), e.g. `SIMTX00000001`.
    pub provider_transaction_id: String,
    /// Our reference: `requestingOrganisationTransactionReference` as sent.
    pub reference: Option<String>,
    /// The batch it came in.
    pub batch_id: String,
    /// The `msisdn` credit party as sent.
    pub msisdn: Option<String>,
    /// The amount, if it parsed.
    pub amount: Option<Decimal>,
    /// Currency as sent.
    pub currency: String,
    /// Fee taken from the float (0 unless it completed).
    pub fee: Decimal,
    /// Current status.
    pub status: TxStatus,
    /// `"<errorCode>: <text>"` when failed.
    pub rejection_reason: Option<String>,
    /// When it completed (kept after a reversal).
    pub completed_at: Option<DateTime<Utc>>,
    /// When it was reversed.
    pub reversed_at: Option<DateTime<Utc>>,
}

/// Snapshot of the simulator's books.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimState {
    /// Float left.
    pub float_balance: Decimal,
    /// Every transaction received, in order of receipt.
    pub transactions: Vec<SimTransaction>,
    /// Ids of accepted batches, in order of receipt.
    pub batch_ids: Vec<String>,
}

impl SimState {
    /// The transaction with our reference `reference` (the first, if sent twice).
    pub fn by_reference(&self, reference: &str) -> Option<&SimTransaction> {
        self.transactions
            .iter()
            .find(|t| t.reference.as_deref() == Some(reference))
    }
}

/// Namespace of the simulator: see [`Simulator::spawn`].
#[derive(Debug)]
pub struct Simulator {
    _private: (),
}

impl Simulator {
    /// Binds `addr` (port 0 picks a free port) and serves the simulator in tokio tasks until
    /// [`RunningSim::shutdown`] or drop. Fails (`InvalidData`) only if
    /// [`SimConfig::validate_requests`] is set and the bundled spec cannot be loaded.
    pub async fn spawn(config: SimConfig, addr: SocketAddr) -> Result<RunningSim, std::io::Error> {
        let validator =
            if config.validate_requests {
                Some(bundled_validator().map_err(|e| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
                })?)
            } else {
                None
            };
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let hold = config.callback_hold;
        let (callback_tx, callback_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::new(config, validator, callback_tx));
        let callbacks = tokio::spawn(deliver_callbacks(callback_rx, hold));
        let app = router(Arc::clone(&shared));
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let result = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
            if let Err(err) = result {
                tracing::warn!(%err, "provider simulator stopped with an error");
            }
        });
        let ticking = Arc::clone(&shared);
        let ticker = tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_millis(2));
            loop {
                interval.tick().await;
                ticking.lock().process_due(Instant::now());
            }
        });
        tracing::info!(%local, "provider simulator listening");
        Ok(RunningSim {
            base_url: format!("http://{local}"),
            addr: local,
            shared,
            shutdown: Some(tx),
            server: Some(server),
            ticker: Some(ticker),
            callbacks: Some(callbacks),
        })
    }
}

/// A simulator serving in the background.
#[derive(Debug)]
pub struct RunningSim {
    /// `http://127.0.0.1:PORT`, no trailing slash; endpoint paths go right after it.
    pub base_url: String,
    /// The bound address.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    ticker: Option<JoinHandle<()>>,
    callbacks: Option<JoinHandle<()>>,
}

impl RunningSim {
    /// What the simulator holds now (work that is due is processed first).
    pub fn state(&self) -> SimState {
        let mut inner = self.shared.lock();
        inner.process_due(Instant::now());
        SimState {
            float_balance: inner.float,
            transactions: inner.txs.iter().map(|t| t.view.clone()).collect(),
            batch_ids: inner.batches.iter().map(|b| b.batch_id.clone()).collect(),
        }
    }

    /// The float account statement as CSV, one row per movement of the float, oldest first,
    /// with the header
    /// `transaction_id,reference,msisdn,amount,currency,fee,status,completed_at,balance_after`:
    ///
    /// * a payment row per completed transaction: `transaction_id` the provider id,
    ///   `reference` ours, `amount` positive, `fee` the fee taken, `status` the transaction's
    ///   current status (`completed`, or `reversed` if it was reversed since);
    /// * a reversal row per reversal: `transaction_id` = provider id + `-REV`, same reference
    ///   and msisdn, `amount` negative (money back to the float), `fee` 0, `status`
    ///   `reversal`.
    ///
    /// `completed_at` is the RFC 3339 time of the movement. `balance_after` is the float after
    /// the row: the previous row's `balance_after` (for the first row,
    /// [`SimConfig::float_balance`]) minus `amount` minus `fee`. Rejected and pending
    /// transactions do not move the float and are not listed. Fields are CSV-quoted when
    /// they contain a comma, quote or line break.
    pub fn statement_csv(&self) -> String {
        let mut inner = self.shared.lock();
        inner.process_due(Instant::now());
        let mut out = String::from(
            "transaction_id,reference,msisdn,amount,currency,fee,status,completed_at,balance_after\n",
        );
        for entry in &inner.statement {
            let tx = &inner.txs[entry.tx].view;
            let (id, status) = if entry.reversal {
                (
                    format!("{}-REV", tx.provider_transaction_id),
                    "reversal".to_owned(),
                )
            } else {
                (
                    tx.provider_transaction_id.clone(),
                    tx.status.as_str().to_owned(),
                )
            };
            let fields = [
                id,
                tx.reference.clone().unwrap_or_default(),
                tx.msisdn.clone().unwrap_or_default(),
                entry.amount.to_string(),
                tx.currency.clone(),
                entry.fee.to_string(),
                status,
                entry.at.to_rfc3339(),
                entry.balance_after.to_string(),
            ];
            let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
            let _ = writeln!(out, "{}", line.join(","));
        }
        out
    }

    /// Stops serving (graceful), the background ticker and callback delivery (callbacks not
    /// yet delivered are dropped).
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(ticker) = self.ticker.take() {
            ticker.abort();
        }
        if let Some(callbacks) = self.callbacks.take() {
            callbacks.abort();
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(ticker) = self.ticker.take() {
            ticker.abort();
        }
        if let Some(callbacks) = self.callbacks.take() {
            callbacks.abort();
        }
    }
}

fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

// ---------------------------------------------------------------------------------------
// State

#[derive(Debug)]
struct Shared {
    inner: Mutex<Inner>,
    /// The bundled spec when [`SimConfig::validate_requests`] is set; used outside the lock.
    validator: Option<Arc<SpecValidator>>,
}

/// The bundled spec, parsed once per process.
fn bundled_validator() -> Result<Arc<SpecValidator>, SpecError> {
    static BUNDLED: OnceLock<Arc<SpecValidator>> = OnceLock::new();
    if let Some(v) = BUNDLED.get() {
        return Ok(Arc::clone(v));
    }
    let loaded = Arc::new(SpecValidator::bundled()?);
    Ok(Arc::clone(BUNDLED.get_or_init(|| loaded)))
}

impl Shared {
    fn new(
        config: SimConfig,
        validator: Option<Arc<SpecValidator>>,
        callbacks: mpsc::UnboundedSender<CallbackDelivery>,
    ) -> Self {
        let request_rng = ChaCha8Rng::seed_from_u64(config.seed);
        let mut outcome_rng = ChaCha8Rng::seed_from_u64(config.seed);
        outcome_rng.set_stream(1);
        let mut callback_rng = ChaCha8Rng::seed_from_u64(config.seed);
        callback_rng.set_stream(2);
        Self {
            validator,
            inner: Mutex::new(Inner {
                float: config.float_balance,
                config,
                request_rng,
                outcome_rng,
                callback_rng,
                callbacks,
                next_tx: 1,
                batches: Vec::new(),
                by_client: HashMap::new(),
                by_server: HashMap::new(),
                by_batch_id: HashMap::new(),
                txs: Vec::new(),
                by_tx_ref: HashMap::new(),
                statement: Vec::new(),
                reversals: VecDeque::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent-enough test state; keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug)]
struct Inner {
    config: SimConfig,
    request_rng: ChaCha8Rng,
    outcome_rng: ChaCha8Rng,
    /// Draws of the callback faults, one stream so polling-only runs are unaffected.
    callback_rng: ChaCha8Rng,
    /// To the callback delivery task.
    callbacks: mpsc::UnboundedSender<CallbackDelivery>,
    float: Decimal,
    next_tx: u64,
    batches: Vec<Batch>,
    by_client: HashMap<Uuid, usize>,
    by_server: HashMap<Uuid, usize>,
    by_batch_id: HashMap<String, usize>,
    txs: Vec<TxRecord>,
    by_tx_ref: HashMap<String, usize>,
    statement: Vec<StatementEntry>,
    reversals: VecDeque<(Instant, usize)>,
}

#[derive(Debug)]
struct Batch {
    batch_id: String,
    server_correlation_id: Uuid,
    title: Option<String>,
    description: Option<String>,
    created: DateTime<Utc>,
    modified: DateTime<Utc>,
    completed: Option<DateTime<Utc>>,
    due: Instant,
    stuck: bool,
    processed: bool,
    txs: Vec<usize>,
    callback: Option<CallbackPlan>,
}

/// Where and how a batch's callback goes (`X-Callback-URL` was given).
#[derive(Debug, Clone)]
struct CallbackPlan {
    url: String,
    /// The client's `X-CorrelationID`, echoed on the callback.
    correlation_id: Uuid,
    faults: CallbackFaults,
}

/// Callback fault decisions of one accepted batch.
#[derive(Debug, Clone, Copy, Default)]
struct CallbackFaults {
    duplicate: bool,
    dropped: bool,
    out_of_order: bool,
}

/// One callback to deliver: `PUT url` with `body`, `times` times (2 under
/// `duplicate_callback`).
#[derive(Debug)]
struct CallbackDelivery {
    url: String,
    correlation_id: Uuid,
    batch_id: String,
    body: Value,
    times: usize,
    out_of_order: bool,
}

#[derive(Debug)]
struct TxRecord {
    view: SimTransaction,
    amount_text: String,
    credit_party: Vec<Party>,
    debit_party: Vec<Party>,
    parsed: bool,
    created: DateTime<Utc>,
    modified: DateTime<Utc>,
}

#[derive(Debug)]
struct StatementEntry {
    tx: usize,
    reversal: bool,
    amount: Decimal,
    fee: Decimal,
    at: DateTime<Utc>,
    balance_after: Decimal,
}

/// Fault decisions for one accepted POST.
#[derive(Debug, Clone, Copy)]
struct Decisions {
    status_503: bool,
    lost_response: bool,
    timeout_after_commit: bool,
    stuck_pending: bool,
}

fn default_debit_party() -> Vec<Party> {
    vec![Party {
        key: "walletid".to_owned(),
        value: "cva-disbursement-float".to_owned(),
    }]
}

fn msisdn_format_ok(msisdn: &str) -> bool {
    let digits = msisdn.strip_prefix('+').unwrap_or(msisdn);
    (6..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
}

/// A positive decimal with at most 4 places (the spec's format) and no more significant
/// decimals than `currency` has (`100.5` XOF is refused: a franc has no fraction), as a real
/// provider's ledger would refuse it.
fn parse_amount(text: &str, currency: &str) -> Option<Decimal> {
    let ok_chars = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && text.bytes().next().is_some_and(|b| b.is_ascii_digit());
    if !ok_chars {
        return None;
    }
    let amount = Decimal::from_str(text).ok()?;
    let places = cva_ledger::money::Currency::parse(currency).map_or(4, |c| c.exponent());
    (amount > Decimal::ZERO && amount.scale() <= 4 && amount.normalize().scale() <= places)
        .then_some(amount)
}

impl Inner {
    fn decide(&mut self) -> Decisions {
        let f = self.config.faults;
        let rng = &mut self.request_rng;
        Decisions {
            status_503: draw(rng, f.status_503),
            lost_response: draw(rng, f.lost_response),
            timeout_after_commit: draw(rng, f.timeout_after_commit),
            stuck_pending: draw(rng, f.stuck_pending),
        }
    }

    /// Callback fault draws for an accepted batch: always three draws from the callback
    /// stream, whether or not the batch has a callback URL.
    fn decide_callback(&mut self) -> CallbackFaults {
        let f = self.config.faults;
        let rng = &mut self.callback_rng;
        CallbackFaults {
            duplicate: draw(rng, f.duplicate_callback),
            dropped: draw(rng, f.dropped_callback),
            out_of_order: draw(rng, f.out_of_order_callback),
        }
    }

    fn random_uuid(&mut self) -> Uuid {
        uuid::Builder::from_random_bytes(self.request_rng.gen()).into_uuid()
    }

    fn accept(
        &mut self,
        client: Uuid,
        request: BatchTransactionRequest,
        stuck: bool,
        callback: Option<CallbackPlan>,
        now: Instant,
    ) -> usize {
        let index = self.batches.len();
        let batch_id = format!("SIMBATCH{:08}", index + 1);
        let server = self.random_uuid();
        let at = Utc::now();
        let mut tx_ids = Vec::with_capacity(request.transactions.len());
        for t in request.transactions {
            let id = format!("SIMTX{:08}", self.next_tx);
            self.next_tx += 1;
            let amount = parse_amount(&t.amount, &t.currency);
            let msisdn = t.msisdn().map(str::to_owned);
            let reject = if !t.transaction_type.eq_ignore_ascii_case("disbursement") {
                Some(format!(
                    "transactionTypeError: type `{}` not supported, only disbursement",
                    t.transaction_type
                ))
            } else if t.currency != self.config.currency {
                Some(format!(
                    "currencyNotSupported: currency `{}` not supported, only {}",
                    t.currency, self.config.currency
                ))
            } else if amount.is_none() {
                Some(format!(
                    "formatError: amount `{}` is not a positive decimal with at most 4 places \
                     and no more than the currency's decimals",
                    t.amount
                ))
            } else {
                match &msisdn {
                    None => Some("mandatoryValueNotSupplied: no msisdn credit party".to_owned()),
                    Some(m) if !msisdn_format_ok(m) => {
                        Some(format!("formatError: msisdn `{m}` is malformed"))
                    }
                    Some(_) => None,
                }
            };
            let parsed = reject.is_none();
            let view = SimTransaction {
                provider_transaction_id: id.clone(),
                reference: t.requesting_organisation_transaction_reference.clone(),
                batch_id: batch_id.clone(),
                msisdn,
                amount,
                currency: t.currency.clone(),
                fee: Decimal::ZERO,
                status: if parsed {
                    TxStatus::Pending
                } else {
                    TxStatus::Failed
                },
                rejection_reason: reject,
                completed_at: None,
                reversed_at: None,
            };
            self.by_tx_ref.insert(id, self.txs.len());
            tx_ids.push(self.txs.len());
            self.txs.push(TxRecord {
                view,
                amount_text: t.amount,
                credit_party: t.credit_party,
                debit_party: t.debit_party.unwrap_or_else(default_debit_party),
                parsed,
                created: at,
                modified: at,
            });
        }
        self.batches.push(Batch {
            batch_id: batch_id.clone(),
            server_correlation_id: server,
            title: request.batch_title,
            description: request.batch_description,
            created: at,
            modified: at,
            completed: None,
            due: now + self.config.processing_delay,
            stuck,
            processed: false,
            txs: tx_ids,
            callback,
        });
        self.by_client.insert(client, index);
        self.by_server.insert(server, index);
        self.by_batch_id.insert(batch_id, index);
        index
    }

    /// Processes every batch and reversal that is due at `now`, oldest first.
    fn process_due(&mut self, now: Instant) {
        for b in 0..self.batches.len() {
            let batch = &self.batches[b];
            if batch.processed || batch.stuck || batch.due > now {
                continue;
            }
            let at = Utc::now();
            let mut still_pending = false;
            for i in self.batches[b].txs.clone() {
                if !self.txs[i].parsed {
                    continue;
                }
                still_pending |= self.process_tx(i, now, at);
            }
            let batch = &mut self.batches[b];
            batch.processed = true;
            batch.modified = at;
            if !still_pending {
                batch.completed = Some(at);
            }
            self.queue_callback(b);
        }
        while let Some(&(due, i)) = self.reversals.front() {
            if due > now {
                break;
            }
            self.reversals.pop_front();
            let at = Utc::now();
            let amount = self.txs[i].view.amount.unwrap_or_default();
            self.float += amount;
            let tx = &mut self.txs[i];
            tx.view.status = TxStatus::Reversed;
            tx.view.reversed_at = Some(at);
            tx.modified = at;
            self.statement.push(StatementEntry {
                tx: i,
                reversal: true,
                amount: -amount,
                fee: Decimal::ZERO,
                at,
                balance_after: self.float,
            });
        }
    }

    /// Decides one parsed transaction; returns true when it stays pending.
    fn process_tx(&mut self, i: usize, now: Instant, at: DateTime<Utc>) -> bool {
        let msisdn = self.txs[i].view.msisdn.clone().unwrap_or_default();
        let suffix = if self.config.magic_msisdns {
            msisdn.get(msisdn.len().saturating_sub(4)..).unwrap_or("")
        } else {
            ""
        };
        let amount = self.txs[i].view.amount.unwrap_or_default();
        let fee = self.config.fee;
        let reason = match suffix {
            "0001" => Some("formatError: invalid MSISDN"),
            "0002" => Some("identifierError: account not registered"),
            "0003" => Some("requestDeclined: payee account blocked"),
            "0004" => Some("maxBalanceExceeded: payee KYC balance limit exceeded"),
            "0005" => return true,
            _ if amount + fee > self.float => {
                Some("insufficientFunds: disbursement float exhausted")
            }
            _ => None,
        };
        let tx = &mut self.txs[i];
        tx.modified = at;
        if let Some(reason) = reason {
            tx.view.status = TxStatus::Failed;
            tx.view.rejection_reason = Some(reason.to_owned());
            return false;
        }
        tx.view.status = TxStatus::Completed;
        tx.view.fee = fee;
        tx.view.completed_at = Some(at);
        self.float -= amount + fee;
        self.statement.push(StatementEntry {
            tx: i,
            reversal: false,
            amount,
            fee,
            at,
            balance_after: self.float,
        });
        let reverse_later = draw(&mut self.outcome_rng, self.config.faults.reverse_later);
        if suffix == "0006" || reverse_later {
            self.reversals
                .push_back((now + self.config.reversal_delay, i));
        }
        false
    }

    /// Hands the callback of the just-processed batch `b` (if it has one and it is not
    /// dropped) to the delivery task, with the batch as it is now.
    fn queue_callback(&self, b: usize) {
        let Some(plan) = &self.batches[b].callback else {
            return;
        };
        if plan.faults.dropped {
            tracing::debug!(batch = %self.batches[b].batch_id, "callback dropped (injected fault)");
            return;
        }
        let body = match serde_json::to_value(self.batch_view(b)) {
            Ok(body) => body,
            Err(err) => {
                tracing::debug!(%err, "cannot serialise a batch callback");
                return;
            }
        };
        let delivery = CallbackDelivery {
            url: plan.url.clone(),
            correlation_id: plan.correlation_id,
            batch_id: self.batches[b].batch_id.clone(),
            body,
            times: if plan.faults.duplicate { 2 } else { 1 },
            out_of_order: plan.faults.out_of_order,
        };
        if self.callbacks.send(delivery).is_err() {
            tracing::debug!("callback delivery task is gone; callback not sent");
        }
    }

    fn request_state(&self, b: usize) -> RequestState {
        let batch = &self.batches[b];
        RequestState {
            server_correlation_id: batch.server_correlation_id.to_string(),
            status: if batch.processed {
                RequestStatus::Completed
            } else {
                RequestStatus::Pending
            },
            notification_method: if batch.callback.is_some() {
                NotificationMethod::Callback
            } else {
                NotificationMethod::Polling
            },
            object_reference: Some(batch.batch_id.clone()),
            pending_reason: (!batch.processed)
                .then(|| "batch queued for processing by the provider".to_owned()),
            poll_limit: Some(self.config.poll_limit),
            error: None,
        }
    }

    fn batch_view(&self, b: usize) -> BatchTransaction {
        let batch = &self.batches[b];
        let count = |pred: &dyn Fn(&TxRecord) -> bool| {
            let n = batch.txs.iter().filter(|&&i| pred(&self.txs[i])).count();
            u32::try_from(n).unwrap_or(u32::MAX)
        };
        let status = if !batch.processed {
            BatchStatus::Created
        } else if batch.completed.is_none() {
            BatchStatus::Approved
        } else {
            BatchStatus::Completed
        };
        BatchTransaction {
            batch_id: batch.batch_id.clone(),
            batch_status: status,
            approval_date: Some(batch.created),
            completion_date: batch.completed,
            batch_title: batch.title.clone(),
            batch_description: batch.description.clone(),
            processing_flag: status != BatchStatus::Completed,
            completed_count: count(&|t| {
                matches!(t.view.status, TxStatus::Completed | TxStatus::Reversed)
            }),
            rejection_count: count(&|t| t.view.status == TxStatus::Failed),
            parsing_success_count: count(&|t| t.parsed),
            creation_date: Some(batch.created),
            modification_date: Some(batch.modified),
        }
    }

    fn heartbeat(&self) -> ServiceStatus {
        let f = self.config.faults;
        if f.status_503 >= Decimal::ONE {
            ServiceStatus::Unavailable
        } else if [
            f.status_503,
            f.lost_response,
            f.timeout_after_commit,
            f.stuck_pending,
        ]
        .iter()
        .any(|r| *r > Decimal::ZERO)
        {
            ServiceStatus::Degraded
        } else {
            ServiceStatus::Available
        }
    }
}

// ---------------------------------------------------------------------------------------
// HTTP

type AppState = Arc<Shared>;

fn router(shared: AppState) -> Router {
    Router::new()
        .route(
            "/batchtransactions",
            post(post_batch).layer(DefaultBodyLimit::max(MAX_BODY_BYTES)),
        )
        .route("/batchtransactions/{batch_id}", get(get_batch))
        .route(
            "/batchtransactions/{batch_id}/completions",
            get(get_completions),
        )
        .route(
            "/batchtransactions/{batch_id}/rejections",
            get(get_rejections),
        )
        .route(
            "/requeststates/{server_correlation_id}",
            get(get_request_state),
        )
        .route("/responses/{client_correlation_id}", get(get_response))
        .route(
            "/transactions/{transaction_reference}",
            get(get_transaction),
        )
        .route("/heartbeat", get(heartbeat))
        .layer(axum::middleware::map_response(add_date_header))
        .with_state(shared)
}

async fn add_date_header(mut response: Response) -> Response {
    if let Ok(value) = HeaderValue::from_str(&Utc::now().to_rfc3339()) {
        response.headers_mut().insert("x-date", value);
    }
    response
}

fn error(status: StatusCode, error: GsmaError) -> Response {
    (status, Json(error)).into_response()
}

fn not_found(what: &str, id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        GsmaError::new(
            "identification",
            "genericError",
            format!("{what} not found"),
        )
        .with_parameter(what, id),
    )
}

/// Checks `Authorization: Bearer <token>` or `X-API-Key: <token>` against the configured key.
fn authorise(shared: &Shared, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let expected = shared.lock().config.api_key.clone();
    let Some(expected) = expected else {
        return Ok(());
    };
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    let api_key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    if bearer == Some(expected.as_str()) || api_key == Some(expected.as_str()) {
        Ok(())
    } else {
        Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            GsmaError::new(
                "authorisation",
                "clientAuthorisationError",
                "missing or wrong bearer token",
            ),
        )))
    }
}

/// The 400 for a request that breaks the spec: `validation` / `formatError`, the first
/// [`VIOLATIONS_REPORTED`] violations as text in `errorDescription` and as
/// `errorParameters` (key: the path; value: the offending value, or the rule when the value
/// is missing or empty, as the spec's metadata values cannot be empty).
fn spec_violation(violations: &[Violation]) -> Response {
    let shown = &violations[..violations.len().min(VIOLATIONS_REPORTED)];
    let mut description = format!(
        "request does not conform to the GSMA MMAPI v1.2 spec: {}",
        shown
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    );
    if violations.len() > shown.len() {
        let _ = write!(
            description,
            " (and {} more)",
            violations.len() - shown.len()
        );
    }
    let mut err = GsmaError::new("validation", "formatError", description);
    for v in shown {
        let value = match &v.value {
            Some(Value::String(text)) if !text.is_empty() => text.clone(),
            Some(Value::String(_)) | None => v.rule.clone(),
            Some(other) => other.to_string(),
        };
        let value: String = value.chars().take(256).collect();
        err = err.with_parameter(&v.path, value);
    }
    error(StatusCode::BAD_REQUEST, err)
}

/// Checks a `POST /batchtransactions` against the spec; `Ok` carries the parsed body.
fn validate_post(
    validator: &SpecValidator,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Value, Box<Response>> {
    let pairs: Vec<(String, String)> = headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let value = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(value) => Some(value),
            Err(err) => {
                return Err(Box::new(error(
                    StatusCode::BAD_REQUEST,
                    GsmaError::new(
                        "validation",
                        "formatError",
                        format!("request body is not JSON: {err}"),
                    ),
                )))
            }
        }
    };
    let violations = validator.check_request("POST", "/batchtransactions", &pairs, value.as_ref());
    match value {
        Some(value) if violations.is_empty() => Ok(value),
        _ => Err(Box::new(spec_violation(&violations))),
    }
}

async fn post_batch(State(shared): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let validated = match &shared.validator {
        Some(validator) => {
            // Parsing and checking a large batch takes a while: off the async workers.
            let (validator, headers, body) = (Arc::clone(validator), headers.clone(), body.clone());
            let checked =
                tokio::task::spawn_blocking(move || validate_post(&validator, &headers, &body))
                    .await;
            match checked {
                Ok(Ok(value)) => Some(value),
                Ok(Err(response)) => return *response,
                Err(err) => {
                    tracing::warn!(%err, "request validation task failed");
                    return error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        GsmaError::new("internal", "genericError", "request validation failed"),
                    );
                }
            }
        }
        None => None,
    };
    if let Err(response) = authorise(&shared, &headers) {
        return *response;
    }
    let client = match headers.get("x-correlationid") {
        None => {
            return error(
                StatusCode::BAD_REQUEST,
                GsmaError::new(
                    "validation",
                    "mandatoryValueNotSupplied",
                    "X-CorrelationID header is required",
                )
                .with_parameter("X-CorrelationID", "missing"),
            )
        }
        Some(value) => {
            let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
            match Uuid::parse_str(text.trim()) {
                Ok(id) if text.trim().len() == 36 => id,
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        GsmaError::new(
                            "validation",
                            "formatError",
                            "X-CorrelationID must be a UUID",
                        )
                        .with_parameter("X-CorrelationID", text),
                    )
                }
            }
        }
    };
    let parsed = match validated {
        Some(value) => serde_json::from_value(value),
        None => serde_json::from_slice(&body),
    };
    let request: BatchTransactionRequest = match parsed {
        Ok(r) => r,
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                GsmaError::new(
                    "validation",
                    "formatError",
                    format!("request body is not a batch transaction: {err}"),
                ),
            )
        }
    };
    let callback_url = headers
        .get("x-callback-url")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_owned())
        .filter(|url| !url.is_empty());
    if request.transactions.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            GsmaError::new(
                "validation",
                "mandatoryValueNotSupplied",
                "a batch needs at least one transaction",
            )
            .with_parameter("transactions", "[]"),
        );
    }
    let (state, decisions, delay) = {
        let mut inner = shared.lock();
        let now = Instant::now();
        inner.process_due(now);
        if inner.by_client.contains_key(&client) {
            return error(
                StatusCode::BAD_REQUEST,
                GsmaError::new(
                    "businessRule",
                    "duplicateRequest",
                    "a request with this X-CorrelationID was already accepted",
                )
                .with_parameter("X-CorrelationID", client.to_string()),
            );
        }
        let decisions = inner.decide();
        if decisions.status_503 {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                GsmaError::new(
                    "serviceUnavailable",
                    "genericError",
                    "provider temporarily unavailable (injected fault)",
                ),
            );
        }
        let callback_faults = inner.decide_callback();
        let callback = callback_url.map(|url| CallbackPlan {
            url,
            correlation_id: client,
            faults: callback_faults,
        });
        let b = inner.accept(client, request, decisions.stuck_pending, callback, now);
        (
            inner.request_state(b),
            decisions,
            inner.config.response_delay,
        )
    };
    if decisions.lost_response {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            GsmaError::new(
                "internal",
                "genericError",
                "internal error (injected fault: the request was accepted)",
            ),
        );
    }
    if decisions.timeout_after_commit {
        tokio::time::sleep(delay).await;
    }
    (StatusCode::ACCEPTED, Json(state)).into_response()
}

async fn get_request_state(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(response) = authorise(&shared, &headers) {
        return *response;
    }
    let mut inner = shared.lock();
    inner.process_due(Instant::now());
    let found = Uuid::parse_str(&id)
        .ok()
        .and_then(|u| inner.by_server.get(&u).copied());
    match found {
        Some(b) => Json(inner.request_state(b)).into_response(),
        None => not_found("serverCorrelationId", &id),
    }
}

async fn get_response(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(response) = authorise(&shared, &headers) {
        return *response;
    }
    let inner = shared.lock();
    let found = Uuid::parse_str(&id)
        .ok()
        .and_then(|u| inner.by_client.get(&u).copied());
    match found {
        Some(b) => Json(ResponseObject {
            link: format!("/batchtransactions/{}", inner.batches[b].batch_id),
        })
        .into_response(),
        None => not_found("clientCorrelationId", &id),
    }
}

async fn get_batch(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(response) = authorise(&shared, &headers) {
        return *response;
    }
    let mut inner = shared.lock();
    inner.process_due(Instant::now());
    match inner.by_batch_id.get(&id).copied() {
        Some(b) => Json(inner.batch_view(b)).into_response(),
        None => not_found("batchId", &id),
    }
}

/// `offset` / `limit` query parameters, kept as text so bad values get a GSMA error.
#[derive(Debug, Deserialize)]
struct Paging {
    offset: Option<String>,
    limit: Option<String>,
}

impl Paging {
    fn parse(&self) -> Result<(usize, usize), Box<Response>> {
        let field = |name: &str, value: &Option<String>, default: usize| match value {
            None => Ok(default),
            Some(v) => v.trim().parse::<usize>().map_err(|_| {
                Box::new(error(
                    StatusCode::BAD_REQUEST,
                    GsmaError::new(
                        "validation",
                        if name == "offset" {
                            "invalidOffset"
                        } else {
                            "formatError"
                        },
                        format!("{name} must be a non-negative integer"),
                    )
                    .with_parameter(name, v.clone()),
                ))
            }),
        };
        Ok((
            field("offset", &self.offset, 0)?,
            field("limit", &self.limit, 50)?,
        ))
    }
}

/// One page of a batch's completions or rejections: authorises, finds the batch, counts the
/// transactions `keep` selects, and builds `item` only for the page asked for (a 100,000-line
/// batch read 1,000 at a time builds each item once, not once per page).
fn batch_page<T: Serialize>(
    shared: &Shared,
    headers: &HeaderMap,
    id: &str,
    paging: &Paging,
    keep: impl Fn(&TxRecord) -> bool,
    item: impl Fn(&TxRecord) -> Option<T>,
) -> Response {
    if let Err(response) = authorise(shared, headers) {
        return *response;
    }
    let (offset, limit) = match paging.parse() {
        Ok(p) => p,
        Err(response) => return *response,
    };
    let mut inner = shared.lock();
    inner.process_due(Instant::now());
    let Some(b) = inner.by_batch_id.get(id).copied() else {
        return not_found("batchId", id);
    };
    let kept: Vec<&TxRecord> = inner.batches[b]
        .txs
        .iter()
        .map(|&i| &inner.txs[i])
        .filter(|t| keep(t))
        .collect();
    let available = kept.len();
    let items: Vec<T> = kept
        .into_iter()
        .skip(offset)
        .take(limit)
        .filter_map(item)
        .collect();
    let returned = items.len();
    let mut response = Json(items).into_response();
    let headers = response.headers_mut();
    headers.insert("x-records-available-count", HeaderValue::from(available));
    headers.insert("x-records-returned-count", HeaderValue::from(returned));
    response
}

async fn get_completions(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(paging): Query<Paging>,
) -> Response {
    batch_page(
        &shared,
        &headers,
        &id,
        &paging,
        |t| t.view.completed_at.is_some(),
        |t| {
            Some(Completion {
                transaction_reference: t.view.provider_transaction_id.clone(),
                requesting_organisation_transaction_reference: t.view.reference.clone(),
                credit_party: t.credit_party.clone(),
                debit_party: t.debit_party.clone(),
                completion_date: t.view.completed_at?,
                link: format!("/transactions/{}", t.view.provider_transaction_id),
            })
        },
    )
}

async fn get_rejections(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(paging): Query<Paging>,
) -> Response {
    batch_page(
        &shared,
        &headers,
        &id,
        &paging,
        |t| t.view.status == TxStatus::Failed,
        |t| {
            Some(Rejection {
                transaction_reference: Some(t.view.provider_transaction_id.clone()),
                requesting_organisation_transaction_reference: t.view.reference.clone(),
                credit_party: t.credit_party.clone(),
                debit_party: t.debit_party.clone(),
                rejection_reason: t.view.rejection_reason.clone().unwrap_or_default(),
                rejection_date: t.modified,
            })
        },
    )
}

async fn get_transaction(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(response) = authorise(&shared, &headers) {
        return *response;
    }
    let mut inner = shared.lock();
    inner.process_due(Instant::now());
    let Some(i) = inner.by_tx_ref.get(&id).copied() else {
        return not_found("transactionReference", &id);
    };
    let t = &inner.txs[i];
    Json(TransactionRecord {
        transaction_reference: t.view.provider_transaction_id.clone(),
        requesting_organisation_transaction_reference: t.view.reference.clone(),
        transaction_status: t.view.status.as_str().to_owned(),
        transaction_type: "disbursement".to_owned(),
        amount: t.amount_text.clone(),
        currency: t.view.currency.clone(),
        credit_party: t.credit_party.clone(),
        debit_party: t.debit_party.clone(),
        creation_date: Some(t.created),
        modification_date: Some(t.modified),
    })
    .into_response()
}

async fn heartbeat(State(shared): State<AppState>) -> Response {
    let status = shared.lock().heartbeat();
    Json(Heartbeat {
        service_status: status,
    })
    .into_response()
}

// ---------------------------------------------------------------------------------------
// Callbacks

/// Delivers batch callbacks one after another, in the order batches were processed, except
/// that an `out_of_order` one is held until the next callback has been delivered (or `hold`
/// has passed). Failures are logged at debug and not retried.
async fn deliver_callbacks(mut rx: mpsc::UnboundedReceiver<CallbackDelivery>, hold: Duration) {
    let client = match reqwest::Client::builder().timeout(CALLBACK_TIMEOUT).build() {
        Ok(client) => client,
        Err(err) => {
            tracing::warn!(%err, "cannot build the callback HTTP client; callbacks are off");
            return;
        }
    };
    let mut held: Option<(CallbackDelivery, Instant)> = None;
    loop {
        // Some(Some(next)), Some(None): the hold ran out, None: the channel is closed.
        let event = match &held {
            Some((_, until)) => tokio::select! {
                next = rx.recv() => next.map(Some),
                () = tokio::time::sleep_until(*until) => Some(None),
            },
            None => rx.recv().await.map(Some),
        };
        match event {
            None => {
                if let Some((late, _)) = held.take() {
                    send_callback(&client, &late).await;
                }
                return;
            }
            Some(None) => {
                if let Some((late, _)) = held.take() {
                    send_callback(&client, &late).await;
                }
            }
            Some(Some(next)) => {
                if let Some((late, _)) = held.take() {
                    send_callback(&client, &next).await;
                    send_callback(&client, &late).await;
                } else if next.out_of_order {
                    held = Some((next, Instant::now() + hold));
                } else {
                    send_callback(&client, &next).await;
                }
            }
        }
    }
}

/// `PUT`s one callback (`times` times): the batch as JSON, `X-Date` now and the client's
/// `X-CorrelationID`.
async fn send_callback(client: &reqwest::Client, delivery: &CallbackDelivery) {
    for _ in 0..delivery.times {
        let result = client
            .put(&delivery.url)
            .header("X-Date", Utc::now().to_rfc3339())
            .header("X-CorrelationID", delivery.correlation_id.to_string())
            .json(&delivery.body)
            .send()
            .await;
        match result {
            Ok(response) if response.status().is_success() => {}
            Ok(response) => tracing::debug!(
                url = %delivery.url,
                batch = %delivery.batch_id,
                status = %response.status(),
                "callback refused by the client"
            ),
            Err(err) => tracing::debug!(
                url = %delivery.url,
                batch = %delivery.batch_id,
                %err,
                "callback delivery failed"
            ),
        }
    }
}
