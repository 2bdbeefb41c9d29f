//! Downgrades: a change of a bucket's policy that lets in anything the current one keeps out.
//!
//! A change is a downgrade when the new policy serves a version or a cipher suite the current
//! one does not (TLS 1.2 added to a TLS 1.3-only bucket, suites widened, management turned
//! off, the policy deleted so that the default applies), or when it adds TLSv1.0 or TLSv1.1 to
//! the stored versions (the edge never serves those, but an operator adding them means to let
//! older clients in, and the stored policy would say so). Tightening, and changes that keep
//! what is served the same, are not downgrades.

use std::fmt;

use crate::{
    EffectivePolicy, HttpsConfig, ServedSuite, ServedVersion, TlsVersion, ValidationError,
};

/// What a downgrade lets in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Downgrade {
    /// Versions served after the change and not before.
    pub versions: Vec<ServedVersion>,
    /// Suites served after the change and not before, of versions served before too (those
    /// of a version let in come with it).
    pub suites: Vec<ServedSuite>,
    /// TLSv1.0/TLSv1.1 added to the stored versions.
    pub legacy: Vec<TlsVersion>,
    /// TLS version management turned off.
    pub management_off: bool,
}

impl fmt::Display for Downgrade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.management_off {
            parts.push("turns TLS version management off".to_owned());
        }
        if !self.versions.is_empty() {
            let v: Vec<&str> = self.versions.iter().map(|v| v.as_str()).collect();
            parts.push(format!("lets in {}", v.join(", ")));
        }
        if !self.suites.is_empty() {
            let shown: Vec<&str> = self.suites.iter().take(5).map(|s| s.iana_name()).collect();
            let more = self.suites.len().saturating_sub(shown.len());
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            parts.push(format!("lets in the suites {}{more}", shown.join(", ")));
        }
        if !self.legacy.is_empty() {
            let v: Vec<&str> = self.legacy.iter().map(|v| v.as_str()).collect();
            parts.push(format!("adds {} to the stored versions", v.join(", ")));
        }
        f.write_str(&parts.join("; "))
    }
}

/// The (version, suite) pairs a handshake can negotiate under `e`.
fn served(e: &EffectivePolicy) -> Vec<ServedSuite> {
    e.key
        .suites()
        .into_iter()
        .filter(|s| e.key.allows_version(s.version()))
        .collect()
}

fn legacy(c: &HttpsConfig) -> Vec<TlsVersion> {
    if !c.tls.enable {
        return vec![];
    }
    c.tls
        .tls_versions
        .iter()
        .copied()
        .filter(|v| matches!(v, TlsVersion::Tls10 | TlsVersion::Tls11))
        .collect()
}

/// Whether changing `before` into `after` is a downgrade, and what it lets in. Both must
/// validate (`after` was validated by the caller; an invalid `before` is compared as "serves
/// everything", so nothing counts as a downgrade from it).
pub fn downgrade(
    before: &HttpsConfig,
    after: &HttpsConfig,
) -> Result<Option<Downgrade>, ValidationError> {
    let new = after.effective()?;
    let old = before
        .effective()
        .unwrap_or_else(|_| EffectivePolicy::all());
    let old_served = served(&old);
    let versions: Vec<ServedVersion> = new
        .key
        .versions()
        .into_iter()
        .filter(|v| !old.key.allows_version(*v))
        .collect();
    // Suites of a version let in come with it: only those of versions served before count.
    let suites: Vec<ServedSuite> = served(&new)
        .into_iter()
        .filter(|s| !old_served.contains(s) && old.key.allows_version(s.version()))
        .collect();
    let old_legacy = legacy(before);
    let legacy: Vec<TlsVersion> = legacy(after)
        .into_iter()
        .filter(|v| !old_legacy.contains(v))
        .collect();
    let management_off = before.tls.enable && !after.tls.enable;
    let d = Downgrade {
        versions,
        suites,
        legacy,
        management_off,
    };
    let any =
        d.management_off || !d.versions.is_empty() || !d.suites.is_empty() || !d.legacy.is_empty();
    Ok(any.then_some(d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CipherSuiteConfig, TlsConfig};

    fn versions(v: &[TlsVersion]) -> HttpsConfig {
        HttpsConfig {
            tls: TlsConfig {
                enable: true,
                tls_versions: v.to_vec(),
            },
            cipher_suite: None,
        }
    }

    fn with_suites(mut c: HttpsConfig, tls12: &[&str], tls13: &[&str]) -> HttpsConfig {
        c.cipher_suite = Some(CipherSuiteConfig {
            enable: Some(true),
            strong_cipher_suite: Some(false),
            custom_cipher_suites: tls12.iter().map(|s| s.to_string()).collect(),
            tls13_custom_cipher_suites: tls13.iter().map(|s| s.to_string()).collect(),
        });
        c
    }

    use TlsVersion::{Tls10, Tls11, Tls12, Tls13};

    #[test]
    fn letting_in_a_version_suites_or_everything_is_a_downgrade() {
        let only13 = versions(&[Tls13]);
        let both = versions(&[Tls12, Tls13]);
        let d = downgrade(&only13, &both).unwrap().expect("a downgrade");
        assert_eq!(d.versions, [ServedVersion::Tls12]);
        assert!(
            d.suites.is_empty(),
            "the version's suites come with it: {d}"
        );
        assert!(d.to_string().contains("lets in TLSv1.2"), "{d}");
        // Turning management off, from anything enabled.
        let d = downgrade(&both, &HttpsConfig::disabled())
            .unwrap()
            .expect("a downgrade");
        assert!(d.management_off);
        assert!(d.to_string().contains("management off"), "{d}");
        // Widening the suites of the same version.
        let narrow = with_suites(versions(&[Tls13]), &[], &["TLS_AES_256_GCM_SHA384"]);
        let wide = with_suites(
            versions(&[Tls13]),
            &[],
            &["TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"],
        );
        let d = downgrade(&narrow, &wide).unwrap().expect("a downgrade");
        assert_eq!(d.suites, [ServedSuite::Tls13Chacha20Poly1305Sha256]);
        assert!(d.versions.is_empty());
        // Adding TLSv1.0/1.1, which the edge never serves.
        let d = downgrade(&both, &versions(&[Tls10, Tls12, Tls13]))
            .unwrap()
            .expect("a downgrade");
        assert_eq!((d.legacy.as_slice(), d.versions.len()), (&[Tls10][..], 0));
    }

    #[test]
    fn tightening_or_keeping_is_not_a_downgrade() {
        let only13 = versions(&[Tls13]);
        let both = versions(&[Tls12, Tls13]);
        assert_eq!(downgrade(&both, &only13).unwrap(), None);
        assert_eq!(downgrade(&only13, &only13).unwrap(), None);
        assert_eq!(downgrade(&HttpsConfig::disabled(), &both).unwrap(), None);
        assert_eq!(
            downgrade(&HttpsConfig::disabled(), &HttpsConfig::disabled()).unwrap(),
            None
        );
        // Dropping TLSv1.1 while keeping the rest.
        let legacy = versions(&[Tls11, Tls12, Tls13]);
        assert_eq!(downgrade(&legacy, &both).unwrap(), None);
        assert_eq!(downgrade(&legacy, &legacy).unwrap(), None);
    }

    #[test]
    fn an_invalid_new_policy_is_an_error() {
        assert!(downgrade(&HttpsConfig::disabled(), &versions(&[Tls10])).is_err());
    }
}
