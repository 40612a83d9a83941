//! An in-process cache of open sessions, for PostgreSQL, kept exact by the database's own
//! notifications.
//!
//! Every authenticated request must know that its session is still open and its user not
//! disabled. Asking the database costs one round trip per request, which halves the throughput of
//! a cheap read. The cache answers instead, and stays correct because:
//!
//! * the database announces every change that could end or alter a session: statement triggers
//!   on `users`, `user_roles`, `user_programmes` and `sessions` (migration `0004`) call
//!   `pg_notify('cva_access', …)`, which PostgreSQL delivers at commit to every listening server
//!   process, whoever made the change (the API, the CLI, or an operator with `psql`);
//! * on any notification the whole cache is dropped (access changes are rare; precision is not
//!   worth the risk) and a generation counter moves on, so a lookup that read the database before
//!   the change cannot put its stale answer back afterwards;
//! * the cache is used only while the listening connection is up: when it drops, the cache is
//!   cleared and disabled until a new listener is in place (notifications sent in between are
//!   lost, so nothing cached before can be trusted);
//! * this process's own changes also clear it synchronously, before the call returns;
//! * an entry lives at most [`MAX_AGE`] and never past its session's expiry, as a second line of
//!   defence.
//!
//! SQLite is embedded in one process and has no notifications; there every request asks the
//! database (a local read, fast enough).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use uuid::Uuid;

use crate::store::User;

/// The channel the migration's triggers notify.
pub const CHANNEL: &str = "cva_access";
/// Longest time an entry is trusted without asking the database.
pub const MAX_AGE: Duration = Duration::from_secs(30);
/// Entries kept at most; past this the cache starts again empty.
const CAPACITY: usize = 50_000;

#[derive(Debug, Default)]
struct Inner {
    generation: u64,
    entries: HashMap<Uuid, (User, Instant)>,
}

/// Shared by every clone of an [`crate::AccessStore`].
#[derive(Debug, Default)]
pub struct SessionCache {
    enabled: AtomicBool,
    inner: Mutex<Inner>,
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Drop for SessionCache {
    fn drop(&mut self) {
        if let Ok(mut task) = self.task.lock() {
            if let Some(t) = task.take() {
                t.abort();
            }
        }
    }
}

impl SessionCache {
    /// The cached user of an open `session` of `user_id`, if the cache is live and holds it.
    pub fn get(&self, session: Uuid, user_id: i64) -> Option<User> {
        if !self.enabled.load(Ordering::Acquire) {
            return None;
        }
        let inner = self.inner.lock().ok()?;
        let (user, until) = inner.entries.get(&session)?;
        (user.id.0 == user_id && Instant::now() < *until).then(|| user.clone())
    }

    /// The generation to hand back to [`SessionCache::insert`]; read it before asking the
    /// database.
    pub fn generation(&self) -> Option<u64> {
        if !self.enabled.load(Ordering::Acquire) {
            return None;
        }
        self.inner.lock().ok().map(|i| i.generation)
    }

    /// Remembers a database answer read at `generation`, unless something changed since.
    pub fn insert(&self, generation: u64, session: Uuid, user: User, ttl: Duration) {
        if !self.enabled.load(Ordering::Acquire) {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if inner.generation != generation {
            return;
        }
        if inner.entries.len() >= CAPACITY {
            inner.entries.clear();
        }
        let until = Instant::now() + ttl.min(MAX_AGE);
        inner.entries.insert(session, (user, until));
    }

    /// Forgets everything; lookups in flight will not store their answers.
    pub fn invalidate(&self) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.generation += 1;
            inner.entries.clear();
        }
    }

    fn set_enabled(&self, on: bool) {
        // Clear first when turning off, and when turning on (nothing from before is known good).
        self.invalidate();
        self.enabled.store(on, Ordering::Release);
        self.invalidate();
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    /// Starts listening on `pool`'s server and turns the cache on once the listener is in place.
    /// Returns when the first `LISTEN` succeeded (or failed: then the cache stays off and the
    /// error is returned; the caller may go on without a cache).
    pub async fn start(self: &Arc<Self>, pool: PgPool) -> Result<(), sqlx::Error> {
        let first = listen(&pool).await?;
        self.set_enabled(true);
        let weak = Arc::downgrade(self);
        let handle = tokio::spawn(async move {
            let mut listener = Some(first);
            loop {
                let Some(mut l) = listener.take() else {
                    // Reconnect with the cache off; retry every second.
                    match listen(&pool).await {
                        Ok(l) => {
                            let Some(cache) = weak.upgrade() else { return };
                            cache.set_enabled(true);
                            listener = Some(l);
                        }
                        Err(sqlx::Error::PoolClosed) => return,
                        Err(e) => {
                            tracing::warn!(error = %e, "session cache: cannot listen; retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                    continue;
                };
                let got = l.try_recv().await;
                let Some(cache) = weak.upgrade() else { return };
                match got {
                    Ok(Some(_)) => {
                        cache.invalidate();
                        listener = Some(l);
                    }
                    Err(sqlx::Error::PoolClosed) => {
                        cache.set_enabled(false);
                        return;
                    }
                    Ok(None) | Err(_) => {
                        tracing::warn!("session cache: listener connection lost; cache off");
                        cache.set_enabled(false);
                    }
                }
            }
        });
        if let Ok(mut task) = self.task.lock() {
            *task = Some(handle.abort_handle());
        }
        Ok(())
    }
}

async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut l = PgListener::connect_with(pool).await?;
    // On a lost connection, return at once: the loop turns the cache off before reconnecting,
    // because notifications sent while away are lost.
    l.eager_reconnect(false);
    l.listen(CHANNEL).await?;
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{UserId, Username};
    use crate::Role;

    fn user(id: i64) -> User {
        User {
            id: UserId(id),
            username: Username::parse("fatou").unwrap(),
            roles: vec![Role::Auditor],
            programmes: vec![],
            disabled: false,
        }
    }

    #[test]
    fn off_until_listening_and_never_answers_when_off() {
        let c = SessionCache::default();
        let s = Uuid::now_v7();
        assert_eq!(c.generation(), None);
        c.insert(0, s, user(1), MAX_AGE);
        assert_eq!(c.get(s, 1), None);
        c.set_enabled(true);
        let g = c.generation().unwrap();
        c.insert(g, s, user(1), MAX_AGE);
        assert_eq!(c.get(s, 1), Some(user(1)));
        c.set_enabled(false);
        assert_eq!(c.get(s, 1), None, "turning off forgets");
        c.set_enabled(true);
        assert_eq!(c.get(s, 1), None, "and turning on again starts empty");
    }

    #[test]
    fn an_answer_read_before_a_change_is_not_stored_after_it() {
        let c = SessionCache::default();
        c.set_enabled(true);
        let s = Uuid::now_v7();
        let before = c.generation().unwrap();
        // ... the database is read here, then the user is disabled and the notice arrives ...
        c.invalidate();
        c.insert(before, s, user(1), MAX_AGE);
        assert_eq!(c.get(s, 1), None);
    }

    #[test]
    fn entries_expire_and_belong_to_their_user() {
        let c = SessionCache::default();
        c.set_enabled(true);
        let s = Uuid::now_v7();
        let g = c.generation().unwrap();
        c.insert(g, s, user(1), Duration::ZERO);
        assert_eq!(c.get(s, 1), None, "expired");
        c.insert(g, s, user(1), Duration::from_secs(3600));
        assert_eq!(c.get(s, 2), None, "a token naming another user");
        assert_eq!(c.get(s, 1), Some(user(1)));
    }
}
