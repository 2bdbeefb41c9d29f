//! One agent's stream, on its own task: the start (snapshot or deltas), then every update as a
//! delta (the updates that queued up while the agent was slow as one delta), while recording
//! the agent's ACKs and NACKs in the registry.

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use futures::StreamExt;
use prost::Message as _;
use tlsfleet_proto::{
    frame::{ControlFrame, SharedDelta},
    v1::{agent_message, control_message, AgentMessage, BucketPolicy, Delta, Snapshot},
};
use tokio::{sync::mpsc, time::Instant};
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};
use tracing::{debug, info, warn};

use super::{admit::Slot, chunks::Chunks, hello::bounded_nack, SyncLimits};
use crate::{
    grpc::admin::{config_only, default_wire},
    index::{
        canary, state::Encodings, DefaultChange, PolicyEntry, Start, Subscription, Update, View,
    },
    registry::Session,
    usage::FleetUsage,
};

/// How long a stream waits for its agent to answer a revision before it sends the next one
/// anyway (an agent applying a large snapshot answers late; one that never answers is not
/// held up for longer than this).
pub const ACK_WAIT: Duration = Duration::from_secs(1);

/// Why a stream ended early.
#[derive(Debug)]
pub(super) enum Ended {
    /// The agent went away, or the transport dropped the stream.
    Gone,
    /// The agent did not take a message within the send timeout.
    NotReading,
}

/// One agent's stream, run on its own task.
pub(super) struct SyncSession {
    pub(super) tx: mpsc::Sender<Result<ControlFrame, Status>>,
    pub(super) inbound: Streaming<AgentMessage>,
    pub(super) sub: Subscription,
    pub(super) session: Session,
    pub(super) limits: SyncLimits,
    pub(super) store_id: String,
    pub(super) replaced: CancellationToken,
    pub(super) shutdown: CancellationToken,
    pub(super) slot: Slot,
    pub(super) usage: FleetUsage,
    /// The agent's labels: which canaries it is in.
    pub(super) labels: std::collections::BTreeMap<String, String>,
    pub(super) node_id: String,
    /// Which buckets have a canary (usage reports are tallied per agent for them).
    pub(super) index: crate::index::Index,
}

impl SyncSession {
    /// Runs the stream from `start` (for an agent at `after`) until it ends.
    pub(super) async fn run(mut self, start: Start, after: i64) {
        let mut sent = match self.send_start(start, after).await {
            Ok(rev) => rev,
            Err(e) => return self.end(&e),
        };
        self.session.sent(sent);
        // At most one revision in flight: the next goes once the agent answered this one (or
        // after ACK_WAIT), so a slow agent gets what queued up meanwhile as one delta.
        let mut answered = after;
        let mut ack_deadline = Instant::now() + ACK_WAIT;
        let outcome = loop {
            let waiting = answered < sent && Instant::now() < ack_deadline;
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
                        let revision = a.revision.min(sent);
                        answered = answered.max(revision);
                        self.session.ack(revision);
                    }
                    Some(Ok(AgentMessage { kind: Some(agent_message::Kind::Nack(n)) })) => {
                        let (revision, errors) = bounded_nack(n, sent);
                        answered = answered.max(revision);
                        self.session.nack(revision, errors);
                    }
                    Some(Ok(AgentMessage { kind: Some(agent_message::Kind::Usage(report)) })) => {
                        let who = Reporter {
                            node_id: &self.node_id,
                            canaries: self.index.view().map(|v| v.canaries().clone()),
                        };
                        record_usage(&self.usage, &report, &who);
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
                () = tokio::time::sleep_until(ack_deadline), if waiting => {}
                // What queued up while the agent was busy goes as one delta.
                update = self.sub.next(), if !waiting => match update.and_then(|u| self.sub.coalesce(u)) {
                    Ok(u) if u.revision <= sent || u.is_empty() => {}
                    Ok(u) => {
                        if let Err(e) = self.send_delta(&u, sent, true).await {
                            break Err(e);
                        }
                        sent = u.revision;
                        ack_deadline = Instant::now() + ACK_WAIT;
                        self.session.sent(sent);
                    }
                    Err(resync) => {
                        warn!(skipped = resync.skipped, "agent stream lagged; resubscribing");
                        let Ok(start) = self.sub.resync(sent).await else {
                            break Ok(());
                        };
                        match self.send_start(start, sent).await {
                            Ok(rev) => {
                                sent = rev;
                                ack_deadline = Instant::now() + ACK_WAIT;
                                self.session.sent(sent);
                            }
                            Err(e) => break Err(e),
                        }
                    }
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
        drop(self.slot);
        info!("agent disconnected");
    }

    /// Sends one message, waiting at most the send timeout for the peer to take it.
    async fn send(&self, msg: control_message::Kind) -> Result<(), Ended> {
        self.send_frame(ControlFrame::from(msg)).await
    }

    /// Sends one frame, waiting at most the send timeout for the peer to take it.
    async fn send_frame(&self, frame: ControlFrame) -> Result<(), Ended> {
        match tokio::time::timeout(self.limits.send_timeout, self.tx.send(Ok(frame))).await {
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
                self.send_delta(&u, agent_revision, false).await?;
                Ok(u.revision)
            }
        }
    }

    /// The whole view, in chunks (built one at a time: a stream holds at most a few).
    async fn send_snapshot(&self, view: &View) -> Result<(), Ended> {
        let revision = view.revision();
        let policies = canary::snapshot_for(
            view.entries(),
            view.canaries(),
            view.entry_map(),
            &self.labels,
        );
        let mut chunks = Chunks::new(self.limits.chunk_bytes, policies.map(wire_owned));
        loop {
            let (policies, more) = chunks.next_chunk();
            // The default policy travels in the last chunk, with the revision it is part of.
            let default_policy = if more {
                None
            } else {
                view.default_policy().map(|d| default_wire(d))
            };
            self.send(control_message::Kind::Snapshot(Snapshot {
                revision,
                policies,
                more,
                store_id: self.store_id.clone(),
                default_policy,
            }))
            .await?;
            if !more {
                return Ok(());
            }
        }
    }

    /// The changes of `u` as a delta that continues from `from`, in chunks. A live update
    /// (`shared`: the stream has followed every update before it, so the agent is where the
    /// update starts or where only empty ones followed) is encoded once for every agent that
    /// gets the same delta; the streams share its bytes and add their own `from`.
    async fn send_delta(&self, u: &Update, from: i64, shared: bool) -> Result<(), Ended> {
        let changes = u.upserts.len() + u.deletes.len() + u.canary_buckets.len();
        let deltas = match shared && changes <= Encodings::MAX_CHANGES {
            true => {
                u.encoded
                    .get_or_make(canary::selection(u, &self.labels), || {
                        counters::DELTAS_ENCODED.fetch_add(1, Ordering::Relaxed);
                        delta_messages(
                            &canary::for_agent(u, &self.labels),
                            0,
                            self.limits.chunk_bytes,
                        )
                        .map(SharedDelta::new)
                        .collect()
                    })
                    .await
            }
            false => None,
        };
        if let Some(deltas) = deltas {
            for d in deltas.iter() {
                self.send_frame(ControlFrame::delta(from, d.clone()))
                    .await?;
            }
            counters::SHARED_DELTAS_SENT.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let u = canary::for_agent(u, &self.labels);
        for d in delta_messages(&u, from, self.limits.chunk_bytes) {
            self.send(control_message::Kind::Delta(d)).await?;
        }
        Ok(())
    }
}

/// The changes of `u` as deltas that continue from `from`, in chunks of about `chunk_bytes`
/// (built one at a time as they are taken).
fn delta_messages(u: &Update, from: i64, chunk_bytes: usize) -> impl Iterator<Item = Delta> + '_ {
    let mut chunks = Chunks::new(chunk_bytes, u.upserts.iter().map(wire));
    let mut deletes = u.deletes.iter();
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let (upserts, mut more) = chunks.next_chunk();
        let room =
            chunk_bytes.saturating_sub(upserts.iter().map(|p| p.encoded_len()).sum::<usize>());
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
        let (default_policy, default_cleared) = match (&u.default, more) {
            (Some(DefaultChange::Set(d)), false) => (Some(default_wire(d)), false),
            (Some(DefaultChange::Cleared), false) => (None, true),
            _ => (None, false),
        };
        done = !more;
        Some(Delta {
            from_revision: from,
            revision: u.revision,
            upserts,
            deletes: batch,
            more,
            default_policy,
            default_cleared,
        })
    })
}

/// The wire form of an index entry as Sync sends it, without the effective policy (a
/// function, not a closure: the futures that hold the iterators must be `Send` for every
/// lifetime).
fn wire(e: &Arc<PolicyEntry>) -> BucketPolicy {
    config_only(e)
}

fn wire_owned(e: Arc<PolicyEntry>) -> BucketPolicy {
    config_only(&e)
}

/// What the Sync streams did since the server started, for `/-/metrics`.
pub mod counters {
    use std::sync::atomic::AtomicU64;

    /// Live deltas encoded: once per distinct delta, whatever the number of streams.
    pub static DELTAS_ENCODED: AtomicU64 = AtomicU64::new(0);
    /// Live deltas sent to an agent as shared, pre-encoded bytes.
    pub static SHARED_DELTAS_SENT: AtomicU64 = AtomicU64::new(0);
}

/// Windows per usage report, and buckets per window, taken from an agent.
const MAX_REPORT_WINDOWS: usize = 100;
const MAX_REPORT_BUCKETS: usize = 1000;

/// Who reported usage, and the buckets whose refusals are kept per agent (those with a
/// canary: `rollout status --bucket` shows what each canary agent refused).
struct Reporter<'a> {
    node_id: &'a str,
    canaries: Option<imbl::OrdMap<String, Arc<crate::index::canary::CanaryEntry>>>,
}

/// Records an agent's usage report: bounded, and only for real bucket names (or the agent's
/// overflow row).
fn record_usage(usage: &FleetUsage, report: &tlsfleet_proto::v1::UsageReport, who: &Reporter<'_>) {
    let now = crate::clock::now_ms() / 1000;
    for window in report.windows.iter().take(MAX_REPORT_WINDOWS) {
        for b in window.buckets.iter().take(MAX_REPORT_BUCKETS) {
            let named =
                b.bucket == "(other)" || b.bucket.parse::<tlsfleet_policy::BucketName>().is_ok();
            if !named {
                continue;
            }
            let u = tlsfleet_proto::convert::usage_from_wire(b);
            usage.record(&b.bucket, window.start_unix, &u, now);
            if who
                .canaries
                .as_ref()
                .is_some_and(|c| c.contains_key(b.bucket.as_str()))
            {
                let refused = u.refused.values().fold(0u64, |a, n| a.saturating_add(*n));
                usage.record_agent_refusals(
                    &b.bucket,
                    who.node_id,
                    window.start_unix,
                    refused,
                    now,
                );
            }
        }
    }
}
