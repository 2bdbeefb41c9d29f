//! The etcd adapter (etcd v3 API through `etcd-client`).
//!
//! Layout: policies under `{prefix}policies/{bucket}`, registry entries under
//! `{prefix}agents/{node_id}` attached to a lease, audit records under `{prefix}audit/`, write
//! guards under `{prefix}writes/` (expiring), the store's identity at `{prefix}meta/identity`. Revisions are etcd's: the header revision
//! of a put or delete is the revision it committed at, and `list` reads pages of
//! [`PAGE_KEYS`] at the header revision of its first page, the revision of the whole snapshot. etcd's revision is cluster-wide, so
//! registry writes advance it too: policy revisions are increasing but not dense.
//!
//! Deadlines: every call tries for at most [`CALL_DEADLINE`], each attempt for at most
//! [`ATTEMPT_TIMEOUT`], retrying errors that mean "cannot reach a leader right now"
//! (`Unavailable` and friends, transport errors, timeouts) with a short backoff. When that
//! runs out the call fails with `StoreError::Unavailable`, so a REST write answers 503 within
//! seconds while etcd is down. A put is acknowledged only once etcd answered, i.e. committed.
//! Writes carry a guard key created in the same transaction (see `write`), so a write whose
//! answer was lost is sent again safely, to the next member at once: the retry recognises the
//! commit by its guard, or commits itself; a newer write another control server acknowledged
//! meanwhile is never overwritten.
//!
//! Agent registry: a store handle (one per control server) grants one lease per TTL (whole
//! seconds, at least 1) on first use, puts its agents' entries on it, and keeps it alive as
//! a whole (`keep_agents_alive`): no lease per write. An agent that moves to another server
//! is put on that server's lease, which detaches it from the old one; the old server's
//! "disconnected" write and removal are conditional on the entry still being on its lease, so
//! they never undo the move. A server that dies stops keeping its lease alive, and its agents'
//! entries end with it, within the TTL.

mod audit;
mod batch;
mod leases;
mod members;
mod watch;
mod write;

pub use members::DOWN_FOR_MS;
pub use write::{GUARD_TTL_SECS, WRITE_ATTEMPT_TIMEOUT};

use write::Write;

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    sync::Arc,
    time::Duration,
};

use etcd_client::{
    CompactionOptions, Compare, CompareOp, ConnectOptions, GetOptions, KvClient, LeaseClient,
    ResponseHeader, Txn, TxnOp, TxnOpResponse, WatchClient, WatchOptions,
};
use tokio::time::Instant;
use tonic::Code;

use crate::store::{
    AuditWrite, KeyValue, PolicyStore, Revision, Snapshot, StoreError, WatchStream,
};

/// The key prefix used when none is configured.
pub const DEFAULT_PREFIX: &str = "/tlsfleet/";

/// Longest wait for one attempt of a call.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for a whole call, retries included.
pub const CALL_DEADLINE: Duration = Duration::from_secs(5);

/// Retries within a call wait from 50 ms doubling to 800 ms (jittered).
fn retry_backoff() -> tlsfleet_net::Backoff {
    tlsfleet_net::Backoff::new(Duration::from_millis(50), Duration::from_millis(800))
}
/// Largest etcd answer decoded. Reads come in pages of [`PAGE_KEYS`], so this bounds one
/// page (and one watch response), not the whole store.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Keys per page of a list. etcd counts the rest of the range for every page (a cost that
/// grows with the keys after the page), so pages are large: at a million policies, 50 pages.
/// A stored policy is rarely over 2 KiB, so a page stays below `MAX_MESSAGE_BYTES`; one that
/// does not is read again in halves.
pub const PAGE_KEYS: i64 = 20_000;
/// The smallest page the halving goes down to.
const MIN_PAGE_KEYS: i64 = 100;

/// Whether an etcd error says its answer was over the decode limit.
fn too_large(why: &str) -> bool {
    why.contains("message length too large") || why.contains("larger than max")
}

/// The first key after every key that starts with `prefix` (etcd's range end for a prefix).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte 0xff: to the end of the keyspace.
    vec![0]
}

/// The store in an etcd cluster. Cheap to clone.
#[derive(Clone)]
pub struct EtcdStore {
    members: Arc<members::Members>,
    policies: String,
    agents: String,
    audit: String,
    /// Write guards (see `write`).
    writes: String,
    identity_key: String,
    /// The lease write guards are put on now, and when it was granted (Unix s).
    guard: Arc<std::sync::Mutex<Option<(i64, i64)>>>,
    /// Keys per page of a full read ([`PAGE_KEYS`] unless [`EtcdStore::with_page_keys`]).
    page_keys: i64,
    /// The registry leases this handle holds (TTL seconds -> lease id); shared by clones.
    registry_leases: Arc<std::sync::Mutex<BTreeMap<i64, i64>>>,
    /// Group commit of conditional writes (see `batch`).
    batcher: batch::Batcher,
}

/// How one attempt of a call ended, when it did not succeed.
#[derive(Clone)]
enum Attempt {
    /// etcd could not be reached or had no leader: try again while the deadline allows.
    Retry(String),
    /// A definite answer: return it.
    Fail(StoreError),
}

impl From<etcd_client::Error> for Attempt {
    fn from(e: etcd_client::Error) -> Self {
        use etcd_client::Error as E;
        let transient = match &e {
            E::GRpcStatus(status) => matches!(
                status.code(),
                Code::Unavailable
                    | Code::DeadlineExceeded
                    | Code::Cancelled
                    | Code::Unknown
                    | Code::ResourceExhausted
            ),
            E::TransportError(_) | E::IoError(_) | E::WatchError(_) => true,
            _ => false,
        };
        if transient {
            Attempt::Retry(e.to_string())
        } else {
            Attempt::Fail(StoreError::Other(format!("etcd: {e}")))
        }
    }
}

fn header_revision(header: Option<&ResponseHeader>) -> Result<Revision, Attempt> {
    header
        .map(ResponseHeader::revision)
        .ok_or_else(|| Attempt::Fail(StoreError::Other("etcd answered without a header".into())))
}

fn attempt_error(attempt: Attempt) -> StoreError {
    match attempt {
        Attempt::Retry(why) => StoreError::Unavailable(why),
        Attempt::Fail(e) => e,
    }
}

/// etcd's answer to a read at, or a compaction of, a revision it no longer has.
fn is_compacted(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s)
        if s.code() == Code::OutOfRange && s.message().contains("compacted"))
}

impl EtcdStore {
    /// A store on the cluster at `endpoints` (`host:port` or URLs), under `prefix` (e.g.
    /// [`DEFAULT_PREFIX`]). Does not contact etcd: the first call does (and fails with
    /// `Unavailable` if it cannot).
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<Self, StoreError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(ATTEMPT_TIMEOUT)
            // Notices a silently dead connection under a long-lived watch.
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            // A member cut off from its leader fails calls and watches at once instead of
            // serving them late: the caller retries, another member answers.
            .with_require_leader(true);
        let members = Arc::new(members::Members::connect(endpoints, options).await?);
        Ok(EtcdStore {
            batcher: batch::Batcher::spawn(members.clone()),
            members,
            policies: format!("{prefix}policies/"),
            agents: format!("{prefix}agents/"),
            audit: format!("{prefix}audit/"),
            writes: format!("{prefix}writes/"),
            identity_key: format!("{prefix}meta/identity"),
            guard: Arc::default(),
            page_keys: PAGE_KEYS,
            registry_leases: Arc::default(),
        })
    }

    /// Reads every policy in pages of `n` keys (at least 1) instead of [`PAGE_KEYS`]: for
    /// tests that need many pages without a million keys.
    #[must_use]
    pub fn with_page_keys(mut self, n: i64) -> Self {
        self.page_keys = n.max(1);
        self
    }

    /// The member calls go to now (see `members`), and its clients.
    fn kv(&self) -> KvClient {
        self.members.kv(self.members.pick())
    }

    fn watch_client(&self) -> WatchClient {
        self.members.watch(self.members.pick())
    }

    fn lease_client(&self) -> LeaseClient {
        self.members.lease(self.members.pick())
    }

    /// Runs `attempt` until it succeeds, fails for good, or the call deadline passes. An
    /// attempt that fails on one member moves to the next member at once; the backoff is for
    /// when no other member is left to try.
    async fn call<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Attempt>>,
    {
        let deadline = Instant::now() + CALL_DEADLINE;
        let mut backoff = retry_backoff();
        loop {
            let member = self.members.pick();
            let left = deadline.saturating_duration_since(Instant::now());
            let started = Instant::now();
            let why = match tokio::time::timeout(left.min(ATTEMPT_TIMEOUT), attempt()).await {
                Ok(Ok(value)) => {
                    self.members.answered(member, what, started.elapsed());
                    return Ok(value);
                }
                Ok(Err(Attempt::Fail(e))) => {
                    self.members.answered(member, what, started.elapsed());
                    return Err(e);
                }
                Ok(Err(Attempt::Retry(why))) => why,
                Err(_) => "no answer in time".to_owned(),
            };
            let another = self.members.failed(member, &why);
            let left = deadline.saturating_duration_since(Instant::now());
            // The deadline check assumes the longest delay, so the last attempt always has
            // time to finish; the sleep itself is jittered.
            if left <= backoff.ceiling() * 2 {
                return Err(StoreError::Unavailable(format!("etcd {what}: {why}")));
            }
            tracing::debug!(what, why, another, "etcd call failed; retrying");
            if !another {
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }

    fn policy_key(&self, bucket: &str) -> String {
        format!("{}{bucket}", self.policies)
    }

    /// One range read of policies at `revision` (0 = now), from `from` (a full key; `None`:
    /// the first policy) to the end of the policies.
    async fn range(
        &self,
        from: Option<Vec<u8>>,
        revision: Revision,
        options: GetOptions,
    ) -> Result<etcd_client::GetResponse, StoreError> {
        let end = prefix_end(&self.policies);
        let from = from.unwrap_or_else(|| self.policies.clone().into_bytes());
        self.call("range", || {
            let (mut kv, from) = (self.kv(), from.clone());
            let options = options
                .clone()
                .with_range(end.clone())
                .with_revision(revision);
            async move {
                match kv.get(from, Some(options)).await {
                    Ok(resp) => Ok(resp),
                    // The exact compact revision is not in etcd's answer; see changes_since.
                    Err(e) if is_compacted(&e) => Err(Attempt::Fail(StoreError::Compacted {
                        requested: revision,
                        compact_revision: revision + 1,
                    })),
                    Err(e) => Err(e.into()),
                }
            }
        })
        .await
    }

    /// Every policy at `revision` (0 = now), in key order, read in pages of [`PAGE_KEYS`] at
    /// that one revision (so no answer has to fit in one message, and a million policies
    /// never make etcd build one huge response); `each` sees every key-value. Returns the
    /// header revision of the first page (with `revision` 0: the revision read at). A
    /// compaction past that revision between two pages fails the read with `Compacted`.
    async fn scan(
        &self,
        revision: Revision,
        keys_only: bool,
        mut each: impl FnMut(&etcd_client::KeyValue) + Send,
    ) -> Result<Revision, StoreError> {
        self.scan_pages(revision, keys_only, &mut |kvs| {
            kvs.iter().for_each(&mut each)
        })
        .await
    }

    /// [`EtcdStore::scan`], a page at a time.
    async fn scan_pages(
        &self,
        revision: Revision,
        keys_only: bool,
        each: &mut (dyn FnMut(&[etcd_client::KeyValue]) + Send),
    ) -> Result<Revision, StoreError> {
        let mut from: Option<Vec<u8>> = None;
        let mut at = revision;
        let mut first_header = None;
        let mut page = self.page_keys;
        loop {
            let mut options = GetOptions::new().with_limit(page);
            if keys_only {
                options = options.with_keys_only();
            }
            let resp = match self.range(from.clone(), at, options).await {
                Ok(resp) => resp,
                // A page of unusually large values: the same page in halves.
                Err(StoreError::Other(why)) if too_large(&why) && page > MIN_PAGE_KEYS => {
                    page = (page / 2).max(MIN_PAGE_KEYS);
                    tracing::debug!(page, "an etcd page was too large; reading smaller pages");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let header = header_revision(resp.header()).map_err(attempt_error)?;
            let first = *first_header.get_or_insert(header);
            if at == 0 {
                at = first;
            }
            each(resp.kvs());
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    let mut next = last.key().to_vec();
                    next.push(0);
                    from = Some(next);
                }
                _ => return Ok(first),
            }
        }
    }

    /// Policies as (bucket, mod_revision), keys only, at `revision` (0 = now).
    async fn keys_at(
        &self,
        revision: Revision,
    ) -> Result<(Revision, Vec<(String, Revision)>), StoreError> {
        let mut keys = Vec::new();
        let now = self
            .scan(revision, true, |kv| {
                if let Some(key) = watch::strip(&self.policies, kv.key()) {
                    keys.push((key, kv.mod_revision()));
                }
            })
            .await?;
        Ok((now, keys))
    }

    /// The compaction that hides revision `after`, found by watching from it (etcd does not
    /// report its compact revision otherwise). At least `after + 1` if the watch says nothing.
    async fn compaction_hiding(&self, after: Revision) -> StoreError {
        let fallback = StoreError::Compacted {
            requested: after,
            compact_revision: after + 1,
        };
        let mut stream = match self.watch(after).await {
            Ok(stream) => stream,
            Err(e @ StoreError::Compacted { .. }) => return e,
            Err(_) => return fallback,
        };
        let first = tokio::time::timeout(ATTEMPT_TIMEOUT, futures::StreamExt::next(&mut stream));
        match first.await {
            Ok(Some(Err(e @ StoreError::Compacted { .. }))) => e,
            _ => fallback,
        }
    }
}

#[async_trait::async_trait]
impl PolicyStore for EtcdStore {
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError> {
        let key = self.policy_key(key);
        self.conditional_write("put", &key, Write::Put(value), None)
            .await
            .map(|(revision, _)| revision)
    }

    async fn delete(&self, key: &str) -> Result<(Revision, bool), StoreError> {
        let key = self.policy_key(key);
        self.conditional_write("delete", &key, Write::Delete, None)
            .await
    }

    async fn put_if(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<Revision, StoreError> {
        let key = self.policy_key(key);
        self.conditional_write("put", &key, Write::Put(value), Some(expected))
            .await
            .map(|(revision, _)| revision)
    }

    async fn put_if_recorded(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
        record: AuditWrite,
    ) -> Result<Revision, StoreError> {
        let key = self.policy_key(key);
        let record = (format!("{}{}", self.audit, record.key), (record.value)(0));
        self.conditional_write_with("put", &key, Write::Put(value), Some(expected), Some(record))
            .await
            .map(|(revision, _)| revision)
    }

    async fn delete_if(
        &self,
        key: &str,
        expected: Revision,
    ) -> Result<(Revision, bool), StoreError> {
        let key = self.policy_key(key);
        self.conditional_write("delete", &key, Write::Delete, Some(expected))
            .await
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let full_key = self.policy_key(key);
        let resp = self
            .call("get", || {
                let (mut kv, key) = (self.kv(), full_key.clone());
                async move { Ok(kv.get(key, None).await?) }
            })
            .await?;
        Ok(resp.kvs().first().map(|kv| KeyValue {
            key: key.to_owned(),
            value: kv.value().to_vec(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
        }))
    }

    async fn list(&self) -> Result<Snapshot, StoreError> {
        let mut items = Vec::new();
        let revision = self.list_pages(&mut |page| items.extend(page)).await?;
        Ok(Snapshot { revision, items })
    }

    async fn list_pages(
        &self,
        page: &mut (dyn FnMut(Vec<KeyValue>) + Send),
    ) -> Result<Revision, StoreError> {
        // etcd returns a range in key order, and every key shares the prefix.
        let mut batch = Vec::new();
        let revision = self
            .scan_pages(0, false, &mut |kvs| {
                batch.clear();
                batch.extend(kvs.iter().filter_map(|kv| {
                    Some(KeyValue {
                        key: watch::strip(&self.policies, kv.key())?,
                        value: kv.value().to_vec(),
                        create_revision: kv.create_revision(),
                        mod_revision: kv.mod_revision(),
                    })
                }));
                page(std::mem::take(&mut batch));
            })
            .await?;
        Ok(revision)
    }

    async fn watch(&self, after: Revision) -> Result<WatchStream, StoreError> {
        let after = after.max(0);
        // Watching from `after` itself (not `after + 1`) makes etcd refuse exactly when
        // `after` is below its compact revision, which is this port's rule; the event at
        // `after` is then dropped. (etcd's start revision 0 means "from now", hence max 1.)
        let start = after.max(1);
        let stream = self
            .call("watch", || {
                let (mut client, prefix) = (self.watch_client(), self.policies.clone());
                let options = WatchOptions::new().with_prefix().with_start_revision(start);
                async move { watch::open(&mut client, prefix, options, after).await }
            })
            .await?;
        Ok(watch::Watch::new(stream, self.policies.clone(), after).into_stream())
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.call("compact", || {
            let mut kv = self.kv();
            async move {
                match kv
                    .compact(revision, Some(CompactionOptions::new().with_physical()))
                    .await
                {
                    Ok(_) => Ok(()),
                    // Already compacted at or above `revision`: nothing left to do.
                    Err(e) if is_compacted(&e) => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
        })
        .await
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        let resp = self
            .range(None, 0, GetOptions::new().with_count_only())
            .await?;
        header_revision(resp.header()).map_err(attempt_error)
    }

    async fn changes_since(&self, after: Revision) -> Result<(Revision, Vec<String>), StoreError> {
        let after = after.max(0);
        let (now, current) = self.keys_at(0).await?;
        if after > now {
            // A revision from the future means the asker knew another history: relist.
            return Err(StoreError::Compacted {
                requested: after,
                compact_revision: now,
            });
        }
        // Revision 1 is etcd's empty initial state, and 0 would mean "now".
        let before = match self.keys_at(after.max(1)).await {
            Ok((_, keys)) => keys,
            Err(StoreError::Compacted { .. }) => return Err(self.compaction_hiding(after).await),
            Err(e) => return Err(e),
        };
        let mut changed: BTreeSet<String> = current
            .iter()
            .filter(|(_, mod_revision)| *mod_revision > after)
            .map(|(key, _)| key.clone())
            .collect();
        let still_there: BTreeSet<&String> = current.iter().map(|(key, _)| key).collect();
        changed.extend(
            before
                .into_iter()
                .map(|(key, _)| key)
                .filter(|k| !still_there.contains(k)),
        );
        Ok((now, changed.into_iter().collect()))
    }

    fn members(&self) -> Vec<crate::store::MemberHealth> {
        self.members.health()
    }

    async fn identity(&self) -> Result<String, StoreError> {
        let key = self.identity_key.clone();
        let fresh = format!("etcd-{}", hex::encode(rand::random::<[u8; 8]>()));
        self.call("identity", || {
            let (mut kv, key, fresh) = (self.kv(), key.clone(), fresh.clone());
            async move {
                // Made once, by whichever control server gets there first.
                let txn = Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key.clone(), fresh.clone(), None)])
                    .or_else([TxnOp::get(key, None)]);
                let resp = kv.txn(txn).await?;
                if resp.succeeded() {
                    return Ok(fresh);
                }
                for op in resp.op_responses() {
                    if let TxnOpResponse::Get(get) = op {
                        if let Some(kv) = get.kvs().first() {
                            return Ok(String::from_utf8_lossy(kv.value()).into_owned());
                        }
                    }
                }
                Err(Attempt::Fail(StoreError::Other(
                    "etcd: the store identity is neither new nor readable".into(),
                )))
            }
        })
        .await
    }
}
