//! Request routing: `POST /webhooks/{source}` to the webhook handler ([`super::webhook`]),
//! the probes (`/healthz`, `/readyz`) as on the ops port, 404 for anything else; each webhook
//! answer counted in the request metrics.
//!
//! [`route`] is generic over the request body, so the whole HTTP edge (routing, limits,
//! verification, error mapping) runs in-process in unit tests against a fake publisher.

use std::sync::Arc;
use std::time::Instant;

use http::{Method, Request, Response, StatusCode};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use webhook_shared::ops;
use webhook_shared::server::{self, Body};
use webhook_shared::telemetry::{TRACE_TARGET, carrier};

use super::error::ApiError;
use super::state::AppState;
use super::webhook;
use crate::body::RequestBody;
use crate::metrics;
use crate::sources::Quota;
use crate::sqs::publisher::Publish;

/// Routes one request.
pub(crate) async fn route<P: Publish, B: RequestBody>(
    state: Arc<AppState<P>>,
    request: Request<B>,
) -> Response<Body> {
    let path = request.uri().path();
    if let Some(source) = path.strip_prefix("/webhooks/") {
        if !is_valid_source(source) {
            return ApiError::NotFound.into_response();
        }
        if request.method() != Method::POST {
            return ApiError::MethodNotAllowed { allow: "POST" }.into_response();
        }
        if state.spans.is_some() {
            return traced_webhook(state, source.to_owned(), request).await;
        }
        return webhook(state, source.to_owned(), request).await;
    }
    // The probes answer here exactly as on the ops port, for a load balancer that checks the
    // traffic port.
    ops::probe(request.method(), path, &state.readiness)
        .unwrap_or_else(|| ApiError::NotFound.into_response())
}

/// Answers one webhook and counts the answer in the request metrics.
async fn webhook<P: Publish, B: RequestBody>(
    state: Arc<AppState<P>>,
    source: String,
    request: Request<B>,
) -> Response<Body> {
    let started = Instant::now();
    let accepted = match state.sources.resolve(&source) {
        Some(config) => match config.quota.as_ref().map(Quota::check) {
            // Beyond the quota: refused before the body is read, nothing enqueued.
            Some(Err(retry_after_seconds)) => {
                let known = state.sources.get(&source).is_some();
                metrics::record_quota_refusal(if known { &source } else { "unknown" });
                Err(ApiError::RateLimited {
                    retry_after_seconds,
                })
            }
            _ => webhook::accept(&state, source, config, request).await,
        },
        None => Err(ApiError::UnknownSource),
    };
    let response = match accepted {
        Ok(id) => server::json(StatusCode::ACCEPTED, &serde_json::json!({ "id": id })),
        Err(error) => {
            if let Some(reason) = error.body_timeout_reason() {
                metrics::record_body_timeout(reason);
            }
            error.into_response()
        }
    };
    metrics::record_request(response.status(), started.elapsed());
    response
}

/// [`webhook`] inside a server span (HTTP conventions), the child of the provider's span when
/// the request has a valid `traceparent`; the message's `create` span is its child.
async fn traced_webhook<P: Publish, B: RequestBody>(
    state: Arc<AppState<P>>,
    source: String,
    request: Request<B>,
) -> Response<Body> {
    let span = tracing::info_span!(
        target: TRACE_TARGET,
        "POST /webhooks/{source}",
        otel.kind = "server",
        http.request.method = "POST",
        http.route = "/webhooks/{source}",
        url.path = request.uri().path(),
        webhook.source = source.as_str(),
        http.response.status_code = tracing::field::Empty,
        "error.type" = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    // Fails only when the OpenTelemetry layer is not installed (unit tests): no parent then.
    let _ = span.set_parent(carrier::from_headers(request.headers()));
    let response = webhook(state, source, request)
        .instrument(span.clone())
        .await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        // As the HTTP conventions say: a 4xx is the client's, not the server span's error.
        span.record("error.type", status.as_str());
        span.record("otel.status_code", "error");
    }
    response
}

/// A source name as the SPEC allows: `[a-z0-9_-]{1,64}`.
fn is_valid_source(source: &str) -> bool {
    (1..=64).contains(&source.len())
        && source
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body_util::Full;

    use super::*;
    use crate::edge::testing::{send, state};
    use crate::sources::Sources;

    #[test]
    fn source_names_follow_the_spec() {
        for good in ["github", "stripe-eu", "a", "shop_1", &"x".repeat(64)] {
            assert!(is_valid_source(good), "{good}");
        }
        for bad in ["", "GitHub", "a/b", "a.b", "caf\u{e9}", &"x".repeat(65)] {
            assert!(!is_valid_source(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn probes_follow_this_process_only() {
        let state = state(Sources::open());
        let get = |path: &str| {
            Request::builder()
                .method(Method::GET)
                .uri(path)
                .body(Full::new(Bytes::new()))
                .expect("valid request")
        };
        assert_eq!(
            send(&state, get("/healthz")).await,
            (StatusCode::OK, serde_json::json!({ "status": "ok" }))
        );
        assert_eq!(
            send(&state, get("/readyz")).await,
            (StatusCode::OK, serde_json::json!({ "status": "ready" }))
        );
        state.readiness.set(false);
        assert_eq!(
            send(&state, get("/readyz")).await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({ "status": "not_ready" })
            )
        );
        assert_eq!(send(&state, get("/healthz")).await.0, StatusCode::OK);
    }
}
