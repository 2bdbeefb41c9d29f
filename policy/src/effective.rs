//! Validation and the effective policy: what rustls can serve of a stored [`HttpsConfig`].

use std::fmt;

use crate::{
    config::{
        CipherSuiteConfig, TlsVersion, MAX_SUITES_PER_LIST, MAX_SUITE_NAME, MAX_TLS_VERSIONS,
    },
    suites::{self, ServedSuite, SuiteProtocol},
    HttpsConfig,
};

mod cert;
pub use cert::CertKeyType;

/// A protocol version the edge can negotiate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServedVersion {
    Tls12,
    Tls13,
}

impl ServedVersion {
    /// Both, oldest first.
    pub const ALL: [ServedVersion; 2] = [Self::Tls12, Self::Tls13];

    /// The OSS spelling, e.g. `TLSv1.2`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tls12 => "TLSv1.2",
            Self::Tls13 => "TLSv1.3",
        }
    }

    /// The bit of this version in [`PolicyKey::versions`].
    pub fn bit(self) -> u8 {
        match self {
            Self::Tls12 => 0b01,
            Self::Tls13 => 0b10,
        }
    }

    /// The `<CipherSuite>` child that lists custom suites for this version.
    pub fn custom_list_element(self) -> &'static str {
        match self {
            Self::Tls12 => "CustomCipherSuite",
            Self::Tls13 => "TLS13CustomCipherSuite",
        }
    }

    /// The served version of an OSS version (`None` for TLSv1.0 and TLSv1.1).
    pub fn from_tls_version(v: TlsVersion) -> Option<Self> {
        match v {
            TlsVersion::Tls12 => Some(Self::Tls12),
            TlsVersion::Tls13 => Some(Self::Tls13),
            TlsVersion::Tls10 | TlsVersion::Tls11 => None,
        }
    }

    fn of_protocol(p: SuiteProtocol) -> Self {
        match p {
            SuiteProtocol::Tls12 => Self::Tls12,
            SuiteProtocol::Tls13 => Self::Tls13,
        }
    }
}

impl fmt::Display for ServedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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
    /// Nothing: what a bucket the edge refuses allows.
    pub const NONE: PolicyKey = PolicyKey {
        versions: 0,
        suites: 0,
    };

    /// TLS 1.2 and 1.3 with every suite: the endpoint policy, and a bucket with management disabled.
    pub const ALL: PolicyKey = PolicyKey {
        versions: 0b11,
        suites: 0x1ff,
    };

    /// A key from its parts, as given (no masking: see [`PolicyKey::serves_anything`]).
    pub fn new(
        versions: impl IntoIterator<Item = ServedVersion>,
        suites: impl IntoIterator<Item = ServedSuite>,
    ) -> Self {
        Self {
            versions: versions.into_iter().fold(0, |bits, v| bits | v.bit()),
            suites: suites.into_iter().fold(0, |bits, s| bits | s.bit()),
        }
    }

    pub fn allows_version(self, v: ServedVersion) -> bool {
        self.versions & v.bit() != 0
    }

    pub fn allows_suite(self, s: ServedSuite) -> bool {
        self.suites & s.bit() != 0
    }

    /// Oldest first.
    pub fn versions(self) -> Vec<ServedVersion> {
        ServedVersion::ALL
            .into_iter()
            .filter(|&v| self.allows_version(v))
            .collect()
    }

    /// In rustls preference order.
    pub fn suites(self) -> Vec<ServedSuite> {
        ServedSuite::ALL
            .into_iter()
            .filter(|&s| self.allows_suite(s))
            .collect()
    }

    /// Whether some allowed version has an allowed suite: a key that does not cannot build a
    /// rustls `ServerConfig`. Every key [`HttpsConfig::effective`] returns serves something.
    pub fn serves_anything(self) -> bool {
        self.suites()
            .into_iter()
            .any(|s| self.allows_version(s.version()))
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
    SuitesForDisabledVersion {
        version: ServedVersion,
        names: Vec<String>,
    },
    /// A version enabled by the policy for which its custom lists leave no suite.
    VersionWithoutSuites(ServedVersion),
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LegacyVersion(v) => {
                write!(
                    f,
                    "{v} is not served: the edge serves TLSv1.2 and TLSv1.3 only"
                )
            }
            Self::UnservedSuite(name) => {
                let served = suites::lookup(name).map_or(ServedVersion::Tls12, |row| {
                    ServedVersion::of_protocol(row.protocol)
                });
                write!(
                    f,
                    "cipher suite {name} is not served: for {served} the edge serves only {}",
                    served_names(served)
                )
            }
            Self::SuitesForDisabledVersion { version, names } => write!(
                f,
                "{} ({}) is not used: the policy does not enable {version}",
                version.custom_list_element(),
                name_list(names)
            ),
            Self::VersionWithoutSuites(v) => write!(
                f,
                "{v} is not served: no cipher suite in {} is one the edge serves ({})",
                v.custom_list_element(),
                served_names(*v)
            ),
        }
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

impl ValidationErrorKind {
    /// The OSS error code, e.g. `MalformedXML`.
    pub fn oss_code(self) -> &'static str {
        match self {
            Self::MalformedXml => "MalformedXML",
            Self::InvalidArgument => "InvalidArgument",
        }
    }
}

/// Why a policy is refused; `message` is written for the operator.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ValidationError {
    pub kind: ValidationErrorKind,
    pub message: String,
}

impl ValidationError {
    fn malformed(message: impl Into<String>) -> Self {
        Self {
            kind: ValidationErrorKind::MalformedXml,
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self {
            kind: ValidationErrorKind::InvalidArgument,
            message: message.into(),
        }
    }
}

impl HttpsConfig {
    /// Validates a policy and computes what the edge serves of it.
    ///
    /// Cipher names are checked whenever they are present, even where `<CipherSuite>`
    /// leaves them unused (disabled, or the strong set): the contract makes a name that is
    /// no cipher suite `InvalidArgument` unconditionally, and a stored document never holds
    /// nonsense that a later toggle could activate.
    pub fn effective(&self) -> Result<EffectivePolicy, ValidationError> {
        self.check_bounds()?;
        let mut dropped = Vec::new();
        let mut versions = self.served_versions(&mut dropped)?;
        let lists = match &self.cipher_suite {
            Some(cs) => CustomLists::resolve(cs)?,
            None => CustomLists::default(),
        };
        let custom = self
            .cipher_suite
            .as_ref()
            .is_some_and(|cs| cs.enable == Some(true) && cs.strong_cipher_suite != Some(true));

        let mut suites = 0u16;
        let mut starved = Vec::new();
        for version in ServedVersion::ALL {
            let list = lists.of(version);
            if !custom || list.names.is_empty() {
                if versions & version.bit() != 0 {
                    suites |= served_mask(version);
                }
                continue;
            }
            if versions & version.bit() == 0 {
                dropped.push(Dropped::SuitesForDisabledVersion {
                    version,
                    names: list.names.iter().map(|n| n.to_string()).collect(),
                });
                continue;
            }
            dropped.extend(
                list.unserved
                    .iter()
                    .map(|n| Dropped::UnservedSuite(n.to_string())),
            );
            if list.served == 0 {
                versions &= !version.bit();
                dropped.push(Dropped::VersionWithoutSuites(version));
                starved.push(format!(
                    "{version} is not served: none of the suites in {} ({}) is one the edge \
                     serves ({})",
                    version.custom_list_element(),
                    name_list(&list.names),
                    served_names(version)
                ));
            }
            suites |= list.served;
        }

        if versions == 0 {
            // Only the notes that explain the outcome: per-suite notes would repeat the
            // served list once per name.
            let mut reasons: Vec<String> = dropped
                .iter()
                .filter(|d| {
                    matches!(
                        d,
                        Dropped::LegacyVersion(_) | Dropped::SuitesForDisabledVersion { .. }
                    )
                })
                .map(ToString::to_string)
                .collect();
            reasons.extend(starved);
            return Err(ValidationError::invalid(format!(
                "the policy serves nothing: {}",
                reasons.join("; ")
            )));
        }
        Ok(EffectivePolicy {
            key: PolicyKey { versions, suites },
            dropped,
        })
    }

    /// Refuses (`InvalidArgument`) lists longer than [`MAX_TLS_VERSIONS`] or
    /// [`MAX_SUITES_PER_LIST`], and names longer than [`MAX_SUITE_NAME`]. Constant work per
    /// entry, nothing else: call it before anything that grows with the lists.
    pub fn check_bounds(&self) -> Result<(), ValidationError> {
        let n = self.tls.tls_versions.len();
        if n > MAX_TLS_VERSIONS {
            return Err(ValidationError::invalid(format!(
                "the policy lists {n} TLSVersion entries; at most {MAX_TLS_VERSIONS} are accepted"
            )));
        }
        if let Some(cs) = &self.cipher_suite {
            for version in ServedVersion::ALL {
                let list = match version {
                    ServedVersion::Tls12 => &cs.custom_cipher_suites,
                    ServedVersion::Tls13 => &cs.tls13_custom_cipher_suites,
                };
                if list.len() > MAX_SUITES_PER_LIST {
                    return Err(ValidationError::invalid(format!(
                        "{} lists {} cipher suites; at most {MAX_SUITES_PER_LIST} are accepted",
                        version.custom_list_element(),
                        list.len()
                    )));
                }
                if let Some(long) = list.iter().find(|n| n.len() > MAX_SUITE_NAME) {
                    return Err(ValidationError::invalid(format!(
                        "{} in {} is not a TLS cipher suite: longer than {MAX_SUITE_NAME} \
                         characters",
                        quoted(long),
                        version.custom_list_element()
                    )));
                }
            }
        }
        Ok(())
    }

    /// The version mask of `<TLS>`, before cipher lists can remove a version.
    fn served_versions(&self, dropped: &mut Vec<Dropped>) -> Result<u8, ValidationError> {
        if !self.tls.enable {
            return Ok(PolicyKey::ALL.versions);
        }
        if self.tls.tls_versions.is_empty() {
            return Err(ValidationError::malformed(
                "TLS version management is enabled but no TLSVersion is given",
            ));
        }
        let mut versions = 0;
        let mut legacy: Vec<TlsVersion> = Vec::new();
        for &v in &self.tls.tls_versions {
            match ServedVersion::from_tls_version(v) {
                Some(served) => versions |= served.bit(),
                None if !legacy.contains(&v) => legacy.push(v),
                None => {}
            }
        }
        if versions == 0 {
            let given: Vec<&str> = legacy.iter().map(|v| v.as_str()).collect();
            return Err(ValidationError::invalid(format!(
                "the policy serves nothing: it allows only {}, which the edge cannot serve \
                 (TLSv1.0 and TLSv1.1 are not supported); allow at least TLSv1.2",
                given.join(" and ")
            )));
        }
        dropped.extend(legacy.into_iter().map(Dropped::LegacyVersion));
        Ok(versions)
    }
}

/// One custom list, resolved: names as sent (unique, in order).
#[derive(Default)]
struct CustomList<'a> {
    names: Vec<&'a str>,
    unserved: Vec<&'a str>,
    served: u16,
}

#[derive(Default)]
struct CustomLists<'a> {
    tls12: CustomList<'a>,
    tls13: CustomList<'a>,
}

impl<'a> CustomLists<'a> {
    fn resolve(cs: &'a CipherSuiteConfig) -> Result<Self, ValidationError> {
        Ok(Self {
            tls12: CustomList::resolve(&cs.custom_cipher_suites, ServedVersion::Tls12)?,
            tls13: CustomList::resolve(&cs.tls13_custom_cipher_suites, ServedVersion::Tls13)?,
        })
    }

    fn of(&self, version: ServedVersion) -> &CustomList<'a> {
        match version {
            ServedVersion::Tls12 => &self.tls12,
            ServedVersion::Tls13 => &self.tls13,
        }
    }
}

impl<'a> CustomList<'a> {
    fn resolve(names: &'a [String], version: ServedVersion) -> Result<Self, ValidationError> {
        let mut list = Self::default();
        let mut seen = std::collections::HashSet::with_capacity(names.len());
        for name in names {
            if !seen.insert(name.as_str()) {
                continue;
            }
            let row = suites::lookup(name).ok_or_else(|| {
                ValidationError::invalid(format!(
                    "{} in {} is not a TLS cipher suite (expected an OpenSSL name such as \
                     ECDHE-RSA-AES128-GCM-SHA256 or an IANA name such as \
                     TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)",
                    quoted(name),
                    version.custom_list_element()
                ))
            })?;
            let belongs_to = ServedVersion::of_protocol(row.protocol);
            if belongs_to != version {
                return Err(ValidationError::invalid(format!(
                    "{name} is a {} cipher suite: put it in {}, not in {}",
                    belongs_to.as_str(),
                    belongs_to.custom_list_element(),
                    version.custom_list_element()
                )));
            }
            match row.served {
                Some(suite) => list.served |= suite.bit(),
                None => list.unserved.push(name),
            }
            list.names.push(name);
        }
        Ok(list)
    }
}

impl EffectivePolicy {
    /// TLS 1.2 + 1.3, every suite.
    pub fn all() -> Self {
        Self {
            key: PolicyKey::ALL,
            dropped: Vec::new(),
        }
    }

    /// The versions served, oldest first.
    pub fn versions(&self) -> Vec<ServedVersion> {
        self.key.versions()
    }

    /// The suites served, in rustls preference order.
    pub fn suites(&self) -> Vec<ServedSuite> {
        self.key.suites()
    }
}

fn served_mask(version: ServedVersion) -> u16 {
    ServedSuite::ALL
        .into_iter()
        .filter(|s| s.version() == version)
        .fold(0, |bits, s| bits | s.bit())
}

fn served_names(version: ServedVersion) -> String {
    let names: Vec<&str> = ServedSuite::ALL
        .into_iter()
        .filter(|s| s.version() == version)
        .map(ServedSuite::openssl_name)
        .collect();
    names.join(", ")
}

/// At most a few names, so a message stays readable whatever the list holds.
fn name_list<S: AsRef<str>>(names: &[S]) -> String {
    const SHOWN: usize = 8;
    let mut out = names
        .iter()
        .take(SHOWN)
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        out.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    out
}

/// A peer-supplied string for a message: quoted, escaped, and bounded.
fn quoted(s: &str) -> String {
    const MAX_CHARS: usize = 80;
    if s.chars().count() <= MAX_CHARS {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(MAX_CHARS).collect();
        format!("{head:?}…")
    }
}

#[cfg(test)]
mod tests;
