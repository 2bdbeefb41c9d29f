//! The one client-side signer: a tonic [`Interceptor`] that adds the `authorization`
//! metadata of [`crate::auth`] to every call, used by tlsfleetctl, the agents and the tests.
//!
//! The signature covers the method path and the request message, so the signer must know
//! both. An interceptor sees the request's extensions, and the generated client puts a
//! [`GrpcMethod`] there before the request reaches the channel, so the path comes from the
//! generated code itself: no hand-written path can drift from the one actually called. The
//! message's digest is put there by [`signed_request`] (or [`signed_stream`], for the first
//! message of a stream), where the message is built. A request built without one is not sent.

use std::{fmt, sync::Arc};

use tonic::{metadata::MetadataValue, service::Interceptor, GrpcMethod, Request, Status};

use crate::auth::{message_digest, Digest, SignedHeader, METADATA_KEY};

/// The digest of a request's message, for the interceptor that signs it.
#[derive(Clone, Copy, Debug)]
pub struct MessageDigest(pub Digest);

/// A request for `message`, carrying its digest for the signer.
pub fn signed_request<M: prost::Message>(message: M) -> Request<M> {
    let digest = message_digest(&message);
    let mut request = Request::new(message);
    request.extensions_mut().insert(MessageDigest(digest));
    request
}

/// A streaming request whose first message is `first` (what the signature covers).
pub fn signed_stream<M: prost::Message, S>(first: &M, stream: S) -> Request<S> {
    let mut request = Request::new(stream);
    request
        .extensions_mut()
        .insert(MessageDigest(message_digest(first)));
    request
}

/// Why an access key cannot sign.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the access key id is empty")]
    EmptyId,
    #[error("the access key secret is empty")]
    EmptySecret,
    /// The header is `Credential=<id>, ...`: a comma or blank would split the field.
    #[error("the access key id may contain only printable ASCII without commas")]
    UnprintableId,
}

/// An access key; the secret never leaves it except as HMAC input (and `Debug` hides it).
#[derive(Clone)]
pub struct AccessKey {
    id: String,
    secret: String,
}

impl fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessKey")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl AccessKey {
    /// Checks that both halves are present and that the id fits in the header.
    pub fn new(id: impl Into<String>, secret: impl Into<String>) -> Result<Self, KeyError> {
        let (id, secret) = (id.into(), secret.into());
        if id.is_empty() {
            return Err(KeyError::EmptyId);
        }
        if secret.is_empty() {
            return Err(KeyError::EmptySecret);
        }
        if !id.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
            return Err(KeyError::UnprintableId);
        }
        Ok(Self { id, secret })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The `authorization` value for one call of `method_path` with a message of `digest`,
    /// with a fresh date and nonce.
    pub fn header_value(&self, method_path: &str, digest: &Digest) -> String {
        SignedHeader::sign_now(&self.id, &self.secret, method_path, digest).to_header_value()
    }
}

/// The interceptor: one fresh date and nonce per call.
#[derive(Clone, Debug)]
pub struct Signer {
    key: Arc<AccessKey>,
}

impl Signer {
    /// A signer for every call made with `key`.
    pub fn new(key: AccessKey) -> Self {
        Self { key: Arc::new(key) }
    }

    pub fn key(&self) -> &AccessKey {
        &self.key
    }
}

/// The path of a call of a generated client, `/package.Service/Method`.
pub fn method_path(request: &Request<()>) -> Option<String> {
    let m = request.extensions().get::<GrpcMethod<'static>>()?;
    Some(format!("/{}/{}", m.service(), m.method()))
}

impl Interceptor for Signer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        // Only generated clients are wrapped, and they always set it.
        let path = method_path(&request)
            .ok_or_else(|| Status::internal("signer: a call without a gRPC method"))?;
        let Some(MessageDigest(digest)) = request.extensions().get::<MessageDigest>().copied()
        else {
            return Err(Status::internal(
                "signer: a call built without signed_request (no message digest)",
            ));
        };
        // AccessKey::new admits only printable ASCII ids, and the rest is hex and digits.
        let mut value = MetadataValue::try_from(self.key.header_value(&path, &digest))
            .map_err(|_| Status::internal("signer: unprintable authorization value"))?;
        // Never indexed by HPACK (RFC 7541 §7.1.3): a credential, and unique to the call, so
        // indexing it would only evict the connection's reusable headers.
        value.set_sensitive(true);
        request.metadata_mut().insert(METADATA_KEY, value);
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{auth, v1::methods};

    fn key() -> AccessKey {
        AccessKey::new("AKID", "s3cret").unwrap()
    }

    fn put(bucket: &str) -> crate::v1::PutRequest {
        crate::v1::PutRequest {
            bucket: bucket.into(),
            config: None,
            ..Default::default()
        }
    }

    fn sign(req: Request<()>) -> Result<SignedHeader, Status> {
        let req = Signer::new(key()).call(req)?;
        let value = req.metadata().get(METADATA_KEY).unwrap().to_str().unwrap();
        Ok(SignedHeader::parse(value).unwrap())
    }

    #[test]
    fn interceptor_signs_the_method_and_message_of_the_request() {
        let mut req = signed_request(put("vault")).map(|_| ());
        req.extensions_mut()
            .insert(GrpcMethod::new("tlsfleet.v1.HttpsConfigService", "Put"));
        let header = sign(req).unwrap();
        assert_eq!(header.access_key_id, "AKID");
        assert_eq!(header.nonce.len(), 32);
        assert_eq!(header.date.len(), "20261128T210715Z".len());
        let digest = message_digest(&put("vault"));
        let put_path = methods::HTTPS_CONFIG_SERVICE_PUT;
        assert!(auth::verify("s3cret", &header, put_path, &digest));
        assert!(!auth::verify(
            "s3cret",
            &header,
            methods::HTTPS_CONFIG_SERVICE_DELETE,
            &digest
        ));
        assert!(!auth::verify(
            "s3cret",
            &header,
            put_path,
            &message_digest(&put("other"))
        ));
    }

    #[test]
    fn a_stream_is_signed_over_its_first_message() {
        let mut req = signed_stream(&put("first"), ()).map(|_| ());
        req.extensions_mut()
            .insert(GrpcMethod::new("tlsfleet.v1.FleetService", "Sync"));
        let header = sign(req).unwrap();
        let digest = message_digest(&put("first"));
        assert!(auth::verify(
            "s3cret",
            &header,
            methods::FLEET_SERVICE_SYNC,
            &digest
        ));
        // Worthless for another method, or for another first message (moved from the agent).
        assert!(!auth::verify(
            "s3cret",
            &header,
            methods::FLEET_SERVICE_LIST_AGENTS,
            &digest
        ));
        assert!(!auth::verify(
            "s3cret",
            &header,
            methods::FLEET_SERVICE_SYNC,
            &message_digest(&put("second"))
        ));
    }

    #[test]
    fn nonces_differ_between_calls() {
        let k = key();
        assert_ne!(
            k.header_value("/a/b", &[0; 32]),
            k.header_value("/a/b", &[0; 32])
        );
    }

    #[test]
    fn a_request_without_method_or_digest_is_not_sent() {
        let err = Signer::new(key()).call(Request::new(())).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Internal);
        let mut no_digest = Request::new(());
        no_digest
            .extensions_mut()
            .insert(GrpcMethod::new("tlsfleet.v1.HttpsConfigService", "Put"));
        let err = Signer::new(key()).call(no_digest).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Internal);
    }

    #[test]
    fn keys_are_required_and_printable() {
        assert_eq!(AccessKey::new("", "s").unwrap_err(), KeyError::EmptyId);
        assert_eq!(AccessKey::new("id", "").unwrap_err(), KeyError::EmptySecret);
        for bad in ["a,b", "a b", "ключ", "x\n"] {
            assert_eq!(
                AccessKey::new(bad, "s").unwrap_err(),
                KeyError::UnprintableId
            );
        }
        assert!(!format!("{:?}", key()).contains("s3cret"));
    }
}
