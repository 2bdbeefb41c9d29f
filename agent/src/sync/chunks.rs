//! Reassembling snapshots and deltas the control server sends in chunks (each at most a few
//! hundred KiB, so that neither side ever holds a whole table as one message): chunks with
//! `more = true` are kept, and the whole revision is applied once its last chunk arrives.
//! Snapshot chunks are converted as they arrive: a million-policy snapshot is never held as
//! wire messages, only as the (bucket, config) pairs the table is built from.

use tlsfleet_policy::{BucketName, HttpsConfig};
use tlsfleet_proto::{
    convert,
    v1::{BucketPolicy, Delta, Snapshot},
};

use crate::table::{BucketError, Policies};

/// A snapshot received so far, converted.
#[derive(Debug, Default)]
pub(super) struct Received {
    pub(super) revision: i64,
    /// Each distinct policy held once (see [`Policies`]).
    pub(super) policies: Policies,
    /// Policies that did not convert (NACKed, and their buckets refused).
    pub(super) bad: Vec<BucketError>,
    pub(super) default_policy: Option<BucketPolicy>,
    pub(super) store_id: String,
    more: bool,
}

/// The chunks received so far of the revision being sent.
#[derive(Debug, Default)]
pub(super) struct Assembler {
    snapshot: Option<Received>,
    delta: Option<Delta>,
}

impl Assembler {
    /// Adds a snapshot chunk; the whole snapshot once this was its last chunk.
    pub(super) fn snapshot(&mut self, chunk: Snapshot) -> Option<Received> {
        self.delta = None;
        let mut so_far = match self.snapshot.take() {
            // A chunk of the same snapshot: append.
            Some(so_far) if so_far.revision == chunk.revision => so_far,
            // A new snapshot (first chunk): whatever was pending is superseded.
            _ => Received {
                revision: chunk.revision,
                ..Received::default()
            },
        };
        for policy in chunk.policies {
            match convert(policy) {
                Ok((bucket, config)) => so_far.policies.push(bucket, config),
                Err(e) => so_far.bad.push(e),
            }
        }
        so_far.more = chunk.more;
        // The default policy and the store id come with the last chunk (the id with all).
        so_far.default_policy = chunk.default_policy.or(so_far.default_policy);
        so_far.store_id = chunk.store_id;
        if so_far.more {
            self.snapshot = Some(so_far);
            None
        } else {
            Some(so_far)
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

/// Wire policies converted: the good ones, and a NACK entry for each one that is not.
pub(super) fn convert_all(
    policies: Vec<BucketPolicy>,
) -> (Vec<(BucketName, HttpsConfig)>, Vec<BucketError>) {
    let mut good = Vec::with_capacity(policies.len());
    let mut bad = Vec::new();
    for policy in policies {
        match convert(policy) {
            Ok(entry) => good.push(entry),
            Err(e) => bad.push(e),
        }
    }
    (good, bad)
}

/// One wire policy converted, or the NACK entry saying why not.
fn convert(policy: BucketPolicy) -> Result<(BucketName, HttpsConfig), BucketError> {
    convert::bucket_policy(policy).map_err(|(bucket, e)| BucketError {
        bucket,
        reason: e.to_string(),
    })
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
        // Converted as they came (these carry no config: each one is reported bad).
        assert_eq!((whole.policies.len(), whole.bad.len()), (0, 3));
        assert_eq!(whole.store_id, "s");
        // A newer snapshot's first chunk supersedes an unfinished one.
        assert!(a.snapshot(chunk(6, &["aaa"], true)).is_none());
        let whole = a.snapshot(chunk(7, &["zzz"], false)).unwrap();
        assert_eq!((whole.revision, whole.bad.len()), (7, 1));
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
