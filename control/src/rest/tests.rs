//! The REST server in process: a real socket on port 0, the embedded store, raw HTTP/1.1.

use std::{sync::Arc, time::Duration};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_util::sync::CancellationToken;

use super::{serve, RestState};
use crate::{
    auth::{Authenticator, Credentials},
    index::Index,
    service::Policies,
    store::{embedded::EmbeddedStore, Store},
};

const CREDS: &str = "[[key]]\nid='AK'\nsecret='sk'\nallow=['oss:*']\nbuckets=['*']\n";

struct Server {
    addr: std::net::SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    index_task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn start() -> Server {
    start_with(None).await
}

async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let shutdown = CancellationToken::new();
    let (index, index_task) = Index::spawn(store.clone(), shutdown.child_token());
    index.ready_view(Duration::from_secs(10)).await.unwrap();
    let state = RestState {
        policies: Policies::new(store, index),
        auth: Arc::new(Authenticator::new(Credentials::parse(CREDS).unwrap())),
        domains: vec!["oss.test".into()],
        limits: super::RestLimits::default(),
        tls,
        downgrades: super::RestDowngrades::Allow,
        request_log: crate::request_log::RequestLog::All,
        require_signed_body: false,
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(serve(listener, state, shutdown.clone()));
    Server {
        addr,
        shutdown,
        task,
        index_task,
        _dir: dir,
    }
}

fn signed(method: &str, bucket: &str, path: &str, body: &str, host: &str) -> String {
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    let sts = format!("{method}\n\n\n{date}\n/{bucket}/?httpsConfig");
    let mut mac = Hmac::<Sha1>::new_from_slice(b"sk").unwrap();
    mac.update(sts.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nDate: {date}\r\nAuthorization: OSS AK:{sig}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Sends one request on a fresh connection and reads the whole response (server closes).
async fn exchange(addr: std::net::SocketAddr, request: &str) -> String {
    let request = request.replacen("\r\n", "\r\nConnection: close\r\n", 1);
    exchange_raw(addr, request.as_bytes()).await
}

async fn exchange_raw(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn put_then_get_path_style_and_virtual_hosted() {
    let server = start().await;
    let body = "<HttpsConfiguration><TLS><Enable>true</Enable><TLSVersion>TLSv1.3</TLSVersion>\
                </TLS></HttpsConfiguration>";
    let put = signed("PUT", "b1b", "/b1b/?httpsConfig=", body, "127.0.0.1");
    let reply = exchange(server.addr, &put).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("x-oss-request-id: "), "{reply}");
    assert!(reply.contains("x-tlsfleet-revision: "), "{reply}");

    let get = signed("GET", "b1b", "/?httpsConfig", "", "B1B.oss.test:7080");
    let reply = exchange(server.addr, &get).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        reply.contains("<TLSVersion>TLSv1.3</TLSVersion>"),
        "{reply}"
    );

    let never = signed("GET", "other", "/other/?httpsConfig", "", "127.0.0.1");
    let reply = exchange(server.addr, &never).await;
    assert!(
        reply.contains("<Enable>false</Enable>") && !reply.contains("TLSVersion"),
        "{reply}"
    );

    let forged = signed("PUT", "b1b", "/b2b/?httpsConfig", body, "127.0.0.1");
    let reply = exchange(server.addr, &forged).await;
    assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
    assert!(
        reply.contains("<Code>SignatureDoesNotMatch</Code>"),
        "{reply}"
    );
    stop(server).await;
}

#[tokio::test]
async fn garbage_requests_get_answers_and_the_server_stays_up() {
    let server = start().await;
    let requests: [&[u8]; 6] = [
        b"GET /b1b/?httpsConfig HTTP/1.1\r\nHost: x\r\n",
        b"PUT /b1b/?httpsConfig HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n",
        b"BREW /b1b/?httpsConfig HTTP/1.1\r\nHost: x\r\n",
        b"GET /%ZZ/?httpsConfig HTTP/1.1\r\nHost: x\r\n",
        b"GET /b1b/?%FF HTTP/1.1\r\nHost: x\r\n",
        b"GET /b1b/?httpsConfig HTTP/1.1\r\nHost: \xff\r\nAuthorization: OSS \xfe:\xfd\r\n",
    ];
    for head in requests {
        let mut request = head.to_vec();
        request.extend_from_slice(b"Connection: close\r\n\r\n");
        if head.starts_with(b"PUT") {
            request.extend_from_slice(b"abc");
        }
        let reply = exchange_raw(server.addr, &request).await;
        assert!(
            reply.starts_with("HTTP/1.1 4"),
            "{:?} -> {reply}",
            String::from_utf8_lossy(head)
        );
    }
    let reply = exchange(server.addr, "GET /-/readyz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    stop(server).await;
}

#[tokio::test]
async fn a_client_expecting_100_continue_is_refused_without_sending_its_body() {
    let server = start().await;
    let big = format!(
        "Expect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        10 << 20
    );
    // Signed, but too large; and unsigned. Neither body is ever sent: the answer must come
    // without a "100 Continue" first.
    let signed_head = signed("PUT", "b1b", "/b1b/?httpsConfig", "", "127.0.0.1")
        .replace("Content-Length: 0\r\n\r\n", &big);
    let unsigned_head = format!("PUT /b1b/?httpsConfig HTTP/1.1\r\nHost: x\r\n{big}");
    for (head, code) in [
        (signed_head, "EntityTooLarge"),
        (unsigned_head, "AccessDenied"),
    ] {
        let reply = tokio::time::timeout(
            Duration::from_secs(5),
            exchange_raw(server.addr, head.as_bytes()),
        )
        .await
        .expect("answered without the body");
        assert!(reply.starts_with("HTTP/1.1 4"), "{reply}");
        assert!(reply.contains(&format!("<Code>{code}</Code>")), "{reply}");
    }
    stop(server).await;
}

#[tokio::test]
async fn shutdown_does_not_wait_for_idle_connections() {
    let server = start().await;
    // A keep-alive connection that has finished a request, and one that never sent any.
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    idle.write_all(b"GET /-/healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let _silent = TcpStream::connect(server.addr).await.unwrap();
    stop(server).await;
}

async fn stop(server: Server) {
    server.shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(5), server.task).await;
    assert!(
        matches!(stopped, Ok(Ok(Ok(())))),
        "REST server did not stop: {stopped:?}"
    );
    server.index_task.await.unwrap();
}

#[tokio::test]
async fn the_rest_api_over_tls() {
    use std::sync::Arc as StdArc;

    let _ = tlsfleet_policy::tls::provider().install_default();
    let ca = tlsfleet_testkit::tls::TestCa::new();
    let leaf = ca.leaf(&["127.0.0.1"], tlsfleet_testkit::tls::KeyKind::EcdsaP256);
    let acceptor =
        super::tls_acceptor(leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes()).expect("tls config");
    let server = start_with(Some(acceptor)).await;

    let roots = ca.roots();
    let client =
        rustls::ClientConfig::builder_with_provider(StdArc::new(tlsfleet_policy::tls::provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(StdArc::new(client));
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let body = "<HttpsConfiguration><TLS><Enable>true</Enable><TLSVersion>TLSv1.3</TLSVersion>\
                </TLS></HttpsConfiguration>";
    let put = signed("PUT", "b1b", "/b1b/?httpsConfig", body, "127.0.0.1").replacen(
        "\r\n",
        "\r\nConnection: close\r\n",
        1,
    );
    tls.write_all(put.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    let reply = String::from_utf8_lossy(&out);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");

    // Plain HTTP to the TLS listener gets no HTTP answer.
    let reply = exchange_raw(
        server.addr,
        b"GET /-/healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(!reply.contains("200"), "{reply}");
    stop(server).await;
}
