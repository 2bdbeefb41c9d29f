//! The test kit every test crate shares: starts real etcd, control servers and agents on free
//! loopback ports, and talks to them with real clients (rustls, `openssl s_client`, signed
//! gRPC). Processes are killed when their handles drop.
//!
//! * [`tls`]: the one test CA (leaves for servers and mTLS clients, ECDSA or RSA) and TLS
//!   clients; [`grpc`]: signed clients; [`eventually`]: waiting on a condition, never a
//!   sleep; [`procs`], [`etcd`], [`control`], [`agent`]: real processes.

pub mod agent;
pub mod background;
pub mod control;
pub mod etcd;
pub mod etcd_cluster;
pub mod eventually;
pub mod grpc;
pub mod lenient;
pub mod ports;
pub mod procs;
pub mod proxy;
pub mod rest;
pub mod tls;
