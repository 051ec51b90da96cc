//! Writing batches to PostgreSQL: [`PgEventStore`], the transaction around a [`Handler`]
//! (the shipped one is in `db/events.rs`) behind the [`EventStore`] seam the writer
//! uses (unit tests put a fake behind it), on connections taken within the connection gate
//! (see `db/connections.rs`).
//!
//! Every call has a deadline (`DATABASE_TRANSACTION_TIMEOUT_MS`): a connection that takes
//! the bytes and never answers (a failover whose old primary vanished, a dropped NAT entry)
//! fails the call as *unreachable*, and the connection is thrown away, never given back.
//! PostgreSQL ends on its side what the worker abandoned (the session timeouts of
//! `db/mod.rs`). The circuit's probe is a real write, rolled back (see [`EventStore::probe`]).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::{Connection as _, PgConnection};
use webhook_shared::envelope::Envelope;

use crate::db::connections::Connections;
use crate::db::errors::Failure;
use crate::db::handler::{Handler, HandlerError, Stored};
use crate::db::partition_keeper::Keeper;
use crate::db::write_error::WriteError;
use crate::metrics;
use crate::sqs::payload::EventKey;

/// A committed batch write.
#[derive(Debug)]
pub(crate) struct Written {
    /// One [`Stored`] per event, in order.
    pub(crate) results: Vec<Stored>,
    /// Time spent waiting for a pool connection before BEGIN.
    pub(crate) acquire: Duration,
}

/// Writes one batch in one transaction. The seam between the writer and the database.
pub(crate) trait EventStore: Send + Sync + 'static {
    /// Writes `events`, returning one [`Stored`] per event, in order, once committed.
    fn write(
        &self,
        events: &[Envelope],
    ) -> impl Future<Output = Result<Written, WriteError>> + Send;

    /// One cheap round trip that succeeds only if the database can be written now (the
    /// circuit breaker's probe).
    fn probe(&self) -> impl Future<Output = Result<(), WriteError>> + Send;

    /// Whether each event has a row in `webhook_events`, in order (for pointers whose S3
    /// object is gone: deleted after an earlier commit, or never there).
    fn stored(
        &self,
        events: &[EventKey],
    ) -> impl Future<Output = Result<Vec<bool>, WriteError>> + Send;
}

/// The real store: a transaction around the handler, on a connection within the gate.
#[derive(Debug)]
pub(crate) struct PgEventStore<H> {
    connections: Connections,
    handler: H,
    /// Longest time one call (a transaction, a probe, a look-up) may take once it has its
    /// connection.
    deadline: Duration,
    /// Makes a missing partition on demand (see [`Self::make_partitions`]).
    partitions: Option<Keeper>,
}

impl<H: Handler> PgEventStore<H> {
    /// Writes through `handler` on `connections`, each call within `deadline`.
    pub(crate) fn new(connections: Connections, handler: H, deadline: Duration) -> Self {
        Self {
            connections,
            handler,
            deadline,
            partitions: None,
        }
    }

    /// Has missing partitions made on demand by `keeper`.
    pub(crate) fn with_partitions(mut self, keeper: Keeper) -> Self {
        self.partitions = Some(keeper);
        self
    }

    /// After a write met a missing partition: has the partitions of `times` made, or says
    /// why not. An event later than the range kept ready gets none (see
    /// [`WriteError::BeyondPartitions`]); one too old gets its interval back, and the next
    /// `worker maintain` applies the retention to it again.
    async fn make_partitions(
        &self,
        times: &[DateTime<Utc>],
        error: WriteError,
    ) -> Result<(), WriteError> {
        metrics::record_partition_missing();
        let Some(keeper) = &self.partitions else {
            return Err(error);
        };
        let ready_until = keeper.latest_accepted(Utc::now());
        if let Some(&received_at) = times.iter().find(|&&at| at >= ready_until) {
            return Err(WriteError::BeyondPartitions {
                received_at,
                ready_until,
            });
        }
        let made = self
            .on_connection(async |conn| {
                keeper
                    .cover(conn, times)
                    .await
                    .map_err(|error| HandlerError::from(error).into())
            })
            .await;
        if let Err(cause) = made {
            tracing::warn!(%cause, "a write met a missing partition of webhook_events and it could not be made; pausing until it exists (run `worker maintain` as the table's owner)");
            return Err(error);
        }
        Ok(())
    }

    /// Runs `call` on a connection within the deadline, then gives the connection back (or
    /// throws it away, after an unreachable failure or a deadline).
    async fn on_connection<T>(
        &self,
        call: impl AsyncFnOnce(&mut PgConnection) -> Result<T, WriteError>,
    ) -> Result<(T, Duration), WriteError> {
        self.connections.within(self.deadline, call).await
    }

    /// The probe's transaction: whether the database is writable, then the handler on one
    /// made-up event, rolled back.
    async fn dry_run(&self, conn: &mut PgConnection) -> Result<(), WriteError> {
        let mut tx = conn.begin().await.map_err(HandlerError::from)?;
        let writable: bool = sqlx::query_scalar(
            "SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off'",
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(HandlerError::from)?;
        if !writable {
            return Err(WriteError::ReadOnly);
        }
        let event = probe_event();
        let handled = self
            .handler
            .handle(&mut tx, std::slice::from_ref(&event))
            .await;
        tx.rollback().await.map_err(HandlerError::from)?;
        match handled.map_err(WriteError::from) {
            // The handler refusing a made-up event is its right: the database took the write.
            Ok(_) => Ok(()),
            Err(error) if error.failure() == Failure::Permanent => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// The transaction: BEGIN, the handler, COMMIT.
    async fn transaction(
        &self,
        conn: &mut PgConnection,
        events: &[Envelope],
    ) -> Result<Vec<Stored>, WriteError> {
        let mut tx = conn.begin().await.map_err(HandlerError::from)?;
        let results = self.handler.handle(&mut tx, events).await?;
        if results.len() != events.len() {
            tracing::error!(
                results = results.len(),
                events = events.len(),
                "handler bug: wrong number of results; the transaction is rolled back"
            );
            return Err(WriteError::WrongResultCount {
                results: results.len(),
                events: events.len(),
            });
        }
        tx.commit().await.map_err(HandlerError::from)?;
        Ok(results)
    }
}

impl<H: Handler> EventStore for PgEventStore<H> {
    async fn write(&self, events: &[Envelope]) -> Result<Written, WriteError> {
        let started = Instant::now();
        let write = async || {
            self.on_connection(async |conn| self.transaction(conn, events).await)
                .await
        };
        let (results, acquire) = match write().await {
            Err(error) if error.is_missing_partition() => {
                let times: Vec<DateTime<Utc>> = events.iter().map(|e| e.received_at).collect();
                self.make_partitions(&times, error).await?;
                write().await?
            }
            written => written?,
        };
        metrics::record_write(events.len(), started.elapsed());
        Ok(Written { results, acquire })
    }

    async fn probe(&self) -> Result<(), WriteError> {
        let probe = async || {
            self.on_connection(async |conn| self.dry_run(conn).await)
                .await
                .map(|_| ())
        };
        match probe().await {
            Err(error) if error.is_missing_partition() => {
                self.make_partitions(&[Utc::now()], error).await?;
                probe().await
            }
            probed => probed,
        }
    }

    async fn stored(&self, events: &[EventKey]) -> Result<Vec<bool>, WriteError> {
        let (found, _) = self
            .on_connection(async |conn| {
                stored_events(conn, events)
                    .await
                    .map_err(|error| HandlerError::from(error).into())
            })
            .await?;
        Ok(events.iter().map(|event| found.contains(event)).collect())
    }
}

/// The made-up event of the probe's rolled-back write: a fresh id, so it never meets a row.
fn probe_event() -> Envelope {
    Envelope {
        id: format!("probe-{}", uuid::Uuid::new_v4()),
        source: "_probe".to_owned(),
        received_at: Utc::now(),
        headers: std::collections::BTreeMap::new(),
        content_type: Some("application/json".to_owned()),
        body: bytes::Bytes::from_static(b"{}"),
    }
}

/// Which of `events` have a row in `webhook_events`.
async fn stored_events(
    conn: &mut PgConnection,
    events: &[EventKey],
) -> Result<HashSet<EventKey>, sqlx::Error> {
    let sources: Vec<&str> = events.iter().map(|e| e.source.as_str()).collect();
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT e.source, e.id
         FROM webhook_events e
         JOIN UNNEST($1::text[], $2::text[]) AS k(source, id) ON e.source = k.source AND e.id = k.id",
    )
    .bind(sources)
    .bind(ids)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(source, id)| EventKey { source, id })
        .collect())
}
