//! `HttpsConfigService`: Put, Get, List, Delete.

use std::sync::Arc;

use tlsfleet_policy::{BucketName, HttpsConfig};
use tlsfleet_proto::v1::{
    self, https_config_service_server::HttpsConfigService, DeleteRequest, DeleteResponse,
    GetRequest, GetResponse, ListRequest, ListResponse, PutRequest, PutResponse,
};
use tonic::{Request, Response, Status};

use super::{
    calls::{authenticate_request, Caller},
    status,
};
use crate::{auth::Authenticator, index::PolicyEntry, service::Policies};

const DEFAULT_PAGE_SIZE: usize = 100;
const MAX_PAGE_SIZE: usize = 1000;

/// The admin API over gRPC.
pub struct AdminService {
    policies: Policies,
    auth: Arc<Authenticator>,
}

impl AdminService {
    pub fn new(policies: Policies, auth: Arc<Authenticator>) -> Self {
        Self { policies, auth }
    }

    /// The caller, from the signature over the call's method and request message.
    fn authenticate<T: prost::Message>(&self, req: &Request<T>) -> Result<Caller, Status> {
        authenticate_request(&self.auth, req)
    }
}

fn bucket(name: &str) -> Result<BucketName, Status> {
    name.parse()
        .map_err(|e: tlsfleet_policy::InvalidBucketName| Status::invalid_argument(e.to_string()))
}

/// The wire form of an index entry.
pub(crate) fn bucket_policy(e: &PolicyEntry) -> v1::BucketPolicy {
    v1::BucketPolicy {
        bucket: e.bucket.to_string(),
        config: Some((&e.stored.config).into()),
        effective: Some((&e.effective).into()),
        mod_revision: e.mod_revision,
        create_revision: e.create_revision,
    }
}

fn default_policy(bucket: &BucketName) -> v1::BucketPolicy {
    let config = HttpsConfig::disabled();
    let effective = tlsfleet_policy::EffectivePolicy::all();
    v1::BucketPolicy {
        bucket: bucket.to_string(),
        config: Some((&config).into()),
        effective: Some((&effective).into()),
        mod_revision: 0,
        create_revision: 0,
    }
}

#[tonic::async_trait]
impl HttpsConfigService for AdminService {
    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let who = self.authenticate(&req)?;
        let req = req.into_inner();
        let bucket = bucket(&req.bucket)?;
        who.authorize(Some(bucket.as_str()))?;
        let config = req
            .config
            .ok_or_else(|| Status::invalid_argument("config is required"))?
            .try_into()
            .map_err(|e: tlsfleet_proto::convert::ConvertError| {
                Status::invalid_argument(e.to_string())
            })?;
        let out = self
            .policies
            .put(&bucket, config, &who.who.key.id)
            .await
            .map_err(status)?;
        Ok(Response::new(PutResponse {
            revision: out.revision,
            effective: Some((&out.effective).into()),
        }))
    }

    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let who = self.authenticate(&req)?;
        let bucket = bucket(&req.get_ref().bucket)?;
        who.authorize(Some(bucket.as_str()))?;
        let (entry, revision) = self.policies.get(&bucket).await.map_err(status)?;
        let policy = match entry {
            Some(e) => bucket_policy(&e),
            None => default_policy(&bucket),
        };
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
                    .map(|e| bucket_policy(e)),
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
        let (revision, existed) = self.policies.delete(&bucket).await.map_err(status)?;
        Ok(Response::new(DeleteResponse { revision, existed }))
    }
}
