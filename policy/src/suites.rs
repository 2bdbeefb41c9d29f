//! Cipher-suite names: every TLS 1.2 and TLS 1.3 suite OpenSSL knows, in its OpenSSL and
//! IANA spellings, and which of them rustls serves ([`ServedSuite`]).

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
        todo!()
    }
    /// IANA code point.
    pub fn id(self) -> u16 {
        todo!()
    }
    pub fn iana_name(self) -> &'static str {
        todo!()
    }
    pub fn openssl_name(self) -> &'static str {
        todo!()
    }
    /// `Some(true)` for ECDSA-only TLS 1.2 suites, `Some(false)` for RSA-only, `None` for TLS 1.3.
    pub fn requires_ecdsa(self) -> Option<bool> {
        todo!()
    }
    pub fn from_id(id: u16) -> Option<Self> {
        todo!()
    }
}

/// Every suite in the table.
pub fn all() -> &'static [CipherSuiteInfo] {
    todo!()
}

/// Resolves an OpenSSL or IANA name (ASCII case-insensitive).
pub fn lookup(name: &str) -> Option<&'static CipherSuiteInfo> {
    let _ = name;
    todo!()
}
