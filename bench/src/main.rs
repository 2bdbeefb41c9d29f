//! `tlsfleet-bench`: the benchmarks of BENCHMARKS.md, run on demand.
//!
//! ```text
//! tlsfleet-bench handshakes [--policies 100000] [--peer-names 10000] [--seconds 5] [--rounds 3]
//! tlsfleet-bench handshakes --smoke      # what CI runs: everything, tiny
//! tlsfleet-bench control [--clients 1,16,64] [--seconds 5] [--ops put,get] [--apis etcd,txn,rest,grpc]
//! tlsfleet-bench convergence [--processes 10,100] [--simulated 1000] [--puts 100] [--bursts 5]
//! ```

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tlsfleet_bench::{bare, client, control_plane, convergence, cpu, handshakes, report};

/// mimalloc, as the agent and the control server: the bare rustls server this binary runs is
/// compared with the agent on the same allocator (glibc malloc cost the agent about 9 % of a
/// handshake), the agents it simulates allocate as real ones do, and its load clients leave
/// more of the two cores to the servers they measure.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tlsfleet-bench",
    about = "tlsfleet's benchmarks against its peers"
)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Handshakes at the edge: the agent, a bare tokio-rustls server, nginx and HAProxy, side
    /// by side; prints the markdown tables.
    Handshakes {
        /// Bucket policies the agent holds (a realistic mix, written straight into etcd).
        #[arg(long, default_value_t = 100_000)]
        policies: usize,
        /// Names nginx and HAProxy are configured with (one server block / crt-list line each).
        #[arg(long, default_value_t = 10_000)]
        peer_names: usize,
        /// Seconds measured per server and case.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Seconds of warm-up before each measurement (sessions for the resumed cases).
        #[arg(long, default_value_t = 1.0)]
        warmup_seconds: f64,
        /// Rounds; servers alternate in each, medians are reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Connections the client keeps going at once.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Leave nginx and HAProxy out.
        #[arg(long)]
        no_peers: bool,
        /// Leave out the bare server with ring (built from bench/bare-ring when it runs).
        #[arg(long)]
        no_ring: bool,
        /// A tiny run of everything (what CI runs): 200 policies, one short round.
        #[arg(long)]
        smoke: bool,
    },
    /// The control plane against raw etcd: PUT and GET through REST and gRPC at each
    /// concurrency, beside raw etcd put and get on the same etcd; prints the markdown table.
    Control {
        /// Concurrent clients, one measurement each.
        #[arg(long, value_delimiter = ',', default_values_t = [1, 16, 64])]
        clients: Vec<usize>,
        /// Seconds measured per cell.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Seconds of warm-up before each cell.
        #[arg(long, default_value_t = 1.0)]
        warmup_seconds: f64,
        /// Buckets stored before the run (the GETs read them, the PUTs change them).
        #[arg(long, default_value_t = 10_000)]
        buckets: usize,
        /// The operations measured.
        #[arg(long, value_enum, value_delimiter = ',', default_values_t = [control_plane::Op::Put, control_plane::Op::Get])]
        ops: Vec<control_plane::Op>,
        /// The APIs measured (`txn`: the raw etcd guarded transaction, PUTs only).
        #[arg(long, value_enum, value_delimiter = ',', default_values_t = control_plane::Api::ALL)]
        apis: Vec<control_plane::Api>,
        /// HTTP/2 connections the gRPC clients share, their calls multiplexed (as one
        /// process's calls on a tonic channel); 0: a connection of its own for each client.
        #[arg(long, default_value_t = 0)]
        grpc_channels: usize,
        /// The control server's `--request-log` (`changes`: no line for a successful read).
        #[arg(long, value_enum, default_value = "all")]
        request_log: tlsfleet_control::request_log::RequestLog,
        /// A tiny run (what CI runs).
        #[arg(long)]
        smoke: bool,
    },
    /// Fleet convergence: from a PUT's answer to every agent's ACK, for fleets of agent
    /// processes and of agents simulated in this process, single PUTs and bursts; nginx and
    /// HAProxy reloading one name's change beside it. Prints the markdown tables.
    Convergence {
        /// Fleets of agent processes, one measurement each.
        #[arg(long, value_delimiter = ',', default_values_t = [10, 100])]
        processes: Vec<usize>,
        /// Agents simulated in this process (their sync client and policy table; 0: none).
        #[arg(long, default_value_t = 1000)]
        simulated: usize,
        /// Policies stored before the fleets start (the realistic mix).
        #[arg(long, default_value_t = 10_000)]
        policies: usize,
        /// Single PUTs per fleet, one at a time.
        #[arg(long, default_value_t = 100)]
        puts: usize,
        /// Bursts per fleet.
        #[arg(long, default_value_t = 5)]
        bursts: usize,
        /// PUTs per burst.
        #[arg(long, default_value_t = 1000)]
        burst_size: usize,
        /// Names nginx and HAProxy are configured with for their reloads (0: leave them out).
        #[arg(long, default_value_t = 10_000)]
        peer_names: usize,
        /// Reloads per peer.
        #[arg(long, default_value_t = 10)]
        reloads: usize,
        /// A tiny run (what CI runs).
        #[arg(long)]
        smoke: bool,
    },
    /// (Internal) the bare tokio-rustls server.
    BareServer {
        #[arg(long)]
        cert: PathBuf,
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        listen: SocketAddr,
    },
    /// (Internal) the load client: prints its outcome as JSON.
    Client {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long)]
        ca: PathBuf,
        /// A file of server names, one a line.
        #[arg(long)]
        names: PathBuf,
        #[arg(long, default_value_t = 13)]
        version: u8,
        #[arg(long)]
        resume: bool,
        #[arg(long)]
        seconds: f64,
        #[arg(long, default_value_t = 0.0)]
        warmup_seconds: f64,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// The server's processes, whose CPU time is measured over the run after warm-up.
        #[arg(long, value_delimiter = ',')]
        server_pids: Vec<u32>,
    },
}

fn main() -> anyhow::Result<()> {
    // The agent and control binaries are beside this one (testkit looks in TLSFLEET_BIN_DIR).
    if std::env::var_os("TLSFLEET_BIN_DIR").is_none() {
        if let Some(dir) = std::env::current_exe()?.parent() {
            std::env::set_var("TLSFLEET_BIN_DIR", dir);
        }
    }
    let _ = tlsfleet_policy::tls::provider().install_default();
    match Args::parse().command {
        Cmd::Handshakes {
            policies,
            peer_names,
            seconds,
            warmup_seconds,
            rounds,
            concurrency,
            no_peers,
            no_ring,
            smoke,
        } => {
            let settings = if smoke {
                handshakes::Settings {
                    policies: 200,
                    peer_names: 200,
                    seconds: 0.3,
                    warmup_seconds: 0.2,
                    rounds: 1,
                    concurrency: 4,
                    peers: !no_peers,
                    // The ring server is the same code with another provider, and its own
                    // build: left to the full runs.
                    ring: false,
                }
            } else {
                handshakes::Settings {
                    policies,
                    peer_names,
                    seconds,
                    warmup_seconds,
                    rounds: rounds.max(1),
                    concurrency,
                    peers: !no_peers,
                    ring: !no_ring,
                }
            };
            let results = handshakes::run(&settings)?;
            println!("{}", report::markdown(&results));
            Ok(())
        }
        Cmd::Control {
            clients,
            seconds,
            warmup_seconds,
            buckets,
            ops,
            apis,
            grpc_channels,
            request_log,
            smoke,
        } => {
            let settings = if smoke {
                control_plane::Settings {
                    ops: control_plane::Op::ALL.to_vec(),
                    apis: control_plane::Api::ALL.to_vec(),
                    grpc_channels: 0,
                    request_log,
                    clients: vec![1, 4],
                    seconds: 0.3,
                    warmup_seconds: 0.1,
                    // Enough that no client names a bucket twice in a second (a V1 signature
                    // covers the date to the second, and a repeat is a replay).
                    buckets: 2_000,
                }
            } else {
                anyhow::ensure!(
                    !clients.is_empty() && !clients.contains(&0),
                    "--clients: at least one number of clients, each at least 1"
                );
                anyhow::ensure!(
                    !ops.is_empty() && !apis.is_empty(),
                    "--ops and --apis: at least one each"
                );
                control_plane::Settings {
                    ops,
                    apis,
                    grpc_channels,
                    request_log,
                    clients,
                    seconds,
                    warmup_seconds,
                    buckets: buckets.max(1),
                }
            };
            let results = control_plane::run(&settings)?;
            println!("{}", control_plane::markdown(&results));
            anyhow::ensure!(
                results.measured.iter().all(|m| m.errors == 0 && m.ops > 0),
                "some calls failed or none completed (see the table)"
            );
            Ok(())
        }
        Cmd::Convergence {
            processes,
            simulated,
            policies,
            puts,
            bursts,
            burst_size,
            peer_names,
            reloads,
            smoke,
        } => {
            let settings = if smoke {
                convergence::Settings {
                    processes: vec![2],
                    simulated: 5,
                    policies: 200,
                    puts: 3,
                    bursts: 1,
                    burst_size: 32,
                    peer_names: 200,
                    reloads: 2,
                }
            } else {
                convergence::Settings {
                    // `--processes 0`: no fleet of processes.
                    processes: processes.into_iter().filter(|&n| n > 0).collect(),
                    simulated,
                    policies,
                    puts,
                    bursts,
                    burst_size,
                    peer_names,
                    reloads,
                }
            };
            let results = convergence::run(&settings)?;
            println!("{}", convergence::markdown(&results));
            Ok(())
        }
        Cmd::BareServer { cert, key, listen } => {
            let cfg = bare::config(
                &cert,
                &key,
                tlsfleet_policy::tls::provider(),
                tlsfleet_policy::tls::ticketer()?,
            )?;
            tokio::runtime::Runtime::new()?.block_on(bare::serve(listen, cfg))
        }
        Cmd::Client {
            addr,
            ca,
            names,
            version,
            resume,
            seconds,
            warmup_seconds,
            concurrency,
            server_pids,
        } => {
            let names: Vec<String> = std::fs::read_to_string(&names)
                .with_context(|| format!("reading {}", names.display()))?
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect();
            let mut load = client::Load {
                addr,
                names,
                version,
                resume,
                duration: Duration::from_secs_f64(warmup_seconds),
                concurrency,
            };
            let (cfg, tickets) = client::config(&ca, &load)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            if warmup_seconds > 0.0 {
                runtime.block_on(client::run(cfg.clone(), tickets.clone(), load.clone()));
            }
            load.duration = Duration::from_secs_f64(seconds);
            let before = cpu::cpu_time_of(&server_pids)?;
            let outcome = runtime.block_on(client::run(cfg, tickets, load));
            let after = cpu::cpu_time_of(&server_pids)?;
            let report = handshakes::ClientReport {
                outcome,
                server_cpu_us: u64::try_from(after.saturating_sub(before).as_micros())
                    .unwrap_or(u64::MAX),
            };
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
    }
}
