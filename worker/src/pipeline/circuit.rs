//! The circuit breaker. When the database cannot be reached (connection refused, reset or
//! silent past its deadline, pool timeout, a login refused, shutting down or starting up,
//! read-only after a failover), or refuses every write alike for a reason outside the data
//! (privileges, schema, a lock held on the table; or the refusal fuse tripped, see
//! `pipeline/refusal_fuse.rs`), the circuit opens and the worker stops receiving: every receive of a message
//! it cannot store uses up one of the message's `maxReceiveCount`, so over a long outage (an
//! RDS Multi-AZ failover takes 60 to 120 s) receiving would send healthy webhooks to the
//! dead-letter queue.
//!
//! While the circuit is open, one probe at a time checks that the database can be written
//! (a real write through the handler, rolled back: see `db/store.rs`), on a back-off from
//! [`PROBE_FIRST`] doubling to [`PROBE_MAX`]; the first success closes the circuit and
//! receiving resumes. A trip of the refusal fuse holds the circuit open for its hold time
//! before the first probe. What the worker holds when the circuit opens is released with
//! [`RELEASE_VISIBILITY`] (see `pipeline/write_batch.rs`). That is longer than a long poll, so the receives
//! still in flight when the circuit opened end before the released messages become visible
//! again and cannot take them a second time.
//!
//! The same breaker guards S3 for offloaded webhooks (see `s3_health.rs`), with HeadBucket
//! as its probe.

use std::fmt::Display;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics;

/// Wait before the first probe after the circuit opens.
pub(crate) const PROBE_FIRST: Duration = Duration::from_millis(500);
/// Longest wait between probes.
pub(crate) const PROBE_MAX: Duration = Duration::from_secs(5);
/// How long messages released because the circuit opened stay hidden: SQS's longest long
/// poll (20 s) plus a margin.
pub(crate) const RELEASE_VISIBILITY: Duration = Duration::from_secs(25);

/// Why the circuit opened (the `reason` label of `webhook_worker_circuit_opens_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenReason {
    /// The database cannot be reached, logged into or written.
    Unreachable,
    /// Every write fails alike for a reason outside the data.
    Systemic,
    /// The refusal fuse tripped.
    Refusals,
}

impl OpenReason {
    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Unreachable => "unreachable",
            Self::Systemic => "systemic",
            Self::Refusals => "refusals",
        }
    }
}

/// What a circuit guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Guarded {
    /// The database: while open, nothing is received.
    Database,
    /// S3: while open, offloaded webhooks wait in memory (see `s3_health.rs`).
    S3,
}

impl Guarded {
    /// Sets this circuit's gauge.
    fn gauge(self, open: bool) {
        match self {
            Self::Database => metrics::gauge_circuit_open(open),
            Self::S3 => metrics::gauge_s3_circuit_open(open),
        }
    }
}

/// Whether the guarded service can be used now (closed) or is waited for (open).
#[derive(Debug)]
pub(crate) struct Circuit {
    guarded: Guarded,
    open: watch::Sender<bool>,
    /// No probe before this (a trip of the refusal fuse).
    held_until: Mutex<Option<Instant>>,
}

impl Default for Circuit {
    fn default() -> Self {
        Self::new(Guarded::Database)
    }
}

impl Circuit {
    /// A closed circuit guarding `guarded`.
    pub(crate) fn new(guarded: Guarded) -> Self {
        guarded.gauge(false);
        Self {
            guarded,
            open: watch::Sender::new(false),
            held_until: Mutex::new(None),
        }
    }

    /// A receiver that sees every opening and closing.
    pub(crate) fn subscribe(&self) -> watch::Receiver<bool> {
        self.open.subscribe()
    }

    /// Whether the circuit is open (receiving paused).
    pub(crate) fn is_open(&self) -> bool {
        *self.open.borrow()
    }

    /// Opens the circuit because of `cause`; logs and counts only when it was closed.
    pub(crate) fn open(&self, reason: OpenReason, cause: &dyn Display) {
        if self
            .open
            .send_if_modified(|open| !std::mem::replace(open, true))
        {
            self.guarded.gauge(true);
            match self.guarded {
                Guarded::Database => {
                    tracing::warn!(reason = reason.as_str(), %cause, "the database cannot take writes; receiving paused until a probe succeeds");
                    metrics::record_circuit_open(reason.as_str());
                }
                Guarded::S3 => {
                    tracing::warn!(%cause, "S3 cannot be read; offloaded webhooks wait in memory until a probe succeeds");
                }
            }
        }
    }

    /// Opens the circuit and keeps it open for at least `hold` (no probe before then).
    pub(crate) fn hold(&self, hold: Duration, cause: &dyn Display) {
        let until = Instant::now() + hold;
        let mut held = self
            .held_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *held = Some(held.map_or(until, |earlier| earlier.max(until)));
        drop(held);
        self.open(OpenReason::Refusals, cause);
    }

    /// Until when no probe may close the circuit.
    fn held_until(&self) -> Option<Instant> {
        *self
            .held_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes the circuit.
    fn close(&self) {
        if self
            .open
            .send_if_modified(|open| std::mem::replace(open, false))
        {
            self.guarded.gauge(false);
            match self.guarded {
                Guarded::Database => {
                    tracing::info!("the database takes writes again; receiving resumed");
                }
                Guarded::S3 => tracing::info!("S3 can be read again"),
            }
        }
    }

    /// Waits until the circuit is closed.
    pub(crate) async fn closed(&self) {
        let mut state = self.open.subscribe();
        // The sender lives as long as `self`: waiting cannot fail.
        let _ = state.wait_for(|open| !*open).await;
    }

    /// Waits until the circuit is open.
    async fn opened(&self) {
        let mut state = self.open.subscribe();
        let _ = state.wait_for(|open| *open).await;
    }
}

/// Probes whenever the circuit is open, closing it at the first success; returns when
/// `stop` is cancelled. Each probe must end within its own deadline.
pub(crate) async fn probe_while_open<E: Display, F: Future<Output = Result<(), E>>>(
    circuit: &Circuit,
    probe: impl Fn() -> F,
    stop: CancellationToken,
) {
    loop {
        if stop.run_until_cancelled(circuit.opened()).await.is_none() {
            return;
        }
        let mut delay = PROBE_FIRST;
        while circuit.is_open() {
            let not_before =
                (Instant::now() + delay).max(circuit.held_until().unwrap_or_else(Instant::now));
            if stop
                .run_until_cancelled(tokio::time::sleep_until(not_before))
                .await
                .is_none()
            {
                return;
            }
            let result = probe().await;
            if circuit.guarded == Guarded::Database {
                metrics::record_probe(result.is_ok());
            }
            match result {
                Ok(()) => circuit.close(),
                Err(error) => tracing::debug!(guarded = ?circuit.guarded, %error, "probe failed"),
            }
            delay = (delay * 2).min(PROBE_MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use webhook_shared::envelope::Envelope;

    use super::*;
    use crate::db::handler::HandlerError;
    use crate::db::store::{EventStore, Written};
    use crate::db::write_error::WriteError;

    /// A store whose probe succeeds once `up` is set, counting probes.
    #[derive(Debug, Default)]
    struct Probed {
        up: AtomicBool,
        probes: AtomicUsize,
    }

    impl EventStore for Arc<Probed> {
        async fn write(&self, _: &[Envelope]) -> Result<Written, WriteError> {
            unreachable!("the prober never writes")
        }

        async fn stored(
            &self,
            _: &[crate::sqs::payload::EventKey],
        ) -> Result<Vec<bool>, WriteError> {
            unreachable!("the prober never looks events up")
        }

        async fn probe(&self) -> Result<(), WriteError> {
            self.probes.fetch_add(1, Ordering::SeqCst);
            if self.up.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err(HandlerError::from(sqlx::Error::PoolTimedOut).into())
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn probes_back_off_while_down_and_close_at_the_first_success() {
        let circuit = Arc::new(Circuit::default());
        let store = Arc::new(Probed::default());
        let stop = CancellationToken::new();
        let prober = tokio::spawn({
            let (circuit, store, stop) = (Arc::clone(&circuit), Arc::clone(&store), stop.clone());
            async move { probe_while_open(&circuit, || store.probe(), stop).await }
        });
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(store.probes.load(Ordering::SeqCst), 0, "closed: no probe");

        circuit.open(OpenReason::Unreachable, &"connection refused");
        assert!(circuit.is_open());
        // At 0.5, 1.5, 3.5, 7.5, 12.5, 17.5, 22.5 and 27.5 s: 8 probes in the first 30 s.
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(store.probes.load(Ordering::SeqCst), 8);
        assert!(circuit.is_open());

        store.up.store(true, Ordering::SeqCst);
        tokio::time::timeout(PROBE_MAX + Duration::from_millis(10), circuit.closed())
            .await
            .expect("closed at the next probe");
        assert_eq!(store.probes.load(Ordering::SeqCst), 9);

        // Open again: the back-off starts over.
        store.up.store(false, Ordering::SeqCst);
        circuit.open(OpenReason::Unreachable, &"reset");
        tokio::time::sleep(PROBE_FIRST + Duration::from_millis(10)).await;
        assert_eq!(store.probes.load(Ordering::SeqCst), 10);
        stop.cancel();
        prober.await.expect("the prober stops");
    }
}
