//! The REST listener: caps on open connections (in total and per source address), a deadline
//! on every request head, a stall timeout on every read and write, optional TLS, and a bounded
//! drain at shutdown.
//!
//! Why not `axum::serve`: it runs hyper without a timer, so hyper's header-read timeout never
//! fires, and an idle timer that every trickled byte resets lets a client hold a connection
//! forever: 1,024 such clients, no key needed, kept everyone else out. Here a request head
//! must be complete [`RestLimits::header_timeout`] after the connection (or the previous
//! response) is ready for it, however slowly its bytes come.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tlsfleet_net::ConnLimiter;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    time::{Instant, Sleep},
};
use tokio_rustls::TlsAcceptor;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, warn};

/// Bounds of the REST listener (defaults: 4,096 connections, 64 per source address, 10 s
/// for a request head, 60 s for a stalled read or write).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestLimits {
    pub max_connections: usize,
    pub max_per_source: usize,
    /// From a connection's start (or its previous response) to a complete request head; also
    /// bounds the TLS handshake.
    pub header_timeout: Duration,
    /// A read or write that makes no progress for this long fails the connection.
    pub idle_timeout: Duration,
}

impl Default for RestLimits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            max_per_source: 64,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// How long in-flight requests may take after shutdown before connections are dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Backoff after a failed `accept` (out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `app` on `listener` until `shutdown`; then lets in-flight requests finish for at
/// most [`SHUTDOWN_GRACE`] and returns once every connection task has ended.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: RestLimits,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let limiter = ConnLimiter::new(limits.max_connections, limits.max_per_source);
    let tracker = TaskTracker::new();
    let force = CancellationToken::new();
    loop {
        let (tcp, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    debug!(error = %e, "REST accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let permit = match limiter.try_acquire(peer.ip()) {
            Ok(p) => p,
            Err(e) => {
                debug!(%peer, error = %e, "REST connection refused");
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let conn = connection(
            tcp,
            peer,
            app.clone(),
            limits,
            tls.clone(),
            shutdown.clone(),
            force.clone(),
        );
        tracker.spawn(async move {
            conn.await;
            drop(permit);
        });
    }
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        warn!("REST requests still in flight after the shutdown grace period; closing them");
        force.cancel();
        tracker.wait().await;
    }
    Ok(())
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: RestLimits,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
    force: CancellationToken,
) {
    let io = Stalling::new(tcp, limits.idle_timeout);
    let app = app.layer(axum::Extension(super::Peer(peer)));
    match tls {
        None => serve_http(io, app, limits, shutdown, force).await,
        Some(acceptor) => {
            let handshake = tokio::time::timeout(limits.header_timeout, acceptor.accept(io));
            let stream = tokio::select! {
                () = shutdown.cancelled() => return,
                r = handshake => r,
            };
            match stream {
                Ok(Ok(stream)) => serve_http(stream, app, limits, shutdown, force).await,
                Ok(Err(e)) => debug!(%peer, error = %e, "REST TLS handshake failed"),
                Err(_) => debug!(%peer, "REST TLS handshake timed out"),
            }
        }
    }
}

async fn serve_http<IO>(
    io: IO,
    app: Router,
    limits: RestLimits,
    shutdown: CancellationToken,
    force: CancellationToken,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(64 * 1024);
    let connection = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    tokio::pin!(connection);
    let result = tokio::select! {
        r = connection.as_mut() => r,
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            tokio::select! {
                r = connection.as_mut() => r,
                () = force.cancelled() => Ok(()),
            }
        }
    };
    if let Err(e) = result {
        debug!(error = %e, "REST connection ended with an error");
    }
}

/// A stream whose reads and writes fail with `TimedOut` when they make no progress for
/// `idle` (a client that stops reading its response, or stops sending its body).
pub struct Stalling<S> {
    stream: S,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<S> Stalling<S> {
    pub fn new(stream: S, idle: Duration) -> Self {
        Self {
            stream,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }

    fn progressed(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + self.idle);
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }

    fn written(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match poll {
            Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    self.progressed();
                }
                Poll::Ready(r)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connection stalled for too long")
}

impl<S: AsyncRead + Unpin> AsyncRead for Stalling<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.progressed();
                }
                Poll::Ready(r)
            }
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Stalling<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.written(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.written(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// The REST listener's TLS config from PEM files: HTTP/1.1 only.
pub fn tls_acceptor(cert_pem: &[u8], key_pem: &[u8]) -> Result<TlsAcceptor, String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate: {e}"))?;
    if chain.is_empty() {
        return Err("no certificate in the certificate file".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("key: {e}"))?;
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(tlsfleet_policy::tls::provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn stalled_reads_time_out() {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = tcp.accept().await.unwrap();
        let mut conn = Stalling::new(server, Duration::from_millis(200));
        client.write_all(b"x").await.unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(conn.read(&mut buf).await.unwrap(), 1);
        let err = conn.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
