//! The replay cache: every signature (a gRPC nonce, a REST PUT signature) is accepted once
//! within the window its date is valid in, and remembered until that window has passed.
//!
//! One cache per access key, each with its own bound: a key's traffic can fill and lock only
//! its own cache, never refuse another key's calls. When a key's cache is full, its oldest
//! entry makes room and raises that key's floor: the key's calls dated at or before the
//! evicted entry are refused from then on (fail closed: the cache can no longer vouch for
//! them) until they fall out of the window anyway.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Mutex, PoisonError},
};

use super::AuthError;

/// Nonces remembered per access key by default (about 1 MB each).
pub const DEFAULT_PER_KEY: usize = 10_000;

/// The replay cache of every key.
pub struct ReplayCache {
    per_key: usize,
    keys: Mutex<HashMap<String, KeyReplay>>,
}

#[derive(Default)]
struct KeyReplay {
    /// nonce -> expiry
    seen: HashMap<String, i64>,
    /// (expiry, nonce), to evict in expiry order.
    by_expiry: BTreeSet<(i64, String)>,
    /// Calls that expire at or before this were evicted early: refuse them.
    floor: i64,
}

impl ReplayCache {
    /// At most `per_key` entries per access key (at least 1).
    pub fn new(per_key: usize) -> Self {
        Self {
            per_key: per_key.max(1),
            keys: Mutex::new(HashMap::new()),
        }
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
        // A poisoned lock only means another thread panicked mid-update; the sets are still
        // consistent enough to keep refusing replays.
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        let r = keys.entry(key_id.to_owned()).or_default();
        while let Some((first, _)) = r.by_expiry.first() {
            if *first > now {
                break;
            }
            if let Some((_, entry)) = r.by_expiry.pop_first() {
                r.seen.remove(&entry);
            }
        }
        if expiry <= r.floor || r.seen.contains_key(nonce) {
            return Err(AuthError::Replayed);
        }
        if r.seen.len() >= self.per_key {
            if let Some((oldest, evicted)) = r.by_expiry.pop_first() {
                r.seen.remove(&evicted);
                r.floor = r.floor.max(oldest);
            }
            if expiry <= r.floor {
                return Err(AuthError::Replayed);
            }
        }
        r.seen.insert(nonce.to_owned(), expiry);
        r.by_expiry.insert((expiry, nonce.to_owned()));
        Ok(())
    }

    /// Whether `key_id` used `nonce` within its window (nothing is recorded).
    pub fn contains(&self, key_id: &str, nonce: &str, now: i64) -> bool {
        let keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        keys.get(key_id)
            .and_then(|r| r.seen.get(nonce))
            .is_some_and(|expiry| *expiry > now)
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
