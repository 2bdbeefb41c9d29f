//! The agent's Prometheus metrics.
//!
//! Every counter the hot path touches (handshakes, refusals, refused requests) is resolved
//! from its family once, at construction: a `Family::get_or_create` takes a read lock, and
//! handshakes take none.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tlsfleet_policy::{ServedSuite, ServedVersion};

use crate::{readiness::SyncState, table::TableSnapshot};

/// Why a handshake was refused before any TLS was spoken (the TCP connection is dropped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No snapshot and no cache applied yet: fail closed.
    NotReady,
    /// SNI is neither a `--domain`, nor `<bucket>.<domain>`.
    UnknownSni,
    /// `--max-connections` are open.
    ConnectionLimit,
    /// `--max-connections-per-source` are open from the peer's address.
    SourceLimit,
    /// The bucket's newest policy cannot be served here (see the NACK): fail closed.
    BucketRefused,
}

impl Refusal {
    const ALL: [Refusal; 5] = [
        Self::NotReady,
        Self::UnknownSni,
        Self::ConnectionLimit,
        Self::SourceLimit,
        Self::BucketRefused,
    ];

    /// The label value in `handshake_refusals_total{reason=..}`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotReady => "not_ready",
            Self::UnknownSni => "unknown_sni",
            Self::ConnectionLimit => "connection_limit",
            Self::SourceLimit => "source_limit",
            Self::BucketRefused => "bucket_refused",
        }
    }
}

/// How a handshake that was not refused ended without a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// A TLS error: no common version or suite, a bad ClientHello, the peer went away.
    Error,
    /// The one timeout bounding ClientHello + handshake expired.
    Timeout,
}

/// A request answered by the agent itself instead of being served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestRefusal {
    /// 400: no usable host or bucket in the request.
    BadRequest,
    /// 403: the bucket's current policy refuses the connection's version or suite.
    Forbidden,
    /// 421: the request's host is not the connection's SNI.
    Misdirected,
}

impl RequestRefusal {
    const ALL: [RequestRefusal; 3] = [Self::BadRequest, Self::Forbidden, Self::Misdirected];

    /// The HTTP status, also the label value in `requests_refused_total{status=..}`.
    pub fn status(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::Forbidden => 403,
            Self::Misdirected => 421,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandshakeLabels {
    version: &'static str,
    suite: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// The agent's metrics registry. Share it as `Arc<Metrics>`.
pub struct Metrics {
    registry: Registry,
    /// `[version][suite]`, indexed by `ServedVersion as usize` and `ServedSuite as usize`.
    handshakes_ok: [[Counter; 9]; 2],
    handshakes_error: Counter,
    handshakes_timeout: Counter,
    refusals: [Counter; 5],
    open_connections: Gauge,
    idle_closed: Counter,
    stall_closed: Counter,
    requests_refused: [Counter; 3],
    requests_served: Counter,
    upstream_errors: Counter,
    cert_reloads: Family<OutcomeLabels, Counter>,
    applied_revision: Gauge,
    cache_revision: Gauge,
    certificate_not_after: Gauge,
    policies_loaded: Gauge,
    distinct_configs: Gauge,
    sync_state_gauges: [Gauge; 4],
    nacks: Counter,
    snapshots: Counter,
    deltas: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every family registered, prefixed `tlsfleet_agent_`
    /// (`tlsfleet_agent_handshakes_total`, ...).
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tlsfleet_agent");

        let handshakes: Family<HandshakeLabels, Counter> = register(
            &mut registry,
            "handshakes",
            "TLS handshakes by negotiated version, suite and outcome",
        );
        let ok = |v: ServedVersion, s: ServedSuite| {
            handshakes
                .get_or_create(&HandshakeLabels {
                    version: v.as_str(),
                    suite: s.iana_name(),
                    outcome: "ok",
                })
                .clone()
        };
        let handshakes_ok = [ServedVersion::Tls12, ServedVersion::Tls13]
            .map(|v| std::array::from_fn(|i| ok(v, suite_at(i))));
        let failed = |outcome| {
            handshakes
                .get_or_create(&HandshakeLabels {
                    version: "none",
                    suite: "none",
                    outcome,
                })
                .clone()
        };
        let handshakes_error = failed("error");
        let handshakes_timeout = failed("timeout");

        let refusal_family: Family<ReasonLabels, Counter> = register(
            &mut registry,
            "handshake_refusals",
            "Connections dropped before the handshake, by reason",
        );
        let refusals = Refusal::ALL.map(|r| {
            refusal_family
                .get_or_create(&ReasonLabels { reason: r.as_str() })
                .clone()
        });

        let refused_family: Family<StatusLabels, Counter> = register(
            &mut registry,
            "requests_refused",
            "Requests answered by the agent with an error, by status",
        );
        let requests_refused = RequestRefusal::ALL.map(|r| {
            refused_family
                .get_or_create(&StatusLabels {
                    status: r.status().to_string(),
                })
                .clone()
        });

        let open_connections: Gauge = register(
            &mut registry,
            "open_connections",
            "TCP connections open on the TLS listener (handshaking or serving)",
        );
        let idle_closed: Counter = register(
            &mut registry,
            "connections_idle_closed",
            "Connections closed for having no request in flight for --idle-timeout",
        );

        let stall_closed: Counter = register(
            &mut registry,
            "connections_stall_closed",
            "Connections closed because the client took no response data for --send-timeout",
        );

        let requests_served: Counter = register(
            &mut registry,
            "requests_served",
            "Requests allowed by policy (proxied or answered by the responder)",
        );
        let upstream_errors: Counter = register(
            &mut registry,
            "upstream_errors",
            "Allowed requests the upstream did not answer (502), in time (504), or that found \
             --upstream-max-in-flight requests ahead of them (503)",
        );
        let cert_reloads: Family<OutcomeLabels, Counter> = register(
            &mut registry,
            "certificate_reloads",
            "Certificate reload attempts after the files changed, by outcome",
        );

        let applied_revision: Gauge = register(
            &mut registry,
            "applied_revision",
            "Store revision of the policy table being enforced (-1: none)",
        );
        applied_revision.set(-1);
        let cache_revision: Gauge = register(
            &mut registry,
            "cache_revision",
            "Store revision last written to the last-known-good cache (-1: none this run)",
        );
        cache_revision.set(-1);
        let certificate_not_after: Gauge = register(
            &mut registry,
            "certificate_not_after_timestamp_seconds",
            "When the served certificate expires (its notAfter, Unix seconds)",
        );
        let policies_loaded: Gauge =
            register(&mut registry, "policies_loaded", "Buckets with a policy");
        let distinct_configs: Gauge = register(
            &mut registry,
            "distinct_configs",
            "Distinct rustls ServerConfigs serving bucket policies",
        );

        let state_family: Family<StateLabels, Gauge> = register(
            &mut registry,
            "sync_state",
            "1 for the agent's current state with the control plane",
        );
        let sync_state_gauges = SyncState::ALL.map(|s| {
            state_family
                .get_or_create(&StateLabels { state: s.as_str() })
                .clone()
        });
        sync_state_gauges[SyncState::Connecting as usize].set(1);

        let nacks: Counter = register(&mut registry, "nacks", "Revisions answered with a NACK");
        let snapshots: Counter = register(
            &mut registry,
            "sync_snapshots",
            "Full snapshots received from the control plane",
        );
        let deltas: Counter = register(
            &mut registry,
            "sync_deltas",
            "Deltas received from the control plane",
        );

        Self {
            registry,
            handshakes_ok,
            handshakes_error,
            handshakes_timeout,
            refusals,
            open_connections,
            idle_closed,
            stall_closed,
            requests_refused,
            requests_served,
            upstream_errors,
            cert_reloads,
            applied_revision,
            cache_revision,
            certificate_not_after,
            policies_loaded,
            distinct_configs,
            sync_state_gauges,
            nacks,
            snapshots,
            deltas,
        }
    }

    /// Records when the served certificate expires (refreshed at each scrape).
    pub fn set_certificate_not_after(&self, unix_seconds: i64) {
        self.certificate_not_after.set(unix_seconds);
    }

    /// Records the revision the cache now holds.
    pub fn set_cache_revision(&self, revision: i64) {
        self.cache_revision.set(revision);
    }

    /// Records the revision the agent applied (also refreshed from the table at each scrape).
    pub fn set_applied_revision(&self, revision: i64) {
        self.applied_revision.set(revision);
    }

    /// Counts one snapshot received.
    pub fn inc_snapshots(&self) {
        self.snapshots.inc();
    }

    /// Counts one delta received.
    pub fn inc_deltas(&self) {
        self.deltas.inc();
    }

    /// Deltas received so far.
    pub fn deltas(&self) -> u64 {
        self.deltas.get()
    }

    /// Counts one NACK sent to the control plane.
    pub fn inc_nacks(&self) {
        self.nacks.inc();
    }

    pub(crate) fn handshake_ok(&self, version: ServedVersion, suite: ServedSuite) {
        self.handshakes_ok[version as usize][suite as usize].inc();
    }

    pub(crate) fn handshake_failed(&self, failure: HandshakeFailure) {
        match failure {
            HandshakeFailure::Error => self.handshakes_error.inc(),
            HandshakeFailure::Timeout => self.handshakes_timeout.inc(),
        };
    }

    pub(crate) fn refused(&self, reason: Refusal) {
        self.refusals[reason as usize].inc();
    }

    pub(crate) fn connection_opened(&self) {
        self.open_connections.inc();
    }

    pub(crate) fn connection_closed(&self) {
        self.open_connections.dec();
    }

    pub(crate) fn idle_closed(&self) {
        self.idle_closed.inc();
    }

    pub(crate) fn stall_closed(&self) {
        self.stall_closed.inc();
    }

    pub(crate) fn request_refused(&self, refusal: RequestRefusal) {
        self.requests_refused[refusal as usize].inc();
    }

    pub(crate) fn request_served(&self) {
        self.requests_served.inc();
    }

    pub(crate) fn upstream_error(&self) {
        self.upstream_errors.inc();
    }

    pub(crate) fn cert_reload(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        self.cert_reloads
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// The Prometheus text exposition, with the table gauges refreshed from `table` and the
    /// sync state from `sync` (as one scrape sees them).
    pub fn encode(&self, table: Option<&TableSnapshot>, sync: Option<SyncState>) -> String {
        if let Some(table) = table {
            if let Some(rev) = table.revision() {
                self.applied_revision.set(rev);
            }
            self.policies_loaded.set(saturating_i64(table.len()));
            self.distinct_configs
                .set(saturating_i64(table.distinct_configs()));
        }
        if let Some(state) = sync {
            for (s, gauge) in SyncState::ALL.iter().zip(&self.sync_state_gauges) {
                gauge.set(i64::from(*s == state));
            }
        }
        let mut out = String::new();
        // Writing into a String cannot fail; an encoder error would leave a partial body,
        // which a scraper rejects anyway.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        out
    }
}

/// Registers a new metric under `name` with `help` and returns it: one line per metric.
fn register<M>(registry: &mut Registry, name: &str, help: &str) -> M
where
    M: prometheus_client::registry::Metric + Clone + Default,
{
    let metric = M::default();
    registry.register(name, help, metric.clone());
    metric
}

fn suite_at(i: usize) -> ServedSuite {
    // `ServedSuite` discriminants are 0..9, the order of `ServedSuite::ALL` sorted by value.
    ServedSuite::ALL
        .into_iter()
        .find(|s| *s as usize == i)
        .unwrap_or(ServedSuite::Tls13Aes128GcmSha256)
}

fn saturating_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
