//! Caps on open connections, in total and per source address.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex, PoisonError},
};

/// Which cap a refused connection hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    #[error("{0} connections are open, the most this listener takes")]
    Total(usize),
    #[error("{0} connections are open from this source address, the most it may have")]
    PerSource(usize),
}

impl LimitExceeded {
    /// A metric label: `limit` or `per_source_limit`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Total(_) => "limit",
            Self::PerSource(_) => "per_source_limit",
        }
    }
}

/// Counts open connections; share it as `Arc<ConnLimiter>`.
#[derive(Debug)]
pub struct ConnLimiter {
    max_total: usize,
    max_per_source: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    total: usize,
    /// Only sources with at least one open connection.
    per_source: HashMap<IpAddr, usize>,
}

/// One open connection; dropping it frees its place.
#[derive(Debug)]
pub struct ConnPermit {
    limiter: Arc<ConnLimiter>,
    source: IpAddr,
}

impl ConnLimiter {
    /// At most `max_total` connections, `max_per_source` from any one address (both at
    /// least 1).
    pub fn new(max_total: usize, max_per_source: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total: max_total.max(1),
            max_per_source: max_per_source.max(1),
            state: Mutex::new(State::default()),
        })
    }

    /// Takes a place for a connection from `source`, or says which cap is reached.
    /// IPv4-mapped IPv6 addresses count as their IPv4 address; IPv6 sources count per /64
    /// (one host is routinely given a whole /64).
    pub fn try_acquire(self: &Arc<Self>, source: IpAddr) -> Result<ConnPermit, LimitExceeded> {
        let source = match source.to_canonical() {
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
            v4 => v4,
        };
        let mut state = self.lock();
        if state.total >= self.max_total {
            return Err(LimitExceeded::Total(self.max_total));
        }
        let from_source = state.per_source.entry(source).or_insert(0);
        if *from_source >= self.max_per_source {
            return Err(LimitExceeded::PerSource(self.max_per_source));
        }
        *from_source += 1;
        state.total += 1;
        Ok(ConnPermit {
            limiter: self.clone(),
            source,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().total
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update is a pair of counter changes made together; a panic cannot split them.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut state = self.limiter.lock();
        state.total = state.total.saturating_sub(1);
        if let Some(n) = state.per_source.get_mut(&self.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                state.per_source.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_source_and_in_total_and_frees_on_drop() {
        let l = ConnLimiter::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let p1 = l.try_acquire(a).unwrap();
        let _p2 = l.try_acquire(mapped).unwrap();
        assert_eq!(l.try_acquire(a).unwrap_err(), LimitExceeded::PerSource(2));
        let _p3 = l.try_acquire(b).unwrap();
        assert_eq!(l.try_acquire(b).unwrap_err(), LimitExceeded::Total(3));
        assert_eq!(l.open(), 3);
        drop(p1);
        assert_eq!(l.open(), 2);
        assert!(l.try_acquire(a).is_ok());
    }

    #[test]
    fn ipv6_sources_count_per_64() {
        let l = ConnLimiter::new(10, 2);
        let x: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let y: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _a = l.try_acquire(x).unwrap();
        let _b = l.try_acquire(y).unwrap();
        assert_eq!(l.try_acquire(x).unwrap_err(), LimitExceeded::PerSource(2));
        assert!(l.try_acquire(other).is_ok());
    }
}
