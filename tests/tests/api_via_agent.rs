//! The storage endpoint answers the API: with `--control-rest`, an agent forwards
//! `?httpsConfig` requests (signature untouched) to the control plane, so the official SDKs
//! with their endpoint set to the agent (https, the test CA) put and get a bucket's policy, and
//! the bucket's own TLS policy applies to those calls like to any other.

use std::{path::Path, process::Command};

use tlsfleet_testkit::{
    agent::Agent,
    control::{keys, Control, DOMAIN},
    rest,
    tls::{handshake, ClientOffer, KeyKind, TestCa},
};

#[tokio::test]
async fn official_sdks_pointed_at_an_agent_put_and_get_a_buckets_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let test_ca = TestCa::new();
    let names = [DOMAIN.to_owned(), format!("*.{DOMAIN}")];
    let cert = test_ca.issue(dir.path(), "tls", &names, KeyKind::EcdsaP256);
    let ca = test_ca.write_pem(dir.path());
    let control = Control::embedded();
    let mut agent = Agent::spawn_with(
        "edge-api",
        &[control.grpc_url()],
        &cert.cert,
        &cert.key,
        None,
        &["--control-rest".into(), control.http_url()],
    );
    agent.wait_ready();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/sdk_via_agent.py");
    let endpoint = format!("https://{DOMAIN}:{}", agent.tls.port());
    let out = Command::new("python3")
        .arg(script)
        .args([&endpoint, keys::ADMIN.0, keys::ADMIN.1, "via-edge"])
        .arg(&ca)
        .output()
        .expect("python3 (apt-get install -y python3)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "v2 get: TLSv1.2,TLSv1.3",
            "oss2-v4 get: TLSv1.3",
            "oss2-v1 get: TLSv1.3"
        ]
    );
    // The control plane stored it (read directly, path style).
    let direct = rest::oss(control.http, "GET", "via-edge", "", keys::ADMIN).expect("get");
    assert!(
        direct.body.contains("<TLSVersion>TLSv1.3</TLSVersion>"),
        "{}",
        direct.body
    );
    assert!(!direct.body.contains("TLSv1.2"), "{}", direct.body);
    // And the agent enforces it on the bucket's name, API calls included.
    let rev: i64 = direct
        .header("x-tlsfleet-revision")
        .and_then(|r| r.parse().ok())
        .expect("revision");
    assert!(agent.wait_revision(rev, std::time::Duration::from_secs(10)));
    let host = format!("via-edge.{DOMAIN}");
    assert!(
        handshake(agent.tls, &host, &cert.ca_der, &ClientOffer::tls12())
            .await
            .is_err()
    );
    assert!(
        handshake(agent.tls, &host, &cert.ca_der, &ClientOffer::tls13())
            .await
            .is_ok()
    );
}
