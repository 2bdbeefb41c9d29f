//! The agent registry: which agents are connected to which control server, and which revision
//! each one applied. Each server keeps its own agents in memory and writes them to the store
//! under a time to live, so any server can answer `ListAgents` and `GetRolloutStatus`.
//!
//! * [`AgentRecord`]: the registry's record of an agent, and its storage format.
//! * [`Rollout`]: which agents enforce, await or failed a revision.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tlsfleet_policy::CertKeyType;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::{clock::now_ms, store::AgentLeases};

pub mod convergence;
mod record;
mod rollout;

use convergence::Convergence;

pub use record::{AgentRecord, BucketFailure, Phase};
pub use rollout::{selects, Rollout};

/// What an agent says about itself when its stream opens (bounded by the Sync server).
#[derive(Clone, Debug, Default)]
pub struct Hello {
    pub node_id: String,
    pub labels: BTreeMap<String, String>,
    /// The revision it is known to enforce (its hello's, clamped to what this store has).
    pub applied_revision: i64,
    pub key_types: Vec<CertKeyType>,
}

/// How long a registry entry outlives its last refresh in the store.
pub const ENTRY_TTL: Duration = Duration::from_secs(30);
/// Changes are written at most this often (ACK storms coalesce).
const FLUSH_EVERY: Duration = Duration::from_millis(200);

struct Entry {
    status: AgentRecord,
    session: u64,
    /// The session counts for the convergence of revisions after this one.
    counted_from: i64,
    dirty: bool,
    /// When the agent disconnected: the entry is written once more as disconnected (if this
    /// server still holds it), shown for [`ENTRY_TTL`], then removed.
    gone: Option<tokio::time::Instant>,
}

struct Inner {
    control_id: String,
    control_url: String,
    store: Arc<dyn AgentLeases>,
    local: Mutex<HashMap<String, Entry>>,
    changed: Notify,
    sessions: AtomicU64,
    /// The store's records as last read (decoded once; `None`: the read failed), and when:
    /// what [`Registry::key_types`], [`Registry::rollout`] and [`Registry::list`] merge this
    /// server's agents over.
    stored: tokio::sync::Mutex<Option<(tokio::time::Instant, Option<StoredAgents>)>>,
    convergence: Convergence,
    /// Agent records in the store (every server's), as last read; -1 before the first read.
    stored_agents: std::sync::atomic::AtomicI64,
}

/// The agent records read from the store, decoded, by node id.
type StoredAgents = Arc<BTreeMap<String, AgentRecord>>;

/// How long the store's records are reused for [`Registry::key_types`] (every PUT asks).
pub const KEY_TYPES_FRESH: Duration = Duration::from_secs(1);

/// How long the store's records are reused for [`Registry::rollout`] and [`Registry::list`]:
/// other servers' agents are seen at most this much later than their servers wrote them
/// (which is at most `FLUSH_EVERY` after their ACKs); this server's own agents are always
/// current. A fleet of 1,000 agents polled by several `tlsfleetctl rollout --wait` at once
/// costs one store read and decode per period, not one per poll.
pub const STATUS_FRESH: Duration = Duration::from_millis(100);

/// Handle to the registry; cheap to clone.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

/// One agent's stream, as the registry sees it.
pub struct Session {
    inner: Arc<Inner>,
    node_id: String,
    id: u64,
}

impl Registry {
    pub fn new(store: Arc<dyn AgentLeases>, control_id: String) -> Self {
        Self::with_url(store, control_id, String::new())
    }

    /// A registry whose records say other servers reach this one at `control_url`.
    pub fn with_url(store: Arc<dyn AgentLeases>, control_id: String, control_url: String) -> Self {
        Self {
            inner: Arc::new(Inner {
                control_id,
                control_url,
                store,
                local: Mutex::new(HashMap::new()),
                changed: Notify::new(),
                sessions: AtomicU64::new(1),
                stored: tokio::sync::Mutex::new(None),
                convergence: Convergence::default(),
                stored_agents: std::sync::atomic::AtomicI64::new(-1),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        lock(&self.inner)
    }

    /// Records a new stream; a reconnect replaces the agent's previous session.
    pub fn connect(&self, hello: Hello) -> Session {
        let id = self.inner.sessions.fetch_add(1, Ordering::Relaxed);
        let now = now_ms();
        let status = AgentRecord {
            node_id: hello.node_id.clone(),
            labels: hello.labels,
            applied_revision: hello.applied_revision,
            sent_revision: 0,
            phase: Phase::Applying,
            errors: vec![],
            nack_revision: 0,
            control_id: self.inner.control_id.clone(),
            control_url: self.inner.control_url.clone(),
            connected_at_unix_ms: now,
            last_seen_unix_ms: now,
            acked_unix_ms: 0,
            key_types: hello
                .key_types
                .iter()
                .map(|k| k.as_str().to_owned())
                .collect(),
        };
        let mut local = self.lock();
        let counted_from = self.inner.convergence.newest();
        let replaced = local.insert(
            hello.node_id.clone(),
            Entry {
                status,
                session: id,
                counted_from,
                dirty: true,
                gone: None,
            },
        );
        // The stream this one replaces will not answer for what it was counted for.
        if let Some(old) = replaced.filter(|e| e.gone.is_none()) {
            self.inner
                .convergence
                .left(old.status.applied_revision, old.counted_from);
        }
        drop(local);
        self.inner.changed.notify_one();
        Session {
            inner: self.inner.clone(),
            node_id: hello.node_id,
            id,
        }
    }

    /// A change at `revision` reached this server's index: the agents on its streams that are
    /// behind it are waited for (`convergence_seconds`).
    pub fn committed(&self, revision: i64) {
        // Counted and recorded under the lock the ACKs take: none falls between.
        let local = self.lock();
        let connected = local.values().filter(|e| e.gone.is_none());
        let (mut agents, mut behind) = (0, 0);
        for e in connected {
            agents += 1;
            behind += usize::from(e.status.applied_revision < revision);
        }
        self.inner.convergence.committed(revision, agents, behind);
    }

    /// Agent records in the store, every server's, as last read (read at least every
    /// [`ENTRY_TTL`] / 3 by the flusher); None before the first read.
    pub fn stored_agents(&self) -> Option<i64> {
        Some(self.inner.stored_agents.load(Ordering::Relaxed)).filter(|n| *n >= 0)
    }

    /// How long changes took to reach this server's agents, and what is still waiting.
    pub fn convergence(&self) -> &Convergence {
        &self.inner.convergence
    }

    /// This server's agents by phase (for its metrics): applying, in sync, degraded,
    /// disconnected (still shown).
    pub fn local_phases(&self) -> [usize; 4] {
        let mut counts = [0; 4];
        for e in self.lock().values() {
            let i = match e.status.phase {
                Phase::Applying => 0,
                Phase::InSync => 1,
                Phase::Degraded => 2,
                Phase::Disconnected => 3,
            };
            counts[i] += 1;
        }
        counts
    }

    /// Every known agent, sorted by node id: this server's, then the store's for the rest.
    pub async fn list(&self) -> Vec<AgentRecord> {
        let stored = self.stored(STATUS_FRESH).await;
        let mut all = Vec::new();
        self.visit(stored.as_deref(), |a| all.push(a.clone()));
        all
    }

    /// The store's records, read at most `fresh` ago (one read at a time: callers that come
    /// meanwhile share it); `None` when the store could not be read (logged), which is also
    /// kept for `fresh`, so that callers queued behind a read that timed out do not each wait
    /// for one of their own.
    async fn stored(&self, fresh: Duration) -> Option<StoredAgents> {
        let mut cached = self.inner.stored.lock().await;
        if let Some((at, agents)) = &*cached {
            if at.elapsed() < fresh {
                return agents.clone();
            }
        }
        let agents = match self.inner.store.list_agents().await {
            Ok(entries) => Some(Arc::new(self.decode_stored(entries))),
            Err(e) => {
                warn!(error = %e, "registry: store unreachable, listing local agents only");
                None
            }
        };
        *cached = Some((tokio::time::Instant::now(), agents.clone()));
        agents
    }

    fn decode_stored(&self, entries: Vec<(String, Vec<u8>)>) -> BTreeMap<String, AgentRecord> {
        self.inner.stored_agents.store(
            i64::try_from(entries.len()).unwrap_or(i64::MAX),
            Ordering::Relaxed,
        );
        let mut agents = BTreeMap::new();
        for (node, bytes) in entries {
            match AgentRecord::decode(&bytes) {
                Ok(record) => {
                    agents.insert(node, record);
                }
                Err(e) => warn!(node, error = %e, "undecodable registry entry"),
            }
        }
        agents
    }

    /// Calls `f` with every known agent in node id order: this server's own record of it
    /// when it has one, else the store's (`stored`); nothing is copied.
    fn visit(
        &self,
        stored: Option<&BTreeMap<String, AgentRecord>>,
        mut f: impl FnMut(&AgentRecord),
    ) {
        let local = self.lock();
        let mut all: BTreeMap<&str, &AgentRecord> = stored
            .into_iter()
            .flatten()
            .map(|(node, record)| (node.as_str(), record))
            .collect();
        for (node, e) in local.iter() {
            all.insert(node.as_str(), &e.status);
        }
        for record in all.into_values() {
            f(record);
        }
    }

    /// The certificate key types of the connected agents, each with the agents that have it:
    /// what the fleet can serve. Agents that report none are left out.
    ///
    /// Every PUT asks, so the other servers' agents are read from the store at most once per
    /// [`KEY_TYPES_FRESH`] (one read at a time); this server's own agents are always current.
    /// An agent that joined another server within that second may be missed: it then refuses
    /// (NACKs) a policy it cannot serve, keeping the bucket's previous config.
    pub async fn key_types(&self) -> BTreeMap<CertKeyType, Vec<String>> {
        let stored = self.stored(KEY_TYPES_FRESH).await;
        let mut out: BTreeMap<CertKeyType, Vec<String>> = BTreeMap::new();
        self.visit(stored.as_deref(), |a| {
            if !a.is_connected() {
                return;
            }
            for kind in a.key_types.iter().filter_map(|k| CertKeyType::parse(k)) {
                out.entry(kind).or_default().push(a.node_id.clone());
            }
        });
        out
    }

    /// The gRPC URLs of the other control servers that have agents (from the registry).
    pub async fn peer_urls(&self) -> Vec<String> {
        let mut urls: Vec<String> = self
            .list()
            .await
            .into_iter()
            .filter(|a| a.is_connected() && !a.control_url.is_empty())
            .map(|a| a.control_url)
            .filter(|u| *u != self.inner.control_url)
            .collect();
        urls.sort();
        urls.dedup();
        urls
    }

    /// The agents whose labels match `selector` (all when empty), classified for `revision`.
    pub async fn rollout(&self, revision: i64, selector: &BTreeMap<String, String>) -> Rollout {
        let stored = self.stored(STATUS_FRESH).await;
        let mut out = Rollout::default();
        self.visit(stored.as_deref(), |a| {
            if rollout::selects(selector, &a.labels) {
                out.add(revision, a);
            }
        });
        out
    }

    /// Writes changed entries and keeps this server's entries alive until `shutdown`.
    pub fn spawn_flusher(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let mut refresh = tokio::time::interval(ENTRY_TTL / 3);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = inner.changed.notified() => {}
                    _ = refresh.tick() => {
                        keep_alive(&inner).await;
                        // Also keeps the count of the store's records current.
                        let _ = Registry { inner: inner.clone() }.stored(STATUS_FRESH).await;
                    }
                };
                flush(&inner).await;
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(FLUSH_EVERY) => {}
                }
            }
            // Agents of a server that stops are disconnected from it (unless another server
            // holds them by now).
            let nodes: Vec<String> = lock(&inner).keys().cloned().collect();
            for node in nodes {
                let _ = inner.store.remove_agent(&node).await;
            }
            debug!("registry flusher stopped");
        })
    }
}

fn lock(inner: &Inner) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
    // Entries are replaced field by field under the lock; a panic elsewhere cannot leave
    // one half-written in a way that matters for a status listing.
    inner.local.lock().unwrap_or_else(|p| p.into_inner())
}

/// Keeps this server's lease alive; entries lost with an expired lease are written again,
/// and disconnected agents shown for [`ENTRY_TTL`] are removed.
async fn keep_alive(inner: &Inner) {
    match inner.store.keep_agents_alive().await {
        Ok(true) => {}
        Ok(false) => {
            warn!("the registry's lease had expired; writing this server's agents again");
            for entry in lock(inner).values_mut() {
                entry.dirty = true;
            }
        }
        Err(e) => debug!(error = %e, "registry keep-alive failed; will retry"),
    }
    let now = tokio::time::Instant::now();
    let expired: Vec<String> = lock(inner)
        .iter()
        .filter(|(_, e)| e.gone.is_some_and(|at| now.duration_since(at) >= ENTRY_TTL))
        .map(|(k, _)| k.clone())
        .collect();
    for node in expired {
        if inner.store.remove_agent(&node).await.is_ok() {
            let mut local = lock(inner);
            if local.get(&node).is_some_and(|e| e.gone.is_some()) {
                local.remove(&node);
            }
        }
    }
}

async fn flush(inner: &Inner) {
    let batch: Vec<(String, Vec<u8>, bool)> = {
        let mut local = lock(inner);
        local
            .iter_mut()
            .filter(|(_, e)| e.dirty)
            .map(|(k, e)| {
                e.dirty = false;
                (k.clone(), e.status.encode(), e.gone.is_some())
            })
            .collect()
    };
    for (node, bytes, gone) in batch {
        let written = if gone {
            inner
                .store
                .put_agent_unless_taken(&node, bytes, ENTRY_TTL)
                .await
        } else {
            inner
                .store
                .put_agent(&node, bytes, ENTRY_TTL)
                .await
                .map(|()| true)
        };
        match written {
            Ok(true) => {}
            Ok(false) => {
                // Another server holds the agent now: its entry is not ours to write.
                let mut local = lock(inner);
                if local
                    .get(&node)
                    .is_some_and(|e| e.gone.is_some() && !e.dirty)
                {
                    local.remove(&node);
                }
            }
            Err(e) => {
                debug!(node, error = %e, "registry write failed; will retry");
                if let Some(entry) = lock(inner).get_mut(&node) {
                    entry.dirty = true;
                }
            }
        }
    }
}

impl Session {
    fn update(&self, f: impl FnOnce(&mut AgentRecord)) {
        let mut local = lock(&self.inner);
        if let Some(e) = local
            .get_mut(&self.node_id)
            .filter(|e| e.session == self.id)
        {
            let before = e.status.applied_revision;
            f(&mut e.status);
            // Under the same lock as `committed` counts who is behind a change.
            self.inner
                .convergence
                .advanced(before, e.status.applied_revision, e.counted_from);
            e.status.last_seen_unix_ms = now_ms();
            e.dirty = true;
        }
        drop(local);
        self.inner.changed.notify_one();
    }

    /// A revision was sent.
    pub fn sent(&self, revision: i64) {
        self.update(|s| {
            s.sent_revision = revision;
            if s.applied_revision < revision {
                s.phase = Phase::Applying;
            }
        });
    }

    pub fn ack(&self, revision: i64) {
        self.update(|s| {
            s.acked_unix_ms = now_ms();
            s.applied_revision = s.applied_revision.max(revision);
            if revision < s.nack_revision {
                // An older revision's ACK does not undo a newer NACK.
                return;
            }
            s.errors.clear();
            s.nack_revision = 0;
            s.phase = if s.applied_revision >= s.sent_revision {
                Phase::InSync
            } else {
                Phase::Applying
            };
        });
    }

    /// The agent applied `revision` except for the buckets it names (the caller bounds the
    /// list and its strings).
    pub fn nack(&self, revision: i64, errors: Vec<BucketFailure>) {
        warn!(node = ?self.node_id, revision, ?errors, "agent NACKed a revision");
        self.update(|s| {
            s.acked_unix_ms = now_ms();
            s.applied_revision = s.applied_revision.max(revision);
            s.nack_revision = revision;
            s.errors = errors.into_iter().take(100).collect();
            s.phase = Phase::Degraded;
        });
    }

    pub fn disconnected(&self) {
        let mut local = lock(&self.inner);
        if let Some(e) = local
            .get_mut(&self.node_id)
            .filter(|e| e.session == self.id)
        {
            if e.gone.is_none() {
                self.inner
                    .convergence
                    .left(e.status.applied_revision, e.counted_from);
            }
            e.status.phase = Phase::Disconnected;
            e.status.last_seen_unix_ms = now_ms();
            e.dirty = true;
            e.gone = Some(tokio::time::Instant::now());
        }
        drop(local);
        self.inner.changed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tlsfleet_testkit::eventually::eventually;

    use crate::store::embedded::EmbeddedStore;

    /// An agent that connects and goes again before the flusher first writes it is still
    /// listed, as disconnected, in the store too: a rollout then counts it as pending, and
    /// does not report the fleet complete without it.
    #[tokio::test]
    async fn an_agent_gone_before_its_first_write_is_listed_as_disconnected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(EmbeddedStore::open(dir.path()).expect("open"));
        let registry = Registry::new(store.clone(), "c1".into());
        let session = registry.connect(Hello {
            node_id: "edge-1".into(),
            labels: BTreeMap::new(),
            applied_revision: 0,
            key_types: vec![],
        });
        session.disconnected();
        let shutdown = CancellationToken::new();
        let flusher = registry.spawn_flusher(shutdown.clone());
        eventually(
            "the disconnected agent reaches the store",
            Duration::from_secs(10),
            || async { !store.list_agents().await.expect("list").is_empty() },
        )
        .await;
        let listed = registry.list().await;
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].phase, Phase::Disconnected);
        let rollout = registry.rollout(1, &BTreeMap::new()).await;
        assert_eq!(rollout.pending, ["edge-1"]);
        shutdown.cancel();
        flusher.await.expect("flusher");
    }
}
