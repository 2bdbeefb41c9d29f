//! The etcd adapter (etcd v3 API through `etcd-client`).
//!
//! Layout: policies under `{prefix}policies/{bucket}`, registry entries under
//! `{prefix}agents/{node_id}` attached to a lease. Revisions are etcd's: the header revision
//! of a put or delete is the revision it committed at, and `list` reads pages of
//! [`PAGE_KEYS`] at the header revision of its first page, the revision of the whole snapshot. etcd's revision is cluster-wide, so
//! registry writes advance it too: policy revisions are increasing but not dense.
//!
//! Deadlines: every call tries for at most [`CALL_DEADLINE`], each attempt for at most
//! [`ATTEMPT_TIMEOUT`], retrying errors that mean "cannot reach a leader right now"
//! (`Unavailable` and friends, transport errors, timeouts) with a short backoff. When that
//! runs out the call fails with `StoreError::Unavailable`, so a REST write answers 503 within
//! seconds while etcd is down. A put is acknowledged only once etcd answered, i.e. committed.
//! Writes are retried conditionally (see `conditional_write`): a put whose answer was lost may
//! have committed, and a blind retry could overwrite a newer write another control server
//! acknowledged meanwhile; instead the retry recognises its own write, or answers
//! `OutcomeUnknown` ("may have been applied") rather than "nothing written".
//!
//! Agent registry: a store handle (one per control server) grants one lease per TTL (whole
//! seconds, at least 1) on first use, puts its agents' entries on it, and keeps it alive as
//! a whole (`keep_agents_alive`): no lease per write. An agent that moves to another server
//! is put on that server's lease, which detaches it from the old one; the old server's
//! "disconnected" write and removal are conditional on the entry still being on its lease, so
//! they never undo the move. A server that dies stops keeping its lease alive, and its agents'
//! entries end with it, within the TTL.

mod audit;
mod watch;
mod write;

use write::Write;

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    sync::Arc,
    time::Duration,
};

use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, ConnectOptions, GetOptions, KvClient,
    LeaseClient, PutOptions, ResponseHeader, Txn, TxnOp, TxnOpResponse, WatchClient, WatchOptions,
};
use tokio::time::Instant;
use tonic::Code;

use crate::store::{
    AgentLeases, KeyValue, PolicyStore, Revision, Snapshot, StoreError, WatchStream,
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
/// Keys per page of a list. A stored policy is at most a few KiB, so a page stays far below
/// [`MAX_MESSAGE_BYTES`].
pub const PAGE_KEYS: i64 = 2_000;

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
    kv: KvClient,
    watch: WatchClient,
    lease: LeaseClient,
    policies: String,
    agents: String,
    audit: String,
    identity_key: String,
    /// The registry leases this handle holds (TTL seconds -> lease id); shared by clones.
    registry_leases: Arc<std::sync::Mutex<BTreeMap<i64, i64>>>,
}

/// How one attempt of a call ended, when it did not succeed.
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
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(|e| StoreError::Other(format!("etcd client: {e}")))?;
        Ok(EtcdStore {
            kv: client
                .kv_client()
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            watch: client
                .watch_client()
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            lease: client.lease_client(),
            policies: format!("{prefix}policies/"),
            agents: format!("{prefix}agents/"),
            audit: format!("{prefix}audit/"),
            identity_key: format!("{prefix}meta/identity"),
            registry_leases: Arc::default(),
        })
    }

    /// Runs `attempt` until it succeeds, fails for good, or the call deadline passes.
    async fn call<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Attempt>>,
    {
        let deadline = Instant::now() + CALL_DEADLINE;
        let mut backoff = retry_backoff();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let why = match tokio::time::timeout(left.min(ATTEMPT_TIMEOUT), attempt()).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(Attempt::Fail(e))) => return Err(e),
                Ok(Err(Attempt::Retry(why))) => why,
                Err(_) => "no answer in time".to_owned(),
            };
            let left = deadline.saturating_duration_since(Instant::now());
            // The deadline check assumes the longest delay, so the last attempt always has
            // time to finish; the sleep itself is jittered.
            if left <= backoff.ceiling() * 2 {
                return Err(StoreError::Unavailable(format!("etcd {what}: {why}")));
            }
            tracing::debug!(what, why, "etcd call failed; retrying");
            tokio::time::sleep(backoff.next_delay()).await;
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
            let (mut kv, from) = (self.kv.clone(), from.clone());
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
        mut each: impl FnMut(&etcd_client::KeyValue),
    ) -> Result<Revision, StoreError> {
        let mut from = None;
        let mut at = revision;
        let mut first_header = None;
        loop {
            let mut options = GetOptions::new().with_limit(PAGE_KEYS);
            if keys_only {
                options = options.with_keys_only();
            }
            let resp = self.range(from.take(), at, options).await?;
            let header = header_revision(resp.header()).map_err(attempt_error)?;
            let first = *first_header.get_or_insert(header);
            if at == 0 {
                at = first;
            }
            resp.kvs().iter().for_each(&mut each);
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
                let (mut kv, key) = (self.kv.clone(), full_key.clone());
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
        // etcd returns a range in key order, and every key shares the prefix.
        let revision = self
            .scan(0, false, |kv| {
                if let Some(key) = watch::strip(&self.policies, kv.key()) {
                    items.push(KeyValue {
                        key,
                        value: kv.value().to_vec(),
                        create_revision: kv.create_revision(),
                        mod_revision: kv.mod_revision(),
                    });
                }
            })
            .await?;
        Ok(Snapshot { revision, items })
    }

    async fn watch(&self, after: Revision) -> Result<WatchStream, StoreError> {
        let after = after.max(0);
        // Watching from `after` itself (not `after + 1`) makes etcd refuse exactly when
        // `after` is below its compact revision, which is this port's rule; the event at
        // `after` is then dropped. (etcd's start revision 0 means "from now", hence max 1.)
        let start = after.max(1);
        let stream = self
            .call("watch", || {
                let (mut client, prefix) = (self.watch.clone(), self.policies.clone());
                let options = WatchOptions::new().with_prefix().with_start_revision(start);
                async move { watch::open(&mut client, prefix, options, after).await }
            })
            .await?;
        Ok(watch::Watch::new(stream, self.policies.clone(), after).into_stream())
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.call("compact", || {
            let mut kv = self.kv.clone();
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

    async fn identity(&self) -> Result<String, StoreError> {
        let key = self.identity_key.clone();
        let fresh = format!("etcd-{}", hex::encode(rand::random::<[u8; 8]>()));
        self.call("identity", || {
            let (mut kv, key, fresh) = (self.kv.clone(), key.clone(), fresh.clone());
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

/// etcd's answer to a write on a lease that expired or was revoked.
fn is_lease_not_found(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s)
        if s.code() == Code::NotFound && s.message().contains("lease not found"))
}

/// A TTL in whole seconds, at least 1 (etcd's unit).
fn ttl_seconds(ttl: Duration) -> i64 {
    let secs = ttl
        .as_secs()
        .saturating_add(u64::from(ttl.subsec_nanos() > 0))
        .max(1);
    i64::try_from(secs).unwrap_or(i64::MAX)
}

impl EtcdStore {
    /// The registry leases this handle holds, by TTL in seconds.
    fn leases(&self) -> std::sync::MutexGuard<'_, BTreeMap<i64, i64>> {
        // A plain map of ids: nothing half-written to recover from a poisoned lock.
        self.registry_leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// This handle's lease of `ttl_secs`, granted on first use.
    async fn lease_for(&self, ttl_secs: i64) -> Result<i64, Attempt> {
        if let Some(id) = self.leases().get(&ttl_secs) {
            return Ok(*id);
        }
        let id = self.lease.clone().grant(ttl_secs, None).await?.id();
        // Two first puts at once may both grant: keep one; the other expires unused.
        Ok(*self.leases().entry(ttl_secs).or_insert(id))
    }

    fn forget_lease(&self, id: i64) {
        self.leases().retain(|_, held| *held != id);
    }

    /// Runs `then` on `key` in a transaction that holds only if the key is on one of this
    /// handle's leases; whether it held.
    async fn if_held(&self, what: &str, key: &str, then: TxnOp) -> Result<bool, StoreError> {
        let held: Vec<i64> = self.leases().values().copied().collect();
        for id in held {
            let done = self
                .call(what, || {
                    let (mut kv, key, then) = (self.kv.clone(), key.to_owned(), then.clone());
                    async move {
                        let txn = Txn::new()
                            .when([Compare::lease(key, CompareOp::Equal, id)])
                            .and_then([then]);
                        Ok(kv.txn(txn).await?.succeeded())
                    }
                })
                .await?;
            if done {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

#[async_trait::async_trait]
impl AgentLeases for EtcdStore {
    async fn put_agent(
        &self,
        node_id: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let key = format!("{}{node_id}", self.agents);
        let ttl_secs = ttl_seconds(ttl);
        self.call("put_agent", || {
            let (mut kv, key, value) = (self.kv.clone(), key.clone(), value.clone());
            async move {
                let id = self.lease_for(ttl_secs).await?;
                match kv
                    .put(key, value, Some(PutOptions::new().with_lease(id)))
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(e) if is_lease_not_found(&e) => {
                        // Expired while etcd could not be reached: the next attempt grants
                        // a new one.
                        self.forget_lease(id);
                        Err(Attempt::Retry("the registry lease expired".into()))
                    }
                    Err(e) => Err(e.into()),
                }
            }
        })
        .await
    }

    async fn put_agent_if_held(&self, node_id: &str, value: Vec<u8>) -> Result<bool, StoreError> {
        let key = format!("{}{node_id}", self.agents);
        // `ignore_lease` keeps the key on the lease it is on (the one the compare found).
        let then = TxnOp::put(
            key.clone(),
            value,
            Some(PutOptions::new().with_ignore_lease()),
        );
        self.if_held("put_agent_if_held", &key, then).await
    }

    async fn remove_agent(&self, node_id: &str) -> Result<(), StoreError> {
        let key = format!("{}{node_id}", self.agents);
        self.if_held("remove_agent", &key, TxnOp::delete(key.clone(), None))
            .await
            .map(|_| ())
    }

    async fn keep_agents_alive(&self) -> Result<bool, StoreError> {
        let held: Vec<i64> = self.leases().values().copied().collect();
        let mut all_kept = true;
        for id in held {
            let kept = self
                .call("keep_agents_alive", || {
                    let mut lease = self.lease.clone();
                    async move {
                        // `keep_alive` sends one keep-alive and reads its answer; the stream
                        // is dropped after (one call per refresh, no stream to babysit).
                        match lease.keep_alive(id).await {
                            Ok(_) => Ok(true),
                            Err(etcd_client::Error::LeaseKeepAliveError(why))
                                if why.contains("not found") =>
                            {
                                Ok(false)
                            }
                            Err(e) => Err(e.into()),
                        }
                    }
                })
                .await?;
            if !kept {
                // The lease expired, and its entries with it.
                self.forget_lease(id);
                all_kept = false;
            }
        }
        Ok(all_kept)
    }

    async fn list_agents(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let resp = self
            .call("list_agents", || {
                let (mut kv, prefix) = (self.kv.clone(), self.agents.clone());
                async move {
                    Ok(kv
                        .get(prefix, Some(GetOptions::new().with_prefix()))
                        .await?)
                }
            })
            .await?;
        Ok(resp
            .kvs()
            .iter()
            .filter_map(|kv| Some((watch::strip(&self.agents, kv.key())?, kv.value().to_vec())))
            .collect())
    }
}
