//! The tlsfleet edge agent: follows the control plane's policy revisions and enforces each
//! bucket's TLS rules on every connection (per-bucket rustls configs chosen by SNI) and on every
//! request (the request's bucket checked against the connection's negotiated version and suite).
//!
//! * [`table`]: bucket → shared `ServerConfig`, swapped atomically once per revision.
//! * [`tls`]: the config factory, the certificate (with reload) and the TLS listener.
//! * [`http`]: per-request enforcement, the built-in responder and the upstream proxy.
//! * [`server`]: [`server::DataPlane`], which wires the above to sockets.
//! * [`admin`] and [`metrics`]: `/healthz`, `/readyz`, Prometheus `/metrics`.
//! * [`sync`], [`cache`], [`config`]: the control-plane client, the last-known-good cache and
//!   the binary's configuration.

pub mod admin;
pub mod cache;
pub mod config;
pub mod http;
pub mod metrics;
pub mod server;
pub mod sync;
pub mod table;
pub mod tls;
