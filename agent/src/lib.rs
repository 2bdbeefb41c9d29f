//! The tlsfleet edge agent: follows the control plane's policy revisions and enforces each
//! bucket's TLS rules on every connection (per-bucket rustls configs chosen by SNI) and on every
//! request (the request's bucket checked against the connection's negotiated version and suite).
//!
//! The data path, in order:
//!
//! * [`sync`]: the control-plane client (the Sync stream, ACK/NACK, reconnects), and
//!   [`cache`], the last-known-good copy it keeps on disk.
//! * [`table`]: bucket → shared `ServerConfig`, swapped atomically once per revision.
//! * [`handshake`]: the TLS listener: ClientHello → config by SNI → handshake → HTTP (with
//!   `stream`, the wrappers around the connection's stream).
//! * [`http`]: the per-request check ([`http::enforce`]), canonicalisation, the built-in
//!   responder and the upstream proxy.
//!
//! Beside it: [`tls`] (a leaf: the config factory and the certificate with its reload),
//! [`readiness`] (the sync state and `/readyz`), [`metrics`] and [`admin`] (`/healthz`,
//! `/readyz`, Prometheus `/metrics`), [`server`] ([`server::DataPlane`], which wires it all to
//! sockets), [`config`] (the binary's flags) and [`usage`] (per-bucket TLS usage, reported
//! to the control plane).

pub mod admin;
pub mod cache;
pub mod config;
pub mod handshake;
pub mod http;
pub mod metrics;
pub mod readiness;
pub mod server;
mod stream;
pub mod sync;
pub mod table;
pub mod tls;
pub mod usage;
