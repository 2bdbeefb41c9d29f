//! Signs every gRPC call with the access key (scheme: `tlsfleet_proto::auth`).
//!
//! The signature covers the method path, so the signer must know which method a request is
//! for. A tonic [`Interceptor`] sees the request's extensions, and the generated client puts a
//! [`GrpcMethod`] there before the request reaches the channel, so the path comes from the
//! generated code itself: no hand-written path can drift from the one actually called.

use std::sync::Arc;

use time::{macros::format_description, OffsetDateTime};
use tlsfleet_proto::auth::{SignedHeader, METADATA_KEY};
use tonic::{metadata::MetadataValue, service::Interceptor, GrpcMethod, Request, Status};

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

    /// The `authorization` value for one call of `method_path` at `now`.
    pub fn header_value(&self, method_path: &str, now: OffsetDateTime) -> String {
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        let creds = &self.credentials;
        SignedHeader::sign(
            &creds.key_id,
            &creds.secret,
            &format_date(now),
            &nonce,
            method_path,
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
        let value = self.header_value(&path, OffsetDateTime::now_utc());
        // Credentials::new admits only printable ASCII, and the rest is hex and digits.
        let value = MetadataValue::try_from(value)
            .map_err(|_| Status::internal("tlsfleetctl: unprintable authorization value"))?;
        request.metadata_mut().insert(METADATA_KEY, value);
        Ok(request)
    }
}

/// `YYYYMMDDTHHMMSSZ` in UTC, the `Date` the server checks against its clock.
fn format_date(now: OffsetDateTime) -> String {
    let utc = now.to_offset(time::UtcOffset::UTC);
    let fmt = format_description!("[year][month][day]T[hour][minute][second]Z");
    // Formatting fails only for years outside 0..=9999 of a clock gone mad; an empty Date
    // then makes the server refuse the call with a clear Unauthenticated.
    utc.format(&fmt).unwrap_or_default()
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
            format_date(datetime!(2026-11-28 21:07:15 UTC)),
            "20261128T210715Z"
        );
        assert_eq!(
            format_date(datetime!(2026-11-29 06:07:15 +9)),
            "20261128T210715Z"
        );
    }

    #[test]
    fn interceptor_signs_the_method_of_the_request() {
        let mut signer = Signer::new(creds());
        let mut req = Request::new(());
        req.extensions_mut()
            .insert(GrpcMethod::new("tlsfleet.v1.HttpsConfigService", "Put"));
        let req = signer.call(req).unwrap();
        let value = req.metadata().get(METADATA_KEY).unwrap().to_str().unwrap();
        let header = auth::SignedHeader::parse(value).unwrap();
        assert_eq!(header.access_key_id, "AKID");
        assert_eq!(header.nonce.len(), 32);
        assert_eq!(header.date.len(), "20261128T210715Z".len());
        assert!(auth::verify(
            "s3cret",
            &header,
            "/tlsfleet.v1.HttpsConfigService/Put"
        ));
        assert!(!auth::verify(
            "s3cret",
            &header,
            "/tlsfleet.v1.HttpsConfigService/Delete"
        ));
    }

    #[test]
    fn nonces_differ_between_calls() {
        let signer = Signer::new(creds());
        let now = OffsetDateTime::now_utc();
        assert_ne!(
            signer.header_value("/a/b", now),
            signer.header_value("/a/b", now)
        );
    }

    #[test]
    fn a_request_without_method_is_not_sent() {
        let err = Signer::new(creds()).call(Request::new(())).unwrap_err();
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
