//! The agent registry on etcd: one lease per store handle (per TTL), kept alive as a whole;
//! conditional writes and removals that only touch entries still on this handle's lease.

use std::{collections::BTreeMap, future::Future, time::Duration};

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use tonic::Code;

use super::{watch, Attempt, EtcdStore};
use crate::store::{AgentLeases, StoreError};

/// etcd's answer to a write on a lease that expired or was revoked.
pub(super) fn is_lease_not_found(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s)
        if s.code() == Code::NotFound && s.message().contains("lease not found"))
}

/// A TTL in whole seconds, at least 1 (etcd's unit).
fn ttl_seconds(ttl: Duration) -> i64 {
    let secs = ttl
        .as_secs()
        .saturating_add(u64::from(ttl.subsec_nanos() > 0))
        .max(1);
    i64::try_from(secs).unwrap_or(i64::MAX)
}

impl EtcdStore {
    /// The registry leases this handle holds, by TTL in seconds.
    fn leases(&self) -> std::sync::MutexGuard<'_, BTreeMap<i64, i64>> {
        // A plain map of ids: nothing half-written to recover from a poisoned lock.
        self.registry_leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// This handle's lease of `ttl_secs`, granted on first use.
    async fn lease_for(&self, ttl_secs: i64) -> Result<i64, Attempt> {
        if let Some(id) = self.leases().get(&ttl_secs) {
            return Ok(*id);
        }
        let id = self.lease_client().grant(ttl_secs, None).await?.id();
        // Two first puts at once may both grant: keep one; the other expires unused.
        Ok(*self.leases().entry(ttl_secs).or_insert(id))
    }

    fn forget_lease(&self, id: i64) {
        self.leases().retain(|_, held| *held != id);
    }

    /// Runs `op` with the id of this handle's lease of `ttl` (granted on first use); a lease
    /// that expired while etcd could not be reached is forgotten and the attempt retried on a
    /// new one.
    async fn on_lease<T, F, Fut>(&self, what: &str, ttl: Duration, op: F) -> Result<T, StoreError>
    where
        F: Fn(i64) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let ttl_secs = ttl_seconds(ttl);
        self.call(what, || async {
            let id = self.lease_for(ttl_secs).await?;
            match op(id).await {
                Ok(value) => Ok(value),
                Err(e) if is_lease_not_found(&e) => {
                    self.forget_lease(id);
                    Err(Attempt::Retry("the registry lease expired".into()))
                }
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    /// Runs `then` on `key` in a transaction that holds only if the key is on one of this
    /// handle's leases; whether it held.
    async fn if_held(&self, what: &str, key: &str, then: TxnOp) -> Result<bool, StoreError> {
        let held: Vec<i64> = self.leases().values().copied().collect();
        for id in held {
            let done = self
                .call(what, || {
                    let (mut kv, key, then) = (self.kv(), key.to_owned(), then.clone());
                    async move {
                        let txn = Txn::new()
                            .when([Compare::lease(key, CompareOp::Equal, id)])
                            .and_then([then]);
                        Ok(kv.txn(txn).await?.succeeded())
                    }
                })
                .await?;
            if done {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

#[async_trait::async_trait]
impl AgentLeases for EtcdStore {
    async fn put_agent(
        &self,
        node_id: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let key = format!("{}{node_id}", self.agents);
        self.on_lease("put_agent", ttl, |id| {
            let (mut kv, key, value) = (self.kv(), key.clone(), value.clone());
            async move {
                kv.put(key, value, Some(PutOptions::new().with_lease(id)))
                    .await
                    .map(|_| ())
            }
        })
        .await
    }

    async fn put_agent_unless_taken(
        &self,
        node_id: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let key = format!("{}{node_id}", self.agents);
        // `ignore_lease` keeps the key on the lease it is on (the one the compare found).
        let then = TxnOp::put(
            key.clone(),
            value.clone(),
            Some(PutOptions::new().with_ignore_lease()),
        );
        if self.if_held("put_agent_unless_taken", &key, then).await? {
            return Ok(true);
        }
        // Not on this handle's lease: made on it only if no entry is there (a missing key's
        // create revision compares as 0), so one another server holds is left alone.
        self.on_lease("put_agent_unless_taken", ttl, |id| {
            let (mut kv, key, value) = (self.kv(), key.clone(), value.clone());
            async move {
                let txn = Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(
                        key,
                        value,
                        Some(PutOptions::new().with_lease(id)),
                    )]);
                Ok(kv.txn(txn).await?.succeeded())
            }
        })
        .await
    }

    async fn remove_agent(&self, node_id: &str) -> Result<(), StoreError> {
        let key = format!("{}{node_id}", self.agents);
        self.if_held("remove_agent", &key, TxnOp::delete(key.clone(), None))
            .await
            .map(|_| ())
    }

    async fn keep_agents_alive(&self) -> Result<bool, StoreError> {
        let held: Vec<i64> = self.leases().values().copied().collect();
        let mut all_kept = true;
        for id in held {
            let kept = self
                .call("keep_agents_alive", || {
                    let mut lease = self.lease_client();
                    async move {
                        // `keep_alive` sends one keep-alive and reads its answer; the stream
                        // is dropped after (one call per refresh, no stream to babysit).
                        match lease.keep_alive(id).await {
                            Ok(_) => Ok(true),
                            Err(etcd_client::Error::LeaseKeepAliveError(why))
                                if why.contains("not found") =>
                            {
                                Ok(false)
                            }
                            Err(e) => Err(e.into()),
                        }
                    }
                })
                .await?;
            if !kept {
                // The lease expired, and its entries with it.
                self.forget_lease(id);
                all_kept = false;
            }
        }
        Ok(all_kept)
    }

    async fn list_agents(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let resp = self
            .call("list_agents", || {
                let (mut kv, prefix) = (self.kv(), self.agents.clone());
                async move {
                    Ok(kv
                        .get(prefix, Some(GetOptions::new().with_prefix()))
                        .await?)
                }
            })
            .await?;
        Ok(resp
            .kvs()
            .iter()
            .filter_map(|kv| Some((watch::strip(&self.agents, kv.key())?, kv.value().to_vec())))
            .collect())
    }
}
