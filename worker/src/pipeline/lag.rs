//! The lag: how far behind the worker is, from the messages' `SentTimestamp`. It is the age,
//! now, of the oldest message among:
//! - the messages the worker holds (received, not yet deleted or released);
//! - the messages it put back for a back-off after a failed write, until they are received
//!   again or could have been (the back-off plus a visibility timeout);
//! - the oldest message of the latest non-empty receive, until a receive finds the queue
//!   empty or the queue reports no visible message (so an SQS outage does not hide a backlog).
//!
//! So it keeps growing while messages wait, hidden or not, and is 0 once caught up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::metrics;
use crate::pipeline::window::Window;

/// Most messages remembered in back-off; beyond it, newer ones are not remembered (the
/// oldest, which set the lag, are kept).
const MAX_BACKED_OFF: usize = 100_000;

/// Shared by the receiver, the writer (back-off) and the gauge refresher.
#[derive(Debug)]
pub(crate) struct Lag {
    window: Arc<Window>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Oldest `SentTimestamp` of the latest non-empty receive; 0 once caught up.
    latest_receive_oldest_ms: u64,
    /// Message id -> (SentTimestamp ms, forget after).
    backed_off: HashMap<String, (u64, Instant)>,
}

impl Lag {
    /// Lag over the messages held in `window`.
    pub(crate) fn new(window: Arc<Window>) -> Self {
        Self {
            window,
            state: Mutex::default(),
        }
    }

    /// Records a receive: the sent times of what it brought (empty: caught up with the
    /// visible messages). Received messages are no longer in back-off.
    pub(crate) fn observe_receive<'a>(
        &self,
        messages: impl IntoIterator<Item = (&'a str, Option<u64>)>,
    ) {
        let now = now_ms();
        let mut state = self.state();
        let mut oldest = None::<u64>;
        for (message_id, sent_ms) in messages {
            state.backed_off.remove(message_id);
            if let Some(sent) = sent_ms {
                metrics::record_seconds(
                    metrics::MESSAGE_AGE_SECONDS,
                    Duration::from_millis(now.saturating_sub(sent)),
                );
                oldest = Some(oldest.map_or(sent, |o| o.min(sent)));
            }
        }
        state.latest_receive_oldest_ms = oldest.unwrap_or(0);
    }

    /// Records a message put back for `delay` after a failed write; it counts in the lag
    /// until it is received again or `delay + visibility` has passed.
    pub(crate) fn backed_off(
        &self,
        message_id: &str,
        sent_ms: Option<u64>,
        forget_after: Duration,
    ) {
        let Some(sent) = sent_ms else { return };
        let mut state = self.state();
        if state.backed_off.len() < MAX_BACKED_OFF {
            state
                .backed_off
                .insert(message_id.to_owned(), (sent, Instant::now() + forget_after));
        }
    }

    /// The main queue has no visible messages: nothing is waiting to be received.
    pub(crate) fn queue_has_none_visible(&self) {
        self.state().latest_receive_oldest_ms = 0;
    }

    /// Sets the gauge.
    pub(crate) fn report(&self) {
        metrics::set_lag(self.current());
    }

    /// The lag now.
    pub(crate) fn current(&self) -> Duration {
        let now = Instant::now();
        let mut state = self.state();
        state.backed_off.retain(|_, (_, forget)| *forget > now);
        let backed_off = state.backed_off.values().map(|(sent, _)| *sent).min();
        let received = Some(state.latest_receive_oldest_ms).filter(|&ms| ms > 0);
        drop(state);
        let oldest = [backed_off, received, self.window.oldest_sent_ms()]
            .into_iter()
            .flatten()
            .min();
        oldest.map_or(Duration::ZERO, |sent| {
            Duration::from_millis(now_ms().saturating_sub(sent))
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Milliseconds since the epoch now.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqs::Receipt;

    fn ago(seconds: u64) -> Option<u64> {
        Some(now_ms() - seconds * 1000)
    }

    fn about(lag: Duration, seconds: u64) -> bool {
        lag >= Duration::from_secs(seconds) && lag < Duration::from_secs(seconds + 2)
    }

    #[tokio::test]
    async fn lag_is_the_oldest_waiting_message_and_resets_when_caught_up() {
        let window = Window::new(10);
        let lag = Lag::new(Arc::clone(&window));
        assert_eq!(lag.current(), Duration::ZERO);
        lag.observe_receive([("a", ago(5)), ("b", ago(30))]);
        assert!(about(lag.current(), 30));
        lag.observe_receive([]);
        assert_eq!(lag.current(), Duration::ZERO);
        lag.observe_receive([("c", ago(2))]);
        lag.queue_has_none_visible();
        assert_eq!(lag.current(), Duration::ZERO);
    }

    #[tokio::test]
    async fn messages_in_back_off_keep_the_lag_growing_while_receives_find_nothing() {
        let window = Window::new(10);
        let lag = Lag::new(Arc::clone(&window));
        lag.observe_receive([("a", ago(40))]);
        lag.backed_off("a", ago(40), Duration::from_secs(60));
        // Every message hidden: receives come back empty and the queue shows none visible.
        lag.observe_receive([]);
        lag.queue_has_none_visible();
        assert!(about(lag.current(), 40), "{:?}", lag.current());
        // Received again: it is held now, and the lag follows it there.
        let held = window.reserve(1).await.admit(
            [(
                Receipt {
                    message_id: "a".into(),
                    handle: "h".into(),
                },
                ago(40),
            )],
            Duration::from_secs(30),
        );
        lag.observe_receive([("a", ago(40))]);
        lag.queue_has_none_visible();
        assert!(about(lag.current(), 40));
        drop(held);
        assert_eq!(lag.current(), Duration::ZERO, "stored: caught up");
    }

    #[tokio::test(start_paused = true)]
    async fn back_off_entries_are_forgotten_after_their_time() {
        let lag = Lag::new(Window::new(1));
        lag.backed_off("a", ago(10), Duration::from_secs(5));
        assert!(lag.current() > Duration::ZERO);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(lag.current(), Duration::ZERO);
    }
}
