//! The two wrappers the data path puts around a connection's stream.
//!
//! * [`Rewound`], under TLS: the TCP stream with the bytes already read from it put back in
//!   front.
//! * [`PeerClosing`], between TLS and HTTP: a client that closed first is not answered with a
//!   `close_notify`.
//!
//! Both pass writes through unchanged (`forward_writes!`).
//!
//! ## `Rewound`
//!
//! The listener reads the ClientHello's first bytes itself (for the highest version offered,
//! which rustls does not say), then hands the connection to rustls as if nothing had been
//! read: one `read` instead of a `peek` and then a `read` of the same bytes, a system call less
//! per connection.
//!
//! ## `PeerClosing`
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

/// The `AsyncWrite` methods but `poll_shutdown`, passed to the `inner` field as they are.
macro_rules! forward_writes {
    () => {
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
    };
}

/// `inner`, whose reads return `prefix` first.
#[derive(Debug)]
pub struct Rewound<IO> {
    prefix: Vec<u8>,
    /// How much of `prefix` was read again.
    taken: usize,
    inner: IO,
}

impl<IO> Rewound<IO> {
    pub fn new(prefix: Vec<u8>, inner: IO) -> Self {
        Self {
            prefix,
            taken: 0,
            inner,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Rewound<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(rest) = this.prefix.get(this.taken..).filter(|r| !r.is_empty()) {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.taken += n;
            if this.taken == this.prefix.len() {
                // Read again in full: the buffer is not kept for the connection's life.
                this.prefix = Vec::new();
                this.taken = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Rewound<IO> {
    forward_writes!();

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

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
    forward_writes!();

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.peer_closed {
            // Whatever is buffered still goes out; no alert to a peer that has left.
            return Pin::new(&mut self.inner).poll_flush(cx);
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod rewound_tests {
    #![allow(clippy::unwrap_used)]

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn the_prefix_is_read_first_then_the_stream_in_small_reads_too() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        theirs.write_all(b" world").await.unwrap();
        theirs.shutdown().await.unwrap();
        let mut rewound = Rewound::new(b"hello".to_vec(), ours);
        // Two bytes at a time: the prefix is handed out across reads, never skipped.
        let mut two = [0u8; 2];
        let mut got = Vec::new();
        loop {
            let n = rewound.read(&mut two).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&two[..n]);
        }
        assert_eq!(got, b"hello world");
        assert!(
            rewound.prefix.is_empty(),
            "the prefix is freed once read again"
        );
    }

    #[tokio::test]
    async fn writes_go_to_the_stream() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut rewound = Rewound::new(Vec::new(), ours);
        rewound.write_all(b"hi").await.unwrap();
        rewound.shutdown().await.unwrap();
        let mut got = Vec::new();
        theirs.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hi");
    }
}

#[cfg(test)]
mod peer_closing_tests {
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
