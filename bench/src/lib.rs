//! The benchmark harness behind BENCHMARKS.md: the agent measured side by side with what
//! operators would use instead, in one run on one machine, reported as ratios. Benchmarks
//! are not tests: they run on demand (`tlsfleet-bench`, see BENCHMARKS.md for each table's
//! command); CI runs a tiny smoke of each (`--smoke`).
//!
//! * [`data`]: the policy mix, written straight into etcd.
//! * [`handshakes`]: handshakes at the edge (agent, bare rustls, nginx, HAProxy), [`report`]
//!   its tables; [`client`] the load client, [`bare`] the bare server, [`peers`] nginx and
//!   HAProxy, [`cpu`] process CPU accounting and pinning.
//! * [`control_plane`]: PUT and GET through REST and gRPC against raw etcd.
//! * [`convergence`]: from a PUT's answer to every agent's ACK, for fleets of processes and
//!   simulated agents; [`reloads`] nginx and HAProxy reloading the same change.

pub mod bare;
pub mod client;
pub mod control_plane;
pub mod convergence;
pub mod cpu;
pub mod data;
pub mod handshakes;
pub mod peers;
pub mod reloads;
pub mod report;
pub mod swaps;
