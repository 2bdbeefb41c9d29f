//! Retry delays: exponential with full jitter, so a fleet that lost its control server (or
//! control servers that lost their store) do not come back at it in lockstep.

use std::time::Duration;

use rand::Rng;

/// Exponential backoff with full jitter: the n-th delay is uniform in
/// `[0, min(max, min_delay * 2^n)]`.
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff whose ceiling starts at `min` and doubles up to `max` (`max` is raised to
    /// `min` if smaller).
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// Sleeps for [`Self::next_delay`].
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    /// The delay before the next attempt; each call doubles the next ceiling.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::rng().random_range(0..=nanos))
    }

    /// Jumps straight to the largest ceiling: for failures that retrying soon cannot fix
    /// (a refused key), where a tight loop would only flood the control plane's logs.
    pub fn saturate(&mut self) {
        self.attempt = u32::MAX;
    }

    /// Back to the first ceiling, after a connection that worked.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The largest delay the next attempt may get (what a deadline check should assume).
    pub fn ceiling(&self) -> Duration {
        // 2^31 times any sensible minimum already exceeds any sensible maximum.
        let factor = 1u32 << self.attempt.min(31);
        self.min.saturating_mul(factor).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_up_to_the_max_and_reset() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let ceilings: Vec<_> = (0..8)
            .map(|_| {
                let c = b.ceiling();
                let d = b.next_delay();
                assert!(d <= c, "{d:?} > {c:?}");
                c.as_millis()
            })
            .collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(100));
        b.saturate();
        assert_eq!(b.ceiling(), Duration::from_secs(5));
        assert!(b.next_delay() <= Duration::from_secs(5));
    }

    #[test]
    fn delays_are_jittered() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
        let delays: std::collections::BTreeSet<_> = (0..32).map(|_| b.next_delay()).collect();
        assert!(delays.len() > 1, "32 equal delays: no jitter");
    }

    #[test]
    fn max_below_min_is_min() {
        let mut b = Backoff::new(Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(b.ceiling(), Duration::from_secs(2));
        b.next_delay();
        assert_eq!(b.ceiling(), Duration::from_secs(2));
    }
}
