//! What both scalable-webhook binaries share, and nothing more: the envelope that travels
//! on SQS, SQS client construction and limits, telemetry set-up, the HTTP serving loop with
//! the ops server (`/metrics`, `/healthz`, `/readyz`), and the shutdown signal.

pub mod byte_budget;
pub mod config;
pub mod envelope;
pub mod healthcheck;
pub mod large_payload;
pub mod limit;
pub mod metrics;
pub mod ops;
pub mod server;
pub mod shutdown;
pub mod sqs;
pub mod telemetry;
