//! The Sync server: the agents' policy stream.
//!
//! Each stream: hello → authentication (the signature covers the hello) and the node's
//! identity (the key's `nodes` patterns; over mTLS also the client certificate) → admission
//! (`admit`) → start (snapshot, or deltas since the agent's revision) → every later update
//! as a delta (`session`); the agent answers each revision with ACK or NACK, which the
//! registry records.
//!
//! Bounds: streams in total and per key ([`SyncLimits`]), one stream per node (a newer one
//! replaces it), snapshots and deltas in chunks (`chunks`) of at most
//! [`SyncLimits::chunk_bytes`] with at most [`SEND_QUEUE`] chunks queued, and a peer that does
//! not read for [`SyncLimits::send_timeout`] is dropped. Every stream runs on a task of the
//! server's [`TaskTracker`]; they end when the server shuts down, and the server waits for them.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use tlsfleet_policy::CertKeyType;
use tlsfleet_proto::{
    auth::message_digest,
    frame::ControlFrame,
    v1::{agent_message, AgentMessage},
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::{Request, Status, Streaming};
use tracing::{info, Instrument};

use super::calls;
use crate::{
    auth::Authenticator,
    index::Index,
    registry::{Hello, Registry},
    usage::FleetUsage,
};

mod admit;
mod chunks;
mod hello;
mod session;

pub use session::counters;

use admit::Streams;
use hello::{bind_identity, check_hello};
use session::SyncSession;

/// How long an agent has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Control messages queued per stream beyond what the transport holds.
pub const SEND_QUEUE: usize = 2;

/// Bounds on the Sync streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncLimits {
    /// Streams open at once, all keys together.
    pub max_streams: usize,
    /// Streams open at once with one access key.
    pub max_streams_per_key: usize,
    /// A stream whose peer has not taken a message for this long is ended.
    pub send_timeout: Duration,
    /// Snapshots and deltas are cut into messages of about this many bytes.
    pub chunk_bytes: usize,
}

impl Default for SyncLimits {
    fn default() -> Self {
        Self {
            max_streams: 10_000,
            max_streams_per_key: 4_096,
            send_timeout: Duration::from_secs(30),
            chunk_bytes: 64 * 1024,
        }
    }
}

/// The control messages of one stream, as tonic sends them.
pub type SyncStream = ReceiverStream<Result<ControlFrame, Status>>;

/// Opens Sync streams and runs each on a tracked task.
pub struct SyncServer {
    index: Index,
    auth: Arc<Authenticator>,
    registry: Registry,
    shutdown: CancellationToken,
    limits: SyncLimits,
    streams: Arc<Streams>,
    tasks: TaskTracker,
    usage: FleetUsage,
}

impl SyncServer {
    /// Stream tasks run on `tasks`: close and wait on it at shutdown.
    pub fn new(
        index: Index,
        auth: Arc<Authenticator>,
        registry: Registry,
        limits: SyncLimits,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            index,
            auth,
            registry,
            shutdown,
            limits,
            streams: Arc::new(Streams::default()),
            tasks,
            usage: FleetUsage::default(),
        }
    }

    /// Where the agents' usage reports go.
    pub fn with_usage(mut self, usage: FleetUsage) -> Self {
        self.usage = usage;
        self
    }

    /// Accepts (or refuses) one stream and starts its task.
    pub async fn open(&self, req: Request<Streaming<AgentMessage>>) -> Result<SyncStream, Status> {
        let certs = req.peer_certs();
        let (metadata, extensions, mut inbound) = req.into_parts();
        if metadata.get(tlsfleet_proto::auth::METADATA_KEY).is_none() {
            // Refused before waiting for anything.
            return Err(calls::missing());
        }
        let first = match tokio::time::timeout(HELLO_TIMEOUT, inbound.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => return Err(e),
            Ok(None) => {
                return Err(Status::invalid_argument(
                    "the first message must be a hello",
                ))
            }
            Err(_) => return Err(Status::deadline_exceeded("no hello within 10 s")),
        };
        // The signature covers the hello: nobody on the way can change who says hello.
        let caller =
            calls::authenticate(&self.auth, &metadata, &extensions, &message_digest(&first))?;
        caller.authorize(None)?;
        let who = caller.who;
        let Some(agent_message::Kind::Hello(hello)) = first.kind else {
            return Err(Status::invalid_argument(
                "the first message must be a hello",
            ));
        };
        check_hello(&hello)?;
        bind_identity(&who, &hello.node_id, certs.as_deref().map(Vec::as_slice))?;
        let slot = self
            .streams
            .admit(&who.key.id, &hello.node_id, &self.limits)?;

        let store_id = self.index.store_id().unwrap_or_default();
        // A revision of another store (or of none we know) says nothing about ours.
        let known = !hello.store_id.is_empty() && hello.store_id == store_id;
        let after = if known { hello.last_revision.max(0) } else { 0 };
        let (start, sub) = self
            .index
            .subscribe(after)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let session = self.registry.connect(Hello {
            node_id: hello.node_id.clone(),
            labels: hello.labels.clone(),
            applied_revision: after.min(self.index.revision()),
            key_types: hello
                .key_types
                .iter()
                .filter_map(|k| CertKeyType::parse(k))
                .collect(),
        });
        let (tx, rx) = mpsc::channel(SEND_QUEUE);
        let span = tracing::info_span!("sync", node = %hello.node_id);
        info!(parent: &span, last_revision = hello.last_revision, key = %who.key.id, "agent connected");
        let stream = SyncSession {
            tx,
            inbound,
            sub,
            session,
            limits: self.limits,
            store_id,
            replaced: slot.replaced.clone(),
            shutdown: self.shutdown.clone(),
            slot,
            usage: self.usage.clone(),
            labels: hello.labels.clone(),
            node_id: hello.node_id.clone(),
            index: self.index.clone(),
        };
        self.tasks.spawn(stream.run(start, after).instrument(span));
        Ok(ReceiverStream::new(rx))
    }
}
