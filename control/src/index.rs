//! The in-memory index of every policy at a revision, fed by one watch on the store.
//!
//! One writer task (`Index::spawn`) lists the store, then watches from the listed revision,
//! and relists when the history it needs was compacted or the watch broke (kube-rs'
//! watcher, in small). Readers take an immutable [`View`] (a persistent map: taking one is
//! O(1), applying a change O(log n)) and never wait on the writer. Subscribers (agent sync
//! streams) get a consistent start (snapshot or deltas) and every later [`Update`], with no gap.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use imbl::OrdMap;
use tlsfleet_policy::{BucketName, EffectivePolicy};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{
    service::StoredPolicy,
    store::{Event, KeyValue, Revision, Store, StoreError},
};

/// One bucket's policy as the index holds it.
#[derive(Clone, Debug)]
pub struct PolicyEntry {
    pub bucket: BucketName,
    pub stored: StoredPolicy,
    pub effective: EffectivePolicy,
    pub create_revision: Revision,
    pub mod_revision: Revision,
}

/// An immutable view of every policy at one revision.
#[derive(Clone, Debug, Default)]
pub struct View {
    revision: Revision,
    entries: OrdMap<String, Arc<PolicyEntry>>,
}

impl View {
    pub fn revision(&self) -> Revision {
        self.revision
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, bucket: &str) -> Option<Arc<PolicyEntry>> {
        self.entries.get(bucket).cloned()
    }

    /// Every entry, sorted by bucket.
    pub fn entries(&self) -> impl Iterator<Item = &Arc<PolicyEntry>> {
        self.entries.values()
    }

    /// Up to `limit` entries whose bucket starts with `prefix`, strictly after `start_after`;
    /// and whether more follow.
    pub fn range(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> (Vec<Arc<PolicyEntry>>, bool) {
        use std::ops::Bound;
        let lower = match start_after {
            Some(after) if after >= prefix => Bound::Excluded(after.to_owned()),
            _ => Bound::Included(prefix.to_owned()),
        };
        let mut iter = self
            .entries
            .range((lower, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone());
        let page: Vec<_> = iter.by_ref().take(limit).collect();
        let more = iter.next().is_some();
        (page, more)
    }
}

/// The changes of one or more revisions: `(from_revision, revision]`.
#[derive(Clone, Debug)]
pub struct Update {
    pub from_revision: Revision,
    pub revision: Revision,
    pub upserts: Vec<Arc<PolicyEntry>>,
    pub deletes: Vec<String>,
}

impl Update {
    /// No change, at `revision`.
    pub fn empty(revision: Revision) -> Self {
        Self {
            from_revision: revision,
            revision,
            upserts: vec![],
            deletes: vec![],
        }
    }
}

/// How a subscriber starts.
#[derive(Debug)]
pub enum Start {
    /// Replace everything with this view.
    Snapshot(View),
    /// Apply these changes on top of the subscriber's revision (possibly none).
    Delta(Update),
}

/// A subscription: the start, then every later update in order.
pub struct Subscription {
    pub start: Start,
    pub updates: broadcast::Receiver<Arc<Update>>,
}

/// Deleted buckets remembered so that a resuming subscriber gets its deletes; beyond this
/// many the oldest are forgotten and subscribers from before them get a snapshot.
const MAX_TOMBSTONES: usize = 100_000;
/// Updates buffered per subscriber before it is considered lagging (it then resyncs).
const UPDATE_BUFFER: usize = 4096;

struct State {
    view: View,
    loaded: bool,
    /// Deltas can be computed in memory for subscribers at revision >= floor.
    floor: Revision,
    /// bucket -> revision of its delete, for deletes after `floor`.
    tombstones: Tombstones,
}

/// Deleted buckets and the revision of each delete, also ordered by revision so that the
/// oldest is forgotten in O(log n).
#[derive(Default)]
struct Tombstones {
    by_bucket: std::collections::HashMap<String, Revision>,
    by_revision: BTreeSet<(Revision, String)>,
}

impl Tombstones {
    fn insert(&mut self, bucket: String, revision: Revision) {
        if let Some(old) = self.by_bucket.insert(bucket.clone(), revision) {
            self.by_revision.remove(&(old, bucket.clone()));
        }
        self.by_revision.insert((revision, bucket));
    }

    fn remove(&mut self, bucket: &str) {
        if let Some(old) = self.by_bucket.remove(bucket) {
            self.by_revision.remove(&(old, bucket.to_owned()));
        }
    }

    fn len(&self) -> usize {
        self.by_bucket.len()
    }

    /// Forgets the oldest delete; returns its revision.
    fn pop_oldest(&mut self) -> Option<Revision> {
        let (revision, bucket) = self.by_revision.pop_first()?;
        self.by_bucket.remove(&bucket);
        Some(revision)
    }

    /// The deletes after `after`.
    fn since(&self, after: Revision) -> impl Iterator<Item = &String> {
        self.by_revision
            .range((after + 1, String::new())..)
            .map(|(_, bucket)| bucket)
    }
}

struct Inner {
    /// Held by the writer while it publishes and by a subscriber while it starts, so that a
    /// subscriber's start and its first update meet exactly.
    state: Mutex<State>,
    view_tx: watch::Sender<Option<View>>,
    updates: broadcast::Sender<Arc<Update>>,
    store: Arc<dyn Store>,
    /// The store's identity, read before the first listing.
    store_id: std::sync::OnceLock<String>,
}

/// Handle to the index; cheap to clone.
#[derive(Clone)]
pub struct Index {
    inner: Arc<Inner>,
    views: watch::Receiver<Option<View>>,
}

/// The index has not loaded yet (the store is unreachable since start).
#[derive(Debug, Clone, thiserror::Error)]
#[error("the policy index has not loaded from the store yet")]
pub struct NotLoaded;

impl From<NotLoaded> for crate::service::PolicyError {
    fn from(e: NotLoaded) -> Self {
        crate::service::PolicyError::Unavailable(e.to_string())
    }
}

impl Index {
    /// Starts the writer task; it ends when `shutdown` is cancelled.
    pub fn spawn(
        store: Arc<dyn Store>,
        shutdown: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (view_tx, views) = watch::channel(None);
        let (updates, _) = broadcast::channel(UPDATE_BUFFER);
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                view: View::default(),
                loaded: false,
                floor: 0,
                tombstones: Tombstones::default(),
            }),
            view_tx,
            updates,
            store,
            store_id: std::sync::OnceLock::new(),
        });
        let task = tokio::spawn({
            let inner = inner.clone();
            async move {
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = run(&inner) => {}
                }
                debug!("index writer stopped");
            }
        });
        (Self { inner, views }, task)
    }

    /// The store's identity (see `Store::identity`), once the index has read it (before its
    /// first load).
    pub fn store_id(&self) -> Option<String> {
        self.inner.store_id.get().cloned()
    }

    /// The latest view, if loaded.
    pub fn view(&self) -> Option<View> {
        self.views.borrow().clone()
    }

    /// Whether the first load has completed.
    pub fn is_loaded(&self) -> bool {
        self.views.borrow().is_some()
    }

    /// Waits (up to `timeout`) for the first load, then returns the latest view.
    pub async fn ready_view(&self, timeout: Duration) -> Result<View, NotLoaded> {
        let mut rx = self.views.clone();
        let waited = tokio::time::timeout(timeout, async {
            rx.wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|v| v.clone())
        })
        .await;
        waited.ok().flatten().ok_or(NotLoaded)
    }

    /// Waits (up to `timeout`) until the index has reached `revision`. Returns whether it did.
    pub async fn wait_for(&self, revision: Revision, timeout: Duration) -> bool {
        let mut rx = self.views.clone();
        let reached = tokio::time::timeout(timeout, async {
            rx.wait_for(|v| v.as_ref().is_some_and(|v| v.revision >= revision))
                .await
                .is_ok()
        })
        .await
        .unwrap_or(false);
        if !reached {
            warn!(revision, "index did not reach the revision in time");
        }
        reached
    }

    /// Subscribes a follower that has applied `after` (0: nothing). Deltas when the index
    /// (or the store's history) can say what changed since `after`, else a snapshot.
    pub async fn subscribe(&self, after: Revision) -> Result<Subscription, NotLoaded> {
        let view = self.ready_view(Duration::from_secs(5)).await?;
        if after > view.revision {
            // The follower came from a server whose index is ahead of ours: catch up first.
            self.wait_for(after, Duration::from_secs(2)).await;
        }
        // Keys changed before the in-memory floor come from the store's history (a control
        // server restarted since the follower's revision still answers with a delta).
        let floor = self.lock().floor;
        let older = if after > 0 && after < floor {
            match self.inner.store.changes_since(after).await {
                Ok((_, keys)) => Some(keys),
                Err(StoreError::Compacted { .. }) => None,
                Err(e) => {
                    debug!(error = %e, "no store history for a delta; sending a snapshot");
                    None
                }
            }
        } else {
            Some(Vec::new())
        };
        let state = self.lock();
        let updates = self.inner.updates.subscribe();
        let view = state.view.clone();
        let start = match older {
            Some(older) if after > 0 && after <= view.revision => {
                Start::Delta(delta_since(&state, &view, after, older))
            }
            _ => Start::Snapshot(view),
        };
        Ok(Subscription { start, updates })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.inner)
    }
}

fn lock(inner: &Inner) -> std::sync::MutexGuard<'_, State> {
    // A poisoned lock means a writer panicked mid-update; the state it guards is still a
    // consistent View (replaced whole), so carry on with it.
    inner.state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Changes in `(after, view.revision]`: in-memory changes since the floor plus `older` keys.
fn delta_since(state: &State, view: &View, after: Revision, older: Vec<String>) -> Update {
    let mut keys: BTreeSet<String> = older.into_iter().collect();
    for entry in view.entries.values() {
        if entry.mod_revision > after {
            keys.insert(entry.bucket.as_str().to_owned());
        }
    }
    for bucket in state.tombstones.since(after) {
        keys.insert(bucket.clone());
    }
    let mut update = Update {
        from_revision: after,
        revision: view.revision,
        upserts: vec![],
        deletes: vec![],
    };
    for key in keys {
        match view.entries.get(&key) {
            Some(e) => update.upserts.push(e.clone()),
            None => update.deletes.push(key),
        }
    }
    update
}

/// The writer: list, watch, relist on trouble; forever (until cancelled).
async fn run(inner: &Inner) {
    let mut backoff = Backoff::new();
    while inner.store_id.get().is_none() {
        match inner.store.identity().await {
            Ok(id) => {
                info!(store_id = %id, "store identity");
                let _ = inner.store_id.set(id);
            }
            Err(e) => {
                warn!(error = %e, "reading the store identity failed; retrying");
                backoff.wait().await;
            }
        }
    }
    backoff.reset();
    let mut resume: Option<Revision> = None;
    loop {
        let revision = match resume {
            Some(rev) => rev,
            None => match inner.store.list().await {
                Ok(snapshot) => {
                    let rev = snapshot.revision;
                    replace_all(inner, snapshot.revision, snapshot.items);
                    rev
                }
                Err(e) => {
                    warn!(error = %e, "listing policies failed; retrying");
                    backoff.wait().await;
                    continue;
                }
            },
        };
        let mut stream = match inner.store.watch(revision).await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "watching policies failed; relisting");
                resume = None;
                backoff.wait().await;
                continue;
            }
        };
        backoff.reset();
        let mut relist = false;
        use futures::StreamExt;
        while let Some(item) = stream.next().await {
            match item {
                Ok(batch) => apply_events(inner, batch.revision, batch.events),
                Err(StoreError::Compacted { .. }) => {
                    info!("watch history compacted; relisting");
                    relist = true;
                    break;
                }
                Err(e) => {
                    warn!(error = %e, "policy watch broke; resuming");
                    break;
                }
            }
        }
        resume = if relist {
            None
        } else {
            Some(lock(inner).view.revision)
        };
        backoff.wait().await;
    }
}

fn decode(kv: &KeyValue) -> Option<Arc<PolicyEntry>> {
    let bucket: BucketName = match kv.key.parse() {
        Ok(b) => b,
        Err(e) => {
            warn!(key = %kv.key, error = %e, "ignoring a stored key that is no bucket name");
            return None;
        }
    };
    let stored: StoredPolicy = match serde_json::from_slice(&kv.value) {
        Ok(s) => s,
        Err(e) => {
            warn!(bucket = %bucket, error = %e, "ignoring an undecodable stored policy");
            return None;
        }
    };
    let effective = match stored.config.effective() {
        Ok(e) => e,
        Err(e) => {
            warn!(bucket = %bucket, error = %e, "ignoring a stored policy that no longer validates");
            return None;
        }
    };
    Some(Arc::new(PolicyEntry {
        bucket,
        stored,
        effective,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
    }))
}

/// Loads a full listing; followers see the difference as one update.
fn replace_all(inner: &Inner, revision: Revision, items: Vec<KeyValue>) {
    let mut entries = OrdMap::new();
    for kv in &items {
        if let Some(e) = decode(kv) {
            entries.insert(kv.key.clone(), e);
        }
    }
    let new_view = View { revision, entries };
    let mut state = lock(inner);
    let old = std::mem::replace(&mut state.view, new_view.clone());
    if state.loaded {
        let mut update = Update {
            from_revision: old.revision,
            revision,
            upserts: vec![],
            deletes: vec![],
        };
        for (k, v) in &new_view.entries {
            if old
                .entries
                .get(k)
                .is_none_or(|o| o.mod_revision != v.mod_revision)
            {
                update.upserts.push(v.clone());
            }
        }
        for k in old.entries.keys() {
            if !new_view.entries.contains_key(k) {
                update.deletes.push(k.clone());
                state.tombstones.insert(k.clone(), revision);
            }
        }
        publish(inner, update);
    } else {
        state.loaded = true;
        state.floor = revision;
        info!(revision, policies = new_view.len(), "policy index loaded");
    }
    inner.view_tx.send_replace(Some(new_view));
}

fn apply_events(inner: &Inner, revision: Revision, events: Vec<Event>) {
    let mut state = lock(inner);
    if revision <= state.view.revision && events.iter().all(|e| e.revision() <= state.view.revision)
    {
        return;
    }
    let mut view = state.view.clone();
    let mut update = Update {
        from_revision: view.revision,
        revision: revision.max(view.revision),
        upserts: vec![],
        deletes: vec![],
    };
    for event in events {
        if event.revision() <= state.view.revision {
            continue; // already applied (a resumed watch may repeat)
        }
        match event {
            Event::Put(kv) => {
                if let Some(e) = decode(&kv) {
                    state.tombstones.remove(&kv.key);
                    update.deletes.retain(|d| d != &kv.key);
                    update.upserts.retain(|u| u.bucket.as_str() != kv.key);
                    view.entries.insert(kv.key.clone(), e.clone());
                    update.upserts.push(e);
                }
            }
            Event::Delete { key, mod_revision } => {
                if view.entries.remove(&key).is_some() {
                    update.upserts.retain(|u| u.bucket.as_str() != key);
                    state.tombstones.insert(key.clone(), mod_revision);
                    update.deletes.push(key);
                }
            }
        }
    }
    view.revision = update.revision;
    state.view = view.clone();
    while state.tombstones.len() > MAX_TOMBSTONES {
        // Forget the oldest delete; subscribers from before it get a snapshot.
        match state.tombstones.pop_oldest() {
            Some(r) => state.floor = state.floor.max(r),
            None => break,
        }
    }
    publish(inner, update);
    drop(state);
    inner.view_tx.send_replace(Some(view));
}

/// Sends an update to every subscriber; called with the state lock held, so a subscriber's
/// start and its first update meet exactly.
fn publish(inner: &Inner, update: Update) {
    // No receivers is fine: no agent is connected.
    let _ = inner.updates.send(Arc::new(update));
}

struct Backoff {
    next: Duration,
}

impl Backoff {
    const MIN: Duration = Duration::from_millis(50);
    const MAX: Duration = Duration::from_secs(2);

    fn new() -> Self {
        Self { next: Self::MIN }
    }
    fn reset(&mut self) {
        self.next = Self::MIN;
    }
    async fn wait(&mut self) {
        let jitter = rand::random_range(0..=self.next.as_millis() as u64 / 2);
        tokio::time::sleep(self.next + Duration::from_millis(jitter)).await;
        self.next = (self.next * 2).min(Self::MAX);
    }
}
