//! The GSMA Mobile Money API v1.2 client the sender uses: one method per call it makes
//! (`POST /batchtransactions`, `GET /responses/{clientCorrelationId}`, request states, batch,
//! paged completions and rejections, heartbeat), each answer classified so the sender can
//! decide what is safe.
//!
//! Nothing here retries or decides; [`crate::send`] does. The bearer token is only ever put in
//! the `Authorization` header: it is not in any error, log line or `Debug` output.

use std::time::Duration;

use cva_providers::gsma::{
    parse_error, BatchTransaction, BatchTransactionRequest, Completion, GsmaError, Heartbeat,
    Rejection, RequestState, ResponseObject, ServiceStatus, TransactionRecord,
};
use serde::de::DeserializeOwned;
use uuid::Uuid;

/// Items asked for per page of completions / rejections.
pub const PAGE: usize = 1000;

/// What went wrong on one call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// No answer: connection refused or reset, or the time limit passed. The request may or
    /// may not have reached the provider.
    #[error("no answer from the provider ({0})")]
    NoAnswer(String),
    /// An HTTP error status, with the GSMA error object when the body held one.
    #[error("the provider answered {status}{}", .error.as_ref().map(|e| format!(" {}/{}: {}", e.error_category, e.error_code, e.error_description.as_deref().unwrap_or(""))).unwrap_or_default())]
    Status {
        status: u16,
        error: Option<GsmaError>,
    },
    /// A success status whose body is not what the spec says.
    #[error("the provider's answer could not be read: {0}")]
    Malformed(String),
}

impl CallError {
    /// 5xx, 408, 429 or no answer: the provider may have done (or may yet do) the work; ask
    /// before anything else.
    pub fn is_uncertain(&self) -> bool {
        match self {
            CallError::NoAnswer(_) => true,
            // 408 and 429: not processed now, maybe later; treated like a 5xx.
            CallError::Status { status, .. } => *status >= 500 || matches!(status, 408 | 429),
            CallError::Malformed(_) => false,
        }
    }

    /// The GSMA error code, if any (`duplicateRequest`, `formatError`, …).
    pub fn code(&self) -> Option<&str> {
        match self {
            CallError::Status { error: Some(e), .. } => Some(e.error_code.as_str()),
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            CallError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A client of one provider's API.
#[derive(Clone)]
pub struct MmapiClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl std::fmt::Debug for MmapiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmapiClient")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl MmapiClient {
    /// `base` is the API root (paths are appended to it), `token` the bearer token, `timeout`
    /// the limit for each call.
    pub fn new(base: &str, token: Option<String>, timeout: Duration) -> Result<Self, CallError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| CallError::NoAnswer(e.to_string()))?;
        Ok(MmapiClient {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token,
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header(
                "X-Date",
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            )
            .header("Accept", "application/json");
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        r
    }

    async fn send<T: DeserializeOwned>(
        &self,
        r: reqwest::RequestBuilder,
    ) -> Result<(T, reqwest::header::HeaderMap), CallError> {
        // The error's text names the URL (our provider's base URL, no secret) and the cause.
        let resp = r
            .send()
            .await
            .map_err(|e| CallError::NoAnswer(without_url(&e)))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .bytes()
            .await
            .map_err(|e| CallError::NoAnswer(without_url(&e)))?;
        if !status.is_success() {
            return Err(CallError::Status {
                status: status.as_u16(),
                error: parse_error(&body),
            });
        }
        let value = serde_json::from_slice(&body)
            .map_err(|e| CallError::Malformed(format!("{e} (HTTP {status})")))?;
        Ok((value, headers))
    }

    /// `POST /batchtransactions` with `X-CorrelationID: correlation`.
    pub async fn post_batch(
        &self,
        correlation: Uuid,
        body: &BatchTransactionRequest,
        callback_url: Option<&str>,
    ) -> Result<RequestState, CallError> {
        let mut r = self
            .request(reqwest::Method::POST, "/batchtransactions")
            .header("X-CorrelationID", correlation.to_string())
            .header("Content-Type", "application/json");
        if let Some(url) = callback_url {
            r = r.header("X-Callback-URL", url);
        }
        let bytes = serde_json::to_vec(body).map_err(|e| CallError::Malformed(e.to_string()))?;
        Ok(self.send(r.body(bytes)).await?.0)
    }

    /// `GET /responses/{clientCorrelationId}`: the provider's batch id for a request we sent,
    /// or `None` when the provider says it has no such request (404).
    pub async fn batch_for(&self, correlation: Uuid) -> Result<Option<String>, CallError> {
        let r = self.request(reqwest::Method::GET, &format!("/responses/{correlation}"));
        match self.send::<ResponseObject>(r).await {
            Ok((o, _)) => {
                let id = o
                    .link
                    .trim_end_matches('/')
                    .rsplit('/')
                    .next()
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| CallError::Malformed(format!("link `{}`", o.link)))?;
                Ok(Some(id.to_owned()))
            }
            Err(CallError::Status { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /requeststates/{serverCorrelationId}`.
    pub async fn request_state(&self, server: &str) -> Result<RequestState, CallError> {
        let r = self.request(reqwest::Method::GET, &format!("/requeststates/{server}"));
        Ok(self.send(r).await?.0)
    }

    /// `GET /batchtransactions/{batchId}`.
    pub async fn batch(&self, id: &str) -> Result<BatchTransaction, CallError> {
        let r = self.request(reqwest::Method::GET, &format!("/batchtransactions/{id}"));
        Ok(self.send(r).await?.0)
    }

    async fn paged<T: DeserializeOwned>(&self, path: &str) -> Result<Vec<T>, CallError> {
        let mut all = Vec::new();
        loop {
            let r = self
                .request(reqwest::Method::GET, path)
                .query(&[("offset", all.len()), ("limit", PAGE)]);
            let (page, headers): (Vec<T>, _) = self.send(r).await?;
            let available = headers
                .get("x-records-available-count")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<usize>().ok());
            let n = page.len();
            all.extend(page);
            let done = match available {
                Some(a) => all.len() >= a || n == 0,
                None => n < PAGE,
            };
            if done {
                return Ok(all);
            }
        }
    }

    /// Every completion of a batch (all pages).
    pub async fn completions(&self, id: &str) -> Result<Vec<Completion>, CallError> {
        self.paged(&format!("/batchtransactions/{id}/completions"))
            .await
    }

    /// Every rejection of a batch (all pages).
    pub async fn rejections(&self, id: &str) -> Result<Vec<Rejection>, CallError> {
        self.paged(&format!("/batchtransactions/{id}/rejections"))
            .await
    }

    /// `GET /transactions/{transactionReference}`: one transaction's current state (a payment
    /// the provider completed may later show `reversed`).
    pub async fn transaction(&self, reference: &str) -> Result<TransactionRecord, CallError> {
        let r = self.request(reqwest::Method::GET, &format!("/transactions/{reference}"));
        Ok(self.send(r).await?.0)
    }

    /// `GET /heartbeat`.
    pub async fn heartbeat(&self) -> Result<ServiceStatus, CallError> {
        let r = self.request(reqwest::Method::GET, "/heartbeat");
        Ok(self.send::<Heartbeat>(r).await?.0.service_status)
    }
}

/// reqwest's error text without the URL (which could carry a query); the kind is enough.
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the answer was cut off"
    } else {
        "transport error"
    };
    kind.to_owned()
}
