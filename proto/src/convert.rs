//! Conversions between the wire messages and the policy crate's domain types.
//! Mechanical only: validation stays in `tlsfleet-policy`.

use tlsfleet_policy as policy;

use crate::v1;

/// A wire message that does not map to a domain value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("missing field {0}")]
    Missing(&'static str),
    #[error(transparent)]
    Version(#[from] policy::config::UnknownTlsVersion),
    #[error(transparent)]
    Bucket(#[from] policy::InvalidBucketName),
    #[error("{what} has {len} entries; at most {max} are accepted")]
    TooMany {
        what: &'static str,
        len: usize,
        max: usize,
    },
}

/// Refuses a list longer than `max` before any work is done on it.
fn bounded<T>(what: &'static str, list: &[T], max: usize) -> Result<(), ConvertError> {
    if list.len() > max {
        return Err(ConvertError::TooMany {
            what,
            len: list.len(),
            max,
        });
    }
    Ok(())
}

impl From<&policy::HttpsConfig> for v1::HttpsConfig {
    fn from(c: &policy::HttpsConfig) -> Self {
        v1::HttpsConfig {
            tls: Some(v1::TlsConfig {
                enable: c.tls.enable,
                tls_versions: c
                    .tls
                    .tls_versions
                    .iter()
                    .map(|v| v.as_str().to_owned())
                    .collect(),
            }),
            cipher_suite: c.cipher_suite.as_ref().map(|cs| v1::CipherSuiteConfig {
                enable: cs.enable,
                strong_cipher_suite: cs.strong_cipher_suite,
                custom_cipher_suites: cs.custom_cipher_suites.clone(),
                tls13_custom_cipher_suites: cs.tls13_custom_cipher_suites.clone(),
            }),
        }
    }
}

impl TryFrom<v1::HttpsConfig> for policy::HttpsConfig {
    type Error = ConvertError;

    /// Lists are de-duplicated (order kept), as the XML codec does.
    fn try_from(c: v1::HttpsConfig) -> Result<Self, Self::Error> {
        let tls = c.tls.ok_or(ConvertError::Missing("config.tls"))?;
        bounded(
            "tls.tls_versions",
            &tls.tls_versions,
            policy::config::MAX_TLS_VERSIONS,
        )?;
        if let Some(cs) = &c.cipher_suite {
            let max = policy::config::MAX_SUITES_PER_LIST;
            bounded(
                "cipher_suite.custom_cipher_suites",
                &cs.custom_cipher_suites,
                max,
            )?;
            bounded(
                "cipher_suite.tls13_custom_cipher_suites",
                &cs.tls13_custom_cipher_suites,
                max,
            )?;
        }
        let tls_versions = tls
            .tls_versions
            .iter()
            .map(|v| v.parse())
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = policy::HttpsConfig {
            tls: policy::TlsConfig {
                enable: tls.enable,
                tls_versions,
            },
            cipher_suite: c.cipher_suite.map(|cs| policy::CipherSuiteConfig {
                enable: cs.enable,
                strong_cipher_suite: cs.strong_cipher_suite,
                custom_cipher_suites: cs.custom_cipher_suites,
                tls13_custom_cipher_suites: cs.tls13_custom_cipher_suites,
            }),
        };
        out.normalize();
        Ok(out)
    }
}

impl From<&policy::EffectivePolicy> for v1::EffectivePolicy {
    fn from(e: &policy::EffectivePolicy) -> Self {
        v1::EffectivePolicy {
            tls_versions: e
                .key
                .versions()
                .iter()
                .map(|v| v.as_str().to_owned())
                .collect(),
            cipher_suites: e
                .key
                .suites()
                .iter()
                .map(|s| s.iana_name().to_owned())
                .collect(),
            dropped: e.dropped.iter().map(ToString::to_string).collect(),
        }
    }
}

/// The bucket and domain config of a wire `BucketPolicy` (what an agent applies).
pub fn bucket_policy(
    p: v1::BucketPolicy,
) -> Result<(policy::BucketName, policy::HttpsConfig), ConvertError> {
    let bucket = p.bucket.parse()?;
    let config = p
        .config
        .ok_or(ConvertError::Missing("policy.config"))?
        .try_into()?;
    Ok((bucket, config))
}
