//! Authentication and authorization, shared by the REST and gRPC front ends.
//!
//! * [`Credentials`]: the access keys of the credentials file and their grants.
//! * [`Authenticator::oss`]: OSS signatures V1 (`OSS AK:SIG`, HMAC-SHA1) and V4
//!   (`OSS4-HMAC-SHA256`), as the official SDKs send them (see `docs/oss-https-config-api.md`).
//! * [`Authenticator::grpc`]: the `TLSFLEET-HMAC-SHA256` metadata of `tlsfleet_proto::auth`
//!   (covering the method and the request message), with a replay cache of nonces.
//! * Replays: one cache per access key ([`replay`]) remembers every gRPC nonce and every REST
//!   PUT signature while its date is valid, and refuses them a second time.
//! * [`Principal::authorize`]: the grant check, the same for both front ends.
//!
//! Every request date must be within 15 minutes of the server's clock (gRPC: at most
//! [`MAX_FUTURE_SKEW`] ahead). Signatures are compared in constant time. No error message
//! contains a secret.

use std::{sync::Arc, time::SystemTime};

mod clock;
mod credentials;
mod grpc;
pub mod replay;
mod sigv1;
mod sigv4;

pub use clock::MAX_SKEW;
pub use credentials::{AccessKey, Credentials, CredentialsError};
pub use grpc::MAX_FUTURE_SKEW;
pub use replay::DEFAULT_PER_KEY as DEFAULT_REPLAY_PER_KEY;
use tlsfleet_proto::auth::Digest;

/// An operation a key can be granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// `oss:PutBucketHttpsConfig` (alias `oss:PutTLSVersion`).
    PutBucketHttpsConfig,
    /// `oss:GetBucketHttpsConfig` (alias `oss:GetTLSVersion`).
    GetBucketHttpsConfig,
    /// `tlsfleet:ListBucketHttpsConfigs` (gRPC only).
    ListBucketHttpsConfigs,
    /// `tlsfleet:DeleteBucketHttpsConfig` (gRPC only).
    DeleteBucketHttpsConfig,
    /// `tlsfleet:Sync`: an agent's policy stream.
    Sync,
    /// `tlsfleet:ListAgents`.
    ListAgents,
    /// `tlsfleet:GetRolloutStatus`.
    GetRolloutStatus,
    /// `tlsfleet:ListHistory`: the audit trail (only buckets the key's patterns cover).
    ListHistory,
    /// `tlsfleet:PutDefaultPolicy`: set or clear the fleet default policy.
    PutDefaultPolicy,
    /// `tlsfleet:GetDefaultPolicy`: read it.
    GetDefaultPolicy,
    /// `tlsfleet:GetUsage`: a bucket's TLS usage (and dry-run impact previews).
    GetUsage,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 11] = [
        Action::PutBucketHttpsConfig,
        Action::GetBucketHttpsConfig,
        Action::ListBucketHttpsConfigs,
        Action::DeleteBucketHttpsConfig,
        Action::Sync,
        Action::ListAgents,
        Action::GetRolloutStatus,
        Action::ListHistory,
        Action::PutDefaultPolicy,
        Action::GetDefaultPolicy,
        Action::GetUsage,
    ];

    /// The grant name, e.g. `oss:PutBucketHttpsConfig`.
    pub fn name(self) -> &'static str {
        match self {
            Action::PutBucketHttpsConfig => "oss:PutBucketHttpsConfig",
            Action::GetBucketHttpsConfig => "oss:GetBucketHttpsConfig",
            Action::ListBucketHttpsConfigs => "tlsfleet:ListBucketHttpsConfigs",
            Action::DeleteBucketHttpsConfig => "tlsfleet:DeleteBucketHttpsConfig",
            Action::Sync => "tlsfleet:Sync",
            Action::ListAgents => "tlsfleet:ListAgents",
            Action::GetRolloutStatus => "tlsfleet:GetRolloutStatus",
            Action::ListHistory => "tlsfleet:ListHistory",
            Action::PutDefaultPolicy => "tlsfleet:PutDefaultPolicy",
            Action::GetDefaultPolicy => "tlsfleet:GetDefaultPolicy",
            Action::GetUsage => "tlsfleet:GetUsage",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }

    /// The actions a grant string names (case-insensitive, as RAM action names are), or
    /// None when it names none.
    fn grant_mask(grant: &str) -> Option<u16> {
        let g = grant.trim().to_ascii_lowercase();
        let mask = |pred: &dyn Fn(&Action) -> bool| {
            Action::ALL
                .iter()
                .filter(|a| pred(a))
                .fold(0u16, |m, a| m | a.bit())
        };
        match g.as_str() {
            "*" => Some(mask(&|_| true)),
            "oss:*" => Some(mask(&|a| a.name().starts_with("oss:"))),
            "tlsfleet:*" => Some(mask(&|a| a.name().starts_with("tlsfleet:"))),
            "oss:puttlsversion" => Some(Action::PutBucketHttpsConfig.bit()),
            "oss:gettlsversion" => Some(Action::GetBucketHttpsConfig.bit()),
            _ => Action::ALL
                .iter()
                .find(|a| a.name().eq_ignore_ascii_case(&g))
                .map(|a| a.bit()),
        }
    }

    fn known_grants() -> String {
        let mut names: Vec<&str> = Action::ALL.iter().map(|a| a.name()).collect();
        names.extend([
            "oss:PutTLSVersion",
            "oss:GetTLSVersion",
            "oss:*",
            "tlsfleet:*",
            "*",
        ]);
        names.join(", ")
    }
}

/// Why a request is not authenticated or not allowed. Messages name the key, the action
/// and the bucket, never a secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the request is not signed: no authorization")]
    Missing,
    #[error("malformed authorization: {0}")]
    Malformed(String),
    #[error("the access key id {0:?} does not exist")]
    InvalidAccessKeyId(String),
    #[error(
        "the request signature does not match the signature computed with the access key's \
         secret: check the secret and the signing method"
    )]
    SignatureDoesNotMatch,
    #[error(
        "the difference between the request time and the server's time is too large (at most \
         15 minutes; for gRPC at most 5 minutes ahead)"
    )]
    RequestTimeTooSkewed,
    #[error(
        "replayed request: this signature (nonce) was already used, or the request is too old \
         for the server to tell; sign the request again"
    )]
    Replayed,
    #[error(
        "this signature was already used for a PUT with another body: the signature does not \
         cover the body, so the server cannot tell a second PUT signed in the same second from \
         a tampered replay; sign it again with a later date, or send Content-MD5"
    )]
    ReusedSignature,
    #[error("access key {key:?} is not allowed to {action}{}", on_bucket(bucket))]
    AccessDenied {
        key: String,
        action: &'static str,
        bucket: Option<String>,
    },
}

fn on_bucket(bucket: &Option<String>) -> String {
    bucket
        .as_deref()
        .map(|b| format!(" on bucket {b:?}"))
        .unwrap_or_default()
}

impl From<AuthError> for tonic::Status {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::AccessDenied { .. } => tonic::Status::permission_denied(e.to_string()),
            _ => tonic::Status::unauthenticated(e.to_string()),
        }
    }
}

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Principal {
    pub key: Arc<AccessKey>,
}

impl Principal {
    /// `Ok` when the key was granted `action` (on `bucket`, for bucket actions).
    pub fn authorize(&self, action: Action, bucket: Option<&str>) -> Result<(), AuthError> {
        if self.key.allows(action, bucket) {
            return Ok(());
        }
        Err(AuthError::AccessDenied {
            key: self.key.id.clone(),
            action: action.name(),
            bucket: bucket.map(str::to_owned),
        })
    }
}

/// The parts of an OSS REST request a signature covers. The body is not among them: the
/// signature is checked on headers alone, before the body is read.
#[derive(Clone, Copy, Debug)]
pub struct OssRequest<'a> {
    pub method: &'a http::Method,
    pub headers: &'a http::HeaderMap,
    /// The request's host (`Host`, or the HTTP/2 authority), for V4 `AdditionalHeaders=host`.
    pub host: Option<&'a str>,
    pub bucket: &'a str,
    /// The object key; always empty for the bucket sub-resources served here.
    pub key: &'a str,
    /// Query parameters, percent-decoded, in request order.
    pub query: &'a [(String, String)],
}

/// Which OSS signature a request carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureVersion {
    V1,
    V4,
}

/// A verified OSS request.
#[derive(Clone, Debug)]
pub struct OssAuth {
    pub principal: Principal,
    pub version: SignatureVersion,
    /// The body's SHA-256 the V4 signer committed to in `x-oss-content-sha256`, when it sent
    /// one instead of `UNSIGNED-PAYLOAD`: the caller must check the body against it.
    pub content_sha256: Option<[u8; 32]>,
    /// The signature presented (for [`Authenticator::check_put_replay`]).
    pub signature: Vec<u8>,
    /// The request's date (Unix seconds).
    pub date: i64,
}

/// What a V1 or V4 check found.
struct Verified {
    principal: Principal,
    content_sha256: Option<[u8; 32]>,
    /// The request's date (Unix seconds).
    date: i64,
    /// The signature bytes presented.
    signature: Vec<u8>,
}

/// Verifies signatures against a set of credentials.
pub struct Authenticator {
    creds: Credentials,
    replay: replay::ReplayCache,
}

impl Authenticator {
    /// With [`DEFAULT_REPLAY_PER_KEY`] replay entries per key.
    pub fn new(creds: Credentials) -> Self {
        Self::with_replay_capacity(creds, DEFAULT_REPLAY_PER_KEY)
    }

    /// Remembering at most `per_key` signatures per access key.
    pub fn with_replay_capacity(creds: Credentials, per_key: usize) -> Self {
        Self {
            creds,
            replay: replay::ReplayCache::new(per_key),
        }
    }

    /// The credentials in use.
    pub fn credentials(&self) -> &Credentials {
        &self.creds
    }

    /// Authenticates a gRPC call to `method_path` (e.g. `/tlsfleet.v1.HttpsConfigService/Put`)
    /// whose request message has `digest` (`tlsfleet_proto::auth::message_digest`).
    pub fn grpc(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        method_path: &str,
        digest: &Digest,
    ) -> Result<Principal, AuthError> {
        self.grpc_at(metadata, method_path, digest, SystemTime::now())
    }

    /// [`Self::grpc`] with the server's clock given.
    pub fn grpc_at(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        method_path: &str,
        digest: &Digest,
        now: SystemTime,
    ) -> Result<Principal, AuthError> {
        grpc::verify(
            &self.creds,
            &self.replay,
            metadata,
            method_path,
            digest,
            clock::unix(now),
        )
    }

    /// Authenticates an OSS REST request by its V1 or V4 `Authorization` header.
    pub fn oss(&self, req: &OssRequest<'_>) -> Result<OssAuth, AuthError> {
        self.oss_at(req, SystemTime::now())
    }

    /// [`Self::oss`] with the server's clock given.
    pub fn oss_at(&self, req: &OssRequest<'_>, now: SystemTime) -> Result<OssAuth, AuthError> {
        let value = req
            .headers
            .get(http::header::AUTHORIZATION)
            .ok_or(AuthError::Missing)?;
        let value = value
            .to_str()
            .map_err(|_| AuthError::Malformed("Authorization is not visible ASCII".into()))?
            .trim();
        let now = clock::unix(now);
        let (verified, version) = if let Some(rest) = value.strip_prefix(sigv4::ALGORITHM) {
            (
                sigv4::verify(&self.creds, req, rest, now)?,
                SignatureVersion::V4,
            )
        } else if let Some(rest) = value.strip_prefix("OSS ") {
            (
                sigv1::verify(&self.creds, req, rest, now)?,
                SignatureVersion::V1,
            )
        } else {
            return Err(AuthError::Malformed(
                "unsupported Authorization scheme: expected \"OSS\" or \"OSS4-HMAC-SHA256\"".into(),
            ));
        };
        Ok(OssAuth {
            principal: verified.principal,
            version,
            content_sha256: verified.content_sha256,
            signature: verified.signature,
            date: verified.date,
        })
    }

    /// Refuses a PUT whose signature was used before (while its date is valid), once its body
    /// is known, and remembers it otherwise: a write captured on the way (or read from a log)
    /// cannot be sent again, with its body or another. Call it before the write.
    ///
    /// Reads are not checked: an identical GET repeated within a second is legitimate, and the
    /// answer it gets is the one the original got.
    pub fn check_put_replay(&self, auth: &OssAuth, body: &[u8]) -> Result<(), AuthError> {
        self.check_put_replay_at(auth, body, SystemTime::now())
    }

    /// [`Self::check_put_replay`] with the server's clock given.
    pub fn check_put_replay_at(
        &self,
        auth: &OssAuth,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), AuthError> {
        use sha2::Digest as _;
        let now = clock::unix(now);
        let key = &auth.principal.key.id;
        let expiry = clock::expiry(auth.date);
        let body = sha2::Sha256::digest(body);
        self.replay
            .check_and_insert_signed(key, &auth.signature, &body, expiry, now)
    }
}

/// Bounds an identifier taken from a request before it goes into a message or a log line.
fn bounded(id: &str) -> String {
    const MAX: usize = 128;
    let mut s: String = id.chars().filter(|c| !c.is_control()).take(MAX).collect();
    if id.chars().count() > MAX {
        s.push('…');
    }
    s
}

/// Every value of header `name`, joined by `,` (how a repeated header reads as one).
fn header_bytes(headers: &http::HeaderMap, name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, v) in headers.get_all(name).iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(v.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_names_and_aliases() {
        assert_eq!(
            Action::grant_mask("oss:PutTLSVersion"),
            Some(Action::PutBucketHttpsConfig.bit())
        );
        assert_eq!(
            Action::grant_mask("oss:GetTLSVersion"),
            Some(Action::GetBucketHttpsConfig.bit())
        );
        for a in Action::ALL {
            assert_eq!(Action::grant_mask(a.name()), Some(a.bit()), "{a:?}");
        }
        // Eleven actions since usage.
        assert_eq!(Action::grant_mask("*"), Some(0x7ff));
        assert_eq!(Action::grant_mask("oss:Put*"), None);
        assert_eq!(Action::grant_mask("tlsfleet:PutBucketHttpsConfig"), None);
    }

    #[test]
    fn authorize_names_key_action_and_bucket() {
        let key =
            Arc::new(AccessKey::new("AKGET", "s", &["oss:GetTLSVersion"], &["logs-*"]).unwrap());
        let who = Principal { key };
        assert!(who
            .authorize(Action::GetBucketHttpsConfig, Some("logs-1"))
            .is_ok());
        let e = who
            .authorize(Action::PutBucketHttpsConfig, Some("logs-1"))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "access key \"AKGET\" is not allowed to oss:PutBucketHttpsConfig on bucket \"logs-1\""
        );
        let e = who
            .authorize(Action::GetBucketHttpsConfig, Some("data"))
            .unwrap_err();
        assert!(matches!(e, AuthError::AccessDenied { .. }));
        assert_eq!(tonic::Status::from(e).code(), tonic::Code::PermissionDenied);
        let e = who.authorize(Action::ListAgents, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "access key \"AKGET\" is not allowed to tlsfleet:ListAgents"
        );
        assert_eq!(
            tonic::Status::from(AuthError::SignatureDoesNotMatch).code(),
            tonic::Code::Unauthenticated
        );
    }

    #[test]
    fn bounded_truncates_and_strips_controls() {
        assert_eq!(bounded("a\nb"), "ab");
        assert_eq!(bounded(&"x".repeat(500)).chars().count(), 129);
    }
}
