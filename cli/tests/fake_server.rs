//! The whole CLI path (flags → signed gRPC call → output or exit code) against an in-process
//! gRPC server on a real socket. The fake checks signatures like the control plane does, so
//! a signer that signs the wrong method path fails here. What the real control plane answers
//! is tested end to end in tests/.

#![allow(clippy::unwrap_used)] // a test may panic: that is how it fails

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use clap::Parser;
use tlsfleet_proto::{
    auth::{self, SignedHeader},
    v1::{
        fleet_service_server::{FleetService, FleetServiceServer},
        https_config_service_server::{HttpsConfigService, HttpsConfigServiceServer},
        AgentMessage, AgentState, AgentStatus, BucketPolicy, DeleteRequest, DeleteResponse,
        EffectivePolicy, GetRequest, GetResponse, GetRolloutStatusRequest,
        GetRolloutStatusResponse, ListAgentsRequest, ListAgentsResponse, ListRequest, ListResponse,
        PutRequest, PutResponse,
    },
};
use tonic::{
    codegen::tokio_stream::Stream,
    transport::{server::TcpIncoming, Server, ServerTlsConfig},
    Request, Response, Status, Streaming,
};

use tlsfleetctl::{app, args::Cli, error::Exit};

const KEY_ID: &str = "AKIDTEST";
const SECRET: &str = "s3cret";
const BUCKETS: [&str; 5] = ["a-1", "a-2", "a-3", "b-1", "b-2"];

#[derive(Clone, Default)]
struct Fake {
    puts: Arc<Mutex<Vec<PutRequest>>>,
    lists: Arc<Mutex<Vec<ListRequest>>>,
}

fn check<T: prost::Message>(req: &Request<T>, path: &str) -> Result<(), Status> {
    let value = req
        .metadata()
        .get(auth::METADATA_KEY)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Status::unauthenticated("no authorization"))?;
    let header = SignedHeader::parse(value).map_err(|e| Status::unauthenticated(e.to_string()))?;
    let digest = auth::message_digest(req.get_ref());
    if header.access_key_id != KEY_ID || !auth::verify(SECRET, &header, path, &digest) {
        return Err(Status::unauthenticated("signature does not match"));
    }
    Ok(())
}

fn effective() -> EffectivePolicy {
    EffectivePolicy {
        tls_versions: vec!["TLSv1.3".into()],
        cipher_suites: vec!["TLS13_AES_256_GCM_SHA384".into()],
        dropped: vec![],
    }
}

#[tonic::async_trait]
impl HttpsConfigService for Fake {
    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        check(&req, tlsfleet_proto::v1::methods::HTTPS_CONFIG_SERVICE_PUT)?;
        let req = req.into_inner();
        if req.bucket == "Bad_Name" {
            return Err(Status::invalid_argument("invalid bucket name \"Bad_Name\""));
        }
        if req.bucket == "forbidden" {
            return Err(Status::permission_denied(
                "no oss:PutBucketHttpsConfig grant",
            ));
        }
        self.puts.lock().unwrap().push(req);
        Ok(Response::new(PutResponse {
            revision: 42,
            effective: Some(effective()),
            ..Default::default()
        }))
    }

    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        check(&req, tlsfleet_proto::v1::methods::HTTPS_CONFIG_SERVICE_GET)?;
        let bucket = req.into_inner().bucket;
        match bucket.as_str() {
            // Never answers: the client's --timeout must end the call.
            "hangs" => std::future::pending().await,
            "down" => Err(Status::unavailable("store unreachable")),
            _ => Ok(Response::new(GetResponse {
                policy: Some(BucketPolicy {
                    bucket,
                    ..BucketPolicy::default()
                }),
                revision: 7,
            })),
        }
    }

    /// Pages of `page_size` (default 2) over BUCKETS; the token is the next index.
    async fn list(&self, req: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        check(&req, tlsfleet_proto::v1::methods::HTTPS_CONFIG_SERVICE_LIST)?;
        let req = req.into_inner();
        self.lists.lock().unwrap().push(req.clone());
        let matching: Vec<&str> = BUCKETS
            .iter()
            .copied()
            .filter(|b| b.starts_with(&req.prefix))
            .collect();
        let start: usize = if req.page_token.is_empty() {
            0
        } else {
            req.page_token
                .parse()
                .map_err(|_| Status::invalid_argument("bad page token"))?
        };
        let size = if req.page_size == 0 {
            2
        } else {
            req.page_size as usize
        };
        let end = (start + size).min(matching.len());
        let policies = matching[start.min(end)..end]
            .iter()
            .map(|b| BucketPolicy {
                bucket: (*b).to_owned(),
                ..BucketPolicy::default()
            })
            .collect();
        let next_page_token = if end < matching.len() {
            end.to_string()
        } else {
            String::new()
        };
        Ok(Response::new(ListResponse {
            policies,
            next_page_token,
            revision: 9,
        }))
    }

    async fn delete(
        &self,
        req: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        check(
            &req,
            tlsfleet_proto::v1::methods::HTTPS_CONFIG_SERVICE_DELETE,
        )?;
        let existed = req.into_inner().bucket == "a-1";
        Ok(Response::new(DeleteResponse {
            revision: 43,
            existed,
            ..Default::default()
        }))
    }

    async fn put_default(
        &self,
        req: Request<tlsfleet_proto::v1::PutDefaultRequest>,
    ) -> Result<Response<PutResponse>, Status> {
        check(
            &req,
            tlsfleet_proto::v1::methods::HTTPS_CONFIG_SERVICE_PUT_DEFAULT,
        )?;
        Ok(Response::new(PutResponse {
            revision: 44,
            effective: Some(effective()),
            downgrade: req.get_ref().allow_downgrade,
            ..Default::default()
        }))
    }

    async fn get_default(
        &self,
        req: Request<tlsfleet_proto::v1::GetDefaultRequest>,
    ) -> Result<Response<GetResponse>, Status> {
        check(
            &req,
            tlsfleet_proto::v1::methods::HTTPS_CONFIG_SERVICE_GET_DEFAULT,
        )?;
        Ok(Response::new(GetResponse {
            policy: Some(BucketPolicy {
                bucket: String::new(),
                effective: Some(effective()),
                mod_revision: 44,
                ..Default::default()
            }),
            revision: 44,
        }))
    }

    async fn promote_canary(
        &self,
        req: Request<tlsfleet_proto::v1::CanaryRequest>,
    ) -> Result<Response<PutResponse>, Status> {
        check(
            &req,
            tlsfleet_proto::v1::methods::HTTPS_CONFIG_SERVICE_PROMOTE_CANARY,
        )?;
        Ok(Response::new(PutResponse {
            revision: 46,
            effective: Some(effective()),
            ..Default::default()
        }))
    }

    async fn abort_canary(
        &self,
        req: Request<tlsfleet_proto::v1::CanaryRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        check(
            &req,
            tlsfleet_proto::v1::methods::HTTPS_CONFIG_SERVICE_ABORT_CANARY,
        )?;
        Ok(Response::new(DeleteResponse {
            revision: 47,
            existed: true,
            downgrade: false,
        }))
    }

    async fn delete_default(
        &self,
        req: Request<tlsfleet_proto::v1::DeleteDefaultRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        check(
            &req,
            tlsfleet_proto::v1::methods::HTTPS_CONFIG_SERVICE_DELETE_DEFAULT,
        )?;
        Ok(Response::new(DeleteResponse {
            revision: 45,
            existed: true,
            downgrade: req.get_ref().allow_downgrade,
        }))
    }

    async fn list_history(
        &self,
        req: Request<tlsfleet_proto::v1::ListHistoryRequest>,
    ) -> Result<Response<tlsfleet_proto::v1::ListHistoryResponse>, Status> {
        check(
            &req,
            tlsfleet_proto::v1::methods::HTTPS_CONFIG_SERVICE_LIST_HISTORY,
        )?;
        let bucket = req.into_inner().bucket;
        let record = tlsfleet_proto::v1::AuditRecord {
            time_unix_ms: 1_795_900_035_000,
            key_id: KEY_ID.into(),
            peer: "127.0.0.1:50000".into(),
            request_id: "REQ1".into(),
            via: "grpc".into(),
            operation: "put".into(),
            bucket: if bucket.is_empty() {
                "a-1".into()
            } else {
                bucket
            },
            revision: 42,
            downgrade: true,
            outcome: "applied".into(),
            reason: "downgrade: lets in TLSv1.2".into(),
            ..Default::default()
        };
        Ok(Response::new(tlsfleet_proto::v1::ListHistoryResponse {
            records: vec![record],
            next_page_token: String::new(),
        }))
    }
}

type SyncStream = std::pin::Pin<
    Box<dyn Stream<Item = Result<tlsfleet_proto::frame::ControlFrame, Status>> + Send>,
>;

#[tonic::async_trait]
impl FleetService for Fake {
    type SyncStream = SyncStream;

    async fn sync(
        &self,
        _req: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SyncStream>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn list_agents(
        &self,
        req: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsResponse>, Status> {
        check(&req, tlsfleet_proto::v1::methods::FLEET_SERVICE_LIST_AGENTS)?;
        let agent = AgentStatus {
            node_id: "edge-1".into(),
            applied_revision: 42,
            sent_revision: 42,
            state: AgentState::InSync as i32,
            ..AgentStatus::default()
        };
        Ok(Response::new(ListAgentsResponse {
            agents: vec![agent],
            revision: 42,
        }))
    }

    async fn get_rollout_status(
        &self,
        req: Request<GetRolloutStatusRequest>,
    ) -> Result<Response<GetRolloutStatusResponse>, Status> {
        check(
            &req,
            tlsfleet_proto::v1::methods::FLEET_SERVICE_GET_ROLLOUT_STATUS,
        )?;
        let revision = req.into_inner().revision;
        Ok(Response::new(match revision {
            // NACKed by edge-2.
            666 => GetRolloutStatusResponse {
                revision,
                agents_total: 2,
                enforcing: vec!["edge-1".into()],
                failed: vec!["edge-2".into()],
                failures: vec![AgentStatus {
                    node_id: "edge-2".into(),
                    errors: vec![tlsfleet_proto::v1::BucketError {
                        bucket: "logs".into(),
                        reason: "no certificate for the suites".into(),
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            },
            // edge-3 never gets there.
            777 => GetRolloutStatusResponse {
                revision,
                agents_total: 2,
                enforcing: vec!["edge-1".into()],
                pending: vec!["edge-3".into()],
                ..Default::default()
            },
            _ => GetRolloutStatusResponse {
                revision: if revision == 0 { 42 } else { revision },
                agents_total: 1,
                enforcing: vec!["edge-1".into()],
                ..Default::default()
            },
        }))
    }

    async fn get_usage(
        &self,
        _req: Request<tlsfleet_proto::v1::GetUsageRequest>,
    ) -> Result<Response<tlsfleet_proto::v1::GetUsageResponse>, Status> {
        Err(Status::unimplemented(
            "covered against the real control plane (tests/)",
        ))
    }
}

/// The server task is aborted on drop, so a test that fails half-way leaves nothing running.
struct Running {
    addr: SocketAddr,
    fake: Fake,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start() -> Running {
    start_with(None).await
}

async fn start_with(tls: Option<ServerTlsConfig>) -> Running {
    let incoming = TcpIncoming::bind(([127, 0, 0, 1], 0).into()).unwrap();
    let addr = incoming.local_addr().unwrap();
    let fake = Fake::default();
    let mut builder = Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).unwrap();
    }
    let router = builder
        .add_service(HttpsConfigServiceServer::new(fake.clone()))
        .add_service(FleetServiceServer::new(fake.clone()));
    let task = tokio::spawn(async move {
        if let Err(e) = router.serve_with_incoming(incoming).await {
            eprintln!("fake server: {e}");
        }
    });
    Running { addr, fake, task }
}

impl Running {
    /// Runs `tlsfleetctl <args>` against this server with the right key.
    async fn run(&self, args: &[&str]) -> Result<String, tlsfleetctl::error::CliError> {
        self.run_with_secret(SECRET, args).await
    }

    async fn run_with_secret(
        &self,
        secret: &str,
        args: &[&str],
    ) -> Result<String, tlsfleetctl::error::CliError> {
        self.run_as("http", secret, args).await
    }

    async fn run_as(
        &self,
        scheme: &str,
        secret: &str,
        args: &[&str],
    ) -> Result<String, tlsfleetctl::error::CliError> {
        let control = format!("{scheme}://{}", self.addr);
        let mut argv = vec![
            "tlsfleetctl",
            "--control",
            &control,
            "--access-key-id",
            KEY_ID,
            "--access-key-secret",
            secret,
        ];
        argv.extend_from_slice(args);
        app::run(Cli::try_parse_from(argv).unwrap()).await
    }
}

#[tokio::test]
async fn put_is_signed_and_prints_the_answer() {
    let server = start().await;
    let out = server
        .run(&[
            "put",
            "--bucket",
            "logs",
            "--tls-versions",
            "TLSv1.3",
            "--strong",
        ])
        .await
        .unwrap();
    assert!(
        out.starts_with("stored the policy of bucket logs at revision 42\n"),
        "{out}"
    );
    assert!(out.contains("TLS13_AES_256_GCM_SHA384"), "{out}");
    let puts = server.fake.puts.lock().unwrap().clone();
    assert_eq!(puts.len(), 1);
    let cs = puts[0]
        .config
        .as_ref()
        .unwrap()
        .cipher_suite
        .as_ref()
        .unwrap();
    assert_eq!(cs.strong_cipher_suite, Some(true));
}

#[tokio::test]
async fn every_method_is_signed_for_its_own_path() {
    let server = start().await;
    for args in [
        &["get", "--bucket", "logs"][..],
        &["list"],
        &["delete", "--bucket", "a-1"],
        &["disable", "--bucket", "logs"],
        &["agents"],
        &["rollout"],
        &["rollout", "promote", "--bucket", "logs"],
        &["rollout", "abort", "--bucket", "logs"],
    ] {
        let out = server.run(&[args, &["--output", "json"]].concat()).await;
        let out = out.unwrap_or_else(|e| panic!("{args:?}: {e}"));
        let _: serde_json::Value = serde_json::from_str(&out).unwrap();
    }
}

#[tokio::test]
async fn list_follows_every_page_by_default() {
    let server = start().await;
    let out = server.run(&["list", "--output", "json"]).await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let buckets: Vec<&str> = v["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["bucket"].as_str().unwrap())
        .collect();
    assert_eq!(buckets, BUCKETS);
    assert_eq!(v["next_page_token"], "");
    assert_eq!(server.fake.lists.lock().unwrap().len(), 3, "pages of 2");

    let out = server
        .run(&["list", "--all", "--prefix", "a-", "--page-size", "1"])
        .await
        .unwrap();
    assert!(out.contains("3 policies at revision 9"), "{out}");
}

#[tokio::test]
async fn list_one_page_prints_the_next_token() {
    let server = start().await;
    let out = server
        .run(&["list", "--one-page", "--output", "json"])
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["policies"].as_array().unwrap().len(), 2);
    assert_eq!(v["next_page_token"], "2");
    let out = server.run(&["list", "--page-token", "4"]).await.unwrap();
    assert!(out.contains("b-2") && !out.contains("a-1"), "{out}");
    assert!(!out.contains("more:"), "{out}");
}

#[tokio::test]
async fn server_errors_map_to_exit_codes() {
    let server = start().await;
    let put = |bucket: &'static str| ["put", "--bucket", bucket, "--tls-versions", "TLSv1.2"];

    let err = server.run(&put("Bad_Name")).await.unwrap_err();
    assert_eq!(err.exit(), Exit::InvalidArgument);
    assert!(err.to_string().contains("invalid bucket name"), "{err}");

    let err = server.run(&put("forbidden")).await.unwrap_err();
    assert_eq!(err.exit(), Exit::Denied, "{err}");

    let err = server
        .run_with_secret("wrong", &put("logs"))
        .await
        .unwrap_err();
    assert_eq!(err.exit(), Exit::Denied, "{err}");
    assert!(err.to_string().contains("authentication failed"), "{err}");

    let err = server.run(&["get", "--bucket", "down"]).await.unwrap_err();
    assert_eq!(err.exit(), Exit::Unavailable, "{err}");
}

#[tokio::test]
async fn waiting_ends_with_the_rollout_naming_who_lags_or_refused() {
    let server = start().await;
    let done = server
        .run(&["rollout", "status", "--wait", "--revision", "42"])
        .await
        .expect("every agent enforces 42");
    assert!(done.contains("all 1 agents enforce revision 42"), "{done}");

    let err = server
        .run(&["rollout", "status", "--wait", "--revision", "666"])
        .await
        .unwrap_err();
    assert_eq!(err.exit(), Exit::RolloutFailed, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("edge-2") && msg.contains("logs: no certificate for the suites"),
        "{msg}"
    );

    let start = std::time::Instant::now();
    let err = server
        .run(&[
            "rollout",
            "status",
            "--wait",
            "--revision",
            "777",
            "--timeout",
            "1s",
        ])
        .await
        .unwrap_err();
    assert_eq!(err.exit(), Exit::RolloutIncomplete, "{err}");
    assert!(err.to_string().contains("still pending: edge-3"), "{err}");
    assert!(start.elapsed() < std::time::Duration::from_secs(3));
}

#[tokio::test]
async fn a_call_that_never_returns_times_out() {
    let server = start().await;
    let err = server
        .run(&["--timeout", "1", "get", "--bucket", "hangs"])
        .await
        .unwrap_err();
    assert!(
        matches!(err, tlsfleetctl::error::CliError::Timeout { .. }),
        "{err}"
    );
    assert_eq!(err.exit(), Exit::Unavailable);
}

#[tokio::test]
async fn missing_credentials_are_a_usage_error() {
    let server = start().await;
    let control = format!("http://{}", server.addr);
    let cli = Cli::try_parse_from([
        "tlsfleetctl",
        "--control",
        &control,
        "--access-key-id",
        "",
        "--access-key-secret",
        "",
        "agents",
    ])
    .unwrap();
    let err = app::run(cli).await.unwrap_err();
    assert_eq!(err.exit(), Exit::Usage, "{err}");
}

#[tokio::test]
async fn https_control_url_trusts_the_given_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = tlsfleet_testkit::tls::TestCa::new();
    let leaf = ca_file.leaf(&["127.0.0.1"], tlsfleet_testkit::tls::KeyKind::EcdsaP256);
    let server_tls = ServerTlsConfig::new().identity(tonic::transport::Identity::from_pem(
        &leaf.cert_pem,
        &leaf.key_pem,
    ));
    let server = start_with(Some(server_tls)).await;
    let ca = ca_file.write_pem(dir.path()).display().to_string();
    let out = server
        .run_as("https", SECRET, &["--ca", &ca, "agents"])
        .await
        .unwrap();
    assert!(out.contains("edge-1"), "{out}");

    // The system bundle does not know the test CA: the handshake fails, nothing is sent
    // (a machine without any bundle refuses before connecting, as a usage error).
    let err = server
        .run_as("https", SECRET, &["agents"])
        .await
        .unwrap_err();
    eprintln!("without --ca: {err}");
    assert!(
        matches!(err.exit(), Exit::Unavailable | Exit::Usage),
        "{err}"
    );
    // Plain text to a TLS port is no better.
    let err = server.run(&["--timeout", "2", "agents"]).await.unwrap_err();
    assert_ne!(err.exit() as u8, 0, "{err}");
}
