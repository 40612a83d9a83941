//! The hash-chained audit trail: who changed what, when, written in the same database
//! transaction as the change itself.
//!
//! Every state-changing action appends one [`AuditEvent`] to the `audit_events` table: its
//! time, the actor (user id, name and role), the action (`ledger.post`, `user.create`, …), the
//! object acted on (type and id), the request id, and a **digest** of the change — the hex
//! SHA-256 of the change's canonical JSON ([`change_digest`]). The change itself is not stored
//! (it may hold personal data); whoever holds it can prove it is the one recorded.
//!
//! Events form a chain: `seq` runs 1, 2, 3, … without gaps, and each event stores the hash of
//! the previous one (`prev_hash`, 64 zeros for event 1) and its own `hash`, the hex SHA-256 of
//! `prev_hash ‖ seq ‖ at ‖ actor_id ‖ actor ‖ role ‖ action ‖ object_type ‖ object_id ‖
//! request_id ‖ digest`, each field as an 8-byte big-endian length followed by its UTF-8 bytes
//! (`seq` and `at` — microseconds since the Unix epoch — in decimal; a missing `actor_id` is the
//! empty string). Times are truncated to microseconds before hashing, which is what both
//! databases store. The database refuses UPDATE and DELETE on the table (triggers, both
//! backends), so rewriting history takes someone who can drop the triggers, and
//! [`Ledger::verify_audit`](crate::Ledger::verify_audit) (and `cva audit verify`) then walks
//! the chain and names the first event that was
//!
//! - **deleted**: `seq` jumps ([`ChainBreak::Missing`], naming the missing seq);
//! - **reordered** or renumbered: the event does not link to its predecessor and its hash no
//!   longer matches its content at this position ([`ChainBreak::Reordered`]);
//! - **unlinked**: its `prev_hash` is not its predecessor's hash but its own hash is consistent
//!   (someone rewrote the event and recomputed its hash, or forged its predecessor)
//!   ([`ChainBreak::Unlinked`]);
//! - **edited**: its hash does not match its content ([`ChainBreak::Edited`]).
//!
//! **What the chain alone cannot detect**: removing the *last* events (truncating the tail)
//! leaves a shorter chain that is perfectly intact, and someone who can write the table can
//! also rewrite every event from some point on with freshly computed hashes. Both are caught
//! only against a head recorded elsewhere: keep the `(seq, hash)` of the head that
//! verification reports somewhere the database's writers cannot reach, and pass it back as an
//! [`AuditAnchor`] ([`Ledger::verify_audit_anchored`](crate::Ledger::verify_audit_anchored),
//! `cva audit verify --expect-head SEQ:HASH`).
//!
//! # Writing events
//!
//! The ledger writes its own events: [`Ledger::post_audited`](crate::Ledger::post_audited),
//! `post_many_audited`, `reverse_audited`, `open_account_audited` and
//! [`Committer::post_audited`](crate::committer::Committer::post_audited) take an
//! [`AuditContext`]. Other crates append events inside their own transactions with
//! [`append_pg`] / [`append_sqlite`]:
//!
//! ```no_run
//! # async fn demo(pool: sqlx::PgPool) -> Result<(), cva_ledger::LedgerError> {
//! use cva_ledger::audit::{self, AuditContext};
//! let ctx = AuditContext {
//!     actor_id: Some(1),
//!     actor: "amina".into(),
//!     role: "admin".into(),
//!     request_id: "0190f5c2-…".into(),
//! };
//! let mut tx = pool.begin().await?;
//! // … the change itself, in `tx` …
//! let record = ctx.record("user.create", "user", "42", serde_json::json!({"username": "moussa"}));
//! audit::append_pg(&mut tx, &record).await?;
//! tx.commit().await?;
//! # Ok(()) }
//! ```
//!
//! Appenders are serialised until their transaction ends: on PostgreSQL by a transaction-level
//! advisory lock ([`PG_LOCK_KEY`]; use the default READ COMMITTED isolation, so that the last
//! event is read after the lock is granted), on SQLite by its single writer (begin the
//! transaction with `BEGIN IMMEDIATE`). Append as late as possible in the transaction: the lock
//! is held until commit. If two appenders ever raced anyway, the primary key on `seq` would
//! refuse the second one rather than fork the chain.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use futures::stream::{BoxStream, StreamExt};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::account::AccountSpec;
use crate::entry::{canonical_json, EntryError, NewEntry};
use crate::error::{LedgerError, Result};
use crate::store::{multi_insert, now_micros, refusal};

/// `prev_hash` of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The PostgreSQL advisory lock (`pg_advisory_xact_lock`) that serialises appenders.
pub const PG_LOCK_KEY: i64 = 0x6376_615f_6175_6474; // "cva_audt"

/// Most events one [`AuditQuery`] returns.
pub const MAX_PAGE: u32 = 1000;

/// Longest text field of an event, in characters.
const MAX_FIELD_CHARS: usize = 500;

/// Who acts, and under which request: what every audited call needs besides the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditContext {
    /// The user's id, when the actor is a user of the system.
    pub actor_id: Option<i64>,
    /// The actor's name (`amina`, `cli:operator`).
    pub actor: String,
    /// The role the actor acted in.
    pub role: String,
    /// Correlates the event with logs and with the other events of the same request.
    pub request_id: String,
}

impl AuditContext {
    /// The record of one action by this actor.
    pub fn record(
        &self,
        action: &str,
        object_type: &str,
        object_id: impl Into<String>,
        change: serde_json::Value,
    ) -> AuditRecord {
        AuditRecord {
            actor_id: self.actor_id,
            actor: self.actor.clone(),
            role: self.role.clone(),
            action: action.to_owned(),
            object_type: object_type.to_owned(),
            object_id: object_id.into(),
            request_id: self.request_id.clone(),
            change,
        }
    }

    /// Refuses empty or oversized fields before anything is written.
    pub fn validate(&self) -> Result<()> {
        check_field("actor", &self.actor)?;
        check_field("role", &self.role)?;
        check_field("request_id", &self.request_id)
    }

    fn pending(
        &self,
        action: &str,
        object_type: &str,
        object_id: String,
        digest: String,
    ) -> Pending {
        Pending {
            actor_id: self.actor_id,
            actor: self.actor.clone(),
            role: self.role.clone(),
            action: action.to_owned(),
            object_type: object_type.to_owned(),
            object_id,
            request_id: self.request_id.clone(),
            digest,
        }
    }
}

fn check_field(name: &str, value: &str) -> Result<()> {
    let n = value.chars().count();
    if value.trim().is_empty() || n > MAX_FIELD_CHARS || value.chars().any(char::is_control) {
        return Err(EntryError::field(
            format!("audit.{name}"),
            format!("must be 1 to {MAX_FIELD_CHARS} characters, without control characters"),
        )
        .into());
    }
    Ok(())
}

/// One action to record, as a caller supplies it. Only the digest of `change` is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    pub actor_id: Option<i64>,
    pub actor: String,
    pub role: String,
    /// What was done, `area.verb`: `ledger.post`, `user.create`.
    pub action: String,
    /// What it was done to: `entry`, `account`, `user`, …
    pub object_type: String,
    pub object_id: String,
    pub request_id: String,
    /// The change itself (new values, or the relevant part of them); hashed, never stored.
    pub change: serde_json::Value,
}

impl AuditRecord {
    /// A record of `action` on `object_type` `object_id` by the context's actor.
    pub fn new(
        ctx: &AuditContext,
        action: &str,
        object_type: &str,
        object_id: impl Into<String>,
        change: serde_json::Value,
    ) -> AuditRecord {
        AuditRecord {
            actor_id: ctx.actor_id,
            actor: ctx.actor.clone(),
            role: ctx.role.clone(),
            action: action.to_owned(),
            object_type: object_type.to_owned(),
            object_id: object_id.into(),
            request_id: ctx.request_id.clone(),
            change,
        }
    }

    fn pending(&self) -> Result<Pending> {
        check_field("actor", &self.actor)?;
        check_field("role", &self.role)?;
        check_field("action", &self.action)?;
        check_field("object_type", &self.object_type)?;
        check_field("object_id", &self.object_id)?;
        check_field("request_id", &self.request_id)?;
        Ok(Pending {
            actor_id: self.actor_id,
            actor: self.actor.clone(),
            role: self.role.clone(),
            action: self.action.clone(),
            object_type: self.object_type.clone(),
            object_id: self.object_id.clone(),
            request_id: self.request_id.clone(),
            digest: change_digest(&self.change),
        })
    }
}

/// Hex SHA-256 of the change's canonical JSON (object keys sorted): what an event stores.
pub fn change_digest(change: &serde_json::Value) -> String {
    hex::encode(Sha256::digest(canonical_json(change).as_bytes()))
}

/// The change recorded for a posted entry: everything its poster chose (key, description,
/// date, metadata, the entry it reverses, the lines). The entry's id is the event's object.
pub fn entry_change(entry: &NewEntry) -> serde_json::Value {
    let lines: Vec<serde_json::Value> = entry
        .lines
        .iter()
        .map(|l| {
            serde_json::json!({
                "account": l.account.as_str(),
                "side": l.side.as_str(),
                "amount": l.amount.number(),
                "currency": l.amount.currency().code(),
            })
        })
        .collect();
    serde_json::json!({
        "idempotency_key": entry.idempotency_key.as_str(),
        "description": entry.description,
        "effective_date": entry.effective_date.to_string(),
        "metadata": entry.metadata,
        "reverses": entry.reverses.map(|r| r.to_string()),
        "lines": lines,
    })
}

/// The change recorded for an account opened explicitly.
pub fn account_change(spec: &AccountSpec) -> serde_json::Value {
    serde_json::json!({
        "code": spec.code.as_str(),
        "account_type": spec.account_type.as_str(),
        "currency": spec.currency.code(),
        "rule": spec.rule.as_str(),
    })
}

/// An event ready to be chained (built by the ledger from an [`AuditRecord`] or an
/// [`AuditContext`]): everything but its place in the chain.
#[derive(Debug, Clone)]
pub struct Pending {
    actor_id: Option<i64>,
    actor: String,
    role: String,
    action: String,
    object_type: String,
    object_id: String,
    request_id: String,
    digest: String,
}

/// How the ledger audits one entry of a batch if the entry is written.
#[derive(Debug, Clone)]
pub(crate) struct EntryAudit<'a> {
    ctx: &'a AuditContext,
    /// `ledger.post` or `ledger.reverse`.
    action: &'static str,
    /// The digest of [`entry_change`]: computed once, before the transaction.
    digest: String,
}

impl<'a> EntryAudit<'a> {
    pub(crate) fn new(ctx: &'a AuditContext, action: &'static str, entry: &NewEntry) -> Self {
        EntryAudit {
            ctx,
            action,
            digest: change_digest(&entry_change(entry)),
        }
    }

    /// The event for the entry written with this id.
    pub(crate) fn pending(&self, id: crate::entry::EntryId) -> Pending {
        self.ctx
            .pending(self.action, "entry", id.to_string(), self.digest.clone())
    }
}

pub(crate) fn account_pending(ctx: &AuditContext, spec: &AccountSpec) -> Pending {
    ctx.pending(
        "ledger.open_account",
        "account",
        spec.code.to_string(),
        change_digest(&account_change(spec)),
    )
}

/// One stored event of the trail.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEvent {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub actor_id: Option<i64>,
    pub actor: String,
    pub role: String,
    pub action: String,
    pub object_type: String,
    pub object_id: String,
    pub request_id: String,
    /// Hex SHA-256 of the change's canonical JSON.
    pub digest: String,
    /// The previous event's `hash` ([`GENESIS_HASH`] for event 1).
    pub prev_hash: String,
    /// Hex SHA-256 over `prev_hash`, `seq`, `at` and every field above (see the module doc).
    pub hash: String,
}

impl AuditEvent {
    /// The hash this event should carry, recomputed from its content and `prev_hash`.
    pub fn compute_hash(&self) -> String {
        let mut h = Sha256::new();
        let mut field = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        };
        field(self.prev_hash.as_bytes());
        field(self.seq.to_string().as_bytes());
        field(self.at.timestamp_micros().to_string().as_bytes());
        field(
            self.actor_id
                .map(|id| id.to_string())
                .unwrap_or_default()
                .as_bytes(),
        );
        for text in [
            &self.actor,
            &self.role,
            &self.action,
            &self.object_type,
            &self.object_id,
            &self.request_id,
            &self.digest,
        ] {
            field(text.as_bytes());
        }
        hex::encode(h.finalize())
    }

    /// The anchor of a trail whose head is this event.
    pub fn anchor(&self) -> AuditAnchor {
        AuditAnchor {
            seq: self.seq,
            hash: self.hash.clone(),
        }
    }
}

/// Places pending events after `last` (the current head, if any), all at time `at`.
fn chain(last: Option<(i64, String)>, at: DateTime<Utc>, pending: &[Pending]) -> Vec<AuditEvent> {
    let (mut seq, mut prev_hash) = last.unwrap_or_else(|| (0, GENESIS_HASH.to_owned()));
    let at = truncate_micros(at);
    pending
        .iter()
        .map(|p| {
            seq += 1;
            let mut e = AuditEvent {
                seq,
                at,
                actor_id: p.actor_id,
                actor: p.actor.clone(),
                role: p.role.clone(),
                action: p.action.clone(),
                object_type: p.object_type.clone(),
                object_id: p.object_id.clone(),
                request_id: p.request_id.clone(),
                digest: p.digest.clone(),
                prev_hash: std::mem::take(&mut prev_hash),
                hash: String::new(),
            };
            e.hash = e.compute_hash();
            prev_hash = e.hash.clone();
            e
        })
        .collect()
}

fn truncate_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// Filters and keyset paging for reading the trail, oldest first. Every filter is optional;
/// `from` is inclusive and `to` exclusive. The next page starts after the last `seq` returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub object_type: Option<String>,
    pub object_id: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Only events with a greater `seq` (0: from the start).
    pub after_seq: i64,
    /// 1 to [`MAX_PAGE`].
    pub limit: u32,
}

impl Default for AuditQuery {
    fn default() -> Self {
        AuditQuery {
            actor: None,
            action: None,
            object_type: None,
            object_id: None,
            from: None,
            to: None,
            after_seq: 0,
            limit: 100,
        }
    }
}

impl AuditQuery {
    pub fn validate(&self) -> Result<()> {
        if self.limit == 0 || self.limit > MAX_PAGE {
            return Err(EntryError::field("limit", format!("must be 1 to {MAX_PAGE}")).into());
        }
        if self.after_seq < 0 {
            return Err(EntryError::field("after_seq", "must not be negative").into());
        }
        Ok(())
    }
}

/// A head recorded outside the database: the trail must reach `seq`, and event `seq` must
/// carry `hash`. Written and parsed as `SEQ:HASH`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditAnchor {
    pub seq: i64,
    pub hash: String,
}

impl fmt::Display for AuditAnchor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.seq, self.hash)
    }
}

impl FromStr for AuditAnchor {
    type Err = EntryError;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let bad = || {
            EntryError::field(
                "anchor",
                "must be SEQ:HASH (a positive number, a colon and 64 hex digits)",
            )
        };
        let (seq, hash) = s.trim().split_once(':').ok_or_else(bad)?;
        let seq: i64 = seq.parse().map_err(|_| bad())?;
        let hash = hash.to_ascii_lowercase();
        if seq < 1 || hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        Ok(AuditAnchor { seq, hash })
    }
}

/// The first place where the trail is not what was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChainBreak {
    /// Event `seq` is not there: the trail jumps from `seq − 1` to `next`.
    Missing { seq: i64, next: i64 },
    /// Event `seq` does not link to its predecessor and its hash does not match its content
    /// at this position: events were reordered, or deleted and renumbered.
    Reordered { seq: i64 },
    /// Event `seq` has a consistent hash but does not link to its predecessor: it, or its
    /// predecessor, was rewritten with a recomputed hash.
    Unlinked { seq: i64 },
    /// Event `seq`'s hash does not match its content.
    Edited { seq: i64 },
    /// The trail ends at `seq − 1`, before the anchored head `anchor_seq`.
    Truncated { seq: i64, anchor_seq: i64 },
    /// Event `seq` is the anchored head but carries another hash: the trail was rewritten.
    AnchorMismatch { seq: i64 },
}

impl ChainBreak {
    /// The event named: the first one missing, moved, rewritten or edited.
    pub fn seq(&self) -> i64 {
        match self {
            ChainBreak::Missing { seq, .. }
            | ChainBreak::Reordered { seq }
            | ChainBreak::Unlinked { seq }
            | ChainBreak::Edited { seq }
            | ChainBreak::Truncated { seq, .. }
            | ChainBreak::AnchorMismatch { seq } => *seq,
        }
    }
}

impl fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChainBreak::Missing { seq, next } if *seq == 1 => write!(
                f,
                "audit event {seq} is missing (deleted): the trail starts at event {next}"
            ),
            ChainBreak::Missing { seq, next } => write!(
                f,
                "audit event {seq} is missing (deleted): the trail goes from event {} to event {next}",
                seq - 1
            ),
            ChainBreak::Reordered { seq } => write!(
                f,
                "audit event {seq} was reordered or renumbered: it does not follow event {} and its hash does not match its content at this position",
                seq - 1
            ),
            ChainBreak::Unlinked { seq } => write!(
                f,
                "audit event {seq} does not follow event {}: its prev_hash is not that event's hash (one of them was rewritten)",
                seq - 1
            ),
            ChainBreak::Edited { seq } => write!(
                f,
                "audit event {seq} was edited: its hash does not match its content"
            ),
            ChainBreak::Truncated { seq, anchor_seq } => write!(
                f,
                "audit event {seq} is missing (deleted): the trail ends at event {}, but the expected head is event {anchor_seq}",
                seq - 1
            ),
            ChainBreak::AnchorMismatch { seq } => write!(
                f,
                "audit event {seq} is not the expected head: its hash differs from the anchor (the trail was rewritten up to there)"
            ),
        }
    }
}

/// What [`Ledger::verify_audit`](crate::Ledger::verify_audit) found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditVerification {
    /// Events checked (up to the first break).
    pub events: u64,
    /// The last event of an intact trail: record it elsewhere as an [`AuditAnchor`].
    pub head: Option<AuditAnchor>,
    /// The first break, if any.
    pub broken: Option<ChainBreak>,
}

impl AuditVerification {
    pub fn is_intact(&self) -> bool {
        self.broken.is_none()
    }
}

/// A row of the trail as read for verification: an event, or a row whose values cannot even
/// be read back (someone wrote a value of the wrong type into it).
#[derive(Debug)]
pub(crate) enum Scanned {
    Event(Box<AuditEvent>),
    Unreadable { seq: i64 },
}

/// Walks the trail in `seq` order and stops at the first break. Memory stays bounded.
pub(crate) async fn verify_chain(
    mut rows: BoxStream<'_, Result<Scanned>>,
    anchor: Option<&AuditAnchor>,
) -> Result<AuditVerification> {
    let mut events = 0u64;
    let mut prev: Option<AuditAnchor> = None;
    let broken = |events, prev: Option<AuditAnchor>, b| -> Result<AuditVerification> {
        Ok(AuditVerification {
            events,
            head: prev,
            broken: Some(b),
        })
    };
    while let Some(row) = rows.next().await {
        let expected = prev.as_ref().map_or(1, |p| p.seq + 1);
        let e = match row? {
            Scanned::Event(e) => *e,
            Scanned::Unreadable { seq } if seq == expected => {
                return broken(events, prev, ChainBreak::Edited { seq })
            }
            Scanned::Unreadable { seq } => return broken(events, prev, missing(expected, seq)),
        };
        if e.seq != expected {
            return broken(events, prev, missing(expected, e.seq));
        }
        let prev_hash = prev.as_ref().map_or(GENESIS_HASH, |p| p.hash.as_str());
        let linked = e.prev_hash == prev_hash;
        let consistent = e.compute_hash() == e.hash;
        let seq = e.seq;
        match (linked, consistent) {
            (true, true) => {}
            (false, false) => return broken(events, prev, ChainBreak::Reordered { seq }),
            (false, true) => return broken(events, prev, ChainBreak::Unlinked { seq }),
            (true, false) => return broken(events, prev, ChainBreak::Edited { seq }),
        }
        if let Some(a) = anchor {
            if a.seq == seq && a.hash != e.hash {
                return broken(events, prev, ChainBreak::AnchorMismatch { seq });
            }
        }
        events += 1;
        prev = Some(e.anchor());
    }
    if let Some(a) = anchor {
        let last = prev.as_ref().map_or(0, |p| p.seq);
        if last < a.seq {
            return broken(
                events,
                prev,
                ChainBreak::Truncated {
                    seq: last + 1,
                    anchor_seq: a.seq,
                },
            );
        }
    }
    Ok(AuditVerification {
        events,
        head: prev,
        broken: None,
    })
}

fn missing(expected: i64, found: i64) -> ChainBreak {
    ChainBreak::Missing {
        seq: expected,
        next: found,
    }
}

// ---------------------------------------------------------------------------------------------
// SQL, shared by both backends where the dialects agree.

const COLUMNS: &str =
    "seq, at, actor_id, actor, role, action, object_type, object_id, request_id, digest, prev_hash, hash";

const HEAD: &str = "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1";

const ALL_IN_ORDER: &str =
    "SELECT seq, at, actor_id, actor, role, action, object_type, object_id, \
     request_id, digest, prev_hash, hash FROM audit_events ORDER BY seq";

/// The filtered page query; `param(n, sql_type)` writes the dialect's placeholder `n`.
fn page_sql(param: impl Fn(usize, &str) -> String) -> String {
    format!(
        "SELECT {COLUMNS} FROM audit_events WHERE seq > {p1} \
         AND ({p2} IS NULL OR actor = {p2}) AND ({p3} IS NULL OR action = {p3}) \
         AND ({p4} IS NULL OR object_type = {p4}) AND ({p5} IS NULL OR object_id = {p5}) \
         AND ({p6} IS NULL OR at >= {p6}) AND ({p7} IS NULL OR at < {p7}) \
         ORDER BY seq LIMIT {p8}",
        p1 = param(1, "int8"),
        p2 = param(2, "text"),
        p3 = param(3, "text"),
        p4 = param(4, "text"),
        p5 = param(5, "text"),
        p6 = param(6, "timestamptz"),
        p7 = param(7, "timestamptz"),
        p8 = param(8, "int8"),
    )
}

/// Reads an event from a row of `COLUMNS`; `at` is decoded by the backend.
fn event_from_row<R>(r: &R, at: DateTime<Utc>) -> Result<AuditEvent>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(AuditEvent {
        seq: r.try_get(0)?,
        at,
        actor_id: r.try_get(2)?,
        actor: r.try_get(3)?,
        role: r.try_get(4)?,
        action: r.try_get(5)?,
        object_type: r.try_get(6)?,
        object_id: r.try_get(7)?,
        request_id: r.try_get(8)?,
        digest: r.try_get(9)?,
        prev_hash: r.try_get(10)?,
        hash: r.try_get(11)?,
    })
}

// --- PostgreSQL ------------------------------------------------------------------------------

/// Appends one event inside the caller's PostgreSQL transaction (READ COMMITTED), after
/// taking the appenders' advisory lock (held until the transaction ends). Returns the event
/// as stored.
pub async fn append_pg(conn: &mut sqlx::PgConnection, record: &AuditRecord) -> Result<AuditEvent> {
    let mut events = pg_append(conn, &[record.pending()?]).await?;
    events
        .pop()
        .ok_or_else(|| LedgerError::Corrupt("no audit event appended".into()))
}

pub(crate) async fn pg_append(
    conn: &mut sqlx::PgConnection,
    pending: &[Pending],
) -> Result<Vec<AuditEvent>> {
    if pending.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(PG_LOCK_KEY)
        .execute(&mut *conn)
        .await?;
    let head: Option<(i64, String)> = sqlx::query_as(HEAD).fetch_optional(&mut *conn).await?;
    let events = chain(head, now_micros(), pending);
    let column = |f: fn(&AuditEvent) -> &str| -> Vec<&str> { events.iter().map(f).collect() };
    sqlx::query(&format!(
        "INSERT INTO audit_events ({COLUMNS}) \
         SELECT s, $2::timestamptz, ai, a, r, ac, ot, oi, ri, d, ph, h FROM UNNEST($1::int8[], $3::int8[], \
           $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], \
           $11::text[], $12::text[]) AS t(s, ai, a, r, ac, ot, oi, ri, d, ph, h)"
    ))
    .bind(events.iter().map(|e| e.seq).collect::<Vec<_>>())
    .bind(events[0].at)
    .bind(events.iter().map(|e| e.actor_id).collect::<Vec<_>>())
    .bind(column(|e| e.actor.as_str()))
    .bind(column(|e| e.role.as_str()))
    .bind(column(|e| e.action.as_str()))
    .bind(column(|e| e.object_type.as_str()))
    .bind(column(|e| e.object_id.as_str()))
    .bind(column(|e| e.request_id.as_str()))
    .bind(column(|e| e.digest.as_str()))
    .bind(column(|e| e.prev_hash.as_str()))
    .bind(column(|e| e.hash.as_str()))
    .execute(&mut *conn)
    .await
    .map_err(refusal)?;
    Ok(events)
}

fn pg_event(r: &sqlx::postgres::PgRow) -> Result<AuditEvent> {
    event_from_row(r, r.try_get(1)?)
}

pub(crate) async fn pg_page(pool: &sqlx::PgPool, q: &AuditQuery) -> Result<Vec<AuditEvent>> {
    let sql = page_sql(|n, ty| format!("${n}::{ty}"));
    let rows = sqlx::query(&sql)
        .bind(q.after_seq)
        .bind(q.actor.as_deref())
        .bind(q.action.as_deref())
        .bind(q.object_type.as_deref())
        .bind(q.object_id.as_deref())
        .bind(q.from)
        .bind(q.to)
        .bind(i64::from(q.limit))
        .fetch_all(pool)
        .await?;
    rows.iter().map(pg_event).collect()
}

pub(crate) fn pg_scan(pool: &sqlx::PgPool) -> BoxStream<'_, Result<Scanned>> {
    sqlx::query(ALL_IN_ORDER)
        .fetch(pool)
        .map(|r| -> Result<Scanned> {
            let r = r?;
            Ok(match pg_event(&r) {
                Ok(e) => Scanned::Event(Box::new(e)),
                Err(_) => Scanned::Unreadable { seq: r.try_get(0)? },
            })
        })
        .boxed()
}

// --- SQLite ----------------------------------------------------------------------------------

/// Rows per multi-row INSERT (12 columns × rows stays under SQLite's 32766 parameters).
const SQLITE_CHUNK: usize = 1000;

/// Appends one event inside the caller's SQLite write transaction (`BEGIN IMMEDIATE`: SQLite
/// has one writer, which serialises appenders). Returns the event as stored.
pub async fn append_sqlite(
    conn: &mut sqlx::SqliteConnection,
    record: &AuditRecord,
) -> Result<AuditEvent> {
    let mut events = sqlite_append(conn, &[record.pending()?]).await?;
    events
        .pop()
        .ok_or_else(|| LedgerError::Corrupt("no audit event appended".into()))
}

pub(crate) async fn sqlite_append(
    conn: &mut sqlx::SqliteConnection,
    pending: &[Pending],
) -> Result<Vec<AuditEvent>> {
    if pending.is_empty() {
        return Ok(Vec::new());
    }
    let head: Option<(i64, String)> = sqlx::query_as(HEAD).fetch_optional(&mut *conn).await?;
    let events = chain(head, now_micros(), pending);
    for chunk in events.chunks(SQLITE_CHUNK) {
        let sql = multi_insert(
            &format!("INSERT INTO audit_events ({COLUMNS})"),
            12,
            chunk.len(),
        );
        let mut q = sqlx::query(&sql);
        for e in chunk {
            q = q
                .bind(e.seq)
                .bind(e.at.timestamp_micros())
                .bind(e.actor_id)
                .bind(e.actor.as_str())
                .bind(e.role.as_str())
                .bind(e.action.as_str())
                .bind(e.object_type.as_str())
                .bind(e.object_id.as_str())
                .bind(e.request_id.as_str())
                .bind(e.digest.as_str())
                .bind(e.prev_hash.as_str())
                .bind(e.hash.as_str());
        }
        q.execute(&mut *conn).await.map_err(refusal)?;
    }
    Ok(events)
}

fn sqlite_event(r: &sqlx::sqlite::SqliteRow) -> Result<AuditEvent> {
    let micros: i64 = r.try_get(1)?;
    let at = DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| LedgerError::Corrupt(format!("audit event time {micros}")))?;
    event_from_row(r, at)
}

pub(crate) async fn sqlite_page(
    pool: &sqlx::SqlitePool,
    q: &AuditQuery,
) -> Result<Vec<AuditEvent>> {
    let sql = page_sql(|n, _| format!("?{n}"));
    let rows = sqlx::query(&sql)
        .bind(q.after_seq)
        .bind(q.actor.as_deref())
        .bind(q.action.as_deref())
        .bind(q.object_type.as_deref())
        .bind(q.object_id.as_deref())
        .bind(q.from.map(|t| t.timestamp_micros()))
        .bind(q.to.map(|t| t.timestamp_micros()))
        .bind(i64::from(q.limit))
        .fetch_all(pool)
        .await?;
    rows.iter().map(sqlite_event).collect()
}

pub(crate) fn sqlite_scan(pool: &sqlx::SqlitePool) -> BoxStream<'_, Result<Scanned>> {
    sqlx::query(ALL_IN_ORDER)
        .fetch(pool)
        .map(|r| -> Result<Scanned> {
            let r = r?;
            Ok(match sqlite_event(&r) {
                Ok(e) => Scanned::Event(Box::new(e)),
                Err(_) => Scanned::Unreadable { seq: r.try_get(0)? },
            })
        })
        .boxed()
}

/// A connection the audit trail can be appended on, so that code written once for both
/// backends (the same SQL on a PostgreSQL or an SQLite transaction) can record its events:
/// `AuditConn::append(&mut *tx, &record).await?`.
pub trait AuditConn: Send {
    fn append<'a>(
        &'a mut self,
        record: &'a AuditRecord,
    ) -> futures::future::BoxFuture<'a, Result<AuditEvent>>;
}

impl AuditConn for sqlx::PgConnection {
    fn append<'a>(
        &'a mut self,
        record: &'a AuditRecord,
    ) -> futures::future::BoxFuture<'a, Result<AuditEvent>> {
        Box::pin(append_pg(self, record))
    }
}

impl AuditConn for sqlx::SqliteConnection {
    fn append<'a>(
        &'a mut self,
        record: &'a AuditRecord,
    ) -> futures::future::BoxFuture<'a, Result<AuditEvent>> {
        Box::pin(append_sqlite(self, record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> AuditContext {
        AuditContext {
            actor_id: Some(7),
            actor: "amina".into(),
            role: "admin".into(),
            request_id: "req-1".into(),
        }
    }

    fn events(n: usize) -> Vec<AuditEvent> {
        let pending: Vec<Pending> = (0..n)
            .map(|i| {
                ctx()
                    .record("x.do", "thing", i.to_string(), serde_json::json!({"i": i}))
                    .pending()
                    .unwrap()
            })
            .collect();
        chain(None, Utc::now(), &pending)
    }

    async fn verify(events: Vec<AuditEvent>, anchor: Option<&AuditAnchor>) -> AuditVerification {
        let rows =
            futures::stream::iter(events.into_iter().map(|e| Ok(Scanned::Event(Box::new(e)))))
                .boxed();
        verify_chain(rows, anchor).await.unwrap()
    }

    #[test]
    fn chain_links_and_hashes() {
        let e = events(3);
        assert_eq!(e[0].seq, 1);
        assert_eq!(e[0].prev_hash, GENESIS_HASH);
        assert_eq!(e[1].prev_hash, e[0].hash);
        assert_eq!(e[2].prev_hash, e[1].hash);
        for x in &e {
            assert_eq!(x.compute_hash(), x.hash);
            assert_eq!(x.hash.len(), 64);
        }
        // Field boundaries matter: moving a character from one field to the next changes it.
        let mut moved = e[0].clone();
        moved.actor = "amin".into();
        moved.role = "aadmin".into();
        assert_ne!(moved.compute_hash(), e[0].hash);
        let mut no_id = e[0].clone();
        no_id.actor_id = None;
        assert_ne!(no_id.compute_hash(), e[0].hash);
    }

    #[test]
    fn digest_is_of_canonical_json() {
        let a = serde_json::json!({"b": 1, "a": {"y": 2, "x": 3}});
        let b: serde_json::Value =
            serde_json::from_str(r#"{"a": {"x": 3, "y": 2}, "b": 1}"#).unwrap();
        assert_eq!(change_digest(&a), change_digest(&b));
        assert_ne!(
            change_digest(&a),
            change_digest(&serde_json::json!({"b": 2}))
        );
    }

    #[tokio::test]
    async fn verification_names_the_first_break() {
        let ok = verify(events(5), None).await;
        assert!(ok.is_intact());
        assert_eq!(ok.events, 5);
        assert_eq!(ok.head.as_ref().map(|h| h.seq), Some(5));

        let mut edited = events(5);
        edited[2].object_id = "forged".into();
        let v = verify(edited, None).await;
        assert_eq!(v.broken, Some(ChainBreak::Edited { seq: 3 }));
        assert_eq!(v.events, 2);

        let mut deleted = events(5);
        deleted.remove(1);
        assert_eq!(
            verify(deleted, None).await.broken,
            Some(ChainBreak::Missing { seq: 2, next: 3 })
        );

        let mut first_gone = events(3);
        first_gone.remove(0);
        let b = verify(first_gone, None).await.broken.unwrap();
        assert_eq!(b, ChainBreak::Missing { seq: 1, next: 2 });
        assert!(b.to_string().contains("starts at event 2"), "{b}");

        // Swap the positions (seq values) of events 2 and 4.
        let mut swapped = events(5);
        swapped.swap(1, 3);
        swapped[1].seq = 2;
        swapped[3].seq = 4;
        assert_eq!(
            verify(swapped, None).await.broken,
            Some(ChainBreak::Reordered { seq: 2 })
        );

        // Event 3 rewritten with a recomputed hash: event 3 is consistent but 4 no longer links.
        let mut rehashed = events(5);
        rehashed[2].object_id = "forged".into();
        rehashed[2].hash = rehashed[2].compute_hash();
        assert_eq!(
            verify(rehashed, None).await.broken,
            Some(ChainBreak::Unlinked { seq: 4 })
        );
    }

    #[tokio::test]
    async fn a_truncated_tail_is_found_only_against_an_anchor() {
        let full = events(5);
        let anchor = full[4].anchor();
        let mut cut = full.clone();
        cut.truncate(3);
        assert!(verify(cut.clone(), None).await.is_intact());
        let v = verify(cut, Some(&anchor)).await;
        assert_eq!(
            v.broken,
            Some(ChainBreak::Truncated {
                seq: 4,
                anchor_seq: 5
            })
        );
        assert!(verify(full.clone(), Some(&anchor)).await.is_intact());
        // A head rewritten from scratch: intact chain, wrong hash at the anchor.
        let mut rewritten = events(5);
        rewritten[4].request_id = "other".into();
        rewritten[4].hash = rewritten[4].compute_hash();
        assert_eq!(
            verify(rewritten, Some(&anchor)).await.broken,
            Some(ChainBreak::AnchorMismatch { seq: 5 })
        );
    }

    #[test]
    fn anchors_parse() {
        let a: AuditAnchor = format!("12:{}", "Ab".repeat(32)).parse().unwrap();
        assert_eq!(a.seq, 12);
        assert_eq!(a.hash, "ab".repeat(32));
        assert_eq!(a.to_string().parse::<AuditAnchor>().unwrap(), a);
        assert!("12".parse::<AuditAnchor>().is_err());
        assert!("0:00".parse::<AuditAnchor>().is_err());
        assert!(format!("x:{}", "0".repeat(64))
            .parse::<AuditAnchor>()
            .is_err());
    }

    #[test]
    fn records_are_validated() {
        let mut r = ctx().record("x.do", "thing", "1", serde_json::Value::Null);
        r.actor = " ".into();
        assert!(r.pending().is_err());
        let mut r = ctx().record("x.do", "thing", "1", serde_json::Value::Null);
        r.object_id = "a\nb".into();
        assert!(r.pending().is_err());
    }
}
