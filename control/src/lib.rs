//! tlsfleet control plane: the HttpsConfig API over OSS REST and gRPC, the storage port and
//! its adapters, the in-memory index, and the fan-out to agents.

pub mod audit;
pub mod auth;
pub mod clock;
pub mod compaction;
pub mod config;
pub mod grpc;
pub mod index;
pub mod metrics;
pub mod registry;
pub mod request_log;
pub mod rest;
pub mod server;
pub mod service;
pub mod status;
pub mod store;
pub mod usage;
