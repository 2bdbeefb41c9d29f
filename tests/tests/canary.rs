//! Canary rollouts with real processes and real handshakes: a policy staged with
//! `tlsfleetctl put --canary k=v` reaches only the agents with that label (also one joining
//! mid-canary, and across a control-server restart, since the canary is in the store), GET
//! keeps returning the stored policy, `rollout promote` takes it fleet-wide and `rollout
//! abort` brings the canary agents back to the stored policy.

use serde_json::{json, Value};
use std::time::Duration;

use tlsfleet_testkit::{
    agent::Agent,
    control::{admin_ctl as ctl, admin_ctl_ok as ok, keys, Control, DOMAIN},
    etcd::Etcd,
    eventually::until_blocking,
    rest,
    tls::{s_client, KeyKind, TestCert},
};

fn agent(name: &str, url: &str, cert: &TestCert, tier: &str) -> Agent {
    let extra = [
        "--label".to_owned(),
        format!("tier={tier}"),
        "--reconnect-max".to_owned(),
        "500ms".to_owned(),
    ];
    let mut a = Agent::spawn_with(name, &[url.to_owned()], &cert.cert, &cert.key, None, &extra);
    a.wait_ready();
    a
}

/// Whether a real TLS 1.2 handshake for bucket `logs` succeeds at `a`.
fn tls12(a: &Agent) -> bool {
    s_client(a.tls, &format!("logs.{DOMAIN}"), &["-tls1_2"]).0
}

fn stored_versions(url: &str) -> Value {
    ok(url, &["get", "--bucket", "logs"])["policy"]["config"]["tls"]["tls_versions"].clone()
}

#[test]
fn a_canary_reaches_only_its_selector_until_promoted_and_abort_restores() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = TestCert::generate(dir.path(), DOMAIN, KeyKind::EcdsaP256);
    let mut control = Control::embedded();
    let url = control.grpc_url();
    let canary1 = agent("edge-canary-1", &url, &cert, "canary");
    let main1 = agent("edge-main-1", &url, &cert, "main");
    let main2 = agent("edge-main-2", &url, &cert, "main");
    ok(
        &url,
        &[
            "put",
            "--bucket",
            "logs",
            "--tls-versions",
            "TLSv1.2,TLSv1.3",
            "--wait",
        ],
    );

    // Stage TLS 1.3 only on tier=canary; --wait waits for the canary agents.
    let staged = ok(
        &url,
        &[
            "put",
            "--bucket",
            "logs",
            "--tls-versions",
            "TLSv1.3",
            "--canary",
            "tier=canary",
            "--wait",
        ],
    );
    assert_eq!(staged["enforced"]["agents"], 1, "{staged}");
    assert!(!tls12(&canary1), "the canary agent enforces the canary");
    assert!(
        tls12(&main1) && tls12(&main2),
        "the others keep the stored policy"
    );

    // GET (gRPC and REST) is the stored policy; the canary shows as pending.
    assert_eq!(stored_versions(&url), json!(["TLSv1.2", "TLSv1.3"]));
    let got = ok(&url, &["get", "--bucket", "logs"]);
    assert_eq!(
        got["policy"]["canary"]["selector"],
        json!({"tier": "canary"}),
        "{got}"
    );
    let listed = ok(&url, &["list"]);
    assert!(listed["policies"][0]["canary"].is_object(), "{listed}");
    let rest_get = rest::oss(control.http, "GET", "logs", "", keys::ADMIN).expect("REST GET");
    assert!(
        rest_get.body.contains("<TLSVersion>TLSv1.2</TLSVersion>"),
        "{}",
        rest_get.body
    );

    // The canary's own status: its agents, at its revision.
    let status = ok(&url, &["rollout", "status", "--bucket", "logs"]);
    assert_eq!(status["enforcing"], json!(["edge-canary-1"]), "{status}");
    assert_eq!(status["canary"]["selector"], json!({"tier": "canary"}));

    // Agents joining mid-canary get what their labels say.
    let canary2 = agent("edge-canary-2", &url, &cert, "canary");
    let main3 = agent("edge-main-3", &url, &cert, "main");
    assert!(!tls12(&canary2));
    assert!(tls12(&main3));

    // The canary is in the store: a restarted control server still stages it.
    control.restart();
    ok(
        &url,
        &[
            "rollout",
            "status",
            "--bucket",
            "logs",
            "--wait",
            "--timeout",
            "20s",
        ],
    );
    assert!(ok(&url, &["get", "--bucket", "logs"])["policy"]["canary"].is_object());
    assert!(!tls12(&canary1) && tls12(&main1));

    // Promote: the whole fleet, and GET, have it; no canary pending.
    ok(&url, &["rollout", "promote", "--bucket", "logs", "--wait"]);
    assert_eq!(stored_versions(&url), json!(["TLSv1.3"]));
    assert!(ok(&url, &["get", "--bucket", "logs"])["policy"]["canary"].is_null());
    for a in [&canary1, &canary2, &main1, &main2, &main3] {
        assert!(!tls12(a), "{} enforces the promoted policy", a.node_id);
    }

    // A canary that loosens is a downgrade like any put; abort brings its agents back.
    let (code, _, err) = ctl(
        &url,
        &[
            "put",
            "--bucket",
            "logs",
            "--tls-versions",
            "TLSv1.2,TLSv1.3",
            "--canary",
            "tier=canary",
        ],
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("downgrade"), "{err}");
    ok(
        &url,
        &[
            "put",
            "--bucket",
            "logs",
            "--tls-versions",
            "TLSv1.2,TLSv1.3",
            "--canary",
            "tier=canary",
            "--allow-downgrade",
            "--wait",
        ],
    );
    assert!(tls12(&canary1) && tls12(&canary2));
    assert!(!tls12(&main1));
    ok(&url, &["rollout", "abort", "--bucket", "logs", "--wait"]);
    assert!(
        !tls12(&canary1) && !tls12(&canary2),
        "abort restored the stored policy"
    );
    assert_eq!(stored_versions(&url), json!(["TLSv1.3"]));

    // Nothing to promote now; and a canary whose bucket changed under it is not promoted.
    let (code, _, err) = ctl(&url, &["rollout", "promote", "--bucket", "logs"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("no canary"), "{err}");
    ok(
        &url,
        &[
            "put",
            "--bucket",
            "logs",
            "--tls-versions",
            "TLSv1.3",
            "--canary",
            "tier=canary",
        ],
    );
    ok(
        &url,
        &[
            "put",
            "--bucket",
            "logs",
            "--tls-versions",
            "TLSv1.3",
            "--strong",
        ],
    );
    let (code, _, err) = ctl(&url, &["rollout", "promote", "--bucket", "logs"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("changed since its canary started"), "{err}");
}

/// The control server's Sync counters: (deltas encoded, deltas sent as shared bytes).
fn sync_counters(control: &Control) -> (u64, u64) {
    let (status, text) =
        tlsfleet_testkit::procs::http_get(control.http, "/-/metrics").expect("metrics");
    assert_eq!(status, 200, "{text}");
    let read = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in the metrics:\n{text}"))
    };
    (
        read("tlsfleet_control_sync_deltas_encoded_total"),
        read("tlsfleet_control_sync_shared_deltas_sent_total"),
    )
}

#[test]
fn a_live_change_is_encoded_once_per_distinct_delta_whatever_the_number_of_agents() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = TestCert::generate(dir.path(), DOMAIN, KeyKind::EcdsaP256);
    let control = Control::embedded();
    let url = control.grpc_url();
    let canary1 = agent("edge-canary-1", &url, &cert, "canary");
    let main: Vec<Agent> = (1..=3)
        .map(|i| agent(&format!("edge-main-{i}"), &url, &cert, "main"))
        .collect();
    let put = |versions: &str, extra: &[&str]| {
        let mut args = vec![
            "put",
            "--bucket",
            "logs",
            "--tls-versions",
            versions,
            "--wait",
        ];
        args.extend_from_slice(extra);
        ok(&url, &args)
    };

    // One change for all four agents: one encoding, four streams sent it.
    let (encoded, sent) = sync_counters(&control);
    put("TLSv1.3", &[]);
    let (encoded2, sent2) = sync_counters(&control);
    assert_eq!(
        (encoded2 - encoded, sent2 - sent),
        (1, 4),
        "one delta, encoded once, sent to 4 agents"
    );
    assert!(!tls12(&canary1) && main.iter().all(|a| !tls12(a)));

    // A canary: the canary agent's delta and the others' differ; two encodings, four sends.
    put(
        "TLSv1.2,TLSv1.3",
        &["--canary", "tier=canary", "--allow-downgrade"],
    );
    let (encoded3, sent3) = sync_counters(&control);
    assert_eq!(
        (encoded3 - encoded2, sent3 - sent2),
        (2, 4),
        "two distinct deltas (in the canary or not), sent to 4 agents"
    );
    assert!(tls12(&canary1), "the canary agent got the canary's delta");
    assert!(main.iter().all(|a| !tls12(a)), "the others got theirs");
}

/// Two control servers on one etcd, canary agents on both and one outside the canary: either
/// server's `rollout status --bucket` counts what each canary agent refused since the canary
/// began (its own agents' reports and the other server's), and only the canary's agents.
#[test]
fn rollout_status_counts_each_canary_agents_refusals_across_control_servers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = TestCert::generate(dir.path(), DOMAIN, KeyKind::EcdsaP256);
    let etcd = Etcd::start();
    let peer_key = tlsfleet_testkit::control::peer_key_flags();
    let a = Control::on_etcd_with(&etcd.endpoint(), &peer_key);
    let b = Control::on_etcd_with(&etcd.endpoint(), &peer_key);
    let agent = |name: &str, control: &Control, tier: &str| {
        let extra = [
            "--label".to_owned(),
            format!("tier={tier}"),
            "--usage-interval".to_owned(),
            "1s".to_owned(),
        ];
        let mut agent = Agent::spawn_with(
            name,
            &[control.grpc_url()],
            &cert.cert,
            &cert.key,
            None,
            &extra,
        );
        agent.wait_ready();
        agent
    };
    let canary_a = agent("edge-canary-a", &a, "canary");
    let canary_b = agent("edge-canary-b", &b, "canary");
    let main_a = agent("edge-main-a", &a, "main");
    let url = a.grpc_url();
    ok(
        &url,
        &[
            "put",
            "--bucket",
            "logs",
            "--tls-versions",
            "TLSv1.2,TLSv1.3",
            "--wait",
        ],
    );
    // Refusals before the canary are not the canary's.
    let (refused_before, _) = s_client(main_a.tls, &format!("logs.{DOMAIN}"), &["-tls1_1"]);
    assert!(!refused_before, "TLS 1.1 is never served");
    ok(
        &url,
        &[
            "put",
            "--bucket",
            "logs",
            "--tls-versions",
            "TLSv1.3",
            "--canary",
            "tier=canary",
            "--wait",
        ],
    );
    for _ in 0..3 {
        assert!(!tls12(&canary_a));
    }
    for _ in 0..2 {
        assert!(!tls12(&canary_b));
    }
    assert!(
        tls12(&main_a),
        "outside the canary, TLS 1.2 is still served"
    );
    let expected = json!({"edge-canary-a": 3, "edge-canary-b": 2});
    for server in [&a, &b] {
        let status = |url: &str| ok(url, &["rollout", "status", "--bucket", "logs"]);
        let counted = until_blocking(Duration::from_secs(30), || {
            status(&server.grpc_url())["refused_by_agent"] == expected
        });
        let got = status(&server.grpc_url());
        assert!(
            counted,
            "each canary agent's refusals, from either server: {got}"
        );
        assert_eq!(got["refused_handshakes"], 5, "{got}");
        assert_eq!(got["unreachable"], json!([]), "{got}");
        assert_eq!(
            got["enforcing"],
            json!(["edge-canary-a", "edge-canary-b"]),
            "{got}"
        );
    }
}
