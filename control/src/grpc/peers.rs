//! Fleet-wide usage and a canary's refusals per agent: a control server answers for the whole
//! fleet by asking the other control servers that have agents (their URLs are in the agent
//! registry, `--advertise-url`) for their agents' reports, signed with this server's own key
//! (`--peer-access-key-*`), and merging them with its own. A question from a peer is marked `x-tlsfleet-local` and answered
//! from local reports only, so servers never ask each other in a loop.
//!
//! Bounded: at most [`MAX_PEERS`] peers, asked at once, each within [`PEER_TIMEOUT`]; a peer
//! that does not answer is named in the answer's `unreachable`.

use std::{collections::BTreeMap, time::Duration};

use tlsfleet_proto::{
    signer::{signed_request, Signer},
    v1::{fleet_service_client::FleetServiceClient, GetRolloutStatusRequest, GetUsageRequest},
};
use tonic::{
    codegen::InterceptedService,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint},
};

/// Marks a GetUsage or GetRolloutStatus from a peer: answer from this server's agents only.
pub const LOCAL: &str = "x-tlsfleet-local";
/// Peers asked per question.
pub const MAX_PEERS: usize = 64;
/// How long a peer has to answer.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(3);

/// How to reach the other control servers.
#[derive(Clone, Default)]
pub struct Peers {
    signer: Option<Signer>,
    ca: Option<Vec<u8>>,
}

/// The other servers' agents' usage, merged.
#[derive(Debug, Default)]
pub struct FleetAnswer {
    pub usage: tlsfleet_policy::usage::Usage,
    /// The peers that answered.
    pub servers: Vec<String>,
    /// Peers that did not answer, with why.
    pub unreachable: Vec<String>,
}

/// What the peers answered: (peer URL, its answer) each, and those that did not, with why.
struct Answers<T> {
    answers: Vec<(String, T)>,
    unreachable: Vec<String>,
}

/// A client of one peer.
type Client = FleetServiceClient<InterceptedService<Channel, Signer>>;

/// `message` signed and marked as a peer's question (answered from local reports only).
fn local<T: prost::Message>(message: T) -> tonic::Request<T> {
    let mut req = signed_request(message);
    req.metadata_mut()
        .insert(LOCAL, tonic::metadata::MetadataValue::from_static("1"));
    req
}

impl Peers {
    pub fn new(signer: Option<Signer>, ca: Option<Vec<u8>>) -> Self {
        Self { signer, ca }
    }

    /// Whether this server can ask its peers at all.
    pub fn enabled(&self) -> bool {
        self.signer.is_some()
    }

    /// Asks every other control server with agents (from `registry`) for `bucket`'s usage,
    /// merged.
    pub async fn fleet(
        &self,
        registry: &crate::registry::Registry,
        bucket: &str,
        since_seconds: u32,
    ) -> FleetAnswer {
        let urls = registry.peer_urls().await;
        let answered = self
            .ask_all(&urls, |mut client| async move {
                let req = local(GetUsageRequest {
                    bucket: bucket.to_owned(),
                    since_seconds,
                });
                client.get_usage(req).await.map(|r| r.into_inner().usage)
            })
            .await;
        let mut out = FleetAnswer {
            unreachable: answered.unreachable,
            ..FleetAnswer::default()
        };
        for (url, u) in answered.answers {
            let Some(u) = u else {
                out.unreachable
                    .push(format!("{url}: an answer without usage"));
                continue;
            };
            out.usage
                .merge(&tlsfleet_proto::convert::usage_from_wire(&u));
            out.servers.push(url);
        }
        out
    }

    /// Asks every other control server with agents (from `registry`) for the handshakes its
    /// agents refused for `bucket` since its canary started, merged per agent; and the
    /// servers that did not answer.
    pub async fn agent_refusals(
        &self,
        registry: &crate::registry::Registry,
        bucket: &str,
    ) -> (BTreeMap<String, u64>, Vec<String>) {
        let urls = registry.peer_urls().await;
        let answered = self
            .ask_all(&urls, |mut client| async move {
                let req = local(GetRolloutStatusRequest {
                    bucket: bucket.to_owned(),
                    ..Default::default()
                });
                let answer = client.get_rollout_status(req).await?;
                Ok(answer.into_inner().refused_by_agent)
            })
            .await;
        let mut merged = BTreeMap::new();
        for (_, per_agent) in answered.answers {
            for (agent, n) in per_agent {
                let total: &mut u64 = merged.entry(agent).or_default();
                *total = total.saturating_add(n);
            }
        }
        (merged, answered.unreachable)
    }

    /// Puts the question `ask` makes of a client to every peer in `urls`: at most
    /// [`MAX_PEERS`], all at once, each within [`PEER_TIMEOUT`].
    async fn ask_all<T, Fut>(&self, urls: &[String], ask: impl Fn(Client) -> Fut) -> Answers<T>
    where
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let Some(signer) = &self.signer else {
            return Answers {
                answers: vec![],
                unreachable: urls
                    .iter()
                    .map(|u| format!("{u}: this server has no --peer-access-key to ask it"))
                    .collect(),
            };
        };
        let asks = urls.iter().take(MAX_PEERS).map(|url| {
            let ask = &ask;
            async move {
                let answer = tokio::time::timeout(PEER_TIMEOUT, async {
                    let client = self.client(signer, url).await?;
                    ask(client)
                        .await
                        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
                })
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {PEER_TIMEOUT:?}")));
                (url.clone(), answer)
            }
        });
        let mut out = Answers {
            answers: vec![],
            unreachable: vec![],
        };
        for (url, answer) in futures::future::join_all(asks).await {
            match answer {
                Ok(a) => out.answers.push((url, a)),
                Err(why) => out.unreachable.push(format!("{url}: {why}")),
            }
        }
        out
    }

    /// A client of the control server at `url`, signing with `signer`.
    async fn client(&self, signer: &Signer, url: &str) -> Result<Client, String> {
        let mut endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| e.to_string())?
            .connect_timeout(PEER_TIMEOUT);
        if url.starts_with("https://") {
            let mut tls = ClientTlsConfig::new();
            if let Some(ca) = &self.ca {
                tls = tls.ca_certificate(Certificate::from_pem(ca));
            }
            endpoint = endpoint.tls_config(tls).map_err(|e| e.to_string())?;
        }
        let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
        Ok(FleetServiceClient::with_interceptor(
            channel,
            signer.clone(),
        ))
    }
}
