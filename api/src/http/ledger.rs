//! The ledger over HTTP: accounts, balances, trial balance and journal for every role that
//! reads; posting and reversing entries for admins and finance officers (MISSION.md). Posts go
//! through the group committer, with their audit event in the same transaction.

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use cva_ledger::account::{Account, AccountCode};
use cva_ledger::entry::{EntryId, EntryInput, NewEntry, PostedEntry};
use cva_ledger::posting::Posting;
use cva_ledger::store::Balance;
use cva_ledger::Ledger;
use serde::{Deserialize, Serialize};

use super::auth::{AppState, Caller, POSTERS, READERS};
use super::problem::{ApiError, ApiResult, Problem};
use crate::commands::TrialBalanceReport;

type Body<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;
type QueryOf<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

#[utoipa::path(get, path = "/v1/accounts", tag = "ledger",
    responses((status = 200, body = Vec<Account>), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json")))]
pub async fn accounts(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<Account>>> {
    caller.require(READERS)?;
    Ok(Json(state.ledger.accounts_in(&caller.scope()).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AsOf {
    /// RFC 3339 time, or a date meaning the end of that day (UTC).
    pub as_of: Option<String>,
}

#[utoipa::path(get, path = "/v1/accounts/{code}/balance", tag = "ledger", params(("code" = String, Path, description = "account code, e.g. assets:bank"), AsOf),
    responses((status = 200, body = Balance), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn balance(
    State(state): State<AppState>,
    caller: Caller,
    Path(code): Path<String>,
    q: QueryOf<AsOf>,
) -> ApiResult<Json<Balance>> {
    caller.require(READERS)?;
    let Query(q) = q?;
    let code =
        AccountCode::parse(&code).map_err(|e| ApiError::BadRequest(format!("account: {e}")))?;
    let as_of = match q.as_of.as_deref() {
        None => None,
        Some(t) => Some(
            crate::commands::parse_time(t)
                .map_err(|e| ApiError::BadRequest(format!("as_of: {e}")))?,
        ),
    };
    Ok(Json(
        state
            .ledger
            .balance_in(&caller.scope(), &code, as_of)
            .await?,
    ))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Posted {
    #[schema(value_type = String, format = Uuid)]
    pub id: EntryId,
    /// True when the same idempotency key and content were posted before.
    pub replayed: bool,
}

#[utoipa::path(post, path = "/v1/entries", tag = "ledger", request_body = EntryInput,
    responses((status = 201, body = Posted), (status = 200, description = "same key and content: the original entry", body = Posted), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn post_entry(
    State(state): State<AppState>,
    caller: Caller,
    body: Body<EntryInput>,
) -> ApiResult<(StatusCode, Json<Posted>)> {
    caller.require(POSTERS)?;
    let Json(input) = body?;
    let entry = NewEntry::from_input(input).map_err(cva_ledger::LedgerError::from)?;
    Ledger::check_scope(&caller.scope(), &entry)?;
    let posting = state.committer.post_audited(entry, caller.audit()).await?;
    Ok(match posting {
        Posting::Posted(id) => (
            StatusCode::CREATED,
            Json(Posted {
                id,
                replayed: false,
            }),
        ),
        Posting::Replayed(id) => (StatusCode::OK, Json(Posted { id, replayed: true })),
    })
}

#[utoipa::path(get, path = "/v1/entries/{id}", tag = "ledger", params(("id" = String, Path, description = "entry id (UUID)")),
    responses((status = 200, body = PostedEntry), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn entry(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<PostedEntry>> {
    caller.require(READERS)?;
    let id = EntryId::parse(&id).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(Json(state.ledger.entry_in(&caller.scope(), id).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reverse {
    pub reason: String,
}

#[utoipa::path(post, path = "/v1/entries/{id}/reverse", tag = "ledger", params(("id" = String, Path, description = "entry id (UUID)")), request_body = Reverse,
    responses((status = 201, body = Posted), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn reverse(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body<Reverse>,
) -> ApiResult<(StatusCode, Json<Posted>)> {
    caller.require(POSTERS)?;
    let id = EntryId::parse(&id).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let Json(b) = body?;
    state.ledger.entry_in(&caller.scope(), id).await?;
    let posting = state
        .ledger
        .reverse_audited(id, &b.reason, &caller.audit())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(Posted {
            id: posting.id(),
            replayed: false,
        }),
    ))
}

#[utoipa::path(get, path = "/v1/trial-balance", tag = "ledger",
    responses((status = 200, body = TrialBalanceReport), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json")))]
pub async fn trial_balance(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<impl IntoResponse> {
    caller.require(READERS)?;
    caller.require_unrestricted()?;
    let tb = state.ledger.trial_balance().await?;
    let mut out = Vec::new();
    crate::commands::print_trial_balance(&tb, crate::cli::Format::Json, &mut out)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], out))
}

#[utoipa::path(get, path = "/v1/journal", tag = "ledger",
    responses((status = 200, description = "the journal in hledger syntax", content_type = "text/plain", body = String), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json")))]
pub async fn journal(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<impl IntoResponse> {
    caller.require(READERS)?;
    caller.require_unrestricted()?;
    let mut out = Vec::new();
    cva_ledger::export::write_ledger_journal(&state.ledger, &mut out).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], out))
}
