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
    /// That server's gRPC URL, where other servers ask it about its agents (empty: unknown).
    #[serde(default)]
    pub control_url: String,
    pub connected_at_unix_ms: i64,
    pub last_seen_unix_ms: i64,
    /// When it last acknowledged a revision (0: not yet on this stream).
    #[serde(default)]
    pub acked_unix_ms: i64,
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

    /// Decodes a stored entry: JSON, or the protobuf `AgentStatus` that servers before this
    /// record type wrote (so a server reads the agents of older servers during a rolling
    /// upgrade; see ARCHITECTURE.md, "Storage").
    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        match serde_json::from_slice(bytes) {
            Ok(record) => Ok(record),
            Err(e) => legacy(bytes).ok_or(e),
        }
    }

    pub fn is_connected(&self) -> bool {
        self.phase != Phase::Disconnected
    }
}

/// An entry written as protobuf `AgentStatus` by an older server, if it is one.
fn legacy(bytes: &[u8]) -> Option<AgentRecord> {
    use prost::Message as _;
    use tlsfleet_proto::v1::{AgentState, AgentStatus};
    // JSON starts with `{`; a protobuf AgentStatus starts with its node id's tag (field 1).
    if bytes.first() != Some(&0x0a) {
        return None;
    }
    let s = AgentStatus::decode(bytes).ok()?;
    let phase = match AgentState::try_from(s.state).ok()? {
        AgentState::InSync => Phase::InSync,
        AgentState::Degraded => Phase::Degraded,
        AgentState::Disconnected => Phase::Disconnected,
        AgentState::Applying | AgentState::Unspecified => Phase::Applying,
    };
    Some(AgentRecord {
        node_id: s.node_id,
        labels: s.labels,
        applied_revision: s.applied_revision,
        sent_revision: s.sent_revision,
        phase,
        errors: s
            .errors
            .into_iter()
            .map(|e| BucketFailure {
                bucket: e.bucket,
                reason: e.reason,
            })
            .collect(),
        nack_revision: s.nack_revision,
        control_id: s.control_id,
        control_url: String::new(),
        connected_at_unix_ms: s.connected_at_unix_ms,
        last_seen_unix_ms: s.last_seen_unix_ms,
        acked_unix_ms: 0,
        key_types: s.key_types,
    })
}

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use tlsfleet_proto::v1::{AgentState, AgentStatus};

    use super::*;

    #[test]
    fn records_round_trip_and_older_protobuf_entries_are_read() {
        let legacy = AgentStatus {
            node_id: "edge-1".into(),
            applied_revision: 7,
            sent_revision: 9,
            state: AgentState::Degraded as i32,
            nack_revision: 9,
            control_id: "c1".into(),
            key_types: vec!["RSA".into()],
            ..Default::default()
        };
        let r = AgentRecord::decode(&legacy.encode_to_vec()).unwrap();
        assert_eq!(
            (
                r.node_id.as_str(),
                r.applied_revision,
                r.phase,
                r.nack_revision
            ),
            ("edge-1", 7, Phase::Degraded, 9)
        );
        assert_eq!(r.key_types, ["RSA"]);
        assert_eq!(AgentRecord::decode(&r.encode()).unwrap(), r);
        assert!(AgentRecord::decode(b"\x0anot really").is_err());
        assert!(AgentRecord::decode(b"{").is_err());
    }
}
