//! The etcd members a store talks to: one client (one HTTP/2 connection) per endpoint, the
//! member in use, and each member's health.
//!
//! etcd-client's own multi-endpoint channel balances every call over all endpoints, dead ones
//! included: after a member dies, a share of the calls keeps failing on it and waits out a
//! retry backoff (the issue measured the PUT rate at a sixth for seconds). Here a call uses
//! one member; a member that fails a call (unreachable, no leader, no answer in time) is
//! marked down and the call moves on to the next member at once. A down member is tried
//! again after [`DOWN_FOR`], or sooner when every member is down.

use std::sync::{
    atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering},
    Mutex,
};

use etcd_client::{Client, ConnectOptions, KvClient, LeaseClient, WatchClient};

use super::MAX_MESSAGE_BYTES;
use crate::{
    clock::now_ms,
    store::{MemberHealth, StoreError},
};

/// How long a member that failed a call is passed over.
pub const DOWN_FOR_MS: i64 = 1_000;

struct Member {
    endpoint: String,
    kv: KvClient,
    watch: WatchClient,
    lease: LeaseClient,
    /// When it last failed a call (Unix ms; 0: it answered the last call it was given).
    down_since_ms: AtomicI64,
    failures: AtomicU64,
    last_error: Mutex<String>,
}

pub(super) struct Members {
    list: Vec<Member>,
    current: AtomicUsize,
}

impl Members {
    /// One client per endpoint. Connects lazily: an unreachable member fails its first call.
    pub(super) async fn connect(
        endpoints: &[String],
        options: ConnectOptions,
    ) -> Result<Self, StoreError> {
        if endpoints.is_empty() {
            return Err(StoreError::Other("no etcd endpoint given".into()));
        }
        let mut list = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            let client = Client::connect([endpoint.as_str()], Some(options.clone()))
                .await
                .map_err(|e| StoreError::Other(format!("etcd client for {endpoint}: {e}")))?;
            list.push(Member {
                endpoint: endpoint.clone(),
                kv: client
                    .kv_client()
                    .max_decoding_message_size(MAX_MESSAGE_BYTES),
                watch: client
                    .watch_client()
                    .max_decoding_message_size(MAX_MESSAGE_BYTES),
                lease: client.lease_client(),
                down_since_ms: AtomicI64::new(0),
                failures: AtomicU64::new(0),
                last_error: Mutex::new(String::new()),
            });
        }
        // Spread servers over the members from the start.
        let first = rand::random_range(0..list.len());
        Ok(Self {
            list,
            current: AtomicUsize::new(first),
        })
    }

    /// The member the next call goes to: the one in use unless it is down, else the next one
    /// up, else the one down the longest.
    pub(super) fn pick(&self) -> usize {
        let n = self.list.len();
        let current = self.current.load(Ordering::Relaxed) % n;
        let now = now_ms();
        let usable = |i: usize| {
            let since = self.list[i].down_since_ms.load(Ordering::Relaxed);
            since == 0 || now - since >= DOWN_FOR_MS
        };
        let chosen = (0..n)
            .map(|k| (current + k) % n)
            .find(|&i| usable(i))
            .unwrap_or_else(|| {
                (0..n)
                    .min_by_key(|&i| self.list[i].down_since_ms.load(Ordering::Relaxed))
                    .unwrap_or(current)
            });
        if chosen != current {
            self.current.store(chosen, Ordering::Relaxed);
        }
        chosen
    }

    pub(super) fn kv(&self, i: usize) -> KvClient {
        self.list[i % self.list.len()].kv.clone()
    }

    pub(super) fn watch(&self, i: usize) -> WatchClient {
        self.list[i % self.list.len()].watch.clone()
    }

    pub(super) fn lease(&self, i: usize) -> LeaseClient {
        self.list[i % self.list.len()].lease.clone()
    }

    /// Member `i` answered call `op` (range, get, txn, ...) after `took`.
    pub(super) fn answered(&self, i: usize, op: &str, took: std::time::Duration) {
        let m = &self.list[i % self.list.len()];
        m.down_since_ms.store(0, Ordering::Relaxed);
        crate::metrics::store_call(&m.endpoint, op, took);
    }

    /// Member `i` failed a call: pass it over for a while. Whether another member can take
    /// the next attempt at once.
    pub(super) fn failed(&self, i: usize, why: &str) -> bool {
        let n = self.list.len();
        let m = &self.list[i % n];
        let now = now_ms();
        let was_up = m.down_since_ms.swap(now, Ordering::Relaxed) == 0;
        m.failures.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = m.last_error.lock() {
            why.clone_into(&mut last);
        }
        if was_up && n > 1 {
            tracing::warn!(endpoint = %m.endpoint, why, "etcd member failed a call; using another");
        }
        let next = self.pick();
        next != i % n
    }

    /// Every member's health, in the order the endpoints were given.
    pub fn health(&self) -> Vec<MemberHealth> {
        let current = self.current.load(Ordering::Relaxed) % self.list.len();
        self.list
            .iter()
            .enumerate()
            .map(|(i, m)| MemberHealth {
                endpoint: m.endpoint.clone(),
                up: m.down_since_ms.load(Ordering::Relaxed) == 0,
                in_use: i == current,
                failures: m.failures.load(Ordering::Relaxed),
                last_error: m.last_error.lock().map(|e| e.clone()).unwrap_or_default(),
            })
            .collect()
    }
}
