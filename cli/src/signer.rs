//! Signs every gRPC call with the access key (scheme: `tlsfleet_proto::auth`).
//!
//! The signature covers the method path and the request message, so the signer must know
//! both. A tonic [`Interceptor`] sees the request's extensions, and the generated client puts a
//! [`GrpcMethod`] there before the request reaches the channel, so the path comes from the
//! generated code itself: no hand-written path can drift from the one actually called. The
//! message's digest is put there by [`signed_request`], where the message is built.

use std::sync::Arc;

use time::OffsetDateTime;
use tlsfleet_proto::auth::{format_date, message_digest, Digest, SignedHeader, METADATA_KEY};
use tonic::{metadata::MetadataValue, service::Interceptor, GrpcMethod, Request, Status};

/// The digest of a request's message, for the interceptor that signs it.
#[derive(Clone, Copy, Debug)]
pub struct BodyDigest(pub Digest);

/// A request for `message`, carrying its digest for the signer.
pub fn signed_request<M: prost::Message>(message: M) -> Request<M> {
    let digest = message_digest(&message);
    let mut request = Request::new(message);
    request.extensions_mut().insert(BodyDigest(digest));
    request
}

use crate::error::CliError;

/// An access key; the secret never leaves this struct except as HMAC input.
pub struct Credentials {
    key_id: String,
    secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Checks that both halves are present and that the id fits in the header.
    pub fn new(key_id: Option<String>, secret: Option<String>) -> Result<Self, CliError> {
        let missing = |what: &str, env: &str, flag: &str| {
            CliError::Usage(format!("no access key {what}: set {env} or pass {flag}"))
        };
        let key_id = key_id
            .filter(|s| !s.is_empty())
            .ok_or_else(|| missing("id", "TLSFLEET_ACCESS_KEY_ID", "--access-key-id"))?;
        let secret = secret.filter(|s| !s.is_empty()).ok_or_else(|| {
            missing(
                "secret",
                "TLSFLEET_ACCESS_KEY_SECRET",
                "--access-key-secret",
            )
        })?;
        // The header is `Credential=<id>, ...`: a comma or blank would split the field.
        if !key_id.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
            return Err(CliError::Usage(
                "the access key id may contain only printable ASCII without commas".to_owned(),
            ));
        }
        Ok(Self { key_id, secret })
    }
}

/// The interceptor: one fresh date and nonce per call.
#[derive(Clone, Debug)]
pub struct Signer {
    credentials: Arc<Credentials>,
}

impl Signer {
    /// A signer for every call made with `credentials`.
    pub fn new(credentials: Credentials) -> Self {
        Self {
            credentials: Arc::new(credentials),
        }
    }

    /// The `authorization` value for one call of `method_path` with a message of `digest`
    /// at `now`.
    pub fn header_value(&self, method_path: &str, digest: &Digest, now: OffsetDateTime) -> String {
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        let creds = &self.credentials;
        SignedHeader::sign(
            &creds.key_id,
            &creds.secret,
            &utc_date(now),
            &nonce,
            method_path,
            digest,
        )
        .to_header_value()
    }
}

impl Interceptor for Signer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let path = match request.extensions().get::<GrpcMethod<'static>>() {
            Some(m) => format!("/{}/{}", m.service(), m.method()),
            // Only generated clients are wrapped, and they always set it.
            None => return Err(Status::internal("tlsfleetctl: call without a gRPC method")),
        };
        let Some(BodyDigest(digest)) = request.extensions().get::<BodyDigest>().copied() else {
            return Err(Status::internal(
                "tlsfleetctl: call built without signed_request (no message digest)",
            ));
        };
        let value = self.header_value(&path, &digest, OffsetDateTime::now_utc());
        // Credentials::new admits only printable ASCII, and the rest is hex and digits.
        let value = MetadataValue::try_from(value)
            .map_err(|_| Status::internal("tlsfleetctl: unprintable authorization value"))?;
        request.metadata_mut().insert(METADATA_KEY, value);
        Ok(request)
    }
}

/// `YYYYMMDDTHHMMSSZ` in UTC, the `Date` the server checks against its clock (empty for a
/// clock before 1970, which the server refuses with a clear Unauthenticated).
fn utc_date(now: OffsetDateTime) -> String {
    u64::try_from(now.unix_timestamp())
        .map(format_date)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;
    use tlsfleet_proto::auth;

    use super::*;

    fn creds() -> Credentials {
        Credentials::new(Some("AKID".into()), Some("s3cret".into())).unwrap()
    }

    #[test]
    fn date_is_compact_utc() {
        assert_eq!(
            utc_date(datetime!(2026-11-28 21:07:15 UTC)),
            "20261128T210715Z"
        );
        assert_eq!(
            utc_date(datetime!(2026-11-29 06:07:15 +9)),
            "20261128T210715Z"
        );
    }

    fn put(bucket: &str) -> tlsfleet_proto::v1::PutRequest {
        tlsfleet_proto::v1::PutRequest {
            bucket: bucket.into(),
            config: None,
        }
    }

    #[test]
    fn interceptor_signs_the_method_and_message_of_the_request() {
        let mut signer = Signer::new(creds());
        let mut req = signed_request(put("vault")).map(|_| ());
        req.extensions_mut()
            .insert(GrpcMethod::new("tlsfleet.v1.HttpsConfigService", "Put"));
        let req = signer.call(req).unwrap();
        let value = req.metadata().get(METADATA_KEY).unwrap().to_str().unwrap();
        let header = auth::SignedHeader::parse(value).unwrap();
        assert_eq!(header.access_key_id, "AKID");
        assert_eq!(header.nonce.len(), 32);
        assert_eq!(header.date.len(), "20261128T210715Z".len());
        let digest = message_digest(&put("vault"));
        assert!(auth::verify(
            "s3cret",
            &header,
            "/tlsfleet.v1.HttpsConfigService/Put",
            &digest
        ));
        assert!(!auth::verify(
            "s3cret",
            &header,
            "/tlsfleet.v1.HttpsConfigService/Delete",
            &digest
        ));
        assert!(!auth::verify(
            "s3cret",
            &header,
            "/tlsfleet.v1.HttpsConfigService/Put",
            &message_digest(&put("other"))
        ));
    }

    #[test]
    fn nonces_differ_between_calls() {
        let signer = Signer::new(creds());
        let now = OffsetDateTime::now_utc();
        assert_ne!(
            signer.header_value("/a/b", &[0; 32], now),
            signer.header_value("/a/b", &[0; 32], now)
        );
    }

    #[test]
    fn a_request_without_method_or_digest_is_not_sent() {
        let err = Signer::new(creds()).call(Request::new(())).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Internal);
        let mut no_digest = Request::new(());
        no_digest
            .extensions_mut()
            .insert(GrpcMethod::new("tlsfleet.v1.HttpsConfigService", "Put"));
        let err = Signer::new(creds()).call(no_digest).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Internal);
    }

    #[test]
    fn credentials_are_required_and_printable() {
        assert!(matches!(
            Credentials::new(None, Some("s".into())),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(
            Credentials::new(Some("id".into()), None),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(
            Credentials::new(Some("".into()), Some("s".into())),
            Err(CliError::Usage(_))
        ));
        assert!(Credentials::new(Some("a,b".into()), Some("s".into())).is_err());
        assert!(Credentials::new(Some("a b".into()), Some("s".into())).is_err());
        assert!(!format!("{:?}", creds()).contains("s3cret"));
    }
}
