//! The index's state and its transitions, without I/O: what the writer applies (a listing, a
//! batch of watch events) and what a subscriber starts from. Unit-tested here; the writer
//! (`writer`) and the handle (`Index`) only move data in and out under a lock.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use imbl::OrdMap;
use tracing::info;

use super::canary::{canary_bucket, CanaryEntry};
pub use super::{
    encodings::Encodings,
    entry::{DefaultEntry, PolicyEntry},
};
use crate::store::{Event, KeyValue, Revision, DEFAULT_POLICY_KEY};

/// How an update changes the fleet default policy.
#[derive(Clone, Debug)]
pub enum DefaultChange {
    Set(Arc<DefaultEntry>),
    /// Back to the built-in default.
    Cleared,
}

/// An immutable view of every policy at one revision.
#[derive(Clone, Debug, Default)]
pub struct View {
    revision: Revision,
    /// The revision of the newest change this view knows of (a put or delete of a policy or
    /// of the default). At most `revision`, and below it on etcd, whose revision also counts
    /// writes that are not policies. A delete made before a (re)list is not known.
    last_change: Revision,
    entries: OrdMap<Arc<str>, Arc<PolicyEntry>>,
    default: Option<Arc<DefaultEntry>>,
    /// Canaries by bucket (see `canary`).
    canaries: OrdMap<String, Arc<CanaryEntry>>,
}

impl View {
    /// Every canary, by bucket.
    pub fn canaries(&self) -> &OrdMap<String, Arc<CanaryEntry>> {
        &self.canaries
    }

    /// Every stored policy, by bucket.
    pub fn entry_map(&self) -> &OrdMap<Arc<str>, Arc<PolicyEntry>> {
        &self.entries
    }

    /// The fleet default policy, if one is set.
    pub fn default_policy(&self) -> Option<&Arc<DefaultEntry>> {
        self.default.as_ref()
    }

    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// The revision of the newest policy change (what "the current revision" of a rollout
    /// means: agents that applied it enforce every policy of this view).
    pub fn last_change(&self) -> Revision {
        self.last_change
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
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let mut iter = self
            .entries
            .range::<_, str>((lower, Bound::Unbounded))
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
    /// The fleet default policy, when it changed.
    pub default: Option<DefaultChange>,
    /// Buckets whose canary started, changed or ended.
    pub canary_buckets: Vec<String>,
    /// The canaries at `revision` (what each agent gets depends on them: `canary::for_agent`).
    pub canaries: OrdMap<String, Arc<CanaryEntry>>,
    /// The stored policies at `revision` (the policy a canary's end brings back).
    pub entries: OrdMap<Arc<str>, Arc<PolicyEntry>>,
    /// The update as the Sync streams send it, encoded once per distinct content.
    pub encoded: Encodings,
}

impl Update {
    /// No change, at `revision`.
    pub fn empty(revision: Revision) -> Self {
        Self::between(revision, revision)
    }

    fn between(from_revision: Revision, revision: Revision) -> Self {
        Self {
            from_revision,
            revision,
            upserts: vec![],
            deletes: vec![],
            default: None,
            canary_buckets: vec![],
            canaries: OrdMap::new(),
            entries: OrdMap::new(),
            encoded: Encodings::default(),
        }
    }

    /// Whether it changes nothing (for any agent).
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty()
            && self.deletes.is_empty()
            && self.default.is_none()
            && self.canary_buckets.is_empty()
    }

    /// Attaches the state the update leads to (for `canary::for_agent`).
    fn at(mut self, view: &View) -> Self {
        self.canaries = view.canaries.clone();
        self.entries = view.entries.clone();
        self
    }
}

/// A listing being decoded, page by page.
#[derive(Default)]
pub struct Listing {
    entries: OrdMap<Arc<str>, Arc<PolicyEntry>>,
    default: Option<Arc<DefaultEntry>>,
    canaries: OrdMap<String, Arc<CanaryEntry>>,
    newest: Revision,
}

impl Listing {
    /// Decodes one page of the listing.
    pub fn add(&mut self, items: &[KeyValue]) {
        for kv in items {
            self.newest = self.newest.max(kv.mod_revision);
            if kv.key == DEFAULT_POLICY_KEY {
                self.default = DefaultEntry::decode(kv);
            } else if let Some(bucket) = canary_bucket(&kv.key) {
                if let Some(c) = CanaryEntry::decode(kv) {
                    self.canaries.insert(bucket.to_owned(), c);
                }
            } else if let Some(e) = PolicyEntry::decode(kv) {
                self.entries.insert(Arc::from(kv.key.as_str()), e);
            }
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

/// Deleted buckets remembered so that a resuming subscriber gets its deletes; beyond this
/// many the oldest are forgotten and subscribers from before them get a snapshot.
pub const MAX_TOMBSTONES: usize = 100_000;

/// Deleted buckets and the revision of each delete, also ordered by revision so that the
/// oldest is forgotten in O(log n).
#[derive(Default)]
struct Tombstones {
    by_bucket: HashMap<String, Revision>,
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

/// The index's state: the current view, and what it takes to tell a subscriber at an older
/// revision what changed since.
pub struct State {
    view: View,
    loaded: bool,
    /// Deltas can be computed in memory for subscribers at revision >= floor.
    floor: Revision,
    /// Deletes after `floor`.
    tombstones: Tombstones,
    max_tombstones: usize,
}

impl Default for State {
    fn default() -> Self {
        Self::with_max_tombstones(MAX_TOMBSTONES)
    }
}

impl State {
    pub fn with_max_tombstones(max_tombstones: usize) -> Self {
        Self {
            view: View::default(),
            loaded: false,
            floor: 0,
            tombstones: Tombstones::default(),
            max_tombstones,
        }
    }

    pub fn view(&self) -> &View {
        &self.view
    }

    /// Subscribers older than this need the store's history (or a snapshot).
    pub fn floor(&self) -> Revision {
        self.floor
    }

    /// Loads a full listing. The first one returns None; later ones (relists) return the
    /// difference as one update.
    pub fn replace_all(&mut self, revision: Revision, items: &[KeyValue]) -> Option<Update> {
        let mut listing = Listing::default();
        listing.add(items);
        self.replace_with(revision, listing)
    }

    /// [`State::replace_all`] with a listing decoded page by page (the raw pages are not kept).
    pub fn replace_with(&mut self, revision: Revision, listing: Listing) -> Option<Update> {
        let Listing {
            entries,
            default,
            canaries,
            newest,
        } = listing;
        let new_view = View {
            revision,
            last_change: newest.max(self.view.last_change),
            entries,
            default,
            canaries,
        };
        let old = std::mem::replace(&mut self.view, new_view);
        if !self.loaded {
            self.loaded = true;
            self.floor = revision;
            info!(revision, policies = self.view.len(), "policy index loaded");
            return None;
        }
        let mut update = Update::between(old.revision, revision);
        for (k, v) in &self.view.entries {
            if old
                .entries
                .get(k)
                .is_none_or(|o| o.mod_revision != v.mod_revision)
            {
                update.upserts.push(v.clone());
            }
        }
        for k in old.entries.keys() {
            if !self.view.entries.contains_key(k) {
                update.deletes.push(k.to_string());
                self.tombstones.insert(k.to_string(), revision);
            }
        }
        update.default = match (&old.default, &self.view.default) {
            (Some(o), Some(n)) if o.mod_revision == n.mod_revision => None,
            (_, Some(n)) => Some(DefaultChange::Set(n.clone())),
            (Some(_), None) => {
                self.tombstones
                    .insert(DEFAULT_POLICY_KEY.to_owned(), revision);
                Some(DefaultChange::Cleared)
            }
            (None, None) => None,
        };
        for (bucket, c) in &self.view.canaries {
            let same = old
                .canaries
                .get(bucket)
                .is_some_and(|o| o.policy.mod_revision == c.policy.mod_revision);
            if !same {
                update.canary_buckets.push(bucket.clone());
            }
        }
        for bucket in old.canaries.keys() {
            if !self.view.canaries.contains_key(bucket) {
                update.canary_buckets.push(bucket.clone());
                self.tombstones
                    .insert(super::canary::canary_key(bucket), revision);
            }
        }
        if !update.deletes.is_empty()
            || !update.canary_buckets.is_empty()
            || matches!(update.default, Some(DefaultChange::Cleared))
        {
            // When between the two lists is unknown: at the latest, the relist's revision.
            self.view.last_change = revision;
        }
        Some(update.at(&self.view))
    }

    /// Applies a batch of watch events; None when it brings nothing new (a resumed watch may
    /// repeat events).
    pub fn apply(&mut self, revision: Revision, events: Vec<Event>) -> Option<Update> {
        let current = self.view.revision;
        if revision <= current && events.iter().all(|e| e.revision() <= current) {
            return None;
        }
        let mut view = self.view.clone();
        let mut update = Update::between(current, revision.max(current));
        // Each bucket's net change over the batch (its last event wins), by bucket: a watch
        // response can carry thousands of events, so no scan of what came before per event.
        let mut policies: BTreeMap<Arc<str>, Option<Arc<PolicyEntry>>> = BTreeMap::new();
        for event in events {
            if event.revision() <= current {
                continue; // already applied
            }
            let at = event.revision();
            let changed = match event {
                Event::Put(kv) if kv.key == DEFAULT_POLICY_KEY => {
                    if let Some(d) = DefaultEntry::decode(&kv) {
                        self.tombstones.remove(DEFAULT_POLICY_KEY);
                        view.default = Some(d.clone());
                        update.default = Some(DefaultChange::Set(d));
                        true
                    } else {
                        false
                    }
                }
                Event::Delete { key, mod_revision } if key == DEFAULT_POLICY_KEY => {
                    let had = view.default.take().is_some();
                    if had {
                        self.tombstones.insert(key, mod_revision);
                        update.default = Some(DefaultChange::Cleared);
                    }
                    had
                }
                Event::Put(kv) if canary_bucket(&kv.key).is_some() => {
                    let bucket = canary_bucket(&kv.key).unwrap_or_default().to_owned();
                    match CanaryEntry::decode(&kv) {
                        Some(c) => {
                            self.tombstones.remove(&kv.key);
                            view.canaries.insert(bucket.clone(), c);
                            update.canary_buckets.push(bucket);
                            true
                        }
                        None => false,
                    }
                }
                Event::Delete { key, mod_revision } if canary_bucket(&key).is_some() => {
                    let bucket = canary_bucket(&key).unwrap_or_default().to_owned();
                    let had = view.canaries.remove(&bucket).is_some();
                    if had {
                        self.tombstones.insert(key, mod_revision);
                        update.canary_buckets.push(bucket);
                    }
                    had
                }
                Event::Put(kv) => {
                    if let Some(e) = PolicyEntry::decode(&kv) {
                        self.tombstones.remove(&kv.key);
                        let key: Arc<str> = Arc::from(kv.key);
                        view.entries.insert(key.clone(), e.clone());
                        policies.insert(key, Some(e));
                        true
                    } else {
                        false
                    }
                }
                Event::Delete { key, mod_revision } => {
                    let had = view.entries.remove(key.as_str()).is_some();
                    if had {
                        policies.insert(Arc::from(key.as_str()), None);
                        self.tombstones.insert(key, mod_revision);
                    }
                    had
                }
            };
            if changed {
                view.last_change = view.last_change.max(at);
            }
        }
        for (bucket, entry) in policies {
            match entry {
                Some(e) => update.upserts.push(e),
                None => update.deletes.push(bucket.to_string()),
            }
        }
        view.revision = update.revision;
        self.view = view;
        update.canary_buckets.sort();
        update.canary_buckets.dedup();
        let update = update.at(&self.view);
        while self.tombstones.len() > self.max_tombstones {
            // Forget the oldest delete; subscribers from before it get a snapshot.
            match self.tombstones.pop_oldest() {
                Some(r) => self.floor = self.floor.max(r),
                None => break,
            }
        }
        Some(update)
    }

    /// How a subscriber that has applied `after` starts: the changes since `after` when they
    /// are known (`older`: the keys the store's history says changed before the floor, None
    /// when that history is gone), else a snapshot.
    pub fn start(&self, after: Revision, older: Option<Vec<String>>) -> Start {
        let view = &self.view;
        match older {
            Some(older) if after > 0 && after <= view.revision => {
                Start::Delta(self.delta_since(after, older))
            }
            _ => Start::Snapshot(view.clone()),
        }
    }

    /// Changes in `(after, view.revision]`: in-memory changes since the floor plus `older`.
    fn delta_since(&self, after: Revision, older: Vec<String>) -> Update {
        let view = &self.view;
        let mut keys: BTreeSet<String> = older.into_iter().collect();
        for entry in view.entries.values() {
            if entry.mod_revision > after {
                keys.insert(entry.bucket.as_str().to_owned());
            }
        }
        for bucket in self.tombstones.since(after) {
            keys.insert(bucket.clone());
        }
        let mut update = Update::between(after, view.revision);
        let default_deleted = keys.remove(DEFAULT_POLICY_KEY);
        update.default = match &view.default {
            Some(d) if d.mod_revision > after => Some(DefaultChange::Set(d.clone())),
            Some(_) => None,
            None if default_deleted => Some(DefaultChange::Cleared),
            None => None,
        };
        let mut canaries: BTreeSet<String> = view
            .canaries
            .iter()
            .filter(|(_, c)| c.policy.mod_revision > after)
            .map(|(b, _)| b.clone())
            .collect();
        for key in keys {
            if let Some(bucket) = canary_bucket(&key) {
                canaries.insert(bucket.to_owned());
                continue;
            }
            match view.entries.get(key.as_str()) {
                Some(e) => update.upserts.push(e.clone()),
                None => update.deletes.push(key),
            }
        }
        update.canary_buckets = canaries.into_iter().collect();
        update.at(view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::test_events::{del, kv, names, put};

    #[test]
    fn the_first_listing_loads_and_later_ones_are_diffs() {
        let mut s = State::default();
        assert!(s.replace_all(5, &[kv("aaa", 2), kv("bbb", 5)]).is_none());
        assert_eq!((s.view().revision(), s.view().len(), s.floor()), (5, 2, 5));
        assert_eq!(s.view().last_change(), 5);
        let u = s.replace_all(9, &[kv("bbb", 5), kv("ccc", 8)]).unwrap();
        // A delete between the lists: when exactly is unknown, so the relist's revision.
        assert_eq!(s.view().last_change(), 9);
        assert_eq!((u.from_revision, u.revision), (5, 9));
        assert_eq!(names(&u), (vec!["ccc"], vec!["aaa"]));
        // The relist's delete is remembered for a subscriber at 5.
        let Start::Delta(d) = s.start(5, Some(vec![])) else {
            panic!("a snapshot for a known revision")
        };
        assert_eq!(names(&d), (vec!["ccc"], vec!["aaa"]));
    }

    #[test]
    fn events_apply_once_and_a_batch_nets_out() {
        let mut s = State::default();
        s.replace_all(1, &[]);
        let u = s
            .apply(4, vec![put("aaa", 2), put("bbb", 3), del("aaa", 4)])
            .unwrap();
        assert_eq!(names(&u), (vec!["bbb"], vec!["aaa"]));
        assert_eq!(s.view().revision(), 4);
        // A resumed watch repeating what was applied brings nothing.
        assert!(s.apply(4, vec![put("bbb", 3), del("aaa", 4)]).is_none());
        // A put after a delete cancels the tombstone.
        let u = s.apply(5, vec![put("aaa", 5)]).unwrap();
        assert_eq!(names(&u), (vec!["aaa"], vec![]));
        let Start::Delta(d) = s.start(1, Some(vec![])) else {
            panic!("snapshot")
        };
        assert_eq!(names(&d), (vec!["aaa", "bbb"], vec![]));
        // Deleting what is not there changes nothing but the revision.
        let u = s.apply(6, vec![del("zzz", 6)]).unwrap();
        assert!(u.is_empty());
        assert_eq!(u.revision, 6);
        // ... and is not a change a rollout waits for; nor is a revision without events
        // (on etcd, other keys' writes).
        assert_eq!(s.view().last_change(), 5);
        s.apply(9, vec![]);
        assert_eq!((s.view().revision(), s.view().last_change()), (9, 5));
    }

    #[test]
    fn each_bucket_of_a_batch_gets_its_last_event() {
        let mut s = State::default();
        s.replace_all(1, &[kv("aaa", 1)]);
        // Deleted then put again: an upsert, no delete.
        let u = s.apply(3, vec![del("aaa", 2), put("aaa", 3)]).unwrap();
        assert_eq!(names(&u), (vec!["aaa"], vec![]));
        assert_eq!(u.upserts[0].mod_revision, 3);
        // A watch response of thousands of events: one change per bucket, the last.
        let mut events = vec![];
        for r in 0..3_000i64 {
            let bucket = format!("b{:03}", r % 1_000);
            events.push(if r >= 2_000 && r % 2 == 0 {
                del(&bucket, 10 + r)
            } else {
                put(&bucket, 10 + r)
            });
        }
        let u = s.apply(3_009, events).unwrap();
        let (upserts, deletes) = names(&u);
        assert_eq!((upserts.len(), deletes.len()), (500, 500));
        assert!(upserts
            .iter()
            .all(|b| b[1..].parse::<u32>().unwrap() % 2 == 1));
        assert!(u.upserts.iter().all(|e| e.mod_revision >= 2_010));
        assert_eq!(s.view().len(), 501);
    }

    #[test]
    fn subscribers_start_with_a_delta_or_a_snapshot() {
        let mut s = State::default();
        s.replace_all(10, &[kv("aaa", 3)]);
        s.apply(12, vec![put("bbb", 11), del("aaa", 12)]);
        assert!(matches!(s.start(0, Some(vec![])), Start::Snapshot(_)));
        // Ahead of the index: a snapshot.
        assert!(matches!(s.start(99, Some(vec![])), Start::Snapshot(_)));
        // History gone: a snapshot.
        assert!(matches!(s.start(11, None), Start::Snapshot(_)));
        let Start::Delta(d) = s.start(11, Some(vec![])) else {
            panic!("snapshot")
        };
        assert_eq!(names(&d), (vec![], vec!["aaa"]));
        // Keys the store's history names before the floor are included.
        let Start::Delta(d) = s.start(2, Some(vec!["gone".into()])) else {
            panic!("snapshot")
        };
        assert_eq!(names(&d), (vec!["bbb"], vec!["aaa", "gone"]));
    }

    #[test]
    fn forgotten_tombstones_raise_the_floor() {
        let mut s = State::with_max_tombstones(2);
        s.replace_all(1, &[kv("aaa", 1), kv("bbb", 1), kv("ccc", 1)]);
        s.apply(4, vec![del("aaa", 2), del("bbb", 3), del("ccc", 4)]);
        // The oldest delete (rev 2) is forgotten: only subscribers from 2 on get deltas.
        assert_eq!(s.floor(), 2);
        let Start::Delta(d) = s.start(2, Some(vec![])) else {
            panic!("snapshot")
        };
        assert_eq!(names(&d), (vec![], vec!["bbb", "ccc"]));
    }

    #[test]
    fn the_default_policy_is_set_cleared_and_told_to_late_subscribers() {
        let mut s = State::default();
        s.replace_all(1, &[kv("aaa", 1)]);
        let u = s.apply(2, vec![put(DEFAULT_POLICY_KEY, 2)]).unwrap();
        assert!(matches!(u.default, Some(DefaultChange::Set(_))));
        assert!(u.upserts.is_empty(), "the default is no bucket");
        assert_eq!(s.view().default_policy().map(|d| d.mod_revision), Some(2));
        let Start::Delta(d) = s.start(1, Some(vec![])) else {
            panic!("snapshot")
        };
        assert!(matches!(d.default, Some(DefaultChange::Set(_))));
        let u = s.apply(3, vec![del(DEFAULT_POLICY_KEY, 3)]).unwrap();
        assert!(matches!(u.default, Some(DefaultChange::Cleared)));
        assert!(u.deletes.is_empty(), "the default is no bucket");
        // A subscriber from before the clear learns of it; one from after hears nothing.
        let Start::Delta(d) = s.start(2, Some(vec![])) else {
            panic!("snapshot")
        };
        assert!(matches!(d.default, Some(DefaultChange::Cleared)));
        let Start::Delta(d) = s.start(3, Some(vec![])) else {
            panic!("snapshot")
        };
        assert!(d.default.is_none() && d.is_empty());
        // A relist that finds one sets it.
        let u = s.replace_all(5, &[kv(DEFAULT_POLICY_KEY, 4)]).unwrap();
        assert!(matches!(u.default, Some(DefaultChange::Set(_))));
        assert_eq!(names(&u), (vec![], vec!["aaa"]));
    }

    #[test]
    fn undecodable_values_are_skipped() {
        let mut s = State::default();
        let bad = KeyValue {
            value: b"{not json".to_vec(),
            ..kv("aaa", 2)
        };
        let not_a_bucket = kv("Not_A_Bucket", 2);
        s.replace_all(2, &[bad, not_a_bucket, kv("okay", 2)]);
        assert_eq!(s.view().len(), 1);
        assert!(s.view().get("okay").is_some());
    }
}
