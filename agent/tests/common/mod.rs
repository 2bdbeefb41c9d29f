//! Test support: a CA with ECDSA and RSA leaves for `oss.test` and `*.oss.test`, a running
//! data plane on port 0, rustls clients limited to given versions and suites, HTTP over them.

#![allow(dead_code)]

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Once},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::{
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName},
    ClientConfig, RootCertStore, SupportedCipherSuite,
};
use tlsfleet_agent::{
    http::proxy::UpstreamLimits,
    metrics::Metrics,
    readiness::Readiness,
    server::{ConnectionLimits, DataPlane, DataPlaneConfig},
    table::PolicyTable,
    tls::{CertResolver, ConfigFactory},
};
use tlsfleet_policy::{
    BucketName, CipherSuiteConfig, HttpsConfig, ServedSuite, TlsConfig, TlsVersion,
};
use tlsfleet_testkit::tls::{KeyKind, TestCa};
use tokio::{net::TcpStream, task::JoinHandle};
use tokio_rustls::{client::TlsStream, TlsConnector};
use tokio_util::sync::CancellationToken;

pub const DOMAIN: &str = "oss.test";

pub fn install_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = tlsfleet_policy::tls::provider().install_default();
    });
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    Ecdsa,
    Rsa,
}

/// The test CA (`tlsfleet_testkit::tls::TestCa`) and the leaves it signs.
pub struct Pki {
    ca: TestCa,
    pub ca_der: CertificateDer<'static>,
}

pub use tlsfleet_testkit::tls::Leaf;

impl Pki {
    pub fn new() -> Self {
        let ca = TestCa::new();
        Self {
            ca_der: ca.der(),
            ca,
        }
    }

    /// A leaf for `names` (default: the domain and its wildcard).
    pub fn leaf_for(&self, key_type: KeyType, names: &[&str]) -> Leaf {
        let kind = match key_type {
            KeyType::Ecdsa => KeyKind::EcdsaP256,
            KeyType::Rsa => KeyKind::Rsa2048,
        };
        self.ca.leaf(names, kind)
    }

    pub fn leaf(&self, key_type: KeyType) -> Leaf {
        self.leaf_for(key_type, &[DOMAIN, "*.oss.test"])
    }

    pub fn roots(&self) -> RootCertStore {
        self.ca.roots()
    }
}

pub fn bucket(name: &str) -> BucketName {
    name.parse().unwrap()
}

/// `<TLS><Enable>true</Enable>` with these versions, every suite.
pub fn versions(v: &[TlsVersion]) -> HttpsConfig {
    HttpsConfig {
        tls: TlsConfig {
            enable: true,
            tls_versions: v.to_vec(),
        },
        cipher_suite: None,
    }
}

/// These versions with custom TLS 1.2 / TLS 1.3 suite lists.
pub fn custom(v: &[TlsVersion], tls12: &[&str], tls13: &[&str]) -> HttpsConfig {
    HttpsConfig {
        tls: TlsConfig {
            enable: true,
            tls_versions: v.to_vec(),
        },
        cipher_suite: Some(CipherSuiteConfig {
            enable: Some(true),
            strong_cipher_suite: Some(false),
            custom_cipher_suites: tls12.iter().map(|s| s.to_string()).collect(),
            tls13_custom_cipher_suites: tls13.iter().map(|s| s.to_string()).collect(),
        }),
    }
}

pub fn tls13_only() -> HttpsConfig {
    versions(&[TlsVersion::Tls13])
}

pub fn tls12_and_13() -> HttpsConfig {
    versions(&[TlsVersion::Tls12, TlsVersion::Tls13])
}

/// A table over `leaf`, not bound to any socket.
pub fn table_for(leaf: &Leaf) -> PolicyTable {
    install_provider();
    let resolver = CertResolver::from_pem(
        leaf.cert_pem.as_bytes(),
        leaf.key_pem.as_bytes(),
        &[DOMAIN.to_owned()],
    )
    .unwrap();
    PolicyTable::new(ConfigFactory::new(Arc::new(resolver)).unwrap())
}

/// A data plane serving in the background; stopped on drop.
pub struct Agent {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub table: Arc<PolicyTable>,
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    pub pki: Pki,
    pub dir: tempfile::TempDir,
    pub shutdown: CancellationToken,
    pub task: Option<JoinHandle<()>>,
}

pub struct AgentOptions {
    pub key_type: KeyType,
    pub upstream: Option<http::Uri>,
    pub handshake_timeout: Duration,
    pub grace: Option<Duration>,
    pub connections: ConnectionLimits,
    pub upstream_limits: UpstreamLimits,
}

impl Default for AgentOptions {
    fn default() -> Self {
        Self {
            key_type: KeyType::Ecdsa,
            upstream: None,
            handshake_timeout: Duration::from_secs(5),
            grace: None,
            connections: ConnectionLimits::default(),
            upstream_limits: UpstreamLimits::default(),
        }
    }
}

impl Agent {
    /// A ready agent (an empty snapshot applied at revision 1) with an ECDSA certificate.
    pub async fn start() -> Self {
        let agent = Self::start_with(AgentOptions::default()).await;
        agent.table.apply_snapshot(1, Vec::new());
        agent
    }

    /// Not ready until the test applies a snapshot.
    pub async fn start_with(opts: AgentOptions) -> Self {
        install_provider();
        let pki = Pki::new();
        let leaf = pki.leaf(opts.key_type);
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, &leaf.cert_pem).unwrap();
        std::fs::write(&key, &leaf.key_pem).unwrap();
        let metrics = Arc::new(Metrics::new());
        let mut plane = DataPlane::bind(
            DataPlaneConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                domains: vec![DOMAIN.to_owned()],
                cert,
                key,
                upstream: opts.upstream,
                control_rest: None,
                admin_listen: Some("127.0.0.1:0".parse().unwrap()),
                handshake_timeout: opts.handshake_timeout,
                connections: opts.connections,
                upstream_limits: opts.upstream_limits,
            },
            metrics.clone(),
        )
        .await
        .unwrap();
        if let Some(grace) = opts.grace {
            plane.set_grace_period(grace);
        }
        let shutdown = CancellationToken::new();
        let (addr, admin, table, readiness) = (
            plane.local_addr(),
            plane.admin_addr().unwrap(),
            plane.table(),
            plane.readiness(),
        );
        let token = shutdown.clone();
        let task = tokio::spawn(async move { plane.run(token).await.unwrap() });
        Self {
            addr,
            admin,
            table,
            metrics,
            readiness,
            pki,
            dir,
            shutdown,
            task: Some(task),
        }
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    /// A client trusting the test CA, limited to `versions` (and `suites` if given).
    pub fn client(
        &self,
        versions: &[ServedVersionArg],
        suites: Option<&[ServedSuite]>,
    ) -> ClientConfig {
        client_config(&self.pki, versions, suites, &[b"http/1.1"])
    }

    /// Connects with `sni` (`None`: no SNI extension, the name still verified as `oss.test`).
    pub async fn connect(
        &self,
        config: ClientConfig,
        sni: Option<&str>,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        connect(self.addr, config, sni).await
    }

    /// GET on the admin endpoint: (status, body).
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let tcp = TcpStream::connect(self.admin).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::get(path)
            .header("host", "admin")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    /// Stops the data plane and waits for `run` to return.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("the data plane stops within 30 s")
                .unwrap();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub type ServedVersionArg = &'static rustls::SupportedProtocolVersion;
pub const TLS12: ServedVersionArg = &rustls::version::TLS12;
pub const TLS13: ServedVersionArg = &rustls::version::TLS13;

pub fn client_config(
    pki: &Pki,
    versions: &[ServedVersionArg],
    suites: Option<&[ServedSuite]>,
    alpn: &[&[u8]],
) -> ClientConfig {
    let base = tlsfleet_policy::tls::provider();
    let cipher_suites: Vec<SupportedCipherSuite> = match suites {
        None => base.cipher_suites.clone(),
        Some(wanted) => base
            .cipher_suites
            .iter()
            .filter(|s| wanted.iter().any(|w| w.id() == u16::from(s.suite())))
            .copied()
            .collect(),
    };
    let provider = Arc::new(CryptoProvider {
        cipher_suites,
        ..base
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(pki.roots())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // Each test connection handshakes in full: resumption would hide what a config negotiates.
    config.resumption = rustls::client::Resumption::disabled();
    config
}

pub async fn connect(
    addr: SocketAddr,
    mut config: ClientConfig,
    sni: Option<&str>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let name = match sni {
        Some(n) => n.to_owned(),
        None => {
            config.enable_sni = false;
            DOMAIN.to_owned()
        }
    };
    let server_name = ServerName::try_from(name).unwrap();
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
}

/// An HTTP/1.1 client on one TLS connection (keep-alive across requests).
pub struct H1 {
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl H1 {
    pub async fn new(tls: TlsStream<TcpStream>) -> Self {
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        Self { send }
    }

    pub async fn get(&mut self, host: &str, path: &str) -> Reply {
        let req = Request::get(path)
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .unwrap();
        self.send(req).await
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Reply {
        self.send.ready().await.unwrap();
        Reply::read(self.send.send_request(req).await.unwrap()).await
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Reply {
    pub async fn read(resp: Response<hyper::body::Incoming>) -> Self {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Self {
            status,
            headers,
            body: String::from_utf8(body.to_vec()).unwrap(),
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// An HTTP/2 client on one TLS connection.
pub async fn h2_client(
    tls: TlsStream<TcpStream>,
) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    send
}

/// Polls `probe` until it returns true (a readiness wait, not a sleep), failing after 10 s.
pub async fn wait_until<F, Fut>(what: &str, probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    tlsfleet_testkit::eventually::eventually(what, Duration::from_secs(10), probe).await
}
