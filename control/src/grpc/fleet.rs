//! `FleetService`: the agents' Sync stream (served by [`super::sync`]), and the views of the
//! fleet: `ListAgents` and `GetRolloutStatus`, built from the registry's records.

use tlsfleet_proto::v1::{
    fleet_service_server::FleetService, AgentMessage, AgentState, AgentStatus, BucketError,
    GetRolloutStatusRequest, GetRolloutStatusResponse, GetUsageRequest, GetUsageResponse,
    ListAgentsRequest, ListAgentsResponse,
};
use tonic::{Request, Response, Status, Streaming};

use super::{
    calls::authenticate_request,
    sync::{SyncServer, SyncStream},
};
use crate::{
    auth::Authenticator,
    index::Index,
    registry::{AgentRecord, Phase, Registry, Rollout},
    usage::FleetUsage,
};

pub struct FleetServer {
    sync: SyncServer,
    index: Index,
    auth: std::sync::Arc<Authenticator>,
    registry: Registry,
    usage: FleetUsage,
    control_id: String,
    peers: super::peers::Peers,
}

impl FleetServer {
    pub fn new(
        sync: SyncServer,
        index: Index,
        auth: std::sync::Arc<Authenticator>,
        registry: Registry,
        usage: FleetUsage,
        control_id: String,
    ) -> Self {
        Self {
            sync,
            index,
            auth,
            registry,
            usage,
            control_id,
            peers: super::peers::Peers::default(),
        }
    }

    /// Answers usage for the whole fleet, asking `peers`.
    pub fn with_peers(mut self, peers: super::peers::Peers) -> Self {
        self.peers = peers;
        self
    }
}

/// The API's form of a registry record.
fn agent_status(a: AgentRecord) -> AgentStatus {
    let state = match a.phase {
        Phase::Applying => AgentState::Applying,
        Phase::InSync => AgentState::InSync,
        Phase::Degraded => AgentState::Degraded,
        Phase::Disconnected => AgentState::Disconnected,
    };
    AgentStatus {
        node_id: a.node_id,
        labels: a.labels,
        applied_revision: a.applied_revision,
        sent_revision: a.sent_revision,
        state: state as i32,
        errors: a
            .errors
            .into_iter()
            .map(|e| BucketError {
                bucket: e.bucket,
                reason: e.reason,
            })
            .collect(),
        nack_revision: a.nack_revision,
        control_id: a.control_id,
        connected_at_unix_ms: a.connected_at_unix_ms,
        last_seen_unix_ms: a.last_seen_unix_ms,
        key_types: a.key_types,
    }
}

#[tonic::async_trait]
impl FleetService for FleetServer {
    type SyncStream = SyncStream;

    async fn sync(
        &self,
        req: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SyncStream>, Status> {
        self.sync.open(req).await.map(Response::new)
    }

    async fn list_agents(
        &self,
        req: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsResponse>, Status> {
        authenticate_request(&self.auth, &req)?.authorize(None)?;
        let agents = self.registry.list().await;
        Ok(Response::new(ListAgentsResponse {
            agents: agents.into_iter().map(agent_status).collect(),
            revision: self.index.revision(),
        }))
    }

    async fn get_rollout_status(
        &self,
        req: Request<GetRolloutStatusRequest>,
    ) -> Result<Response<GetRolloutStatusResponse>, Status> {
        authenticate_request(&self.auth, &req)?.authorize(None)?;
        let local_only = req.metadata().contains_key(super::peers::LOCAL);
        let req = req.into_inner();
        // A bucket's canary: its agents, at its revision.
        let canary = match req.bucket.as_str() {
            "" => None,
            b => {
                let c = self
                    .index
                    .view()
                    .and_then(|v| v.canaries().get(b).cloned())
                    .ok_or_else(|| {
                        Status::failed_precondition(format!("bucket {b:?} has no canary"))
                    })?;
                Some(c)
            }
        };
        let revision = match (req.revision, &canary) {
            (0, Some(c)) => c.policy.mod_revision,
            // The newest policy change, not the store's revision: on etcd that also counts
            // registry writes, which agents are never sent.
            (0, None) => self.index.last_change(),
            (r, _) => r,
        };
        let mut selector: std::collections::BTreeMap<String, String> = req.selector;
        // What each of the canary's agents refused since it started: this server's agents,
        // and the other servers' (a peer's question is answered from local reports only).
        let mut refused_by_agent = std::collections::BTreeMap::new();
        let mut unreachable = vec![];
        if let Some(c) = &canary {
            selector.extend(c.selector.clone());
            refused_by_agent = self
                .usage
                .agent_refusals(&req.bucket, c.policy.updated_at_unix_ms / 1000);
            if local_only {
                return Ok(Response::new(GetRolloutStatusResponse {
                    refused_by_agent,
                    ..Default::default()
                }));
            }
            let (peers, why) = self.peers.agent_refusals(&self.registry, &req.bucket).await;
            for (agent, n) in peers {
                let total: &mut u64 = refused_by_agent.entry(agent).or_default();
                *total = total.saturating_add(n);
            }
            unreachable = why;
        }
        let Rollout {
            enforcing,
            pending,
            failed,
            failures,
            last_ack_unix_ms,
        } = self.registry.rollout(revision, &selector).await;
        // Only the canary's agents' refusals (others may have reported the bucket too).
        let selected: std::collections::HashSet<&String> =
            enforcing.iter().chain(&pending).chain(&failed).collect();
        refused_by_agent.retain(|agent, _| selected.contains(agent));
        let refused_handshakes = refused_by_agent
            .values()
            .fold(0u64, |a, n| a.saturating_add(*n));
        Ok(Response::new(GetRolloutStatusResponse {
            revision,
            agents_total: u32::try_from(enforcing.len() + pending.len() + failed.len())
                .unwrap_or(u32::MAX),
            enforcing,
            pending,
            failed,
            failures: failures.into_iter().map(agent_status).collect(),
            last_ack_unix_ms,
            canary: canary.as_deref().map(super::admin::canary_wire),
            refused_handshakes,
            refused_by_agent,
            unreachable,
        }))
    }

    async fn get_usage(
        &self,
        req: Request<GetUsageRequest>,
    ) -> Result<Response<GetUsageResponse>, Status> {
        let who = authenticate_request(&self.auth, &req)?;
        let local_only = req.metadata().contains_key(super::peers::LOCAL);
        let req = req.into_inner();
        let bucket: tlsfleet_policy::BucketName =
            req.bucket
                .parse()
                .map_err(|e: tlsfleet_policy::InvalidBucketName| {
                    Status::invalid_argument(e.to_string())
                })?;
        who.authorize(Some(bucket.as_str()))?;
        let since = (req.since_seconds > 0)
            .then(|| std::time::Duration::from_secs(u64::from(req.since_seconds)));
        let now = crate::clock::now_ms() / 1000;
        let mut merged = self.usage.query(bucket.as_str(), since, now);
        let mut servers = vec![self.control_id.clone()];
        let mut unreachable = vec![];
        if !local_only {
            let peers = self
                .peers
                .fleet(&self.registry, bucket.as_str(), req.since_seconds)
                .await;
            merged.usage.merge(&peers.usage);
            servers.extend(peers.servers);
            unreachable = peers.unreachable;
        }
        Ok(Response::new(GetUsageResponse {
            usage: Some(tlsfleet_proto::convert::usage_to_wire(
                bucket.as_str(),
                &merged.usage,
            )),
            windows: merged.windows,
            oldest_unix: merged.oldest_unix,
            newest_unix: merged.newest_unix,
            servers,
            unreachable,
        }))
    }
}
