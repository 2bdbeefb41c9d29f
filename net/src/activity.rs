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
        loop {
            let last =
                self.started + Duration::from_millis(self.last_end_ms.load(Ordering::SeqCst));
            let deadline = last + idle;
            if self.in_flight() == 0 && Instant::now() >= deadline {
                return;
            }
            // A request in flight at the deadline: look again one period later.
            let next = if Instant::now() >= deadline {
                Instant::now() + idle
            } else {
                deadline
            };
            tokio::time::sleep_until(next).await;
        }
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let elapsed = u64::try_from(self.0.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        // The end time is stored before the count drops, so `idle` never sees no request in
        // flight with the previous end time.
        self.0.last_end_ms.store(elapsed.max(1), Ordering::SeqCst);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

pin_project_lite::pin_project! {
    /// A body that holds `T` (a [`RequestGuard`], a concurrency permit) until it has been
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

impl<B: Body, T> Body for HoldBody<B, T> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
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
