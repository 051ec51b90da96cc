//! The lag: how far behind the worker is, from the messages' `SentTimestamp`. It is the age,
//! now, of the oldest message among:
//! - the messages the worker holds (received, not yet deleted or released);
//! - the messages it put back for a back-off after a failed write, until they are received
//!   again or could have been (the back-off plus a visibility timeout);
//! - the oldest message of the latest non-empty receive, until a receive finds the queue
//!   empty or the queue reports no visible message (so an SQS outage does not hide a backlog).
//!
//! So it keeps growing while messages wait, hidden or not, and is 0 once caught up.
//!
//! Per source (the labels of `metrics/sources.rs`), the lag is the age of the oldest message of
//! that source the worker holds or has put back for a back-off: SQS tells nothing of a
//! source's messages still in the queue (no depth per group), so that part is left out; the
//! age of each message at receive, per source, shows how long they waited there.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::metrics::{self, SourceLabels};
use crate::pipeline::window::Window;

/// Most messages remembered in back-off; beyond it, newer ones are not remembered (the
/// oldest, which set the lag, are kept).
const MAX_BACKED_OFF: usize = 100_000;

/// Shared by the receiver, the writer (back-off) and the gauge refresher.
#[derive(Debug)]
pub(crate) struct Lag {
    window: Arc<Window>,
    labels: SourceLabels,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Oldest `SentTimestamp` of the latest non-empty receive; 0 once caught up.
    latest_receive_oldest_ms: u64,
    /// Message id -> (SentTimestamp ms, forget after, source label).
    backed_off: HashMap<String, (u64, Instant, Arc<str>)>,
}

impl Lag {
    /// Lag over the messages held in `window`, per source by `labels`.
    pub(crate) fn new(window: Arc<Window>, labels: SourceLabels) -> Self {
        Self {
            window,
            labels,
            state: Mutex::default(),
        }
    }

    /// The label of a message from `source`.
    pub(crate) fn label(&self, source: Option<&str>) -> Arc<str> {
        self.labels.label(source)
    }

    /// Records a receive: the sent times and source labels (see [`Lag::label`]) of what it
    /// brought (empty: caught up with the visible messages). Received messages are no longer
    /// in back-off.
    pub(crate) fn observe_receive<'a>(
        &self,
        messages: impl IntoIterator<Item = (&'a str, Option<u64>, &'a Arc<str>)>,
    ) {
        let now = now_ms();
        let mut state = self.state();
        let mut oldest = None::<u64>;
        for (message_id, sent_ms, label) in messages {
            state.backed_off.remove(message_id);
            if let Some(sent) = sent_ms {
                let age = Duration::from_millis(now.saturating_sub(sent));
                metrics::record_seconds(metrics::MESSAGE_AGE_SECONDS, age);
                metrics::record_source_message_age(label, age);
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
        source: Option<&str>,
        forget_after: Duration,
    ) {
        let Some(sent) = sent_ms else { return };
        let label = self.labels.label(source);
        let mut state = self.state();
        if state.backed_off.len() < MAX_BACKED_OFF {
            state.backed_off.insert(
                message_id.to_owned(),
                (sent, Instant::now() + forget_after, label),
            );
        }
    }

    /// The main queue has no visible messages: nothing is waiting to be received.
    pub(crate) fn queue_has_none_visible(&self) {
        self.state().latest_receive_oldest_ms = 0;
    }

    /// Sets the gauges: the lag, and each source's.
    pub(crate) fn report(&self) {
        metrics::set_lag(self.current());
        let by_source = self.current_by_source();
        for label in self.labels.all() {
            let lag = by_source.get(label).copied().unwrap_or_default();
            metrics::set_source_lag(label, lag);
        }
    }

    /// Each source label's lag now (see the module documentation); labels without a held or
    /// backed-off message are absent.
    pub(crate) fn current_by_source(&self) -> HashMap<Arc<str>, Duration> {
        let mut oldest = self.window.oldest_sent_ms_by_source();
        let now = Instant::now();
        for (sent, forget, label) in self.state().backed_off.values() {
            if *forget > now {
                oldest
                    .entry(Arc::clone(label))
                    .and_modify(|o| *o = (*o).min(*sent))
                    .or_insert(*sent);
            }
        }
        let now_ms = now_ms();
        oldest
            .into_iter()
            .map(|(label, sent)| (label, Duration::from_millis(now_ms.saturating_sub(sent))))
            .collect()
    }

    /// The lag now.
    pub(crate) fn current(&self) -> Duration {
        let now = Instant::now();
        let mut state = self.state();
        state.backed_off.retain(|_, (_, forget, _)| *forget > now);
        let backed_off = state.backed_off.values().map(|(sent, _, _)| *sent).min();
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
        let lag = Lag::new(Arc::clone(&window), SourceLabels::default());
        assert_eq!(lag.current(), Duration::ZERO);
        let other = lag.label(None);
        lag.observe_receive([("a", ago(5), &other), ("b", ago(30), &other)]);
        assert!(about(lag.current(), 30));
        lag.observe_receive([]);
        assert_eq!(lag.current(), Duration::ZERO);
        lag.observe_receive([("c", ago(2), &other)]);
        lag.queue_has_none_visible();
        assert_eq!(lag.current(), Duration::ZERO);
    }

    #[tokio::test]
    async fn messages_in_back_off_keep_the_lag_growing_while_receives_find_nothing() {
        let window = Window::new(10);
        let lag = Lag::new(Arc::clone(&window), SourceLabels::default());
        lag.observe_receive([("a", ago(40), &lag.label(None))]);
        lag.backed_off("a", ago(40), None, Duration::from_secs(60));
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
                Arc::from("other"),
            )],
            Duration::from_secs(30),
        );
        lag.observe_receive([("a", ago(40), &lag.label(None))]);
        lag.queue_has_none_visible();
        assert!(about(lag.current(), 40));
        drop(held);
        assert_eq!(lag.current(), Duration::ZERO, "stored: caught up");
    }

    #[tokio::test]
    async fn each_source_lags_by_its_oldest_held_or_backed_off_message() {
        let window = Window::new(10);
        let labels = SourceLabels::new(&["github".to_owned(), "stripe".to_owned()]);
        let lag = Lag::new(Arc::clone(&window), labels);
        let receipt = |id: &str| Receipt {
            message_id: id.into(),
            handle: format!("h-{id}"),
        };
        let held = window.reserve(3).await.admit(
            [
                (receipt("a"), ago(30), lag.label(Some("github"))),
                (receipt("b"), ago(5), lag.label(Some("github"))),
                (receipt("c"), ago(12), lag.label(Some("acme"))),
            ],
            Duration::from_secs(30),
        );
        lag.backed_off("d", ago(50), Some("stripe"), Duration::from_secs(60));
        let by_source = lag.current_by_source();
        assert!(about(by_source["github"], 30), "{by_source:?}");
        assert!(about(by_source["other"], 12), "{by_source:?}");
        assert!(about(by_source["stripe"], 50), "{by_source:?}");
        drop(held);
        let by_source = lag.current_by_source();
        assert_eq!(by_source.len(), 1, "only the backed-off one: {by_source:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn back_off_entries_are_forgotten_after_their_time() {
        let lag = Lag::new(Window::new(1), SourceLabels::default());
        lag.backed_off("a", ago(10), None, Duration::from_secs(5));
        assert!(lag.current() > Duration::ZERO);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(lag.current(), Duration::ZERO);
    }
}
