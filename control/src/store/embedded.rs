//! The embedded adapter: one redb file, for a single control server (`--store file:DIR`).
//!
//! Durability: each write is one redb transaction committed with `Durability::Immediate`
//! (fsync) before the call returns. Revisions are a counter in the same transaction, so they
//! strictly increase, are dense (each write adds one), and survive restarts. An event log
//! (revision -> change) serves watches from any revision not yet compacted; live changes go
//! out on a broadcast channel after each commit (see `watch.rs` for the seam between the two).
//!
//! The agent registry is kept in memory, not in the file: with a single control server every
//! agent is connected to this process, the entries expire within a TTL anyway, and after a
//! restart agents reconnect and register again, so persisting them would only add fsyncs to
//! every heartbeat and resurrect stale entries.
//!
//! redb locks the file: a second `open` of the same directory (from this or another process)
//! fails at once with `StoreError::Other`, it does not wait.

mod tables;
mod watch;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::{Duration, Instant},
};

use redb::{Database, DatabaseError};
use tokio::sync::broadcast;

use crate::store::{
    AgentLeases, AuditEntry, AuditLog, AuditWrite, KeyValue, PolicyStore, Revision, Snapshot,
    StoreError, WatchStream,
};

/// The database file inside the store directory.
pub const FILE_NAME: &str = "tlsfleet.redb";

/// Keys per page of a full read (as the etcd adapter's, `etcd::PAGE_KEYS`).
pub const PAGE_KEYS: usize = 20_000;
/// Pages read ahead of the caller.
const PAGES_QUEUED: usize = 2;

/// Live events buffered per watcher; a watcher further behind re-reads the log.
const LIVE_BUFFER: usize = 256;

/// With a bounded history, the log is compacted at least every this many revisions.
pub const COMPACT_EVERY: i64 = 1024;

/// redb's default page cache is 1 GiB; policies are small.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// The single-node store in a directory. Cheap to clone (clones share the database).
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<Database>,
    path: PathBuf,
    live: broadcast::Sender<crate::store::Event>,
    /// Held from the start of a write transaction until its event is published, so events
    /// go out in revision order.
    write_order: Mutex<()>,
    agents: Mutex<HashMap<String, Agent>>,
    identity: String,
    /// Revisions of the event log kept (0: all); older ones are compacted as writes go on.
    history: AtomicU64,
    /// The revision the log was last compacted at, as known to this process.
    compacted: AtomicI64,
    /// Keys per page of `list_pages`.
    page_keys: AtomicUsize,
}

struct Agent {
    value: Vec<u8>,
    ttl: Duration,
    /// `None` when the TTL is too large to represent: never expires.
    expires: Option<Instant>,
}

impl Agent {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|at| at > now)
    }
}

impl EmbeddedStore {
    /// Opens (creating it if needed) the store in `dir`. Blocks on file I/O: call it at start
    /// up, or from `spawn_blocking`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Other(format!(
                "cannot create store directory {}: {e}",
                dir.display()
            ))
        })?;
        let path = dir.join(FILE_NAME);
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| match e {
                DatabaseError::DatabaseAlreadyOpen => StoreError::Other(format!(
                    "{} is already open (by another process, or another store in this one): \
                     one process owns a store directory",
                    path.display()
                )),
                e => StoreError::Other(format!("cannot open {}: {e}", path.display())),
            })?;
        let identity = tables::init(&db)?;
        let compacted = tables::compact_revision(&db)?;
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        Ok(EmbeddedStore {
            inner: Arc::new(Inner {
                db: Arc::new(db),
                path,
                live,
                write_order: Mutex::new(()),
                agents: Mutex::new(HashMap::new()),
                identity,
                history: AtomicU64::new(0),
                compacted: AtomicI64::new(compacted),
                page_keys: AtomicUsize::new(PAGE_KEYS),
            }),
        })
    }

    /// Keeps only the last `revisions` of the event log (0: all): once an eighth more has
    /// piled up (at most [`COMPACT_EVERY`]), the log is compacted below that. Watches and
    /// resuming agents from before the kept history get `Compacted` (a relist, a snapshot).
    pub fn with_history(self, revisions: u64) -> Self {
        self.inner.history.store(revisions, Ordering::Relaxed);
        self
    }

    /// Keys per page of a full read (default [`PAGE_KEYS`]; small ones make tests span pages).
    pub fn with_page_keys(self, keys: usize) -> Self {
        self.inner.page_keys.store(keys.max(1), Ordering::Relaxed);
        self
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs blocking database work that publishes nothing.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.inner.db.clone();
        blocking(move || f(&db)).await
    }

    /// Runs a blocking write, then publishes its event (if any) in commit order.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<(T, Option<crate::store::Event>), StoreError>
            + Send
            + 'static,
    {
        let inner = self.inner.clone();
        blocking(move || {
            let _order = inner
                .write_order
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let (out, event) = f(&inner.db)?;
            if let Some(event) = event {
                let revision = event.revision();
                // An error only means that no watch is listening.
                let _ = inner.live.send(event);
                let keep = i64::try_from(inner.history.load(Ordering::Relaxed)).unwrap_or(0);
                let done = inner.compacted.load(Ordering::Relaxed);
                let slack = (keep / 8).clamp(1, COMPACT_EVERY);
                if keep > 0 && revision - keep - done >= slack {
                    // The write is committed either way; a failed compaction is retried later.
                    match tables::compact(&inner.db, revision - keep) {
                        Ok(()) => inner.compacted.store(revision - keep, Ordering::Relaxed),
                        Err(e) => tracing::warn!(error = %e, "compacting the event log failed"),
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    fn agents(&self) -> std::sync::MutexGuard<'_, HashMap<String, Agent>> {
        // The map stays consistent even if a holder panicked: every update is one insert or
        // remove.
        self.inner
            .agents
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runs blocking database work off the async threads.
async fn blocking<T, F>(f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Other(format!("embedded store task failed: {e}")))?
}

#[async_trait::async_trait]
impl PolicyStore for EmbeddedStore {
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError> {
        let key = key.to_owned();
        self.write(move |db| {
            let event = tables::put(db, &key, &value, None)?;
            Ok((event.revision(), Some(event)))
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(Revision, bool), StoreError> {
        let key = key.to_owned();
        self.write(move |db| {
            let (revision, event) = tables::delete(db, &key, None)?;
            Ok(((revision, event.is_some()), event))
        })
        .await
    }

    async fn put_if(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<Revision, StoreError> {
        let key = key.to_owned();
        self.write(move |db| {
            let event = tables::put(db, &key, &value, Some(expected))?;
            Ok((event.revision(), Some(event)))
        })
        .await
    }

    async fn put_if_recorded(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
        record: AuditWrite,
    ) -> Result<Revision, StoreError> {
        let key = key.to_owned();
        self.write(move |db| {
            let event = tables::put_recorded(db, &key, &value, Some(expected), Some(record))?;
            Ok((event.revision(), Some(event)))
        })
        .await
    }

    async fn delete_if(
        &self,
        key: &str,
        expected: Revision,
    ) -> Result<(Revision, bool), StoreError> {
        let key = key.to_owned();
        self.write(move |db| {
            let (revision, event) = tables::delete(db, &key, Some(expected))?;
            Ok(((revision, event.is_some()), event))
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let key = key.to_owned();
        self.run(move |db| tables::get(db, &key)).await
    }

    async fn list(&self) -> Result<Snapshot, StoreError> {
        self.run(tables::list).await
    }

    /// Pages read from one read transaction (one revision) on a blocking thread and handed
    /// over through a queue of `PAGES_QUEUED`: at most that many pages are held at once.
    /// The reader stops if the caller goes away.
    async fn list_pages(
        &self,
        page: &mut (dyn FnMut(Vec<KeyValue>) + Send),
    ) -> Result<Revision, StoreError> {
        let (tx, mut rx) = tokio::sync::mpsc::channel(PAGES_QUEUED);
        let db = self.inner.db.clone();
        let keys = self.inner.page_keys.load(Ordering::Relaxed);
        let reader = tokio::task::spawn_blocking(move || {
            tables::list_pages(&db, keys, |items| tx.blocking_send(items).is_ok())
        });
        while let Some(items) = rx.recv().await {
            page(items);
        }
        reader
            .await
            .map_err(|e| StoreError::Other(format!("embedded store task failed: {e}")))?
    }

    async fn watch(&self, after: Revision) -> Result<WatchStream, StoreError> {
        let after = after.max(0);
        // Subscribe before reading anything (see watch.rs).
        let live = self.inner.live.subscribe();
        let compacted = self.run(tables::compact_revision).await?;
        if after < compacted {
            return Err(StoreError::Compacted {
                requested: after,
                compact_revision: compacted,
            });
        }
        Ok(watch::Watch::new(self.inner.db.clone(), live, after).into_stream())
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.run(move |db| tables::compact(db, revision)).await
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        self.run(tables::revision).await
    }

    async fn changes_since(&self, after: Revision) -> Result<(Revision, Vec<String>), StoreError> {
        self.run(move |db| tables::changes_since(db, after.max(0)))
            .await
    }

    async fn identity(&self) -> Result<String, StoreError> {
        Ok(self.inner.identity.clone())
    }
}

#[async_trait::async_trait]
impl AgentLeases for EmbeddedStore {
    async fn put_agent(
        &self,
        node_id: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let expires = Instant::now().checked_add(ttl);
        self.agents().insert(
            node_id.to_owned(),
            Agent {
                value,
                ttl,
                expires,
            },
        );
        Ok(())
    }

    async fn put_agent_unless_taken(
        &self,
        node_id: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        // One node: every live entry is this handle's, and so is an absent one.
        let now = Instant::now();
        if let Some(agent) = self.agents().get_mut(node_id).filter(|a| a.live(now)) {
            agent.value = value;
            return Ok(true);
        }
        self.put_agent(node_id, value, ttl).await.map(|()| true)
    }

    async fn remove_agent(&self, node_id: &str) -> Result<(), StoreError> {
        self.agents().remove(node_id);
        Ok(())
    }

    async fn keep_agents_alive(&self) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut agents = self.agents();
        let before = agents.len();
        agents.retain(|_, agent| agent.live(now));
        for agent in agents.values_mut() {
            agent.expires = now.checked_add(agent.ttl);
        }
        Ok(agents.len() == before)
    }

    async fn list_agents(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let now = Instant::now();
        let agents = self.agents();
        // Expired entries stay until `keep_agents_alive` (which reports them lost) or a put.
        let mut live: Vec<_> = agents
            .iter()
            .filter(|(_, agent)| agent.live(now))
            .map(|(id, agent)| (id.clone(), agent.value.clone()))
            .collect();
        drop(agents);
        live.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(live)
    }
}

#[async_trait::async_trait]
impl AuditLog for EmbeddedStore {
    async fn append_audit(&self, records: Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
        if records.len() > super::AUDIT_BATCH {
            return Err(StoreError::Other(format!(
                "{} audit records in one write (at most {})",
                records.len(),
                super::AUDIT_BATCH
            )));
        }
        self.run(move |db| tables::append_audit(db, &records)).await
    }

    async fn list_audit(
        &self,
        from: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let (from, after) = (from.to_owned(), after.map(str::to_owned));
        self.run(move |db| tables::list_audit(db, &from, after.as_deref(), limit))
            .await
    }

    async fn trim_audit(&self, before: &str) -> Result<u64, StoreError> {
        let before = before.to_owned();
        self.run(move |db| tables::trim_audit(db, &before)).await
    }
}
