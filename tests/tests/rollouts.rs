//! Fleet rollouts with real processes: `tlsfleetctl put --wait` and `rollout status --wait`
//! against a control server and labelled agents; an agent cut off from the control plane by a
//! TCP proxy (serves its last revision, listed as lagging, catches up when healed); and a
//! control server killed (its agents move to the other one, either server answers).

use std::time::Duration;

use serde_json::Value;
use tlsfleet_testkit::{
    agent::Agent,
    control::{admin_ctl as ctl, Control, DOMAIN},
    etcd::Etcd,
    eventually::until_blocking,
    proxy::Proxy,
    tls::{s_client, KeyKind, TestCert},
};

const WAIT: Duration = Duration::from_secs(15);

fn host(bucket: &str) -> String {
    format!("{bucket}.{DOMAIN}")
}

fn put_wait(url: &str, bucket: &str, versions: &str, extra: &[&str]) -> (i32, Value, String) {
    let mut args = vec![
        "put",
        "--bucket",
        bucket,
        "--tls-versions",
        versions,
        "--allow-downgrade",
        "--wait",
    ];
    args.extend_from_slice(extra);
    ctl(url, &args)
}

fn agent(name: &str, controls: &[String], cert: &TestCert, labels: &[&str]) -> Agent {
    let extra: Vec<String> = labels
        .iter()
        .flat_map(|l| ["--label".to_owned(), (*l).to_owned()])
        .chain(["--reconnect-max".to_owned(), "500ms".to_owned()])
        .collect();
    let mut a = Agent::spawn_with(name, controls, &cert.cert, &cert.key, None, &extra);
    a.wait_ready();
    a
}

/// Whether a TLS 1.2 handshake for `bucket` at `a` succeeds (a real `openssl s_client`).
fn tls12_accepted(a: &Agent, bucket: &str) -> bool {
    s_client(a.tls, &host(bucket), &["-tls1_2"]).0
}

#[test]
fn put_wait_returns_once_every_agent_enforces_and_names_the_ones_that_do_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = TestCert::generate(dir.path(), DOMAIN, KeyKind::EcdsaP256);
    let control = Control::embedded();
    let url = control.grpc_url();
    let controls = [url.clone()];
    let a1 = agent("edge-a1", &controls, &cert, &["zone=a"]);
    let a2 = agent("edge-a2", &controls, &cert, &["zone=a"]);
    let mut b1 = agent("edge-b1", &controls, &cert, &["zone=b"]);

    // Every agent enforces the change when put --wait returns 0, and it says how long the
    // write took to reach the last of them.
    let (code, out, err) = put_wait(&url, "logs", "TLSv1.3", &[]);
    assert_eq!(code, 0, "put --wait: {err}");
    assert_eq!(out["enforced"]["agents"], 3, "{out}");
    let took = out["enforced"]["write_to_last_ack_ms"]
        .as_u64()
        .expect("write to last ACK");
    assert!(took < 5_000, "{took} ms");
    let revision = out["revision"].as_i64().expect("revision");
    for a in [&a1, &a2, &b1] {
        assert!(
            !tls12_accepted(a, "logs"),
            "{} still lets TLS 1.2 in",
            a.node_id
        );
    }
    // Without a terminal, progress is plain lines on stderr.
    assert!(err.contains("agents enforcing"), "{err}");

    let (code, out, err) = ctl(
        &url,
        &[
            "rollout",
            "status",
            "--wait",
            "--revision",
            &revision.to_string(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out["enforcing"].as_array().map(Vec::len), Some(3), "{out}");

    // One agent down: the selector that leaves it out still completes; the whole fleet times
    // out naming it (exit 6).
    b1.kill();
    let (code, out, err) = put_wait(&url, "logs", "TLSv1.2,TLSv1.3", &["--timeout", "3s"]);
    assert_eq!(code, 6, "{out} {err}");
    assert!(err.contains("still pending: edge-b1"), "{err}");
    let (code, _, err) = ctl(
        &url,
        &[
            "rollout",
            "status",
            "--wait",
            "--selector",
            "zone=a",
            "--timeout",
            "10s",
        ],
    );
    assert_eq!(
        code, 0,
        "the zone=a agents enforce the newest revision: {err}"
    );
    assert!(tls12_accepted(&a1, "logs") && tls12_accepted(&a2, "logs"));

    // A selector nothing matches never completes, and says so.
    let (code, _, err) = ctl(
        &url,
        &[
            "rollout",
            "status",
            "--wait",
            "--selector",
            "zone=nowhere",
            "--timeout",
            "1s",
        ],
    );
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("no agent matched"), "{err}");
}

#[test]
fn an_agent_cut_off_serves_its_last_revision_is_listed_as_lagging_and_catches_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = TestCert::generate(dir.path(), DOMAIN, KeyKind::EcdsaP256);
    let control = Control::embedded();
    let url = control.grpc_url();
    let grpc: std::net::SocketAddr = url
        .trim_start_matches("http://")
        .parse()
        .expect("grpc address");
    let proxy = Proxy::start(grpc);
    let direct = agent("edge-direct", std::slice::from_ref(&url), &cert, &[]);
    let cut = agent("edge-cut", &[format!("http://{}", proxy.addr)], &cert, &[]);
    let (code, _, err) = put_wait(&url, "media", "TLSv1.2,TLSv1.3", &[]);
    assert_eq!(code, 0, "{err}");
    assert!(tls12_accepted(&cut, "media"));

    // Cut off: the control server's answers no longer reach it.
    proxy.set_blackhole(true);
    let (code, out, err) = put_wait(&url, "media", "TLSv1.3", &["--timeout", "3s"]);
    assert_eq!(code, 6, "{out} {err}");
    assert!(err.contains("still pending: edge-cut"), "{err}");
    let (_, status, _) = ctl(&url, &["rollout", "status"]);
    assert_eq!(
        status["pending"],
        serde_json::json!(["edge-cut"]),
        "{status}"
    );
    assert_eq!(status["enforcing"], serde_json::json!(["edge-direct"]));
    // It keeps serving its last revision; the other agent enforces the new one.
    assert!(
        tls12_accepted(&cut, "media"),
        "the cut-off agent keeps its last policy"
    );
    assert!(!tls12_accepted(&direct, "media"));
    assert!(cut.readyz().is_some_and(|(code, _)| code == 200));

    // Healed: it reconnects, resumes, and the wait completes.
    proxy.reset();
    let (code, _, err) = ctl(&url, &["rollout", "status", "--wait", "--timeout", "20s"]);
    assert_eq!(code, 0, "{err}");
    assert!(!tls12_accepted(&cut, "media"));
}

#[test]
fn a_killed_control_servers_agents_move_to_the_other_and_either_answers() {
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = TestCert::generate(dir.path(), DOMAIN, KeyKind::EcdsaP256);
    let named = |id: &str| {
        Control::on_etcd_with(
            &etcd.endpoint(),
            &["--control-id".to_owned(), id.to_owned()],
        )
    };
    let mut servers = [named("control-0"), named("control-1")];
    let controls: Vec<String> = servers.iter().map(Control::grpc_url).collect();
    let agents: Vec<Agent> = (0..2)
        .map(|i| agent(&format!("edge-{i}"), &controls, &cert, &[]))
        .collect();
    let (code, _, err) = put_wait(&controls[0], "logs", "TLSv1.3", &[]);
    assert_eq!(code, 0, "{err}");
    let control_of = |url: &str, node: &str| -> String {
        let (_, out, _) = ctl(url, &["agents"]);
        out["agents"]
            .as_array()
            .and_then(|all| all.iter().find(|a| a["node_id"] == node))
            .and_then(|a| a["control_id"].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    // Kill the server edge-0 is on (agents pick their first server at random), once both
    // servers list every agent on the same server: a server lists its own agents at once,
    // the other's only once their registry entries are written (every 200 ms), and an agent
    // whose server died before writing its entry is unknown to the other one until it
    // reconnects there.
    let placed = |node: &str| {
        let on = control_of(&controls[0], node);
        (!on.is_empty() && on == control_of(&controls[1], node)).then_some(on)
    };
    assert!(until_blocking(WAIT, || agents
        .iter()
        .all(|a| placed(&a.node_id).is_some())));
    let victim = match placed("edge-0").unwrap_or_default().as_str() {
        "control-0" => 0,
        "control-1" => 1,
        other => panic!("edge-0 is on {other:?}"),
    };
    let survivor = 1 - victim;
    servers[victim].kill();

    // Its agents reconnect to the other server and resume; a change made there reaches them.
    let (code, out, err) = put_wait(&controls[survivor], "logs", "TLSv1.2,TLSv1.3", &[]);
    assert_eq!(code, 0, "{out} {err}");
    let survivor_id = format!("control-{survivor}");
    for a in &agents {
        assert!(tls12_accepted(a, "logs"), "{}", a.node_id);
        let moved = until_blocking(WAIT, || {
            control_of(&controls[survivor], &a.node_id) == survivor_id
        });
        assert!(moved, "{} is listed on the surviving server", a.node_id);
        assert_eq!(
            a.metric("snapshots_total").unwrap_or(0.0) as i64,
            1,
            "{} resumed with a delta, no new snapshot",
            a.node_id
        );
    }
    // The killed server back: either server answers rollout status alike (the restarted one
    // sees the other's agents once their entries are written, within the flush interval).
    servers[victim].restart();
    for url in &controls {
        let mut last = String::new();
        let alike = until_blocking(WAIT, || {
            let (code, out, err) = ctl(url, &["rollout", "status", "--wait", "--timeout", "10s"]);
            last = format!("{code} {out} {err}");
            code == 0 && out["enforcing"].as_array().map(Vec::len) == Some(2)
        });
        assert!(alike, "{url}: {last}");
    }
}
