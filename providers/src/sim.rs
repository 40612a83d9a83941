//! The GSMA Mobile Money API v1.2 disbursement simulator: an axum HTTP server with an in-memory, seeded-deterministic provider (float, batches, transactions, statement) and injected faults.
//!
//! Start it with [`Simulator::spawn`]; read back what it paid with [`RunningSim::state`] and
//! [`RunningSim::statement_csv`].
//!
//! # Endpoints (JSON; types in [`crate::gsma`])
//!
//! | method and path | answer |
//! | --- | --- |
//! | `POST /batchtransactions` | 202 [`RequestState`](crate::gsma::RequestState) (`pending`, `polling`, `objectReference` = batch id) |
//! | `GET /requeststates/{serverCorrelationId}` | `pending` until the batch is processed, then `completed` |
//! | `GET /batchtransactions/{batchId}` | [`BatchTransaction`](crate::gsma::BatchTransaction) |
//! | `GET /batchtransactions/{batchId}/completions?offset&limit` | [`Completion`](crate::gsma::Completion) list, `X-Records-Available-Count` / `X-Records-Returned-Count` headers |
//! | `GET /batchtransactions/{batchId}/rejections?offset&limit` | [`Rejection`](crate::gsma::Rejection) list, same headers |
//! | `GET /transactions/{transactionReference}` | [`TransactionRecord`](crate::gsma::TransactionRecord) (shows `reversed`) |
//! | `GET /responses/{clientCorrelationId}` | [`ResponseObject`](crate::gsma::ResponseObject) `{"link": "/batchtransactions/{batchId}"}` |
//! | `GET /heartbeat` | `{"serviceStatus": "available" \| "degraded" \| "unavailable"}` |
//!
//! Every answer carries an `X-Date` header. Errors are GSMA error objects
//! ([`GsmaError`]); `limit` defaults to 50, `offset` to 0.
//!
//! Requests (all but `/heartbeat`) must carry `Authorization: Bearer <token>` (or
//! `X-API-Key: <token>`) when [`SimConfig::api_key`] is set, else 401 `authorisation` /
//! `clientAuthorisationError`. `POST /batchtransactions` needs `X-CorrelationID` as a UUID:
//! missing → 400 `validation` / `mandatoryValueNotSupplied`, not a UUID → 400 `validation` /
//! `formatError`, both with `errorParameters: [{"key": "X-CorrelationID", ...}]`. A correlation
//! id already accepted → 400 `businessRule` / `duplicateRequest` (the spec's category enum has
//! no `conflict`), and the batch is not processed again. `X-Date` is accepted, not checked.
//!
//! # Processing
//!
//! A batch is processed [`SimConfig::processing_delay`] after it was accepted, by a
//! background ticker or by the next request that comes after that time, whichever first.
//! Batches are processed in the order they were accepted, transactions in request order, so
//! the float is consumed deterministically. Each transaction is checked when parsed (type
//! `disbursement`, currency = [`SimConfig::currency`], amount a positive decimal with at most
//! 4 places, an `msisdn` credit party of 6–15 digits with optional `+`); failures are
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
//! # Faults
//!
//! See [`Faults`]. Per accepted `POST /batchtransactions` the simulator draws, in this order,
//! `status_503`, `lost_response`, `timeout_after_commit`, `stuck_pending` from a
//! `ChaCha8Rng` seeded with [`SimConfig::seed`]; `reverse_later` is drawn per completed
//! transaction from a second seeded stream. Same seed + same sequence of requests ⇒ same ids,
//! same outcomes (requests must be sent one after another: concurrent POSTs draw in arrival
//! order). `status_503` applies to `POST /batchtransactions` only. There are no callbacks
//! (notification is polling only), so `duplicate_callback` is accepted and ignored; `pollLimit`
//! is advertised, not enforced. `/heartbeat` says `unavailable` when `status_503` is 1,
//! `degraded` when any of `status_503`, `lost_response`, `timeout_after_commit`,
//! `stuck_pending` is above 0, else `available`.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
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
    /// [`RunningSim::shutdown`] or drop.
    pub async fn spawn(config: SimConfig, addr: SocketAddr) -> Result<RunningSim, std::io::Error> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let shared = Arc::new(Shared::new(config));
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

    /// Stops serving (graceful) and the background ticker.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(ticker) = self.ticker.take() {
            ticker.abort();
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
}

impl Shared {
    fn new(config: SimConfig) -> Self {
        let request_rng = ChaCha8Rng::seed_from_u64(config.seed);
        let mut outcome_rng = ChaCha8Rng::seed_from_u64(config.seed);
        outcome_rng.set_stream(1);
        Self {
            inner: Mutex::new(Inner {
                float: config.float_balance,
                config,
                request_rng,
                outcome_rng,
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

fn parse_amount(text: &str) -> Option<Decimal> {
    let ok_chars = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && text.bytes().next().is_some_and(|b| b.is_ascii_digit());
    if !ok_chars {
        return None;
    }
    let amount = Decimal::from_str(text).ok()?;
    (amount > Decimal::ZERO && amount.scale() <= 4).then_some(amount)
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

    fn random_uuid(&mut self) -> Uuid {
        uuid::Builder::from_random_bytes(self.request_rng.gen()).into_uuid()
    }

    fn accept(
        &mut self,
        client: Uuid,
        request: BatchTransactionRequest,
        stuck: bool,
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
            let amount = parse_amount(&t.amount);
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
                    "formatError: amount `{}` is not a positive decimal with at most 4 places",
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
        let suffix = msisdn.get(msisdn.len().saturating_sub(4)..).unwrap_or("");
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

    fn request_state(&self, b: usize) -> RequestState {
        let batch = &self.batches[b];
        RequestState {
            server_correlation_id: batch.server_correlation_id.to_string(),
            status: if batch.processed {
                RequestStatus::Completed
            } else {
                RequestStatus::Pending
            },
            notification_method: NotificationMethod::Polling,
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
        .route("/batchtransactions", post(post_batch))
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

async fn post_batch(State(shared): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
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
                .with_parameter("X-CorrelationID", ""),
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
    let request: BatchTransactionRequest = match serde_json::from_slice(&body) {
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
        let b = inner.accept(client, request, decisions.stuck_pending, now);
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

fn page<T: Serialize>(all: Vec<T>, offset: usize, limit: usize) -> Response {
    let available = all.len();
    let items: Vec<T> = all.into_iter().skip(offset).take(limit).collect();
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
    if let Err(response) = authorise(&shared, &headers) {
        return *response;
    }
    let (offset, limit) = match paging.parse() {
        Ok(p) => p,
        Err(response) => return *response,
    };
    let mut inner = shared.lock();
    inner.process_due(Instant::now());
    let Some(b) = inner.by_batch_id.get(&id).copied() else {
        return not_found("batchId", &id);
    };
    let all: Vec<Completion> = inner.batches[b]
        .txs
        .iter()
        .map(|&i| &inner.txs[i])
        .filter_map(|t| {
            let completed_at = t.view.completed_at?;
            Some(Completion {
                transaction_reference: t.view.provider_transaction_id.clone(),
                requesting_organisation_transaction_reference: t.view.reference.clone(),
                credit_party: t.credit_party.clone(),
                debit_party: t.debit_party.clone(),
                completion_date: completed_at,
                link: format!("/transactions/{}", t.view.provider_transaction_id),
            })
        })
        .collect();
    page(all, offset, limit)
}

async fn get_rejections(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(paging): Query<Paging>,
) -> Response {
    if let Err(response) = authorise(&shared, &headers) {
        return *response;
    }
    let (offset, limit) = match paging.parse() {
        Ok(p) => p,
        Err(response) => return *response,
    };
    let mut inner = shared.lock();
    inner.process_due(Instant::now());
    let Some(b) = inner.by_batch_id.get(&id).copied() else {
        return not_found("batchId", &id);
    };
    let all: Vec<Rejection> = inner.batches[b]
        .txs
        .iter()
        .map(|&i| &inner.txs[i])
        .filter(|t| t.view.status == TxStatus::Failed)
        .map(|t| Rejection {
            transaction_reference: Some(t.view.provider_transaction_id.clone()),
            requesting_organisation_transaction_reference: t.view.reference.clone(),
            credit_party: t.credit_party.clone(),
            debit_party: t.debit_party.clone(),
            rejection_reason: t.view.rejection_reason.clone().unwrap_or_default(),
            rejection_date: t.modified,
        })
        .collect();
    page(all, offset, limit)
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
