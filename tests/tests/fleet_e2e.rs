//! The whole fleet, for real: a control server, two or more agents, policies PUT through the
//! official SDK or gRPC, and real TLS clients (`openssl s_client`, rustls) at every agent.

use std::{path::Path, process::Command, time::Duration};

use tlsfleet_proto::{
    signer::signed_request,
    v1::{GetRequest, HttpsConfig, PutRequest},
};
use tlsfleet_testkit::{
    agent::Agent,
    control::{keys, tlsfleetctl, Control, DOMAIN},
    grpc::{admin_as, https_config},
    tls::{handshake, http1, s_client, ClientOffer, KeyKind, TestCert},
};

const WAIT: Duration = Duration::from_secs(10);

// IANA ids.
const ECDHE_ECDSA_AES128_GCM: u16 = 0xc02b;
const ECDHE_ECDSA_AES256_GCM: u16 = 0xc02c;

fn host(bucket: &str) -> String {
    format!("{bucket}.{DOMAIN}")
}

fn policy(versions: &[&str], tls12: &[&str], tls13: &[&str]) -> HttpsConfig {
    https_config(versions, tls12, tls13)
}

/// A put that may downgrade: the fleet tests change policies both ways.
async fn grpc_put(control: &Control, bucket: &str, cfg: HttpsConfig) -> i64 {
    let mut c = admin_as(&control.grpc_url(), keys::ADMIN).await;
    let req = PutRequest {
        bucket: bucket.into(),
        config: Some(cfg),
        allow_downgrade: true,
        ..Default::default()
    };
    c.put(signed_request(req))
        .await
        .expect("put")
        .into_inner()
        .revision
}

async fn mod_revision(control: &Control, bucket: &str) -> i64 {
    let mut c = admin_as(&control.grpc_url(), keys::ADMIN).await;
    let r = c
        .get(signed_request(GetRequest {
            bucket: bucket.into(),
        }))
        .await
        .expect("get");
    r.into_inner().policy.expect("policy").mod_revision
}

/// PUT through the official alibabacloud-oss-v2 SDK (V4), in a real Python process.
fn sdk_put(control: &Control, bucket: &str, versions: &str, tls12: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/sdk_put.py");
    let out = Command::new("python3")
        .arg(script)
        .args([
            &control.http_url(),
            keys::ADMIN.0,
            keys::ADMIN.1,
            bucket,
            versions,
            tls12,
        ])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "SDK put failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Fleet {
    control: Control,
    agents: Vec<Agent>,
    cert: TestCert,
    _dir: tempfile::TempDir,
}

fn fleet(n: usize, kind: KeyKind) -> Fleet {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = TestCert::generate(dir.path(), DOMAIN, kind);
    let control = Control::embedded();
    let agents = (0..n)
        .map(|i| {
            let cache = dir.path().join(format!("cache-{i}"));
            let mut a = Agent::spawn(
                &format!("agent-{i}"),
                &[control.grpc_url()],
                &cert.cert,
                &cert.key,
                Some(cache),
            );
            a.wait_ready();
            a
        })
        .collect();
    Fleet {
        control,
        agents,
        cert,
        _dir: dir,
    }
}

impl Fleet {
    fn converge(&self, revision: i64) {
        for a in &self.agents {
            assert!(
                a.wait_revision(revision, WAIT),
                "{} never applied revision {revision} (at {:?})",
                a.node_id,
                a.applied_revision()
            );
        }
    }
}

#[tokio::test]
async fn sdk_put_is_enforced_at_every_agent() {
    let f = fleet(2, KeyKind::EcdsaP256);
    sdk_put(&f.control, "bucket-a", "TLSv1.3", "");
    sdk_put(
        &f.control,
        "bucket-c",
        "TLSv1.2",
        "ECDHE-ECDSA-AES128-GCM-SHA256",
    );
    let rev = mod_revision(&f.control, "bucket-c").await;
    assert!(rev > 0);
    f.converge(rev);

    // The control plane knows both agents enforce the revision (ACKs are asynchronous).
    let enforcing = tlsfleet_testkit::procs::eventually(WAIT, || {
        let out = tlsfleetctl(
            &f.control.grpc_url(),
            keys::ADMIN,
            &["rollout", "--revision", &rev.to_string()],
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["enforcing"] == serde_json::json!(["agent-0", "agent-1"])
    });
    assert!(
        enforcing,
        "rollout status shows both agents enforcing revision {rev}"
    );

    for a in &f.agents {
        let (ok, out) = s_client(a.tls, &host("bucket-a"), &["-tls1_2"]);
        assert!(
            !ok,
            "{}: TLS 1.2 to a 1.3-only bucket must be refused:\n{out}",
            a.node_id
        );
        let (ok, out) = s_client(a.tls, &host("bucket-a"), &["-tls1_3"]);
        assert!(ok, "{}: TLS 1.3 must be accepted:\n{out}", a.node_id);
        // Bucket B has no policy: both versions work.
        let (ok, out) = s_client(a.tls, &host("bucket-b"), &["-tls1_2"]);
        assert!(ok, "{}: bucket B is unaffected:\n{out}", a.node_id);
        // One custom TLS 1.2 suite: that one yes, the others no, TLS 1.3 no.
        let (ok, out) = s_client(
            a.tls,
            &host("bucket-c"),
            &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"],
        );
        assert!(ok, "{}: the allowed suite:\n{out}", a.node_id);
        let (ok, out) = s_client(
            a.tls,
            &host("bucket-c"),
            &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384"],
        );
        assert!(!ok, "{}: another suite must be refused:\n{out}", a.node_id);
        let (ok, out) = s_client(a.tls, &host("bucket-c"), &["-tls1_3"]);
        assert!(
            !ok,
            "{}: TLS 1.3 is not enabled for bucket C:\n{out}",
            a.node_id
        );
        // Same with rustls.
        assert!(handshake(
            a.tls,
            &host("bucket-c"),
            &f.cert.ca_der,
            &ClientOffer::tls12().with_suites(&[ECDHE_ECDSA_AES128_GCM])
        )
        .await
        .is_ok());
        assert!(handshake(
            a.tls,
            &host("bucket-c"),
            &f.cert.ca_der,
            &ClientOffer::tls12().with_suites(&[ECDHE_ECDSA_AES256_GCM])
        )
        .await
        .is_err());
        // A name outside the domain is refused.
        assert!(handshake(
            a.tls,
            "bucket-a.elsewhere.test",
            &f.cert.ca_der,
            &ClientOffer::any()
        )
        .await
        .is_err());
    }
}

#[tokio::test]
async fn requests_are_checked_against_the_current_policy() {
    let f = fleet(1, KeyKind::EcdsaP256);
    let a = &f.agents[0];
    grpc_put(&f.control, "strict", policy(&["TLSv1.3"], &[], &[])).await;
    let rev = grpc_put(
        &f.control,
        "relaxed",
        policy(&["TLSv1.2", "TLSv1.3"], &[], &[]),
    )
    .await;
    f.converge(rev);

    // SNI of one bucket, Host of another: 421.
    let mut s = handshake(
        a.tls,
        &host("relaxed"),
        &f.cert.ca_der,
        &ClientOffer::tls12(),
    )
    .await
    .expect("handshake");
    let (status, _) = http1(&mut s, &host("strict"), "/obj")
        .await
        .expect("request");
    assert_eq!(status, 421);

    // Path style to the strict bucket over TLS 1.2 on the bare domain: 403 naming the version.
    let mut s = handshake(a.tls, DOMAIN, &f.cert.ca_der, &ClientOffer::tls12())
        .await
        .expect("handshake");
    let (status, body) = http1(&mut s, DOMAIN, "/strict/obj").await.expect("request");
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("<Code>AccessDenied</Code>") && body.contains("TLSv1.2"),
        "{body}"
    );
    let (status, body) = http1(&mut s, DOMAIN, "/relaxed/obj")
        .await
        .expect("request");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"bucket\":\"relaxed\"") && body.contains("TLSv1.2"),
        "{body}"
    );

    // A keep-alive connection gets 403 on its next request once its bucket is tightened.
    let mut s = handshake(
        a.tls,
        &host("relaxed"),
        &f.cert.ca_der,
        &ClientOffer::tls12(),
    )
    .await
    .expect("handshake");
    assert_eq!(
        http1(&mut s, &host("relaxed"), "/x")
            .await
            .expect("request")
            .0,
        200
    );
    let rev = grpc_put(&f.control, "relaxed", policy(&["TLSv1.3"], &[], &[])).await;
    f.converge(rev);
    let (status, body) = http1(&mut s, &host("relaxed"), "/x")
        .await
        .expect("request on the same connection");
    assert_eq!(status, 403, "{body}");
}

// Multi-threaded so the load keeps running while the test thread blocks on convergence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_under_load_drops_nothing() {
    let f = fleet(1, KeyKind::EcdsaP256);
    let a = &f.agents[0];
    let rev = grpc_put(&f.control, "hot", policy(&["TLSv1.2", "TLSv1.3"], &[], &[])).await;
    f.converge(rev);

    let stop = tokio_util_stop();
    let ca = f.cert.ca_der.clone();
    let addr = a.tls;
    // New connections, each with a couple of requests, all over TLS 1.3 (always allowed).
    let churn = tokio::spawn({
        let (stop, ca) = (stop.clone(), ca.clone());
        async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match handshake(addr, &host("hot"), &ca, &ClientOffer::tls13()).await {
                    Ok(mut s) => {
                        for _ in 0..2 {
                            match http1(&mut s, &host("hot"), "/o").await {
                                Ok((200, _)) => ok += 1,
                                other => failed.push(format!("{other:?}")),
                            }
                        }
                    }
                    Err(e) => failed.push(format!("handshake: {e}")),
                }
            }
            (ok, failed)
        }
    });
    // One established connection that must survive every swap.
    let keepalive = tokio::spawn({
        let (stop, ca) = (stop.clone(), ca.clone());
        async move {
            let mut s = handshake(addr, &host("hot"), &ca, &ClientOffer::tls13())
                .await
                .expect("handshake");
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, body) = http1(&mut s, &host("hot"), "/k")
                    .await
                    .expect("the established connection was dropped");
                assert_eq!(status, 200, "{body}");
                n += 1;
            }
            n
        }
    });
    let mut last = 0;
    for i in 0..100 {
        let cfg = match i % 3 {
            0 => policy(&["TLSv1.3"], &[], &[]),
            1 => policy(
                &["TLSv1.2", "TLSv1.3"],
                &["ECDHE-ECDSA-AES128-GCM-SHA256"],
                &[],
            ),
            _ => policy(
                &["TLSv1.2", "TLSv1.3"],
                &[],
                &[
                    "TLS_AES_128_GCM_SHA256",
                    "TLS_AES_256_GCM_SHA384",
                    "TLS_CHACHA20_POLY1305_SHA256",
                ],
            ),
        };
        last = grpc_put(&f.control, "hot", cfg).await;
    }
    f.converge(last);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = churn.await.expect("churn task");
    let kept = keepalive.await.expect("keep-alive task");
    assert!(
        failed.is_empty(),
        "{} failures, e.g. {:?}",
        failed.len(),
        failed.first()
    );
    assert!(
        ok > 0 && kept > 0,
        "traffic ran: {ok} churn requests, {kept} keep-alive requests"
    );
}

fn tokio_util_stop() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false))
}

#[tokio::test]
async fn losing_the_control_plane_changes_nothing_at_the_edge() {
    let mut f = fleet(2, KeyKind::EcdsaP256);
    let rev = grpc_put(&f.control, "kept", policy(&["TLSv1.3"], &[], &[])).await;
    f.converge(rev);
    let snapshots_before = f.agents[1]
        .metric("sync_snapshots_total")
        .expect("snapshot counter");

    f.control.kill();
    for a in &f.agents {
        assert!(
            !s_client(a.tls, &host("kept"), &["-tls1_2"]).0,
            "still enforced without the control plane"
        );
        assert!(s_client(a.tls, &host("kept"), &["-tls1_3"]).0);
    }
    // An agent restarted while the control plane is down serves from its cache.
    assert!(
        f.agents[0].wait_cached(rev, WAIT),
        "revision {rev} never cached"
    );
    f.agents[0].restart();
    f.agents[0].wait_ready();
    assert_eq!(f.agents[0].applied_revision(), Some(rev));
    assert!(
        !s_client(f.agents[0].tls, &host("kept"), &["-tls1_2"]).0,
        "cache enforces the policy"
    );
    assert!(s_client(f.agents[0].tls, &host("kept"), &["-tls1_3"]).0);

    // Control plane back: agents resume from their revision with a delta and converge.
    f.control.restart();
    let rev2 = grpc_put(
        &f.control,
        "kept",
        policy(&["TLSv1.2", "TLSv1.3"], &[], &[]),
    )
    .await;
    f.converge(rev2);
    for a in &f.agents {
        assert!(
            s_client(a.tls, &host("kept"), &["-tls1_2"]).0,
            "{} converged",
            a.node_id
        );
    }
    let snapshots_after = f.agents[1]
        .metric("sync_snapshots_total")
        .expect("snapshot counter");
    assert_eq!(
        snapshots_before, snapshots_after,
        "the resumed agent got deltas, not a snapshot"
    );
    assert!(f.agents[1].metric("sync_deltas_total").unwrap_or(0.0) >= 1.0);
}

#[tokio::test]
async fn without_snapshot_or_cache_the_agent_fails_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = TestCert::generate(dir.path(), DOMAIN, KeyKind::EcdsaP256);
    let dead = format!("http://127.0.0.1:{}", tlsfleet_testkit::ports::free_port());
    let a = Agent::spawn("lonely", &[dead], &cert.cert, &cert.key, None);
    let probe = tlsfleet_testkit::procs::eventually(WAIT, || a.readyz().is_some());
    assert!(probe, "admin endpoint up");
    let (status, reason) = a.readyz().expect("readyz");
    assert_eq!(status, 503, "{reason}");
    assert!(
        handshake(a.tls, &host("any"), &cert.ca_der, &ClientOffer::any())
            .await
            .is_err(),
        "TLS refused before the first snapshot"
    );
}

#[tokio::test]
async fn a_policy_the_fleet_cannot_serve_is_refused_at_put() {
    let f = fleet(2, KeyKind::EcdsaP256);
    let good = grpc_put(
        &f.control,
        "nacked",
        policy(&["TLSv1.2"], &["ECDHE-ECDSA-AES128-GCM-SHA256"], &[]),
    )
    .await;
    f.converge(good);
    // TLS 1.2 with only RSA suites cannot be served with the fleet's ECDSA certificates:
    // the control plane refuses it instead of letting every agent fail to build it.
    let mut c = admin_as(&f.control.grpc_url(), keys::ADMIN).await;
    let req = PutRequest {
        bucket: "nacked".into(),
        config: Some(policy(&["TLSv1.2"], &["ECDHE-RSA-AES128-GCM-SHA256"], &[])),
        ..Default::default()
    };
    let err = c
        .put(signed_request(req))
        .await
        .expect_err("an unservable policy is refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("ECDSA") && err.message().contains("agent-0"),
        "{}",
        err.message()
    );
    // Nothing changed: the bucket serves its policy as before.
    assert_eq!(mod_revision(&f.control, "nacked").await, good);
    for a in &f.agents {
        assert!(
            s_client(
                a.tls,
                &host("nacked"),
                &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"]
            )
            .0,
            "{} serves the policy in force",
            a.node_id
        );
    }
}

#[tokio::test]
async fn a_policy_an_agent_cannot_build_refuses_its_bucket_and_is_nacked() {
    // The policy is accepted while no agent is connected: the control plane cannot know yet
    // that the fleet's certificates are ECDSA. An agent that cannot build it must not serve
    // the bucket looser than it says (here: not at all), and says so.
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = TestCert::generate(dir.path(), DOMAIN, KeyKind::EcdsaP256);
    let control = Control::embedded();
    grpc_put(&control, "bystander", policy(&["TLSv1.3"], &[], &[])).await;
    let bad = grpc_put(
        &control,
        "nacked",
        policy(&["TLSv1.2"], &["ECDHE-RSA-AES128-GCM-SHA256"], &[]),
    )
    .await;
    let mut a = Agent::spawn(
        "agent-0",
        &[control.grpc_url()],
        &cert.cert,
        &cert.key,
        None,
    );
    a.wait_ready();
    assert!(a.wait_revision(bad, WAIT));

    let out = tlsfleetctl(&control.grpc_url(), keys::ADMIN, &["agents"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("nacked") && text.contains("ECDSA") && text.contains("refused"),
        "NACK reason shows in `tlsfleetctl agents`: {text}"
    );
    let out = tlsfleetctl(
        &control.grpc_url(),
        keys::ADMIN,
        &["rollout", "--revision", &bad.to_string()],
    );
    let rollout: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        rollout["failed"],
        serde_json::json!(["agent-0"]),
        "{rollout}"
    );

    // Refused whatever the client offers; the other buckets keep working.
    for flags in [&["-tls1_2"][..], &["-tls1_3"]] {
        assert!(
            !s_client(a.tls, &host("nacked"), flags).0,
            "the bucket was served with {flags:?}"
        );
    }
    assert!(s_client(a.tls, &host("bystander"), &["-tls1_3"]).0);
    // And path style over the endpoint's own name: 403, not served.
    let mut tls = handshake(a.tls, DOMAIN, &cert.ca_der, &ClientOffer::tls13())
        .await
        .expect("endpoint handshake");
    let (status, body) = http1(&mut tls, DOMAIN, "/nacked/key")
        .await
        .expect("request");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("refused"), "{body}");
}

#[tokio::test]
async fn control_shutdown_ends_agent_streams_cleanly() {
    let f = fleet(2, KeyKind::EcdsaP256);
    let rev = grpc_put(&f.control, "drain", policy(&["TLSv1.3"], &[], &[])).await;
    f.converge(rev);
    // SIGTERM with two live Sync streams: the server must end them and exit 0, promptly.
    // Stop from a blocking thread so this test's own (dropped) gRPC clients can still answer
    // the server's GOAWAY; the server's drain must then finish well inside its grace period.
    let started = std::time::Instant::now();
    let mut control = f.control;
    let control = tokio::task::spawn_blocking(move || {
        control.stop();
        control
    })
    .await
    .expect("stop");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "shutdown took {took:?}: streams did not end"
    );
    drop(control);
    for a in &f.agents {
        let disconnected = tlsfleet_testkit::procs::eventually(WAIT, || {
            a.metrics_text()
                .contains("tlsfleet_agent_sync_state{state=\"disconnected\"} 1")
        });
        assert!(disconnected, "{} noticed the stream ended", a.node_id);
        assert!(
            s_client(a.tls, &host("drain"), &["-tls1_3"]).0,
            "still serving"
        );
    }
}

#[tokio::test]
async fn agents_fail_over_between_control_servers_on_one_etcd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = TestCert::generate(dir.path(), DOMAIN, KeyKind::EcdsaP256);
    let etcd = tlsfleet_testkit::etcd::Etcd::start();
    let mut a = Control::on_etcd(&etcd.endpoint());
    let b = Control::on_etcd(&etcd.endpoint());
    let mut agents: Vec<Agent> = (0..2)
        .map(|i| {
            Agent::spawn(
                &format!("agent-{i}"),
                &[a.grpc_url(), b.grpc_url()],
                &cert.cert,
                &cert.key,
                None,
            )
        })
        .collect();
    for agent in &mut agents {
        agent.wait_ready();
    }
    let rev = grpc_put(&a, "failover", policy(&["TLSv1.3"], &[], &[])).await;
    for agent in &agents {
        assert!(
            agent.wait_revision(rev, WAIT),
            "{} applied {rev}",
            agent.node_id
        );
    }
    // Either server lists both agents (the registry lives in etcd).
    let fleet_b = tlsfleet_testkit::grpc::fleet(&b.grpc_url()).await;
    let listed = tlsfleet_testkit::eventually::until(WAIT, || async {
        let req = tlsfleet_testkit::grpc::signed(
            tlsfleet_proto::v1::ListAgentsRequest {},
            tlsfleet_proto::v1::methods::FLEET_SERVICE_LIST_AGENTS,
            keys::ADMIN,
        );
        let n = fleet_b
            .clone()
            .list_agents(req)
            .await
            .map(|r| r.into_inner().agents.len());
        matches!(n, Ok(2))
    })
    .await;
    assert!(listed, "server B lists both agents");

    // Server A dies; agents that followed it move to B and keep converging.
    a.kill();
    let rev2 = grpc_put(&b, "failover", policy(&["TLSv1.2", "TLSv1.3"], &[], &[])).await;
    for agent in &agents {
        assert!(
            agent.wait_revision(rev2, Duration::from_secs(20)),
            "{} converged through B",
            agent.node_id
        );
        assert!(s_client(agent.tls, &host("failover"), &["-tls1_2"]).0);
    }
}

#[tokio::test]
async fn an_agent_resuming_from_a_wiped_store_gets_a_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = TestCert::generate(dir.path(), DOMAIN, KeyKind::EcdsaP256);
    let mut control = Control::embedded();
    for b in ["old-a", "old-b", "old-c"] {
        grpc_put(&control, b, policy(&["TLSv1.3"], &[], &[])).await;
    }
    let old = grpc_put(&control, "old-d", policy(&["TLSv1.3"], &[], &[])).await;
    let mut a = Agent::spawn(
        "agent-0",
        &[control.grpc_url()],
        &cert.cert,
        &cert.key,
        Some(dir.path().join("cache")),
    );
    a.wait_ready();
    assert!(a.wait_revision(old, WAIT));
    assert!(a.wait_cached(old, WAIT), "revision {old} never cached");

    // The store is lost and made anew; its history passes the agent's revision. A delta
    // "since revision 4" of this other history would leave the old buckets in place.
    // The agent is away meanwhile, and comes back from its cache (revision 4 of the old store).
    a.kill();
    control.wipe_store_and_restart();
    let mut new = 0;
    for i in 0..(old + 2) {
        new = grpc_put(
            &control,
            &format!("new-{i}"),
            policy(&["TLSv1.2"], &[], &[]),
        )
        .await;
    }
    assert!(new > old);
    a.restart();
    a.wait_ready();
    assert!(a.wait_revision(new, WAIT), "at {:?}", a.applied_revision());
    assert_eq!(a.metric("sync_snapshots_total"), Some(1.0));
    assert_eq!(a.metric("sync_deltas_total"), Some(0.0));
    assert_eq!(a.metric("policies_loaded"), Some((old + 2) as f64));
    // The old buckets are gone from the edge: their TLS 1.3-only policy no longer applies.
    assert!(s_client(a.tls, &host("old-a"), &["-tls1_2"]).0);
    assert!(s_client(a.tls, &host("new-0"), &["-tls1_2"]).0);
    assert!(!s_client(a.tls, &host("new-0"), &["-tls1_3"]).0);
}

#[tokio::test]
async fn an_agent_that_fell_behind_catches_up_in_one_delta_not_one_per_revision() {
    let f = fleet(1, KeyKind::EcdsaP256);
    let a = &f.agents[0];
    let deltas = || a.metric("sync_deltas_total").expect("deltas metric");
    let before = deltas();
    // The agent cannot read or answer while 50 revisions are written.
    a.process().signal("STOP").expect("kill -STOP");
    let mut rev = 0;
    for i in 0..50 {
        rev = grpc_put(
            &f.control,
            &format!("behind-{i}"),
            policy(&["TLSv1.3"], &[], &[]),
        )
        .await;
    }
    a.process().signal("CONT").expect("kill -CONT");
    f.converge(rev);
    let taken = deltas() - before;
    // One delta in flight before the stop, then what queued up behind it: a few, not 50.
    assert!(
        (1.0..=10.0).contains(&taken),
        "{taken} deltas for 50 revisions"
    );
    for bucket in ["behind-0", "behind-25", "behind-49"] {
        assert!(
            handshake(a.tls, &host(bucket), &f.cert.ca_der, &ClientOffer::tls12())
                .await
                .is_err(),
            "{bucket} still takes TLS 1.2"
        );
        assert!(
            handshake(a.tls, &host(bucket), &f.cert.ca_der, &ClientOffer::tls13())
                .await
                .is_ok(),
            "{bucket} refuses TLS 1.3"
        );
    }
}
