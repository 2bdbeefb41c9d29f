//! A scripted control server for the sync tests: real gRPC on loopback, with the test playing
//! the FleetService message by message. Shared by `sync_stream.rs` and `sync_agent_process.rs`.

#![allow(dead_code)] // each test crate uses its own part

use std::{net::SocketAddr, time::Duration};

use tlsfleet_policy::{BucketName, HttpsConfig, TlsConfig, TlsVersion};
use tlsfleet_proto::{
    auth,
    v1::{
        self as pb, agent_message, control_message,
        fleet_service_server::{FleetService, FleetServiceServer},
        AgentHello, AgentMessage, BucketPolicy, ControlMessage,
    },
};
use tokio::{
    net::TcpListener,
    sync::{mpsc, Mutex},
    task::JoinHandle,
};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{transport::ServerTlsConfig, Request, Response, Status, Streaming};

pub const WAIT: Duration = Duration::from_secs(10);
pub const KEY_ID: &str = "AKAGENT";
pub const SECRET: &str = "agent-secret";

// ---------------------------------------------------------------- the scripted server

/// One Sync call as the test sees it.
pub struct Call {
    pub hello: AgentHello,
    /// The `authorization` metadata, if any.
    pub authorization: Option<String>,
    /// What the test sends; dropping it ends the stream cleanly.
    to_agent: mpsc::Sender<Result<tlsfleet_proto::frame::ControlFrame, Status>>,
    /// ACKs and NACKs.
    from_agent: mpsc::UnboundedReceiver<AgentMessage>,
}

impl Call {
    pub async fn send(&self, kind: control_message::Kind) {
        self.to_agent
            .send(Ok(ControlMessage { kind: Some(kind) }.into()))
            .await
            .unwrap();
    }

    pub async fn answer(&mut self) -> agent_message::Kind {
        let msg = tokio::time::timeout(WAIT, self.from_agent.recv())
            .await
            .expect("no answer from the agent")
            .expect("the agent closed its stream");
        msg.kind.expect("answer without a kind")
    }
}

pub enum Script {
    /// Hand every call to the test.
    Interactive(mpsc::UnboundedSender<Call>),
    /// Refuse every call with this status, counting them.
    Refuse(tonic::Code, mpsc::UnboundedSender<()>),
}

pub struct ScriptedFleet {
    script: Mutex<Script>,
}

#[tonic::async_trait]
impl FleetService for ScriptedFleet {
    type SyncStream = ReceiverStream<Result<tlsfleet_proto::frame::ControlFrame, Status>>;

    async fn sync(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SyncStream>, Status> {
        let authorization = request
            .metadata()
            .get(auth::METADATA_KEY)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let calls = match &*self.script.lock().await {
            Script::Refuse(code, seen) => {
                let _ = seen.send(());
                return Err(Status::new(*code, "key refused"));
            }
            Script::Interactive(calls) => calls.clone(),
        };
        let mut inbound = request.into_inner();
        let hello = match inbound.message().await? {
            Some(AgentMessage {
                kind: Some(agent_message::Kind::Hello(hello)),
            }) => hello,
            other => {
                return Err(Status::invalid_argument(format!(
                    "expected a hello, got {other:?}"
                )))
            }
        };
        let (to_agent, rx) = mpsc::channel(16);
        let (answers, from_agent) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(msg)) = inbound.message().await {
                if answers.send(msg).is_err() {
                    break;
                }
            }
        });
        let _ = calls.send(Call {
            hello,
            authorization,
            to_agent,
            from_agent,
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn list_agents(
        &self,
        _: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn get_rollout_status(
        &self,
        _: Request<pb::GetRolloutStatusRequest>,
    ) -> Result<Response<pb::GetRolloutStatusResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn get_usage(
        &self,
        _: Request<pb::GetUsageRequest>,
    ) -> Result<Response<pb::GetUsageResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

/// A running scripted control server.
pub struct Server {
    pub addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Server {
    /// A plain-HTTP/2 server.
    pub async fn start(script: Script) -> Self {
        Self::start_with(script, None).await
    }

    /// With TLS (and mTLS if `tls` asks for client certificates).
    pub async fn start_with(script: Script, tls: Option<ServerTlsConfig>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let svc = FleetServiceServer::new(ScriptedFleet {
            script: Mutex::new(script),
        });
        let signal = stop.clone().cancelled_owned();
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).unwrap();
        }
        let task = tokio::spawn(async move {
            builder
                .add_service(svc)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), signal)
                .await
                .unwrap();
        });
        Self { addr, stop, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// The test CA (`tlsfleet_testkit::tls::TestCa`), and PEM certificates and keys it issues.
pub struct TestCa {
    ca: tlsfleet_testkit::tls::TestCa,
    pub cert_pem: String,
}

impl TestCa {
    pub fn new() -> Self {
        let ca = tlsfleet_testkit::tls::TestCa::new();
        Self {
            cert_pem: ca.cert_pem(),
            ca,
        }
    }

    /// A leaf for `names` (DNS names or IP addresses): (certificate, key), PEM.
    pub fn issue(&self, names: &[&str]) -> (String, String) {
        let leaf = self
            .ca
            .leaf(names, tlsfleet_testkit::tls::KeyKind::EcdsaP256);
        (leaf.cert_pem, leaf.key_pem)
    }
}

pub async fn interactive() -> (Server, mpsc::UnboundedReceiver<Call>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Server::start(Script::Interactive(tx)).await, rx)
}

pub async fn next_call(calls: &mut mpsc::UnboundedReceiver<Call>) -> Call {
    tokio::time::timeout(WAIT, calls.recv())
        .await
        .expect("the agent did not connect")
        .expect("server gone")
}

// ---------------------------------------------------------------- messages

pub fn bucket(name: &str) -> BucketName {
    name.parse().unwrap()
}

pub fn versions(v: &[TlsVersion]) -> HttpsConfig {
    HttpsConfig {
        tls: TlsConfig {
            enable: true,
            tls_versions: v.to_vec(),
        },
        cipher_suite: None,
    }
}

pub fn wire(name: &str, config: &HttpsConfig) -> BucketPolicy {
    BucketPolicy {
        bucket: name.to_owned(),
        config: Some(config.into()),
        ..Default::default()
    }
}

pub fn snapshot(revision: i64, policies: Vec<BucketPolicy>) -> control_message::Kind {
    control_message::Kind::Snapshot(pb::Snapshot {
        revision,
        policies,
        ..Default::default()
    })
}

pub fn delta(
    from: i64,
    to: i64,
    upserts: Vec<BucketPolicy>,
    deletes: &[&str],
) -> control_message::Kind {
    control_message::Kind::Delta(pb::Delta {
        from_revision: from,
        revision: to,
        upserts,
        deletes: deletes.iter().map(|d| (*d).to_owned()).collect(),
        more: false,
        ..Default::default()
    })
}

/// The digest the Sync signature covers: the first message, the hello.
pub fn hello_digest(hello: &pb::AgentHello) -> auth::Digest {
    auth::message_digest(&AgentMessage {
        kind: Some(agent_message::Kind::Hello(hello.clone())),
    })
}

pub fn ack(revision: i64) -> agent_message::Kind {
    agent_message::Kind::Ack(pb::Ack { revision })
}

/// Polls `check` until it holds: for state another task reaches at its own pace.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    tlsfleet_testkit::eventually::eventually(what, WAIT, || std::future::ready(check())).await
}
