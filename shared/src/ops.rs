//! The ops server: `/metrics` (Prometheus text format), `/healthz` (liveness) and `/readyz`
//! (readiness), on its own port so it is never exposed behind the load balancer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::server::{self, Body, ServeOptions};

/// Whether the process can take work now. Cloning shares the flag.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the process ready or not.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    /// Whether the process is ready.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Answers an ops request: `/metrics`, `/healthz`, `/readyz`; anything else 404 or 405.
pub fn respond<B>(
    request: &Request<B>,
    metrics: &PrometheusHandle,
    readiness: &Readiness,
) -> Response<Body> {
    let path = request.uri().path();
    if path == "/metrics" {
        if !is_read(request.method()) {
            return method_not_allowed();
        }
        return server::text(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            metrics.render(),
        );
    }
    probe(request.method(), path, readiness)
        .unwrap_or_else(|| server::error(StatusCode::NOT_FOUND, "not_found", "no such route"))
}

/// The one answer to the health probes, wherever they are served (the ops port, and ingest's
/// webhook port for load balancers that check the traffic port); `None` for other paths.
///
/// - `/healthz` (liveness): 200 `{"status":"ok"}` while the process runs.
/// - `/readyz` (readiness): 200 `{"status":"ready"}` while this process takes work, 503
///   `{"status":"not_ready"}` while starting or draining. It follows only this process, never a
///   dependency: a load balancer replaces tasks on it, and replacing every task because SQS or
///   the database hiccups makes an outage worse. Dependencies have their own metrics.
pub fn probe(method: &Method, path: &str, readiness: &Readiness) -> Option<Response<Body>> {
    let ready = match path {
        "/healthz" => None,
        "/readyz" => Some(readiness.is_ready()),
        _ => return None,
    };
    if !is_read(method) {
        return Some(method_not_allowed());
    }
    Some(match ready {
        None => server::json(StatusCode::OK, &serde_json::json!({ "status": "ok" })),
        Some(true) => server::json(StatusCode::OK, &serde_json::json!({ "status": "ready" })),
        Some(false) => server::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({ "status": "not_ready" }),
        ),
    })
}

fn is_read(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

fn method_not_allowed() -> Response<Body> {
    let mut response = server::error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed; use GET, HEAD",
    );
    response.headers_mut().insert(
        http::header::ALLOW,
        http::HeaderValue::from_static("GET, HEAD"),
    );
    response
}

/// Runs the ops server until `shutdown`, and the exporter's periodic upkeep beside it.
pub async fn serve(
    listener: TcpListener,
    metrics: PrometheusHandle,
    readiness: Readiness,
    shutdown: CancellationToken,
) {
    let upkeep = {
        let metrics = metrics.clone();
        let shutdown = shutdown.clone();
        async move {
            let mut interval = tokio::time::interval(Duration::from_secs(5));
            while shutdown
                .run_until_cancelled(interval.tick())
                .await
                .is_some()
            {
                metrics.run_upkeep();
            }
        }
    };
    let service = move |request: Request<Incoming>| {
        let response = respond(&request, &metrics, &readiness);
        async move { response }
    };
    let options = ServeOptions {
        max_connections: 64,
        drain_timeout: Duration::from_secs(1),
        ..ServeOptions::default()
    };
    tokio::join!(server::serve(listener, service, shutdown, options), upkeep);
}
