//! The TLS listener: reads the ClientHello, picks the bucket's `ServerConfig` by SNI from the
//! published table (no lock), completes the handshake and hands the connection to HTTP.
//!
//! SNI routing, for each `--domain D`:
//! * no SNI, or SNI `D`: the endpoint config (TLS 1.2 + 1.3, every suite);
//! * SNI `<bucket>.D` with a policy: that policy's config;
//! * SNI `<bucket>.D` for a valid bucket name without a policy: the endpoint config (a bucket
//!   that never had a policy accepts everything, as in OSS);
//! * anything else: the TCP connection is dropped before any TLS is spoken.
//!
//! Until the table is ready every connection is dropped that way (fail closed).

use std::{sync::Arc, time::Duration};

use rustls::{server::Acceptor, ServerConfig};
use tlsfleet_net::{ConnLimiter, LimitExceeded};
use tlsfleet_policy::{names::normalize_name, tls, BucketName};
use tokio::{
    io::AsyncReadExt,
    net::{TcpListener, TcpStream},
};
use tokio_rustls::{server::TlsStream, LazyConfigAcceptor};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

use tlsfleet_policy::usage::Offered;

use crate::{
    http::{self, ConnInfo, Context, Domains, HostKind},
    metrics::{HandshakeFailure, Refusal},
    stream::Rewound,
    table::{Lookup, TableSnapshot},
    usage,
};

/// Backoff after a failed `accept` (e.g. out of file descriptors), so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// ClientHello bytes read first, for the offered version (a hello is usually well under this).
const HELLO_BYTES: usize = 2048;

/// The config a ClientHello's SNI selects, or why the connection is refused.
pub fn select_config(
    table: &TableSnapshot,
    domains: &Domains,
    sni: Option<&str>,
) -> Result<Arc<ServerConfig>, Refusal> {
    if !table.is_ready() {
        return Err(Refusal::NotReady);
    }
    let Some(sni) = sni else {
        return Ok(table.endpoint().clone());
    };
    match domains.classify(sni) {
        HostKind::Bare => Ok(table.endpoint().clone()),
        HostKind::Bucket(label) => match table.lookup(label) {
            Lookup::Config(config) => Ok(config.clone()),
            Lookup::Refused => Err(Refusal::BucketRefused),
            Lookup::NoPolicy if label.parse::<BucketName>().is_ok() => Ok(table.endpoint().clone()),
            Lookup::NoPolicy => Err(Refusal::UnknownSni),
        },
        HostKind::Other => Err(Refusal::UnknownSni),
    }
}

/// Accepts connections until `shutdown`; each connection runs on `tracker` and ends on
/// `force` (after the grace period) if still open. A connection over `limiter`'s caps is
/// closed at once, before any TLS.
pub async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<Context>,
    limiter: Arc<ConnLimiter>,
    handshake_timeout: Duration,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    force: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let permit = match limiter.try_acquire(peer.ip()) {
                    Ok(permit) => permit,
                    Err(e) => {
                        let reason = match e {
                            LimitExceeded::Total(_) => Refusal::ConnectionLimit,
                            LimitExceeded::PerSource(_) => Refusal::SourceLimit,
                        };
                        ctx.metrics.refused(reason);
                        tracing::debug!(%peer, error = %e, "connection refused");
                        continue;
                    }
                };
                // Boxed: the connection's state (TLS, HTTP) is several KiB, and the task would
                // otherwise copy all of it when spawned and again when it finishes.
                let conn = Box::pin(connection(
                    tcp,
                    peer,
                    ctx.clone(),
                    handshake_timeout,
                    shutdown.clone(),
                    force.clone(),
                ));
                let metrics = ctx.metrics.clone();
                metrics.connection_opened();
                tracker.spawn(
                    async move {
                        conn.await;
                        drop(permit);
                        metrics.connection_closed();
                    }
                    .instrument(tracing::debug_span!("conn", %peer)),
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => {}
                }
            }
        }
    }
}

enum Handshake {
    Done(Box<TlsStream<Rewound<TcpStream>>>, Option<String>),
    Refused(Refusal, Option<String>),
    /// The TLS handshake itself failed (no common version or suite, or a broken client): the
    /// bucket its SNI named, and the highest version it offered.
    Failed(std::io::Error, Option<String>, Offered),
}

/// The bucket a (normalised) SNI names, if any.
fn bucket_of<'a>(ctx: &Context, sni: Option<&'a str>) -> Option<&'a str> {
    match ctx.domains.classify(sni?) {
        HostKind::Bucket(label) => Some(label),
        _ => None,
    }
}

async fn connection(
    tcp: TcpStream,
    peer: std::net::SocketAddr,
    ctx: Arc<Context>,
    handshake_timeout: Duration,
    shutdown: CancellationToken,
    force: CancellationToken,
) {
    let _ = tcp.set_nodelay(true);
    let handshake = tokio::select! {
        _ = shutdown.cancelled() => return,
        r = tokio::time::timeout(handshake_timeout, handshake(tcp, &ctx)) => r,
    };
    let (stream, sni) = match handshake {
        Ok(Ok(Handshake::Done(stream, sni))) => (stream, sni),
        Ok(Ok(Handshake::Refused(reason, sni))) => {
            ctx.metrics.refused(reason);
            if reason == Refusal::BucketRefused {
                if let Some(bucket) = bucket_of(&ctx, sni.as_deref()) {
                    ctx.usage.refusal(bucket, Offered::Older);
                }
            }
            tracing::debug!(sni, reason = reason.as_str(), "handshake refused");
            return;
        }
        Ok(Ok(Handshake::Failed(e, sni, offered))) => {
            ctx.metrics.handshake_failed(HandshakeFailure::Error);
            if let Some(bucket) = bucket_of(&ctx, sni.as_deref()) {
                ctx.usage.refusal(bucket, offered);
            }
            tracing::debug!(error = %e, sni, "handshake failed");
            return;
        }
        Ok(Err(e)) => {
            ctx.metrics.handshake_failed(HandshakeFailure::Error);
            tracing::debug!(error = %e, "handshake failed");
            return;
        }
        Err(_) => {
            ctx.metrics.handshake_failed(HandshakeFailure::Timeout);
            tracing::debug!("handshake timed out");
            return;
        }
    };
    let (_, tls_conn) = stream.get_ref();
    let h2 = tls_conn.alpn_protocol() == Some(b"h2".as_slice());
    let negotiated = tls_conn
        .protocol_version()
        .and_then(tls::served_version)
        .zip(
            tls_conn
                .negotiated_cipher_suite()
                .and_then(|s| tls::served_suite(s.suite())),
        );
    let Some((version, suite)) = negotiated else {
        // Every config serves only these versions and suites; anything else is a bug, and
        // a request must not be checked against a connection it cannot describe.
        ctx.metrics.handshake_failed(HandshakeFailure::Error);
        tracing::error!("handshake negotiated a version or suite outside the policy model");
        return;
    };
    ctx.metrics.handshake_ok(version, suite);
    if let Some(bucket) = bucket_of(&ctx, sni.as_deref()) {
        ctx.usage.handshake(bucket, suite);
    }
    let info = Arc::new(ConnInfo {
        peer,
        sni,
        version,
        suite,
        h2,
    });
    http::serve(*stream, ctx, info, shutdown, force).await;
}

/// ClientHello, config choice, handshake: the caller bounds all of it with one timeout.
async fn handshake(mut tcp: TcpStream, ctx: &Context) -> std::io::Result<Handshake> {
    // The hello's first bytes, for the highest version it offers (rustls does not say); the
    // suites it lists are the fallback when they are not all there yet. Read here and put
    // back in front of the stream for rustls: one read, where a peek would be a second.
    let mut first = [0u8; HELLO_BYTES];
    let read = tcp.read(&mut first).await?;
    if read == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let first = &first[..read];
    let from_record = tlsfleet_policy::hello::offered_version(first);
    let tcp = Rewound::new(first.to_vec(), tcp);
    let start = LazyConfigAcceptor::new(Acceptor::default(), tcp).await?;
    let hello = start.client_hello();
    let sni = hello.server_name().map(normalize_name);
    let offered = from_record.unwrap_or_else(|| usage::offered(hello.cipher_suites()));
    let config = select_config(&ctx.table.snapshot(), &ctx.domains, sni.as_deref());
    match config {
        // Dropping `start` closes the TCP connection without a TLS alert.
        Err(reason) => Ok(Handshake::Refused(reason, sni)),
        Ok(config) => match start.into_stream(config).await {
            Ok(stream) => Ok(Handshake::Done(Box::new(stream), sni)),
            Err(e) => Ok(Handshake::Failed(e, sni, offered)),
        },
    }
}
