//! Mapping an effective policy to rustls protocol versions and cipher suites.

use rustls::{crypto::CryptoProvider, SupportedCipherSuite, SupportedProtocolVersion};

use crate::{effective::PolicyKey, ServedSuite, ServedVersion};

/// The rustls versions of a key.
pub fn protocol_versions(key: PolicyKey) -> Vec<&'static SupportedProtocolVersion> {
    let _ = key;
    todo!()
}

/// The suites of `provider` that `key` allows, in the provider's order.
pub fn cipher_suites(key: PolicyKey, provider: &CryptoProvider) -> Vec<SupportedCipherSuite> {
    let _ = (key, provider);
    todo!()
}

/// A provider whose suite list is narrowed to `key` (for `ServerConfig::builder_with_provider`).
pub fn narrowed_provider(key: PolicyKey, base: &CryptoProvider) -> CryptoProvider {
    let _ = (key, base);
    todo!()
}

/// The served version of a negotiated rustls protocol version (`None` for anything else).
pub fn served_version(v: rustls::ProtocolVersion) -> Option<ServedVersion> {
    let _ = v;
    todo!()
}

/// The served suite of a negotiated rustls suite.
pub fn served_suite(s: rustls::CipherSuite) -> Option<ServedSuite> {
    let _ = s;
    todo!()
}
