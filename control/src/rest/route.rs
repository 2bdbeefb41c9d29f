//! Which resource a request names: the bucket (path style or virtual-hosted), the
//! sub-resource, the method. Everything here is decided from the request line and `Host`.

use http::{Method, StatusCode};
use percent_encoding::percent_decode_str;
use tlsfleet_policy::{
    names::{Domains, HostKind},
    BucketName,
};

use super::error::OssError;

/// The only sub-resource served.
pub const SUB_RESOURCE: &str = "httpsConfig";

/// A routed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /-/healthz`: the process is up.
    Healthz,
    /// `GET /-/readyz`: the index has loaded.
    Readyz,
    /// `GET /-/metrics`: Prometheus text (see `status`).
    Metrics,
    /// `PUT ?httpsConfig`.
    Put(Target),
    /// `GET ?httpsConfig`.
    Get(Target),
}

/// The bucket and the (decoded) query of an `?httpsConfig` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub bucket: BucketName,
    pub query: Vec<(String, String)>,
}

/// A routing failure, with the bucket name as the request gave it (for `BucketName`).
#[derive(Debug)]
pub struct RouteError {
    pub error: OssError,
    pub bucket: Option<String>,
}

/// The host a request was sent to, lowercase, without port or trailing dot.
pub fn host_name(host: &str) -> String {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(name, _port)| name)
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Routes a request. `domains` are the endpoint domains, most specific first (the agent reads
/// hosts with the same [`Domains`], so `abc.internal.oss.test` is bucket `abc` for both).
pub fn route(
    method: &Method,
    path: &str,
    query: Option<&str>,
    host: Option<&str>,
    domains: &Domains,
) -> Result<Route, RouteError> {
    let fail = |error: OssError, bucket: Option<String>| Err(RouteError { error, bucket });
    if let Some(probe) = path.strip_prefix("/-/") {
        let route = match probe {
            "healthz" => Route::Healthz,
            "readyz" => Route::Readyz,
            "metrics" => Route::Metrics,
            _ => {
                return fail(
                    OssError::new(StatusCode::NOT_FOUND, "NotFound", "no such probe"),
                    None,
                )
            }
        };
        if method != Method::GET && method != Method::HEAD {
            return fail(
                method_not_allowed(method, "probes answer GET", "GET, HEAD"),
                None,
            );
        }
        return Ok(route);
    }

    let virtual_bucket = host
        .map(host_name)
        .and_then(|h| match domains.classify(&h) {
            HostKind::Bucket(label) => Some(label.to_owned()),
            HostKind::Bare | HostKind::Other => None,
        });
    let path = path.strip_prefix('/').unwrap_or(path);
    let (raw_bucket, raw_key) = match &virtual_bucket {
        Some(b) => (b.clone(), path.to_owned()),
        None => {
            let (b, k) = path.split_once('/').unwrap_or((path, ""));
            (
                decode(b).map_err(|e| RouteError {
                    error: e,
                    bucket: None,
                })?,
                k.to_owned(),
            )
        }
    };
    if raw_bucket.is_empty() {
        return fail(
            OssError::invalid_argument(
                "no bucket in the request: use /<bucket>/?httpsConfig or Host: <bucket>.<domain>",
            ),
            None,
        );
    }
    let bucket: BucketName = match raw_bucket.parse() {
        Ok(b) => b,
        Err(e) => {
            let shown: String = raw_bucket.chars().take(80).collect();
            return fail(
                OssError::bad_request("InvalidBucketName", e.to_string()),
                Some(shown),
            );
        }
    };
    let named = Some(bucket.to_string());
    if !raw_key.is_empty() {
        return fail(
            OssError::invalid_argument(
                "object operations are not supported: this endpoint serves only the bucket \
                 sub-resource ?httpsConfig",
            ),
            named,
        );
    }
    let query = parse_query(query.unwrap_or_default()).map_err(|e| RouteError {
        error: e,
        bucket: named.clone(),
    })?;
    let unknown: Vec<&str> = query
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| *k != SUB_RESOURCE)
        .collect();
    if !unknown.is_empty() {
        let shown: Vec<String> = unknown
            .iter()
            .take(5)
            .map(|k| format!("{:?}", k.chars().take(40).collect::<String>()))
            .collect();
        return fail(
            OssError::invalid_argument(format!(
                "unsupported sub-resource or parameter {}: this endpoint serves only ?httpsConfig",
                shown.join(", ")
            )),
            named,
        );
    }
    if query.is_empty() {
        return fail(
            OssError::invalid_argument(
                "no sub-resource: this endpoint serves only ?httpsConfig (GetBucketHttpsConfig, \
                 PutBucketHttpsConfig)",
            ),
            named,
        );
    }
    let target = Target { bucket, query };
    match *method {
        Method::GET => Ok(Route::Get(target)),
        Method::PUT => Ok(Route::Put(target)),
        _ => fail(
            method_not_allowed(
                method,
                "?httpsConfig answers GET and PUT (to disable, PUT <Enable>false</Enable>)",
                "GET, PUT",
            ),
            named,
        ),
    }
}

fn method_not_allowed(method: &Method, hint: &str, allow: &'static str) -> OssError {
    let m: String = method.as_str().chars().take(20).collect();
    let mut e = OssError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!("the method {m} is not allowed: {hint}"),
    );
    e.allow = Some(allow);
    e
}

fn decode(s: &str) -> Result<String, OssError> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| OssError::invalid_argument("the request URI is not UTF-8 once decoded"))
}

/// `a&b=c`: pairs in order, percent-decoded (`+` is a plus: the SDKs encode blanks as %20).
fn parse_query(q: &str) -> Result<Vec<(String, String)>, OssError> {
    const MAX_PARAMS: usize = 64;
    let mut out = Vec::new();
    for part in q.split('&').filter(|p| !p.is_empty()) {
        if out.len() == MAX_PARAMS {
            return Err(OssError::invalid_argument("too many query parameters"));
        }
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        out.push((decode(k)?, decode(v)?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domains() -> Domains {
        Domains::new(["OSS.test", ".oss-cn-hangzhou.example.com:443"])
    }

    fn ok(method: Method, path: &str, query: Option<&str>, host: Option<&str>) -> Route {
        route(&method, path, query, host, &domains()).unwrap()
    }

    fn err(
        method: Method,
        path: &str,
        query: Option<&str>,
        host: Option<&str>,
    ) -> (OssError, Option<String>) {
        let e = route(&method, path, query, host, &domains()).unwrap_err();
        (e.error, e.bucket)
    }

    fn target(bucket: &str, query: &[(&str, &str)]) -> Target {
        Target {
            bucket: bucket.parse().unwrap(),
            query: query
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
        }
    }

    #[test]
    fn path_style_both_query_spellings() {
        let t = target("mybucket", &[("httpsConfig", "")]);
        assert_eq!(
            ok(
                Method::PUT,
                "/mybucket/",
                Some("httpsConfig"),
                Some("127.0.0.1:7080")
            ),
            Route::Put(t.clone())
        );
        assert_eq!(
            ok(
                Method::GET,
                "/mybucket",
                Some("httpsConfig="),
                Some("127.0.0.1")
            ),
            Route::Get(t.clone())
        );
        assert_eq!(
            ok(Method::GET, "/mybucket/", Some("httpsConfig"), None),
            Route::Get(t.clone())
        );
        // The bare endpoint domain is path style too.
        assert_eq!(
            ok(
                Method::GET,
                "/mybucket/",
                Some("httpsConfig"),
                Some("oss.test")
            ),
            Route::Get(t)
        );
    }

    #[test]
    fn virtual_hosted_for_each_domain_case_and_port_insensitive() {
        let t = target("mybucket", &[("httpsConfig", "")]);
        for host in [
            "mybucket.oss.test",
            "MyBucket.OSS.Test:7080",
            "mybucket.oss.test.",
            "mybucket.oss-cn-hangzhou.example.com",
        ] {
            assert_eq!(
                ok(Method::PUT, "/", Some("httpsConfig="), Some(host)),
                Route::Put(t.clone()),
                "{host}"
            );
        }
        // A host under no domain: path style.
        assert_eq!(
            ok(
                Method::GET,
                "/mybucket/",
                Some("httpsConfig"),
                Some("mybucket.elsewhere.test")
            ),
            Route::Get(t)
        );
        let (e, b) = err(Method::GET, "/", Some("httpsConfig"), Some("a.b.oss.test"));
        assert_eq!((e.code, b.as_deref()), ("InvalidBucketName", Some("a.b")));
        let (e, _) = err(
            Method::GET,
            "/key",
            Some("httpsConfig"),
            Some("mybucket.oss.test"),
        );
        assert_eq!(e.code, "InvalidArgument");
        assert_eq!(host_name("[::1]:7080"), "::1");
    }

    #[test]
    fn bad_names_sub_resources_and_methods() {
        let (e, b) = err(Method::PUT, "/My_Bucket/", Some("httpsConfig"), None);
        assert_eq!(
            (e.status, e.code, b.as_deref()),
            (
                StatusCode::BAD_REQUEST,
                "InvalidBucketName",
                Some("My_Bucket")
            )
        );
        let (e, _) = err(Method::PUT, "/ab/", Some("httpsConfig"), None);
        assert_eq!(e.code, "InvalidBucketName");
        let (e, _) = err(Method::GET, "/", Some("httpsConfig"), Some("127.0.0.1"));
        assert_eq!(e.code, "InvalidArgument");
        let (e, b) = err(Method::GET, "/mybucket/", Some("acl"), None);
        assert_eq!(
            (e.code, b.as_deref()),
            ("InvalidArgument", Some("mybucket"))
        );
        assert!(e.message.contains("\"acl\""), "{}", e.message);
        let (e, _) = err(
            Method::GET,
            "/mybucket/",
            Some("httpsConfig&versionId=1"),
            None,
        );
        assert!(e.message.contains("versionId"), "{}", e.message);
        let (e, _) = err(Method::GET, "/mybucket/", None, None);
        assert_eq!(e.code, "InvalidArgument");
        let (e, _) = err(Method::GET, "/mybucket/obj", Some("httpsConfig"), None);
        assert_eq!(e.code, "InvalidArgument");
        for m in [Method::DELETE, Method::POST, Method::HEAD, Method::PATCH] {
            let (e, _) = err(m, "/mybucket/", Some("httpsConfig"), None);
            assert_eq!(
                (e.status, e.code),
                (StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed")
            );
        }
        let (e, _) = err(Method::GET, "/%FF/", Some("httpsConfig"), None);
        assert_eq!(e.code, "InvalidArgument");
        let many = vec!["httpsConfig"; 100].join("&");
        let (e, _) = err(Method::GET, "/mybucket/", Some(&many), None);
        assert_eq!(e.code, "InvalidArgument");
    }

    #[test]
    fn percent_encoded_names_are_decoded_then_validated() {
        assert_eq!(
            ok(Method::GET, "/my%2Dbucket/", Some("httpsConfig"), None),
            Route::Get(target("my-bucket", &[("httpsConfig", "")]))
        );
        let (e, _) = err(Method::GET, "/my%20bucket/", Some("httpsConfig"), None);
        assert_eq!(e.code, "InvalidBucketName");
    }

    #[test]
    fn nested_domains_read_like_the_agent_reads_them() {
        // The most specific domain wins, as at the edge: bucket `abc`, not `abc.internal`.
        let domains = Domains::new(["oss.test", "internal.oss.test"]);
        let r = route(
            &Method::GET,
            "/",
            Some("httpsConfig"),
            Some("abc.internal.oss.test"),
            &domains,
        )
        .unwrap();
        assert_eq!(r, Route::Get(target("abc", &[("httpsConfig", "")])));
    }

    #[test]
    fn probes() {
        assert_eq!(ok(Method::GET, "/-/healthz", None, None), Route::Healthz);
        assert_eq!(
            ok(Method::GET, "/-/readyz", None, Some("x.oss.test")),
            Route::Readyz
        );
        assert_eq!(
            err(Method::PUT, "/-/readyz", None, None).0.code,
            "MethodNotAllowed"
        );
        assert_eq!(
            err(Method::GET, "/-/other", None, None).0.status,
            StatusCode::NOT_FOUND
        );
    }
}
