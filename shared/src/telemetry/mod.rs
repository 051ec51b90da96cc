//! Telemetry set-up: logs (`tracing` to stderr, as text or flattened JSON, filtered by
//! `RUST_LOG`) and, when an OTLP endpoint is configured, traces exported over OTLP/HTTP.
//!
//! - `export.rs`: the tracer provider, its exporter and the thread the exports run on.
//! - `carrier.rs`: a span's context as W3C `traceparent` and as X-Ray's `AWSTraceHeader`.
//! - `messaging.rs`: the spans of the OpenTelemetry messaging conventions for SQS.
//!
//! Off (the default), no OpenTelemetry layer is installed and [`Traces`] is off: the code
//! that would build spans checks [`Traces::tracer`] first and does nothing else.

pub mod carrier;
mod export;
pub mod messaging;

use std::io::IsTerminal as _;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing::{Level, Metadata};
use tracing_subscriber::filter::{EnvFilter, LevelFilter, filter_fn};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer as _, fmt};

use crate::config::{LogArgs, LogFormat};

/// The `tracing` target of spans meant for OpenTelemetry only (the request's server span):
/// the log output never shows them, and with tracing off no layer wants them, so creating
/// one costs an interest check.
pub const TRACE_TARGET: &str = "otel";

/// The traces of one process: a tracer when tracing is on, nothing when off. Cheap to clone.
#[derive(Clone, Default)]
pub struct Traces {
    tracer: Option<SdkTracer>,
}

impl std::fmt::Debug for Traces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Traces")
            .field("on", &self.tracer.is_some())
            .finish()
    }
}

impl Traces {
    /// Tracing off: no spans are made.
    pub fn off() -> Self {
        Self::default()
    }

    /// Tracing to `provider` (tests give one with an in-memory exporter).
    pub fn to(provider: &SdkTracerProvider) -> Self {
        Self {
            tracer: Some(provider.tracer(env!("CARGO_PKG_NAME"))),
        }
    }

    /// The tracer, when tracing is on.
    pub fn tracer(&self) -> Option<&SdkTracer> {
        self.tracer.as_ref()
    }
}

/// What [`init`] set up; [`Telemetry::shutdown`] flushes the spans still buffered.
#[derive(Debug)]
pub struct Telemetry {
    traces: Traces,
    export: Option<export::Export>,
}

impl Telemetry {
    /// The process's traces (off unless an OTLP endpoint is configured).
    pub fn traces(&self) -> Traces {
        self.traces.clone()
    }

    /// Exports what is buffered (bounded by the exporter's timeout) and stops the exporter.
    /// It blocks: call it outside the async runtime, or in `spawn_blocking`.
    pub fn shutdown(self) {
        if let Some(export) = self.export {
            export.shutdown();
        }
    }
}

/// Installs the process's subscriber: logs always, and the OpenTelemetry layer when
/// `log.traces` configures an endpoint; `service` names the process unless
/// `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` does. Call once, first thing in `main`.
/// Logging is installed even when the tracing settings are wrong; the error names them.
pub fn init(log: &LogArgs, service: &'static str) -> anyhow::Result<Telemetry> {
    let (export, error) = match export::Export::start(&log.traces, service) {
        Ok(export) => (export, None),
        Err(error) => (None, Some(error)),
    };
    // The spans made for OpenTelemetry never reach the logs, whatever RUST_LOG says. An
    // `EnvFilter` directive, not a closure: the filter's level hint stays the directives'
    // (INFO by default), so a disabled `debug!` in hyper or the AWS SDK costs one compare.
    let logs = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info"))
        .add_directive(
            format!("{TRACE_TARGET}=off")
                .parse()
                .expect("a valid directive"),
        );
    let fmt = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let fmt = match log.log_format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .boxed(),
    };
    let tracer = export.as_ref().map(|export| export.tracer(service));
    let otel = tracer.clone().map(|tracer| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(filter_fn(exported).with_max_level_hint(LevelFilter::INFO))
    });
    tracing_subscriber::registry()
        .with(fmt.with_filter(logs))
        .with(otel)
        .init();
    if let Some(error) = error {
        return Err(error);
    }
    Ok(Telemetry {
        traces: Traces { tracer },
        export,
    })
}

/// What the OpenTelemetry layer sees: the spans made for it (not the SDKs' own, which would
/// start traces of their own), and log events at INFO and above, which become events of
/// the span they happen in.
fn exported(meta: &Metadata<'_>) -> bool {
    if meta.is_span() {
        meta.target() == TRACE_TARGET
    } else {
        *meta.level() <= Level::INFO
    }
}
