//! Per-request enforcement over HTTP/1.1 and HTTP/2, the built-in responder, the upstream
//! proxy, the admin endpoint and shutdown.

#![allow(clippy::unwrap_used)] // tests may unwrap (STYLE: only what peers control may not)

mod common;

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tlsfleet_policy::TlsVersion;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

fn assert_oss_error(reply: &Reply, status: u16, code: &str) {
    assert_eq!(reply.status, status, "{reply:?}");
    assert_eq!(reply.headers["content-type"], "application/xml");
    let id = reply.headers["x-oss-request-id"].to_str().unwrap();
    assert_eq!(id.len(), 24);
    assert!(
        reply
            .body
            .starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"),
        "{}",
        reply.body
    );
    assert!(
        reply.body.contains(&format!("<Code>{code}</Code>")),
        "{}",
        reply.body
    );
    assert!(
        reply.body.contains(&format!("<RequestId>{id}</RequestId>")),
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn the_responder_reports_what_was_negotiated() {
    let agent = Agent::start().await;
    agent
        .table
        .apply_snapshot(9, vec![(bucket("aaa"), tls13_only())]);
    let tls = agent
        .connect(agent.client(&[TLS13], None), Some("aaa.oss.test"))
        .await
        .unwrap();
    let reply = H1::new(tls)
        .await
        .get("aaa.oss.test:8443", "/some/key")
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.headers["content-type"], "application/json");
    let doc = reply.json();
    assert_eq!(doc["bucket"], "aaa");
    assert_eq!(doc["tls_version"], "TLSv1.3");
    assert_eq!(doc["cipher_suite"], "TLS_AES_256_GCM_SHA384");
    assert_eq!(doc["revision"], 9);
    assert_eq!(doc["sni"], "aaa.oss.test");

    // The bare domain with path `/` targets no bucket: the endpoint policy allows it.
    let tls = agent
        .connect(agent.client(&[TLS12], None), None)
        .await
        .unwrap();
    let reply = H1::new(tls).await.get("oss.test", "/").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json()["bucket"], serde_json::Value::Null);
    assert_eq!(reply.json()["sni"], serde_json::Value::Null);
    agent.stop().await;
}

/// A client that closes first is not sent a `close_notify` (the write would only draw a reset
/// from a peer that has gone, as nginx knows); one the agent closes is, after the response.
#[tokio::test]
async fn close_notify_is_sent_when_the_agent_closes_first_only() {
    let agent = Agent::start().await;
    agent
        .table
        .apply_snapshot(3, vec![(bucket("aaa"), tls12_and_13())]);
    for version in [TLS12, TLS13] {
        // The client closes right after the handshake: the agent ends the TCP connection
        // without an alert, which a TLS client reads as an end without close_notify.
        let mut tls = agent
            .connect(agent.client(&[version], None), Some("aaa.oss.test"))
            .await
            .unwrap();
        tls.shutdown().await.unwrap();
        let mut rest = Vec::new();
        let end = tls.read_to_end(&mut rest).await;
        assert_eq!(
            end.map_err(|e| e.kind()),
            Err(std::io::ErrorKind::UnexpectedEof),
            "{version:?}: no close_notify after the client's"
        );

        // `Connection: close`: the agent closes after its response, with a close_notify.
        let mut tls = agent
            .connect(agent.client(&[version], None), Some("aaa.oss.test"))
            .await
            .unwrap();
        tls.write_all(b"GET /k HTTP/1.1\r\nhost: aaa.oss.test\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut reply = Vec::new();
        tls.read_to_end(&mut reply)
            .await
            .unwrap_or_else(|e| panic!("{version:?}: a clean end after the response: {e}"));
        assert!(reply.starts_with(b"HTTP/1.1 200"), "{version:?}");
    }
    agent.stop().await;
}

#[tokio::test]
async fn a_host_other_than_the_sni_is_misdirected() {
    let agent = Agent::start().await;
    agent
        .table
        .apply_snapshot(2, vec![(bucket("aaa"), tls13_only())]);
    let tls = agent
        .connect(agent.client(&[TLS13], None), Some("bbb.oss.test"))
        .await
        .unwrap();
    let mut h1 = H1::new(tls).await;
    let reply = h1.get("aaa.oss.test", "/key").await;
    assert_oss_error(&reply, 421, "MisdirectedRequest");
    // The same connection still serves its own host.
    assert_eq!(h1.get("BBB.oss.test.", "/key").await.status, 200);
    let (_, metrics) = agent.admin_get("/metrics").await;
    assert!(
        metrics.contains("requests_refused_total{status=\"421\"} 1"),
        "{metrics}"
    );
    agent.stop().await;
}

#[tokio::test]
async fn a_path_style_request_is_checked_against_its_bucket() {
    let agent = Agent::start().await;
    agent
        .table
        .apply_snapshot(2, vec![(bucket("aaa"), tls13_only())]);
    let tls = agent
        .connect(agent.client(&[TLS12], None), Some("oss.test"))
        .await
        .unwrap();
    let mut h1 = H1::new(tls).await;
    let reply = h1.get("oss.test", "/aaa/key").await;
    assert_oss_error(&reply, 403, "AccessDenied");
    assert!(
        reply
            .body
            .contains("TLSv1.2 is not allowed for bucket aaa; allowed: TLSv1.3"),
        "{}",
        reply.body
    );
    assert!(
        reply.body.contains("<BucketName>aaa</BucketName>"),
        "{}",
        reply.body
    );
    // A percent-encoded name designates the same bucket.
    assert_eq!(h1.get("oss.test", "/a%61a/key").await.status, 403);
    assert_eq!(h1.get("oss.test", "/bbb/key").await.status, 200);
    assert_oss_error(
        &h1.get("oss.test", "/Not_A_Bucket/key").await,
        400,
        "InvalidBucketName",
    );
    let (_, metrics) = agent.admin_get("/metrics").await;
    assert!(
        metrics.contains("requests_refused_total{status=\"403\"} 2"),
        "{metrics}"
    );
    agent.stop().await;
}

#[tokio::test]
async fn a_suite_refusal_names_the_suite() {
    let agent = Agent::start().await;
    // The connection negotiates ECDHE-ECDSA-AES256-GCM-SHA384 on the bare domain...
    let client = agent.client(
        &[TLS12],
        Some(&[tlsfleet_policy::ServedSuite::EcdheEcdsaAes256GcmSha384]),
    );
    let tls = agent.connect(client, Some("oss.test")).await.unwrap();
    let mut h1 = H1::new(tls).await;
    // ...which bucket aaa does not allow.
    agent.table.apply_snapshot(
        2,
        vec![(
            bucket("aaa"),
            custom(
                &[TlsVersion::Tls12],
                &["ECDHE-ECDSA-AES128-GCM-SHA256"],
                &[],
            ),
        )],
    );
    let reply = h1.get("oss.test", "/aaa/key").await;
    assert_oss_error(&reply, 403, "AccessDenied");
    assert!(
        reply.body.contains(
            "cipher suite TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 is not allowed for bucket aaa over \
             TLSv1.2; allowed: TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
        ),
        "{}",
        reply.body
    );
    agent.stop().await;
}

#[tokio::test]
async fn a_keep_alive_connection_gets_403_after_its_bucket_is_tightened() {
    let agent = Agent::start().await;
    agent
        .table
        .apply_snapshot(2, vec![(bucket("aaa"), tls12_and_13())]);
    let tls = agent
        .connect(agent.client(&[TLS12], None), Some("aaa.oss.test"))
        .await
        .unwrap();
    let mut h1 = H1::new(tls).await;
    assert_eq!(h1.get("aaa.oss.test", "/key").await.status, 200);
    assert!(agent
        .table
        .apply_delta(3, vec![(bucket("aaa"), tls13_only())], vec![])
        .is_ack());
    let reply = h1.get("aaa.oss.test", "/key").await;
    assert_oss_error(&reply, 403, "AccessDenied");
    // Loosened again: the same connection is served again.
    agent.table.apply_delta(4, vec![], vec![bucket("aaa")]);
    assert_eq!(h1.get("aaa.oss.test", "/key").await.status, 200);
    agent.stop().await;
}

#[tokio::test]
async fn http2_requests_are_enforced_too() {
    let agent = Agent::start().await;
    agent
        .table
        .apply_snapshot(2, vec![(bucket("aaa"), tls13_only())]);
    let config = client_config(&agent.pki, &[TLS12, TLS13], None, &[b"h2"]);
    let tls = agent
        .connect(config.clone(), Some("aaa.oss.test"))
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut h2 = h2_client(tls).await;
    let req = Request::get("https://aaa.oss.test/key")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let reply = Reply::read(h2.send_request(req).await.unwrap()).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json()["bucket"], "aaa");
    assert_eq!(reply.json()["tls_version"], "TLSv1.3");

    // A TLS 1.2 HTTP/2 connection on the bare domain, path-style to aaa: 403; to bbb: 200.
    let config = client_config(&agent.pki, &[TLS12], None, &[b"h2"]);
    let tls = agent.connect(config, Some("oss.test")).await.unwrap();
    let mut h2 = h2_client(tls).await;
    let req = Request::get("https://oss.test/aaa/key")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(h2.send_request(req).await.unwrap().status(), 403);
    let req = Request::get("https://oss.test/bbb/key")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(h2.send_request(req).await.unwrap().status(), 200);
    // :authority of another bucket than the SNI: 421.
    let req = Request::get("https://bbb.oss.test/key")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(h2.send_request(req).await.unwrap().status(), 421);
    agent.stop().await;
}

/// An upstream that answers with a JSON echo of what it received.
async fn echo_upstream() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = service_fn(|req: Request<Incoming>| async move {
                    let method = req.method().to_string();
                    let uri = req.uri().to_string();
                    let headers: serde_json::Map<String, serde_json::Value> = req
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
                        .collect();
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let doc = serde_json::json!({
                        "method": method,
                        "uri": uri,
                        "headers": headers,
                        "body": String::from_utf8_lossy(&body),
                    });
                    let mut resp = Response::new(Full::new(Bytes::from(doc.to_string())));
                    resp.headers_mut()
                        .insert("x-upstream", "yes".parse().unwrap());
                    Ok::<_, Infallible>(resp)
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn allowed_requests_reach_the_upstream_with_forwarding_headers() {
    let (upstream, upstream_task) = echo_upstream().await;
    let agent = Agent::start_with(AgentOptions {
        upstream: Some(format!("http://{upstream}").parse().unwrap()),
        ..Default::default()
    })
    .await;
    agent
        .table
        .apply_snapshot(2, vec![(bucket("aaa"), tls13_only())]);
    let tls = agent
        .connect(agent.client(&[TLS13], None), Some("aaa.oss.test"))
        .await
        .unwrap();
    let mut h1 = H1::new(tls).await;
    let req = Request::put("/dir/object.txt?acl&x=1")
        .header("host", "aaa.oss.test")
        .header("x-oss-meta-k", "v")
        .header("x-tlsfleet-bucket", "spoofed")
        .header("x-forwarded-for", "10.0.0.1")
        .header("connection", "keep-alive, x-private")
        .header("x-private", "hop")
        .body(Full::new(Bytes::from_static(b"hello upstream")))
        .unwrap();
    let reply = h1.send(req).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.headers["x-upstream"], "yes");
    let doc = reply.json();
    assert_eq!(doc["method"], "PUT");
    assert_eq!(doc["uri"], "/dir/object.txt?acl&x=1");
    assert_eq!(doc["body"], "hello upstream");
    let h = &doc["headers"];
    assert_eq!(h["host"], "aaa.oss.test");
    assert_eq!(h["x-oss-meta-k"], "v");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-tlsfleet-tls-version"], "TLSv1.3");
    assert_eq!(h["x-tlsfleet-cipher-suite"], "TLS_AES_256_GCM_SHA384");
    assert_eq!(h["x-tlsfleet-bucket"], "aaa");
    assert!(h.get("x-private").is_none(), "{h}");

    // HTTP/2 in, HTTP/1.1 out: the Host comes from :authority.
    let tls = agent
        .connect(
            client_config(&agent.pki, &[TLS13], None, &[b"h2"]),
            Some("aaa.oss.test"),
        )
        .await
        .unwrap();
    let mut h2 = h2_client(tls).await;
    let req = Request::post("https://aaa.oss.test/k")
        .body(Full::new(Bytes::from("h2 body")))
        .unwrap();
    let reply = Reply::read(h2.send_request(req).await.unwrap()).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json()["headers"]["host"], "aaa.oss.test");
    assert_eq!(reply.json()["body"], "h2 body");

    // A refused request never reaches the upstream.
    let reply = h1.get("oss.test", "/key").await;
    assert_eq!(reply.status, 421);
    agent.stop().await;
    upstream_task.abort();
}

#[tokio::test]
async fn a_dead_upstream_is_answered_502() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let agent = Agent::start_with(AgentOptions {
        upstream: Some(format!("http://{closed}").parse().unwrap()),
        ..Default::default()
    })
    .await;
    agent.table.apply_snapshot(1, vec![]);
    let tls = agent
        .connect(agent.client(&[TLS13], None), Some("aaa.oss.test"))
        .await
        .unwrap();
    let reply = H1::new(tls).await.get("aaa.oss.test", "/k").await;
    assert_oss_error(&reply, 502, "BadGateway");
    assert!(
        reply.body.contains("<BucketName>aaa</BucketName>"),
        "{}",
        reply.body
    );
    agent.stop().await;
}

#[tokio::test]
async fn shutdown_drains_open_connections_within_the_grace_period() {
    let agent = Agent::start_with(AgentOptions {
        grace: Some(Duration::from_secs(5)),
        ..Default::default()
    })
    .await;
    agent.table.apply_snapshot(1, vec![]);
    // An idle keep-alive HTTP/1.1 connection and an HTTP/2 one.
    let tls = agent
        .connect(agent.client(&[TLS13], None), Some("aaa.oss.test"))
        .await
        .unwrap();
    let mut h1 = H1::new(tls).await;
    assert_eq!(h1.get("aaa.oss.test", "/k").await.status, 200);
    let config = client_config(&agent.pki, &[TLS13], None, &[b"h2"]);
    let tls = agent.connect(config, Some("aaa.oss.test")).await.unwrap();
    let mut h2 = h2_client(tls).await;
    let req = Request::get("https://aaa.oss.test/k")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(h2.send_request(req).await.unwrap().status(), 200);
    let addr = agent.addr;
    let started = std::time::Instant::now();
    agent.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "idle connections close at once"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}

#[tokio::test]
async fn the_admin_endpoint_reports_health_and_metrics() {
    let agent = Agent::start().await;
    agent.table.apply_snapshot(
        12,
        vec![
            (bucket("aaa"), tls13_only()),
            (bucket("bbb"), tls13_only()),
            (bucket("ccc"), tls12_and_13()),
        ],
    );
    agent
        .readiness
        .set_sync_state(tlsfleet_agent::readiness::SyncState::Synced);
    agent.metrics.inc_nacks();
    assert_eq!(agent.admin_get("/healthz").await, (200, "ok\n".to_owned()));
    let (status, metrics) = agent.admin_get("/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "tlsfleet_agent_applied_revision 12",
        "tlsfleet_agent_policies_loaded 3",
        "tlsfleet_agent_distinct_configs 2",
        "tlsfleet_agent_sync_state{state=\"synced\"} 1",
        "tlsfleet_agent_sync_state{state=\"connecting\"} 0",
        "tlsfleet_agent_nacks_total 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing in\n{metrics}"
        );
    }
    assert_eq!(agent.admin_get("/nope").await.0, 404);
    agent.stop().await;
}

#[tokio::test]
async fn requests_still_running_after_the_grace_period_are_dropped() {
    // An upstream that accepts and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = silent.local_addr().unwrap();
    let (accepted_tx, accepted_rx) = tokio::sync::oneshot::channel();
    let hold = tokio::spawn(async move {
        let (tcp, _) = silent.accept().await.unwrap();
        let _ = accepted_tx.send(());
        // Keep the socket open until the test ends.
        std::future::pending::<()>().await;
        drop(tcp);
    });
    let agent = Agent::start_with(AgentOptions {
        upstream: Some(format!("http://{upstream}").parse().unwrap()),
        grace: Some(Duration::from_millis(300)),
        ..Default::default()
    })
    .await;
    agent.table.apply_snapshot(1, vec![]);
    let tls = agent
        .connect(agent.client(&[TLS13], None), Some("aaa.oss.test"))
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/slow")
        .header("host", "aaa.oss.test")
        .body(Full::new(Bytes::new()));
    let in_flight = tokio::spawn(send.send_request(req.unwrap()));
    accepted_rx.await.unwrap();

    let started = std::time::Instant::now();
    agent.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        in_flight.await.unwrap().is_err(),
        "the dropped request fails at the client"
    );
    hold.abort();
}
