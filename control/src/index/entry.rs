//! What the index holds per bucket and for the fleet default, decoded from the store.

use std::sync::Arc;

use tlsfleet_policy::{BucketName, EffectivePolicy};
use tracing::warn;

use super::shared::SharedPolicy;
use crate::store::{KeyValue, Revision, StoredPolicy};

/// One bucket's policy as the index holds it.
#[derive(Clone, Debug)]
pub struct PolicyEntry {
    pub bucket: BucketName,
    /// The configuration, its effective policy and wire form: shared by every bucket whose
    /// configuration is equal (`shared`).
    pub policy: Arc<SharedPolicy>,
    /// Access key id of the last writer (shared alike).
    pub updated_by: Arc<str>,
    pub updated_at_unix_ms: i64,
    pub create_revision: Revision,
    pub mod_revision: Revision,
}

impl PolicyEntry {
    /// The entry a stored key-value holds; None (and a warning) for a key that is no bucket
    /// name, a value that does not decode, or a policy that no longer validates.
    pub fn decode(kv: &KeyValue) -> Option<Arc<Self>> {
        let bucket: BucketName = match kv.key.parse() {
            Ok(b) => b,
            Err(e) => {
                warn!(key = %kv.key, error = %e, "ignoring a stored key that is no bucket name");
                return None;
            }
        };
        let stored = match StoredPolicy::decode(&kv.value) {
            Ok(s) => s,
            Err(e) => {
                warn!(bucket = %bucket, error = %e, "ignoring an undecodable stored policy");
                return None;
            }
        };
        Self::from_stored(bucket, stored, kv)
    }

    /// The entry of a decoded stored policy (None, with a warning, if it no longer validates).
    pub fn from_stored(
        bucket: BucketName,
        stored: StoredPolicy,
        kv: &KeyValue,
    ) -> Option<Arc<Self>> {
        let policy = match super::shared::policy(stored.config) {
            Ok(p) => p,
            Err(e) => {
                warn!(bucket = %bucket, error = %e, "ignoring a stored policy that no longer validates");
                return None;
            }
        };
        Some(Arc::new(Self {
            bucket,
            policy,
            updated_by: super::shared::name(stored.updated_by),
            updated_at_unix_ms: stored.updated_at_unix_ms,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
        }))
    }
}

/// The fleet default policy as the index holds it.
#[derive(Clone, Debug)]
pub struct DefaultEntry {
    pub stored: StoredPolicy,
    pub effective: EffectivePolicy,
    pub create_revision: Revision,
    pub mod_revision: Revision,
}

impl DefaultEntry {
    pub(super) fn decode(kv: &KeyValue) -> Option<Arc<Self>> {
        let stored = match StoredPolicy::decode(&kv.value) {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "ignoring an undecodable stored default policy");
                return None;
            }
        };
        let effective = match stored.config.effective() {
            Ok(e) => e,
            Err(e) => {
                warn!(error = %e, "ignoring a stored default policy that no longer validates");
                return None;
            }
        };
        Some(Arc::new(Self {
            stored,
            effective,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
        }))
    }
}
