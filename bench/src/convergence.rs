//! Fleet convergence: from a PUT's answer to the last agent's ACK of its revision, for fleets
//! of agent processes and of agents simulated in this process (the agent's own sync client
//! and policy table, without a listener), for single PUTs and bursts; and, beside it, nginx
//! and HAProxy applying one change to a configuration of many names (rewrite and reload).
//!
//! The ACK times are the control server's (`GetRolloutStatus.last_ack_unix_ms`, the moment
//! it received the last ACK), compared with the moment this process got the PUT's answer, on
//! the same machine's clock: the polling of the status adds nothing to them. For fleets of
//! processes, every PUT is also checked with a real handshake at one agent (TLS 1.2 refused
//! once the bucket is TLS 1.3 only), timed from the same answer.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use rustls::pki_types::CertificateDer;
use tlsfleet_proto::{
    signer::{signed_request, AccessKey, Signer},
    v1::{
        fleet_service_client::FleetServiceClient,
        https_config_service_client::HttpsConfigServiceClient, DeleteRequest,
        GetRolloutStatusRequest, PutRequest,
    },
};
use tlsfleet_testkit::{
    agent::Agent,
    control::{keys, Control, DOMAIN},
    etcd::Etcd,
    tls::{ClientOffer, TestCert},
};
use tokio_util::sync::CancellationToken;
use tonic::{service::interceptor::InterceptedService, transport::Channel};

use crate::{
    data::write_policies,
    reloads::{self, Reload},
};

/// What to run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Fleets of agent processes, one measurement each.
    pub processes: Vec<usize>,
    /// Agents simulated in this process (0: none).
    pub simulated: usize,
    /// Policies stored before the fleets start.
    pub policies: usize,
    /// Single PUTs per fleet, one at a time.
    pub puts: usize,
    /// Bursts per fleet, and PUTs per burst (sent by [`BURST_CLIENTS`] clients at once).
    pub bursts: usize,
    pub burst_size: usize,
    /// Also nginx and HAProxy reloading, with this many names (0: not).
    pub peer_names: usize,
    /// Reloads per peer.
    pub reloads: usize,
}

/// Clients sending a burst's PUTs at once.
pub const BURST_CLIENTS: usize = 16;
/// How often the rollout status is asked while waiting for the ACKs.
const POLL: Duration = Duration::from_millis(2);
/// Longest wait for a fleet to converge on one revision.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest wait for a fleet to load its snapshots.
const READY_TIMEOUT: Duration = Duration::from_secs(900);
/// Blocking threads of the simulated agents' runtime. An agent applies one revision at a
/// time, so one agent process has at most one blocking thread applying; a thousand agents
/// sharing tokio's default pool (512 threads) instead run hundreds of them at once on this
/// machine's cores, each with its own allocator heap, which no fleet of separate agents does.
const SIMULATED_BLOCKING_THREADS: usize = 2;

/// One fleet's figures, in milliseconds.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub label: String,
    pub agents: usize,
    /// Single PUTs: answer to the last ACK.
    pub single: Vec<f64>,
    /// Single PUTs: commit (the control server's clock) to the last ACK.
    pub single_from_commit: Vec<f64>,
    /// Single PUTs: answer to a handshake at one agent refused by the new rule.
    pub handshake: Vec<f64>,
    /// Bursts: the last answer to the last ACK of the burst's newest revision.
    pub burst: Vec<f64>,
    /// Bursts: first PUT sent to the last answer.
    pub burst_sending: Vec<f64>,
    /// How long the fleet took to be ready (every agent enforcing the current revision).
    pub ready_s: f64,
}

pub struct Results {
    pub settings: Settings,
    pub fleets: Vec<Fleet>,
    pub reloads: Vec<Reload>,
}

type Admin = HttpsConfigServiceClient<InterceptedService<Channel, Signer>>;
type FleetClient = FleetServiceClient<InterceptedService<Channel, Signer>>;

/// The clients the measurement uses.
#[derive(Clone)]
struct Clients {
    admin: Admin,
    fleet: FleetClient,
}

impl Clients {
    async fn connect(url: &str) -> anyhow::Result<Self> {
        let channel = Channel::from_shared(url.to_owned())?.connect().await?;
        let signer = || AccessKey::new(keys::ADMIN.0, keys::ADMIN.1).map(Signer::new);
        Ok(Self {
            admin: HttpsConfigServiceClient::with_interceptor(channel.clone(), signer()?),
            fleet: FleetServiceClient::with_interceptor(channel, signer()?),
        })
    }

    /// PUTs `bucket` TLS 1.3 only; its revision, and when its answer came (Unix ms).
    async fn put_tls13_only(&mut self, bucket: &str) -> anyhow::Result<(i64, f64)> {
        let (revision, answered, _) = self.put_timed(bucket).await?;
        Ok((revision, answered))
    }

    /// [`Self::put_tls13_only`], also with when the control server committed it (Unix ms).
    async fn put_timed(&mut self, bucket: &str) -> anyhow::Result<(i64, f64, f64)> {
        let config = tlsfleet_testkit::grpc::https_config(&["TLSv1.3"], &[], &[]);
        let resp = self
            .admin
            .put(signed_request(PutRequest {
                bucket: bucket.to_owned(),
                config: Some(config),
                allow_downgrade: true,
                ..Default::default()
            }))
            .await
            .with_context(|| format!("PUT {bucket}"))?
            .into_inner();
        Ok((resp.revision, unix_ms(), resp.committed_unix_ms as f64))
    }

    /// Deletes the buckets a fleet's PUTs created ([`BURST_CLIENTS`] at a time), so that the
    /// next fleet loads and applies to the same stored policies as this one did, not to the
    /// thousands this one added.
    async fn delete_all(&self, buckets: Vec<String>) -> anyhow::Result<()> {
        let mut tasks = tokio::task::JoinSet::new();
        let per = buckets.len().div_ceil(BURST_CLIENTS).max(1);
        let mut buckets = buckets.into_iter();
        loop {
            let part: Vec<String> = buckets.by_ref().take(per).collect();
            if part.is_empty() {
                break;
            }
            let mut admin = self.admin.clone();
            tasks.spawn(async move {
                for bucket in part {
                    admin
                        .delete(signed_request(DeleteRequest {
                            bucket: bucket.clone(),
                            allow_downgrade: true,
                        }))
                        .await
                        .with_context(|| format!("DELETE {bucket}"))?;
                }
                Ok::<_, anyhow::Error>(())
            });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        Ok(())
    }

    /// Waits until every agent of `selector` (`agents` of them) enforces `revision`; when
    /// the last ACK came (Unix ms, the control server's clock).
    async fn converged(
        &mut self,
        revision: i64,
        selector: &BTreeMap<String, String>,
        agents: usize,
    ) -> anyhow::Result<f64> {
        self.converged_within(revision, selector, agents, CONVERGE_TIMEOUT)
            .await
    }

    async fn converged_within(
        &mut self,
        revision: i64,
        selector: &BTreeMap<String, String>,
        agents: usize,
        timeout: Duration,
    ) -> anyhow::Result<f64> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self
                .fleet
                .get_rollout_status(signed_request(GetRolloutStatusRequest {
                    revision,
                    selector: selector.clone().into_iter().collect(),
                    bucket: String::new(),
                }))
                .await?
                .into_inner();
            anyhow::ensure!(
                status.failed.is_empty(),
                "agents refused revision {revision}: {:?}",
                status.failures
            );
            if status.enforcing.len() >= agents && status.pending.is_empty() {
                return Ok(status.last_ack_unix_ms as f64);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "revision {revision}: {} of {agents} agents enforcing after {timeout:?}",
                status.enforcing.len()
            );
            // Each answer lists the fleet from the store: ask a large fleet less often (the
            // figures are the server's own ACK times, whatever the polling).
            let poll = if timeout > CONVERGE_TIMEOUT {
                Duration::from_millis(100)
            } else if agents >= 1000 {
                POLL * 5
            } else {
                POLL
            };
            tokio::time::sleep(poll).await;
        }
    }
}

fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// Agents simulated in this process: each the agent's sync client and policy table, on a
/// runtime of their own (the PUT clients and the rollout polling do not queue behind them).
struct Simulated {
    runtime: tokio::runtime::Runtime,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    metrics: Vec<Arc<tlsfleet_agent::metrics::Metrics>>,
}

impl Simulated {
    fn start(n: usize, url: &str, cert: &TestCert, label: &str) -> anyhow::Result<Self> {
        use tlsfleet_agent::{
            metrics::Metrics,
            readiness::Readiness,
            sync::{Credentials, SyncClient, SyncConfig},
            table::PolicyTable,
            tls::{cert::CertResolver, config::ConfigFactory},
        };
        let resolver = Arc::new(CertResolver::from_pem(
            &std::fs::read(&cert.cert)?,
            &std::fs::read(&cert.key)?,
            &[DOMAIN.to_owned()],
        )?);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("simulated-agents")
            .max_blocking_threads(SIMULATED_BLOCKING_THREADS)
            .build()?;
        let shutdown = CancellationToken::new();
        let mut tasks = Vec::with_capacity(n);
        let mut metrics = Vec::with_capacity(n);
        for i in 0..n {
            let table = Arc::new(PolicyTable::new(ConfigFactory::new(resolver.clone())?));
            let mut cfg = SyncConfig::new(vec![url.to_owned()], format!("{label}-{i}"));
            cfg.labels.insert("fleet".into(), label.into());
            cfg.credentials = Some(Credentials {
                access_key_id: keys::AGENT.0.into(),
                secret: keys::AGENT.1.into(),
            });
            let m = Arc::new(Metrics::new());
            metrics.push(m.clone());
            let client = runtime.block_on(async {
                SyncClient::new(cfg, table, m, Arc::new(Readiness::default()))
            })?;
            tasks.push(runtime.spawn(client.run(None, shutdown.clone())));
        }
        Ok(Self {
            runtime,
            shutdown,
            tasks,
            metrics,
        })
    }

    /// Deltas the agents received, on average.
    fn deltas_per_agent(&self) -> f64 {
        let total: u64 = self.metrics.iter().map(|m| m.deltas()).sum();
        total as f64 / self.metrics.len().max(1) as f64
    }

    fn stop(self) {
        self.shutdown.cancel();
        self.runtime.block_on(async {
            for t in self.tasks {
                let _ = t.await;
            }
        });
    }
}

/// Runs every fleet, then the peers.
pub fn run(s: &Settings) -> anyhow::Result<Results> {
    let dir = tempfile::tempdir()?;
    let (ca, cert) = crate::handshakes::edge_certificate(dir.path());
    let etcd = Etcd::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    eprintln!("bench: writing {} policies into etcd", s.policies);
    runtime.block_on(write_policies(&etcd.endpoint(), s.policies))?;
    let control = Control::on_etcd_with(
        &etcd.endpoint(),
        &[
            "--replay-cache-per-key".to_owned(),
            "1000000".to_owned(),
            "--max-sync-streams-per-key".to_owned(),
            "100000".to_owned(),
            // The simulated agents all connect from 127.0.0.1.
            "--grpc-max-connections-per-source".to_owned(),
            "100000".to_owned(),
        ],
    );
    let url = control.grpc_url();
    let clients = runtime.block_on(Clients::connect(&url))?;
    let mut fleets = Vec::new();
    for &n in &s.processes {
        let label = format!("p{n}");
        eprintln!("bench: {n} agent processes");
        let started = Instant::now();
        let mut agents: Vec<Agent> = (0..n)
            .map(|i| {
                Agent::spawn_with(
                    &format!("{label}-{i}"),
                    std::slice::from_ref(&url),
                    &cert.cert,
                    &cert.key,
                    None,
                    &["--label".to_owned(), format!("fleet={label}")],
                )
            })
            .collect();
        for a in &mut agents {
            a.wait_ready();
        }
        let sample = agents.first().map(|a| a.tls);
        let fleet = runtime.block_on(measure(
            s,
            clients.clone(),
            &label,
            format!("{n} agent processes"),
            n,
            sample,
            ca.der(),
            started,
        ))?;
        eprintln!("{}", markdown_fleet(&fleet));
        fleets.push(fleet);
        drop(agents);
        // The next fleet (and the simulated one, always last) starts from the same store.
        runtime.block_on(clients.delete_all(created(s, &label)))?;
    }
    if s.simulated > 0 {
        let n = s.simulated;
        let label = format!("s{n}");
        eprintln!("bench: {n} agents simulated in one process");
        let started = Instant::now();
        let sim = Simulated::start(n, &url, &cert, &label)?;
        let fleet = runtime.block_on(measure(
            s,
            clients.clone(),
            &label,
            format!("{n} agents in one process"),
            n,
            None,
            ca.der(),
            started,
        ));
        // How far the control server coalesced revisions for these agents (each single PUT is
        // one delta; a burst's thousand revisions arrive as however many deltas this says).
        eprintln!(
            "bench: {:.1} deltas per simulated agent ({} single PUTs, {} bursts of {})",
            sim.deltas_per_agent(),
            s.puts,
            s.bursts,
            s.burst_size
        );
        sim.stop();
        let fleet = fleet?;
        eprintln!("{}", markdown_fleet(&fleet));
        fleets.push(fleet);
    }
    let mut reloads = Vec::new();
    if s.peer_names > 0 {
        let (n, rounds) = (s.peer_names, s.reloads);
        reloads.push(reloads::nginx(dir.path(), &cert, &ca, n, rounds)?);
        reloads.push(reloads::haproxy(dir.path(), &cert, &ca, n, rounds)?);
    }
    Ok(Results {
        settings: s.clone(),
        fleets,
        reloads,
    })
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    s: &Settings,
    mut clients: Clients,
    label: &str,
    name: String,
    agents: usize,
    sample: Option<SocketAddr>,
    ca: CertificateDer<'static>,
    started: Instant,
) -> anyhow::Result<Fleet> {
    let selector: BTreeMap<String, String> = [("fleet".to_owned(), label.to_owned())].into();
    // Ready: every agent enforces what is stored now.
    clients
        .converged_within(0, &selector, agents, READY_TIMEOUT)
        .await?;
    let ready_s = started.elapsed().as_secs_f64();
    let mut fleet = Fleet {
        label: name,
        agents,
        single: vec![],
        single_from_commit: vec![],
        handshake: vec![],
        burst: vec![],
        burst_sending: vec![],
        ready_s,
    };
    for k in 0..s.puts {
        // A bucket of its own, without a policy: it serves TLS 1.2 until this PUT.
        let bucket = single_bucket(label, k);
        let (revision, answered, committed) = clients.put_timed(&bucket).await?;
        let at = Instant::now();
        let probe = sample.map(|addr| {
            let ca = ca.clone();
            let sni = format!("{bucket}.{DOMAIN}");
            tokio::spawn(async move {
                let offer = (&ClientOffer::tls12(), "TLS 1.2 is");
                reloads::refused_after(addr, &sni, &ca, offer, at, CONVERGE_TIMEOUT).await
            })
        });
        let last_ack = clients.converged(revision, &selector, agents).await?;
        // The ACK times have a resolution of 1 ms; an ACK can come before the answer.
        fleet.single.push((last_ack - answered).max(0.0));
        fleet
            .single_from_commit
            .push((last_ack - committed).max(0.0));
        if let Some(probe) = probe {
            fleet.handshake.push(probe.await??);
        }
    }
    for b in 0..s.bursts {
        let sent = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..BURST_CLIENTS {
            let mut clients = clients.clone();
            let per = per_client(s.burst_size, c);
            let label = label.to_owned();
            tasks.spawn(async move {
                let mut newest = (0, 0.0);
                for k in 0..per {
                    let bucket = burst_bucket(&label, b, c, k);
                    let (revision, answered) = clients.put_tls13_only(&bucket).await?;
                    newest = (newest.0.max(revision), f64::max(newest.1, answered));
                }
                Ok::<_, anyhow::Error>(newest)
            });
        }
        let (mut revision, mut answered) = (0, 0.0);
        while let Some(done) = tasks.join_next().await {
            let (r, a) = done??;
            revision = revision.max(r);
            answered = f64::max(answered, a);
        }
        fleet
            .burst_sending
            .push(sent.elapsed().as_secs_f64() * 1000.0);
        let last_ack = clients.converged(revision, &selector, agents).await?;
        fleet.burst.push((last_ack - answered).max(0.0));
    }
    Ok(fleet)
}

/// The bucket of a fleet's `k`th single PUT (one without a policy before it).
fn single_bucket(label: &str, k: usize) -> String {
    format!("conv-{label}-{k}")
}

/// The bucket of client `c`'s `k`th PUT in burst `b`.
fn burst_bucket(label: &str, b: usize, c: usize, k: usize) -> String {
    format!("conv-{label}-b{b}-{c}-{k}")
}

/// PUTs client `c` sends of a burst of `size`.
fn per_client(size: usize, c: usize) -> usize {
    size / BURST_CLIENTS + usize::from(c < size % BURST_CLIENTS)
}

/// Every bucket a fleet's PUTs create.
fn created(s: &Settings, label: &str) -> Vec<String> {
    let singles = (0..s.puts).map(|k| single_bucket(label, k));
    let bursts = (0..s.bursts).flat_map(|b| {
        (0..BURST_CLIENTS).flat_map(move |c| {
            (0..per_client(s.burst_size, c)).map(move |k| burst_bucket(label, b, c, k))
        })
    });
    singles.chain(bursts).collect()
}

/// p50, p99 and max of `v` (0 when empty).
pub fn percentiles(v: &[f64]) -> (f64, f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let at = |p: f64| v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1];
    (at(0.50), at(0.99), v[v.len() - 1])
}

fn ppm(v: &[f64]) -> String {
    if v.is_empty() {
        return "–".to_owned();
    }
    let (p50, p99, max) = percentiles(v);
    format!("{p50:.1} / {p99:.1} / {max:.1}")
}

/// One fleet's row.
fn markdown_fleet(f: &Fleet) -> String {
    format!(
        "| {} | {:.1} | {} | {} | {} | {} | {} |",
        f.label,
        f.ready_s,
        ppm(&f.single),
        ppm(&f.single_from_commit),
        ppm(&f.handshake),
        ppm(&f.burst),
        if f.burst_sending.is_empty() {
            "–".to_owned()
        } else {
            format!("{:.0}", percentiles(&f.burst_sending).0)
        }
    )
}

/// The markdown tables.
pub fn markdown(r: &Results) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let s = &r.settings;
    let _ = writeln!(
        out,
        "{} policies stored; {} single PUTs and {} bursts of {} PUTs ({BURST_CLIENTS} clients) per fleet.\n",
        s.policies, s.puts, s.bursts, s.burst_size
    );
    let _ = writeln!(
        out,
        "| fleet | ready (s) | single PUT: answer to last ACK, p50 / p99 / max ms | single PUT: commit to last ACK, p50 / p99 / max ms | answer to a refusing handshake at one agent, p50 / p99 / max ms | burst: last answer to last ACK, p50 / p99 / max ms | burst: sending it, p50 ms |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for f in &r.fleets {
        let _ = writeln!(out, "{}", markdown_fleet(f));
    }
    if !r.reloads.is_empty() {
        let _ = writeln!(
            out,
            "\n| peer | names | one name's change: signal to the first refusing handshake, p50 / p99 / max ms |"
        );
        let _ = writeln!(out, "|---|---|---|");
        for p in &r.reloads {
            let _ = writeln!(out, "| {} | {} | {} |", p.server, p.names, ppm(&p.samples));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_hundred() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentiles(&v), (50.0, 99.0, 100.0));
        assert_eq!(percentiles(&[]), (0.0, 0.0, 0.0));
    }
}
