//! The gRPC listener's connections, capped in total and per source address: a connection
//! over a cap is closed at accept, before any HTTP/2 is spoken; one that sends nothing within
//! the first-bytes deadline is closed too (TLS has its own handshake deadline on top).

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures::Stream;
use tlsfleet_net::{ConnLimiter, ConnPermit};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::debug;

/// Backoff after a failed `accept` (out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// A TCP connection holding its place under the caps until it is dropped.
pub struct Limited {
    stream: TcpStream,
    _permit: ConnPermit,
    /// Until the first byte arrives: then `None`.
    first_bytes: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Connected for Limited {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Limited {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.first_bytes = None;
        } else if polled.is_pending() {
            if let Some(deadline) = this.first_bytes.as_mut() {
                if deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "nothing received within the first-bytes deadline",
                    )));
                }
            }
        }
        polled
    }
}

impl AsyncWrite for Limited {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
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

/// The accepted connections of `listener` that fit under `limiter`'s caps.
pub fn limited_incoming(
    listener: TcpListener,
    limiter: Arc<ConnLimiter>,
    first_bytes: Duration,
) -> impl Stream<Item = io::Result<Limited>> + Send + 'static {
    futures::stream::unfold((listener, limiter), move |(listener, limiter)| async move {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => match limiter.try_acquire(peer.ip()) {
                    Ok(permit) => {
                        let _ = stream.set_nodelay(true);
                        let conn = Limited {
                            stream,
                            _permit: permit,
                            first_bytes: Some(Box::pin(tokio::time::sleep(first_bytes))),
                        };
                        return Some((Ok(conn), (listener, limiter)));
                    }
                    Err(e) => debug!(%peer, error = %e, "gRPC connection refused"),
                },
                Err(e) => {
                    debug!(error = %e, "gRPC accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    })
}
