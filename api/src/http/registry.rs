//! The programme registry over HTTP: programmes, budget lines and their funding, exchange rates,
//! transfer-value rules, household enrolment (one by one or a Kobo/ODK CSV file), status changes
//! under the four-eyes rule, the duplicate adjudication queue and entitlements.
//!
//! Roles (MISSION.md): programme staff (`programme_officer`) and admins create and change;
//! finance officers fund budget lines and record rates; every role reads, except the
//! adjudication queue (no finance officers). Personal fields are opened for admins and programme
//! officers and masked for the others. A user limited to some programmes sees only those: a
//! programme, household, flag or entitlement outside the scope answers 404, like an unknown one,
//! and lists hold only programmes inside it. Every change is audited (`caller.audit()`) by the
//! registry, in the transaction of the change.

use axum::body::Bytes;
use axum::extract::rejection::{
    BytesRejection, JsonRejection, PathRejection, QueryRejection, StringRejection,
};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use chrono::NaiveDate;
use cva_access::Role;
use cva_households::import::ColumnMapping;
use cva_ledger::posting::Posting;
use cva_programmes::rules::{Modality, Rule, RuleError};
use cva_registry::entitlements::{EntitlementView, GenerationReport};
use cva_registry::flags::{Decision, FlagView};
use cva_registry::households::{
    FlagSummary, HouseholdInput, HouseholdQuery, HouseholdView, ImportReport, Reveal, Status,
    StatusAction,
};
use cva_registry::programmes::{BudgetLine, NewProgramme, Programme, ProgrammeCode, Rate};
use cva_registry::RegistryError;
use serde::{Deserialize, Serialize};

use super::auth::{AppState, Caller, READERS};
use super::ledger::Posted;
use super::problem::{ApiError, ApiResult, Problem};

pub(crate) type Body<T> = Result<Json<T>, JsonRejection>;
pub(crate) type OptionalBody<T> = Result<Option<Json<T>>, JsonRejection>;
pub(crate) type QueryOf<T> = Result<Query<T>, QueryRejection>;
pub(crate) type PathOf<T> = Result<Path<T>, PathRejection>;

/// Programme staff: programmes, households, rules, adjudication, entitlements.
const STAFF: &[Role] = &[Role::Admin, Role::ProgrammeOfficer];
/// Money in: funding budget lines, exchange rates.
const FINANCE: &[Role] = &[Role::Admin, Role::FinanceOfficer];
/// The adjudication queue.
const FLAG_READERS: &[Role] = &[Role::Admin, Role::ProgrammeOfficer, Role::Auditor];

/// Households per page unless `limit` says otherwise.
const DEFAULT_LIMIT: i64 = 100;

// ---- helpers ---------------------------------------------------------------------------------

/// A JSON body, or a 400 whose detail names the field but never repeats a value: serde quotes
/// the value it could not use (`invalid type: integer `76123456``), and in a household body that
/// value is personal data.
pub(crate) fn json<T>(body: Body<T>) -> ApiResult<T> {
    match body {
        Ok(Json(v)) => Ok(v),
        Err(JsonRejection::JsonDataError(e)) => {
            Err(ApiError::BadRequest(without_values(&e.body_text())))
        }
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn optional_json<T>(body: OptionalBody<T>) -> ApiResult<Option<T>> {
    match body {
        Ok(v) => Ok(v.map(|Json(v)| v)),
        Err(JsonRejection::JsonDataError(e)) => {
            Err(ApiError::BadRequest(without_values(&e.body_text())))
        }
        Err(e) => Err(e.into()),
    }
}

/// The path parameters, or a problem+json 400 (not axum's plain-text rejection).
pub(crate) fn path<T>(p: PathOf<T>) -> ApiResult<T> {
    p.map(|Path(v)| v)
        .map_err(|_| ApiError::BadRequest("the path parameters cannot be read".into()))
}

/// Removes the value serde quotes after `invalid type: ` / `invalid value: ` (up to
/// `, expected`).
fn without_values(message: &str) -> String {
    let mut out = message.to_owned();
    for kind in ["invalid type: ", "invalid value: "] {
        if let Some(start) = out.find(kind) {
            let from = start + kind.len();
            if let Some(len) = out[from..].find(", expected") {
                out.replace_range(from..from + len, "(value not shown)");
            }
        }
    }
    out
}

/// A programme code from the path, inside the caller's scope. A malformed code is a 400; a
/// programme outside the scope is "not found", with the same words as an unknown one.
fn scoped_programme(caller: &Caller, code: &str) -> ApiResult<String> {
    let code = ProgrammeCode::parse(code).map_err(|_| {
        ApiError::BadRequest(
            "code: a programme code has 2 to 40 letters, digits, `.`, `_` or `-`".into(),
        )
    })?;
    if caller.user.may_access_programme(code.as_str()) {
        Ok(code.as_str().to_owned())
    } else {
        Err(not_found_programme(code.as_str()))
    }
}

fn not_found_programme(code: &str) -> ApiError {
    ApiError::NotFound(format!("programme `{code}` does not exist"))
}

/// A numeric id from the path, or a problem+json 400.
pub(crate) fn id(what: &str, raw: &str) -> ApiResult<i64> {
    raw.parse::<i64>()
        .map_err(|_| ApiError::BadRequest(format!("id: must be a {what} id (a whole number)")))
}

/// The household `id`, if it exists and lies inside the caller's scope (404 otherwise).
async fn scoped_household(state: &AppState, caller: &Caller, raw: &str) -> ApiResult<i64> {
    let hh = id("household", raw)?;
    let programme = state.registry.household_programme(hh).await?;
    if caller.user.may_access_programme(&programme) {
        Ok(hh)
    } else {
        Err(ApiError::NotFound(format!("household {hh} does not exist")))
    }
}

/// Opened for the roles whose work needs personal data, masked for the others; several roles
/// get the most permissive.
pub fn reveal(caller: &Caller) -> Reveal {
    if caller.user.has_any(STAFF) {
        Reveal::Full
    } else {
        Reveal::Masked
    }
}

/// Refuses a body sent with another content type than `expected` (`application/json` also
/// accepts `+json` types).
pub(crate) fn require_content_type(headers: &HeaderMap, expected: &str) -> ApiResult<()> {
    let ok = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .is_some_and(|v| v == expected || (expected == "application/json" && v.ends_with("+json")));
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "send the body with `Content-Type: {expected}`"
        )))
    }
}

pub(crate) fn bytes_error(status: StatusCode) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::TooLarge
    } else {
        ApiError::BadRequest("the request body could not be read".into())
    }
}

pub(crate) fn created<T>(v: T) -> (StatusCode, Json<T>) {
    (StatusCode::CREATED, Json(v))
}

// ---- programmes ------------------------------------------------------------------------------

#[utoipa::path(post, path = "/v1/programmes", tag = "programmes", request_body = NewProgramme,
    responses((status = 201, body = Programme), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it, or the programme is outside the caller's programmes", body = Problem, content_type = "application/problem+json"), (status = 409, description = "the code is taken", body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json"), (status = 422, description = "a field breaks a rule (the detail names it)", body = Problem, content_type = "application/problem+json")))]
pub async fn create_programme(
    State(state): State<AppState>,
    caller: Caller,
    body: Body<NewProgramme>,
) -> ApiResult<(StatusCode, Json<Programme>)> {
    caller.require(STAFF)?;
    let new = json(body)?;
    if !caller.user.may_access_programme(new.code.trim()) {
        return Err(ApiError::Forbidden(
            "your access is limited to some programmes, and this code is not one of them".into(),
        ));
    }
    let p = state
        .registry
        .create_programme(new, &caller.audit())
        .await?;
    Ok(created(p))
}

#[utoipa::path(get, path = "/v1/programmes", tag = "programmes",
    responses((status = 200, description = "the programmes the caller may see, in code order", body = Vec<Programme>), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json")))]
pub async fn list_programmes(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<Programme>>> {
    caller.require(READERS)?;
    Ok(Json(
        state.registry.programmes(&caller.user.programmes).await?,
    ))
}

#[utoipa::path(get, path = "/v1/programmes/{code}", tag = "programmes", params(("code" = String, Path, description = "programme code")),
    responses((status = 200, body = Programme), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, description = "no such programme, or outside the caller's programmes", body = Problem, content_type = "application/problem+json")))]
pub async fn get_programme(
    State(state): State<AppState>,
    caller: Caller,
    code: PathOf<String>,
) -> ApiResult<Json<Programme>> {
    caller.require(READERS)?;
    let code = scoped_programme(&caller, &path(code)?)?;
    Ok(Json(state.registry.programme(&code).await?))
}

// ---- budget lines ----------------------------------------------------------------------------

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBudgetLine {
    /// 1 to 40 lower-case letters, digits, `.`, `_` or `-`; the fund account is
    /// `funds:PROGRAMME:CODE`.
    pub code: String,
    #[schema(value_type = String, example = "mpca")]
    pub modality: Modality,
    /// Planned amount in the programme currency, as a string (`"1000000"`).
    pub amount: String,
}

#[utoipa::path(post, path = "/v1/programmes/{code}/budget-lines", tag = "programmes", params(("code" = String, Path, description = "programme code")), request_body = NewBudgetLine,
    responses((status = 201, body = BudgetLine), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, description = "no such programme, or outside the caller's programmes", body = Problem, content_type = "application/problem+json"), (status = 409, description = "the line or its fund account exists", body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json"), (status = 422, description = "a field breaks a rule (the detail names it)", body = Problem, content_type = "application/problem+json")))]
pub async fn add_budget_line(
    State(state): State<AppState>,
    caller: Caller,
    code: PathOf<String>,
    body: Body<NewBudgetLine>,
) -> ApiResult<(StatusCode, Json<BudgetLine>)> {
    caller.require(STAFF)?;
    let code = scoped_programme(&caller, &path(code)?)?;
    let b = json(body)?;
    let line = state
        .registry
        .add_budget_line(&code, &b.code, b.modality, &b.amount, &caller.audit())
        .await?;
    Ok(created(line))
}

#[utoipa::path(get, path = "/v1/programmes/{code}/budget-lines", tag = "programmes", params(("code" = String, Path, description = "programme code")),
    responses((status = 200, description = "the lines with their ledger figures (funded, committed, available)", body = Vec<BudgetLine>), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, description = "no such programme, or outside the caller's programmes", body = Problem, content_type = "application/problem+json")))]
pub async fn budget_lines(
    State(state): State<AppState>,
    caller: Caller,
    code: PathOf<String>,
) -> ApiResult<Json<Vec<BudgetLine>>> {
    caller.require(READERS)?;
    let code = scoped_programme(&caller, &path(code)?)?;
    Ok(Json(state.registry.budget_lines(&code).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Funding {
    /// Amount received, as a string in the programme currency.
    pub amount: String,
    /// The donor's transfer reference: funding the same line with the same reference again
    /// returns the original entry.
    pub reference: String,
    pub effective_date: NaiveDate,
}

#[utoipa::path(post, path = "/v1/programmes/{code}/budget-lines/{line}/funding", tag = "programmes", params(("code" = String, Path, description = "programme code"), ("line" = String, Path, description = "budget line code")), request_body = Funding,
    responses((status = 201, description = "the funding entry (assets:bank ← funds:PROGRAMME:LINE)", body = Posted), (status = 200, description = "same reference and content: the original entry", body = Posted), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, description = "no such programme or line, or outside the caller's programmes", body = Problem, content_type = "application/problem+json"), (status = 409, description = "the reference was used with another amount", body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json"), (status = 422, description = "a field breaks a rule (the detail names it)", body = Problem, content_type = "application/problem+json")))]
pub async fn fund_budget_line(
    State(state): State<AppState>,
    caller: Caller,
    params: PathOf<(String, String)>,
    body: Body<Funding>,
) -> ApiResult<(StatusCode, Json<Posted>)> {
    caller.require(FINANCE)?;
    let (code, line) = path(params)?;
    let code = scoped_programme(&caller, &code)?;
    let f = json(body)?;
    let posting = state
        .registry
        .fund_budget_line(
            &code,
            &line,
            &f.amount,
            &f.reference,
            f.effective_date,
            &caller.audit(),
        )
        .await?;
    Ok(match posting {
        Posting::Posted(id) => created(Posted {
            id,
            replayed: false,
        }),
        Posting::Replayed(id) => (StatusCode::OK, Json(Posted { id, replayed: true })),
    })
}

// ---- exchange rates --------------------------------------------------------------------------

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRate {
    pub rate_date: NaiveDate,
    /// Reporting-currency units per programme-currency unit, as a decimal string.
    pub rate: String,
    pub source: String,
}

#[utoipa::path(post, path = "/v1/programmes/{code}/rates", tag = "programmes", params(("code" = String, Path, description = "programme code")), request_body = NewRate,
    responses((status = 201, body = Rate), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, description = "no such programme, or outside the caller's programmes", body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json"), (status = 422, description = "a field breaks a rule (the detail names it)", body = Problem, content_type = "application/problem+json")))]
pub async fn add_rate(
    State(state): State<AppState>,
    caller: Caller,
    code: PathOf<String>,
    body: Body<NewRate>,
) -> ApiResult<(StatusCode, Json<Rate>)> {
    caller.require(FINANCE)?;
    let code = scoped_programme(&caller, &path(code)?)?;
    let r = json(body)?;
    let rate = state
        .registry
        .add_rate(&code, r.rate_date, &r.rate, &r.source, &caller.audit())
        .await?;
    Ok(created(rate))
}

#[utoipa::path(get, path = "/v1/programmes/{code}/rates", tag = "programmes", params(("code" = String, Path, description = "programme code")),
    responses((status = 200, description = "the recorded rates, by date", body = Vec<Rate>), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, description = "no such programme, or outside the caller's programmes", body = Problem, content_type = "application/problem+json")))]
pub async fn rates(
    State(state): State<AppState>,
    caller: Caller,
    code: PathOf<String>,
) -> ApiResult<Json<Vec<Rate>>> {
    caller.require(READERS)?;
    let code = scoped_programme(&caller, &path(code)?)?;
    Ok(Json(state.registry.rates(&code).await?))
}

// ---- rules -----------------------------------------------------------------------------------

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RuleCreated {
    pub programme: String,
    pub modality: String,
    /// The new version of the programme's rule for this modality.
    pub version: i32,
}

#[utoipa::path(post, path = "/v1/programmes/{code}/rules", tag = "programmes", params(("code" = String, Path, description = "programme code")),
    request_body(content = Object, content_type = "application/json", description = "a transfer-value rule: `{\"modality\": \"mpca\" | \"cash_for_work\" | \"shelter\", …}` (see `cva_programmes::rules`)"),
    responses((status = 201, body = RuleCreated), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, description = "no such programme, or outside the caller's programmes", body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json"), (status = 422, description = "the rule is refused (the detail names the field, e.g. `mpca.amount.bands[1]`)", body = Problem, content_type = "application/problem+json")))]
pub async fn add_rule(
    State(state): State<AppState>,
    caller: Caller,
    code: PathOf<String>,
    headers: HeaderMap,
    body: Result<String, StringRejection>,
) -> ApiResult<(StatusCode, Json<RuleCreated>)> {
    caller.require(STAFF)?;
    let code = scoped_programme(&caller, &path(code)?)?;
    require_content_type(&headers, "application/json")?;
    let text = body.map_err(|e| match e {
        StringRejection::InvalidUtf8(_) => {
            ApiError::BadRequest("the body is not valid UTF-8 text".into())
        }
        other => bytes_error(other.status()),
    })?;
    let rule = Rule::from_json(&text).map_err(|e| match e {
        RuleError::Invalid { field, reason } => RegistryError::Invalid { field, reason },
        other => RegistryError::invalid("rule", other.to_string()),
    })?;
    let modality = rule.modality().as_str().to_owned();
    let version = state
        .registry
        .add_rule(&code, rule, &caller.audit())
        .await?;
    Ok(created(RuleCreated {
        programme: code,
        modality,
        version,
    }))
}

// ---- households ------------------------------------------------------------------------------

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Enrolled {
    /// The household, opened (only programme staff enrol).
    pub household: HouseholdView,
    /// Possible duplicates raised by this enrolment.
    pub flags: FlagSummary,
}

#[utoipa::path(post, path = "/v1/programmes/{code}/households", tag = "households", params(("code" = String, Path, description = "programme code")), request_body = HouseholdInput,
    responses((status = 201, body = Enrolled), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, description = "no such programme, or outside the caller's programmes", body = Problem, content_type = "application/problem+json"), (status = 409, description = "the submission is already enrolled in the programme", body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json"), (status = 422, description = "a field breaks a rule (the detail names it, never its value)", body = Problem, content_type = "application/problem+json")))]
pub async fn enrol(
    State(state): State<AppState>,
    caller: Caller,
    code: PathOf<String>,
    body: Body<HouseholdInput>,
) -> ApiResult<(StatusCode, Json<Enrolled>)> {
    caller.require(STAFF)?;
    let code = scoped_programme(&caller, &path(code)?)?;
    let input = json(body)?;
    let (household, flags) = state.registry.enrol(&code, &input, &caller.audit()).await?;
    Ok(created(Enrolled { household, flags }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ImportParams {
    /// Run the whole import, duplicate checks included, and write nothing.
    pub dry_run: Option<bool>,
}

#[utoipa::path(post, path = "/v1/programmes/{code}/households/import", tag = "households", params(("code" = String, Path, description = "programme code"), ImportParams),
    request_body(content = String, content_type = "text/csv", description = "a KoboToolbox/ODK CSV export (UTF-8, `,` or `;`), Kobo's default column names"),
    responses((status = 200, description = "what the import did (or, for a dry run, would do)", body = ImportReport), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, description = "no such programme, or outside the caller's programmes", body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json"), (status = 422, description = "the file is refused and nothing was imported; `errors` lists the bad rows (row, column, reason)", body = Problem, content_type = "application/problem+json")))]
pub async fn import(
    State(state): State<AppState>,
    caller: Caller,
    code: PathOf<String>,
    params: QueryOf<ImportParams>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<ImportReport>> {
    caller.require(STAFF)?;
    let code = scoped_programme(&caller, &path(code)?)?;
    let Query(params) = params?;
    require_content_type(&headers, "text/csv")?;
    let bytes = body.map_err(|e| bytes_error(e.status()))?;
    let report = state
        .registry
        .import_households(
            &code,
            &bytes,
            &ColumnMapping::kobo_default(),
            params.dry_run.unwrap_or(false),
            &caller.audit(),
        )
        .await?;
    Ok(Json(report))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HouseholdParams {
    pub status: Option<Status>,
    /// Commune p-code, e.g. `ML050101`.
    pub commune: Option<String>,
    /// Households after this id (keyset paging: the last id of the previous page).
    pub after_id: Option<i64>,
    /// 1 to 1000; 100 by default.
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HouseholdPage {
    pub households: Vec<HouseholdView>,
    /// Pass as `after_id` to read the next page; absent on the last page.
    pub next_after_id: Option<i64>,
}

#[utoipa::path(get, path = "/v1/programmes/{code}/households", tag = "households", params(("code" = String, Path, description = "programme code"), HouseholdParams),
    responses((status = 200, description = "a page of households in id order; personal fields masked unless the caller is an admin or programme officer", body = HouseholdPage), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, description = "no such programme, or outside the caller's programmes", body = Problem, content_type = "application/problem+json")))]
pub async fn households(
    State(state): State<AppState>,
    caller: Caller,
    code: PathOf<String>,
    params: QueryOf<HouseholdParams>,
) -> ApiResult<Json<HouseholdPage>> {
    caller.require(READERS)?;
    let code = scoped_programme(&caller, &path(code)?)?;
    let Query(p) = params?;
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest("limit: must be 1 to 1000".into()));
    }
    let query = HouseholdQuery {
        status: p.status,
        commune: p.commune,
        after_id: p.after_id.unwrap_or(0),
        limit,
    };
    let households = state
        .registry
        .households(&code, &query, reveal(&caller))
        .await?;
    let next_after_id = if households.len() as i64 == limit {
        households.last().map(|h| h.id)
    } else {
        None
    };
    Ok(Json(HouseholdPage {
        households,
        next_after_id,
    }))
}

#[utoipa::path(get, path = "/v1/households/{id}", tag = "households", params(("id" = i64, Path, description = "household id")),
    responses((status = 200, description = "the household; personal fields masked unless the caller is an admin or programme officer", body = HouseholdView), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, description = "no such household, or outside the caller's programmes", body = Problem, content_type = "application/problem+json")))]
pub async fn household(
    State(state): State<AppState>,
    caller: Caller,
    raw: PathOf<String>,
) -> ApiResult<Json<HouseholdView>> {
    caller.require(READERS)?;
    let hh = scoped_household(&state, &caller, &path(raw)?).await?;
    Ok(Json(state.registry.household(hh, reveal(&caller)).await?))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusChange {
    /// Why (1 to 500 characters); required to suspend or withdraw. Never put personal data here.
    pub reason: Option<String>,
}

async fn change_status(
    state: AppState,
    caller: Caller,
    raw: PathOf<String>,
    action: StatusAction,
    body: OptionalBody<StatusChange>,
) -> ApiResult<Json<HouseholdView>> {
    caller.require(STAFF)?;
    let hh = scoped_household(&state, &caller, &path(raw)?).await?;
    let change = optional_json(body)?.unwrap_or_default();
    Ok(Json(
        state
            .registry
            .set_status(hh, action, change.reason.as_deref(), &caller.audit())
            .await?,
    ))
}

#[utoipa::path(post, path = "/v1/households/{id}/verify", tag = "households", params(("id" = i64, Path, description = "household id")), request_body = Option<StatusChange>,
    responses((status = 200, body = HouseholdView), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it, or the caller enrolled the household (type `same-person`: another person must verify it)", body = Problem, content_type = "application/problem+json"), (status = 404, description = "no such household, or outside the caller's programmes", body = Problem, content_type = "application/problem+json"), (status = 409, description = "the household's status does not allow it", body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json"), (status = 422, description = "a field breaks a rule (the detail names it)", body = Problem, content_type = "application/problem+json")))]
pub async fn verify(
    State(state): State<AppState>,
    caller: Caller,
    raw: PathOf<String>,
    body: OptionalBody<StatusChange>,
) -> ApiResult<Json<HouseholdView>> {
    change_status(state, caller, raw, StatusAction::Verify, body).await
}

#[utoipa::path(post, path = "/v1/households/{id}/suspend", tag = "households", params(("id" = i64, Path, description = "household id")), request_body = StatusChange,
    responses((status = 200, body = HouseholdView), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, description = "no such household, or outside the caller's programmes", body = Problem, content_type = "application/problem+json"), (status = 409, description = "the household's status does not allow it", body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json"), (status = 422, description = "a field breaks a rule (the detail names it)", body = Problem, content_type = "application/problem+json")))]
pub async fn suspend(
    State(state): State<AppState>,
    caller: Caller,
    raw: PathOf<String>,
    body: OptionalBody<StatusChange>,
) -> ApiResult<Json<HouseholdView>> {
    change_status(state, caller, raw, StatusAction::Suspend, body).await
}

#[utoipa::path(post, path = "/v1/households/{id}/reinstate", tag = "households", params(("id" = i64, Path, description = "household id")), request_body = Option<StatusChange>,
    responses((status = 200, body = HouseholdView), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, description = "no such household, or outside the caller's programmes", body = Problem, content_type = "application/problem+json"), (status = 409, description = "the household's status does not allow it", body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json"), (status = 422, description = "a field breaks a rule (the detail names it)", body = Problem, content_type = "application/problem+json")))]
pub async fn reinstate(
    State(state): State<AppState>,
    caller: Caller,
    raw: PathOf<String>,
    body: OptionalBody<StatusChange>,
) -> ApiResult<Json<HouseholdView>> {
    change_status(state, caller, raw, StatusAction::Reinstate, body).await
}

#[utoipa::path(post, path = "/v1/households/{id}/withdraw", tag = "households", params(("id" = i64, Path, description = "household id")), request_body = StatusChange,
    responses((status = 200, body = HouseholdView), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, description = "no such household, or outside the caller's programmes", body = Problem, content_type = "application/problem+json"), (status = 409, description = "the household's status does not allow it", body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json"), (status = 422, description = "a field breaks a rule (the detail names it)", body = Problem, content_type = "application/problem+json")))]
pub async fn withdraw(
    State(state): State<AppState>,
    caller: Caller,
    raw: PathOf<String>,
    body: OptionalBody<StatusChange>,
) -> ApiResult<Json<HouseholdView>> {
    change_status(state, caller, raw, StatusAction::Withdraw, body).await
}

// ---- duplicate flags -------------------------------------------------------------------------

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FlagParams {
    /// Only the flags still waiting for a decision (the adjudication queue).
    pub open: Option<bool>,
}

#[utoipa::path(get, path = "/v1/programmes/{code}/flags", tag = "flags", params(("code" = String, Path, description = "programme code"), FlagParams),
    responses((status = 200, description = "flags touching the programme's households, oldest first", body = Vec<FlagView>), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, description = "no such programme, or outside the caller's programmes", body = Problem, content_type = "application/problem+json")))]
pub async fn flags(
    State(state): State<AppState>,
    caller: Caller,
    code: PathOf<String>,
    params: QueryOf<FlagParams>,
) -> ApiResult<Json<Vec<FlagView>>> {
    caller.require(FLAG_READERS)?;
    let code = scoped_programme(&caller, &path(code)?)?;
    let Query(p) = params?;
    Ok(Json(
        state.registry.flags(&code, p.open.unwrap_or(false)).await?,
    ))
}

#[utoipa::path(post, path = "/v1/flags/{id}/decision", tag = "flags", params(("id" = i64, Path, description = "flag id")), request_body = Decision,
    responses((status = 200, body = FlagView), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, description = "no such flag, or one of its households is outside the caller's programmes", body = Problem, content_type = "application/problem+json"), (status = 409, description = "the flag was already decided", body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json"), (status = 422, description = "a field breaks a rule (the detail names it)", body = Problem, content_type = "application/problem+json")))]
pub async fn decide(
    State(state): State<AppState>,
    caller: Caller,
    raw: PathOf<String>,
    body: Body<Decision>,
) -> ApiResult<Json<FlagView>> {
    caller.require(STAFF)?;
    let flag = id("flag", &path(raw)?)?;
    // Deciding may withdraw either household: both must lie inside the caller's scope.
    let programmes = state.registry.flag_programmes(flag).await?;
    if !programmes
        .iter()
        .all(|p| caller.user.may_access_programme(p))
    {
        return Err(ApiError::NotFound(format!("flag {flag} does not exist")));
    }
    let decision = json(body)?;
    Ok(Json(
        state
            .registry
            .adjudicate(flag, &decision, &caller.audit())
            .await?,
    ))
}

// ---- entitlements ----------------------------------------------------------------------------

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Generate {
    /// 1 to 20 letters, digits, `.`, `_` or `-`, e.g. `2024-03`.
    pub cycle: String,
    #[schema(value_type = String, example = "mpca")]
    pub modality: Modality,
    /// The date of the entitlement entries.
    pub effective_date: NaiveDate,
}

#[utoipa::path(post, path = "/v1/programmes/{code}/entitlements/generate", tag = "entitlements", params(("code" = String, Path, description = "programme code")), request_body = Generate,
    responses((status = 200, description = "what the run did; running a cycle again grants nothing twice", body = GenerationReport), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, description = "no such programme, rule or budget line for the modality, or outside the caller's programmes", body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json"), (status = 422, description = "refused (type `budget-exceeded`: the cycle needs more than the budget line has left; nothing was written)", body = Problem, content_type = "application/problem+json")))]
pub async fn generate(
    State(state): State<AppState>,
    caller: Caller,
    code: PathOf<String>,
    body: Body<Generate>,
) -> ApiResult<Json<GenerationReport>> {
    caller.require(STAFF)?;
    let code = scoped_programme(&caller, &path(code)?)?;
    let g = json(body)?;
    Ok(Json(
        state
            .registry
            .generate_entitlements(
                &code,
                &g.cycle,
                g.modality,
                g.effective_date,
                &caller.audit(),
            )
            .await?,
    ))
}

#[utoipa::path(get, path = "/v1/households/{id}/entitlements", tag = "entitlements", params(("id" = i64, Path, description = "household id")),
    responses((status = 200, description = "the household's entitlements, oldest first", body = Vec<EntitlementView>), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, description = "no such household, or outside the caller's programmes", body = Problem, content_type = "application/problem+json")))]
pub async fn entitlements(
    State(state): State<AppState>,
    caller: Caller,
    raw: PathOf<String>,
) -> ApiResult<Json<Vec<EntitlementView>>> {
    caller.require(READERS)?;
    let hh = scoped_household(&state, &caller, &path(raw)?).await?;
    Ok(Json(state.registry.entitlements(hh).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Cancel {
    /// Why (1 to 500 characters).
    pub reason: String,
}

/// The programme of an entitlement, if it exists.
async fn entitlement_programme(state: &AppState, id: i64) -> ApiResult<Option<String>> {
    Ok(state.registry.entitlement_programme(id).await?)
}

#[utoipa::path(post, path = "/v1/entitlements/{id}/cancel", tag = "entitlements", params(("id" = i64, Path, description = "entitlement id")), request_body = Cancel,
    responses((status = 200, description = "the entitlement, cancelled (its entry reversed)", body = EntitlementView), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, description = "no such entitlement, or outside the caller's programmes", body = Problem, content_type = "application/problem+json"), (status = 409, description = "already cancelled", body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json"), (status = 422, description = "refused (a field breaks a rule, or the household was already paid)", body = Problem, content_type = "application/problem+json")))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    raw: PathOf<String>,
    body: Body<Cancel>,
) -> ApiResult<Json<EntitlementView>> {
    caller.require(STAFF)?;
    let ent = id("entitlement", &path(raw)?)?;
    let not_found = || ApiError::NotFound(format!("entitlement {ent} does not exist"));
    let programme = entitlement_programme(&state, ent)
        .await?
        .ok_or_else(not_found)?;
    if !caller.user.may_access_programme(&programme) {
        return Err(not_found());
    }
    let c = json(body)?;
    Ok(Json(
        state
            .registry
            .cancel_entitlement(ent, &c.reason, &caller.audit())
            .await?,
    ))
}
