//! Nested endpoint domains (`--domain oss.test --domain internal.oss.test`): a virtual-hosted
//! `abc.internal.oss.test` is bucket `abc` for the control plane's REST API and for the agent
//! alike (most specific domain first, `tlsfleet_policy::names::Domains`), through the
//! official SDKs. Before the REST router shared the agent's reading, it took bucket
//! `abc.internal` and answered the SDK `400 InvalidBucketName`.

use std::{path::Path, process::Command};

use tlsfleet_testkit::{
    agent::Agent,
    control::{keys, Control, DOMAIN},
    rest,
    tls::{KeyKind, TestCa},
};

const NESTED: &str = "internal.oss.test";

fn sdk(args: &[&str]) -> Result<String, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/sdk_nested.py");
    let out = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 (apt-get install -y python3)");
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_owned();
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(text(&out.stderr))
    }
}

#[test]
fn a_nested_virtual_hosted_name_is_one_bucket_for_the_rest_api_and_the_agent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let control = Control::embedded_with(&["--domain".into(), NESTED.into()], false);
    let rest_endpoint = format!("http://{NESTED}:{}", control.http.port());

    // The official SDK (V4), virtual-hosted on the nested domain, against the REST API.
    sdk(&[
        "put-v2",
        &rest_endpoint,
        keys::ADMIN.0,
        keys::ADMIN.1,
        "abc",
        "TLSv1.3",
    ])
    .expect("PUT abc.internal.oss.test through the SDK");
    // Stored under `abc`: read back path-style, and virtual-hosted through the other SDK.
    let path_style = rest::oss(control.http, "GET", "abc", "", keys::ADMIN).expect("get");
    assert_eq!(path_style.status, 200, "{}", path_style.body);
    assert!(
        path_style.body.contains("<TLSVersion>TLSv1.3</TLSVersion>"),
        "{}",
        path_style.body
    );
    let args = |endpoint: &str, bucket: &str| {
        vec![
            "get-oss2".to_owned(),
            endpoint.to_owned(),
            keys::ADMIN.0.to_owned(),
            keys::ADMIN.1.to_owned(),
            bucket.to_owned(),
        ]
    };
    let run = |a: Vec<String>| sdk(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(run(args(&rest_endpoint, "abc")), Ok("TLSv1.3".to_owned()));

    // The agent, serving both domains, in front of the REST API.
    let ca = TestCa::new();
    let names: Vec<String> = [DOMAIN, NESTED]
        .iter()
        .flat_map(|d| [d.to_string(), format!("*.{d}")])
        .collect();
    let cert = ca.issue(dir.path(), "edge", &names, KeyKind::EcdsaP256);
    let ca_file = ca.write_pem(dir.path()).display().to_string();
    let mut agent = Agent::spawn_with(
        "edge-nested",
        &[control.grpc_url()],
        &cert.cert,
        &cert.key,
        None,
        &[
            "--domain".into(),
            NESTED.into(),
            "--upstream".into(),
            control.http_url(),
        ],
    );
    agent.wait_ready();
    let edge = format!("https://{NESTED}:{}", agent.tls.port());
    let through_agent = |bucket: &str, max_tls: Option<&str>| {
        let mut a = args(&edge, bucket);
        a.push(ca_file.clone());
        a.extend(max_tls.map(str::to_owned));
        run(a)
    };
    // SNI abc.internal.oss.test is bucket abc: TLS 1.3 is served and the request reaches the
    // REST API as abc's...
    assert_eq!(through_agent("abc", None), Ok("TLSv1.3".to_owned()));
    // ...and abc's policy refuses TLS 1.2 at the handshake.
    let refused = through_agent("abc", Some("1.2")).expect_err("TLS 1.2 to abc is refused");
    assert!(
        refused.to_ascii_lowercase().contains("ssl"),
        "not a TLS failure: {refused}"
    );
    // A bucket without a policy on the same nested domain takes TLS 1.2.
    assert_eq!(through_agent("open", Some("1.2")), Ok(String::new()));
}
