//! Writes that can be sent again safely: each write has a guard, a key of its own
//! (`{prefix}writes/{id}`) created in the same transaction as the write, and every attempt is
//! a transaction conditioned on the key's revision *and* on the guard not existing yet.
//!
//! * An attempt whose answer was lost (no answer in time, a member that died with the
//!   proposal, a connection cut) is simply sent again, to the next member at once. If the
//!   first attempt committed, the guard is there and the retry reports that commit; if it did
//!   not, the retry commits. Raft orders both in one log, so exactly one of them applies.
//! * So a write stalled by a dead leader is answered within about one attempt timeout
//!   ([`WRITE_ATTEMPT_TIMEOUT`]) of the election, not after the whole call deadline, and
//!   never with "outcome unknown" just because an answer was lost.
//! * Another writer's change (the key moved, no guard) is a plain race before any attempt
//!   could have committed: the write is retried on top of it (last writer wins, as with an
//!   unconditional put); with `expected`, it is `Conflict`. After an attempt that may still be
//!   in flight, it is `OutcomeUnknown`: that attempt could apply later if the key came back to
//!   its old revision (only possible for a create: absent again after a delete).
//!
//! A write that carries its audit record (every policy change through the API) uses the
//! record itself as its guard. Other guards live on a lease of [`GUARD_TTL_SECS`] that is
//! never kept alive (a new one is granted each [`GUARD_LEASE_EVERY_SECS`]), so they expire on
//! their own a few minutes after the write.

use std::time::Duration;

use etcd_client::{PutOptions, TxnOp};

use tokio::time::Instant;

use super::{
    batch::{Failure, Pending},
    retry_backoff, Attempt, EtcdStore, CALL_DEADLINE,
};
use crate::store::{PolicyStore, Revision, StoreError};

/// Longest wait for one attempt of a write before it is sent again (to the next member). Short:
/// a resend is safe, and a proposal lost with a dead leader is never answered at all.
pub const WRITE_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a write's guard outlives it.
pub const GUARD_TTL_SECS: i64 = 300;
/// A new guard lease is granted this often (guards then expire within `GUARD_TTL_SECS` plus
/// this, of their write).
pub const GUARD_LEASE_EVERY_SECS: i64 = 60;

/// What a conditional write does to its key.
pub(super) enum Write {
    Put(Vec<u8>),
    Delete,
}

/// The key that tells whether an attempt of a write committed: created by the write's own
/// transaction, the same in every attempt.
struct Guard {
    key: String,
    /// What it holds: a guard found with other bytes is another write's.
    value: Vec<u8>,
    /// On the guard lease (an own key under `writes/`), or kept (an audit record).
    leased: bool,
}

/// How an attempt of a write ended.
pub(super) enum Outcome {
    /// Committed at this revision (by this attempt, or by an earlier one whose answer was lost).
    Done(Revision),
    /// The key changed since `base` by another writer, and this write has not applied: `base`
    /// is now the key's mod revision (0: absent).
    Moved { base: Revision, absent: bool },
}

impl EtcdStore {
    /// The mod revision of `key` (0: absent), and whether it is there.
    async fn current(&self, key: &str) -> Result<(Revision, bool), StoreError> {
        let resp = self
            .call("get", || {
                let (mut kv, key) = (self.kv(), key.to_owned());
                async move { Ok(kv.get(key, None).await?) }
            })
            .await?;
        Ok(resp
            .kvs()
            .first()
            .map_or((0, false), |kv| (kv.mod_revision(), true)))
    }

    /// The guard lease for writes now, granted when none is younger than
    /// [`GUARD_LEASE_EVERY_SECS`].
    async fn guard_lease(&self) -> Result<i64, Attempt> {
        let now = crate::clock::now_ms() / 1000;
        if let Some((id, granted)) = *self.guard.lock().unwrap_or_else(|p| p.into_inner()) {
            if now - granted < GUARD_LEASE_EVERY_SECS {
                return Ok(id);
            }
        }
        let id = self.lease_client().grant(GUARD_TTL_SECS, None).await?.id();
        *self.guard.lock().unwrap_or_else(|p| p.into_inner()) = Some((id, now));
        Ok(id)
    }

    /// A put or delete that can be sent again without ever applying twice or overwriting a
    /// newer write (see the module documentation). With `expected`, it happens only on top of
    /// that mod revision (0: absent): another writer's change is `Conflict`.
    /// Returns the commit's revision and whether the key existed (a delete of an absent key
    /// writes nothing and returns the current revision).
    pub(super) async fn conditional_write(
        &self,
        what: &str,
        key: &str,
        write: Write,
        expected: Option<Revision>,
    ) -> Result<(Revision, bool), StoreError> {
        self.conditional_write_with(what, key, write, expected, None)
            .await
    }

    /// [`Self::conditional_write`], also putting `extra` (an audit record: a full key and its
    /// value, unique to this write) in the same transaction when the write applies; the record
    /// is then the write's guard.
    pub(super) async fn conditional_write_with(
        &self,
        what: &str,
        key: &str,
        write: Write,
        expected: Option<Revision>,
        extra: Option<(String, Vec<u8>)>,
    ) -> Result<(Revision, bool), StoreError> {
        // A conditional put goes straight to the transaction, which compares with `expected`
        // itself (one round trip, not two); a moved key comes back as `Moved`, a conflict.
        let (mut base, present) = match (expected, &write) {
            (Some(e), Write::Put(_)) => (e, e > 0),
            _ => self.current(key).await?,
        };
        if expected.is_some_and(|e| e != base) {
            return Err(StoreError::Conflict { current: base });
        }
        if matches!(write, Write::Delete) && !present {
            let now = self.revision().await?;
            return Ok((now, false));
        }
        // With an audit record, the record is the guard: its key is unique to this write (the
        // time and the request id), and no other key, nor a lease, is needed.
        let guard = match extra {
            Some((record_key, record)) => Guard {
                key: record_key,
                value: record,
                leased: false,
            },
            None => Guard {
                key: format!("{}{}", self.writes, hex::encode(rand::random::<[u8; 12]>())),
                value: key.as_bytes().to_vec(),
                leased: true,
            },
        };
        let deadline = Instant::now() + CALL_DEADLINE;
        let mut backoff = retry_backoff();
        // Some attempt may have reached etcd and may still apply.
        let mut maybe_sent = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let member = self.members.pick();
            let started = Instant::now();
            let attempt = tokio::time::timeout(
                left.min(WRITE_ATTEMPT_TIMEOUT),
                self.write_once(key, &guard, &write, base),
            )
            .await;
            if matches!(attempt, Ok(Ok(_) | Err(Attempt::Fail(_)))) {
                self.members.answered(member, what, started.elapsed());
            }
            let why = match attempt {
                Ok(Ok(Outcome::Done(revision))) => return Ok((revision, true)),
                Ok(Ok(Outcome::Moved { base: now, absent })) => {
                    if maybe_sent {
                        return Err(StoreError::OutcomeUnknown(format!(
                            "etcd {what} of {key}: an attempt got no answer, and another \
                             writer has changed the key since"
                        )));
                    }
                    if expected.is_some() {
                        return Err(StoreError::Conflict { current: now });
                    }
                    if matches!(write, Write::Delete) && absent {
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
            let another = self.members.failed(member, &why);
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
            tracing::debug!(
                what,
                why,
                another,
                "etcd write got no answer; sending it again"
            );
            if !another {
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }

    async fn write_once(
        &self,
        key: &str,
        guard: &Guard,
        write: &Write,
        base: Revision,
    ) -> Result<Outcome, Attempt> {
        let op = match write {
            Write::Put(value) => TxnOp::put(key, value.clone(), None),
            Write::Delete => TxnOp::delete(key, None),
        };
        let lease = if guard.leased {
            Some(PutOptions::new().with_lease(self.guard_lease().await?))
        } else {
            None
        };
        let ops = vec![
            op,
            TxnOp::put(guard.key.as_str(), guard.value.clone(), lease),
        ];
        // The transaction is `key at base and no guard yet: the ops; else read both`, shared
        // with the writes queued beside it (`batch`).
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.batcher
            .submit(Pending {
                key: key.to_owned(),
                guard: guard.key.clone(),
                guard_value: guard.value.clone(),
                base,
                ops,
                reply,
            })
            .await?;
        match answer.await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(Failure::LeaseNotFound)) => {
                // The guard lease expired early (etcd was unreachable for minutes): a new one.
                *self.guard.lock().unwrap_or_else(|p| p.into_inner()) = None;
                Err(Attempt::Retry("the write guard lease expired".into()))
            }
            Ok(Err(Failure::Attempt(attempt))) => Err(attempt),
            Err(_) => Err(Attempt::Retry(
                "no answer in time from the transaction".into(),
            )),
        }
    }
}

/// Whether a failed attempt certainly never reached etcd (the connection could not be made),
/// so that the write cannot have committed.
fn never_sent(why: &str) -> bool {
    why.contains("tcp connect error")
        || why.contains("error trying to connect")
        || why.contains("dns error")
}
