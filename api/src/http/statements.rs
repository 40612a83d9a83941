//! Provider statements and their reconciliation over HTTP: upload a statement (CSV), read it,
//! reconcile it against the payments, and read a run — its summary, float reconciliation and
//! items.
//!
//! Roles (the matrix of [`crate::payments`]): finance officers upload and reconcile; every
//! role reads. The upload is checked row by row before anything is stored (422 with each bad
//! row's row, column and reason — never a cell's value); a file already imported is 409.
//! Statement uploads may be up to [`STATEMENT_LIMIT`] bytes (the other routes keep the
//! server's 1 MiB limit). Phone numbers in a statement are replaced by their keyed index at
//! import and never stored or echoed.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use cva_ledger::audit::AuditContext;
use cva_reconciliation::run::{FloatLine, StoredItem};
use cva_reconciliation::{
    Category, ColumnMapping, ImportError, ImportedStatement, Reconciler, RunError, RunOptions,
    RunView,
};
use serde::{Deserialize, Serialize};

use super::auth::{AppState, Caller};
use super::problem::{ApiError, ApiResult, Problem, RowProblem, MAX_ROW_PROBLEMS};
use super::registry::{bytes_error, created, id, path, require_content_type, PathOf, QueryOf};
use crate::payments::Action;

/// Largest statement upload: 128 MiB (a million lines is about 110 MB).
pub const STATEMENT_LIMIT: usize = 128 * 1024 * 1024;

fn permit(caller: &Caller, action: Action) -> ApiResult<AuditContext> {
    caller.require(action.roles())?;
    action
        .context(&caller.user, caller.request_id.clone())
        .map_err(ApiError::Forbidden)
}

fn reconciler(state: &AppState) -> ApiResult<Reconciler> {
    state
        .payments
        .batches()
        .map(|b| Reconciler::new(b.clone()))
        .map_err(|m| ApiError::Unavailable("payments-not-configured", m.to_owned()))
}

impl From<ImportError> for ApiError {
    fn from(e: ImportError) -> Self {
        match e {
            ImportError::BadRows(rows) => {
                let total = rows.len();
                let detail = format!("the statement has {total} bad row(s); nothing was imported");
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
            ImportError::AlreadyImported { .. } => {
                ApiError::Conflict("already-imported", e.to_string())
            }
            ImportError::Invalid { .. } => ApiError::Unprocessable("invalid-field", e.to_string()),
            ImportError::NotFound { .. } => ApiError::NotFound(e.to_string()),
            ImportError::Audit(l) => l.into(),
            ImportError::Corrupt(_) | ImportError::Database(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<RunError> for ApiError {
    fn from(e: RunError) -> Self {
        match e {
            RunError::Invalid { .. } => ApiError::Unprocessable("invalid-field", e.to_string()),
            RunError::NotFound(d) => ApiError::NotFound(d),
            RunError::Concurrent(_) => ApiError::Conflict("concurrent-run", e.to_string()),
            RunError::Statement(s) => s.into(),
            RunError::Payments(p) => p.into(),
            RunError::Ledger(l) => l.into(),
            RunError::Corrupt(_) | RunError::Database(_) => ApiError::Internal(e.to_string()),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UploadParams {
    /// A configured provider, e.g. `orange-money`.
    pub provider: String,
    /// `simulator` or `generic` (default `generic`; see the README for both layouts).
    pub mapping: Option<String>,
}

/// Imports a provider statement (CSV, UTF-8 with or without BOM, `,` or `;`). Every row is
/// checked first; a bad file is refused whole (422, each bad row listed) and a file already
/// imported (same SHA-256) is 409. Role: `finance_officer`.
#[utoipa::path(post, path = "/v1/statements", tag = "reconciliation", params(UploadParams),
    request_body(content = String, content_type = "text/csv", description = "the provider's statement"),
    responses((status = 201, description = "the statement as stored", body = ImportedStatementDoc), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it (finance_officer only)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "this file was already imported", body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json"), (status = 422, description = "bad rows (listed), an unknown provider or mapping; nothing was imported", body = Problem, content_type = "application/problem+json"), (status = 503, description = "no payments configuration on this server", body = Problem, content_type = "application/problem+json")))]
pub async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    params: QueryOf<UploadParams>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<ImportedStatement>)> {
    let ctx = permit(&caller, Action::ImportStatement)?;
    let Query(params) = params?;
    let batches = state
        .payments
        .batches()
        .map_err(|m| ApiError::Unavailable("payments-not-configured", m.to_owned()))?;
    let provider = batches.config().provider(&params.provider).ok_or_else(|| {
        ApiError::Unprocessable(
            "invalid-field",
            format!("provider: `{}` is not configured", params.provider),
        )
    })?;
    let mapping = match params.mapping.as_deref().unwrap_or("generic") {
        "generic" => ColumnMapping::generic(),
        "simulator" => ColumnMapping::simulator(),
        _ => {
            return Err(ApiError::Unprocessable(
                "invalid-field",
                "mapping: must be `generic` or `simulator`".into(),
            ))
        }
    };
    require_content_type(&headers, "text/csv")?;
    let bytes = body.map_err(|e| bytes_error(e.status()))?;
    let registry = batches.registry();
    let index = |m: &str| registry.msisdn_index(m);
    let st = cva_reconciliation::Statements::new(registry.ledger().clone())
        .import_indexed(
            &provider.name,
            &bytes,
            &mapping,
            provider.currency,
            &index,
            &ctx,
        )
        .await?;
    Ok(created(st))
}

/// A statement as imported (for the OpenAPI document).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ImportedStatementDoc {
    pub id: i64,
    pub provider: String,
    /// SHA-256 of the file, lower-case hex.
    pub sha256: String,
    pub mapping: String,
    pub currency: String,
    pub lines: u64,
    /// Minor units.
    pub opening_balance: Option<i64>,
    pub closing_balance: Option<i64>,
    pub period_start: Option<String>,
    pub period_end: Option<String>,
    pub imported_by: String,
    pub imported_at: String,
}

/// A statement and its reconciliation runs.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatementDetail {
    #[schema(value_type = ImportedStatementDoc)]
    pub statement: ImportedStatement,
    pub runs: Vec<RunView>,
}

/// A statement with its reconciliation runs, first to last. Every role.
#[utoipa::path(get, path = "/v1/statements/{id}", tag = "reconciliation", params(("id" = i64, Path, description = "statement id")),
    responses((status = 200, body = StatementDetail), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
pub async fn get_statement(
    State(state): State<AppState>,
    caller: Caller,
    raw: PathOf<String>,
) -> ApiResult<Json<StatementDetail>> {
    permit(&caller, Action::Read)?;
    let r = reconciler(&state)?;
    let id = id("statement", &path(raw)?)?;
    let statement = r.statements().statement(id).await?;
    let runs = r.runs(id).await?;
    Ok(Json(StatementDetail { statement, runs }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReconcileRequest {
    /// The fallback rule's time window in hours (0 to 744; default 72).
    pub window_hours: Option<i64>,
}

/// Reconciles the statement against the payments: matches, posts what the statement settles
/// (unknown lines it shows paid or failed, reversals), reconciles the float and opens the
/// exceptions (see the README). Safe to repeat: nothing is posted twice and an exception
/// found again is the same one. Role: `finance_officer`.
#[utoipa::path(post, path = "/v1/statements/{id}/reconcile", tag = "reconciliation", params(("id" = i64, Path, description = "statement id")),
    request_body(content = Option<ReconcileRequest>, content_type = "application/json"),
    responses((status = 201, description = "the run", body = RunView), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it (finance_officer only)", body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, description = "another run of this statement committed first", body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
pub async fn reconcile(
    State(state): State<AppState>,
    caller: Caller,
    raw: PathOf<String>,
    body: super::registry::OptionalBody<ReconcileRequest>,
) -> ApiResult<(StatusCode, Json<RunView>)> {
    let ctx = permit(&caller, Action::Reconcile)?;
    let r = reconciler(&state)?;
    let id = id("statement", &path(raw)?)?;
    let req = super::registry::optional_json(body)?;
    let hours = req.and_then(|r| r.window_hours).unwrap_or(72);
    if !(0..=744).contains(&hours) {
        return Err(ApiError::Unprocessable(
            "invalid-field",
            "window_hours: must be 0 to 744".into(),
        ));
    }
    let run = r
        .run(
            id,
            RunOptions {
                window: chrono::Duration::hours(hours),
            },
            &ctx,
        )
        .await?;
    Ok(created(run))
}

/// A run with its float reconciliation's differences that are not items.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunDetail {
    pub run: RunView,
    pub float_lines: Vec<FloatLine>,
}

/// A reconciliation run: summary per category, what it posted, the float reconciliation
/// (with every difference that is not an item). Every role.
#[utoipa::path(get, path = "/v1/reconciliations/{id}", tag = "reconciliation", params(("id" = i64, Path, description = "run id")),
    responses((status = 200, body = RunDetail), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
pub async fn get_run(
    State(state): State<AppState>,
    caller: Caller,
    raw: PathOf<String>,
) -> ApiResult<Json<RunDetail>> {
    permit(&caller, Action::Read)?;
    let r = reconciler(&state)?;
    let id = id("reconciliation", &path(raw)?)?;
    let run = r.get(id).await?;
    let float_lines = r.float_lines(id).await?;
    Ok(Json(RunDetail { run, float_lines }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ItemParams {
    /// Only this category (matched, amount_mismatch, fee_mismatch, status_mismatch,
    /// missing_from_statement, unexpected_in_statement, duplicate_in_statement,
    /// reversed_by_provider).
    pub category: Option<String>,
    /// Items to skip.
    #[param(minimum = 0)]
    pub offset: Option<u64>,
    /// 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// A page of a run's items: the item rows in the order matching produced them, then the
/// plain matches (by transaction id, nothing posted, no float effect; stored packed, no `id`).
/// Every role.
#[utoipa::path(get, path = "/v1/reconciliations/{id}/items", tag = "reconciliation", params(("id" = i64, Path, description = "run id"), ItemParams),
    responses((status = 200, body = Vec<StoredItem>), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
pub async fn items(
    State(state): State<AppState>,
    caller: Caller,
    raw: PathOf<String>,
    params: QueryOf<ItemParams>,
) -> ApiResult<Json<Vec<StoredItem>>> {
    permit(&caller, Action::Read)?;
    let r = reconciler(&state)?;
    let id = id("reconciliation", &path(raw)?)?;
    let Query(params) = params?;
    let category = match params.category.as_deref() {
        None => None,
        Some(c) => Some(
            Category::ALL
                .into_iter()
                .find(|k| k.as_str() == c)
                .ok_or_else(|| {
                    ApiError::Unprocessable("invalid-field", "category: unknown category".into())
                })?,
        ),
    };
    let items = r
        .items(
            id,
            category,
            params.offset.unwrap_or(0),
            params.limit.unwrap_or(100),
        )
        .await?;
    Ok(Json(items))
}
