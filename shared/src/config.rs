//! Command-line/env argument groups that both binaries flatten into their own config.

use std::net::SocketAddr;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, fields flattened (for CloudWatch and log pipelines).
    Json,
}

/// How a binary logs and traces; every subcommand takes it.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log format: `text` for people, `json` for log pipelines. Filter with RUST_LOG.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// Where traces go (OpenTelemetry's standard variables; off unless an endpoint is set).
    #[command(flatten)]
    pub traces: TraceArgs,
}

/// The OpenTelemetry settings the binaries read themselves. The exporter and the SDK read
/// the rest of the standard `OTEL_*` variables (headers, timeout, sampler, batch sizes).
#[derive(Debug, Clone, clap::Args)]
pub struct TraceArgs {
    /// Base URL of an OTLP/HTTP receiver, e.g. `http://localhost:4318` (the ADOT collector
    /// sidecar; plain HTTP only); spans go to its `/v1/traces`. Setting it (or the traces
    /// endpoint) turns tracing on.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_parser = parse_http_url, global = true)]
    pub otel_exporter_otlp_endpoint: Option<String>,

    /// Full URL spans are posted to, e.g. `http://localhost:4318/v1/traces`; wins over
    /// OTEL_EXPORTER_OTLP_ENDPOINT.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", value_parser = parse_http_url, global = true)]
    pub otel_exporter_otlp_traces_endpoint: Option<String>,

    /// OTLP protocol: only `http/protobuf` is built in.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_PROTOCOL", value_parser = ["http/protobuf"], global = true)]
    pub otel_exporter_otlp_protocol: Option<String>,

    /// `true` turns tracing off whatever else is set.
    #[arg(long, env = "OTEL_SDK_DISABLED", default_value_t = false, action = clap::ArgAction::Set, global = true)]
    pub otel_sdk_disabled: bool,

    /// Trace exporter: `otlp` (used when an endpoint is set) or `none` (off).
    #[arg(long, env = "OTEL_TRACES_EXPORTER", default_value = "otlp", value_parser = ["otlp", "none"], global = true)]
    pub otel_traces_exporter: String,

    /// The service name on every span; default `ingest` or `worker`.
    #[arg(long, env = "OTEL_SERVICE_NAME", global = true)]
    pub otel_service_name: Option<String>,
}

impl TraceArgs {
    /// The URL spans are posted to, when tracing is on: the traces endpoint as given, else
    /// the base endpoint with `/v1/traces` appended (as the OTLP specification says).
    pub fn traces_url(&self) -> Option<String> {
        if self.otel_sdk_disabled || self.otel_traces_exporter == "none" {
            return None;
        }
        self.otel_exporter_otlp_traces_endpoint.clone().or_else(|| {
            self.otel_exporter_otlp_endpoint
                .as_ref()
                .map(|base| format!("{}/v1/traces", base.trim_end_matches('/')))
        })
    }
}

/// Validates an `http://` URL with a host. `https://` is refused: the exporter's client has
/// no TLS, and spans go to a collector beside the process (the ADOT sidecar), which holds
/// the credentials and the TLS to a vendor.
pub fn parse_http_url(value: &str) -> Result<String, String> {
    let uri: http::Uri = value
        .parse()
        .map_err(|error| format!("not a URL: {error}"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http"), Some(host)) if !host.is_empty() => Ok(value.to_owned()),
        (Some("https"), _) => Err(
            "https:// is not built in: send spans to a collector beside \
            the process (e.g. http://localhost:4318, the ADOT sidecar)"
                .to_owned(),
        ),
        _ => Err("must look like http://HOST:PORT".to_owned()),
    }
}

/// The main queue, as both binaries name it.
#[derive(Debug, Clone, clap::Args)]
pub struct QueueArgs {
    /// URL of the main SQS queue: ingest sends webhooks to it, the worker receives them from
    /// it, `worker redrive` moves dead letters back to it (required, except by `healthcheck`).
    #[arg(long, env = "QUEUE_URL", value_parser = parse_queue_url, required = true)]
    pub queue_url: Option<String>,
}

/// `QUEUE_URL` was not given to a command that needs it.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("QUEUE_URL (--queue-url) is required")]
pub struct QueueUrlMissing;

impl QueueArgs {
    /// The queue's URL. Clap requires it wherever it is flattened, unless a subcommand
    /// negates requirements (ingest's `healthcheck`), so this fails only there.
    pub fn url(&self) -> Result<&str, QueueUrlMissing> {
        self.queue_url.as_deref().ok_or(QueueUrlMissing)
    }
}

/// Where the ops server listens, for the server itself and for `healthcheck`, which asks it.
#[derive(Debug, Clone, clap::Args)]
pub struct MetricsAddrArgs {
    /// Address of the ops server: /metrics (Prometheus), /healthz and /readyz.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_addr: SocketAddr,
}

/// Settings every long-running binary has: where its ops server listens and how long it
/// drains on shutdown.
#[derive(Debug, Clone, clap::Args)]
pub struct OpsArgs {
    /// Where the ops server listens.
    #[command(flatten)]
    pub listen: MetricsAddrArgs,

    /// How long to keep draining in-flight work after SIGTERM/SIGINT, in seconds. Keep it
    /// below the container's stop timeout (ECS stopTimeout) so the drain is never cut short.
    #[arg(long, env = "SHUTDOWN_GRACE_SECONDS", default_value_t = 25, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub shutdown_grace_seconds: u64,
}

impl OpsArgs {
    /// The shutdown grace period as a duration.
    pub fn shutdown_grace(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.shutdown_grace_seconds)
    }
}

/// Validates an SQS queue URL at start-up, so a typo fails fast and names the setting.
pub fn parse_queue_url(value: &str) -> Result<String, String> {
    let rest = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"))
        .ok_or_else(|| "must start with https:// or http://".to_owned())?;
    let mut segments = rest.trim_end_matches('/').split('/');
    let host = segments.next().unwrap_or_default();
    let name = segments.next_back().unwrap_or_default();
    if host.is_empty() || name.is_empty() || name == host {
        return Err("must look like https://sqs.REGION.amazonaws.com/ACCOUNT/QUEUE".to_owned());
    }
    Ok(value.trim_end_matches('/').to_owned())
}

/// Validates an S3 bucket name at start-up: 3 to 63 of a-z, 0-9, '.' and '-', starting and
/// ending with a letter or digit (S3's rules, without the rarer ones on dots and prefixes).
pub fn parse_bucket_name(name: &str) -> Result<String, String> {
    let edge_ok = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let valid = (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-'))
        && edge_ok(name.as_bytes().first())
        && edge_ok(name.as_bytes().last());
    if valid {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "{name:?} is not an S3 bucket name: 3 to 63 of a-z, 0-9, '.' and '-', starting and ending with a letter or digit"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_urls_are_checked() {
        assert!(
            parse_queue_url("https://sqs.eu-west-1.amazonaws.com/123456789012/webhooks").is_ok()
        );
        assert!(parse_queue_url("http://127.0.0.1:4566/queue/us-east-1/000000000000/q").is_ok());
        assert!(parse_queue_url("sqs.eu-west-1.amazonaws.com/1/q").is_err());
        assert!(parse_queue_url("https://sqs.eu-west-1.amazonaws.com").is_err());
        assert!(parse_queue_url("https://").is_err());
    }

    #[test]
    fn tracing_is_on_only_with_an_endpoint_and_not_disabled() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            traces: TraceArgs,
        }
        let url = |args: &[&str]| {
            let mut argv = vec!["test"];
            argv.extend_from_slice(args);
            Cli::try_parse_from(argv).map(|cli| cli.traces.traces_url())
        };
        let base = "--otel-exporter-otlp-endpoint=http://localhost:4318/";
        let full = "--otel-exporter-otlp-traces-endpoint=http://c:4318/x";
        assert_eq!(url(&[]).ok(), Some(None));
        assert_eq!(
            url(&[base]).ok(),
            Some(Some("http://localhost:4318/v1/traces".to_owned()))
        );
        assert_eq!(
            url(&[base, full]).ok(),
            Some(Some("http://c:4318/x".to_owned()))
        );
        assert_eq!(url(&[base, "--otel-sdk-disabled=true"]).ok(), Some(None));
        assert_eq!(url(&[base, "--otel-traces-exporter=none"]).ok(), Some(None));
        assert!(url(&["--otel-exporter-otlp-endpoint=localhost:4318"]).is_err());
        assert!(url(&["--otel-exporter-otlp-protocol=grpc"]).is_err());
        assert!(url(&["--otel-exporter-otlp-endpoint=https://api.example.com"]).is_err());
    }

    #[test]
    fn bucket_names_are_checked_edges_included() {
        assert!(parse_bucket_name("webhook-payloads.prod-1").is_ok());
        assert!(parse_bucket_name("abc").is_ok());
        for bad in [
            "ab",
            "Upper",
            "under_score",
            "-dash",
            "dash-",
            ".dot",
            "dot.",
            &"a".repeat(64),
        ] {
            assert!(parse_bucket_name(bad).is_err(), "{bad}");
        }
    }
}
