//! The audit trail in etcd: one key per record under `{prefix}audit/`, so a range read in key
//! order is a read in time order, and trimming is one range delete.

use etcd_client::{DeleteOptions, GetOptions, Txn, TxnOp};

use super::EtcdStore;
use crate::store::{AuditEntry, AuditLog, StoreError, AUDIT_BATCH};

/// The smallest key greater than every key starting with `prefix`.
fn range_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[async_trait::async_trait]
impl AuditLog for EtcdStore {
    async fn append_audit(&self, records: Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
        if records.len() > AUDIT_BATCH {
            return Err(StoreError::Other(format!(
                "{} audit records in one write (at most {AUDIT_BATCH})",
                records.len()
            )));
        }
        let records: Vec<(String, Vec<u8>)> = records
            .into_iter()
            .map(|(key, value)| (format!("{}{key}", self.audit), value))
            .collect();
        // A record is put, never compared: sending the transaction again is harmless.
        self.call("append_audit", || {
            let mut kv = self.kv();
            let ops: Vec<TxnOp> = records
                .iter()
                .map(|(key, value)| TxnOp::put(key.clone(), value.clone(), None))
                .collect();
            async move {
                kv.txn(Txn::new().and_then(ops)).await?;
                Ok(())
            }
        })
        .await
    }

    async fn list_audit(
        &self,
        from: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let mut start = format!("{}{from}", self.audit).into_bytes();
        if let Some(after) = after {
            // The first key after `after`: `after` followed by a NUL.
            let mut next = format!("{}{after}", self.audit).into_bytes();
            next.push(0);
            start = start.max(next);
        }
        let end = range_end(&self.audit);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let resp = self
            .call("list_audit", || {
                let (mut kv, start, end) = (self.kv(), start.clone(), end.clone());
                async move {
                    let options = GetOptions::new().with_range(end).with_limit(limit);
                    Ok(kv.get(start, Some(options)).await?)
                }
            })
            .await?;
        Ok(resp
            .kvs()
            .iter()
            .filter_map(|kv| {
                let key = kv.key_str().ok()?.strip_prefix(self.audit.as_str())?;
                Some(AuditEntry {
                    key: key.to_owned(),
                    value: kv.value().to_vec(),
                    revision: kv.create_revision(),
                })
            })
            .collect())
    }

    async fn trim_audit(&self, before: &str) -> Result<u64, StoreError> {
        let (start, end) = (self.audit.clone(), format!("{}{before}", self.audit));
        let resp = self
            .call("trim_audit", || {
                let (mut kv, start, end) = (self.kv(), start.clone(), end.clone());
                async move {
                    let options = DeleteOptions::new().with_range(end);
                    Ok(kv.delete(start, Some(options)).await?)
                }
            })
            .await?;
        Ok(u64::try_from(resp.deleted()).unwrap_or(0))
    }
}
