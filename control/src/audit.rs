//! The audit trail: every change of a policy, and every refused change, with who (access key),
//! from where (peer address), when, the request id, the policy before and after, the revision,
//! whether it was a downgrade, and why it was refused.
//!
//! Each record is written as one JSON log line (target `tlsfleet::audit`) and kept in the store
//! ([`AuditLog`]) under `<unix ms, 13 digits>-<request id>`, so the trail reads in time order.
//! A PUT's record is stored in the same store write as its change
//! (`PolicyStore::put_if_recorded`): an applied PUT always has its record, at no extra round
//! trip. Other records (refused changes, deletes, canaries) go through the writer below.
//! Records older than the retention (`--audit-retention`, default 90 days) are trimmed every
//! ten minutes. A record is handed to one writer task right after the change commits (or is
//! refused); the caller waits for it to be stored for at most [`WAIT_STORED`], so a dead store
//! delays an answer by at most that. The writer stores what is queued together, up to
//! [`AUDIT_BATCH`] records in one write, so concurrent changes do not wait for each other's
//! records one by one. The writer retries a record a few times and keeps at
//! most [`QUEUE`] waiting; a record it cannot store is logged as an error (the JSON line is
//! there in any case). A server that dies between a change and its record loses the record,
//! never the change.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, OnceLock,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use tlsfleet_policy::HttpsConfig;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::{
    clock::now_ms,
    store::{AuditLog, AuditWrite, StoreError, AUDIT_BATCH},
};

/// How long records are kept by default.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);
/// How often old records are trimmed.
const TRIM_EVERY: Duration = Duration::from_secs(600);
/// Records waiting for the writer; beyond this they are only logged.
pub const QUEUE: usize = 10_000;
/// How long a change waits for its record to be stored before answering anyway.
pub const WAIT_STORED: Duration = Duration::from_secs(1);
/// Records read from the store per scan while filtering by bucket.
const SCAN: usize = 500;
/// Records scanned at most per history call (the caller continues with the page token).
const MAX_SCANNED: usize = 20_000;

/// Where a change came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    Rest,
    Grpc,
}

/// Who asks for a change, and how.
#[derive(Clone, Debug)]
pub struct Change {
    /// Access key id.
    pub actor: String,
    pub peer: Option<SocketAddr>,
    pub request_id: String,
    pub via: Via,
    /// The caller accepts a downgrade.
    pub allow_downgrade: bool,
}

/// What was asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Put,
    Delete,
    /// Of the fleet default policy (`bucket` is empty).
    PutDefault,
    DeleteDefault,
    /// A policy staged on some agents (`bucket`'s canary), its promotion, its end.
    PutCanary,
    PromoteCanary,
    AbortCanary,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Applied,
    Refused,
}

/// One record of the trail (its JSON is the stored form and the log line).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub time_unix_ms: i64,
    pub key_id: String,
    pub peer: Option<String>,
    pub request_id: String,
    pub via: Via,
    pub operation: Operation,
    pub bucket: String,
    pub before: Option<HttpsConfig>,
    pub after: Option<HttpsConfig>,
    /// 0 when refused.
    pub revision: i64,
    pub downgrade: bool,
    pub outcome: Outcome,
    /// Why it was refused; for an applied downgrade, what it let in.
    pub reason: String,
}

impl AuditRecord {
    /// A record of `change` on `bucket`, stamped now.
    pub fn new(change: &Change, operation: Operation, bucket: &str) -> Self {
        Self {
            time_unix_ms: now_ms(),
            key_id: change.actor.clone(),
            peer: change.peer.map(|p| p.to_string()),
            request_id: change.request_id.clone(),
            via: change.via,
            operation,
            bucket: bucket.to_owned(),
            before: None,
            after: None,
            revision: 0,
            downgrade: false,
            outcome: Outcome::Refused,
            reason: String::new(),
        }
    }

    /// The store key: sorts by time, unique by request id.
    pub fn key(&self) -> String {
        format!("{:013}-{}", self.time_unix_ms.max(0), self.request_id)
    }
}

/// A fresh request id: 24 uppercase hex characters, unique within this process (seconds,
/// a per-process random tag, a counter) and very likely across processes.
pub fn request_id() -> String {
    static TAG: OnceLock<u32> = OnceLock::new();
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let tag = *TAG.get_or_init(rand::random::<u32>);
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // Truncating the seconds to 32 bits is fine: they only spread ids over time.
    format!("{:08X}{tag:08X}{n:08X}", secs as u32)
}

/// The key every record at or after `unix_ms` sorts at or after.
fn time_key(unix_ms: i64) -> String {
    format!("{:013}", unix_ms.max(0))
}

/// One page of history.
#[derive(Clone, Debug, Default)]
pub struct Page {
    pub records: Vec<AuditRecord>,
    /// The key to continue after, when more may follow.
    pub next: Option<String>,
}

type Job = (AuditRecord, String, tokio::sync::oneshot::Sender<()>);

/// Handle to the trail; cheap to clone.
#[derive(Clone)]
pub struct Audit {
    log: Arc<dyn AuditLog>,
    queue: tokio::sync::mpsc::Sender<Job>,
}

impl Audit {
    /// Starts the writer (which also trims records older than `retention`); it ends when
    /// `shutdown` is cancelled, after storing what is queued (for at most a few seconds).
    pub fn spawn(
        log: Arc<dyn AuditLog>,
        retention: Duration,
        shutdown: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (queue, jobs) = tokio::sync::mpsc::channel(QUEUE);
        let task = tokio::spawn(writer(log.clone(), retention, jobs, shutdown));
        (Self { log, queue }, task)
    }

    /// What the store writes with an applied change (`PolicyStore::put_if_recorded`):
    /// `record` as applied, with the change's revision when the store knows it.
    pub fn with_change(record: &AuditRecord) -> AuditWrite {
        let mut record = record.clone();
        record.outcome = Outcome::Applied;
        record.revision = 0;
        AuditWrite {
            key: record.key(),
            value: Box::new(move |revision| {
                record.revision = revision;
                // Plain data always serializes; an empty value would still mark the change.
                serde_json::to_vec(&record).unwrap_or_default()
            }),
        }
    }

    /// Logs the JSON line of a record already stored with its change.
    pub fn stored_with_change(&self, record: &AuditRecord) {
        match serde_json::to_string(record) {
            Ok(json) => info!(target: "tlsfleet::audit", "{json}"),
            Err(e) => error!(error = %e, "audit record does not serialize"),
        }
    }

    /// Logs `record` as a JSON line and has it stored, waiting at most [`WAIT_STORED`].
    pub async fn record(&self, record: AuditRecord) {
        let json = match serde_json::to_string(&record) {
            Ok(j) => j,
            Err(e) => {
                error!(error = %e, "audit record does not serialize");
                return;
            }
        };
        info!(target: "tlsfleet::audit", "{json}");
        let (done, stored) = tokio::sync::oneshot::channel();
        if let Err(e) = self.queue.try_send((record, json, done)) {
            let (_, json, _) = e.into_inner();
            error!(record = %json, "audit queue full or closed: record NOT stored (logged only)");
            return;
        }
        let _ = tokio::time::timeout(WAIT_STORED, stored).await;
    }

    /// Records at or after `since_unix_ms`, after the key `after`, for which `visible` holds
    /// (a bucket filter and the caller's bucket patterns), at most `limit`.
    pub async fn list(
        &self,
        since_unix_ms: i64,
        after: Option<&str>,
        limit: usize,
        visible: impl Fn(&AuditRecord) -> bool,
    ) -> Result<Page, StoreError> {
        let from = time_key(since_unix_ms);
        let mut cursor = after.map(str::to_owned);
        let mut page = Page::default();
        let mut scanned = 0;
        loop {
            let batch = self.log.list_audit(&from, cursor.as_deref(), SCAN).await?;
            let full_batch = batch.len() == SCAN;
            for entry in batch {
                scanned += 1;
                cursor = Some(entry.key);
                match serde_json::from_slice::<AuditRecord>(&entry.value) {
                    Ok(mut r) if visible(&r) => {
                        // A record stored with its change (etcd) learns its revision here.
                        if r.outcome == Outcome::Applied && r.revision == 0 {
                            r.revision = entry.revision;
                        }
                        page.records.push(r)
                    }
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "skipping an undecodable audit record"),
                }
                if page.records.len() >= limit {
                    page.next = cursor;
                    return Ok(page);
                }
            }
            if !full_batch {
                return Ok(page);
            }
            if scanned >= MAX_SCANNED {
                page.next = cursor;
                return Ok(page);
            }
        }
    }
}

/// Stores queued records (a few tries each) and trims old ones, until `shutdown`.
async fn writer(
    log: Arc<dyn AuditLog>,
    retention: Duration,
    mut jobs: tokio::sync::mpsc::Receiver<Job>,
    shutdown: CancellationToken,
) {
    let mut trim = tokio::time::interval(TRIM_EVERY);
    let mut batch = Vec::with_capacity(AUDIT_BATCH);
    loop {
        tokio::select! {
            n = jobs.recv_many(&mut batch, AUDIT_BATCH) => {
                if n == 0 {
                    return;
                }
                store(&*log, std::mem::take(&mut batch)).await;
            }
            _ = trim.tick() => {
                let keep = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
                let before = time_key(now_ms().saturating_sub(keep));
                match log.trim_audit(&before).await {
                    Ok(0) => {}
                    Ok(n) => info!(trimmed = n, "audit records past the retention removed"),
                    Err(e) => warn!(error = %e, "trimming the audit trail failed; will retry"),
                }
            }
            () = shutdown.cancelled() => break,
        }
    }
    // What is queued at shutdown is stored, for a bounded time.
    jobs.close();
    let drain = async {
        while jobs.recv_many(&mut batch, AUDIT_BATCH).await > 0 {
            store(&*log, std::mem::take(&mut batch)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .is_err()
    {
        error!("audit records still queued at shutdown were NOT stored (they are in the log)");
    }
}

/// Stores the records queued together in one write (so a burst of changes costs one store
/// round trip, not one each), then answers each waiting change.
async fn store(log: &dyn AuditLog, jobs: Vec<Job>) {
    let records: Vec<(String, Vec<u8>)> = jobs
        .iter()
        .map(|(record, json, _)| (record.key(), json.clone().into_bytes()))
        .collect();
    for attempt in 0..3u32 {
        match log.append_audit(records.clone()).await {
            Ok(()) => {
                for (_, _, done) in jobs {
                    let _ = done.send(());
                }
                return;
            }
            Err(e) if attempt < 2 => {
                warn!(error = %e, records = records.len(), "storing audit records failed; retrying");
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            Err(e) => {
                for (_, json, _) in &jobs {
                    error!(error = %e, record = %json, "audit record NOT stored");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_time_and_are_unique() {
        let change = Change {
            actor: "AK".into(),
            peer: None,
            request_id: "R1".into(),
            via: Via::Grpc,
            allow_downgrade: false,
        };
        let mut a = AuditRecord::new(&change, Operation::Put, "b");
        a.time_unix_ms = 999;
        let mut b = a.clone();
        b.time_unix_ms = 1_000;
        assert!(a.key() < b.key());
        assert!(time_key(1_000) <= b.key() && time_key(1_001) > b.key());
        assert_eq!(a.key(), "0000000000999-R1");
    }
}
