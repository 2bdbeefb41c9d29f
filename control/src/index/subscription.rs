//! A follower's subscription: after its start, every update in order, or [`Resync`] when it
//! fell so far behind that updates were dropped (it then restarts from its revision).

use std::sync::Arc;

use tokio::sync::broadcast::{
    self,
    error::{RecvError, TryRecvError},
};

use super::{Index, NotLoaded, Start, Update};
use crate::store::Revision;

/// The subscriber fell behind by more than the buffer; `skipped` updates are gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{skipped} updates were dropped while the subscriber lagged; resync")]
pub struct Resync {
    pub skipped: u64,
}

/// Updates a lagging subscriber takes as one, at most.
pub const MAX_COALESCED: usize = 1024;

/// Every update after a subscriber's start, in order, with no gap.
pub struct Subscription {
    pub(super) index: Index,
    pub(super) updates: broadcast::Receiver<Arc<Update>>,
}

impl Subscription {
    /// The next update; `Err(Resync)` when updates were dropped (call [`Self::resync`]).
    pub async fn next(&mut self) -> Result<Arc<Update>, Resync> {
        match self.updates.recv().await {
            Ok(u) => Ok(u),
            Err(RecvError::Lagged(skipped)) => Err(Resync { skipped }),
            // The sender lives as long as the index this subscription holds.
            Err(RecvError::Closed) => std::future::pending().await,
        }
    }

    /// `first` and the updates already queued behind it (at most [`MAX_COALESCED`] in all),
    /// as one update: a subscriber that fell behind catches up in one step. Without a queue
    /// it is `first` itself (whose encoding the subscribers share).
    pub fn coalesce(&mut self, first: Arc<Update>) -> Result<Arc<Update>, Resync> {
        let mut rest = Vec::new();
        while rest.len() + 1 < MAX_COALESCED {
            match self.updates.try_recv() {
                Ok(u) => rest.push(u),
                Err(TryRecvError::Lagged(skipped)) => return Err(Resync { skipped }),
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
        if rest.is_empty() {
            return Ok(first);
        }
        Ok(Arc::new(super::coalesce::coalesce(&first, &rest)))
    }

    /// Starts again from `after` (the revision the subscriber has applied): the start to
    /// send, and updates from there on.
    pub async fn resync(&mut self, after: Revision) -> Result<Start, NotLoaded> {
        let (start, fresh) = self.index.subscribe(after).await?;
        *self = fresh;
        Ok(start)
    }
}
