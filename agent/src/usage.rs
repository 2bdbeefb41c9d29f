//! Per-bucket TLS usage, counted on the data path and handed to the sync client a window at a
//! time (`tlsfleet_policy::usage` has the counters and their meaning).
//!
//! Only buckets that saw traffic hold counters, in 16 shards (a handshake or request takes one
//! shard's lock for a few increments). A window holds at most [`MAX_BUCKETS`] buckets; traffic
//! of buckets beyond that is counted under [`OVERFLOW`]. The sync client takes the window every
//! [`WINDOW`] and reports it; what it could not report yet is kept for at most [`KEEP`]
//! windows (older ones are dropped and counted in the log).

use std::{
    collections::{HashMap, VecDeque},
    hash::{BuildHasher, RandomState},
    net::IpAddr,
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use tlsfleet_policy::{
    usage::{Offered, Usage},
    ServedSuite,
};

/// How often a window closes.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Buckets counted per window.
pub const MAX_BUCKETS: usize = 200_000;
/// Closed windows kept while they cannot be reported.
pub const KEEP: usize = 60;
/// Where traffic of buckets beyond [`MAX_BUCKETS`] in one window is counted.
pub const OVERFLOW: &str = "(other)";

const SHARDS: usize = 16;

/// One closed window: when it started (Unix seconds) and each bucket's usage.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Window {
    pub start_unix: i64,
    pub buckets: Vec<(String, Usage)>,
}

/// The counters of the open window, and closed windows not yet reported.
pub struct UsageRecorder {
    shards: [Mutex<HashMap<Box<str>, Usage>>; SHARDS],
    hasher: RandomState,
    open_since: Mutex<i64>,
    closed: Mutex<VecDeque<Window>>,
}

impl Default for UsageRecorder {
    fn default() -> Self {
        Self {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            hasher: RandomState::new(),
            open_since: Mutex::new(now_unix()),
            closed: Mutex::new(VecDeque::new()),
        }
    }
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Counters only: a panic mid-increment leaves them usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl UsageRecorder {
    fn with(&self, bucket: &str, f: impl FnOnce(&mut Usage)) {
        let shard = (self.hasher.hash_one(bucket) as usize) % SHARDS;
        let mut map = lock(&self.shards[shard]);
        if let Some(u) = map.get_mut(bucket) {
            return f(u);
        }
        let key = if map.len() >= MAX_BUCKETS / SHARDS {
            OVERFLOW
        } else {
            bucket
        };
        f(map.entry(key.into()).or_default());
    }

    pub fn handshake(&self, bucket: &str, suite: ServedSuite) {
        self.with(bucket, |u| u.handshake(suite));
    }

    pub fn request(&self, bucket: &str, suite: ServedSuite, ip: IpAddr, user_agent: Option<&str>) {
        self.with(bucket, |u| u.request(suite, ip, user_agent));
    }

    pub fn refusal(&self, bucket: &str, offered: Offered) {
        self.with(bucket, |u| u.refusal(offered));
    }

    /// Closes the open window (if it has anything) and returns every window not reported yet,
    /// oldest first. Give back what could not be sent with [`Self::unsent`].
    pub fn take(&self) -> Vec<Window> {
        let start = std::mem::replace(&mut *lock(&self.open_since), now_unix());
        let mut buckets = Vec::new();
        for shard in &self.shards {
            buckets.extend(
                std::mem::take(&mut *lock(shard))
                    .into_iter()
                    .map(|(k, v)| (k.into_string(), v)),
            );
        }
        let mut closed = lock(&self.closed);
        if !buckets.is_empty() {
            buckets.sort_by(|a, b| a.0.cmp(&b.0));
            closed.push_back(Window {
                start_unix: start,
                buckets,
            });
        }
        closed.drain(..).collect()
    }

    /// Windows that could not be reported, kept (up to [`KEEP`]) for the next report.
    pub fn unsent(&self, windows: Vec<Window>) {
        let mut closed = lock(&self.closed);
        for w in windows.into_iter().rev() {
            closed.push_front(w);
        }
        let excess = closed.len().saturating_sub(KEEP);
        if excess > 0 {
            closed.drain(..excess);
            tracing::warn!(
                dropped = excess,
                "usage windows dropped: the control plane is unreachable"
            );
        }
    }
}

/// The highest version a ClientHello offers, guessed from its cipher suites when its
/// `supported_versions` could not be read (`tlsfleet_policy::hello`): TLS 1.3 suites mean a
/// TLS 1.3 client (some TLS 1.2-only clients list them too), TLS 1.2 AEAD suites TLS 1.2.
pub fn offered(cipher_suites: &[rustls::CipherSuite]) -> Offered {
    let ids = cipher_suites.iter().map(|s| u16::from(*s));
    let mut best = Offered::Older;
    for id in ids {
        if (0x1301..=0x1305).contains(&id) {
            return Offered::Tls13;
        }
        if ServedSuite::from_id(id).is_some() {
            best = Offered::Tls12;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_close_hold_only_buckets_with_traffic_and_keep_what_was_not_sent() {
        let r = UsageRecorder::default();
        r.handshake("aaa", ServedSuite::Tls13Aes128GcmSha256);
        r.request(
            "aaa",
            ServedSuite::Tls13Aes128GcmSha256,
            "127.0.0.1".parse().unwrap(),
            Some("ua"),
        );
        r.refusal("bbb", Offered::Tls12);
        let w = r.take();
        assert_eq!(w.len(), 1);
        let names: Vec<&str> = w[0].buckets.iter().map(|(b, _)| b.as_str()).collect();
        assert_eq!(names, ["aaa", "bbb"]);
        assert_eq!(w[0].buckets[0].1.total_requests(), 1);
        // Nothing new: nothing to report.
        assert!(r.take().is_empty());
        // Not sent: kept for the next take, bounded.
        r.unsent(w.clone());
        assert_eq!(r.take(), w);
        r.unsent((0..KEEP + 5).map(|_| w[0].clone()).collect());
        assert_eq!(r.take().len(), KEEP);
    }

    #[test]
    fn the_highest_offered_version_comes_from_the_suites() {
        use rustls::CipherSuite as C;
        assert_eq!(
            offered(&[
                C::TLS13_AES_128_GCM_SHA256,
                C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            ]),
            Offered::Tls13
        );
        assert_eq!(
            offered(&[C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]),
            Offered::Tls12
        );
        assert_eq!(offered(&[C::TLS_RSA_WITH_AES_128_CBC_SHA]), Offered::Older);
    }
}
