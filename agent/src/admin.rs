//! The admin endpoint (`--admin-listen`, plain HTTP): `/healthz`, `/readyz`, `/metrics`.

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

use crate::{metrics::Metrics, readiness::Readiness, table::PolicyTable};

const PROMETHEUS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves the admin endpoint until `shutdown`; connections run on `tracker`.
pub async fn serve(
    listener: TcpListener,
    table: Arc<PolicyTable>,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        let (table, metrics, readiness, shutdown) = (
            table.clone(),
            metrics.clone(),
            readiness.clone(),
            shutdown.clone(),
        );
        let span = tracing::debug_span!("admin_conn", %peer);
        tracker.spawn(
            async move {
                let service = service_fn(move |req| {
                    let (table, metrics, readiness) =
                        (table.clone(), metrics.clone(), readiness.clone());
                    async move { Ok::<_, Infallible>(route(&req, &table, &metrics, &readiness)) }
                });
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(tcp), service);
                tokio::pin!(conn);
                let result = tokio::select! {
                    r = conn.as_mut() => r,
                    _ = shutdown.cancelled() => {
                        // Admin requests are instant: finish the one in flight, take no more.
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                };
                if let Err(e) = result {
                    tracing::debug!(error = %e, "admin connection ended with an error");
                }
            }
            .instrument(span),
        );
    }
}

fn route(
    req: &Request<Incoming>,
    table: &PolicyTable,
    metrics: &Metrics,
    readiness: &Readiness,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n".into());
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => match readiness.check(&table.snapshot()) {
            Ok(revision) => text(StatusCode::OK, format!("ready: revision {revision}\n")),
            Err(reason) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {reason}\n"),
            ),
        },
        "/metrics" => {
            metrics.set_certificate_not_after(table.factory().resolver().not_after_unix());
            let body = metrics.encode(Some(&table.snapshot()), Some(readiness.sync_state()));
            let mut response = text(StatusCode::OK, body);
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(PROMETHEUS_TEXT),
            );
            response
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /healthz, /readyz, /metrics\n".into(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
