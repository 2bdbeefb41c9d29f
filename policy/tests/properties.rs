//! Property tests of the codec, the name table and validation.

#![allow(clippy::unwrap_used)] // a test may panic: that is how it fails

use std::sync::Arc;

use proptest::prelude::*;
use tlsfleet_policy::{
    suites, tls, xml, CipherSuiteConfig, HttpsConfig, SuiteProtocol, TlsConfig, TlsVersion,
};

/// A real table name in either spelling, in original, upper or lower case.
fn suite_name() -> impl Strategy<Value = String> {
    (prop::sample::select(suites::all()), any::<bool>(), 0..3u8).prop_map(|(row, iana, case)| {
        let name = if iana { row.iana } else { row.openssl };
        match case {
            0 => name.to_owned(),
            1 => name.to_ascii_uppercase(),
            _ => name.to_ascii_lowercase(),
        }
    })
}

fn names() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(suite_name(), 0..6)
}

/// Names of one protocol, half of them suites rustls serves: lists `effective()` mostly accepts.
fn names_of(protocol: SuiteProtocol) -> impl Strategy<Value = Vec<String>> {
    let rows = |served: bool| -> Vec<&'static str> {
        suites::all()
            .iter()
            .filter(|row| row.protocol == protocol && row.served.is_some() == served)
            .map(|row| row.openssl)
            .collect()
    };
    let name = prop_oneof![
        prop::sample::select(rows(true)),
        prop::sample::select(rows(false))
    ];
    prop::collection::vec(name.prop_map(str::to_owned), 0..4)
}

/// Any config in stored form: versions only when enabled, at least one then, no duplicates.
fn stored_config() -> impl Strategy<Value = HttpsConfig> {
    config_with(names(), names())
}

/// Stored configs whose lists hold suites of the right protocol.
fn policy_config() -> impl Strategy<Value = HttpsConfig> {
    config_with(
        names_of(SuiteProtocol::Tls12),
        names_of(SuiteProtocol::Tls13),
    )
}

fn config_with(
    tls12: impl Strategy<Value = Vec<String>>,
    tls13: impl Strategy<Value = Vec<String>>,
) -> impl Strategy<Value = HttpsConfig> {
    let versions = prop::sample::subsequence(TlsVersion::ALL.to_vec(), 1..=4).prop_shuffle();
    let tls = prop_oneof![
        Just(TlsConfig::default()),
        versions.prop_map(|tls_versions| TlsConfig {
            enable: true,
            tls_versions
        }),
    ];
    let cipher_suite = prop::option::of(
        (any::<Option<bool>>(), any::<Option<bool>>(), tls12, tls13).prop_map(
            |(enable, strong_cipher_suite, custom_cipher_suites, tls13_custom_cipher_suites)| {
                CipherSuiteConfig {
                    enable,
                    strong_cipher_suite,
                    custom_cipher_suites,
                    tls13_custom_cipher_suites,
                }
            },
        ),
    );
    (tls, cipher_suite).prop_map(|(tls, cipher_suite)| {
        let mut config = HttpsConfig { tls, cipher_suite };
        config.dedup();
        config
    })
}

/// Tags, text and references that make up plausible and broken documents.
fn fragment() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "<HttpsConfiguration>",
        "</HttpsConfiguration>",
        "<HttpsConfiguration xmlns=\"x\">",
        "<TLS>",
        "</TLS>",
        "<Enable>",
        "</Enable>",
        "<TLSVersion>",
        "</TLSVersion>",
        "<CipherSuite>",
        "</CipherSuite>",
        "<CustomCipherSuite>",
        "</CustomCipherSuite>",
        "<StrongCipherSuite>",
        "</StrongCipherSuite>",
        "<X>",
        "</X>",
        "<Y/>",
        "<TLS/>",
        "true",
        "false",
        "TLSv1.2",
        "TLSv1.0",
        "AES128-SHA",
        " ",
        "\n",
        "&amp;",
        "&#65;",
        "&#xD800;",
        "&x;",
        "&",
        "<![CDATA[",
        "]]>",
        "<!--",
        "-->",
        "<?xml version=\"1.0\"?>",
        "<?pi?>",
        "<!DOCTYPE a>",
        "<",
        ">",
        "\"",
        "a=\"1\"",
        "\u{feff}",
        "\u{0}",
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn print_then_parse_is_identity(config in stored_config()) {
        let printed = xml::print(&config);
        prop_assert_eq!(xml::parse(printed.as_bytes()), Ok(config.clone()));
        prop_assert_eq!(xml::print(&xml::parse(printed.as_bytes()).unwrap()), printed);
    }

    #[test]
    fn every_table_name_resolves_to_its_row_in_any_case(
        row in prop::sample::select(suites::all()),
        iana in any::<bool>(),
        flips in prop::collection::vec(any::<bool>(), 64),
    ) {
        let name = if iana { row.iana } else { row.openssl };
        let mixed: String = name
            .chars()
            .zip(flips.iter().cycle())
            .map(|(c, &up)| if up { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() })
            .collect();
        prop_assert_eq!(suites::lookup(&mixed), Some(&row));
    }

    #[test]
    fn parse_never_panics_on_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = xml::parse(&body);
    }

    #[test]
    fn parse_never_panics_on_fragments(parts in prop::collection::vec(fragment(), 0..64)) {
        let body = parts.concat();
        if let Ok(config) = xml::parse(body.as_bytes()) {
            // Whatever it accepts prints back to something it accepts the same way.
            prop_assert_eq!(xml::parse(xml::print(&config).as_bytes()), Ok(config));
        }
    }

    #[test]
    fn parse_never_panics_on_nesting(
        names in prop::collection::vec(
            prop::sample::select(vec!["HttpsConfiguration", "TLS", "Enable", "CipherSuite", "X"]),
            0..300,
        ),
        close in any::<bool>(),
    ) {
        let mut body: String = names.iter().map(|n| format!("<{n}>")).collect();
        if close {
            body.extend(names.iter().rev().map(|n| format!("</{n}>")));
        }
        let result = xml::parse(body.as_bytes());
        if names.len() > xml::MAX_DEPTH {
            prop_assert!(result.is_err());
        }
    }

    #[test]
    fn valid_policies_always_build_a_server_config(config in policy_config()) {
        if let Ok(effective) = config.effective() {
            prop_assert!(effective.key.serves_anything());
            let provider = tls::narrowed_provider(
                effective.key,
                &tlsfleet_policy::tls::provider(),
            );
            let built = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
                .with_protocol_versions(&tls::protocol_versions(effective.key));
            prop_assert!(built.is_ok(), "{:?}", effective.key);
        }
    }

    #[test]
    fn effective_decides_any_stored_config_without_panicking(config in stored_config()) {
        // Table names in any case, in either list: Ok or a typed error, with a message.
        match config.effective() {
            Ok(effective) => prop_assert!(effective.key.serves_anything()),
            Err(e) => prop_assert!(!e.message.is_empty()),
        }
    }
}

#[test]
fn every_table_name_resolves_in_upper_and_lower_case() {
    for row in suites::all() {
        for name in [row.openssl, row.iana] {
            for spelled in [
                name.to_owned(),
                name.to_ascii_uppercase(),
                name.to_ascii_lowercase(),
            ] {
                assert_eq!(suites::lookup(&spelled), Some(row), "{spelled}");
            }
        }
    }
}
