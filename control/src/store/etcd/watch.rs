//! The etcd watch, mapped to the port's [`WatchStream`].
//!
//! The stream owns the etcd watch stream and no task: dropping it drops the gRPC stream,
//! which resets the HTTP/2 stream, and etcd cancels the watcher.

use etcd_client::{WatchClient, WatchOptions, WatchResponse};

use super::Attempt;
use crate::store::{Event, KeyValue, Revision, StoreError, WatchBatch, WatchStream};

/// The part of `key` after `prefix`, if `key` is a UTF-8 key under it.
pub(super) fn strip(prefix: &str, key: &[u8]) -> Option<String> {
    let key = std::str::from_utf8(key).ok()?.strip_prefix(prefix)?;
    Some(key.to_owned())
}

/// Opens an etcd watch and waits until etcd confirms it, so an unreachable etcd fails the
/// call (and is retried) instead of failing the stream later.
pub(super) async fn open(
    client: &mut WatchClient,
    prefix: String,
    options: WatchOptions,
    after: Revision,
) -> Result<etcd_client::WatchStream, Attempt> {
    let mut stream = client.watch(prefix, Some(options)).await?;
    match stream.message().await? {
        Some(resp) if resp.canceled() => match canceled(&resp, after) {
            e @ StoreError::Compacted { .. } => Err(Attempt::Fail(e)),
            e => Err(Attempt::Retry(e.to_string())),
        },
        Some(resp) if resp.created() => Ok(stream),
        Some(_) => Err(Attempt::Fail(StoreError::Other(
            "etcd watch: the first answer is not the creation".into(),
        ))),
        None => Err(Attempt::Retry("etcd closed the watch".into())),
    }
}

fn canceled(resp: &WatchResponse, after: Revision) -> StoreError {
    if resp.compact_revision() > 0 {
        StoreError::Compacted {
            requested: after,
            compact_revision: resp.compact_revision(),
        }
    } else {
        StoreError::Unavailable(format!("etcd canceled the watch: {}", resp.cancel_reason()))
    }
}

pub(super) struct Watch {
    inner: etcd_client::WatchStream,
    prefix: String,
    after: Revision,
    /// The revision of the last event delivered (or `after`).
    last: Revision,
}

impl Watch {
    pub(super) fn new(inner: etcd_client::WatchStream, prefix: String, after: Revision) -> Self {
        Watch {
            inner,
            prefix,
            after,
            last: after,
        }
    }

    /// Ends after its first error: the caller resyncs (relists, or watches again).
    pub(super) fn into_stream(self) -> WatchStream {
        Box::pin(futures::stream::unfold(Some(self), |state| async move {
            let mut watch = state?;
            match watch.next_batch().await {
                Ok(batch) => Some((Ok(batch), Some(watch))),
                Err(e) => Some((Err(e), None)),
            }
        }))
    }

    async fn next_batch(&mut self) -> Result<WatchBatch, StoreError> {
        loop {
            let resp = match self.inner.message().await {
                Ok(Some(resp)) => resp,
                Ok(None) => return Err(StoreError::Unavailable("etcd closed the watch".into())),
                Err(e) => return Err(StoreError::Unavailable(format!("etcd watch: {e}"))),
            };
            if resp.canceled() {
                return Err(canceled(&resp, self.after));
            }
            // The replay starts at `after` itself (see `EtcdStore::watch`); drop that one.
            let events: Vec<Event> = resp
                .events()
                .iter()
                .filter_map(|event| self.map(event))
                .filter(|event| event.revision() > self.last)
                .collect();
            if let Some(revision) = events.last().map(Event::revision) {
                self.last = revision;
                return Ok(WatchBatch { revision, events });
            }
            // A progress notification: every change up to its header revision was sent.
            let progress = resp.header().map_or(0, |h| h.revision());
            if resp.events().is_empty() && !resp.created() && progress > self.last {
                self.last = progress;
                return Ok(WatchBatch {
                    revision: progress,
                    events: Vec::new(),
                });
            }
        }
    }

    fn map(&self, event: &etcd_client::Event) -> Option<Event> {
        let kv = event.kv()?;
        let key = strip(&self.prefix, kv.key())?;
        // A delete's kv is a tombstone with version 0; a put's version is at least 1.
        // (Not `event_type()`: it panics on a type it does not know.)
        Some(if kv.version() == 0 {
            Event::Delete {
                key,
                mod_revision: kv.mod_revision(),
            }
        } else {
            Event::Put(KeyValue {
                key,
                value: kv.value().to_vec(),
                create_revision: kv.create_revision(),
                mod_revision: kv.mod_revision(),
            })
        })
    }
}
