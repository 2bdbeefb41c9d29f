//! The agent's connection bounds, against a real agent process: connections that never send
//! a request (TLS done, HTTP/1.1 or HTTP/2), never finish the handshake, or come in numbers
//! from one address are closed; the open-connections gauge comes back down.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use rustls::pki_types::ServerName;
use tlsfleet_testkit::{
    agent::Agent,
    control::{Control, DOMAIN},
    tls::{KeyKind, TestCert},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::TlsConnector;

struct Edge {
    agent: Agent,
    ca: rustls::pki_types::CertificateDer<'static>,
    _control: Control,
    _dir: tempfile::TempDir,
}

fn edge(extra: &[&str]) -> Edge {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = TestCert::generate(dir.path(), DOMAIN, KeyKind::EcdsaP256);
    let control = Control::embedded();
    let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
    let mut agent = Agent::spawn_with(
        "edge-limits",
        &[control.grpc_url()],
        &cert.cert,
        &cert.key,
        None,
        &extra,
    );
    agent.wait_ready();
    Edge {
        agent,
        ca: cert.ca_der,
        _control: control,
        _dir: dir,
    }
}

async fn tls(edge: &Edge, alpn: &[u8]) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(edge.ca.clone()).expect("ca");
    let mut cfg =
        rustls::ClientConfig::builder_with_provider(Arc::new(tlsfleet_policy::tls::provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(edge.agent.tls).await.expect("connect");
    TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from(DOMAIN).expect("name"), tcp)
        .await
        .expect("handshake")
}

/// Whether the peer closes `s` within `within` (EOF or a reset), reading and discarding.
async fn closed_within<S: AsyncRead + Unpin>(s: &mut S, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

fn open_connections(agent: &Agent) -> Option<f64> {
    agent.metric("open_connections")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_without_requests_are_closed() {
    let edge = edge(&["--idle-timeout", "1s", "--handshake-timeout", "1s"]);
    let started = Instant::now();
    let mut h1 = Vec::new();
    for _ in 0..20 {
        h1.push(tls(&edge, b"http/1.1").await);
    }
    let mut h2 = Vec::new();
    for _ in 0..5 {
        let mut s = tls(&edge, b"h2").await;
        // The preface and SETTINGS, then nothing: a client that opens and never asks.
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            .await
            .expect("preface");
        h2.push(s);
    }
    let mut raw = Vec::new();
    for _ in 0..10 {
        // TCP only: no ClientHello ever comes.
        raw.push(TcpStream::connect(edge.agent.tls).await.expect("connect"));
    }
    for (i, s) in h1.iter_mut().enumerate() {
        assert!(
            closed_within(s, Duration::from_secs(5)).await,
            "HTTP/1.1 connection {i}"
        );
    }
    for (i, s) in h2.iter_mut().enumerate() {
        assert!(
            closed_within(s, Duration::from_secs(5)).await,
            "HTTP/2 connection {i}"
        );
    }
    for (i, s) in raw.iter_mut().enumerate() {
        assert!(
            closed_within(s, Duration::from_secs(5)).await,
            "TCP connection {i}"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(8));
    let agent = &edge.agent;
    assert!(
        tlsfleet_testkit::procs::eventually(Duration::from_secs(5), || {
            open_connections(agent) == Some(0.0)
        }),
        "open connections: {:?}",
        open_connections(agent)
    );
    let idle_closed = agent.metric("connections_idle_closed_total").unwrap_or(0.0);
    assert!(idle_closed >= 25.0, "{idle_closed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_connection_is_not_idle() {
    let edge = edge(&["--idle-timeout", "1s"]);
    let mut s = tls(&edge, b"http/1.1").await;
    // Requests every half second for three seconds: never a second without one.
    for _ in 0..6 {
        let (status, _) = tlsfleet_testkit::tls::http1(&mut s, DOMAIN, "/")
            .await
            .expect("request");
        assert_eq!(status, 200);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Then silence: closed.
    assert!(closed_within(&mut s, Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_gets_at_most_its_share_of_connections() {
    let edge = edge(&[
        "--max-connections-per-source",
        "16",
        "--idle-timeout",
        "30s",
    ]);
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(tls(&edge, b"http/1.1").await);
    }
    // The 17th from the same address is closed at once, before any TLS.
    let mut over = TcpStream::connect(edge.agent.tls).await.expect("connect");
    let _ = over.write_all(b"\x16\x03\x01").await;
    assert!(closed_within(&mut over, Duration::from_secs(2)).await);
    // Another address still gets in.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new("127.0.0.2".parse().expect("ip"), 0))
        .expect("bind");
    let mut other = socket.connect(edge.agent.tls).await.expect("connect");
    assert!(!closed_within(&mut other, Duration::from_millis(500)).await);
    let refused = edge
        .agent
        .metrics_text()
        .lines()
        .find(|l| l.contains("reason=\"source_limit\""))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(refused >= 1.0, "{}", edge.agent.metrics_text());
    // A freed place is usable again.
    drop(held.pop());
    assert!(tlsfleet_testkit::procs::eventually(
        Duration::from_secs(5),
        || { open_connections(&edge.agent).is_some_and(|n| n <= 16.0) }
    ));
    let _ = tls(&edge, b"http/1.1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_takes_no_response_is_dropped() {
    let edge = edge(&["--send-timeout", "1s", "--idle-timeout", "30s"]);
    let mut s = tls(&edge, b"h2").await;
    // HTTP/2 with an initial window of 0 (SETTINGS_INITIAL_WINDOW_SIZE = 0), then requests
    // whose answers can never be sent: each would hold an upstream slot for good.
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend_from_slice(&[0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0]);
    for stream in [1u32, 3, 5] {
        let mut block = Vec::new();
        for (k, v) in [
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/nopol/o"),
            (":authority", DOMAIN),
        ] {
            block.extend_from_slice(&[0, k.len() as u8]);
            block.extend_from_slice(k.as_bytes());
            block.push(v.len() as u8);
            block.extend_from_slice(v.as_bytes());
        }
        let len = block.len() as u32;
        out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, 1, 0x5]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(&block);
    }
    s.write_all(&out).await.expect("requests");
    assert!(
        closed_within(&mut s, Duration::from_secs(6)).await,
        "a connection that takes nothing was kept"
    );
    assert!(
        edge.agent
            .metric("connections_stall_closed_total")
            .unwrap_or(0.0)
            >= 1.0
    );
}
