//! `POST /v1/auth/login` and `POST /v1/auth/logout`.

use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::Extension;
use axum::Json;
use chrono::Utc;
use cva_ledger::audit::AuditContext;
use serde::{Deserialize, Serialize};

use super::auth::{AppState, Caller};
use super::problem::{ApiError, ApiResult, Problem};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_at: String,
    pub expires_in: i64,
}

/// Throttled per username and per client address; the response never says which of username
/// or password was wrong.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", security(()), request_body = Login,
    responses((status = 200, body = TokenResponse), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 429, body = Problem, content_type = "application/problem+json")))]
pub async fn login(
    State(state): State<AppState>,
    connect: Option<Extension<ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    body: Result<Json<Login>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<TokenResponse>> {
    let Json(login) = body?;
    let ip = connect
        .map(|Extension(c)| c.0.ip().to_string())
        .unwrap_or_else(|| "local".into());
    let user_key = format!(
        "user:{}",
        login.username.chars().take(64).collect::<String>()
    );
    let ip_key = format!("ip:{ip}");
    if let Err(wait) = state.throttle.check(&[&user_key, &ip_key]) {
        return Err(ApiError::Throttled(wait.as_secs().max(1)));
    }
    let user = match state.access.login(&login.username, &login.password).await {
        Ok(u) => u,
        Err(e) => {
            state.throttle.record_failure(&[&user_key, &ip_key]);
            return Err(e.into());
        }
    };
    state.throttle.record_success(&user_key);
    let ctx = AuditContext {
        actor_id: Some(user.id.0),
        actor: user.username.as_str().to_owned(),
        role: user.primary_role().as_str().to_owned(),
        request_id: super::auth::request_id(&headers),
    };
    let session = state
        .access
        .create_session(&user, state.keys.ttl, &ctx)
        .await?;
    let now = Utc::now();
    let (token, exp) = state.keys.issue(&user, session.id, now)?;
    Ok(Json(TokenResponse {
        access_token: token,
        token_type: "Bearer",
        expires_at: exp.to_rfc3339(),
        expires_in: (exp - now).num_seconds(),
    }))
}

#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth",
    responses((status = 204, description = "session ended"), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json"), (status = 403, description = "the role does not allow it", body = Problem, content_type = "application/problem+json")))]
pub async fn logout(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<axum::http::StatusCode> {
    state
        .access
        .revoke_session(caller.session, &caller.audit())
        .await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// A fresh token for the caller's session, while the session is open: clients renew before the
/// 15 minutes run out instead of sending the password again.
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth",
    responses((status = 200, body = TokenResponse), (status = 401, description = "no valid token or session", body = Problem, content_type = "application/problem+json")))]
pub async fn refresh(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<TokenResponse>> {
    let now = Utc::now();
    let (token, exp) = state.keys.issue(&caller.user, caller.session, now)?;
    Ok(Json(TokenResponse {
        access_token: token,
        token_type: "Bearer",
        expires_at: exp.to_rfc3339(),
        expires_in: (exp - now).num_seconds(),
    }))
}
