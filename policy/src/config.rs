//! The stored policy: exactly the OSS `HttpsConfiguration` schema.

use std::{collections::HashSet, fmt, hash::Hash, str::FromStr};

/// `<TLSVersion>` entries a policy may hold (there are four versions; repeats are dropped).
pub const MAX_TLS_VERSIONS: usize = 16;
/// Names one custom cipher-suite list may hold. OpenSSL knows about 160 TLS 1.2 and 1.3
/// suites; a longer list is not a policy, and refusing it before any other work bounds what
/// a request can cost.
pub const MAX_SUITES_PER_LIST: usize = 200;
/// The longest cipher-suite name accepted (the longest IANA name has 49 characters).
pub const MAX_SUITE_NAME: usize = 100;

/// A bucket's HTTPS configuration, as stored and echoed (the PUT body = the GET body).
///
/// Lists keep the order they were sent in, with duplicates removed (first one kept).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct HttpsConfig {
    pub tls: TlsConfig,
    /// Absent: every suite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cipher_suite: Option<CipherSuiteConfig>,
}

/// `<TLS>`: TLS version management.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct TlsConfig {
    pub enable: bool,
    /// At least one when `enable`; empty when management is disabled.
    #[serde(default)]
    pub tls_versions: Vec<TlsVersion>,
}

/// `<CipherSuite>`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct CipherSuiteConfig {
    /// Absent or false: every suite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable: Option<bool>,
    /// True: the strong set; false or absent: the custom lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strong_cipher_suite: Option<bool>,
    /// `<CustomCipherSuite>`: TLS 1.2 suites, names exactly as sent.
    #[serde(default)]
    pub custom_cipher_suites: Vec<String>,
    /// `<TLS13CustomCipherSuite>`: TLS 1.3 suites, names exactly as sent.
    #[serde(default)]
    pub tls13_custom_cipher_suites: Vec<String>,
}

/// A TLS version as OSS spells it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "&'static str")]
pub enum TlsVersion {
    Tls10,
    Tls11,
    Tls12,
    Tls13,
}

/// A version string that is none of `TLSv1.0`, `TLSv1.1`, `TLSv1.2`, `TLSv1.3`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown TLS version {0:?}: expected TLSv1.0, TLSv1.1, TLSv1.2 or TLSv1.3")]
pub struct UnknownTlsVersion(pub String);

impl TlsVersion {
    pub const ALL: [TlsVersion; 4] = [Self::Tls10, Self::Tls11, Self::Tls12, Self::Tls13];

    /// The OSS spelling, e.g. `TLSv1.2`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tls10 => "TLSv1.0",
            Self::Tls11 => "TLSv1.1",
            Self::Tls12 => "TLSv1.2",
            Self::Tls13 => "TLSv1.3",
        }
    }
}

impl FromStr for TlsVersion {
    type Err = UnknownTlsVersion;
    /// Exact spelling only, as OSS does.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownTlsVersion(s.chars().take(64).collect()))
    }
}

impl TryFrom<String> for TlsVersion {
    type Error = UnknownTlsVersion;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<TlsVersion> for &'static str {
    fn from(v: TlsVersion) -> Self {
        v.as_str()
    }
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl HttpsConfig {
    /// The effective default for a bucket that never had a config: management disabled.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Brings a policy to its stored form, as OSS echoes it: lists de-duplicated (see
    /// [`HttpsConfig::dedup`]) and no versions while management is disabled (OSS drops them
    /// on a PUT with `<Enable>false</Enable>`). [`crate::xml::parse`] returns this form;
    /// other entry points (gRPC, CLI) should call it before storing.
    pub fn normalize(&mut self) {
        self.dedup();
        if !self.tls.enable {
            self.tls.tls_versions.clear();
        }
    }

    /// Removes duplicates from every list, keeping the first occurrence and the order.
    pub fn dedup(&mut self) {
        dedup_in_order(&mut self.tls.tls_versions);
        if let Some(cs) = &mut self.cipher_suite {
            dedup_in_order(&mut cs.custom_cipher_suites);
            dedup_in_order(&mut cs.tls13_custom_cipher_suites);
        }
    }
}

/// Keeps the first occurrence of each value, in order; linear time.
fn dedup_in_order<T: Eq + Hash + Clone>(v: &mut Vec<T>) {
    let mut seen: HashSet<T> = HashSet::with_capacity(v.len());
    v.retain(|x| seen.insert(x.clone()));
}
