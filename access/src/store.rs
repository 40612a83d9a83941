//! Users, roles, programme scopes and sessions in the ledger's database (both backends).
//! Every change writes an audit event in the same transaction. Password hashes never leave this
//! module: callers get [`User`]s, and [`AccessStore::login`] does the verification.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use cva_ledger::audit::{self, AuditContext, AuditRecord};
use cva_ledger::Ledger;
use serde::Serialize;
use sqlx::Row;
use uuid::Uuid;

use crate::error::Result;
use crate::password::{self, Password};
use crate::session_cache::SessionCache;
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
    cache: Arc<SessionCache>,
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
        AccessStore {
            ledger,
            cache: Arc::default(),
        }
    }

    /// On PostgreSQL, starts the session cache ([`crate::session_cache`]) so that authenticated
    /// requests need no database round trip for their session. Returns whether it is on. Without
    /// it (SQLite, or when listening fails) every request asks the database.
    pub async fn enable_session_cache(&self) -> bool {
        let Some(pool) = self.ledger.pg_pool() else {
            return false;
        };
        match self.cache.start(pool.clone()).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "session cache unavailable; checking the database per request");
                false
            }
        }
    }

    pub fn session_cache_enabled(&self) -> bool {
        self.cache.is_enabled()
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

    /// Every user, in id order: one query.
    pub async fn users(&self) -> Result<Vec<User>> {
        let rows = self.load_users(Filter::All).await?;
        Ok(rows.into_iter().map(|l| l.user).collect())
    }

    /// Loads a user and its hash by `id` or `username`.
    async fn user_row(&self, by: &str, value: &str) -> Result<Option<(User, String)>> {
        let filter = if by == "id" {
            Filter::Id(value.parse::<i64>().unwrap_or(-1))
        } else {
            Filter::Username(value.to_owned())
        };
        Ok(self
            .load_users(filter)
            .await?
            .into_iter()
            .next()
            .map(|l| (l.user, l.hash)))
    }

    /// The one place users are read: the user row with its roles and programmes aggregated in
    /// the same statement, so an authenticated request costs one round trip, not four.
    async fn load_users(&self, filter: Filter) -> Result<Vec<Loaded>> {
        let now = Utc::now();
        let mut out = Vec::new();
        if let Some(pool) = self.ledger.pg_pool() {
            let (from, cond) = filter.sql(true);
            let sql = format!(
                "SELECT u.id, u.username, u.password_hash, u.disabled, \
                 ARRAY(SELECT role FROM user_roles r WHERE r.user_id = u.id ORDER BY role), \
                 ARRAY(SELECT programme FROM user_programmes p WHERE p.user_id = u.id ORDER BY programme), \
                 {expiry} FROM {from} WHERE {cond} ORDER BY u.id",
                expiry = if matches!(filter, Filter::Session(..)) {
                    "s.expires_at"
                } else {
                    "NULL::timestamptz"
                }
            );
            let q = sqlx::query(&sql);
            let q = match &filter {
                Filter::All => q,
                Filter::Id(id) => q.bind(*id),
                Filter::Username(name) => q.bind(name.as_str()),
                Filter::Session(sid, uid) => q.bind(*sid).bind(*uid).bind(now),
            };
            for r in q.fetch_all(pool).await? {
                let row: UserRow = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
                let mut loaded = assemble(row, r.try_get(4)?, r.try_get(5)?)?;
                loaded.session_expires = r.try_get(6)?;
                out.push(loaded);
            }
        } else if let Some(pool) = self.ledger.sqlite_pool() {
            let (from, cond) = filter.sql(false);
            let sql = format!(
                "SELECT u.id, u.username, u.password_hash, u.disabled, \
                 (SELECT json_group_array(role) FROM user_roles r WHERE r.user_id = u.id), \
                 (SELECT json_group_array(programme) FROM user_programmes p WHERE p.user_id = u.id) \
                 FROM {from} WHERE {cond} ORDER BY u.id"
            );
            let q = sqlx::query(&sql);
            let q = match &filter {
                Filter::All => q,
                Filter::Id(id) => q.bind(*id),
                Filter::Username(name) => q.bind(name.as_str()),
                Filter::Session(sid, uid) => q.bind(*sid).bind(*uid).bind(micros(now)),
            };
            for r in q.fetch_all(pool).await? {
                let row: UserRow = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
                let roles: Vec<String> = serde_json::from_str(r.try_get::<&str, _>(4)?)
                    .map_err(|_| AccessError::Corrupt("user roles"))?;
                let programmes: Vec<String> = serde_json::from_str(r.try_get::<&str, _>(5)?)
                    .map_err(|_| AccessError::Corrupt("user programmes"))?;
                out.push(assemble(row, roles, programmes)?);
            }
        }
        Ok(out)
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
        if let Some(user) = self.cache.get(session, user_id.0) {
            return Ok(Some(user));
        }
        let generation = self.cache.generation();
        let found = self
            .load_users(Filter::Session(session, user_id.0))
            .await?
            .into_iter()
            .next();
        if let (Some(g), Some(l)) = (generation, &found) {
            if let Some(expires) = l.session_expires {
                let left = (expires - Utc::now()).to_std().unwrap_or_default();
                self.cache.insert(g, session, l.user.clone(), left);
            }
        }
        Ok(found.map(|l| l.user))
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

    /// Replaces a user's password and ends all of the user's sessions (a reset usually follows a
    /// suspected compromise); the change is audited without the password or its hash.
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
            let now = Utc::now();
            let n =
                sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
                    .bind(&hash)
                    .bind(now)
                    .bind(id.0)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            if n > 0 {
                sqlx::query(
                    "UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
                )
                .bind(now)
                .bind(id.0)
                .execute(&mut *tx)
                .await?;
                audit::append_pg(&mut tx, &rec).await?;
                tx.commit().await?;
            }
            n
        } else if let Some(pool) = self.ledger.sqlite_pool() {
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            let now = micros(Utc::now());
            let n =
                sqlx::query("UPDATE users SET password_hash = ?1, updated_at = ?2 WHERE id = ?3")
                    .bind(&hash)
                    .bind(now)
                    .bind(id.0)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            if n > 0 {
                sqlx::query(
                    "UPDATE sessions SET revoked_at = ?1 WHERE user_id = ?2 AND revoked_at IS NULL",
                )
                .bind(now)
                .bind(id.0)
                .execute(&mut *tx)
                .await?;
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
        self.cache.invalidate();
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
        self.cache.invalidate();
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
                // The notification reaches this process too, but a little later: clear now so
                // this server refuses the next request at once.
                self.cache.invalidate();
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

/// Which users [`AccessStore::load_users`] reads.
enum Filter {
    All,
    Id(i64),
    Username(String),
    /// An open session (not revoked, not expired) of a user who is not disabled.
    Session(Uuid, i64),
}

impl Filter {
    /// The FROM and WHERE clauses; placeholders are `$n` on PostgreSQL and `?n` on SQLite.
    fn sql(&self, pg: bool) -> (&'static str, &'static str) {
        match (self, pg) {
            (Filter::All, _) => ("users u", "TRUE"),
            (Filter::Id(_), true) => ("users u", "u.id = $1"),
            (Filter::Id(_), false) => ("users u", "u.id = ?1"),
            (Filter::Username(_), true) => ("users u", "u.username = $1"),
            (Filter::Username(_), false) => ("users u", "u.username = ?1"),
            (Filter::Session(..), true) => (
                "sessions s JOIN users u ON u.id = s.user_id",
                "s.id = $1 AND s.user_id = $2 AND s.revoked_at IS NULL AND s.expires_at > $3 AND NOT u.disabled",
            ),
            (Filter::Session(..), false) => (
                "sessions s JOIN users u ON u.id = s.user_id",
                "s.id = ?1 AND s.user_id = ?2 AND s.revoked_at IS NULL AND s.expires_at > ?3 AND u.disabled = 0",
            ),
        }
    }
}

/// A user as read by [`AccessStore::load_users`].
struct Loaded {
    user: User,
    hash: String,
    /// When the session expires (PostgreSQL session lookups only).
    session_expires: Option<DateTime<Utc>>,
}

fn assemble(row: UserRow, roles: Vec<String>, mut programmes: Vec<String>) -> Result<Loaded> {
    let (id, username, hash, disabled) = row;
    let mut parsed = Vec::with_capacity(roles.len());
    for r in roles {
        parsed.push(Role::parse(&r)?);
    }
    parsed.sort();
    programmes.sort();
    Ok(Loaded {
        user: User {
            id: UserId(id),
            username: Username(username),
            roles: parsed,
            programmes,
            disabled,
        },
        hash,
        session_expires: None,
    })
}

enum Bind {
    I64(i64),
    Uuid(Uuid),
}
