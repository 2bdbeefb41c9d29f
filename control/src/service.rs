//! The policy application service shared by the REST and gRPC front ends: validate, guard
//! against unasked-for downgrades, store, then wait until this server's index has the write
//! (a server reads its own writes); every change and every refused change goes to the audit
//! trail.

use std::{sync::Arc, time::Duration};

use tlsfleet_policy::{downgrade, BucketName, EffectivePolicy, HttpsConfig, ValidationError};

mod canary;
mod fleet;

use crate::{
    audit::{Audit, AuditRecord, Change, Operation, Outcome},
    clock::now_ms,
    index::{Index, NotLoaded, PolicyEntry},
    registry::Registry,
    store::{PolicyStore, Revision, StoreError, StoredPolicy, DEFAULT_POLICY_KEY},
};

/// What a change is of: a bucket's policy, or the fleet default policy.
#[derive(Clone, Copy, Debug)]
enum Target<'a> {
    Bucket(&'a BucketName),
    Default,
}

impl Target<'_> {
    /// Its key in the store.
    fn key(&self) -> &str {
        match self {
            Target::Bucket(b) => b.as_str(),
            Target::Default => DEFAULT_POLICY_KEY,
        }
    }

    /// Its name in the audit trail ("" for the default policy).
    fn label(&self) -> &str {
        match self {
            Target::Bucket(b) => b.as_str(),
            Target::Default => "",
        }
    }
}

/// How often a write is compared and tried again when the bucket changed under it.
const CONFLICT_RETRIES: usize = 5;

/// Why a policy operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PolicyError {
    /// The policy is refused (`400`, gRPC `InvalidArgument`); nothing was written.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The store is unreachable (`503`, gRPC `Unavailable`); nothing was written.
    #[error("{0}")]
    Unavailable(String),
    /// The write was sent but not confirmed (`503`, gRPC `DeadlineExceeded`): it may have
    /// been applied; read the bucket before writing again.
    #[error("{0}")]
    OutcomeUnknown(String),
    /// A downgrade the caller did not allow (REST `403 AccessDenied`, gRPC
    /// `FailedPrecondition`); nothing was written. The message says what it would let in.
    #[error("{0}")]
    Downgrade(String),
    /// The operation does not apply to the bucket's state (gRPC `FailedPrecondition`): no
    /// canary to promote, or the policy changed since the canary started.
    #[error("{0}")]
    Precondition(String),
    /// A request that is malformed beyond the policy (gRPC `InvalidArgument`), e.g. a canary
    /// selector that selects nothing.
    #[error("{0}")]
    BadRequest(String),
    /// Anything else (`500`, gRPC `Internal`).
    #[error("{0}")]
    Internal(String),
}

impl From<NotLoaded> for PolicyError {
    fn from(e: NotLoaded) -> Self {
        PolicyError::Unavailable(e.to_string())
    }
}

impl From<StoreError> for PolicyError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => PolicyError::Unavailable(m),
            e @ StoreError::OutcomeUnknown(_) => PolicyError::OutcomeUnknown(format!(
                "{e}; read the bucket back before writing it again"
            )),
            other => PolicyError::Internal(other.to_string()),
        }
    }
}

/// The result of a successful put.
#[derive(Clone, Debug)]
pub struct PutOutcome {
    pub revision: Revision,
    pub effective: EffectivePolicy,
    /// The change was a downgrade (which the caller allowed).
    pub downgrade: bool,
}

/// What a put would do (nothing stored).
#[derive(Clone, Debug)]
pub struct DryRun {
    pub effective: EffectivePolicy,
    pub downgrade: Option<tlsfleet_policy::Downgrade>,
    pub impact: tlsfleet_policy::usage::Impact,
    pub merged: crate::usage::Merged,
    /// What the preview could not know.
    pub unknowns: Vec<String>,
}

/// The result of a successful delete.
#[derive(Clone, Debug)]
pub struct DeleteOutcome {
    pub revision: Revision,
    pub existed: bool,
    pub downgrade: bool,
}

/// One page of [`Policies::list`].
#[derive(Clone, Debug)]
pub struct ListPage {
    pub entries: Vec<Arc<PolicyEntry>>,
    /// Index revision the page was read from.
    pub revision: Revision,
    /// Whether entries remain after the last one returned.
    pub more: bool,
}

/// Policies: the one place that writes them.
#[derive(Clone)]
pub struct Policies {
    store: Arc<dyn PolicyStore>,
    index: Index,
    /// The agents, whose certificates decide what the fleet can serve.
    fleet: Option<Registry>,
    /// Where changes are recorded (none: not recorded, as in unit tests of the index).
    audit: Option<Audit>,
    /// The agents' usage reports, for dry runs.
    usage: crate::usage::FleetUsage,
    /// How long a write waits for this server's index to catch up before answering anyway.
    read_your_writes: Duration,
}

/// Whether a PUT's audit record went into the store with its write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Recorded {
    No,
    /// The write was sent with its record (applied: the record is stored; failed: it may be).
    Attempted,
}

impl Policies {
    pub fn new(store: Arc<dyn PolicyStore>, index: Index) -> Self {
        Self {
            store,
            index,
            fleet: None,
            audit: None,
            usage: crate::usage::FleetUsage::default(),
            read_your_writes: Duration::from_secs(5),
        }
    }

    /// Refuses policies that some connected agent's certificate cannot serve.
    pub fn with_fleet(mut self, registry: Registry) -> Self {
        self.fleet = Some(registry);
        self
    }

    /// Records every change and refused change in `audit`.
    pub fn with_audit(mut self, audit: Audit) -> Self {
        self.audit = Some(audit);
        self
    }

    /// Dry runs compute their impact from `usage`.
    pub fn with_usage(mut self, usage: crate::usage::FleetUsage) -> Self {
        self.usage = usage;
        self
    }

    /// What putting `config` on `bucket` would do, storing nothing: the effective policy,
    /// whether it is a downgrade (and what it would let in), and what it would have refused of
    /// the bucket's traffic in the last `since` (all kept when `None`).
    pub async fn dry_run(
        &self,
        bucket: &BucketName,
        mut config: HttpsConfig,
        since: Option<Duration>,
        peers: &tlsfleet_policy::usage::Usage,
        unreachable: &[String],
    ) -> Result<DryRun, PolicyError> {
        let effective = self.prepare(&mut config).await?;
        let (_, _, baseline) = self.current(Target::Bucket(bucket)).await?;
        let downgrade = downgrade(&baseline, &config)?;
        let now = now_ms() / 1000;
        let mut merged = self.usage.query(bucket.as_str(), since, now);
        merged.usage.merge(peers);
        let impact = merged.usage.impact(effective.key);
        let mut unknowns = Vec::new();
        if merged.usage.total_handshakes() == 0 && merged.usage.total_requests() == 0 {
            unknowns.push("no traffic of this bucket was reported: nothing to preview".to_owned());
        } else if let Some(since) = since {
            let covered = merged.newest_unix - merged.oldest_unix;
            let asked = i64::try_from(since.as_secs()).unwrap_or(i64::MAX);
            if covered < asked {
                unknowns.push(format!(
                    "reports cover {covered} s of the {asked} s asked for (they are kept for {} s)",
                    crate::usage::RETENTION.as_secs()
                ));
            }
        }
        if impact.clients.iter().any(|c| !c.whole) {
            unknowns.push(
                "clients are counted per version: of a version refused only in some suites, \
                 which clients used those suites is not known"
                    .to_owned(),
            );
        }
        for u in unreachable {
            unknowns.push(format!("a control server with agents did not answer: {u}"));
        }
        Ok(DryRun {
            effective,
            downgrade,
            impact,
            merged,
            unknowns,
        })
    }

    pub fn audit(&self) -> Option<&Audit> {
        self.audit.as_ref()
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The agent registry, when this server has agents.
    pub fn fleet(&self) -> Option<&Registry> {
        self.fleet.as_ref()
    }

    /// The store's members' health (see `PolicyStore::members`).
    pub fn store_members(&self) -> Vec<crate::store::MemberHealth> {
        self.store.members()
    }

    /// Validates and stores `config` for `bucket` on behalf of `change`; returns once the
    /// store committed it. A downgrade needs `change.allow_downgrade`. Recorded in the audit
    /// trail either way.
    pub async fn put(
        &self,
        bucket: &BucketName,
        config: HttpsConfig,
        change: &Change,
    ) -> Result<PutOutcome, PolicyError> {
        self.put_target(Target::Bucket(bucket), Operation::Put, config, change)
            .await
    }

    /// Sets the fleet default policy (for buckets without one, and connections with no SNI or
    /// the bare domain). A downgrade needs `change.allow_downgrade`.
    pub async fn put_default(
        &self,
        config: HttpsConfig,
        change: &Change,
    ) -> Result<PutOutcome, PolicyError> {
        self.put_target(Target::Default, Operation::PutDefault, config, change)
            .await
    }

    async fn put_target(
        &self,
        target: Target<'_>,
        operation: Operation,
        config: HttpsConfig,
        change: &Change,
    ) -> Result<PutOutcome, PolicyError> {
        let mut record = AuditRecord::new(change, operation, target.label());
        let mut recorded = Recorded::No;
        let result = self
            .put_inner(target, config, change, &mut record, &mut recorded)
            .await;
        match (&result, recorded, &self.audit) {
            // Stored with the change: only its log line is left to write.
            (Ok(outcome), Recorded::Attempted, Some(audit)) => {
                record.outcome = Outcome::Applied;
                record.revision = outcome.revision;
                audit.stored_with_change(&record);
            }
            _ => {
                if recorded == Recorded::Attempted {
                    // A write that failed may still have stored its applied record (an
                    // unknown outcome): the refusal gets a key of its own, never overwriting it.
                    record.time_unix_ms = now_ms().max(record.time_unix_ms + 1);
                }
                self.finish(record, &result.as_ref().map(|o| (o.revision, o.downgrade)))
                    .await;
            }
        }
        result
    }

    async fn put_inner(
        &self,
        target: Target<'_>,
        mut config: HttpsConfig,
        change: &Change,
        record: &mut AuditRecord,
        recorded: &mut Recorded,
    ) -> Result<PutOutcome, PolicyError> {
        let effective = self.prepare(&mut config).await;
        // As asked (normalised once it passed the bounds), refused or not.
        record.after = Some(config.clone());
        let effective = effective?;
        let value = StoredPolicy {
            config: config.clone(),
            updated_by: change.actor.clone(),
            updated_at_unix_ms: now_ms(),
            ..Default::default()
        };
        let bytes = value
            .encode()
            .map_err(|e| PolicyError::Internal(e.to_string()))?;
        // The guard compares with the policy the write replaces: the write happens only if
        // that is still the bucket's policy, else the comparison is made again.
        for _ in 0..CONFLICT_RETRIES {
            let (before, expected, baseline) = self.current(target).await?;
            record.before = before;
            let downgraded = self.guard(&baseline, &config, change, record)?;
            let written = match &self.audit {
                // The record goes in the same write: one round trip, never a change without it.
                Some(_) => {
                    *recorded = Recorded::Attempted;
                    let audit = crate::audit::Audit::with_change(record);
                    self.store
                        .put_if_recorded(target.key(), bytes.clone(), expected, audit)
                        .await
                }
                None => {
                    self.store
                        .put_if(target.key(), bytes.clone(), expected)
                        .await
                }
            };
            match written {
                Ok(revision) => {
                    self.index.wait_for(revision, self.read_your_writes).await;
                    return Ok(PutOutcome {
                        revision,
                        effective,
                        downgrade: downgraded,
                    });
                }
                Err(StoreError::Conflict { current }) => self.catch_up(current).await,
                Err(e) => return Err(e.into()),
            }
        }
        Err(PolicyError::Unavailable(format!(
            "{target:?} kept changing under this write ({CONFLICT_RETRIES} tries); try again"
        )))
    }

    /// The target's stored policy as this server's index has it, its mod revision, and what
    /// a change is compared with: the stored policy, else what applies without one (for a
    /// bucket the fleet default policy, for the default the built-in one: management off).
    async fn current(
        &self,
        target: Target<'_>,
    ) -> Result<(Option<HttpsConfig>, Revision, HttpsConfig), PolicyError> {
        let view = self.index.ready_view(self.read_your_writes).await?;
        let default = view.default_policy().map(|d| d.stored.config.clone());
        let (stored, revision) = match target {
            Target::Bucket(b) => view.get(b.as_str()).map_or((None, 0), |e| {
                (Some(e.policy.config.clone()), e.mod_revision)
            }),
            Target::Default => (
                default.clone(),
                view.default_policy().map_or(0, |d| d.mod_revision),
            ),
        };
        let fallback = match target {
            Target::Bucket(_) => default.unwrap_or_else(HttpsConfig::disabled),
            Target::Default => HttpsConfig::disabled(),
        };
        let baseline = stored.clone().unwrap_or(fallback);
        Ok((stored, revision, baseline))
    }

    /// After a conflict: waits until the index has the write that got in first (a delete has
    /// no mod revision to wait for: the store's current revision then).
    async fn catch_up(&self, current: Revision) {
        let target = if current > 0 {
            current
        } else {
            self.store.revision().await.unwrap_or(0)
        };
        self.index.wait_for(target, self.read_your_writes).await;
    }

    /// Bounds, normalises and validates `config`; its effective policy, if the fleet can
    /// serve it (what it cannot is refused whatever the caller allows).
    async fn prepare(&self, config: &mut HttpsConfig) -> Result<EffectivePolicy, PolicyError> {
        // Bounded lists first: nothing below may grow with a hostile list.
        config.check_bounds()?;
        config.normalize();
        let effective = config.effective()?;
        self.check_fleet_can_serve(&effective).await?;
        Ok(effective)
    }

    /// `Err(Downgrade)` for a downgrade the caller did not allow; else whether it is one.
    fn guard(
        &self,
        before: &HttpsConfig,
        after: &HttpsConfig,
        change: &Change,
        record: &mut AuditRecord,
    ) -> Result<bool, PolicyError> {
        let Some(d) = downgrade(before, after)? else {
            return Ok(false);
        };
        record.downgrade = true;
        record.reason = format!("downgrade: {d}");
        if change.allow_downgrade {
            return Ok(true);
        }
        Err(PolicyError::Downgrade(format!(
            "this change is a downgrade: it {d}; it needs an explicit allowance{}",
            match change.via {
                crate::audit::Via::Grpc => " (allow_downgrade, tlsfleetctl --allow-downgrade)",
                crate::audit::Via::Rest =>
                    " (this server refuses REST downgrades: --rest-downgrades refuse; use \
                     tlsfleetctl --allow-downgrade, or ask the operator for --rest-downgrades \
                     allow)",
            }
        )))
    }

    /// Records how a change ended.
    async fn finish(
        &self,
        mut record: AuditRecord,
        result: &Result<(Revision, bool), &PolicyError>,
    ) {
        let Some(audit) = &self.audit else {
            return;
        };
        match result {
            Ok((revision, _)) => {
                record.outcome = Outcome::Applied;
                record.revision = *revision;
            }
            Err(e) => {
                record.outcome = Outcome::Refused;
                record.reason = e.to_string();
            }
        }
        audit.record(record).await;
    }

    /// Deletes a bucket's policy (it falls back to the default: management disabled). Deleting
    /// a policy that keeps anything out is a downgrade.
    pub async fn delete(
        &self,
        bucket: &BucketName,
        change: &Change,
    ) -> Result<DeleteOutcome, PolicyError> {
        self.delete_target(Target::Bucket(bucket), Operation::Delete, change)
            .await
    }

    /// Clears the fleet default policy (back to the built-in one: management off).
    pub async fn delete_default(&self, change: &Change) -> Result<DeleteOutcome, PolicyError> {
        self.delete_target(Target::Default, Operation::DeleteDefault, change)
            .await
    }

    async fn delete_target(
        &self,
        target: Target<'_>,
        operation: Operation,
        change: &Change,
    ) -> Result<DeleteOutcome, PolicyError> {
        let mut record = AuditRecord::new(change, operation, target.label());
        let result = self.delete_inner(target, change, &mut record).await;
        self.finish(record, &result.as_ref().map(|o| (o.revision, o.downgrade)))
            .await;
        result
    }

    async fn delete_inner(
        &self,
        target: Target<'_>,
        change: &Change,
        record: &mut AuditRecord,
    ) -> Result<DeleteOutcome, PolicyError> {
        for _ in 0..CONFLICT_RETRIES {
            let (before, expected, _) = self.current(target).await?;
            record.before = before.clone();
            // What applies once it is gone: the default policy (for a bucket), or the built-in.
            let after = match target {
                Target::Bucket(_) => {
                    let view = self.index.ready_view(self.read_your_writes).await?;
                    view.default_policy()
                        .map_or_else(HttpsConfig::disabled, |d| d.stored.config.clone())
                }
                Target::Default => HttpsConfig::disabled(),
            };
            let downgraded = match before {
                Some(before) => self.guard(&before, &after, change, record)?,
                None => false,
            };
            match self.store.delete_if(target.key(), expected).await {
                Ok((revision, existed)) => {
                    self.index.wait_for(revision, self.read_your_writes).await;
                    return Ok(DeleteOutcome {
                        revision,
                        existed,
                        downgrade: downgraded,
                    });
                }
                Err(StoreError::Conflict { current }) => self.catch_up(current).await,
                Err(e) => return Err(e.into()),
            }
        }
        Err(PolicyError::Unavailable(format!(
            "{target:?} kept changing under this delete ({CONFLICT_RETRIES} tries); try again"
        )))
    }

    /// The bucket's entry (None: never set) and the index revision, from memory.
    /// Waits for the index's first load; `Unavailable` if it has not loaded yet.
    pub async fn get(
        &self,
        bucket: &BucketName,
    ) -> Result<(Option<Arc<PolicyEntry>>, Revision), PolicyError> {
        let view = self.index.ready_view(self.read_your_writes).await?;
        Ok((view.get(bucket.as_str()), view.revision()))
    }

    /// The fleet default policy (None: the built-in one) and the index revision.
    pub async fn get_default(
        &self,
    ) -> Result<(Option<Arc<crate::index::DefaultEntry>>, Revision), PolicyError> {
        let view = self.index.ready_view(self.read_your_writes).await?;
        Ok((view.default_policy().cloned(), view.revision()))
    }

    /// Entries whose bucket starts with `prefix`, after `start_after`, at most `limit`.
    pub async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, PolicyError> {
        let view = self.index.ready_view(self.read_your_writes).await?;
        let (entries, more) = view.range(prefix, start_after, limit);
        Ok(ListPage {
            entries,
            revision: view.revision(),
            more,
        })
    }
}
