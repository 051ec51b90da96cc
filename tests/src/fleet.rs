//! Probes of a fleet of workers sharing `DATABASE_CONNECTION_BUDGET`: their grants (from
//! /metrics), the lease table, the fleet's advisory lock (to hold it from outside, as a frozen
//! session would) and the worker backends waiting on an advisory lock.

use std::time::Duration;

use crate::probes::{WORKER_APP, gauge};
use crate::{Service, TestStack, eventually};

/// The fleet-wide advisory lock under which the workers change their lease rows ("swleases";
/// `FLEET_LOCK` in `worker/src/fleet/table.rs`).
pub const FLEET_LOCK: i64 = 0x7377_6c65_6173_6573;

/// A worker's connection grant, from its /metrics; -1 before it reports one.
pub async fn grant(worker: &Service) -> f64 {
    gauge(
        &worker.metrics().await,
        "webhook_worker_connection_grant",
        &[],
    )
    .unwrap_or(-1.0)
}

/// The workers' grants, sorted.
pub async fn grants(workers: &[&Service]) -> Vec<f64> {
    let mut grants = Vec::new();
    for worker in workers {
        grants.push(grant(worker).await);
    }
    grants.sort_by(f64::total_cmp);
    grants
}

/// Waits until the workers' grants are `expected` (sorted); returns how long it took. Panics
/// with the grants seen and the workers' logs otherwise.
pub async fn wait_for_grants(workers: &[&Service], expected: &[f64], within: Duration) -> Duration {
    let started = tokio::time::Instant::now();
    let reached = eventually(within, &format!("grants {expected:?}"), || async {
        Ok((grants(workers).await == expected).then_some(()))
    })
    .await;
    if let Err(error) = reached {
        let seen = grants(workers).await;
        let logs: Vec<String> = workers.iter().map(|w| w.log()).collect();
        panic!("{error}; grants {seen:?}\n{}", logs.join("\n----\n"));
    }
    started.elapsed()
}

/// Rows in the lease table and the sum of their grants.
pub async fn leases(stack: &TestStack) -> (i64, i64) {
    sqlx::query_as("SELECT count(*), coalesce(sum(granted), 0)::int8 FROM webhook_worker_leases")
        .fetch_one(&stack.db)
        .await
        .expect("reading webhook_worker_leases")
}

/// Worker backends waiting on an advisory lock now, and the longest such wait so far, in
/// seconds (0 when none waits).
pub async fn advisory_waits(stack: &TestStack) -> (i64, f64) {
    sqlx::query_as(
        "SELECT count(*),
                coalesce(max(extract(epoch FROM clock_timestamp() - query_start)), 0)::float8
         FROM pg_stat_activity
         WHERE datname = current_database() AND application_name = $1
           AND wait_event_type = 'Lock' AND wait_event = 'advisory'",
    )
    .bind(WORKER_APP)
    .fetch_one(&stack.db)
    .await
    .expect("reading pg_stat_activity")
}
