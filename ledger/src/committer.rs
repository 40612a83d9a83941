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

use tokio::sync::{mpsc, oneshot};

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
    /// Starts the committing task; batches hold at most `max_batch` entries.
    pub fn start(ledger: Ledger, max_batch: usize) -> Self {
        let (tx, rx) = mpsc::channel::<Request>(max_batch.max(1) * 4);
        tokio::spawn(run(ledger, rx, max_batch.max(1)));
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

async fn run(ledger: Ledger, mut rx: mpsc::Receiver<Request>, max_batch: usize) {
    let mut batch: Vec<Request> = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut batch, max_batch).await > 0 {
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
