//! Safe changes against a real control server: the downgrade guard (gRPC, REST with the
//! default `--rest-downgrades refuse`), and the audit trail of every change and every refused
//! change (who, from where, request id, before/after, revision), kept across a restart.

use tlsfleet_proto::{
    signer::signed_request,
    v1::{DeleteRequest, HttpsConfig, ListHistoryRequest, PutRequest, PutResponse},
};
use tlsfleet_testkit::{
    control::{keys, Control},
    grpc::{admin_as, https_config},
    rest,
};
use tonic::Code;

fn policy(versions: &[&str]) -> HttpsConfig {
    https_config(versions, &[], &[])
}

fn put(bucket: &str, versions: &[&str], allow_downgrade: bool) -> PutRequest {
    PutRequest {
        bucket: bucket.into(),
        config: Some(policy(versions)),
        allow_downgrade,
        ..Default::default()
    }
}

fn xml(versions: &[&str]) -> String {
    let v: String = versions
        .iter()
        .map(|v| format!("<TLSVersion>{v}</TLSVersion>"))
        .collect();
    format!("<HttpsConfiguration><TLS><Enable>true</Enable>{v}</TLS></HttpsConfiguration>")
}

#[tokio::test]
async fn downgrades_need_an_allowance_and_every_change_is_in_the_trail() {
    let mut control = Control::embedded();
    let mut c = admin_as(&control.grpc_url(), keys::ADMIN).await;

    // Tightening and first policies are no downgrades.
    let first = c
        .put(signed_request(put("vault", &["TLSv1.2", "TLSv1.3"], false)))
        .await
        .expect("first put");
    let first_id = first
        .metadata()
        .get("x-tlsfleet-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("a request id")
        .to_owned();
    let first: PutResponse = first.into_inner();
    assert!(!first.downgrade);
    let tight = c
        .put(signed_request(put("vault", &["TLSv1.3"], false)))
        .await
        .expect("tightening")
        .into_inner();
    assert!(!tight.downgrade && tight.revision > first.revision);

    // Letting TLS 1.2 back in is refused without the allowance, saying what it lets in...
    let err = c
        .put(signed_request(put("vault", &["TLSv1.2", "TLSv1.3"], false)))
        .await
        .expect_err("a downgrade without allow_downgrade");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("lets in TLSv1.2"),
        "{}",
        err.message()
    );
    // ...and so is deleting the policy, or adding TLSv1.0.
    let err = c
        .delete(signed_request(DeleteRequest {
            bucket: "vault".into(),
            allow_downgrade: false,
        }))
        .await
        .expect_err("deleting a strict policy");
    assert_eq!(err.code(), Code::FailedPrecondition);
    let err = c
        .put(signed_request(put("vault", &["TLSv1.0", "TLSv1.3"], false)))
        .await
        .expect_err("adding TLSv1.0");
    assert!(err.message().contains("TLSv1.0"), "{}", err.message());

    // REST: the OSS API cannot ask, the server's default refuses with 403 AccessDenied.
    let r = rest::oss(
        control.http,
        "PUT",
        "vault",
        &xml(&["TLSv1.2", "TLSv1.3"]),
        keys::ADMIN,
    )
    .expect("rest put");
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.error_code(), Some("AccessDenied"));
    assert!(r.body.contains("--rest-downgrades"), "{}", r.body);
    let rest_id = r.header("x-oss-request-id").expect("request id").to_owned();
    let g = rest::oss(control.http, "GET", "vault", "", keys::ADMIN).expect("get");
    assert!(
        g.body.contains("<TLSVersion>TLSv1.3</TLSVersion>"),
        "{}",
        g.body
    );
    assert!(
        !g.body.contains("TLSv1.2"),
        "nothing refused was stored: {}",
        g.body
    );

    // With the allowance it is applied, and says it was a downgrade.
    let down = c
        .put(signed_request(put("vault", &["TLSv1.2", "TLSv1.3"], true)))
        .await
        .expect("an allowed downgrade")
        .into_inner();
    assert!(down.downgrade);

    // The trail: every change and refusal of the bucket, oldest first.
    let expect = [
        ("grpc", "put", "applied", false),
        ("grpc", "put", "applied", false),
        ("grpc", "put", "refused", true),
        ("grpc", "delete", "refused", true),
        ("grpc", "put", "refused", true),
        ("rest", "put", "refused", true),
        ("grpc", "put", "applied", true),
    ];
    let check = |records: &[tlsfleet_proto::v1::AuditRecord]| {
        let got: Vec<(&str, &str, &str, bool)> = records
            .iter()
            .map(|r| {
                (
                    r.via.as_str(),
                    r.operation.as_str(),
                    r.outcome.as_str(),
                    r.downgrade,
                )
            })
            .collect();
        assert_eq!(got, expect, "{records:#?}");
        for r in records {
            assert_eq!(r.key_id, keys::ADMIN.0);
            assert_eq!(r.bucket, "vault");
            assert!(r.peer.starts_with("127.0.0.1:"), "{}", r.peer);
            assert_eq!(r.revision > 0, r.outcome == "applied", "{r:?}");
            assert!(r.after.is_some() || r.operation == "delete", "{r:?}");
            if r.outcome == "refused" {
                assert!(r.reason.contains("downgrade"), "{r:?}");
            }
        }
        assert_eq!(records[0].request_id, first_id);
        assert!(records[0].before.is_none());
        assert_eq!(
            records[2]
                .before
                .as_ref()
                .and_then(|b| b.tls.as_ref())
                .map(|t| t.tls_versions.clone()),
            Some(vec!["TLSv1.3".to_owned()])
        );
        assert_eq!(records[5].request_id, rest_id);
        assert_eq!(records[6].revision, down.revision);
    };
    let history = |bucket: &str| ListHistoryRequest {
        bucket: bucket.into(),
        ..Default::default()
    };
    let records = c
        .list_history(signed_request(history("vault")))
        .await
        .expect("history")
        .into_inner()
        .records;
    check(&records);
    // A page at a time, with the page token.
    let page = c
        .list_history(signed_request(ListHistoryRequest {
            bucket: "vault".into(),
            page_size: 4,
            ..Default::default()
        }))
        .await
        .expect("page")
        .into_inner();
    assert_eq!(page.records.len(), 4);
    let rest_page = c
        .list_history(signed_request(ListHistoryRequest {
            bucket: "vault".into(),
            page_token: page.next_page_token,
            ..Default::default()
        }))
        .await
        .expect("next page")
        .into_inner();
    assert_eq!(rest_page.records.len(), expect.len() - 4);
    // Other buckets' changes are not this bucket's; a key without the grant sees none.
    let other = c
        .list_history(signed_request(history("elsewhere")))
        .await
        .expect("history")
        .into_inner();
    assert!(other.records.is_empty());
    let mut reader = admin_as(&control.grpc_url(), keys::READER).await;
    let denied = reader
        .list_history(signed_request(history("vault")))
        .await
        .expect_err("no tlsfleet:ListHistory grant");
    assert_eq!(denied.code(), Code::PermissionDenied);

    // The trail is in the store: a restarted server has it.
    control.restart();
    let mut c = admin_as(&control.grpc_url(), keys::ADMIN).await;
    let records = c
        .list_history(signed_request(history("vault")))
        .await
        .expect("history after restart")
        .into_inner()
        .records;
    check(&records);
}
