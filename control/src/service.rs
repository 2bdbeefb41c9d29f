//! The policy application service shared by the REST and gRPC front ends: validate, store,
//! then wait until this server's index has the write (a server reads its own writes).

use std::{sync::Arc, time::Duration};

use tlsfleet_policy::{
    BucketName, EffectivePolicy, HttpsConfig, ValidationError, ValidationErrorKind,
};

use crate::{
    clock::now_ms,
    index::{Index, NotLoaded, PolicyEntry},
    registry::Registry,
    store::{PolicyStore, Revision, StoreError, StoredPolicy},
};

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
    /// How long a write waits for this server's index to catch up before answering anyway.
    read_your_writes: Duration,
}

impl Policies {
    pub fn new(store: Arc<dyn PolicyStore>, index: Index) -> Self {
        Self {
            store,
            index,
            fleet: None,
            read_your_writes: Duration::from_secs(5),
        }
    }

    /// Refuses policies that some connected agent's certificate cannot serve.
    pub fn with_fleet(mut self, registry: Registry) -> Self {
        self.fleet = Some(registry);
        self
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Validates and stores `config` for `bucket`; returns once the store committed it.
    pub async fn put(
        &self,
        bucket: &BucketName,
        mut config: HttpsConfig,
        actor: &str,
    ) -> Result<PutOutcome, PolicyError> {
        // Bounded lists first: nothing below may grow with a hostile list.
        config.check_bounds()?;
        config.normalize();
        let effective = config.effective()?;
        self.check_fleet_can_serve(&effective).await?;
        let value = StoredPolicy {
            config,
            updated_by: actor.to_owned(),
            updated_at_unix_ms: now_ms(),
        };
        let bytes = value
            .encode()
            .map_err(|e| PolicyError::Internal(e.to_string()))?;
        let revision = self.store.put(bucket.as_str(), bytes).await?;
        self.index.wait_for(revision, self.read_your_writes).await;
        Ok(PutOutcome {
            revision,
            effective,
        })
    }

    /// A policy an agent cannot build would leave its bucket on an older, looser config (or
    /// refused): refuse it here instead, naming the agents whose certificates cannot serve it.
    async fn check_fleet_can_serve(&self, effective: &EffectivePolicy) -> Result<(), PolicyError> {
        let Some(fleet) = &self.fleet else {
            return Ok(());
        };
        for (kind, agents) in fleet.key_types().await {
            if effective.key.servable_with(kind) {
                continue;
            }
            let shown: Vec<&str> = agents.iter().take(5).map(String::as_str).collect();
            let more = agents.len().saturating_sub(shown.len());
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            return Err(PolicyError::Invalid(ValidationError {
                kind: ValidationErrorKind::InvalidArgument,
                message: format!(
                    "the fleet cannot serve this policy: agents with {kind} certificates ({}{more}) \
                     serve only {}-* suites over TLS 1.2, and the policy allows TLS 1.2 with \
                     {}-* suites only; add TLSv1.3 or a {}-* suite",
                    shown.join(", "),
                    kind.family(),
                    kind.other_family(),
                    kind.family(),
                ),
            }));
        }
        Ok(())
    }

    /// Deletes a bucket's policy (it falls back to the default: management disabled).
    pub async fn delete(&self, bucket: &BucketName) -> Result<(Revision, bool), PolicyError> {
        let (revision, existed) = self.store.delete(bucket.as_str()).await?;
        self.index.wait_for(revision, self.read_your_writes).await;
        Ok((revision, existed))
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
