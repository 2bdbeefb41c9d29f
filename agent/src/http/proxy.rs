//! The upstream proxy (`--upstream http://HOST:PORT`): allowed requests are forwarded with
//! their method, path, query, headers and a streaming body, plus headers telling the
//! upstream who the client is and what the connection negotiated.

use std::{sync::Arc, time::Duration};

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
use tlsfleet_net::{ConnLimiter, HoldBody};

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
pub const X_FORWARDED_HOST: &str = "x-forwarded-host";
pub const FORWARDED: &str = "forwarded";

/// Headers that re-route a request in some proxy or storage server: a host, path, URL or
/// method override, or a client address claim. Dropped from every forwarded request.
const REROUTING: [&str; 18] = [
    "forwarded",
    "x-original-url",
    "x-original-uri",
    "x-original-host",
    "x-original-method",
    "x-rewrite-url",
    "x-override-url",
    "x-host",
    "x-http-host-override",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "x-cluster-client-ip",
    "x-proxy-url",
    "front-end-https",
];

/// Header name prefixes dropped likewise (`X-Forwarded-Host`, `-Prefix`, `-Path`, `-Uri`,
/// `-Server`, `-Port`, `-Scheme`…; Envoy's `x-envoy-original-path` and friends).
const REROUTING_PREFIXES: [&str; 2] = ["x-forwarded-", "x-envoy-"];

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

/// How much of the upstream the agent may use, and how long it waits for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpstreamLimits {
    /// Bound on connecting to the upstream.
    pub connect_timeout: Duration,
    /// Bound on the upstream's response head, from sending the request.
    pub response_timeout: Duration,
    /// Requests forwarded at once (a request counts until its response body is sent); more
    /// get `503 SlowDown`.
    pub max_in_flight: usize,
    /// Of those, from one client address.
    pub max_in_flight_per_source: usize,
    /// Idle pooled connections kept to the upstream.
    pub max_idle: usize,
    /// Forward virtual-hosted requests in path style (`Host: <domain>`, `/<bucket>/<key>`),
    /// for an upstream that routes by the path alone.
    pub path_style: bool,
}

impl Default for UpstreamLimits {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(60),
            max_in_flight: 1024,
            max_in_flight_per_source: 256,
            max_idle: 256,
            path_style: false,
        }
    }
}

/// Why a request could not be forwarded (502, or 503/504 for the limits).
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("too many requests to the upstream in flight: {0}")]
    Busy(tlsfleet_net::LimitExceeded),
    #[error("the upstream did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot build the upstream request: {0}")]
    Uri(#[from] http::Error),
    #[error("cannot build the upstream request: {0}")]
    Path(#[from] http::uri::InvalidUri),
    #[error("cannot build the upstream request: {0}")]
    Host(#[from] http::header::InvalidHeaderValue),
    #[error("upstream request failed: {0}")]
    Upstream(#[from] hyper_util::client::legacy::Error),
}

/// A pooled HTTP/1.1 client for one upstream.
pub struct Upstream {
    client: Client<HttpConnector, Incoming>,
    authority: Authority,
    limits: UpstreamLimits,
    in_flight: Arc<ConnLimiter>,
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
    pub fn new(uri: &Uri, limits: UpstreamLimits) -> Result<Self, UpstreamError> {
        let fail = |reason| UpstreamError {
            uri: uri.to_string(),
            reason,
        };
        if uri.scheme() != Some(&Scheme::HTTP) {
            return Err(fail("only http:// upstreams are supported"));
        }
        let authority = uri.authority().cloned().ok_or_else(|| fail("no host"))?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(limits.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(limits.max_idle)
            .build(connector);
        Ok(Self {
            client,
            authority,
            limits,
            in_flight: ConnLimiter::new(limits.max_in_flight, limits.max_in_flight_per_source),
        })
    }

    /// Forwards an allowed request and streams back the upstream's response.
    pub async fn forward(
        &self,
        req: Request<Incoming>,
        conn: &ConnInfo,
        allowed: &Allowed,
    ) -> Result<Response<Body>, ForwardError> {
        let (mut parts, body) = req.into_parts();
        // Forward exactly what was decided: the canonical path (a path-style bucket written as
        // the name that was checked) and the canonical host, whatever the client sent.
        let canonical = &allowed.canonical;
        let (host, path) = if self.limits.path_style {
            canonical.as_path_style()
        } else {
            (canonical.host.to_string(), canonical.path_and_query.clone())
        };
        let path = PathAndQuery::try_from(path)?;
        let uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()?;
        let host = HeaderValue::try_from(host)?;
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers);
        strip_rerouting(&mut parts.headers);
        parts.headers.insert(header::HOST, host.clone());
        // hyper answered any `Expect: 100-continue` towards the client already.
        parts.headers.remove(header::EXPECT);
        set_forwarding_headers(&mut parts.headers, conn, allowed, host);

        let wait = self.limits.response_timeout;
        let permit = self
            .in_flight
            .try_acquire(conn.peer.ip())
            .map_err(ForwardError::Busy)?;
        let response =
            tokio::time::timeout(wait, self.client.request(Request::from_parts(parts, body)))
                .await
                .map_err(|_| ForwardError::Timeout(wait))??;
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(
            parts,
            HoldBody::new(body, permit).boxed(),
        ))
    }
}

/// The answer when the upstream fails (the details go to the log, not the client): 503 when
/// too many requests are in flight, 504 when it did not answer in time, else 502.
pub fn failure_response(e: &ForwardError, allowed: &Allowed, host_id: &str) -> Response<Body> {
    let (status, code, message) = match e {
        ForwardError::Busy(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "SlowDown",
            "too many requests are in flight to the storage upstream; retry later",
        ),
        ForwardError::Timeout(_) => (
            StatusCode::GATEWAY_TIMEOUT,
            "GatewayTimeout",
            "the storage upstream did not answer in time",
        ),
        _ => (
            StatusCode::BAD_GATEWAY,
            "BadGateway",
            "the storage upstream did not answer",
        ),
    };
    error_response(
        status,
        code,
        message,
        allowed.bucket().map(|b| b.as_str()),
        host_id,
    )
}

fn set_forwarding_headers(
    headers: &mut HeaderMap,
    conn: &ConnInfo,
    allowed: &Allowed,
    host: HeaderValue,
) {
    // The agent terminates the client's TLS: it is the first hop, so whatever chain of
    // addresses the client claims is replaced, not extended.
    let peer = conn.peer.ip().to_canonical();
    if let Ok(v) = HeaderValue::from_str(&peer.to_string()) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
    // An upstream that routes by the forwarded host must see the host that was decided on.
    let forwarded_for = match peer {
        std::net::IpAddr::V4(ip) => ip.to_string(),
        std::net::IpAddr::V6(ip) => format!("\"[{ip}]\""),
    };
    if let Ok(text) = host.to_str() {
        if let Ok(v) =
            HeaderValue::from_str(&format!("for={forwarded_for};proto=https;host=\"{text}\""))
        {
            headers.insert(FORWARDED, v);
        }
    }
    headers.insert(X_FORWARDED_HOST, host);
    headers.insert(
        X_TLS_VERSION,
        HeaderValue::from_static(conn.version.as_str()),
    );
    headers.insert(
        X_CIPHER_SUITE,
        HeaderValue::from_static(conn.suite.iana_name()),
    );
    if let Some(v) = allowed
        .bucket()
        .and_then(|b| HeaderValue::from_str(b.as_str()).ok())
    {
        headers.insert(X_BUCKET, v);
    }
}

/// Removes the headers that proxies and storage servers use to re-route a request (another
/// host, path or method than the request line's), so the upstream can only serve what was
/// decided. The ones the agent sets itself (`Forwarded`, `X-Forwarded-*`) are written anew.
fn strip_rerouting(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .keys()
        .filter(|k| {
            // CGI-style servers read `X_Original_URL` as `X-Original-URL` (both become
            // HTTP_X_ORIGINAL_URL): compare with underscores read as dashes. The agent's own
            // `X-Tlsfleet-*` headers are never taken from the client.
            let k = k.as_str().replace('_', "-");
            REROUTING.contains(&k.as_str())
                || REROUTING_PREFIXES.iter().any(|p| k.starts_with(p))
                || k.starts_with("x-tlsfleet-")
                || k == "host"
        })
        .cloned()
        .collect();
    for name in named {
        headers.remove(name);
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
    fn strips_rerouting_headers_in_any_spelling() {
        let mut h = HeaderMap::new();
        for name in [
            "x-original-url",
            "x_original_url",
            "x-forwarded-host",
            "x_forwarded_host",
            "x-forwarded-prefix",
            "forwarded",
            "x-http-method-override",
            "x-envoy-original-path",
            "x-tlsfleet-bucket",
            "x_tlsfleet_bucket",
            "x-kept",
        ] {
            h.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("/vault/o"),
            );
        }
        strip_rerouting(&mut h);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["x-kept"]);
    }

    #[test]
    fn refuses_non_http_upstreams() {
        let l = UpstreamLimits::default();
        assert!(Upstream::new(&Uri::from_static("https://127.0.0.1:1"), l).is_err());
        assert!(Upstream::new(&Uri::from_static("/path"), l).is_err());
    }
}
