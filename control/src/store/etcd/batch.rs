//! Group commit: concurrent conditional writes share etcd transactions.
//!
//! etcd 3.4 (Debian's) pays a large fixed cost per transaction (it copies its shared read
//! buffer for each one; etcd-io/etcd#12896), so a guarded write sent as its own transaction
//! costs etcd several times a plain put. Writes queued while earlier transactions are in
//! flight go together in one: every write's comparisons joined, every write's operations on
//! success, each write's key and guard read back on failure. A lone write goes out at once:
//! nothing waits for a batch to fill.
//!
//! * A batch never holds one key twice (the comparisons are all checked before any write
//!   applies): a second write of a key goes in the next batch.
//! * When the transaction fails, the reads say which writes failed their own comparison (the
//!   key moved, or a guard shows an earlier attempt committed): they get that answer; the
//!   others did not apply and are sent again together, at once.
//! * At most [`MAX_BATCH`] writes a transaction (within etcd's default `--max-txn-ops` of
//!   128), [`IN_FLIGHT`] transactions at a time, [`QUEUE`] writes waiting; each transaction
//!   is bounded by the write attempt timeout, as a single write's is.

use std::{collections::HashSet, sync::Arc};

use etcd_client::{Compare, CompareOp, KvClient, Txn, TxnOp, TxnOpResponse};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::{
    header_revision, leases::is_lease_not_found, members::Members, write::Outcome,
    write::WRITE_ATTEMPT_TIMEOUT, Attempt,
};
use crate::store::Revision;

/// Writes in one transaction at most: each has 2 comparisons, 2 operations on success
/// and 2 reads on failure, all within etcd's default limit of 128 a list.
pub const MAX_BATCH: usize = 32;
/// Transactions in flight at once; writes arriving meanwhile wait and go together.
pub const IN_FLIGHT: usize = 4;
/// Writes waiting for a transaction at most; beyond, a writer waits for room (within its
/// attempt timeout).
pub const QUEUE: usize = 1024;

/// One write's part of a transaction.
pub(super) struct Pending {
    pub key: String,
    pub guard: String,
    /// The guard's value as this write puts it: a guard found with another value is not
    /// this write's.
    pub guard_value: Vec<u8>,
    pub base: Revision,
    /// What it writes when every comparison holds.
    pub ops: Vec<TxnOp>,
    pub reply: oneshot::Sender<Result<Outcome, Failure>>,
}

/// Why a batch's transaction gave no outcome.
pub(super) enum Failure {
    /// The guard lease was gone: take a new one and try again.
    LeaseNotFound,
    Attempt(Attempt),
}

/// The queue into the batcher; the batcher ends when every handle is dropped.
#[derive(Clone)]
pub(super) struct Batcher {
    queue: mpsc::Sender<Pending>,
}

impl Batcher {
    pub fn spawn(members: Arc<Members>) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(members, rx));
        Self { queue }
    }

    /// Sends `pending` with the next transaction; its answer comes on its reply channel.
    pub async fn submit(&self, pending: Pending) -> Result<(), Attempt> {
        self.queue
            .send(pending)
            .await
            .map_err(|_| Attempt::Retry("the etcd write batcher has stopped".into()))
    }
}

async fn run(members: Arc<Members>, mut rx: mpsc::Receiver<Pending>) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut carry: Vec<Pending> = Vec::new();
    loop {
        // Wait for room first: what arrives meanwhile goes out together.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut batch = Vec::with_capacity(MAX_BATCH);
        batch.append(&mut carry);
        if batch.is_empty() {
            if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
                return;
            }
        } else {
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
        }
        // A key already in the batch waits for the next one.
        let mut keys = HashSet::with_capacity(batch.len());
        let (batch, later): (Vec<_>, Vec<_>) =
            batch.into_iter().partition(|p| keys.insert(p.key.clone()));
        carry = later;
        let kv = members.kv(members.pick());
        tokio::spawn(async move {
            let _permit = permit;
            commit(kv, batch).await;
        });
    }
}

/// Commits `batch` (distinct keys), answering every write.
async fn commit(mut kv: KvClient, mut batch: Vec<Pending>) {
    while !batch.is_empty() {
        let txn = Txn::new()
            .when(
                batch
                    .iter()
                    .flat_map(|p| {
                        [
                            Compare::mod_revision(p.key.as_str(), CompareOp::Equal, p.base),
                            Compare::create_revision(p.guard.as_str(), CompareOp::Equal, 0),
                        ]
                    })
                    .collect::<Vec<_>>(),
            )
            .and_then(batch.iter().flat_map(|p| p.ops.clone()).collect::<Vec<_>>())
            .or_else(
                batch
                    .iter()
                    .flat_map(|p| {
                        [
                            TxnOp::get(p.key.as_str(), None),
                            TxnOp::get(p.guard.as_str(), None),
                        ]
                    })
                    .collect::<Vec<_>>(),
            );
        let answer = tokio::time::timeout(WRITE_ATTEMPT_TIMEOUT, kv.txn(txn)).await;
        let resp = match answer {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => {
                let lease = is_lease_not_found(&e);
                let attempt = Attempt::from(e);
                for p in batch {
                    let failure = if lease {
                        Failure::LeaseNotFound
                    } else {
                        Failure::Attempt(attempt.clone())
                    };
                    let _ = p.reply.send(Err(failure));
                }
                return;
            }
            // The writers' own attempt timeouts fire too; they decide what to do.
            Err(_) => return,
        };
        let revision = match header_revision(resp.header()) {
            Ok(r) => r,
            Err(_) => {
                for p in batch {
                    let _ = p.reply.send(Err(Failure::Attempt(Attempt::Fail(
                        crate::store::StoreError::Other("etcd answered without a header".into()),
                    ))));
                }
                return;
            }
        };
        if resp.succeeded() {
            for p in batch {
                let _ = p.reply.send(Ok(Outcome::Done(revision)));
            }
            return;
        }
        let mut gets = resp.op_responses().into_iter().filter_map(|op| match op {
            TxnOpResponse::Get(get) => Some(
                get.kvs()
                    .first()
                    .map(|kv| (kv.mod_revision(), kv.value().to_vec())),
            ),
            _ => None,
        });
        let mut again = Vec::new();
        for p in batch {
            let key_now = gets.next().flatten().map(|(revision, _)| revision);
            let guard_now = gets.next().flatten();
            let outcome = match guard_now {
                // An earlier attempt committed, at the guard's revision.
                Some((committed, value)) if value == p.guard_value => Outcome::Done(committed),
                // Another write's guard under the same key: this write cannot commit with it.
                Some(_) => {
                    let _ = p.reply.send(Err(Failure::Attempt(Attempt::Fail(
                        crate::store::StoreError::Other(format!(
                            "the write guard {} is another write's",
                            p.guard
                        )),
                    ))));
                    continue;
                }
                None if key_now.unwrap_or(0) != p.base => Outcome::Moved {
                    base: key_now.unwrap_or(0),
                    absent: key_now.is_none(),
                },
                // Its own comparisons held: another write failed the transaction.
                None => {
                    again.push(p);
                    continue;
                }
            };
            let _ = p.reply.send(Ok(outcome));
        }
        batch = again;
    }
}
