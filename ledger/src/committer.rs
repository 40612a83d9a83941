//! Group commit for concurrent single posts.
//!
//! Each post in its own transaction costs one commit (one WAL flush) and holds the hot
//! account's row lock for a whole round trip, so a hot account caps throughput at about a
//! thousand posts a second. The [`Committer`] queues posts from many tasks and writes whatever
//! has accumulated as one independent batch ([`Ledger::post_independent`]): each entry is still
//! accepted or refused on its own, in arrival order, but they share one commit.
//!
//! ```no_run
//! # async fn demo(ledger: cva_ledger::Ledger, entry: cva_ledger::entry::NewEntry) {
//! let committer = cva_ledger::committer::Committer::start(ledger, 1024);
//! let posting = committer.post(entry).await;
//! # }
//! ```
//!
//! [`Committer::post_audited`] also writes the entry's `ledger.post` audit event, in the
//! group's transaction and only if the entry is accepted.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Mutex};

use crate::audit::{AuditContext, EntryAudit};
use crate::entry::NewEntry;
use crate::error::{LedgerError, Result};
use crate::posting::{BatchMode, Posting};
use crate::Ledger;

type Request = (
    NewEntry,
    Option<AuditContext>,
    oneshot::Sender<Result<Posting>>,
);

/// A handle to the group-commit task; cheap to clone.
#[derive(Debug, Clone)]
pub struct Committer {
    tx: mpsc::Sender<Request>,
}

impl Committer {
    /// Starts the committing workers (two on PostgreSQL, one on SQLite, which has a single
    /// writer anyway); batches hold at most `max_batch` entries.
    pub fn start(ledger: Ledger, max_batch: usize) -> Self {
        let workers = if ledger.backend_name() == "sqlite" {
            1
        } else {
            2
        };
        Self::start_with_workers(ledger, max_batch, workers)
    }

    /// Starts `workers` committing tasks sharing one queue. With two, one batch is being read
    /// and planned while the other waits for its commit to reach the disk; batches that touch
    /// the same account still serialise on its row lock, taken in id order (no deadlock).
    pub fn start_with_workers(ledger: Ledger, max_batch: usize, workers: usize) -> Self {
        let (tx, rx) = mpsc::channel::<Request>(max_batch.max(1) * 4);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..workers.max(1) {
            tokio::spawn(run(ledger.clone(), rx.clone(), max_batch.max(1)));
        }
        Committer { tx }
    }

    /// Posts one entry through the shared commit; same outcome as `Ledger::post`.
    pub async fn post(&self, entry: NewEntry) -> Result<Posting> {
        self.submit(entry, None).await
    }

    /// Posts one entry through the shared commit with its audit event; same outcome as
    /// `Ledger::post_audited`.
    pub async fn post_audited(&self, entry: NewEntry, audit: AuditContext) -> Result<Posting> {
        audit.validate()?;
        self.submit(entry, Some(audit)).await
    }

    async fn submit(&self, entry: NewEntry, audit: Option<AuditContext>) -> Result<Posting> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send((entry, audit, reply))
            .await
            .map_err(|_| LedgerError::Refused("the committer has stopped".into()))?;
        rx.await
            .map_err(|_| LedgerError::Refused("the committer has stopped".into()))?
    }
}

async fn run(ledger: Ledger, rx: Arc<Mutex<mpsc::Receiver<Request>>>, max_batch: usize) {
    let mut batch: Vec<Request> = Vec::with_capacity(max_batch);
    loop {
        // Hold the queue only while taking a batch, not while committing it.
        let received = rx.lock().await.recv_many(&mut batch, max_batch).await;
        if received == 0 {
            break;
        }
        let entries: Vec<NewEntry> = batch.iter().map(|(e, _, _)| e.clone()).collect();
        let result = {
            let audits: Vec<Option<EntryAudit>> = batch
                .iter()
                .map(|(e, ctx, _)| ctx.as_ref().map(|c| EntryAudit::new(c, "ledger.post", e)))
                .collect();
            ledger
                .post_batch(&entries, BatchMode::Independent, &audits)
                .await
        };
        match result {
            Ok(outcomes) => {
                for ((_, _, reply), outcome) in batch.drain(..).zip(outcomes) {
                    let _ = reply.send(outcome);
                }
            }
            Err(e) => {
                // The shared transaction failed as a whole (not one entry's fault): give each
                // entry its own attempt so that each caller gets its own, true, outcome.
                tracing::warn!(error = %e, entries = batch.len(), "group commit failed; posting one by one");
                for (entry, audit, reply) in batch.drain(..) {
                    let outcome = match audit {
                        Some(ctx) => ledger.post_audited(entry, &ctx).await,
                        None => ledger.post(entry).await,
                    };
                    let _ = reply.send(outcome);
                }
            }
        }
    }
}
