//! The one table of gRPC calls: each method of the API (its path from the generated
//! `tlsfleet_proto::v1::methods`) and the action a key needs for it.
//!
//! [`layer`] tags every request whose path is in the table with its [`Call`], before tonic
//! routes it; a handler then authenticates with [`authenticate`], which verifies the
//! signature over that path (never one the handler names) and returns the caller with the
//! action to authorize. A handler reached without a tag (the layer missing) refuses the call.

use std::sync::Arc;

use tlsfleet_proto::{auth::Digest, v1::methods};
use tonic::{Extensions, Status};

use super::requests::CallLog;
use crate::auth::{Action, AuthError, Authenticator, Principal};

/// Every gRPC method and the action it needs.
pub const CALLS: &[(&str, Action)] = &[
    (
        methods::HTTPS_CONFIG_SERVICE_PUT,
        Action::PutBucketHttpsConfig,
    ),
    (
        methods::HTTPS_CONFIG_SERVICE_GET,
        Action::GetBucketHttpsConfig,
    ),
    (
        methods::HTTPS_CONFIG_SERVICE_LIST,
        Action::ListBucketHttpsConfigs,
    ),
    (
        methods::HTTPS_CONFIG_SERVICE_DELETE,
        Action::DeleteBucketHttpsConfig,
    ),
    (
        methods::HTTPS_CONFIG_SERVICE_LIST_HISTORY,
        Action::ListHistory,
    ),
    (
        methods::HTTPS_CONFIG_SERVICE_PUT_DEFAULT,
        Action::PutDefaultPolicy,
    ),
    (
        methods::HTTPS_CONFIG_SERVICE_GET_DEFAULT,
        Action::GetDefaultPolicy,
    ),
    (
        methods::HTTPS_CONFIG_SERVICE_DELETE_DEFAULT,
        Action::PutDefaultPolicy,
    ),
    (
        methods::HTTPS_CONFIG_SERVICE_PROMOTE_CANARY,
        Action::PutBucketHttpsConfig,
    ),
    (
        methods::HTTPS_CONFIG_SERVICE_ABORT_CANARY,
        Action::PutBucketHttpsConfig,
    ),
    (methods::FLEET_SERVICE_SYNC, Action::Sync),
    (methods::FLEET_SERVICE_GET_USAGE, Action::GetUsage),
    (methods::FLEET_SERVICE_LIST_AGENTS, Action::ListAgents),
    (
        methods::FLEET_SERVICE_GET_ROLLOUT_STATUS,
        Action::GetRolloutStatus,
    ),
];

/// A request's method, as the table names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Call {
    pub path: &'static str,
    pub action: Action,
}

impl Call {
    /// The table's entry for a request path.
    pub fn of(path: &str) -> Option<Self> {
        CALLS
            .iter()
            .find(|(p, _)| *p == path)
            .map(|&(path, action)| Call { path, action })
    }
}

/// Tags a request with its [`Call`].
pub fn tag<B>(mut req: http::Request<B>) -> http::Request<B> {
    if let Some(call) = Call::of(req.uri().path()) {
        req.extensions_mut().insert(call);
    }
    req
}

/// The layer that applies [`tag`] to every request of the gRPC server.
pub fn layer<B>() -> tower::util::MapRequestLayer<fn(http::Request<B>) -> http::Request<B>> {
    tower::util::MapRequestLayer::new(tag::<B>)
}

/// An authenticated call: who, and the action the call needs.
#[derive(Clone, Debug)]
pub struct Caller {
    pub who: Principal,
    pub action: Action,
    /// The call's log line (the bucket is written into it when the call is authorized).
    pub log: Option<Arc<CallLog>>,
}

impl Caller {
    /// `Ok` when the key may do this call's action (on `bucket`, for bucket actions).
    pub fn authorize(&self, bucket: Option<&str>) -> Result<(), Status> {
        if let (Some(log), Some(bucket)) = (&self.log, bucket) {
            log.set_bucket(bucket);
        }
        Ok(self.who.authorize(self.action, bucket)?)
    }

    /// The call's request id (its log line's, its response's `x-tlsfleet-request-id`).
    pub fn request_id(&self) -> String {
        self.log
            .as_ref()
            .map_or_else(crate::audit::request_id, |l| l.request_id.clone())
    }
}

/// Authenticates a tagged call whose request message has `digest`.
pub fn authenticate(
    auth: &Authenticator,
    metadata: &tonic::metadata::MetadataMap,
    extensions: &Extensions,
    digest: &Digest,
) -> Result<Caller, Status> {
    let call = extensions
        .get::<Call>()
        .copied()
        .ok_or_else(|| Status::internal("call not in the method table (is the layer on?)"))?;
    let who = auth
        .grpc(metadata, call.path, digest)
        .map_err(Status::from)?;
    let log = extensions.get::<Arc<CallLog>>().cloned();
    if let Some(log) = &log {
        log.set_key(&who.key.id);
    }
    Ok(Caller {
        who,
        action: call.action,
        log,
    })
}

/// [`authenticate`] for a unary request (the digest of its message).
pub fn authenticate_request<T: prost::Message>(
    auth: &Authenticator,
    req: &tonic::Request<T>,
) -> Result<Caller, Status> {
    let digest = tlsfleet_proto::auth::message_digest(req.get_ref());
    authenticate(auth, req.metadata(), req.extensions(), &digest)
}

/// An unauthenticated error, as the Sync stream refuses a call with no signature at all.
pub fn missing() -> Status {
    AuthError::Missing.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_generated_method_is_in_the_table_once() {
        // (A method missing here is refused as Internal: this test is what catches it.)
        for path in methods::ALL {
            assert_eq!(
                CALLS.iter().filter(|(p, _)| p == path).count(),
                1,
                "{path} must have exactly one entry in CALLS"
            );
        }
        assert_eq!(CALLS.len(), methods::ALL.len());
    }

    #[test]
    fn requests_are_tagged_by_path() {
        let req = http::Request::builder()
            .uri(methods::HTTPS_CONFIG_SERVICE_DELETE)
            .body(())
            .unwrap();
        assert_eq!(
            tag(req).extensions().get::<Call>(),
            Some(&Call {
                path: methods::HTTPS_CONFIG_SERVICE_DELETE,
                action: Action::DeleteBucketHttpsConfig
            })
        );
        let other = http::Request::builder()
            .uri("/grpc.health.v1.Health/Check")
            .body(())
            .unwrap();
        assert!(tag(other).extensions().get::<Call>().is_none());
    }
}
