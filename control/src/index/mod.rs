//! The in-memory index of every policy at a revision, fed by one watch on the store.
//!
//! * [`state`]: the view, the tombstones and the transitions (pure, unit-tested).
//! * `writer`: the one task that lists and watches the store and applies what it reads.
//! * [`Subscription`]: what a follower (an agent's Sync stream) reads after its start.
//!
//! Readers take an immutable [`View`] (a persistent map: taking one is O(1), applying a
//! change O(log n)) and never wait on the writer. Subscribers get a consistent start
//! (snapshot or deltas) and every later [`Update`], with no gap: the writer publishes an
//! update under the same lock a subscriber takes to start.

use std::{
    sync::{Arc, Mutex, MutexGuard, OnceLock},
    time::Duration,
};

use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::store::{Event, PolicyStore, Revision, StoreError};

pub mod canary;
mod coalesce;
mod encodings;
mod entry;
pub mod shared;
pub mod state;
mod subscription;
#[cfg(test)]
mod test_events;
mod writer;

pub use state::{DefaultChange, DefaultEntry, PolicyEntry, Start, Update, View};
pub use subscription::{Resync, Subscription, MAX_COALESCED};

/// Updates buffered per subscriber before it is considered lagging (it then resyncs).
const UPDATE_BUFFER: usize = 4096;

pub(crate) struct Inner {
    /// Held by the writer while it publishes and by a subscriber while it starts, so that a
    /// subscriber's start and its first update meet exactly.
    state: Mutex<state::State>,
    view_tx: watch::Sender<Option<View>>,
    updates: broadcast::Sender<Arc<Update>>,
    store: Arc<dyn PolicyStore>,
    /// The store's identity, read before the first listing.
    store_id: OnceLock<String>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, state::State> {
        // A poisoned lock means a writer panicked mid-update; the state it guards is still a
        // consistent View (replaced whole), so carry on with it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies a listing; followers see the difference as one update.
    fn replace_all(&self, revision: Revision, listing: state::Listing) {
        let mut state = self.lock();
        if let Some(update) = state.replace_with(revision, listing) {
            self.publish(update);
        }
        self.view_tx.send_replace(Some(state.view().clone()));
    }

    fn apply(&self, revision: Revision, events: Vec<Event>) {
        let mut state = self.lock();
        if let Some(update) = state.apply(revision, events) {
            self.publish(update);
            let view = state.view().clone();
            drop(state);
            self.view_tx.send_replace(Some(view));
        }
    }

    /// Called with the state lock held, so a subscriber's start and its first update meet.
    fn publish(&self, update: Update) {
        // No receivers is fine: no agent is connected.
        let _ = self.updates.send(Arc::new(update));
    }
}

/// Handle to the index; cheap to clone.
#[derive(Clone)]
pub struct Index {
    inner: Arc<Inner>,
    views: watch::Receiver<Option<View>>,
}

/// The index has not loaded yet (the store is unreachable since start).
#[derive(Debug, Clone, thiserror::Error)]
#[error("the policy index has not loaded from the store yet")]
pub struct NotLoaded;

impl Index {
    /// Starts the writer task; it ends when `shutdown` is cancelled.
    pub fn spawn(
        store: Arc<dyn PolicyStore>,
        shutdown: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (view_tx, views) = watch::channel(None);
        let (updates, _) = broadcast::channel(UPDATE_BUFFER);
        let inner = Arc::new(Inner {
            state: Mutex::new(state::State::default()),
            view_tx,
            updates,
            store,
            store_id: OnceLock::new(),
        });
        let task = tokio::spawn({
            let inner = inner.clone();
            async move {
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = writer::run(&inner) => {}
                }
                debug!("index writer stopped");
            }
        });
        (Self { inner, views }, task)
    }

    /// The store's identity (see `PolicyStore::identity`), once the index has read it
    /// (before its first load).
    pub fn store_id(&self) -> Option<String> {
        self.inner.store_id.get().cloned()
    }

    /// The latest view, if loaded.
    pub fn view(&self) -> Option<View> {
        self.views.borrow().clone()
    }

    /// The latest view's revision (0 before the first load).
    pub fn revision(&self) -> Revision {
        self.views.borrow().as_ref().map_or(0, View::revision)
    }

    /// The latest view's newest policy change (see [`View::last_change`]; 0 before the first
    /// load).
    pub fn last_change(&self) -> Revision {
        self.views.borrow().as_ref().map_or(0, View::last_change)
    }

    /// Whether the first load has completed.
    pub fn is_loaded(&self) -> bool {
        self.views.borrow().is_some()
    }

    /// Waits (up to `timeout`) for the first load, then returns the latest view.
    pub async fn ready_view(&self, timeout: Duration) -> Result<View, NotLoaded> {
        let mut rx = self.views.clone();
        let waited = tokio::time::timeout(timeout, async {
            rx.wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|v| v.clone())
        })
        .await;
        waited.ok().flatten().ok_or(NotLoaded)
    }

    /// Waits (up to `timeout`) until the index has reached `revision`. Returns whether it did.
    pub async fn wait_for(&self, revision: Revision, timeout: Duration) -> bool {
        let mut rx = self.views.clone();
        let reached = tokio::time::timeout(timeout, async {
            rx.wait_for(|v| v.as_ref().is_some_and(|v| v.revision() >= revision))
                .await
                .is_ok()
        })
        .await
        .unwrap_or(false);
        if !reached {
            warn!(revision, "index did not reach the revision in time");
        }
        reached
    }

    /// Subscribes a follower that has applied `after` (0: nothing): how it starts (deltas
    /// when the index, or the store's history, can say what changed since `after`, else a
    /// snapshot), and every update after that start.
    pub async fn subscribe(&self, after: Revision) -> Result<(Start, Subscription), NotLoaded> {
        let view = self.ready_view(Duration::from_secs(5)).await?;
        if after > view.revision() {
            // The follower came from a server whose index is ahead of ours: catch up first.
            self.wait_for(after, Duration::from_secs(2)).await;
        }
        // Keys changed before the in-memory floor come from the store's history (a control
        // server restarted since the follower's revision still answers with a delta).
        let floor = self.inner.lock().floor();
        let older = if after > 0 && after < floor {
            match self.inner.store.changes_since(after).await {
                Ok((_, keys)) => Some(keys),
                Err(StoreError::Compacted { .. }) => None,
                Err(e) => {
                    debug!(error = %e, "no store history for a delta; sending a snapshot");
                    None
                }
            }
        } else {
            Some(Vec::new())
        };
        let state = self.inner.lock();
        let updates = self.inner.updates.subscribe();
        let start = state.start(after, older);
        drop(state);
        let sub = Subscription {
            index: self.clone(),
            updates,
        };
        Ok((start, sub))
    }
}
