//! ingest's settings: every one a flag with an env var, shown by `--help`.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use crate::body::pace::MinRate;
use crate::sqs::batcher::BatchOptions;
use clap::Parser;
use clap::builder::TypedValueParser as _;
use webhook_shared::config::{LogArgs, OpsArgs, QueueArgs, parse_bucket_name};
use webhook_shared::envelope::max_body_for;
use webhook_shared::sqs::MAX_MESSAGE_BYTES;

/// Room kept in each SQS message for everything but the body: the headers (at most
/// [`MAX_HEADER_BYTES`], doubled for JSON escaping) and the other fields.
pub(crate) const ENVELOPE_OVERHEAD_BYTES: usize = 48 * 1024;
/// Most header bytes (names and values) carried into the envelope; more is refused with 431.
pub(crate) const MAX_HEADER_BYTES: usize = 16 * 1024;
/// The largest body that fits SQS's 1 MiB message limit even when base64-encoded (x4/3)
/// with [`ENVELOPE_OVERHEAD_BYTES`] kept for the rest: 749,568 bytes (732 KiB).
pub(crate) const DEFAULT_MAX_BODY_BYTES: usize =
    max_body_for(MAX_MESSAGE_BYTES, ENVELOPE_OVERHEAD_BYTES);
/// The largest `MAX_BODY_BYTES` with `LARGE_PAYLOAD_BUCKET` set, and its default then: 32 MiB
/// (GitHub sends up to 25 MB).
pub(crate) const MAX_OFFLOADED_BODY_BYTES: usize = 32 * 1024 * 1024;
/// Default of `LARGE_PAYLOAD_BUFFER_BYTES`: 20 MiB, four 5 MiB parts (measured: 16 concurrent
/// 25 MiB uploads keep ingest within 64 MiB of its idle RSS; see docs/large-payloads.md).
pub(crate) const DEFAULT_PART_BUFFER_BYTES: usize = 20 * 1024 * 1024;

/// A setting that cannot be used with the others.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    /// `BODY_RATE_GRACE_SECONDS` longer than the whole body may take.
    #[error(
        "BODY_RATE_GRACE_SECONDS (--body-rate-grace-seconds) is {grace}, above BODY_READ_TIMEOUT_SECONDS ({timeout}): the minimum rate would never apply"
    )]
    RateGrace {
        /// The grace given.
        grace: u64,
        /// The body read timeout.
        timeout: u64,
    },
    /// `MAX_BODY_BYTES` above what the bucket setting allows.
    #[error("MAX_BODY_BYTES (--max-body-bytes) is {given}, above {most}: {why}")]
    BodyLimit {
        /// The value given.
        given: usize,
        /// The most allowed.
        most: usize,
        /// Why.
        why: &'static str,
    },
}

/// Accepts webhooks over HTTP and puts each one on SQS before answering 202.
#[derive(Debug, Parser)]
#[command(name = "ingest", version, about, subcommand_negates_reqs = true)]
pub struct Config {
    /// `healthcheck` to probe a running ingest (for container health checks); serves when
    /// omitted.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// The main queue, where webhooks are sent.
    #[command(flatten)]
    pub(crate) queue: QueueArgs,

    /// Address the webhook HTTP server listens on (HTTP/1.1 and HTTP/2 cleartext).
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8080")]
    pub listen_addr: SocketAddr,

    /// Sources file (TOML): per source, its verification scheme, the names of the env vars
    /// holding its secrets, and whether unknown sources are accepted. Without it, every
    /// valid source name is accepted unverified. See the README for the format.
    #[arg(long, env = "SOURCES_FILE")]
    pub(crate) sources_file: Option<std::path::PathBuf>,

    /// Largest accepted request body, in bytes; larger ones get 413. Without
    /// LARGE_PAYLOAD_BUCKET, the default (and the maximum) is 749568, the largest body that
    /// still fits one SQS message after the envelope; with it, the default (and the maximum)
    /// is 33554432 (32 MiB).
    #[arg(long, env = "MAX_BODY_BYTES",
          value_parser = clap::value_parser!(u64).range(1..=MAX_OFFLOADED_BODY_BYTES as u64).map(|n| n as usize))]
    pub(crate) max_body_bytes: Option<usize>,

    /// S3 bucket for bodies too large for SQS (the extended clients' pointer format). Unset:
    /// no offloading, and MAX_BODY_BYTES at most 749568. Set: bodies above
    /// LARGE_PAYLOAD_THRESHOLD_BYTES stream to this bucket and SQS gets a pointer; ingest
    /// checks at start that the bucket answers (HeadBucket).
    #[arg(long, env = "LARGE_PAYLOAD_BUCKET", value_parser = parse_bucket_name)]
    pub(crate) large_payload_bucket: Option<String>,

    /// Bodies above this many bytes go to S3 (with LARGE_PAYLOAD_BUCKET); those up to it stay
    /// inline in the SQS message. The default (and the maximum) is the largest body that fits
    /// one SQS message after the envelope.
    #[arg(long, env = "LARGE_PAYLOAD_THRESHOLD_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES,
          value_parser = clap::value_parser!(u64).range(1..=DEFAULT_MAX_BODY_BYTES as u64).map(|n| n as usize))]
    pub(crate) large_payload_threshold_bytes: usize,

    /// Most bytes of parts (5 MiB, the last smaller) being uploaded to S3 at once by all
    /// webhooks streaming there. A part's first 64 KiB fill within MAX_IN_FLIGHT_BODY_BYTES as
    /// they arrive; past them it waits for room for a whole part here (its client is slowed
    /// by TCP in the meantime) and keeps it until the part is uploaded. At least one part,
    /// 5242880.
    #[arg(long, env = "LARGE_PAYLOAD_BUFFER_BYTES", default_value_t = DEFAULT_PART_BUFFER_BYTES,
          value_parser = clap::value_parser!(u64).range(5_242_880..=4 * 1024 * 1024 * 1024).map(|n| n as usize))]
    pub(crate) large_payload_buffer_bytes: usize,

    /// Longest one S3 call (one part, the completion) may take, retries included; then the
    /// webhook gets 503 with Retry-After and its upload is aborted.
    #[arg(long, env = "LARGE_PAYLOAD_S3_TIMEOUT_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=120))]
    pub(crate) large_payload_s3_timeout_seconds: u64,

    /// Most bytes of request bodies (and the SQS messages built from them) held in memory at
    /// once, across all requests. A request that finds no room gets 503 with Retry-After at
    /// once, before its body is read. The default, 256 MiB, keeps the largest RSS near 300 MiB
    /// whatever clients send (see the README); raise it with the task's memory. At least
    /// 4 MiB (one largest webhook and its message).
    #[arg(long, env = "MAX_IN_FLIGHT_BODY_BYTES", default_value_t = 256 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(4 * 1024 * 1024..=64 * 1024 * 1024 * 1024).map(|n| n as usize))]
    pub(crate) max_in_flight_body_bytes: usize,

    /// Seconds a client is told to wait (Retry-After) when the queue cannot take a webhook.
    #[arg(long, env = "RETRY_AFTER_SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub(crate) retry_after_seconds: u32,

    /// Most messages per SendMessageBatch call (1 to 10). 1 sends one call per webhook, for
    /// comparison; 10 lets concurrent webhooks share calls.
    #[arg(long, env = "BATCH_MAX_MESSAGES", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=10).map(|n| n as usize))]
    pub(crate) batch_max_messages: usize,

    /// Milliseconds to wait for more webhooks before sending a batch that is not full, while
    /// another call is in flight (a webhook on an idle pipe goes at once). 0 sends at once:
    /// batches still form from webhooks that arrive while earlier calls are in flight.
    #[arg(long, env = "BATCH_LINGER_MS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub(crate) batch_linger_ms: u64,

    /// Most SendMessageBatch calls in flight at once: the ceiling of the adaptive limit (see
    /// BATCH_ADAPTIVE_IN_FLIGHT), or the fixed number of calls when adaptation is off.
    #[arg(long, env = "BATCH_MAX_IN_FLIGHT", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1024).map(|n| n as usize))]
    pub(crate) batch_max_in_flight: usize,

    /// Whether the number of SendMessageBatch calls in flight follows the call latency ingest
    /// observes, between 1 and BATCH_MAX_IN_FLIGHT: more calls while they do not queue at the
    /// server (SQS scales out), fewer and fuller ones when they do (a server that works one
    /// call at a time, such as LocalStack). false keeps BATCH_MAX_IN_FLIGHT calls.
    #[arg(long, env = "BATCH_ADAPTIVE_IN_FLIGHT", default_value_t = true, action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub(crate) batch_adaptive_in_flight: bool,

    /// Longest a webhook waits for SQS to accept it, retries included, before it gets 503 with
    /// Retry-After. Keep it well below the shortest provider timeout (Shopify waits 5 s,
    /// GitHub 10 s) so providers see the 503 and retry, rather than time out.
    #[arg(long, env = "SEND_TIMEOUT_SECONDS", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub(crate) send_timeout_seconds: u64,

    /// For FIFO queues: a request header whose value becomes the MessageGroupId (ordering
    /// scope). Without it, or when a request lacks the header, the group is the source.
    /// With FAIR_QUEUE_GROUPS, the same group is sent to a standard queue.
    #[arg(long, env = "FIFO_GROUP_HEADER")]
    pub(crate) fifo_group_header: Option<http::HeaderName>,

    /// Send a MessageGroupId (the source, or FIFO_GROUP_HEADER's value) to a standard queue
    /// too, which makes it an SQS fair queue: when one source floods it, SQS delivers the
    /// other sources' messages first. FIFO queues always get their group.
    #[arg(long, env = "FAIR_QUEUE_GROUPS", default_value_t = false, action = clap::ArgAction::Set)]
    pub(crate) fair_queue_groups: bool,

    /// Seconds a client has from the first byte of a request's headers to their end
    /// (slowloris guard); slower connections are dropped. Not counted while a kept-alive
    /// connection waits for its next request (see IDLE_TIMEOUT_SECONDS).
    #[arg(long, env = "HEADER_READ_TIMEOUT_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub(crate) header_read_timeout_seconds: u64,

    /// Seconds a connection may stay open with no request in progress before ingest closes
    /// it (HTTP/2: with GOAWAY). Keep it above the load balancer's idle timeout (an ALB's is
    /// 60 s by default), so the balancer never reuses a connection ingest has closed.
    #[arg(long, env = "IDLE_TIMEOUT_SECONDS", default_value_t = 75, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub(crate) idle_timeout_seconds: u64,

    /// Seconds a client has to send the whole body once the headers are in; then 408.
    #[arg(long, env = "BODY_READ_TIMEOUT_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub(crate) body_read_timeout_seconds: u64,

    /// Least average rate, in bytes per second, at which a request body must come once
    /// BODY_RATE_GRACE_SECONDS of waiting for it have passed; a slower client gets 408 and its
    /// connection is closed. Only time spent waiting for the client counts (not time ingest
    /// spends on S3 or waiting for room). 0 turns it off (BODY_READ_TIMEOUT_SECONDS still
    /// applies).
    #[arg(long, env = "MIN_BODY_BYTES_PER_SECOND", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(0..=1_073_741_824))]
    pub(crate) min_body_bytes_per_second: u32,

    /// Seconds of waiting for a request body during which MIN_BODY_BYTES_PER_SECOND is not
    /// asked for; at most BODY_READ_TIMEOUT_SECONDS.
    #[arg(long, env = "BODY_RATE_GRACE_SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub(crate) body_rate_grace_seconds: u64,

    /// Most client connections open at once; more wait in the listen backlog.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1_000_000).map(|n| n as usize))]
    pub(crate) max_connections: usize,

    /// Seconds to keep serving after SIGTERM with /readyz answering 503, so the load
    /// balancer stops sending traffic before the listener closes. Match the target group's
    /// deregistration delay; keep it plus the grace period below ECS's stopTimeout.
    #[arg(long, env = "DEREGISTRATION_DELAY_SECONDS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=600))]
    pub(crate) deregistration_delay_seconds: u64,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub ops: OpsArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub log: LogArgs,
}

/// ingest's subcommands.
#[derive(Debug, Clone, Copy, clap::Subcommand)]
pub enum Command {
    /// Exit 0 if the ingest on METRICS_ADDR answers /healthz, else 1 (no curl needed).
    Healthcheck,
}

impl Config {
    /// The largest accepted body: `MAX_BODY_BYTES`, or its default for whether offloading is
    /// on; an error naming the setting when it is above what the bucket setting allows.
    pub(crate) fn max_body_bytes(&self) -> Result<usize, ConfigError> {
        let (most, why) = if self.large_payload_bucket.is_some() {
            (MAX_OFFLOADED_BODY_BYTES, "the most accepted through S3")
        } else {
            (
                DEFAULT_MAX_BODY_BYTES,
                "the most that fits one SQS message; set LARGE_PAYLOAD_BUCKET to accept up to 32 MiB through S3",
            )
        };
        match self.max_body_bytes {
            None => Ok(most),
            Some(given) if given <= most => Ok(given),
            Some(given) => Err(ConfigError::BodyLimit { given, most, why }),
        }
    }

    /// The minimum body data rate and its grace period; an error naming the setting when the
    /// grace is longer than the body read timeout.
    pub(crate) fn min_body_rate(&self) -> Result<MinRate, ConfigError> {
        if self.body_rate_grace_seconds > self.body_read_timeout_seconds {
            return Err(ConfigError::RateGrace {
                grace: self.body_rate_grace_seconds,
                timeout: self.body_read_timeout_seconds,
            });
        }
        Ok(MinRate {
            bytes_per_second: NonZeroU32::new(self.min_body_bytes_per_second),
            grace: Duration::from_secs(self.body_rate_grace_seconds),
        })
    }

    /// The S3 call timeout as a duration.
    pub(crate) fn large_payload_s3_timeout(&self) -> Duration {
        Duration::from_secs(self.large_payload_s3_timeout_seconds)
    }

    /// How webhooks are batched into SQS calls.
    pub(crate) fn batch_options(&self) -> BatchOptions {
        BatchOptions {
            max_entries: self.batch_max_messages,
            linger: Duration::from_millis(self.batch_linger_ms),
            max_in_flight: self.batch_max_in_flight,
            adaptive_in_flight: self.batch_adaptive_in_flight,
            deadline: self.send_timeout(),
        }
    }

    /// The send timeout as a duration.
    pub(crate) fn send_timeout(&self) -> Duration {
        Duration::from_secs(self.send_timeout_seconds)
    }

    /// The deregistration delay as a duration.
    pub(crate) fn deregistration_delay(&self) -> Duration {
        Duration::from_secs(self.deregistration_delay_seconds)
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
