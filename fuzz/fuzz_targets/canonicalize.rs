//! The edge's request canonicaliser (host, path, bucket) on arbitrary request targets, Host
//! headers and SNI names. Nothing may panic, and what it accepts is canonical: the host it
//! decided on parses to itself, the path it forwards passes the same checks, and a
//! path-style request forwards the bucket it checked as its first segment.
#![no_main]

use http::{header, HeaderMap, HeaderValue, Method, Uri};
use libfuzzer_sys::fuzz_target;
use tlsfleet_agent::http::canon::{canonicalize, Style, Target};
use tlsfleet_policy::names::{check_path, normalize_name, Domains, Host};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|b| *b == 0xff);
    let uri = parts.next().unwrap_or_default();
    let sni = parts.next().map(|s| normalize_name(&String::from_utf8_lossy(s)));
    let mut headers = HeaderMap::new();
    for h in parts.take(3) {
        if let Ok(v) = HeaderValue::from_bytes(h) {
            headers.append(header::HOST, v);
        }
    }
    let Ok(uri) = Uri::try_from(uri) else {
        return;
    };
    let domains = Domains::new(["oss.test", "internal.oss.test"]);
    let sni = sni.filter(|s| !s.is_empty());
    let Ok(c) = canonicalize(&domains, sni.as_deref(), &Method::GET, &uri, &headers) else {
        return;
    };
    let host = c.host.to_string();
    assert_eq!(Host::parse(&host).as_ref(), Ok(&c.host), "host {host:?}");
    if let Some(sni) = &sni {
        assert_eq!(c.host.name(), sni);
    }
    let path = c.path_and_query.split('?').next().unwrap_or_default();
    assert_eq!(check_path(path), Ok(()), "forwarded path {path:?}");
    if let Target::Bucket {
        bucket,
        style: Style::PathStyle,
    } = &c.target
    {
        let first = path.trim_start_matches('/').split('/').next().unwrap_or_default();
        assert_eq!(first, bucket.as_str());
    }
});
