//! OSS signature V1: `Authorization: OSS <AccessKeyId>:<base64(HMAC-SHA1(secret, StringToSign))>`.
//!
//! ```text
//! StringToSign = VERB \n Content-MD5 \n Content-Type \n (x-oss-date or Date) \n
//!                CanonicalizedOSSHeaders CanonicalizedResource
//! ```
//! Built from raw header bytes, as the SDKs sign them.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use super::{bounded, clock, header_bytes, AuthError, OssRequest, Principal, Verified};
use crate::auth::Credentials;

/// Query parameters that are part of the V1 CanonicalizedResource (oss2's list, which the
/// v2 SDK's list plus its per-operation sub-resources agree with for this API).
const SUBRESOURCES: &[&str] = &[
    "acl",
    "append",
    "asyncFetch",
    "bucketInfo",
    "callback",
    "callback-var",
    "cname",
    "comp",
    "continuation-token",
    "cors",
    "delete",
    "encryption",
    "endTime",
    "group",
    "httpsConfig",
    "inventory",
    "inventoryId",
    "lifecycle",
    "link",
    "live",
    "location",
    "logging",
    "metaQuery",
    "objectInfo",
    "objectMeta",
    "partNumber",
    "policy",
    "position",
    "qos",
    "qosInfo",
    "referer",
    "regionList",
    "replication",
    "replicationLocation",
    "replicationProgress",
    "requestPayment",
    "resourceGroup",
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "response-content-language",
    "response-content-type",
    "response-expires",
    "restore",
    "security-token",
    "sequential",
    "startTime",
    "stat",
    "status",
    "style",
    "styleName",
    "symlink",
    "tagging",
    "transferAcceleration",
    "uploadId",
    "uploads",
    "versionId",
    "versioning",
    "versions",
    "vod",
    "website",
    "worm",
    "wormExtend",
    "wormId",
    "x-oss-process",
];

/// Verifies `rest` (the header value after `OSS `) against the request.
pub(super) fn verify(
    creds: &Credentials,
    req: &OssRequest<'_>,
    rest: &str,
    now: i64,
) -> Result<Verified, AuthError> {
    let (id, signature) = rest
        .trim()
        .split_once(':')
        .ok_or_else(|| AuthError::Malformed("expected \"OSS <AccessKeyId>:<Signature>\"".into()))?;
    let (id, signature) = (id.trim(), signature.trim());
    if id.is_empty() || signature.is_empty() {
        return Err(AuthError::Malformed(
            "empty AccessKeyId or Signature".into(),
        ));
    }
    let key = creds
        .get_arc(id)
        .ok_or_else(|| AuthError::InvalidAccessKeyId(bounded(id)))?;
    let date = request_date(req)?;
    // A signature that is not base64 cannot match; report it as such, not as malformed.
    let presented = base64::engine::general_purpose::STANDARD
        .decode(signature)
        .map_err(|_| AuthError::SignatureDoesNotMatch)?;
    let mut mac = hmac_sha1(key.secret().as_bytes());
    mac.update(&string_to_sign(req));
    mac.verify_slice(&presented)
        .map_err(|_| AuthError::SignatureDoesNotMatch)?;
    clock::check_skew(date, now)?;
    Ok(Verified {
        principal: Principal { key },
        content_sha256: None,
        date,
        signature: presented,
    })
}

fn request_date(req: &OssRequest<'_>) -> Result<i64, AuthError> {
    if let Some(v) = req.headers.get("x-oss-date") {
        let v = v.to_str().unwrap_or_default();
        return clock::parse_http_date(v)
            .or_else(|| clock::parse_iso_basic(v.trim()))
            .ok_or_else(|| AuthError::Malformed("x-oss-date is not a valid date".into()));
    }
    let v = req
        .headers
        .get(http::header::DATE)
        .ok_or_else(|| AuthError::Malformed("no Date or x-oss-date header".into()))?;
    clock::parse_http_date(v.to_str().unwrap_or_default())
        .ok_or_else(|| AuthError::Malformed("Date is not an HTTP date".into()))
}

fn hmac_sha1(key: &[u8]) -> Hmac<Sha1> {
    match Hmac::<Sha1>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    }
}

/// The V1 StringToSign of a request.
pub(super) fn string_to_sign(req: &OssRequest<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(req.method.as_str().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(&header_bytes(req.headers, "content-md5"));
    out.push(b'\n');
    out.extend_from_slice(&header_bytes(req.headers, "content-type"));
    out.push(b'\n');
    let oss_date = header_bytes(req.headers, "x-oss-date");
    if oss_date.is_empty() {
        out.extend_from_slice(&header_bytes(req.headers, "date"));
    } else {
        out.extend_from_slice(&oss_date);
    }
    out.push(b'\n');
    // HeaderMap names are lowercase already; BTreeSet sorts them and drops repeats.
    let names: std::collections::BTreeSet<&str> = req
        .headers
        .keys()
        .map(|k| k.as_str())
        .filter(|k| k.starts_with("x-oss-"))
        .collect();
    for name in names {
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        out.extend_from_slice(&header_bytes(req.headers, name));
        out.push(b'\n');
    }
    out.extend_from_slice(canonical_resource(req).as_bytes());
    out
}

fn canonical_resource(req: &OssRequest<'_>) -> String {
    let mut resource = if req.bucket.is_empty() {
        "/".to_owned()
    } else {
        format!("/{}/{}", req.bucket, req.key)
    };
    let mut sub: Vec<(&str, &str)> = req
        .query
        .iter()
        .filter(|(k, _)| SUBRESOURCES.contains(&k.as_str()))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    sub.sort_unstable();
    for (i, (k, v)) in sub.into_iter().enumerate() {
        resource.push(if i == 0 { '?' } else { '&' });
        resource.push_str(k);
        if !v.is_empty() {
            resource.push('=');
            resource.push_str(v);
        }
    }
    resource
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use http::{HeaderMap, HeaderValue, Method};

    use super::*;
    use crate::auth::{Authenticator, SignatureVersion};

    const DATE: &str = "Sat, 28 Nov 2026 21:07:15 GMT";
    /// base64(HMAC-SHA1("v1-secret", the captured string-to-sign)), computed with Python's
    /// hmac module independently of this code.
    const CAPTURED_SIGNATURE: &str = "4i/XV3dvPjgqTTp6BgE8oX3mwLM=";

    fn creds() -> Credentials {
        Credentials::parse(
            "[[key]]\nid='AKV1'\nsecret='v1-secret'\nallow=['oss:*']\nbuckets=['*']\n",
        )
        .unwrap()
    }

    fn at(unix: u64) -> std::time::SystemTime {
        UNIX_EPOCH + Duration::from_secs(unix)
    }

    fn query() -> Vec<(String, String)> {
        vec![("httpsConfig".into(), String::new())]
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn put_req<'a>(h: &'a HeaderMap, q: &'a [(String, String)]) -> OssRequest<'a> {
        OssRequest {
            method: &Method::PUT,
            headers: h,
            host: None,
            bucket: "mybucket-v1",
            key: "",
            query: q,
        }
    }

    #[test]
    fn captured_oss2_string_to_sign() {
        let h = headers(&[("date", DATE), ("host", "127.0.0.1:7080")]);
        let q = query();
        let req = OssRequest {
            method: &Method::PUT,
            headers: &h,
            host: Some("127.0.0.1:7080"),
            bucket: "mybucket-v1",
            key: "",
            query: &q,
        };
        assert_eq!(
            String::from_utf8(string_to_sign(&req)).unwrap(),
            "PUT\n\n\nSat, 28 Nov 2026 21:07:15 GMT\n/mybucket-v1/?httpsConfig"
        );
    }

    #[test]
    fn verifies_the_captured_request_and_refuses_tampering() {
        // A PUT signature is good once (replays: see below): each acceptance checked here
        // gets its own authenticator.
        let auth = Authenticator::new(creds());
        let q = query();
        let good = format!("OSS AKV1:{CAPTURED_SIGNATURE}");
        let h = headers(&[("date", DATE), ("authorization", &good)]);
        let ok = auth
            .oss_at(&put_req(&h, &q), at(1_795_900_035 + 60))
            .unwrap();
        assert_eq!(ok.version, SignatureVersion::V1);
        assert_eq!(ok.principal.key.id, "AKV1");

        // Another bucket, verb or date: another string to sign.
        let other = OssRequest {
            bucket: "mybucket-v2",
            ..put_req(&h, &q)
        };
        assert_eq!(
            auth.oss_at(&other, at(1_795_900_035)).unwrap_err(),
            AuthError::SignatureDoesNotMatch
        );
        let get = OssRequest {
            method: &Method::GET,
            ..put_req(&h, &q)
        };
        assert_eq!(
            auth.oss_at(&get, at(1_795_900_035)).unwrap_err(),
            AuthError::SignatureDoesNotMatch
        );
        let h2 = headers(&[
            ("date", "Sat, 28 Nov 2026 21:07:16 GMT"),
            ("authorization", &good),
        ]);
        assert_eq!(
            auth.oss_at(&put_req(&h2, &q), at(1_795_900_035))
                .unwrap_err(),
            AuthError::SignatureDoesNotMatch
        );
        // An unsigned x-oss-* header changes the string to sign too.
        let h3 = headers(&[
            ("date", DATE),
            ("x-oss-meta", "1"),
            ("authorization", &good),
        ]);
        assert_eq!(
            auth.oss_at(&put_req(&h3, &q), at(1_795_900_035))
                .unwrap_err(),
            AuthError::SignatureDoesNotMatch
        );

        // Clock skew, after the signature checked out.
        assert_eq!(
            auth.oss_at(&put_req(&h, &q), at(1_795_900_035 + 901))
                .unwrap_err(),
            AuthError::RequestTimeTooSkewed
        );
        assert!(Authenticator::new(creds())
            .oss_at(&put_req(&h, &q), at(1_795_900_035 - 900))
            .is_ok());
        // The same signed PUT a second time is a replay; with another body (which V1 without
        // Content-MD5 does not sign), a reused signature. Both are refused.
        let now = at(1_795_900_035 + 61);
        auth.check_put_replay_at(&ok, b"<a/>", now).unwrap();
        assert_eq!(
            auth.check_put_replay_at(&ok, b"<a/>", now).unwrap_err(),
            AuthError::Replayed
        );
        assert_eq!(
            auth.check_put_replay_at(&ok, b"<swapped/>", now)
                .unwrap_err(),
            AuthError::ReusedSignature
        );
        // Once its date is out of the window, the signature is refused as too old anyway.
        assert_eq!(
            auth.oss_at(&put_req(&h, &q), at(1_795_900_035 + 901))
                .unwrap_err(),
            AuthError::RequestTimeTooSkewed
        );

        for (value, want) in [
            (
                "OSS NOPE:abc=",
                AuthError::InvalidAccessKeyId("NOPE".into()),
            ),
            ("OSS AKV1:not base64!", AuthError::SignatureDoesNotMatch),
            ("OSS AKV1:AAAA", AuthError::SignatureDoesNotMatch),
        ] {
            let h = headers(&[("date", DATE), ("authorization", value)]);
            assert_eq!(
                auth.oss_at(&put_req(&h, &q), at(1_795_900_035))
                    .unwrap_err(),
                want,
                "{value}"
            );
        }
        for value in ["OSS AKV1", "OSS :sig", "Basic abc", "OSS AKV1:"] {
            let h = headers(&[("date", DATE), ("authorization", value)]);
            assert!(
                matches!(
                    auth.oss_at(&put_req(&h, &q), at(1_795_900_035)),
                    Err(AuthError::Malformed(_))
                ),
                "{value}"
            );
        }
        let no_date = headers(&[("authorization", &good)]);
        assert!(matches!(
            auth.oss_at(&put_req(&no_date, &q), at(0)),
            Err(AuthError::Malformed(_))
        ));
        let empty = HeaderMap::new();
        assert_eq!(
            auth.oss_at(&put_req(&empty, &q), at(0)).unwrap_err(),
            AuthError::Missing
        );
    }

    #[test]
    fn canonicalisation_of_headers_and_subresources() {
        let h = headers(&[
            ("content-md5", "1B2M2Y8AsgTpgAmY7PhCfg=="),
            ("content-type", "application/xml"),
            ("x-oss-date", DATE),
            ("date", "ignored when x-oss-date is sent"),
            ("x-oss-b", "2"),
            ("X-OSS-A", "1"),
            ("x-oss-a", "1b"),
            ("x-other", "unsigned"),
        ]);
        let q: Vec<(String, String)> = vec![
            ("httpsConfig".into(), String::new()),
            ("acl".into(), String::new()),
            ("unrelated".into(), "x".into()),
            ("versionId".into(), "v 1".into()),
        ];
        let req = OssRequest {
            method: &Method::PUT,
            headers: &h,
            host: None,
            bucket: "b1b",
            key: "",
            query: &q,
        };
        assert_eq!(
            String::from_utf8(string_to_sign(&req)).unwrap(),
            "PUT\n1B2M2Y8AsgTpgAmY7PhCfg==\napplication/xml\nSat, 28 Nov 2026 21:07:15 GMT\n\
             x-oss-a:1,1b\nx-oss-b:2\nx-oss-date:Sat, 28 Nov 2026 21:07:15 GMT\n\
             /b1b/?acl&httpsConfig&versionId=v 1"
        );
    }

    #[test]
    fn header_names_are_case_insensitive() {
        // http::HeaderMap lowercases names: `DATE` and `Authorization` read like oss2's
        // lowercase `date` and `authorization`.
        let auth = Authenticator::new(creds());
        let mut h = HeaderMap::new();
        h.insert("DATE", HeaderValue::from_static(DATE));
        h.insert(
            "Authorization",
            HeaderValue::from_str(&format!("OSS AKV1:{CAPTURED_SIGNATURE}")).unwrap(),
        );
        let q = query();
        let req = OssRequest {
            method: &Method::PUT,
            headers: &h,
            host: None,
            bucket: "mybucket-v1",
            key: "",
            query: &q,
        };
        assert!(auth.oss_at(&req, at(1_795_900_035)).is_ok());
    }
}
