//! A TCP stream with the bytes already read from it put back in front.
//!
//! The listener reads the ClientHello's first bytes itself (for the highest version offered,
//! which rustls does not say), then hands the connection to rustls as if nothing had been
//! read: one `read` instead of a `peek` and then a `read` of the same bytes, a system call less
//! per connection.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
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
