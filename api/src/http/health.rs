//! `GET /healthz`: no authentication; reports whether the database answers.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::auth::AppState;

pub async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
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
            Json(json!({"status": "ok", "database": "reachable"})),
        ),
        false => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "database": "unreachable"})),
        ),
    }
}
