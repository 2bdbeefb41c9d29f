//! A hand-rolled OSS V1-signed REST client over plain TCP, for tests that need exact control
//! of the request (the official SDK suites live in tests/sdk/).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use base64::Engine;
use hmac::{Hmac, Mac};

/// A raw HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `<Code>` of an OSS error body.
    pub fn error_code(&self) -> Option<&str> {
        let start = self.body.find("<Code>")? + 6;
        let end = self.body[start..].find("</Code>")? + start;
        Some(&self.body[start..end])
    }
}

/// `Authorization: OSS AK:SIG` for `/<bucket>/?httpsConfig`.
pub fn sign_v1(
    key: (&str, &str),
    verb: &str,
    content_type: &str,
    date: &str,
    bucket: &str,
) -> String {
    let sts = format!("{verb}\n\n{content_type}\n{date}\n/{bucket}/?httpsConfig");
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key.1.as_bytes()).expect("hmac key");
    mac.update(sts.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!("OSS {}:{sig}", key.0)
}

/// A signed PUT or GET of a bucket's httpsConfig (path style).
pub fn oss(
    addr: SocketAddr,
    verb: &str,
    bucket: &str,
    body: &str,
    key: (&str, &str),
) -> std::io::Result<Response> {
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    let ct = if body.is_empty() {
        ""
    } else {
        "application/xml"
    };
    let auth = sign_v1(key, verb, ct, &date, bucket);
    let mut headers = vec![
        ("Date".to_owned(), date),
        ("Authorization".to_owned(), auth),
    ];
    if !ct.is_empty() {
        headers.push(("Content-Type".to_owned(), ct.to_owned()));
    }
    request(
        addr,
        verb,
        &format!("/{bucket}/?httpsConfig"),
        &headers,
        body.as_bytes(),
    )
}

/// One HTTP/1.1 request with `Connection: close`.
pub fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not HTTP: {text:?}")))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Ok(Response {
        status,
        headers,
        body: body.to_owned(),
    })
}
