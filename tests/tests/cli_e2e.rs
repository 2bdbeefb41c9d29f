//! `tlsfleetctl` against a real control server: every command, JSON output, exit codes.

use std::process::Output;

use serde_json::Value;
use tlsfleet_testkit::control::{keys, tlsfleetctl, Control};

fn ctl(control_url: &str, key: (&str, &str), args: &[&str]) -> Output {
    tlsfleetctl(control_url, key, args)
}

fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "tlsfleetctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON document")
}

#[test]
fn every_command_against_a_real_control_server() {
    let control = Control::embedded();
    let url = control.grpc_url();

    let put = json(&ctl(
        &url,
        keys::ADMIN,
        &[
            "put",
            "--bucket",
            "cli-a",
            "--tls-versions",
            "TLSv1.2,TLSv1.3",
            "--cipher-suites",
            "ECDHE-RSA-AES128-GCM-SHA256",
            "--tls13-cipher-suites",
            "TLS_AES_256_GCM_SHA384",
        ],
    ));
    let rev = put["revision"].as_i64().expect("revision");
    assert!(rev > 0);
    assert_eq!(
        put["effective"]["tls_versions"],
        serde_json::json!(["TLSv1.2", "TLSv1.3"])
    );
    assert_eq!(
        put["effective"]["cipher_suites"],
        serde_json::json!([
            "TLS_AES_256_GCM_SHA384",
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
        ])
    );

    let get = json(&ctl(&url, keys::ADMIN, &["get", "--bucket", "cli-a"]));
    assert_eq!(get["policy"]["mod_revision"].as_i64(), Some(rev));
    assert_eq!(
        get["policy"]["config"]["cipher_suite"]["custom_cipher_suites"],
        serde_json::json!(["ECDHE-RSA-AES128-GCM-SHA256"])
    );

    json(&ctl(
        &url,
        keys::ADMIN,
        &[
            "put",
            "--bucket",
            "cli-b",
            "--tls-versions",
            "TLSv1.3",
            "--strong",
        ],
    ));
    let list = json(&ctl(&url, keys::ADMIN, &["list", "--prefix", "cli-"]));
    let names: Vec<_> = list["policies"]
        .as_array()
        .expect("array")
        .iter()
        .map(|p| p["bucket"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(names, vec!["cli-a", "cli-b"]);

    // Turning management off is a downgrade: refused (exit 3, saying so) without the flag.
    let refused = ctl(&url, keys::ADMIN, &["disable", "--bucket", "cli-a"]);
    assert_eq!(refused.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("downgrade"));
    let dis = json(&ctl(
        &url,
        keys::ADMIN,
        &["disable", "--bucket", "cli-a", "--allow-downgrade"],
    ));
    assert_eq!(dis["downgrade"], Value::Bool(true));
    assert!(dis["revision"].as_i64() > Some(rev));
    let get = json(&ctl(&url, keys::ADMIN, &["get", "--bucket", "cli-a"]));
    assert_eq!(get["policy"]["config"]["tls"]["enable"], Value::Bool(false));

    let del = json(&ctl(
        &url,
        keys::ADMIN,
        &["delete", "--bucket", "cli-b", "--allow-downgrade"],
    ));
    assert_eq!(del["existed"], Value::Bool(true));
    let get = json(&ctl(&url, keys::ADMIN, &["get", "--bucket", "cli-b"]));
    assert_eq!(get["policy"]["mod_revision"].as_i64(), Some(0));

    // The trail has every change and the refusal, with who and from where.
    let history = json(&ctl(&url, keys::ADMIN, &["history", "--bucket", "cli-a"]));
    let records = history["records"].as_array().expect("records");
    let outcomes: Vec<(&str, &str, bool)> = records
        .iter()
        .map(|r| {
            (
                r["operation"].as_str().unwrap_or_default(),
                r["outcome"].as_str().unwrap_or_default(),
                r["downgrade"].as_bool().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("put", "applied", false),
            ("put", "refused", true),
            ("put", "applied", true)
        ],
        "{history}"
    );
    for r in records {
        assert_eq!(r["key_id"], keys::ADMIN.0);
        assert!(
            r["peer"]
                .as_str()
                .is_some_and(|p| p.starts_with("127.0.0.1:")),
            "{r}"
        );
    }
    let agents = json(&ctl(&url, keys::ADMIN, &["agents"]));
    assert!(agents["agents"].as_array().is_some());
    let rollout = json(&ctl(&url, keys::ADMIN, &["rollout"]));
    assert_eq!(rollout["agents_total"].as_u64(), Some(0));
}

#[test]
fn failures_have_distinct_exit_codes() {
    let control = Control::embedded();
    let url = control.grpc_url();
    // 3: the server refuses the policy (serves nothing).
    let out = ctl(
        &url,
        keys::ADMIN,
        &["put", "--bucket", "cli-c", "--tls-versions", "TLSv1.0"],
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("TLSv1.0"));
    // 4: a key without the grant, and a wrong secret.
    let out = ctl(
        &url,
        keys::READER,
        &["put", "--bucket", "cli-c", "--tls-versions", "TLSv1.3"],
    );
    assert_eq!(out.status.code(), Some(4));
    let out = ctl(
        &url,
        (keys::ADMIN.0, "wrong"),
        &["get", "--bucket", "cli-c"],
    );
    assert_eq!(out.status.code(), Some(4));
    // 5: nothing listening.
    let dead = format!("http://127.0.0.1:{}", tlsfleet_testkit::ports::free_port());
    let out = ctl(&dead, keys::ADMIN, &["get", "--bucket", "cli-c"]);
    assert_eq!(out.status.code(), Some(5));
    // 2: usage.
    let out = ctl(
        &url,
        keys::ADMIN,
        &["put", "--bucket", "cli-c", "--tls-versions", "TLSv9"],
    );
    assert_eq!(out.status.code(), Some(2));
}
