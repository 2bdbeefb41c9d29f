//! The policy table: bucket → `Arc<ServerConfig>`, one config per distinct effective policy.
//!
//! Readers (every handshake, every request) take one `ArcSwap` load and never a lock. Writers
//! (the sync client) are serialised by a mutex, start from the published map, change only the
//! buckets a revision touches and publish the result with one pointer store (invariant 3).
//!
//! The bucket map is persistent (`map`): cloning it is O(1) and a change copies only the
//! shard it lands in and that shard's share of two small index levels, so one change at a
//! million policies costs microseconds, and the published snapshot and the one being built
//! share every untouched shard. Per bucket the map holds its name, packed with its shard's
//! others, and one pointer: the stored config and the `ServerConfig` are both interned, so
//! buckets with equal policies share them.
//!
//! * [`snapshot`]: one published revision ([`TableSnapshot`]) and what a bucket maps to.
//! * `map`: the persistent bucket map.
//! * `interner`: the writer's sharing of equal policies and configs.

use std::{
    borrow::Cow,
    collections::HashSet,
    sync::{Arc, Mutex, MutexGuard},
};

use arc_swap::{ArcSwap, Guard};
use tlsfleet_policy::{BucketName, HttpsConfig, PolicyKey};

use crate::tls::ConfigFactory;

mod interner;
mod map;
mod policies;
pub mod snapshot;

use interner::{fingerprint, Interner};
pub use policies::Policies;
use snapshot::{refused, BucketKey, BucketMap, Entry, Policy};
pub use snapshot::{Lookup, TableSnapshot};

/// How a revision changes the fleet default policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DefaultChange {
    Keep,
    Set(HttpsConfig),
    /// Back to the built-in default (TLS 1.2 + 1.3, every suite).
    Clear,
}

/// How a NACK names the default policy.
pub const DEFAULT_BUCKET: &str = "(default)";

/// A bucket whose new policy could not be applied; it keeps its previous config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketError {
    pub bucket: String,
    pub reason: String,
}

impl std::fmt::Display for BucketError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bucket {}: {}", self.bucket, self.reason)
    }
}

/// The result of applying one revision. Non-empty `errors` means the revision is NACKed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyOutcome {
    pub revision: i64,
    pub errors: Vec<BucketError>,
}

impl ApplyOutcome {
    /// Whether every bucket of the revision was applied.
    pub fn is_ack(&self) -> bool {
        self.errors.is_empty()
    }
}

/// The agent's policy table. Share it as `Arc<PolicyTable>`.
pub struct PolicyTable {
    factory: ConfigFactory,
    current: ArcSwap<TableSnapshot>,
    writer: Mutex<Interner>,
    store_id: Mutex<Option<String>>,
}

impl std::fmt::Debug for PolicyTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.snapshot();
        f.debug_struct("PolicyTable")
            .field("revision", &s.revision)
            .field("ready", &s.ready)
            .field("buckets", &s.buckets.len())
            .finish_non_exhaustive()
    }
}

/// A received name as the table's key.
fn key(bucket: BucketName) -> BucketKey {
    BucketKey::from(bucket.into_string())
}

enum Change<'a> {
    /// A snapshot's policies are borrowed from its distinct ones ([`Policies`]).
    Upsert(BucketKey, Cow<'a, HttpsConfig>),
    /// The control plane sent a policy for the bucket that did not convert: refuse it.
    Refuse(BucketKey),
    Delete(BucketName),
}

impl PolicyTable {
    /// An empty table that is not ready: every handshake is refused until the first
    /// [`PolicyTable::apply_snapshot`] (fail closed).
    pub fn new(factory: ConfigFactory) -> Self {
        let endpoint = factory.endpoint().clone();
        Self {
            factory,
            current: ArcSwap::from_pointee(TableSnapshot {
                revision: None,
                ready: false,
                buckets: BucketMap::new(),
                endpoint,
                default: None,
                distinct: 0,
            }),
            writer: Mutex::new(Interner::default()),
            store_id: Mutex::new(None),
        }
    }

    /// The published table: one lock-free load. Do not hold it across an `.await`.
    pub fn snapshot(&self) -> Guard<Arc<TableSnapshot>> {
        self.current.load()
    }

    /// The config factory (and through it the certificate resolver).
    pub fn factory(&self) -> &ConfigFactory {
        &self.factory
    }

    /// Replaces the whole table with `policies` at `revision` and makes it ready. Buckets
    /// absent from `policies` lose their policy; a bucket whose policy cannot be built keeps
    /// its previous config (none if it had none) and is reported.
    pub fn apply_snapshot(&self, revision: i64, policies: impl Into<Policies>) -> ApplyOutcome {
        self.apply_snapshot_refusing(revision, policies, &[], DefaultChange::Clear)
    }

    /// [`PolicyTable::apply_snapshot`], with `refused` buckets (their policy arrived but did
    /// not convert) refused rather than left on an older, maybe looser, config, and the fleet
    /// `default` policy (a snapshot without one: [`DefaultChange::Clear`]).
    pub fn apply_snapshot_refusing(
        &self,
        revision: i64,
        policies: impl Into<Policies>,
        refused: &[BucketError],
        default: DefaultChange,
    ) -> ApplyOutcome {
        let policies = policies.into();
        let mut writer = self.lock_writer();
        let current = self.current.load_full();
        let refused: Vec<BucketName> = refused
            .iter()
            .filter_map(|e| e.bucket.parse().ok())
            .collect();
        // The buckets the snapshot drops; none when the table is empty (the first snapshot,
        // where a set of a million names would only cost memory).
        let deletes: Vec<BucketName> = if current.buckets.is_empty() {
            Vec::new()
        } else {
            let keep: HashSet<&str> = policies
                .names()
                .chain(refused.iter().map(BucketName::as_str))
                .collect();
            current
                .buckets
                .keys()
                .filter(|name| !keep.contains(name))
                .filter_map(|name| name.parse().ok())
                .collect()
        };
        let (policies, configs) = policies.into_parts();
        let changes = policies
            .filter_map(|(b, i)| Some(Change::Upsert(b, Cow::Borrowed(configs.get_index(i)?))))
            .chain(refused.into_iter().map(|b| Change::Refuse(key(b))))
            .chain(deletes.into_iter().map(Change::Delete));
        self.apply(&mut writer, &current, revision, changes, default, true)
    }

    /// Applies `upserts` and `deletes` at `revision`, touching only those buckets. A bucket
    /// whose policy cannot be built keeps its previous config and is reported. A delta does
    /// not make the table ready: only a snapshot does.
    pub fn apply_delta(
        &self,
        revision: i64,
        upserts: Vec<(BucketName, HttpsConfig)>,
        deletes: Vec<BucketName>,
    ) -> ApplyOutcome {
        self.apply_delta_refusing(revision, upserts, deletes, &[], DefaultChange::Keep)
    }

    /// [`PolicyTable::apply_delta`], with `refused` buckets refused (see
    /// [`PolicyTable::apply_snapshot_refusing`]).
    pub fn apply_delta_refusing(
        &self,
        revision: i64,
        upserts: Vec<(BucketName, HttpsConfig)>,
        deletes: Vec<BucketName>,
        refused: &[BucketError],
        default: DefaultChange,
    ) -> ApplyOutcome {
        let mut writer = self.lock_writer();
        let current = self.current.load_full();
        let refused = refused
            .iter()
            .filter_map(|e| e.bucket.parse().ok())
            .map(|b| Change::Refuse(key(b)));
        let changes = upserts
            .into_iter()
            .map(|(b, c)| Change::Upsert(key(b), Cow::Owned(c)))
            .chain(refused)
            .chain(deletes.into_iter().map(Change::Delete));
        self.apply(&mut writer, &current, revision, changes, default, false)
    }

    /// Records the identity of the store the applied revisions come from.
    pub fn set_store_id(&self, id: String) {
        let mut store_id = self
            .store_id
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *store_id = (!id.is_empty()).then_some(id);
    }

    /// The identity of the store the applied revisions come from, if known.
    pub fn store_id(&self) -> Option<String> {
        self.store_id
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn lock_writer(&self) -> MutexGuard<'_, Interner> {
        // A panic mid-apply left the published table intact (nothing was stored); the
        // counts may be off, which at worst keeps an unused config alive.
        self.writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn apply<'a>(
        &self,
        interner: &mut Interner,
        current: &TableSnapshot,
        revision: i64,
        changes: impl Iterator<Item = Change<'a>>,
        default: DefaultChange,
        snapshot: bool,
    ) -> ApplyOutcome {
        let mut buckets = current.buckets.clone();
        let mut errors = Vec::new();
        let default = self.next_default(interner, current, default, &mut errors);
        let mut changed = 0usize;
        for change in changes {
            match change {
                Change::Upsert(bucket, config) => {
                    let at = buckets.locate(&bucket);
                    let old = buckets.get_at(&at);
                    if old.is_some_and(|e| e.config.as_ref() == Some(&*config) && !e.own) {
                        continue;
                    }
                    let previous = old.map_or(PolicyKey::ALL, |e| e.key);
                    let (entry, error) = match self.entry(interner, &config) {
                        Ok(entry) => (entry, None),
                        Err(reason) => {
                            let (entry, what) =
                                self.fallback(interner, config.into_owned(), previous);
                            (entry, Some(format!("{reason}; {what}")))
                        }
                    };
                    changed += 1;
                    if let Some(reason) = error {
                        tracing::warn!(bucket = &*bucket, revision, %reason, "policy not applied as sent");
                        errors.push(BucketError {
                            bucket: bucket.to_string(),
                            reason,
                        });
                    }
                    // The received name is the key: no second copy of a million names.
                    if let Some(old) = buckets.insert_at(at, &bucket, entry) {
                        interner.release(&old);
                    }
                }
                Change::Refuse(bucket) => {
                    changed += 1;
                    if let Some(old) = buckets.insert(&bucket, refused(None)) {
                        interner.release(&old);
                    }
                }
                Change::Delete(bucket) => {
                    if let Some(old) = buckets.remove(bucket.as_str()) {
                        changed += 1;
                        interner.release(&old);
                    }
                }
            }
        }
        if snapshot {
            // A snapshot grew the shards it filled in place: give back their spare room.
            buckets.shrink();
        }
        self.current.store(Arc::new(TableSnapshot {
            revision: Some(revision),
            ready: current.ready || snapshot,
            buckets,
            endpoint: current.endpoint.clone(),
            default,
            distinct: interner.configs.len(),
        }));
        tracing::debug!(
            revision,
            changed,
            errors = errors.len(),
            snapshot,
            "revision applied"
        );
        ApplyOutcome { revision, errors }
    }

    /// The default policy after `change`. One that cannot be built here keeps the previous
    /// one (reported for the NACK as bucket `(default)`).
    fn next_default(
        &self,
        interner: &mut Interner,
        current: &TableSnapshot,
        change: DefaultChange,
        errors: &mut Vec<BucketError>,
    ) -> Option<Entry> {
        let old = current.default.clone();
        match change {
            DefaultChange::Keep => old,
            DefaultChange::Clear => {
                if let Some(old) = &old {
                    interner.release(old);
                }
                None
            }
            DefaultChange::Set(config) => {
                if old
                    .as_ref()
                    .is_some_and(|o| o.config.as_ref() == Some(&config))
                {
                    return old;
                }
                match self.entry(interner, &config) {
                    Ok(entry) => {
                        if let Some(old) = &old {
                            interner.release(old);
                        }
                        Some(entry)
                    }
                    Err(reason) => {
                        tracing::warn!(%reason, "default policy not applied; keeping the previous one");
                        errors.push(BucketError {
                            bucket: DEFAULT_BUCKET.to_owned(),
                            reason,
                        });
                        old
                    }
                }
            }
        }
    }

    /// The entry for `config`, holding one use of its interned policy.
    fn entry(&self, interner: &mut Interner, config: &HttpsConfig) -> Result<Entry, String> {
        let fp = fingerprint(config);
        if let Some(entry) = interner.reuse(config, fp) {
            // Checked when built, but the certificate may have changed type since.
            if let Err(e) = self.factory.check(entry.key) {
                interner.release(&entry);
                return Err(e.to_string());
            }
            return Ok(entry);
        }
        let key = config
            .effective()
            .map_err(|e| format!("invalid policy: {e}"))?
            .key;
        let server_config = match interner.configs.get(&key) {
            Some(c) => {
                self.factory.check(key).map_err(|e| e.to_string())?;
                c.value.clone()
            }
            None => self.factory.build(key).map_err(|e| e.to_string())?,
        };
        let entry = Arc::new(Policy {
            config: Some(config.clone()),
            key,
            server_config: Some(server_config),
            own: false,
        });
        interner.insert(entry.clone(), fp);
        Ok(entry)
    }

    /// A policy that cannot be built here is never served looser than it says: the bucket
    /// gets what both it and the `previous` key allow, if this agent can serve that, and is
    /// refused otherwise. Returns the entry and what was done, for the NACK.
    fn fallback(
        &self,
        interner: &mut Interner,
        config: HttpsConfig,
        previous: PolicyKey,
    ) -> (Entry, String) {
        let Ok(effective) = config.effective() else {
            return (
                refused(Some(config)),
                "the bucket is refused until a policy this agent can serve arrives".to_owned(),
            );
        };
        let kind = self.factory.resolver().key_kind();
        let both = effective.key.intersection(previous).served_with(kind);
        let built = interner
            .configs
            .get(&both)
            .map(|c| c.value.clone())
            .map_or_else(|| self.factory.build(both), Ok);
        match built {
            Ok(server_config) if both.serves_anything() => {
                let entry = Arc::new(Policy {
                    config: Some(config),
                    key: both,
                    server_config: Some(server_config),
                    own: true,
                });
                interner.use_config(&entry);
                let served: Vec<&str> = both.versions().iter().map(|v| v.as_str()).collect();
                (
                    entry,
                    format!(
                        "serving only what both this and the previous policy allow ({})",
                        served.join(", ")
                    ),
                )
            }
            _ => (
                refused(Some(config)),
                "nothing both this and the previous policy allow can be served here: the \
                 bucket is refused until a policy this agent can serve arrives"
                    .to_owned(),
            ),
        }
    }
}
