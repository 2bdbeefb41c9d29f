//! Store events and update summaries for the index's unit tests (state, coalescing).

use tlsfleet_policy::HttpsConfig;

use super::Update;
use crate::store::{Event, KeyValue, Revision, StoredPolicy};

/// A stored policy for `bucket` at `rev`.
pub(super) fn kv(bucket: &str, rev: Revision) -> KeyValue {
    let stored = StoredPolicy {
        config: HttpsConfig::disabled(),
        updated_by: "t".into(),
        updated_at_unix_ms: 0,
        ..Default::default()
    };
    KeyValue {
        key: bucket.into(),
        value: stored.encode().unwrap(),
        create_revision: rev,
        mod_revision: rev,
    }
}

pub(super) fn put(bucket: &str, rev: Revision) -> Event {
    Event::Put(kv(bucket, rev))
}

pub(super) fn del(bucket: &str, rev: Revision) -> Event {
    Event::Delete {
        key: bucket.into(),
        mod_revision: rev,
    }
}

/// The buckets an update upserts and deletes.
pub(super) fn names(u: &Update) -> (Vec<&str>, Vec<&str>) {
    (
        u.upserts.iter().map(|e| e.bucket.as_str()).collect(),
        u.deletes.iter().map(String::as_str).collect(),
    )
}
