//! Hostile input at the edge: every way a request could reach a bucket the policy does not
//! allow it to, against a real agent in front of an upstream that routes as leniently as real
//! storage servers do (`tlsfleet_testkit::lenient`).
//!
//! Bucket `vault` is TLS 1.3-only and `nopol` has no policy. Every hostile request goes over
//! TLS 1.2, so the one thing that must never happen is the upstream serving `vault`. Each
//! case also checks that the agent refused it (400, 403 or 421) rather than served it, and
//! the legitimate requests of every style keep working.

use std::{sync::Arc, time::Duration};

use rustls::{
    pki_types::{CertificateDer, ServerName},
    SupportedProtocolVersion,
};
use tlsfleet_proto::v1::PutRequest;
use tlsfleet_testkit::{
    agent::Agent,
    control::{keys, Control, DOMAIN},
    grpc::{admin, https_config, signed},
    lenient::{Lenient, Served},
    tls::{KeyKind, TestCert},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::{client::TlsStream, TlsConnector};

const PUT: &str = tlsfleet_proto::v1::methods::HTTPS_CONFIG_SERVICE_PUT;
const TLS12: &SupportedProtocolVersion = &rustls::version::TLS12;
const TLS13: &SupportedProtocolVersion = &rustls::version::TLS13;
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// HTTP/2 header fields, pseudo-headers included, in the order sent.
type H2Request = Vec<(&'static str, &'static str)>;
/// (SNI, version, raw request, bucket served, target and Host the upstream must get)
type LegitCase = (
    Option<&'static str>,
    &'static SupportedProtocolVersion,
    String,
    &'static str,
    &'static str,
    String,
);

struct Edge {
    agent: Agent,
    upstream: Lenient,
    ca: CertificateDer<'static>,
    _control: Control,
    _dir: tempfile::TempDir,
}

async fn edge() -> Edge {
    edge_with(DOMAIN, &[]).await
}

/// An agent in front of a lenient upstream that routes `<bucket>.<upstream_domain>` as
/// virtual-hosted, with extra agent flags.
async fn edge_with(upstream_domain: &str, extra: &[&str]) -> Edge {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = TestCert::generate(dir.path(), DOMAIN, KeyKind::EcdsaP256);
    let control = Control::embedded();
    let mut c = admin(&control.grpc_url()).await;
    let put = PutRequest {
        bucket: "vault".into(),
        config: Some(https_config(&["TLSv1.3"], &[], &[])),
        ..Default::default()
    };
    let revision = c
        .put(signed(put, PUT, keys::ADMIN))
        .await
        .expect("put vault")
        .into_inner()
        .revision;
    let upstream = Lenient::start(upstream_domain);
    let mut flags = vec!["--upstream".to_owned(), upstream.url()];
    flags.extend(extra.iter().map(|s| (*s).to_owned()));
    let mut agent = Agent::spawn_with(
        "edge-bypass",
        &[control.grpc_url()],
        &cert.cert,
        &cert.key,
        None,
        &flags,
    );
    agent.wait_ready();
    assert!(
        agent.wait_revision(revision, IO_TIMEOUT),
        "policy not applied"
    );
    Edge {
        agent,
        upstream,
        ca: cert.ca_der,
        _control: control,
        _dir: dir,
    }
}

/// A TLS connection with SNI `sni` (none when `None`), only `version`, ALPN `alpn`.
async fn tls(
    edge: &Edge,
    sni: Option<&str>,
    version: &'static SupportedProtocolVersion,
    alpn: &[u8],
) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(edge.ca.clone()).expect("ca");
    let provider = Arc::new(tlsfleet_policy::tls::provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    // Without SNI the certificate is still checked, against the bare domain it covers.
    cfg.enable_sni = sni.is_some();
    let name = ServerName::try_from(sni.unwrap_or(DOMAIN).to_owned()).expect("name");
    let tcp = TcpStream::connect(edge.agent.tls).await.expect("connect");
    let stream = TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .expect("handshake");
    let negotiated = stream.get_ref().1.protocol_version();
    assert_eq!(negotiated, Some(version.version), "negotiated version");
    stream
}

/// Reads exactly `n` bytes or until EOF.
async fn read_n<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>, n: usize) -> bool {
    while buf.len() < n {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(IO_TIMEOUT, r.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return false,
            Ok(Ok(k)) => buf.extend_from_slice(&chunk[..k]),
        }
    }
    true
}

/// Sends raw HTTP/1.x bytes and reads up to `expect` responses: their status codes (fewer
/// when the agent closed the connection).
async fn h1(stream: &mut TlsStream<TcpStream>, raw: &[u8], expect: usize) -> Vec<u16> {
    stream.write_all(raw).await.expect("write");
    let mut buf = Vec::new();
    let mut statuses = Vec::new();
    while statuses.len() < expect {
        // The head.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let have = buf.len();
            if !read_n(stream, &mut buf, have + 1).await {
                return statuses;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        statuses.push(status);
        let length = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if !read_n(stream, &mut buf, head_end + length).await {
            return statuses;
        }
        buf.drain(..head_end + length);
    }
    statuses
}

/// One HPACK literal header field without indexing, no Huffman (names and values < 127).
fn hpack(name: &str, value: &str) -> Vec<u8> {
    let mut out = vec![0x00, name.len() as u8];
    out.extend_from_slice(name.as_bytes());
    out.push(value.len() as u8);
    out.extend_from_slice(value.as_bytes());
    out
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The status of an HPACK-encoded response head: an indexed static entry, or a literal
/// `:status` (plain or Huffman-coded digits).
fn h2_status(block: &[u8]) -> Option<u16> {
    let first = *block.first()?;
    let indexed = [
        (8, 200),
        (9, 204),
        (10, 206),
        (11, 304),
        (12, 400),
        (13, 404),
        (14, 500),
    ];
    if first & 0x80 != 0 {
        return indexed
            .iter()
            .find(|(i, _)| *i == first & 0x7f)
            .map(|(_, s)| *s);
    }
    let len = usize::from(*block.get(1)? & 0x7f);
    let value = block.get(2..2 + len)?;
    if block[1] & 0x80 == 0 {
        return std::str::from_utf8(value).ok()?.parse().ok();
    }
    // Huffman: '0'-'2' are 5 bits (00000..00010), '3'-'9' 6 bits (011001..011111).
    let mut bits: Vec<u8> = Vec::new();
    for b in value {
        for i in (0..8).rev() {
            bits.push((b >> i) & 1);
        }
    }
    let mut digits = String::new();
    let mut i = 0;
    while digits.len() < 3 && i + 5 <= bits.len() {
        let five = bits[i..i + 5].iter().fold(0u8, |a, b| a << 1 | b);
        if five <= 2 {
            digits.push(char::from(b'0' + five));
            i += 5;
        } else {
            let six = bits[i..i + 6].iter().fold(0u8, |a, b| a << 1 | b);
            digits.push(char::from(b'0' + six - 0b011001 + 3));
            i += 6;
        }
    }
    digits.parse().ok()
}

/// Sends raw HTTP/2 requests (each a list of header fields, pseudo-headers included, exactly
/// as given) and returns each one's status: `None` when the stream was reset or the
/// connection ended before an answer.
async fn h2(stream: &mut TlsStream<TcpStream>, requests: &[Vec<(&str, &str)>]) -> Vec<Option<u16>> {
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(4, 0, 0, &[]));
    for (i, fields) in requests.iter().enumerate() {
        let block: Vec<u8> = fields.iter().flat_map(|(k, v)| hpack(k, v)).collect();
        // END_STREAM | END_HEADERS
        out.extend(frame(1, 0x5, 1 + 2 * i as u32, &block));
    }
    stream.write_all(&out).await.expect("write h2");
    let mut statuses: Vec<Option<u16>> = vec![None; requests.len()];
    let mut done = vec![false; requests.len()];
    let mut buf = Vec::new();
    while done.iter().any(|d| !d) {
        if !read_n(stream, &mut buf, 9).await {
            break;
        }
        let len = usize::from(buf[0]) << 16 | usize::from(buf[1]) << 8 | usize::from(buf[2]);
        let (kind, flags) = (buf[3], buf[4]);
        let id = u32::from_be_bytes([buf[5] & 0x7f, buf[6], buf[7], buf[8]]);
        if !read_n(stream, &mut buf, 9 + len).await {
            break;
        }
        let payload = buf[9..9 + len].to_vec();
        buf.drain(..9 + len);
        let index = (id as usize).checked_sub(1).map(|i| i / 2);
        match kind {
            4 if flags & 1 == 0 => {
                stream
                    .write_all(&frame(4, 1, 0, &[]))
                    .await
                    .expect("settings ack");
            }
            7 => break, // GOAWAY
            1 | 0 | 3 => {
                let Some(i) = index.filter(|i| *i < requests.len()) else {
                    continue;
                };
                if kind == 1 && statuses[i].is_none() {
                    statuses[i] = h2_status(&payload);
                }
                if kind == 3 || flags & 1 != 0 {
                    done[i] = true;
                }
            }
            _ => {}
        }
    }
    statuses
}

/// The forwarding headers an upstream may route by say what was decided, and the
/// override headers are gone.
fn assert_rewritten(s: &Served, host: &str) {
    assert_eq!(s.header("host"), Some(host), "{s:#?}");
    assert_eq!(s.header("x-forwarded-host"), Some(host), "{s:#?}");
    let forwarded = s.header("forwarded").unwrap_or_default();
    assert!(forwarded.contains(&format!("host=\"{host}\"")), "{s:#?}");
    for gone in ["x-original-url", "x-rewrite-url"] {
        assert_eq!(s.header(gone), None, "{s:#?}");
    }
}

fn served_buckets(served: &[Served]) -> Vec<Option<String>> {
    served.iter().map(|s| s.bucket.clone()).collect()
}

/// The invariant for one hostile case: the upstream served nothing of `vault`, and every
/// answer the agent gave was a refusal (or there was none: the connection was closed).
fn assert_no_bypass(edge: &Edge, case: &str, statuses: &[Option<u16>]) {
    let served = edge.upstream.take();
    assert!(
        served.iter().all(|s| s.bucket.as_deref() != Some("vault")),
        "{case}: the upstream served vault over TLS 1.2: {served:#?}"
    );
    for s in statuses.iter().flatten() {
        assert!(
            matches!(s, 400 | 403 | 421),
            "{case}: answered {s}, upstream saw {:?}",
            served_buckets(&served)
        );
    }
}

#[tokio::test]
async fn http1_bypasses_are_refused() {
    let edge = edge().await;
    let nopol = Some("nopol.oss.test");
    let bare = Some("oss.test");
    let ip_host = format!("127.0.0.1:{}", edge.agent.tls.port());
    // (SNI, raw request)
    let mut cases: Vec<(Option<&str>, String)> = Vec::new();
    for sni in [nopol, bare, None] {
        cases.extend([
            (sni, "GET /vault/o HTTP/1.1\r\n\r\n".to_owned()),
            (sni, "GET /vault/o HTTP/1.1\r\nHost:\r\n\r\n".to_owned()),
            (sni, "GET /vault/o HTTP/1.1\r\nHost: \r\n\r\n".to_owned()),
            (sni, "GET /vault/o HTTP/1.0\r\n\r\n".to_owned()),
            (
                sni,
                "GET /vault/o HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".to_owned(),
            ),
        ]);
    }
    let path_tricks = [
        "//vault/o",
        "///vault/o",
        "/./vault/o",
        "/nopol/../vault/o",
        "/nopol/./../vault/o",
        "/nopol/%2e%2e/vault/o",
        "/nopol/%2E%2E/vault/o",
        "/nopol/.%2e/vault/o",
        "/nopol/%2e./vault/o",
        "/nopol/%252e%252e/vault/o",
        "/nopol/%25252e%25252e/vault/o",
        "/nopol/..%2fvault/o",
        "/nopol%2f..%2fvault/o",
        "/nopol/..%5cvault/o",
        "/nopol/%5c..%5cvault/o",
        "/vault;x/o",
        "/vault%3bx/o",
        "/%76ault/o",
        "/VAULT/o",
        "/vault%00/o",
        "/nopol/o/../../vault/o",
        "/nopol/..;/vault/o",
        "/nopol/..;jsessionid=1/vault/o",
        "/nopol/%2e%2e;/vault/o",
        "/nopol/..%3b/vault/o",
        "/nopol/..%20/vault/o",
        "/nopol/.%2e%20/vault/o",
        "/nopol/;/../vault/o",
    ];
    for path in path_tricks {
        for (sni, host) in [
            (bare, "oss.test"),
            (None, "oss.test"),
            (None, ip_host.as_str()),
        ] {
            cases.push((sni, format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n")));
        }
    }
    let host_tricks = [
        "vault.oss.test:x",
        "vault.oss.test:",
        "vault.oss.test..",
        "vault..oss.test",
        "x.vault.oss.test",
        "vault.oss.test:443:1",
        "VAULT.oss.test.:8443",
        "u@vault.oss.test",
        "vault.oss.test/x",
        "vault.oss.test, nopol.oss.test",
        "vault.oss.test\t",
        "[::1]vault.oss.test",
    ];
    for host in host_tricks {
        cases.push((None, format!("GET /o HTTP/1.1\r\nHost: {host}\r\n\r\n")));
        cases.push((nopol, format!("GET /o HTTP/1.1\r\nHost: {host}\r\n\r\n")));
    }
    let header_tricks = [
        "X-Forwarded-Host: vault.oss.test",
        "X-Forwarded-Host: vault.oss.test, nopol.oss.test",
        "Forwarded: host=vault.oss.test",
        "Forwarded: for=1.2.3.4;host=\"vault.oss.test\";proto=https",
        "X-Original-URL: /vault/o",
        "X-Rewrite-URL: /vault/o",
        "X-Original-URL: http://vault.oss.test/o",
        "X_Original_URL: /vault/o",
        "X_Forwarded_Host: vault.oss.test",
    ];
    // Re-routing headers: the request is served for the bucket decided on, with the
    // headers overwritten (X-Forwarded-Host, Forwarded) or dropped (the rest).
    for h in header_tricks {
        for (sni, raw, host) in [
            (
                nopol,
                format!("GET /o HTTP/1.1\r\nHost: nopol.oss.test\r\n{h}\r\n\r\n"),
                "nopol.oss.test",
            ),
            (
                bare,
                format!("GET /nopol/o HTTP/1.1\r\nHost: oss.test\r\n{h}\r\n\r\n"),
                "oss.test",
            ),
        ] {
            let mut s = tls(&edge, sni, TLS12, b"http/1.1").await;
            let statuses = h1(&mut s, raw.as_bytes(), 1).await;
            let served = edge.upstream.take();
            assert_eq!(statuses, [200], "{raw:?}");
            assert_eq!(
                served_buckets(&served),
                [Some("nopol".to_owned())],
                "{raw:?}"
            );
            assert_rewritten(&served[0], host);
        }
    }
    cases.extend([
        (
            nopol,
            "GET /o HTTP/1.1\r\nHost: nopol.oss.test\r\nHost: vault.oss.test\r\n\r\n".to_owned(),
        ),
        (
            None,
            "GET /o HTTP/1.1\r\nHost: vault.oss.test\r\nHost: nopol.oss.test\r\n\r\n".to_owned(),
        ),
        (
            nopol,
            "GET http://vault.oss.test/o HTTP/1.1\r\nHost: nopol.oss.test\r\n\r\n".to_owned(),
        ),
        (
            None,
            "GET http://oss.test//vault/o HTTP/1.1\r\nHost: oss.test\r\n\r\n".to_owned(),
        ),
        (
            None,
            "GET http://vault.oss.test/o HTTP/1.1\r\n\r\n".to_owned(),
        ),
        (
            None,
            "GET /vault/o HTTP/1.1\r\nHost: storage.internal\r\n\r\n".to_owned(),
        ),
        (
            None,
            "GET /o HTTP/1.1\r\nHost: vault.oss.test\r\n\r\n".to_owned(),
        ),
        (
            bare,
            "GET /vault/o HTTP/1.1\r\nHost: oss.test\r\n\r\n".to_owned(),
        ),
        (
            None,
            "OPTIONS * HTTP/1.1\r\nHost: oss.test\r\nX-Original-URL: /vault/o\r\n\r\n".to_owned(),
        ),
        (
            None,
            "CONNECT vault.oss.test:443 HTTP/1.1\r\nHost: vault.oss.test:443\r\n\r\n".to_owned(),
        ),
        (
            bare,
            "GET /nopol\\..\\vault/o HTTP/1.1\r\nHost: oss.test\r\n\r\n".to_owned(),
        ),
        (
            bare,
            "GET /vault/o HTTP/1.1\r\nHost : oss.test\r\n\r\n".to_owned(),
        ),
    ]);
    for (sni, raw) in &cases {
        let mut s = tls(&edge, *sni, TLS12, b"http/1.1").await;
        let statuses: Vec<Option<u16>> = h1(&mut s, raw.as_bytes(), 1)
            .await
            .into_iter()
            .map(Some)
            .collect();
        assert_no_bypass(&edge, &format!("SNI {sni:?} {raw:?}"), &statuses);
    }
    println!("{} HTTP/1.x cases refused", cases.len());
}

#[tokio::test]
async fn pipelined_and_smuggled_requests_are_each_decided() {
    let edge = edge().await;
    for sni in [Some("nopol.oss.test"), Some("oss.test"), None] {
        let host = sni.unwrap_or("oss.test");
        let first = if host == "oss.test" {
            "GET /nopol/o HTTP/1.1\r\nHost: oss.test\r\n\r\n".to_owned()
        } else {
            format!("GET /o HTTP/1.1\r\nHost: {host}\r\n\r\n")
        };
        for second in [
            "GET /vault/o HTTP/1.1\r\n\r\n".to_owned(),
            format!("GET //vault/o HTTP/1.1\r\nHost: {host}\r\n\r\n"),
            format!("GET /o HTTP/1.1\r\nHost: {host}\r\nX-Forwarded-Host: vault.oss.test\r\n\r\n"),
            "GET /o HTTP/1.1\r\nHost: vault.oss.test:x\r\n\r\n".to_owned(),
        ] {
            let mut s = tls(&edge, sni, TLS12, b"http/1.1").await;
            let raw = format!("{first}{second}");
            let statuses = h1(&mut s, raw.as_bytes(), 2).await;
            let served = edge.upstream.take();
            assert_eq!(statuses.first(), Some(&200), "first of {raw:?}");
            assert!(
                served.iter().all(|s| s.bucket.as_deref() != Some("vault")),
                "pipelined {raw:?}: upstream served vault: {served:#?}"
            );
            let overridden = second.contains("X-Forwarded-Host");
            assert!(
                matches!(statuses.get(1), None | Some(400 | 403 | 421))
                    || (overridden && statuses.get(1) == Some(&200)),
                "pipelined {raw:?}: {statuses:?}"
            );
        }
    }
    // A body that hides a second request (CL + TE): the upstream gets re-framed requests only.
    let smuggle = "POST /o HTTP/1.1\r\nHost: nopol.oss.test\r\nContent-Length: 44\r\n\
                   Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /o HTTP/1.1\r\nHost: vault.oss.test\r\n\r\n";
    let mut s = tls(&edge, Some("nopol.oss.test"), TLS12, b"http/1.1").await;
    let statuses: Vec<Option<u16>> = h1(&mut s, smuggle.as_bytes(), 2)
        .await
        .into_iter()
        .skip(1)
        .map(Some)
        .collect();
    assert_no_bypass(&edge, "CL+TE smuggling", &statuses);
}

#[tokio::test]
async fn http2_bypasses_are_refused() {
    let edge = edge().await;
    let get = |path: &'static str| vec![(":method", "GET"), (":scheme", "https"), (":path", path)];
    let with = |mut base: Vec<(&'static str, &'static str)>,
                extra: &[(&'static str, &'static str)]| {
        base.extend_from_slice(extra);
        base
    };
    let mut cases: Vec<(Option<&str>, H2Request)> = Vec::new();
    for sni in [Some("nopol.oss.test"), Some("oss.test"), None] {
        cases.extend([
            (sni, get("/vault/o")),
            (sni, with(get("/vault/o"), &[("host", "")])),
            (sni, with(get("//vault/o"), &[(":authority", "oss.test")])),
            (
                sni,
                with(get("/nopol/%2e%2e/vault/o"), &[(":authority", "oss.test")]),
            ),
            (sni, with(get("/nopol/../vault/o"), &[("host", "oss.test")])),
            (sni, with(get("/o"), &[(":authority", "vault.oss.test:x")])),
            (sni, with(get("/o"), &[("host", "vault.oss.test..")])),
        ]);
    }
    cases.extend([
        (
            Some("nopol.oss.test"),
            with(
                get("/o"),
                &[(":authority", "nopol.oss.test"), ("host", "vault.oss.test")],
            ),
        ),
        (None, with(get("/o"), &[(":authority", "vault.oss.test")])),
        (
            None,
            with(get("/vault/o"), &[(":authority", "storage.internal")]),
        ),
    ]);
    for (sni, fields) in &cases {
        let mut s = tls(&edge, *sni, TLS12, b"h2").await;
        let statuses = h2(&mut s, std::slice::from_ref(fields)).await;
        assert_no_bypass(&edge, &format!("h2 SNI {sni:?} {fields:?}"), &statuses);
    }
    for (sni, fields, host) in [
        (
            Some("nopol.oss.test"),
            with(
                get("/o"),
                &[
                    (":authority", "nopol.oss.test"),
                    ("x-forwarded-host", "vault.oss.test"),
                ],
            ),
            "nopol.oss.test",
        ),
        (
            Some("nopol.oss.test"),
            with(
                get("/o"),
                &[
                    (":authority", "nopol.oss.test"),
                    ("forwarded", "host=vault.oss.test"),
                ],
            ),
            "nopol.oss.test",
        ),
        (
            Some("oss.test"),
            with(
                get("/nopol/o"),
                &[(":authority", "oss.test"), ("x-original-url", "/vault/o")],
            ),
            "oss.test",
        ),
    ] {
        let mut s = tls(&edge, sni, TLS12, b"h2").await;
        let statuses = h2(&mut s, std::slice::from_ref(&fields)).await;
        let served = edge.upstream.take();
        assert_eq!(statuses, [Some(200)], "{fields:?}");
        assert_eq!(
            served_buckets(&served),
            [Some("nopol".to_owned())],
            "{fields:?}"
        );
        assert_rewritten(&served[0], host);
    }
    // Two requests on one connection: a legitimate one, then one naming no host.
    let mut s = tls(&edge, Some("nopol.oss.test"), TLS12, b"h2").await;
    let statuses = h2(
        &mut s,
        &[
            with(get("/o"), &[(":authority", "nopol.oss.test")]),
            get("/vault/o"),
        ],
    )
    .await;
    assert_eq!(statuses[0], Some(200));
    assert_no_bypass(&edge, "h2 second stream without :authority", &statuses[1..]);
    println!("{} HTTP/2 cases refused", cases.len() + 1);
}

#[tokio::test]
async fn legitimate_requests_keep_working_in_every_style() {
    let edge = edge().await;
    let ip_host = format!("127.0.0.1:{}", edge.agent.tls.port());
    // (SNI, version, raw request, bucket served, target and Host the upstream must get)
    let cases: Vec<LegitCase> = vec![
        (
            Some("vault.oss.test"),
            TLS13,
            "GET /o HTTP/1.1\r\nHost: vault.oss.test\r\n\r\n".into(),
            "vault",
            "/o",
            "vault.oss.test".into(),
        ),
        (
            Some("vault.oss.test"),
            TLS13,
            "GET /a/b?x=1 HTTP/1.1\r\nHost: Vault.OSS.test.:8443\r\n\r\n".into(),
            "vault",
            "/a/b?x=1",
            "vault.oss.test:8443".into(),
        ),
        (
            Some("oss.test"),
            TLS13,
            "GET /vault/o HTTP/1.1\r\nHost: oss.test\r\n\r\n".into(),
            "vault",
            "/vault/o",
            "oss.test".into(),
        ),
        (
            None,
            TLS13,
            format!("GET /vault/o HTTP/1.1\r\nHost: {ip_host}\r\n\r\n"),
            "vault",
            "/vault/o",
            ip_host.clone(),
        ),
        (
            Some("vault.oss.test"),
            TLS13,
            "GET /o HTTP/1.0\r\nHost: vault.oss.test\r\n\r\n".into(),
            "vault",
            "/o",
            "vault.oss.test".into(),
        ),
        (
            Some("nopol.oss.test"),
            TLS12,
            "GET /o HTTP/1.1\r\nHost: nopol.oss.test\r\n\r\n".into(),
            "nopol",
            "/o",
            "nopol.oss.test".into(),
        ),
        (
            Some("oss.test"),
            TLS12,
            "GET /%6eopol/o%20p HTTP/1.1\r\nHost: oss.test\r\n\r\n".into(),
            "nopol",
            "/nopol/o%20p",
            "oss.test".into(),
        ),
        (
            Some("nopol.oss.test"),
            TLS12,
            "GET http://nopol.oss.test/o HTTP/1.1\r\nHost: nopol.oss.test\r\n\r\n".into(),
            "nopol",
            "/o",
            "nopol.oss.test".into(),
        ),
        // A fragment is no part of the target the upstream gets.
        (
            Some("oss.test"),
            TLS12,
            "GET /nopol/o#/../../vault/o HTTP/1.1\r\nHost: oss.test\r\n\r\n".into(),
            "nopol",
            "/nopol/o",
            "oss.test".into(),
        ),
        (
            Some("nopol.oss.test"),
            TLS12,
            "PUT /o HTTP/1.1\r\nHost: nopol.oss.test\r\nContent-Length: 5\r\n\r\nhello".into(),
            "nopol",
            "/o",
            "nopol.oss.test".into(),
        ),
    ];
    for (sni, version, raw, bucket, target, host) in &cases {
        let mut s = tls(&edge, *sni, version, b"http/1.1").await;
        let statuses = h1(&mut s, raw.as_bytes(), 1).await;
        let served = edge.upstream.take();
        assert_eq!(statuses, [200], "{raw:?}: {served:#?}");
        assert_eq!(served.len(), 1, "{raw:?}");
        let s = &served[0];
        assert_eq!(s.bucket.as_deref(), Some(*bucket), "{raw:?}");
        assert_eq!(s.target, *target, "{raw:?}");
        assert_eq!(s.header("host"), Some(host.as_str()), "{raw:?}");
        assert_eq!(s.header("x-forwarded-host"), Some(host.as_str()), "{raw:?}");
        assert_eq!(s.header("x-tlsfleet-bucket"), Some(*bucket), "{raw:?}");
    }
    // HTTP/2, both styles.
    for (sni, version, fields, bucket) in [
        (
            Some("vault.oss.test"),
            TLS13,
            vec![
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/o"),
                (":authority", "vault.oss.test"),
            ],
            "vault",
        ),
        (
            Some("oss.test"),
            TLS13,
            vec![
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/vault/o"),
                (":authority", "oss.test"),
            ],
            "vault",
        ),
        (
            Some("nopol.oss.test"),
            TLS12,
            vec![
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/o"),
                ("host", "nopol.oss.test"),
            ],
            "nopol",
        ),
    ] {
        let mut s = tls(&edge, sni, version, b"h2").await;
        let statuses = h2(&mut s, std::slice::from_ref(&fields)).await;
        let served = edge.upstream.take();
        assert_eq!(statuses, [Some(200)], "{fields:?}: {served:#?}");
        assert_eq!(
            served_buckets(&served),
            [Some(bucket.to_owned())],
            "{fields:?}"
        );
    }
    // The endpoint itself (a ListBuckets-style request) has no bucket.
    let mut s = tls(&edge, Some("oss.test"), TLS12, b"http/1.1").await;
    // A client's own X-Tlsfleet-* headers never reach the upstream.
    let listing = b"GET / HTTP/1.1\r\nHost: oss.test\r\nX-Tlsfleet-Bucket: vault\r\n\
                    X_Tlsfleet_Tls_Version: TLSv1.3\r\n\r\n";
    assert_eq!(h1(&mut s, listing, 1).await, [200]);
    let served = edge.upstream.take();
    assert_eq!(served_buckets(&served), [None]);
    assert_eq!(served[0].header("x-tlsfleet-bucket"), None);
    let versions: Vec<&str> = served[0]
        .headers
        .iter()
        .filter(|(k, _)| k == "x-tlsfleet-tls-version")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(versions, ["TLSv1.2"], "only the agent's own");
}

#[test]
fn h2_status_decoding() {
    assert_eq!(h2_status(&[0x88]), Some(200));
    assert_eq!(h2_status(&[0x8c]), Some(400));
    assert_eq!(h2_status(&[0x48, 0x03, b'4', b'2', b'1']), Some(421));
    // "403" Huffman-coded: 011010 00000 011001 + 1-padding.
    assert_eq!(
        h2_status(&[0x48, 0x83, 0b0110_1000, 0b0000_1100, 0b1111_1111]),
        Some(403)
    );
}

#[tokio::test]
async fn path_style_forwarding_serves_the_checked_bucket_to_an_upstream_that_routes_by_path() {
    // The upstream knows no domain of the agent's: it routes every request by its path.
    let edge = edge_with("unknown.test", &["--upstream-path-style"]).await;
    for (sni, version, raw, bucket, target, host) in [
        (
            Some("vault.oss.test"),
            TLS13,
            "GET /o HTTP/1.1\r\nHost: vault.oss.test:8443\r\n\r\n",
            "vault",
            "/vault/o",
            "oss.test:8443",
        ),
        (
            Some("nopol.oss.test"),
            TLS12,
            "GET /vault/o HTTP/1.1\r\nHost: nopol.oss.test\r\n\r\n",
            "nopol",
            "/nopol/vault/o",
            "oss.test",
        ),
        (
            Some("oss.test"),
            TLS13,
            "GET /vault/o HTTP/1.1\r\nHost: oss.test\r\n\r\n",
            "vault",
            "/vault/o",
            "oss.test",
        ),
    ] {
        let mut s = tls(&edge, sni, version, b"http/1.1").await;
        assert_eq!(h1(&mut s, raw.as_bytes(), 1).await, [200], "{raw:?}");
        let served = edge.upstream.take();
        assert_eq!(
            served_buckets(&served),
            [Some(bucket.to_owned())],
            "{raw:?}"
        );
        assert_eq!(served[0].target, target, "{raw:?}");
        assert_eq!(served[0].header("host"), Some(host), "{raw:?}");
    }
}
