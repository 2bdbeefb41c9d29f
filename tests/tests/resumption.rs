//! TLS session resumption at the agent across policy swaps, with a real rustls client:
//! sessions (TLS 1.3 tickets, TLS 1.2 session ids) of a bucket whose policy did not change
//! resume after another bucket's change; and a session never lets a client past a policy
//! tightened since (a TLS 1.2 session of a bucket made TLS 1.3-only is refused, not resumed).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use rustls::{
    client::{Resumption, Tls12Resumption},
    pki_types::ServerName,
    ClientConfig, HandshakeKind,
};
// The benchmark's session store, which counts the TLS 1.3 tickets each name was given, so that a
// connection waits for them (they come just after the handshake) instead of sleeping.
use tlsfleet_bench::client::Tickets;
use tlsfleet_testkit::{
    agent::Agent,
    control::{admin_ctl_ok, Control, DOMAIN},
    tls::{KeyKind, TestCert},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;

struct Client {
    connector: TlsConnector,
    store: Arc<Tickets>,
    tls13: bool,
}

impl Client {
    fn new(cert: &TestCert, version: &'static rustls::SupportedProtocolVersion) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.ca_der.clone()).expect("ca");
        let store = Arc::new(Tickets::new(256));
        let mut cfg =
            ClientConfig::builder_with_provider(Arc::new(tlsfleet_policy::tls::provider()))
                .with_protocol_versions(&[version])
                .expect("version")
                .with_root_certificates(roots)
                .with_no_client_auth();
        cfg.resumption =
            Resumption::store(store.clone()).tls12_resumption(Tls12Resumption::SessionIdOnly);
        Self {
            connector: TlsConnector::from(Arc::new(cfg)),
            store,
            tls13: version == &rustls::version::TLS13,
        }
    }

    /// A handshake with `bucket` (waiting for its TLS 1.3 tickets): whether it resumed; an
    /// error when the agent refused it.
    async fn connect(&self, agent: &Agent, bucket: &str) -> std::io::Result<bool> {
        let sni =
            ServerName::try_from(format!("{bucket}.{DOMAIN}")).map_err(std::io::Error::other)?;
        let before = self.store.given(&sni);
        let tcp = tokio::net::TcpStream::connect(agent.tls).await?;
        let mut tls = self.connector.connect(sni.clone(), tcp).await?;
        let resumed = tls.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed);
        if self.tls13 {
            let until = Instant::now() + Duration::from_secs(5);
            let mut buf = [0u8; 16];
            while self.store.given(&sni) == before {
                assert!(Instant::now() < until, "no TLS 1.3 ticket from the agent");
                let _ = tokio::time::timeout(Duration::from_millis(10), tls.read(&mut buf)).await;
            }
        }
        let _ = tls.shutdown().await;
        Ok(resumed)
    }
}

fn put(control: &Control, bucket: &str, versions: &str) {
    admin_ctl_ok(
        &control.grpc_url(),
        &[
            "put",
            "--bucket",
            bucket,
            "--tls-versions",
            versions,
            "--allow-downgrade",
            "--wait",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_of_unchanged_buckets_resume_across_a_swap_and_none_outlives_a_tightening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = TestCert::generate(dir.path(), DOMAIN, KeyKind::EcdsaP256);
    let control = Control::embedded();
    let mut agent = Agent::spawn("edge-1", &[control.grpc_url()], &cert.cert, &cert.key, None);
    agent.wait_ready();
    put(&control, "keep", "TLSv1.2,TLSv1.3");
    put(&control, "swap", "TLSv1.2,TLSv1.3");

    let tls13 = Client::new(&cert, &rustls::version::TLS13);
    let tls12 = Client::new(&cert, &rustls::version::TLS12);
    for (client, v) in [(&tls13, "1.3"), (&tls12, "1.2")] {
        for bucket in ["keep", "swap"] {
            assert!(
                !client.connect(&agent, bucket).await.expect("full"),
                "TLS {v} {bucket}: first is full"
            );
            assert!(
                client.connect(&agent, bucket).await.expect("resumed"),
                "TLS {v} {bucket}: resumes"
            );
        }
    }

    // Another bucket's change swaps the agent's table: "keep" still resumes, in both versions.
    put(&control, "swap", "TLSv1.3");
    for (client, v) in [(&tls13, "1.3"), (&tls12, "1.2")] {
        assert!(
            client
                .connect(&agent, "keep")
                .await
                .expect("keep after the swap"),
            "TLS {v}: a session of an unchanged bucket resumes after a swap"
        );
    }
    // "swap" is TLS 1.3 only now: its TLS 1.2 session does not get a client past that.
    assert!(
        tls12.connect(&agent, "swap").await.is_err(),
        "a TLS 1.2 session of a bucket made TLS 1.3-only must be refused, not resumed"
    );
    assert!(
        tls13.connect(&agent, "swap").await.is_ok(),
        "TLS 1.3 is still served"
    );
}
