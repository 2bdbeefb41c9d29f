//! Unit tests of [`super`].

#![allow(clippy::unwrap_used)] // a test may panic: that is how it fails

use super::*;
use crate::{CipherSuiteConfig, TlsConfig};
use ServedSuite::*;
use ServedVersion::{Tls12, Tls13};

fn config(enable: bool, versions: &[TlsVersion]) -> HttpsConfig {
    HttpsConfig {
        tls: TlsConfig {
            enable,
            tls_versions: versions.to_vec(),
        },
        cipher_suite: None,
    }
}

fn with_suites(
    mut c: HttpsConfig,
    enable: Option<bool>,
    strong: Option<bool>,
    tls12: &[&str],
    tls13: &[&str],
) -> HttpsConfig {
    c.cipher_suite = Some(CipherSuiteConfig {
        enable,
        strong_cipher_suite: strong,
        custom_cipher_suites: tls12.iter().map(|s| s.to_string()).collect(),
        tls13_custom_cipher_suites: tls13.iter().map(|s| s.to_string()).collect(),
    });
    c
}

fn custom(versions: &[TlsVersion], tls12: &[&str], tls13: &[&str]) -> HttpsConfig {
    with_suites(
        config(true, versions),
        Some(true),
        Some(false),
        tls12,
        tls13,
    )
}

fn refused(c: &HttpsConfig, kind: ValidationErrorKind) -> String {
    let err = c.effective().expect_err("policy should be refused");
    assert_eq!(err.kind, kind, "{err}");
    err.message
}

const BOTH: &[TlsVersion] = &[TlsVersion::Tls12, TlsVersion::Tls13];

#[test]
fn management_disabled_serves_everything_and_ignores_versions() {
    assert_eq!(
        HttpsConfig::disabled().effective(),
        Ok(EffectivePolicy::all())
    );
    let stale = config(false, &[TlsVersion::Tls10]);
    assert_eq!(stale.effective(), Ok(EffectivePolicy::all()));
}

#[test]
fn cipher_section_applies_without_version_management() {
    let c = with_suites(
        config(false, &[]),
        Some(true),
        None,
        &[],
        &["TLS_AES_128_GCM_SHA256"],
    );
    let eff = c.effective().unwrap();
    assert_eq!(eff.versions(), [Tls12, Tls13]);
    assert_eq!(
        eff.suites(),
        [
            Tls13Aes128GcmSha256,
            EcdheEcdsaAes256GcmSha384,
            EcdheEcdsaAes128GcmSha256,
            EcdheEcdsaChacha20Poly1305,
            EcdheRsaAes256GcmSha384,
            EcdheRsaAes128GcmSha256,
            EcdheRsaChacha20Poly1305,
        ]
    );
}

#[test]
fn enabled_without_versions_is_malformed() {
    let msg = refused(&config(true, &[]), ValidationErrorKind::MalformedXml);
    assert_eq!(
        msg,
        "TLS version management is enabled but no TLSVersion is given"
    );
    assert_eq!(ValidationErrorKind::MalformedXml.oss_code(), "MalformedXML");
}

#[test]
fn versions_are_intersected_with_what_rustls_serves() {
    let eff = config(true, &[TlsVersion::Tls13]).effective().unwrap();
    assert_eq!(eff.versions(), [Tls13]);
    assert_eq!(
        eff.suites(),
        [
            Tls13Aes256GcmSha384,
            Tls13Aes128GcmSha256,
            Tls13Chacha20Poly1305Sha256
        ]
    );
    assert!(eff.dropped.is_empty());

    let c = config(
        true,
        &[
            TlsVersion::Tls10,
            TlsVersion::Tls12,
            TlsVersion::Tls11,
            TlsVersion::Tls10,
        ],
    );
    let eff = c.effective().unwrap();
    assert_eq!(eff.versions(), [Tls12]);
    assert_eq!(eff.key.suites, served_mask(Tls12));
    assert_eq!(
        eff.dropped,
        [
            Dropped::LegacyVersion(TlsVersion::Tls10),
            Dropped::LegacyVersion(TlsVersion::Tls11)
        ]
    );
}

#[test]
fn legacy_only_serves_nothing() {
    let c = config(true, &[TlsVersion::Tls10, TlsVersion::Tls11]);
    let msg = refused(&c, ValidationErrorKind::InvalidArgument);
    assert!(msg.contains("TLSv1.0 and TLSv1.1"), "{msg}");
    assert!(msg.contains("at least TLSv1.2"), "{msg}");
    assert_eq!(
        ValidationErrorKind::InvalidArgument.oss_code(),
        "InvalidArgument"
    );
}

#[test]
fn cipher_section_disabled_or_strong_means_every_suite() {
    for (enable, strong) in [
        (None, None),
        (Some(false), Some(false)),
        (Some(true), Some(true)),
    ] {
        let c = with_suites(
            config(true, BOTH),
            enable,
            strong,
            &["AES128-SHA"],
            &["TLS_AES_128_CCM_SHA256"],
        );
        assert_eq!(
            c.effective(),
            Ok(EffectivePolicy::all()),
            "{enable:?} {strong:?}"
        );
    }
}

#[test]
fn custom_lists_select_suites_by_either_spelling() {
    let c = custom(
        BOTH,
        &[
            "ecdhe-rsa-aes128-gcm-sha256",
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        ],
        &["TLS_AES_256_GCM_SHA384"],
    );
    let eff = c.effective().unwrap();
    assert_eq!(eff.versions(), [Tls12, Tls13]);
    assert_eq!(
        eff.suites(),
        [
            Tls13Aes256GcmSha384,
            EcdheEcdsaChacha20Poly1305,
            EcdheRsaAes128GcmSha256
        ]
    );
    assert!(eff.dropped.is_empty());
}

#[test]
fn strong_absent_means_custom() {
    let c = with_suites(
        config(true, BOTH),
        Some(true),
        None,
        &["ECDHE-RSA-AES256-GCM-SHA384"],
        &[],
    );
    assert!(c
        .effective()
        .unwrap()
        .suites()
        .contains(&EcdheRsaAes256GcmSha384));
    assert!(!c
        .effective()
        .unwrap()
        .suites()
        .contains(&EcdheRsaAes128GcmSha256));
}

#[test]
fn an_empty_custom_list_means_every_suite_of_its_version() {
    let c = custom(BOTH, &["ECDHE-ECDSA-AES128-GCM-SHA256"], &[]);
    let eff = c.effective().unwrap();
    assert_eq!(
        eff.key.suites,
        served_mask(Tls13) | EcdheEcdsaAes128GcmSha256.bit()
    );
    assert_eq!(
        custom(BOTH, &[], &[]).effective(),
        Ok(EffectivePolicy::all())
    );
}

#[test]
fn unknown_names_are_invalid_and_named() {
    let msg = refused(
        &custom(BOTH, &["ECDHE-RSA-AES128-GCM-SHA256", "FOO-BAR"], &[]),
        ValidationErrorKind::InvalidArgument,
    );
    assert!(
        msg.starts_with("\"FOO-BAR\" in CustomCipherSuite is not a TLS cipher suite"),
        "{msg}"
    );
    let msg = refused(
        &custom(BOTH, &[], &["TLS_AES_512"]),
        ValidationErrorKind::InvalidArgument,
    );
    assert!(
        msg.contains("\"TLS_AES_512\" in TLS13CustomCipherSuite is not a TLS cipher suite"),
        "{msg}"
    );
    // Bounded, whatever the peer sent.
    let long = "X".repeat(10_000);
    let msg = refused(
        &custom(BOTH, &[&long], &[]),
        ValidationErrorKind::InvalidArgument,
    );
    assert!(msg.len() < 400, "{msg}");
}

#[test]
fn names_are_checked_even_where_unused() {
    let c = with_suites(config(false, &[]), Some(false), None, &["nonsense"], &[]);
    let msg = refused(&c, ValidationErrorKind::InvalidArgument);
    assert!(msg.contains("\"nonsense\""), "{msg}");
}

#[test]
fn suites_in_the_wrong_list_are_invalid() {
    let msg = refused(
        &custom(BOTH, &["TLS_AES_128_GCM_SHA256"], &[]),
        ValidationErrorKind::InvalidArgument,
    );
    assert_eq!(
        msg,
        "TLS_AES_128_GCM_SHA256 is a TLSv1.3 cipher suite: put it in TLS13CustomCipherSuite, \
         not in CustomCipherSuite"
    );
    let msg = refused(
        &custom(BOTH, &[], &["ECDHE-RSA-AES128-GCM-SHA256"]),
        ValidationErrorKind::InvalidArgument,
    );
    assert_eq!(
        msg,
        "ECDHE-RSA-AES128-GCM-SHA256 is a TLSv1.2 cipher suite: put it in CustomCipherSuite, \
         not in TLS13CustomCipherSuite"
    );
}

#[test]
fn unserved_suites_are_dropped_with_a_note() {
    let c = custom(
        BOTH,
        &["AES128-SHA", "ECDHE-RSA-AES128-GCM-SHA256", "AES128-SHA"],
        &["TLS_AES_128_CCM_SHA256", "TLS_AES_128_GCM_SHA256"],
    );
    let eff = c.effective().unwrap();
    assert_eq!(
        eff.suites(),
        [Tls13Aes128GcmSha256, EcdheRsaAes128GcmSha256]
    );
    assert_eq!(
        eff.dropped,
        [
            Dropped::UnservedSuite("AES128-SHA".into()),
            Dropped::UnservedSuite("TLS_AES_128_CCM_SHA256".into()),
        ]
    );
    let note = eff.dropped[0].to_string();
    assert!(
        note.starts_with("cipher suite AES128-SHA is not served"),
        "{note}"
    );
    assert!(
        note.contains("for TLSv1.2 the edge serves only ECDHE-ECDSA-AES256-GCM-SHA384"),
        "{note}"
    );
    let note = eff.dropped[1].to_string();
    assert!(
        note.contains("for TLSv1.3 the edge serves only TLS_AES_256_GCM_SHA384"),
        "{note}"
    );
}

#[test]
fn a_list_with_no_served_suite_removes_its_version() {
    let c = custom(BOTH, &["AES128-SHA", "DHE-RSA-AES128-GCM-SHA256"], &[]);
    let eff = c.effective().unwrap();
    assert_eq!(eff.versions(), [Tls13]);
    assert_eq!(eff.key.suites, served_mask(Tls13));
    assert_eq!(
        eff.dropped.last(),
        Some(&Dropped::VersionWithoutSuites(Tls12))
    );
    assert_eq!(
        Dropped::VersionWithoutSuites(Tls12).to_string(),
        "TLSv1.2 is not served: no cipher suite in CustomCipherSuite is one the edge serves \
         (ECDHE-ECDSA-AES256-GCM-SHA384, ECDHE-ECDSA-AES128-GCM-SHA256, \
         ECDHE-ECDSA-CHACHA20-POLY1305, ECDHE-RSA-AES256-GCM-SHA384, \
         ECDHE-RSA-AES128-GCM-SHA256, ECDHE-RSA-CHACHA20-POLY1305)"
    );
}

#[test]
fn suites_for_a_disabled_version_are_noted() {
    let c = custom(
        &[TlsVersion::Tls13],
        &["ECDHE-RSA-AES128-GCM-SHA256", "AES128-SHA"],
        &[],
    );
    let eff = c.effective().unwrap();
    assert_eq!(eff.versions(), [Tls13]);
    assert_eq!(eff.key.suites, served_mask(Tls13));
    assert_eq!(
        eff.dropped,
        [Dropped::SuitesForDisabledVersion {
            version: Tls12,
            names: vec!["ECDHE-RSA-AES128-GCM-SHA256".into(), "AES128-SHA".into()],
        }]
    );
    assert_eq!(
        eff.dropped[0].to_string(),
        "CustomCipherSuite (ECDHE-RSA-AES128-GCM-SHA256, AES128-SHA) is not used: \
         the policy does not enable TLSv1.2"
    );
}

#[test]
fn custom_lists_that_leave_nothing_are_refused_with_reasons() {
    let c = custom(
        &[TlsVersion::Tls11, TlsVersion::Tls12],
        &["AES128-SHA"],
        &["TLS_AES_128_GCM_SHA256"],
    );
    let msg = refused(&c, ValidationErrorKind::InvalidArgument);
    assert!(
        msg.starts_with("the policy serves nothing: TLSv1.1 is not served"),
        "{msg}"
    );
    assert!(
        msg.contains("TLS13CustomCipherSuite (TLS_AES_128_GCM_SHA256) is not used"),
        "{msg}"
    );
    assert!(
        msg.contains("TLSv1.2 is not served: none of the suites in CustomCipherSuite (AES128-SHA)"),
        "{msg}"
    );
    // Both versions starved.
    let c = custom(BOTH, &["AES128-SHA"], &["TLS_AES_128_CCM_8_SHA256"]);
    let msg = refused(&c, ValidationErrorKind::InvalidArgument);
    assert!(msg.contains("CustomCipherSuite (AES128-SHA)"), "{msg}");
    assert!(
        msg.contains("TLS13CustomCipherSuite (TLS_AES_128_CCM_8_SHA256)"),
        "{msg}"
    );
}

#[test]
fn legacy_version_note_reads_well() {
    assert_eq!(
        Dropped::LegacyVersion(TlsVersion::Tls10).to_string(),
        "TLSv1.0 is not served: the edge serves TLSv1.2 and TLSv1.3 only"
    );
}

#[test]
fn long_name_lists_are_shortened() {
    let names: Vec<String> = (0..12).map(|i| format!("N{i}")).collect();
    let note = Dropped::SuitesForDisabledVersion {
        version: Tls13,
        names,
    }
    .to_string();
    assert!(note.contains("N7 and 4 more"), "{note}");
    assert!(!note.contains("N8"), "{note}");
}

#[test]
fn policy_key_accessors() {
    let key = PolicyKey::new([Tls13], [Tls13Aes128GcmSha256, EcdheRsaAes128GcmSha256]);
    assert_eq!(
        key,
        PolicyKey {
            versions: 0b10,
            suites: 0b1000_0010
        }
    );
    assert!(key.allows_version(Tls13) && !key.allows_version(Tls12));
    assert!(key.allows_suite(Tls13Aes128GcmSha256) && !key.allows_suite(Tls13Aes256GcmSha384));
    assert_eq!(key.versions(), [Tls13]);
    assert_eq!(
        key.suites(),
        [Tls13Aes128GcmSha256, EcdheRsaAes128GcmSha256]
    );
    assert!(key.serves_anything());
    assert_eq!(
        PolicyKey::new(ServedVersion::ALL, ServedSuite::ALL),
        PolicyKey::ALL
    );
    assert_eq!(PolicyKey::ALL.suites(), ServedSuite::ALL);
    assert!(!PolicyKey::new([Tls12], [Tls13Aes128GcmSha256]).serves_anything());
}

#[test]
fn every_effective_key_serves_something() {
    let lists: [&[&str]; 3] = [&[], &["AES128-SHA"], &["ECDHE-RSA-AES128-GCM-SHA256"]];
    let lists13: [&[&str]; 3] = [
        &[],
        &["TLS_AES_128_CCM_SHA256"],
        &["TLS_AES_128_GCM_SHA256"],
    ];
    for versions in [&[TlsVersion::Tls12][..], &[TlsVersion::Tls13], BOTH] {
        for tls12 in lists {
            for tls13 in lists13 {
                if let Ok(eff) = custom(versions, tls12, tls13).effective() {
                    assert!(
                        eff.key.serves_anything(),
                        "{versions:?} {tls12:?} {tls13:?}"
                    );
                    // Suites only of the versions served: equal policies, equal keys.
                    assert!(eff
                        .suites()
                        .iter()
                        .all(|s| eff.key.allows_version(s.version())));
                }
            }
        }
    }
}

#[test]
fn list_lengths_are_bounded_before_any_work() {
    use crate::config::{MAX_SUITES_PER_LIST, MAX_SUITE_NAME, MAX_TLS_VERSIONS};
    let many: Vec<String> = (0..80_000).map(|i| format!("SUITE-{i}")).collect();
    let names: Vec<&str> = many.iter().map(String::as_str).collect();
    let started = std::time::Instant::now();
    let e = custom(&[TlsVersion::Tls12], &names, &[])
        .effective()
        .unwrap_err();
    assert_eq!(e.kind, ValidationErrorKind::InvalidArgument);
    assert!(e.message.contains("at most 200"), "{}", e.message);
    // Linear or better: the quadratic version took seconds for this list.
    assert!(started.elapsed() < std::time::Duration::from_millis(500));

    let at_limit: Vec<&str> = names[..MAX_SUITES_PER_LIST].to_vec();
    let e = custom(&[TlsVersion::Tls12], &at_limit, &[])
        .effective()
        .unwrap_err();
    assert!(
        e.message.contains("not a TLS cipher suite"),
        "{}",
        e.message
    );
    let long = "X".repeat(MAX_SUITE_NAME + 1);
    let e = custom(&[TlsVersion::Tls12], &[&long], &[])
        .effective()
        .unwrap_err();
    assert!(e.message.contains("longer than"), "{}", e.message);
    let mut versions = custom(&[TlsVersion::Tls12], &[], &[]);
    versions.tls.tls_versions = vec![TlsVersion::Tls12; MAX_TLS_VERSIONS + 1];
    assert!(versions.check_bounds().is_err());
    versions.tls.tls_versions.truncate(MAX_TLS_VERSIONS);
    assert!(versions.check_bounds().is_ok());
}

#[test]
fn dedup_is_linear_and_keeps_first_occurrences() {
    let many: Vec<String> = (0..100_000).map(|i| format!("N{}", i % 7)).collect();
    let mut c = custom(
        &[TlsVersion::Tls13, TlsVersion::Tls12, TlsVersion::Tls13],
        &[],
        &[],
    );
    c.cipher_suite.as_mut().unwrap().custom_cipher_suites = many;
    let started = std::time::Instant::now();
    c.dedup();
    assert!(started.elapsed() < std::time::Duration::from_millis(500));
    assert_eq!(c.tls.tls_versions, [TlsVersion::Tls13, TlsVersion::Tls12]);
    let cs = c.cipher_suite.unwrap().custom_cipher_suites;
    assert_eq!(cs, ["N0", "N1", "N2", "N3", "N4", "N5", "N6"]);
}

#[test]
fn what_each_certificate_key_type_serves() {
    use crate::CertKeyType::{Ecdsa, Rsa};
    let rsa_only = custom(&[TlsVersion::Tls12], &["ECDHE-RSA-AES128-GCM-SHA256"], &[])
        .effective()
        .unwrap()
        .key;
    assert!(rsa_only.servable_with(Rsa));
    assert!(!rsa_only.servable_with(Ecdsa));
    assert_eq!(rsa_only.served_with(Rsa), rsa_only);
    // TLS 1.3 as well: an ECDSA edge serves the TLS 1.3 part only, never more.
    let mixed = custom(BOTH, &["ECDHE-RSA-AES128-GCM-SHA256"], &[])
        .effective()
        .unwrap()
        .key;
    let on_ecdsa = mixed.served_with(Ecdsa);
    assert!(on_ecdsa.servable_with(Ecdsa));
    assert!(!on_ecdsa.allows_version(Tls12));
    assert_eq!(on_ecdsa.intersection(mixed), on_ecdsa);
    assert!(PolicyKey::ALL.servable_with(Ecdsa) && PolicyKey::ALL.servable_with(Rsa));
    assert_eq!(CertKeyType::parse("RSA"), Some(Rsa));
    assert_eq!(CertKeyType::parse("rsa"), None);
    // The intersection of a TLS 1.3-only key and a TLS 1.2-only one serves nothing.
    let t13 = custom(&[TlsVersion::Tls13], &[], &[])
        .effective()
        .unwrap()
        .key;
    assert!(!t13.intersection(rsa_only).serves_anything());
}
