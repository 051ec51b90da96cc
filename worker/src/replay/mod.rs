//! `worker replay`: runs stored events through the handler again ([`Handler::replay`], by
//! default `handle`), selected by source, time range or ids (`select.rs`), in pages of
//! `--batch-size`. One reader reads the pages in key order; up to `--concurrency` writers
//! replay them at once, as many as the workers' adaptive limit allows (`writers.rs`), each
//! transaction on a connection of its own with the writers' session timeouts and deadline
//! (`page.rs`), paced by `--max-per-second` on top. Each transaction records what it replayed
//! beside the cursor, and the cursor follows the unbroken prefix of committed pages
//! (`frontier.rs`, `cursor.rs`), so a stopped run goes on where it stopped, running no event
//! twice and skipping none. A page the handler refuses is halved until the event at fault
//! stands alone; it is counted, printed, and passed. `--dry-run` counts what would be
//! replayed and touches nothing.

#![allow(
    clippy::print_stdout,
    reason = "progress lines on stdout are this command's output"
)]

mod cursor;
mod frontier;
mod page;
pub(crate) mod select;
mod writers;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;
use webhook_shared::envelope::Envelope;

use crate::config::ReplayArgs;
use crate::db::connections::{self, Connections};
use crate::db::errors::Failure;
use crate::db::handler::Handler;
use crate::db::write_error::WriteError;
use crate::replay::cursor::Cursor;
use crate::replay::page::{Page, Writer};
use crate::replay::select::{Filter, Range};
use crate::{db, fleet};

/// Runs the replay `args` describes through `handler`: with `DATABASE_CONNECTION_BUDGET`, as a
/// member of the fleet's lease (`--concurrency` connections wanted, at most the budget less
/// the registration connection), so workers and replays together stay within the budget.
pub(crate) async fn run<H: Handler>(args: &ReplayArgs, handler: H) -> anyhow::Result<()> {
    let filter = args.filter()?;
    let budget = args
        .database_connection_budget
        .map(|budget| (budget, Duration::from_secs(args.database_lease_seconds)));
    let identity = budget.map(|_| fleet::Identity::new());
    let wanted = budget.map_or(args.concurrency, |(budget, _)| {
        args.concurrency.min(budget - 1)
    });
    let (connections, lease) = connections::shared(&args.database, budget, identity, wanted)?;
    let stop = CancellationToken::new();
    webhook_shared::shutdown::cancel_on_signal(stop.clone())
        .context("installing signal handlers")?;
    let replay = Replay {
        handler: Arc::new(handler),
        args,
        filter,
        connections: connections.clone(),
        stop,
        deadline: args.database.transaction_timeout()?,
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
    handler: Arc<H>,
    args: &'a ReplayArgs,
    filter: Filter,
    /// At most `--concurrency` connections, within the fleet's budget when there is one.
    connections: Connections,
    stop: CancellationToken,
    /// Longest one transaction (or read) may take once it has its connection.
    deadline: Duration,
}

/// What is left to do once the run is prepared.
enum Prepared {
    /// Nothing (a dry run, or a finished cursor).
    Nothing,
    /// The events named by id.
    Ids(Vec<Envelope>),
    /// The ranges still to read, the total matching, and the cursor.
    Ranges(Vec<Range>, i64, Cursor),
}

impl<H: Handler> Replay<'_, H> {
    async fn run(self) -> anyhow::Result<()> {
        let mut conn = self.connection().await?;
        let prepared = self.prepare(&mut conn).await;
        connections::release(conn, outcome(&prepared)).await;
        match prepared? {
            Prepared::Nothing => Ok(()),
            Prepared::Ids(events) => self.replay_ids(events).await,
            Prepared::Ranges(ranges, total, cursor) => {
                writers::run(&self, ranges, total, cursor).await
            }
        }
    }

    /// A connection, once the lease has granted one (at once without a budget).
    async fn connection(&self) -> Result<connections::Conn, WriteError> {
        self.granted().await;
        self.connections.acquire().await
    }

    /// Waits until the lease grants a connection (at once without a budget), or the run stops.
    async fn granted(&self) {
        tokio::select! {
            () = self.connections.gate().granted() => {}
            () = self.stop.cancelled() => {}
        }
    }

    /// Runs `call` on a connection (once granted) within the deadline, then gives the
    /// connection back (or throws it away after an unreachable failure or the deadline).
    async fn on_connection<T>(
        &self,
        call: impl AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error>,
    ) -> Result<T, WriteError> {
        self.granted().await;
        self.connections
            .within(self.deadline, async |conn| {
                call(conn)
                    .await
                    .map_err(|error| WriteError::Handler(error.into()))
            })
            .await
            .map(|(value, _)| value)
    }

    /// A writer of pages recorded under `cursor` (`None`: nothing recorded).
    fn writer(&self, cursor: Option<String>) -> Writer<H> {
        Writer {
            handler: Arc::clone(&self.handler),
            connections: self.connections.clone(),
            deadline: self.deadline,
            cursor,
        }
    }

    /// Checks the schema; then the events named by id, or counts (`--dry-run`: then nothing
    /// more to do) and opens the cursor.
    async fn prepare(&self, conn: &mut PgConnection) -> anyhow::Result<Prepared> {
        db::ensure_migrated(conn).await?;
        if !self.filter.ids.is_empty() {
            let events = select::by_ids(conn, &self.filter).await?;
            println!("replay: {} stored events match the ids", events.len());
            return Ok(if self.args.dry_run {
                Prepared::Nothing
            } else {
                Prepared::Ids(events)
            });
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
            return Ok(Prepared::Nothing);
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
            return Ok(Prepared::Nothing);
        }
        println!(
            "replay: {total} events match; cursor `{name}` ({} done before)",
            cursor.done
        );
        let to_read = ranges
            .into_iter()
            .filter(|r| resumes_at_or_after(r, &cursor))
            .collect();
        Ok(Prepared::Ranges(to_read, total, cursor))
    }

    /// Replays the events named by id, one batch at a time, without a cursor.
    async fn replay_ids(&self, events: Vec<Envelope>) -> anyhow::Result<()> {
        let writer = self.writer(None);
        let whole = Range {
            from: None,
            to: None,
        };
        let (mut done, mut refused) = (0, 0);
        for (number, chunk) in events.chunks(self.args.batch_size as usize).enumerate() {
            let page = Page {
                number: number as u64,
                range: whole,
                events: chunk.to_vec(),
            };
            let written = writer.write(page).await;
            done += written.done;
            refused += written.refused;
            if let Some(error) = written.error {
                anyhow::bail!("{error}");
            }
        }
        println!("replay: done, {done} replayed, {refused} refused");
        Ok(())
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
