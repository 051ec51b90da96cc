//! Helpers of the partition tests: the partitions of `webhook_events`, whether a table
//! exists, and waiting until the worker has counted an outcome.

use std::time::Duration;

use crate::report::counter;
use crate::{Service, TestStack, eventually};

impl TestStack {
    /// The partitions of `webhook_events`, by name.
    pub async fn partition_names(&self) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'webhook_events'::regclass ORDER BY 1",
        )
        .fetch_all(&self.db)
        .await
        .expect("listing partitions")
    }

    /// Whether a table (attached or not) named `name` exists.
    pub async fn table_exists(&self, name: &str) -> bool {
        sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(name)
            .fetch_one(&self.db)
            .await
            .expect("looking the table up")
    }
}

/// Waits (up to a minute) until `worker` has counted at least `at_least` messages with
/// `outcome` (`webhook_worker_messages_total`); panics otherwise.
pub async fn wait_for_outcome(worker: &Service, outcome: &str, at_least: f64) {
    let filter = format!(r#"outcome="{outcome}""#);
    eventually(Duration::from_secs(60), outcome, || async {
        let metrics = worker.metrics().await;
        Ok((counter(
            &metrics,
            "webhook_worker_messages_total",
            &[filter.as_str()],
        ) >= at_least)
            .then_some(()))
    })
    .await
    .unwrap_or_else(|error| panic!("{error}"));
}
