//! `FleetService`: the agents' sync stream, and the rollout views.
//!
//! Each stream: hello → authentication (the signature covers the hello) and the node's
//! identity (the key's `nodes` patterns; over mTLS also the client certificate) → start
//! (snapshot, or deltas since the agent's revision) → every later update as a delta; the agent
//! answers each revision with ACK or NACK, which the registry records.
//!
//! Bounds: streams in total and per key ([`SyncLimits`]), one stream per node (a newer one
//! replaces it), snapshots and deltas in chunks of at most [`SyncLimits::chunk_bytes`] with at
//! most [`SEND_QUEUE`] chunks queued, and a peer that does not read for
//! [`SyncLimits::send_timeout`] is dropped. Streams end when the server shuts down; their
//! tasks are tracked and joined.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use futures::StreamExt;
use prost::Message as _;
use tlsfleet_policy::CertKeyType;
use tlsfleet_proto::{
    auth::message_digest,
    v1::{
        agent_message, control_message, fleet_service_server::FleetService, AgentHello,
        AgentMessage, AgentState, BucketError, BucketPolicy, ControlMessage, Delta,
        GetRolloutStatusRequest, GetRolloutStatusResponse, ListAgentsRequest, ListAgentsResponse,
        Nack, Snapshot,
    },
};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn, Instrument};

use super::admin::bucket_policy;
use crate::{
    auth::{Action, Authenticator, Principal},
    index::{Index, PolicyEntry, Start, Subscription, Update, View},
    registry::{Registry, Session},
};

/// How long an agent has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Control messages queued per stream beyond what the transport holds.
pub const SEND_QUEUE: usize = 2;
/// The gRPC path of the stream (what its signature covers).
const SYNC: &str = "/tlsfleet.v1.FleetService/Sync";
/// Labels an agent may report, and their lengths.
const MAX_LABELS: usize = 32;
const MAX_LABEL_KEY: usize = 63;
const MAX_LABEL_VALUE: usize = 253;
const MAX_NODE_ID: usize = 253;
const MAX_AGENT_VERSION: usize = 64;
/// NACK entries kept, and the length kept of each reason.
const MAX_NACK_ERRORS: usize = 100;
const MAX_NACK_REASON: usize = 512;

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
            chunk_bytes: 128 * 1024,
        }
    }
}

pub struct FleetServer {
    index: Index,
    auth: Arc<Authenticator>,
    registry: Registry,
    shutdown: CancellationToken,
    limits: SyncLimits,
    streams: Arc<Streams>,
    tasks: TaskTracker,
}

impl FleetServer {
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
        let certs = req.peer_certs();
        let (metadata, _, mut inbound) = req.into_parts();
        if metadata.get(tlsfleet_proto::auth::METADATA_KEY).is_none() {
            // Refused before waiting for anything.
            return Err(crate::auth::AuthError::Missing.into());
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
        let who = self.auth.grpc(&metadata, SYNC, &message_digest(&first))?;
        who.authorize(Action::Sync, None)?;
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
        let sub = self
            .index
            .subscribe(after)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let current = self.index.view().map_or(0, |v| v.revision());
        let key_types: Vec<CertKeyType> = hello
            .key_types
            .iter()
            .filter_map(|k| CertKeyType::parse(k))
            .collect();
        let session = self
            .registry
            .connect(&hello, after.min(current), &key_types);
        let (tx, rx) = mpsc::channel(SEND_QUEUE);
        let span = tracing::info_span!("sync", node = %hello.node_id);
        info!(parent: &span, last_revision = hello.last_revision, key = %who.key.id, "agent connected");
        let stream = SyncSession {
            tx,
            inbound,
            sub,
            session,
            index: self.index.clone(),
            limits: self.limits,
            store_id,
            replaced: slot.replaced.clone(),
            shutdown: self.shutdown.clone(),
            _slot: slot,
        };
        self.tasks.spawn(stream.run(after).instrument(span));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn list_agents(
        &self,
        req: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsResponse>, Status> {
        let who = self.auth.grpc(
            req.metadata(),
            "/tlsfleet.v1.FleetService/ListAgents",
            &message_digest(req.get_ref()),
        )?;
        who.authorize(Action::ListAgents, None)?;
        let agents = self.registry.list().await;
        let revision = self.index.view().map(|v| v.revision()).unwrap_or(0);
        Ok(Response::new(ListAgentsResponse { agents, revision }))
    }

    async fn get_rollout_status(
        &self,
        req: Request<GetRolloutStatusRequest>,
    ) -> Result<Response<GetRolloutStatusResponse>, Status> {
        let who = self.auth.grpc(
            req.metadata(),
            "/tlsfleet.v1.FleetService/GetRolloutStatus",
            &message_digest(req.get_ref()),
        )?;
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

/// Refuses a hello whose fields are out of bounds (they end up in the registry and the logs).
fn check_hello(hello: &AgentHello) -> Result<(), Status> {
    let printable = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
    if hello.node_id.is_empty() || hello.node_id.len() > MAX_NODE_ID || !printable(&hello.node_id) {
        return Err(Status::invalid_argument(
            "hello.node_id must be 1 to 253 printable ASCII characters",
        ));
    }
    if hello.labels.len() > MAX_LABELS {
        return Err(Status::invalid_argument(format!(
            "hello.labels has {} entries; at most {MAX_LABELS} are accepted",
            hello.labels.len()
        )));
    }
    for (k, v) in &hello.labels {
        let value_ok =
            v.len() <= MAX_LABEL_VALUE && v.bytes().all(|b| b == b' ' || b.is_ascii_graphic());
        if k.is_empty() || k.len() > MAX_LABEL_KEY || !printable(k) || !value_ok {
            return Err(Status::invalid_argument(
                "hello.labels: keys must be 1 to 63 and values at most 253 printable ASCII \
                 characters",
            ));
        }
    }
    if hello.agent_version.len() > MAX_AGENT_VERSION || hello.key_types.len() > 4 {
        return Err(Status::invalid_argument(
            "hello.agent_version or hello.key_types is too long",
        ));
    }
    Ok(())
}

/// A Sync key registers only the node ids its `nodes` patterns cover; a client certificate,
/// when the transport has one, must name the node too.
fn bind_identity(
    who: &Principal,
    node_id: &str,
    certs: Option<&[rustls::pki_types::CertificateDer<'static>]>,
) -> Result<(), Status> {
    if !who.key.may_register(node_id) {
        let patterns = who.key.node_patterns();
        let hint = if patterns.is_empty() {
            "it has no `nodes` patterns in the credentials file".to_owned()
        } else {
            format!("its `nodes` patterns are {patterns:?}")
        };
        return Err(Status::permission_denied(format!(
            "access key {:?} may not register agent {node_id:?}: {hint}",
            who.key.id
        )));
    }
    if let Some(leaf) = certs.and_then(<[_]>::first) {
        let named = rustls::pki_types::ServerName::try_from(node_id)
            .ok()
            .zip(webpki::EndEntityCert::try_from(leaf).ok())
            .is_some_and(|(name, cert)| cert.verify_is_valid_for_subject_name(&name).is_ok());
        if !named {
            return Err(Status::permission_denied(format!(
                "the client certificate does not name agent {node_id:?} (a DNS name of the \
                 certificate must be the node id)"
            )));
        }
    }
    Ok(())
}

/// The open streams: counts in total and per key, and the one stream of each node.
#[derive(Default)]
struct Streams {
    inner: Mutex<StreamsInner>,
}

#[derive(Default)]
struct StreamsInner {
    total: usize,
    per_key: HashMap<String, usize>,
    /// node id -> (stream id, cancelled when a newer stream of the node replaces it)
    per_node: HashMap<String, (u64, CancellationToken)>,
    next_id: u64,
}

/// One admitted stream; dropping it frees its place.
struct Slot {
    streams: Arc<Streams>,
    key: String,
    node: String,
    id: u64,
    replaced: CancellationToken,
}

impl Streams {
    fn lock(&self) -> std::sync::MutexGuard<'_, StreamsInner> {
        // Every update is a few counter changes made together.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn admit(self: &Arc<Self>, key: &str, node: &str, limits: &SyncLimits) -> Result<Slot, Status> {
        let mut s = self.lock();
        // A node's newer stream replaces its older one, so a reconnect never counts twice.
        let replacing = s.per_node.contains_key(node);
        if !replacing && s.total >= limits.max_streams {
            return Err(Status::resource_exhausted(format!(
                "{} agent streams are open, the most this server takes",
                limits.max_streams
            )));
        }
        let of_key = s.per_key.get(key).copied().unwrap_or(0);
        if !replacing && of_key >= limits.max_streams_per_key {
            return Err(Status::resource_exhausted(format!(
                "{} agent streams are open with access key {key:?}, the most one key may have",
                limits.max_streams_per_key
            )));
        }
        s.next_id += 1;
        let id = s.next_id;
        let replaced = CancellationToken::new();
        if let Some((_, old)) = s.per_node.insert(node.to_owned(), (id, replaced.clone())) {
            old.cancel();
        }
        s.total += 1;
        *s.per_key.entry(key.to_owned()).or_insert(0) += 1;
        Ok(Slot {
            streams: self.clone(),
            key: key.to_owned(),
            node: node.to_owned(),
            id,
            replaced,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = self.streams.lock();
        s.total = s.total.saturating_sub(1);
        if let Some(n) = s.per_key.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                s.per_key.remove(&self.key);
            }
        }
        if s.per_node
            .get(&self.node)
            .is_some_and(|(id, _)| *id == self.id)
        {
            s.per_node.remove(&self.node);
        }
    }
}

/// Why a stream ended early.
#[derive(Debug)]
enum Ended {
    /// The agent went away, or the transport dropped the stream.
    Gone,
    /// The agent did not take a message within the send timeout.
    NotReading,
}

/// One agent's stream, run on its own task.
struct SyncSession {
    tx: mpsc::Sender<Result<ControlMessage, Status>>,
    inbound: Streaming<AgentMessage>,
    sub: Subscription,
    session: Session,
    index: Index,
    limits: SyncLimits,
    store_id: String,
    replaced: CancellationToken,
    shutdown: CancellationToken,
    _slot: Slot,
}

impl SyncSession {
    async fn run(mut self, after: i64) {
        let start = std::mem::replace(&mut self.sub.start, Start::Delta(Update::empty(0)));
        let mut sent = match self.send_start(start, after).await {
            Ok(rev) => rev,
            Err(e) => return self.end(&e),
        };
        self.session.sent(sent);
        let outcome = loop {
            tokio::select! {
                () = self.shutdown.cancelled() => {
                    debug!("server shutting down; ending the stream");
                    break Ok(());
                }
                () = self.replaced.cancelled() => {
                    info!("a newer stream of this node replaced this one");
                    let _ = self.tx.try_send(Err(Status::aborted(
                        "replaced by a newer stream of the same node",
                    )));
                    break Ok(());
                }
                () = self.tx.closed() => break Err(Ended::Gone),
                msg = self.inbound.next() => match msg {
                    Some(Ok(AgentMessage { kind: Some(agent_message::Kind::Ack(a)) })) => {
                        // An agent cannot claim more than it was sent.
                        self.session.ack(a.revision.min(sent));
                    }
                    Some(Ok(AgentMessage { kind: Some(agent_message::Kind::Nack(n)) })) => {
                        self.session.nack(bounded_nack(n, sent));
                    }
                    Some(Ok(_)) => {
                        let _ = self.tx.try_send(Err(Status::invalid_argument(
                            "unexpected message after hello",
                        )));
                        break Ok(());
                    }
                    Some(Err(e)) => {
                        debug!(error = %e, "agent stream error");
                        break Err(Ended::Gone);
                    }
                    None => break Err(Ended::Gone),
                },
                update = self.sub.updates.recv() => match update {
                    Ok(u) if u.revision <= sent => {}
                    Ok(u) if u.upserts.is_empty() && u.deletes.is_empty() => {}
                    Ok(u) => {
                        if let Err(e) = self.send_delta(&u, sent).await {
                            break Err(e);
                        }
                        sent = u.revision;
                        self.session.sent(sent);
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        warn!(skipped = n, "agent stream lagged; resubscribing");
                        match self.index.subscribe(sent).await {
                            Ok(sub) => {
                                self.sub = sub;
                                let start = std::mem::replace(
                                    &mut self.sub.start,
                                    Start::Delta(Update::empty(0)),
                                );
                                match self.send_start(start, sent).await {
                                    Ok(rev) => {
                                        sent = rev;
                                        self.session.sent(sent);
                                    }
                                    Err(e) => break Err(e),
                                }
                            }
                            Err(_) => break Ok(()),
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => break Ok(()),
                },
            }
        };
        match outcome {
            Ok(()) => self.end_quietly(),
            Err(e) => self.end(&e),
        }
    }

    fn end(self, why: &Ended) {
        match why {
            Ended::NotReading => warn!(
                timeout = ?self.limits.send_timeout,
                "agent did not read its stream; dropping it"
            ),
            Ended::Gone => {}
        }
        self.end_quietly();
    }

    fn end_quietly(self) {
        self.session.disconnected();
        info!("agent disconnected");
    }

    /// Sends one message, waiting at most the send timeout for the peer to take it.
    async fn send(&self, msg: control_message::Kind) -> Result<(), Ended> {
        let msg = Ok(ControlMessage { kind: Some(msg) });
        match tokio::time::timeout(self.limits.send_timeout, self.tx.send(msg)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Ended::Gone),
            Err(_) => Err(Ended::NotReading),
        }
    }

    /// Sends the start of a stream; returns the revision the agent will be at.
    async fn send_start(&self, start: Start, agent_revision: i64) -> Result<i64, Ended> {
        match start {
            Start::Snapshot(view) => {
                self.send_snapshot(&view).await?;
                Ok(view.revision())
            }
            Start::Delta(u) => {
                self.send_delta(&u, agent_revision).await?;
                Ok(u.revision)
            }
        }
    }

    /// The whole view, in chunks (built one at a time: a stream holds at most a few).
    async fn send_snapshot(&self, view: &View) -> Result<(), Ended> {
        let revision = view.revision();
        let mut chunks = Chunks::new(self.limits.chunk_bytes, view.entries().map(wire));
        loop {
            let (policies, more) = chunks.next_chunk();
            self.send(control_message::Kind::Snapshot(Snapshot {
                revision,
                policies,
                more,
                store_id: self.store_id.clone(),
            }))
            .await?;
            if !more {
                return Ok(());
            }
        }
    }

    /// The changes of `u` as a delta that continues from `from`, in chunks.
    async fn send_delta(&self, u: &Update, from: i64) -> Result<(), Ended> {
        let mut chunks = Chunks::new(self.limits.chunk_bytes, u.upserts.iter().map(wire));
        let mut deletes = u.deletes.iter();
        loop {
            let (upserts, mut more) = chunks.next_chunk();
            let room = self
                .limits
                .chunk_bytes
                .saturating_sub(upserts.iter().map(|p| p.encoded_len()).sum::<usize>());
            let mut batch = Vec::new();
            let mut size = 0;
            if !more {
                for d in deletes.by_ref() {
                    size += d.len() + 2;
                    batch.push(d.clone());
                    if size >= room.max(1) {
                        break;
                    }
                }
                more = deletes.len() > 0;
            }
            self.send(control_message::Kind::Delta(Delta {
                from_revision: from,
                revision: u.revision,
                upserts,
                deletes: batch,
                more,
            }))
            .await?;
            if !more {
                return Ok(());
            }
        }
    }
}

/// The wire form of an index entry (a function, not a closure: the futures that hold the
/// iterators must be `Send` for every lifetime).
fn wire(e: &Arc<PolicyEntry>) -> BucketPolicy {
    bucket_policy(e)
}

/// Wire policies cut into chunks of about `target` bytes (at least one policy each).
struct Chunks<I: Iterator<Item = BucketPolicy>> {
    target: usize,
    items: std::iter::Peekable<I>,
}

impl<I: Iterator<Item = BucketPolicy>> Chunks<I> {
    fn new(target: usize, items: I) -> Self {
        Self {
            target: target.max(1),
            items: items.peekable(),
        }
    }

    /// The next chunk, and whether more follow.
    fn next_chunk(&mut self) -> (Vec<BucketPolicy>, bool) {
        let mut chunk = Vec::new();
        let mut size = 0;
        for p in self.items.by_ref() {
            size += p.encoded_len() + 4;
            chunk.push(p);
            if size >= self.target {
                break;
            }
        }
        let more = self.items.peek().is_some();
        (chunk, more)
    }
}

/// A NACK as recorded: its revision at most what was sent, at most [`MAX_NACK_ERRORS`]
/// entries, names and reasons bounded and stripped of control characters.
fn bounded_nack(n: Nack, sent: i64) -> Nack {
    let clean = |s: String, max: usize| -> String {
        s.chars().filter(|c| !c.is_control()).take(max).collect()
    };
    Nack {
        revision: n.revision.min(sent),
        errors: n
            .errors
            .into_iter()
            .take(MAX_NACK_ERRORS)
            .map(|e| BucketError {
                bucket: clean(e.bucket, 63),
                reason: clean(e.reason, MAX_NACK_REASON),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(bucket: &str) -> BucketPolicy {
        BucketPolicy {
            bucket: bucket.into(),
            ..Default::default()
        }
    }

    #[test]
    fn chunks_are_bounded_and_cover_everything() {
        let items: Vec<BucketPolicy> = (0..1000)
            .map(|i| policy(&format!("bucket-{i:04}")))
            .collect();
        let one = items[0].encoded_len() + 4;
        let mut chunks = Chunks::new(one * 100, items.clone().into_iter());
        let mut seen = 0;
        let mut count = 0;
        loop {
            let (chunk, more) = chunks.next_chunk();
            assert!(chunk.len() <= 100, "{}", chunk.len());
            seen += chunk.len();
            count += 1;
            if !more {
                break;
            }
        }
        assert_eq!((seen, count), (1000, 10));
        let mut empty = Chunks::new(10, std::iter::empty());
        assert_eq!(empty.next_chunk(), (vec![], false));
    }

    #[test]
    fn nacks_are_clamped_and_bounded() {
        let n = Nack {
            revision: 99,
            errors: (0..500)
                .map(|i| BucketError {
                    bucket: format!("b{i}\u{1b}[31m"),
                    reason: "x".repeat(10_000),
                })
                .collect(),
        };
        let b = bounded_nack(n, 7);
        assert_eq!(b.revision, 7);
        assert_eq!(b.errors.len(), MAX_NACK_ERRORS);
        assert!(!b.errors[0].bucket.contains('\u{1b}'));
        assert_eq!(b.errors[0].reason.len(), MAX_NACK_REASON);
    }

    #[test]
    fn hellos_are_bounded() {
        let ok = AgentHello {
            node_id: "edge-1".into(),
            labels: [("zone".to_owned(), "eu west".to_owned())].into(),
            ..Default::default()
        };
        assert!(check_hello(&ok).is_ok());
        for bad in [
            AgentHello {
                node_id: String::new(),
                ..ok.clone()
            },
            AgentHello {
                node_id: "a b".into(),
                ..ok.clone()
            },
            AgentHello {
                node_id: "x\u{1b}".into(),
                ..ok.clone()
            },
            AgentHello {
                labels: (0..33).map(|i| (format!("k{i}"), "v".into())).collect(),
                ..ok.clone()
            },
            AgentHello {
                labels: [("k".into(), "v\n".into())].into(),
                ..ok.clone()
            },
            AgentHello {
                labels: [(String::new(), "v".into())].into(),
                ..ok.clone()
            },
        ] {
            assert!(check_hello(&bad).is_err(), "{bad:?}");
        }
    }
}
