//! The registry's own record of an agent: what a control server knows of one agent's
//! stream, and how it is stored (JSON, under the agent's lease). The gRPC API's
//! `AgentStatus` is built from it at the edge (`grpc::fleet`), so an API change is not a
//! storage-schema change.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where an agent is with the revisions it was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Sent a revision it has not acknowledged yet.
    Applying,
    /// Acknowledged everything it was sent.
    InSync,
    /// NACKed a revision: some buckets failed to build.
    Degraded,
    /// Its stream ended.
    Disconnected,
}

/// A bucket an agent could not apply, with its reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketFailure {
    pub bucket: String,
    pub reason: String,
}

/// One agent, as its control server records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub node_id: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The highest revision it is known to enforce.
    pub applied_revision: i64,
    /// The highest revision it was sent.
    pub sent_revision: i64,
    pub phase: Phase,
    /// The failures of its last NACK (empty after a later ACK).
    #[serde(default)]
    pub errors: Vec<BucketFailure>,
    /// The revision of that NACK (0: none).
    pub nack_revision: i64,
    /// The control server its stream is on.
    pub control_id: String,
    pub connected_at_unix_ms: i64,
    pub last_seen_unix_ms: i64,
    /// Its certificate's key types (`ECDSA`, `RSA`).
    #[serde(default)]
    pub key_types: Vec<String>,
}

impl AgentRecord {
    /// The stored bytes.
    pub fn encode(&self) -> Vec<u8> {
        // A struct of strings, numbers and maps with string keys always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    pub fn is_connected(&self) -> bool {
        self.phase != Phase::Disconnected
    }
}
