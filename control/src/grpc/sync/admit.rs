//! Admission of Sync streams: at most so many in total and per access key, and one per node
//! (a newer stream of a node replaces, and cancels, the older one).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::SyncLimits;

/// The open streams: counts in total and per key, and the one stream of each node.
#[derive(Default)]
pub(super) struct Streams {
    inner: Mutex<StreamsInner>,
}

#[derive(Default)]
struct StreamsInner {
    total: usize,
    per_key: HashMap<String, usize>,
    /// node id -> (stream id, cancelled when a newer stream of the node replaces it)
    per_node: HashMap<String, (u64, CancellationToken)>,
    next_id: u64,
}

/// One admitted stream; dropping it frees its place.
pub(super) struct Slot {
    streams: Arc<Streams>,
    key: String,
    node: String,
    id: u64,
    pub(super) replaced: CancellationToken,
}

impl Streams {
    fn lock(&self) -> std::sync::MutexGuard<'_, StreamsInner> {
        // Every update is a few counter changes made together.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn admit(
        self: &Arc<Self>,
        key: &str,
        node: &str,
        limits: &SyncLimits,
    ) -> Result<Slot, Status> {
        let mut s = self.lock();
        // A node's newer stream replaces its older one, so a reconnect never counts twice.
        let replacing = s.per_node.contains_key(node);
        if !replacing && s.total >= limits.max_streams {
            return Err(Status::resource_exhausted(format!(
                "{} agent streams are open, the most this server takes",
                limits.max_streams
            )));
        }
        let of_key = s.per_key.get(key).copied().unwrap_or(0);
        if !replacing && of_key >= limits.max_streams_per_key {
            return Err(Status::resource_exhausted(format!(
                "{} agent streams are open with access key {key:?}, the most one key may have",
                limits.max_streams_per_key
            )));
        }
        s.next_id += 1;
        let id = s.next_id;
        let replaced = CancellationToken::new();
        if let Some((_, old)) = s.per_node.insert(node.to_owned(), (id, replaced.clone())) {
            old.cancel();
        }
        s.total += 1;
        *s.per_key.entry(key.to_owned()).or_insert(0) += 1;
        Ok(Slot {
            streams: self.clone(),
            key: key.to_owned(),
            node: node.to_owned(),
            id,
            replaced,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = self.streams.lock();
        s.total = s.total.saturating_sub(1);
        if let Some(n) = s.per_key.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                s.per_key.remove(&self.key);
            }
        }
        if s.per_node
            .get(&self.node)
            .is_some_and(|(id, _)| *id == self.id)
        {
            s.per_node.remove(&self.node);
        }
    }
}
