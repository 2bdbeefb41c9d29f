//! HTTP over an established TLS connection: HTTP/1.1 or HTTP/2 (hyper-util's auto server),
//! every request checked ([`enforce`]) and then proxied ([`proxy`]) or answered by the
//! built-in [`responder`].

pub mod enforce;
pub mod host;
pub mod proxy;
pub mod responder;

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tlsfleet_policy::{ServedSuite, ServedVersion};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

pub use host::{Domains, HostKind};

use crate::{metrics::Metrics, table::PolicyTable};

/// The body of every response the agent sends.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// What one TLS connection negotiated; fixed for its lifetime.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The SNI name, normalised; `None` when the client sent none.
    pub sni: Option<String>,
    pub version: ServedVersion,
    pub suite: ServedSuite,
}

/// What every request handler shares.
pub struct Context {
    pub table: Arc<PolicyTable>,
    pub domains: Domains,
    pub metrics: Arc<Metrics>,
    pub upstream: Option<proxy::Upstream>,
}

impl Context {
    fn host_id<'a>(&'a self, allowed_host: Option<&'a str>) -> &'a str {
        allowed_host
            .or_else(|| self.domains.as_slice().first().map(String::as_str))
            .unwrap_or("tlsfleet-agent")
    }
}

/// Serves HTTP on an established connection until the peer closes it; on `shutdown` stops
/// taking new requests and lets in-flight ones finish; on `force` drops the connection.
pub async fn serve<IO>(
    io: IO,
    ctx: Arc<Context>,
    conn: Arc<ConnInfo>,
    shutdown: CancellationToken,
    force: CancellationToken,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let service = service_fn(move |req| handle(ctx.clone(), conn.clone(), req));
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        r = connection.as_mut() => r,
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            tokio::select! {
                r = connection.as_mut() => r,
                _ = force.cancelled() => Ok(()),
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// One request: decide against the current table, then refuse, proxy or respond.
async fn handle(
    ctx: Arc<Context>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let decision = {
        let table = ctx.table.snapshot();
        let (parts, body) = req.into_parts();
        let decision = enforce::decide(&ctx.domains, &table, &conn, &parts);
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
            return Ok(refused.into_response(host_id));
        }
    };
    ctx.metrics.request_served();
    let Some(upstream) = &ctx.upstream else {
        return Ok(responder::respond(&conn, &allowed));
    };
    match upstream.forward(req, &conn, &allowed).await {
        Ok(response) => Ok(response),
        Err(e) => {
            ctx.metrics.upstream_error();
            tracing::warn!(error = %e, bucket = ?allowed.bucket, "answering 502");
            Ok(proxy::bad_gateway(
                &allowed,
                ctx.host_id(allowed.host.as_deref()),
            ))
        }
    }
}
