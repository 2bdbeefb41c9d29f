//! What the table maps a bucket to, and one published revision of the map.

use std::sync::Arc;

use rustls::ServerConfig;
use tlsfleet_policy::{BucketName, HttpsConfig, PolicyKey};

/// One distinct stored policy and what the edge serves of it, shared by every bucket that
/// stores an equal policy: the map holds one pointer per bucket.
pub(super) struct Policy {
    /// The newest stored policy; `None` when the control plane sent one that did not convert.
    pub(super) config: Option<HttpsConfig>,
    /// What is enforced: the policy's effective key, or (when that cannot be built here) what
    /// both it and the previous policy allow, or nothing ([`PolicyKey::NONE`]) when refused.
    pub(super) key: PolicyKey,
    /// `None`: the bucket is refused (no handshake, every request 403).
    pub(super) server_config: Option<Arc<ServerConfig>>,
    /// Not interned: a fallback or refusal of one bucket.
    pub(super) own: bool,
}

pub(super) type Entry = Arc<Policy>;

pub(super) use super::map::BucketMap;

/// A bucket's name as it arrives, until the map copies it into its shard.
pub(super) type BucketKey = Box<str>;

/// One published revision of the table; cheap to clone out of [`PolicyTable::snapshot`](super::PolicyTable::snapshot).
pub struct TableSnapshot {
    pub(super) revision: Option<i64>,
    pub(super) ready: bool,
    pub(super) buckets: BucketMap,
    pub(super) endpoint: Arc<ServerConfig>,
    /// The fleet default policy: for buckets without one, no SNI and the bare domain.
    pub(super) default: Option<Entry>,
    pub(super) distinct: usize,
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

    /// The effective policy enforced for `bucket`: its own, [`PolicyKey::ALL`] for a bucket
    /// without one (management disabled is the OSS default), [`PolicyKey::NONE`] for a
    /// refused one.
    pub fn policy_key(&self, bucket: &str) -> PolicyKey {
        self.buckets
            .get(bucket)
            .map_or_else(|| self.default_key(), |e| e.key)
    }

    /// How the handshake of `bucket` is served.
    pub fn lookup(&self, bucket: &str) -> Lookup<'_> {
        match self.buckets.get(bucket) {
            None => Lookup::NoPolicy,
            Some(e) => match &e.server_config {
                Some(c) => Lookup::Config(c),
                None => Lookup::Refused,
            },
        }
    }

    /// The config of a bucket with a policy it is served with.
    pub fn server_config(&self, bucket: &str) -> Option<&Arc<ServerConfig>> {
        self.buckets
            .get(bucket)
            .and_then(|e| e.server_config.as_ref())
    }

    /// The stored policy of a bucket (buckets with equal policies share one value).
    pub fn config(&self, bucket: &str) -> Option<&HttpsConfig> {
        self.buckets.get(bucket).and_then(|e| e.config.as_ref())
    }

    /// Distinct `ServerConfig`s serving the buckets with a policy.
    pub fn distinct_configs(&self) -> usize {
        self.distinct
    }

    /// The applied stored policies (what the last-known-good cache writes), borrowed.
    pub fn stored_policies(&self) -> impl Iterator<Item = (&str, &HttpsConfig)> {
        self.buckets
            .iter()
            .filter_map(|(name, e)| Some((name, e.config.as_ref()?)))
    }

    /// The applied stored policies, copied.
    pub fn policies(&self) -> Vec<(BucketName, HttpsConfig)> {
        self.stored_policies()
            .filter_map(|(name, config)| {
                let bucket = BucketName::try_from(name.to_owned()).ok()?;
                Some((bucket, config.clone()))
            })
            .collect()
    }

    /// Buckets refused because their newest policy did not even convert (the cache keeps
    /// them refused).
    pub fn refused_without_policy(&self) -> Vec<BucketName> {
        self.buckets
            .iter()
            .filter(|(_, e)| e.config.is_none())
            .filter_map(|(name, _)| name.parse().ok())
            .collect()
    }

    /// The config for the bare domain, a missing SNI and buckets without a policy.
    pub fn endpoint(&self) -> &Arc<ServerConfig> {
        self.default
            .as_ref()
            .and_then(|d| d.server_config.as_ref())
            .unwrap_or(&self.endpoint)
    }

    /// What a bucket without a policy (and a connection without SNI) is held to: the fleet
    /// default policy's key, else [`PolicyKey::ALL`].
    pub fn default_key(&self) -> PolicyKey {
        self.default.as_ref().map_or(PolicyKey::ALL, |d| d.key)
    }

    /// The fleet default policy as stored, if one is set.
    pub fn default_config(&self) -> Option<&HttpsConfig> {
        self.default.as_ref().and_then(|d| d.config.as_ref())
    }
}

/// How a bucket's handshakes are served.
#[derive(Clone, Copy, Debug)]
pub enum Lookup<'a> {
    /// The bucket has a policy, served with this config.
    Config(&'a Arc<ServerConfig>),
    /// The bucket has no policy: the endpoint config serves it.
    NoPolicy,
    /// The bucket's newest policy cannot be served here, nor anything it and the previous one
    /// both allow: its handshakes are refused (fail closed).
    Refused,
}

/// A refused bucket: no handshake, no request.
pub(super) fn refused(config: Option<HttpsConfig>) -> Entry {
    Arc::new(Policy {
        config,
        key: PolicyKey::NONE,
        server_config: None,
        own: true,
    })
}
