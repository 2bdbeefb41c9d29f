//! Writer-side interning: buckets with equal stored policies share one [`Policy`], and
//! policies with equal effective keys share one `ServerConfig`.

use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    sync::Arc,
};

use rustls::ServerConfig;
use tlsfleet_policy::{HttpsConfig, PolicyKey};

use super::snapshot::Entry;
#[cfg(doc)]
use super::snapshot::Policy;

/// One interned value and how many users it has.
pub(super) struct Counted<T> {
    pub(super) value: T,
    uses: usize,
}

/// Writer-side bookkeeping, exact for the published map, so a revision drops the policies
/// and `ServerConfig`s nothing uses any more in O(changes): a [`Policy`] counts the buckets
/// using it, a `ServerConfig` the policies.
#[derive(Default)]
pub(super) struct Interner {
    pub(super) configs: HashMap<PolicyKey, Counted<Arc<ServerConfig>>>,
    /// By [`fingerprint`]; equal fingerprints are told apart by equality.
    policies: HashMap<u64, Vec<Counted<Entry>>>,
}

impl Interner {
    /// A use of the interned policy equal to `config`, if there is one.
    pub(super) fn reuse(&mut self, config: &HttpsConfig, fp: u64) -> Option<Entry> {
        let c = self
            .policies
            .get_mut(&fp)?
            .iter_mut()
            .find(|c| c.value.config.as_ref() == Some(config))?;
        c.uses += 1;
        Some(c.value.clone())
    }

    pub(super) fn insert(&mut self, policy: Entry, fp: u64) {
        self.use_config(&policy);
        self.policies.entry(fp).or_default().push(Counted {
            value: policy,
            uses: 1,
        });
    }

    /// One more user of the entry's `ServerConfig` (shared per key).
    pub(super) fn use_config(&mut self, policy: &Entry) {
        let Some(server_config) = &policy.server_config else {
            return;
        };
        if let Some(c) = self.configs.get_mut(&policy.key) {
            c.uses += 1;
        } else {
            let value = server_config.clone();
            self.configs.insert(policy.key, Counted { value, uses: 1 });
        }
    }

    fn release_config(&mut self, key: PolicyKey) {
        if let Some(c) = self.configs.get_mut(&key) {
            c.uses -= 1;
            if c.uses == 0 {
                self.configs.remove(&key);
            }
        }
    }

    pub(super) fn release(&mut self, entry: &Entry) {
        if entry.own {
            if entry.server_config.is_some() {
                self.release_config(entry.key);
            }
            return;
        }
        let Some(config) = &entry.config else {
            return;
        };
        let fp = fingerprint(config);
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
        self.release_config(entry.key);
    }
}

/// The hash of a stored config, stable within the process; it only buckets the interner's
/// map, equality decides.
pub(super) fn fingerprint(c: &HttpsConfig) -> u64 {
    let mut h = DefaultHasher::new();
    c.hash(&mut h);
    h.finish()
}
