//! Per-request enforcement (invariant 1): the request is canonicalised ([`super::canon`]),
//! then the connection it arrived on is checked against its bucket's *current* policy.

use bytes::Bytes;
use http::{header, request::Parts, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tlsfleet_policy::{names::Domains, BucketName, PolicyKey};

pub use super::canon::{Canonical, Refused, Style, Target};
use super::{canon::canonicalize, Body, ConnInfo};
use crate::{metrics::RequestRefusal, table::TableSnapshot};

/// A request the policy allows, in the canonical form it was decided on (and is forwarded in).
#[derive(Clone, Debug)]
pub struct Allowed {
    pub canonical: Canonical,
    /// The table revision the decision was made against.
    pub revision: Option<i64>,
}

impl Allowed {
    /// The bucket, if the request targets one.
    pub fn bucket(&self) -> Option<&BucketName> {
        self.canonical.bucket()
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
    let canonical = canonicalize(
        domains,
        conn.sni.as_deref(),
        &parts.method,
        &parts.uri,
        &parts.headers,
    )?;
    let revision = table.revision();
    if let Some(bucket) = canonical.bucket() {
        check(table.policy_key(bucket.as_str()), conn, bucket)?;
    }
    Ok(Allowed {
        canonical,
        revision,
    })
}

fn check(key: PolicyKey, conn: &ConnInfo, bucket: &BucketName) -> Result<(), Refused> {
    let message = if key == PolicyKey::NONE {
        format!(
            "bucket {bucket} is refused at this edge: its newest policy cannot be served here \
             (the agent reported why to the control plane)"
        )
    } else if !key.allows_version(conn.version) {
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

/// A fresh OSS-style request id: 24 uppercase hex digits.
pub fn request_id() -> String {
    hex::encode_upper(rand::random::<[u8; 12]>())
}

/// An OSS-style XML error response (the same document the control plane's REST API writes).
pub fn error_response(
    status: StatusCode,
    code: &str,
    message: &str,
    bucket: Option<&str>,
    host_id: &str,
) -> Response<Body> {
    let id = request_id();
    let xml = tlsfleet_policy::xml::error_document(code, message, &id, host_id, bucket);
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
