//! The policy table: bucket → `Arc<ServerConfig>`, one config per distinct effective policy.
//!
//! Readers (every handshake, every request) take one `ArcSwap` load and never a lock. Writers
//! (the sync client) are serialised by a mutex, start from the published map, change only the
//! buckets a revision touches and publish the result with one pointer store (invariant 3).
//!
//! The bucket map is a persistent HAMT (`imbl::HashMap`): cloning it is O(1) and an insert
//! copies one root-to-leaf path, so one change at a million policies costs microseconds, and
//! the published snapshot and the one being built share every untouched node. Per bucket the
//! map holds a boxed name and three words: the stored config and the `ServerConfig` are both
//! interned, so buckets with equal policies share them.

use std::{
    collections::{HashMap, HashSet},
    hash::{Hash, Hasher},
    sync::{Arc, Mutex, MutexGuard},
};

use arc_swap::{ArcSwap, Guard};
use rustls::ServerConfig;
use tlsfleet_policy::{BucketName, HttpsConfig, PolicyKey};

use crate::tls::ConfigFactory;

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

/// One distinct stored policy and what the edge serves of it, shared by every bucket that
/// stores an equal policy: the map holds one pointer per bucket.
struct Policy {
    config: HttpsConfig,
    key: PolicyKey,
    server_config: Arc<ServerConfig>,
}

type Entry = Arc<Policy>;

type BucketMap = imbl::HashMap<Box<str>, Entry>;

/// One published revision of the table; cheap to clone out of [`PolicyTable::snapshot`].
pub struct TableSnapshot {
    revision: Option<i64>,
    ready: bool,
    buckets: BucketMap,
    endpoint: Arc<ServerConfig>,
    distinct: usize,
}

impl TableSnapshot {
    /// The revision last applied (`None` before the first apply).
    pub fn revision(&self) -> Option<i64> {
        self.revision
    }

    /// Whether a snapshot (from the control plane or the cache) was applied: until then the
    /// agent refuses TLS.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Buckets with a policy.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no bucket has a policy.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// The effective policy enforced for `bucket`: its own, or [`PolicyKey::ALL`] for a
    /// bucket without one (management disabled is the OSS default).
    pub fn policy_key(&self, bucket: &str) -> PolicyKey {
        self.buckets.get(bucket).map_or(PolicyKey::ALL, |e| e.key)
    }

    /// The config of a bucket with a policy.
    pub fn server_config(&self, bucket: &str) -> Option<&Arc<ServerConfig>> {
        self.buckets.get(bucket).map(|e| &e.server_config)
    }

    /// The stored policy of a bucket (buckets with equal policies share one value).
    pub fn config(&self, bucket: &str) -> Option<&HttpsConfig> {
        self.buckets.get(bucket).map(|e| &e.config)
    }

    /// The config for the bare domain, a missing SNI and buckets without a policy.
    pub fn endpoint(&self) -> &Arc<ServerConfig> {
        &self.endpoint
    }
}

/// One interned value and how many users it has.
struct Counted<T> {
    value: T,
    uses: usize,
}

/// Writer-side bookkeeping, exact for the published map, so a revision drops the policies
/// and `ServerConfig`s nothing uses any more in O(changes): a [`Policy`] counts the buckets
/// using it, a `ServerConfig` the policies.
#[derive(Default)]
struct Interner {
    configs: HashMap<PolicyKey, Counted<Arc<ServerConfig>>>,
    /// By [`fingerprint`]; equal fingerprints are told apart by equality.
    policies: HashMap<u64, Vec<Counted<Entry>>>,
}

impl Interner {
    /// A use of the interned policy equal to `config`, if there is one.
    fn reuse(&mut self, config: &HttpsConfig, fp: u64) -> Option<Entry> {
        let c = self
            .policies
            .get_mut(&fp)?
            .iter_mut()
            .find(|c| c.value.config == *config)?;
        c.uses += 1;
        Some(c.value.clone())
    }

    fn insert(&mut self, policy: Entry, fp: u64) {
        if let Some(c) = self.configs.get_mut(&policy.key) {
            c.uses += 1;
        } else {
            let value = policy.server_config.clone();
            self.configs.insert(policy.key, Counted { value, uses: 1 });
        }
        self.policies.entry(fp).or_default().push(Counted {
            value: policy,
            uses: 1,
        });
    }

    fn release(&mut self, entry: &Entry) {
        let fp = fingerprint(&entry.config);
        let Some(slot) = self.policies.get_mut(&fp) else {
            return;
        };
        let Some(i) = slot.iter().position(|c| Arc::ptr_eq(&c.value, entry)) else {
            return;
        };
        slot[i].uses -= 1;
        if slot[i].uses > 0 {
            return;
        }
        slot.swap_remove(i);
        if slot.is_empty() {
            self.policies.remove(&fp);
        }
        if let Some(c) = self.configs.get_mut(&entry.key) {
            c.uses -= 1;
            if c.uses == 0 {
                self.configs.remove(&entry.key);
            }
        }
    }
}

/// The agent's policy table. Share it as `Arc<PolicyTable>`.
pub struct PolicyTable {
    factory: ConfigFactory,
    current: ArcSwap<TableSnapshot>,
    writer: Mutex<Interner>,
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

enum Change {
    Upsert(BucketName, HttpsConfig),
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
                distinct: 0,
            }),
            writer: Mutex::new(Interner::default()),
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
    pub fn apply_snapshot(
        &self,
        revision: i64,
        policies: Vec<(BucketName, HttpsConfig)>,
    ) -> ApplyOutcome {
        let mut writer = self.lock_writer();
        let current = self.current.load_full();
        let keep: HashSet<&str> = policies.iter().map(|(b, _)| b.as_str()).collect();
        let deletes: Vec<BucketName> = current
            .buckets
            .keys()
            .filter(|name| !keep.contains(&***name))
            .filter_map(|name| BucketName::try_from(String::from(&**name)).ok())
            .collect();
        drop(keep);
        let changes = policies
            .into_iter()
            .map(|(b, c)| Change::Upsert(b, c))
            .chain(deletes.into_iter().map(Change::Delete));
        self.apply(&mut writer, &current, revision, changes, true)
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
        let mut writer = self.lock_writer();
        let current = self.current.load_full();
        let changes = upserts
            .into_iter()
            .map(|(b, c)| Change::Upsert(b, c))
            .chain(deletes.into_iter().map(Change::Delete));
        self.apply(&mut writer, &current, revision, changes, false)
    }

    /// The revision last applied; `None` until the first apply.
    pub fn revision(&self) -> Option<i64> {
        self.snapshot().revision
    }

    /// Whether a snapshot was applied (TLS is refused until then).
    pub fn is_ready(&self) -> bool {
        self.snapshot().ready
    }

    /// The applied stored policies (what the last-known-good cache writes).
    pub fn policies(&self) -> Vec<(BucketName, HttpsConfig)> {
        self.snapshot()
            .buckets
            .iter()
            .filter_map(|(name, e)| {
                let bucket = BucketName::try_from(String::from(&**name)).ok()?;
                Some((bucket, e.config.clone()))
            })
            .collect()
    }

    /// Buckets with a policy.
    pub fn len(&self) -> usize {
        self.snapshot().buckets.len()
    }

    /// Whether no bucket has a policy.
    pub fn is_empty(&self) -> bool {
        self.snapshot().buckets.is_empty()
    }

    /// Distinct `ServerConfig`s serving the buckets with a policy.
    pub fn distinct_configs(&self) -> usize {
        self.snapshot().distinct
    }

    /// The config of a bucket with a policy.
    pub fn server_config(&self, bucket: &str) -> Option<Arc<ServerConfig>> {
        self.snapshot().server_config(bucket).cloned()
    }

    /// The effective policy enforced for `bucket` ([`PolicyKey::ALL`] without a policy).
    pub fn policy_key(&self, bucket: &str) -> PolicyKey {
        self.snapshot().policy_key(bucket)
    }

    fn lock_writer(&self) -> MutexGuard<'_, Interner> {
        // A panic mid-apply left the published table intact (nothing was stored); the
        // counts may be off, which at worst keeps an unused config alive.
        self.writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn apply(
        &self,
        interner: &mut Interner,
        current: &TableSnapshot,
        revision: i64,
        changes: impl Iterator<Item = Change>,
        snapshot: bool,
    ) -> ApplyOutcome {
        let mut buckets = current.buckets.clone();
        let mut errors = Vec::new();
        let mut changed = 0usize;
        for change in changes {
            match change {
                Change::Upsert(bucket, config) => {
                    if buckets
                        .get(bucket.as_str())
                        .is_some_and(|e| e.config == config)
                    {
                        continue;
                    }
                    match self.entry(interner, config) {
                        Ok(entry) => {
                            changed += 1;
                            let name = bucket.into_string().into_boxed_str();
                            if let Some(old) = buckets.insert(name, entry) {
                                interner.release(&old);
                            }
                        }
                        Err(reason) => {
                            tracing::warn!(%bucket, revision, %reason, "policy not applied");
                            errors.push(BucketError {
                                bucket: bucket.into_string(),
                                reason,
                            });
                        }
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
        self.current.store(Arc::new(TableSnapshot {
            revision: Some(revision),
            ready: current.ready || snapshot,
            buckets,
            endpoint: current.endpoint.clone(),
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

    /// The entry for `config`, holding one use of its interned policy.
    fn entry(&self, interner: &mut Interner, config: HttpsConfig) -> Result<Entry, String> {
        let fp = fingerprint(&config);
        if let Some(entry) = interner.reuse(&config, fp) {
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
            config,
            key,
            server_config,
        });
        interner.insert(entry.clone(), fp);
        Ok(entry)
    }
}

/// A hash of every field of a stored config, stable within the process; only buckets the
/// interner's map, equality decides.
fn fingerprint(c: &HttpsConfig) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    c.tls.enable.hash(&mut h);
    c.tls.tls_versions.hash(&mut h);
    match &c.cipher_suite {
        None => 0u8.hash(&mut h),
        Some(cs) => {
            1u8.hash(&mut h);
            cs.enable.hash(&mut h);
            cs.strong_cipher_suite.hash(&mut h);
            cs.custom_cipher_suites.hash(&mut h);
            cs.tls13_custom_cipher_suites.hash(&mut h);
        }
    }
    h.finish()
}
