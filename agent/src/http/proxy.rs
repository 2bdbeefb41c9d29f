//! The upstream proxy (`--upstream http://HOST:PORT`): allowed requests are forwarded with
//! their method, path, query, headers and a streaming body, plus headers telling the
//! upstream who the client is and what the connection negotiated.

use std::time::Duration;

use http::{
    header::{self, HeaderName},
    uri::{Authority, PathAndQuery, Scheme},
    HeaderMap, HeaderValue, Request, Response, StatusCode, Uri, Version,
};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioTimer},
};

use super::{
    enforce::{error_response, Allowed},
    Body, ConnInfo,
};

/// Headers the agent sets; whatever a client sent under these names is dropped first, so the
/// upstream can trust them.
pub const X_FORWARDED_FOR: &str = "x-forwarded-for";
pub const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
pub const X_TLS_VERSION: &str = "x-tlsfleet-tls-version";
pub const X_CIPHER_SUITE: &str = "x-tlsfleet-cipher-suite";
pub const X_BUCKET: &str = "x-tlsfleet-bucket";

/// Connection-level headers (RFC 9110 §7.6.1) that a proxy never forwards.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// An upstream URL the proxy cannot use.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unusable upstream {uri}: {reason}")]
pub struct UpstreamError {
    pub uri: String,
    pub reason: &'static str,
}

/// Why a request could not be forwarded (answered 502).
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("cannot build the upstream request: {0}")]
    Uri(#[from] http::Error),
    #[error("upstream request failed: {0}")]
    Upstream(#[from] hyper_util::client::legacy::Error),
}

/// A pooled HTTP/1.1 client for one upstream.
pub struct Upstream {
    client: Client<HttpConnector, Incoming>,
    authority: Authority,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// A client for `http://HOST:PORT` (a path, if any, is ignored: request paths are kept).
    pub fn new(uri: &Uri) -> Result<Self, UpstreamError> {
        let fail = |reason| UpstreamError {
            uri: uri.to_string(),
            reason,
        };
        if uri.scheme() != Some(&Scheme::HTTP) {
            return Err(fail("only http:// upstreams are supported"));
        }
        let authority = uri.authority().cloned().ok_or_else(|| fail("no host"))?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Self { client, authority })
    }

    /// Forwards an allowed request and streams back the upstream's response.
    pub async fn forward(
        &self,
        req: Request<Incoming>,
        conn: &ConnInfo,
        allowed: &Allowed,
    ) -> Result<Response<Body>, ForwardError> {
        let (mut parts, body) = req.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()?;
        // The upstream routes virtual-hosted requests by Host; HTTP/2 carries it in :authority.
        if !parts.headers.contains_key(header::HOST) {
            if let Some(v) = parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            {
                parts.headers.insert(header::HOST, v);
            }
        }
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers);
        // hyper answered any `Expect: 100-continue` towards the client already.
        parts.headers.remove(header::EXPECT);
        set_forwarding_headers(&mut parts.headers, conn, allowed);

        let response = self
            .client
            .request(Request::from_parts(parts, body))
            .await?;
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, body.boxed()))
    }
}

/// The 502 answered when the upstream fails (the details go to the log, not the client).
pub fn bad_gateway(allowed: &Allowed, host_id: &str) -> Response<Body> {
    error_response(
        StatusCode::BAD_GATEWAY,
        "BadGateway",
        "the storage upstream did not answer",
        allowed.bucket.as_ref().map(|b| b.as_str()),
        host_id,
    )
}

fn set_forwarding_headers(headers: &mut HeaderMap, conn: &ConnInfo, allowed: &Allowed) {
    let tlsfleet: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-tlsfleet-"))
        .cloned()
        .collect();
    for name in tlsfleet {
        headers.remove(name);
    }
    // The agent terminates the client's TLS: it is the first hop, so whatever chain of
    // addresses the client claims is replaced, not extended.
    if let Ok(v) = HeaderValue::from_str(&conn.peer.ip().to_canonical().to_string()) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
    headers.insert(
        X_TLS_VERSION,
        HeaderValue::from_static(conn.version.as_str()),
    );
    headers.insert(
        X_CIPHER_SUITE,
        HeaderValue::from_static(conn.suite.iana_name()),
    );
    if let Some(v) = allowed
        .bucket
        .as_ref()
        .and_then(|b| HeaderValue::from_str(b.as_str()).ok())
    {
        headers.insert(X_BUCKET, v);
    }
}

/// Removes the hop-by-hop headers and those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn refuses_non_http_upstreams() {
        assert!(Upstream::new(&Uri::from_static("https://127.0.0.1:1")).is_err());
        assert!(Upstream::new(&Uri::from_static("/path")).is_err());
    }
}
