//! One log line per gRPC call (target `tlsfleet::request`, as the REST API's): its request
//! id, the key that signed it, the peer, the method, the bucket, the gRPC status and how
//! long it took. The request id is also the response's `x-tlsfleet-request-id` and, for a
//! change, the id in the audit trail.
//!
//! [`layer`] wraps every call: it makes the request id and a [`CallLog`] that the handler
//! fills in (the key once the signature checks out, the bucket once the call is authorized
//! for it), and writes the line when the answer's headers go out. A Sync stream's line is
//! written when the stream opens (its end is logged by the stream itself).

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
    time::Instant,
};

use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tracing::{info, warn};

use super::calls::Call;
use crate::{audit::request_id, auth::Action, request_log::RequestLog as Mode};

/// The response header that carries a call's request id.
pub const REQUEST_ID_HEADER: &str = "x-tlsfleet-request-id";

/// Longest method path logged (a path is client input).
const MAX_PATH: usize = 120;

/// What a handler learns about its call, for the call's log line.
#[derive(Debug)]
pub struct CallLog {
    pub request_id: String,
    key: OnceLock<String>,
    bucket: OnceLock<String>,
}

impl CallLog {
    fn new() -> Self {
        Self {
            request_id: request_id(),
            key: OnceLock::new(),
            bucket: OnceLock::new(),
        }
    }

    /// The key whose signature was verified.
    pub fn set_key(&self, id: &str) {
        let _ = self.key.set(id.to_owned());
    }

    /// The bucket the call was authorized for.
    pub fn set_bucket(&self, bucket: &str) {
        let _ = self.bucket.set(bucket.to_owned());
    }
}

/// The layer that logs the calls of the gRPC server (`--request-log`).
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestLogLayer {
    mode: Mode,
}

/// [`RequestLogLayer`].
pub fn layer(mode: Mode) -> RequestLogLayer {
    RequestLogLayer { mode }
}

impl<S> tower::Layer<S> for RequestLogLayer {
    type Service = RequestLog<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestLog {
            inner,
            mode: self.mode,
        }
    }
}

/// A service that logs each call it passes on.
#[derive(Clone, Debug)]
pub struct RequestLog<S> {
    inner: S,
    mode: Mode,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> tower::Service<http::Request<B>> for RequestLog<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let started = Instant::now();
        let log = Arc::new(CallLog::new());
        req.extensions_mut().insert(log.clone());
        let method: String = req.uri().path().chars().take(MAX_PATH).collect();
        let peer = peer(req.extensions());
        let mode = self.mode;
        let answer = self.inner.call(req);
        Box::pin(async move {
            let mut result = answer.await;
            let status = match &mut result {
                Ok(response) => {
                    if let Ok(mut v) = http::HeaderValue::from_str(&log.request_id) {
                        // Unique to the call: HPACK-indexing it would fill the connection's
                        // table with ids never sent again (and search them on every answer).
                        v.set_sensitive(true);
                        response.headers_mut().insert(REQUEST_ID_HEADER, v);
                    }
                    // An error answer carries its status in the headers; an answer that
                    // goes on has it in the trailers, and is OK so far.
                    response
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i32>().ok())
                        .map_or(tonic::Code::Ok, tonic::Code::from_i32)
                }
                Err(_) => tonic::Code::Unavailable,
            };
            let took = started.elapsed();
            let name = method_name(&method);
            crate::metrics::grpc_request(name, &format!("{status:?}"), took);
            if mode.wants(is_read(&method), status == tonic::Code::Ok) {
                write_line(&log, peer, &method, status, took);
            }
            result
        })
    }
}

fn peer(ext: &http::Extensions) -> Option<SocketAddr> {
    ext.get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            ext.get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|i| i.get_ref().remote_addr())
        })
}

fn write_line(
    log: &CallLog,
    peer: Option<SocketAddr>,
    method: &str,
    status: tonic::Code,
    took: std::time::Duration,
) {
    let request_id = log.request_id.as_str();
    let key = log.key.get().map_or("-", String::as_str);
    let bucket = log.bucket.get().map_or("-", String::as_str);
    let peer = peer.map_or_else(|| "-".to_owned(), |p| p.to_string());
    let code = format!("{status:?}");
    let duration_ms = took.as_secs_f64() * 1000.0;
    let server_side = matches!(
        status,
        tonic::Code::Internal
            | tonic::Code::Unknown
            | tonic::Code::DataLoss
            | tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
    );
    if server_side {
        warn!(target: "tlsfleet::request", via = "grpc", request_id, key, peer, method, bucket,
            status = code, duration_ms, "request");
    } else {
        info!(target: "tlsfleet::request", via = "grpc", request_id, key, peer, method, bucket,
            status = code, duration_ms, "request");
    }
}

/// Whether a call only reads: every method of the table whose action changes nothing, health
/// checks and reflection. A Sync stream is an agent joining, not a read.
fn is_read(path: &str) -> bool {
    match Call::of(path) {
        Some(call) => matches!(
            call.action,
            Action::GetBucketHttpsConfig
                | Action::ListBucketHttpsConfigs
                | Action::ListAgents
                | Action::GetRolloutStatus
                | Action::ListHistory
                | Action::GetDefaultPolicy
                | Action::GetUsage
        ),
        None => path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection."),
    }
}

/// A gRPC method's name (`HttpsConfigService/Put` -> `Put`), `health`, `reflection`, or
/// `other`.
fn method_name(path: &str) -> &'static str {
    if let Some(call) = Call::of(path) {
        return call.path.rsplit('/').next().unwrap_or("other");
    }
    if path.starts_with("/grpc.health.") {
        "health"
    } else if path.starts_with("/grpc.reflection.") {
        "reflection"
    } else {
        "other"
    }
}

/// The call's log, from a request's extensions (None without the layer: in unit tests).
pub fn of(ext: &http::Extensions) -> Option<&Arc<CallLog>> {
    ext.get::<Arc<CallLog>>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_a_client_makes_up_are_one_label_value() {
        assert_eq!(method_name("/tlsfleet.v1.HttpsConfigService/Put"), "Put");
        assert_eq!(method_name("/tlsfleet.v1.FleetService/Sync"), "Sync");
        assert_eq!(method_name("/grpc.health.v1.Health/Check"), "health");
        assert_eq!(method_name("/x/y"), "other");
        assert_eq!(method_name(&"a".repeat(10_000)), "other");
    }

    #[test]
    fn reads_are_the_calls_that_change_nothing() {
        use tlsfleet_proto::v1::methods;
        assert!(is_read(methods::HTTPS_CONFIG_SERVICE_GET));
        assert!(is_read(methods::FLEET_SERVICE_GET_ROLLOUT_STATUS));
        assert!(is_read("/grpc.health.v1.Health/Check"));
        for change in [
            methods::HTTPS_CONFIG_SERVICE_PUT,
            methods::HTTPS_CONFIG_SERVICE_DELETE,
            methods::HTTPS_CONFIG_SERVICE_PUT_DEFAULT,
            methods::HTTPS_CONFIG_SERVICE_DELETE_DEFAULT,
            methods::HTTPS_CONFIG_SERVICE_PROMOTE_CANARY,
            methods::HTTPS_CONFIG_SERVICE_ABORT_CANARY,
            methods::FLEET_SERVICE_SYNC,
            "/x/y",
        ] {
            assert!(!is_read(change), "{change}");
        }
    }
}
