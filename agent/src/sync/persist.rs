//! Writes the policy table to the last-known-good cache off the sync path.
//!
//! The sync loop only bumps a `watch` channel after each applied revision; one task writes
//! whatever the table holds when it gets to it. A burst of revisions therefore costs one or
//! two writes, not one per revision, and the last revision applied is always the last written.

use std::sync::Arc;

use tokio::{sync::watch, task::JoinHandle};
use tracing::{debug, error, info, Instrument};

use crate::{cache::Cache, metrics::Metrics, table::PolicyTable};

/// The handle the sync loop keeps. The writer task ends once this is [`finish`]ed (or
/// dropped), after writing any revision it has not written yet.
///
/// [`finish`]: Persister::finish
pub(super) struct Persister {
    tx: watch::Sender<i64>,
    task: JoinHandle<()>,
}

impl Persister {
    pub(super) fn spawn(cache: Cache, table: Arc<PolicyTable>, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = watch::channel(table.snapshot().revision().unwrap_or(0));
        let span = tracing::info_span!("cache_writer", dir = %cache.dir().display());
        let task = tokio::spawn(write_loop(cache, table, metrics, rx).instrument(span));
        Self { tx, task }
    }

    /// Records that `revision` is applied; the writer stores it soon.
    pub(super) fn applied(&self, revision: i64) {
        // `send_replace` never fails, even if the writer is gone (it then only logged).
        self.tx.send_replace(revision);
    }

    /// Waits until the latest applied revision is on disk, then stops the writer.
    pub(super) async fn finish(self) {
        drop(self.tx);
        if let Err(e) = self.task.await {
            error!(error = %e, "cache writer failed");
        }
    }
}

async fn write_loop(
    cache: Cache,
    table: Arc<PolicyTable>,
    metrics: Arc<Metrics>,
    mut rx: watch::Receiver<i64>,
) {
    let mut failing = false;
    // `changed` reports a value sent before the sender was dropped before it reports the
    // close, so the final revision is written on shutdown too.
    while rx.changed().await.is_ok() {
        let cache = cache.clone();
        let table = table.clone();
        let stored = tokio::task::spawn_blocking(move || store(&cache, &table)).await;
        match stored {
            Ok(Ok(Some(revision))) => {
                metrics.set_cache_revision(revision);
                if failing {
                    info!(revision, "cache writes work again");
                } else {
                    debug!(revision, "cache written");
                }
                failing = false;
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                // Once per failure streak: a full disk would otherwise log every revision.
                if !failing {
                    error!(error = %e, "cannot write the last-known-good cache; will retry at the next revision");
                }
                failing = true;
            }
            Err(e) => error!(error = %e, "cache write task failed"),
        }
    }
}

/// Stores the table; `None` when it has nothing to store yet.
fn store(cache: &Cache, table: &PolicyTable) -> Result<Option<i64>, crate::cache::CacheError> {
    // One snapshot: the revision, the policies and the refused buckets are of one revision.
    // An `Arc` of its own, not the lock-free guard: the write takes a while, and revisions
    // published meanwhile share all but the nodes they changed with it.
    let snapshot = Arc::clone(&table.snapshot());
    cache.store_table(&snapshot, table.store_id().as_deref())
}
