//! The replay cache: every signature (a gRPC nonce, a REST PUT signature) is accepted once
//! within the window its date is valid in, and remembered until that window has passed.
//!
//! One cache per access key, each with its own bound: a key's traffic can fill and lock only
//! its own cache, never refuse another key's calls. When a key's cache is full, its oldest
//! entry makes room and raises that key's floor: the key's calls dated at or before the
//! evicted entry are refused from then on (fail closed: the cache can no longer vouch for
//! them) until they fall out of the window anyway.

use std::{
    collections::{hash_map::RandomState, BTreeMap, HashMap},
    hash::{BuildHasher, Hash},
    sync::{Mutex, PoisonError},
};

use super::AuthError;

/// Nonces remembered per access key by default (about 50 to 110 bytes each: a fingerprint
/// and its expiry in a hash map, and in its expiry second's list).
pub const DEFAULT_PER_KEY: usize = 10_000;

/// A nonce as the cache remembers it: 128 bits of two keyed SipHashes, random per process.
/// Two nonces that share one would refuse the second as a replay (fail closed), with odds
/// of about 2^-128 per pair; nobody outside the process knows the keys to aim for it.
type Fingerprint = u128;

/// The replay cache of every key.
pub struct ReplayCache {
    per_key: usize,
    hashers: (RandomState, RandomState),
    keys: Mutex<HashMap<String, KeyReplay>>,
}

#[derive(Default)]
struct KeyReplay {
    /// fingerprint -> expiry
    seen: HashMap<Fingerprint, i64>,
    /// The fingerprints expiring at each second, to evict in expiry order (most calls of a
    /// second share one: an integer compare and a push per call, no ordered set of strings).
    by_expiry: BTreeMap<i64, Vec<Fingerprint>>,
    /// Calls that expire at or before this were evicted early: refuse them.
    floor: i64,
}

impl KeyReplay {
    /// Forgets what expired by `now`.
    fn expire(&mut self, now: i64) {
        while let Some(entry) = self.by_expiry.first_entry() {
            if *entry.key() > now {
                break;
            }
            for f in entry.remove() {
                self.seen.remove(&f);
            }
        }
    }

    /// Forgets the entry that expires first; raises the floor to its expiry.
    fn evict_oldest(&mut self) {
        let Some(mut entry) = self.by_expiry.first_entry() else {
            return;
        };
        let expiry = *entry.key();
        if let Some(f) = entry.get_mut().pop() {
            self.seen.remove(&f);
        }
        if entry.get().is_empty() {
            entry.remove();
        }
        self.floor = self.floor.max(expiry);
    }

    /// Remembers every one of `fingerprints` until `expiry`, evicting the oldest entries to
    /// make room within `per_key`; `Err(Replayed)` (nothing remembered) when one is known or
    /// the call is too old for the cache to vouch for it.
    fn remember(
        &mut self,
        fingerprints: &[Fingerprint],
        expiry: i64,
        per_key: usize,
    ) -> Result<(), AuthError> {
        if expiry <= self.floor || fingerprints.iter().any(|f| self.seen.contains_key(f)) {
            return Err(AuthError::Replayed);
        }
        while !self.seen.is_empty() && self.seen.len() + fingerprints.len() > per_key {
            self.evict_oldest();
        }
        if expiry <= self.floor {
            return Err(AuthError::Replayed);
        }
        for &f in fingerprints {
            self.seen.insert(f, expiry);
        }
        self.by_expiry
            .entry(expiry)
            .or_default()
            .extend_from_slice(fingerprints);
        Ok(())
    }
}

impl ReplayCache {
    /// At most `per_key` entries per access key (at least 2: a REST PUT takes two).
    pub fn new(per_key: usize) -> Self {
        Self {
            per_key: per_key.max(2),
            hashers: (RandomState::new(), RandomState::new()),
            keys: Mutex::new(HashMap::new()),
        }
    }

    fn fingerprint(&self, nonce: &(impl Hash + ?Sized)) -> Fingerprint {
        let high = self.hashers.0.hash_one(nonce);
        let low = self.hashers.1.hash_one(nonce);
        (Fingerprint::from(high) << 64) | Fingerprint::from(low)
    }

    /// `Err(Replayed)` when `key_id` used `nonce` already within the window, or when the call
    /// is too old for the cache to vouch for it; else remembers it until `expiry` (Unix
    /// seconds: the end of the window the call's date is valid in).
    ///
    /// Only verified calls may reach this: nobody without the key's secret can fill it.
    pub fn check_and_insert(
        &self,
        key_id: &str,
        nonce: &str,
        expiry: i64,
        now: i64,
    ) -> Result<(), AuthError> {
        let f = self.fingerprint(nonce);
        self.with_key(key_id, now, |r| r.remember(&[f], expiry, self.per_key))
    }

    /// A REST PUT's `signature` over a body with digest `body`, accepted once: remembers both
    /// until `expiry`, or refuses the call, `Err(Replayed)` when this signature came with this
    /// body already (or the call is too old for the cache to vouch for it) and
    /// `Err(ReusedSignature)` when it came with another body. One lock for the check and the
    /// record: two calls at once with one signature get one `Ok`, and the other the answer
    /// its body calls for.
    pub fn check_and_insert_signed(
        &self,
        key_id: &str,
        signature: &[u8],
        body: &[u8],
        expiry: i64,
        now: i64,
    ) -> Result<(), AuthError> {
        // Tagged: a REST signature never matches a gRPC nonce of the same key.
        let alone = self.fingerprint(&("oss", signature));
        let with_body = self.fingerprint(&("oss", signature, body));
        self.with_key(key_id, now, |r| {
            if r.seen.contains_key(&alone) {
                return Err(if r.seen.contains_key(&with_body) {
                    AuthError::Replayed
                } else {
                    AuthError::ReusedSignature
                });
            }
            r.remember(&[alone, with_body], expiry, self.per_key)
        })
    }

    /// Runs `f` on `key_id`'s cache, rid of what expired by `now`, under the lock.
    fn with_key<T>(&self, key_id: &str, now: i64, f: impl FnOnce(&mut KeyReplay) -> T) -> T {
        // A poisoned lock only means another thread panicked mid-update; the sets are still
        // consistent enough to keep refusing replays.
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        let r = match keys.get_mut(key_id) {
            Some(r) => r,
            None => keys.entry(key_id.to_owned()).or_default(),
        };
        r.expire(now);
        f(r)
    }

    /// Entries remembered for `key_id`.
    #[cfg(test)]
    pub(super) fn len(&self, key_id: &str) -> usize {
        self.keys
            .lock()
            .map(|k| k.get(key_id).map_or(0, |r| r.seen.len()))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_per_key_and_fails_closed_for_evicted_dates() {
        let cache = ReplayCache::new(3);
        let now = 9_500;
        for (i, expiry) in [9_900, 10_000, 10_100].into_iter().enumerate() {
            cache
                .check_and_insert("k", &format!("n{i}"), expiry, now)
                .unwrap();
        }
        // Full: the entry expiring at 9900 makes room; calls expiring <= 9900 are refused.
        cache.check_and_insert("k", "n3", 10_200, now).unwrap();
        assert_eq!(cache.len("k"), 3);
        assert_eq!(
            cache.check_and_insert("k", "n0", 9_900, now),
            Err(AuthError::Replayed)
        );
        assert_eq!(
            cache.check_and_insert("k", "other", 9_899, now),
            Err(AuthError::Replayed)
        );
        assert_eq!(
            cache.check_and_insert("k", "n2", 10_100, now),
            Err(AuthError::Replayed)
        );
        // Another key is untouched by k's floor and fullness.
        cache.check_and_insert("k2", "n0", 9_600, now).unwrap();
        cache.check_and_insert("k2", "n2", 9_600, now).unwrap();
        // Once the window has passed, expired entries go.
        cache.check_and_insert("k", "late", 20_000, 19_000).unwrap();
        assert_eq!(cache.len("k"), 1);
    }

    #[test]
    fn a_signed_put_is_accepted_once_and_its_signature_never_again() {
        let cache = ReplayCache::new(10);
        let now = 1_000;
        let put =
            |sig: &[u8], body: &[u8]| cache.check_and_insert_signed("k", sig, body, 1_900, now);
        put(b"sig", b"body").unwrap();
        assert_eq!(put(b"sig", b"body"), Err(AuthError::Replayed));
        assert_eq!(put(b"sig", b"other"), Err(AuthError::ReusedSignature));
        put(b"sig2", b"body").unwrap();
        // Two entries each; a REST signature is no gRPC nonce.
        assert_eq!(cache.len("k"), 4);
        cache.check_and_insert("k", "sig", 1_900, now).unwrap();
        // Full: the oldest entries make room for both of the next PUT's.
        for i in 0..10_i64 {
            cache
                .check_and_insert_signed("k", format!("s{i}").as_bytes(), b"b", 2_000 + i, now)
                .unwrap();
            assert!(cache.len("k") <= 10);
        }
        // Evicted: refused because the cache can no longer vouch for that date.
        assert_eq!(put(b"sig3", b"body"), Err(AuthError::Replayed));
    }

    #[test]
    fn one_signature_sent_at_once_from_many_threads_is_accepted_once() {
        let cache = std::sync::Arc::new(ReplayCache::new(1_000));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let cache = cache.clone();
                std::thread::spawn(move || {
                    let body: &[u8] = if t % 2 == 0 { b"a" } else { b"b" };
                    cache.check_and_insert_signed("k", b"sig", body, 1_900, 1_000)
                })
            })
            .collect();
        let results: Vec<_> = threads
            .into_iter()
            .map(|h| h.join().expect("no panic"))
            .collect();
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "{results:?}"
        );
    }

    #[test]
    fn a_flood_of_one_key_never_refuses_another() {
        let cache = ReplayCache::new(100);
        let now = 1_000_000;
        // The attack of the review: far more calls than fit, dated as late as allowed.
        for i in 0..1_000 {
            let _ = cache.check_and_insert("agent", &format!("f{i}"), now + 1_200, now);
        }
        assert!(cache.len("agent") <= 100);
        for i in 0..100 {
            cache
                .check_and_insert("admin", &format!("a{i}"), now + 900, now)
                .unwrap();
        }
    }
}
