//! TLS: the certificate and its reload ([`cert`]), one `ServerConfig` per distinct policy
//! ([`config`]), and the listener that picks a config by SNI ([`listener`]).

pub mod cert;
pub mod config;
pub mod listener;

pub use cert::{CertError, CertResolver, KeyKind};
pub use config::{ConfigError, ConfigFactory};
