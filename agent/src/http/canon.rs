//! Canonicalising a request before anything is decided on it (invariant 1).
//!
//! The agent checks a bucket's policy and then hands the request to a storage service that
//! finds the bucket again, by itself, from the host and the path. Every way the two readings
//! can differ is a way around the policy, so a request is first brought to one canonical form
//! (a host that is `name[:digits]`, a path with no empty, dot or encoded-slash segments, the
//! bucket decoded), everything that has no such form is refused, and the proxy forwards the
//! canonical form, not the bytes that came in.

use http::{header, HeaderMap, Method, Uri};
use tlsfleet_policy::{
    names::{check_path, path_bucket, Domains, Host, HostKind, PathBucketError},
    BucketName,
};

use crate::metrics::RequestRefusal;

/// What a request targets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The endpoint itself (bare domain or IP, path `/`): no bucket.
    Endpoint,
    /// A bucket, named by the host (`<bucket>.<domain>`) or by the first path segment.
    Bucket { bucket: BucketName, style: Style },
}

/// How a request names its bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// `Host: <bucket>.<domain>`.
    VirtualHosted,
    /// `Host: <domain>` or an IP address, path `/<bucket>/…`.
    PathStyle,
}

/// A request in the one form the decision is made on and the upstream receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Canonical {
    /// The host, parsed: what the upstream gets as `Host`.
    pub host: Host,
    pub target: Target,
    /// The path and query the upstream gets: the request's, with a path-style bucket segment
    /// written as the decoded name that was checked.
    pub path_and_query: String,
}

impl Canonical {
    /// The same request in path style, for an upstream that should route by the path alone:
    /// a virtual-hosted `Host: <bucket>.<domain>` + `/<key>` becomes `Host: <domain>` +
    /// `/<bucket>/<key>`; other requests are already path style. Returns (host, path).
    pub fn as_path_style(&self) -> (String, String) {
        match &self.target {
            Target::Bucket {
                bucket,
                style: Style::VirtualHosted,
            } => {
                let name = self.host.name();
                let domain = name
                    .strip_prefix(bucket.as_str())
                    .and_then(|d| d.strip_prefix('.'))
                    .unwrap_or(name);
                let host = match self.host.port() {
                    Some(p) => format!("{domain}:{p}"),
                    None => domain.to_owned(),
                };
                (host, format!("/{bucket}{}", self.path_and_query))
            }
            _ => (self.host.to_string(), self.path_and_query.clone()),
        }
    }

    /// The bucket, if the request targets one.
    pub fn bucket(&self) -> Option<&BucketName> {
        match &self.target {
            Target::Endpoint => None,
            Target::Bucket { bucket, .. } => Some(bucket),
        }
    }
}

/// A request answered by the agent with an OSS-style XML error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    pub kind: RequestRefusal,
    pub code: &'static str,
    pub message: String,
    pub bucket: Option<String>,
}

impl Refused {
    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind: RequestRefusal::BadRequest,
            code,
            message: message.into(),
            bucket: None,
        }
    }

    fn misdirected(message: String) -> Self {
        Self {
            kind: RequestRefusal::Misdirected,
            code: "MisdirectedRequest",
            message,
            bucket: None,
        }
    }
}

/// Brings a request to its canonical form, or says why it has none. `sni` is the
/// connection's normalised SNI (`None` when the client sent none).
pub fn canonicalize(
    domains: &Domains,
    sni: Option<&str>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Canonical, Refused> {
    if method == Method::CONNECT {
        return Err(Refused::bad_request(
            "InvalidArgument",
            "CONNECT is not supported",
        ));
    }
    let host = request_host(uri, headers)?;
    if let Some(sni) = sni {
        if sni != host.name() {
            return Err(Refused::misdirected(format!(
                "this connection was opened for {sni}; open a new one for {}",
                host.name()
            )));
        }
    }
    let path = uri.path();
    check_path(path).map_err(|e| Refused::bad_request("InvalidArgument", e.to_string()))?;
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    let path_style = match domains.classify(host.name()) {
        HostKind::Bucket(label) => {
            let bucket = label.parse::<BucketName>().map_err(|e| Refused {
                bucket: Some(e.name.clone()),
                ..Refused::bad_request("InvalidBucketName", e.to_string())
            })?;
            return Ok(Canonical {
                host,
                target: Target::Bucket {
                    bucket,
                    style: Style::VirtualHosted,
                },
                path_and_query: format!("{path}{query}"),
            });
        }
        HostKind::Bare => true,
        HostKind::Other if host.is_ip() => true,
        HostKind::Other => false,
    };
    if !path_style {
        // A name no --domain covers: how the upstream would route it is unknowable.
        return Err(Refused::misdirected(format!(
            "{} is not served here: use {} or <bucket>.{}",
            host.name(),
            domains.as_slice().join(", "),
            domains
                .as_slice()
                .first()
                .map_or("<domain>", String::as_str)
        )));
    }
    match path_bucket(path) {
        Ok(None) => Ok(Canonical {
            host,
            target: Target::Endpoint,
            path_and_query: format!("/{query}"),
        }),
        Ok(Some((bucket, rest))) => Ok(Canonical {
            path_and_query: format!("/{bucket}{rest}{query}"),
            host,
            target: Target::Bucket {
                bucket,
                style: Style::PathStyle,
            },
        }),
        Err(PathBucketError::Bucket(e)) => Err(Refused {
            bucket: Some(e.name.clone()),
            ..Refused::bad_request("InvalidBucketName", e.to_string())
        }),
        Err(PathBucketError::Path(e)) => Err(Refused::bad_request("InvalidBucketName", e.0)),
    }
}

/// The request's host from its target (absolute form, HTTP/2 `:authority`) and its `Host`
/// header: at least one, exactly one `Host` header if any, and the same name in both.
fn request_host(uri: &Uri, headers: &HeaderMap) -> Result<Host, Refused> {
    let bad = |m: String| Refused::bad_request("InvalidArgument", m);
    let mut values = headers.get_all(header::HOST).iter();
    let from_header = match (values.next(), values.next()) {
        (None, _) => None,
        (Some(v), None) => {
            let text = v
                .to_str()
                .map_err(|_| bad("the Host header is not visible ASCII".into()))?;
            Some(Host::parse(text).map_err(|e| bad(format!("invalid Host header: {e}")))?)
        }
        (Some(_), Some(_)) => return Err(bad("more than one Host header".into())),
    };
    let from_target = match uri.authority() {
        None => None,
        Some(a) if a.as_str().contains('@') => {
            return Err(bad("the request target carries user information".into()))
        }
        Some(a) => Some(
            Host::parse(a.as_str()).map_err(|e| bad(format!("invalid request authority: {e}")))?,
        ),
    };
    match (from_target, from_header) {
        (Some(t), Some(h)) if t.name() != h.name() => Err(bad(
            "the Host header does not match the request target".into(),
        )),
        (Some(t), _) => Ok(t),
        (None, Some(h)) => Ok(h),
        (None, None) => Err(bad(
            "the request names no host: send a Host header (HTTP/2: :authority)".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn domains() -> Domains {
        Domains::new(["oss.test"])
    }

    fn canon(sni: Option<&str>, uri: &str, hosts: &[&str]) -> Result<Canonical, Refused> {
        let mut headers = HeaderMap::new();
        for h in hosts {
            headers.append(header::HOST, HeaderValue::from_str(h).unwrap());
        }
        canonicalize(
            &domains(),
            sni,
            &Method::GET,
            &uri.parse().unwrap(),
            &headers,
        )
    }

    fn bucket_of(c: &Canonical) -> Option<&str> {
        c.bucket().map(BucketName::as_str)
    }

    #[test]
    fn virtual_hosted_path_style_and_endpoint() {
        let c = canon(Some("vault.oss.test"), "/o?x=1", &["Vault.oss.test:8443"]).unwrap();
        assert_eq!(bucket_of(&c), Some("vault"));
        assert_eq!(c.host.to_string(), "vault.oss.test:8443");
        assert_eq!(c.path_and_query, "/o?x=1");
        let c = canon(Some("oss.test"), "/ab%63/o", &["oss.test"]).unwrap();
        assert_eq!(bucket_of(&c), Some("abc"));
        assert_eq!(c.path_and_query, "/abc/o");
        let c = canon(None, "/vault", &["127.0.0.1:8443"]).unwrap();
        assert_eq!(bucket_of(&c), Some("vault"));
        let c = canon(None, "/", &["oss.test"]).unwrap();
        assert_eq!(c.target, Target::Endpoint);
        // HTTP/2: the authority alone.
        let c = canon(Some("vault.oss.test"), "https://vault.oss.test/o", &[]).unwrap();
        assert_eq!(bucket_of(&c), Some("vault"));
        // Rewritten in path style on demand.
        let c = canon(Some("vault.oss.test"), "/a/b?x", &["vault.oss.test:8443"]).unwrap();
        assert_eq!(
            c.as_path_style(),
            ("oss.test:8443".to_owned(), "/vault/a/b?x".to_owned())
        );
        let c = canon(None, "/vault/o", &["oss.test"]).unwrap();
        assert_eq!(
            c.as_path_style(),
            ("oss.test".to_owned(), "/vault/o".to_owned())
        );
    }

    #[test]
    fn refuses_what_has_no_canonical_form() {
        use RequestRefusal::*;
        let cases: &[(Option<&str>, &str, &[&str], RequestRefusal)] = &[
            (Some("nopol.oss.test"), "/vault/o", &[], BadRequest),
            (Some("nopol.oss.test"), "/vault/o", &[""], BadRequest),
            (None, "//vault/o", &["oss.test"], BadRequest),
            (None, "/nopol/../vault/o", &["oss.test"], BadRequest),
            (None, "/nopol/%2e%2e/vault/o", &["oss.test"], BadRequest),
            (None, "/o", &["vault.oss.test:x"], BadRequest),
            (None, "/o", &["vault.oss.test.."], BadRequest),
            (
                None,
                "/o",
                &["vault.oss.test", "nopol.oss.test"],
                BadRequest,
            ),
            (
                None,
                "https://vault.oss.test/o",
                &["nopol.oss.test"],
                BadRequest,
            ),
            (None, "https://u@vault.oss.test/o", &[], BadRequest),
            (
                Some("nopol.oss.test"),
                "/o",
                &["vault.oss.test"],
                Misdirected,
            ),
            (None, "/vault/o", &["storage.internal"], Misdirected),
            (None, "/o", &["a.b.oss.test"], BadRequest),
            (None, "/Vault/o", &["oss.test"], BadRequest),
            (None, "*", &["oss.test"], BadRequest),
        ];
        for (sni, uri, hosts, kind) in cases {
            let r = canon(*sni, uri, hosts);
            assert_eq!(
                r.as_ref().map_err(|e| e.kind),
                Err(*kind),
                "{sni:?} {uri} {hosts:?}: {r:?}"
            );
        }
        let connect = canonicalize(
            &domains(),
            None,
            &Method::CONNECT,
            &"vault.oss.test:443".parse().unwrap(),
            &HeaderMap::new(),
        );
        assert!(connect.is_err());
    }
}
