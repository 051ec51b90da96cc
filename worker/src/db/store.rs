//! Writing batches to PostgreSQL: [`insert_events`] (one UNNEST insert into `webhook_events`,
//! idempotent on `(source, id)`, rows in key order so concurrent writes never deadlock), and
//! [`PgStore`], the transaction around a [`Handler`] behind the [`Store`] seam the writer
//! uses (unit tests put a fake behind it), on connections taken within the connection gate
//! (see `db/connections.rs`).
//!
//! Every call has a deadline (`DATABASE_TRANSACTION_TIMEOUT_MS`): a connection that takes
//! the bytes and never answers (a failover whose old primary vanished, a dropped NAT entry)
//! fails the call as *unreachable*, and the connection is thrown away, never given back.
//! PostgreSQL ends on its side what the worker abandoned (the session timeouts of
//! `db/mod.rs`). The circuit's probe is a real write, rolled back (see [`Store::probe`]).

use std::borrow::Cow;
use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{Connection as _, PgConnection};
use webhook_shared::envelope::Envelope;

use crate::db::connections::Connections;
use crate::db::errors::{Failure, classify, refusal_key};
use crate::db::payload_column::json_text;
use crate::fleet::Lapsed;
use crate::handler::{Handler, HandlerError, Stored};
use crate::metrics;
use crate::sqs::payload::EventKey;

/// Inserts `events` in one statement; rows that already exist are left as they are.
/// Returns, per event in the order given, whether it was new (`false`: a redelivery or a
/// provider retry, or a repeat within the same batch).
///
/// Rows are inserted in `(source, id)` order whatever the order of `events`: two
/// transactions that hold some of the same keys then take their row locks in the same order
/// and cannot deadlock (40P01).
pub async fn insert_events(
    conn: &mut PgConnection,
    events: &[Envelope],
) -> Result<Vec<bool>, sqlx::Error> {
    let mut sorted: Vec<&Envelope> = events.iter().collect();
    sorted.sort_by(|a, b| (&a.source, &a.id).cmp(&(&b.source, &b.id)));
    let sources: Vec<&str> = sorted.iter().map(|e| e.source.as_str()).collect();
    let ids: Vec<&str> = sorted.iter().map(|e| e.id.as_str()).collect();
    let received_at: Vec<DateTime<Utc>> = sorted.iter().map(|e| e.received_at).collect();
    let headers: Vec<Json<_>> = sorted.iter().map(|e| Json(&e.headers)).collect();
    let content_types: Vec<Option<&str>> =
        sorted.iter().map(|e| e.content_type.as_deref()).collect();
    let bodies: Vec<&[u8]> = sorted.iter().map(|e| e.body.as_ref()).collect();
    // The JSON text, parsed by PostgreSQL: a parsed copy here would cost several times the
    // body (see `db/payload_column.rs`).
    let payloads: Vec<Option<&str>> = sorted.iter().map(|e| json_text(e)).collect();
    // WITH ORDINALITY + ORDER BY: the rows reach the insert in the sorted order.
    let inserted: Vec<(String, String)> = sqlx::query_as(
        "INSERT INTO webhook_events (source, id, received_at, headers, content_type, body, payload)
         SELECT source, id, received_at, headers, content_type, body, payload::jsonb
         FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::jsonb[], $5::text[], $6::bytea[], $7::text[])
              WITH ORDINALITY AS t(source, id, received_at, headers, content_type, body, payload, n)
         ORDER BY n
         ON CONFLICT (source, id) DO NOTHING
         RETURNING source, id",
    )
    .bind(sources)
    .bind(ids)
    .bind(received_at)
    .bind(headers)
    .bind(content_types)
    .bind(bodies)
    .bind(payloads)
    .fetch_all(conn)
    .await?;
    let mut new: HashSet<(String, String)> = inserted.into_iter().collect();
    Ok(events
        .iter()
        // `remove`: of two copies of one event in a batch, only the first counts as new.
        .map(|e| new.remove(&(e.source.clone(), e.id.clone())))
        .collect())
}

/// Why a batch write failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    /// The handler's (or the commit's) error.
    #[error(transparent)]
    Handler(#[from] HandlerError),
    /// The handler broke its contract: a bug, reported as such.
    #[error("handler bug: it returned {results} results for {events} events")]
    WrongResultCount {
        /// Results returned.
        results: usize,
        /// Events given.
        events: usize,
    },
    /// The database answered but cannot write (a replica, or a primary in recovery).
    #[error("the database is read-only")]
    ReadOnly,
    /// This worker's share of the connection budget lapsed: to this worker, the database is
    /// unreachable until the lease is renewed.
    #[error(transparent)]
    Lapsed(#[from] Lapsed),
    /// No connection could be had: connecting or logging in failed, whatever the SQLSTATE (a
    /// revoked login says nothing about the events).
    #[error("connecting to the database failed: {0}")]
    Connect(#[source] sqlx::Error),
    /// The call did not end within its deadline (a silent connection, or a database too slow
    /// to answer at all).
    #[error("the database did not answer within {0:?}")]
    Deadline(Duration),
}

impl WriteError {
    /// Whether the same write may succeed later (anything but a refusal of the data).
    pub(crate) fn is_transient(&self) -> bool {
        self.failure() != Failure::Permanent
    }

    /// What the error says about the database: a transient error carrying a `sqlx::Error`
    /// is sorted further (see `db/errors.rs`); every failure to get a connection, and every
    /// deadline, means unreachable.
    pub(crate) fn failure(&self) -> Failure {
        match self {
            Self::Handler(HandlerError::Transient(source)) => source
                .downcast_ref::<sqlx::Error>()
                .map_or(Failure::Transient, classify),
            Self::Handler(HandlerError::Permanent(_)) | Self::WrongResultCount { .. } => {
                Failure::Permanent
            }
            Self::ReadOnly | Self::Lapsed(_) | Self::Connect(_) | Self::Deadline(_) => {
                Failure::Unreachable
            }
        }
    }

    /// The key under which the refusal fuse compares refusals of this error (see
    /// `pipeline/refusal_fuse.rs`): the SQLSTATE and constraint of a database error, else its text.
    pub(crate) fn refusal_key(&self) -> Cow<'static, str> {
        let sqlx_error = match self {
            Self::Handler(HandlerError::Permanent(source) | HandlerError::Transient(source)) => {
                source.downcast_ref::<sqlx::Error>()
            }
            Self::Connect(error) => Some(error),
            _ => None,
        };
        sqlx_error
            .and_then(refusal_key)
            .map_or_else(|| Cow::Owned(self.to_string()), Cow::Owned)
    }
}

/// A committed batch write.
#[derive(Debug)]
pub(crate) struct Written {
    /// One [`Stored`] per event, in order.
    pub(crate) results: Vec<Stored>,
    /// Time spent waiting for a pool connection before BEGIN.
    pub(crate) acquire: Duration,
}

/// Writes one batch in one transaction. The seam between the writer and the database.
pub(crate) trait Store: Send + Sync + 'static {
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
pub(crate) struct PgStore<H> {
    connections: Connections,
    handler: H,
    /// Longest time one call (a transaction, a probe, a look-up) may take once it has its
    /// connection.
    deadline: Duration,
}

impl<H: Handler> PgStore<H> {
    /// Writes through `handler` on `connections`, each call within `deadline`.
    pub(crate) fn new(connections: Connections, handler: H, deadline: Duration) -> Self {
        Self {
            connections,
            handler,
            deadline,
        }
    }

    /// Runs `call` on a connection within the deadline, then gives the connection back (or
    /// throws it away, after an unreachable failure or a deadline).
    async fn on_connection<T>(
        &self,
        call: impl AsyncFnOnce(&mut PgConnection) -> Result<T, WriteError>,
    ) -> Result<(T, Duration), WriteError> {
        let started = Instant::now();
        let mut conn = self.connections.acquire().await?;
        let acquire = started.elapsed();
        let result = tokio::time::timeout(self.deadline, call(&mut conn))
            .await
            .unwrap_or(Err(WriteError::Deadline(self.deadline)));
        conn.release(result.as_ref().map(|_| ()).map_err(WriteError::failure))
            .await;
        result.map(|value| (value, acquire))
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

impl<H: Handler> Store for PgStore<H> {
    async fn write(&self, events: &[Envelope]) -> Result<Written, WriteError> {
        let started = Instant::now();
        let (results, acquire) = self
            .on_connection(async |conn| self.transaction(conn, events).await)
            .await?;
        metrics::record_write(events.len(), started.elapsed());
        Ok(Written { results, acquire })
    }

    async fn probe(&self) -> Result<(), WriteError> {
        self.on_connection(async |conn| self.dry_run(conn).await)
            .await
            .map(|_| ())
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
