//! The sync client: follows the control plane's stream of policy revisions.
//!
//! A loop of sessions (see `session`): pick the next `--control` endpoint (round robin from a
//! random start, so a fleet spreads over the control servers), open `FleetService.Sync` with a
//! hello carrying our last applied revision, apply each snapshot or delta to the
//! [`PolicyTable`] and answer it with an ACK or a NACK. When the stream ends, wait a jittered
//! exponential backoff and resume from our revision at the next endpoint; the server decides
//! whether deltas or a snapshot bring us up to date. Every applied revision is also handed to
//! the last-known-good cache writer (`persist`).
//!
//! The contract with the server: a delta's `from_revision` must equal our revision (0 while we
//! have none); any other delta is a gap, and we reconnect from our revision rather than guess.
//! A revision is answered once its whole table is published, with a NACK listing every bucket
//! that kept its previous config (its policy did not convert or could not be built).
//! The backoff resets once a Sync call is accepted; a refused key (`Unauthenticated`,
//! `PermissionDenied`) jumps to the longest delay, since retrying soon cannot fix it.
//!
//! Losing the control plane changes nothing at the edge (invariant 4): the table keeps its
//! last revision; only the sync state metric says so.

mod chunks;
mod connect;
mod persist;
mod session;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use tlsfleet_proto::signer::{AccessKey, Signer};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn, Instrument};

pub use connect::{ControlTls, Credentials};
pub use tlsfleet_net::Backoff;

use crate::{
    cache::Cache,
    metrics::Metrics,
    readiness::{Readiness, SyncState},
    table::PolicyTable,
};
use connect::{ControlEndpoint, Timeouts};
use persist::Persister;
use session::End;

/// Everything the sync client needs to know.
#[derive(Clone, Debug)]
pub struct SyncConfig {
    /// Control server URLs (`http://HOST:PORT` or `https://HOST:PORT`); at least one.
    pub endpoints: Vec<String>,
    /// This agent's identity in the control plane's registry.
    pub node_id: String,
    /// Labels reported with the hello (for rollout views).
    pub labels: BTreeMap<String, String>,
    /// The access key the Sync call is signed with; `None` sends unsigned calls, which only
    /// a control plane running without authentication accepts.
    pub credentials: Option<Credentials>,
    /// Trust (and client identity) for `https` endpoints.
    pub tls: ControlTls,
    /// First reconnect delay ceiling.
    pub backoff_min: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
    /// Bound on connecting and on the server accepting the Sync call.
    pub connect_timeout: Duration,
    /// HTTP/2 PING interval on the control connection.
    pub keepalive_interval: Duration,
    /// How long a PING may go unanswered before the connection is considered dead.
    pub keepalive_timeout: Duration,
    /// How often usage windows are reported (with [`SyncClient::with_usage`]).
    pub usage_every: Duration,
}

impl SyncConfig {
    /// A config with the default timings: backoff 100 ms doubling to 5 s, connect timeout
    /// 5 s, PING every 10 s, dead after 10 s without an answer.
    pub fn new(endpoints: Vec<String>, node_id: impl Into<String>) -> Self {
        Self {
            endpoints,
            node_id: node_id.into(),
            labels: BTreeMap::new(),
            credentials: None,
            tls: ControlTls::default(),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(10),
            usage_every: crate::usage::WINDOW,
        }
    }
}

/// A sync configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("no control endpoint given")]
    NoEndpoint,
    #[error("control endpoint {url:?}: {reason}")]
    InvalidEndpoint { url: String, reason: String },
    #[error("cannot sign the Sync call: {0}")]
    Sign(String),
}

/// A validated sync client, ready to [`run`](SyncClient::run).
pub struct SyncClient {
    shared: Shared,
    endpoints: Vec<ControlEndpoint>,
    backoff: Backoff,
}

/// What every session reads.
struct Shared {
    table: Arc<PolicyTable>,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    node_id: String,
    labels: BTreeMap<String, String>,
    /// None: the calls are unsigned.
    signer: Option<Signer>,
    /// Where usage is counted, to report it (None: not reported).
    usage: Option<Arc<crate::usage::UsageRecorder>>,
    usage_every: Duration,
    timeouts: Timeouts,
}

impl SyncClient {
    /// Checks the endpoints, the TLS material and the credentials, so a bad flag fails at
    /// start and not at the first reconnect.
    pub fn new(
        cfg: SyncConfig,
        table: Arc<PolicyTable>,
        metrics: Arc<Metrics>,
        readiness: Arc<Readiness>,
    ) -> Result<Self, SyncError> {
        if cfg.endpoints.is_empty() {
            return Err(SyncError::NoEndpoint);
        }
        let timeouts = Timeouts {
            connect: cfg.connect_timeout,
            keepalive_interval: cfg.keepalive_interval,
            keepalive_timeout: cfg.keepalive_timeout,
        };
        let endpoints = cfg
            .endpoints
            .iter()
            .map(|url| connect::endpoint(url, &cfg.tls, timeouts))
            .collect::<Result<Vec<_>, _>>()?;
        // A key that cannot be signed with fails now, not at the first connection.
        let signer = cfg
            .credentials
            .as_ref()
            .map(|c| AccessKey::new(&c.access_key_id, &c.secret).map(Signer::new))
            .transpose()
            .map_err(|e| SyncError::Sign(e.to_string()))?;
        Ok(Self {
            shared: Shared {
                table,
                metrics,
                readiness,
                node_id: cfg.node_id,
                labels: cfg.labels,
                signer,
                usage: None,
                usage_every: cfg.usage_every,
                timeouts,
            },
            endpoints,
            backoff: Backoff::new(cfg.backoff_min, cfg.backoff_max),
        })
    }

    /// Reports the usage `recorder` counts, every [`SyncConfig::usage_every`].
    pub fn with_usage(mut self, recorder: Arc<crate::usage::UsageRecorder>) -> Self {
        self.shared.usage = Some(recorder);
        self
    }

    /// Follows the control plane until `shutdown`, then returns once the latest applied
    /// revision is in the cache (if any).
    pub async fn run(self, cache: Option<Cache>, shutdown: CancellationToken) {
        let span = tracing::info_span!("sync", node_id = %self.shared.node_id);
        self.run_inner(cache, shutdown).instrument(span).await
    }

    async fn run_inner(mut self, cache: Option<Cache>, shutdown: CancellationToken) {
        if self.shared.signer.is_none() {
            warn!("no access key configured: the Sync calls are unsigned");
        }
        let shared = &self.shared;
        let persister = cache
            .map(|cache| Persister::spawn(cache, shared.table.clone(), shared.metrics.clone()));
        let mut progress = Progress {
            table: shared.table.clone(),
            metrics: shared.metrics.clone(),
            readiness: shared.readiness.clone(),
            persister,
            state: Some(shared.readiness.sync_state()),
            synced_once: false,
        };
        let mut next = rand::random_range(0..self.endpoints.len());
        loop {
            let ep = &self.endpoints[next % self.endpoints.len()];
            next = next.wrapping_add(1);
            progress.connecting();
            debug!(control = %ep.url, "connecting");
            let outcome = session::run(shared, ep, &mut progress, &shutdown).await;
            if outcome.opened && !matches!(outcome.end, End::Resync(_)) {
                self.backoff.reset();
            }
            let control = ep.url.as_str();
            match &outcome.end {
                End::Shutdown => break,
                End::Closed => info!(control, "control server ended the stream"),
                End::Unreachable(e) => warn!(control, error = %e, "control server unreachable"),
                End::Failed(status) if is_refusal(status.code()) => {
                    error!(
                        control,
                        code = ?status.code(),
                        message = status.message(),
                        "control server refused this agent: wrong access key, or the key lacks \
                         the tlsfleet:Sync grant; retrying slowly"
                    );
                    self.backoff.saturate();
                }
                End::Failed(status) => warn!(
                    control,
                    code = ?status.code(),
                    message = status.message(),
                    "sync stream failed"
                ),
                End::Resync(e) => warn!(control, error = %e, "resynchronising"),
            }
            progress.lost(&describe(&outcome.end));
            let delay = self.backoff.next_delay();
            debug!(?delay, "reconnecting after a delay");
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        if let Some(persister) = progress.persister.take() {
            persister.finish().await;
        }
        debug!("sync stopped");
    }
}

fn describe(end: &End) -> String {
    match end {
        End::Shutdown => "shutting down".to_owned(),
        End::Closed => "stream ended".to_owned(),
        End::Unreachable(e) | End::Resync(e) => e.clone(),
        End::Failed(status) => format!("{:?}: {}", status.code(), status.message()),
    }
}

fn is_refusal(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
    )
}

/// The sync state as readiness and the logs show it, and the cache writer's trigger.
struct Progress {
    table: Arc<PolicyTable>,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    persister: Option<Persister>,
    /// As last set, to log transitions only.
    state: Option<SyncState>,
    synced_once: bool,
}

impl Progress {
    fn set(&mut self, state: SyncState) {
        if self.state != Some(state) {
            info!(
                state = state.as_str(),
                revision = self.table.snapshot().revision(),
                "sync state"
            );
            self.readiness.set_sync_state(state);
            self.state = Some(state);
        }
    }

    /// Before an attempt. Only an agent with nothing to serve is "connecting"; one serving
    /// from its cache or from an earlier stream keeps saying so.
    fn connecting(&mut self) {
        if !self.synced_once && !self.table.snapshot().is_ready() {
            self.set(SyncState::Connecting);
        }
    }

    /// The Sync call was accepted. An agent already at the server's revision gets no
    /// message, so it is in sync from here.
    fn opened(&mut self, control: &str) {
        let table = self.table.snapshot();
        info!(control, revision = table.revision(), "sync stream open");
        if table.is_ready() {
            self.synced_once = true;
            self.set(SyncState::Synced);
        }
    }

    /// A revision is applied (and about to be answered).
    fn applied(&mut self, revision: i64, nacked: bool) {
        self.synced_once = true;
        self.set(SyncState::Synced);
        self.metrics.set_applied_revision(revision);
        if nacked {
            self.metrics.inc_nacks();
        }
        if let Some(persister) = &self.persister {
            persister.applied(revision);
        }
    }

    /// The stream is gone (or never opened), for `reason`.
    fn lost(&mut self, reason: &str) {
        let ready = self.table.snapshot().is_ready();
        if !ready {
            self.readiness.set_not_ready_reason(format!(
                "no snapshot yet and no cache: refusing TLS (control plane: {reason})"
            ));
        }
        let state = if self.synced_once {
            SyncState::Disconnected
        } else if ready {
            SyncState::ServingFromCache
        } else {
            SyncState::Connecting
        };
        self.set(state);
    }
}
