//! The embedded store's watch: replay from the event log, then follow the live broadcast.
//!
//! Why nothing is missed or duplicated at the seam: the receiver is subscribed *before* the
//! first log read, and writers publish each event after its commit, in revision order (under
//! the store's write lock). So an event is either committed before the read (found in the
//! log, and maybe also received live: dropped as a duplicate because its revision is not
//! above the last one delivered) or published after the subscription (received live).
//! Revisions are dense, so a live event that is not `last + 1` means something was skipped;
//! that, and a lagging receiver (`RecvError::Lagged`), send the watch back to the log, which
//! has every event not compacted.

use std::sync::Arc;

use redb::Database;
use tokio::sync::broadcast::{
    self,
    error::{RecvError, TryRecvError},
};

use super::{blocking, tables};
use crate::store::{Event, Revision, StoreError, WatchBatch, WatchStream};

/// Most events per batch (bounds the memory of one replay step).
const PAGE: usize = 512;

pub(super) struct Watch {
    db: Arc<Database>,
    live: broadcast::Receiver<Event>,
    /// The revision of the last event delivered (or the `after` the watch started from).
    last: Revision,
    catching_up: bool,
}

impl Watch {
    /// `live` must have been subscribed before this call's caller read anything.
    pub(super) fn new(
        db: Arc<Database>,
        live: broadcast::Receiver<Event>,
        after: Revision,
    ) -> Self {
        Watch {
            db,
            live,
            last: after,
            catching_up: true,
        }
    }

    /// The stream ends after its first error, and when the store is dropped.
    pub(super) fn into_stream(self) -> WatchStream {
        Box::pin(futures::stream::unfold(Some(self), |state| async move {
            let mut watch = state?;
            match watch.next_batch().await? {
                Ok(batch) => Some((Ok(batch), Some(watch))),
                Err(e) => Some((Err(e), None)),
            }
        }))
    }

    async fn next_batch(&mut self) -> Option<Result<WatchBatch, StoreError>> {
        loop {
            if self.catching_up {
                let (db, after) = (self.db.clone(), self.last);
                let events = match blocking(move || tables::read_log(&db, after, PAGE)).await {
                    Ok(events) => events,
                    Err(e) => return Some(Err(e)),
                };
                match events.last().map(Event::revision) {
                    Some(revision) => {
                        self.last = revision;
                        return Some(Ok(WatchBatch { revision, events }));
                    }
                    None => self.catching_up = false,
                }
                continue;
            }
            match self.live.recv().await {
                Ok(event) => {
                    if let Some(batch) = self.follow(event) {
                        return Some(Ok(batch));
                    }
                }
                Err(RecvError::Lagged(_)) => self.catching_up = true,
                Err(RecvError::Closed) => return None,
            }
        }
    }

    /// Starts a batch with `first` and adds the events already queued behind it.
    fn follow(&mut self, first: Event) -> Option<WatchBatch> {
        let mut events = Vec::new();
        let mut next = Some(first);
        while let Some(event) = next.take() {
            let revision = event.revision();
            if revision <= self.last {
                // Already delivered from the log.
            } else if revision == self.last + 1 {
                self.last = revision;
                events.push(event);
            } else {
                self.catching_up = true;
                break;
            }
            if events.len() < PAGE {
                next = match self.live.try_recv() {
                    Ok(event) => Some(event),
                    Err(TryRecvError::Lagged(_)) => {
                        self.catching_up = true;
                        None
                    }
                    Err(TryRecvError::Empty | TryRecvError::Closed) => None,
                };
            }
        }
        (!events.is_empty()).then_some(WatchBatch {
            revision: self.last,
            events,
        })
    }
}
