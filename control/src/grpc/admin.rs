//! `HttpsConfigService`: Put, Get, List, Delete, ListHistory.

use std::sync::Arc;

use tlsfleet_policy::{BucketName, HttpsConfig};
use tlsfleet_proto::v1::{
    self, https_config_service_server::HttpsConfigService, DeleteDefaultRequest, DeleteRequest,
    DeleteResponse, GetDefaultRequest, GetRequest, GetResponse, ListHistoryRequest,
    ListHistoryResponse, ListRequest, ListResponse, PutDefaultRequest, PutRequest, PutResponse,
};
use tonic::{Request, Response, Status};

use super::{
    calls::{authenticate_request, Caller},
    status,
};
use crate::{
    audit::{AuditRecord, Change, Via},
    auth::Authenticator,
    index::{DefaultEntry, PolicyEntry},
    service::Policies,
};

const DEFAULT_PAGE_SIZE: usize = 100;
const MAX_PAGE_SIZE: usize = 1000;

/// The admin API over gRPC.
pub struct AdminService {
    policies: Policies,
    auth: Arc<Authenticator>,
    /// This server's name, in dry-run answers.
    control_id: String,
    /// For fleet-wide dry runs: where the other control servers are, and how to ask them.
    fleet: Option<(crate::registry::Registry, super::peers::Peers)>,
}

impl AdminService {
    pub fn new(policies: Policies, auth: Arc<Authenticator>, control_id: String) -> Self {
        Self {
            policies,
            auth,
            control_id,
            fleet: None,
        }
    }

    /// Dry runs cover the whole fleet: the registry names the peers, `peers` asks them.
    pub fn with_peers(
        mut self,
        registry: crate::registry::Registry,
        peers: super::peers::Peers,
    ) -> Self {
        self.fleet = Some((registry, peers));
        self
    }

    /// The caller, from the signature over the call's method and request message.
    fn authenticate<T: prost::Message>(&self, req: &Request<T>) -> Result<Caller, Status> {
        authenticate_request(&self.auth, req)
    }
}

/// A change asked for by `who` over gRPC.
fn change<T>(req: &Request<T>, who: &Caller, allow_downgrade: bool) -> Change {
    Change {
        actor: who.who.key.id.clone(),
        peer: req.remote_addr(),
        request_id: who.request_id(),
        via: Via::Grpc,
        allow_downgrade,
    }
}

/// A response carrying the change's request id (`x-tlsfleet-request-id`), as in the trail.
fn with_request_id<T>(message: T, change: &Change) -> Response<T> {
    let mut r = Response::new(message);
    if let Ok(v) = change.request_id.parse() {
        r.metadata_mut().insert("x-tlsfleet-request-id", v);
    }
    r
}

/// A dry run's impact on the wire.
fn impact_wire(d: &crate::service::DryRun, control_id: &str) -> v1::Impact {
    let i = &d.impact;
    v1::Impact {
        handshakes: i.handshakes,
        requests: i.requests,
        refused_handshakes: i.refused_handshakes,
        refused_requests: i.refused_requests,
        refused_handshakes_by_suite: i
            .by_suite
            .iter()
            .map(|(s, h, _)| (s.iana_name().to_owned(), *h))
            .collect(),
        refused_requests_by_suite: i
            .by_suite
            .iter()
            .map(|(s, _, r)| (s.iana_name().to_owned(), *r))
            .collect(),
        clients: i
            .clients
            .iter()
            .map(|c| v1::RefusedClients {
                version: c.version.as_str().to_owned(),
                whole: c.whole,
                clients: Some(tlsfleet_proto::convert::clients_to_wire(
                    c.version, &c.clients,
                )),
            })
            .collect(),
        windows: d.merged.windows,
        oldest_unix: d.merged.oldest_unix,
        newest_unix: d.merged.newest_unix,
        servers: vec![control_id.to_owned()],
        unknowns: d.unknowns.clone(),
    }
}

fn history_record(r: AuditRecord) -> v1::AuditRecord {
    let text = |v: serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    v1::AuditRecord {
        time_unix_ms: r.time_unix_ms,
        key_id: r.key_id,
        peer: r.peer.unwrap_or_default(),
        request_id: r.request_id,
        via: text(serde_json::to_value(r.via).unwrap_or_default()),
        operation: text(serde_json::to_value(r.operation).unwrap_or_default()),
        bucket: r.bucket,
        before: r.before.as_ref().map(Into::into),
        after: r.after.as_ref().map(Into::into),
        revision: r.revision,
        downgrade: r.downgrade,
        outcome: text(serde_json::to_value(r.outcome).unwrap_or_default()),
        reason: r.reason,
    }
}

fn bucket(name: &str) -> Result<BucketName, Status> {
    name.parse()
        .map_err(|e: tlsfleet_policy::InvalidBucketName| Status::invalid_argument(e.to_string()))
}

/// The wire form of an index entry.
pub(crate) fn bucket_policy(e: &PolicyEntry) -> v1::BucketPolicy {
    v1::BucketPolicy {
        effective: Some((&e.policy.effective).into()),
        ..config_only(e)
    }
}

/// [`bucket_policy`] without the effective policy: what Sync sends (agents build what they
/// serve from the config and never read `effective`, half of a policy's bytes).
pub(crate) fn config_only(e: &PolicyEntry) -> v1::BucketPolicy {
    v1::BucketPolicy {
        bucket: e.bucket.to_string(),
        config: Some(e.policy.wire.clone()),
        effective: None,
        mod_revision: e.mod_revision,
        create_revision: e.create_revision,
        canary: None,
    }
}

/// The wire form of a bucket's canary.
pub(crate) fn canary_wire(c: &crate::index::canary::CanaryEntry) -> v1::Canary {
    v1::Canary {
        config: Some(c.policy.policy.wire.clone()),
        effective: Some((&c.policy.policy.effective).into()),
        selector: c.selector.clone(),
        revision: c.policy.mod_revision,
        base_mod_revision: c.base_mod_revision,
        updated_by: c.policy.updated_by.to_string(),
        updated_at_unix_ms: c.policy.updated_at_unix_ms,
    }
}

/// The wire form of the fleet default policy (bucket "").
pub(crate) fn default_wire(d: &DefaultEntry) -> v1::BucketPolicy {
    v1::BucketPolicy {
        bucket: String::new(),
        config: Some((&d.stored.config).into()),
        effective: Some((&d.effective).into()),
        mod_revision: d.mod_revision,
        create_revision: d.create_revision,
        canary: None,
    }
}

/// The built-in default, as `bucket` reads without a policy of its own (and the fleet
/// default, bucket "", before one is set): TLS management disabled, every version and suite
/// rustls serves.
fn builtin_policy(bucket: &str) -> v1::BucketPolicy {
    let config = HttpsConfig::disabled();
    let effective = tlsfleet_policy::EffectivePolicy::all();
    v1::BucketPolicy {
        bucket: bucket.to_owned(),
        config: Some((&config).into()),
        effective: Some((&effective).into()),
        mod_revision: 0,
        create_revision: 0,
        canary: None,
    }
}

/// The policy of a Put: required, and converted to the domain type.
fn config_of(config: Option<v1::HttpsConfig>) -> Result<HttpsConfig, Status> {
    config
        .ok_or_else(|| Status::invalid_argument("config is required"))?
        .try_into()
        .map_err(|e: tlsfleet_proto::convert::ConvertError| Status::invalid_argument(e.to_string()))
}

/// The answer to an applied put (of a bucket or the default).
fn put_response(out: &crate::service::PutOutcome, change: &Change) -> Response<PutResponse> {
    with_request_id(
        PutResponse {
            revision: out.revision,
            effective: Some((&out.effective).into()),
            downgrade: out.downgrade,
            // Read just after the store acknowledged the write.
            committed_unix_ms: crate::clock::now_ms(),
            ..Default::default()
        },
        change,
    )
}

/// The answer to a delete (of a bucket or the default).
fn delete_response(
    out: &crate::service::DeleteOutcome,
    change: &Change,
) -> Response<DeleteResponse> {
    with_request_id(
        DeleteResponse {
            revision: out.revision,
            existed: out.existed,
            downgrade: out.downgrade,
        },
        change,
    )
}

#[tonic::async_trait]
impl HttpsConfigService for AdminService {
    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let who = self.authenticate(&req)?;
        let change = change(&req, &who, req.get_ref().allow_downgrade);
        let mut req = req.into_inner();
        let bucket = bucket(&req.bucket)?;
        who.authorize(Some(bucket.as_str()))?;
        let dry_run = req.dry_run;
        let impact_seconds = req.impact_seconds;
        let selector = std::mem::take(&mut req.canary);
        let config = config_of(req.config)?;
        if !selector.is_empty() {
            if dry_run {
                return Err(Status::invalid_argument(
                    "a dry run previews the policy for the whole fleet: drop the canary selector",
                ));
            }
            let out = self
                .policies
                .put_canary(&bucket, config, selector, &change)
                .await
                .map_err(status)?;
            return Ok(put_response(&out, &change));
        }
        if dry_run {
            let since = (impact_seconds > 0)
                .then(|| std::time::Duration::from_secs(u64::from(impact_seconds)));
            let peers = match &self.fleet {
                Some((registry, peers)) => {
                    peers.fleet(registry, bucket.as_str(), impact_seconds).await
                }
                None => super::peers::FleetAnswer::default(),
            };
            let d = self
                .policies
                .dry_run(&bucket, config, since, &peers.usage, &peers.unreachable)
                .await
                .map_err(status)?;
            let mut impact = impact_wire(&d, &self.control_id);
            impact.servers.extend(peers.servers);
            return Ok(Response::new(PutResponse {
                revision: 0,
                effective: Some((&d.effective).into()),
                downgrade: d.downgrade.is_some(),
                downgrade_reason: d
                    .downgrade
                    .as_ref()
                    .map(|d| d.to_string())
                    .unwrap_or_default(),
                impact: Some(impact),
                committed_unix_ms: 0,
            }));
        }
        let out = self
            .policies
            .put(&bucket, config, &change)
            .await
            .map_err(status)?;
        Ok(put_response(&out, &change))
    }

    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let who = self.authenticate(&req)?;
        let bucket = bucket(&req.get_ref().bucket)?;
        who.authorize(Some(bucket.as_str()))?;
        let (entry, revision) = self.policies.get(&bucket).await.map_err(status)?;
        let mut policy = match entry {
            Some(e) => bucket_policy(&e),
            None => builtin_policy(bucket.as_str()),
        };
        policy.canary = self
            .policies
            .canary(bucket.as_str())
            .map(|c| canary_wire(&c));
        Ok(Response::new(GetResponse {
            policy: Some(policy),
            revision,
        }))
    }

    async fn list(&self, req: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let who = self.authenticate(&req)?;
        who.authorize(None)?;
        let req = req.into_inner();
        let page_size = match req.page_size as usize {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        // The page token is the last bucket of the previous page.
        let mut after = (!req.page_token.is_empty()).then_some(req.page_token);
        let mut policies = Vec::with_capacity(page_size);
        // One read of the canaries for the whole page (a persistent map: O(1) to take).
        let canaries = self.policies.index().view().map(|v| v.canaries().clone());
        let mut revision = 0;
        let mut more = true;
        // Buckets the key may not see are skipped, so a page may take several index reads.
        while policies.len() < page_size && more {
            let page = self
                .policies
                .list(&req.prefix, after.as_deref(), page_size - policies.len())
                .await
                .map_err(status)?;
            revision = page.revision;
            more = page.more;
            if let Some(last) = page.entries.last() {
                after = Some(last.bucket.to_string());
            }
            policies.extend(
                page.entries
                    .iter()
                    .filter(|e| who.who.key.allows(who.action, Some(e.bucket.as_str())))
                    .map(|e| {
                        let mut p = bucket_policy(e);
                        p.canary = canaries
                            .as_ref()
                            .and_then(|c| c.get(e.bucket.as_str()))
                            .map(|c| canary_wire(c));
                        p
                    }),
            );
        }
        let next_page_token = if more {
            after.unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListResponse {
            policies,
            next_page_token,
            revision,
        }))
    }

    async fn delete(
        &self,
        req: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let who = self.authenticate(&req)?;
        let bucket = bucket(&req.get_ref().bucket)?;
        who.authorize(Some(bucket.as_str()))?;
        let change = change(&req, &who, req.get_ref().allow_downgrade);
        let out = self
            .policies
            .delete(&bucket, &change)
            .await
            .map_err(status)?;
        Ok(delete_response(&out, &change))
    }

    async fn put_default(
        &self,
        req: Request<PutDefaultRequest>,
    ) -> Result<Response<PutResponse>, Status> {
        let who = self.authenticate(&req)?;
        who.authorize(None)?;
        let change = change(&req, &who, req.get_ref().allow_downgrade);
        let config = config_of(req.into_inner().config)?;
        let out = self
            .policies
            .put_default(config, &change)
            .await
            .map_err(status)?;
        Ok(put_response(&out, &change))
    }

    async fn get_default(
        &self,
        req: Request<GetDefaultRequest>,
    ) -> Result<Response<GetResponse>, Status> {
        self.authenticate(&req)?.authorize(None)?;
        let (entry, revision) = self.policies.get_default().await.map_err(status)?;
        let policy = match entry {
            Some(d) => default_wire(&d),
            None => builtin_policy(""),
        };
        Ok(Response::new(GetResponse {
            policy: Some(policy),
            revision,
        }))
    }

    async fn promote_canary(
        &self,
        req: Request<v1::CanaryRequest>,
    ) -> Result<Response<PutResponse>, Status> {
        let who = self.authenticate(&req)?;
        let change = change(&req, &who, false);
        let bucket = bucket(&req.get_ref().bucket)?;
        who.authorize(Some(bucket.as_str()))?;
        let out = self
            .policies
            .promote_canary(&bucket, &change)
            .await
            .map_err(status)?;
        Ok(put_response(&out, &change))
    }

    async fn abort_canary(
        &self,
        req: Request<v1::CanaryRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let who = self.authenticate(&req)?;
        let change = change(&req, &who, false);
        let bucket = bucket(&req.get_ref().bucket)?;
        who.authorize(Some(bucket.as_str()))?;
        let out = self
            .policies
            .abort_canary(&bucket, &change)
            .await
            .map_err(status)?;
        Ok(delete_response(&out, &change))
    }

    async fn delete_default(
        &self,
        req: Request<DeleteDefaultRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let who = self.authenticate(&req)?;
        who.authorize(None)?;
        let change = change(&req, &who, req.get_ref().allow_downgrade);
        let out = self
            .policies
            .delete_default(&change)
            .await
            .map_err(status)?;
        Ok(delete_response(&out, &change))
    }

    async fn list_history(
        &self,
        req: Request<ListHistoryRequest>,
    ) -> Result<Response<ListHistoryResponse>, Status> {
        let who = self.authenticate(&req)?;
        who.authorize(None)?;
        let req = req.into_inner();
        let audit = self
            .policies
            .audit()
            .ok_or_else(|| Status::unavailable("this server keeps no audit trail"))?;
        let page_size = match req.page_size as usize {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let after = (!req.page_token.is_empty()).then_some(req.page_token.as_str());
        let page = audit
            .list(req.since_unix_ms, after, page_size, |r| {
                (req.bucket.is_empty() || r.bucket == req.bucket)
                    && who.who.key.allows(who.action, Some(&r.bucket))
            })
            .await
            .map_err(|e| status(e.into()))?;
        Ok(Response::new(ListHistoryResponse {
            records: page.records.into_iter().map(history_record).collect(),
            next_page_token: page.next.unwrap_or_default(),
        }))
    }
}
