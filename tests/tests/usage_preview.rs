//! Usage and dry runs, for real: clients on TLS 1.2 and TLS 1.3 (two User-Agents, two source
//! networks on 127.0.0.0/8) hit a bucket through an agent; `tlsfleetctl usage` shows the
//! split; `put --dry-run` of a TLS 1.3-only policy reports the TLS 1.2 share and names those
//! clients, storing nothing; after the real put, the refusals the agent counts match.

use std::{net::IpAddr, time::Duration};

use serde_json::Value;
use tlsfleet_testkit::{
    agent::Agent,
    control::{keys, tlsfleetctl, Control, DOMAIN},
    etcd::Etcd,
    eventually::until,
    tls::{handshake_from, http1_with, ClientOffer, KeyKind, TestCert},
};

const LEGACY: (&str, &str, usize) = ("127.0.2.1", "legacy-client/1.0", 30);
const MODERN: (&str, &str, usize) = ("127.0.3.1", "modern-client/2.0", 70);
const WAIT: Duration = Duration::from_secs(15);

fn ctl(control: &Control, args: &[&str]) -> Value {
    let out = tlsfleetctl(&control.grpc_url(), keys::ADMIN, args);
    assert!(
        out.status.success(),
        "tlsfleetctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON document")
}

/// `n` connections from `from`, each one request with `ua`; how many got an answer.
async fn traffic(
    agent: &Agent,
    cert: &TestCert,
    from: &str,
    ua: &str,
    n: usize,
    offer: &ClientOffer,
) -> usize {
    let host = format!("mixed.{DOMAIN}");
    let from: IpAddr = from.parse().expect("ip");
    let mut served = 0;
    for _ in 0..n {
        let Ok(mut s) = handshake_from(from, agent.tls, &host, &cert.ca_der, offer).await else {
            continue;
        };
        let headers = format!("User-Agent: {ua}\r\n");
        if matches!(
            http1_with(&mut s, &host, "/o", &headers).await,
            Ok((200, _))
        ) {
            served += 1;
        }
    }
    served
}

fn sum(map: &Value) -> u64 {
    map.as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_shows_the_split_and_a_dry_run_names_who_a_change_would_refuse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = TestCert::generate(dir.path(), DOMAIN, KeyKind::EcdsaP256);
    let control = Control::embedded();
    let mut agent = Agent::spawn_with(
        "edge-usage",
        &[control.grpc_url()],
        &cert.cert,
        &cert.key,
        None,
        &["--usage-interval".into(), "1s".into()],
    );
    agent.wait_ready();
    let put = ctl(
        &control,
        &[
            "put",
            "--bucket",
            "mixed",
            "--tls-versions",
            "TLSv1.2,TLSv1.3",
        ],
    );
    let rev = put["revision"].as_i64().expect("revision");
    assert!(agent.wait_revision(rev, WAIT));

    let tls12 = ClientOffer::tls12();
    let tls13 = ClientOffer::tls13();
    assert_eq!(
        traffic(&agent, &cert, LEGACY.0, LEGACY.1, LEGACY.2, &tls12).await,
        LEGACY.2
    );
    assert_eq!(
        traffic(&agent, &cert, MODERN.0, MODERN.1, MODERN.2, &tls13).await,
        MODERN.2
    );

    // The agent reports its window; the control plane shows the split.
    let total = (LEGACY.2 + MODERN.2) as u64;
    let reported = until(WAIT, || async {
        let u = ctl(&control, &["usage", "--bucket", "mixed"]);
        sum(&u["usage"]["requests"]) >= total
    })
    .await;
    assert!(reported, "usage never reached {total} requests");
    let u = ctl(&control, &["usage", "--bucket", "mixed"]);
    assert_eq!(sum(&u["usage"]["requests"]), total, "{u}");
    assert_eq!(sum(&u["usage"]["handshakes"]), total, "{u}");
    let clients = u["usage"]["clients"].as_array().expect("clients");
    let v12 = clients
        .iter()
        .find(|c| c["version"] == "TLSv1.2")
        .expect("TLS 1.2 clients");
    assert_eq!(
        v12["networks"]["127.0.2.0/24"].as_u64(),
        Some(LEGACY.2 as u64),
        "{u}"
    );
    assert_eq!(
        v12["user_agents"][LEGACY.1].as_u64(),
        Some(LEGACY.2 as u64),
        "{u}"
    );

    // The dry run of TLS 1.3 only: the TLS 1.2 share, and who.
    let dry = ctl(
        &control,
        &[
            "put",
            "--bucket",
            "mixed",
            "--tls-versions",
            "TLSv1.3",
            "--dry-run",
        ],
    );
    assert_eq!(dry["dry_run"], Value::Bool(true));
    assert_eq!(dry["downgrade"], Value::Bool(false));
    let impact = &dry["impact"];
    assert_eq!(impact["requests"].as_u64(), Some(total));
    assert_eq!(
        impact["refused_requests"].as_u64(),
        Some(LEGACY.2 as u64),
        "{dry}"
    );
    assert_eq!(
        impact["refused_handshakes"].as_u64(),
        Some(LEGACY.2 as u64),
        "{dry}"
    );
    let refused = &impact["clients"][0];
    assert_eq!(refused["version"], "TLSv1.2");
    assert_eq!(refused["whole"], Value::Bool(true));
    assert_eq!(
        refused["clients"]["user_agents"][LEGACY.1].as_u64(),
        Some(LEGACY.2 as u64),
        "{dry}"
    );
    assert_eq!(
        refused["clients"]["networks"]["127.0.2.0/24"].as_u64(),
        Some(LEGACY.2 as u64)
    );
    // Every server with agents answered, and the window held the traffic: nothing unknown.
    assert_eq!(impact["unknowns"], serde_json::json!([]), "{dry}");
    // Nothing was stored.
    let get = ctl(&control, &["get", "--bucket", "mixed"]);
    assert_eq!(get["policy"]["mod_revision"].as_i64(), Some(rev));
    // A preview of a bucket nobody used says so.
    let idle = ctl(
        &control,
        &[
            "put",
            "--bucket",
            "idle",
            "--tls-versions",
            "TLSv1.3",
            "--dry-run",
        ],
    );
    assert_eq!(idle["impact"]["requests"].as_u64(), Some(0));
    assert!(idle["impact"]["unknowns"][0]
        .as_str()
        .is_some_and(|s| s.contains("no traffic")));

    // The real change; the same clients again: the refusals counted match the preview.
    let put = ctl(
        &control,
        &["put", "--bucket", "mixed", "--tls-versions", "TLSv1.3"],
    );
    let rev = put["revision"].as_i64().expect("revision");
    assert!(agent.wait_revision(rev, WAIT));
    assert_eq!(
        traffic(&agent, &cert, LEGACY.0, LEGACY.1, LEGACY.2, &tls12).await,
        0
    );
    assert_eq!(
        traffic(&agent, &cert, MODERN.0, MODERN.1, MODERN.2, &tls13).await,
        MODERN.2
    );
    let counted = until(WAIT, || async {
        let u = ctl(&control, &["usage", "--bucket", "mixed"]);
        u["usage"]["refused"]["TLSv1.2"].as_u64() >= Some(LEGACY.2 as u64)
    })
    .await;
    assert!(
        counted,
        "the agent's refusals never reached the preview's count: {}",
        ctl(&control, &["usage", "--bucket", "mixed"])
    );
    let u = ctl(&control, &["usage", "--bucket", "mixed"]);
    let refusals = u["usage"]["refused"]["TLSv1.2"].as_u64().unwrap_or(0);
    let predicted = impact["refused_handshakes"].as_u64().unwrap_or(0);
    assert!(
        refusals.abs_diff(predicted) * 100 <= predicted * 5,
        "refused {refusals}, previewed {predicted}"
    );
}

/// Two control servers on one etcd, an agent on each: either server answers `usage` and a dry
/// run for the whole fleet (it asks the other, signed with its peer key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn either_control_server_answers_for_the_whole_fleet() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = TestCert::generate(dir.path(), DOMAIN, KeyKind::EcdsaP256);
    let etcd = Etcd::start();
    let peer_key = tlsfleet_testkit::control::peer_key_flags();
    let a = Control::on_etcd_with(&etcd.endpoint(), &peer_key);
    let b = Control::on_etcd_with(&etcd.endpoint(), &peer_key);
    let agent = |name: &str, control: &Control| {
        let mut agent = Agent::spawn_with(
            name,
            &[control.grpc_url()],
            &cert.cert,
            &cert.key,
            None,
            &["--usage-interval".into(), "1s".into()],
        );
        agent.wait_ready();
        agent
    };
    let (edge_a, edge_b) = (agent("edge-a", &a), agent("edge-b", &b));
    let put = ctl(
        &a,
        &[
            "put",
            "--bucket",
            "mixed",
            "--tls-versions",
            "TLSv1.2,TLSv1.3",
        ],
    );
    let rev = put["revision"].as_i64().expect("revision");
    assert!(edge_a.wait_revision(rev, WAIT) && edge_b.wait_revision(rev, WAIT));
    // TLS 1.2 clients at agent A (server A's), TLS 1.3 clients at agent B (server B's).
    assert_eq!(
        traffic(
            &edge_a,
            &cert,
            LEGACY.0,
            LEGACY.1,
            LEGACY.2,
            &ClientOffer::tls12()
        )
        .await,
        LEGACY.2
    );
    assert_eq!(
        traffic(
            &edge_b,
            &cert,
            MODERN.0,
            MODERN.1,
            MODERN.2,
            &ClientOffer::tls13()
        )
        .await,
        MODERN.2
    );
    let total = (LEGACY.2 + MODERN.2) as u64;
    for server in [&a, &b] {
        let whole = until(WAIT, || async {
            let u = ctl(server, &["usage", "--bucket", "mixed"]);
            sum(&u["usage"]["requests"]) == total
        })
        .await;
        let u = ctl(server, &["usage", "--bucket", "mixed"]);
        assert!(whole, "one server's answer is not the fleet's: {u}");
        assert_eq!(u["servers"].as_array().map(Vec::len), Some(2), "{u}");
        assert!(
            u["unreachable"].as_array().is_some_and(Vec::is_empty),
            "{u}"
        );
    }
    // B previews a TLS 1.3-only policy with A's TLS 1.2 clients in it.
    let dry = ctl(
        &b,
        &[
            "put",
            "--bucket",
            "mixed",
            "--tls-versions",
            "TLSv1.3",
            "--dry-run",
        ],
    );
    let impact = &dry["impact"];
    assert_eq!(impact["requests"].as_u64(), Some(total), "{dry}");
    assert_eq!(
        impact["refused_requests"].as_u64(),
        Some(LEGACY.2 as u64),
        "{dry}"
    );
    assert_eq!(
        impact["clients"][0]["clients"]["user_agents"][LEGACY.1].as_u64(),
        Some(LEGACY.2 as u64),
        "{dry}"
    );

    // The change, through A; the same clients again at both agents: the refusals counted
    // fleet-wide (asked at B, counted at A's agent) match B's preview.
    let put = ctl(
        &a,
        &["put", "--bucket", "mixed", "--tls-versions", "TLSv1.3"],
    );
    let rev = put["revision"].as_i64().expect("revision");
    assert!(edge_a.wait_revision(rev, WAIT) && edge_b.wait_revision(rev, WAIT));
    assert_eq!(
        traffic(
            &edge_a,
            &cert,
            LEGACY.0,
            LEGACY.1,
            LEGACY.2,
            &ClientOffer::tls12()
        )
        .await,
        0
    );
    assert_eq!(
        traffic(
            &edge_b,
            &cert,
            MODERN.0,
            MODERN.1,
            MODERN.2,
            &ClientOffer::tls13()
        )
        .await,
        MODERN.2
    );
    let predicted = impact["refused_handshakes"].as_u64().unwrap_or(0);
    let matched = until(WAIT, || async {
        let u = ctl(&b, &["usage", "--bucket", "mixed"]);
        let refusals = u["usage"]["refused"]["TLSv1.2"].as_u64().unwrap_or(0);
        refusals.abs_diff(predicted) * 100 <= predicted * 5
    })
    .await;
    assert!(
        matched,
        "refusals counted {} vs previewed {predicted}",
        ctl(&b, &["usage", "--bucket", "mixed"])
    );
}
