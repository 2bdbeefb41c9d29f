//! Cipher-suite names: every TLS 1.2 and TLS 1.3 suite OpenSSL knows, in its OpenSSL and
//! IANA spellings, and which of them rustls serves ([`ServedSuite`]).

mod table;

use table::TABLE;

use crate::ServedVersion;

/// The protocol a suite belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SuiteProtocol {
    /// A TLS 1.2 (and older) suite: `<CustomCipherSuite>`.
    Tls12,
    /// A TLS 1.3 suite: `<TLS13CustomCipherSuite>`.
    Tls13,
}

/// One row of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CipherSuiteInfo {
    /// OpenSSL name, e.g. `ECDHE-RSA-AES128-GCM-SHA256` (TLS 1.3: same as IANA).
    pub openssl: &'static str,
    /// IANA name, e.g. `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`.
    pub iana: &'static str,
    /// IANA code point.
    pub id: u16,
    pub protocol: SuiteProtocol,
    /// `Some` when rustls serves it.
    pub served: Option<ServedSuite>,
}

/// The nine suites rustls implements (all ECDHE + AEAD). The discriminant is the bit in a
/// [`crate::PolicyKey`] suite mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum ServedSuite {
    Tls13Aes256GcmSha384 = 0,
    Tls13Aes128GcmSha256 = 1,
    Tls13Chacha20Poly1305Sha256 = 2,
    EcdheEcdsaAes256GcmSha384 = 3,
    EcdheEcdsaAes128GcmSha256 = 4,
    EcdheEcdsaChacha20Poly1305 = 5,
    EcdheRsaAes256GcmSha384 = 6,
    EcdheRsaAes128GcmSha256 = 7,
    EcdheRsaChacha20Poly1305 = 8,
}

impl ServedSuite {
    /// All, in rustls' default preference order.
    pub const ALL: [ServedSuite; 9] = [
        Self::Tls13Aes256GcmSha384,
        Self::Tls13Aes128GcmSha256,
        Self::Tls13Chacha20Poly1305Sha256,
        Self::EcdheEcdsaAes256GcmSha384,
        Self::EcdheEcdsaAes128GcmSha256,
        Self::EcdheEcdsaChacha20Poly1305,
        Self::EcdheRsaAes256GcmSha384,
        Self::EcdheRsaAes128GcmSha256,
        Self::EcdheRsaChacha20Poly1305,
    ];

    pub fn protocol(self) -> SuiteProtocol {
        match self {
            Self::Tls13Aes256GcmSha384
            | Self::Tls13Aes128GcmSha256
            | Self::Tls13Chacha20Poly1305Sha256 => SuiteProtocol::Tls13,
            _ => SuiteProtocol::Tls12,
        }
    }

    /// The only protocol version this suite can be negotiated with.
    pub fn version(self) -> ServedVersion {
        match self.protocol() {
            SuiteProtocol::Tls12 => ServedVersion::Tls12,
            SuiteProtocol::Tls13 => ServedVersion::Tls13,
        }
    }

    /// IANA code point.
    pub fn id(self) -> u16 {
        match self {
            Self::Tls13Aes256GcmSha384 => 0x1302,
            Self::Tls13Aes128GcmSha256 => 0x1301,
            Self::Tls13Chacha20Poly1305Sha256 => 0x1303,
            Self::EcdheEcdsaAes256GcmSha384 => 0xC02C,
            Self::EcdheEcdsaAes128GcmSha256 => 0xC02B,
            Self::EcdheEcdsaChacha20Poly1305 => 0xCCA9,
            Self::EcdheRsaAes256GcmSha384 => 0xC030,
            Self::EcdheRsaAes128GcmSha256 => 0xC02F,
            Self::EcdheRsaChacha20Poly1305 => 0xCCA8,
        }
    }

    /// IANA name, e.g. `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`.
    pub fn iana_name(self) -> &'static str {
        match self {
            Self::Tls13Aes256GcmSha384 => "TLS_AES_256_GCM_SHA384",
            Self::Tls13Aes128GcmSha256 => "TLS_AES_128_GCM_SHA256",
            Self::Tls13Chacha20Poly1305Sha256 => "TLS_CHACHA20_POLY1305_SHA256",
            Self::EcdheEcdsaAes256GcmSha384 => "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            Self::EcdheEcdsaAes128GcmSha256 => "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            Self::EcdheEcdsaChacha20Poly1305 => "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
            Self::EcdheRsaAes256GcmSha384 => "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            Self::EcdheRsaAes128GcmSha256 => "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            Self::EcdheRsaChacha20Poly1305 => "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        }
    }

    /// OpenSSL name, e.g. `ECDHE-RSA-AES128-GCM-SHA256` (TLS 1.3: the IANA name).
    pub fn openssl_name(self) -> &'static str {
        match self {
            Self::EcdheEcdsaAes256GcmSha384 => "ECDHE-ECDSA-AES256-GCM-SHA384",
            Self::EcdheEcdsaAes128GcmSha256 => "ECDHE-ECDSA-AES128-GCM-SHA256",
            Self::EcdheEcdsaChacha20Poly1305 => "ECDHE-ECDSA-CHACHA20-POLY1305",
            Self::EcdheRsaAes256GcmSha384 => "ECDHE-RSA-AES256-GCM-SHA384",
            Self::EcdheRsaAes128GcmSha256 => "ECDHE-RSA-AES128-GCM-SHA256",
            Self::EcdheRsaChacha20Poly1305 => "ECDHE-RSA-CHACHA20-POLY1305",
            Self::Tls13Aes256GcmSha384
            | Self::Tls13Aes128GcmSha256
            | Self::Tls13Chacha20Poly1305Sha256 => self.iana_name(),
        }
    }

    /// `Some(true)` for ECDSA-only TLS 1.2 suites, `Some(false)` for RSA-only, `None` for TLS 1.3.
    pub fn requires_ecdsa(self) -> Option<bool> {
        match self {
            Self::EcdheEcdsaAes256GcmSha384
            | Self::EcdheEcdsaAes128GcmSha256
            | Self::EcdheEcdsaChacha20Poly1305 => Some(true),
            Self::EcdheRsaAes256GcmSha384
            | Self::EcdheRsaAes128GcmSha256
            | Self::EcdheRsaChacha20Poly1305 => Some(false),
            Self::Tls13Aes256GcmSha384
            | Self::Tls13Aes128GcmSha256
            | Self::Tls13Chacha20Poly1305Sha256 => None,
        }
    }

    pub fn from_id(id: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.id() == id)
    }

    /// The bit of this suite in a [`crate::PolicyKey`] suite mask.
    pub fn bit(self) -> u16 {
        1 << self as u8
    }

    /// This suite's row in the table.
    pub fn info(self) -> &'static CipherSuiteInfo {
        // Invariant: OpenSSL's list, which the table is generated from, holds every rustls
        // suite (pinned by `every_served_suite_has_its_row`), so the index is in bounds.
        let index = TABLE.partition_point(|row| row.id < self.id());
        &TABLE[index]
    }
}

/// Every suite in the table, sorted by code point.
pub fn all() -> &'static [CipherSuiteInfo] {
    &TABLE
}

/// Resolves an OpenSSL or IANA name (ASCII case-insensitive).
pub fn lookup(name: &str) -> Option<&'static CipherSuiteInfo> {
    TABLE
        .iter()
        .find(|row| row.openssl.eq_ignore_ascii_case(name) || row.iana.eq_ignore_ascii_case(name))
}

/// Resolves an IANA code point.
pub fn by_id(id: u16) -> Option<&'static CipherSuiteInfo> {
    TABLE
        .binary_search_by_key(&id, |row| row.id)
        .ok()
        .map(|index| &TABLE[index])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test may panic: that is how it fails
mod tests {
    use super::*;

    #[test]
    fn every_served_suite_has_its_row() {
        for suite in ServedSuite::ALL {
            let row = suite.info();
            assert_eq!(row.id, suite.id(), "{suite:?}");
            assert_eq!(row.served, Some(suite));
            assert_eq!(row.iana, suite.iana_name());
            assert_eq!(row.openssl, suite.openssl_name());
            assert_eq!(row.protocol, suite.protocol());
            assert_eq!(ServedSuite::from_id(suite.id()), Some(suite));
            assert_eq!(lookup(suite.openssl_name()), Some(row));
            assert_eq!(lookup(suite.iana_name()), Some(row));
        }
        let served: Vec<_> = all().iter().filter_map(|row| row.served).collect();
        assert_eq!(
            served.len(),
            ServedSuite::ALL.len(),
            "each served suite exactly once"
        );
    }

    #[test]
    fn table_is_sorted_unique_and_complete() {
        assert!(all().windows(2).all(|w| w[0].id < w[1].id));
        // 155 TLS 1.2-usable suites and all five TLS 1.3 suites of OpenSSL 3.0.
        assert_eq!(all().len(), 160);
        let tls13: Vec<_> = all()
            .iter()
            .filter(|row| row.protocol == SuiteProtocol::Tls13)
            .map(|row| row.iana)
            .collect();
        assert_eq!(
            tls13,
            [
                "TLS_AES_128_GCM_SHA256",
                "TLS_AES_256_GCM_SHA384",
                "TLS_CHACHA20_POLY1305_SHA256",
                "TLS_AES_128_CCM_SHA256",
                "TLS_AES_128_CCM_8_SHA256",
            ]
        );
        for row in all() {
            assert_eq!(by_id(row.id), Some(row));
            // TLS 1.3 suites have no separate OpenSSL spelling.
            if row.protocol == SuiteProtocol::Tls13 {
                assert_eq!(row.openssl, row.iana);
            }
        }
    }

    #[test]
    fn lookup_is_ascii_case_insensitive_and_exact_otherwise() {
        let row = lookup("ecdhe-rsa-aes128-gcm-sha256").unwrap();
        assert_eq!(row.served, Some(ServedSuite::EcdheRsaAes128GcmSha256));
        assert_eq!(lookup("tls_ecdhe_rsa_with_aes_128_gcm_sha256"), Some(row));
        // SSLv3/TLSv1-era suites are still TLS 1.2 suites for the custom list.
        let legacy = lookup("AES128-SHA").unwrap();
        assert_eq!(
            (legacy.protocol, legacy.served),
            (SuiteProtocol::Tls12, None)
        );
        assert_eq!(lookup("tls_aes_128_ccm_8_sha256").unwrap().id, 0x1305);
        for bad in [
            "",
            " AES128-SHA",
            "AES128-SHA ",
            "AES128_SHA",
            "TLS13_AES_128_GCM_SHA256",
        ] {
            assert_eq!(lookup(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn served_suite_properties() {
        use ServedSuite::*;
        assert_eq!(EcdheEcdsaChacha20Poly1305.requires_ecdsa(), Some(true));
        assert_eq!(EcdheRsaAes256GcmSha384.requires_ecdsa(), Some(false));
        assert_eq!(Tls13Aes128GcmSha256.requires_ecdsa(), None);
        for suite in ServedSuite::ALL {
            let ecdsa = suite.openssl_name().starts_with("ECDHE-ECDSA-");
            let rsa = suite.openssl_name().starts_with("ECDHE-RSA-");
            let expected = (ecdsa || rsa).then_some(ecdsa);
            assert_eq!(suite.requires_ecdsa(), expected, "{suite:?}");
            assert_eq!(suite.version() == ServedVersion::Tls13, expected.is_none());
            assert_eq!(suite.bit(), 1 << (suite as u16));
        }
        assert_eq!(ServedSuite::from_id(0x002F), None);
    }
}
