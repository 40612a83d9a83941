//! `GET /v1/audit`: the audit trail for auditors and admins, with filters and keyset paging
//! (`after_seq` from the last event of the previous page).

use axum::extract::{Query, State};
use axum::Json;
use chrono::{DateTime, Utc};
use cva_access::Role;
use cva_ledger::audit::{AuditEvent, AuditQuery};
use serde::{Deserialize, Serialize};

use super::auth::{AppState, Caller};
use super::problem::{ApiError, ApiResult, Problem};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Params {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub object_type: Option<String>,
    pub object_id: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub after_seq: Option<i64>,
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page {
    pub events: Vec<AuditEvent>,
    /// Pass as `after_seq` to read the next page; absent on the last page.
    pub next_after_seq: Option<i64>,
}

#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(Params),
    responses((status = 200, body = Page), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json")))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Page>> {
    caller.require(&[Role::Auditor, Role::Admin])?;
    caller.require_unrestricted()?;
    let Query(p) = params?;
    let query = AuditQuery {
        actor: p.actor,
        action: p.action,
        object_type: p.object_type,
        object_id: p.object_id,
        from: p.from,
        to: p.to,
        after_seq: p.after_seq.unwrap_or(0),
        limit: p.limit.unwrap_or(100),
    };
    query
        .validate()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let events = state.ledger.audit_events(&query).await?;
    let next_after_seq = if events.len() == query.limit as usize {
        events.last().map(|e| e.seq)
    } else {
        None
    };
    Ok(Json(Page {
        events,
        next_after_seq,
    }))
}
