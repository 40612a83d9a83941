//! Building and serving the application. `app` returns the router (tests drive it with
//! `tower::ServiceExt::oneshot` or bind port 0); `serve` runs it until SIGINT/SIGTERM and then
//! drains in-flight requests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use axum::routing::get;
use axum::{Json, Router};
use cva_access::throttle::LoginThrottle;
use cva_access::{AccessStore, TokenKeys};
use cva_ledger::committer::Committer;
use cva_ledger::Ledger;
use cva_registry::Registry;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::AppState;
use super::openapi::ApiDoc;
use super::{audit, batches, exceptions, health, ledger, registry, sessions, statements, users};

/// Largest request body accepted (an entry has at most 1,000 lines).
pub const BODY_LIMIT: usize = 1024 * 1024;

/// The server's shared state. On PostgreSQL this also starts the session cache (see
/// `cva_access::session_cache`); if that fails the server still runs, checking sessions in the
/// database on every request.
pub async fn state(ledger: Ledger, keys: TokenKeys, registry: Registry) -> AppState {
    let access = AccessStore::new(ledger.clone());
    access.enable_session_cache().await;
    AppState {
        access,
        registry,
        committer: Committer::start(ledger.clone(), 1024),
        keys: Arc::new(keys),
        throttle: Arc::new(LoginThrottle::new(5, Duration::from_secs(15 * 60))),
        ledger,
        payments: crate::payments::Payments::default(),
    }
}

/// The router and the OpenAPI document describing it, built together.
pub fn app_and_doc(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let (router, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(sessions::login))
        .routes(routes!(sessions::logout))
        .routes(routes!(sessions::refresh))
        .routes(routes!(users::list, users::create))
        .routes(routes!(users::disable))
        .routes(routes!(users::enable))
        .routes(routes!(users::set_password))
        .routes(routes!(users::set_roles))
        .routes(routes!(ledger::accounts))
        .routes(routes!(ledger::balance))
        .routes(routes!(ledger::post_entry))
        .routes(routes!(ledger::entry))
        .routes(routes!(ledger::reverse))
        .routes(routes!(ledger::trial_balance))
        .routes(routes!(ledger::journal))
        .routes(routes!(audit::list))
        .routes(routes!(
            registry::list_programmes,
            registry::create_programme
        ))
        .routes(routes!(registry::get_programme))
        .routes(routes!(registry::budget_lines, registry::add_budget_line))
        .routes(routes!(registry::fund_budget_line))
        .routes(routes!(registry::rates, registry::add_rate))
        .routes(routes!(registry::add_rule))
        .routes(routes!(registry::households, registry::enrol))
        .routes(routes!(registry::import))
        .routes(routes!(registry::household))
        .routes(routes!(registry::verify))
        .routes(routes!(registry::suspend))
        .routes(routes!(registry::reinstate))
        .routes(routes!(registry::withdraw))
        .routes(routes!(registry::flags))
        .routes(routes!(registry::decide))
        .routes(routes!(registry::generate))
        .routes(routes!(registry::entitlements))
        .routes(routes!(registry::cancel))
        .routes(routes!(batches::create, batches::list))
        .routes(routes!(batches::get_batch))
        .routes(routes!(batches::lines))
        .routes(routes!(batches::submit))
        .routes(routes!(batches::approve))
        .routes(routes!(batches::authorise))
        .routes(routes!(batches::release))
        .routes(routes!(batches::cancel))
        .routes(routes!(batches::reissue))
        .routes(routes!(batches::send))
        .routes(routes!(batches::check_reversals))
        .routes(routes!(batches::export))
        .routes(routes!(batches::results))
        .routes(routes!(batches::providers))
        .routes(routes!(batches::fund_float))
        .merge(
            // Statements are large files: their upload alone takes up to STATEMENT_LIMIT.
            OpenApiRouter::new()
                .routes(routes!(statements::upload))
                .layer(DefaultBodyLimit::max(statements::STATEMENT_LIMIT)),
        )
        .routes(routes!(statements::get_statement))
        .routes(routes!(statements::reconcile))
        .routes(routes!(statements::get_run))
        .routes(routes!(statements::items))
        .routes(routes!(exceptions::list))
        .routes(routes!(exceptions::get_exception))
        .routes(routes!(exceptions::assign))
        .routes(routes!(exceptions::comment))
        .routes(routes!(exceptions::resolve))
        .routes(routes!(exceptions::propose))
        .routes(routes!(exceptions::approve))
        .routes(routes!(exceptions::reject))
        // Reports and their verification (own body limit: a report file can be large).
        .merge(super::reports::router())
        .split_for_parts();
    let served = Arc::new(doc.clone());
    let router = router.route(
        "/v1/openapi.json",
        get(move || {
            let doc = served.clone();
            async move { Json(doc.as_ref().clone()) }
        }),
    );
    (app_layers(router, state), doc)
}

pub fn app(state: AppState) -> Router {
    app_and_doc(state).0
}

fn app_layers(router: Router<AppState>, state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    router
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
