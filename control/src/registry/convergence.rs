//! How long a change takes to reach this server's agents: from the change reaching the
//! server's index (its commit, as the store's watch delivers it) to the ACK of the last of the
//! agents that were on this server's streams then (an agent that leaves no longer counts).
//!
//! Each revision with a change waits for the number of agents behind it when it came; an
//! agent's ACK that moves it from `a` to `b` counts for every waiting revision in `(a, b]`
//! that it was counted for (it was connected before the revision came). At most
//! [`MAX_PENDING`] revisions wait; the oldest beyond that, and any waiting for longer than
//! [`MAX_WAIT`], are dropped and counted as abandoned.

use std::{
    collections::BTreeMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use prometheus_client::metrics::{counter::Counter, histogram::Histogram};

/// Revisions waiting for their last ACK, at most.
pub const MAX_PENDING: usize = 4096;
/// A revision waits at most this long for its last ACK.
pub const MAX_WAIT: Duration = Duration::from_secs(3600);

/// Upper bounds of the convergence histogram, in seconds.
pub const BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// The waiting revisions, and what was measured.
pub struct Convergence {
    pending: Mutex<Pending>,
    /// Seconds from each change to its last ACK.
    pub seconds: Histogram,
    /// Revisions dropped before their last ACK (too many waiting, or waiting too long).
    pub abandoned: Counter,
}

#[derive(Default)]
struct Pending {
    waiting: BTreeMap<i64, Waiting>,
    newest: i64,
}

struct Waiting {
    since: Instant,
    agents: usize,
}

impl Default for Convergence {
    fn default() -> Self {
        Self {
            pending: Mutex::default(),
            seconds: Histogram::new(BUCKETS),
            abandoned: Counter::default(),
        }
    }
}

impl Convergence {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // Counts only: a panic elsewhere leaves nothing that matters inconsistent.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The newest revision tracked: an agent that connects now counts for later ones only.
    pub fn newest(&self) -> i64 {
        self.lock().newest
    }

    /// A change at `revision` reached the index; of the `agents` connected, `behind` have not
    /// acknowledged it yet (an agent can answer before the change is counted here: when none is
    /// left, it converged at once).
    pub fn committed(&self, revision: i64, agents: usize, behind: usize) {
        let mut p = self.lock();
        if revision <= p.newest {
            return;
        }
        p.newest = revision;
        if behind == 0 {
            if agents > 0 {
                self.seconds.observe(0.0);
            }
            return;
        }
        let now = Instant::now();
        p.waiting.insert(
            revision,
            Waiting {
                since: now,
                agents: behind,
            },
        );
        while p.waiting.len() > MAX_PENDING {
            p.waiting.pop_first();
            self.abandoned.inc();
        }
        while p
            .waiting
            .first_key_value()
            .is_some_and(|(_, w)| now.duration_since(w.since) > MAX_WAIT)
        {
            p.waiting.pop_first();
            self.abandoned.inc();
        }
    }

    /// An agent counted from `counted_from` on went from `from` to `to`.
    pub fn advanced(&self, from: i64, to: i64, counted_from: i64) {
        let lower = from.max(counted_from);
        if to <= lower {
            return;
        }
        self.settle(lower, Some(to));
    }

    /// An agent counted from `counted_from` on left at `applied`: it no longer counts.
    pub fn left(&self, applied: i64, counted_from: i64) {
        self.settle(applied.max(counted_from), None);
    }

    /// One agent fewer for every revision in `(lower, upper]`; those with none left are done.
    fn settle(&self, lower: i64, upper: Option<i64>) {
        let mut p = self.lock();
        let mut done = Vec::new();
        let range = match upper {
            Some(u) => p.waiting.range_mut(lower + 1..=u),
            None => p.waiting.range_mut(lower + 1..),
        };
        for (rev, w) in range {
            w.agents = w.agents.saturating_sub(1);
            if w.agents == 0 {
                done.push(*rev);
            }
        }
        for rev in done {
            if let Some(w) = p.waiting.remove(&rev) {
                self.seconds.observe(w.since.elapsed().as_secs_f64());
            }
        }
    }

    /// Revisions waiting, and how long the oldest has.
    pub fn waiting(&self) -> (usize, Duration) {
        let p = self.lock();
        let oldest = p
            .waiting
            .first_key_value()
            .map_or(Duration::ZERO, |(_, w)| w.since.elapsed());
        (p.waiting.len(), oldest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(c: &Convergence) -> u64 {
        let mut text = String::new();
        let mut r = prometheus_client::registry::Registry::default();
        r.register("c", "c", c.seconds.clone());
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("c_count "))
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    #[test]
    fn a_change_converges_when_the_last_agent_behind_it_answers() {
        let c = Convergence::default();
        // Two agents at 5; revision 6 comes.
        c.committed(6, 2, 2);
        c.advanced(5, 6, 0);
        assert_eq!(
            (observed(&c), c.waiting().0),
            (0, 1),
            "one agent still behind"
        );
        // An agent that connected after 6 came does not count for it.
        c.advanced(0, 6, 6);
        assert_eq!(observed(&c), 0);
        c.advanced(5, 6, 0);
        assert_eq!((observed(&c), c.waiting().0), (1, 0));
    }

    #[test]
    fn one_ack_settles_every_revision_it_covers_and_a_leaving_agent_stops_counting() {
        let c = Convergence::default();
        for rev in 11..=13 {
            c.committed(rev, 2, 2);
        }
        // A coalesced delta: one ACK for 11..=13.
        c.advanced(10, 13, 0);
        assert_eq!(c.waiting().0, 3);
        // The other agent applies 11, then leaves: 12 and 13 wait for nobody.
        c.advanced(10, 11, 0);
        assert_eq!((observed(&c), c.waiting().0), (1, 2));
        c.left(11, 0);
        assert_eq!((observed(&c), c.waiting().0), (3, 0));
        // Old revisions are not tracked; one nobody is behind converged at once; one with no
        // agent at all is not measured.
        c.committed(12, 1, 1);
        c.committed(20, 2, 0);
        assert_eq!((observed(&c), c.waiting().0, c.newest()), (4, 0, 20));
        c.committed(21, 0, 0);
        assert_eq!((observed(&c), c.newest()), (4, 21));
    }

    #[test]
    fn at_most_max_pending_wait() {
        let c = Convergence::default();
        for rev in 1..=(MAX_PENDING as i64 + 10) {
            c.committed(rev, 1, 1);
        }
        assert_eq!(c.waiting().0, MAX_PENDING);
        assert_eq!(c.abandoned.get(), 10);
    }
}
