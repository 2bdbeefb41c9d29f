//! Waiting for a condition instead of sleeping: poll a probe until it holds or a deadline
//! passes. The one implementation every test uses (async, and blocking for threads that
//! cannot await).

use std::{
    future::Future,
    time::{Duration, Instant},
};

/// How often a probe is polled.
pub const POLL: Duration = Duration::from_millis(20);

/// Polls the async `probe` until it returns true (`true`) or `timeout` passes (`false`).
pub async fn until<F, Fut>(timeout: Duration, mut probe: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if probe().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// [`until`], failing the test with `what` when the condition never holds.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, probe: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    assert!(
        until(timeout, probe).await,
        "not within {timeout:?}: {what}"
    );
}

/// The blocking form of [`until`], for code outside a runtime.
pub fn until_blocking(timeout: Duration, mut probe: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if probe() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn waits_for_the_probe_and_gives_up_at_the_deadline() {
        let calls = AtomicUsize::new(0);
        let ok = until(Duration::from_secs(5), || async {
            calls.fetch_add(1, Ordering::Relaxed) >= 2
        })
        .await;
        assert!(ok);
        assert_eq!(calls.load(Ordering::Relaxed), 3);
        let started = Instant::now();
        assert!(!until(Duration::from_millis(100), || async { false }).await);
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert!(!until_blocking(Duration::from_millis(50), || false));
        assert!(until_blocking(Duration::from_millis(50), || true));
    }
}
