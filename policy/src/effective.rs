//! Validation and the effective policy: what rustls can serve of a stored [`HttpsConfig`].

use crate::{config::TlsVersion, suites::ServedSuite, HttpsConfig};

/// A protocol version the edge can negotiate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServedVersion {
    Tls12,
    Tls13,
}

impl ServedVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tls12 => "TLSv1.2",
            Self::Tls13 => "TLSv1.3",
        }
    }
}

/// The part of a policy that decides the handshake: a compact, hashable key. Buckets with
/// equal keys share one rustls `ServerConfig`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyKey {
    /// bit 0: TLS 1.2, bit 1: TLS 1.3.
    pub versions: u8,
    /// bit `ServedSuite as u8`.
    pub suites: u16,
}

impl PolicyKey {
    /// TLS 1.2 and 1.3 with every suite: the endpoint policy, and a bucket with management disabled.
    pub const ALL: PolicyKey = PolicyKey { versions: 0b11, suites: 0x1ff };

    pub fn allows_version(self, v: ServedVersion) -> bool {
        let _ = v;
        todo!()
    }
    pub fn allows_suite(self, s: ServedSuite) -> bool {
        let _ = s;
        todo!()
    }
    pub fn versions(self) -> Vec<ServedVersion> {
        todo!()
    }
    /// In rustls preference order.
    pub fn suites(self) -> Vec<ServedSuite> {
        todo!()
    }
}

/// Something in the stored policy the edge does not serve, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// TLSv1.0 / TLSv1.1: rustls serves TLS 1.2 and 1.3 only.
    LegacyVersion(TlsVersion),
    /// A real cipher suite (OpenSSL knows it) that rustls does not implement.
    UnservedSuite(String),
    /// Custom suites for a version the policy does not enable.
    SuitesForDisabledVersion { version: ServedVersion, names: Vec<String> },
    /// A version enabled by the policy for which its custom lists leave no suite.
    VersionWithoutSuites(ServedVersion),
}

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let _ = f;
        todo!()
    }
}

/// What the edge serves for a policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EffectivePolicy {
    pub key: PolicyKey,
    pub dropped: Vec<Dropped>,
}

/// OSS error class of a validation failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValidationErrorKind {
    /// `400 MalformedXML`: the document does not follow the schema (no `<TLS>`, no
    /// `<Enable>`, a non-boolean, `Enable=true` without a version, an unknown version string).
    MalformedXml,
    /// `400 InvalidArgument`: well-formed but unacceptable (a name that is no cipher suite,
    /// a TLS 1.3 suite in the TLS 1.2 list or the reverse, a policy that would serve nothing).
    InvalidArgument,
}

/// Why a policy is refused; `message` is written for the operator.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ValidationError {
    pub kind: ValidationErrorKind,
    pub message: String,
}

impl HttpsConfig {
    /// Validates a policy and computes what the edge serves of it.
    pub fn effective(&self) -> Result<EffectivePolicy, ValidationError> {
        todo!()
    }
}

impl EffectivePolicy {
    /// TLS 1.2 + 1.3, every suite.
    pub fn all() -> Self {
        Self { key: PolicyKey::ALL, dropped: Vec::new() }
    }
}
