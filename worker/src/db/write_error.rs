//! Why a batch write failed ([`WriteError`]), and what each failure says about the database:
//! the data refused (permanent), the database unreachable, or another transient condition
//! (see `db/errors.rs` for the sorting of SQLSTATEs).

use std::borrow::Cow;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::db::errors::{Failure, classify, is_missing_partition, refusal_key};
use crate::db::handler::HandlerError;
use crate::fleet::Lapsed;

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
    /// An event received later than the partitions kept ready reach: no partition is made
    /// for it on demand (a clock fault upstream), and it is refused.
    #[error(
        "received_at {received_at} is beyond the partitions of webhook_events (kept ready until {ready_until}); is a clock upstream wrong?"
    )]
    BeyondPartitions {
        /// The event's `received_at`.
        received_at: DateTime<Utc>,
        /// The end of the range kept ready.
        ready_until: DateTime<Utc>,
    },
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
            Self::Handler(HandlerError::Permanent(_))
            | Self::WrongResultCount { .. }
            | Self::BeyondPartitions { .. } => Failure::Permanent,
            Self::ReadOnly | Self::Lapsed(_) | Self::Connect(_) | Self::Deadline(_) => {
                Failure::Unreachable
            }
        }
    }

    /// Whether the write met a time that no partition of `webhook_events` takes.
    pub(crate) fn is_missing_partition(&self) -> bool {
        match self {
            Self::Handler(HandlerError::Transient(source)) => source
                .downcast_ref::<sqlx::Error>()
                .is_some_and(is_missing_partition),
            _ => false,
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
            // One reason, whatever the times: many alike trip the fuse (a clock fault).
            Self::BeyondPartitions { .. } => return Cow::Borrowed("beyond_partitions"),
            _ => None,
        };
        sqlx_error
            .and_then(refusal_key)
            .map_or_else(|| Cow::Owned(self.to_string()), Cow::Owned)
    }
}
