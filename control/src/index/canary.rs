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
        let name: tlsfleet_policy::BucketName = match bucket.parse() {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(key = %kv.key, error = %e, "ignoring a canary key that names no bucket");
                return None;
            }
        };
        let mut stored = match crate::store::StoredPolicy::decode(&kv.value) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(bucket, error = %e, "ignoring an undecodable canary");
                return None;
            }
        };
        let selector = std::mem::take(&mut stored.canary_selector);
        if selector.is_empty() {
            tracing::warn!(bucket, "ignoring a canary without a selector");
            return None;
        }
        let base_mod_revision = stored.canary_base_mod_revision;
        let policy = PolicyEntry::from_stored(name, stored, kv)?;
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

/// Whether any canary has a say in what `u` is for an agent.
fn involves_canaries(u: &Update) -> bool {
    !u.canaries.is_empty() || !u.canary_buckets.is_empty()
}

/// The buckets `u` touches, each with its stored policy after `u` (None: none or deleted).
fn touched(u: &Update) -> BTreeMap<&str, Option<Arc<PolicyEntry>>> {
    let mut touched = BTreeMap::new();
    for e in &u.upserts {
        touched.insert(e.bucket.as_str(), Some(e.clone()));
    }
    for d in &u.deletes {
        touched.insert(d.as_str(), None);
    }
    for b in &u.canary_buckets {
        touched.insert(b.as_str(), u.entries.get(b.as_str()).cloned());
    }
    touched
}

/// The buckets `u` touches whose canary selects an agent with `labels`, in order: what
/// `for_agent` makes of `u` depends on these alone (agents with the same selection get the
/// same delta).
pub fn selection(u: &Update, labels: &BTreeMap<String, String>) -> Vec<String> {
    if !involves_canaries(u) {
        return vec![];
    }
    touched(u)
        .into_keys()
        .filter(|b| u.canaries.get(*b).is_some_and(|c| c.selects(labels)))
        .map(str::to_owned)
        .collect()
}

/// What an agent with `labels` is sent of `u`: `u` itself when no canary is involved.
pub fn for_agent<'a>(u: &'a Update, labels: &BTreeMap<String, String>) -> Cow<'a, Update> {
    if !involves_canaries(u) {
        return Cow::Borrowed(u);
    }
    let touched = touched(u);
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
    stored: &'a OrdMap<Arc<str>, Arc<PolicyEntry>>,
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

#[cfg(test)]
mod tests {
    use tlsfleet_policy::{HttpsConfig, TlsConfig, TlsVersion};

    use super::*;
    use crate::{
        index::state::{Start, State},
        store::{Event, StoredPolicy},
    };

    fn value(versions: &[TlsVersion], selector: &[(&str, &str)]) -> Vec<u8> {
        StoredPolicy {
            config: HttpsConfig {
                tls: TlsConfig {
                    enable: true,
                    tls_versions: versions.to_vec(),
                },
                cipher_suite: None,
            },
            canary_selector: selector
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Default::default()
        }
        .encode()
        .unwrap()
    }

    fn put(key: &str, rev: Revision, v: Vec<u8>) -> Event {
        Event::Put(KeyValue {
            key: key.into(),
            value: v,
            create_revision: rev,
            mod_revision: rev,
        })
    }

    fn labels(tier: &str) -> BTreeMap<String, String> {
        [("tier".to_owned(), tier.to_owned())].into()
    }

    /// The versions an agent would get for `bucket`: Some(versions) or None (deleted).
    fn got(u: &Update, bucket: &str) -> Option<Option<Vec<TlsVersion>>> {
        if u.deletes.iter().any(|d| d == bucket) {
            return Some(None);
        }
        u.upserts
            .iter()
            .find(|e| e.bucket.as_str() == bucket)
            .map(|e| Some(e.policy.config.tls.tls_versions.clone()))
    }

    #[test]
    fn each_agent_gets_what_its_labels_say_in_deltas_and_snapshots() {
        use TlsVersion::{Tls12, Tls13};
        let mut s = State::default();
        s.replace_all(1, &[]);
        let stored = s
            .apply(2, vec![put("logs", 2, value(&[Tls12, Tls13], &[]))])
            .unwrap();
        // No canary: the update is passed through as it is.
        assert!(matches!(
            for_agent(&stored, &labels("canary")),
            Cow::Borrowed(_)
        ));

        let started = s
            .apply(
                3,
                vec![put(
                    &canary_key("logs"),
                    3,
                    value(&[Tls13], &[("tier", "canary")]),
                )],
            )
            .unwrap();
        assert_eq!(started.canary_buckets, ["logs"]);
        assert!(
            !started.is_empty(),
            "a canary-only update advances every agent"
        );
        let canary = for_agent(&started, &labels("canary"));
        assert_eq!(got(&canary, "logs"), Some(Some(vec![Tls13])));
        let main = for_agent(&started, &labels("main"));
        assert_eq!(got(&main, "logs"), Some(Some(vec![Tls12, Tls13])));

        // The stored policy changes under the canary: canary agents keep the canary.
        let changed = s
            .apply(4, vec![put("logs", 4, value(&[Tls12], &[]))])
            .unwrap();
        assert_eq!(
            got(&for_agent(&changed, &labels("canary")), "logs"),
            Some(Some(vec![Tls13]))
        );
        assert_eq!(
            got(&for_agent(&changed, &labels("main")), "logs"),
            Some(Some(vec![Tls12]))
        );

        // A snapshot substitutes too, and includes canaries of buckets with no policy.
        s.apply(
            5,
            vec![put(
                &canary_key("fresh"),
                5,
                value(&[Tls13], &[("tier", "canary")]),
            )],
        );
        let view = s.view().clone();
        let snap = |tier: &str| -> Vec<(String, Vec<TlsVersion>)> {
            let l = labels(tier);
            snapshot_for(view.entries(), view.canaries(), view.entry_map(), &l)
                .map(|e| {
                    (
                        e.bucket.to_string(),
                        e.policy.config.tls.tls_versions.clone(),
                    )
                })
                .collect()
        };
        assert_eq!(
            snap("canary"),
            [("logs".into(), vec![Tls13]), ("fresh".into(), vec![Tls13])]
        );
        assert_eq!(snap("main"), [("logs".into(), vec![Tls12])]);

        // The canary ends: canary agents go back to the stored policy, or to none.
        let ended = s
            .apply(
                6,
                vec![
                    Event::Delete {
                        key: canary_key("logs"),
                        mod_revision: 6,
                    },
                    Event::Delete {
                        key: canary_key("fresh"),
                        mod_revision: 6,
                    },
                ],
            )
            .unwrap();
        let back = for_agent(&ended, &labels("canary"));
        assert_eq!(got(&back, "logs"), Some(Some(vec![Tls12])));
        assert_eq!(got(&back, "fresh"), Some(None));
        assert!(s.view().canaries().is_empty());
        // A subscriber from before the canary began resumes with the buckets it touched.
        let Start::Delta(d) = s.start(2, Some(vec![])) else {
            panic!("a delta for a known revision")
        };
        assert!(
            d.canary_buckets.contains(&"logs".to_owned()),
            "{:?}",
            d.canary_buckets
        );
    }

    #[test]
    fn a_canary_key_is_never_a_bucket_and_needs_a_selector() {
        use TlsVersion::Tls13;
        let mut s = State::default();
        s.replace_all(
            3,
            &[
                KeyValue {
                    key: canary_key("logs"),
                    value: value(&[Tls13], &[]),
                    create_revision: 2,
                    mod_revision: 2,
                },
                KeyValue {
                    key: canary_key("media"),
                    value: value(&[Tls13], &[("tier", "canary")]),
                    create_revision: 3,
                    mod_revision: 3,
                },
            ],
        );
        assert!(s.view().is_empty(), "canary keys are not bucket policies");
        assert_eq!(
            s.view().canaries().keys().cloned().collect::<Vec<_>>(),
            ["media"]
        );
    }
}
