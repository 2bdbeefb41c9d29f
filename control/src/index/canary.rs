//! Canaries in the index: a policy staged for the agents whose labels match a selector,
//! stored beside the bucket's policy under `_canary:<bucket>` (no bucket name has `_` or `:`),
//! and what each agent gets of the index once canaries are in it (see ARCHITECTURE.md,
//! "Rollouts").
//!
//! What an agent is sent is computed from state, not from transitions: for every bucket an
//! update touches (its stored policy, or its canary), the agent gets what it should enforce
//! now: the canary's policy if the canary selects it, else the stored policy (or the
//! bucket's deletion). A resumed agent, a late joiner and a live stream all come out alike.

use std::{borrow::Cow, collections::BTreeMap, sync::Arc};

use imbl::OrdMap;

use super::state::{PolicyEntry, Update};
use crate::store::{KeyValue, Revision};

/// Keys of canaries start with this.
pub const CANARY_PREFIX: &str = "_canary:";

/// The store key of `bucket`'s canary.
pub fn canary_key(bucket: &str) -> String {
    format!("{CANARY_PREFIX}{bucket}")
}

/// The bucket of a canary key, if `key` is one.
pub fn canary_bucket(key: &str) -> Option<&str> {
    key.strip_prefix(CANARY_PREFIX)
}

/// One bucket's canary.
#[derive(Clone, Debug)]
pub struct CanaryEntry {
    /// The staged policy, under the bucket's name, at the canary key's revisions.
    pub policy: Arc<PolicyEntry>,
    pub selector: BTreeMap<String, String>,
    /// The bucket's stored mod revision when the canary started (0: none): promote
    /// happens only on top of it.
    pub base_mod_revision: Revision,
}

impl CanaryEntry {
    /// The entry a stored canary key-value holds (None, with a warning, if it does not
    /// decode or no longer validates, or selects nothing).
    pub fn decode(kv: &KeyValue) -> Option<Arc<Self>> {
        let bucket = canary_bucket(&kv.key)?;
        let as_policy = KeyValue {
            key: bucket.to_owned(),
            ..kv.clone()
        };
        let policy = PolicyEntry::decode(&as_policy)?;
        let selector = policy.stored.canary_selector.clone();
        if selector.is_empty() {
            tracing::warn!(bucket, "ignoring a canary without a selector");
            return None;
        }
        let base_mod_revision = policy.stored.canary_base_mod_revision;
        Some(Arc::new(Self {
            policy,
            selector,
            base_mod_revision,
        }))
    }

    /// Whether an agent with `labels` is in the canary.
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        crate::registry::selects(&self.selector, labels)
    }
}

/// What an agent with `labels` is sent of `u`: `u` itself when no canary is involved.
pub fn for_agent<'a>(u: &'a Update, labels: &BTreeMap<String, String>) -> Cow<'a, Update> {
    if u.canaries.is_empty() && u.canary_buckets.is_empty() {
        return Cow::Borrowed(u);
    }
    let mut touched: BTreeMap<&str, Option<Arc<PolicyEntry>>> = BTreeMap::new();
    for e in &u.upserts {
        touched.insert(e.bucket.as_str(), Some(e.clone()));
    }
    for d in &u.deletes {
        touched.insert(d.as_str(), None);
    }
    for b in &u.canary_buckets {
        touched.insert(b.as_str(), u.entries.get(b.as_str()).cloned());
    }
    let mut out = u.clone();
    out.upserts.clear();
    out.deletes.clear();
    for (bucket, stored) in touched {
        match desired(bucket, stored, &u.canaries, labels) {
            Some(e) => out.upserts.push(e),
            None => out.deletes.push(bucket.to_owned()),
        }
    }
    Cow::Owned(out)
}

/// What an agent with `labels` enforces for `bucket`: its canary if that selects the agent,
/// else the stored policy (None: the default applies).
fn desired(
    bucket: &str,
    stored: Option<Arc<PolicyEntry>>,
    canaries: &OrdMap<String, Arc<CanaryEntry>>,
    labels: &BTreeMap<String, String>,
) -> Option<Arc<PolicyEntry>> {
    match canaries.get(bucket) {
        Some(c) if c.selects(labels) => Some(c.policy.clone()),
        _ => stored,
    }
}

/// A snapshot's policies for an agent with `labels`: every stored policy, the canary's in
/// its place where a canary selects the agent, and the canaries of buckets without a stored
/// policy that select it.
pub fn snapshot_for<'a>(
    entries: impl Iterator<Item = &'a Arc<PolicyEntry>> + 'a,
    canaries: &'a OrdMap<String, Arc<CanaryEntry>>,
    stored: &'a OrdMap<String, Arc<PolicyEntry>>,
    labels: &'a BTreeMap<String, String>,
) -> impl Iterator<Item = Arc<PolicyEntry>> + 'a {
    let substituted = entries.map(move |e| {
        desired(e.bucket.as_str(), Some(e.clone()), canaries, labels).unwrap_or_else(|| e.clone())
    });
    let only_canary = canaries
        .iter()
        .filter(move |(bucket, c)| !stored.contains_key(bucket.as_str()) && c.selects(labels))
        .map(|(_, c)| c.policy.clone());
    substituted.chain(only_canary)
}
