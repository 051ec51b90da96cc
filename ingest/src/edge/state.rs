//! What every request's handler shares: the settings it applies, the memory budget, the
//! sources, the publisher and the S3 side of offloading, built once by [`crate::run`].

use std::time::Duration;

use http::HeaderName;
use webhook_shared::ops::Readiness;

use crate::body::budget::BodyBudget;
use crate::body::pace::MinRate;
use crate::offload::LargePayloads;
use crate::sources::Sources;
use crate::sqs::spans::Spans;

/// What the handlers need, shared by every connection.
#[derive(Debug)]
pub(crate) struct AppState<P> {
    /// Where envelopes go.
    pub publisher: P,
    /// Whether `/readyz` says ready.
    pub readiness: Readiness,
    /// Largest accepted body in bytes.
    pub max_body_bytes: usize,
    /// `Retry-After` seconds on 503.
    pub retry_after_seconds: u32,
    /// Longest a request waits for the queue to take its message; then 503.
    pub send_timeout: Duration,
    /// The memory budget that bodies and their messages are held within.
    pub body_budget: BodyBudget,
    /// Time a client has to send the body.
    pub body_read_timeout: Duration,
    /// The minimum rate a body must arrive at, after its grace period.
    pub min_body_rate: MinRate,
    /// The configured sources and their verifiers.
    pub sources: Sources,
    /// Header naming the FIFO message group, if configured.
    pub fifo_group_header: Option<HeaderName>,
    /// Offloading of large bodies to S3, when `LARGE_PAYLOAD_BUCKET` is set.
    pub large_payloads: Option<LargePayloads>,
    /// The messaging spans, when tracing is on (then each request gets a server span).
    pub spans: Option<Spans>,
}
