//! OSS signature V4: `OSS4-HMAC-SHA256`.
//!
//! ```text
//! CanonicalRequest = VERB \n CanonicalURI \n CanonicalQuery \n CanonicalHeaders \n
//!                    AdditionalHeaders \n HashedPayload
//! StringToSign     = "OSS4-HMAC-SHA256\n" x-oss-date "\n" Scope "\n" hex(SHA256(CanonicalRequest))
//! Scope            = YYYYMMDD/<region>/oss/aliyun_v4_request
//! SigningKey       = HMAC(HMAC(HMAC(HMAC("aliyun_v4" + secret, YYYYMMDD), region), "oss"),
//!                         "aliyun_v4_request")
//! ```
//! The region is whatever the signer put in its scope: this server answers for any region.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::{bounded, clock, header_bytes, AuthError, OssRequest, Principal, Verified};
use crate::auth::Credentials;

/// The scheme, first word of the header.
pub(super) const ALGORITHM: &str = "OSS4-HMAC-SHA256";
const PRODUCT: &str = "oss";
const TERMINATOR: &str = "aliyun_v4_request";
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// The fields of the header value after the scheme.
#[derive(Debug, PartialEq, Eq)]
struct Fields<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    signature: &'a str,
    /// Lowercase names, as listed.
    additional: Vec<String>,
}

/// Parses `Credential=AK/DATE/REGION/oss/aliyun_v4_request, Signature=HEX[, AdditionalHeaders=a;b]`
/// in any order, with or without blanks after the commas (the SDKs differ).
fn parse(rest: &str) -> Result<Fields<'_>, AuthError> {
    let malformed = |m: &str| AuthError::Malformed(m.to_owned());
    if !rest.starts_with(' ') {
        return Err(malformed("expected a blank after OSS4-HMAC-SHA256"));
    }
    let (mut credential, mut signature, mut additional) = (None, None, None);
    for field in rest.split(',') {
        let field = field.trim();
        if field.is_empty() {
            continue;
        }
        let (k, v) = field
            .split_once('=')
            .ok_or_else(|| malformed("field without '='"))?;
        let slot = match k.trim() {
            "Credential" => &mut credential,
            "Signature" => &mut signature,
            "AdditionalHeaders" => &mut additional,
            _ => {
                return Err(malformed(
                    "unknown field: expected Credential, Signature, AdditionalHeaders",
                ))
            }
        };
        if slot.replace(v.trim()).is_some() {
            return Err(malformed("repeated field"));
        }
    }
    let credential = credential.ok_or_else(|| malformed("missing Credential"))?;
    let signature = signature.ok_or_else(|| malformed("missing Signature"))?;
    let parts: Vec<&str> = credential.split('/').collect();
    let [access_key_id, date, region, product, terminator] = parts[..] else {
        return Err(malformed(
            "Credential must be AccessKeyId/YYYYMMDD/region/oss/aliyun_v4_request",
        ));
    };
    if access_key_id.is_empty() || product != PRODUCT || terminator != TERMINATOR {
        return Err(malformed(
            "Credential must be AccessKeyId/YYYYMMDD/region/oss/aliyun_v4_request",
        ));
    }
    let additional = additional
        .unwrap_or_default()
        .split(';')
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect();
    Ok(Fields {
        access_key_id,
        date,
        region,
        signature,
        additional,
    })
}

/// Verifies `rest` (the header value after the scheme). Returns the principal and the body
/// hash the signer committed to, if it did.
pub(super) fn verify(
    creds: &Credentials,
    req: &OssRequest<'_>,
    rest: &str,
    now: i64,
) -> Result<Verified, AuthError> {
    let fields = parse(rest)?;
    let key = creds
        .get_arc(fields.access_key_id)
        .ok_or_else(|| AuthError::InvalidAccessKeyId(bounded(fields.access_key_id)))?;
    let x_oss_date = req
        .headers
        .get("x-oss-date")
        .ok_or_else(|| AuthError::Malformed("V4 requests need an x-oss-date header".into()))?
        .to_str()
        .unwrap_or_default()
        .trim();
    let date = clock::parse_iso_basic(x_oss_date)
        .ok_or_else(|| AuthError::Malformed("x-oss-date is not YYYYMMDDTHHMMSSZ".into()))?;
    if x_oss_date.get(..8) != Some(fields.date) {
        return Err(AuthError::Malformed(
            "the Credential date is not the x-oss-date day".into(),
        ));
    }
    let content_sha256 = payload_hash(req)?;
    let presented = hex::decode(fields.signature).map_err(|_| AuthError::SignatureDoesNotMatch)?;

    let scope = format!("{}/{}/{PRODUCT}/{TERMINATOR}", fields.date, fields.region);
    let canonical = canonical_request(req, &fields.additional);
    let string_to_sign = format!(
        "{ALGORITHM}\n{x_oss_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(&canonical))
    );
    let mut signing_key = hmac(format!("aliyun_v4{}", key.secret()).as_bytes(), fields.date);
    for part in [fields.region, PRODUCT, TERMINATOR] {
        signing_key = hmac(&signing_key, part);
    }
    let mut mac = hmac_sha256(&signing_key);
    mac.update(string_to_sign.as_bytes());
    mac.verify_slice(&presented)
        .map_err(|_| AuthError::SignatureDoesNotMatch)?;
    clock::check_skew(date, now)?;
    Ok(Verified {
        principal: Principal { key },
        content_sha256,
        date,
        signature: presented,
    })
}

fn hmac_sha256(key: &[u8]) -> Hmac<Sha256> {
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    }
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = hmac_sha256(key);
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// `x-oss-content-sha256`: absent or `UNSIGNED-PAYLOAD` (what every SDK sends), or the hex
/// SHA-256 of the body, which the caller checks once it has the body.
fn payload_hash(req: &OssRequest<'_>) -> Result<Option<[u8; 32]>, AuthError> {
    let Some(v) = req.headers.get("x-oss-content-sha256") else {
        return Ok(None);
    };
    let v = v.to_str().unwrap_or_default().trim();
    if v == UNSIGNED_PAYLOAD {
        return Ok(None);
    }
    let mut hash = [0u8; 32];
    hex::decode_to_slice(v, &mut hash).map_err(|_| {
        AuthError::Malformed(
            "x-oss-content-sha256 must be UNSIGNED-PAYLOAD or a hex SHA-256".into(),
        )
    })?;
    Ok(Some(hash))
}

fn is_default_signed(name: &str) -> bool {
    name.starts_with("x-oss-") || name == "content-type" || name == "content-md5"
}

/// The canonical request, from raw header bytes.
fn canonical_request(req: &OssRequest<'_>, additional: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(req.method.as_str().as_bytes());
    out.push(b'\n');
    let uri = if req.bucket.is_empty() {
        "/".to_owned()
    } else {
        format!("/{}/{}", req.bucket, req.key)
    };
    out.extend_from_slice(uri_encode(&uri, true).as_bytes());
    out.push(b'\n');
    out.extend_from_slice(canonical_query(req.query).as_bytes());
    out.push(b'\n');

    // The SDKs drop default-signed names from AdditionalHeaders; so do we, so that a
    // header is never listed twice.
    let mut extra: Vec<&str> = additional
        .iter()
        .map(String::as_str)
        .filter(|h| !is_default_signed(h))
        .collect();
    extra.sort_unstable();
    extra.dedup();
    let mut names: Vec<&str> = req
        .headers
        .keys()
        .map(|k| k.as_str())
        .filter(|k| is_default_signed(k))
        .collect();
    for h in &extra {
        if req.headers.contains_key(*h) || (*h == "host" && req.host.is_some()) {
            names.push(h);
        }
    }
    names.sort_unstable();
    names.dedup();
    for name in names {
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        let value = header_bytes(req.headers, name);
        if value.is_empty() && name == "host" {
            out.extend_from_slice(req.host.unwrap_or_default().as_bytes());
        } else {
            out.extend_from_slice(value.trim_ascii());
        }
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend_from_slice(extra.join(";").as_bytes());
    out.push(b'\n');
    let payload = req
        .headers
        .get("x-oss-content-sha256")
        .map(|v| v.as_bytes().trim_ascii())
        .unwrap_or(UNSIGNED_PAYLOAD.as_bytes());
    out.extend_from_slice(payload);
    out
}

/// Every parameter, RFC 3986-encoded, sorted, `k` alone when the value is empty.
fn canonical_query(query: &[(String, String)]) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    pairs.sort_unstable();
    let parts: Vec<String> = pairs
        .into_iter()
        .map(|(k, v)| if v.is_empty() { k } else { format!("{k}={v}") })
        .collect();
    parts.join("&")
}

/// RFC 3986 encoding: unreserved characters kept, everything else `%XX` (uppercase);
/// `/` kept too when `keep_slash`.
fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use http::{HeaderMap, HeaderValue, Method};

    use super::*;
    use crate::auth::{Authenticator, SignatureVersion};

    /// The doc's captured canonical request (oss2 V4 PUT).
    const CAPTURED_CANONICAL: &str = "PUT\n/mybucket-v4/\nhttpsConfig\nx-oss-content-sha256:UNSIGNED-PAYLOAD\nx-oss-date:20261128T210715Z\n\n\nUNSIGNED-PAYLOAD";
    const T: u64 = 1_795_900_035; // 2026-11-28T21:07:15Z

    fn at(unix: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(unix)
    }

    fn auth() -> Authenticator {
        Authenticator::new(
            Credentials::parse(
                "[[key]]\nid='AKV4'\nsecret='v4-secret'\nallow=['oss:*']\nbuckets=['*']\n",
            )
            .unwrap(),
        )
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    const BASE: [(&str, &str); 3] = [
        ("x-oss-date", "20261128T210715Z"),
        ("x-oss-content-sha256", "UNSIGNED-PAYLOAD"),
        ("date", "Sat, 28 Nov 2026 21:07:15 GMT"),
    ];

    #[test]
    fn captured_canonical_request() {
        let h = headers(&BASE);
        let query = q(&[("httpsConfig", "")]);
        let req = OssRequest {
            method: &Method::PUT,
            headers: &h,
            host: Some("127.0.0.1:7080"),
            bucket: "mybucket-v4",
            key: "",
            query: &query,
        };
        assert_eq!(
            String::from_utf8(canonical_request(&req, &[])).unwrap(),
            CAPTURED_CANONICAL
        );
    }

    /// Vectors signed by the official SDKs (alibabacloud-oss-v2 1.4.1 `SignerV4` and oss2
    /// 2.19.1 `AuthV4`, with the clock fixed at 2026-11-28T21:07:15Z, secret `v4-secret`).
    #[test]
    fn verifies_sdk_signed_requests() {
        let auth = auth();
        let query = q(&[("httpsConfig", "")]);
        let check = |method: &Method, extra: &[(&'static str, &str)], host, authz: &str| {
            let mut pairs = BASE.to_vec();
            pairs.extend_from_slice(extra);
            pairs.push(("authorization", authz));
            let h = headers(&pairs);
            let req = OssRequest {
                method,
                headers: &h,
                host,
                bucket: "mybucket-v4",
                key: "",
                query: &query,
            };
            auth.oss_at(&req, at(T + 30))
        };
        // v2 SDK, path style, no extra headers: the captured canonical request.
        let ok = check(
            &Method::PUT,
            &[],
            Some("127.0.0.1:7080"),
            "OSS4-HMAC-SHA256 Credential=AKV4/20261128/cn-hangzhou/oss/aliyun_v4_request,Signature=f036e568029e0f1d9989cb85e0d0077a809e9605cc6882e8daa4930dfdf61c6b",
        )
        .unwrap();
        assert_eq!(ok.version, SignatureVersion::V4);
        assert_eq!(ok.principal.key.id, "AKV4");
        assert_eq!(ok.content_sha256, None);

        // v2 SDK, virtual-hosted, Content-Type, Content-MD5, an x-oss-meta header and
        // AdditionalHeaders=host (Content-Type was asked for too; the SDK drops it).
        let vhost = [
            ("content-type", "application/xml"),
            ("content-md5", "1B2M2Y8AsgTpgAmY7PhCfg=="),
            ("host", "mybucket-v4.oss.test:7080"),
            ("x-oss-meta-z", "z"),
        ];
        let v2 = "OSS4-HMAC-SHA256 Credential=AKV4/20261128/cn-hangzhou/oss/aliyun_v4_request,AdditionalHeaders=host,Signature=a44e1eff4919ec43c7618ea90672ab9257c7557ea018b19d9089772aea964cbf";
        check(&Method::PUT, &vhost, Some("mybucket-v4.oss.test:7080"), v2).unwrap();
        // The signed Host matters.
        let mut moved = vhost;
        moved[2] = ("host", "other.oss.test:7080");
        assert_eq!(
            check(&Method::PUT, &moved, None, v2).unwrap_err(),
            AuthError::SignatureDoesNotMatch
        );

        // oss2: ", " separators, AdditionalHeaders after Signature.
        let oss2 = "OSS4-HMAC-SHA256 Credential=AKV4/20261128/cn-hangzhou/oss/aliyun_v4_request, Signature=4313de5457f24afac993c65e9e60a911a963847b31fcf32dc1df5e35d8a0e4ab, AdditionalHeaders=user-agent";
        let oss2_headers = [
            ("content-type", "application/xml"),
            ("x-oss-meta-a", "1"),
            ("user-agent", "ua/1"),
        ];
        check(&Method::PUT, &oss2_headers, None, oss2).unwrap();
        let mut ua = oss2_headers;
        ua[2] = ("user-agent", "ua/2");
        assert_eq!(
            check(&Method::PUT, &ua, None, oss2).unwrap_err(),
            AuthError::SignatureDoesNotMatch
        );
    }

    #[test]
    fn refuses_wrong_secret_region_skew_and_key() {
        let query = q(&[("httpsConfig", "")]);
        let good = "OSS4-HMAC-SHA256 Credential=AKV4/20261128/cn-hangzhou/oss/aliyun_v4_request,Signature=f036e568029e0f1d9989cb85e0d0077a809e9605cc6882e8daa4930dfdf61c6b";
        let run = |auth: &Authenticator, authz: &str, now: u64| {
            let mut pairs = BASE.to_vec();
            pairs.push(("authorization", authz));
            let h = headers(&pairs);
            let req = OssRequest {
                method: &Method::PUT,
                headers: &h,
                host: None,
                bucket: "mybucket-v4",
                key: "",
                query: &query,
            };
            auth.oss_at(&req, at(now))
        };
        let other = Authenticator::new(
            Credentials::parse(
                "[[key]]\nid='AKV4'\nsecret='other'\nallow=['oss:*']\nbuckets=['*']\n",
            )
            .unwrap(),
        );
        assert_eq!(
            run(&other, good, T).unwrap_err(),
            AuthError::SignatureDoesNotMatch
        );
        let auth = auth();
        assert!(run(&auth, good, T - 900).is_ok());
        assert_eq!(
            run(&auth, good, T + 901).unwrap_err(),
            AuthError::RequestTimeTooSkewed
        );
        let region = good.replace("cn-hangzhou", "cn-beijing");
        assert_eq!(
            run(&auth, &region, T).unwrap_err(),
            AuthError::SignatureDoesNotMatch
        );
        let unknown = good.replace("AKV4/", "AKNOPE/");
        assert_eq!(
            run(&auth, &unknown, T).unwrap_err(),
            AuthError::InvalidAccessKeyId("AKNOPE".into())
        );
        for bad in [
            "OSS4-HMAC-SHA256",
            "OSS4-HMAC-SHA256Credential=AKV4/20261128/r/oss/aliyun_v4_request,Signature=00",
            "OSS4-HMAC-SHA256 Signature=00",
            "OSS4-HMAC-SHA256 Credential=AKV4/20261128/r/oss/aliyun_v4_request",
            "OSS4-HMAC-SHA256 Credential=AKV4/20261128/r/s3/aliyun_v4_request,Signature=00",
            "OSS4-HMAC-SHA256 Credential=AKV4/20261128/r/oss,Signature=00",
            "OSS4-HMAC-SHA256 Credential=AKV4/20261127/r/oss/aliyun_v4_request,Signature=00",
            "OSS4-HMAC-SHA256 Credential=AKV4/20261128/r/oss/aliyun_v4_request,Signature=00,Foo=1",
            "OSS4-HMAC-SHA256 Credential=AKV4/20261128/r/oss/aliyun_v4_request,Signature=00,Signature=01",
            "OSS4-HMAC-SHA256 Credential=/20261128/r/oss/aliyun_v4_request,Signature=00",
        ] {
            assert!(matches!(run(&auth, bad, T), Err(AuthError::Malformed(_))), "{bad}");
        }
    }

    fn b1b_put<'a>(h: &'a HeaderMap, query: &'a [(String, String)]) -> OssRequest<'a> {
        OssRequest {
            method: &Method::PUT,
            headers: h,
            host: None,
            bucket: "b1b",
            key: "",
            query,
        }
    }

    #[test]
    fn signed_payload_hash_is_returned_for_the_body_check() {
        let auth = auth();
        let hash = hex::encode(Sha256::digest(b"<HttpsConfiguration/>"));
        let query = q(&[("httpsConfig", "")]);
        let mut h = headers(&[
            ("x-oss-date", "20261128T210715Z"),
            ("x-oss-content-sha256", &hash),
        ]);
        let canonical = canonical_request(&b1b_put(&h, &query), &[]);
        let sts = format!(
            "OSS4-HMAC-SHA256\n20261128T210715Z\n20261128/r1/oss/aliyun_v4_request\n{}",
            hex::encode(Sha256::digest(&canonical))
        );
        let mut k = hmac(b"aliyun_v4v4-secret", "20261128");
        for p in ["r1", "oss", "aliyun_v4_request"] {
            k = hmac(&k, p);
        }
        let sig = hex::encode(hmac(&k, &sts));
        let value = format!(
            "OSS4-HMAC-SHA256 Credential=AKV4/20261128/r1/oss/aliyun_v4_request,Signature={sig}"
        );
        h.insert("authorization", HeaderValue::from_str(&value).unwrap());
        let ok = auth.oss_at(&b1b_put(&h, &query), at(T)).unwrap();
        assert_eq!(ok.content_sha256.map(hex::encode), Some(hash));
        h.insert(
            "x-oss-content-sha256",
            HeaderValue::from_static("STREAMING-UNSIGNED-PAYLOAD"),
        );
        assert!(matches!(
            auth.oss_at(&b1b_put(&h, &query), at(T)),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn query_and_uri_encoding() {
        assert_eq!(
            canonical_query(&q(&[("httpsConfig", ""), ("b", "x y/z"), ("a~", "é")])),
            "a~=%C3%A9&b=x%20y%2Fz&httpsConfig"
        );
        assert_eq!(uri_encode("/my bucket/a+b", true), "/my%20bucket/a%2Bb");
    }
}
