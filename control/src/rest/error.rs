//! OSS error responses and request ids.

use axum::{body::Body, response::Response};
use http::{header, HeaderValue, StatusCode};

use crate::{auth::AuthError, service::PolicyError};
use tlsfleet_policy::{xml::error_document, ValidationErrorKind};

/// An OSS error: status, code and a message written for the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OssError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Close the connection after answering (the request body was not consumed).
    pub close: bool,
    /// The `Allow` header of a `405`.
    pub allow: Option<&'static str>,
}

impl OssError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            close: false,
            allow: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::bad_request("InvalidArgument", message)
    }

    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// The OSS error document (`tlsfleet_policy::xml::error_document`). `bucket` is echoed as
    /// `BucketName` when the request named one.
    pub fn into_response(self, request_id: &str, host_id: &str, bucket: Option<&str>) -> Response {
        let xml = error_document(self.code, &self.message, request_id, host_id, bucket);
        let mut response = Response::new(Body::from(xml));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/xml"),
        );
        if let Some(allow) = self.allow {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if self.close {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl From<AuthError> for OssError {
    fn from(e: AuthError) -> Self {
        let code = match &e {
            AuthError::InvalidAccessKeyId(_) => "InvalidAccessKeyId",
            AuthError::SignatureDoesNotMatch => "SignatureDoesNotMatch",
            AuthError::RequestTimeTooSkewed => "RequestTimeTooSkewed",
            AuthError::Missing
            | AuthError::Malformed(_)
            | AuthError::Replayed
            | AuthError::ReusedSignature
            | AuthError::AccessDenied { .. } => "AccessDenied",
        };
        let message = match e {
            AuthError::Missing => {
                "no Authorization header: sign the request with an access key (OSS signature V1 or V4)"
                    .to_owned()
            }
            other => other.to_string(),
        };
        Self::new(StatusCode::FORBIDDEN, code, message)
    }
}

impl From<PolicyError> for OssError {
    fn from(e: PolicyError) -> Self {
        match e {
            PolicyError::Invalid(v) => match v.kind {
                ValidationErrorKind::MalformedXml => Self::bad_request("MalformedXML", v.message),
                ValidationErrorKind::InvalidArgument => Self::invalid_argument(v.message),
            },
            PolicyError::Unavailable(m) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                format!("the policy store is unavailable, nothing was written: {m}"),
            ),
            PolicyError::OutcomeUnknown(m) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", m)
            }
            PolicyError::Downgrade(m) => Self::new(StatusCode::FORBIDDEN, "AccessDenied", m),
            PolicyError::Precondition(m) => Self::new(StatusCode::CONFLICT, "Conflict", m),
            PolicyError::BadRequest(m) => Self::new(StatusCode::BAD_REQUEST, "InvalidArgument", m),
            PolicyError::Internal(m) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", m)
            }
        }
    }
}

pub use crate::audit::request_id;

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[test]
    fn request_ids_are_24_uppercase_hex_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let id = request_id();
            assert_eq!(id.len(), 24);
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)),
                "{id}"
            );
            assert!(seen.insert(id));
        }
    }

    #[tokio::test]
    async fn error_document_has_no_namespace_and_escapes() {
        let e = OssError::bad_request("MalformedXML", "bad <TLS> & \"x\"\u{1}");
        let r = e.into_response("ABCDEF0123456789ABCDEF01", "oss.test", Some("b<b"));
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/xml");
        let body = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>MalformedXML</Code>\
             <Message>bad &lt;TLS&gt; &amp; &quot;x&quot;\u{FFFD}</Message>\
             <RequestId>ABCDEF0123456789ABCDEF01</RequestId><HostId>oss.test</HostId>\
             <BucketName>b&lt;b</BucketName></Error>\n"
        );
    }

    #[test]
    fn auth_errors_map_to_403_codes() {
        let code = |e: AuthError| {
            let o = OssError::from(e);
            assert_eq!(o.status, StatusCode::FORBIDDEN);
            o.code
        };
        assert_eq!(code(AuthError::Missing), "AccessDenied");
        assert_eq!(code(AuthError::Malformed("x".into())), "AccessDenied");
        assert_eq!(
            code(AuthError::InvalidAccessKeyId("k".into())),
            "InvalidAccessKeyId"
        );
        assert_eq!(
            code(AuthError::SignatureDoesNotMatch),
            "SignatureDoesNotMatch"
        );
        assert_eq!(
            code(AuthError::RequestTimeTooSkewed),
            "RequestTimeTooSkewed"
        );
        let denied = AuthError::AccessDenied {
            key: "k".into(),
            action: "oss:PutBucketHttpsConfig",
            bucket: None,
        };
        assert_eq!(code(denied), "AccessDenied");
    }

    #[test]
    fn policy_errors_map_to_oss_codes() {
        let o = OssError::from(PolicyError::Unavailable("etcd down".into()));
        assert_eq!(
            (o.status, o.code),
            (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable")
        );
        let o = OssError::from(PolicyError::Internal("boom".into()));
        assert_eq!(
            (o.status, o.code),
            (StatusCode::INTERNAL_SERVER_ERROR, "InternalError")
        );
        let v = tlsfleet_policy::ValidationError {
            kind: ValidationErrorKind::InvalidArgument,
            message: "serves nothing".into(),
        };
        let o = OssError::from(PolicyError::Invalid(v));
        assert_eq!(
            (o.status, o.code, o.message.as_str()),
            (StatusCode::BAD_REQUEST, "InvalidArgument", "serves nothing")
        );
    }
}
