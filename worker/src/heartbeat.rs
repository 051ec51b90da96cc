//! The heartbeat: every held message, whether waiting for a writer, being written or waiting
//! for its delete, has its visibility extended before it would run out, so a slow database
//! never makes SQS deliver a held message a second time.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics;
use crate::queue::{Queue, QueueClient, Receipt};
use crate::window::Window;

/// Shortest pause between two looks at the window.
const MIN_PERIOD: Duration = Duration::from_millis(250);

/// How often to look, and when to extend: every quarter of `visibility`, extending what
/// has less than half of it left, so an extension is never late by more than a quarter.
pub(crate) fn period(visibility: Duration) -> Duration {
    (visibility / 4).max(MIN_PERIOD)
}

/// Extends the visibility of held messages until `stop`.
pub(crate) async fn run<C: QueueClient>(
    window: Arc<Window>,
    queue: Arc<Queue<C>>,
    visibility: Duration,
    stop: CancellationToken,
) {
    let period = period(visibility);
    let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while stop.run_until_cancelled(ticks.tick()).await.is_some() {
        beat(&window, &queue, visibility).await;
    }
}

/// One look at the window: extends every held message with less than half its visibility
/// left. Returns how many were extended.
pub(crate) async fn beat<C: QueueClient>(
    window: &Window,
    queue: &Queue<C>,
    visibility: Duration,
) -> usize {
    let now = Instant::now();
    let expiring = window.expiring(now + visibility / 2);
    if expiring.is_empty() {
        return 0;
    }
    let (keys, receipts): (Vec<u64>, Vec<Receipt>) = expiring.into_iter().unzip();
    tracing::debug!(
        messages = keys.len(),
        "held messages would become visible soon; extending"
    );
    let entries: Vec<(Receipt, Duration)> = receipts.into_iter().map(|r| (r, visibility)).collect();
    queue.change_visibility(&entries).await;
    window.extended(&keys, now + visibility);
    metrics::record_heartbeat(keys.len());
    keys.len()
}
