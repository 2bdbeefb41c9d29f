//! The end-to-end suites live in `tests/` beside this file: real etcd, real control servers
//! and agents, real TLS clients and the official SDKs. What they share (processes, the test
//! CA, signed clients, `eventually`) is the `tlsfleet-testkit` crate.
