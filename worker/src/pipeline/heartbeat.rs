//! The heartbeat: every held message, whether waiting for a writer, being written or waiting
//! for its delete, has its visibility extended before it would run out, so a slow database
//! never makes SQS deliver a held message a second time. Only what SQS extended counts as
//! extended: an entry SQS refused, or a call that failed or ran past its deadline, is tried
//! again after [`RETRY_PAUSE`], well before the visibility runs out, not a quarter later.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics;
use crate::pipeline::window::Window;
use crate::sqs::{Queue, QueueClient, Receipt};

/// Shortest pause between two looks at the window.
const MIN_PERIOD: Duration = Duration::from_millis(250);
/// Pause before trying again what a beat could not extend.
pub(crate) const RETRY_PAUSE: Duration = Duration::from_secs(1);

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
    let mut pause = period;
    while stop
        .run_until_cancelled(tokio::time::sleep(pause))
        .await
        .is_some()
    {
        let beat = beat(&window, &queue, visibility).await;
        pause = if beat.unextended > 0 {
            RETRY_PAUSE.min(period)
        } else {
            period
        };
    }
}

/// What one beat did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Beat {
    /// Messages SQS extended.
    pub(crate) extended: usize,
    /// Messages that were due but SQS did not extend.
    pub(crate) unextended: usize,
}

/// One look at the window: extends every held message with less than half its visibility
/// left, the calls within a quarter of the visibility. Marks extended only what SQS
/// extended.
pub(crate) async fn beat<C: QueueClient>(
    window: &Window,
    queue: &Queue<C>,
    visibility: Duration,
) -> Beat {
    let now = Instant::now();
    let expiring = window.expiring(now + visibility / 2);
    if expiring.is_empty() {
        return Beat::default();
    }
    let (keys, receipts): (Vec<u64>, Vec<Receipt>) = expiring.into_iter().unzip();
    tracing::debug!(
        messages = keys.len(),
        "held messages would become visible soon; extending"
    );
    let entries: Vec<(Receipt, Duration)> =
        receipts.iter().map(|r| (r.clone(), visibility)).collect();
    let unchanged: HashSet<String> =
        match tokio::time::timeout(period(visibility), queue.change_visibility(&entries)).await {
            Ok(unchanged) => unchanged.into_iter().map(|r| r.handle).collect(),
            Err(_) => {
                tracing::warn!(
                    messages = keys.len(),
                    "extending held messages timed out; trying again shortly"
                );
                receipts.iter().map(|r| r.handle.clone()).collect()
            }
        };
    let extended: Vec<u64> = keys
        .iter()
        .zip(&receipts)
        .filter(|(_, receipt)| !unchanged.contains(&receipt.handle))
        .map(|(key, _)| *key)
        .collect();
    window.extended(&extended, now + visibility);
    metrics::record_heartbeat(extended.len());
    Beat {
        extended: extended.len(),
        unextended: keys.len() - extended.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{FakeQueue, held_messages};

    #[tokio::test(start_paused = true)]
    async fn what_sqs_did_not_extend_is_tried_again_before_the_visibility_runs_out() {
        let fake = FakeQueue::default();
        let queue = Arc::new(Queue::new(fake.clone()));
        // Two messages held for 30 s from now (see `held_messages`).
        let (window, pending) = held_messages(&fake, &[10, 10]).await;
        let visibility = Duration::from_secs(30);
        let start = Instant::now();
        // The first beat's three attempts and the next beat's first one fail.
        fake.state().fail_visibility_calls = 4;
        let stop = CancellationToken::new();
        let heart = tokio::spawn(run(
            Arc::clone(&window),
            Arc::clone(&queue),
            visibility,
            stop.clone(),
        ));
        // Looks every 7.5 s; the third (22.5 s) finds them below half and fails, three
        // attempts 200 ms apart; the retry comes a second later, not at 30 s when their
        // visibility runs out.
        tokio::time::sleep(Duration::from_secs(23)).await;
        assert!(
            fake.state().visibility_changes.is_empty(),
            "the first beat failed"
        );
        assert_eq!(
            window.expiring(Instant::now() + visibility / 2).len(),
            2,
            "not marked extended"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            fake.state().visibility_changes.len(),
            2,
            "extended on the retry"
        );
        assert!(
            Instant::now() < start + visibility,
            "before the visibility ran out"
        );
        assert!(
            window.expiring(Instant::now() + visibility / 2).is_empty(),
            "marked extended once SQS extended them"
        );
        stop.cancel();
        heart.await.expect("the heartbeat stops");
        drop(pending);
    }
}
