//! Wiring: store, index, registry, REST and gRPC listeners, shutdown.

use std::{net::SocketAddr, sync::Arc};

use tlsfleet_proto::v1::{
    fleet_service_server::FleetServiceServer,
    https_config_service_server::HttpsConfigServiceServer, FILE_DESCRIPTOR_SET,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How long shutdown waits for clients to close their connections.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);
/// gRPC: PING idle connections this often, drop them when a PING is not answered in time.
const GRPC_PING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
const GRPC_PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// gRPC calls (streams) open at once on one connection (an agent needs one, a client doing
/// parallel calls some tens; clients queue beyond it once they have the server's settings).
const GRPC_MAX_STREAMS: u32 = 100;
/// A gRPC connection must finish its TLS handshake, or send its first bytes, within this.
pub const GRPC_FIRST_BYTES: std::time::Duration = std::time::Duration::from_secs(10);
/// The largest admin request (a policy is a few hundred bytes; lists are bounded).
pub const MAX_ADMIN_MESSAGE: usize = 256 * 1024;
/// The largest agent message (a hello, an ACK, a NACK of at most 100 errors).
pub const MAX_AGENT_MESSAGE: usize = 256 * 1024;

use tlsfleet_net::ConnLimiter;
use tokio_util::task::TaskTracker;

use crate::{
    audit::Audit,
    auth::{Authenticator, Credentials},
    config::{ControlArgs, StoreUrl},
    grpc::{calls, limited_incoming, AdminService, FleetServer, SyncLimits, SyncServer},
    index::Index,
    registry::Registry,
    rest::{self, RestLimits, RestState},
    service::Policies,
    store::{embedded::EmbeddedStore, etcd::EtcdStore, Store},
};

/// Errors that stop the server from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("credentials: {0}")]
    Credentials(String),
    #[error("store: {0}")]
    Store(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("gRPC TLS: {0}")]
    Tls(String),
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("REST server: {0}")]
    Rest(std::io::Error),
    #[error(
        "refusing plaintext gRPC on {0}: anyone on the path could read and change the policy \
         stream; give --grpc-tls-cert/--grpc-tls-key, listen on loopback, or pass --insecure"
    )]
    Plaintext(SocketAddr),
}

/// A bound, not yet running, control server.
pub struct ControlServer {
    args: ControlArgs,
    store: Arc<dyn Store>,
    auth: Arc<Authenticator>,
    http: TcpListener,
    grpc: TcpListener,
}

impl ControlServer {
    /// Loads credentials, opens the store and binds both listeners.
    pub async fn bind(args: ControlArgs) -> Result<Self, ServerError> {
        let creds = Credentials::load(&args.credentials)
            .map_err(|e| ServerError::Credentials(e.to_string()))?;
        let tls = args.grpc_tls_cert.is_some();
        if !tls && !args.grpc_listen.ip().is_loopback() {
            if !args.insecure {
                return Err(ServerError::Plaintext(args.grpc_listen));
            }
            warn!(listen = %args.grpc_listen, "plaintext gRPC off loopback (--insecure)");
        }
        if args.http_tls_cert.is_none() && !args.http_listen.ip().is_loopback() {
            warn!(
                listen = %args.http_listen,
                "the REST API is plain HTTP off loopback: signatures keep it authentic, but \
                 not private; consider --http-tls-cert"
            );
        }
        let store: Arc<dyn Store> = match &args.store {
            StoreUrl::Etcd(endpoints) => Arc::new(
                EtcdStore::connect(endpoints, &args.etcd_prefix)
                    .await
                    .map_err(|e| ServerError::Store(e.to_string()))?,
            ),
            StoreUrl::File(dir) => Arc::new(
                EmbeddedStore::open(dir)
                    .map_err(|e| ServerError::Store(e.to_string()))?
                    .with_history(args.embedded_history),
            ),
        };
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::Bind { addr, source })
        };
        Ok(Self {
            http: bind(args.http_listen).await?,
            grpc: bind(args.grpc_listen).await?,
            auth: Arc::new(Authenticator::with_replay_capacity(
                creds,
                args.replay_cache_per_key,
            )),
            store,
            args,
        })
    }

    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.local_addr().ok()
    }

    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc.local_addr().ok()
    }

    /// Serves until `shutdown` is cancelled; every task it started has ended when it returns.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServerError> {
        let Self {
            args,
            store,
            auth,
            http,
            grpc,
        } = self;
        let grpc_addr = grpc.local_addr().map_err(ServerError::Rest)?;
        let http_addr = http.local_addr().map_err(ServerError::Rest)?;
        let control_id = args
            .control_id
            .clone()
            .unwrap_or_else(|| grpc_addr.to_string());

        let (index, index_task) = Index::spawn(store.clone(), shutdown.child_token());
        let scheme = if args.grpc_tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        let control_url = args
            .advertise_url
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{grpc_addr}"));
        let registry = Registry::with_url(store.clone(), control_id.clone(), control_url);
        let peers = peers(&args)?;
        let usage = crate::usage::FleetUsage::default();
        let (audit, audit_task) =
            Audit::spawn(store.clone(), args.audit_retention, shutdown.child_token());
        let policies = Policies::new(store.clone(), index.clone())
            .with_fleet(registry.clone())
            .with_audit(audit)
            .with_usage(usage.clone());
        let flusher = registry.spawn_flusher(shutdown.child_token());
        let convergence =
            spawn_convergence(index.clone(), registry.clone(), shutdown.child_token());
        let compaction = args
            .compaction_interval
            .0
            .map(|every| crate::compaction::spawn(store.clone(), every, shutdown.child_token()));

        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_not_serving::<HttpsConfigServiceServer<AdminService>>()
            .await;
        health
            .set_not_serving::<FleetServiceServer<FleetServer>>()
            .await;
        // Reflection as grpc.reflection.v1 and, for older grpcurl, evans and GUI clients,
        // grpc.reflection.v1alpha.
        let reflection_builder = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection = reflection_builder()
            .build_v1()
            .map_err(|e| ServerError::Tls(format!("reflection: {e}")))?;
        let reflection_v1alpha = reflection_builder()
            .build_v1alpha()
            .map_err(|e| ServerError::Tls(format!("reflection: {e}")))?;

        // Report SERVING once the index has loaded.
        // Health per service: FleetService serves once the index has loaded (streams are fed
        // from memory); HttpsConfigService while, besides, a store member answers (its writes
        // and reads need the store). Checked every second, as /-/readyz would answer.
        let ready = tokio::spawn({
            let index = index.clone();
            let policies = policies.clone();
            let shutdown = shutdown.clone();
            async move {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    r = index.ready_view(std::time::Duration::MAX) => if r.is_err() { return },
                }
                health
                    .set_serving::<FleetServiceServer<FleetServer>>()
                    .await;
                let mut serving = None;
                let mut tick = tokio::time::interval(HEALTH_EVERY);
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    let ok = crate::status::is_ready(&policies);
                    if serving == Some(ok) {
                        continue;
                    }
                    serving = Some(ok);
                    if ok {
                        health
                            .set_serving::<HttpsConfigServiceServer<AdminService>>()
                            .await;
                    } else {
                        warn!("store unreachable: HttpsConfigService reports NOT_SERVING");
                        health
                            .set_not_serving::<HttpsConfigServiceServer<AdminService>>()
                            .await;
                    }
                }
            }
        });

        let mut builder = tonic::transport::Server::builder()
            // A peer that vanished without a FIN is noticed, and its streams end.
            .http2_keepalive_interval(Some(GRPC_PING_INTERVAL))
            .http2_keepalive_timeout(Some(GRPC_PING_TIMEOUT))
            .tcp_keepalive(Some(GRPC_PING_INTERVAL))
            .max_concurrent_streams(Some(GRPC_MAX_STREAMS));
        if let (Some(cert), Some(key)) = (&args.grpc_tls_cert, &args.grpc_tls_key) {
            builder =
                builder.tls_config(tls_config(cert, key, args.grpc_tls_client_ca.as_deref())?)?;
        }
        let sync_tasks = TaskTracker::new();
        let sync_limits = SyncLimits {
            max_streams: args.max_sync_streams,
            max_streams_per_key: args.max_sync_streams_per_key,
            send_timeout: args.sync_send_timeout,
            ..SyncLimits::default()
        };
        let incoming = limited_incoming(
            grpc,
            ConnLimiter::new(
                args.grpc_max_connections,
                args.grpc_max_connections_per_source,
            ),
            GRPC_FIRST_BYTES,
        );
        let grpc_server = builder
            // One log line per call, with the request id it answers with.
            .layer(crate::grpc::requests::layer(args.request_log))
            // Tags each call with its entry of the method table (what it needs, what it signs).
            .layer(calls::layer())
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_v1alpha)
            .add_service(
                HttpsConfigServiceServer::new(
                    AdminService::new(policies.clone(), auth.clone(), control_id.clone())
                        .with_peers(registry.clone(), peers.clone()),
                )
                .max_decoding_message_size(MAX_ADMIN_MESSAGE),
            )
            .add_service(
                FleetServiceServer::new(
                    FleetServer::new(
                        SyncServer::new(
                            index.clone(),
                            auth.clone(),
                            registry.clone(),
                            sync_limits,
                            sync_tasks.clone(),
                            shutdown.child_token(),
                        )
                        .with_usage(usage.clone()),
                        index.clone(),
                        auth.clone(),
                        registry,
                        usage.clone(),
                        control_id.clone(),
                    )
                    .with_peers(peers),
                )
                .max_decoding_message_size(MAX_AGENT_MESSAGE),
            )
            .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned());
        let rest_tls = match (&args.http_tls_cert, &args.http_tls_key) {
            (Some(cert), Some(key)) => {
                let read = |p: &std::path::Path| {
                    std::fs::read(p).map_err(|e| ServerError::Tls(format!("{}: {e}", p.display())))
                };
                Some(
                    rest::tls_acceptor(&read(cert)?, &read(key)?)
                        .map_err(|e| ServerError::Tls(format!("REST: {e}")))?,
                )
            }
            _ => None,
        };
        let rest_state = RestState {
            policies,
            auth,
            domains: args.domains.clone(),
            limits: RestLimits {
                max_connections: args.http_max_connections,
                max_per_source: args.http_max_connections_per_source,
                header_timeout: args.http_header_timeout,
                idle_timeout: args.http_idle_timeout,
            },
            tls: rest_tls,
            require_signed_body: args.require_signed_body,
            downgrades: args.rest_downgrades,
            request_log: args.request_log,
        };
        let rest_server = rest::serve(http, rest_state, shutdown.clone());

        info!(http = %http_addr, grpc = %grpc_addr, store = %args.store, "tlsfleet-control serving");
        let servers = async { tokio::join!(grpc_server, rest_server) };
        tokio::pin!(servers);
        // Graceful shutdown waits for clients to close their connections; a client that never
        // does must not hold the process, so the drain is bounded.
        let (grpc_result, rest_result) = tokio::select! {
            results = &mut servers => results,
            () = async {
                shutdown.cancelled().await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } => {
                warn!(grace = ?SHUTDOWN_GRACE, "connections still open after the shutdown grace period; closing them");
                (Ok(()), Ok(()))
            }
        };
        // Both servers return only on shutdown (or a fatal error): stop everything else too.
        shutdown.cancel();
        sync_tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, sync_tasks.wait())
            .await
            .is_err()
        {
            warn!(
                open = sync_tasks.len(),
                "sync streams still ending after the grace period"
            );
        }
        let _ = tokio::join!(index_task, flusher, ready, audit_task, convergence);
        if let Some(task) = compaction {
            let _ = task.await;
        }
        grpc_result?;
        rest_result.map_err(ServerError::Rest)?;
        Ok(())
    }
}

/// How often the gRPC health of HttpsConfigService follows the store's reachability.
const HEALTH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Tells the registry of every change the index takes, so that it measures how long the
/// change takes to reach this server's agents (`convergence_seconds`). Ends on `shutdown`.
fn spawn_convergence(
    index: crate::index::Index,
    registry: Registry,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            // Once the index has loaded (subscribing waits a few seconds at most).
            let subscribed = tokio::select! {
                () = shutdown.cancelled() => return,
                s = async {
                    let _ = index.ready_view(std::time::Duration::MAX).await;
                    index.subscribe(index.revision()).await
                } => s,
            };
            let Ok((_, mut sub)) = subscribed else {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                }
            };
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    update = sub.next() => match update {
                        Ok(u) if !u.is_empty() => registry.committed(u.revision),
                        Ok(_) => {}
                        // Fell behind: those changes go unmeasured; subscribe again from now.
                        Err(_) => break,
                    },
                }
            }
        }
    })
}

/// How this server asks the other control servers (fleet-wide usage).
fn peers(args: &ControlArgs) -> Result<crate::grpc::peers::Peers, ServerError> {
    let signer = match (&args.peer_access_key_id, &args.peer_access_key_secret) {
        (Some(id), Some(secret)) => Some(tlsfleet_proto::signer::Signer::new(
            tlsfleet_proto::signer::AccessKey::new(id, secret)
                .map_err(|e| ServerError::Credentials(format!("--peer-access-key-id: {e}")))?,
        )),
        _ => None,
    };
    let ca = args
        .peer_ca
        .as_ref()
        .map(|p| std::fs::read(p).map_err(|e| ServerError::Tls(format!("{}: {e}", p.display()))))
        .transpose()?;
    Ok(crate::grpc::peers::Peers::new(signer, ca))
}

fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
    client_ca: Option<&std::path::Path>,
) -> Result<tonic::transport::ServerTlsConfig, ServerError> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| ServerError::Tls(format!("{}: {e}", p.display())))
    };
    let identity = tonic::transport::Identity::from_pem(read(cert)?, read(key)?);
    let mut tls = tonic::transport::ServerTlsConfig::new()
        .identity(identity)
        .timeout(GRPC_FIRST_BYTES);
    if let Some(ca) = client_ca {
        tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(read(ca)?));
    }
    Ok(tls)
}
