//! Reassembling snapshots and deltas the control server sends in chunks (each at most a few
//! hundred KiB, so that neither side ever holds a whole table as one message): chunks with
//! `more = true` are kept, and the whole revision is applied once its last chunk arrives.

use tlsfleet_proto::v1::{Delta, Snapshot};

/// The chunks received so far of the revision being sent.
#[derive(Debug, Default)]
pub(super) struct Assembler {
    snapshot: Option<Snapshot>,
    delta: Option<Delta>,
}

impl Assembler {
    /// Adds a snapshot chunk; the whole snapshot once this was its last chunk.
    pub(super) fn snapshot(&mut self, chunk: Snapshot) -> Option<Snapshot> {
        self.delta = None;
        let whole = match self.snapshot.take() {
            // A chunk of the same snapshot: append.
            Some(mut so_far) if so_far.revision == chunk.revision => {
                so_far.policies.extend(chunk.policies);
                so_far.more = chunk.more;
                // The default policy comes with the last chunk.
                so_far.default_policy = chunk.default_policy.or(so_far.default_policy);
                so_far
            }
            // A new snapshot (first chunk): whatever was pending is superseded.
            _ => chunk,
        };
        if whole.more {
            self.snapshot = Some(whole);
            None
        } else {
            Some(whole)
        }
    }

    /// Adds a delta chunk; the whole delta once this was its last chunk. A chunk of another
    /// delta than the one pending is a broken stream.
    pub(super) fn delta(&mut self, chunk: Delta) -> Result<Option<Delta>, String> {
        if self.snapshot.is_some() {
            return Err("a delta arrived inside a chunked snapshot".to_owned());
        }
        let whole = match self.delta.take() {
            Some(mut so_far) => {
                if (so_far.from_revision, so_far.revision) != (chunk.from_revision, chunk.revision)
                {
                    return Err(format!(
                        "delta chunk {}..{} inside delta {}..{}",
                        chunk.from_revision, chunk.revision, so_far.from_revision, so_far.revision
                    ));
                }
                so_far.upserts.extend(chunk.upserts);
                so_far.deletes.extend(chunk.deletes);
                so_far.more = chunk.more;
                so_far.default_policy = chunk.default_policy.or(so_far.default_policy);
                so_far.default_cleared |= chunk.default_cleared;
                so_far
            }
            None => chunk,
        };
        if whole.more {
            self.delta = Some(whole);
            Ok(None)
        } else {
            Ok(Some(whole))
        }
    }
}

#[cfg(test)]
mod tests {
    use tlsfleet_proto::v1::BucketPolicy;

    use super::*;

    fn p(bucket: &str) -> BucketPolicy {
        BucketPolicy {
            bucket: bucket.into(),
            ..Default::default()
        }
    }

    #[test]
    fn snapshots_are_applied_once_whole() {
        let mut a = Assembler::default();
        let chunk = |rev, names: &[&str], more| Snapshot {
            revision: rev,
            policies: names.iter().map(|n| p(n)).collect(),
            more,
            store_id: "s".into(),
            ..Default::default()
        };
        assert!(a.snapshot(chunk(5, &["aaa"], true)).is_none());
        assert!(a.snapshot(chunk(5, &["bbb"], true)).is_none());
        let whole = a.snapshot(chunk(5, &["ccc"], false)).unwrap();
        assert_eq!(whole.policies.len(), 3);
        // A newer snapshot's first chunk supersedes an unfinished one.
        assert!(a.snapshot(chunk(6, &["aaa"], true)).is_none());
        let whole = a.snapshot(chunk(7, &["zzz"], false)).unwrap();
        assert_eq!((whole.revision, whole.policies.len()), (7, 1));
    }

    #[test]
    fn deltas_are_applied_once_whole_and_must_not_mix() {
        let mut a = Assembler::default();
        let chunk = |from, to, names: &[&str], more| Delta {
            from_revision: from,
            revision: to,
            upserts: names.iter().map(|n| p(n)).collect(),
            deletes: vec![],
            more,
            ..Default::default()
        };
        assert_eq!(a.delta(chunk(1, 9, &["aaa"], true)), Ok(None));
        let whole = a.delta(chunk(1, 9, &["bbb"], false)).unwrap().unwrap();
        assert_eq!(whole.upserts.len(), 2);
        assert_eq!(a.delta(chunk(9, 10, &["aaa"], true)), Ok(None));
        assert!(a.delta(chunk(9, 11, &["bbb"], false)).is_err());
    }
}
