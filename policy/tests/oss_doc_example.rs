//! The example body of docs/oss-https-config-api.md, byte for byte.

#![allow(clippy::unwrap_used)] // a test may panic: that is how it fails

use tlsfleet_policy::{
    xml, CipherSuiteConfig, HttpsConfig, ServedSuite, ServedVersion, TlsConfig, TlsVersion,
};

const DOC_EXAMPLE: &str = r#"<HttpsConfiguration>
  <TLS>
    <Enable>true</Enable>
    <TLSVersion>TLSv1.2</TLSVersion>
    <TLSVersion>TLSv1.3</TLSVersion>
  </TLS>
  <CipherSuite>
    <Enable>true</Enable>
    <StrongCipherSuite>false</StrongCipherSuite>
    <CustomCipherSuite>ECDHE-RSA-AES128-GCM-SHA256</CustomCipherSuite>
    <TLS13CustomCipherSuite>TLS_AES_256_GCM_SHA384</TLS13CustomCipherSuite>
  </CipherSuite>
</HttpsConfiguration>
"#;

fn expected() -> HttpsConfig {
    HttpsConfig {
        tls: TlsConfig {
            enable: true,
            tls_versions: vec![TlsVersion::Tls12, TlsVersion::Tls13],
        },
        cipher_suite: Some(CipherSuiteConfig {
            enable: Some(true),
            strong_cipher_suite: Some(false),
            custom_cipher_suites: vec!["ECDHE-RSA-AES128-GCM-SHA256".into()],
            tls13_custom_cipher_suites: vec!["TLS_AES_256_GCM_SHA384".into()],
        }),
    }
}

#[test]
fn the_doc_example_parses_exactly() {
    assert_eq!(xml::parse(DOC_EXAMPLE.as_bytes()), Ok(expected()));
}

#[test]
fn the_doc_example_serves_exactly_its_two_suites() {
    let effective = expected().effective().unwrap();
    assert_eq!(
        effective.versions(),
        [ServedVersion::Tls12, ServedVersion::Tls13]
    );
    assert_eq!(
        effective.suites(),
        [
            ServedSuite::Tls13Aes256GcmSha384,
            ServedSuite::EcdheRsaAes128GcmSha256
        ]
    );
    assert!(effective.dropped.is_empty());
}

#[test]
fn the_doc_example_echoes_as_sent() {
    let printed = xml::print(&expected());
    assert!(printed.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<HttpsConfiguration>"));
    assert!(!printed.contains("xmlns"));
    // Same document once whitespace between elements is ignored.
    let compact: String = DOC_EXAMPLE.lines().map(str::trim).collect();
    assert!(printed.ends_with(&compact), "{printed}");
}

#[test]
fn the_python_sdk_empty_put_is_malformed() {
    // alibabacloud-oss-v2 PUTs an empty body when given no configuration object.
    assert!(xml::parse(b"").is_err());
}
