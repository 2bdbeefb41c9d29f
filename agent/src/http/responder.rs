//! The built-in responder (no `--upstream`): a small JSON document per allowed request, so
//! a deployment without storage behind it still shows what was negotiated and enforced.

use bytes::Bytes;
use http::{header, HeaderValue, Response};
use http_body_util::{BodyExt, Full};

use super::{enforce::Allowed, Body, ConnInfo};

/// `200 application/json`: bucket, TLS version, cipher suite (IANA name), policy revision, SNI.
pub fn respond(conn: &ConnInfo, allowed: &Allowed) -> Response<Body> {
    let doc = serde_json::json!({
        "bucket": allowed.bucket().map(|b| b.as_str()),
        "tls_version": conn.version.as_str(),
        "cipher_suite": conn.suite.iana_name(),
        "revision": allowed.revision,
        "sni": conn.sni,
    });
    let mut body = doc.to_string();
    body.push('\n');
    let mut response = Response::new(Full::new(Bytes::from(body)).map_err(|n| match n {}).boxed());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
