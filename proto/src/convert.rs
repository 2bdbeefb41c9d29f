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

/// The bucket and domain config of a wire `BucketPolicy` (what an agent applies); the name
/// is taken without a copy. An error comes with the name as sent, for the agent's NACK.
pub fn bucket_policy(
    p: v1::BucketPolicy,
) -> Result<(policy::BucketName, policy::HttpsConfig), (String, ConvertError)> {
    let config = match p
        .config
        .ok_or(ConvertError::Missing("policy.config"))
        .and_then(policy::HttpsConfig::try_from)
    {
        Ok(config) => config,
        Err(e) => return Err((p.bucket, e)),
    };
    match policy::BucketName::try_from(p.bucket) {
        Ok(bucket) => Ok((bucket, config)),
        // The error holds the name (bounded: it came from the network).
        Err(e) => Err((e.name.clone(), e.into())),
    }
}

/// Usage on the wire (`BucketUsage`), without the bucket name.
pub fn usage_to_wire(bucket: &str, u: &policy::usage::Usage) -> v1::BucketUsage {
    use policy::{usage::Offered, ServedSuite, ServedVersion};
    let by_suite = |counts: &[u64; 9]| {
        ServedSuite::ALL
            .into_iter()
            .filter(|s| counts[*s as usize] > 0)
            .map(|s| (s.iana_name().to_owned(), counts[s as usize]))
            .collect()
    };
    let offered = |o: Offered| match o {
        Offered::Tls13 => "TLSv1.3",
        Offered::Tls12 => "TLSv1.2",
        Offered::Older => "older",
    };
    v1::BucketUsage {
        bucket: bucket.to_owned(),
        handshakes: by_suite(&u.handshakes),
        requests: by_suite(&u.requests),
        refused: u
            .refused
            .iter()
            .map(|(o, n)| (offered(*o).to_owned(), *n))
            .collect(),
        clients: ServedVersion::ALL
            .into_iter()
            .map(|v| (v, &u.clients[v as usize]))
            .filter(|(_, c)| !c.networks.counts.is_empty() || c.networks.other > 0)
            .map(|(v, c)| clients_to_wire(v, c))
            .collect(),
    }
}

/// One version's clients on the wire.
pub fn clients_to_wire(
    version: policy::ServedVersion,
    c: &policy::usage::Clients,
) -> v1::VersionClients {
    v1::VersionClients {
        version: version.as_str().to_owned(),
        networks: c.networks.counts.clone().into_iter().collect(),
        networks_other: c.networks.other,
        user_agents: c.user_agents.counts.clone().into_iter().collect(),
        user_agents_other: c.user_agents.other,
    }
}

/// Usage from the wire; unknown suites, versions and offers are skipped, every top list is
/// bounded again (a peer cannot grow the receiver's memory).
pub fn usage_from_wire(w: &v1::BucketUsage) -> policy::usage::Usage {
    use policy::{usage::Offered, ServedSuite, ServedVersion};
    let mut u = policy::usage::Usage::default();
    let suite = |name: &str| ServedSuite::ALL.into_iter().find(|s| s.iana_name() == name);
    for (name, n) in &w.handshakes {
        if let Some(s) = suite(name) {
            u.handshakes[s as usize] = u.handshakes[s as usize].saturating_add(*n);
        }
    }
    for (name, n) in &w.requests {
        if let Some(s) = suite(name) {
            u.requests[s as usize] = u.requests[s as usize].saturating_add(*n);
        }
    }
    for (name, n) in &w.refused {
        let o = match name.as_str() {
            "TLSv1.3" => Offered::Tls13,
            "TLSv1.2" => Offered::Tls12,
            _ => Offered::Older,
        };
        *u.refused.entry(o).or_insert(0) += *n;
    }
    for c in &w.clients {
        let Some(v) = ServedVersion::ALL
            .into_iter()
            .find(|v| v.as_str() == c.version)
        else {
            continue;
        };
        let to = &mut u.clients[v as usize];
        for (k, n) in &c.networks {
            to.networks.add(k, *n);
        }
        to.networks.other = to.networks.other.saturating_add(c.networks_other);
        for (k, n) in &c.user_agents {
            let k: String = k.chars().take(policy::usage::MAX_USER_AGENT).collect();
            to.user_agents.add(&k, *n);
        }
        to.user_agents.other = to.user_agents.other.saturating_add(c.user_agents_other);
    }
    u
}
