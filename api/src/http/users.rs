//! User administration (admins only): list, create, disable / enable, reset password, change
//! roles and programme scopes. Every change is audited in its own transaction.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use cva_access::password::Password;
use cva_access::{NewUser, Role, User, UserId, Username};
use serde::Deserialize;

use super::auth::{AppState, Caller};
use super::problem::{ApiError, ApiResult, Problem};

type Body<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;
type IdPath = Result<Path<i64>, axum::extract::rejection::PathRejection>;

/// The `{id}` of the path, or a problem+json 400 (not axum's plain-text rejection).
fn user_id(p: IdPath) -> Result<i64, ApiError> {
    p.map(|Path(id)| id)
        .map_err(|_| ApiError::BadRequest("id: must be a user id (a whole number)".into()))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub username: String,
    pub password: String,
    pub roles: Vec<String>,
    #[serde(default)]
    pub programmes: Vec<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPassword {
    pub password: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRoles {
    pub roles: Vec<String>,
    #[serde(default)]
    pub programmes: Vec<String>,
}

fn roles(names: &[String]) -> Result<Vec<Role>, ApiError> {
    names
        .iter()
        .map(|r| Role::parse(r).map_err(ApiError::from))
        .collect()
}

fn programmes(list: Vec<String>) -> Result<Vec<String>, ApiError> {
    for p in &list {
        if p.is_empty()
            || p.len() > 64
            || !p
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ApiError::Unprocessable(
                "invalid-user",
                "programmes: each must be 1 to 64 letters, digits, `-` or `_`".into(),
            ));
        }
    }
    Ok(list)
}

#[utoipa::path(get, path = "/v1/users", tag = "users",
    responses((status = 200, body = Vec<User>), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json")))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<User>>> {
    caller.require(&[Role::Admin])?;
    Ok(Json(state.access.users().await?))
}

#[utoipa::path(post, path = "/v1/users", tag = "users", request_body = CreateUser,
    responses((status = 201, body = User), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Body<CreateUser>,
) -> ApiResult<(StatusCode, Json<User>)> {
    caller.require(&[Role::Admin])?;
    let Json(b) = body?;
    let new = NewUser {
        username: Username::parse(&b.username)?,
        password: Password::parse(&b.password)?,
        roles: roles(&b.roles)?,
        programmes: programmes(b.programmes)?,
    };
    let user = state.access.create_user(new, &caller.audit()).await?;
    Ok((StatusCode::CREATED, Json(user)))
}

#[utoipa::path(post, path = "/v1/users/{id}/disable", tag = "users", params(("id" = i64, Path, description = "user id")),
    responses((status = 200, body = User), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn disable(
    State(state): State<AppState>,
    caller: Caller,
    id: IdPath,
) -> ApiResult<Json<User>> {
    caller.require(&[Role::Admin])?;
    let id = user_id(id)?;
    if id == caller.user.id.0 {
        return Err(ApiError::Unprocessable(
            "invalid-user",
            "you cannot disable yourself".into(),
        ));
    }
    Ok(Json(
        state
            .access
            .set_disabled(UserId(id), true, &caller.audit())
            .await?,
    ))
}

#[utoipa::path(post, path = "/v1/users/{id}/enable", tag = "users", params(("id" = i64, Path, description = "user id")),
    responses((status = 200, body = User), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn enable(
    State(state): State<AppState>,
    caller: Caller,
    id: IdPath,
) -> ApiResult<Json<User>> {
    caller.require(&[Role::Admin])?;
    let id = user_id(id)?;
    Ok(Json(
        state
            .access
            .set_disabled(UserId(id), false, &caller.audit())
            .await?,
    ))
}

#[utoipa::path(post, path = "/v1/users/{id}/password", tag = "users", params(("id" = i64, Path, description = "user id")), request_body = SetPassword,
    responses((status = 204, description = "password replaced"), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn set_password(
    State(state): State<AppState>,
    caller: Caller,
    id: IdPath,
    body: Body<SetPassword>,
) -> ApiResult<StatusCode> {
    caller.require(&[Role::Admin])?;
    let id = user_id(id)?;
    let Json(b) = body?;
    state
        .access
        .set_password(UserId(id), Password::parse(&b.password)?, &caller.audit())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(put, path = "/v1/users/{id}/roles", tag = "users", params(("id" = i64, Path, description = "user id")), request_body = SetRoles,
    responses((status = 200, body = User), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn set_roles(
    State(state): State<AppState>,
    caller: Caller,
    id: IdPath,
    body: Body<SetRoles>,
) -> ApiResult<Json<User>> {
    caller.require(&[Role::Admin])?;
    let id = user_id(id)?;
    if id == caller.user.id.0 {
        return Err(ApiError::Unprocessable(
            "invalid-user",
            "you cannot change your own roles; another admin must".into(),
        ));
    }
    let Json(b) = body?;
    let roles = roles(&b.roles)?;
    let programmes = programmes(b.programmes)?;
    Ok(Json(
        state
            .access
            .set_roles(UserId(id), &roles, &programmes, &caller.audit())
            .await?,
    ))
}
