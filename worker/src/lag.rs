//! The lag: how far behind the worker is, from the messages' `SentTimestamp`. It is the age,
//! now, of the oldest message of the latest receive, so it keeps growing while the worker is
//! stuck; it is 0 once a receive finds nothing or the main queue has no visible messages.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};

use crate::metrics;

/// Shared by the receive loops (which observe) and the gauge refresher (which reports).
#[derive(Debug, Default)]
pub struct Lag {
    /// Milliseconds since the epoch of the oldest message of the latest receive; 0 = caught up.
    oldest_sent_ms: AtomicU64,
}

impl Lag {
    /// Records a receive: its oldest message, or caught up when it brought none. Also records
    /// each message's age.
    pub fn observe_receive(&self, messages: &[Message]) {
        let now = now_ms();
        let sent: Vec<u64> = messages.iter().filter_map(sent_ms).collect();
        for &sent in &sent {
            metrics::record_seconds(
                metrics::MESSAGE_AGE_SECONDS,
                Duration::from_millis(now.saturating_sub(sent)),
            );
        }
        self.oldest_sent_ms
            .store(sent.into_iter().min().unwrap_or(0), Ordering::Relaxed);
        self.report();
    }

    /// The main queue has no visible messages: the worker has caught up.
    pub fn caught_up(&self) {
        self.oldest_sent_ms.store(0, Ordering::Relaxed);
        self.report();
    }

    /// Sets the gauge from the oldest known message's age now.
    pub fn report(&self) {
        let oldest = self.oldest_sent_ms.load(Ordering::Relaxed);
        let lag = if oldest == 0 {
            Duration::ZERO
        } else {
            Duration::from_millis(now_ms().saturating_sub(oldest))
        };
        metrics::set_lag(lag);
    }

    /// The lag now (for tests).
    pub fn current(&self) -> Duration {
        let oldest = self.oldest_sent_ms.load(Ordering::Relaxed);
        if oldest == 0 {
            Duration::ZERO
        } else {
            Duration::from_millis(now_ms().saturating_sub(oldest))
        }
    }
}

fn sent_ms(message: &Message) -> Option<u64> {
    message
        .attributes()?
        .get(&MessageSystemAttributeName::SentTimestamp)?
        .parse()
        .ok()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent_ago(ago: Duration) -> Message {
        let sent = now_ms() - ago.as_millis() as u64;
        Message::builder()
            .attributes(MessageSystemAttributeName::SentTimestamp, sent.to_string())
            .build()
    }

    #[test]
    fn lag_is_the_oldest_age_and_resets_when_caught_up() {
        let lag = Lag::default();
        assert_eq!(lag.current(), Duration::ZERO);
        lag.observe_receive(&[
            sent_ago(Duration::from_secs(5)),
            sent_ago(Duration::from_secs(30)),
        ]);
        assert!(
            lag.current() >= Duration::from_secs(30) && lag.current() < Duration::from_secs(31)
        );
        lag.observe_receive(&[]);
        assert_eq!(lag.current(), Duration::ZERO);
        lag.observe_receive(&[sent_ago(Duration::from_secs(2))]);
        lag.caught_up();
        assert_eq!(lag.current(), Duration::ZERO);
    }
}
