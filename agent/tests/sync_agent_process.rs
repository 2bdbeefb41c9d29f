//! The `tlsfleet-agent` binary as a real process: flags, the last-known-good cache at start,
//! following a (scripted) control server, readiness and SIGTERM. Readiness is polled on the
//! admin endpoint; nothing is parsed from the logs.

#![allow(clippy::unwrap_used)] // a test may panic: that is how it fails

mod sync_support;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::Duration,
};

use sync_support::*;
use tlsfleet_agent::cache::{Cache, CachedSnapshot};
use tlsfleet_policy::TlsVersion;
use tlsfleet_proto::auth::{self, SignedHeader};
use tokio::process::{Child, Command};

/// A started agent; killed (by its pid) if the test ends without stopping it.
struct AgentProcess {
    child: Child,
    admin: SocketAddr,
    log: PathBuf,
}

impl AgentProcess {
    /// Starts the agent with a fresh certificate for `oss.test`, free ports, `extra` flags
    /// and `env` (the access key is never inherited from the test's environment).
    fn start(dir: &Path, control: &[String], extra: &[&str], env: &[(&str, &str)]) -> Self {
        let leaf = tlsfleet_testkit::tls::TestCa::new().leaf(
            &["oss.test", "*.oss.test"],
            tlsfleet_testkit::tls::KeyKind::EcdsaP256,
        );
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, &leaf.cert_pem).unwrap();
        std::fs::write(&key, &leaf.key_pem).unwrap();
        let (listen, admin) = (free_port(), free_port());
        let log = dir.join("agent.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tlsfleet-agent"));
        for url in control {
            cmd.args(["--control", url]);
        }
        cmd.args(["--domain", "oss.test", "--listen", &listen.to_string()])
            .args(["--admin-listen", &admin.to_string()])
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .args(["--reconnect-min", "10ms", "--reconnect-max", "100ms"])
            .args(extra)
            .env("RUST_LOG", "debug")
            .env_remove("TLSFLEET_ACCESS_KEY_ID")
            .env_remove("TLSFLEET_ACCESS_KEY_SECRET")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true);
        let child = cmd.spawn().expect("cannot start tlsfleet-agent");
        Self { child, admin, log }
    }

    /// GET on the admin endpoint: status and body; `None` while it is not listening.
    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let (admin, path) = (self.admin, path.to_owned());
        tokio::task::spawn_blocking(move || tlsfleet_testkit::procs::http_get(admin, &path).ok())
            .await
            .ok()
            .flatten()
    }

    /// Polls `/readyz` until `check` accepts its answer; returns the body.
    async fn readyz_until(&self, what: &str, check: impl Fn(u16, &str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some((status, body)) = self.get("/readyz").await {
                if check(status, &body) {
                    return body;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then the exit status (which must come promptly).
    async fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().expect("already reaped");
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
        assert!(sent.unwrap().success(), "kill -TERM {pid} failed");
        match tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!("no exit 10 s after SIGTERM; log:\n{}", self.log()),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A URL nothing listens on.
fn dead_control() -> String {
    format!("http://{}", free_port())
}

#[tokio::test]
async fn an_agent_started_while_control_is_down_serves_from_its_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().join("cache");
    let cached = CachedSnapshot {
        revision: 42,
        policies: vec![(bucket("bucket-a"), versions(&[TlsVersion::Tls13]))],
        ..CachedSnapshot::default()
    };
    Cache::new(&cache_dir).store(&cached).unwrap();
    let cache_flag = cache_dir.to_str().unwrap();

    let agent = AgentProcess::start(
        dir.path(),
        &[dead_control()],
        &["--cache-dir", cache_flag],
        &[],
    );
    let body = agent
        .readyz_until("readiness from the cache", |s, _| s == 200)
        .await;
    assert!(body.contains("revision 42"), "{body}");
    let (_, metrics) = agent.get("/metrics").await.unwrap();
    assert!(
        metrics.contains(r#"sync_state{state="serving_from_cache"} 1"#),
        "{metrics}"
    );
    assert!(agent.terminate().await.success());
    // Nothing newer was applied: the cache is as it was.
    assert_eq!(Cache::new(&cache_dir).load().unwrap(), Some(cached));
}

#[tokio::test]
async fn an_agent_follows_the_control_plane_and_caches_what_it_applied() {
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().join("cache");
    let (server, mut calls) = interactive().await;
    let cache_flag = cache_dir.to_str().unwrap();
    let flags = [
        "--cache-dir",
        cache_flag,
        "--node-id",
        "edge-7",
        "--label",
        "zone=z2",
        "--label",
        "rack=r9",
    ];
    // The key comes from the environment, as in production.
    let env = [
        ("TLSFLEET_ACCESS_KEY_ID", KEY_ID),
        ("TLSFLEET_ACCESS_KEY_SECRET", SECRET),
    ];
    let agent = AgentProcess::start(dir.path(), &[server.url()], &flags, &env);

    let mut call = next_call(&mut calls).await;
    assert_eq!(call.hello.node_id, "edge-7");
    assert_eq!(call.hello.labels.len(), 2);
    assert_eq!(call.hello.last_revision, 0);
    let header = SignedHeader::parse(call.authorization.as_deref().expect("unsigned")).unwrap();
    assert_eq!(header.access_key_id, KEY_ID);
    assert!(auth::verify(
        SECRET,
        &header,
        tlsfleet_proto::v1::methods::FLEET_SERVICE_SYNC,
        &hello_digest(&call.hello)
    ));

    let body = agent
        .readyz_until("not ready before a snapshot", |s, _| s == 503)
        .await;
    assert!(body.contains("refusing TLS"), "{body}");
    let tls13 = versions(&[TlsVersion::Tls13]);
    call.send(snapshot(7, vec![wire("bucket-a", &tls13)])).await;
    assert_eq!(call.answer().await, ack(7));
    let body = agent
        .readyz_until("ready at revision 7", |s, _| s == 200)
        .await;
    assert!(body.contains("revision 7"), "{body}");
    call.send(delta(7, 8, vec![wire("bucket-b", &tls13)], &[]))
        .await;
    assert_eq!(call.answer().await, ack(8));

    assert!(agent.terminate().await.success());
    let stored = Cache::new(&cache_dir)
        .load()
        .unwrap()
        .expect("no cache written");
    assert_eq!(stored.revision, 8);
    assert_eq!(stored.policies.len(), 2);
    server.stop().await;
}

#[tokio::test]
async fn a_corrupt_cache_is_reported_and_the_agent_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().join("cache");
    std::fs::create_dir(&cache_dir).unwrap();
    std::fs::write(
        cache_dir.join("snapshot.json"),
        b"{\"format\": 1, \"revision\": 4, \"pol",
    )
    .unwrap();
    let flags = ["--cache-dir", cache_dir.to_str().unwrap()];
    let agent = AgentProcess::start(dir.path(), &[dead_control()], &flags, &[]);
    // Not ready, and saying why, once the first connection attempt failed.
    let body = agent
        .readyz_until("the failed attempt in the readiness reason", |s, b| {
            s == 503 && b.contains("control plane")
        })
        .await;
    assert!(body.contains("refusing TLS"), "{body}");
    // The agent's log lines go out through a writer thread: the line may follow the answer.
    let reported = tlsfleet_testkit::eventually::until(Duration::from_secs(10), || async {
        agent.log().contains("ignoring the last-known-good cache")
    })
    .await;
    assert!(reported, "no report of the corrupt cache: {}", agent.log());
    assert!(agent.terminate().await.success());
}

#[tokio::test]
async fn bad_flags_and_files_exit_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_tlsfleet-agent");
    // No --control: a usage error.
    let usage = Command::new(bin)
        .args(["--domain", "oss.test", "--cert", "c.pem", "--key", "k.pem"])
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap();
    assert_eq!(usage.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&usage.stderr).contains("--control"));

    // Flags fine, certificate missing: a start-up failure naming the file.
    let missing = dir.path().join("missing.pem");
    let failed = Command::new(bin)
        .args(["--control", "http://127.0.0.1:1", "--domain", "oss.test"])
        .args(["--listen", &free_port().to_string()])
        .arg("--cert")
        .arg(&missing)
        .arg("--key")
        .arg(&missing)
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap();
    assert_eq!(failed.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("missing.pem"), "{stderr}");
}
