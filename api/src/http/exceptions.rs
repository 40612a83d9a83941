//! The reconciliation exceptions queue over HTTP: list and read exceptions with their history
//! and adjustments, assign, comment, resolve, and adjusting entries under maker-checker.
//!
//! Roles (the matrix of [`crate::payments`], the same as the command line's): every role reads
//! the queue; finance officers assign, comment, resolve, propose adjustments and approve or
//! reject them. The person who proposed an adjustment can never approve or reject it: that is
//! a **403 `same-person`** (as for batches: the request is understood and the caller may in
//! general act, but not on this object), enforced by the reconciliation crate and by the
//! database. A state that forbids the action (a resolved exception, an adjustment awaiting
//! approval, an adjustment already decided) is 409 `conflict`; a bad field is 422
//! `invalid-field` naming it (400 for malformed JSON); unknown ids are 404. Amounts of
//! adjustment lines are decimal strings in **major** units of the exception's currency, parsed
//! exactly (`"12.50"` USD; `"12.505"` is refused, never rounded). Every change is audited in
//! its own transaction, as the caller under the role that allowed it.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use cva_access::{AccessError, AccessStore, Role};
use cva_ledger::audit::AuditContext;
use cva_reconciliation::exceptions::{parse_category, DEFAULT_PAGE};
use cva_reconciliation::{
    AdjustmentLine, AdjustmentView, ExceptionDetail, ExceptionError, ExceptionFilter,
    ExceptionStatus, ExceptionView, Exceptions,
};
use serde::Deserialize;

use super::auth::{AppState, Caller};
use super::problem::{ApiError, ApiResult, Problem};
use super::registry::{
    created, id, json, optional_json, path, Body, OptionalBody, PathOf, QueryOf,
};
use crate::payments::Action;

impl From<ExceptionError> for ApiError {
    fn from(e: ExceptionError) -> Self {
        match e {
            ExceptionError::NotFound { .. } => ApiError::NotFound(e.to_string()),
            ExceptionError::Conflict(d) => ApiError::Conflict("conflict", d),
            ExceptionError::Invalid { .. } => {
                ApiError::Unprocessable("invalid-field", e.to_string())
            }
            ExceptionError::SameActor(d) => ApiError::ForbiddenAs("same-person", d),
            ExceptionError::Ledger(l) => l.into(),
            ExceptionError::Database(_) | ExceptionError::Corrupt(_) => {
                ApiError::Internal(format!("exceptions: {e}"))
            }
        }
    }
}

/// The caller's audit context for `action`, or 403 when no role of the caller allows it.
fn permit(caller: &Caller, action: Action) -> ApiResult<AuditContext> {
    caller.require(action.roles())?;
    action
        .context(&caller.user, caller.request_id.clone())
        .map_err(ApiError::Forbidden)
}

fn queue(state: &AppState) -> Exceptions {
    Exceptions::new(state.ledger.clone())
}

/// Whether `name` may be assigned exceptions: an enabled user holding `finance_officer` (the
/// role that works the queue). Shared with the command line.
pub async fn eligible_assignee(access: &AccessStore, name: &str) -> Result<bool, AccessError> {
    let name = name.trim();
    Ok(access.users().await?.iter().any(|u| {
        u.username.as_str() == name && !u.disabled && u.roles.contains(&Role::FinanceOfficer)
    }))
}

/// The refusal of an assignee [`eligible_assignee`] turns down (names the field, never lists
/// users).
pub const NOT_ELIGIBLE: &str = "assignee: must be an enabled user with the finance_officer role";

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only exceptions in this status: open, assigned, awaiting_approval or resolved.
    pub status: Option<String>,
    /// Only this statement's exceptions.
    pub statement: Option<i64>,
    /// Only exceptions assigned to this user.
    pub assignee: Option<String>,
    /// Only this category (amount_mismatch, fee_mismatch, status_mismatch,
    /// missing_from_statement, unexpected_in_statement, duplicate_in_statement,
    /// reversed_by_provider).
    pub category: Option<String>,
    /// Only exceptions with a greater id (keyset paging: the last id of the previous page).
    pub after: Option<i64>,
    /// 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// Exceptions, oldest first (by id). Every role.
#[utoipa::path(get, path = "/v1/exceptions", tag = "exceptions", params(ListParams),
    responses((status = 200, body = Vec<ExceptionView>), (status = 400, description = "a bad parameter", body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 422, description = "a parameter breaks a rule (the detail names it)", body = Problem, content_type = "application/problem+json")))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    params: QueryOf<ListParams>,
) -> ApiResult<Json<Vec<ExceptionView>>> {
    permit(&caller, Action::ReadExceptions)?;
    let Query(p) = params?;
    let filter = ExceptionFilter {
        status: p
            .status
            .as_deref()
            .map(|s| ExceptionStatus::parse(s.trim()))
            .transpose()?,
        statement_id: p.statement,
        assignee: p.assignee,
        category: p
            .category
            .as_deref()
            .map(|c| parse_category(c.trim()))
            .transpose()?,
        after_id: p.after.unwrap_or(0),
        limit: p.limit.unwrap_or(DEFAULT_PAGE),
    };
    Ok(Json(queue(&state).list(&filter).await?))
}

/// An exception with its history (who did what, when, with which note) and its adjustments.
/// Every role.
#[utoipa::path(get, path = "/v1/exceptions/{id}", tag = "exceptions", params(("id" = i64, Path, description = "exception id")),
    responses((status = 200, body = ExceptionDetail), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, description = "no such exception", body = Problem, content_type = "application/problem+json")))]
pub async fn get_exception(
    State(state): State<AppState>,
    caller: Caller,
    raw: PathOf<String>,
) -> ApiResult<Json<ExceptionDetail>> {
    permit(&caller, Action::ReadExceptions)?;
    let id = id("exception", &path(raw)?)?;
    Ok(Json(queue(&state).get(id).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Assignment {
    /// An enabled user with the finance_officer role.
    pub assignee: String,
}

/// Assigns the exception (open or assigned → assigned; awaiting approval keeps its status).
/// Role: `finance_officer`.
#[utoipa::path(post, path = "/v1/exceptions/{id}/assign", tag = "exceptions", params(("id" = i64, Path, description = "exception id")), request_body = Assignment,
    responses((status = 200, body = ExceptionView), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it (finance_officer only)", body = Problem, content_type = "application/problem+json"), (status = 404, description = "no such exception", body = Problem, content_type = "application/problem+json"), (status = 409, description = "the exception is resolved", body = Problem, content_type = "application/problem+json"), (status = 422, description = "the assignee is not an enabled finance officer", body = Problem, content_type = "application/problem+json")))]
pub async fn assign(
    State(state): State<AppState>,
    caller: Caller,
    raw: PathOf<String>,
    body: Body<Assignment>,
) -> ApiResult<Json<ExceptionView>> {
    let ctx = permit(&caller, Action::WorkException)?;
    let id = id("exception", &path(raw)?)?;
    let body = json(body)?;
    if !eligible_assignee(&state.access, &body.assignee).await? {
        return Err(ApiError::Unprocessable(
            "invalid-field",
            NOT_ELIGIBLE.into(),
        ));
    }
    Ok(Json(queue(&state).assign(id, &body.assignee, &ctx).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Note {
    /// 1 to 2,000 characters, not blank.
    pub note: String,
}

/// Adds a note to the exception's history (any status). Role: `finance_officer`.
#[utoipa::path(post, path = "/v1/exceptions/{id}/comment", tag = "exceptions", params(("id" = i64, Path, description = "exception id")), request_body = Note,
    responses((status = 200, body = ExceptionView), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it (finance_officer only)", body = Problem, content_type = "application/problem+json"), (status = 404, description = "no such exception", body = Problem, content_type = "application/problem+json"), (status = 422, description = "the note is blank or too long", body = Problem, content_type = "application/problem+json")))]
pub async fn comment(
    State(state): State<AppState>,
    caller: Caller,
    raw: PathOf<String>,
    body: Body<Note>,
) -> ApiResult<Json<ExceptionView>> {
    let ctx = permit(&caller, Action::WorkException)?;
    let id = id("exception", &path(raw)?)?;
    let body = json(body)?;
    Ok(Json(queue(&state).comment(id, &body.note, &ctx).await?))
}

/// Resolves the exception without moving money; the note says why. Final. Role:
/// `finance_officer`.
#[utoipa::path(post, path = "/v1/exceptions/{id}/resolve", tag = "exceptions", params(("id" = i64, Path, description = "exception id")), request_body = Note,
    responses((status = 200, body = ExceptionView), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it (finance_officer only)", body = Problem, content_type = "application/problem+json"), (status = 404, description = "no such exception", body = Problem, content_type = "application/problem+json"), (status = 409, description = "already resolved, or an adjustment awaits approval", body = Problem, content_type = "application/problem+json"), (status = 422, description = "the note is blank or too long", body = Problem, content_type = "application/problem+json")))]
pub async fn resolve(
    State(state): State<AppState>,
    caller: Caller,
    raw: PathOf<String>,
    body: Body<Note>,
) -> ApiResult<Json<ExceptionView>> {
    let ctx = permit(&caller, Action::WorkException)?;
    let id = id("exception", &path(raw)?)?;
    let body = json(body)?;
    Ok(Json(queue(&state).resolve(id, &body.note, &ctx).await?))
}

/// One line of a proposed adjusting entry.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLine {
    /// An existing account kept in the exception's currency.
    #[schema(example = "expense:fees:orange-money")]
    pub account: String,
    /// `debit` or `credit`.
    #[schema(example = "debit")]
    pub side: String,
    /// A positive decimal string in major units of the exception's currency (`"500"` XOF,
    /// `"12.50"` USD); never a JSON number.
    #[schema(example = "500")]
    pub amount: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAdjustment {
    /// 1 to 500 characters.
    pub description: String,
    /// At least two lines; debits must equal credits.
    pub lines: Vec<NewLine>,
}

/// Proposes the adjusting entry that settles the exception; nothing is posted until another
/// finance officer approves it. Role: `finance_officer`.
#[utoipa::path(post, path = "/v1/exceptions/{id}/adjustments", tag = "exceptions", params(("id" = i64, Path, description = "exception id")), request_body = NewAdjustment,
    responses((status = 201, description = "proposed, awaiting approval", body = AdjustmentView), (status = 400, description = "malformed JSON, a wrong type or an unknown field", body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it (finance_officer only)", body = Problem, content_type = "application/problem+json"), (status = 404, description = "no such exception", body = Problem, content_type = "application/problem+json"), (status = 409, description = "resolved, or an adjustment already awaits approval", body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json"), (status = 422, description = "a line breaks a rule: unbalanced, unknown account, another currency, an inexact or non-positive amount (the detail names the field)", body = Problem, content_type = "application/problem+json")))]
pub async fn propose(
    State(state): State<AppState>,
    caller: Caller,
    raw: PathOf<String>,
    body: Body<NewAdjustment>,
) -> ApiResult<(StatusCode, Json<AdjustmentView>)> {
    let ctx = permit(&caller, Action::ProposeAdjustment)?;
    let id = id("exception", &path(raw)?)?;
    let body = json(body)?;
    let queue = queue(&state);
    let currency = queue.exception(id).await?.currency;
    let lines = body
        .lines
        .iter()
        .enumerate()
        .map(|(i, l)| AdjustmentLine::parse(i, &l.account, &l.side, &l.amount, currency))
        .collect::<Result<Vec<_>, _>>()?;
    let adjustment = queue
        .propose_adjustment(id, &body.description, &lines, &ctx)
        .await?;
    Ok(created(adjustment))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// Becomes the exception's resolution (default: "adjusting entry of adjustment N
    /// approved").
    pub note: Option<String>,
}

/// Approves an adjustment: posts its entry (idempotency key
/// `exception:{exception}:adjustment:{id}`) and resolves the exception, in one transaction.
/// Role: `finance_officer`, never the proposer (403 `same-person`). Approving again is 409
/// and posts nothing.
#[utoipa::path(post, path = "/v1/adjustments/{id}/approve", tag = "exceptions", params(("id" = i64, Path, description = "adjustment id")), request_body(content = Option<Approval>, description = "optional"),
    responses((status = 200, body = AdjustmentView), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it (finance_officer only), or `same-person`: the caller proposed it", body = Problem, content_type = "application/problem+json"), (status = 404, description = "no such adjustment", body = Problem, content_type = "application/problem+json"), (status = 409, description = "already approved or rejected", body = Problem, content_type = "application/problem+json"), (status = 422, description = "the ledger refused the entry (e.g. a balance rule) or a bad note; nothing changed", body = Problem, content_type = "application/problem+json")))]
pub async fn approve(
    State(state): State<AppState>,
    caller: Caller,
    raw: PathOf<String>,
    body: OptionalBody<Approval>,
) -> ApiResult<Json<AdjustmentView>> {
    let ctx = permit(&caller, Action::DecideAdjustment)?;
    let id = id("adjustment", &path(raw)?)?;
    let note = optional_json(body)?.and_then(|a| a.note);
    Ok(Json(
        queue(&state)
            .approve_adjustment(id, note.as_deref(), &ctx)
            .await?,
    ))
}

/// Rejects an adjustment: nothing is posted and the exception goes back to assigned (or
/// open). Role: `finance_officer`, never the proposer (403 `same-person`).
#[utoipa::path(post, path = "/v1/adjustments/{id}/reject", tag = "exceptions", params(("id" = i64, Path, description = "adjustment id")), request_body = Note,
    responses((status = 200, body = AdjustmentView), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it (finance_officer only), or `same-person`: the caller proposed it", body = Problem, content_type = "application/problem+json"), (status = 404, description = "no such adjustment", body = Problem, content_type = "application/problem+json"), (status = 409, description = "already approved or rejected", body = Problem, content_type = "application/problem+json"), (status = 422, description = "the note is blank or too long", body = Problem, content_type = "application/problem+json")))]
pub async fn reject(
    State(state): State<AppState>,
    caller: Caller,
    raw: PathOf<String>,
    body: Body<Note>,
) -> ApiResult<Json<AdjustmentView>> {
    let ctx = permit(&caller, Action::DecideAdjustment)?;
    let id = id("adjustment", &path(raw)?)?;
    let body = json(body)?;
    Ok(Json(
        queue(&state)
            .reject_adjustment(id, &body.note, &ctx)
            .await?,
    ))
}
