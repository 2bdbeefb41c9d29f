//! Requests in flight on one connection, and the deadline of a connection without any.

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

/// The requests of one connection. Share it as `Arc<Activity>`.
#[derive(Debug)]
pub struct Activity {
    started: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `started` when the last request ended (0: none yet).
    last_end_ms: AtomicU64,
    /// Response bodies being sent.
    sending: AtomicUsize,
    /// Milliseconds after `started` when a response body last moved (or began).
    last_progress_ms: AtomicU64,
}

/// One request in flight; it ends when this is dropped.
#[derive(Debug)]
pub struct RequestGuard(Arc<Activity>);

impl Activity {
    /// A connection opened now, with no request yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_end_ms: AtomicU64::new(0),
            sending: AtomicUsize::new(0),
            last_progress_ms: AtomicU64::new(0),
        })
    }

    /// A request starts.
    pub fn begin(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        RequestGuard(self.clone())
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Resolves once the connection has had no request in flight for `idle`: since it
    /// opened, or since its last request ended.
    pub async fn idle(&self, idle: Duration) {
        self.quiet_for(&self.last_end_ms, idle, || self.in_flight() == 0)
            .await
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// `body`, the response of the request `guard` stands for: the request stays in flight
    /// until the body is sent, and every frame the peer takes counts as progress for
    /// [`Activity::stalled`].
    pub fn sending<B>(self: &Arc<Self>, body: B, guard: RequestGuard) -> SendingBody<B> {
        self.last_progress_ms.store(self.now_ms(), Ordering::SeqCst);
        self.sending.fetch_add(1, Ordering::SeqCst);
        HoldBody::new(
            body,
            Sending {
                activity: self.clone(),
                _request: guard,
            },
        )
    }

    /// Resolves once a response has been waiting for the peer to take it, with no progress
    /// on any response of the connection, for `stall` (a client that stopped reading, or an
    /// HTTP/2 client that opens no flow-control window).
    pub async fn stalled(&self, stall: Duration) {
        self.quiet_for(&self.last_progress_ms, stall, || {
            self.sending.load(Ordering::SeqCst) > 0
        })
        .await
    }

    /// Resolves once `holds()` and nothing has moved `stamp` (milliseconds after `started`)
    /// for `period`; when it does not hold at the deadline (a request in flight, nothing
    /// being sent), it looks again one period later.
    async fn quiet_for(&self, stamp: &AtomicU64, period: Duration, holds: impl Fn() -> bool) {
        loop {
            let last = self.started + Duration::from_millis(stamp.load(Ordering::SeqCst));
            let deadline = last + period;
            let now = Instant::now();
            if now >= deadline && holds() {
                return;
            }
            let next = if now >= deadline {
                now + period
            } else {
                deadline
            };
            tokio::time::sleep_until(next).await;
        }
    }
}

/// A response body being sent (see [`Activity::sending`]): held by its [`SendingBody`].
#[derive(Debug)]
pub struct Sending {
    activity: Arc<Activity>,
    _request: RequestGuard,
}

impl Held for Sending {
    fn frame_ready(&self) {
        let now = self.activity.now_ms();
        self.activity.last_progress_ms.store(now, Ordering::SeqCst);
    }
}

impl Drop for Sending {
    fn drop(&mut self) {
        self.activity.sending.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that counts its progress for [`Activity::stalled`] and keeps its request
/// in flight until it has been sent (or dropped).
pub type SendingBody<B> = HoldBody<B, Sending>;

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let elapsed = u64::try_from(self.0.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        // The end time is stored before the count drops, so `idle` never sees no request in
        // flight with the previous end time.
        self.0.last_end_ms.store(elapsed.max(1), Ordering::SeqCst);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a [`HoldBody`] holds; told of every frame the body yields.
pub trait Held {
    fn frame_ready(&self) {}
}

impl Held for crate::ConnPermit {}

pin_project_lite::pin_project! {
    /// A body that holds `T` (a concurrency permit, a [`Sending`] response) until it has been
    /// sent to its end, has failed, or is dropped.
    pub struct HoldBody<B, T> {
        #[pin]
        inner: B,
        held: Option<T>,
    }
}

impl<B, T> HoldBody<B, T> {
    pub fn new(inner: B, held: T) -> Self {
        Self {
            inner,
            held: Some(held),
        }
    }
}

impl<B: Body, T: Held> Body for HoldBody<B, T> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let (Some(held), true) = (this.held.as_ref(), polled.is_ready()) {
            held.frame_ready();
        }
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.held.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_response_nobody_takes_is_a_stall() {
        use http_body_util::{BodyExt, Full};
        let a = Activity::new();
        let stall = Duration::from_secs(5);
        let body = a.sending(Full::new(bytes::Bytes::from_static(b"xy")), a.begin());
        let waiter = tokio::spawn({
            let a = a.clone();
            async move { a.stalled(stall).await }
        });
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(!waiter.is_finished());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(waiter.is_finished(), "nobody took the response for 6 s");
        // Taken to its end: no longer sending, no longer in flight.
        let _ = body.collect().await;
        assert_eq!(a.in_flight(), 0);
        let waiter = tokio::spawn({
            let a = a.clone();
            async move { a.stalled(stall).await }
        });
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(!waiter.is_finished(), "idle is not a stall");
        waiter.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn idle_counts_from_the_last_request_and_waits_for_those_in_flight() {
        let a = Activity::new();
        let idle = Duration::from_secs(10);
        let t0 = Instant::now();
        a.idle(idle).await;
        assert_eq!(t0.elapsed(), idle);

        let a = Activity::new();
        let guard = a.begin();
        let waiter = tokio::spawn({
            let a = a.clone();
            async move { a.idle(idle).await }
        });
        tokio::time::sleep(Duration::from_secs(25)).await;
        assert!(!waiter.is_finished(), "idle with a request in flight");
        drop(guard);
        let ended = Instant::now();
        waiter.await.unwrap();
        assert!(ended.elapsed() >= idle, "{:?}", ended.elapsed());
    }
}
