//! Building and serving the application. `app` returns the router (tests drive it with
//! `tower::ServiceExt::oneshot` or bind port 0); `serve` runs it until SIGINT/SIGTERM and then
//! drains in-flight requests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use axum::routing::{get, post, put};
use axum::Router;
use cva_access::throttle::LoginThrottle;
use cva_access::{AccessStore, TokenKeys};
use cva_ledger::committer::Committer;
use cva_ledger::Ledger;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use super::auth::AppState;
use super::{audit, health, ledger, sessions, users};

/// Largest request body accepted (an entry has at most 1,000 lines).
pub const BODY_LIMIT: usize = 1024 * 1024;

pub fn state(ledger: Ledger, keys: TokenKeys) -> AppState {
    AppState {
        access: AccessStore::new(ledger.clone()),
        committer: Committer::start(ledger.clone(), 1024),
        keys: Arc::new(keys),
        throttle: Arc::new(LoginThrottle::new(5, Duration::from_secs(15 * 60))),
        ledger,
    }
}

pub fn app(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/v1/auth/login", post(sessions::login))
        .route("/v1/auth/logout", post(sessions::logout))
        .route("/v1/users", get(users::list).post(users::create))
        .route("/v1/users/{id}/disable", post(users::disable))
        .route("/v1/users/{id}/enable", post(users::enable))
        .route("/v1/users/{id}/password", post(users::set_password))
        .route("/v1/users/{id}/roles", put(users::set_roles))
        .route("/v1/accounts", get(ledger::accounts))
        .route("/v1/accounts/{code}/balance", get(ledger::balance))
        .route("/v1/entries", post(ledger::post_entry))
        .route("/v1/entries/{id}", get(ledger::entry))
        .route("/v1/entries/{id}/reverse", post(ledger::reverse))
        .route("/v1/trial-balance", get(ledger::trial_balance))
        .route("/v1/journal", get(ledger::journal))
        .route("/v1/audit", get(audit::list))
        .with_state(state)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(
            // The span carries the request id, so every log line of a request can be found; it
            // never records headers or bodies (tokens, passwords, personal data).
            TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                let id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
            }),
        )
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

pub async fn serve(listener: tokio::net::TcpListener, state: AppState) -> std::io::Result<()> {
    axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
