//! Certificate key types, and what of a policy a certificate of each type can serve.

use std::fmt;

use super::{PolicyKey, ServedVersion};
use crate::suites::ServedSuite;

/// The key type of an edge certificate, which decides the TLS 1.2 suites it can serve
/// (`ECDHE-ECDSA-*` or `ECDHE-RSA-*`; TLS 1.3 suites work with either).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CertKeyType {
    /// ECDSA or Ed25519.
    Ecdsa,
    Rsa,
}

impl CertKeyType {
    pub const ALL: [CertKeyType; 2] = [Self::Ecdsa, Self::Rsa];

    /// `ECDSA` or `RSA`, as agents report it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ecdsa => "ECDSA",
            Self::Rsa => "RSA",
        }
    }

    /// The inverse of [`CertKeyType::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The TLS 1.2 suite family this key type serves, as an operator reads it.
    pub fn family(self) -> &'static str {
        match self {
            Self::Ecdsa => "ECDHE-ECDSA",
            Self::Rsa => "ECDHE-RSA",
        }
    }

    /// The TLS 1.2 suite family this key type cannot serve, as an operator reads it.
    pub fn other_family(self) -> &'static str {
        match self {
            Self::Ecdsa => "ECDHE-RSA",
            Self::Rsa => "ECDHE-ECDSA",
        }
    }
}

impl fmt::Display for CertKeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PolicyKey {
    /// What a certificate of `kind` actually serves of this key: its TLS 1.2 suites of the
    /// other key type removed, and TLS 1.2 itself when none is left. Never looser than `self`.
    pub fn served_with(self, kind: CertKeyType) -> PolicyKey {
        let mut suites = self.suites;
        for s in ServedSuite::ALL {
            if s.requires_ecdsa() == Some(kind != CertKeyType::Ecdsa) {
                suites &= !s.bit();
            }
        }
        let mut versions = self.versions;
        let tls12_left = ServedSuite::ALL
            .into_iter()
            .any(|s| s.version() == ServedVersion::Tls12 && suites & s.bit() != 0);
        if !tls12_left {
            versions &= !ServedVersion::Tls12.bit();
        }
        PolicyKey { versions, suites }
    }

    /// Whether a certificate of `kind` can serve anything of this key.
    pub fn servable_with(self, kind: CertKeyType) -> bool {
        self.served_with(kind).serves_anything()
    }

    /// What both keys allow: the versions and suites in each.
    pub fn intersection(self, other: PolicyKey) -> PolicyKey {
        PolicyKey {
            versions: self.versions & other.versions,
            suites: self.suites & other.suites,
        }
    }
}
