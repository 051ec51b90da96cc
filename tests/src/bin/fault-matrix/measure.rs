//! The steady load of retrying providers, the wait for the system to store everything, and a
//! row's numbers: accepted, stored, lost, duplicates, in the DLQ, time to recover, slowest 202.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use e2e_tests::TestStack;
use e2e_tests::faults::{Accepted, Bodies, ClientStats, Provider, SOURCE};
use tokio::sync::{RwLock, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Providers in the load.
const PROVIDERS: usize = 8;
/// New webhooks per second across them (retries come on top).
const RATE: f64 = 20.0;
/// A webhook stored later than this after its 2xx was delayed by the fault.
pub(crate) const NORMAL_LAG: Duration = Duration::from_secs(2);

/// The providers, running.
pub(crate) struct Load {
    stop: watch::Sender<bool>,
    providers: JoinSet<ClientStats>,
}

impl Load {
    /// Starts [`PROVIDERS`] providers posting [`RATE`] webhooks a second in all to `url`.
    pub(crate) fn start(url: &Arc<RwLock<String>>, bodies: Bodies) -> anyhow::Result<Self> {
        let (stop, stop_rx) = watch::channel(false);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .context("building the HTTP client")?;
        let interval = Duration::from_secs_f64(PROVIDERS as f64 / RATE);
        let mut providers = JoinSet::new();
        for number in 0..PROVIDERS {
            let provider = Provider {
                number,
                http: http.clone(),
                url: Arc::clone(url),
                stop: stop_rx.clone(),
                interval,
                bodies,
            };
            providers.spawn(provider.run());
        }
        Ok(Self { stop, providers })
    }

    /// Stops starting new webhooks, waits for the providers to finish the ones they hold,
    /// and adds up what they saw.
    pub(crate) async fn stop(mut self) -> anyhow::Result<ClientStats> {
        self.stop.send_replace(true);
        let mut totals = ClientStats::default();
        while let Some(stats) = self.providers.join_next().await {
            totals.add(stats.context("a provider panicked")?);
        }
        Ok(totals)
    }
}

/// Stored rows of the load: per id, how many and when the (last) one was stored.
pub(crate) async fn stored_rows(
    stack: &TestStack,
) -> anyhow::Result<HashMap<String, (i64, DateTime<Utc>)>> {
    let rows: Vec<(String, i64, DateTime<Utc>)> = sqlx::query_as(
        "SELECT id, count(*), max(stored_at) FROM webhook_events WHERE source = $1 GROUP BY id",
    )
    .bind(SOURCE)
    .fetch_all(&stack.db)
    .await
    .context("reading the stored events")?;
    Ok(rows
        .into_iter()
        .map(|(id, count, stored_at)| (id, (count, stored_at)))
        .collect())
}

/// Waits until every accepted webhook is stored, at most until `deadline`.
pub(crate) async fn wait_until_stored(
    stack: &TestStack,
    accepted: &[Accepted],
    deadline: Instant,
) -> anyhow::Result<()> {
    loop {
        // The database may be coming back (the restart row): a failed read is a "not yet".
        if let Ok(stored) = stored_rows(stack).await
            && accepted
                .iter()
                .all(|webhook| stored.contains_key(&webhook.id))
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One row's numbers.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    /// The fault's name.
    pub(crate) name: &'static str,
    /// How long the fault lasted, in seconds.
    pub(crate) seconds: f64,
    /// Webhooks answered 2xx.
    pub(crate) accepted: usize,
    /// Webhooks stored (distinct ids).
    pub(crate) stored: usize,
    /// Accepted and not stored.
    pub(crate) lost: usize,
    /// Ids stored more than once.
    pub(crate) duplicates: usize,
    /// Messages in the DLQ.
    pub(crate) in_dlq: u64,
    /// Messages left in the main queue.
    pub(crate) left_in_queue: u64,
    /// From the fault's end to the last delayed webhook stored (0 when none); `None` when
    /// something was lost.
    pub(crate) recovery_after_end: Option<f64>,
    /// The same from the fault's start.
    pub(crate) recovery_from_start: Option<f64>,
    /// Whether the rule counts recovery from the start (new connections work).
    pub(crate) from_start: bool,
    /// The slowest request answered 2xx, in seconds.
    pub(crate) slowest_202: f64,
    /// Answers other than 2xx and 5xx (never expected).
    pub(crate) unexpected: Vec<String>,
    /// Why the row failed (empty: passed).
    pub(crate) failures: Vec<String>,
}

/// What happened around one fault, for [`Outcome::measure`].
pub(crate) struct Timeline {
    /// The fault's name.
    pub(crate) name: &'static str,
    /// When the fault began.
    pub(crate) start: DateTime<Utc>,
    /// When it ended.
    pub(crate) end: DateTime<Utc>,
    /// Whether recovery counts from the start.
    pub(crate) from_start: bool,
}

/// Most seconds recovery may take.
const RECOVERY_LIMIT: f64 = 60.0;

impl Outcome {
    /// The numbers of a row from what the providers saw and what is stored and queued.
    pub(crate) async fn measure(
        stack: &TestStack,
        timeline: &Timeline,
        load: &ClientStats,
    ) -> anyhow::Result<Self> {
        let stored = stored_rows(stack).await?;
        let mut lost = 0;
        let mut recovered_at: Option<DateTime<Utc>> = None;
        for webhook in &load.accepted {
            let Some((_, stored_at)) = stored.get(&webhook.id) else {
                lost += 1;
                continue;
            };
            let lag = (*stored_at - webhook.at).to_std().unwrap_or_default();
            if lag > NORMAL_LAG {
                recovered_at = recovered_at.max(Some(*stored_at));
            }
        }
        let since = |reference: DateTime<Utc>| {
            (lost == 0).then(|| {
                recovered_at.map_or(0.0, |at| {
                    ((at - reference).num_milliseconds() as f64 / 1000.0).max(0.0)
                })
            })
        };
        let mut outcome = Self {
            name: timeline.name,
            seconds: (timeline.end - timeline.start).num_milliseconds() as f64 / 1000.0,
            accepted: load.accepted.len(),
            stored: stored.len(),
            lost,
            duplicates: stored.values().filter(|(count, _)| *count > 1).count(),
            in_dlq: stack.messages_in(&stack.dlq_url).await,
            left_in_queue: stack.messages_in(&stack.queue_url).await,
            recovery_after_end: since(timeline.end),
            recovery_from_start: since(timeline.start),
            from_start: timeline.from_start,
            slowest_202: load
                .accepted
                .iter()
                .map(|webhook| webhook.latency.as_secs_f64())
                .fold(0.0, f64::max),
            unexpected: load.unexpected.clone(),
            failures: Vec::new(),
        };
        outcome.failures = outcome.check();
        Ok(outcome)
    }

    /// The rules broken: anything lost, duplicated or dead-lettered, recovery over 60 s,
    /// unexpected answers, nothing accepted.
    fn check(&self) -> Vec<String> {
        let mut failures = Vec::new();
        if self.accepted == 0 {
            failures.push("nothing accepted".to_owned());
        }
        if self.lost > 0 {
            failures.push(format!("{} lost", self.lost));
        }
        if self.duplicates > 0 {
            failures.push(format!("{} duplicates", self.duplicates));
        }
        if self.in_dlq > 0 {
            failures.push(format!("{} in the DLQ", self.in_dlq));
        }
        let recovery = if self.from_start {
            self.recovery_from_start
        } else {
            self.recovery_after_end
        };
        match recovery {
            Some(seconds) if seconds > RECOVERY_LIMIT => failures.push(format!(
                "recovered {seconds:.1} s after the fault's {}",
                if self.from_start { "start" } else { "end" }
            )),
            _ => {}
        }
        if !self.unexpected.is_empty() {
            failures.push(format!("{} unexpected answers", self.unexpected.len()));
        }
        failures
    }

    /// Whether every rule held.
    pub(crate) fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}
