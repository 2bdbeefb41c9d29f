//! The fleet default policy: set with `tlsfleetctl default set`, it reaches every agent and
//! holds buckets without a policy and connections with no SNI or the bare domain; buckets
//! with their own policy keep it; clearing it is a downgrade; agents keep it in their cache.

use std::time::Duration;

use serde_json::Value;
use tlsfleet_testkit::{
    agent::Agent,
    control::{keys, tlsfleetctl, Control, DOMAIN},
    tls::{handshake, ClientOffer, KeyKind, TestCert},
};

const WAIT: Duration = Duration::from_secs(10);

fn ctl(control: &Control, args: &[&str]) -> std::process::Output {
    tlsfleetctl(&control.grpc_url(), keys::ADMIN, args)
}

fn json(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "tlsfleetctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON document")
}

async fn accepts(agent: &Agent, sni: &str, cert: &TestCert, offer: &ClientOffer) -> bool {
    handshake(agent.tls, sni, &cert.ca_der, offer).await.is_ok()
}

#[tokio::test]
async fn the_default_policy_reaches_every_agent_and_holds_buckets_without_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = TestCert::generate(dir.path(), DOMAIN, KeyKind::EcdsaP256);
    let control = Control::embedded();
    let mut agents: Vec<Agent> = (0..2)
        .map(|i| {
            let mut a = Agent::spawn(
                &format!("edge-{i}"),
                &[control.grpc_url()],
                &cert.cert,
                &cert.key,
                Some(dir.path().join(format!("cache-{i}"))),
            );
            a.wait_ready();
            a
        })
        .collect();
    let (open, own) = (format!("nopolicy.{DOMAIN}"), format!("own.{DOMAIN}"));
    let own_put = json(&ctl(
        &control,
        &[
            "put",
            "--bucket",
            "own",
            "--tls-versions",
            "TLSv1.2,TLSv1.3",
        ],
    ));
    // Before: the built-in default takes TLS 1.2 everywhere.
    let rev = own_put["revision"].as_i64().expect("revision");
    for a in &agents {
        assert!(a.wait_revision(rev, WAIT));
        assert!(accepts(a, &open, &cert, &ClientOffer::tls12()).await);
    }

    // Tightening the default needs no allowance.
    let set = json(&ctl(
        &control,
        &["default", "set", "--tls-versions", "TLSv1.3"],
    ));
    assert_eq!(set["downgrade"], Value::Bool(false));
    let rev = set["revision"].as_i64().expect("revision");
    for a in &agents {
        assert!(
            a.wait_revision(rev, WAIT),
            "{} never applied {rev}",
            a.node_id
        );
        // A bucket without a policy, the bare domain and no SNI: the default (TLS 1.3 only).
        assert!(!accepts(a, &open, &cert, &ClientOffer::tls12()).await);
        assert!(accepts(a, &open, &cert, &ClientOffer::tls13()).await);
        assert!(!accepts(a, DOMAIN, &cert, &ClientOffer::tls12()).await);
        assert!(accepts(a, DOMAIN, &cert, &ClientOffer::tls13()).await);
        // A bucket with its own policy keeps it.
        assert!(accepts(a, &own, &cert, &ClientOffer::tls12()).await);
    }
    let get = json(&ctl(&control, &["default", "get"]));
    assert_eq!(
        get["policy"]["config"]["tls"]["tls_versions"],
        serde_json::json!(["TLSv1.3"])
    );
    assert_eq!(get["policy"]["mod_revision"].as_i64(), Some(rev));

    // An agent restarted without the control plane serves the default from its cache.
    assert!(
        agents[0].wait_cached(rev, WAIT),
        "the default never reached the cache"
    );
    let mut control = control;
    control.kill();
    agents[0].restart();
    agents[0].wait_ready();
    assert!(!accepts(&agents[0], &open, &cert, &ClientOffer::tls12()).await);
    assert!(accepts(&agents[0], &open, &cert, &ClientOffer::tls13()).await);
    control.restart();

    // Clearing it lets TLS 1.2 back in: a downgrade, refused without the allowance.
    let refused = ctl(&control, &["default", "clear"]);
    assert_eq!(
        refused.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(String::from_utf8_lossy(&refused.stderr).contains("downgrade"));
    let cleared = json(&ctl(&control, &["default", "clear", "--allow-downgrade"]));
    assert_eq!(cleared["existed"], Value::Bool(true));
    assert_eq!(cleared["downgrade"], Value::Bool(true));
    let rev = cleared["revision"].as_i64().expect("revision");
    for a in &agents {
        assert!(
            a.wait_revision(rev, WAIT),
            "{} never applied {rev}",
            a.node_id
        );
        assert!(accepts(a, &open, &cert, &ClientOffer::tls12()).await);
    }
    // Every change of the default is in the trail (bucket "").
    let history = json(&ctl(&control, &["history"]));
    let ops: Vec<(String, String)> = history["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter(|r| r["bucket"] == "")
        .map(|r| {
            (
                r["operation"].as_str().unwrap_or_default().to_owned(),
                r["outcome"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        ops,
        [
            ("put_default".to_owned(), "applied".to_owned()),
            ("delete_default".to_owned(), "refused".to_owned()),
            ("delete_default".to_owned(), "applied".to_owned()),
        ]
    );
}
