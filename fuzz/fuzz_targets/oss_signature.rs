//! The OSS REST front: routing (path, query, Host) and the V1/V4 `Authorization` parsers and
//! canonicalisation, on arbitrary requests. Nothing may panic; a request signed with a key
//! the fuzzer does not know never authenticates.
#![no_main]

use std::sync::OnceLock;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;
use tlsfleet_control::{
    auth::{Authenticator, Credentials, OssRequest},
    rest::{route, Route},
};
use tlsfleet_policy::names::Domains;

fn auth() -> &'static Authenticator {
    static AUTH: OnceLock<Authenticator> = OnceLock::new();
    AUTH.get_or_init(|| {
        Authenticator::new(
            Credentials::parse(
                "[[key]]\nid='AK'\nsecret='sk'\nallow=['oss:*']\nbuckets=['*']\n",
            )
            .expect("credentials"),
        )
    })
}

fuzz_target!(|data: &[u8]| {
    // Fields separated by 0xff: method, path, query, host, then header name/value pairs.
    let mut parts = data.split(|b| *b == 0xff);
    let text = |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
    let method = match parts.next().and_then(|m| m.first()) {
        Some(b) if b % 3 == 0 => Method::GET,
        Some(b) if b % 3 == 1 => Method::PUT,
        _ => Method::DELETE,
    };
    let (path, query, host) = (text(parts.next()), text(parts.next()), text(parts.next()));
    let mut headers = HeaderMap::new();
    while let (Some(name), Some(value)) = (parts.next(), parts.next()) {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }
    let domains = Domains::new(["oss.test", "internal.oss.test"]);
    let Ok(route) = route(&method, &path, Some(&query), Some(&host), &domains) else {
        return;
    };
    let (Route::Get(target) | Route::Put(target)) = route else {
        return;
    };
    let request = OssRequest {
        method: &method,
        headers: &headers,
        host: Some(&host),
        bucket: target.bucket.as_str(),
        key: "",
        query: &target.query,
    };
    if let Ok(ok) = auth().oss(&request) {
        // Only a correct signature with the one secret gets here: check the replay guard.
        let _ = auth().check_put_replay(&ok, data);
    }
});
