//! Consecutive updates as one: what a Sync stream that fell behind sends instead of every
//! revision in between (its agent then applies and acknowledges once, not once a revision).
//!
//! Only the net change of each bucket is kept (a bucket put and then deleted is a delete),
//! the newest change of the fleet default, every bucket whose canary changed, and the
//! canaries and policies of the last update (what `canary::for_agent` reads).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use super::{state::Encodings, PolicyEntry, Update};

/// `first` and the `rest` that follow it, as one update from `first.from_revision` to the
/// last one's revision. The updates must be consecutive (as a subscription yields them).
pub fn coalesce(first: &Update, rest: &[Arc<Update>]) -> Update {
    let mut changes: BTreeMap<&str, Option<&Arc<PolicyEntry>>> = BTreeMap::new();
    let mut canary_buckets: BTreeSet<&str> = BTreeSet::new();
    let mut default = None;
    let mut last = first;
    for u in std::iter::once(first).chain(rest.iter().map(|u| &**u)) {
        for e in &u.upserts {
            changes.insert(e.bucket.as_str(), Some(e));
        }
        for d in &u.deletes {
            changes.insert(d.as_str(), None);
        }
        canary_buckets.extend(u.canary_buckets.iter().map(String::as_str));
        if u.default.is_some() {
            default.clone_from(&u.default);
        }
        last = u;
    }
    let mut upserts = Vec::new();
    let mut deletes = Vec::new();
    for (bucket, change) in changes {
        match change {
            Some(e) => upserts.push(e.clone()),
            None => deletes.push(bucket.to_owned()),
        }
    }
    Update {
        from_revision: first.from_revision,
        revision: last.revision,
        upserts,
        deletes,
        default,
        canary_buckets: canary_buckets.into_iter().map(str::to_owned).collect(),
        canaries: last.canaries.clone(),
        entries: last.entries.clone(),
        encoded: Encodings::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{
        state::State,
        test_events::{del, kv, names, put},
    };
    use crate::store::Revision;

    #[test]
    fn consecutive_updates_net_out_per_bucket() {
        let mut s = State::default();
        s.replace_all(1, &[kv("aaa", 1)]);
        let steps = [
            vec![put("bbb", 2)],
            vec![del("aaa", 3)],
            vec![del("bbb", 4), put("ccc", 4)],
            vec![],
            vec![put("aaa", 6)],
        ];
        let mut updates: Vec<Arc<Update>> = Vec::new();
        for (i, events) in steps.into_iter().enumerate() {
            let rev = i as Revision + 2;
            updates.push(Arc::new(s.apply(rev, events).unwrap()));
        }
        let merged = coalesce(&updates[0], &updates[1..]);
        assert_eq!((merged.from_revision, merged.revision), (1, 6));
        // aaa: deleted then put again; bbb: put then deleted; ccc: put.
        assert_eq!(names(&merged), (vec!["aaa", "ccc"], vec!["bbb"]));
        assert_eq!(merged.upserts[0].mod_revision, 6);
        assert_eq!(merged.entries.len(), s.view().len());
        // One update alone is itself.
        let one = coalesce(&updates[1], &[]);
        assert_eq!((one.from_revision, one.revision), (2, 3));
        assert_eq!(names(&one), (vec![], vec!["aaa"]));
    }
}
