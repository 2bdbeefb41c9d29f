//! Control ↔ agent and control ↔ operator traffic over TLS with client certificates (mTLS):
//! invariant 7 of the design, with real processes.

use std::process::Command;

use tlsfleet_testkit::{
    agent::Agent,
    control::{keys, Control, DOMAIN},
    procs::bin,
    tls::{s_client, KeyKind, TestCa, TestCert},
};

fn s(p: &std::path::Path) -> String {
    p.display().to_string()
}

#[test]
fn agents_and_operators_reach_an_mtls_control_plane() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new();
    let ca_pem = ca.write_pem(dir.path());
    let server = ca.issue(
        dir.path(),
        "control",
        &["127.0.0.1".to_owned(), "localhost".to_owned()],
        KeyKind::EcdsaP256,
    );
    let agent_id = ca.issue(
        dir.path(),
        "agent-client",
        &["agent-0".to_owned()],
        KeyKind::EcdsaP256,
    );
    let operator = ca.issue(
        dir.path(),
        "operator",
        &["operator".to_owned()],
        KeyKind::EcdsaP256,
    );
    let edge = TestCert::generate(dir.path(), DOMAIN, KeyKind::EcdsaP256);

    let control = Control::embedded_with(
        &[
            "--grpc-tls-cert".into(),
            s(&server.cert),
            "--grpc-tls-key".into(),
            s(&server.key),
            "--grpc-tls-client-ca".into(),
            s(&ca_pem),
        ],
        true,
    );
    let url = control.grpc_url();
    assert!(url.starts_with("https://"));

    let ctl = |extra: &[String], args: &[&str]| {
        Command::new(bin("tlsfleetctl"))
            .args(["--control", &url, "--ca", &s(&ca_pem), "--output", "json"])
            .args(extra)
            .args(args)
            .env("TLSFLEET_ACCESS_KEY_ID", keys::ADMIN.0)
            .env("TLSFLEET_ACCESS_KEY_SECRET", keys::ADMIN.1)
            .output()
            .expect("tlsfleetctl")
    };
    let identity = [
        "--client-cert".to_owned(),
        s(&operator.cert),
        "--client-key".to_owned(),
        s(&operator.key),
    ];

    // Without a client certificate the control plane refuses the connection.
    let out = ctl(&[], &["get", "--bucket", "mtls-a"]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = ctl(
        &identity,
        &["put", "--bucket", "mtls-a", "--tls-versions", "TLSv1.3"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let put: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let rev = put["revision"].as_i64().expect("revision");

    let mut agent = Agent::spawn_with(
        "agent-0",
        std::slice::from_ref(&url),
        &edge.cert,
        &edge.key,
        None,
        &[
            "--control-ca".into(),
            s(&ca_pem),
            "--control-client-cert".into(),
            s(&agent_id.cert),
            "--control-client-key".into(),
            s(&agent_id.key),
        ],
    );
    agent.wait_ready();
    assert!(
        agent.wait_revision(rev, std::time::Duration::from_secs(10)),
        "synced over mTLS"
    );
    assert!(!s_client(agent.tls, &format!("mtls-a.{DOMAIN}"), &["-tls1_2"]).0);
    assert!(s_client(agent.tls, &format!("mtls-a.{DOMAIN}"), &["-tls1_3"]).0);
}
