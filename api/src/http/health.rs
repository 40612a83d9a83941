//! `GET /healthz`: no authentication; reports whether the database answers.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;

use super::auth::AppState;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok` or `unavailable`.
    pub status: &'static str,
    /// `reachable` or `unreachable`.
    pub database: &'static str,
}

#[utoipa::path(get, path = "/healthz", tag = "health", security(()),
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let reachable = if let Some(pool) = state.ledger.pg_pool() {
        sqlx::query("SELECT 1").execute(pool).await.is_ok()
    } else if let Some(pool) = state.ledger.sqlite_pool() {
        sqlx::query("SELECT 1").execute(pool).await.is_ok()
    } else {
        false
    };
    match reachable {
        true => (
            StatusCode::OK,
            Json(Health {
                status: "ok",
                database: "reachable",
            }),
        ),
        false => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "unavailable",
                database: "unreachable",
            }),
        ),
    }
}
