//! Periodic compaction of the store's history: every interval, the history older than the
//! revision seen one interval ago is compacted, so at least one interval of history is kept
//! for agents and control servers that resume from a revision (older ones get a snapshot).
//!
//! Every control server runs it; compacting to a revision another server already compacted is
//! a no-op. etcd's own `--auto-compaction-*` may run as well: whichever compacts further wins,
//! and both only cost resuming agents a snapshot.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::store::{PolicyStore, Revision};

/// The default `--compaction-interval`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(600);

/// Compacts every `interval` until `shutdown`.
pub fn spawn(
    store: Arc<dyn PolicyStore>,
    interval: Duration,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seen: Option<Revision> = None;
        let mut compacted: Revision = 0;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = ticks.tick() => {}
            }
            if let Some(target) = seen.filter(|&r| r > compacted) {
                match store.compact(target).await {
                    Ok(()) => {
                        info!(revision = target, "compacted the store's history");
                        compacted = target;
                    }
                    Err(e) => warn!(revision = target, error = %e, "compaction failed; will retry"),
                }
            }
            match store.revision().await {
                Ok(now) => seen = Some(now),
                Err(e) => debug!(error = %e, "reading the revision for compaction failed"),
            }
        }
        debug!("compaction stopped");
    })
}
