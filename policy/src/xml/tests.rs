//! Unit tests of [`super`].

#![allow(clippy::unwrap_used)] // a test may panic: that is how it fails

use super::*;

fn err(body: &str) -> String {
    match parse(body.as_bytes()) {
        Ok(c) => panic!("{body:?} parsed as {c:?}"),
        Err(XmlError(msg)) => msg,
    }
}

fn doc(inner: &str) -> String {
    format!("<HttpsConfiguration>{inner}</HttpsConfiguration>")
}

const TLS_OFF: &str = "<TLS><Enable>false</Enable></TLS>";

#[test]
fn parses_versions_in_order_without_duplicates() {
    let c = parse(
        doc("<TLS><Enable>true</Enable><TLSVersion>TLSv1.3</TLSVersion>\
             <TLSVersion>TLSv1.0</TLSVersion><TLSVersion>TLSv1.3</TLSVersion></TLS>")
        .as_bytes(),
    )
    .unwrap();
    assert!(c.tls.enable);
    assert_eq!(c.tls.tls_versions, [TlsVersion::Tls13, TlsVersion::Tls10]);
    assert_eq!(c.cipher_suite, None);
}

#[test]
fn disabling_drops_versions_as_oss_does() {
    let c =
        parse(doc("<TLS><Enable>false</Enable><TLSVersion>TLSv1.2</TLSVersion></TLS>").as_bytes())
            .unwrap();
    assert_eq!(c, HttpsConfig::disabled());
}

#[test]
fn parses_cipher_suites_trimmed_deduplicated_and_unescaped() {
    let body = doc(
        "<TLS><Enable>true</Enable><TLSVersion> TLSv1.2\n</TLSVersion></TLS>\
         <CipherSuite>\n  <Enable> true </Enable><StrongCipherSuite>false</StrongCipherSuite>\
         <CustomCipherSuite>\tAES128-SHA </CustomCipherSuite>\
         <CustomCipherSuite><![CDATA[AES128-SHA]]></CustomCipherSuite>\
         <CustomCipherSuite>ECDHE&#x2D;RSA&#45;AES128-GCM-SHA256</CustomCipherSuite>\
         <TLS13CustomCipherSuite>A&amp;B&lt;</TLS13CustomCipherSuite>\
         <!-- a comment --></CipherSuite>",
    );
    let c = parse(body.as_bytes()).unwrap();
    assert_eq!(c.tls.tls_versions, [TlsVersion::Tls12]);
    let cs = c.cipher_suite.unwrap();
    assert_eq!(
        (cs.enable, cs.strong_cipher_suite),
        (Some(true), Some(false))
    );
    assert_eq!(
        cs.custom_cipher_suites,
        ["AES128-SHA", "ECDHE-RSA-AES128-GCM-SHA256"]
    );
    assert_eq!(cs.tls13_custom_cipher_suites, ["A&B<"]);
}

#[test]
fn optional_cipher_fields_stay_absent() {
    let c = parse(doc(&format!("{TLS_OFF}<CipherSuite/>")).as_bytes()).unwrap();
    assert_eq!(c.cipher_suite, Some(CipherSuiteConfig::default()));
}

#[test]
fn tolerates_declaration_namespace_bom_and_unknown_elements() {
    let body = "\u{feff}<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
        <HttpsConfiguration xmlns=\"http://doc.oss-cn-hangzhou.aliyuncs.com\">\
        <Future a=\"1\"><Deeper>text<Deepest/></Deeper></Future>\
        <TLS><Enable>true</Enable><Hint>x</Hint><TLSVersion>TLSv1.3</TLSVersion></TLS>\
        <CipherSuite><Mode>new</Mode></CipherSuite></HttpsConfiguration>\n<?pi x?>";
    let c = parse(body.as_bytes()).unwrap();
    assert_eq!(c.tls.tls_versions, [TlsVersion::Tls13]);
    assert_eq!(c.cipher_suite, Some(CipherSuiteConfig::default()));
}

#[test]
fn rejects_what_is_not_xml() {
    for body in [
        "<HttpsConfiguration><TLS><Enable>true</Enable></TLS>",
        "<HttpsConfiguration><TLS></HttpsConfiguration>",
        "<HttpsConfiguration a=1><TLS><Enable>false</Enable></TLS></HttpsConfiguration>",
        "<HttpsConfiguration>&bogus;</HttpsConfiguration>",
        "not xml",
    ] {
        assert!(!err(body).is_empty(), "{body}");
    }
    assert!(parse(&[0xff, 0xfe, b'<'])
        .unwrap_err()
        .0
        .contains("not UTF-8"));
    assert!(err(&format!("<!DOCTYPE x []>{}", doc(TLS_OFF))).contains("document type"));
    assert!(err(&format!("{}<?xml version=\"1.0\"?>", doc(TLS_OFF))).contains("declaration"));
}

#[test]
fn rejects_empty_bodies() {
    for body in ["", "  \n\t"] {
        assert!(err(body).starts_with("the body is empty"), "{body:?}");
    }
}

#[test]
fn rejects_a_wrong_root_or_a_second_root() {
    assert_eq!(
        err("<BucketTlsVersion><TLS><Enable>false</Enable></TLS></BucketTlsVersion>"),
        "the root element is <\"BucketTlsVersion\">, expected <HttpsConfiguration>"
    );
    assert!(err(&format!("{}{}", doc(TLS_OFF), doc(TLS_OFF))).contains("after the root"));
    assert!(err(&format!("{}junk", doc(TLS_OFF))).contains("outside the root"));
    assert!(err("<!-- only a comment -->").contains("no <HttpsConfiguration>"));
}

#[test]
fn rejects_missing_required_elements() {
    assert_eq!(err(&doc("")), "<HttpsConfiguration> has no <TLS>");
    assert_eq!(
        err(&doc("<TLS><TLSVersion>TLSv1.2</TLSVersion></TLS>")),
        "<TLS> has no <Enable>"
    );
    // <Enable> directly under the root is not TLS management.
    assert_eq!(
        err(&doc("<Enable>true</Enable>")),
        "<HttpsConfiguration> has no <TLS>"
    );
}

#[test]
fn rejects_non_booleans() {
    for bad in ["True", "TRUE", "1", "yes", ""] {
        let msg = err(&doc(&format!("<TLS><Enable>{bad}</Enable></TLS>")));
        assert_eq!(
            msg,
            format!("<Enable> in <TLS> must be true or false, not {bad:?}")
        );
        let msg = err(&doc(&format!(
            "{TLS_OFF}<CipherSuite><StrongCipherSuite>{bad}</StrongCipherSuite></CipherSuite>"
        )));
        assert!(
            msg.starts_with("<StrongCipherSuite> in <CipherSuite> must be"),
            "{msg}"
        );
    }
    let msg = err(&doc(&format!(
        "{TLS_OFF}<CipherSuite><Enable/></CipherSuite>"
    )));
    assert!(
        msg.starts_with("<Enable> in <CipherSuite> must be true or false"),
        "{msg}"
    );
}

#[test]
fn rejects_unknown_versions() {
    for bad in ["TLSv1.4", "tlsv1.2", "TLS1.2", "SSLv3", ""] {
        let msg = err(&doc(&format!(
            "<TLS><Enable>true</Enable><TLSVersion>{bad}</TLSVersion></TLS>"
        )));
        assert!(
            msg.starts_with(&format!("<TLSVersion>: unknown TLS version {bad:?}")),
            "{msg}"
        );
    }
}

#[test]
fn rejects_duplicate_single_elements() {
    let cases = [
        (
            format!("{TLS_OFF}{TLS_OFF}"),
            "<HttpsConfiguration> has more than one <TLS>",
        ),
        (
            "<TLS><Enable>true</Enable><Enable>true</Enable></TLS>".to_string(),
            "<TLS> has more than one <Enable>",
        ),
        (
            format!("{TLS_OFF}<CipherSuite/><CipherSuite/>"),
            "<HttpsConfiguration> has more than one <CipherSuite>",
        ),
        (
            format!(
                "{TLS_OFF}<CipherSuite><Enable>true</Enable><Enable>true</Enable></CipherSuite>"
            ),
            "<CipherSuite> has more than one <Enable>",
        ),
        (
            format!(
                "{TLS_OFF}<CipherSuite><StrongCipherSuite>true</StrongCipherSuite>\
                 <StrongCipherSuite>true</StrongCipherSuite></CipherSuite>"
            ),
            "<CipherSuite> has more than one <StrongCipherSuite>",
        ),
    ];
    for (inner, expected) in cases {
        assert_eq!(err(&doc(&inner)), expected);
    }
}

#[test]
fn rejects_text_and_elements_in_wrong_places() {
    assert_eq!(
        err(&doc(&format!("x{TLS_OFF}"))),
        "unexpected text \"x\" in <HttpsConfiguration>"
    );
    assert_eq!(
        err(&doc("<TLS>on<Enable>true</Enable></TLS>")),
        "unexpected text \"on\" in <TLS>"
    );
    assert_eq!(
        err(&doc(&format!("{TLS_OFF}<CipherSuite>&amp;</CipherSuite>"))),
        "unexpected text \"&\" in <CipherSuite>"
    );
    assert_eq!(
        err(&doc("<TLS><Enable><B>true</B></Enable></TLS>")),
        "<Enable> holds text only, found the element <\"B\"> in it"
    );
    assert!(err(&format!("text{}", doc(TLS_OFF))).contains("outside the root"));
}

#[test]
fn bounds_nesting_even_in_unknown_elements() {
    let nested = |depth: usize| {
        let inner = "<X>".repeat(depth) + &"</X>".repeat(depth);
        doc(&format!("{TLS_OFF}{inner}"))
    };
    // The root is level 1.
    assert!(parse(nested(MAX_DEPTH - 1).as_bytes()).is_ok());
    assert_eq!(
        err(&nested(MAX_DEPTH)),
        format!("elements are nested deeper than {MAX_DEPTH} levels")
    );
    assert!(err(&"<X>".repeat(100_000)).contains("root element"));
    assert!(err(&format!("<HttpsConfiguration>{}", "<X>".repeat(100_000))).contains("deeper"));
}

#[test]
fn messages_quote_peer_text_boundedly() {
    let msg = err(&doc(&format!(
        "<TLS><Enable>{}</Enable></TLS>",
        "y".repeat(5000)
    )));
    assert!(msg.len() < 200 && msg.ends_with('…'), "{msg}");
}

#[test]
fn prints_the_default_for_a_disabled_config() {
    let expected = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
        <HttpsConfiguration><TLS><Enable>false</Enable></TLS></HttpsConfiguration>";
    assert_eq!(print(&HttpsConfig::disabled()), expected);
    // Stale versions of a disabled config are not echoed.
    let mut stale = HttpsConfig::disabled();
    stale.tls.tls_versions = vec![TlsVersion::Tls12];
    assert_eq!(print(&stale), expected);
}

#[test]
fn prints_every_field_escaped() {
    let config = HttpsConfig {
        tls: TlsConfig {
            enable: true,
            tls_versions: vec![TlsVersion::Tls12, TlsVersion::Tls13],
        },
        cipher_suite: Some(CipherSuiteConfig {
            enable: Some(true),
            strong_cipher_suite: None,
            custom_cipher_suites: vec!["ECDHE-RSA-AES128-GCM-SHA256".into(), "a<&>b".into()],
            tls13_custom_cipher_suites: vec!["TLS_AES_256_GCM_SHA384".into()],
        }),
    };
    let printed = print(&config);
    assert_eq!(
        printed,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<HttpsConfiguration><TLS>\
         <Enable>true</Enable><TLSVersion>TLSv1.2</TLSVersion><TLSVersion>TLSv1.3</TLSVersion>\
         </TLS><CipherSuite><Enable>true</Enable>\
         <CustomCipherSuite>ECDHE-RSA-AES128-GCM-SHA256</CustomCipherSuite>\
         <CustomCipherSuite>a&lt;&amp;&gt;b</CustomCipherSuite>\
         <TLS13CustomCipherSuite>TLS_AES_256_GCM_SHA384</TLS13CustomCipherSuite>\
         </CipherSuite></HttpsConfiguration>"
    );
    assert_eq!(parse(printed.as_bytes()), Ok(config));
}

#[test]
fn list_lengths_and_text_are_bounded_while_parsing() {
    let suites: String = (0..201)
        .map(|i| format!("<CustomCipherSuite>S{i}</CustomCipherSuite>"))
        .collect();
    let body = doc(&format!(
        "<TLS><Enable>true</Enable><TLSVersion>TLSv1.2</TLSVersion></TLS>\
         <CipherSuite><Enable>true</Enable>{suites}</CipherSuite>"
    ));
    assert!(err(&body).contains("more than 200"), "{}", err(&body));
    let versions = "<TLSVersion>TLSv1.2</TLSVersion>".repeat(17);
    let body = doc(&format!("<TLS><Enable>true</Enable>{versions}</TLS>"));
    assert!(err(&body).contains("more than 16"), "{}", err(&body));
    let body = doc(&format!(
        "<TLS><Enable>true</Enable><TLSVersion>{}</TLSVersion></TLS>",
        " ".repeat(9000)
    ));
    assert!(
        err(&body).contains("more than 8192 bytes"),
        "{}",
        err(&body)
    );
}

#[test]
fn escapes_xml() {
    // Moved from the agent, whose error documents are now this one.
    let doc = error_document("a<b>&\"'", "m\u{1}", "ID", "host", None);
    assert!(
        doc.contains("<Code>a&lt;b&gt;&amp;&quot;&apos;</Code>"),
        "{doc}"
    );
    assert!(doc.contains("<Message>m\u{FFFD}</Message>"), "{doc}");
    assert!(!doc.contains("BucketName"), "{doc}");
}
