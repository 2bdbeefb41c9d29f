//! TLS, a leaf of the crate: the certificate and its reload ([`cert`]) and one `ServerConfig`
//! per distinct policy ([`config`]). The listener that picks a config by SNI is
//! `crate::handshake`.

pub mod cert;
pub mod config;

pub use cert::{CertError, CertResolver};
pub use config::{ConfigError, ConfigFactory};
