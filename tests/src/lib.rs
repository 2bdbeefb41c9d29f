//! Test harness: starts real etcd, control servers and agents on free loopback ports, and
//! talks to them with real clients. Processes are killed when their handles drop.

pub mod agent;
pub mod background;
pub mod control;
pub mod etcd;
pub mod grpc;
pub mod lenient;
pub mod ports;
pub mod procs;
pub mod proxy;
pub mod rest;
pub mod tls;
