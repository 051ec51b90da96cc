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
pub fn respond(
    request: &Request<Incoming>,
    metrics: &PrometheusHandle,
    readiness: &Readiness,
) -> Response<Body> {
    let path = request.uri().path();
    if !matches!(path, "/metrics" | "/healthz" | "/readyz") {
        return server::error(StatusCode::NOT_FOUND, "not_found", "no such route");
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return server::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "use GET",
        );
    }
    match path {
        "/metrics" => server::text(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            metrics.render(),
        ),
        "/healthz" => server::json(StatusCode::OK, &serde_json::json!({ "status": "ok" })),
        _ if readiness.is_ready() => {
            server::json(StatusCode::OK, &serde_json::json!({ "status": "ready" }))
        }
        _ => server::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({ "status": "not_ready" }),
        ),
    }
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
