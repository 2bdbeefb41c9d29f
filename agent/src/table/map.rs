//! The bucket map: a persistent hash map of bucket name → [`Entry`], built for what the
//! table does with it: clone it (O(1)), change a few buckets, publish the result, while
//! readers keep the previous revision intact.
//!
//! Buckets are spread by a keyed hash over `2^bits` shards; a shard is a flat array of up to
//! about [`GROW_AT`] buckets with their names packed in one buffer, and the shards are held
//! in groups of `2^ceil(bits/2)` under a root. All three levels are shared by `Arc`:
//! a revision copies the root, each group it touches and each shard it touches, once per
//! revision however many of its buckets it changes, and shares everything else.
//!
//! Why not a HAMT (`imbl::HashMap`, used before): copying a HAMT node copies up to 32
//! children or entries, each a reference count in a cache line of its own, and the nodes
//! under a change's path are small, so a bucket changed cost about 40 reference-count
//! updates in cold memory (its copy, then the old node's drop). Here a changed bucket copies
//! one shard's packed arrays (a few sequential cache lines, and one shared count per
//! bucket of the shard for its interned policy) plus its share of the root and group
//! copies. The flat shards also hold a bucket in about 16 bytes plus its name, where the
//! HAMT's nodes took several times that (BENCHMARKS.md, "Fleet convergence").
//!
//! The hash is keyed per table (`RandomState`), so names chosen to collide cannot pile up in
//! one shard. The shard count doubles when shards average [`GROW_AT`] buckets and halves
//! below [`SHRINK_AT`]: that one revision rehashes the whole map (O(n), amortised over the
//! doubling).

use std::{hash::BuildHasher, sync::Arc};

use super::snapshot::Entry;

/// Average buckets a shard at which the shard count doubles.
pub(super) const GROW_AT: usize = 64;
/// Average buckets a shard under which the shard count halves.
pub(super) const SHRINK_AT: usize = 16;
/// At most `2^MAX_BITS` shards (a million buckets need 2^14).
const MAX_BITS: u32 = 24;

/// One shard: its buckets' hashes (the low 32 bits, to scan), the end of each name in
/// `names`, and the entries, all in the same order.
#[derive(Default)]
struct Shard {
    hashes: Vec<u32>,
    ends: Vec<u32>,
    names: Vec<u8>,
    entries: Vec<Entry>,
}

/// A copy made to be changed (what `Arc::make_mut` makes of a shared shard): room for one
/// more bucket, so that adding it does not allocate each array a second time.
impl Clone for Shard {
    fn clone(&self) -> Self {
        fn copy<T: Clone>(v: &[T], spare: usize) -> Vec<T> {
            let mut copy = Vec::with_capacity(v.len() + spare);
            copy.extend_from_slice(v);
            copy
        }
        Self {
            hashes: copy(&self.hashes, 1),
            ends: copy(&self.ends, 1),
            names: copy(&self.names, MAX_NAME),
            entries: copy(&self.entries, 1),
        }
    }
}

/// The longest bucket name.
const MAX_NAME: usize = tlsfleet_policy::BucketName::MAX_LEN;

impl Shard {
    /// Where the `i`th name starts in `names`.
    fn start(&self, i: usize) -> usize {
        if i == 0 {
            0
        } else {
            self.ends[i - 1] as usize
        }
    }

    fn bytes(&self, i: usize) -> &[u8] {
        &self.names[self.start(i)..self.ends[i] as usize]
    }

    fn name(&self, i: usize) -> &str {
        // Only whole `str`s are pushed, and removal cuts at their ends.
        std::str::from_utf8(self.bytes(i)).unwrap_or_default()
    }

    fn find(&self, name: &str, hash: u32) -> Option<usize> {
        self.hashes
            .iter()
            .enumerate()
            .filter(|(_, h)| **h == hash)
            .map(|(i, _)| i)
            .find(|&i| self.bytes(i) == name.as_bytes())
    }

    fn push(&mut self, name: &str, hash: u32, entry: Entry) {
        self.hashes.push(hash);
        self.names.extend_from_slice(name.as_bytes());
        // Names are at most 63 bytes and a shard holds a few hundred at most.
        self.ends
            .push(u32::try_from(self.names.len()).unwrap_or(u32::MAX));
        self.entries.push(entry);
    }

    fn remove(&mut self, i: usize) -> Entry {
        let start = self.start(i);
        let end = self.ends[i] as usize;
        let len = u32::try_from(end - start).unwrap_or(0);
        self.names.drain(start..end);
        self.ends.remove(i);
        for e in &mut self.ends[i..] {
            *e -= len;
        }
        self.hashes.remove(i);
        self.entries.remove(i)
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn shrink(&mut self) {
        self.hashes.shrink_to_fit();
        self.ends.shrink_to_fit();
        self.names.shrink_to_fit();
        self.entries.shrink_to_fit();
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &Entry)> {
        (0..self.len()).map(|i| (self.name(i), &self.entries[i]))
    }
}

type Group = Vec<Arc<Shard>>;

/// Where a name is in a [`BucketMap`] (or would be added), valid until the map changes.
pub(super) struct Place {
    g: usize,
    s: usize,
    h: u32,
    found: Option<usize>,
}

/// The map. Cloning shares every level.
#[derive(Clone)]
pub(super) struct BucketMap {
    hasher: std::hash::RandomState,
    /// `2^bits` shards.
    bits: u32,
    /// Shards per group: `2^group_bits`.
    group_bits: u32,
    root: Arc<Vec<Arc<Group>>>,
    len: usize,
}

impl BucketMap {
    pub(super) fn new() -> Self {
        Self::from_shards(std::hash::RandomState::new(), 0, vec![Shard::default()], 0)
    }

    /// The map of `2^bits` `shards` (in shard index order, each trimmed to its size) holding
    /// `len` buckets.
    fn from_shards(
        hasher: std::hash::RandomState,
        bits: u32,
        shards: Vec<Shard>,
        len: usize,
    ) -> Self {
        let group_bits = bits.div_ceil(2);
        let per_group = 1usize << group_bits;
        let mut shards = shards.into_iter();
        let root = (0..1usize << (bits - group_bits))
            .map(|_| {
                Arc::new(
                    shards
                        .by_ref()
                        .take(per_group)
                        .map(|mut s| {
                            s.shrink();
                            Arc::new(s)
                        })
                        .collect(),
                )
            })
            .collect();
        Self {
            hasher,
            bits,
            group_bits,
            root: Arc::new(root),
            len,
        }
    }

    /// Buckets in the map.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The shard index of `name` among `2^bits` shards (its top hash bits), and the hash
    /// kept in the shard (the low 32 bits).
    fn index(hasher: &std::hash::RandomState, bits: u32, name: &str) -> (usize, u32) {
        let h = hasher.hash_one(name);
        let index = if bits == 0 {
            0
        } else {
            (h >> (64 - bits)) as usize
        };
        (index, h as u32)
    }

    /// Group, shard in the group, and the hash kept in the shard.
    fn place(&self, name: &str) -> (usize, usize, u32) {
        let (index, h) = Self::index(&self.hasher, self.bits, name);
        let mask = (1usize << self.group_bits) - 1;
        (index >> self.group_bits, index & mask, h)
    }

    fn shard(&self, group: usize, shard: usize) -> &Shard {
        &self.root[group][shard]
    }

    pub(super) fn get(&self, name: &str) -> Option<&Entry> {
        let (g, s, h) = self.place(name);
        let shard = self.shard(g, s);
        shard.find(name, h).map(|i| &shard.entries[i])
    }

    /// Where `name` is or would go: for a [`Self::get_at`] then [`Self::insert_at`] with no
    /// change to the map between them (one hash and one scan instead of two).
    pub(super) fn locate(&self, name: &str) -> Place {
        let (g, s, h) = self.place(name);
        let found = self.shard(g, s).find(name, h);
        Place { g, s, h, found }
    }

    pub(super) fn get_at(&self, at: &Place) -> Option<&Entry> {
        at.found.map(|i| &self.shard(at.g, at.s).entries[i])
    }

    /// [`Self::insert`] at a place [`Self::locate`] found for `name` in this map as it is.
    pub(super) fn insert_at(&mut self, at: Place, name: &str, entry: Entry) -> Option<Entry> {
        let shard = self.shard_mut(at.g, at.s);
        if let Some(i) = at.found {
            return Some(std::mem::replace(&mut shard.entries[i], entry));
        }
        shard.push(name, at.h, entry);
        self.len += 1;
        if self.len > GROW_AT << self.bits && self.bits < MAX_BITS {
            self.rebuild(self.bits + 1);
        }
        None
    }

    /// The shard of `(g, s)`, copied first if another revision shares it (or its group, or
    /// the root).
    fn shard_mut(&mut self, g: usize, s: usize) -> &mut Shard {
        let root = Arc::make_mut(&mut self.root);
        let group = Arc::make_mut(&mut root[g]);
        Arc::make_mut(&mut group[s])
    }

    /// Sets `name`'s entry; the previous one, if any.
    pub(super) fn insert(&mut self, name: &str, entry: Entry) -> Option<Entry> {
        let at = self.locate(name);
        self.insert_at(at, name, entry)
    }

    /// Removes `name`; its entry, if it had one.
    pub(super) fn remove(&mut self, name: &str) -> Option<Entry> {
        let at = self.locate(name);
        let i = at.found?;
        let old = self.shard_mut(at.g, at.s).remove(i);
        self.len -= 1;
        if self.bits > 0 && self.len < SHRINK_AT << self.bits {
            self.rebuild(self.bits - 1);
        }
        Some(old)
    }

    /// Rehashes every bucket into `2^bits` shards (same hasher), each shard exactly sized.
    fn rebuild(&mut self, bits: u32) {
        let mut shards: Vec<Shard> = (0..1usize << bits).map(|_| Shard::default()).collect();
        for (name, entry) in self.iter() {
            let (index, h) = Self::index(&self.hasher, bits, name);
            shards[index].push(name, h, entry.clone());
        }
        *self = Self::from_shards(self.hasher.clone(), bits, shards, self.len);
    }

    /// Gives back the spare capacity of the shards this map owns alone (after a snapshot's
    /// many inserts grew them in place).
    pub(super) fn shrink(&mut self) {
        let root = Arc::make_mut(&mut self.root);
        for group in root.iter_mut() {
            if let Some(group) = Arc::get_mut(group) {
                for shard in group.iter_mut() {
                    if let Some(shard) = Arc::get_mut(shard) {
                        shard.shrink();
                    }
                }
            }
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.root
            .iter()
            .flat_map(|group| group.iter())
            .flat_map(|shard| shard.iter())
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &str> {
        self.iter().map(|(name, _)| name)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;
    use tlsfleet_policy::PolicyKey;

    use super::*;

    fn entry(n: u8) -> Entry {
        let mut e = super::super::snapshot::refused(None);
        if let Some(p) = Arc::get_mut(&mut e) {
            p.own = n.is_multiple_of(2);
            p.key = if n.is_multiple_of(3) {
                PolicyKey::ALL
            } else {
                PolicyKey::NONE
            };
        }
        e
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u16, u8),
        Remove(u16),
        /// Keep a copy of the map as it is now, to check later that it did not change.
        Keep,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u16..3000, any::<u8>()).prop_map(|(k, v)| Op::Insert(k, v)),
            3 => (0u16..3000).prop_map(Op::Remove),
            1 => Just(Op::Keep),
        ]
    }

    fn name(k: u16) -> String {
        // Names of different lengths, so the packed buffer's offsets are exercised.
        format!("b{k}{}", "x".repeat(usize::from(k % 40)))
    }

    fn same(map: &BucketMap, model: &HashMap<String, (Entry, u8)>) {
        assert_eq!(map.len(), model.len());
        assert_eq!(map.iter().count(), model.len());
        for (name, (entry, _)) in model {
            let got = map.get(name).expect("present");
            assert!(Arc::ptr_eq(got, entry), "{name}");
        }
        for (name, entry) in map.iter() {
            assert!(Arc::ptr_eq(entry, &model[name].0), "{name}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The map behaves as a `HashMap`, and a copy taken at any point never changes
        /// after it, whatever the map goes through (growing, shrinking, rehashing).
        #[test]
        fn behaves_as_a_hash_map_and_copies_stay_as_taken(ops in proptest::collection::vec(op(), 1..4000)) {
            let mut map = BucketMap::new();
            let mut model: HashMap<String, (Entry, u8)> = HashMap::new();
            let mut kept = Vec::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        let e = entry(v);
                        let old = map.insert(&name(k), e.clone());
                        let was = model.insert(name(k), (e, v));
                        prop_assert_eq!(old.is_some(), was.is_some());
                        if let (Some(old), Some(was)) = (old, was) {
                            prop_assert!(Arc::ptr_eq(&old, &was.0));
                        }
                    }
                    Op::Remove(k) => {
                        let old = map.remove(&name(k));
                        let was = model.remove(&name(k));
                        prop_assert_eq!(old.is_some(), was.is_some());
                    }
                    Op::Keep => kept.push((map.clone(), model.clone())),
                }
                prop_assert!(map.get("absent-bucket").is_none());
            }
            same(&map, &model);
            map.shrink();
            same(&map, &model);
            for (copy, at) in &kept {
                same(copy, at);
            }
        }
    }

    #[test]
    fn grows_and_shrinks_its_shards() {
        let mut map = BucketMap::new();
        for k in 0..20_000u32 {
            assert!(map.insert(&format!("bucket-{k}"), entry(1)).is_none());
        }
        let grown = map.bits;
        assert!(grown >= 8, "{grown} bits for 20,000 buckets");
        assert!(20_000 <= GROW_AT << grown);
        for k in 0..19_990u32 {
            assert!(map.remove(&format!("bucket-{k}")).is_some());
        }
        assert!(map.bits < grown);
        assert_eq!(map.len(), 10);
        assert_eq!(map.keys().count(), 10);
        assert!(map.get("bucket-19995").is_some());
        assert!(map.get("bucket-5").is_none());
    }
}
