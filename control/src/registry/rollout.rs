//! Rollout classification: for one revision, which agents enforce it, which are still on
//! their way, and which failed it.

use std::collections::BTreeMap;

use super::{AgentRecord, Phase};

/// Failed agents reported with their errors, at most.
pub const MAX_FAILURES: usize = 100;

/// The agents, classified for one revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rollout {
    /// Connected, and applied the revision (or a later one).
    pub enforcing: Vec<String>,
    /// Not there yet: applying, behind, or disconnected.
    pub pending: Vec<String>,
    /// NACKed the revision or a later one.
    pub failed: Vec<String>,
    /// The first `MAX_FAILURES` failed agents' records (with their NACK errors).
    pub failures: Vec<AgentRecord>,
    /// The latest acknowledgement among the enforcing agents (Unix ms; 0: none).
    pub last_ack_unix_ms: i64,
}

/// Whether `labels` has every `key = value` of `selector` (an empty selector selects all).
pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

impl Rollout {
    /// Classifies `agents` (in their order) for `revision`.
    pub fn classify<'a>(revision: i64, agents: impl IntoIterator<Item = &'a AgentRecord>) -> Self {
        let mut out = Self::default();
        for a in agents {
            out.add(revision, a);
        }
        out
    }

    /// Classifies one more agent for `revision`.
    pub fn add(&mut self, revision: i64, a: &AgentRecord) {
        let id = a.node_id.clone();
        if a.phase == Phase::Degraded && a.nack_revision >= revision {
            self.failed.push(id);
            if self.failures.len() < MAX_FAILURES {
                self.failures.push(a.clone());
            }
        } else if a.applied_revision >= revision && a.is_connected() {
            self.enforcing.push(id);
            self.last_ack_unix_ms = self.last_ack_unix_ms.max(a.acked_unix_ms);
        } else {
            self.pending.push(id);
        }
    }

    pub fn total(&self) -> usize {
        self.enforcing.len() + self.pending.len() + self.failed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str, phase: Phase, applied: i64, nack: i64) -> AgentRecord {
        AgentRecord {
            node_id: id.into(),
            labels: Default::default(),
            applied_revision: applied,
            sent_revision: applied,
            phase,
            errors: vec![],
            nack_revision: nack,
            control_id: "c".into(),
            control_url: String::new(),
            connected_at_unix_ms: 0,
            last_seen_unix_ms: 0,
            acked_unix_ms: applied * 100,
            key_types: vec![],
        }
    }

    #[test]
    fn agents_are_enforcing_pending_or_failed() {
        let agents = [
            agent("in-sync", Phase::InSync, 10, 0),
            agent("ahead", Phase::InSync, 12, 0),
            agent("behind", Phase::Applying, 9, 0),
            agent("gone", Phase::Disconnected, 10, 0),
            agent("nacked", Phase::Degraded, 10, 10),
            agent("nacked-before", Phase::Degraded, 10, 8),
        ];
        let r = Rollout::classify(10, &agents);
        assert_eq!(r.enforcing, ["in-sync", "ahead", "nacked-before"]);
        assert_eq!(r.pending, ["behind", "gone"]);
        assert_eq!(r.failed, ["nacked"]);
        assert_eq!(r.failures, [agents[4].clone()]);
        assert_eq!(
            r.last_ack_unix_ms, 1200,
            "the latest ACK of an enforcing agent"
        );
        assert_eq!(r.total(), agents.len());
    }

    #[test]
    fn a_selector_needs_every_label() {
        let labels: BTreeMap<String, String> = [("zone", "a"), ("tier", "canary")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into();
        let sel = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert!(selects(&sel(&[]), &labels));
        assert!(selects(&sel(&[("zone", "a")]), &labels));
        assert!(selects(&sel(&[("zone", "a"), ("tier", "canary")]), &labels));
        assert!(!selects(&sel(&[("zone", "b")]), &labels));
        assert!(!selects(&sel(&[("zone", "a"), ("rack", "1")]), &labels));
    }
}
