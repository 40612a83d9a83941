//! Users, roles, programme scopes and sessions in the ledger's database (both backends).
//! Every change writes an audit event in the same transaction. Password hashes never leave this
//! module: callers get [`User`]s, and [`AccessStore::login`] does the verification.

use chrono::{DateTime, Duration, Utc};
use cva_ledger::audit::{self, AuditContext, AuditRecord};
use cva_ledger::Ledger;
use serde::Serialize;
use sqlx::Row;
use uuid::Uuid;

use crate::error::Result;
use crate::password::{self, Password};
use crate::{AccessError, Role};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct UserId(pub i64);

/// 3–64 characters: lower-case letters, digits, `.`, `_`, `-`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Username(String);

impl Username {
    pub fn parse(s: &str) -> Result<Username> {
        let ok_len = (3..=64).contains(&s.len());
        let ok_first = s
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let ok_chars = s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
        if ok_len && ok_first && ok_chars {
            Ok(Username(s.to_owned()))
        } else {
            Err(AccessError::InvalidUsername(
                "use 3 to 64 lower-case letters, digits, `.`, `_` or `-`, starting with a letter or digit",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    #[cfg_attr(feature = "openapi", schema(value_type = i64))]
    pub id: UserId,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub username: Username,
    pub roles: Vec<Role>,
    /// Programmes this user is limited to; empty means all.
    pub programmes: Vec<String>,
    pub disabled: bool,
}

impl User {
    pub fn has_any(&self, roles: &[Role]) -> bool {
        self.roles.iter().any(|r| roles.contains(r))
    }

    /// Whether the user may see or act on `programme`.
    pub fn may_access_programme(&self, programme: &str) -> bool {
        self.programmes.is_empty() || self.programmes.iter().any(|p| p == programme)
    }

    /// The role recorded in the audit trail: the most powerful one held.
    pub fn primary_role(&self) -> Role {
        Role::ALL
            .into_iter()
            .find(|r| self.roles.contains(r))
            .unwrap_or(Role::Auditor)
    }
}

#[derive(Debug)]
pub struct NewUser {
    pub username: Username,
    pub password: Password,
    pub roles: Vec<Role>,
    pub programmes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Session {
    pub id: Uuid,
    pub user_id: UserId,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct AccessStore {
    ledger: Ledger,
}

fn record(
    ctx: &AuditContext,
    action: &str,
    object_type: &str,
    object_id: String,
    change: serde_json::Value,
) -> AuditRecord {
    AuditRecord {
        actor_id: ctx.actor_id,
        actor: ctx.actor.clone(),
        role: ctx.role.clone(),
        action: action.to_owned(),
        object_type: object_type.to_owned(),
        object_id,
        request_id: ctx.request_id.clone(),
        change,
    }
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn normalise_roles(roles: &[Role]) -> Result<Vec<Role>> {
    let mut r = roles.to_vec();
    r.sort();
    r.dedup();
    if r.is_empty() {
        return Err(AccessError::NoRole);
    }
    Ok(r)
}

fn unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

impl AccessStore {
    pub fn new(ledger: Ledger) -> Self {
        AccessStore { ledger }
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Creates a user (hashing the password off the async runtime) and records it.
    pub async fn create_user(&self, new: NewUser, ctx: &AuditContext) -> Result<User> {
        let roles = normalise_roles(&new.roles)?;
        let mut programmes = new.programmes.clone();
        programmes.sort();
        programmes.dedup();
        let hash = password::hash_blocking(new.password).await?;
        let now = Utc::now();
        let change = serde_json::json!({"username": new.username.as_str(), "roles": roles, "programmes": programmes});
        let id = if let Some(pool) = self.ledger.pg_pool() {
            let mut tx = pool.begin().await?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO users (username, password_hash, created_at, updated_at) VALUES ($1, $2, $3, $3) RETURNING id",
            )
            .bind(new.username.as_str())
            .bind(&hash)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| if unique_violation(&e) { AccessError::UserExists } else { e.into() })?;
            for r in &roles {
                sqlx::query("INSERT INTO user_roles (user_id, role) VALUES ($1, $2)")
                    .bind(id)
                    .bind(r.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            for p in &programmes {
                sqlx::query("INSERT INTO user_programmes (user_id, programme) VALUES ($1, $2)")
                    .bind(id)
                    .bind(p)
                    .execute(&mut *tx)
                    .await?;
            }
            audit::append_pg(
                &mut tx,
                &record(ctx, "user.create", "user", id.to_string(), change),
            )
            .await?;
            tx.commit().await?;
            id
        } else if let Some(pool) = self.ledger.sqlite_pool() {
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO users (username, password_hash, created_at, updated_at) VALUES (?1, ?2, ?3, ?3) RETURNING id",
            )
            .bind(new.username.as_str())
            .bind(&hash)
            .bind(micros(now))
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| if unique_violation(&e) { AccessError::UserExists } else { e.into() })?;
            for r in &roles {
                sqlx::query("INSERT INTO user_roles (user_id, role) VALUES (?1, ?2)")
                    .bind(id)
                    .bind(r.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            for p in &programmes {
                sqlx::query("INSERT INTO user_programmes (user_id, programme) VALUES (?1, ?2)")
                    .bind(id)
                    .bind(p)
                    .execute(&mut *tx)
                    .await?;
            }
            audit::append_sqlite(
                &mut tx,
                &record(ctx, "user.create", "user", id.to_string(), change),
            )
            .await?;
            tx.commit().await?;
            id
        } else {
            return Err(AccessError::Hashing);
        };
        self.user(UserId(id))
            .await?
            .ok_or(AccessError::UserNotFound(id))
    }

    /// Number of users (the first admin is created from the command line).
    pub async fn count_users(&self) -> Result<i64> {
        Ok(if let Some(pool) = self.ledger.pg_pool() {
            sqlx::query_scalar("SELECT count(*) FROM users")
                .fetch_one(pool)
                .await?
        } else if let Some(pool) = self.ledger.sqlite_pool() {
            sqlx::query_scalar("SELECT count(*) FROM users")
                .fetch_one(pool)
                .await?
        } else {
            0
        })
    }

    pub async fn user(&self, id: UserId) -> Result<Option<User>> {
        let row = self.user_row("id", &id.0.to_string()).await?;
        match row {
            Some((user, _)) => Ok(Some(user)),
            None => Ok(None),
        }
    }

    pub async fn users(&self) -> Result<Vec<User>> {
        let ids: Vec<i64> = if let Some(pool) = self.ledger.pg_pool() {
            sqlx::query_scalar("SELECT id FROM users ORDER BY id")
                .fetch_all(pool)
                .await?
        } else if let Some(pool) = self.ledger.sqlite_pool() {
            sqlx::query_scalar("SELECT id FROM users ORDER BY id")
                .fetch_all(pool)
                .await?
        } else {
            Vec::new()
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(u) = self.user(UserId(id)).await? {
                out.push(u);
            }
        }
        Ok(out)
    }

    /// Loads a user and its hash by `id` or `username`.
    async fn user_row(&self, by: &str, value: &str) -> Result<Option<(User, String)>> {
        let column = if by == "id" { "id" } else { "username" };
        let (row, roles, programmes): (Option<UserRow>, Vec<String>, Vec<String>) = if let Some(
            pool,
        ) =
            self.ledger.pg_pool()
        {
            let sql = format!(
                "SELECT id, username, password_hash, disabled FROM users WHERE {column} = $1"
            );
            let q = sqlx::query(&sql);
            let q = if by == "id" {
                q.bind(value.parse::<i64>().unwrap_or(-1))
            } else {
                q.bind(value)
            };
            match q.fetch_optional(pool).await? {
                None => (None, vec![], vec![]),
                Some(r) => {
                    let id: i64 = r.try_get(0)?;
                    let roles = sqlx::query_scalar(
                        "SELECT role FROM user_roles WHERE user_id = $1 ORDER BY role",
                    )
                    .bind(id)
                    .fetch_all(pool)
                    .await?;
                    let progs = sqlx::query_scalar("SELECT programme FROM user_programmes WHERE user_id = $1 ORDER BY programme")
                            .bind(id)
                            .fetch_all(pool)
                            .await?;
                    (
                        Some((id, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)),
                        roles,
                        progs,
                    )
                }
            }
        } else if let Some(pool) = self.ledger.sqlite_pool() {
            let sql = format!(
                "SELECT id, username, password_hash, disabled FROM users WHERE {column} = ?1"
            );
            let q = sqlx::query(&sql);
            let q = if by == "id" {
                q.bind(value.parse::<i64>().unwrap_or(-1))
            } else {
                q.bind(value)
            };
            match q.fetch_optional(pool).await? {
                None => (None, vec![], vec![]),
                Some(r) => {
                    let id: i64 = r.try_get(0)?;
                    let roles = sqlx::query_scalar(
                        "SELECT role FROM user_roles WHERE user_id = ?1 ORDER BY role",
                    )
                    .bind(id)
                    .fetch_all(pool)
                    .await?;
                    let progs = sqlx::query_scalar("SELECT programme FROM user_programmes WHERE user_id = ?1 ORDER BY programme")
                            .bind(id)
                            .fetch_all(pool)
                            .await?;
                    (
                        Some((id, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)),
                        roles,
                        progs,
                    )
                }
            }
        } else {
            (None, vec![], vec![])
        };
        let Some((id, username, hash, disabled)) = row else {
            return Ok(None);
        };
        let mut parsed = Vec::with_capacity(roles.len());
        for r in roles {
            parsed.push(Role::parse(&r)?);
        }
        parsed.sort();
        Ok(Some((
            User {
                id: UserId(id),
                username: Username(username),
                roles: parsed,
                programmes,
                disabled,
            },
            hash,
        )))
    }

    /// Verifies a username and password. Unknown users cost the same time as a wrong password;
    /// a disabled user cannot log in. The error never says which of the two was wrong.
    pub async fn login(&self, username: &str, password: &str) -> Result<User> {
        let found = match Username::parse(username) {
            Ok(u) => self.user_row("username", u.as_str()).await?,
            Err(_) => None,
        };
        let hash = found
            .as_ref()
            .map(|(_, h)| h.clone())
            .unwrap_or_else(|| password::dummy_hash().to_owned());
        let ok = password::verify_blocking(hash, password.to_owned()).await;
        match found {
            Some((user, _)) if ok && !user.disabled => Ok(user),
            _ => Err(AccessError::InvalidCredentials),
        }
    }

    /// Starts a server-side session for a logged-in user.
    pub async fn create_session(
        &self,
        user: &User,
        ttl: Duration,
        ctx: &AuditContext,
    ) -> Result<Session> {
        let id = Uuid::now_v7();
        let now = Utc::now();
        let expires_at = now + ttl;
        let rec = record(
            ctx,
            "session.login",
            "session",
            id.to_string(),
            serde_json::json!({"user_id": user.id}),
        );
        if let Some(pool) = self.ledger.pg_pool() {
            let mut tx = pool.begin().await?;
            sqlx::query("INSERT INTO sessions (id, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
                .bind(id)
                .bind(user.id.0)
                .bind(now)
                .bind(expires_at)
                .execute(&mut *tx)
                .await?;
            audit::append_pg(&mut tx, &rec).await?;
            tx.commit().await?;
        } else if let Some(pool) = self.ledger.sqlite_pool() {
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            sqlx::query("INSERT INTO sessions (id, user_id, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)")
                .bind(id)
                .bind(user.id.0)
                .bind(micros(now))
                .bind(micros(expires_at))
                .execute(&mut *tx)
                .await?;
            audit::append_sqlite(&mut tx, &rec).await?;
            tx.commit().await?;
        }
        Ok(Session {
            id,
            user_id: user.id,
            expires_at,
        })
    }

    /// The user behind a session, if the session is open (not revoked, not expired) and the
    /// user is not disabled. One query per request.
    pub async fn active_session(&self, session: Uuid, user_id: UserId) -> Result<Option<User>> {
        let now = Utc::now();
        let live: Option<i64> = if let Some(pool) = self.ledger.pg_pool() {
            sqlx::query_scalar(
                "SELECT u.id FROM sessions s JOIN users u ON u.id = s.user_id \
                 WHERE s.id = $1 AND s.user_id = $2 AND s.revoked_at IS NULL AND s.expires_at > $3 AND NOT u.disabled",
            )
            .bind(session)
            .bind(user_id.0)
            .bind(now)
            .fetch_optional(pool)
            .await?
        } else if let Some(pool) = self.ledger.sqlite_pool() {
            sqlx::query_scalar(
                "SELECT u.id FROM sessions s JOIN users u ON u.id = s.user_id \
                 WHERE s.id = ?1 AND s.user_id = ?2 AND s.revoked_at IS NULL AND s.expires_at > ?3 AND u.disabled = 0",
            )
            .bind(session)
            .bind(user_id.0)
            .bind(micros(now))
            .fetch_optional(pool)
            .await?
        } else {
            None
        };
        match live {
            Some(id) => self.user(UserId(id)).await,
            None => Ok(None),
        }
    }

    /// Ends a session (logout).
    pub async fn revoke_session(&self, session: Uuid, ctx: &AuditContext) -> Result<()> {
        let rec = record(
            ctx,
            "session.logout",
            "session",
            session.to_string(),
            serde_json::json!({}),
        );
        self.exec_audited(
            "UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
            "UPDATE sessions SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL",
            Utc::now(),
            Bind::Uuid(session),
            rec,
        )
        .await
        .map(|_| ())
    }

    /// Disables or re-enables a user; a disabled user's sessions stop working at once.
    pub async fn set_disabled(
        &self,
        id: UserId,
        disabled: bool,
        ctx: &AuditContext,
    ) -> Result<User> {
        let action = if disabled {
            "user.disable"
        } else {
            "user.enable"
        };
        let rec = record(
            ctx,
            action,
            "user",
            id.0.to_string(),
            serde_json::json!({"disabled": disabled}),
        );
        let (pg, lite) = if disabled {
            (
                "UPDATE users SET disabled = true, updated_at = $1 WHERE id = $2",
                "UPDATE users SET disabled = 1, updated_at = ?1 WHERE id = ?2",
            )
        } else {
            (
                "UPDATE users SET disabled = false, updated_at = $1 WHERE id = $2",
                "UPDATE users SET disabled = 0, updated_at = ?1 WHERE id = ?2",
            )
        };
        if self
            .exec_audited(pg, lite, Utc::now(), Bind::I64(id.0), rec)
            .await?
            == 0
        {
            return Err(AccessError::UserNotFound(id.0));
        }
        self.user(id).await?.ok_or(AccessError::UserNotFound(id.0))
    }

    /// Replaces a user's password; the change is audited without the password or its hash.
    pub async fn set_password(
        &self,
        id: UserId,
        password: Password,
        ctx: &AuditContext,
    ) -> Result<()> {
        let hash = password::hash_blocking(password).await?;
        let rec = record(
            ctx,
            "user.reset_password",
            "user",
            id.0.to_string(),
            serde_json::json!({}),
        );
        let n = if let Some(pool) = self.ledger.pg_pool() {
            let mut tx = pool.begin().await?;
            let n =
                sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
                    .bind(&hash)
                    .bind(Utc::now())
                    .bind(id.0)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            if n > 0 {
                audit::append_pg(&mut tx, &rec).await?;
                tx.commit().await?;
            }
            n
        } else if let Some(pool) = self.ledger.sqlite_pool() {
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            let n =
                sqlx::query("UPDATE users SET password_hash = ?1, updated_at = ?2 WHERE id = ?3")
                    .bind(&hash)
                    .bind(micros(Utc::now()))
                    .bind(id.0)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            if n > 0 {
                audit::append_sqlite(&mut tx, &rec).await?;
                tx.commit().await?;
            }
            n
        } else {
            0
        };
        if n == 0 {
            return Err(AccessError::UserNotFound(id.0));
        }
        Ok(())
    }

    /// Replaces a user's roles and programme scopes.
    pub async fn set_roles(
        &self,
        id: UserId,
        roles: &[Role],
        programmes: &[String],
        ctx: &AuditContext,
    ) -> Result<User> {
        let roles = normalise_roles(roles)?;
        let rec = record(
            ctx,
            "user.set_roles",
            "user",
            id.0.to_string(),
            serde_json::json!({"roles": roles, "programmes": programmes}),
        );
        if self.user(id).await?.is_none() {
            return Err(AccessError::UserNotFound(id.0));
        }
        if let Some(pool) = self.ledger.pg_pool() {
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM user_roles WHERE user_id = $1")
                .bind(id.0)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM user_programmes WHERE user_id = $1")
                .bind(id.0)
                .execute(&mut *tx)
                .await?;
            for r in &roles {
                sqlx::query("INSERT INTO user_roles (user_id, role) VALUES ($1, $2)")
                    .bind(id.0)
                    .bind(r.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            for p in programmes {
                sqlx::query("INSERT INTO user_programmes (user_id, programme) VALUES ($1, $2) ON CONFLICT DO NOTHING").bind(id.0).bind(p).execute(&mut *tx).await?;
            }
            audit::append_pg(&mut tx, &rec).await?;
            tx.commit().await?;
        } else if let Some(pool) = self.ledger.sqlite_pool() {
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            sqlx::query("DELETE FROM user_roles WHERE user_id = ?1")
                .bind(id.0)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM user_programmes WHERE user_id = ?1")
                .bind(id.0)
                .execute(&mut *tx)
                .await?;
            for r in &roles {
                sqlx::query("INSERT INTO user_roles (user_id, role) VALUES (?1, ?2)")
                    .bind(id.0)
                    .bind(r.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            for p in programmes {
                sqlx::query(
                    "INSERT OR IGNORE INTO user_programmes (user_id, programme) VALUES (?1, ?2)",
                )
                .bind(id.0)
                .bind(p)
                .execute(&mut *tx)
                .await?;
            }
            audit::append_sqlite(&mut tx, &rec).await?;
            tx.commit().await?;
        }
        self.user(id).await?.ok_or(AccessError::UserNotFound(id.0))
    }

    /// Runs one UPDATE (`$1` = time, `$2` = key) and its audit event in one transaction;
    /// returns the number of rows changed (no event when nothing changed).
    async fn exec_audited(
        &self,
        pg: &str,
        lite: &str,
        at: DateTime<Utc>,
        key: Bind,
        rec: AuditRecord,
    ) -> Result<u64> {
        if let Some(pool) = self.ledger.pg_pool() {
            let mut tx = pool.begin().await?;
            let q = sqlx::query(pg).bind(at);
            let q = match key {
                Bind::I64(v) => q.bind(v),
                Bind::Uuid(v) => q.bind(v),
            };
            let n = q.execute(&mut *tx).await?.rows_affected();
            if n > 0 {
                audit::append_pg(&mut tx, &rec).await?;
                tx.commit().await?;
            }
            Ok(n)
        } else if let Some(pool) = self.ledger.sqlite_pool() {
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            let q = sqlx::query(lite).bind(micros(at));
            let q = match key {
                Bind::I64(v) => q.bind(v),
                Bind::Uuid(v) => q.bind(v),
            };
            let n = q.execute(&mut *tx).await?.rows_affected();
            if n > 0 {
                audit::append_sqlite(&mut tx, &rec).await?;
                tx.commit().await?;
            }
            Ok(n)
        } else {
            Ok(0)
        }
    }
}

/// id, username, password hash, disabled.
type UserRow = (i64, String, String, bool);

enum Bind {
    I64(i64),
    Uuid(Uuid),
}
