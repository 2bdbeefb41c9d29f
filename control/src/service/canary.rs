//! Canaries: a bucket's policy staged on the agents a label selector picks, then promoted to
//! the whole fleet or aborted (see ARCHITECTURE.md, "Rollouts"). Stored beside the bucket's
//! policy (`_canary:<bucket>`); the stored policy changes only at promote.

use std::{collections::BTreeMap, sync::Arc};

use tlsfleet_policy::{BucketName, HttpsConfig};

use super::{DeleteOutcome, Policies, PolicyError, PutOutcome, Target};
use crate::{
    audit::{AuditRecord, Change, Operation},
    clock::now_ms,
    index::canary::{canary_key, CanaryEntry},
    store::{StoreError, StoredPolicy},
};

/// Labels in a selector, at most.
pub const MAX_SELECTOR_LABELS: usize = 8;
/// Bytes in a selector's key or value, at most (the Sync hello bounds labels alike).
pub const MAX_LABEL_BYTES: usize = 63;

/// A selector that selects something: 1 to [`MAX_SELECTOR_LABELS`] labels, keys and values
/// of printable ASCII without spaces, at most [`MAX_LABEL_BYTES`] bytes each (keys non-empty).
pub fn check_selector(selector: &BTreeMap<String, String>) -> Result<(), PolicyError> {
    if selector.is_empty() || selector.len() > MAX_SELECTOR_LABELS {
        return Err(PolicyError::BadRequest(format!(
            "a canary selector needs 1 to {MAX_SELECTOR_LABELS} labels, got {}",
            selector.len()
        )));
    }
    let printable = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
    for (k, v) in selector {
        if k.is_empty() || k.len() > MAX_LABEL_BYTES || v.len() > MAX_LABEL_BYTES {
            return Err(PolicyError::BadRequest(format!(
                "canary selector labels are 1 to {MAX_LABEL_BYTES} bytes, values at most \
                 {MAX_LABEL_BYTES}"
            )));
        }
        if !printable(k) || !printable(v) {
            return Err(PolicyError::BadRequest(
                "canary selector labels are printable ASCII without spaces".into(),
            ));
        }
    }
    Ok(())
}

impl Policies {
    /// The bucket's canary, as this server's index has it.
    pub fn canary(&self, bucket: &str) -> Option<Arc<CanaryEntry>> {
        self.index.view()?.canaries().get(bucket).cloned()
    }

    /// Stages `config` for `bucket` on the agents `selector` picks. Judged like a put against
    /// what the bucket serves now (a downgrade needs `change.allow_downgrade`); replaces a
    /// canary already there.
    pub async fn put_canary(
        &self,
        bucket: &BucketName,
        mut config: HttpsConfig,
        selector: BTreeMap<String, String>,
        change: &Change,
    ) -> Result<PutOutcome, PolicyError> {
        let mut record = AuditRecord::new(change, Operation::PutCanary, bucket.as_str());
        let result = async {
            check_selector(&selector)?;
            let effective = self.prepare(&mut config).await;
            record.after = Some(config.clone());
            let effective = effective?;
            let (before, base, baseline) = self.current(Target::Bucket(bucket)).await?;
            record.before = before;
            let downgraded = self.guard(&baseline, &config, change, &mut record)?;
            let value = StoredPolicy {
                config,
                updated_by: change.actor.clone(),
                updated_at_unix_ms: now_ms(),
                canary_selector: selector,
                canary_base_mod_revision: base,
            };
            let bytes = value
                .encode()
                .map_err(|e| PolicyError::Internal(e.to_string()))?;
            let revision = self.store.put(&canary_key(bucket.as_str()), bytes).await?;
            self.index.wait_for(revision, self.read_your_writes).await;
            Ok(PutOutcome {
                revision,
                effective,
                downgrade: downgraded,
            })
        }
        .await;
        self.finish(record, &result.as_ref().map(|o| (o.revision, o.downgrade)))
            .await;
        result
    }

    /// Makes the canary the bucket's policy, fleet-wide: stored only on top of the policy the
    /// canary started from; then the canary ends.
    pub async fn promote_canary(
        &self,
        bucket: &BucketName,
        change: &Change,
    ) -> Result<PutOutcome, PolicyError> {
        let mut record = AuditRecord::new(change, Operation::PromoteCanary, bucket.as_str());
        let result = async {
            let canary = self.require_canary(bucket).await?;
            let config = canary.policy.policy.config.clone();
            record.after = Some(config.clone());
            let (before, _, _) = self.current(Target::Bucket(bucket)).await?;
            record.before = before;
            let value = StoredPolicy {
                config,
                updated_by: change.actor.clone(),
                updated_at_unix_ms: now_ms(),
                ..Default::default()
            };
            let bytes = value
                .encode()
                .map_err(|e| PolicyError::Internal(e.to_string()))?;
            let revision = match self
                .store
                .put_if(bucket.as_str(), bytes, canary.base_mod_revision)
                .await
            {
                Ok(revision) => revision,
                Err(StoreError::Conflict { current }) => {
                    return Err(PolicyError::Precondition(format!(
                        "bucket {bucket}'s policy changed since its canary started (it was at \
                         revision {}, it is at {current}): abort the canary, or start a new one",
                        canary.base_mod_revision
                    )))
                }
                Err(e) => return Err(e.into()),
            };
            // Its agents already enforce this policy: ending the canary changes nothing for
            // anyone. A canary replaced meanwhile is left alone.
            match self
                .store
                .delete_if(&canary_key(bucket.as_str()), canary.policy.mod_revision)
                .await
            {
                Ok(_) | Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            let last = self.store.revision().await.unwrap_or(revision);
            self.index.wait_for(last, self.read_your_writes).await;
            Ok(PutOutcome {
                revision,
                effective: canary.policy.policy.effective.clone(),
                downgrade: false,
            })
        }
        .await;
        self.finish(record, &result.as_ref().map(|o| (o.revision, o.downgrade)))
            .await;
        result
    }

    /// Ends the bucket's canary: its agents go back to the stored policy.
    pub async fn abort_canary(
        &self,
        bucket: &BucketName,
        change: &Change,
    ) -> Result<DeleteOutcome, PolicyError> {
        let mut record = AuditRecord::new(change, Operation::AbortCanary, bucket.as_str());
        let result = async {
            let canary = self.require_canary(bucket).await?;
            record.before = Some(canary.policy.policy.config.clone());
            let (revision, existed) = match self
                .store
                .delete_if(&canary_key(bucket.as_str()), canary.policy.mod_revision)
                .await
            {
                Ok(done) => done,
                Err(StoreError::Conflict { .. }) => {
                    return Err(PolicyError::Precondition(format!(
                        "bucket {bucket}'s canary changed while being aborted; look again"
                    )))
                }
                Err(e) => return Err(e.into()),
            };
            self.index.wait_for(revision, self.read_your_writes).await;
            Ok(DeleteOutcome {
                revision,
                existed,
                downgrade: false,
            })
        }
        .await;
        self.finish(record, &result.as_ref().map(|o| (o.revision, o.downgrade)))
            .await;
        result
    }

    async fn require_canary(&self, bucket: &BucketName) -> Result<Arc<CanaryEntry>, PolicyError> {
        let view = self.index.ready_view(self.read_your_writes).await?;
        view.canaries()
            .get(bucket.as_str())
            .cloned()
            .ok_or_else(|| PolicyError::Precondition(format!("bucket {bucket} has no canary")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn selectors_must_select_something_and_be_bounded() {
        assert!(check_selector(&sel(&[("tier", "canary")])).is_ok());
        assert!(check_selector(&sel(&[])).is_err());
        assert!(check_selector(&sel(&[("", "x")])).is_err());
        assert!(check_selector(&sel(&[("tier", "a b")])).is_err());
        let long = "x".repeat(MAX_LABEL_BYTES + 1);
        assert!(check_selector(&sel(&[("tier", &long)])).is_err());
        let many: BTreeMap<String, String> = (0..=MAX_SELECTOR_LABELS)
            .map(|i| (format!("k{i}"), "v".to_owned()))
            .collect();
        assert!(check_selector(&many).is_err());
    }
}
