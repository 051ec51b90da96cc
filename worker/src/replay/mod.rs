//! `worker replay`: runs stored events through the handler again ([`Handler::replay`], by
//! default `handle`), selected by source, time range or ids (`select.rs`), in batches of
//! `--batch-size`, one transaction at a time on one connection with the writers' session
//! timeouts and deadline, paced by `--max-per-second`; the cursor (`cursor.rs`) moves in each
//! batch's transaction, so a stopped run goes on where it stopped. A batch the handler refuses
//! is halved until the event at fault stands alone; it is counted, printed, and passed.
//! `--dry-run` counts what would be replayed and touches nothing.

#![allow(
    clippy::print_stdout,
    reason = "progress lines on stdout are this command's output"
)]

mod cursor;
pub(crate) mod select;

use std::time::{Duration, Instant};

use anyhow::Context as _;
use sqlx::{Connection as _, PgConnection};
use tokio_util::sync::CancellationToken;
use webhook_shared::envelope::Envelope;

use crate::config::ReplayArgs;
use crate::db::connections::{self, Connections};
use crate::db::errors::Failure;
use crate::db::handler::{Handler, HandlerError, Stored};
use crate::db::write_error::WriteError;
use crate::replay::cursor::Cursor;
use crate::replay::select::{Filter, Key, Range};
use crate::{db, fleet};

/// First and longest pause after a batch failed for a reason that may pass.
const BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));

/// Runs the replay `args` describes through `handler`: with `DATABASE_CONNECTION_BUDGET`, as a
/// member of the fleet's lease (one connection wanted), so workers and replays together stay
/// within the budget.
pub(crate) async fn run<H: Handler>(args: &ReplayArgs, handler: &H) -> anyhow::Result<()> {
    let filter = args.filter()?;
    let budget = args
        .database_connection_budget
        .map(|budget| (budget, Duration::from_secs(args.database_lease_seconds)));
    let identity = budget.map(|_| fleet::Identity::new());
    let (connections, lease) = connections::shared(&args.database, budget, identity, 1)?;
    let stop = CancellationToken::new();
    webhook_shared::shutdown::cancel_on_signal(stop.clone())
        .context("installing signal handlers")?;
    let replay = Replay {
        handler,
        args,
        filter,
        connections: connections.clone(),
        stop,
        deadline: args.database.transaction_timeout()?,
        started: Instant::now(),
        done_now: 0,
    };
    let stop_lease = CancellationToken::new();
    let work = async {
        let result = replay.run().await;
        stop_lease.cancel();
        result
    };
    let lease = Box::pin(async {
        if let Some(lease) = lease {
            lease.run(stop_lease.clone()).await;
        }
    });
    let (result, ()) = tokio::join!(work, lease);
    connections.close(Duration::from_secs(2)).await;
    result
}

/// One run.
struct Replay<'a, H> {
    handler: &'a H,
    args: &'a ReplayArgs,
    filter: Filter,
    /// One connection, within the fleet's budget when there is one.
    connections: Connections,
    stop: CancellationToken,
    deadline: Duration,
    started: Instant,
    /// Events replayed by this run (for its rate).
    done_now: i64,
}

impl<H: Handler> Replay<'_, H> {
    async fn run(mut self) -> anyhow::Result<()> {
        let mut conn = self.connection().await?;
        let prepared = self.prepare(&mut conn).await;
        connections::release(conn, outcome(&prepared)).await;
        let Some((ranges, total, mut cursor)) = prepared? else {
            return Ok(());
        };
        let mut last_report = Instant::now();
        let mut backoff = BACKOFF.0;
        for range in &ranges {
            if cursor.range.as_deref() != Some(&range.label()) {
                cursor.range = Some(range.label());
                cursor.key = Key::default();
            }
            loop {
                if self.stop.is_cancelled() {
                    println!("replay: stopped; run the same command again to go on");
                    return Ok(());
                }
                let more = match self.connection().await {
                    Ok(mut conn) => {
                        let step = self.step(&mut conn, *range, &mut cursor).await;
                        connections::release(conn, outcome(&step)).await;
                        step.map_err(|error| error.to_string())
                    }
                    Err(error) => Err(error.to_string()),
                };
                match more {
                    Ok(false) => break,
                    Ok(true) => {
                        backoff = BACKOFF.0;
                        self.pace().await;
                    }
                    Err(error) => {
                        println!("replay: writing failed ({error}); trying again in {backoff:?}");
                        tokio::select! {
                            () = tokio::time::sleep(backoff) => {}
                            () = self.stop.cancelled() => {}
                        }
                        backoff = (backoff * 2).min(BACKOFF.1);
                    }
                }
                if last_report.elapsed() >= Duration::from_secs(self.args.progress_interval_seconds)
                {
                    self.report(&cursor, total);
                    last_report = Instant::now();
                }
            }
        }
        let mut conn = self.connection().await?;
        let finished = cursor::finish(&mut conn, &cursor.name).await;
        connections::release(conn, outcome(&finished)).await;
        finished?;
        self.report(&cursor, total);
        println!("replay: done");
        Ok(())
    }

    /// A connection, once the lease has granted one (at once without a budget).
    async fn connection(&self) -> Result<connections::Conn, WriteError> {
        tokio::select! {
            () = self.connections.gate().granted() => {}
            () = self.stop.cancelled() => {}
        }
        self.connections.acquire().await
    }

    /// Checks the schema, replays the events named by id (then `None`: nothing more to do),
    /// or counts (`--dry-run`: then `None`) and opens the cursor: the ranges still to read,
    /// the total, the cursor.
    async fn prepare(
        &mut self,
        conn: &mut PgConnection,
    ) -> anyhow::Result<Option<(Vec<Range>, i64, Cursor)>> {
        db::ensure_migrated(conn).await?;
        if !self.filter.ids.is_empty() {
            let events = select::by_ids(conn, &self.filter).await?;
            println!("replay: {} stored events match the ids", events.len());
            if !self.args.dry_run {
                let mut cursor = Cursor::default();
                for chunk in events.chunks(self.args.batch_size as usize) {
                    self.commit(conn, chunk, &mut cursor, false)
                        .await
                        .map_err(|error| anyhow::anyhow!("{error}"))?;
                }
                println!(
                    "replay: done, {} replayed, {} refused",
                    cursor.done, cursor.refused
                );
            }
            return Ok(None);
        }
        let ranges = select::ranges(conn, &self.filter).await?;
        let mut total = 0;
        for range in &ranges {
            let count = select::count(conn, &self.filter, *range).await?;
            if self.args.dry_run && count > 0 {
                let to = range
                    .to
                    .map_or_else(|| "infinity".to_owned(), |to| to.to_rfc3339());
                println!(
                    "replay: {count} events received from {} to {to}",
                    range.label()
                );
            }
            total += count;
        }
        if self.args.dry_run {
            println!("replay (dry run): {total} events would be replayed; nothing was changed");
            return Ok(None);
        }
        let filter_json = serde_json::to_value(&self.filter)?;
        let name = self
            .args
            .cursor
            .clone()
            .unwrap_or_else(|| filter_json.to_string());
        let cursor = cursor::open(conn, &name, &filter_json, self.args.restart).await?;
        if cursor.finished {
            println!(
                "replay: the cursor `{name}` is finished ({} replayed); --restart to run it again",
                cursor.done
            );
            return Ok(None);
        }
        println!(
            "replay: {total} events match; cursor `{name}` ({} done before)",
            cursor.done
        );
        let to_read = ranges
            .into_iter()
            .filter(|r| resumes_at_or_after(r, &cursor))
            .collect();
        Ok(Some((to_read, total, cursor)))
    }

    /// The next page of `range` after the cursor, replayed; `false` once the range is read.
    async fn step(
        &mut self,
        conn: &mut PgConnection,
        range: Range,
        cursor: &mut Cursor,
    ) -> Result<bool, HandlerError> {
        let page = select::page(
            conn,
            &self.filter,
            range,
            &cursor.key,
            i64::from(self.args.batch_size),
        )
        .await?;
        if page.is_empty() {
            return Ok(false);
        }
        self.commit(conn, &page, cursor, true).await?;
        Ok(true)
    }

    /// Replays `events` and moves the cursor past them (when `save`), in one transaction; a
    /// refused batch is halved until the event at fault stands alone, which is counted and
    /// passed. A failure that may pass is returned: the caller retries after a back-off, from
    /// the cursor, which is past every part committed.
    async fn commit(
        &mut self,
        conn: &mut PgConnection,
        events: &[Envelope],
        cursor: &mut Cursor,
        save: bool,
    ) -> Result<(), HandlerError> {
        let mut parts = vec![events];
        while let Some(part) = parts.pop() {
            let Some(last) = part.last() else { continue };
            let mut next = cursor.clone();
            next.key = Key {
                source: last.source.clone(),
                id: last.id.clone(),
                received_at: Some(last.received_at),
            };
            match self.transaction(conn, part, &next, save, 0).await {
                Ok(refused) => {
                    for (event, reason) in &refused {
                        println!("replay: refused {}/{}: {reason}", event.source, event.id);
                    }
                    let refused = refused.len() as i64;
                    next.done += part.len() as i64 - refused;
                    next.refused += refused;
                    self.done_now += part.len() as i64;
                    *cursor = next;
                }
                Err(HandlerError::Permanent(error)) if part.len() == 1 => {
                    println!("replay: refused {}/{}: {error}", last.source, last.id);
                    next.refused += 1;
                    self.done_now += 1;
                    self.transaction(conn, &[], &next, save, 1).await?;
                    *cursor = next;
                }
                Err(HandlerError::Permanent(_)) => {
                    let (first, second) = part.split_at(part.len() / 2);
                    parts.push(second);
                    parts.push(first);
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// One transaction: the handler's replay of `events` and the cursor moved to `next`
    /// (when there is a cursor; `refused_alone` counts an event refused by an earlier
    /// attempt); returns the events the handler refused, with the reason.
    async fn transaction<'e>(
        &self,
        conn: &mut PgConnection,
        events: &'e [Envelope],
        next: &Cursor,
        save: bool,
        refused_alone: i64,
    ) -> Result<Vec<(&'e Envelope, String)>, HandlerError> {
        let work = async {
            let mut tx = conn.begin().await?;
            let results = if events.is_empty() {
                Vec::new()
            } else {
                self.handler.replay(&mut tx, events).await?
            };
            if results.len() != events.len() {
                return Err(HandlerError::Permanent(
                    format!(
                        "handler bug: {} results for {} events",
                        results.len(),
                        events.len()
                    )
                    .into(),
                ));
            }
            let refused: Vec<(&Envelope, String)> = events
                .iter()
                .zip(results)
                .filter_map(|(event, stored)| match stored {
                    Stored::Refused(reason) => Some((event, reason.to_string())),
                    _ => None,
                })
                .collect();
            let (done, refused_count) = (
                events.len() as i64 - refused.len() as i64,
                refused.len() as i64 + refused_alone,
            );
            if save {
                cursor::advance(&mut tx, next, done, refused_count).await?;
            }
            tx.commit().await?;
            Ok(refused)
        };
        tokio::time::timeout(self.deadline, work)
            .await
            .unwrap_or_else(|_| {
                Err(HandlerError::Transient(
                    format!("the database did not answer within {:?}", self.deadline).into(),
                ))
            })
    }

    /// Sleeps as long as `--max-per-second` asks.
    async fn pace(&self) {
        let Some(rate) = self.args.max_per_second else {
            return;
        };
        let due = Duration::from_secs_f64(self.done_now as f64 / f64::from(rate.get()));
        if let Some(wait) = due.checked_sub(self.started.elapsed()) {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.stop.cancelled() => {}
            }
        }
    }

    /// One progress line.
    fn report(&self, cursor: &Cursor, total: i64) {
        let rate = self.done_now as f64 / self.started.elapsed().as_secs_f64().max(0.001);
        println!(
            "replay: {} of {total} done, {} refused, {rate:.0} events/s, at {} {}/{}",
            cursor.done + cursor.refused,
            cursor.refused,
            cursor.range.as_deref().unwrap_or("-"),
            cursor.key.source,
            cursor.key.id,
        );
    }
}

/// How a call on a connection went, for its release: a failure gets the connection pinged
/// before it is kept.
fn outcome<T, E>(result: &Result<T, E>) -> Result<(), Failure> {
    result.as_ref().map(|_| ()).map_err(|_| Failure::Transient)
}

/// Whether `range` is still to be read by a run resuming at `cursor` (ranges are read oldest
/// first; the cursor names the range it was in by its lower bound).
fn resumes_at_or_after(range: &Range, cursor: &Cursor) -> bool {
    let Some(label) = &cursor.range else {
        return true;
    };
    if *label == range.label() {
        return true;
    }
    let resumed_from = if label == "-infinity" {
        None
    } else {
        label.parse::<chrono::DateTime<chrono::Utc>>().ok()
    };
    range.from > resumed_from
}
