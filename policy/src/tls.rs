//! Mapping an effective policy to rustls protocol versions and cipher suites.

use rustls::{crypto::CryptoProvider, SupportedCipherSuite, SupportedProtocolVersion};

use crate::{effective::PolicyKey, ServedSuite, ServedVersion};

/// The workspace's one crypto provider (`deny.toml` bans the others): every server and
/// client config is built from it, so changing provider is this line and the features in the
/// workspace `Cargo.toml`.
pub fn provider() -> CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

/// A ticketer of [`provider`] (TLS 1.3 tickets and TLS 1.2 session tickets), with a random
/// key rotated by rustls.
pub fn ticketer() -> Result<std::sync::Arc<dyn rustls::server::ProducesTickets>, rustls::Error> {
    rustls::crypto::aws_lc_rs::Ticketer::new()
}

/// The rustls versions of a key.
pub fn protocol_versions(key: PolicyKey) -> Vec<&'static SupportedProtocolVersion> {
    key.versions().into_iter().map(rustls_version).collect()
}

/// The rustls value of a served version.
pub fn rustls_version(v: ServedVersion) -> &'static SupportedProtocolVersion {
    match v {
        ServedVersion::Tls12 => &rustls::version::TLS12,
        ServedVersion::Tls13 => &rustls::version::TLS13,
    }
}

/// The suites of `provider` that `key` allows, in the provider's order.
///
/// Suites of `provider` that are no [`ServedSuite`] are left out: the key cannot allow them.
pub fn cipher_suites(key: PolicyKey, provider: &CryptoProvider) -> Vec<SupportedCipherSuite> {
    provider
        .cipher_suites
        .iter()
        .filter(|s| served_suite(s.suite()).is_some_and(|served| key.allows_suite(served)))
        .copied()
        .collect()
}

/// A provider whose suite list is narrowed to `key` (for `ServerConfig::builder_with_provider`).
pub fn narrowed_provider(key: PolicyKey, base: &CryptoProvider) -> CryptoProvider {
    CryptoProvider {
        cipher_suites: cipher_suites(key, base),
        ..base.clone()
    }
}

/// The served version of a negotiated rustls protocol version (`None` for anything else).
pub fn served_version(v: rustls::ProtocolVersion) -> Option<ServedVersion> {
    match v {
        rustls::ProtocolVersion::TLSv1_2 => Some(ServedVersion::Tls12),
        rustls::ProtocolVersion::TLSv1_3 => Some(ServedVersion::Tls13),
        _ => None,
    }
}

/// The served suite of a negotiated rustls suite.
pub fn served_suite(s: rustls::CipherSuite) -> Option<ServedSuite> {
    ServedSuite::from_id(u16::from(s))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test may panic: that is how it fails
mod tests {
    use std::sync::Arc;

    use super::*;

    fn provided() -> CryptoProvider {
        provider()
    }

    fn builds(key: PolicyKey) -> Result<(), rustls::Error> {
        rustls::ServerConfig::builder_with_provider(Arc::new(narrowed_provider(key, &provided())))
            .with_protocol_versions(&protocol_versions(key))
            .map(drop)
    }

    #[test]
    fn the_provider_serves_exactly_the_served_suites_in_order() {
        let ids: Vec<Option<ServedSuite>> = provided()
            .cipher_suites
            .iter()
            .map(|s| served_suite(s.suite()))
            .collect();
        let expected: Vec<_> = ServedSuite::ALL.into_iter().map(Some).collect();
        assert_eq!(ids, expected);
        assert_eq!(cipher_suites(PolicyKey::ALL, &provided()).len(), 9);
    }

    #[test]
    fn narrowing_keeps_only_the_key_suites() {
        use ServedSuite::*;
        let key = PolicyKey::new(
            [ServedVersion::Tls12, ServedVersion::Tls13],
            [EcdheRsaChacha20Poly1305, Tls13Aes128GcmSha256],
        );
        let narrowed = narrowed_provider(key, &provided());
        let got: Vec<_> = narrowed
            .cipher_suites
            .iter()
            .filter_map(|s| served_suite(s.suite()))
            .collect();
        // Provider order, not the order the key was built in.
        assert_eq!(got, [Tls13Aes128GcmSha256, EcdheRsaChacha20Poly1305]);
        assert_eq!(narrowed.kx_groups.len(), provided().kx_groups.len());
        assert_eq!(
            protocol_versions(key),
            [&rustls::version::TLS12, &rustls::version::TLS13]
        );
    }

    #[test]
    fn real_server_configs_build_for_servable_keys() {
        use ServedSuite::*;
        use ServedVersion::*;
        let keys = [
            PolicyKey::ALL,
            PolicyKey::new([Tls12], ServedSuite::ALL),
            PolicyKey::new([Tls13], ServedSuite::ALL),
            PolicyKey::new([Tls13], [Tls13Chacha20Poly1305Sha256]),
            PolicyKey::new([Tls12], [EcdheEcdsaAes128GcmSha256]),
            PolicyKey::new(
                [Tls12, Tls13],
                [EcdheRsaAes256GcmSha384, Tls13Aes256GcmSha384],
            ),
        ];
        for key in keys {
            assert!(key.serves_anything(), "{key:?}");
            builds(key).unwrap_or_else(|e| panic!("{key:?}: {e}"));
        }
    }

    #[test]
    fn unservable_keys_error_without_panicking() {
        use ServedSuite::*;
        use ServedVersion::*;
        let keys = [
            PolicyKey::new([Tls12], [Tls13Aes128GcmSha256]),
            PolicyKey::new(
                [Tls13],
                [EcdheRsaAes128GcmSha256, EcdheEcdsaChacha20Poly1305],
            ),
            PolicyKey::new([Tls12, Tls13], []),
            PolicyKey::new([], ServedSuite::ALL),
        ];
        for key in keys {
            assert!(!key.serves_anything(), "{key:?}");
            assert!(builds(key).is_err(), "{key:?} should not build");
        }
    }

    #[test]
    fn negotiated_values_map_back() {
        assert_eq!(
            served_version(rustls::ProtocolVersion::TLSv1_2),
            Some(ServedVersion::Tls12)
        );
        assert_eq!(
            served_version(rustls::ProtocolVersion::TLSv1_3),
            Some(ServedVersion::Tls13)
        );
        assert_eq!(served_version(rustls::ProtocolVersion::TLSv1_1), None);
        assert_eq!(
            served_suite(rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256),
            Some(ServedSuite::EcdheRsaAes128GcmSha256)
        );
        assert_eq!(
            served_suite(rustls::CipherSuite::TLS13_AES_256_GCM_SHA384),
            Some(ServedSuite::Tls13Aes256GcmSha384)
        );
        assert_eq!(
            served_suite(rustls::CipherSuite::TLS_RSA_WITH_AES_128_CBC_SHA),
            None
        );
        for v in ServedVersion::ALL {
            assert_eq!(served_version(rustls_version(v).version), Some(v));
        }
    }
}
