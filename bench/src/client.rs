//! The load client: rustls (the workspace's provider, X25519 offered first to every server so
//! that all do the same key exchange), `concurrency` connections at a time for a fixed time,
//! each a handshake for the next name of the list and a close. Run in its own process on its
//! own core (`tlsfleet-bench client`), so that its work is not in the server's figures.

use std::{
    net::SocketAddr,
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use rustls::{
    client::{
        ClientSessionMemoryCache, ClientSessionStore, Resumption, Tls12ClientSessionValue,
        Tls12Resumption, Tls13ClientSessionValue,
    },
    pki_types::{pem::PemObject, CertificateDer, ServerName},
    ClientConfig, HandshakeKind, NamedGroup,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;

/// What a run did.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct Outcome {
    pub handshakes: u64,
    pub resumed: u64,
    pub failed: u64,
    pub seconds: f64,
    /// The first failure, if any.
    pub error: Option<String>,
}

/// One run's settings.
#[derive(Debug, Clone)]
pub struct Load {
    pub addr: SocketAddr,
    pub names: Vec<String>,
    /// 12 or 13.
    pub version: u8,
    /// Resume sessions (TLS 1.3 tickets, TLS 1.2 session ids) instead of full handshakes.
    pub resume: bool,
    pub duration: Duration,
    pub concurrency: usize,
}

/// The client config for `load`, trusting `ca` (PEM), and its session store when it resumes.
pub fn config(ca: &Path, load: &Load) -> anyhow::Result<(Arc<ClientConfig>, Option<Arc<Tickets>>)> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)? {
        roots.add(cert?)?;
    }
    let mut provider = tlsfleet_policy::tls::provider();
    provider
        .kx_groups
        .sort_by_key(|g| g.name() != rustls::NamedGroup::X25519);
    provider.kx_groups.retain(|g| {
        matches!(
            g.name(),
            rustls::NamedGroup::X25519 | rustls::NamedGroup::secp256r1
        )
    });
    let version = match load.version {
        12 => &rustls::version::TLS12,
        _ => &rustls::version::TLS13,
    };
    let mut cfg = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[version])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tickets = load
        .resume
        .then(|| Arc::new(Tickets::new(8 * (load.names.len() + 64))));
    cfg.resumption = match &tickets {
        Some(t) => Resumption::store(t.clone()).tls12_resumption(Tls12Resumption::SessionIdOnly),
        None => Resumption::disabled(),
    };
    Ok((Arc::new(cfg), tickets))
}

/// The client's sessions, counting the TLS 1.3 tickets each name was given (so that a
/// connection waits for its tickets exactly as long as they take, see `one`).
#[derive(Debug)]
pub struct Tickets {
    inner: ClientSessionMemoryCache,
    given: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

impl Tickets {
    /// `size` sessions: rustls keeps 8 per server name.
    pub fn new(size: usize) -> Self {
        Self {
            inner: ClientSessionMemoryCache::new(size),
            given: Default::default(),
        }
    }

    /// The TLS 1.3 tickets `name` was given so far.
    pub fn given(&self, name: &ServerName<'_>) -> u64 {
        let given = self.given.lock().unwrap_or_else(|p| p.into_inner());
        given.get(name.to_str().as_ref()).copied().unwrap_or(0)
    }
}

impl ClientSessionStore for Tickets {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.inner.set_kx_hint(server_name, group);
    }
    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.inner.kx_hint(server_name)
    }
    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.inner.set_tls12_session(server_name, value);
    }
    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.inner.tls12_session(server_name)
    }
    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.inner.remove_tls12_session(server_name);
    }
    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        *self
            .given
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(server_name.to_str().into_owned())
            .or_default() += 1;
        self.inner.insert_tls13_ticket(server_name, value);
    }
    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        self.inner.take_tls13_ticket(server_name)
    }
}

/// Runs `load` with `cfg`.
pub async fn run(cfg: Arc<ClientConfig>, tickets: Option<Arc<Tickets>>, load: Load) -> Outcome {
    let connector = TlsConnector::from(cfg);
    let names: Arc<Vec<ServerName<'static>>> = Arc::new(
        load.names
            .iter()
            .filter_map(|n| ServerName::try_from(n.clone()).ok())
            .collect(),
    );
    let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let started = Instant::now();
    let deadline = started + load.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..load.concurrency.max(1) {
        let (connector, names, counts, first_error, tickets) = (
            connector.clone(),
            names.clone(),
            counts.clone(),
            first_error.clone(),
            tickets.clone(),
        );
        let load = load.clone();
        tasks.spawn(async move {
            let mut k = t;
            while Instant::now() < deadline && !names.is_empty() {
                let name = names[k % names.len()].clone();
                k += load.concurrency.max(1);
                let wait_for = tickets.as_deref().filter(|_| load.version == 13);
                match one(&connector, load.addr, name, wait_for).await {
                    Ok(resumed) => {
                        counts[0].fetch_add(1, Ordering::Relaxed);
                        if resumed {
                            counts[1].fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        counts[2].fetch_add(1, Ordering::Relaxed);
                        let mut first = first_error.lock().unwrap_or_else(|p| p.into_inner());
                        first.get_or_insert_with(|| e.to_string());
                    }
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let error = first_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Outcome {
        handshakes: counts[0].load(Ordering::Relaxed),
        resumed: counts[1].load(Ordering::Relaxed),
        failed: counts[2].load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
        error,
    }
}

/// One connection: a handshake, waiting for the TLS 1.3 tickets when `tickets` counts them
/// (at most [`TICKET_WAIT`]), then a close_notify; whether it resumed.
async fn one(
    connector: &TlsConnector,
    addr: SocketAddr,
    name: ServerName<'static>,
    tickets: Option<&Tickets>,
) -> std::io::Result<bool> {
    let before = tickets.map_or(0, |t| t.given(&name));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let mut tls = connector.connect(name.clone(), tcp).await?;
    let resumed = tls.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed);
    if let Some(t) = tickets {
        // The server sends its tickets right after the handshake; reading processes them.
        let until = Instant::now() + TICKET_WAIT;
        let mut buf = [0u8; 64];
        while t.given(&name) == before && Instant::now() < until {
            let _ = tokio::time::timeout(Duration::from_millis(1), tls.read(&mut buf)).await;
        }
    }
    let _ = tls.shutdown().await;
    Ok(resumed)
}

/// How long a connection waits for its TLS 1.3 tickets.
const TICKET_WAIT: Duration = Duration::from_millis(50);
