//! One error type for the whole API. Its `IntoResponse` logs the detail that must stay inside
//! (database errors) and returns an RFC 9457 `application/problem+json` body with a stable
//! `type`, a human `detail` that names the field, and the request id — never SQL, stack traces
//! or secrets.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cva_access::AccessError;
use cva_ledger::LedgerError;
use cva_registry::RegistryError;
use serde::Serialize;

#[derive(Debug)]
pub enum ApiError {
    /// 400: the request cannot be understood (syntax, types, unknown fields, bad paging).
    BadRequest(String),
    /// 422: understood, but refused by a rule (validation, balance rule, maker-checker).
    Unprocessable(&'static str, String),
    /// 401
    Unauthenticated(&'static str),
    /// 403
    Forbidden(String),
    /// 403 with its own problem type (e.g. `same-person`: maker-checker).
    ForbiddenAs(&'static str, String),
    /// 404
    NotFound(String),
    /// 409
    Conflict(&'static str, String),
    /// 422 for a file refused row by row: the detail, and the first rows' errors.
    BadRows(String, Vec<RowProblem>),
    /// 413
    TooLarge,
    /// 429
    Throttled(u64),
    /// 502: a payment provider could not be reached or refused the request.
    BadGateway(String),
    /// 503 with its own problem type: the server lacks what this needs (e.g. payments
    /// configuration).
    Unavailable(&'static str, String),
    /// 500: the detail is logged, never sent.
    Internal(String),
}

/// RFC 9457 problem details, as every error is sent.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Stable URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    /// What went wrong, naming the field.
    pub detail: String,
    /// For a refused file: each bad field of each bad row (only then present).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<RowProblem>>,
}

/// One rule broken by one field of one row of an uploaded file. Never contains the value.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RowProblem {
    /// Spreadsheet row number: the header is row 1.
    pub row: usize,
    /// The header name as in the file; empty for an error about the whole row.
    pub column: String,
    pub reason: String,
}

/// At most this many row errors are listed in a problem body (the detail gives the total).
pub const MAX_ROW_PROBLEMS: usize = 1000;

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, &'static str, String) {
        match self {
            ApiError::BadRequest(d) => (
                StatusCode::BAD_REQUEST,
                "bad-request",
                "Bad request",
                d.clone(),
            ),
            ApiError::Unprocessable(t, d) => {
                (StatusCode::UNPROCESSABLE_ENTITY, t, "Refused", d.clone())
            }
            ApiError::Unauthenticated(d) => (
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "Unauthenticated",
                (*d).to_owned(),
            ),
            ApiError::Forbidden(d) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden", d.clone()),
            ApiError::ForbiddenAs(t, d) => (StatusCode::FORBIDDEN, t, "Forbidden", d.clone()),
            ApiError::NotFound(d) => (StatusCode::NOT_FOUND, "not-found", "Not found", d.clone()),
            ApiError::Conflict(t, d) => (StatusCode::CONFLICT, t, "Conflict", d.clone()),
            ApiError::BadRows(d, _) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "bad-rows",
                "Refused",
                d.clone(),
            ),
            ApiError::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
                "the request body is larger than the limit".into(),
            ),
            ApiError::Throttled(s) => (
                StatusCode::TOO_MANY_REQUESTS,
                "throttled",
                "Too many requests",
                format!("too many failed logins; retry in {s} s"),
            ),
            ApiError::BadGateway(d) => (
                StatusCode::BAD_GATEWAY,
                "provider",
                "Payment provider error",
                d.clone(),
            ),
            ApiError::Unavailable(t, d) => (
                StatusCode::SERVICE_UNAVAILABLE,
                t,
                "Service unavailable",
                d.clone(),
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
                "the server could not complete the request; it has been logged".into(),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!(%detail, "internal error");
        }
        let (status, kind, title, detail) = self.parts();
        let errors = match &self {
            ApiError::BadRows(_, rows) => Some(rows.clone()),
            _ => None,
        };
        let body = Problem {
            kind: format!("https://cva.example.org/problems/{kind}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail,
            errors,
        };
        let mut resp = (status, axum::Json(body)).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let ApiError::Throttled(s) = self {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::BytesRejection(_) => ApiError::TooLarge,
            JsonRejection::MissingJsonContentType(_) => ApiError::BadRequest(
                "send the body as JSON with `Content-Type: application/json`".into(),
            ),
            // serde's message names the field and position; it holds no secret.
            other => ApiError::BadRequest(other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::BadRequest(r.body_text())
    }
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> Self {
        use LedgerError as L;
        match e {
            L::Invalid(_) | L::Account(_) => {
                ApiError::Unprocessable("invalid-entry", e.to_string())
            }
            L::CurrencyMismatch { .. } => {
                ApiError::Unprocessable("currency-mismatch", e.to_string())
            }
            L::InsufficientBalance { .. } | L::Overflow { .. } => {
                ApiError::Unprocessable("balance-rule", e.to_string())
            }
            L::IdempotencyConflict { .. } => {
                ApiError::Conflict("idempotency-conflict", e.to_string())
            }
            L::AlreadyReversed { .. } | L::ReversalOfReversal(_) => {
                ApiError::Conflict("already-reversed", e.to_string())
            }
            L::AccountExists { .. } => ApiError::Conflict("account-exists", e.to_string()),
            L::UnknownAccount(_) | L::EntryNotFound(_) => ApiError::NotFound(e.to_string()),
            L::OutOfScope(_) => ApiError::Forbidden(e.to_string()),
            L::BatchRejected { .. } => ApiError::Unprocessable("batch-refused", e.to_string()),
            L::Refused(_) => ApiError::Unprocessable("refused", e.to_string()),
            other => ApiError::Internal(format!("{other:?}")),
        }
    }
}

impl From<AccessError> for ApiError {
    fn from(e: AccessError) -> Self {
        use AccessError as A;
        match e {
            A::InvalidUsername(_) | A::WeakPassword(_) | A::UnknownRole(_) | A::NoRole => {
                ApiError::Unprocessable("invalid-user", e.to_string())
            }
            A::UserExists => ApiError::Conflict("user-exists", e.to_string()),
            A::UserNotFound(_) => ApiError::NotFound(e.to_string()),
            A::InvalidCredentials => {
                ApiError::Unauthenticated("unknown username or wrong password")
            }
            A::SessionEnded | A::InvalidToken => ApiError::Unauthenticated(
                "the access token is invalid, expired or revoked; log in again",
            ),
            A::Throttled { retry_after_secs } => ApiError::Throttled(retry_after_secs),
            A::SamePerson(d) => ApiError::Forbidden(d),
            A::Ledger(l) => l.into(),
            other => ApiError::Internal(format!("{other:?}")),
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        use RegistryError as R;
        match e {
            R::Invalid { .. } => ApiError::Unprocessable("invalid-field", e.to_string()),
            R::NotFound(d) => ApiError::NotFound(d),
            R::Conflict(d) => ApiError::Conflict("conflict", d),
            R::SamePerson(d) => ApiError::ForbiddenAs("same-person", d),
            R::NotAllowed(d) => ApiError::Forbidden(d),
            R::BudgetExceeded { .. } => ApiError::Unprocessable("budget-exceeded", e.to_string()),
            R::BadRows(rows) => {
                let total = rows.len();
                let mut detail = format!("the file has {total} bad row(s); nothing was imported");
                if total > MAX_ROW_PROBLEMS {
                    detail.push_str(&format!(
                        " ({total} errors; the first {MAX_ROW_PROBLEMS} are listed)"
                    ));
                }
                let listed = rows
                    .into_iter()
                    .take(MAX_ROW_PROBLEMS)
                    .map(|r| RowProblem {
                        row: r.row,
                        column: r.column,
                        reason: r.reason,
                    })
                    .collect();
                ApiError::BadRows(detail, listed)
            }
            R::Ledger(l) => l.into(),
            R::Provider(d) => ApiError::BadGateway(d),
            // Storage and key failures: logged (their messages name no personal data), never
            // sent.
            R::Database(d) => ApiError::Internal(format!("registry storage: {d}")),
            other @ (R::Pii | R::Corrupt(_) | R::NoBackend) => {
                ApiError::Internal(format!("registry: {other}"))
            }
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
