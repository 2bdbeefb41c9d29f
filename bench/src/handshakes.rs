//! Handshakes at the edge, side by side: the agent holding N bucket policies, a bare
//! tokio-rustls server with one static config, nginx and HAProxy configured per name from the
//! same mix. Every server is pinned to core 0 and the client to core 1; a server's cost is
//! its own CPU time per handshake (`cpu`), measured around the client's run after a warm-up.
//! Servers and cases alternate in rounds (the machine is noisy) and medians are reported.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use tlsfleet_testkit::{
    agent::Agent,
    control::{Control, DOMAIN},
    etcd::Etcd,
    ports::free_port,
    procs::Proc,
    tls::{s_client, KeyKind, TestCa},
};

use anyhow::Context as _;

use crate::{
    client::Outcome,
    cpu,
    data::{bucket, rule, write_policies},
    peers, swaps,
};

/// What to run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Bucket policies the agent holds.
    pub policies: usize,
    /// Names the peers are configured with (and the client spreads over).
    pub peer_names: usize,
    pub seconds: f64,
    pub warmup_seconds: f64,
    pub rounds: usize,
    pub concurrency: usize,
    /// Also nginx and HAProxy.
    pub peers: bool,
    /// Also the bare server with ring (built from `bench/bare-ring` first).
    pub ring: bool,
}

/// One handshake case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Case {
    pub version: u8,
    pub resume: bool,
}

pub const CASES: [Case; 4] = [
    Case {
        version: 13,
        resume: false,
    },
    Case {
        version: 12,
        resume: false,
    },
    Case {
        version: 13,
        resume: true,
    },
    Case {
        version: 12,
        resume: true,
    },
];

/// Names resumed over (each gets a session in the warm-up).
const RESUMED_NAMES: usize = 100;

/// A server under test.
pub struct Server {
    pub name: String,
    pub version: String,
    pub addr: SocketAddr,
    pub pids: Vec<u32>,
    /// Whether it enforces per name (the bare server does not: one config for all).
    pub per_name: bool,
}

/// One measurement.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub rate: f64,
    pub cpu_us: f64,
    pub resumed_share: f64,
}

/// What one run measured, by server and case; and what each server enforced.
pub struct Results {
    pub servers: Vec<Server>,
    pub samples: Vec<Vec<Vec<Sample>>>,
    /// The agent's resumed cases again while its table is swapped (by case; full cases empty).
    pub swapped: Vec<Vec<Sample>>,
    /// The agent's CPU per swap with no client connected (µs).
    pub swap_cpu_us: f64,
    pub enforced: Vec<Enforcement>,
    pub settings: Settings,
}

/// What `openssl s_client` saw a server enforce.
#[derive(Debug, Clone, Copy)]
pub struct Enforcement {
    /// TLS 1.2 refused for a TLS 1.3-only bucket.
    pub tls13_only: bool,
    /// A TLS 1.2 suite outside a bucket's custom list refused.
    pub custom_suites: bool,
    /// TLS 1.2 still served to a bucket that allows it.
    pub tls12_allowed: bool,
}

fn wait_listening(addr: SocketAddr, timeout: Duration) -> bool {
    tlsfleet_testkit::procs::eventually(timeout, || std::net::TcpStream::connect(addr).is_ok())
}

/// A test CA and the certificate every server under test presents (ECDSA P-256, the domain
/// and its wildcard), written into `dir`.
pub fn edge_certificate(dir: &Path) -> (TestCa, tlsfleet_testkit::tls::TestCert) {
    let ca = TestCa::new();
    let cert = ca.issue(
        dir,
        "tls",
        &[DOMAIN.to_owned(), format!("*.{DOMAIN}")],
        KeyKind::EcdsaP256,
    );
    (ca, cert)
}

/// Runs every server and case.
pub fn run(s: &Settings) -> anyhow::Result<Results> {
    let dir = tempfile::tempdir()?;
    let (ca, cert) = edge_certificate(dir.path());
    let ca_pem = ca.write_pem(dir.path());

    eprintln!("bench: writing {} policies into etcd", s.policies);
    let etcd = Etcd::start();
    tokio::runtime::Runtime::new()?.block_on(write_policies(&etcd.endpoint(), s.policies))?;
    let control = Control::on_etcd(&etcd.endpoint());
    let url = control.grpc_url();
    let mut agent = Agent::spawn(
        "bench-edge",
        std::slice::from_ref(&url),
        &cert.cert,
        &cert.key,
        None,
    );
    agent.wait_ready();
    let loaded = agent.metric("policies_loaded").unwrap_or(0.0) as usize;
    anyhow::ensure!(
        loaded == s.policies,
        "the agent holds {loaded} policies, not {}",
        s.policies
    );

    let mut servers = vec![Server {
        name: format!("tlsfleet-agent ({} policies)", s.policies),
        version: String::new(),
        addr: agent.tls,
        pids: agent.process().pid().into_iter().collect(),
        per_name: true,
    }];
    // Every other server, kept running (and killed on drop) until the end.
    let mut running: Vec<Proc> = vec![];
    let mut start = |name: String, version: String, mut cmd: Command, addr, per_name, wait| {
        let proc = Proc::spawn(&name, &mut cmd);
        anyhow::ensure!(
            wait_listening(addr, wait),
            "{name} did not listen: {}",
            proc.log_tail()
        );
        servers.push(Server {
            name,
            version,
            addr,
            pids: proc.pid().into_iter().collect(),
            per_name,
        });
        running.push(proc);
        Ok(())
    };
    let bare = |mut cmd: Command| {
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        cmd.arg("--cert")
            .arg(&cert.cert)
            .arg("--key")
            .arg(&cert.key)
            .arg("--listen")
            .arg(addr.to_string());
        (cmd, addr)
    };
    let mut own = Command::new(std::env::current_exe()?);
    own.arg("bare-server");
    let (cmd, addr) = bare(own);
    let name = format!("bare tokio-rustls, one config, {PROVIDER}");
    start(
        name,
        String::new(),
        cmd,
        addr,
        false,
        Duration::from_secs(10),
    )?;
    if s.ring {
        let (cmd, addr) = bare(Command::new(build_bare_ring()?));
        let name = "bare tokio-rustls, one config, ring".to_owned();
        start(
            name,
            String::new(),
            cmd,
            addr,
            false,
            Duration::from_secs(10),
        )?;
    }
    if s.peers {
        let n = s.peer_names.min(s.policies);
        type Make = fn(&Path, SocketAddr, &Path, &Path, usize) -> anyhow::Result<peers::Peer>;
        for (name, make) in [("nginx", peers::nginx as Make), ("haproxy", peers::haproxy)] {
            let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
            let peer = make(dir.path(), addr, &cert.cert, &cert.key, n)?;
            let name = format!("{name} (one worker, {n} names)");
            start(
                name,
                peer.version,
                peer.command,
                addr,
                true,
                Duration::from_secs(300),
            )?;
        }
    }
    // Servers on core 0, clients on the last core.
    let client_core = cpu::cores().saturating_sub(1);
    for server in &servers {
        for pid in &server.pids {
            cpu::pin(*pid, 0)?;
        }
    }
    let enforced: Vec<Enforcement> = servers.iter().map(|srv| enforcement(srv.addr)).collect();
    let agent_enforced = enforced[0];
    anyhow::ensure!(
        agent_enforced.tls13_only && agent_enforced.custom_suites && agent_enforced.tls12_allowed,
        "the agent does not enforce its policies: {agent_enforced:?}"
    );

    let names = |version: u8, limit: usize| -> Vec<String> {
        (0..s.peer_names.min(s.policies))
            .filter(|i| {
                let r = rule(*i);
                if version == 12 {
                    r.tls12 && !r.custom_tls12_suite
                } else {
                    r.tls13
                }
            })
            .take(limit)
            .map(|i| format!("{}.{DOMAIN}", bucket(i)))
            .collect()
    };
    // Each case's server names, written once.
    let lists = CASES
        .iter()
        .map(|case| {
            let limit = if case.resume { RESUMED_NAMES } else { 10_000 };
            let resumed = if case.resume { "-resumed" } else { "" };
            let list = dir
                .path()
                .join(format!("names-{}{resumed}.txt", case.version));
            std::fs::write(&list, names(case.version, limit).join("\n"))?;
            Ok(list)
        })
        .collect::<anyhow::Result<Vec<PathBuf>>>()?;
    // The bucket whose policy the swapped runs flip: one no resumed name belongs to.
    let resumed: std::collections::HashSet<String> = [12, 13]
        .into_iter()
        .flat_map(|v| names(v, RESUMED_NAMES))
        .collect();
    let swapped_bucket = (0..s.policies)
        .rev()
        .map(bucket)
        .find(|b| !resumed.contains(&format!("{b}.{DOMAIN}")))
        .context("no bucket outside the resumed names to swap")?;

    let measure = |round: usize, server: &Server, ci: usize, what: &str| {
        let case = CASES[ci];
        let report = client(client_core, &ca_pem, &lists[ci], server, case, s)?;
        let o = &report.outcome;
        anyhow::ensure!(
            o.handshakes > 0,
            "{}{what} {case:?}: no handshake ({} failed: {})",
            server.name,
            o.failed,
            o.error.clone().unwrap_or_default()
        );
        let sample = Sample {
            rate: o.handshakes as f64 / o.seconds,
            cpu_us: report.server_cpu_us as f64 / o.handshakes as f64,
            resumed_share: o.resumed as f64 / o.handshakes as f64,
        };
        eprintln!(
            "bench: round {round} {}{what} TLS 1.{} {}: {:.0}/s, {:.0} µs CPU a handshake, {:.0} % resumed",
            server.name,
            case.version % 10,
            if case.resume { "resumed" } else { "full" },
            sample.rate,
            sample.cpu_us,
            sample.resumed_share * 100.0
        );
        Ok(sample)
    };
    // What a swap costs the agent by itself: its CPU while the bucket is flipped and no
    // client connects.
    let agent_cpu = || cpu::cpu_time_of(&servers[0].pids);
    let idle_start = agent_cpu()?;
    std::thread::sleep(Duration::from_secs_f64(s.seconds));
    let swaps_start = agent_cpu()?;
    let idle = swaps_start - idle_start;
    let (_, puts) = swaps::applied_during(&agent, &url, &swapped_bucket, || {
        std::thread::sleep(Duration::from_secs_f64(s.seconds));
        Ok(())
    })?;
    let busy = agent_cpu()? - swaps_start;
    let swap_cpu_us = busy.saturating_sub(idle).as_secs_f64() * 1e6 / puts as f64;
    eprintln!(
        "bench: {puts} swaps with no client: {swap_cpu_us:.0} µs of agent CPU each ({busy:?} \
         busy, {idle:?} idle over as long)"
    );

    let mut samples = vec![vec![vec![]; CASES.len()]; servers.len()];
    let mut swapped = vec![vec![]; CASES.len()];
    // Each case runs on every server back to back (the order turning from round to round and
    // case to case), so the servers a ratio compares were measured seconds apart, not minutes:
    // this machine drifts by 10 % and more over a run.
    for round in 0..s.rounds {
        for ci in 0..CASES.len() {
            for k in 0..servers.len() {
                let si = (k + round + ci) % servers.len();
                samples[si][ci].push(measure(round, &servers[si], ci, "")?);
            }
            if !CASES[ci].resume {
                continue;
            }
            // The agent again, its table swapped every `swaps::INTERVAL` meanwhile.
            let (sample, _) = swaps::applied_during(&agent, &url, &swapped_bucket, || {
                measure(round, &servers[0], ci, ", table swapped")
            })?;
            swapped[ci].push(sample);
        }
    }
    drop(running);
    Ok(Results {
        servers,
        samples,
        swapped,
        swap_cpu_us,
        enforced,
        settings: s.clone(),
    })
}

/// What the client process reports: its outcome, and the servers' CPU over the measured part.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ClientReport {
    pub outcome: Outcome,
    pub server_cpu_us: u64,
}

/// Runs the client process on `core` against `server`.
fn client(
    core: usize,
    ca: &Path,
    names: &Path,
    server: &Server,
    case: Case,
    s: &Settings,
) -> anyhow::Result<ClientReport> {
    let pids: Vec<String> = server.pids.iter().map(u32::to_string).collect();
    let out = Command::new("taskset")
        .arg("-c")
        .arg(core.to_string())
        .arg(std::env::current_exe()?)
        .arg("client")
        .args(["--addr", &server.addr.to_string()])
        .arg("--ca")
        .arg(ca)
        .arg("--names")
        .arg(names)
        .args(["--version", &case.version.to_string()])
        .args(if case.resume {
            &["--resume"][..]
        } else {
            &[][..]
        })
        .args(["--seconds", &s.seconds.to_string()])
        .args(["--warmup-seconds", &s.warmup_seconds.to_string()])
        .args(["--concurrency", &s.concurrency.to_string()])
        .args(["--server-pids", &pids.join(",")])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "the client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The workspace's crypto provider (`tlsfleet_policy::tls::provider`).
pub const PROVIDER: &str = "aws-lc-rs";

/// Builds `bench/bare-ring` (release, into `target/bare-ring`) and returns its binary.
fn build_bare_ring() -> anyhow::Result<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("bare-ring/Cargo.toml");
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bare-ring");
    eprintln!("bench: building {}", manifest.display());
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--quiet", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target)
        .status()?;
    anyhow::ensure!(status.success(), "building {} failed", manifest.display());
    Ok(target.join("release/bare-ring"))
}

/// What `openssl s_client` sees `addr` enforce for the mix's buckets.
fn enforcement(addr: SocketAddr) -> Enforcement {
    let first = |pick: fn(&crate::data::Rule) -> bool| {
        (0..100)
            .find(|i| pick(&rule(*i)))
            .map(|i| format!("{}.{DOMAIN}", bucket(i)))
    };
    let tls13_only = first(|r| !r.tls12).unwrap_or_default();
    let custom = first(|r| r.custom_tls12_suite).unwrap_or_default();
    let both = first(|r| r.tls12 && r.tls13 && !r.custom_tls12_suite).unwrap_or_default();
    Enforcement {
        tls13_only: !s_client(addr, &tls13_only, &["-tls1_2"]).0,
        custom_suites: !s_client(
            addr,
            &custom,
            &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384"],
        )
        .0,
        tls12_allowed: s_client(addr, &both, &["-tls1_2"]).0,
    }
}
