//! Reading request bodies within bounds.
//!
//! A PUT body is read up to [`MAX_BODY`] and no further: past it, the rest is read and
//! thrown away (up to [`MAX_DRAIN`], within [`DRAIN_TIME`]) so that a client that is still
//! sending gets the `EntityTooLarge` answer instead of a connection reset; memory stays at
//! one chunk. A body beyond what we drain closes the connection.

use std::time::Duration;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap};
use http_body_util::BodyExt;
use tokio::time::Instant;

use super::error::OssError;

/// The largest accepted PUT body (OSS: 64 KiB for configuration documents).
pub const MAX_BODY: usize = 64 * 1024;
/// How much of an unwanted body is read and discarded before answering.
pub const MAX_DRAIN: u64 = 16 * 1024 * 1024;
/// How long reading or discarding a body may take.
pub const DRAIN_TIME: Duration = Duration::from_secs(10);
/// How long a wanted body may take to arrive.
pub const READ_TIME: Duration = Duration::from_secs(30);

/// What the request headers say about its body.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Framing {
    /// The declared `Content-Length`, if any and well-formed.
    pub length: Option<u64>,
    /// `Expect: 100-continue`: the client waits for a go before sending the body, so an
    /// unwanted body is refused by answering without reading it (reading it is the go).
    pub expect_continue: bool,
}

impl Framing {
    pub fn of(headers: &HeaderMap) -> Self {
        let length = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let expect_continue = headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        Self {
            length,
            expect_continue,
        }
    }
}

/// Reads a whole body of at most [`MAX_BODY`] bytes.
pub async fn read_limited(body: Body, framing: Framing) -> Result<Bytes, OssError> {
    let too_large = || {
        OssError::bad_request(
            "EntityTooLarge",
            format!("the request body is larger than the {MAX_BODY}-byte limit"),
        )
    };
    if framing.length.is_some_and(|n| n > MAX_BODY as u64) {
        let drained = drain(body, framing).await;
        return Err(if drained {
            too_large()
        } else {
            too_large().closing()
        });
    }
    let deadline = Instant::now() + READ_TIME;
    let mut body = body;
    let mut buf = BytesMut::new();
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                return Err(OssError::bad_request(
                    "RequestTimeout",
                    "the request body did not arrive in time",
                )
                .closing())
            }
            Ok(None) => return Ok(buf.freeze()),
            Ok(Some(Err(_))) => {
                return Err(OssError::bad_request(
                    "IncompleteBody",
                    "the request body ended before its declared length or was not valid HTTP",
                )
                .closing())
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if buf.len() + data.len() > MAX_BODY {
            // Undeclared (chunked) length: stop keeping, keep draining (the client was told
            // to send when we started reading).
            let drained = drain(body, Framing::default()).await;
            return Err(if drained {
                too_large()
            } else {
                too_large().closing()
            });
        }
        buf.extend_from_slice(&data);
    }
}

/// Reads and discards what is left of a body, within [`MAX_DRAIN`] and [`DRAIN_TIME`].
/// Returns whether the body was consumed to its end (the connection can be reused).
pub async fn drain(body: Body, framing: Framing) -> bool {
    if framing.expect_continue {
        return framing.length == Some(0);
    }
    if framing.length.is_some_and(|n| n > MAX_DRAIN) {
        return false;
    }
    let mut body = body;
    let deadline = Instant::now() + DRAIN_TIME;
    let mut seen: u64 = 0;
    loop {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(None) => return true,
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    seen = seen.saturating_add(data.len() as u64);
                    if seen > MAX_DRAIN {
                        return false;
                    }
                }
            }
            Ok(Some(Err(_))) | Err(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sized(length: u64) -> Framing {
        Framing {
            length: Some(length),
            expect_continue: false,
        }
    }

    #[tokio::test]
    async fn a_waiting_client_is_answered_without_reading() {
        let waiting = Framing {
            length: Some(10 << 20),
            expect_continue: true,
        };
        // A body that never arrives: reading it would hang the test.
        let never = Body::from_stream(futures::stream::pending::<Result<Bytes, std::io::Error>>());
        let e = read_limited(never, waiting).await.unwrap_err();
        assert_eq!((e.code, e.close), ("EntityTooLarge", true));
        let never = Body::from_stream(futures::stream::pending::<Result<Bytes, std::io::Error>>());
        assert!(!drain(never, waiting).await);
    }

    fn chunked(chunks: usize, size: usize) -> Body {
        let stream = futures::stream::iter(
            (0..chunks).map(move |_| Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; size]))),
        );
        Body::from_stream(stream)
    }

    #[tokio::test]
    async fn reads_up_to_the_limit() {
        let b = read_limited(Body::from(vec![b'a'; MAX_BODY]), sized(MAX_BODY as u64))
            .await
            .unwrap();
        assert_eq!(b.len(), MAX_BODY);
        let b = read_limited(chunked(4, 1000), Framing::default())
            .await
            .unwrap();
        assert_eq!(b.len(), 4000);
        assert!(read_limited(Body::empty(), Framing::default())
            .await
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn refuses_one_byte_more_declared_or_not() {
        let e = read_limited(
            Body::from(vec![b'a'; MAX_BODY + 1]),
            sized(MAX_BODY as u64 + 1),
        )
        .await
        .unwrap_err();
        assert_eq!((e.code, e.close), ("EntityTooLarge", false));
        // 10 MiB in 64 KiB chunks, no declared length: drained, connection reusable.
        let e = read_limited(chunked(160, 64 * 1024), Framing::default())
            .await
            .unwrap_err();
        assert_eq!((e.code, e.close), ("EntityTooLarge", false));
        // Beyond the drain limit: answered and closed.
        let e = read_limited(chunked(300, 64 * 1024), Framing::default())
            .await
            .unwrap_err();
        assert_eq!((e.code, e.close), ("EntityTooLarge", true));
        let e = read_limited(Body::empty(), sized(MAX_DRAIN + 1))
            .await
            .unwrap_err();
        assert_eq!((e.code, e.close), ("EntityTooLarge", true));
    }

    #[tokio::test]
    async fn broken_bodies_are_incomplete() {
        let stream = futures::stream::iter([
            Ok(Bytes::from_static(b"<Https")),
            Err(std::io::Error::other("reset")),
        ]);
        let e = read_limited(Body::from_stream(stream), Framing::default())
            .await
            .unwrap_err();
        assert_eq!((e.code, e.close), ("IncompleteBody", true));
    }
}
