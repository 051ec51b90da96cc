//! Sorting database errors by what they blame: the database (or the way to it), or the data
//! of one event. Only an error tied to one event's data (SQLSTATE classes 22 data exception,
//! 23 integrity constraint, 54 program limit, P0 a PL/pgSQL `RAISE`) makes the worker split
//! the batch and dead-letter the event at fault. Everything else is the database's
//! condition, and the worker pauses or backs off, never dead-letters:
//!
//! - *unreachable*: cannot be reached, logged into or written (connection refused, reset or
//!   silent past its deadline, pool timeout, authentication or authorization failed at
//!   connect, shutting down, starting up, read-only after a failover): the circuit opens;
//! - *systemic*: reachable, but every write fails alike for a reason outside the data
//!   (privileges, schema, a lock held past `lock_timeout`): the circuit opens too, and its
//!   probe, a rolled-back write, tells when the condition has passed;
//! - *overload*: reachable but saturated (statement timeout, serialization failure,
//!   deadlock): the adaptive limit comes down;
//! - *transient*: anything else that may pass by itself: retried after a back-off.
//!
//! A row that no partition of a partitioned table takes (23514 without a constraint) is the
//! table's condition, not the event's: *systemic*, so it pauses and is never dead-lettered
//! (the store first has the missing partition made, see `partitions/keeper.rs`).
//!
//! Where an error comes from matters as much as its SQLSTATE: every error raised while
//! taking a connection (see [`crate::db::write_error::WriteError::Connect`]) is *unreachable*, whatever
//! its code (28P01 for a rotated password says nothing about the event being written).

/// What a failed database call says about the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Cannot be reached, logged into or written: the circuit opens.
    Unreachable,
    /// Reachable, but refuses every write for a reason outside the data (privileges, schema,
    /// a lock held on the table): the circuit opens.
    Systemic,
    /// Reachable but saturated (statement timeout, serialization failure, deadlock).
    Overload,
    /// Some other failure that may pass by itself.
    Transient,
    /// This event's data can never be written.
    Permanent,
}

impl Failure {
    /// Whether the failure pauses the worker (opens the circuit).
    pub(crate) fn pauses(self) -> bool {
        matches!(self, Self::Unreachable | Self::Systemic)
    }
}

/// Sorts `error`, raised by a statement on an open connection (see [`Failure`]).
pub(crate) fn classify(error: &sqlx::Error) -> Failure {
    match error {
        _ if is_missing_partition(error) => Failure::Systemic,
        sqlx::Error::Database(database) => database
            .code()
            .map_or(Failure::Systemic, |code| classify_sqlstate(&code)),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => Failure::Unreachable,
        sqlx::Error::PoolClosed => Failure::Transient,
        // A value that cannot be encoded is this event's data.
        sqlx::Error::Encode(_) => Failure::Permanent,
        // Rows or types that do not match what the code expects, a bad configuration: the
        // schema or the build, the same for every event.
        _ => Failure::Systemic,
    }
}

use crate::partitions::LEGACY_RANGE_CHECK;

/// Whether `error` is PostgreSQL's "no partition of relation … found for row": a check
/// violation (23514) that names no constraint, or that names the migration's range check
/// (a row past the cutover before the swap).
pub(crate) fn is_missing_partition(error: &sqlx::Error) -> bool {
    error.as_database_error().is_some_and(|database| {
        database.code().is_some_and(|code| code == "23514")
            && database
                .constraint()
                .is_none_or(|constraint| constraint == LEGACY_RANGE_CHECK)
    })
}

/// Sorts a SQLSTATE.
fn classify_sqlstate(code: &str) -> Failure {
    match code {
        code if is_data_sqlstate(code) => Failure::Permanent,
        code if is_unreachable_sqlstate(code) => Failure::Unreachable,
        "53300" | "57014" | "40001" | "40P01" => Failure::Overload,
        code if is_transient_sqlstate(code) => Failure::Transient,
        _ => Failure::Systemic,
    }
}

/// Whether an error may pass by itself (everything but a refusal of the data).
pub(crate) fn is_transient(error: &sqlx::Error) -> bool {
    classify(error) != Failure::Permanent
}

/// The key under which refusals are compared by the fuse (see `pipeline/refusal_fuse.rs`): the SQLSTATE and,
/// where there is one, the constraint; `None` when the error carries no SQLSTATE.
pub(crate) fn refusal_key(error: &sqlx::Error) -> Option<String> {
    let database = error.as_database_error()?;
    let code = database.code()?;
    Some(match database.constraint() {
        Some(constraint) => format!("{code} {constraint}"),
        None => code.into_owned(),
    })
}

/// Classes 22 (data exception), 23 (integrity constraint violation), 54 (program limit
/// exceeded: a value too large for an index, say) and P0 (PL/pgSQL `RAISE`, as a validating
/// trigger raises): errors tied to the data being written.
fn is_data_sqlstate(code: &str) -> bool {
    ["22", "23", "54", "P0"]
        .iter()
        .any(|class| code.starts_with(class))
}

/// Class 08 (connection exception), class 28 (invalid authorization: a revoked login or a
/// rotated password), 3D000 (no such database), 57P01 admin shutdown, 57P02 crash shutdown,
/// 57P03 cannot connect now (starting up, or in recovery), 25006 read-only transaction (a
/// writer that became a replica in a failover), 25P03 the session was ended for idling in a
/// transaction.
fn is_unreachable_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("28")
        || matches!(
            code,
            "3D000" | "57P01" | "57P02" | "57P03" | "25006" | "25P03"
        )
}

/// SQLSTATE classes 40 (transaction rollback), 53 (insufficient resources), 57 (operator
/// intervention), 58 (system error), XX (internal error).
fn is_transient_sqlstate(code: &str) -> bool {
    ["40", "53", "57", "58", "XX"]
        .iter()
        .any(|class| code.starts_with(class))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::pg_error;

    #[test]
    fn only_the_data_classes_blame_the_event() {
        for data in [
            "22P02", "22021", "22P05", "23502", "23514", "23503", "54000", "P0001",
        ] {
            assert_eq!(classify_sqlstate(data), Failure::Permanent, "{data}");
        }
        for unreachable in [
            "08006", "08001", "28P01", "28000", "3D000", "57P01", "57P03", "25006", "25P03",
        ] {
            assert_eq!(
                classify_sqlstate(unreachable),
                Failure::Unreachable,
                "{unreachable}"
            );
        }
        for overload in ["53300", "57014", "40001", "40P01"] {
            assert_eq!(classify_sqlstate(overload), Failure::Overload, "{overload}");
        }
        for transient in ["53200", "58030", "XX000", "40003"] {
            assert_eq!(
                classify_sqlstate(transient),
                Failure::Transient,
                "{transient}"
            );
        }
        // Privileges, schema, a lock held past lock_timeout, an aborted transaction: the same
        // for every event, so never a reason to dead-letter one.
        for systemic in ["42501", "42P01", "42703", "55P03", "25P02", "0A000"] {
            assert_eq!(classify_sqlstate(systemic), Failure::Systemic, "{systemic}");
            assert!(Failure::Systemic.pauses());
        }
    }

    #[test]
    fn a_missing_partition_pauses_but_a_check_refuses_the_event() {
        let no_partition = pg_error("23514", None);
        assert!(is_missing_partition(&no_partition));
        assert_eq!(classify(&no_partition), Failure::Systemic);
        assert!(is_missing_partition(&pg_error(
            "23514",
            Some(LEGACY_RANGE_CHECK)
        )));
        let check = pg_error("23514", Some("refuse_one_source"));
        assert!(!is_missing_partition(&check));
        assert_eq!(classify(&check), Failure::Permanent);
        assert_eq!(classify(&pg_error("23505", None)), Failure::Permanent);
    }

    #[test]
    fn connection_level_errors_mean_unreachable() {
        assert_eq!(classify(&sqlx::Error::PoolTimedOut), Failure::Unreachable);
        assert_eq!(
            classify(&sqlx::Error::Io(std::io::Error::from(
                std::io::ErrorKind::ConnectionRefused
            ))),
            Failure::Unreachable
        );
        assert_eq!(classify(&sqlx::Error::PoolClosed), Failure::Transient);
        assert_eq!(classify(&sqlx::Error::RowNotFound), Failure::Systemic);
        assert!(is_transient(&sqlx::Error::PoolTimedOut));
        assert!(is_transient(&sqlx::Error::RowNotFound));
        assert!(!is_transient(&sqlx::Error::Encode("bad value".into())));
        assert_eq!(refusal_key(&sqlx::Error::PoolTimedOut), None);
    }
}
