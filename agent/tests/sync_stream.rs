//! The sync client against a scripted FleetService over real gRPC on loopback: the test plays
//! the control server, message by message.

#![allow(clippy::unwrap_used)] // a test may panic: that is how it fails

mod sync_support;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use sync_support::*;
use tlsfleet_agent::{
    cache::Cache,
    metrics::Metrics,
    readiness::{Readiness, SyncState},
    sync::{ControlTls, Credentials, SyncClient, SyncConfig},
    table::{Lookup, PolicyTable},
    tls::{CertResolver, ConfigFactory},
};
use tlsfleet_policy::{CipherSuiteConfig, HttpsConfig, PolicyKey, TlsVersion};
use tlsfleet_proto::{
    auth::{self, SignedHeader},
    v1::{self as pb, agent_message, BucketPolicy},
};
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

// ---------------------------------------------------------------- the agent side

fn metrics() -> Arc<Metrics> {
    Arc::new(Metrics::new())
}

struct Agent {
    table: Arc<PolicyTable>,
    readiness: Arc<Readiness>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Agent {
    fn start(endpoints: Vec<String>, cache: Option<Cache>, table: Arc<PolicyTable>) -> Self {
        let mut cfg = SyncConfig::new(endpoints, "edge-test-1");
        cfg.labels = BTreeMap::from([("zone".to_owned(), "z1".to_owned())]);
        cfg.credentials = Some(Credentials {
            access_key_id: KEY_ID.to_owned(),
            secret: SECRET.to_owned(),
        });
        cfg.backoff_min = Duration::from_millis(10);
        cfg.backoff_max = Duration::from_millis(100);
        cfg.connect_timeout = Duration::from_secs(2);
        let readiness = Arc::new(Readiness::default());
        let client = SyncClient::new(cfg, table.clone(), metrics(), readiness.clone()).unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(client.run(cache, shutdown.clone()));
        Self {
            table,
            readiness,
            shutdown,
            task,
        }
    }

    /// Stops the client and checks that it stops promptly.
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(3), self.task)
            .await
            .expect("the sync client did not stop on shutdown")
            .unwrap();
    }
}

/// An empty, not-ready table serving a fresh ECDSA certificate for `oss.test`.
fn new_table() -> Arc<PolicyTable> {
    let _ = tlsfleet_policy::tls::provider().install_default();
    let leaf = tlsfleet_testkit::tls::TestCa::new().leaf(
        &["oss.test", "*.oss.test"],
        tlsfleet_testkit::tls::KeyKind::EcdsaP256,
    );
    let resolver = CertResolver::from_pem(
        leaf.cert_pem.as_bytes(),
        leaf.key_pem.as_bytes(),
        &["oss.test".to_owned()],
    )
    .unwrap();
    Arc::new(PolicyTable::new(
        ConfigFactory::new(Arc::new(resolver)).unwrap(),
    ))
}

fn policy_of(table: &PolicyTable, name: &str) -> Option<HttpsConfig> {
    let b = bucket(name);
    table
        .snapshot()
        .policies()
        .into_iter()
        .find(|(n, _)| *n == b)
        .map(|(_, c)| c)
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn snapshot_then_deltas_are_acked_nacked_and_resumed_from_our_revision() {
    let (server, mut calls) = interactive().await;
    let agent = Agent::start(vec![server.url()], None, new_table());
    let tls13 = versions(&[TlsVersion::Tls13]);
    let both = versions(&[TlsVersion::Tls12, TlsVersion::Tls13]);

    let mut call = next_call(&mut calls).await;
    assert_eq!(call.hello.node_id, "edge-test-1");
    assert_eq!(
        call.hello.labels.get("zone").map(String::as_str),
        Some("z1")
    );
    assert_eq!(call.hello.last_revision, 0);
    assert_eq!(call.hello.agent_version, env!("CARGO_PKG_VERSION"));
    let header =
        SignedHeader::parse(call.authorization.as_deref().expect("unsigned call")).unwrap();
    assert_eq!(header.access_key_id, KEY_ID);
    assert!(auth::verify(
        SECRET,
        &header,
        tlsfleet_proto::v1::methods::FLEET_SERVICE_SYNC,
        &hello_digest(&call.hello)
    ));
    assert!(
        !agent.table.snapshot().is_ready(),
        "ready before any snapshot"
    );

    call.send(snapshot(
        10,
        vec![wire("bucket-a", &tls13), wire("bucket-b", &both)],
    ))
    .await;
    assert_eq!(call.answer().await, ack(10));
    assert_eq!(agent.table.snapshot().revision(), Some(10));
    assert!(agent.table.snapshot().is_ready());
    assert_eq!(agent.table.snapshot().len(), 2);
    assert_eq!(agent.readiness.sync_state(), SyncState::Synced);

    call.send(delta(10, 11, vec![wire("bucket-c", &tls13)], &["bucket-b"]))
        .await;
    assert_eq!(call.answer().await, ack(11));
    assert_eq!(agent.table.snapshot().revision(), Some(11));
    assert_eq!(policy_of(&agent.table, "bucket-b"), None);
    assert_eq!(policy_of(&agent.table, "bucket-c"), Some(tls13.clone()));

    // Policies that do not even convert are NACKed by bucket; the rest of the revision applies.
    let mut unknown_version = pb::HttpsConfig::from(&tls13);
    unknown_version.tls.as_mut().unwrap().tls_versions = vec!["TLSv9".into()];
    let bad = BucketPolicy {
        bucket: "bucket-a".into(),
        config: Some(unknown_version),
        ..Default::default()
    };
    call.send(delta(
        11,
        12,
        vec![bad, wire("Not_A_Bucket", &both), wire("bucket-d", &both)],
        &[],
    ))
    .await;
    let agent_message::Kind::Nack(nack) = call.answer().await else {
        panic!("expected a NACK");
    };
    assert_eq!(nack.revision, 12);
    let mut failed: Vec<_> = nack.errors.iter().map(|e| e.bucket.as_str()).collect();
    failed.sort();
    assert_eq!(failed, ["Not_A_Bucket", "bucket-a"]);
    assert!(nack.errors.iter().all(|e| !e.reason.is_empty()));
    // Refused, not kept on its previous config: the newest policy is unknown.
    assert_eq!(policy_of(&agent.table, "bucket-a"), None);
    assert!(matches!(
        agent.table.snapshot().lookup("bucket-a"),
        Lookup::Refused
    ));
    assert_eq!(policy_of(&agent.table, "bucket-d"), Some(both.clone()));

    // The server ends the stream (it is shutting down): the agent comes back from revision 12.
    drop(call);
    let mut call = next_call(&mut calls).await;
    assert_eq!(call.hello.last_revision, 12);
    let again = SignedHeader::parse(call.authorization.as_deref().unwrap()).unwrap();
    assert_ne!(again.nonce, header.nonce, "a nonce was reused");
    call.send(delta(12, 13, vec![], &["bucket-d"])).await;
    assert_eq!(call.answer().await, ack(13));

    // A delta that does not start at our revision: no answer, a new stream from 13.
    call.send(delta(20, 21, vec![wire("bucket-e", &both)], &[]))
        .await;
    let call = next_call(&mut calls).await;
    assert_eq!(call.hello.last_revision, 13);
    assert_eq!(policy_of(&agent.table, "bucket-e"), None);

    agent.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn a_snapshot_refuses_a_bucket_whose_policy_does_not_convert() {
    let (server, mut calls) = interactive().await;
    let agent = Agent::start(vec![server.url()], None, new_table());
    let tls13 = versions(&[TlsVersion::Tls13]);
    let both = versions(&[TlsVersion::Tls12, TlsVersion::Tls13]);

    let mut call = next_call(&mut calls).await;
    call.send(snapshot(
        5,
        vec![wire("bucket-a", &tls13), wire("bucket-b", &tls13)],
    ))
    .await;
    assert_eq!(call.answer().await, ack(5));

    let no_config = BucketPolicy {
        bucket: "bucket-a".into(),
        config: None,
        ..Default::default()
    };
    call.send(snapshot(6, vec![no_config, wire("bucket-b", &both)]))
        .await;
    let agent_message::Kind::Nack(nack) = call.answer().await else {
        panic!("expected a NACK");
    };
    assert_eq!((nack.revision, nack.errors.len()), (6, 1));
    assert_eq!(nack.errors[0].bucket, "bucket-a");
    // Never looser than the newest policy: what it says is unknown, so the bucket is refused
    // (its older TLS 1.3-only config is not kept either).
    assert!(matches!(
        agent.table.snapshot().lookup("bucket-a"),
        Lookup::Refused
    ));
    assert_eq!(
        agent.table.snapshot().policy_key("bucket-a"),
        PolicyKey::NONE
    );
    assert_eq!(policy_of(&agent.table, "bucket-a"), None);
    assert_eq!(policy_of(&agent.table, "bucket-b"), Some(both));
    assert_eq!(agent.table.snapshot().revision(), Some(6));
    assert_eq!(
        agent.table.snapshot().refused_without_policy(),
        [bucket("bucket-a")]
    );

    agent.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn a_policy_the_certificate_cannot_serve_is_nacked_and_never_served_looser() {
    let (server, mut calls) = interactive().await;
    let agent = Agent::start(vec![server.url()], None, new_table());
    let tls13 = versions(&[TlsVersion::Tls13]);
    // TLS 1.2 only, with only an RSA suite, while the agent's certificate is ECDSA.
    let rsa_only = HttpsConfig {
        cipher_suite: Some(CipherSuiteConfig {
            enable: Some(true),
            strong_cipher_suite: Some(false),
            custom_cipher_suites: vec!["ECDHE-RSA-AES128-GCM-SHA256".into()],
            tls13_custom_cipher_suites: vec![],
        }),
        ..versions(&[TlsVersion::Tls12])
    };

    let mut call = next_call(&mut calls).await;
    call.send(snapshot(1, vec![wire("bucket-a", &tls13)])).await;
    assert_eq!(call.answer().await, ack(1));
    call.send(delta(
        1,
        2,
        vec![wire("bucket-a", &rsa_only), wire("bucket-b", &tls13)],
        &[],
    ))
    .await;
    let agent_message::Kind::Nack(nack) = call.answer().await else {
        panic!("expected a NACK");
    };
    assert_eq!(nack.revision, 2);
    assert_eq!(nack.errors.len(), 1, "{nack:?}");
    assert_eq!(nack.errors[0].bucket, "bucket-a");
    assert!(
        nack.errors[0].reason.contains("ECDHE-RSA"),
        "{}",
        nack.errors[0].reason
    );
    // What both the old (TLS 1.3 only) and the new (TLS 1.2, RSA) policy allow is nothing:
    // the bucket is refused rather than left on TLS 1.3.
    assert!(
        nack.errors[0].reason.contains("refused"),
        "{}",
        nack.errors[0].reason
    );
    assert!(matches!(
        agent.table.snapshot().lookup("bucket-a"),
        Lookup::Refused
    ));
    assert_eq!(policy_of(&agent.table, "bucket-a"), Some(rsa_only));
    assert_eq!(policy_of(&agent.table, "bucket-b"), Some(tls13));
    assert_eq!(agent.table.snapshot().revision(), Some(2));

    // The stream goes on after a NACK.
    call.send(delta(2, 3, vec![], &["bucket-b"])).await;
    assert_eq!(call.answer().await, ack(3));

    agent.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn every_applied_revision_reaches_the_cache_and_a_restart_resumes_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path());
    let (server, mut calls) = interactive().await;
    let agent = Agent::start(vec![server.url()], Some(cache.clone()), new_table());
    let tls13 = versions(&[TlsVersion::Tls13]);

    let mut call = next_call(&mut calls).await;
    call.send(snapshot(30, vec![wire("bucket-a", &tls13)]))
        .await;
    assert_eq!(call.answer().await, ack(30));
    eventually("revision 30 in the cache", || {
        cache
            .load()
            .ok()
            .flatten()
            .is_some_and(|s| s.revision == 30)
    })
    .await;

    // A burst: the writer may coalesce, but the last revision always ends up on disk.
    for rev in 31..=60 {
        let name = format!("bucket-{rev}");
        call.send(delta(rev - 1, rev, vec![wire(&name, &tls13)], &[]))
            .await;
    }
    for rev in 31..=60 {
        assert_eq!(call.answer().await, ack(rev));
    }
    agent.stop().await;
    let stored = cache.load().unwrap().expect("nothing cached");
    assert_eq!(
        stored.revision, 60,
        "shutdown did not flush the last revision"
    );
    assert_eq!(stored.policies.len(), 31);

    // A new agent loads the cache (as main does) and resumes from its revision.
    let table = new_table();
    let outcome = table.apply_snapshot(stored.revision, stored.policies);
    assert!(outcome.errors.is_empty());
    let agent = Agent::start(vec![server.url()], Some(cache.clone()), table);
    let call = next_call(&mut calls).await;
    assert_eq!(call.hello.last_revision, 60);
    eventually("the synced state", || {
        agent.readiness.sync_state() == SyncState::Synced
    })
    .await;

    agent.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn an_unreachable_endpoint_is_skipped_for_the_next_one() {
    // A port that was just free: connections to it are refused.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let (server, mut calls) = interactive().await;
    let agent = Agent::start(vec![dead.clone(), dead, server.url()], None, new_table());
    let mut call = next_call(&mut calls).await;
    call.send(snapshot(3, vec![])).await;
    assert_eq!(call.answer().await, ack(3));
    assert!(
        agent.table.snapshot().is_ready(),
        "an empty snapshot is still a snapshot"
    );
    agent.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn an_https_control_server_is_reached_over_mtls() {
    let _ = tlsfleet_policy::tls::provider().install_default();
    let ca = TestCa::new();
    let (server_cert, server_key) = ca.issue(&["127.0.0.1"]);
    let (client_cert, client_key) = ca.issue(&["edge-test-1"]);
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(&server_cert, &server_key))
        .client_ca_root(Certificate::from_pem(&ca.cert_pem));
    let (tx, mut calls) = mpsc::unbounded_channel();
    let server = Server::start_with(Script::Interactive(tx), Some(tls)).await;
    let url = format!("https://{}", server.addr);
    let start = |tls: ControlTls| {
        let mut cfg = SyncConfig::new(vec![url.clone()], "edge-test-1");
        cfg.tls = tls;
        cfg.backoff_min = Duration::from_millis(10);
        cfg.backoff_max = Duration::from_millis(50);
        let readiness = Arc::new(Readiness::default());
        let client = SyncClient::new(cfg, new_table(), metrics(), readiness.clone()).unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(client.run(None, shutdown.clone()));
        (readiness, shutdown, task)
    };

    // Without a client certificate the server refuses the handshake: no call arrives.
    let ca_only = ControlTls {
        ca_pem: Some(ca.cert_pem.clone().into_bytes()),
        client_identity: None,
        insecure: false,
    };
    let (readiness, shutdown, task) = start(ca_only.clone());
    eventually("a failed attempt", || {
        readiness.not_ready_reason().contains("control plane")
    })
    .await;
    assert!(
        calls.try_recv().is_err(),
        "a call without a client certificate"
    );
    shutdown.cancel();
    task.await.unwrap();

    let mtls = ControlTls {
        client_identity: Some((client_cert.into_bytes(), client_key.into_bytes())),
        ..ca_only
    };
    let (readiness, shutdown, task) = start(mtls);
    let mut call = next_call(&mut calls).await;
    assert_eq!(call.hello.node_id, "edge-test-1");
    call.send(snapshot(2, vec![])).await;
    assert_eq!(call.answer().await, ack(2));
    assert_eq!(readiness.sync_state(), SyncState::Synced);
    shutdown.cancel();
    task.await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_refused_key_is_retried_without_giving_up() {
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let server = Server::start(Script::Refuse(tonic::Code::PermissionDenied, seen_tx)).await;
    let agent = Agent::start(vec![server.url()], None, new_table());
    for attempt in 1..=3 {
        tokio::time::timeout(WAIT, seen.recv())
            .await
            .unwrap_or_else(|_| panic!("no attempt {attempt}"));
    }
    assert!(!agent.table.snapshot().is_ready());
    assert_ne!(agent.readiness.sync_state(), SyncState::Synced);
    assert!(
        agent
            .readiness
            .not_ready_reason()
            .contains("PermissionDenied"),
        "{}",
        agent.readiness.not_ready_reason()
    );
    agent.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn shutdown_is_prompt_while_backing_off_and_while_streaming() {
    // Backing off against a dead endpoint, with a long delay.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let mut cfg = SyncConfig::new(vec![dead], "edge-slow");
    cfg.backoff_min = Duration::from_secs(60);
    cfg.backoff_max = Duration::from_secs(60);
    let readiness = Arc::new(Readiness::default());
    let client = SyncClient::new(cfg, new_table(), metrics(), readiness.clone()).unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(client.run(None, shutdown.clone()));
    eventually("the first failure", || {
        readiness.not_ready_reason().contains("control plane")
    })
    .await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(3), task)
        .await
        .expect("stuck in backoff")
        .unwrap();

    // In the middle of an open, silent stream.
    let (server, mut calls) = interactive().await;
    let agent = Agent::start(vec![server.url()], None, new_table());
    let _call = next_call(&mut calls).await;
    agent.stop().await;
    server.stop().await;
}
