//! The redb layout of the embedded store and the blocking transactions over it.
//!
//! Every function here blocks (redb does file I/O and fsyncs); callers run them on
//! `spawn_blocking`. Each write is one write transaction committed with
//! [`Durability::Immediate`], so it is on disk before the caller hears about it.

use std::collections::BTreeMap;

use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition,
    WriteTransaction,
};

use crate::store::{AuditEntry, AuditWrite, Event, KeyValue, Revision, Snapshot, StoreError};

/// bucket -> (value, create_revision, mod_revision)
const POLICIES: TableDefinition<&str, (&[u8], i64, i64)> = TableDefinition::new("policies");
/// revision -> (bucket, Some((value, create_revision)) for a put, None for a delete).
/// Revisions are dense: every committed write adds exactly one entry.
const LOG: TableDefinition<i64, LogRecord> = TableDefinition::new("log");
type LogRecord = (&'static str, Option<(&'static [u8], i64)>);
/// REVISION and COMPACTED -> revision
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
/// IDENTITY -> the store's identity, made at creation.
const NAMES: TableDefinition<&str, &str> = TableDefinition::new("names");
const IDENTITY: &str = "identity";
/// audit key -> record (keys sort chronologically).
const AUDIT: TableDefinition<&str, &[u8]> = TableDefinition::new("audit");

const REVISION: &str = "revision";
const COMPACTED: &str = "compact_revision";

/// Turns any redb error into a [`StoreError`]. I/O failures are `Unavailable` (nothing was
/// committed, and the REST layer answers 503); the rest is `Other`.
pub(super) trait OrStore<T> {
    fn db(self) -> Result<T, StoreError>;
}

impl<T, E: Into<redb::Error>> OrStore<T> for Result<T, E> {
    fn db(self) -> Result<T, StoreError> {
        self.map_err(|e| match e.into() {
            redb::Error::Io(e) => StoreError::Unavailable(format!("embedded store I/O: {e}")),
            other => StoreError::Other(format!("embedded store: {other}")),
        })
    }
}

/// Creates the tables so that read transactions never meet a missing one, and the store's
/// identity on first use; returns the identity.
pub(super) fn init(db: &Database) -> Result<String, StoreError> {
    let txn = begin_write(db)?;
    txn.open_table(POLICIES).db()?;
    txn.open_table(LOG).db()?;
    txn.open_table(META).db()?;
    txn.open_table(AUDIT).db()?;
    let identity = {
        let mut names = txn.open_table(NAMES).db()?;
        let existing = names.get(IDENTITY).db()?.map(|v| v.value().to_owned());
        match existing {
            Some(id) => id,
            None => {
                let id = format!("file-{}", hex::encode(rand::random::<[u8; 8]>()));
                names.insert(IDENTITY, id.as_str()).db()?;
                id
            }
        }
    };
    txn.commit().db()?;
    Ok(identity)
}

fn begin_write(db: &Database) -> Result<WriteTransaction, StoreError> {
    let mut txn = db.begin_write().db()?;
    txn.set_durability(Durability::Immediate).db()?;
    Ok(txn)
}

fn meta_in(txn: &ReadTransaction, name: &str) -> Result<Revision, StoreError> {
    let meta = txn.open_table(META).db()?;
    Ok(meta.get(name).db()?.map_or(0, |v| v.value()))
}

/// Stores `value` under `key` at the next revision; returns the event to publish.
/// With `expected`, only if the key's mod revision is still that (0: absent).
pub(super) fn put(
    db: &Database,
    key: &str,
    value: &[u8],
    expected: Option<Revision>,
) -> Result<Event, StoreError> {
    put_recorded(db, key, value, expected, None)
}

/// [`put`], also storing `record` in the audit table in the same transaction.
pub(super) fn put_recorded(
    db: &Database,
    key: &str,
    value: &[u8],
    expected: Option<Revision>,
    record: Option<AuditWrite>,
) -> Result<Event, StoreError> {
    let txn = begin_write(db)?;
    let event = {
        let mut meta = txn.open_table(META).db()?;
        let mut policies = txn.open_table(POLICIES).db()?;
        let mut log = txn.open_table(LOG).db()?;
        let now = policies.get(key).db()?.map_or(0, |v| v.value().2);
        if expected.is_some_and(|e| e != now) {
            return Err(StoreError::Conflict { current: now });
        }
        let revision = meta.get(REVISION).db()?.map_or(0, |v| v.value()) + 1;
        let create_revision = policies.get(key).db()?.map_or(revision, |v| v.value().1);
        policies
            .insert(key, (value, create_revision, revision))
            .db()?;
        log.insert(revision, (key, Some((value, create_revision))))
            .db()?;
        meta.insert(REVISION, revision).db()?;
        if let Some(record) = record {
            let value = (record.value)(revision);
            txn.open_table(AUDIT)
                .db()?
                .insert(record.key.as_str(), value.as_slice())
                .db()?;
        }
        Event::Put(KeyValue {
            key: key.to_owned(),
            value: value.to_vec(),
            create_revision,
            mod_revision: revision,
        })
    };
    txn.commit().db()?;
    Ok(event)
}

/// Deletes `key`. Returns the current revision and, when the key existed, the event to
/// publish; a delete of a missing key writes nothing and keeps the revision.
pub(super) fn delete(
    db: &Database,
    key: &str,
    expected: Option<Revision>,
) -> Result<(Revision, Option<Event>), StoreError> {
    let txn = begin_write(db)?;
    let (current, deleted_at) = {
        let mut meta = txn.open_table(META).db()?;
        let mut policies = txn.open_table(POLICIES).db()?;
        let now = policies.get(key).db()?.map_or(0, |v| v.value().2);
        if expected.is_some_and(|e| e != now) {
            return Err(StoreError::Conflict { current: now });
        }
        let current = meta.get(REVISION).db()?.map_or(0, |v| v.value());
        if policies.remove(key).db()?.is_some() {
            let revision = current + 1;
            txn.open_table(LOG)
                .db()?
                .insert(revision, (key, None))
                .db()?;
            meta.insert(REVISION, revision).db()?;
            (current, Some(revision))
        } else {
            (current, None)
        }
    };
    let Some(revision) = deleted_at else {
        txn.abort().db()?;
        return Ok((current, None));
    };
    txn.commit().db()?;
    let event = Event::Delete {
        key: key.to_owned(),
        mod_revision: revision,
    };
    Ok((revision, Some(event)))
}

pub(super) fn get(db: &Database, key: &str) -> Result<Option<KeyValue>, StoreError> {
    let txn = db.begin_read().db()?;
    let policies = txn.open_table(POLICIES).db()?;
    let found = policies.get(key).db()?;
    Ok(found.map(|v| {
        let (value, create_revision, mod_revision) = v.value();
        KeyValue {
            key: key.to_owned(),
            value: value.to_vec(),
            create_revision,
            mod_revision,
        }
    }))
}

/// Every policy and the revision, from one read transaction (one consistent snapshot).
pub(super) fn list(db: &Database) -> Result<Snapshot, StoreError> {
    let mut items = Vec::new();
    let revision = list_pages(db, usize::MAX, |page| {
        items.extend(page);
        true
    })?;
    Ok(Snapshot { revision, items })
}

/// Every policy at one revision (one read transaction), handed to `page` in pages of
/// `page_keys` in key order; stops early when `page` says so. Returns that revision.
pub(super) fn list_pages(
    db: &Database,
    page_keys: usize,
    mut page: impl FnMut(Vec<KeyValue>) -> bool,
) -> Result<Revision, StoreError> {
    let txn = db.begin_read().db()?;
    let revision = meta_in(&txn, REVISION)?;
    let policies = txn.open_table(POLICIES).db()?;
    let mut items = Vec::with_capacity(page_keys.min(4096));
    for entry in policies.iter().db()? {
        let (key, value) = entry.db()?;
        let (value, create_revision, mod_revision) = value.value();
        items.push(KeyValue {
            key: key.value().to_owned(),
            value: value.to_vec(),
            create_revision,
            mod_revision,
        });
        if items.len() >= page_keys && !page(std::mem::take(&mut items)) {
            return Ok(revision);
        }
    }
    if !items.is_empty() {
        page(items);
    }
    Ok(revision)
}

pub(super) fn revision(db: &Database) -> Result<Revision, StoreError> {
    meta_in(&db.begin_read().db()?, REVISION)
}

pub(super) fn compact_revision(db: &Database) -> Result<Revision, StoreError> {
    meta_in(&db.begin_read().db()?, COMPACTED)
}

/// Up to `limit` logged events with revision > `after`, in order; `Compacted` when some of
/// them are gone.
pub(super) fn read_log(
    db: &Database,
    after: Revision,
    limit: usize,
) -> Result<Vec<Event>, StoreError> {
    let txn = db.begin_read().db()?;
    let compacted = meta_in(&txn, COMPACTED)?;
    if after < compacted {
        return Err(StoreError::Compacted {
            requested: after,
            compact_revision: compacted,
        });
    }
    let log = txn.open_table(LOG).db()?;
    let mut events = Vec::new();
    for entry in log.range(after + 1..).db()?.take(limit) {
        let (revision, record) = entry.db()?;
        events.push(to_event(revision.value(), record.value()));
    }
    Ok(events)
}

fn to_event(revision: Revision, (key, put): (&str, Option<(&[u8], i64)>)) -> Event {
    match put {
        Some((value, create_revision)) => Event::Put(KeyValue {
            key: key.to_owned(),
            value: value.to_vec(),
            create_revision,
            mod_revision: revision,
        }),
        None => Event::Delete {
            key: key.to_owned(),
            mod_revision: revision,
        },
    }
}

/// Drops log entries at and below `revision`. Compacting at or below the last compaction is
/// a no-op; above the current revision is an error (as in etcd).
pub(super) fn compact(db: &Database, revision: Revision) -> Result<(), StoreError> {
    let txn = begin_write(db)?;
    let outcome = {
        let mut meta = txn.open_table(META).db()?;
        let current = meta.get(REVISION).db()?.map_or(0, |v| v.value());
        let compacted = meta.get(COMPACTED).db()?.map_or(0, |v| v.value());
        if revision > current {
            Err(StoreError::Other(format!(
                "cannot compact at revision {revision}: the current revision is {current}"
            )))
        } else if revision <= compacted {
            Ok(false)
        } else {
            let mut log = txn.open_table(LOG).db()?;
            log.retain_in(..=revision, |_, _| false).db()?;
            meta.insert(COMPACTED, revision).db()?;
            Ok(true)
        }
    };
    match outcome {
        Ok(true) => txn.commit().db(),
        Ok(false) => txn.abort().db(),
        Err(e) => {
            txn.abort().db()?;
            Err(e)
        }
    }
}

/// The keys whose state differs between revision `after` and now, with the current revision.
///
/// A key created and deleted again after `after` is not reported: it did not exist at
/// `after` and does not exist now (this matches the etcd adapter, which diffs two MVCC reads).
pub(super) fn changes_since(
    db: &Database,
    after: Revision,
) -> Result<(Revision, Vec<String>), StoreError> {
    let txn = db.begin_read().db()?;
    let current = meta_in(&txn, REVISION)?;
    let compacted = meta_in(&txn, COMPACTED)?;
    if after < compacted || after > current {
        // A revision from the future means the asker knew another history: it must relist.
        return Err(StoreError::Compacted {
            requested: after,
            compact_revision: if after > current { current } else { compacted },
        });
    }
    // For each touched key: did it exist at `after`? Its first later event tells: a delete,
    // or a put that did not create it, means it did.
    let mut existed: BTreeMap<String, bool> = BTreeMap::new();
    let log = txn.open_table(LOG).db()?;
    for entry in log.range(after + 1..).db()? {
        let (_, record) = entry.db()?;
        let (key, put) = record.value();
        if !existed.contains_key(key) {
            let was_there = put.is_none_or(|(_, create_revision)| create_revision <= after);
            existed.insert(key.to_owned(), was_there);
        }
    }
    let policies = txn.open_table(POLICIES).db()?;
    let mut keys = Vec::with_capacity(existed.len());
    for (key, was_there) in existed {
        if was_there || policies.get(key.as_str()).db()?.is_some() {
            keys.push(key);
        }
    }
    Ok((current, keys))
}

/// Stores an audit record (one durable write transaction).
pub(super) fn append_audit(db: &Database, records: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
    let txn = begin_write(db)?;
    {
        let mut table = txn.open_table(AUDIT).db()?;
        for (key, value) in records {
            table.insert(key.as_str(), value.as_slice()).db()?;
        }
    }
    txn.commit().db()
}

/// Up to `limit` audit records with key >= `from` and > `after`, in key order.
pub(super) fn list_audit(
    db: &Database,
    from: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<AuditEntry>, StoreError> {
    let txn = db.begin_read().db()?;
    let table = txn.open_table(AUDIT).db()?;
    let mut out = Vec::new();
    for item in table.range(from..).db()? {
        let (k, v) = item.db()?;
        let key = k.value();
        if after.is_some_and(|a| key <= a) {
            continue;
        }
        // The record carries its revision itself (see `put_recorded`).
        out.push(AuditEntry {
            key: key.to_owned(),
            value: v.value().to_vec(),
            revision: 0,
        });
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

/// Deletes the audit records with key < `before`.
pub(super) fn trim_audit(db: &Database, before: &str) -> Result<u64, StoreError> {
    let txn = begin_write(db)?;
    let mut n = 0;
    {
        let mut table = txn.open_table(AUDIT).db()?;
        let old: Vec<String> = table
            .range(..before)
            .db()?
            .map(|item| item.map(|(k, _)| k.value().to_owned()))
            .collect::<Result<_, _>>()
            .db()?;
        for key in old {
            table.remove(key.as_str()).db()?;
            n += 1;
        }
    }
    txn.commit().db()?;
    Ok(n)
}
