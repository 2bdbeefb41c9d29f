//! Per-request enforcement (invariant 1): which bucket a request targets, and whether the
//! connection it arrived on satisfies that bucket's *current* policy.

use bytes::Bytes;
use http::{header, request::Parts, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use percent_encoding::percent_decode_str;
use tlsfleet_policy::{BucketName, PolicyKey};

use super::{
    host::{host_of_authority, Domains, HostKind},
    Body, ConnInfo,
};
use crate::{metrics::RequestRefusal, table::TableSnapshot};

/// A request the policy allows.
#[derive(Clone, Debug)]
pub struct Allowed {
    /// `None`: the request targets the endpoint itself (bare domain, path `/`).
    pub bucket: Option<BucketName>,
    /// The request's host, normalised (the SNI when the request named none).
    pub host: Option<String>,
    /// The table revision the decision was made against.
    pub revision: Option<i64>,
}

/// A request answered by the agent with an OSS-style XML error.
#[derive(Clone, Debug)]
pub struct Refused {
    pub kind: RequestRefusal,
    pub code: &'static str,
    pub message: String,
    pub bucket: Option<String>,
}

impl Refused {
    fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind: RequestRefusal::BadRequest,
            code,
            message: message.into(),
            bucket: None,
        }
    }
}

/// Decides a request against the published table `table` (loaded for this request, so a
/// policy changed while the connection was open applies to its next request).
pub fn decide(
    domains: &Domains,
    table: &TableSnapshot,
    conn: &ConnInfo,
    parts: &Parts,
) -> Result<Allowed, Refused> {
    let host = request_host(parts)?.or_else(|| conn.sni.clone());
    if let (Some(sni), Some(host)) = (&conn.sni, &host) {
        if sni != host {
            return Err(Refused {
                kind: RequestRefusal::Misdirected,
                code: "MisdirectedRequest",
                message: format!("this connection was opened for {sni}; open a new one for {host}"),
                bucket: None,
            });
        }
    }
    let bucket = match host.as_deref().map(|h| domains.classify(h)) {
        Some(HostKind::Bucket(label)) => Some(
            label
                .parse::<BucketName>()
                .map_err(|e| Refused::bad_request("InvalidBucketName", format!("{e}")))?,
        ),
        Some(HostKind::Bare | HostKind::Other) | None => path_bucket(parts.uri.path())?,
    };
    let revision = table.revision();
    let Some(bucket) = bucket else {
        return Ok(Allowed {
            bucket: None,
            host,
            revision,
        });
    };
    let key = table.policy_key(bucket.as_str());
    check(key, conn, &bucket)?;
    Ok(Allowed {
        bucket: Some(bucket),
        host,
        revision,
    })
}

fn check(key: PolicyKey, conn: &ConnInfo, bucket: &BucketName) -> Result<(), Refused> {
    let message = if !key.allows_version(conn.version) {
        let allowed: Vec<_> = key.versions().iter().map(|v| v.as_str()).collect();
        format!(
            "{} is not allowed for bucket {bucket}; allowed: {}",
            conn.version.as_str(),
            allowed.join(", ")
        )
    } else if !key.allows_suite(conn.suite) {
        let allowed: Vec<_> = key
            .suites()
            .into_iter()
            .filter(|s| s.version() == conn.version)
            .map(|s| s.iana_name())
            .collect();
        format!(
            "cipher suite {} is not allowed for bucket {bucket} over {}; allowed: {}",
            conn.suite.iana_name(),
            conn.version.as_str(),
            allowed.join(", ")
        )
    } else {
        return Ok(());
    };
    Err(Refused {
        kind: RequestRefusal::Forbidden,
        code: "AccessDenied",
        message,
        bucket: Some(bucket.to_string()),
    })
}

/// The request's host from its target (absolute form, HTTP/2 `:authority`) and its `Host`
/// header, which must agree when both are present.
fn request_host(parts: &Parts) -> Result<Option<String>, Refused> {
    let mut headers = parts.headers.get_all(header::HOST).iter();
    let from_header = match (headers.next(), headers.next()) {
        (None, _) => None,
        (Some(v), None) => Some(host_of_authority(v.to_str().map_err(|_| {
            Refused::bad_request("InvalidArgument", "the Host header is not valid text")
        })?)),
        (Some(_), Some(_)) => {
            return Err(Refused::bad_request(
                "InvalidArgument",
                "more than one Host header",
            ))
        }
    };
    let from_target = parts.uri.authority().map(|a| host_of_authority(a.as_str()));
    match (from_target, from_header) {
        (Some(t), Some(h)) if t != h => Err(Refused::bad_request(
            "InvalidArgument",
            "the Host header does not match the request target",
        )),
        (Some(t), _) => Ok(Some(t)),
        (None, h) => Ok(h.filter(|h| !h.is_empty())),
    }
}

/// The bucket of a path-style request: the first path segment, percent-decoded (the storage
/// behind the agent decodes it too, so an encoded name must not slip past the check).
fn path_bucket(path: &str) -> Result<Option<BucketName>, Refused> {
    let Some(rest) = path.strip_prefix('/') else {
        return Ok(None);
    };
    let segment = rest.split('/').next().unwrap_or_default();
    if segment.is_empty() {
        return Ok(None);
    }
    let decoded = percent_decode_str(segment).decode_utf8().map_err(|_| {
        Refused::bad_request("InvalidBucketName", "the bucket name is not valid UTF-8")
    })?;
    decoded
        .parse::<BucketName>()
        .map(Some)
        .map_err(|e| Refused::bad_request("InvalidBucketName", e.to_string()))
}

/// A fresh OSS-style request id: 24 uppercase hex digits.
pub fn request_id() -> String {
    hex::encode_upper(rand::random::<[u8; 12]>())
}

/// An OSS-style XML error response.
pub fn error_response(
    status: StatusCode,
    code: &str,
    message: &str,
    bucket: Option<&str>,
    host_id: &str,
) -> Response<Body> {
    let id = request_id();
    let mut xml = String::with_capacity(256);
    xml.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>\n");
    for (tag, value) in [
        ("Code", Some(code)),
        ("Message", Some(message)),
        ("RequestId", Some(id.as_str())),
        ("HostId", Some(host_id)),
        ("BucketName", bucket),
    ] {
        if let Some(value) = value {
            xml.push_str(&format!("  <{tag}>{}</{tag}>\n", escape(value)));
        }
    }
    xml.push_str("</Error>\n");
    let mut response = Response::new(Full::new(Bytes::from(xml)).map_err(|n| match n {}).boxed());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    if let Ok(v) = HeaderValue::from_str(&id) {
        headers.insert("x-oss-request-id", v);
    }
    response
}

impl Refused {
    /// The XML error for this refusal.
    pub fn into_response(self, host_id: &str) -> Response<Body> {
        let status = match self.kind {
            RequestRefusal::BadRequest => StatusCode::BAD_REQUEST,
            RequestRefusal::Forbidden => StatusCode::FORBIDDEN,
            RequestRefusal::Misdirected => StatusCode::MISDIRECTED_REQUEST,
        };
        error_response(
            status,
            self.code,
            &self.message,
            self.bucket.as_deref(),
            host_id,
        )
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_bucket_decodes_and_validates() {
        assert_eq!(path_bucket("/").unwrap(), None);
        assert_eq!(path_bucket("*").unwrap(), None);
        assert_eq!(path_bucket("/abc/key").unwrap().unwrap().as_str(), "abc");
        assert_eq!(path_bucket("/ab%63").unwrap().unwrap().as_str(), "abc");
        assert!(path_bucket("/ABC/x").is_err());
        assert!(path_bucket("/a/x").is_err());
    }

    #[test]
    fn escapes_xml() {
        assert_eq!(escape("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&apos;");
    }
}
