//! S3's health as the worker sees it, for offloaded webhooks: a circuit breaker like the
//! database's (see `pipeline/circuit.rs`), and the messages it parks. When S3 fails a read (an outage,
//! throttling, revoked credentials; not a missing or oversized object), the breaker opens and
//! the message is parked: kept in memory, still held (the heartbeat keeps it hidden), without
//! a word to SQS, so an outage uses up none of its receive count and sends nothing to the
//! dead-letter queue. While the breaker is open every pointer is parked without a call to S3;
//! one HeadBucket at a time probes the bucket, and the first success closes the breaker and
//! gives the parked messages back to the writer. Small webhooks keep flowing meanwhile.
//!
//! Parked messages hold places in the window, so at most half of it is parked: beyond that a
//! pointer backs off through SQS as any transient failure does, and receiving goes on for the
//! rest. A worker that starts while its bucket cannot be reached starts with the breaker open.

use std::fmt::Display;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio_util::sync::CancellationToken;

use crate::metrics;
use crate::pipeline::circuit::{self, Circuit, Guarded, OpenReason};
use crate::pipeline::pending::Pending;
use crate::s3::PayloadObjects;

/// S3's breaker and the messages it parked.
#[derive(Debug)]
pub(crate) struct S3Health {
    /// Open while S3 cannot be read.
    pub(crate) circuit: Circuit,
    /// The bucket the probe asks for: the one that failed last.
    bucket: Mutex<Option<String>>,
    parked: Mutex<Vec<Pending>>,
    park_limit: usize,
}

impl S3Health {
    /// Healthy, parking at most `park_limit` messages.
    pub(crate) fn new(park_limit: usize) -> Self {
        metrics::gauge_waiting("s3", 0);
        Self {
            circuit: Circuit::new(Guarded::S3),
            bucket: Mutex::new(None),
            parked: Mutex::new(Vec::new()),
            park_limit,
        }
    }

    fn parked(&self) -> MutexGuard<'_, Vec<Pending>> {
        self.parked.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens the breaker: reading `bucket` failed because of `cause`.
    pub(crate) fn fail(&self, bucket: &str, cause: &dyn Display) {
        *self.bucket.lock().unwrap_or_else(PoisonError::into_inner) = Some(bucket.to_owned());
        self.circuit.open(OpenReason::Unreachable, cause);
    }

    /// Whether S3 is taken as unreadable now.
    pub(crate) fn is_open(&self) -> bool {
        self.circuit.is_open()
    }

    /// Parks `pending` until S3 can be read; gives it back if the park is full.
    pub(crate) fn park(&self, pending: Pending) -> Option<Pending> {
        let mut parked = self.parked();
        if parked.len() >= self.park_limit {
            return Some(pending);
        }
        parked.push(pending);
        metrics::gauge_waiting("s3", parked.len());
        None
    }

    /// Messages parked now.
    pub(crate) fn parked_count(&self) -> usize {
        self.parked().len()
    }

    /// Takes every parked message, oldest first.
    pub(crate) fn take_parked(&self) -> Vec<Pending> {
        let taken = std::mem::take(&mut *self.parked());
        metrics::gauge_waiting("s3", 0);
        taken
    }

    /// The bucket to probe.
    fn probe_bucket(&self) -> Option<String> {
        self.bucket
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Probes S3 (HeadBucket on the bucket that failed) whenever the breaker is open, until
/// `stop`.
pub(crate) async fn probe_while_open<O: PayloadObjects>(
    health: &S3Health,
    objects: &O,
    stop: CancellationToken,
) {
    let probe = || {
        let bucket = health.probe_bucket();
        async move {
            match bucket {
                Some(bucket) => objects.probe(&bucket).await,
                None => Ok(()),
            }
        }
    };
    circuit::probe_while_open(&health.circuit, probe, stop).await;
}
