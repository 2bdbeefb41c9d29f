//! One Sync stream: connect, say hello, then apply each control message and answer it with
//! an ACK or a NACK, until the stream ends or the agent shuts down.

use tlsfleet_policy::{BucketName, HttpsConfig};
use tlsfleet_proto::{
    convert,
    signer::signed_stream,
    v1::{
        self as pb, agent_message, control_message, fleet_service_client::FleetServiceClient, Ack,
        AgentHello, AgentMessage, BucketPolicy, Delta, Nack,
    },
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::service::Interceptor;
use tracing::{debug, info, warn};

use super::{
    chunks::{self, convert_all, Assembler},
    connect::ControlEndpoint,
    Progress, Shared,
};
use crate::table::{ApplyOutcome, BucketError, DefaultChange, DEFAULT_BUCKET};

/// Buckets per usage message (each well under the control plane's message cap).
const USAGE_BUCKETS_PER_MESSAGE: usize = 500;

/// Sends every window not reported yet; what the stream does not take is kept for the next
/// report.
async fn report_usage(
    usage: &crate::usage::UsageRecorder,
    tx: &mpsc::Sender<AgentMessage>,
    every: std::time::Duration,
) {
    let windows = usage.take();
    let seconds = u32::try_from(every.as_secs()).unwrap_or(u32::MAX);
    let mut pending = windows.into_iter();
    while let Some(window) = pending.next() {
        for part in window.buckets.chunks(USAGE_BUCKETS_PER_MESSAGE) {
            let message = AgentMessage {
                kind: Some(agent_message::Kind::Usage(pb::UsageReport {
                    windows: vec![pb::UsageWindow {
                        start_unix: window.start_unix,
                        seconds,
                        buckets: part
                            .iter()
                            .map(|(b, u)| convert::usage_to_wire(b, u))
                            .collect(),
                    }],
                })),
            };
            if tx.send(message).await.is_err() {
                // The stream is gone: keep this window (whole) and the rest for the next one.
                let mut left = vec![window.clone()];
                left.extend(pending);
                usage.unsent(left);
                return;
            }
        }
    }
}

/// The default policy a control message sets; one that does not convert keeps the previous
/// one and is reported (as bucket `(default)`).
fn default_change(p: BucketPolicy, bad: &mut Vec<BucketError>) -> DefaultChange {
    let converted = p
        .config
        .ok_or_else(|| "the default policy has no config".to_owned())
        .and_then(|c| HttpsConfig::try_from(c).map_err(|e| e.to_string()));
    match converted {
        Ok(config) => DefaultChange::Set(config),
        Err(reason) => {
            bad.push(BucketError {
                bucket: DEFAULT_BUCKET.to_owned(),
                reason,
            });
            DefaultChange::Keep
        }
    }
}

/// The largest control message accepted. The server cuts snapshots and deltas into chunks of
/// about 64 KiB, so this only bounds a control server gone wrong.
const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// Why a session ended.
#[derive(Debug)]
pub(super) enum End {
    /// The agent is shutting down.
    Shutdown,
    /// No stream could be opened: connection refused, TLS failure, timeout.
    Unreachable(String),
    /// The server ended the stream cleanly (it is draining or shutting down).
    Closed,
    /// The call failed with a gRPC status (before or after it opened).
    Failed(tonic::Status),
    /// This stream cannot go on (a delta that does not start at our revision, an apply that
    /// panicked); a new stream from our revision lets the server resynchronise us.
    Resync(String),
}

/// How a session went.
#[derive(Debug)]
pub(super) struct Outcome {
    pub end: End,
    /// Whether the Sync call was accepted (response headers received).
    pub opened: bool,
}

/// Runs one session against `ep`, reporting each step to `progress`.
pub(super) async fn run(
    shared: &Shared,
    ep: &ControlEndpoint,
    progress: &mut Progress,
    shutdown: &CancellationToken,
) -> Outcome {
    let mut session = Session {
        shared,
        progress,
        opened: false,
        chunks: Assembler::default(),
    };
    let end = tokio::select! {
        biased;
        _ = shutdown.cancelled() => End::Shutdown,
        end = session.stream(ep) => end,
    };
    Outcome {
        end,
        opened: session.opened,
    }
}

struct Session<'a> {
    shared: &'a Shared,
    progress: &'a mut Progress,
    opened: bool,
    chunks: Assembler,
}

impl Session<'_> {
    // Cancel-safe: dropped at any await when the agent shuts down, which drops the channel
    // and resets the stream.
    async fn stream(&mut self, ep: &ControlEndpoint) -> End {
        let shared = self.shared;
        let timeout = shared.timeouts.connect;
        let channel = match tokio::time::timeout(timeout, ep.endpoint.connect()).await {
            Ok(Ok(channel)) => channel,
            Ok(Err(e)) => return End::Unreachable(error_chain(&e)),
            Err(_) => return End::Unreachable(format!("no connection within {timeout:?}")),
        };
        let (tx, rx) = mpsc::channel(8);
        let key_type = shared.table.factory().resolver().key_kind();
        let hello = AgentMessage {
            kind: Some(agent_message::Kind::Hello(AgentHello {
                node_id: shared.node_id.clone(),
                labels: shared
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                last_revision: shared.table.snapshot().revision().unwrap_or(0),
                agent_version: env!("CARGO_PKG_VERSION").to_owned(),
                store_id: shared.table.store_id().unwrap_or_default(),
                key_types: vec![key_type.as_str().to_owned()],
            })),
        };
        let request = signed_stream(&hello, ReceiverStream::new(rx));
        if tx.send(hello).await.is_err() {
            // The receiver is held just above; a closed channel here is impossible.
            return End::Unreachable("request stream closed before the hello".to_owned());
        }
        let mut signer = shared.signer.clone();
        let sign = move |req: tonic::Request<()>| match &mut signer {
            Some(signer) => signer.call(req),
            None => Ok(req),
        };
        let mut client = FleetServiceClient::with_interceptor(channel, sign)
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let mut inbound = match tokio::time::timeout(timeout, client.sync(request)).await {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => return End::Failed(status),
            Err(_) => return End::Unreachable(format!("Sync not answered within {timeout:?}")),
        };
        self.opened = true;
        self.progress.opened(&ep.url);
        let every = shared.usage_every;
        let mut report = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            let next = tokio::select! {
                m = inbound.message() => m,
                _ = report.tick() => {
                    if let Some(usage) = &shared.usage {
                        report_usage(usage, &tx, every).await;
                    }
                    continue;
                }
            };
            let message = match next {
                Ok(Some(message)) => message,
                Ok(None) => return End::Closed,
                Err(status) => return End::Failed(status),
            };
            let applied = match message.kind {
                Some(control_message::Kind::Snapshot(chunk)) => match self.chunks.snapshot(chunk) {
                    Some(snapshot) => self.snapshot(snapshot).await,
                    None => continue,
                },
                Some(control_message::Kind::Delta(chunk)) => match self.chunks.delta(chunk) {
                    Ok(Some(delta)) => self.delta(delta).await,
                    Ok(None) => continue,
                    Err(e) => return End::Resync(e),
                },
                None => {
                    // A message kind from a newer control server: nothing to apply or answer.
                    warn!("ignoring a control message of an unknown kind");
                    continue;
                }
            };
            let outcome = match applied {
                Ok(outcome) => outcome,
                Err(end) => return end,
            };
            self.progress
                .applied(outcome.revision, !outcome.errors.is_empty());
            if tx.send(answer(outcome)).await.is_err() {
                // tonic dropped the request stream: the call is over; its status follows.
                return match inbound.message().await {
                    Err(status) => End::Failed(status),
                    Ok(_) => End::Closed,
                };
            }
        }
    }

    async fn snapshot(&self, snapshot: chunks::Received) -> Result<ApplyOutcome, End> {
        self.shared.metrics.inc_snapshots();
        let revision = snapshot.revision;
        let count = snapshot.policies.len() + snapshot.bad.len();
        let table = self.shared.table.clone();
        let (policies, mut bad) = (snapshot.policies, snapshot.bad);
        let default = match snapshot.default_policy {
            None => DefaultChange::Clear,
            Some(p) => default_change(p, &mut bad),
        };
        let store_id = snapshot.store_id;
        let outcome = tokio::task::spawn_blocking(move || {
            let outcome = table.apply_snapshot_refusing(revision, policies, &bad, default);
            table.set_store_id(store_id);
            merge(outcome, bad)
        })
        .await
        .map_err(panicked)?;
        info!(
            revision,
            policies = count,
            errors = outcome.errors.len(),
            "applied snapshot"
        );
        Ok(outcome)
    }

    async fn delta(&self, delta: Delta) -> Result<ApplyOutcome, End> {
        self.shared.metrics.inc_deltas();
        let ours = self.shared.table.snapshot().revision().unwrap_or(0);
        if delta.from_revision != ours || delta.revision < delta.from_revision {
            warn!(
                ours,
                from = delta.from_revision,
                to = delta.revision,
                "delta does not follow our revision; reconnecting to resynchronise"
            );
            return Err(End::Resync(format!(
                "delta {}..{} while at revision {ours}",
                delta.from_revision, delta.revision
            )));
        }
        let revision = delta.revision;
        let (upserts, mut bad) = convert_all(delta.upserts);
        let mut deletes = Vec::with_capacity(delta.deletes.len());
        for name in delta.deletes {
            match name.parse::<BucketName>() {
                Ok(bucket) => deletes.push(bucket),
                Err(e) => bad.push(BucketError {
                    bucket: name,
                    reason: e.to_string(),
                }),
            }
        }
        let default = match (delta.default_policy, delta.default_cleared) {
            (Some(p), _) => default_change(p, &mut bad),
            (None, true) => DefaultChange::Clear,
            (None, false) => DefaultChange::Keep,
        };
        let (n_up, n_del) = (upserts.len(), deletes.len());
        let table = self.shared.table.clone();
        let apply = move || {
            merge(
                table.apply_delta_refusing(revision, upserts, deletes, &bad, default),
                bad,
            )
        };
        // A small delta applies here: handing it to a blocking thread costs more than it.
        let outcome = if n_up + n_del <= INLINE_CHANGES {
            apply()
        } else {
            tokio::task::spawn_blocking(apply).await.map_err(panicked)?
        };
        debug!(
            revision,
            upserts = n_up,
            deletes = n_del,
            errors = outcome.errors.len(),
            "applied delta"
        );
        Ok(outcome)
    }
}

/// Deltas with at most this many changes are applied on the stream's task; larger ones (and
/// snapshots) on a blocking thread, so that building their TLS configs holds up no other task.
const INLINE_CHANGES: usize = 16;

/// The table is left as it was published before the panicking apply (it publishes only
/// finished tables); starting over from our revision is the one sensible retry.
fn panicked(e: tokio::task::JoinError) -> End {
    End::Resync(format!("applying a revision panicked: {e}"))
}

/// Converts wire policies; the ones that do not convert become NACK entries (their buckets
/// keep their previous config, as for a policy the table cannot build).
fn merge(mut outcome: ApplyOutcome, bad: Vec<BucketError>) -> ApplyOutcome {
    outcome.errors.extend(bad);
    outcome
}

fn answer(outcome: ApplyOutcome) -> AgentMessage {
    let kind = if outcome.errors.is_empty() {
        agent_message::Kind::Ack(Ack {
            revision: outcome.revision,
        })
    } else {
        for e in &outcome.errors {
            warn!(revision = outcome.revision, bucket = %e.bucket, reason = %e.reason, "NACK");
        }
        agent_message::Kind::Nack(Nack {
            revision: outcome.revision,
            errors: outcome
                .errors
                .into_iter()
                .map(|e| pb::BucketError {
                    bucket: e.bucket,
                    reason: e.reason,
                })
                .collect(),
        })
    };
    AgentMessage { kind: Some(kind) }
}

/// An error and its causes on one line: tonic's transport errors hide the useful part
/// ("connection refused") in their sources. Hyper repeats some levels; those are skipped.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut last = out.clone();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if text != last {
            out.push_str(": ");
            out.push_str(&text);
        }
        last = text;
        source = cause.source();
    }
    out
}
