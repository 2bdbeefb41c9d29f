//! The TLS usage this server's agents report, per bucket, in one-minute windows kept for
//! [`RETENTION`]: what `GetUsage` answers and what a dry-run's impact is computed from. The
//! counters are per window (`--since` narrows them); the client lists (top networks and
//! User-Agents) are kept once per bucket over the windows kept, which is most of the saving
//! (BENCHMARKS.md).
//!
//! Windows past the retention are dropped as reports come in (idle buckets' too, once a
//! minute). Bounded: at most [`MAX_BUCKETS`] buckets (the busiest are not told apart from the others:
//! a report for a new bucket beyond the cap is dropped and counted in the log) and
//! `RETENTION / 60 s` windows each; every window's lists are bounded by
//! `tlsfleet_policy::usage`.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use tlsfleet_policy::usage::Usage;
use tracing::warn;

/// How long windows are kept.
pub const RETENTION: Duration = Duration::from_secs(3600);
/// Window length.
pub const WINDOW_SECS: i64 = 60;
/// Buckets tracked.
pub const MAX_BUCKETS: usize = 1_000_000;

/// A bucket's usage merged over some windows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Merged {
    pub usage: Usage,
    pub windows: u32,
    pub oldest_unix: i64,
    pub newest_unix: i64,
}

/// A bucket's counters per window, oldest first, and its clients over all of them (client
/// lists are kept once per bucket, not per window: they are most of a window's size).
#[derive(Default)]
struct Bucket {
    windows: VecDeque<(i64, Usage)>,
    clients: [tlsfleet_policy::usage::Clients; 2],
}

type Windows = HashMap<String, Bucket>;

/// Refusals per agent and window (oldest first), for buckets with a canary.
type AgentRefusals = HashMap<String, HashMap<String, VecDeque<(i64, u64)>>>;

/// Buckets whose refusals are tallied per agent (buckets with a canary), and agents per bucket.
pub const MAX_TALLIED_BUCKETS: usize = 10_000;
pub const MAX_TALLIED_AGENTS: usize = 10_000;

/// Handle to the usage store; cheap to clone.
#[derive(Clone, Default)]
pub struct FleetUsage {
    inner: Arc<Mutex<Windows>>,
    /// Per agent, for canaries: what `rollout status --bucket` shows (bounded by
    /// [`MAX_TALLIED_BUCKETS`], [`MAX_TALLIED_AGENTS`] and the retention).
    agents: Arc<Mutex<AgentRefusals>>,
    /// When idle buckets' old windows were last dropped (Unix seconds).
    pruned: Arc<std::sync::atomic::AtomicI64>,
}

impl FleetUsage {
    fn lock(&self) -> MutexGuard<'_, Windows> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds one agent's usage of `bucket` in the window starting at `start_unix`.
    pub fn record(&self, bucket: &str, start_unix: i64, usage: &Usage, now_unix: i64) {
        use std::sync::atomic::Ordering;
        let last = self.pruned.load(Ordering::Relaxed);
        if now_unix >= last + WINDOW_SECS
            && self
                .pruned
                .compare_exchange(last, now_unix, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.prune(now_unix);
        }
        let Some(minute) = window_of(start_unix, now_unix) else {
            return;
        };
        let mut all = self.lock();
        if !all.contains_key(bucket) && all.len() >= MAX_BUCKETS {
            warn!(bucket, "usage: too many buckets tracked; report dropped");
            return;
        }
        let entry = all.entry(bucket.to_owned()).or_default();
        for v in 0..2 {
            entry.clients[v].networks.merge(&usage.clients[v].networks);
            entry.clients[v]
                .user_agents
                .merge(&usage.clients[v].user_agents);
        }
        let mut counters = usage.clone();
        counters.clients = Default::default();
        add_to_window(&mut entry.windows, minute, counters, |u, c| u.merge(&c));
        drop_older(&mut entry.windows, now_unix);
    }

    /// Adds `refused` handshakes that `agent` counted for `bucket` in the window starting at
    /// `start_unix` (kept per agent: `bucket` has a canary).
    pub fn record_agent_refusals(
        &self,
        bucket: &str,
        agent: &str,
        start_unix: i64,
        refused: u64,
        now_unix: i64,
    ) {
        let Some(minute) = window_of(start_unix, now_unix).filter(|_| refused > 0) else {
            return;
        };
        let mut all = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        if !all.contains_key(bucket) && all.len() >= MAX_TALLIED_BUCKETS {
            warn!(
                bucket,
                "usage: too many canary buckets tallied per agent; report dropped"
            );
            return;
        }
        let agents = all.entry(bucket.to_owned()).or_default();
        if !agents.contains_key(agent) && agents.len() >= MAX_TALLIED_AGENTS {
            warn!(
                bucket,
                agent, "usage: too many agents tallied for a canary; report dropped"
            );
            return;
        }
        let windows = agents.entry(agent.to_owned()).or_default();
        add_to_window(windows, minute, refused, |n, r| *n = n.saturating_add(r));
        drop_older(windows, now_unix);
    }

    /// The handshakes each agent refused for `bucket` in the windows that end after
    /// `since_unix` (agents that refused none are not listed).
    pub fn agent_refusals(&self, bucket: &str, since_unix: i64) -> BTreeMap<String, u64> {
        let all = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        let Some(agents) = all.get(bucket) else {
            return BTreeMap::new();
        };
        agents
            .iter()
            .filter_map(|(agent, windows)| {
                let n: u64 = windows
                    .iter()
                    .filter(|(m, _)| *m + WINDOW_SECS > since_unix)
                    .map(|(_, n)| *n)
                    .sum();
                (n > 0).then(|| (agent.clone(), n))
            })
            .collect()
    }

    /// `bucket`'s windows of the last `since` (all kept when `None`), merged.
    pub fn query(&self, bucket: &str, since: Option<Duration>, now_unix: i64) -> Merged {
        let from = since.map_or(i64::MIN, |s| {
            now_unix.saturating_sub(i64::try_from(s.as_secs()).unwrap_or(i64::MAX))
        });
        let all = self.lock();
        let mut out = Merged::default();
        let Some(entry) = all.get(bucket) else {
            return out;
        };
        for (minute, u) in &entry.windows {
            if *minute + WINDOW_SECS <= from {
                continue;
            }
            out.usage.merge(u);
            out.windows += 1;
            if out.oldest_unix == 0 {
                out.oldest_unix = *minute;
            }
            out.newest_unix = *minute + WINDOW_SECS;
        }
        if out.windows > 0 {
            out.usage.clients = entry.clients.clone();
        }
        out
    }

    /// Drops windows past the retention (called now and then; `record` prunes its bucket).
    pub fn prune(&self, now_unix: i64) {
        let mut all = self.lock();
        all.retain(|_, b| {
            drop_older(&mut b.windows, now_unix);
            !b.windows.is_empty()
        });
        drop(all);
        let mut agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        agents.retain(|_, per_agent| {
            per_agent.retain(|_, windows| {
                drop_older(windows, now_unix);
                !windows.is_empty()
            });
            !per_agent.is_empty()
        });
    }

    /// Buckets tracked.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The oldest window start kept at `now_unix`.
fn oldest_kept(now_unix: i64) -> i64 {
    now_unix.saturating_sub(i64::try_from(RETENTION.as_secs()).unwrap_or(i64::MAX))
}

/// The start of the window holding `start_unix`; None when that window is past the retention.
fn window_of(start_unix: i64, now_unix: i64) -> Option<i64> {
    let minute = start_unix.div_euclid(WINDOW_SECS) * WINDOW_SECS;
    (minute >= oldest_kept(now_unix)).then_some(minute)
}

/// Adds `value` to the window starting at `minute` with `add`, or makes that window (windows
/// stay oldest first).
fn add_to_window<T>(
    windows: &mut VecDeque<(i64, T)>,
    minute: i64,
    value: T,
    add: impl FnOnce(&mut T, T),
) {
    match windows.iter_mut().find(|(m, _)| *m == minute) {
        Some((_, w)) => add(w, value),
        None => {
            let at = windows.partition_point(|(m, _)| *m < minute);
            windows.insert(at, (minute, value));
        }
    }
}

/// Drops the windows past the retention at `now_unix`.
fn drop_older<T>(windows: &mut VecDeque<(i64, T)>, now_unix: i64) {
    let oldest = oldest_kept(now_unix);
    while windows.front().is_some_and(|(m, _)| *m < oldest) {
        windows.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use tlsfleet_policy::ServedSuite;

    use super::*;

    fn one(suite: ServedSuite) -> Usage {
        let mut u = Usage::default();
        u.handshake(suite);
        u
    }

    #[test]
    fn reports_merge_per_minute_and_age_out() {
        let f = FleetUsage::default();
        let now = 10_000 * 60;
        f.record(
            "aaa",
            now - 120,
            &one(ServedSuite::Tls13Aes128GcmSha256),
            now,
        );
        f.record(
            "aaa",
            now - 100,
            &one(ServedSuite::Tls13Aes128GcmSha256),
            now,
        );
        f.record(
            "aaa",
            now - 30,
            &one(ServedSuite::EcdheEcdsaAes128GcmSha256),
            now,
        );
        let all = f.query("aaa", None, now);
        assert_eq!((all.windows, all.usage.total_handshakes()), (2, 3));
        let recent = f.query("aaa", Some(Duration::from_secs(60)), now);
        assert_eq!((recent.windows, recent.usage.total_handshakes()), (1, 1));
        assert_eq!(f.query("bbb", None, now), Merged::default());
        // Too old to keep.
        f.record(
            "old",
            now - 7200,
            &one(ServedSuite::Tls13Aes128GcmSha256),
            now,
        );
        assert_eq!(f.query("old", None, now).windows, 0);
        f.prune(now + 3 * 3600);
        assert!(f.is_empty());
    }

    #[test]
    fn refusals_are_tallied_per_agent_and_age_out() {
        let f = FleetUsage::default();
        let now = 10_000 * 60;
        f.record_agent_refusals("aaa", "edge-1", now - 130, 2, now);
        f.record_agent_refusals("aaa", "edge-1", now - 10, 3, now);
        f.record_agent_refusals("aaa", "edge-2", now - 10, 1, now);
        f.record_agent_refusals("aaa", "edge-3", now - 10, 0, now);
        f.record_agent_refusals("aaa", "edge-4", now - 7200, 9, now);
        let all = f.agent_refusals("aaa", 0);
        assert_eq!(
            all.into_iter().collect::<Vec<_>>(),
            vec![("edge-1".to_owned(), 5), ("edge-2".to_owned(), 1)]
        );
        // Since a minute ago: only the current window.
        assert_eq!(f.agent_refusals("aaa", now - 60)["edge-1"], 3);
        assert!(f.agent_refusals("bbb", 0).is_empty());
        f.prune(now + 3 * 3600);
        assert!(f.agent_refusals("aaa", 0).is_empty());
        assert!(f.agents.lock().expect("lock").is_empty());
    }

    #[test]
    fn per_agent_tallies_are_bounded() {
        let f = FleetUsage::default();
        let now = 10_000 * 60;
        for i in 0..MAX_TALLIED_AGENTS + 10 {
            f.record_agent_refusals("aaa", &format!("edge-{i}"), now, 1, now);
        }
        assert_eq!(f.agent_refusals("aaa", 0).len(), MAX_TALLIED_AGENTS);
    }
}
