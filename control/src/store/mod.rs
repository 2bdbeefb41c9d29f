//! The storage ports and their two adapters (etcd, and the embedded store of a single node).
//!
//! * [`PolicyStore`]: policies under a key namespace as opaque bytes (the JSON
//!   [`StoredPolicy`] record); keys are bucket names. Every write returns the store revision
//!   at which it committed; revisions increase monotonically. A write is acknowledged only
//!   once it is durable (etcd committed it; the embedded store fsynced it).
//! * [`AgentLeases`]: the agent registry beside the policies, each entry held by the control
//!   server that wrote it under a time to live (its etcd lease), so any control server can
//!   answer "which agents enforce revision R".
//!
//! * [`AuditLog`]: the audit trail, records under keys that sort by time, trimmed by age.
//!
//! Each adapter implements all three; [`Store`] is them together, what a server opens.

use std::{pin::Pin, time::Duration};

use futures::Stream;

pub mod embedded;
pub mod etcd;
mod record;

pub use record::{StoredPolicy, DEFAULT_POLICY_KEY};

/// A store revision (etcd's revision for etcd; a counter for the embedded store). 0 = none.
pub type Revision = i64;

/// One stored policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The bucket name.
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: Revision,
    pub mod_revision: Revision,
}

/// One change, as seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Put(KeyValue),
    Delete { key: String, mod_revision: Revision },
}

impl Event {
    pub fn key(&self) -> &str {
        match self {
            Event::Put(kv) => &kv.key,
            Event::Delete { key, .. } => key,
        }
    }
    pub fn revision(&self) -> Revision {
        match self {
            Event::Put(kv) => kv.mod_revision,
            Event::Delete { mod_revision, .. } => *mod_revision,
        }
    }
}

/// Events of one or more revisions, in revision order; `revision` is the revision of the
/// last event (a watch may also send an empty batch to report progress).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchBatch {
    pub revision: Revision,
    pub events: Vec<Event>,
}

/// One store member's health (an etcd endpoint; the embedded store has none to report).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberHealth {
    pub endpoint: String,
    /// It answered the last call it was given.
    pub up: bool,
    /// Whether calls go to it now.
    pub in_use: bool,
    /// Calls it failed since the server started.
    pub failures: u64,
    /// Why its last failed call failed (empty: none yet).
    pub last_error: String,
}

/// Every policy at one revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub revision: Revision,
    pub items: Vec<KeyValue>,
}

pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchBatch, StoreError>> + Send>>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached (or did not answer in time). Nothing was written.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A write was sent but its outcome never came back: it may or may not have committed.
    /// Read it back before writing again.
    #[error(
        "the store did not confirm the write in time; it may or may not have been applied: {0}"
    )]
    OutcomeUnknown(String),
    /// The history asked for is gone; relist.
    #[error("revision {requested} is compacted (history starts after {compact_revision})")]
    Compacted {
        requested: Revision,
        compact_revision: Revision,
    },
    /// A conditional write found the key at another mod revision than expected (0: absent):
    /// another writer changed it since the caller read it. Nothing was written.
    #[error("the key changed since it was read (now at mod revision {current})")]
    Conflict { current: Revision },
    #[error("store error: {0}")]
    Other(String),
}

/// The policy store. Both adapters pass the same conformance suite
/// (`tests/tests/store_conformance.rs`).
#[async_trait::async_trait]
pub trait PolicyStore: Send + Sync + 'static {
    /// Stores `value` under `key`; returns the revision of the commit.
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError>;

    /// Deletes `key`; returns the revision of the delete (the current revision when nothing
    /// was stored) and whether the key existed.
    async fn delete(&self, key: &str) -> Result<(Revision, bool), StoreError>;

    /// [`PolicyStore::put`] only if the key's mod revision is still `expected` (0: absent);
    /// else `Err(Conflict)` and nothing is written.
    async fn put_if(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<Revision, StoreError>;

    /// [`PolicyStore::delete`] only if the key's mod revision is still `expected`.
    async fn delete_if(
        &self,
        key: &str,
        expected: Revision,
    ) -> Result<(Revision, bool), StoreError>;

    /// [`PolicyStore::put_if`], storing the change's audit trail `record` in the same write:
    /// both or neither, in one round trip (so an applied change always has its record).
    async fn put_if_recorded(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
        record: AuditWrite,
    ) -> Result<Revision, StoreError>;

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// Every policy at one revision, sorted by key.
    async fn list(&self) -> Result<Snapshot, StoreError>;

    /// [`PolicyStore::list`], handed over page by page (in key order, all at one revision), so
    /// the caller need not hold the whole listing; returns that revision. By default one page.
    async fn list_pages(
        &self,
        page: &mut (dyn FnMut(Vec<KeyValue>) + Send),
    ) -> Result<Revision, StoreError> {
        let snapshot = self.list().await?;
        page(snapshot.items);
        Ok(snapshot.revision)
    }

    /// Changes with revision > `after`, as they commit, until the stream is dropped.
    /// `Err(Compacted)` (at once or as a stream item) when that history is gone.
    async fn watch(&self, after: Revision) -> Result<WatchStream, StoreError>;

    /// Forgets history at and below `revision` (watches from below it get `Compacted`).
    async fn compact(&self, revision: Revision) -> Result<(), StoreError>;

    /// The current revision.
    async fn revision(&self) -> Result<Revision, StoreError>;

    /// The keys put or deleted after `after`, up to the returned current revision, sorted and
    /// de-duplicated. `Err(Compacted)` when that history is gone. (Lets a restarted control
    /// server answer an agent that resumes from an old revision with a delta.)
    /// etcd: the diff of a prefix range read at revision `after` (MVCC) and one now
    /// (compacted => `Compacted`); embedded: a scan of the event log. Added after the first
    /// brief: both adapters implement it and the conformance suite covers it.
    async fn changes_since(&self, after: Revision) -> Result<(Revision, Vec<String>), StoreError>;

    /// A name of this store's history, created with the store and kept for its lifetime: a
    /// store wiped and made anew gets another one, so a revision remembered from the old one
    /// is recognised as meaningless.
    async fn identity(&self) -> Result<String, StoreError>;

    /// Each member's health, from the calls made so far (no call of its own); empty for a
    /// store without members (the embedded store).
    fn members(&self) -> Vec<MemberHealth> {
        Vec::new()
    }
}

/// The agent registry's entries: opaque bytes per node id, held by the store handle (the
/// control server) that put them, and expiring unless it keeps them alive. etcd: one lease
/// per handle (per TTL) kept alive as a whole, not a lease per write.
#[async_trait::async_trait]
pub trait AgentLeases: Send + Sync + 'static {
    /// Stores `value` for `node_id`, held by this handle: it lives while
    /// [`AgentLeases::keep_agents_alive`] is called more often than `ttl`, and ends `ttl`
    /// after the last call. An entry another handle held moves to this one.
    async fn put_agent(
        &self,
        node_id: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<(), StoreError>;

    /// Writes `value` for `node_id` unless another handle holds the entry (another server
    /// took the agent over): an entry this handle holds keeps its lease; an absent one (never
    /// written, or expired) is made on this handle's lease of `ttl`, as by
    /// [`AgentLeases::put_agent`]. `Ok(false)` when another handle holds it.
    async fn put_agent_unless_taken(
        &self,
        node_id: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<bool, StoreError>;

    /// Deletes `node_id`'s entry if this handle still holds it.
    async fn remove_agent(&self, node_id: &str) -> Result<(), StoreError>;

    /// Keeps every entry this handle holds alive for another TTL. `Ok(false)` when some of
    /// them were lost (they expired, e.g. while the store could not be reached): put them
    /// again.
    async fn keep_agents_alive(&self) -> Result<bool, StoreError>;

    /// Every live registry entry, sorted by node id.
    async fn list_agents(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
}

/// An audit trail record written with a change ([`PolicyStore::put_if_recorded`]).
pub struct AuditWrite {
    /// Its key in the trail ([`AuditLog::list_audit`] order).
    pub key: String,
    /// Its value, given the change's revision when the store knows it before committing (the
    /// embedded store), else 0 (etcd: [`AuditEntry::revision`] tells it when read back).
    pub value: Box<dyn FnOnce(Revision) -> Vec<u8> + Send>,
}

impl std::fmt::Debug for AuditWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditWrite")
            .field("key", &self.key)
            .finish()
    }
}

/// An audit record read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    pub key: String,
    pub value: Vec<u8>,
    /// The revision of the write that stored it, when the store tells (etcd: the key's create
    /// revision; a record written with its change has its change's revision), else 0.
    pub revision: Revision,
}

/// Audit records stored in one write at most (etcd's default limit of operations in one
/// transaction, `--max-txn-ops`).
pub const AUDIT_BATCH: usize = 128;

/// The audit trail: opaque records under unique keys that sort chronologically.
#[async_trait::async_trait]
pub trait AuditLog: Send + Sync + 'static {
    /// Stores each `(key, value)` of `records` (at most [`AUDIT_BATCH`]), all in one write:
    /// acknowledged once durable, like a policy write, all or none.
    async fn append_audit(&self, records: Vec<(String, Vec<u8>)>) -> Result<(), StoreError>;

    /// Up to `limit` records, in key order, with key >= `from` and key > `after`.
    async fn list_audit(
        &self,
        from: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError>;

    /// Deletes every record with key < `before`; returns how many went.
    async fn trim_audit(&self, before: &str) -> Result<u64, StoreError>;
}

/// Every port: what a control server opens.
pub trait Store: PolicyStore + AgentLeases + AuditLog {}

impl<T: PolicyStore + AgentLeases + AuditLog> Store for T {}
