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

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Mutex};

use crate::entry::NewEntry;
use crate::error::{LedgerError, Result};
use crate::posting::Posting;
use crate::Ledger;

type Request = (NewEntry, oneshot::Sender<Result<Posting>>);

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
        let (reply, rx) = oneshot::channel();
        self.tx
            .send((entry, reply))
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
        let entries: Vec<NewEntry> = batch.iter().map(|(e, _)| e.clone()).collect();
        match ledger.post_independent(&entries).await {
            Ok(outcomes) => {
                for ((_, reply), outcome) in batch.drain(..).zip(outcomes) {
                    let _ = reply.send(outcome);
                }
            }
            Err(e) => {
                // The shared transaction failed as a whole (not one entry's fault): give each
                // entry its own attempt so that each caller gets its own, true, outcome.
                tracing::warn!(error = %e, entries = batch.len(), "group commit failed; posting one by one");
                for (entry, reply) in batch.drain(..) {
                    let _ = reply.send(ledger.post(entry).await);
                }
            }
        }
    }
}
