//! One page of `worker replay`, replayed by one writer: each transaction on a connection of
//! its own (under a permit of the connection gate), within the writers' deadline, runs the
//! handler's replay of its events and records their key interval and counts under the cursor
//! (see `cursor.rs`), so the work and the record commit together. A page the handler refuses
//! is halved until the event at fault stands alone; that event is printed, and recorded alone
//! as refused (in a transaction of its own, the handler's rolled back). A failure that may
//! pass ends the page: what it had not committed is handed back for a retry.

#![allow(
    clippy::print_stdout,
    reason = "refused events are printed among the progress lines"
)]

use std::ops::Range as Span;
use std::sync::Arc;
use std::time::Duration;

use sqlx::{Connection as _, PgConnection};
use tokio::time::Instant;
use webhook_shared::envelope::Envelope;

use crate::db::connections::Connections;
use crate::db::errors::Failure;
use crate::db::handler::{Handler, HandlerError, Stored};
use crate::db::write_error::WriteError;
use crate::pipeline::write_split::Attempt;
use crate::replay::cursor::{self, Interval};
use crate::replay::select::Range;

/// Events read together, in key order, and replayed by one writer.
#[derive(Debug)]
pub(crate) struct Page {
    /// Its number in reading order (see `frontier.rs`).
    pub(crate) number: u64,
    /// The range its events are in.
    pub(crate) range: Range,
    /// Its events not yet committed.
    pub(crate) events: Vec<Envelope>,
}

/// What a writer did with a page.
#[derive(Debug)]
pub(crate) struct Written {
    /// The page, with the events it did not commit (none unless `error`).
    pub(crate) page: Page,
    /// Events committed (taken by the handler).
    pub(crate) done: i64,
    /// Events refused and passed.
    pub(crate) refused: i64,
    /// How its first transaction went: what the adaptive limit learns from.
    pub(crate) first: Attempt,
    /// The failure that may pass which ended it early.
    pub(crate) error: Option<WriteError>,
}

/// Replays pages; shared by the writers in progress.
#[derive(Debug)]
pub(crate) struct Writer<H> {
    /// The handler.
    pub(crate) handler: Arc<H>,
    /// Connections, within the grant.
    pub(crate) connections: Connections,
    /// Longest one transaction may take once it has its connection.
    pub(crate) deadline: Duration,
    /// The cursor the intervals are recorded under; `None` (`--id`): nothing recorded.
    pub(crate) cursor: Option<String>,
}

/// One committed transaction.
struct Committed {
    /// The events the handler refused: index in the part, reason.
    refused: Vec<(usize, String)>,
    /// Time waiting for the connection.
    acquire: Duration,
}

impl<H: Handler> Writer<H> {
    /// Replays `page`; see the module documentation.
    pub(crate) async fn write(&self, mut page: Page) -> Written {
        let (mut done, mut refused) = (0, 0);
        let (mut first, mut error) = (None, None);
        // Parts are taken in order (the first half first), so what is committed is always a
        // prefix of the page.
        let mut parts: Vec<Span<usize>> = Vec::new();
        parts.push(0..page.events.len());
        let mut committed = 0;
        while let Some(part) = parts.pop() {
            let events = &page.events[part.clone()];
            let started = Instant::now();
            let result = self.transaction(page.range, events, false).await;
            first.get_or_insert(Attempt::of(
                events.len(),
                started,
                result.as_ref().map(|ok| ok.acquire),
            ));
            match result {
                Ok(ok) => {
                    for (index, reason) in &ok.refused {
                        let event = &events[*index];
                        println!("replay: refused {}/{}: {reason}", event.source, event.id);
                    }
                    done += (events.len() - ok.refused.len()) as i64;
                    refused += ok.refused.len() as i64;
                    committed = part.end;
                }
                Err(fault) if fault.failure() == Failure::Permanent && events.len() == 1 => {
                    if self.cursor.is_some()
                        && let Err(failed) = self.transaction(page.range, events, true).await
                    {
                        error = Some(failed);
                        break;
                    }
                    let event = &events[0];
                    println!("replay: refused {}/{}: {fault}", event.source, event.id);
                    refused += 1;
                    committed = part.end;
                }
                Err(fault) if fault.failure() == Failure::Permanent => {
                    let half = part.start + part.len() / 2;
                    parts.push(half..part.end);
                    parts.push(part.start..half);
                }
                Err(failed) => {
                    error = Some(failed);
                    break;
                }
            }
        }
        page.events.drain(..committed);
        Written {
            page,
            done,
            refused,
            first: first.unwrap_or(Attempt::Unwritten),
            error,
        }
    }

    /// One transaction on a connection of its own, within the deadline: the handler's replay
    /// of `events` (none when `alone`: then the one event, refused earlier, is only recorded
    /// as refused) and their interval recorded.
    async fn transaction(
        &self,
        range: Range,
        events: &[Envelope],
        alone: bool,
    ) -> Result<Committed, WriteError> {
        self.connections
            .within(self.deadline, async |conn| {
                self.replay(conn, range, events, alone).await
            })
            .await
            .map(|(refused, acquire)| Committed { refused, acquire })
    }

    /// BEGIN, the handler, the interval recorded, COMMIT; returns the events refused.
    async fn replay(
        &self,
        conn: &mut PgConnection,
        range: Range,
        events: &[Envelope],
        alone: bool,
    ) -> Result<Vec<(usize, String)>, WriteError> {
        let mut tx = conn.begin().await.map_err(HandlerError::from)?;
        let refused = if alone {
            Vec::new()
        } else {
            let results = self.handler.replay(&mut tx, events).await?;
            if results.len() != events.len() {
                return Err(WriteError::WrongResultCount {
                    results: results.len(),
                    events: events.len(),
                });
            }
            refusals(results)
        };
        if let (Some(name), Some(first), Some(last)) = (&self.cursor, events.first(), events.last())
        {
            let refused_count = if alone { 1 } else { refused.len() as i64 };
            let interval = Interval {
                range,
                first: (&first.source, &first.id, first.received_at),
                last: (&last.source, &last.id, last.received_at),
                done: events.len() as i64 - refused_count,
                refused: refused_count,
            };
            cursor::record(&mut tx, name, &interval)
                .await
                .map_err(HandlerError::from)?;
        }
        tx.commit().await.map_err(HandlerError::from)?;
        Ok(refused)
    }
}

/// The refused results: index, reason.
fn refusals(results: Vec<Stored>) -> Vec<(usize, String)> {
    results
        .into_iter()
        .enumerate()
        .filter_map(|(index, stored)| match stored {
            Stored::Refused(reason) => Some((index, reason.into_owned())),
            _ => None,
        })
        .collect()
}
