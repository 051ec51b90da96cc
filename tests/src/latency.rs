//! Pieces of the latency benchmark (`scripts/bench.sh latency`): an open-loop load, and the
//! moment each row is committed, seen from outside the worker.
//!
//! **Open loop.** Request `k` of a phase is due at `t_k = start + k / rate`, whatever the
//! earlier requests are doing: a scheduler sleeps until each `t_k` and starts the request in
//! a task of its own. Every latency is measured from `t_k`, so a late scheduler or a queue in
//! front of the system counts against it (no coordinated omission). A request due while
//! `max_in_flight` others are still waiting is not sent and is counted as dropped.
//!
//! **Commit times.** `CREATE TRIGGER … AFTER INSERT … FOR EACH ROW` calls `pg_notify` with the
//! row's tag; PostgreSQL delivers a notification only when its transaction commits, so a
//! listener that stamps each arrival sees the commit (plus the delivery, well under a
//! millisecond on one host). `stored_at` cannot serve: `now()` is the transaction's start.
//! Notifying commits take a database-wide lock in turn; the floor's table has the same
//! trigger, so both sides pay it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::time::Instant;

/// The channel the trigger notifies on.
const CHANNEL: &str = "stored";

/// Creates the notifying trigger on `webhook_events` (its tag is the JSON payload's `tag`)
/// and the floor's table `floor_events` with the same trigger.
pub async fn install_commit_triggers(db: &PgPool) -> anyhow::Result<()> {
    let statements = [
        "CREATE TABLE floor_events (
            tag       text        PRIMARY KEY,
            body      jsonb       NOT NULL,
            stored_at timestamptz NOT NULL DEFAULT now())",
        "CREATE FUNCTION bench_notify_webhook() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_notify('stored', NEW.payload->>'tag'); RETURN NULL; END $$",
        "CREATE FUNCTION bench_notify_floor() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_notify('stored', NEW.tag); RETURN NULL; END $$",
        "CREATE TRIGGER bench_notify AFTER INSERT ON webhook_events
         FOR EACH ROW EXECUTE FUNCTION bench_notify_webhook()",
        "CREATE TRIGGER bench_notify AFTER INSERT ON floor_events
         FOR EACH ROW EXECUTE FUNCTION bench_notify_floor()",
    ];
    for statement in statements {
        sqlx::query(statement)
            .execute(db)
            .await
            .with_context(|| format!("installing the commit triggers: {statement}"))?;
    }
    Ok(())
}

/// When each tag's row was committed, as the listener saw it.
#[derive(Debug, Clone, Default)]
pub struct Commits(Arc<Mutex<HashMap<String, Instant>>>);

impl Commits {
    /// Listens on the database at `database_url` in a task of its own, until the process ends.
    pub async fn listen(database_url: &str) -> anyhow::Result<Self> {
        let mut listener = PgListener::connect(database_url)
            .await
            .context("connecting the commit listener")?;
        listener
            .listen(CHANNEL)
            .await
            .context("LISTEN for commits")?;
        let commits = Self::default();
        let seen = commits.clone();
        tokio::spawn(async move {
            while let Ok(notification) = listener.recv().await {
                let at = Instant::now();
                seen.map()
                    .entry(notification.payload().to_owned())
                    .or_insert(at);
            }
        });
        Ok(commits)
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// When `tag` was committed, if it was.
    pub fn at(&self, tag: &str) -> Option<Instant> {
        self.map().get(tag).copied()
    }

    /// Commits seen so far.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether none was seen.
    pub fn is_empty(&self) -> bool {
        self.map().is_empty()
    }
}

/// One request of an open-loop phase.
#[derive(Debug, Clone, Copy)]
pub struct Request {
    /// Its index in the phase.
    pub k: u64,
    /// When it was due.
    pub due: Instant,
    /// When it was answered, and whether the answer was a success; `None` if it was
    /// dropped (too many in flight when it was due).
    pub answered: Option<(Instant, bool)>,
}

impl Request {
    /// Whether it was sent and succeeded.
    pub fn accepted(&self) -> bool {
        matches!(self.answered, Some((_, true)))
    }
}

/// Runs `send(k)` at `t_k = start + k / rate` for every `t_k` within `duration`, each in a
/// task of its own, at most `max_in_flight` at once; returns every request in order of `k`.
pub async fn open_loop<F, Fut>(
    rate: f64,
    duration: Duration,
    max_in_flight: usize,
    send: F,
) -> Vec<Request>
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = bool> + Send + 'static,
{
    let count = (rate * duration.as_secs_f64()).floor() as u64;
    let start = Instant::now();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let mut dropped = Vec::new();
    for k in 0..count {
        let due = start + Duration::from_secs_f64(k as f64 / rate);
        tokio::time::sleep_until(due).await;
        if in_flight.fetch_add(1, Ordering::SeqCst) >= max_in_flight {
            in_flight.fetch_sub(1, Ordering::SeqCst);
            dropped.push(Request {
                k,
                due,
                answered: None,
            });
            continue;
        }
        let (request, in_flight) = (send(k), Arc::clone(&in_flight));
        tasks.spawn(async move {
            let ok = request.await;
            let answered = Instant::now();
            in_flight.fetch_sub(1, Ordering::SeqCst);
            Request {
                k,
                due,
                answered: Some((answered, ok)),
            }
        });
    }
    let mut requests = tasks.join_all().await;
    requests.extend(dropped);
    requests.sort_unstable_by_key(|request| request.k);
    requests
}

/// Closed loop: `clients` tasks each send `send(k)` for the next `k` (0, 1, 2, ... shared
/// between them) as soon as their previous request is answered, until `done(k)` holds for the
/// `k` they would send next; returns how many requests succeeded.
pub async fn closed_loop<S, Fut, D>(clients: u64, done: D, send: S) -> u64
where
    S: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send + 'static,
    D: Fn(u64) -> bool + Clone + Send + 'static,
{
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (next, done, send) = (Arc::clone(&next), done.clone(), send.clone());
        tasks.spawn(async move {
            let mut succeeded = 0;
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if done(k) {
                    return succeeded;
                }
                succeeded += u64::from(send(k).await);
            }
        });
    }
    tasks.join_all().await.into_iter().sum()
}

/// The tag of request `k` of the phase `phase`.
pub fn tag(phase: &str, k: u64) -> String {
    format!("{phase}-{k}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_open_loop_sends_on_schedule_whatever_the_answers_take() {
        // Every answer takes 1 s; at 10/s for 2 s, 20 requests are due 100 ms apart and
        // each one's latency is measured from its own due time.
        let requests = open_loop(10.0, Duration::from_secs(2), 100, |_| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            true
        })
        .await;
        assert_eq!(requests.len(), 20);
        let start = requests[0].due;
        for request in &requests {
            assert_eq!(request.due - start, Duration::from_millis(100 * request.k));
            let (answered, ok) = request.answered.expect("sent");
            assert!(ok);
            assert_eq!(answered - request.due, Duration::from_secs(1));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_closed_loop_sends_each_k_once_and_counts_the_successes() {
        let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = Arc::clone(&sent);
        let succeeded = closed_loop(
            4,
            |k| k >= 10,
            move |k| {
                record.lock().expect("not poisoned").push(k);
                async move {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    k % 2 == 0
                }
            },
        )
        .await;
        let mut sent = sent.lock().expect("not poisoned").clone();
        sent.sort_unstable();
        assert_eq!(sent, (0..10).collect::<Vec<u64>>());
        assert_eq!(succeeded, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_due_while_too_many_wait_are_dropped_not_delayed() {
        // Answers take 950 ms, at most 5 in flight, 10/s: 5 sent from 0.0 s to 0.4 s, the 5
        // due from 0.5 s to 0.9 s find 5 waiting and are dropped; the first answers come back
        // from 0.95 s, so the 5 due from 1.0 s go, and the 5 after them are dropped again.
        let requests = open_loop(10.0, Duration::from_secs(2), 5, |_| async {
            tokio::time::sleep(Duration::from_millis(950)).await;
            true
        })
        .await;
        let sent: Vec<bool> = requests.iter().map(|r| r.answered.is_some()).collect();
        let expected: Vec<bool> = (0..20).map(|k| k < 5 || (10..15).contains(&k)).collect();
        assert_eq!(sent, expected);
        assert!(
            requests
                .iter()
                .filter(|r| r.answered.is_some())
                .all(Request::accepted)
        );
    }
}
