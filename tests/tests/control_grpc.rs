//! The gRPC admin API of a real control server: Put/Get/List/Delete, revisions, validation,
//! authentication and authorization, health.

use tlsfleet_proto::v1::{
    CipherSuiteConfig, DeleteRequest, GetRequest, HttpsConfig, ListRequest, PutRequest,
};
use tlsfleet_testkit::{
    control::{keys, Control},
    grpc::{admin, https_config, signed},
};
use tonic::Code;

const PUT: &str = tlsfleet_proto::v1::methods::HTTPS_CONFIG_SERVICE_PUT;
const GET: &str = tlsfleet_proto::v1::methods::HTTPS_CONFIG_SERVICE_GET;
const LIST: &str = tlsfleet_proto::v1::methods::HTTPS_CONFIG_SERVICE_LIST;
const DELETE: &str = tlsfleet_proto::v1::methods::HTTPS_CONFIG_SERVICE_DELETE;

fn config(versions: &[&str]) -> HttpsConfig {
    https_config(versions, &[], &[])
}

/// A put that may downgrade: these tests are about the API; the downgrade guard has its own
/// (tests/tests/safe_changes.rs).
fn put(bucket: &str, c: HttpsConfig) -> PutRequest {
    PutRequest {
        bucket: bucket.into(),
        config: Some(c),
        allow_downgrade: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn put_get_list_delete_round_trip_with_revisions() {
    let control = Control::embedded();
    let mut c = admin(&control.grpc_url()).await;

    let mut cs = config(&["TLSv1.2", "TLSv1.0", "TLSv1.2"]);
    cs.cipher_suite = Some(CipherSuiteConfig {
        enable: Some(true),
        strong_cipher_suite: Some(false),
        custom_cipher_suites: vec!["ECDHE-RSA-AES128-GCM-SHA256".into(), "AES128-SHA".into()],
        tls13_custom_cipher_suites: vec![],
    });
    let r1 = c
        .put(signed(put("alpha-1", cs), PUT, keys::ADMIN))
        .await
        .expect("put")
        .into_inner();
    assert!(r1.revision > 0);
    let eff = r1.effective.expect("effective");
    assert_eq!(eff.tls_versions, vec!["TLSv1.2"]);
    assert_eq!(
        eff.cipher_suites,
        vec!["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"]
    );
    assert!(
        eff.dropped.iter().any(|d| d.contains("TLSv1.0")),
        "{:?}",
        eff.dropped
    );
    assert!(
        eff.dropped.iter().any(|d| d.contains("AES128-SHA")),
        "{:?}",
        eff.dropped
    );

    let r2 = c
        .put(signed(
            put("alpha-2", config(&["TLSv1.3"])),
            PUT,
            keys::ADMIN,
        ))
        .await
        .expect("put")
        .into_inner();
    assert!(r2.revision > r1.revision, "revisions increase");

    // Stored exactly as sent, de-duplicated in order.
    let got = c
        .get(signed(
            GetRequest {
                bucket: "alpha-1".into(),
            },
            GET,
            keys::ADMIN,
        ))
        .await
        .expect("get")
        .into_inner();
    let p = got.policy.expect("policy");
    assert_eq!(p.mod_revision, r1.revision);
    assert!(got.revision >= r2.revision, "a server reads its own writes");
    let tls = p.config.expect("config").tls.expect("tls");
    assert_eq!(tls.tls_versions, vec!["TLSv1.2", "TLSv1.0"]);

    // A bucket never set: the disabled default at revision 0.
    let none = c
        .get(signed(
            GetRequest {
                bucket: "never-set".into(),
            },
            GET,
            keys::ADMIN,
        ))
        .await
        .expect("get")
        .into_inner();
    let p = none.policy.expect("policy");
    assert_eq!(p.mod_revision, 0);
    assert!(!p.config.expect("config").tls.expect("tls").enable);

    // Paged list by prefix.
    for i in 0..5 {
        c.put(signed(
            put(&format!("beta-{i}"), config(&["TLSv1.2"])),
            PUT,
            keys::ADMIN,
        ))
        .await
        .expect("put");
    }
    let mut seen = vec![];
    let mut token = String::new();
    loop {
        let page = c
            .list(signed(
                ListRequest {
                    prefix: "beta-".into(),
                    page_size: 2,
                    page_token: token.clone(),
                },
                LIST,
                keys::ADMIN,
            ))
            .await
            .expect("list")
            .into_inner();
        assert!(page.policies.len() <= 2);
        seen.extend(page.policies.into_iter().map(|p| p.bucket));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, vec!["beta-0", "beta-1", "beta-2", "beta-3", "beta-4"]);

    let d = c
        .delete(signed(
            DeleteRequest {
                bucket: "alpha-2".into(),
                allow_downgrade: true,
            },
            DELETE,
            keys::ADMIN,
        ))
        .await
        .expect("delete")
        .into_inner();
    assert!(d.existed && d.revision > r2.revision);
    let gone = c
        .get(signed(
            GetRequest {
                bucket: "alpha-2".into(),
            },
            GET,
            keys::ADMIN,
        ))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(gone.policy.expect("policy").mod_revision, 0);
    let d2 = c
        .delete(signed(
            DeleteRequest {
                bucket: "alpha-2".into(),
                allow_downgrade: true,
            },
            DELETE,
            keys::ADMIN,
        ))
        .await
        .expect("delete")
        .into_inner();
    assert!(!d2.existed);
}

#[tokio::test]
async fn invalid_policies_are_refused_and_nothing_is_stored() {
    let control = Control::embedded();
    let mut c = admin(&control.grpc_url()).await;
    let cases = vec![
        ("legacy-only", config(&["TLSv1.0", "TLSv1.1"])),
        ("no-versions", config(&[])),
        ("bad-version", config(&["TLSv9"])),
        ("bad-suite", {
            let mut h = config(&["TLSv1.2"]);
            h.cipher_suite = Some(CipherSuiteConfig {
                enable: Some(true),
                strong_cipher_suite: Some(false),
                custom_cipher_suites: vec!["NOT-A-SUITE".into()],
                tls13_custom_cipher_suites: vec![],
            });
            h
        }),
    ];
    for (bucket, cfg) in cases {
        let err = c
            .put(signed(put(bucket, cfg), PUT, keys::ADMIN))
            .await
            .expect_err(bucket);
        assert_eq!(err.code(), Code::InvalidArgument, "{bucket}: {err:?}");
        assert!(!err.message().is_empty());
        let got = c
            .get(signed(
                GetRequest {
                    bucket: bucket.into(),
                },
                GET,
                keys::ADMIN,
            ))
            .await
            .expect("get")
            .into_inner();
        assert_eq!(
            got.policy.expect("policy").mod_revision,
            0,
            "{bucket} must not be stored"
        );
    }
    let err = c
        .put(signed(
            put("Bad_Name", config(&["TLSv1.2"])),
            PUT,
            keys::ADMIN,
        ))
        .await
        .expect_err("bad name");
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn keys_do_only_what_they_were_granted() {
    let control = Control::embedded();
    let mut c = admin(&control.grpc_url()).await;

    // No signature, unknown key, wrong secret, signature for another method.
    let err = c
        .put(tonic::Request::new(put("gamma", config(&["TLSv1.2"]))))
        .await
        .expect_err("unsigned");
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = c
        .put(signed(
            put("gamma", config(&["TLSv1.2"])),
            PUT,
            ("AKIDNOBODY", "x"),
        ))
        .await
        .expect_err("unknown key");
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = c
        .put(signed(
            put("gamma", config(&["TLSv1.2"])),
            PUT,
            (keys::ADMIN.0, "wrong"),
        ))
        .await
        .expect_err("wrong secret");
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = c
        .put(signed(put("gamma", config(&["TLSv1.2"])), GET, keys::ADMIN))
        .await
        .expect_err("other method");
    assert_eq!(err.code(), Code::Unauthenticated);

    // Reader: get yes, put/delete/list no.
    c.get(signed(
        GetRequest {
            bucket: "gamma".into(),
        },
        GET,
        keys::READER,
    ))
    .await
    .expect("reader may get");
    let err = c
        .put(signed(
            put("gamma", config(&["TLSv1.2"])),
            PUT,
            keys::READER,
        ))
        .await
        .expect_err("reader put");
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = c
        .delete(signed(
            DeleteRequest {
                bucket: "gamma".into(),
                allow_downgrade: true,
            },
            DELETE,
            keys::READER,
        ))
        .await
        .expect_err("reader delete");
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = c
        .list(signed(ListRequest::default(), LIST, keys::READER))
        .await
        .expect_err("reader list");
    assert_eq!(err.code(), Code::PermissionDenied);

    // logs-*: only its buckets, and List shows only them.
    c.put(signed(put("logs-a", config(&["TLSv1.3"])), PUT, keys::LOGS))
        .await
        .expect("logs put");
    c.put(signed(
        put("other-a", config(&["TLSv1.3"])),
        PUT,
        keys::ADMIN,
    ))
    .await
    .expect("admin put");
    let err = c
        .put(signed(
            put("other-b", config(&["TLSv1.3"])),
            PUT,
            keys::LOGS,
        ))
        .await
        .expect_err("logs key on other bucket");
    assert_eq!(err.code(), Code::PermissionDenied);
    let page = c
        .list(signed(ListRequest::default(), LIST, keys::LOGS))
        .await
        .expect("logs list")
        .into_inner();
    let names: Vec<_> = page.policies.iter().map(|p| p.bucket.as_str()).collect();
    assert_eq!(names, vec!["logs-a"]);

    // The agent key can write nothing.
    let err = c
        .put(signed(
            put("logs-a", config(&["TLSv1.2"])),
            PUT,
            keys::AGENT,
        ))
        .await
        .expect_err("agent put");
    assert_eq!(err.code(), Code::PermissionDenied);

    // A replayed request (same nonce) is refused.
    let req = signed(
        GetRequest {
            bucket: "gamma".into(),
        },
        GET,
        keys::ADMIN,
    );
    let header = req
        .metadata()
        .get("authorization")
        .cloned()
        .expect("header");
    c.get(req).await.expect("first use");
    let mut again = tonic::Request::new(GetRequest {
        bucket: "gamma".into(),
    });
    again.metadata_mut().insert("authorization", header);
    let err = c.get(again).await.expect_err("replay");
    assert_eq!(err.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn stale_signatures_are_refused() {
    let control = Control::embedded();
    let mut c = admin(&control.grpc_url()).await;
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(16 * 60);
    let date = tlsfleet_testkit::grpc::utc_at(old);
    let msg = GetRequest {
        bucket: "gamma".into(),
    };
    let digest = tlsfleet_proto::auth::message_digest(&msg);
    let h = tlsfleet_proto::auth::SignedHeader::sign(
        keys::ADMIN.0,
        keys::ADMIN.1,
        &date,
        "abcd",
        GET,
        &digest,
    );
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("authorization", h.to_header_value().parse().expect("ascii"));
    let err = c.get(req).await.expect_err("skewed");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(
        err.message().to_lowercase().contains("skew") || err.message().contains("time"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn health_reports_serving() {
    let control = Control::embedded();
    let channel = tonic::transport::Channel::from_shared(control.grpc_url())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let r = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "tlsfleet.v1.HttpsConfigService".into(),
        })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(
        r.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

/// The health of `service` ("" for the server as a whole).
async fn health_of(url: &str, service: &str) -> i32 {
    let channel = tonic::transport::Channel::from_shared(url.to_owned())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("health")
        .into_inner()
        .status
}

/// A GET, whatever its answer: a store call must fail (or succeed) before the server knows.
async fn ask_the_store(url: &str) {
    let mut c = admin(url).await;
    let _ = c
        .get(signed(
            GetRequest {
                bucket: "any".into(),
            },
            tlsfleet_proto::v1::methods::HTTPS_CONFIG_SERVICE_GET,
            keys::ADMIN,
        ))
        .await;
}

#[tokio::test]
async fn health_is_per_service_and_follows_the_store() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let mut etcd = tlsfleet_testkit::etcd::Etcd::start();
    let control = Control::on_etcd(&etcd.endpoint());
    let url = control.grpc_url();
    for service in [
        "",
        "tlsfleet.v1.HttpsConfigService",
        "tlsfleet.v1.FleetService",
    ] {
        assert_eq!(
            health_of(&url, service).await,
            ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
    // Without its store the admin API cannot answer; the agents' streams still can.
    etcd.kill();
    assert!(
        admin_health_becomes(&url, ServingStatus::NotServing).await,
        "HttpsConfigService still serving without its store"
    );
    assert_eq!(
        health_of(&url, "tlsfleet.v1.FleetService").await,
        ServingStatus::Serving as i32
    );
    // And back once etcd is.
    etcd.restart();
    assert!(
        admin_health_becomes(&url, ServingStatus::Serving).await,
        "HttpsConfigService never served again"
    );
}

/// Whether HttpsConfigService's health comes to `want` within 20 s, asking the store between
/// checks (the server learns of the store's state from its calls).
async fn admin_health_becomes(
    url: &str,
    want: tonic_health::pb::health_check_response::ServingStatus,
) -> bool {
    tlsfleet_testkit::eventually::until(std::time::Duration::from_secs(20), || async {
        if health_of(url, "tlsfleet.v1.HttpsConfigService").await == want as i32 {
            return true;
        }
        ask_the_store(url).await;
        false
    })
    .await
}

#[tokio::test]
async fn reflection_v1alpha_answers_for_older_clients() {
    use tonic_reflection::pb::v1alpha::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let control = Control::embedded();
    let channel = tonic::transport::Channel::from_shared(control.grpc_url())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut client = ServerReflectionClient::new(channel);
    let requests = [
        MessageRequest::ListServices(String::new()),
        MessageRequest::FileContainingSymbol("tlsfleet.v1.HttpsConfigService".into()),
    ]
    .map(|m| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(m),
    });
    let mut stream = client
        .server_reflection_info(futures::stream::iter(requests))
        .await
        .expect("reflection v1alpha")
        .into_inner();
    let first = stream.message().await.expect("message").expect("a listing");
    let Some(MessageResponse::ListServicesResponse(list)) = first.message_response else {
        panic!("unexpected reflection answer: {first:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for want in [
        "tlsfleet.v1.HttpsConfigService",
        "tlsfleet.v1.FleetService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let second = stream.message().await.expect("message").expect("a file");
    let Some(MessageResponse::FileDescriptorResponse(files)) = second.message_response else {
        panic!("unexpected reflection answer: {second:?}");
    };
    assert!(!files.file_descriptor_proto.is_empty());
}

#[tokio::test]
async fn reflection_lists_the_services() {
    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let control = Control::embedded();
    let channel = tonic::transport::Channel::from_shared(control.grpc_url())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut client = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream_once(req))
        .await
        .expect("reflection")
        .into_inner();
    let resp = stream
        .message()
        .await
        .expect("message")
        .expect("one response");
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected reflection answer: {resp:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for want in [
        "tlsfleet.v1.HttpsConfigService",
        "tlsfleet.v1.FleetService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
}

fn tokio_stream_once<T: Send + 'static>(
    item: T,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::iter([item])
}
