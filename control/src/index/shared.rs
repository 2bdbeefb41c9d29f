//! Equal policies held once. A fleet has many buckets and few distinct policies (a million
//! buckets typically share a handful of configurations), so the index keeps each distinct
//! configuration, with its effective policy and its wire form, once, and each bucket's entry
//! points to it; writers' access key ids alike. This is most of what a policy costs the
//! control server (BENCHMARKS.md, "a million policies").
//!
//! Bounded: a pool holds weak references only, so a configuration no entry uses any more is
//! freed with its last entry; the dead references are swept whenever the pool has doubled
//! since the last sweep, so a pool never holds more than twice the distinct values in use.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::{Arc, Mutex, OnceLock, Weak},
};

use tlsfleet_policy::{EffectivePolicy, HttpsConfig, ValidationError};

/// A configuration as the index holds it: shared by every bucket whose configuration is equal.
#[derive(Debug)]
pub struct SharedPolicy {
    pub config: HttpsConfig,
    pub effective: EffectivePolicy,
    /// The config's wire form (what Sync sends for every bucket that has it).
    pub wire: tlsfleet_proto::v1::HttpsConfig,
}

/// Values by key, held weakly.
struct Pool<K, V: ?Sized> {
    map: HashMap<K, Weak<V>>,
    /// Sweep when the map reaches this size.
    sweep_at: usize,
}

impl<K: Hash + Eq, V: ?Sized> Pool<K, V> {
    fn new() -> Self {
        Self {
            map: HashMap::new(),
            sweep_at: 1024,
        }
    }

    /// The value held for `key`, or the one `make` builds (then held).
    fn get_or_try_insert<E>(
        &mut self,
        key: K,
        make: impl FnOnce(&K) -> Result<Arc<V>, E>,
    ) -> Result<Arc<V>, E> {
        if let Some(v) = self.map.get(&key).and_then(Weak::upgrade) {
            return Ok(v);
        }
        let v = make(&key)?;
        if self.map.len() >= self.sweep_at {
            self.map.retain(|_, w| w.strong_count() > 0);
            self.sweep_at = (self.map.len() * 2).max(1024);
        }
        self.map.insert(key, Arc::downgrade(&v));
        Ok(v)
    }
}

fn policies() -> &'static Mutex<Pool<HttpsConfig, SharedPolicy>> {
    static POOL: OnceLock<Mutex<Pool<HttpsConfig, SharedPolicy>>> = OnceLock::new();
    POOL.get_or_init(|| Mutex::new(Pool::new()))
}

fn names() -> &'static Mutex<Pool<String, str>> {
    static POOL: OnceLock<Mutex<Pool<String, str>>> = OnceLock::new();
    POOL.get_or_init(|| Mutex::new(Pool::new()))
}

/// The shared form of `config` (validated once per distinct configuration).
pub fn policy(config: HttpsConfig) -> Result<Arc<SharedPolicy>, ValidationError> {
    let mut pool = policies().lock().unwrap_or_else(|p| p.into_inner());
    pool.get_or_try_insert(config, |c| {
        Ok(Arc::new(SharedPolicy {
            effective: c.effective()?,
            wire: c.into(),
            config: c.clone(),
        }))
    })
}

/// The shared form of a name (an access key id).
pub fn name(name: String) -> Arc<str> {
    let mut pool = names().lock().unwrap_or_else(|p| p.into_inner());
    let made: Result<_, std::convert::Infallible> =
        pool.get_or_try_insert(name, |n| Ok(Arc::from(n.as_str())));
    match made {
        Ok(v) => v,
        Err(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use tlsfleet_policy::{TlsConfig, TlsVersion};

    use super::*;

    fn config(versions: &[TlsVersion]) -> HttpsConfig {
        HttpsConfig {
            tls: TlsConfig {
                enable: true,
                tls_versions: versions.to_vec(),
            },
            cipher_suite: None,
        }
    }

    #[test]
    fn equal_configs_are_held_once_and_freed_with_their_last_user() {
        let a = policy(config(&[TlsVersion::Tls12])).expect("valid");
        let b = policy(config(&[TlsVersion::Tls12])).expect("valid");
        let c = policy(config(&[TlsVersion::Tls13])).expect("valid");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        let weak = Arc::downgrade(&a);
        drop((a, b));
        assert_eq!(weak.strong_count(), 0, "the pool holds no strong reference");
    }

    #[test]
    fn invalid_configs_are_refused_and_not_held() {
        let bad = HttpsConfig {
            tls: TlsConfig {
                enable: true,
                tls_versions: vec![],
            },
            cipher_suite: None,
        };
        assert!(policy(bad.clone()).is_err());
        assert!(policy(bad).is_err(), "a refusal is not cached as a value");
    }

    #[test]
    fn the_pool_sweeps_dead_references_as_it_grows() {
        let mut pool: Pool<u32, u32> = Pool::new();
        for i in 0..10_000 {
            let v: Result<_, ()> = pool.get_or_try_insert(i, |k| Ok(Arc::new(*k)));
            drop(v);
        }
        assert!(pool.map.len() <= 2048, "{} entries held", pool.map.len());
        let kept: Vec<_> = (0..100)
            .map(|i| pool.get_or_try_insert(i, |k| Ok::<_, ()>(Arc::new(*k))))
            .collect();
        assert_eq!(kept.len(), 100);
    }

    #[test]
    fn names_are_shared() {
        let a = name("writer".to_owned());
        let b = name("writer".to_owned());
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(&*a, "writer");
    }
}
