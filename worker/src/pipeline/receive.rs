//! Receiving: keeps as many `ReceiveMessage` calls in flight as the [`ReceivePlanner`] wants,
//! each asking for a full batch (10, or less only when the window or the rate limit is
//! smaller) and starting only once the window has room for all of it. What arrives is
//! decoded: envelopes and S3 pointers (see `sqs/payload.rs`; their objects are fetched by the
//! writer) go to the writer, poison goes to the dead-letter queue at once.
//!
//! While the circuit is open (the database unreachable, see `pipeline/circuit.rs`), or while this
//! worker's connection grant is 0 (see `fleet/gate.rs`), no receive starts.
//! On shutdown no receive starts; those in flight are awaited (never dropped, or SQS would
//! hide what they bring for a whole visibility timeout) and what they bring is released at
//! once.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use webhook_shared::sqs::MAX_BATCH_ENTRIES;

use crate::fleet::Gate;
use crate::metrics::{self, Outcome};
use crate::pipeline::circuit::Circuit;
use crate::pipeline::lag::Lag;
use crate::pipeline::pending::Pending;
use crate::pipeline::receive_planner::ReceivePlanner;
use crate::pipeline::window::{Reservation, Window};
use crate::sqs::payload::Payload;
use crate::sqs::{Queue, QueueClient, Receipt};

/// Longest pause after repeated receive errors.
const MAX_ERROR_BACKOFF: Duration = Duration::from_secs(20);

/// What the receiver needs.
#[derive(Debug)]
pub(crate) struct Receiver<C> {
    /// The queue.
    pub(crate) queue: Arc<Queue<C>>,
    /// The window every received message is held in.
    pub(crate) window: Arc<Window>,
    /// The lag, told of every receive.
    pub(crate) lag: Arc<Lag>,
    /// The optional rate limit, shared by every receive.
    pub(crate) rate: Option<DefaultDirectRateLimiter>,
    /// Messages asked for per receive.
    pub(crate) size: usize,
    /// How long received messages stay hidden (the heartbeat extends it while they are held).
    pub(crate) visibility: Duration,
    /// Where decoded messages go.
    pub(crate) to_writer: UnboundedSender<Pending>,
    /// Receiving pauses while it is open.
    pub(crate) circuit: Arc<Circuit>,
    /// Receiving pauses while its grant is 0.
    pub(crate) gate: Arc<Gate>,
}

/// How one receive went, for the planner.
#[derive(Debug, Clone, Copy)]
struct Report {
    latency: Duration,
    messages: usize,
    failed: bool,
}

/// Messages asked for per receive: 10, or fewer if the window or the rate limit's burst is
/// smaller (a rate limiter cannot grant more at once than its burst).
pub(crate) fn receive_size(window: usize, per_second: Option<NonZeroU32>) -> usize {
    let burst = per_second.map_or(usize::MAX, |n| n.get() as usize);
    MAX_BATCH_ENTRIES.min(window).min(burst).max(1)
}

/// The rate limiter for `per_second` messages a second, with a burst of one second's worth.
pub(crate) fn rate_limiter(per_second: NonZeroU32) -> DefaultDirectRateLimiter {
    RateLimiter::direct(Quota::per_second(per_second))
}

impl<C: QueueClient> Receiver<C> {
    /// Receives until `shutdown`, then waits for the receives in flight and releases what
    /// they bring.
    pub(crate) async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut planner = ReceivePlanner::new(self.size, self.window.capacity(), Instant::now());
        let mut receives: JoinSet<Report> = JoinSet::new();
        let mut consecutive_errors = 0u32;
        'receiving: loop {
            while receives.len() >= planner.wanted(Instant::now()) {
                tokio::select! {
                    () = shutdown.cancelled() => break 'receiving,
                    Some(done) = receives.join_next() => {
                        consecutive_errors = account(&mut planner, done, consecutive_errors, receives.len());
                    }
                }
            }
            if self.circuit.is_open() || self.gate.grant() == 0 {
                tokio::select! {
                    () = shutdown.cancelled() => break 'receiving,
                    () = self.writable() => {}
                    Some(done) = receives.join_next() => {
                        consecutive_errors = account(&mut planner, done, consecutive_errors, receives.len());
                    }
                }
                continue;
            }
            if consecutive_errors > 0 {
                let pause = error_backoff(consecutive_errors);
                if shutdown
                    .run_until_cancelled(tokio::time::sleep(pause))
                    .await
                    .is_none()
                {
                    break;
                }
            }
            let reservation = tokio::select! {
                () = shutdown.cancelled() => break 'receiving,
                reservation = self.window.reserve(self.size) => reservation,
                Some(done) = receives.join_next() => {
                    consecutive_errors = account(&mut planner, done, consecutive_errors, receives.len());
                    continue;
                }
            };
            if let Some(rate) = &self.rate {
                let cells = NonZeroU32::new(reservation.size() as u32).unwrap_or(NonZeroU32::MIN);
                match shutdown
                    .run_until_cancelled(rate.until_n_ready(cells))
                    .await
                {
                    None => break,
                    Some(Ok(())) => {}
                    Some(Err(error)) => unreachable!("receives never ask above the burst: {error}"),
                }
            }
            let this = Arc::clone(&self);
            let shutdown = shutdown.clone();
            receives.spawn(async move { this.receive_one(reservation, &shutdown).await });
            metrics::gauge_receives_in_flight(receives.len());
        }
        tracing::info!(
            receives_in_flight = receives.len(),
            "stopped receiving; waiting for the receives in flight"
        );
        while let Some(done) = receives.join_next().await {
            consecutive_errors = account(&mut planner, done, consecutive_errors, receives.len());
        }
    }
}

impl<C> Receiver<C> {
    /// Waits until the circuit is closed and the grant is above 0.
    async fn writable(&self) {
        while self.circuit.is_open() || self.gate.grant() == 0 {
            self.circuit.closed().await;
            self.gate.granted().await;
        }
    }
}

/// Feeds a finished receive to the planner; returns the consecutive error count.
fn account(
    planner: &mut ReceivePlanner,
    done: Result<Report, tokio::task::JoinError>,
    consecutive_errors: u32,
    in_flight: usize,
) -> u32 {
    metrics::gauge_receives_in_flight(in_flight);
    let report = done.unwrap_or_else(|error| {
        tracing::error!(%error, "a receive task panicked");
        Report {
            latency: Duration::ZERO,
            messages: 0,
            failed: true,
        }
    });
    planner.record(report.latency, report.messages, Instant::now());
    metrics::gauge_receives_wanted(planner.wanted(Instant::now()));
    if report.failed {
        consecutive_errors + 1
    } else {
        0
    }
}

impl<C: QueueClient> Receiver<C> {
    /// One receive: holds what it brings in the window and passes it on (or, during
    /// shutdown, releases it).
    async fn receive_one(&self, reservation: Reservation, shutdown: &CancellationToken) -> Report {
        let started = Instant::now();
        let wall_start = self.queue.spans().map(|_| SystemTime::now());
        let result = self
            .queue
            .client()
            .receive(reservation.size(), self.visibility)
            .await;
        let latency = started.elapsed();
        if let (Some(spans), Some(wall_start)) = (self.queue.spans(), wall_start) {
            // Empty long polls are not recorded: one per poller every 20 s says nothing.
            match &result {
                Ok(messages) if !messages.is_empty() => spans.received(wall_start, messages, None),
                Err(_) => spans.received(wall_start, &[], Some("receive_failed")),
                Ok(_) => {}
            }
        }
        let messages = match result {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(%error, "receiving failed");
                return Report {
                    latency,
                    messages: 0,
                    failed: true,
                };
            }
        };
        let report = Report {
            latency,
            messages: messages.len(),
            failed: false,
        };
        // Each message's source label, worked out once for the lag and the window.
        let labels: Vec<Arc<str>> = messages
            .iter()
            .map(|m| self.lag.label(m.source()))
            .collect();
        self.lag.observe_receive(
            messages
                .iter()
                .zip(&labels)
                .map(|(m, label)| (m.receipt.message_id.as_str(), m.sent_ms, label)),
        );
        let held = reservation.admit(
            messages
                .iter()
                .zip(labels)
                .map(|(m, label)| (m.receipt.clone(), m.sent_ms, label)),
            self.visibility,
        );
        if shutdown.is_cancelled() && !messages.is_empty() {
            let receipts: Vec<(Receipt, Duration)> = messages
                .iter()
                .map(|m| (m.receipt.clone(), Duration::ZERO))
                .collect();
            tracing::info!(
                messages = receipts.len(),
                "received as shutdown began; releasing"
            );
            self.queue.change_visibility(&receipts).await;
            metrics::record_outcomes(Outcome::Released, receipts.len());
            return report;
        }
        for (message, held) in messages.into_iter().zip(held) {
            match Payload::decode(&message) {
                Ok(payload) => {
                    let pending = Pending::new(payload, message, held);
                    if let Err(unsent) = self.to_writer.send(pending) {
                        // The writer has stopped (shutdown): give the message back.
                        let receipt = unsent.0.receipt().clone();
                        self.queue
                            .change_visibility(&[(receipt, Duration::ZERO)])
                            .await;
                    }
                }
                Err(error) => {
                    tracing::warn!(message_id = %message.receipt.message_id, %error, "a message this worker cannot read; moving it to the DLQ");
                    metrics::record_outcomes(Outcome::Poison, 1);
                    self.queue.dead_letter(&message, &error.to_string()).await;
                    drop(held);
                }
            }
        }
        report
    }
}

/// 100 ms doubling per consecutive error, capped.
fn error_backoff(consecutive_errors: u32) -> Duration {
    let exponent = consecutive_errors.saturating_sub(1).min(10);
    (Duration::from_millis(100) * 2u32.pow(exponent)).min(MAX_ERROR_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(error_backoff(1), Duration::from_millis(100));
        assert_eq!(error_backoff(2), Duration::from_millis(200));
        assert_eq!(error_backoff(5), Duration::from_millis(1600));
        assert_eq!(error_backoff(50), MAX_ERROR_BACKOFF);
    }

    #[test]
    fn receives_ask_for_ten_unless_the_window_or_the_rate_is_smaller() {
        assert_eq!(receive_size(400, None), 10);
        assert_eq!(receive_size(4, None), 4);
        assert_eq!(receive_size(400, NonZeroU32::new(3)), 3);
        assert_eq!(receive_size(400, NonZeroU32::new(50)), 10);
    }

    #[tokio::test]
    async fn a_rate_below_the_receive_size_is_enforced() {
        // The defect: asking a limiter of 8/s for 10 cells failed at once, and was ignored.
        let per_second = NonZeroU32::new(8).expect("non-zero");
        let limiter = rate_limiter(per_second);
        let size = receive_size(400, Some(per_second));
        let started = std::time::Instant::now();
        for _ in 0..3 {
            let cells = NonZeroU32::new(size as u32).expect("non-zero");
            limiter
                .until_n_ready(cells)
                .await
                .expect("within the burst");
        }
        // 24 messages at 8/s with a burst of 8 take 2 s (governor's own clock is real time).
        assert!(
            started.elapsed() >= Duration::from_millis(1900),
            "{:?}",
            started.elapsed()
        );
    }
}
