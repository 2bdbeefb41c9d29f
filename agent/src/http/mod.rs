//! HTTP over an established TLS connection: HTTP/1.1 or HTTP/2 (hyper-util's auto server),
//! every request checked ([`enforce`]) and then proxied ([`proxy`]) or answered by the
//! built-in [`responder`].

pub mod canon;
pub mod enforce;
pub mod proxy;
pub mod responder;

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{combinators::BoxBody, BodyExt};
use hyper::{
    body::Incoming,
    server::conn::{http1, http2},
    service::service_fn,
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tlsfleet_net::{Activity, RequestGuard};
use tlsfleet_policy::{ServedSuite, ServedVersion};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

pub use tlsfleet_policy::names::{Domains, HostKind};

use crate::{metrics::Metrics, table::PolicyTable};

/// The body of every response the agent sends.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// HTTP/2: PING a connection this often (a peer that vanished is noticed)...
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
/// ...and close it when a PING is not answered within this.
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2: requests in flight at once on one connection.
pub const H2_MAX_STREAMS: u32 = 128;
/// The largest request head (HTTP/1.1 buffer, HTTP/2 header list).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// After an idle connection is told to close, how long it gets to do so.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What one TLS connection negotiated; fixed for its lifetime.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The SNI name, normalised; `None` when the client sent none.
    pub sni: Option<String>,
    pub version: ServedVersion,
    pub suite: ServedSuite,
    /// ALPN chose `h2`; otherwise the connection speaks HTTP/1.1.
    pub h2: bool,
}

/// What every request handler shares.
pub struct Context {
    pub table: Arc<PolicyTable>,
    pub domains: Domains,
    pub metrics: Arc<Metrics>,
    pub upstream: Option<proxy::Upstream>,
    /// The control plane's REST API, for `?httpsConfig` requests (`--control-rest`).
    pub api: Option<proxy::Upstream>,
    /// Per-bucket TLS usage.
    pub usage: Arc<crate::usage::UsageRecorder>,
    /// A connection with no request in flight for this long is closed (HTTP/1.1: also the
    /// bound on receiving a request's headers).
    pub idle_timeout: Duration,
    /// A connection whose responses the client has taken nothing of for this long is closed
    /// (it holds upstream slots otherwise).
    pub send_timeout: Duration,
}

impl Context {
    fn host_id<'a>(&'a self, allowed_host: Option<&'a str>) -> &'a str {
        allowed_host
            .or_else(|| self.domains.as_slice().first().map(String::as_str))
            .unwrap_or("tlsfleet-agent")
    }
}

/// Drives one hyper connection until it ends, goes idle, or shutdown: on `shutdown` it stops
/// taking new requests and lets in-flight ones finish; on `force` it is dropped.
macro_rules! drive {
    ($connection:expr, $activity:expr, $ctx:expr, $shutdown:expr, $force:expr) => {{
        let connection = $connection;
        tokio::pin!(connection);
        tokio::select! {
            r = connection.as_mut() => r,
            () = $activity.idle($ctx.idle_timeout) => {
                $ctx.metrics.idle_closed();
                connection.as_mut().graceful_shutdown();
                tokio::time::timeout(IDLE_CLOSE_GRACE, connection.as_mut())
                    .await
                    .unwrap_or(Ok(()))
            }
            () = $activity.stalled($ctx.send_timeout) => {
                // Dropped, not drained: the client takes nothing anyway.
                $ctx.metrics.stall_closed();
                Ok(())
            }
            _ = $shutdown.cancelled() => {
                connection.as_mut().graceful_shutdown();
                tokio::select! {
                    r = connection.as_mut() => r,
                    _ = $force.cancelled() => Ok(()),
                }
            }
        }
    }};
}

/// Serves HTTP on an established connection (HTTP/2 when ALPN chose it, else HTTP/1.1: the
/// protocol is never guessed from the first bytes) until the peer closes it, it has no
/// request in flight for [`Context::idle_timeout`], or shutdown.
pub async fn serve<IO>(
    io: IO,
    ctx: Arc<Context>,
    conn: Arc<ConnInfo>,
    shutdown: CancellationToken,
    force: CancellationToken,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let service = {
        let (ctx, conn, activity) = (ctx.clone(), conn.clone(), activity.clone());
        service_fn(move |req| {
            handle(
                ctx.clone(),
                conn.clone(),
                activity.clone(),
                activity.begin(),
                req,
            )
        })
    };
    let io = TokioIo::new(crate::stream::PeerClosing::new(io));
    let result = if conn.h2 {
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(H2_PING_INTERVAL))
            .keep_alive_timeout(H2_PING_TIMEOUT)
            .max_concurrent_streams(H2_MAX_STREAMS)
            .max_header_list_size(MAX_HEADER_BYTES as u32);
        drive!(
            builder.serve_connection(io, service),
            activity,
            ctx,
            shutdown,
            force
        )
    } else {
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(ctx.idle_timeout)
            .max_buf_size(MAX_HEADER_BYTES);
        drive!(
            builder.serve_connection(io, service),
            activity,
            ctx,
            shutdown,
            force
        )
    };
    if let Err(e) = result {
        if e.is_timeout() {
            // HTTP/1.1: hyper's header deadline (the same idle timeout) closed it first.
            ctx.metrics.idle_closed();
        }
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// A response whose request stays in flight until its body is sent, and whose progress
/// counts against the send timeout.
/// Whether a request is for the bucket's HttpsConfig (`?httpsConfig`, any value).
fn is_bucket_api(path_and_query: &str) -> bool {
    path_and_query.split_once('?').is_some_and(|(_, q)| {
        q.split('&')
            .any(|p| p.split('=').next() == Some("httpsConfig"))
    })
}

fn tracked(
    activity: &Arc<Activity>,
    response: Response<Body>,
    guard: RequestGuard,
) -> Response<Body> {
    response.map(|body| activity.sending(body, guard).boxed())
}

/// One request: decide against the current table, then refuse, proxy or respond.
async fn handle(
    ctx: Arc<Context>,
    conn: Arc<ConnInfo>,
    activity: Arc<Activity>,
    guard: RequestGuard,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    Ok(tracked(&activity, respond(&ctx, &conn, req).await, guard))
}

async fn respond(ctx: &Context, conn: &ConnInfo, req: Request<Incoming>) -> Response<Body> {
    let decision = {
        let table = ctx.table.snapshot();
        let (parts, body) = req.into_parts();
        let decision = enforce::decide(&ctx.domains, &table, conn, &parts);
        (decision, Request::from_parts(parts, body))
    };
    let (allowed, req) = match decision {
        (Ok(allowed), req) => (allowed, req),
        (Err(refused), req) => {
            ctx.metrics.request_refused(refused.kind);
            tracing::debug!(
                peer = %conn.peer,
                sni = conn.sni.as_deref(),
                uri = %req.uri(),
                status = refused.kind.status(),
                message = %refused.message,
                "request refused"
            );
            let host_id = ctx.host_id(conn.sni.as_deref());
            return refused.into_response(host_id);
        }
    };
    ctx.metrics.request_served();
    if let Some(bucket) = allowed.bucket() {
        let ua = req
            .headers()
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok());
        ctx.usage
            .request(bucket.as_str(), conn.suite, conn.peer.ip(), ua);
    }
    // The bucket API (`?httpsConfig`) goes to the control plane, once the bucket's own TLS
    // policy allowed the connection, exactly as decided (canonical host and path).
    let api = ctx
        .api
        .as_ref()
        .filter(|_| is_bucket_api(&allowed.canonical.path_and_query));
    let Some(upstream) = api.or(ctx.upstream.as_ref()) else {
        return responder::respond(conn, &allowed);
    };
    match upstream.forward(req, conn, &allowed).await {
        Ok(response) => response,
        Err(e) => {
            ctx.metrics.upstream_error();
            tracing::warn!(error = %e, bucket = ?allowed.bucket(), "upstream failed");
            proxy::failure_response(
                &e,
                &allowed,
                ctx.host_id(Some(allowed.canonical.host.name())),
            )
        }
    }
}
