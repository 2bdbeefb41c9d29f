//! The OSS-compatible REST endpoint: `PutBucketHttpsConfig` and `GetBucketHttpsConfig`
//! exactly as `docs/oss-https-config-api.md` specifies, plus `/-/healthz` and `/-/readyz`.
//!
//! Order of checks, cheapest and least revealing first: route (bucket name, sub-resource,
//! method; request line and `Host` only), signature and grant (headers only), then the body
//! (size, `Content-MD5`, XML, policy). A body is never read before its sender is known to be
//! allowed to send it.
//!
//! tlsfleet decisions not in the OSS contract:
//! * a request without `?httpsConfig`, with any other query parameter (`?acl`, presigned
//!   URL parameters…) or naming an object is `400 InvalidArgument` naming what is not served;
//! * a malformed `Authorization` is `403 AccessDenied` with a message saying what is wrong;
//! * every response carries `x-oss-request-id`; a PUT's and a GET's also carry
//!   `x-tlsfleet-revision` (the store revision written at, or the index revision read from).

use std::sync::Arc;

use axum::{
    body::Body,
    extract::{Request, State},
    response::Response,
    Router,
};
use base64::Engine as _;
use bytes::Bytes;
use http::{header, request::Parts, HeaderValue, StatusCode};
use md5::{Digest as _, Md5};
use sha2::Sha256;
use tlsfleet_policy::{names::Domains, xml, HttpsConfig};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    audit::{Change, Via},
    auth::{Action, Authenticator, OssAuth, OssRequest},
    service::Policies,
};

mod body;
mod conn;
mod error;
mod route;
#[cfg(test)]
mod tests;

pub use body::MAX_BODY;
pub use conn::{tls_acceptor, RestLimits};
pub use error::{request_id, OssError};
pub use route::{route, Route, RouteError, Target};

/// Our extension header: the revision a PUT was written at / a GET was read from.
const REVISION_HEADER: &str = "x-tlsfleet-revision";
const REQUEST_ID_HEADER: &str = "x-oss-request-id";

/// What the REST endpoint serves from.
#[derive(Clone)]
pub struct RestState {
    pub policies: Policies,
    pub auth: Arc<Authenticator>,
    /// Endpoint domains for virtual-hosted requests (`<bucket>.<domain>`).
    pub domains: Vec<String>,
    /// Connection caps and timeouts.
    pub limits: RestLimits,
    /// TLS on the listener (`--http-tls-cert`), else plain HTTP.
    pub tls: Option<TlsAcceptor>,
    /// Refuse a PUT whose body the signature does not cover (`--require-signed-body`): V1
    /// needs `Content-MD5`; V4 `Content-MD5` or a hex `x-oss-content-sha256`.
    pub require_signed_body: bool,
    /// `--rest-downgrades`.
    pub downgrades: RestDowngrades,
    /// `--request-log`.
    pub request_log: crate::request_log::RequestLog,
}

struct Shared {
    policies: Policies,
    auth: Arc<Authenticator>,
    domains: Domains,
    require_signed_body: bool,
    downgrades: RestDowngrades,
    request_log: crate::request_log::RequestLog,
}

/// The request id of a request (also its `x-oss-request-id`).
#[derive(Clone, Debug)]
struct RequestId(String);

/// The peer address of a request's connection (inserted by the accept loop).
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub std::net::SocketAddr);

/// Whether a REST PUT may downgrade a bucket (`--rest-downgrades`): the OSS API has no field
/// to ask for it, so the server decides for every REST caller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum RestDowngrades {
    /// Downgrades through REST are applied (and audited as downgrades).
    Allow,
    /// Downgrades through REST are refused with `403 AccessDenied` (the default).
    #[default]
    Refuse,
}

/// Serves the REST API on `listener` until `shutdown` is cancelled; then lets in-flight
/// requests finish (for at most a few seconds) and returns.
pub async fn serve(
    listener: TcpListener,
    state: RestState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let shared = Arc::new(Shared {
        policies: state.policies,
        auth: state.auth,
        domains: Domains::new(&state.domains),
        require_signed_body: state.require_signed_body,
        downgrades: state.downgrades,
        request_log: state.request_log,
    });
    let app = Router::new().fallback(handle).with_state(shared);
    conn::serve(listener, app, state.limits, state.tls, shutdown).await
}

/// The result of one request, for the response and the log line.
struct Outcome {
    result: Result<Response, OssError>,
    bucket: Option<String>,
    key_id: Option<String>,
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let started = tokio::time::Instant::now();
    let request_id = request_id();
    let (mut parts, body) = req.into_parts();
    parts.extensions.insert(RequestId(request_id.clone()));
    let framing = body::Framing::of(&parts.headers);
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .map(str::to_owned);
    let mut body = Some(body);
    let Outcome {
        result,
        bucket,
        key_id,
    } = dispatch(&shared, &parts, host.as_deref(), &mut body, framing).await;

    let (mut response, error) = match result {
        Ok(r) => (r, None),
        Err(e) => {
            let host_id = host_id(host.as_deref(), &shared.domains);
            let summary = (e.status, e.code, e.message.clone());
            (
                e.into_response(&request_id, &host_id, bucket.as_deref()),
                Some(summary),
            )
        }
    };
    // A body nobody read: consume it (bounded) so that the client, still sending, reads our
    // answer instead of a reset; if that is not possible, close after answering.
    if let Some(rest) = body.take() {
        if !body::drain(rest, framing).await {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, v);
    }

    let status = response.status();
    let took = started.elapsed();
    crate::metrics::rest_request(parts.method.as_str(), status.as_u16(), took);
    let read = matches!(parts.method, http::Method::GET | http::Method::HEAD);
    if shared.request_log.wants(read, status.is_success()) {
        let who = (key_id.as_deref(), bucket.as_deref());
        log_request(&parts, who, &request_id, status, error, took);
    }
    response
}

/// The request's one log line (target `tlsfleet::request`, as every gRPC call's): its id (the
/// `x-oss-request-id` answered), key, peer, method, bucket, status and duration; for an error
/// its OSS code and message.
fn log_request(
    parts: &Parts,
    (key, bucket): (Option<&str>, Option<&str>),
    request_id: &str,
    status: http::StatusCode,
    error: Option<(http::StatusCode, &'static str, String)>,
    took: std::time::Duration,
) {
    let path: String = parts.uri.path().chars().take(120).collect();
    let duration_ms = took.as_secs_f64() * 1000.0;
    let key = key.unwrap_or("-");
    let bucket = bucket.unwrap_or("-");
    let peer = parts
        .extensions
        .get::<Peer>()
        .map_or_else(|| "-".to_owned(), |p| p.0.to_string());
    let method = parts.method.as_str();
    let status = status.as_u16();
    let (code, message) = error.map_or(("", String::new()), |(_, c, m)| (c, m));
    if status >= 500 {
        warn!(target: "tlsfleet::request", via = "rest", request_id, key, peer, method, bucket,
            path, status, code, message, duration_ms, "request");
    } else {
        info!(target: "tlsfleet::request", via = "rest", request_id, key, peer, method, bucket,
            path, status, code, message, duration_ms, "request");
    }
}

async fn dispatch(
    shared: &Shared,
    parts: &Parts,
    host: Option<&str>,
    body: &mut Option<Body>,
    framing: body::Framing,
) -> Outcome {
    let routed = route::route(
        &parts.method,
        parts.uri.path(),
        parts.uri.query(),
        host,
        &shared.domains,
    );
    let route = match routed {
        Ok(r) => r,
        Err(e) => {
            return Outcome {
                result: Err(e.error),
                bucket: e.bucket,
                key_id: None,
            }
        }
    };
    let (target, put) = match route {
        Route::Healthz => return plain(StatusCode::OK, "ok\n"),
        Route::Readyz => {
            let (ready, body) = crate::status::readiness(&shared.policies);
            let code = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            return plain(code, body);
        }
        Route::Metrics => {
            return plain(StatusCode::OK, crate::status::metrics(&shared.policies));
        }
        Route::Put(t) => (t, true),
        Route::Get(t) => (t, false),
    };
    let bucket = Some(target.bucket.to_string());
    let request = OssRequest {
        method: &parts.method,
        headers: &parts.headers,
        host,
        bucket: target.bucket.as_str(),
        key: "",
        query: &target.query,
    };
    let auth = match shared.auth.oss(&request) {
        Ok(a) => a,
        Err(e) => {
            return Outcome {
                result: Err(e.into()),
                bucket,
                key_id: None,
            }
        }
    };
    let key_id = Some(auth.principal.key.id.clone());
    let result = if put {
        put_config(shared, parts, &target, &auth, body, framing).await
    } else {
        get_config(shared, &target, &auth).await
    };
    Outcome {
        result,
        bucket,
        key_id,
    }
}

fn plain(status: StatusCode, text: impl Into<Body>) -> Outcome {
    let mut r = Response::new(text.into());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Outcome {
        result: Ok(r),
        bucket: None,
        key_id: None,
    }
}

async fn put_config(
    shared: &Shared,
    parts: &Parts,
    target: &Target,
    auth: &OssAuth,
    body: &mut Option<Body>,
    framing: body::Framing,
) -> Result<Response, OssError> {
    auth.principal
        .authorize(Action::PutBucketHttpsConfig, Some(target.bucket.as_str()))?;
    if shared.require_signed_body
        && !parts.headers.contains_key("content-md5")
        && auth.content_sha256.is_none()
    {
        return Err(OssError::bad_request(
            "MissingContentMD5",
            "this server accepts only PUTs whose body the signature covers: send Content-MD5 \
             (V1 and V4) or a hex x-oss-content-sha256 (V4)",
        ));
    }
    let bytes = body::read_limited(body.take().unwrap_or_default(), framing).await?;
    check_digests(&parts.headers, auth, &bytes)?;
    shared.auth.check_put_replay(auth, &bytes)?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(OssError::bad_request(
            "MalformedXML",
            "the request body is empty: expected an <HttpsConfiguration> document",
        ));
    }
    let config = xml::parse(&bytes).map_err(|e| OssError::bad_request("MalformedXML", e.0))?;
    let change = Change {
        actor: auth.principal.key.id.clone(),
        peer: parts.extensions.get::<Peer>().map(|p| p.0),
        request_id: parts
            .extensions
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default(),
        via: Via::Rest,
        allow_downgrade: shared.downgrades == RestDowngrades::Allow,
    };
    let outcome = shared.policies.put(&target.bucket, config, &change).await?;
    let mut response = Response::new(Body::empty());
    response
        .headers_mut()
        .insert(REVISION_HEADER, HeaderValue::from(outcome.revision));
    Ok(response)
}

async fn get_config(
    shared: &Shared,
    target: &Target,
    auth: &OssAuth,
) -> Result<Response, OssError> {
    auth.principal
        .authorize(Action::GetBucketHttpsConfig, Some(target.bucket.as_str()))?;
    let (entry, revision) = shared.policies.get(&target.bucket).await?;
    let document = match entry {
        Some(e) => xml::print(&e.policy.config),
        None => xml::print(&HttpsConfig::disabled()),
    };
    let mut response = Response::new(Body::from(document));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    headers.insert(REVISION_HEADER, HeaderValue::from(revision));
    Ok(response)
}

/// `Content-MD5` (optional; when sent it must match) and a V4 signer's
/// `x-oss-content-sha256` (when it is a hash rather than `UNSIGNED-PAYLOAD`).
fn check_digests(headers: &http::HeaderMap, auth: &OssAuth, body: &Bytes) -> Result<(), OssError> {
    if let Some(v) = headers.get("content-md5") {
        let claimed = v
            .to_str()
            .ok()
            .and_then(|s| {
                base64::engine::general_purpose::STANDARD
                    .decode(s.trim())
                    .ok()
            })
            .filter(|d| d.len() == 16)
            .ok_or_else(|| {
                OssError::bad_request("InvalidDigest", "Content-MD5 is not a base64 MD5 digest")
            })?;
        if claimed[..] != Md5::digest(body)[..] {
            return Err(OssError::bad_request(
                "InvalidDigest",
                "the Content-MD5 you specified did not match what was received",
            ));
        }
    }
    if let Some(expected) = auth.content_sha256 {
        if expected[..] != Sha256::digest(body)[..] {
            return Err(OssError::bad_request(
                "InvalidDigest",
                "x-oss-content-sha256 does not match the SHA-256 of the body received",
            ));
        }
    }
    Ok(())
}

/// `HostId` of error documents: the host the request was sent to when it looks like a host
/// name, else our first endpoint domain.
fn host_id(host: Option<&str>, domains: &Domains) -> String {
    let valid = |h: &str| {
        !h.is_empty()
            && h.len() <= 253
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'))
    };
    match host.map(route::host_name) {
        Some(h) if valid(&h) => h,
        _ => domains
            .as_slice()
            .first()
            .cloned()
            .unwrap_or_else(|| "tlsfleet".to_owned()),
    }
}
