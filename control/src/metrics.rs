//! What the control server measures as it runs: requests by interface, method and status
//! with their durations, and each etcd member's call latency. (The rest of `/-/metrics` is
//! read from the server's state at each scrape: `status.rs`.)
//!
//! Every label has a bounded set of values: a method the API does not have is `other`, so a
//! client cannot grow the series.

use std::{sync::LazyLock, time::Duration};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

/// Upper bounds of the request and store latency histograms, in seconds.
const LATENCY: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    via: &'static str,
    method: &'static str,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    via: &'static str,
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    endpoint: String,
    op: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency() -> Histogram {
    Histogram::new(LATENCY)
}

struct Metrics {
    requests: Family<RequestLabels, Counter>,
    request_seconds: Histograms<MethodLabels>,
    store_seconds: Histograms<StoreLabels>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    requests: Family::default(),
    request_seconds: Family::new_with_constructor(latency),
    store_seconds: Family::new_with_constructor(latency),
});

/// The REST methods counted by name; any other is `other`.
fn rest_method(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "PUT" => "PUT",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "DELETE" => "DELETE",
        _ => "other",
    }
}

/// One REST request: its HTTP method, status and duration.
pub fn rest_request(method: &str, status: u16, took: Duration) {
    record("rest", rest_method(method), status.to_string(), took);
}

/// One gRPC call: its method's name (from a bounded set: `grpc::requests`), status code name and
/// the time to its answer's headers.
pub fn grpc_request(method: &'static str, code: &str, took: Duration) {
    record("grpc", method, code.to_owned(), took);
}

fn record(via: &'static str, method: &'static str, status: String, took: Duration) {
    let m = &*METRICS;
    m.requests
        .get_or_create(&RequestLabels {
            via,
            method,
            status,
        })
        .inc();
    m.request_seconds
        .get_or_create(&MethodLabels { via, method })
        .observe(took.as_secs_f64());
}

/// One answered etcd call (`op`: range, get, txn, ...) at `endpoint`.
pub fn store_call(endpoint: &str, op: &str, took: Duration) {
    METRICS
        .store_seconds
        .get_or_create(&StoreLabels {
            endpoint: endpoint.to_owned(),
            op: op.to_owned(),
        })
        .observe(took.as_secs_f64());
}

/// Adds these metrics to a scrape.
pub fn register(registry: &mut Registry) {
    let m = &*METRICS;
    registry.register(
        "requests",
        "REST requests and gRPC calls answered, by interface, method and status",
        m.requests.clone(),
    );
    registry.register(
        "request_duration_seconds",
        "Time from a request to its answer (a gRPC stream: to its opening), by interface and method",
        m.request_seconds.clone(),
    );
    registry.register(
        "store_call_duration_seconds",
        "Time of each etcd call that got an answer, by member and operation",
        m.store_seconds.clone(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_a_client_makes_up_are_one_label_value() {
        assert_eq!(rest_method("PUT"), "PUT");
        assert_eq!(rest_method("BREW"), "other");
    }
}
