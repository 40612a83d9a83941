//! User administration (admins only): list, create, disable / enable, reset password, change
//! roles and programme scopes. Every change is audited in its own transaction.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use cva_access::password::Password;
use cva_access::{NewUser, Role, User, UserId, Username};
use serde::Deserialize;

use super::auth::{AppState, Caller};
use super::problem::{ApiError, ApiResult};

type Body<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub username: String,
    pub password: String,
    pub roles: Vec<String>,
    #[serde(default)]
    pub programmes: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetPassword {
    pub password: String,
}

#[derive(Debug, Deserialize)]
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

pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<User>>> {
    caller.require(&[Role::Admin])?;
    Ok(Json(state.access.users().await?))
}

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

pub async fn disable(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<User>> {
    caller.require(&[Role::Admin])?;
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

pub async fn enable(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<User>> {
    caller.require(&[Role::Admin])?;
    Ok(Json(
        state
            .access
            .set_disabled(UserId(id), false, &caller.audit())
            .await?,
    ))
}

pub async fn set_password(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    body: Body<SetPassword>,
) -> ApiResult<StatusCode> {
    caller.require(&[Role::Admin])?;
    let Json(b) = body?;
    state
        .access
        .set_password(UserId(id), Password::parse(&b.password)?, &caller.audit())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn set_roles(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    body: Body<SetRoles>,
) -> ApiResult<Json<User>> {
    caller.require(&[Role::Admin])?;
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
