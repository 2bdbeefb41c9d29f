//! The TLS listener with real sockets and real rustls clients: fail closed, SNI routing,
//! suite policies, refusals, the handshake timeout, certificate reload.

#![allow(clippy::unwrap_used)] // tests may unwrap (STYLE: only what peers control may not)

mod common;

use std::time::Duration;

use common::*;
use tlsfleet_policy::{ServedSuite, TlsVersion};
use tokio::io::AsyncReadExt;

#[tokio::test]
async fn every_handshake_is_refused_before_the_first_snapshot() {
    let agent = Agent::start_with(AgentOptions::default()).await;
    let all = agent.client(&[TLS12, TLS13], None);
    for sni in [Some("abc.oss.test"), Some("oss.test"), None] {
        assert!(
            agent.connect(all.clone(), sni).await.is_err(),
            "{sni:?} must be refused"
        );
    }
    let (status, body) = agent.admin_get("/readyz").await;
    assert_eq!(status, 503);
    assert!(
        body.contains("no snapshot and no cache: refusing TLS"),
        "{body}"
    );
    let (_, metrics) = agent.admin_get("/metrics").await;
    assert!(
        metrics.contains("handshake_refusals_total{reason=\"not_ready\"} 3"),
        "{metrics}"
    );

    agent.table.apply_snapshot(5, vec![]);
    assert!(agent.connect(all, Some("abc.oss.test")).await.is_ok());
    let (status, body) = agent.admin_get("/readyz").await;
    assert_eq!((status, body.trim()), (200, "ready: revision 5"));
    agent.stop().await;
}

#[tokio::test]
async fn sni_selects_the_bucket_policy() {
    let agent = Agent::start().await;
    agent
        .table
        .apply_snapshot(2, vec![(bucket("aaa"), tls13_only())]);
    let tls12 = agent.client(&[TLS12], None);
    let tls13 = agent.client(&[TLS13], None);

    assert!(agent
        .connect(tls12.clone(), Some("aaa.oss.test"))
        .await
        .is_err());
    let ok = agent
        .connect(tls13.clone(), Some("aaa.oss.test"))
        .await
        .unwrap();
    assert_eq!(
        ok.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    // SNI is compared case-insensitively, a trailing dot ignored.
    assert!(agent
        .connect(tls12.clone(), Some("AAA.oss.test."))
        .await
        .is_err());

    // Another bucket, with or without a policy, the bare domain and no SNI: TLS 1.2 works.
    for sni in [Some("bbb.oss.test"), Some("oss.test"), None] {
        let s = agent.connect(tls12.clone(), sni).await.unwrap();
        assert_eq!(
            s.get_ref().1.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_2)
        );
    }
    let (_, metrics) = agent.admin_get("/metrics").await;
    assert!(
        metrics.contains(
            "tlsfleet_agent_handshakes_total{version=\"TLSv1.3\",suite=\"TLS_AES_256_GCM_SHA384\",outcome=\"ok\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("outcome=\"error\"} 2"), "{metrics}");
    agent.stop().await;
}

#[tokio::test]
async fn a_custom_tls12_suite_policy_accepts_that_suite_only() {
    let agent = Agent::start().await;
    agent.table.apply_snapshot(
        2,
        vec![(
            bucket("aaa"),
            custom(
                &[TlsVersion::Tls12],
                &["ECDHE-ECDSA-CHACHA20-POLY1305"],
                &[],
            ),
        )],
    );
    let wanted = agent.client(&[TLS12], Some(&[ServedSuite::EcdheEcdsaChacha20Poly1305]));
    let other = agent.client(&[TLS12], Some(&[ServedSuite::EcdheEcdsaAes128GcmSha256]));
    let s = agent.connect(wanted, Some("aaa.oss.test")).await.unwrap();
    assert_eq!(
        s.get_ref().1.negotiated_cipher_suite().map(|s| s.suite()),
        Some(rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256)
    );
    assert!(agent
        .connect(other.clone(), Some("aaa.oss.test"))
        .await
        .is_err());
    assert!(agent.connect(other, Some("bbb.oss.test")).await.is_ok());
    agent.stop().await;
}

#[tokio::test]
async fn names_outside_the_domains_are_refused() {
    let agent = Agent::start().await;
    let all = agent.client(&[TLS12, TLS13], None);
    // Not a bucket name (too short, a dot, an underscore), or another domain altogether.
    for sni in [
        "ab.oss.test",
        "a.bcd.oss.test",
        "a_b.oss.test",
        "example.com",
        "xoss.test",
    ] {
        assert!(
            agent.connect(all.clone(), Some(sni)).await.is_err(),
            "{sni}"
        );
    }
    let (_, metrics) = agent.admin_get("/metrics").await;
    assert!(
        metrics.contains("handshake_refusals_total{reason=\"unknown_sni\"} 5"),
        "{metrics}"
    );
    agent.stop().await;
}

#[tokio::test]
async fn one_timeout_bounds_the_handshake() {
    let agent = Agent::start_with(AgentOptions {
        handshake_timeout: Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    agent.table.apply_snapshot(1, vec![]);
    let mut tcp = tokio::net::TcpStream::connect(agent.addr).await.unwrap();
    // Say nothing: the agent must hang up on its own.
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("the agent closes a silent connection")
        .unwrap_or(0);
    assert_eq!(n, 0);
    let (_, metrics) = agent.admin_get("/metrics").await;
    assert!(metrics.contains("outcome=\"timeout\"} 1"), "{metrics}");
    agent.stop().await;
}

#[tokio::test]
async fn a_new_certificate_is_picked_up_and_old_connections_keep_working() {
    let agent = Agent::start().await;
    let client = agent.client(&[TLS13], None);
    let old = agent
        .connect(client.clone(), Some("aaa.oss.test"))
        .await
        .unwrap();
    let old_cert = old.get_ref().1.peer_certificates().unwrap()[0].clone();
    let mut old = H1::new(old).await;
    assert_eq!(old.get("aaa.oss.test", "/k").await.status, 200);

    // A broken pair first: logged, the served certificate kept.
    std::fs::write(agent.cert_path(), "not a certificate").unwrap();
    wait_until("the failed reload", || async {
        agent
            .admin_get("/metrics")
            .await
            .1
            .contains("certificate_reloads_total{outcome=\"error\"}")
    })
    .await;
    let s = agent
        .connect(client.clone(), Some("aaa.oss.test"))
        .await
        .unwrap();
    assert_eq!(s.get_ref().1.peer_certificates().unwrap()[0], old_cert);

    let new = agent.pki.leaf(KeyType::Ecdsa);
    std::fs::write(agent.key_path(), &new.key_pem).unwrap();
    std::fs::write(agent.cert_path(), &new.cert_pem).unwrap();
    wait_until("the new certificate", || async {
        let s = agent
            .connect(client.clone(), Some("aaa.oss.test"))
            .await
            .unwrap();
        s.get_ref().1.peer_certificates().unwrap()[0] == new.der
    })
    .await;
    // The connection opened before the reload still serves requests.
    assert_eq!(old.get("aaa.oss.test", "/k").await.status, 200);
    agent.stop().await;
}
