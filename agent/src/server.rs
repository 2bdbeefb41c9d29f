//! The data plane: the TLS listener ([`crate::handshake`]), the policy table it serves from, the certificate
//! watcher and the admin endpoint, bound together and run until shutdown.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use tlsfleet_net::ConnLimiter;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

use crate::{
    admin, handshake,
    http::{
        proxy::{Upstream, UpstreamError, UpstreamLimits},
        Context, Domains,
    },
    metrics::Metrics,
    readiness::Readiness,
    table::PolicyTable,
    tls::{cert, CertError, CertResolver, ConfigError, ConfigFactory},
};

/// How long live connections get to finish after shutdown before they are dropped.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(10);

/// How often the certificate files are checked for changes.
pub const CERT_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// What the data plane is told by the binary.
#[derive(Clone, Debug)]
pub struct DataPlaneConfig {
    /// The TLS listener, e.g. `127.0.0.1:8443`.
    pub listen: SocketAddr,
    /// `--domain` suffixes: `<bucket>.<domain>` is virtual-hosted, `<domain>` path-style.
    pub domains: Vec<String>,
    /// PEM certificate chain; must cover each domain and its wildcard.
    pub cert: PathBuf,
    /// PEM private key of the certificate.
    pub key: PathBuf,
    /// `http://HOST:PORT` to proxy allowed requests to; `None`: the built-in responder.
    pub upstream: Option<http::Uri>,
    /// Where `?httpsConfig` requests go (the control plane's REST API); `--upstream` without.
    pub control_rest: Option<http::Uri>,
    /// Plain-HTTP `/healthz`, `/readyz`, `/metrics`.
    pub admin_listen: Option<SocketAddr>,
    /// Bounds ClientHello + handshake, together.
    pub handshake_timeout: Duration,
    /// Caps on connections and how long one may sit without a request.
    pub connections: ConnectionLimits,
    /// Timeouts and caps towards `--upstream`.
    pub upstream_limits: UpstreamLimits,
}

/// Caps on the TLS listener's connections (defaults: 10,000 in total, 256 per source
/// address, closed after 60 s without a request in flight, or 60 s without the client taking
/// any of its responses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open connections at most; more are closed at accept, before any TLS.
    pub max_connections: usize,
    /// Open connections from one source address at most.
    pub max_per_source: usize,
    /// A connection with no request in flight for this long is closed: before its first
    /// request, between keep-alive requests, and while a request's headers trickle in.
    pub idle_timeout: Duration,
    /// A connection whose client has taken nothing of its responses for this long is closed.
    pub send_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_per_source: 256,
            idle_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
        }
    }
}

/// Why the data plane cannot start or run.
#[derive(Debug, thiserror::Error)]
pub enum DataPlaneError {
    #[error("certificate: {0}")]
    Certificate(#[from] CertError),
    #[error("TLS config: {0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("no --domain given")]
    NoDomain,
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The bound, not yet running, data plane.
pub struct DataPlane {
    listener: TcpListener,
    admin: Option<TcpListener>,
    local_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    ctx: Arc<Context>,
    readiness: Arc<Readiness>,
    limiter: Arc<ConnLimiter>,
    loaded: cert::FileStamps,
    cert: PathBuf,
    key: PathBuf,
    handshake_timeout: Duration,
    grace: Duration,
}

impl std::fmt::Debug for DataPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataPlane")
            .field("local_addr", &self.local_addr)
            .field("admin_addr", &self.admin_addr)
            .finish_non_exhaustive()
    }
}

impl DataPlane {
    /// Loads the certificate (error if unreadable, not matching the key, or not covering the
    /// domains), builds the empty, not-ready table and binds the listeners.
    pub async fn bind(cfg: DataPlaneConfig, metrics: Arc<Metrics>) -> Result<Self, DataPlaneError> {
        let domains = Domains::new(&cfg.domains);
        if domains.as_slice().is_empty() {
            return Err(DataPlaneError::NoDomain);
        }
        // The files' stamps as loaded: a change made any time after this is a reload, even one
        // made before the watcher first looks.
        let loaded = cert::FileStamps::of(&cfg.cert, &cfg.key).await;
        let cert_pem = tokio::fs::read(&cfg.cert)
            .await
            .map_err(|source| CertError::Read {
                path: cfg.cert.clone(),
                source,
            })?;
        let key_pem = tokio::fs::read(&cfg.key)
            .await
            .map_err(|source| CertError::Read {
                path: cfg.key.clone(),
                source,
            })?;
        let resolver = Arc::new(CertResolver::from_pem(
            &cert_pem,
            &key_pem,
            domains.as_slice(),
        )?);
        let table = Arc::new(PolicyTable::new(ConfigFactory::new(resolver)?));
        let upstream = cfg
            .upstream
            .as_ref()
            .map(|u| Upstream::new(u, cfg.upstream_limits))
            .transpose()?;
        // The control plane reads virtual-hosted names itself: never path style towards it.
        let api_limits = UpstreamLimits {
            path_style: false,
            ..cfg.upstream_limits
        };
        let api = cfg
            .control_rest
            .as_ref()
            .map(|u| Upstream::new(u, api_limits))
            .transpose()?;

        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| DataPlaneError::Bind { addr, source })
        };
        let listener = bind(cfg.listen).await?;
        let local = local_addr(&listener, cfg.listen)?;
        let admin = match cfg.admin_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let admin_addr = match (&admin, cfg.admin_listen) {
            (Some(l), Some(addr)) => Some(local_addr(l, addr)?),
            _ => None,
        };
        Ok(Self {
            listener,
            admin,
            local_addr: local,
            admin_addr,
            ctx: Arc::new(Context {
                table,
                domains,
                metrics,
                upstream,
                api,
                usage: Arc::new(crate::usage::UsageRecorder::default()),
                idle_timeout: cfg.connections.idle_timeout,
                send_timeout: cfg.connections.send_timeout,
            }),
            readiness: Arc::new(Readiness::default()),
            limiter: ConnLimiter::new(
                cfg.connections.max_connections,
                cfg.connections.max_per_source,
            ),
            loaded,
            cert: cfg.cert,
            key: cfg.key,
            handshake_timeout: cfg.handshake_timeout,
            grace: DEFAULT_GRACE_PERIOD,
        })
    }

    /// The policy table the sync client applies revisions to.
    pub fn table(&self) -> Arc<PolicyTable> {
        self.ctx.table.clone()
    }

    /// The metrics given to [`DataPlane::bind`].
    pub fn metrics(&self) -> Arc<Metrics> {
        self.ctx.metrics.clone()
    }

    /// The per-bucket usage counters (reported by the sync client).
    pub fn usage(&self) -> Arc<crate::usage::UsageRecorder> {
        self.ctx.usage.clone()
    }

    /// The sync state and `/readyz` reason (set by the sync client).
    pub fn readiness(&self) -> Arc<Readiness> {
        self.readiness.clone()
    }

    /// The TLS listener's address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The admin listener's address, if any.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// How long live connections may take to finish after shutdown (default
    /// [`DEFAULT_GRACE_PERIOD`]).
    pub fn set_grace_period(&mut self, grace: Duration) {
        self.grace = grace;
    }

    /// Serves until `shutdown` is cancelled, then stops accepting and lets in-flight
    /// connections finish (HTTP/1.1 closes idle keep-alives, HTTP/2 sends GOAWAY), dropping
    /// whatever is still open after the grace period.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), DataPlaneError> {
        let tracker = TaskTracker::new();
        let force = CancellationToken::new();
        let ctx = self.ctx;
        tracker.spawn(
            cert::watch(
                ctx.table.factory().resolver().clone(),
                self.cert,
                self.key,
                self.loaded,
                CERT_POLL_INTERVAL,
                {
                    let metrics = ctx.metrics.clone();
                    move |ok| metrics.cert_reload(ok)
                },
                shutdown.clone(),
            )
            .instrument(tracing::info_span!("cert_watch")),
        );
        if let Some(admin) = self.admin {
            tracker.spawn(
                admin::serve(
                    admin,
                    ctx.table.clone(),
                    ctx.metrics.clone(),
                    self.readiness.clone(),
                    tracker.clone(),
                    shutdown.clone(),
                )
                .instrument(tracing::info_span!("admin")),
            );
        }
        tracing::info!(listen = %self.local_addr, admin = ?self.admin_addr, "data plane serving");
        handshake::accept_loop(
            self.listener,
            ctx,
            self.limiter,
            self.handshake_timeout,
            tracker.clone(),
            shutdown,
            force.clone(),
        )
        .await;

        tracker.close();
        if tokio::time::timeout(self.grace, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = tracker.len(),
                grace = ?self.grace,
                "connections still open after the grace period: closing them"
            );
            force.cancel();
            tracker.wait().await;
        }
        tracing::info!("data plane stopped");
        Ok(())
    }
}

fn local_addr(listener: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, DataPlaneError> {
    listener
        .local_addr()
        .map_err(|source| DataPlaneError::Bind { addr, source })
}
