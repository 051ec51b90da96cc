//! The writers of `worker replay`. One reader reads pages in key order (`select::page`) and
//! numbers them; writers replay them at once, each page in transactions of its own
//! (`page.rs`), committed in any order; the frontier (`frontier.rs`) follows the unbroken
//! prefix of committed pages, and the cursor row is moved to it (folded, see `cursor.rs`) at
//! most once per [`FOLD_INTERVAL`], and as the run stops or ends.
//!
//! How many pages are in progress is the live writer's [`ConcurrencyController`]
//! (`pipeline/write_limit.rs`), fed as `pipeline/write.rs` feeds it: each page's first
//! transaction is a sample (its rows, its wait for a connection, BEGIN..COMMIT, and the pages
//! in progress when it started, itself included) or, refused as overload (53300, 57014,
//! 40001, 40P01), an overload; it starts at 1, doubles while the database stays fast, and
//! never passes `--concurrency`. The limit in force is the lower of it and the connection
//! grant (`fleet/gate.rs`); the reader and the fold take a connection only while fewer pages
//! than that are in progress, so no writer waits for a connection outside the grant.
//! `--max-per-second` holds back the next page on top of that.
//!
//! A page whose transaction failed for a reason that may pass keeps what it had not committed
//! and is retried, before any new page, after a back-off (1 s doubling to 30 s) during which
//! no page starts. On a stop (SIGINT, SIGTERM) no page starts, the pages in progress end, and
//! the cursor is folded.

#![allow(
    clippy::print_stdout,
    reason = "progress lines on stdout are this command's output"
)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;
use webhook_shared::envelope::Envelope;

use crate::db::handler::Handler;
use crate::db::write_error::WriteError;
use crate::pipeline::write_limit::{ConcurrencyController, WriteSample};
use crate::pipeline::write_split::Attempt;
use crate::replay::Replay;
use crate::replay::cursor::{self, Cursor};
use crate::replay::frontier::Frontier;
use crate::replay::page::{Page, Writer, Written};
use crate::replay::select::{self, Key, Range};

/// First and longest pause after a page failed for a reason that may pass.
const BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));
/// Least time between two moves of the cursor row while pages are committed.
const FOLD_INTERVAL: Duration = Duration::from_secs(1);

/// Replays `ranges` (the whole selection: `total` events) from `cursor` on.
pub(super) async fn run<H: Handler>(
    replay: &Replay<'_, H>,
    ranges: Vec<Range>,
    total: i64,
    cursor: Cursor,
) -> anyhow::Result<()> {
    let after = match ranges.first() {
        Some(range) if cursor.range.as_deref() == Some(&range.label()) => cursor.key.clone(),
        _ => Key::default(),
    };
    let now = Instant::now();
    let writers = Writers {
        controller: ConcurrencyController::new(replay.args.concurrency as usize, true, now),
        writer: Arc::new(replay.writer(Some(cursor.name.clone()))),
        replay,
        writes: JoinSet::new(),
        frontier: Frontier::default(),
        reader: Reader {
            ranges,
            index: 0,
            after,
        },
        retries: BTreeMap::new(),
        cursor,
        total,
        unfolded: None,
        folded_at: now,
        started: now,
        dispatched: 0,
        replayed: 0,
        backoff: BACKOFF.0,
        paused_until: None,
    };
    writers.run().await
}

/// The reader's place: the range it reads and the key after which it goes on.
struct Reader {
    ranges: Vec<Range>,
    index: usize,
    after: Key,
}

/// One run's writers; see the module documentation.
struct Writers<'r, 'a, H> {
    replay: &'r Replay<'a, H>,
    writer: Arc<Writer<H>>,
    controller: ConcurrencyController,
    /// The pages in progress, each with the pages in progress when it started.
    writes: JoinSet<(Written, usize)>,
    frontier: Frontier<(Range, Key)>,
    reader: Reader,
    /// Pages waiting for a retry, by number (the oldest goes first).
    retries: BTreeMap<u64, Page>,
    /// The cursor as folded, with the counts of this run added as pages commit.
    cursor: Cursor,
    total: i64,
    /// The frontier, when it is past the cursor row.
    unfolded: Option<(Range, Key)>,
    folded_at: Instant,
    started: Instant,
    /// Events handed to writers (for `--max-per-second`).
    dispatched: i64,
    /// Events committed by this run (for its rate).
    replayed: i64,
    backoff: Duration,
    /// No page starts before this (a back-off).
    paused_until: Option<Instant>,
}

impl<H: Handler> Writers<'_, '_, H> {
    async fn run(mut self) -> anyhow::Result<()> {
        let gate = self.replay.connections.gate();
        let mut grant = gate.subscribe();
        let period = Duration::from_secs(self.replay.args.progress_interval_seconds);
        let mut progress = tokio::time::interval_at(Instant::now() + period, period);
        let mut reading = true;
        let mut stopping = false;
        loop {
            if !stopping {
                reading = self.start(reading).await;
            }
            let finished = !reading && self.retries.is_empty();
            if self.writes.is_empty() && (stopping || finished) {
                break;
            }
            self.fold(false).await;
            let wake = self.wake();
            tokio::select! {
                Some(joined) = self.writes.join_next(), if !self.writes.is_empty() => {
                    self.settle(joined)?;
                }
                () = self.replay.stop.cancelled(), if !stopping => stopping = true,
                // The gate outlives the run: the sender cannot be dropped meanwhile.
                Ok(()) = grant.changed() => {}
                () = tokio::time::sleep_until(wake.unwrap_or(self.started)), if wake.is_some() => {}
                _ = progress.tick() => self.report(),
            }
        }
        if stopping {
            self.fold(true).await;
            self.report();
            println!("replay: stopped; run the same command again to go on");
            return Ok(());
        }
        let name = self.cursor.name.clone();
        self.replay
            .on_connection(async |conn| cursor::finish(conn, &name).await)
            .await
            .context("marking the replay cursor finished")?;
        if let Some((range, key)) = self.unfolded.take() {
            self.cursor.range = Some(range.label());
            self.cursor.key = key;
        }
        self.report();
        println!("replay: done");
        Ok(())
    }

    /// The limit in force: the controller's, within the connection grant.
    fn limit(&self) -> usize {
        self.controller
            .limit()
            .min(self.replay.connections.gate().grant())
    }

    /// When the next page may start, if not now: after a back-off, or as
    /// `--max-per-second` allows.
    fn wake(&self) -> Option<Instant> {
        let paced = self.replay.args.max_per_second.map(|rate| {
            self.started + Duration::from_secs_f64(self.dispatched as f64 / f64::from(rate.get()))
        });
        [self.paused_until, paced]
            .into_iter()
            .flatten()
            .max()
            .filter(|at| *at > Instant::now())
    }

    /// Starts pages (retries first) while the limit, the back-off and the pace allow;
    /// returns whether the reader has more to read.
    async fn start(&mut self, mut reading: bool) -> bool {
        while self.writes.len() < self.limit()
            && self.wake().is_none()
            && !self.replay.stop.is_cancelled()
        {
            let page = if let Some((_, page)) = self.retries.pop_first() {
                page
            } else if reading {
                match self.read().await {
                    Ok(Some((range, events))) => Page {
                        number: self
                            .frontier
                            .push((range, Key::of(&events[events.len() - 1]))),
                        range,
                        events,
                    },
                    Ok(None) => {
                        reading = false;
                        continue;
                    }
                    Err(error) => {
                        self.pause("reading", &error);
                        continue;
                    }
                }
            } else {
                break;
            };
            self.dispatched += page.events.len() as i64;
            let in_progress = self.writes.len() + 1;
            let writer = Arc::clone(&self.writer);
            self.writes
                .spawn(async move { (writer.write(page).await, in_progress) });
        }
        reading
    }

    /// The next page: the next range's when this one is read to its end; `None` at the end.
    async fn read(&mut self) -> Result<Option<(Range, Vec<Envelope>)>, WriteError> {
        let (filter, name) = (&self.replay.filter, &self.cursor.name);
        let batch = i64::from(self.replay.args.batch_size);
        let reader = &mut self.reader;
        self.replay
            .on_connection(async |conn| {
                while let Some(range) = reader.ranges.get(reader.index).copied() {
                    let page =
                        select::page(conn, filter, (range, &reader.after), name, batch).await?;
                    if let Some(last) = page.last() {
                        reader.after = Key::of(last);
                        return Ok(Some((range, page)));
                    }
                    reader.index += 1;
                    reader.after = Key::default();
                }
                Ok(None)
            })
            .await
    }

    /// Takes in a page's end: its counts, its sample, and the frontier it moves (or its
    /// retry).
    fn settle(&mut self, joined: Result<(Written, usize), JoinError>) -> anyhow::Result<()> {
        let (written, in_progress) = joined.context("a replay writer failed")?;
        self.cursor.done += written.done;
        self.cursor.refused += written.refused;
        self.replayed += written.done + written.refused;
        learn(&mut self.controller, written.first, in_progress);
        match written.error {
            None => {
                self.backoff = BACKOFF.0;
                if let Some(end) = self.frontier.commit(written.page.number) {
                    self.unfolded = Some(end);
                }
            }
            Some(error) => {
                self.pause("writing", &error);
                self.retries.insert(written.page.number, written.page);
            }
        }
        Ok(())
    }

    /// After a failure that may pass: no page starts for the back-off, which doubles.
    fn pause(&mut self, what: &str, error: &WriteError) {
        println!(
            "replay: {what} failed ({error}); trying again in {:?}",
            self.backoff
        );
        self.paused_until = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF.1);
    }

    /// Moves the cursor row to the frontier: when `now`, or once [`FOLD_INTERVAL`] has passed
    /// and a connection is free within the limit; never without a grant. A failure leaves it
    /// for the next time (the recorded intervals keep the run exact meanwhile).
    async fn fold(&mut self, now: bool) {
        let Some((range, key)) = self.unfolded.clone() else {
            return;
        };
        if self.replay.connections.gate().grant() == 0 {
            return;
        }
        let due = self.folded_at.elapsed() >= FOLD_INTERVAL && self.writes.len() < self.limit();
        if !now && !due {
            return;
        }
        let name = self.cursor.name.clone();
        let folded = self
            .replay
            .on_connection(async |conn| cursor::fold(conn, &name, range, &key).await)
            .await;
        self.folded_at = Instant::now();
        match folded {
            Ok(()) => {
                self.cursor.range = Some(range.label());
                self.cursor.key = key;
                self.unfolded = None;
            }
            Err(error) => println!("replay: moving the cursor failed ({error}); trying later"),
        }
    }

    /// One progress line.
    fn report(&self) {
        let rate = self.replayed as f64 / self.started.elapsed().as_secs_f64().max(0.001);
        let (range, key) = match &self.unfolded {
            Some((range, key)) => (range.label(), key),
            None => (
                self.cursor.range.clone().unwrap_or_else(|| "-".to_owned()),
                &self.cursor.key,
            ),
        };
        println!(
            "replay: {} of {} done, {} refused, {rate:.0} events/s, limit {} of {}, at {range} {}/{}",
            self.cursor.done + self.cursor.refused,
            self.total,
            self.cursor.refused,
            self.limit(),
            self.replay.args.concurrency,
            key.source,
            key.id,
        );
    }
}

/// Tells the controller how a page's first transaction went (as `pipeline/write.rs` does).
fn learn(controller: &mut ConcurrencyController, first: Attempt, in_progress: usize) {
    let now = Instant::now();
    match first {
        Attempt::Committed {
            rows,
            acquire,
            total,
        } => {
            let sample = WriteSample {
                rows,
                acquire,
                write: total.saturating_sub(acquire),
                in_progress,
            };
            controller.on_write(sample, now);
        }
        Attempt::Overload => {
            controller.on_overload(now);
        }
        Attempt::Failed | Attempt::Unwritten => {}
    }
}
