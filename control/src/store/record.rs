//! The record stored per bucket: the policy exactly as sent, plus who changed it and when.
//! Its JSON encoding is the storage schema; the API types never reach the store.

use tlsfleet_policy::HttpsConfig;

/// The key of the fleet default policy, beside the buckets' (no bucket name starts with `_`).
pub const DEFAULT_POLICY_KEY: &str = "_default";

/// The value stored per bucket (and for the fleet default policy, and a bucket's canary).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredPolicy {
    pub config: HttpsConfig,
    /// Access key id of the last writer.
    pub updated_by: String,
    pub updated_at_unix_ms: i64,
    /// A canary's selector: the agent labels it is staged on (empty for a bucket's policy).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub canary_selector: std::collections::BTreeMap<String, String>,
    /// A canary's base: the bucket's mod revision when it started (promote needs it still).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub canary_base_mod_revision: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

impl StoredPolicy {
    /// The stored bytes.
    pub fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}
