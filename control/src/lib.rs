//! tlsfleet control plane.

pub mod store;
