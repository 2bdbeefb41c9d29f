//! The record stored per bucket: the policy exactly as sent, plus who changed it and when.
//! Its JSON encoding is the storage schema; the API types never reach the store.

use tlsfleet_policy::HttpsConfig;

/// The key of the fleet default policy, beside the buckets' (no bucket name starts with `_`).
pub const DEFAULT_POLICY_KEY: &str = "_default";

/// The value stored per bucket (and for the fleet default policy).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredPolicy {
    pub config: HttpsConfig,
    /// Access key id of the last writer.
    pub updated_by: String,
    pub updated_at_unix_ms: i64,
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
