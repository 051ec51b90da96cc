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

/// How a binary logs; every subcommand takes it.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log format: `text` for people, `json` for log pipelines. Filter with RUST_LOG.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// Settings every long-running binary has: where its ops server listens and how long it
/// drains on shutdown.
#[derive(Debug, Clone, clap::Args)]
pub struct OpsArgs {
    /// Address of the ops server: /metrics (Prometheus), /healthz and /readyz.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_addr: SocketAddr,

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
}
