//! The names in a request, canonicalised: endpoint domains, request hosts and paths.
//!
//! The edge decides which bucket a request targets from its host and path, then forwards the
//! request to a storage service that routes it by the same two things. If the two parsers
//! disagree about a request (a doubled slash, a dot segment, an encoded slash, a host with a
//! stray port or dot), the policy is checked for one bucket and another is served. So names
//! are parsed strictly here, anything that is not in one canonical form is refused, and the
//! caller forwards the canonical form it decided on, never the raw one.
//!
//! Pure functions over strings: no I/O, no HTTP types.

use std::{
    fmt,
    net::{Ipv4Addr, Ipv6Addr},
};

use crate::BucketName;

/// The longest DNS name.
const MAX_NAME: usize = 253;
/// The longest DNS label.
const MAX_LABEL: usize = 63;
/// How many times a path segment is percent-decoded to see what a server that decodes
/// again would see (`%252e` is `%2e` once, `.` twice).
const DECODE_ROUNDS: usize = 3;

/// What a (normalised) host or SNI name designates, given the endpoint domains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostKind<'a> {
    /// One of the domains itself: the endpoint (path-style requests).
    Bare,
    /// `<label>.<domain>`: virtual-hosted; `label` is not yet checked to be a bucket name.
    Bucket(&'a str),
    /// Anything else: an IP address or a name outside every domain.
    Other,
}

/// The endpoint domains (`--domain`), normalised, most specific first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Domains(Vec<String>);

impl Domains {
    /// Normalises (lowercase, no leading or trailing dot, no port) and de-duplicates; empty
    /// names are skipped.
    pub fn new<S: AsRef<str>>(domains: impl IntoIterator<Item = S>) -> Self {
        let mut v: Vec<String> = domains
            .into_iter()
            .map(|d| normalize_domain(d.as_ref()))
            .filter(|d| !d.is_empty())
            .collect();
        // Longest first, so `abc.internal.oss.test` is bucket `abc` of `internal.oss.test`
        // rather than the invalid bucket `abc.internal` of `oss.test`.
        v.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        v.dedup();
        Self(v)
    }

    /// The domains, most specific first.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    /// Whether no domain is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Classifies a normalised name (see [`normalize_name`]).
    pub fn classify<'a>(&self, name: &'a str) -> HostKind<'a> {
        if self.0.iter().any(|d| d == name) {
            return HostKind::Bare;
        }
        for domain in &self.0 {
            if let Some(label) = name
                .strip_suffix(domain.as_str())
                .and_then(|prefix| prefix.strip_suffix('.'))
            {
                if !label.is_empty() {
                    return HostKind::Bucket(label);
                }
            }
        }
        HostKind::Other
    }
}

/// Lowercase, without one trailing dot: how SNI names are compared.
pub fn normalize_name(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// A `--domain` value: trimmed, lowercase, no leading or trailing dot, no port.
pub fn normalize_domain(domain: &str) -> String {
    let d = domain.trim().trim_start_matches('.');
    let d = match d.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => d,
    };
    d.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether `name` (normalised) is a DNS name: dot-separated labels of letters, digits and
/// hyphens, none empty, none starting or ending with a hyphen, within the DNS lengths.
pub fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= MAX_LABEL
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Whether a URL host names this machine: a loopback address (IPv6 with or without its
/// brackets) or `localhost`. Plaintext is allowed to such hosts only.
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Why a request host is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostError(pub &'static str);

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for HostError {}

/// A request host (`Host` header, HTTP/2 `:authority`), parsed strictly as `name[:port]`:
/// a DNS name (one trailing dot allowed), a dotted IPv4 address or a bracketed IPv6 address,
/// and an optional decimal port. No user info, no empty labels, no empty port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    name: String,
    port: Option<u16>,
    ip: bool,
}

impl Host {
    /// Parses `s`; see the type's documentation for what is accepted.
    pub fn parse(s: &str) -> Result<Self, HostError> {
        if s.is_empty() {
            return Err(HostError("the host is empty"));
        }
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(HostError(
                "the host contains blanks, control or non-ASCII characters",
            ));
        }
        let (name, port) = if let Some(rest) = s.strip_prefix('[') {
            let (v6, after) = rest
                .split_once(']')
                .ok_or(HostError("an IPv6 host has no closing bracket"))?;
            v6.parse::<Ipv6Addr>()
                .map_err(|_| HostError("the bracketed host is not an IPv6 address"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or(HostError("only a :port may follow an IPv6 host"))?,
                ),
            };
            (format!("[{}]", v6.to_ascii_lowercase()), port)
        } else {
            let (name, port) = match s.split_once(':') {
                Some((n, p)) => (n, Some(p)),
                None => (s, None),
            };
            (name.to_owned(), port)
        };
        let port = port.map(parse_port).transpose()?;
        if name.starts_with('[') {
            return Ok(Self {
                name,
                port,
                ip: true,
            });
        }
        if name.parse::<Ipv4Addr>().is_ok() {
            return Ok(Self {
                name,
                port,
                ip: true,
            });
        }
        let name = name.strip_suffix('.').unwrap_or(&name).to_ascii_lowercase();
        if !is_dns_name(&name) {
            return Err(HostError(
                "the host is not a DNS name, an IPv4 address or a bracketed IPv6 address",
            ));
        }
        if name
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.starts_with(|c: char| c.is_ascii_digit()))
        {
            // No top-level domain starts with a digit; such names (`1.2.3`, `0x7f.0.0.1`,
            // `127.1`) are addresses to inet_aton and names to others.
            return Err(HostError(
                "the host is a numeric name that is no IPv4 address",
            ));
        }
        Ok(Self {
            name,
            port,
            ip: false,
        })
    }

    /// The name: lowercase, no trailing dot (IPv6 with its brackets).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The port, if one was given.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// Whether the host is an IP address.
    pub fn is_ip(&self) -> bool {
        self.ip
    }
}

impl fmt::Display for Host {
    /// `name[:port]`, the canonical form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(p) => write!(f, "{}:{p}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

fn parse_port(p: &str) -> Result<u16, HostError> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HostError("the port is not a decimal number"));
    }
    p.parse::<u16>()
        .map_err(|_| HostError("the port is larger than 65535"))
}

/// Why a request path is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathError(pub &'static str);

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for PathError {}

/// Checks that a raw (still percent-encoded) request path is in the one form every server
/// reads alike: it starts with `/`; no segment is empty (but the last: a trailing slash),
/// `.` or `..`; no segment decodes, once or again, to `.`, `..`, or anything holding `/`,
/// `\` or NUL; every `%` starts a valid escape; no raw `\`.
pub fn check_path(path: &str) -> Result<(), PathError> {
    let rest = path
        .strip_prefix('/')
        .ok_or(PathError("the request target is not an absolute path"))?;
    if path.contains('\\') {
        return Err(PathError("the path contains a backslash"));
    }
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if segment.is_empty() {
            if last {
                break;
            }
            return Err(PathError("the path has an empty segment (//)"));
        }
        check_segment(segment)?;
    }
    Ok(())
}

fn check_segment(raw: &str) -> Result<(), PathError> {
    let mut current = std::borrow::Cow::Borrowed(raw);
    for round in 0..DECODE_ROUNDS {
        if is_dot_like(&current) {
            return Err(PathError(
                "the path has a dot segment (., .., maybe encoded or with ;parameters)",
            ));
        }
        if !current.contains('%') {
            return Ok(());
        }
        let decoded = match percent_decode(&current) {
            Ok(d) => d,
            Err(e) if round == 0 => return Err(e),
            // A literal `%` once decoded (`100%25`): a server decoding again keeps it.
            Err(_) => return Ok(()),
        };
        if decoded.iter().any(|b| matches!(b, b'/' | b'\\' | 0)) {
            return Err(PathError(
                "the path has an encoded slash, backslash or NUL in a segment",
            ));
        }
        current = std::borrow::Cow::Owned(String::from_utf8_lossy(&decoded).into_owned());
    }
    if is_dot_like(&current) {
        return Err(PathError(
            "the path has a dot segment (., .., maybe encoded or with ;parameters)",
        ));
    }
    Ok(())
}

/// A segment some server reads as `.` or `..`: only dots and blanks or control bytes (which
/// Windows servers and Java's `String.trim` drop), also once its `;parameters` are dropped
/// (`..;x`, as Tomcat and Jetty read it).
fn is_dot_like(segment: &str) -> bool {
    let before_params = segment.split(';').next().unwrap_or_default();
    [segment, before_params]
        .into_iter()
        .any(|s| s.contains('.') && s.bytes().all(|b| b == b'.' || b <= b' ' || b == 0x7f))
        || before_params.is_empty() && segment.starts_with(';')
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits is an error.
pub fn percent_decode(s: &str) -> Result<Vec<u8>, PathError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |b: u8| char::from(b).to_digit(16);
            match (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                (Some(h), Some(l)) => {
                    // Two hex digits make at most 0xff.
                    out.push(u8::try_from(h * 16 + l).unwrap_or(u8::MAX));
                    i += 3;
                }
                _ => return Err(PathError("the path has a malformed percent escape")),
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Why the bucket of a path-style request is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathBucketError {
    Path(PathError),
    Bucket(crate::InvalidBucketName),
}

impl fmt::Display for PathBucketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Path(e) => e.fmt(f),
            Self::Bucket(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for PathBucketError {}

/// The bucket of a path-style request (its first segment, percent-decoded) and the rest of
/// the raw path after it (empty, or starting with `/`). `None` for the root path `/`.
/// The path must already pass [`check_path`].
pub fn path_bucket(path: &str) -> Result<Option<(BucketName, &str)>, PathBucketError> {
    let rest = path
        .strip_prefix('/')
        .ok_or(PathBucketError::Path(PathError(
            "the request target is not an absolute path",
        )))?;
    let (segment, after) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if segment.is_empty() {
        return Ok(None);
    }
    let decoded = percent_decode(segment).map_err(PathBucketError::Path)?;
    let name = String::from_utf8(decoded).map_err(|_| {
        PathBucketError::Path(PathError("the bucket name is not UTF-8 once decoded"))
    })?;
    let bucket = name.parse().map_err(PathBucketError::Bucket)?;
    Ok(Some((bucket, after)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_names_most_specific_domain_first() {
        let d = Domains::new(["OSS.test.", "internal.oss.test"]);
        assert_eq!(d.classify("oss.test"), HostKind::Bare);
        assert_eq!(d.classify("internal.oss.test"), HostKind::Bare);
        assert_eq!(d.classify("abc.oss.test"), HostKind::Bucket("abc"));
        assert_eq!(d.classify("abc.internal.oss.test"), HostKind::Bucket("abc"));
        assert_eq!(d.classify("a.b.oss.test"), HostKind::Bucket("a.b"));
        assert_eq!(d.classify("xoss.test"), HostKind::Other);
        assert_eq!(d.classify(".oss.test"), HostKind::Other);
        assert_eq!(d.classify("127.0.0.1"), HostKind::Other);
        assert_eq!(
            Domains::new([".oss-cn-hangzhou.example.com:443"]).as_slice(),
            ["oss-cn-hangzhou.example.com"]
        );
    }

    #[test]
    fn hosts_are_name_and_digits_only() {
        let ok = |s: &str| Host::parse(s).map(|h| h.to_string());
        assert_eq!(ok("Vault.OSS.test"), Ok("vault.oss.test".into()));
        assert_eq!(ok("vault.oss.test.:8443"), Ok("vault.oss.test:8443".into()));
        assert_eq!(ok("127.0.0.1:443"), Ok("127.0.0.1:443".into()));
        assert_eq!(ok("[::1]:443"), Ok("[::1]:443".into()));
        assert_eq!(ok("[::1]"), Ok("[::1]".into()));
        assert!(Host::parse("127.0.0.1").unwrap().is_ip());
        assert!(!Host::parse("localhost").unwrap().is_ip());
        for bad in [
            "",
            "vault.oss.test:x",
            "vault.oss.test:",
            "vault.oss.test..",
            "vault..oss.test",
            ".vault.oss.test",
            "vault.oss.test:99999",
            "vault.oss.test:443:1",
            "user@vault.oss.test",
            "vault.oss.test/x",
            "vault oss",
            "vault.oss.test\t",
            "[::1",
            "[::1]x",
            "[zz]",
            "[::1%eth0]",
            "-a.oss.test",
            "a_b.oss.test",
            "1.2.3",
            "0x7f.0.0.1",
            "vaulté.oss.test",
        ] {
            assert!(Host::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn loopback_hosts() {
        for h in [
            "127.0.0.1",
            "127.9.9.9",
            "[::1]",
            "::1",
            "localhost",
            "LocalHost",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "10.0.0.1",
            "control.internal",
            "[::2]",
            "localhost.evil",
            "",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn paths_must_be_canonical() {
        for good in [
            "/",
            "/vault",
            "/vault/",
            "/vault/o",
            "/vault/a/b/",
            "/vault/file%2Etxt",
            "/vault/%E4%B8%AD",
            "/vault/a%20b",
            "/vault/.hidden",
            "/vault/a.b",
            "/vault/a;b",
            "/vault/100%25",
        ] {
            assert_eq!(check_path(good), Ok(()), "{good:?}");
        }
        for bad in [
            "",
            "*",
            "vault/o",
            "//vault/o",
            "/vault//o",
            "/./vault/o",
            "/nopol/../vault/o",
            "/nopol/%2e%2e/vault/o",
            "/nopol/%2E%2e/vault/o",
            "/nopol/.%2e/vault/o",
            "/nopol/%252e%252e/vault/o",
            "/nopol%2fvault/o",
            "/nopol%2Fvault/o",
            "/nopol/%5c../vault",
            "/nopol\\..\\vault",
            "/vault/a%00b",
            "/vault/%zz",
            "/vault/%4",
            "/vault/%",
            "/vault/%25252e%25252e",
            "/nopol/..;/vault/o",
            "/nopol/..;x=1/vault/o",
            "/nopol/%2e%2e;/vault/o",
            "/nopol/..%3b/vault/o",
            "/nopol/.../vault/o",
            "/nopol/..%20/vault/o",
            "/nopol/;/vault/o",
            "/nopol/..%0b/vault/o",
            "/nopol/..%7f/vault/o",
            "/nopol/%09../vault/o",
        ] {
            assert!(check_path(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn path_buckets_are_decoded_and_validated() {
        assert_eq!(path_bucket("/").unwrap(), None);
        let (b, rest) = path_bucket("/vault/o/p").unwrap().unwrap();
        assert_eq!((b.as_str(), rest), ("vault", "/o/p"));
        let (b, rest) = path_bucket("/ab%63").unwrap().unwrap();
        assert_eq!((b.as_str(), rest), ("abc", ""));
        assert!(matches!(
            path_bucket("/ABC/x"),
            Err(PathBucketError::Bucket(_))
        ));
        assert!(matches!(
            path_bucket("/a/x"),
            Err(PathBucketError::Bucket(_))
        ));
        assert!(path_bucket("*").is_err());
    }
}
