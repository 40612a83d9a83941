//! Authentication and role checks. Every protected handler takes a [`Caller`]: a valid bearer
//! token whose session is still open and whose user is not disabled. Handlers then declare the
//! roles they admit with [`Caller::require`], before touching any data.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use cva_access::throttle::LoginThrottle;
use cva_access::{AccessStore, Role, TokenKeys, User, UserId};
use cva_ledger::audit::AuditContext;
use cva_ledger::committer::Committer;
use cva_ledger::scope::Scope;
use cva_ledger::Ledger;
use cva_registry::Registry;
use uuid::Uuid;

use super::problem::ApiError;

/// Shared by all handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    pub ledger: Ledger,
    pub access: AccessStore,
    pub keys: Arc<TokenKeys>,
    pub throttle: Arc<LoginThrottle>,
    pub committer: Committer,
    pub registry: Registry,
    /// Payment batches and provider floats (unconfigured: every batch route answers 503).
    pub payments: crate::payments::Payments,
}

impl AppState {
    /// The same state with payment batches configured.
    pub fn with_payments(mut self, payments: crate::payments::Payments) -> AppState {
        self.payments = payments;
        self
    }
}

/// An authenticated request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: User,
    pub session: Uuid,
    pub request_id: String,
}

pub fn request_id(headers: &axum::http::HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(100).collect())
        .unwrap_or_default()
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::Unauthenticated(
                "send `Authorization: Bearer <token>` (POST /v1/auth/login)",
            ))?;
        let token = header
            .strip_prefix("Bearer ")
            .ok_or(ApiError::Unauthenticated(
                "the Authorization header must be `Bearer <token>`",
            ))?;
        let claims = state.keys.decode(token)?;
        let user_id = claims
            .sub
            .parse::<i64>()
            .map_err(|_| ApiError::Unauthenticated("the access token is invalid"))?;
        let user = state
            .access
            .active_session(claims.sid, UserId(user_id))
            .await?
            .ok_or(ApiError::Unauthenticated(
                "the session has ended or the user is disabled; log in again",
            ))?;
        Ok(Caller {
            user,
            session: claims.sid,
            request_id: request_id(&parts.headers),
        })
    }
}

impl Caller {
    /// Refuses (403) a caller who holds none of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if self.user.has_any(roles) {
            Ok(())
        } else {
            let names: Vec<&str> = roles.iter().map(Role::as_str).collect();
            Err(ApiError::Forbidden(format!(
                "this needs one of the roles: {}",
                names.join(", ")
            )))
        }
    }

    /// The part of the books this caller may see (see `cva_ledger::scope`).
    pub fn scope(&self) -> Scope {
        Scope::of(&self.user.programmes)
    }

    /// Refuses (403) a caller limited to some programmes: whole-book views (trial balance,
    /// journal, audit trail) would show the other programmes.
    pub fn require_unrestricted(&self) -> Result<(), ApiError> {
        if self.user.programmes.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "this covers every programme; your access is limited to some".into(),
            ))
        }
    }

    pub fn audit(&self) -> AuditContext {
        AuditContext {
            actor_id: Some(self.user.id.0),
            actor: self.user.username.as_str().to_owned(),
            role: self.user.primary_role().as_str().to_owned(),
            request_id: self.request_id.clone(),
        }
    }
}

/// Roles that may read the books.
pub const READERS: &[Role] = &[
    Role::Admin,
    Role::FinanceOfficer,
    Role::Auditor,
    Role::ProgrammeOfficer,
];
/// Roles that may post raw entries (MISSION.md: an admin/finance operation).
pub const POSTERS: &[Role] = &[Role::Admin, Role::FinanceOfficer];
