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
use serde::{Deserialize, Serialize};

use super::auth::{AppState, Caller, POSTERS, READERS};
use super::problem::{ApiError, ApiResult};

type Body<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;
type QueryOf<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

pub async fn accounts(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<Account>>> {
    caller.require(READERS)?;
    Ok(Json(state.ledger.accounts().await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AsOf {
    pub as_of: Option<String>,
}

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
    Ok(Json(state.ledger.balance(&code, as_of).await?))
}

#[derive(Debug, Serialize)]
pub struct Posted {
    pub id: EntryId,
    /// True when the same idempotency key and content were posted before.
    pub replayed: bool,
}

pub async fn post_entry(
    State(state): State<AppState>,
    caller: Caller,
    body: Body<EntryInput>,
) -> ApiResult<(StatusCode, Json<Posted>)> {
    caller.require(POSTERS)?;
    let Json(input) = body?;
    let entry = NewEntry::from_input(input).map_err(cva_ledger::LedgerError::from)?;
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

pub async fn entry(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<PostedEntry>> {
    caller.require(READERS)?;
    let id = EntryId::parse(&id).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(Json(state.ledger.entry(id).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reverse {
    pub reason: String,
}

pub async fn reverse(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body<Reverse>,
) -> ApiResult<(StatusCode, Json<Posted>)> {
    caller.require(POSTERS)?;
    let id = EntryId::parse(&id).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let Json(b) = body?;
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

pub async fn trial_balance(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<impl IntoResponse> {
    caller.require(READERS)?;
    let tb = state.ledger.trial_balance().await?;
    let mut out = Vec::new();
    crate::commands::print_trial_balance(&tb, crate::cli::Format::Json, &mut out)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], out))
}

pub async fn journal(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<impl IntoResponse> {
    caller.require(READERS)?;
    let mut out = Vec::new();
    cva_ledger::export::write_ledger_journal(&state.ledger, &mut out).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], out))
}
