//! Writes that can be retried without ever overwriting a newer write: each attempt is a
//! transaction conditioned on the key's revision, and an attempt whose answer was lost is
//! recognised by reading the key back.

use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};

use tokio::time::Instant;

use super::{header_revision, retry_backoff, Attempt, EtcdStore, ATTEMPT_TIMEOUT, CALL_DEADLINE};
use crate::store::{PolicyStore, Revision, StoreError};

/// What a conditional write does to its key.
pub(super) enum Write {
    Put(Vec<u8>),
    Delete,
}

/// How an attempt of a write ended, when it did not commit.
enum Outcome {
    /// Committed at this revision (by this attempt, or by an earlier one whose answer was lost).
    Done(Revision, bool),
    /// The key changed since `base` by another writer: `base` is now its current state.
    Moved {
        base: Revision,
        current: Option<Vec<u8>>,
    },
}

impl EtcdStore {
    /// The mod revision of `key` (0: absent) and its value, read at once.
    async fn current(&self, key: &str) -> Result<(Revision, Option<Vec<u8>>), StoreError> {
        let resp = self
            .call("get", || {
                let (mut kv, key) = (self.kv.clone(), key.to_owned());
                async move { Ok(kv.get(key, None).await?) }
            })
            .await?;
        Ok(resp.kvs().first().map_or((0, None), |kv| {
            (kv.mod_revision(), Some(kv.value().to_vec()))
        }))
    }

    /// A put or delete that can be retried without ever overwriting a newer write.
    ///
    /// Each attempt is a transaction conditional on the key's mod revision as read before the
    /// first attempt (`base`). An attempt whose answer is lost may still have committed; the
    /// retry then finds the key moved, and tells its own write (the value it wrote, or the key
    /// gone) from another writer's. Another writer's change before any attempt could have
    /// committed is a plain race: the write is retried on top of it (last writer wins, as with
    /// an unconditional put). After an attempt that may have committed, another writer's change
    /// means this write's fate is unknown: `OutcomeUnknown`, never a blind overwrite. The
    /// same when the deadline passes after such an attempt; `Unavailable` (nothing written)
    /// only when no attempt can have reached etcd.
    ///
    /// With `expected`, the write happens only on top of that mod revision (0: absent):
    /// another writer's change is `Conflict`, never retried over.
    pub(super) async fn conditional_write(
        &self,
        what: &str,
        key: &str,
        write: Write,
        expected: Option<Revision>,
    ) -> Result<(Revision, bool), StoreError> {
        let (mut base, current) = self.current(key).await?;
        if expected.is_some_and(|e| e != base) {
            return Err(StoreError::Conflict { current: base });
        }
        if matches!(write, Write::Delete) && current.is_none() {
            let now = self.revision().await?;
            return Ok((now, false));
        }
        let deadline = Instant::now() + CALL_DEADLINE;
        let mut backoff = retry_backoff();
        let mut maybe_sent = false;
        loop {
            if maybe_sent && base == 0 {
                // A create that may have committed cannot be sent again: "the key is absent"
                // is true again once someone deletes what it wrote, and the retry would bring
                // a deleted (acknowledged) key back. What is there now tells, or nothing does.
                let (now, current) = self.current(key).await?;
                return match (&write, current) {
                    (Write::Put(value), Some(v)) if v == *value => Ok((now, true)),
                    _ => Err(StoreError::OutcomeUnknown(format!(
                        "etcd {what} of {key}: an attempt to create it timed out, and what is \
                         there now does not say whether it committed"
                    ))),
                };
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt = tokio::time::timeout(
                left.min(ATTEMPT_TIMEOUT),
                self.write_once(key, &write, base),
            )
            .await;
            let why = match attempt {
                Ok(Ok(Outcome::Done(revision, existed))) => return Ok((revision, existed)),
                Ok(Ok(Outcome::Moved { current, base: now })) => {
                    let ours = match (&write, &current) {
                        (Write::Put(value), Some(v)) => v == value,
                        (Write::Delete, None) => true,
                        _ => false,
                    };
                    if ours && maybe_sent {
                        // Our lost attempt committed (the value is ours, or the key is gone).
                        let revision = match write {
                            Write::Put(_) => now,
                            Write::Delete => self.revision().await?,
                        };
                        return Ok((revision, true));
                    }
                    if maybe_sent {
                        return Err(StoreError::OutcomeUnknown(format!(
                            "etcd {what} of {key}: an attempt timed out, and the key has \
                             changed since"
                        )));
                    }
                    if expected.is_some() {
                        return Err(StoreError::Conflict { current: now });
                    }
                    if matches!(write, Write::Delete) && current.is_none() {
                        let revision = self.revision().await?;
                        return Ok((revision, false));
                    }
                    base = now;
                    continue;
                }
                Ok(Err(Attempt::Fail(e))) => return Err(e),
                Ok(Err(Attempt::Retry(why))) => {
                    maybe_sent |= !never_sent(&why);
                    why
                }
                Err(_) => {
                    maybe_sent = true;
                    "no answer in time".to_owned()
                }
            };
            let left = deadline.saturating_duration_since(Instant::now());
            // The deadline check assumes the longest delay, so the last attempt always has
            // time to finish; the sleep itself is jittered.
            if left <= backoff.ceiling() * 2 {
                return Err(if maybe_sent {
                    StoreError::OutcomeUnknown(format!("etcd {what} of {key}: {why}"))
                } else {
                    StoreError::Unavailable(format!("etcd {what}: {why}"))
                });
            }
            tracing::debug!(what, why, "etcd write failed; retrying conditionally");
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    async fn write_once(
        &self,
        key: &str,
        write: &Write,
        base: Revision,
    ) -> Result<Outcome, Attempt> {
        let mut kv = self.kv.clone();
        let op = match write {
            Write::Put(value) => TxnOp::put(key, value.clone(), None),
            Write::Delete => TxnOp::delete(key, None),
        };
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, base)])
            .and_then([op])
            .or_else([TxnOp::get(key, None)]);
        let resp = kv.txn(txn).await?;
        let revision = header_revision(resp.header())?;
        if resp.succeeded() {
            return Ok(Outcome::Done(revision, true));
        }
        let current = resp.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(get) => Some(
                get.kvs()
                    .first()
                    .map(|kv| (kv.mod_revision(), kv.value().to_vec())),
            ),
            _ => None,
        });
        let (base, current) = match current.flatten() {
            Some((m, v)) => (m, Some(v)),
            None => (0, None),
        };
        Ok(Outcome::Moved { base, current })
    }
}

/// Whether a failed attempt certainly never reached etcd (the connection could not be made),
/// so that the write cannot have committed.
fn never_sent(why: &str) -> bool {
    why.contains("tcp connect error")
        || why.contains("error trying to connect")
        || why.contains("dns error")
}
