//! Gauges refreshed on an interval: `webhook_queue_messages` for the main queue and the DLQ
//! (from GetQueueAttributes) and the pool's connections (closing those idle too long); and the
//! lag, every second.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use tokio_util::sync::CancellationToken;

use crate::db::connections::Connections;
use crate::metrics::{self, QUEUE_MESSAGES};
use crate::pipeline::lag::Lag;
use crate::sqs::admin::QueueAdmin;

/// The attributes read, with the `state` label each one sets.
const STATES: [(QueueAttributeName, &str); 3] = [
    (QueueAttributeName::ApproximateNumberOfMessages, "visible"),
    (
        QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
        "in_flight",
    ),
    (
        QueueAttributeName::ApproximateNumberOfMessagesDelayed,
        "delayed",
    ),
];

/// How often the lag gauge is set.
const LAG_PERIOD: Duration = Duration::from_secs(1);

/// Shortest deadline for one refresh of the queue gauges.
const MIN_REFRESH_DEADLINE: Duration = Duration::from_secs(5);

/// Refreshes the gauges every `interval` (the lag every second) until `shutdown`.
pub(crate) async fn run(
    sqs: impl QueueAdmin,
    main_url: String,
    dlq_url: Option<String>,
    connections: Connections,
    lag: Arc<Lag>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let queues = async {
        let mut ticks = tokio::time::interval(interval);
        while shutdown.run_until_cancelled(ticks.tick()).await.is_some() {
            connections.close_stale().await;
            let (size, idle) = connections.sizes();
            metrics::gauge_pool(size, idle);
            let refresh_queues = async {
                if refresh(&sqs, "main", &main_url).await == Some(0) {
                    lag.queue_has_none_visible();
                }
                if let Some(dlq_url) = &dlq_url {
                    refresh(&sqs, "dlq", dlq_url).await;
                }
            };
            // Within the interval (SQS may be silent), and never past the shutdown.
            let deadline = interval.max(MIN_REFRESH_DEADLINE);
            match shutdown
                .run_until_cancelled(tokio::time::timeout(deadline, refresh_queues))
                .await
            {
                None => break,
                Some(Err(_)) => tracing::warn!(?deadline, "reading queue depths timed out"),
                Some(Ok(())) => {}
            }
        }
    };
    let lag_gauge = async {
        let mut ticks = tokio::time::interval(LAG_PERIOD);
        while shutdown.run_until_cancelled(ticks.tick()).await.is_some() {
            lag.report();
        }
    };
    tokio::join!(queues, lag_gauge);
}

/// Sets one queue's gauges; returns its visible count.
async fn refresh(sqs: &impl QueueAdmin, queue: &'static str, url: &str) -> Option<u64> {
    let names: Vec<QueueAttributeName> = STATES.iter().map(|(name, _)| name.clone()).collect();
    let attributes = match sqs.attributes(url, &names).await {
        Ok(attributes) => attributes,
        Err(error) => {
            tracing::warn!(queue, %error, "reading queue depth failed");
            return None;
        }
    };
    let mut visible = None;
    for (name, state) in STATES {
        if let Some(count) = attributes
            .get(&name)
            .and_then(|value| value.parse::<u64>().ok())
        {
            ::metrics::gauge!(QUEUE_MESSAGES, "queue" => queue, "state" => state).set(count as f64);
            if state == "visible" {
                visible = Some(count);
            }
        }
    }
    visible
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::admin::FakeAdmin;

    #[tokio::test]
    async fn a_refresh_reads_the_depths_and_returns_the_visible_count() {
        let admin = FakeAdmin::default();
        let url = "http://sqs/000000000000/hooks";
        admin.set(url, QueueAttributeName::ApproximateNumberOfMessages, "42");
        admin.set(
            url,
            QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
            "7",
        );
        assert_eq!(refresh(&admin, "main", url).await, Some(42));
        // A queue that answers without the count tells nothing (not zero).
        assert_eq!(refresh(&admin, "main", "http://sqs/other").await, None);
        admin.state().failing = true;
        assert_eq!(refresh(&admin, "main", url).await, None);
    }
}
