//! How a connection ends: a client that closed first is not answered with a `close_notify`.
//!
//! When hyper is done with a connection it shuts the I/O down, and tokio-rustls then sends a
//! `close_notify` alert and shuts the TCP write side. That is right when the agent closes
//! first (idle timeout, `Connection: close`, shutdown): the client learns the response ended
//! where it did. When the client closed first (it sent its own `close_notify` or its FIN),
//! hyper sees the end of the stream and shuts down too, and the alert is written to a peer
//! that has gone: on a busy edge that write, and the reset it draws from the client's kernel,
//! was 6 % of the agent's CPU per connection (the benchmark's client closes right after the
//! handshake). nginx closes such a connection without writing anything; so does the agent:
//! once a read has returned the end of the stream, shutting down only flushes what is still
//! buffered (a response the client may still read) and leaves the close to the drop.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// An I/O stream that remembers whether the peer ended it.
pub struct PeerClosing<IO> {
    inner: IO,
    peer_closed: bool,
}

impl<IO> PeerClosing<IO> {
    pub fn new(inner: IO) -> Self {
        Self {
            inner,
            peer_closed: false,
        }
    }

    /// Whether a read returned the end of the stream.
    #[cfg(test)]
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for PeerClosing<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() == before {
            // Room to read into and nothing read: the end of the stream.
            if buf.remaining() > 0 {
                self.peer_closed = true;
            }
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for PeerClosing<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.peer_closed {
            // Whatever is buffered still goes out; no alert to a peer that has left.
            return Pin::new(&mut self.inner).poll_flush(cx);
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Whether a read of `theirs` has the end of the stream right now (without waiting).
    fn at_end(theirs: &mut tokio::io::DuplexStream) -> Option<bool> {
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match Pin::new(theirs).poll_read(&mut cx, &mut buf) {
            Poll::Ready(Ok(())) => Some(buf.filled().is_empty()),
            Poll::Ready(Err(_)) => Some(true),
            Poll::Pending => None,
        }
    }

    #[tokio::test]
    async fn shutdown_after_the_peer_closed_only_flushes() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut ours = PeerClosing::new(ours);
        theirs.write_all(b"hi").await.unwrap();
        theirs.shutdown().await.unwrap();
        let mut got = Vec::new();
        ours.read_to_end(&mut got).await.unwrap();
        assert_eq!((got.as_slice(), ours.peer_closed()), (&b"hi"[..], true));
        ours.write_all(b"bye").await.unwrap();
        ours.shutdown().await.unwrap();
        let mut got = [0u8; 3];
        theirs.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"bye");
        // What was written arrived, and nothing was shut: no end of stream until the drop.
        assert_eq!(at_end(&mut theirs), None);
        drop(ours);
        assert_eq!(at_end(&mut theirs), Some(true));
    }

    #[tokio::test]
    async fn shutdown_before_the_peer_closed_is_passed_on() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut ours = PeerClosing::new(ours);
        ours.write_all(b"bye").await.unwrap();
        ours.shutdown().await.unwrap();
        assert!(!ours.peer_closed());
        // The peer sees the end of the stream while ours is alive: the shutdown went through.
        let mut got = [0u8; 3];
        theirs.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"bye");
        assert_eq!(at_end(&mut theirs), Some(true));
        drop(ours);
    }
}
