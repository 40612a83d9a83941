//! Reports for auditors over HTTP (crate `cva_reports`): `GET /v1/reports/{kind}` produces a
//! report — the bytes as CSV or JSON, its SHA-256 in `X-Report-SHA256`, the record's id in
//! `X-Report-Id` — and records it with a `report.produce` audit event; `POST
//! /v1/reports/verify` takes a file as the body and says whether it is a report produced
//! here, by whom and when.
//!
//! Roles: every role reads reports (`auditor`, `finance_officer`, `programme_officer`, `admin`;
//! [`READERS`]), verification included. A user limited to some programmes gets the budget,
//! household and journal reports of those programmes only (another answers 404, like an
//! unknown one); the whole-book reports — trial balance, the journal without a programme, a
//! reconciliation run (a provider's statement spans programmes) — need unrestricted access
//! (403). The household report's personal data follows the registry's role policy
//! ([`super::registry::reveal`]): opened for administrators and programme officers, masked for
//! auditors and finance officers.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::NaiveDate;
use cva_reports::{Format, Kind, ReportError, Reports, Request, Verification};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{AppState, Caller, READERS};
use super::problem::{ApiError, ApiResult, Problem};
use super::registry::{path, PathOf, QueryOf};

/// Largest file `POST /v1/reports/verify` takes (reports can be larger than other bodies).
pub const VERIFY_LIMIT: usize = 256 * 1024 * 1024;

/// The report routes, with their own body limit.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(verify))
        .routes(routes!(produce))
        .layer(DefaultBodyLimit::max(VERIFY_LIMIT))
}

impl From<ReportError> for ApiError {
    fn from(e: ReportError) -> Self {
        match e {
            ReportError::Invalid { .. } => ApiError::BadRequest(e.to_string()),
            ReportError::NotFound(d) => ApiError::NotFound(d),
            ReportError::Registry(r) => r.into(),
            ReportError::Ledger(l) => l.into(),
            other => ApiError::Internal(format!("reports: {other}")),
        }
    }
}

/// Refuses a request outside the caller's programmes: 404 for a programme outside them (as
/// for an unknown one), 403 for a whole-book report when the caller is limited to some.
pub(crate) fn check_scope(caller: &Caller, request: &Request) -> ApiResult<()> {
    match (&request.programme, request.kind) {
        (Some(p), Kind::Budget | Kind::Household | Kind::Journal) => {
            if caller.user.may_access_programme(p.trim()) {
                Ok(())
            } else {
                Err(ApiError::NotFound(format!(
                    "programme `{}` does not exist",
                    p.trim()
                )))
            }
        }
        (None, Kind::Budget | Kind::Household) => Ok(()),
        _ => caller.require_unrestricted(),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReportParams {
    /// Programme code: required for `budget` and `household`, optional for `journal`.
    pub programme: Option<String>,
    /// `reconciliation`: a statement id (its latest run).
    pub statement: Option<i64>,
    /// `reconciliation`: a run id.
    pub run: Option<i64>,
    /// `budget`: the date whose exchange rate applies (`YYYY-MM-DD`; default today, UTC).
    pub as_of: Option<NaiveDate>,
    /// `csv` or `json`.
    pub format: String,
}

/// Produces a report and records it (table `reports`, audit event `report.produce`). Kinds:
/// `budget`, `household`, `trial-balance`, `journal`, `reconciliation`. Roles: every role;
/// whole-book reports need unrestricted access; the household report masks personal data
/// unless the caller is an admin or programme officer.
#[utoipa::path(get, path = "/v1/reports/{kind}", tag = "reports",
    params(("kind" = String, Path, description = "budget, household, trial-balance, journal or reconciliation"), ReportParams),
    responses((status = 200, description = "the report (CSV or JSON); `X-Report-SHA256`: its hash; `X-Report-Id`: its record", body = String, content_type = "text/csv"), (status = 400, description = "an unknown kind or format, or a parameter missing or not used by this kind (the detail names it)", body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it, or a whole-book report for a caller limited to some programmes", body = Problem, content_type = "application/problem+json"), (status = 404, description = "no such programme, statement or run, or outside the caller's programmes", body = Problem, content_type = "application/problem+json")))]
pub async fn produce(
    State(state): State<AppState>,
    caller: Caller,
    kind: PathOf<String>,
    params: QueryOf<ReportParams>,
) -> ApiResult<Response> {
    caller.require(READERS)?;
    let kind = Kind::parse(&path(kind)?)?;
    let Query(p) = params?;
    let format = Format::parse(&p.format)?;
    let request = Request {
        kind,
        programme: p.programme,
        statement: p.statement,
        run: p.run,
        as_of: p.as_of,
        reveal: super::registry::reveal(&caller),
    };
    check_scope(&caller, &request)?;
    let produced = Reports::new(state.registry.clone())
        .produce(&request, format, &caller.audit())
        .await?;
    let r = &produced.record;
    let disposition = format!("attachment; filename=\"{}-{}.{}\"", r.kind, r.id, r.format);
    Ok((
        [
            (header::CONTENT_TYPE, format.content_type().to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
            (
                header::HeaderName::from_static("x-report-sha256"),
                r.sha256.clone(),
            ),
            (
                header::HeaderName::from_static("x-report-id"),
                r.id.to_string(),
            ),
        ],
        produced.bytes,
    )
        .into_response())
}

/// Whether the body (a report file, any content type) is a report produced here: the SHA-256
/// of its bytes, the report records with that hash, their `report.produce` audit events, and
/// the audit chain checked end to end. `verdict` is `verified`, `not_produced` ("no report with
/// this hash was produced here": a file changed by one byte lands here) or `unproven` (a
/// record without a matching audit event, or a broken chain). Roles: every role.
#[utoipa::path(post, path = "/v1/reports/verify", tag = "reports",
    request_body(content = String, content_type = "application/octet-stream", description = "the report file, as received"),
    responses((status = 200, description = "what was found; see `verdict`", body = Verification), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json")))]
pub async fn verify(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Verification>> {
    caller.require(READERS)?;
    let bytes = body.map_err(|e| super::registry::bytes_error(e.status()))?;
    Ok(Json(
        Reports::new(state.registry.clone()).verify(&bytes).await?,
    ))
}
