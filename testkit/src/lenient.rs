//! A storage upstream that routes requests as leniently as real S3/OSS-style servers and the
//! proxies in front of them do, for the hostile-input suite: if the agent forwarded anything
//! other than what it decided on, this server serves another bucket and the test sees it.
//!
//! How it finds the bucket, each step the most permissive that some real server takes:
//! * the target: `X-Original-URL` or `X-Rewrite-URL` when sent (IIS, Symfony), else the
//!   request target (an absolute-form target's host counts as a host);
//! * the host: `X-Forwarded-Host`, else `Forwarded: host=`, else `Host`, else its own address
//!   (what an HTTP client fills in when a proxy sends no `Host`);
//! * the host normalised: port (anything after the last `:`) and trailing dots stripped,
//!   lowercased; `<anything>.<label>.<domain>` is bucket `<label>`;
//! * the path: percent-decoded twice, `\` read as `/`, `;params` and trailing blanks dropped
//!   from segments, slashes merged, dot segments resolved;
//! * a host under the domain names the bucket (virtual-hosted), otherwise the first path
//!   segment does (path style).
//!
//! Every request is logged; the response is `200` with `{"bucket":…,"key":…}`.

use std::{
    io,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

use crate::background::Background;

/// One request as the lenient server saw and routed it.
#[derive(Clone, Debug)]
pub struct Served {
    /// The bucket it served, if any.
    pub bucket: Option<String>,
    pub key: String,
    /// The request line's target, as received.
    pub target: String,
    /// Every header, names lowercased with `_` read as `-`, as received.
    pub headers: Vec<(String, String)>,
}

impl Served {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The running server; it stops when dropped.
pub struct Lenient {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<Served>>>,
    _server: Background,
}

impl Lenient {
    /// Starts on a free loopback port, routing `<bucket>.<domain>` virtual-hosted.
    pub fn start(domain: &str) -> Self {
        let domain = domain.to_ascii_lowercase();
        let log = Arc::new(Mutex::new(Vec::new()));
        let server = Background::serve({
            let log = log.clone();
            move |tcp, own| {
                let (log, domain) = (log.clone(), domain.clone());
                async move {
                    let _ = serve(tcp, own, &domain, &log).await;
                }
            }
        });
        Self {
            addr: server.addr,
            log,
            _server: server,
        }
    }

    /// `http://127.0.0.1:PORT`, for `--upstream`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything served since the last [`Lenient::take`].
    pub fn take(&self) -> Vec<Served> {
        std::mem::take(&mut *self.log.lock().expect("log"))
    }
}

async fn serve(
    tcp: TcpStream,
    own: SocketAddr,
    domain: &str,
    log: &Mutex<Vec<Served>>,
) -> io::Result<()> {
    let (read, mut write) = tcp.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let line = line.trim_end().to_owned();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (_method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).await? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                // As CGI does: `X_Original_URL` and `X-Original-URL` are one header.
                let name = k.trim().to_ascii_lowercase().replace('_', "-");
                headers.push((name, v.trim().to_owned()));
            }
        }
        read_body(&mut reader, &headers).await?;
        let served = route(target, &headers, own, domain);
        let body = serde_json::json!({"bucket": served.bucket, "key": served.key}).to_string();
        log.lock().expect("log").push(served);
        write
            .write_all(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .await?;
    }
}

async fn read_body(
    reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    headers: &[(String, String)],
) -> io::Result<()> {
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).await?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
        }
    }
    if let Some(n) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        let mut body = vec![0; n];
        reader.read_exact(&mut body).await?;
    }
    Ok(())
}

fn route(target: &str, headers: &[(String, String)], own: SocketAddr, domain: &str) -> Served {
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut path = get("x-original-url")
        .or_else(|| get("x-rewrite-url"))
        .unwrap_or_else(|| target.to_owned());
    let mut target_host = None;
    for scheme in ["http://", "https://"] {
        if let Some(rest) = path.strip_prefix(scheme) {
            let (h, p) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            target_host = Some(h.to_owned());
            path = if p.is_empty() { "/".into() } else { p.into() };
        }
    }
    let forwarded_host = get("forwarded").and_then(|f| {
        f.split([';', ','])
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| k.eq_ignore_ascii_case("host"))
            .map(|(_, v)| v.trim_matches('"').to_owned())
    });
    let host = get("x-forwarded-host")
        .map(|h| h.split(',').next().unwrap_or("").trim().to_owned())
        .or(forwarded_host)
        .or(target_host)
        .or_else(|| get("host"))
        .unwrap_or_else(|| own.to_string());
    let host = match host.rsplit_once(':') {
        Some((h, _)) if !h.contains(':') => h.to_owned(),
        _ => host,
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();

    let decoded = decode(&decode(path.split(['?', '#']).next().unwrap_or(""))).replace('\\', "/");
    let mut segments: Vec<String> = Vec::new();
    for seg in decoded.split('/') {
        // Tomcat and Jetty drop `;params`; Windows servers trim trailing blanks.
        let seg = seg
            .split(';')
            .next()
            .unwrap_or("")
            .trim_end_matches([' ', '\t']);
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s.to_owned()),
        }
    }
    let virtual_bucket = host
        .strip_suffix(&format!(".{domain}"))
        .map(|prefix| prefix.rsplit('.').next().unwrap_or(prefix).to_owned())
        .filter(|b| !b.is_empty());
    let (bucket, key) = match virtual_bucket {
        Some(b) => (Some(b), segments.join("/")),
        None if segments.is_empty() => (None, String::new()),
        None => (Some(segments[0].clone()), segments[1..].join("/")),
    };
    Served {
        bucket,
        key,
        target: target.to_owned(),
        headers: headers.to_vec(),
    }
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| char::from(c).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(target: &str, headers: &[(&str, &str)]) -> Option<String> {
        let h: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        route(target, &h, "127.0.0.1:1".parse().unwrap(), "oss.test").bucket
    }

    #[test]
    fn routes_as_leniently_as_it_says() {
        assert_eq!(
            bucket("//vault/o", &[("host", "oss.test")]).as_deref(),
            Some("vault")
        );
        assert_eq!(bucket("/nopol/../vault/o", &[]).as_deref(), Some("vault"));
        assert_eq!(
            bucket("/nopol/%252e%252e/vault/o", &[]).as_deref(),
            Some("vault")
        );
        assert_eq!(bucket("/nopol%2fvault/o", &[]).as_deref(), Some("nopol"));
        assert_eq!(bucket("/x/..%5cvault/o", &[]).as_deref(), Some("vault"));
        assert_eq!(bucket("/vault;x/o", &[]).as_deref(), Some("vault"));
        assert_eq!(bucket("/nopol/..;/vault/o", &[]).as_deref(), Some("vault"));
        assert_eq!(
            bucket("/nopol/..%20/vault/o", &[]).as_deref(),
            Some("vault")
        );
        assert_eq!(
            bucket("/o", &[("host", "vault.oss.test:x")]).as_deref(),
            Some("vault")
        );
        assert_eq!(
            bucket("/o", &[("host", "vault.oss.test..")]).as_deref(),
            Some("vault")
        );
        assert_eq!(
            bucket("/o", &[("host", "x.vault.oss.test")]).as_deref(),
            Some("vault")
        );
        assert_eq!(
            bucket(
                "/o",
                &[
                    ("host", "nopol.oss.test"),
                    ("x-forwarded-host", "vault.oss.test")
                ]
            )
            .as_deref(),
            Some("vault")
        );
        assert_eq!(
            bucket(
                "/o",
                &[
                    ("host", "nopol.oss.test"),
                    ("forwarded", "for=1;host=\"vault.oss.test\"")
                ]
            )
            .as_deref(),
            Some("vault")
        );
        assert_eq!(
            bucket(
                "/nopol/o",
                &[("host", "oss.test"), ("x-original-url", "/vault/o")]
            )
            .as_deref(),
            Some("vault")
        );
    }
}
