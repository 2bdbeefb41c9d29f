//! `FleetService`: the agents' sync stream, and the rollout views.
//!
//! Each stream: hello → start (snapshot, or deltas since the agent's revision) → every later
//! update as a delta; the agent answers each revision with ACK or NACK, which the registry
//! records. Streams end when the server shuts down.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use tlsfleet_proto::v1::{
    agent_message, control_message, fleet_service_server::FleetService, AgentMessage, AgentState,
    ControlMessage, Delta, GetRolloutStatusRequest, GetRolloutStatusResponse, ListAgentsRequest,
    ListAgentsResponse, Snapshot,
};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn, Instrument};

use super::admin::bucket_policy;
use crate::{
    auth::{Action, Authenticator},
    index::{Index, Start, Update},
    registry::Registry,
};

/// How long an agent has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

pub struct FleetServer {
    index: Index,
    auth: Arc<Authenticator>,
    registry: Registry,
    shutdown: CancellationToken,
}

impl FleetServer {
    pub fn new(
        index: Index,
        auth: Arc<Authenticator>,
        registry: Registry,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            index,
            auth,
            registry,
            shutdown,
        }
    }
}

type SyncStream = ReceiverStream<Result<ControlMessage, Status>>;

#[tonic::async_trait]
impl FleetService for FleetServer {
    type SyncStream = SyncStream;

    async fn sync(
        &self,
        req: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SyncStream>, Status> {
        let who = self
            .auth
            .grpc(req.metadata(), "/tlsfleet.v1.FleetService/Sync")?;
        who.authorize(Action::Sync, None)?;
        let mut inbound = req.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.next()).await {
            Ok(Some(Ok(AgentMessage {
                kind: Some(agent_message::Kind::Hello(h)),
            }))) => h,
            Ok(Some(Err(e))) => return Err(e),
            Ok(_) => {
                return Err(Status::invalid_argument(
                    "the first message must be a hello",
                ))
            }
            Err(_) => return Err(Status::deadline_exceeded("no hello within 10 s")),
        };
        if hello.node_id.is_empty() || hello.node_id.len() > 253 {
            return Err(Status::invalid_argument(
                "hello.node_id must be 1 to 253 characters",
            ));
        }
        let mut sub = self
            .index
            .subscribe(hello.last_revision)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let (tx, rx) = mpsc::channel(16);
        let span = tracing::info_span!("sync", node = %hello.node_id);
        info!(parent: &span, last_revision = hello.last_revision, key = %who.key.id, "agent connected");
        let session = self.registry.connect(&hello);
        let index = self.index.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(
            async move {
                let start = std::mem::replace(&mut sub.start, Start::Delta(Update::empty(0)));
                let mut sent = match send_start(&tx, start, hello.last_revision).await {
                    Some(rev) => rev,
                    None => return,
                };
                session.sent(sent);
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => {
                            debug!("server shutting down; ending the stream");
                            break;
                        }
                        () = tx.closed() => break,
                        msg = inbound.next() => match msg {
                            Some(Ok(AgentMessage { kind: Some(agent_message::Kind::Ack(a)) })) => session.ack(a.revision),
                            Some(Ok(AgentMessage { kind: Some(agent_message::Kind::Nack(n)) })) => session.nack(n),
                            Some(Ok(_)) => {
                                let _ = tx.send(Err(Status::invalid_argument("unexpected message after hello"))).await;
                                break;
                            }
                            Some(Err(e)) => { debug!(error = %e, "agent stream error"); break; }
                            None => break,
                        },
                        update = sub.updates.recv() => match update {
                            Ok(u) if u.revision <= sent => {}
                            Ok(u) => {
                                if u.upserts.is_empty() && u.deletes.is_empty() {
                                    continue;
                                }
                                if tx.send(Ok(delta(&u, sent))).await.is_err() { break; }
                                sent = u.revision;
                                session.sent(sent);
                            }
                            Err(broadcast::error::RecvError::Lagged(n)) => {
                                warn!(skipped = n, "agent stream lagged; resubscribing");
                                match index.subscribe(sent).await {
                                    Ok(s) => {
                                        sub = s;
                                        let start = std::mem::replace(&mut sub.start, Start::Delta(Update::empty(0)));
                                        match send_start(&tx, start, sent).await {
                                            Some(rev) => { sent = rev; session.sent(sent); }
                                            None => break,
                                        }
                                    }
                                    Err(_) => break,
                                }
                            }
                            Err(broadcast::error::RecvError::Closed) => break,
                        },
                    }
                }
                session.disconnected();
                info!("agent disconnected");
            }
            .instrument(span),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn list_agents(
        &self,
        req: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsResponse>, Status> {
        let who = self
            .auth
            .grpc(req.metadata(), "/tlsfleet.v1.FleetService/ListAgents")?;
        who.authorize(Action::ListAgents, None)?;
        let agents = self.registry.list().await;
        let revision = self.index.view().map(|v| v.revision()).unwrap_or(0);
        Ok(Response::new(ListAgentsResponse { agents, revision }))
    }

    async fn get_rollout_status(
        &self,
        req: Request<GetRolloutStatusRequest>,
    ) -> Result<Response<GetRolloutStatusResponse>, Status> {
        let who = self
            .auth
            .grpc(req.metadata(), "/tlsfleet.v1.FleetService/GetRolloutStatus")?;
        who.authorize(Action::GetRolloutStatus, None)?;
        let revision = match req.get_ref().revision {
            0 => self.index.view().map(|v| v.revision()).unwrap_or(0),
            r => r,
        };
        let agents = self.registry.list().await;
        let mut out = GetRolloutStatusResponse {
            revision,
            agents_total: u32::try_from(agents.len()).unwrap_or(u32::MAX),
            ..Default::default()
        };
        for a in agents {
            let failed = a.state == AgentState::Degraded as i32 && a.nack_revision >= revision;
            if failed {
                out.failed.push(a.node_id);
            } else if a.applied_revision >= revision && a.state != AgentState::Disconnected as i32 {
                out.enforcing.push(a.node_id);
            } else {
                out.pending.push(a.node_id);
            }
        }
        Ok(Response::new(out))
    }
}

/// Sends the start of a stream; returns the revision the agent will be at.
async fn send_start(
    tx: &mpsc::Sender<Result<ControlMessage, Status>>,
    start: Start,
    agent_revision: i64,
) -> Option<i64> {
    let (msg, rev) = match start {
        Start::Snapshot(view) => (
            control_message::Kind::Snapshot(Snapshot {
                revision: view.revision(),
                policies: view.entries().map(|e| bucket_policy(e)).collect(),
            }),
            view.revision(),
        ),
        Start::Delta(u) => (
            control_message::Kind::Delta(delta_msg(&u, agent_revision)),
            u.revision,
        ),
    };
    tx.send(Ok(ControlMessage { kind: Some(msg) })).await.ok()?;
    Some(rev)
}

/// A delta that continues from `from` (skipped empty updates are folded in).
fn delta_msg(u: &Update, from: i64) -> Delta {
    Delta {
        from_revision: from,
        revision: u.revision,
        upserts: u.upserts.iter().map(|e| bucket_policy(e)).collect(),
        deletes: u.deletes.clone(),
    }
}

fn delta(u: &Update, from: i64) -> ControlMessage {
    ControlMessage {
        kind: Some(control_message::Kind::Delta(delta_msg(u, from))),
    }
}
