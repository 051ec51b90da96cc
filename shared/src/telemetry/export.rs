//! The tracer provider behind [`super::Traces`]: spans batched by the SDK's
//! `BatchSpanProcessor` (its own thread, `OTEL_BSP_*`) and posted over OTLP/HTTP (protobuf)
//! by a hyper client that runs on a one-thread tokio runtime of its own, so exporting never
//! takes a turn of the application's runtime and works before that runtime exists.

use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::hyper::HyperClient;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{SpanExporter, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tokio::runtime::{Handle, Runtime};

use crate::config::TraceArgs;

/// Longest one export may take when `OTEL_EXPORTER_OTLP_TIMEOUT` does not say (the
/// specification's default).
const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest the final flush may take at shutdown. With the collector down the worker still
/// exits before ECS's stopTimeout (at least grace + 17 s): grace + 12 s, the runtime's 1 s,
/// this, and the export runtime's 1 s.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

/// The provider and the runtime its exports run on.
#[derive(Debug)]
pub(super) struct Export {
    provider: SdkTracerProvider,
    runtime: Option<Runtime>,
}

impl Export {
    /// The exporter `args` configure, or `None` when tracing is off.
    pub(super) fn start(args: &TraceArgs, service: &'static str) -> anyhow::Result<Option<Self>> {
        let Some(url) = args.traces_url() else {
            return Ok(None);
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otlp-export")
            .enable_all()
            .build()
            .context("starting the trace exporter's runtime")?;
        let client = OnRuntime {
            handle: runtime.handle().clone(),
            inner: HyperClient::with_default_connector(export_timeout(), None),
        };
        let exporter = SpanExporter::builder()
            .with_http()
            .with_endpoint(url.clone())
            .with_http_client(client)
            .build()
            .with_context(|| format!("building the OTLP exporter for {url}"))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource(args, service))
            .build();
        Ok(Some(Self {
            provider,
            runtime: Some(runtime),
        }))
    }

    /// A tracer of this provider.
    pub(super) fn tracer(&self, name: &'static str) -> SdkTracer {
        self.provider.tracer(name)
    }

    /// Flushes and stops the provider, then the runtime. Blocks.
    pub(super) fn shutdown(mut self) {
        if let Err(error) = self.provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
            tracing::warn!(%error, "flushing the last spans failed");
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

impl Drop for Export {
    fn drop(&mut self) {
        // Dropped without `shutdown` (an early error): a runtime may not be dropped in an
        // async context, so it is let go in the background.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The resource: `service.name` is `service` unless the standard variables name one
/// (`OTEL_SERVICE_NAME`, or `service.name` in `OTEL_RESOURCE_ATTRIBUTES`, both read by the SDK).
fn resource(args: &TraceArgs, service: &'static str) -> Resource {
    let named_by_attributes = std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|attributes| {
        attributes
            .split(',')
            .any(|kv| kv.trim().starts_with("service.name="))
    });
    let builder = Resource::builder();
    match &args.otel_service_name {
        Some(name) => builder.with_service_name(name.clone()),
        None if named_by_attributes => builder,
        None => builder.with_service_name(service),
    }
    .build()
}

/// The export timeout from `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` or `OTEL_EXPORTER_OTLP_TIMEOUT`
/// (milliseconds), as the exporter reads them.
fn export_timeout() -> Duration {
    [
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    ]
    .iter()
    .find_map(|name| std::env::var(name).ok()?.parse().ok())
    .map_or(DEFAULT_EXPORT_TIMEOUT, Duration::from_millis)
}

/// An HTTP client whose requests run on `handle`'s runtime, whatever thread asks: the batch
/// processor polls exports on its own thread, where no tokio reactor runs.
#[derive(Debug, Clone)]
struct OnRuntime {
    handle: Handle,
    inner: HyperClient,
}

#[async_trait::async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let inner = self.inner.clone();
        self.handle
            .spawn(async move { inner.send_bytes(request).await })
            .await
            .map_err(|error| Box::new(error) as HttpError)?
    }
}
