//! Control servers on a real etcd: shared state between servers, and a dead store.

use std::time::{Duration, Instant};

use tlsfleet_proto::v1::{GetRequest, HttpsConfig, PutRequest, TlsConfig};
use tlsfleet_testkit::{
    control::{keys, Control},
    etcd::Etcd,
    grpc::{admin, signed},
    procs::eventually,
    rest,
};

const PUT: &str = tlsfleet_proto::v1::methods::HTTPS_CONFIG_SERVICE_PUT;
const GET: &str = tlsfleet_proto::v1::methods::HTTPS_CONFIG_SERVICE_GET;

fn xml(versions: &[&str]) -> String {
    let v: String = versions
        .iter()
        .map(|v| format!("<TLSVersion>{v}</TLSVersion>"))
        .collect();
    format!("<HttpsConfiguration><TLS><Enable>true</Enable>{v}</TLS></HttpsConfiguration>")
}

#[tokio::test]
async fn a_put_on_one_server_is_visible_on_the_other() {
    let etcd = Etcd::start();
    let a = Control::on_etcd(&etcd.endpoint());
    let b = Control::on_etcd(&etcd.endpoint());

    let r = rest::oss(
        a.http,
        "PUT",
        "shared-bucket",
        &xml(&["TLSv1.3"]),
        keys::ADMIN,
    )
    .expect("put");
    assert_eq!(r.status, 200, "{r:?}");
    let rev: i64 = r
        .header("x-tlsfleet-revision")
        .expect("revision header")
        .parse()
        .expect("number");

    // B serves it from its own index once its watch delivers it.
    let c = admin(&b.grpc_url()).await;
    let seen = std::sync::Mutex::new(None);
    let get = || async {
        let got = c
            .clone()
            .get(signed(
                GetRequest {
                    bucket: "shared-bucket".into(),
                },
                GET,
                keys::ADMIN,
            ))
            .await
            .expect("get")
            .into_inner();
        let p = got.policy.expect("policy");
        let at_rev = p.mod_revision == rev;
        *seen.lock().expect("lock") = Some(p);
        at_rev
    };
    tlsfleet_testkit::eventually::eventually(
        &format!("server B sees revision {rev}"),
        Duration::from_secs(5),
        get,
    )
    .await;
    let p = seen.lock().expect("lock").take().expect("a policy");
    assert_eq!(
        p.config.expect("config").tls.expect("tls").tls_versions,
        vec!["TLSv1.3"]
    );
    let g = rest::oss(b.http, "GET", "shared-bucket", "", keys::ADMIN).expect("get");
    assert_eq!(g.status, 200);
    assert!(
        g.body.contains("<TLSVersion>TLSv1.3</TLSVersion>"),
        "{}",
        g.body
    );
}

#[tokio::test]
async fn with_etcd_down_a_put_is_503_and_nothing_is_written() {
    let mut etcd = Etcd::start();
    let control = Control::on_etcd(&etcd.endpoint());
    let ok = rest::oss(
        control.http,
        "PUT",
        "before-outage",
        &xml(&["TLSv1.2"]),
        keys::ADMIN,
    )
    .expect("put");
    assert_eq!(ok.status, 200, "{ok:?}");

    etcd.kill();
    let started = Instant::now();
    let r = rest::oss(
        control.http,
        "PUT",
        "during-outage",
        &xml(&["TLSv1.3"]),
        keys::ADMIN,
    )
    .expect("put");
    let took = started.elapsed();
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.error_code(), Some("ServiceUnavailable"), "{}", r.body);
    assert!(took < Duration::from_secs(10), "503 took {took:?}");
    // gRPC says the same.
    let mut c = admin(&control.grpc_url()).await;
    let put = PutRequest {
        bucket: "during-outage".into(),
        config: Some(HttpsConfig {
            tls: Some(TlsConfig {
                enable: true,
                tls_versions: vec!["TLSv1.3".into()],
            }),
            cipher_suite: None,
        }),
        ..Default::default()
    };
    let err = c
        .put(signed(put.clone(), PUT, keys::ADMIN))
        .await
        .expect_err("store down");
    assert_eq!(err.code(), tonic::Code::Unavailable);

    etcd.restart();
    // Nothing was written while etcd was down...
    let mut etcd_get = etcd_client_get(&etcd.endpoint(), "/tlsfleet/policies/during-outage").await;
    assert!(etcd_get.is_none(), "a refused PUT must not be stored");
    // ...and PUTs work again once it is back.
    let back = eventually(
        Duration::from_secs(15),
        || matches!(rest::oss(control.http, "PUT", "after-outage", &xml(&["TLSv1.3"]), keys::ADMIN), Ok(r) if r.status == 200),
    );
    assert!(back, "PUTs did not recover after etcd came back");
    etcd_get = etcd_client_get(&etcd.endpoint(), "/tlsfleet/policies/after-outage").await;
    assert!(etcd_get.is_some(), "the PUT after recovery is in etcd");
}

/// Reads a key straight from etcd with etcdctl (the Debian etcd-client package).
async fn etcd_client_get(endpoint: &str, key: &str) -> Option<String> {
    let out = tokio::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoint, "get", key, "--print-value-only"])
        .output()
        .await
        .expect("etcdctl (apt-get install -y etcd-client)");
    assert!(
        out.status.success(),
        "etcdctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (!v.is_empty()).then_some(v)
}
