//! Payment batches and provider floats over HTTP: create batches from due entitlements, take
//! them through submission and the sign-offs, send them to the provider in the background and
//! follow them; read and fund the providers' floats.
//!
//! Roles (the matrix of [`crate::payments`], the same as the command line's): programme
//! officers create, submit, cancel and re-issue; finance officers approve, authorise, release,
//! send and fund floats; every role reads (admins read only: an admin never moves money). The
//! maker-checker rules are the batches crate's: the preparer never signs and nobody signs a
//! batch twice (403 `same-person`). A user limited to some programmes sees only their batches
//! (others answer 404, like unknown ones). Every change is audited by the batches crate, in the
//! transaction of the change, as the caller under the role that allowed it.
//!
//! Without a payments configuration (`CVA_PAYMENTS_CONFIG`) the server still runs, and these
//! routes answer 503 `payments-not-configured`.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use cva_batches::{BatchView, Batches, Step};
use cva_ledger::audit::AuditContext;
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use super::auth::{AppState, Caller};
use super::problem::{ApiError, ApiResult, Problem};
use super::registry::{created, id, json, path, Body, PathOf, QueryOf};
use crate::payments::{Action, Batch, BatchDetail, Creation, Float, Line, NewBatches};

/// Lines per page unless `limit` says otherwise.
const DEFAULT_LIMIT: usize = 100;
/// Most lines per page.
const MAX_LIMIT: usize = 1000;

/// The caller's audit context for `action`, or 403 when no role of the caller allows it.
fn permit(caller: &Caller, action: Action) -> ApiResult<AuditContext> {
    caller.require(action.roles())?;
    action
        .context(&caller.user, caller.request_id.clone())
        .map_err(ApiError::Forbidden)
}

/// The batch services, or 503 when the server has no payments configuration.
fn configured(state: &AppState) -> ApiResult<&Batches> {
    state
        .payments
        .batches()
        .map_err(|m| ApiError::Unavailable("payments-not-configured", m.to_owned()))
}

/// The batch `raw` names, if it exists and its programme lies inside the caller's scope (404
/// otherwise, with the same words).
async fn scoped_batch(batches: &Batches, caller: &Caller, raw: &str) -> ApiResult<BatchView> {
    let id = id("batch", raw)?;
    let b = batches.batch(id).await?;
    if caller.user.may_access_programme(&b.programme) {
        Ok(b)
    } else {
        Err(ApiError::NotFound(format!("batch {id} does not exist")))
    }
}

// ---- batches ---------------------------------------------------------------------------------

/// Builds draft batches from the programme's due entitlements (granted, household verified, in
/// no live payment), one or more per provider. Role: `programme_officer`; the caller becomes the
/// batches' preparer.
#[utoipa::path(post, path = "/v1/batches", tag = "batches", request_body = NewBatches,
    responses((status = 201, description = "the draft batches created", body = Creation), (status = 200, description = "nothing was due: no batch created", body = Creation), (status = 400, description = "malformed JSON, a wrong type or an unknown field (the detail names it)", body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it (programme_officer only)", body = Problem, content_type = "application/problem+json"), (status = 404, description = "no such programme, or outside the caller's programmes", body = Problem, content_type = "application/problem+json"), (status = 409, description = "another batch took an entitlement meanwhile; nothing was created", body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json"), (status = 422, description = "a field breaks a rule (the detail names it)", body = Problem, content_type = "application/problem+json"), (status = 503, description = "no payments configuration on this server", body = Problem, content_type = "application/problem+json")))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Body<NewBatches>,
) -> ApiResult<(StatusCode, Json<Creation>)> {
    let ctx = permit(&caller, Action::Create)?;
    let batches = configured(&state)?;
    let filters = json(body)?.filters()?;
    if !caller.user.may_access_programme(&filters.programme) {
        return Err(ApiError::NotFound(format!(
            "programme `{}` does not exist",
            filters.programme
        )));
    }
    let report = batches.create(&filters, &ctx).await?;
    Ok(if report.batches.is_empty() {
        (StatusCode::OK, Json(report))
    } else {
        created(report)
    })
}

/// A batch with its sign-offs, its lines counted by status, its provider attempts and, while
/// this server sends it, the background send. Every role.
#[utoipa::path(get, path = "/v1/batches/{id}", tag = "batches", params(("id" = i64, Path, description = "batch id")),
    responses((status = 200, body = BatchDetail), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, description = "no such batch, or outside the caller's programmes", body = Problem, content_type = "application/problem+json"), (status = 503, description = "no payments configuration on this server", body = Problem, content_type = "application/problem+json")))]
pub async fn get_batch(
    State(state): State<AppState>,
    caller: Caller,
    raw: PathOf<String>,
) -> ApiResult<Json<BatchDetail>> {
    permit(&caller, Action::Read)?;
    let batches = configured(&state)?;
    let b = scoped_batch(batches, &caller, &path(raw)?).await?;
    let mut detail = BatchDetail::read(batches, b.id).await?;
    detail.send = Some(state.payments.send_state(b.id));
    Ok(Json(detail))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only this programme's batches.
    pub programme: Option<String>,
    /// Only batches in this status (draft, submitted, approved, authorised, released,
    /// sending, completed, partially_completed, failed, cancelled).
    pub status: Option<String>,
    /// Only batches with a smaller id (keyset paging: the last id of the previous page).
    pub before: Option<i64>,
    /// 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

const STATUSES: [&str; 10] = [
    "draft",
    "submitted",
    "approved",
    "authorised",
    "released",
    "sending",
    "completed",
    "partially_completed",
    "failed",
    "cancelled",
];

/// Batches, newest first (the caller's programmes only). Every role.
#[utoipa::path(get, path = "/v1/batches", tag = "batches", params(ListParams),
    responses((status = 200, body = Vec<Batch>), (status = 400, description = "a bad parameter (the detail names it)", body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, description = "the programme is outside the caller's programmes", body = Problem, content_type = "application/problem+json"), (status = 503, description = "no payments configuration on this server", body = Problem, content_type = "application/problem+json")))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    params: QueryOf<ListParams>,
) -> ApiResult<Json<Vec<Batch>>> {
    permit(&caller, Action::Read)?;
    let batches = configured(&state)?;
    let Query(p) = params?;
    let limit = p.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest("limit: give 1 to 1000".into()));
    }
    if let Some(s) = &p.status {
        if !STATUSES.contains(&s.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "status: give one of {}",
                STATUSES.join(", ")
            )));
        }
    }
    if let Some(code) = &p.programme {
        if !caller.user.may_access_programme(code) {
            return Err(ApiError::NotFound(format!(
                "programme {code} does not exist"
            )));
        }
    }
    let found = batches
        .list(p.programme.as_deref(), p.status.as_deref(), p.before, limit)
        .await?;
    Ok(Json(
        found
            .into_iter()
            .filter(|b| caller.user.may_access_programme(&b.programme))
            .collect(),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LinePageParams {
    /// Lines to skip (default 0).
    pub offset: Option<usize>,
    /// Lines in the page: 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// A page of a batch's lines.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LinePage {
    /// Lines in the batch.
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
    /// In line id order.
    pub lines: Vec<Line>,
}

/// A batch's lines, in id order, a page at a time. No personal data: the household is its id.
/// Every role.
#[utoipa::path(get, path = "/v1/batches/{id}/lines", tag = "batches", params(("id" = i64, Path, description = "batch id"), LinePageParams),
    responses((status = 200, body = LinePage), (status = 400, description = "bad paging (the detail names the parameter)", body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, description = "no such batch, or outside the caller's programmes", body = Problem, content_type = "application/problem+json"), (status = 503, description = "no payments configuration on this server", body = Problem, content_type = "application/problem+json")))]
pub async fn lines(
    State(state): State<AppState>,
    caller: Caller,
    raw: PathOf<String>,
    params: QueryOf<LinePageParams>,
) -> ApiResult<Json<LinePage>> {
    permit(&caller, Action::Read)?;
    let batches = configured(&state)?;
    let Query(p) = params?;
    let offset = p.offset.unwrap_or(0);
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::BadRequest(format!(
            "limit: give 1 to {MAX_LIMIT}"
        )));
    }
    let b = scoped_batch(batches, &caller, &path(raw)?).await?;
    let total = usize::try_from(b.line_count).unwrap_or(0);
    let lines = batches
        .lines_page(
            b.id,
            i64::try_from(offset).unwrap_or(i64::MAX),
            i64::try_from(limit).unwrap_or(i64::MAX),
        )
        .await?;
    Ok(Json(LinePage {
        total,
        offset,
        limit,
        lines,
    }))
}

/// Submits a draft for sign-off; the approval band of its total fixes how many people approve,
/// authorise and release. Role: `programme_officer`, and only the batch's preparer.
#[utoipa::path(post, path = "/v1/batches/{id}/submit", tag = "batches", params(("id" = i64, Path, description = "batch id")),
    responses((status = 200, body = Batch), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it, or the caller did not prepare the batch", body = Problem, content_type = "application/problem+json"), (status = 404, description = "no such batch, or outside the caller's programmes", body = Problem, content_type = "application/problem+json"), (status = 409, description = "the batch is not a draft", body = Problem, content_type = "application/problem+json"), (status = 503, description = "no payments configuration on this server", body = Problem, content_type = "application/problem+json")))]
pub async fn submit(
    State(state): State<AppState>,
    caller: Caller,
    raw: PathOf<String>,
) -> ApiResult<Json<Batch>> {
    let ctx = permit(&caller, Action::Submit)?;
    let batches = configured(&state)?;
    let b = scoped_batch(batches, &caller, &path(raw)?).await?;
    Ok(Json(batches.submit(b.id, &ctx).await?))
}

async fn sign(
    state: AppState,
    caller: Caller,
    raw: PathOf<String>,
    step: Step,
    action: Action,
) -> ApiResult<Json<Batch>> {
    let ctx = permit(&caller, action)?;
    let batches = configured(&state)?;
    let b = scoped_batch(batches, &caller, &path(raw)?).await?;
    Ok(Json(batches.sign(b.id, step, &ctx).await?))
}

/// One approval of a submitted batch; the batch is `approved` when it has as many as its band
/// requires. Role: `finance_officer`; never the preparer, never someone who signed it already.
#[utoipa::path(post, path = "/v1/batches/{id}/approve", tag = "batches", params(("id" = i64, Path, description = "batch id")),
    responses((status = 200, body = Batch), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it, or (type `same-person`) the caller prepared or already signed the batch", body = Problem, content_type = "application/problem+json"), (status = 404, description = "no such batch, or outside the caller's programmes", body = Problem, content_type = "application/problem+json"), (status = 409, description = "the batch is not submitted", body = Problem, content_type = "application/problem+json"), (status = 503, description = "no payments configuration on this server", body = Problem, content_type = "application/problem+json")))]
pub async fn approve(
    State(state): State<AppState>,
    caller: Caller,
    raw: PathOf<String>,
) -> ApiResult<Json<Batch>> {
    sign(state, caller, raw, Step::Approve, Action::Approve).await
}

/// One authorisation of an approved batch. Role: `finance_officer`; never the preparer, never
/// someone who signed it already.
#[utoipa::path(post, path = "/v1/batches/{id}/authorise", tag = "batches", params(("id" = i64, Path, description = "batch id")),
    responses((status = 200, body = Batch), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it, or (type `same-person`) the caller prepared or already signed the batch", body = Problem, content_type = "application/problem+json"), (status = 404, description = "no such batch, or outside the caller's programmes", body = Problem, content_type = "application/problem+json"), (status = 409, description = "the batch is not approved", body = Problem, content_type = "application/problem+json"), (status = 503, description = "no payments configuration on this server", body = Problem, content_type = "application/problem+json")))]
pub async fn authorise(
    State(state): State<AppState>,
    caller: Caller,
    raw: PathOf<String>,
) -> ApiResult<Json<Batch>> {
    sign(state, caller, raw, Step::Authorise, Action::Authorise).await
}

/// One release sign-off of an authorised batch. The last one moves each line's amount from the
/// household's entitlement account to the provider's in-transit account, and is refused (422,
/// nothing changed) when the provider's float cannot cover the batch and its fees on top of
/// what is released and unconfirmed. Role: `finance_officer`; never the preparer, never someone
/// who signed it already.
#[utoipa::path(post, path = "/v1/batches/{id}/release", tag = "batches", params(("id" = i64, Path, description = "batch id")),
    responses((status = 200, body = Batch), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it, or (type `same-person`) the caller prepared or already signed the batch", body = Problem, content_type = "application/problem+json"), (status = 404, description = "no such batch, or outside the caller's programmes", body = Problem, content_type = "application/problem+json"), (status = 409, description = "the batch is not authorised", body = Problem, content_type = "application/problem+json"), (status = 422, description = "refused: the provider's float cannot cover the batch; nothing changed", body = Problem, content_type = "application/problem+json"), (status = 503, description = "no payments configuration on this server", body = Problem, content_type = "application/problem+json")))]
pub async fn release(
    State(state): State<AppState>,
    caller: Caller,
    raw: PathOf<String>,
) -> ApiResult<Json<Batch>> {
    sign(state, caller, raw, Step::Release, Action::Release).await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBatch {
    /// Why (1 to 500 characters). Never put personal data here.
    pub reason: String,
}

/// Cancels a batch that has not been released: its lines are cancelled and their entitlements
/// are due again. Role: `programme_officer`.
#[utoipa::path(post, path = "/v1/batches/{id}/cancel", tag = "batches", params(("id" = i64, Path, description = "batch id")), request_body = CancelBatch,
    responses((status = 200, body = Batch), (status = 400, description = "malformed JSON, a wrong type or an unknown field", body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, description = "no such batch, or outside the caller's programmes", body = Problem, content_type = "application/problem+json"), (status = 409, description = "already released or cancelled", body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json"), (status = 422, description = "a field breaks a rule (the detail names it)", body = Problem, content_type = "application/problem+json"), (status = 503, description = "no payments configuration on this server", body = Problem, content_type = "application/problem+json")))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    raw: PathOf<String>,
    body: Body<CancelBatch>,
) -> ApiResult<Json<Batch>> {
    let ctx = permit(&caller, Action::Cancel)?;
    let batches = configured(&state)?;
    let b = scoped_batch(batches, &caller, &path(raw)?).await?;
    let c = json(body)?;
    Ok(Json(batches.cancel(b.id, &c.reason, &ctx).await?))
}

/// A follow-up draft for the failed lines of a sent batch whose entitlements are still granted
/// and in no live payment (each for its entitlement's amount). The caller prepares it. Role:
/// `programme_officer`.
#[utoipa::path(post, path = "/v1/batches/{id}/reissue", tag = "batches", params(("id" = i64, Path, description = "batch id (of the batch with failed lines)")),
    responses((status = 201, description = "the follow-up draft", body = Batch), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, description = "no such batch, or outside the caller's programmes", body = Problem, content_type = "application/problem+json"), (status = 409, description = "no failed line left to re-issue", body = Problem, content_type = "application/problem+json"), (status = 503, description = "no payments configuration on this server", body = Problem, content_type = "application/problem+json")))]
pub async fn reissue(
    State(state): State<AppState>,
    caller: Caller,
    raw: PathOf<String>,
) -> ApiResult<(StatusCode, Json<Batch>)> {
    let ctx = permit(&caller, Action::Reissue)?;
    let batches = configured(&state)?;
    let b = scoped_batch(batches, &caller, &path(raw)?).await?;
    Ok(created(batches.reissue(b.id, &ctx).await?))
}

/// For a provider that takes files: the released batch's bulk-payment CSV (columns
/// `reference,msisdn,amount,currency,fee,batch_reference,description`; amounts in major units).
/// The first export records the attempt and moves the lines in flight; exporting again gives
/// the same file. The file holds phone numbers: hand it to the provider only. Role:
/// `finance_officer`.
#[utoipa::path(post, path = "/v1/batches/{id}/export", tag = "batches", params(("id" = i64, Path, description = "batch id")),
    responses((status = 200, description = "the CSV file (`Content-Disposition: attachment`, `X-Content-SHA256`)", body = String, content_type = "text/csv"), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, description = "no such batch, or outside the caller's programmes", body = Problem, content_type = "application/problem+json"), (status = 409, description = "the batch is not released (or sending), or its provider has an API", body = Problem, content_type = "application/problem+json"), (status = 503, description = "no payments configuration on this server", body = Problem, content_type = "application/problem+json")))]
pub async fn export(
    State(state): State<AppState>,
    caller: Caller,
    raw: PathOf<String>,
) -> ApiResult<axum::response::Response> {
    use axum::http::header;
    use axum::response::IntoResponse;
    let ctx = permit(&caller, Action::Send)?;
    let batches = configured(&state)?;
    let b = scoped_batch(batches, &caller, &path(raw)?).await?;
    let file = batches.export_file(b.id, &ctx).await?;
    let disposition = format!("attachment; filename=\"{}\"", file.file_name);
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
            (
                header::HeaderName::from_static("x-content-sha256"),
                file.sha256.clone(),
            ),
        ],
        file.content,
    )
        .into_response())
}

/// For a provider that takes files: imports its result file (`text/csv`, columns
/// `reference,status,provider_transaction_id,reason` by header, `,` or `;`). Every row is
/// checked first; a bad file is refused (422 listing row, column and reason) and changes
/// nothing; the same file again changes nothing. Role: `finance_officer`.
#[utoipa::path(post, path = "/v1/batches/{id}/results", tag = "batches", params(("id" = i64, Path, description = "batch id")),
    request_body(content = String, content_type = "text/csv", description = "the provider's result file"),
    responses((status = 200, description = "what the file changed", body = crate::payments::Applied), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, description = "no such batch, or outside the caller's programmes", body = Problem, content_type = "application/problem+json"), (status = 409, description = "the batch was not exported, or its provider has an API", body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json"), (status = 422, description = "the file is refused and nothing changed; `errors` lists the bad rows", body = Problem, content_type = "application/problem+json"), (status = 503, description = "no payments configuration on this server", body = Problem, content_type = "application/problem+json")))]
pub async fn results(
    State(state): State<AppState>,
    caller: Caller,
    raw: PathOf<String>,
    headers: axum::http::HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult<Json<crate::payments::Applied>> {
    let ctx = permit(&caller, Action::Send)?;
    let batches = configured(&state)?;
    let b = scoped_batch(batches, &caller, &path(raw)?).await?;
    super::registry::require_content_type(&headers, "text/csv")?;
    let bytes = body.map_err(|e| super::registry::bytes_error(e.status()))?;
    Ok(Json(batches.import_results(b.id, &bytes, &ctx).await?))
}

/// The line ids a check found reversed by the provider.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Reversals {
    /// Lines the provider had paid and has reversed since: now failed (`reversed`), their
    /// money back in the float and owed to the household again.
    pub reversed: Vec<i64>,
}

/// Asks the provider (GSMA API) about every completed line of the batch and books those it has
/// reversed since. Role: `finance_officer`.
#[utoipa::path(post, path = "/v1/batches/{id}/check-reversals", tag = "batches", params(("id" = i64, Path, description = "batch id")),
    responses((status = 200, description = "the lines found reversed (booked now)", body = Reversals), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, description = "no such batch, or outside the caller's programmes", body = Problem, content_type = "application/problem+json"), (status = 409, description = "the provider takes files", body = Problem, content_type = "application/problem+json"), (status = 502, description = "the provider could not be reached", body = Problem, content_type = "application/problem+json"), (status = 503, description = "no payments configuration on this server", body = Problem, content_type = "application/problem+json")))]
pub async fn check_reversals(
    State(state): State<AppState>,
    caller: Caller,
    raw: PathOf<String>,
) -> ApiResult<Json<Reversals>> {
    let ctx = permit(&caller, Action::Send)?;
    let batches = configured(&state)?;
    let b = scoped_batch(batches, &caller, &path(raw)?).await?;
    let options = state.payments.send_options();
    let reversed = batches.check_reversals(b.id, &options, &ctx).await?;
    Ok(Json(Reversals { reversed }))
}

/// Starts sending a released batch to its provider (GSMA Mobile Money API), or resumes a send
/// that stopped; answers at once with the batch, while the send runs in the background: follow
/// it with `GET /v1/batches/{id}` until `send.running` is false. Sending is exactly-once
/// whatever happens (see the batches crate); while this server sends a batch, another send of
/// it is refused (409 `send-running`). Role: `finance_officer`.
#[utoipa::path(post, path = "/v1/batches/{id}/send", tag = "batches", params(("id" = i64, Path, description = "batch id")),
    responses((status = 202, description = "the send started in the background; the batch as it was", body = Batch), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, description = "no such batch, or outside the caller's programmes", body = Problem, content_type = "application/problem+json"), (status = 409, description = "the batch is not released, its provider takes files, or (type `send-running`) this server sends it already", body = Problem, content_type = "application/problem+json"), (status = 422, description = "the batch's provider is not configured", body = Problem, content_type = "application/problem+json"), (status = 503, description = "no payments configuration on this server", body = Problem, content_type = "application/problem+json")))]
pub async fn send(
    State(state): State<AppState>,
    caller: Caller,
    raw: PathOf<String>,
) -> ApiResult<(StatusCode, Json<Batch>)> {
    let ctx = permit(&caller, Action::Send)?;
    let batches = configured(&state)?.clone();
    let b = scoped_batch(&batches, &caller, &path(raw)?).await?;
    crate::payments::check_sendable(&batches, &b)?;
    let id = b.id;
    let running = state.payments.start_send(id).ok_or_else(|| {
        ApiError::Conflict(
            "send-running",
            format!("batch {id} is being sent by this server; follow it with GET /v1/batches/{id}"),
        )
    })?;
    let options = state.payments.send_options();
    let span = tracing::info_span!("batch_send", batch = id, request_id = %ctx.request_id);
    tokio::spawn(
        async move {
            // Errors name the batch, attempt and provider, never personal data.
            let error = match batches.send(id, &options, &ctx).await {
                Ok(r) => {
                    tracing::info!(
                        status = %r.batch.status, completed = r.completed, failed = r.failed,
                        unknown = r.unknown, in_flight = r.in_flight, anomalies = r.anomalies.len(),
                        "batch send finished"
                    );
                    None
                }
                Err(e) => {
                    tracing::warn!(error = %e, "batch send stopped; sending again resumes it");
                    Some(e.to_string())
                }
            };
            running.finish(error);
        }
        .instrument(span),
    );
    Ok((StatusCode::ACCEPTED, Json(b)))
}

// ---- providers -------------------------------------------------------------------------------

/// Every configured provider's float, in-transit and fee balances. Every role.
#[utoipa::path(get, path = "/v1/providers", tag = "providers",
    responses((status = 200, body = Vec<Float>), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 503, description = "no payments configuration on this server", body = Problem, content_type = "application/problem+json")))]
pub async fn providers(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<Float>>> {
    permit(&caller, Action::Read)?;
    let batches = configured(&state)?;
    Ok(Json(batches.floats().await?.into_iter().collect()))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FloatFunding {
    /// Major units of the provider's currency, as a string (`"5000000"`): above zero, with no
    /// more decimals than the currency has.
    pub amount: String,
    /// The asset account the money leaves, e.g. `assets:bank` or `assets:bank:ecobank`.
    pub from: String,
    /// The transfer's reference (1 to 100 characters): funding again with the same reference
    /// changes nothing.
    pub reference: String,
}

/// Records the transfer that funds a provider's float (Dr `assets:float:PROVIDER`, Cr `from`),
/// needed before a release; idempotent by reference. Role: `finance_officer`.
#[utoipa::path(post, path = "/v1/providers/{name}/float", tag = "providers", params(("name" = String, Path, description = "provider name, as configured")), request_body = FloatFunding,
    responses((status = 200, description = "the provider's balances after the funding", body = Float), (status = 400, description = "malformed JSON, a wrong type or an unknown field (the detail names it)", body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, description = "no such provider", body = Problem, content_type = "application/problem+json"), (status = 409, description = "the reference was used with another amount", body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json"), (status = 422, description = "a field breaks a rule (the detail names it: amount, from, reference), or `from` cannot cover it; nothing changed", body = Problem, content_type = "application/problem+json"), (status = 503, description = "no payments configuration on this server", body = Problem, content_type = "application/problem+json")))]
pub async fn fund_float(
    State(state): State<AppState>,
    caller: Caller,
    name: PathOf<String>,
    body: Body<FloatFunding>,
) -> ApiResult<Json<Float>> {
    let ctx = permit(&caller, Action::FundFloat)?;
    let batches = configured(&state)?;
    let name = path(name)?;
    if batches.config().provider(&name).is_none() {
        return Err(ApiError::NotFound(format!(
            "no provider `{}` is configured",
            name.chars().take(40).collect::<String>()
        )));
    }
    let f = json(body)?;
    Ok(Json(
        batches
            .fund_float(&name, &f.amount, &f.from, &f.reference, &ctx)
            .await?,
    ))
}
