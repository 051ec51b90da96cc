//! Sorting database errors. Transient ones (the database or the path to it is unwell) are
//! retried later for the whole batch; the others (this data cannot be written) make the
//! worker split the batch so one bad event does not hold back the rest. Among the transient
//! ones, two kinds steer the throttle: *unreachable* (the database cannot be reached or
//! cannot write at all: the circuit breaker opens) and *overload* (the database is reachable
//! but saturated: the adaptive limit comes down).

/// What a failed database call says about the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Cannot be reached, or cannot write (connection refused or reset, pool timeout,
    /// shutting down, starting up, read-only after a failover).
    Unreachable,
    /// Reachable but saturated (too many connections, statement timeout, serialization
    /// failure, deadlock).
    Overload,
    /// Some other failure that may pass by itself.
    Transient,
    /// This data can never be written.
    Permanent,
}

/// Sorts `error` (see [`Failure`]).
pub(crate) fn classify(error: &sqlx::Error) -> Failure {
    match error {
        sqlx::Error::Database(database) => database
            .code()
            .map_or(Failure::Permanent, |code| classify_sqlstate(&code)),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => Failure::Unreachable,
        sqlx::Error::PoolClosed => Failure::Transient,
        _ => Failure::Permanent,
    }
}

/// Sorts a SQLSTATE.
fn classify_sqlstate(code: &str) -> Failure {
    match code {
        code if is_unreachable_sqlstate(code) => Failure::Unreachable,
        "53300" | "57014" | "40001" | "40P01" => Failure::Overload,
        code if is_transient_sqlstate(code) => Failure::Transient,
        _ => Failure::Permanent,
    }
}

/// Whether an error may pass by itself: lost connections, pool exhaustion, timeouts,
/// serialization failures and deadlocks, resource shortages, operator intervention.
pub(crate) fn is_transient(error: &sqlx::Error) -> bool {
    classify(error) != Failure::Permanent
}

/// Class 08 (connection exception), 57P01 admin shutdown, 57P02 crash shutdown, 57P03
/// cannot connect now (starting up, or in recovery), 25006 read-only transaction (a writer
/// that became a replica in a failover).
fn is_unreachable_sqlstate(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "25006")
}

/// SQLSTATE classes 08 (connection), 40 (transaction rollback), 53 (insufficient
/// resources), 57 (operator intervention), 58 (system error), XX (internal error).
fn is_transient_sqlstate(code: &str) -> bool {
    ["08", "40", "53", "57", "58", "XX"]
        .iter()
        .any(|class| code.starts_with(class))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_are_sorted_by_class() {
        for transient in [
            "08006", "40001", "40P01", "53300", "57P01", "57014", "58030", "XX000",
        ] {
            assert!(is_transient_sqlstate(transient), "{transient}");
        }
        for permanent in ["22P02", "22021", "23502", "42P01", "42703"] {
            assert!(!is_transient_sqlstate(permanent), "{permanent}");
        }
        for unreachable in ["08006", "08001", "57P01", "57P03", "25006"] {
            assert!(is_unreachable_sqlstate(unreachable), "{unreachable}");
        }
        for overload in ["53300", "57014", "40001", "40P01"] {
            assert_eq!(classify_sqlstate(overload), Failure::Overload, "{overload}");
        }
        assert_eq!(classify_sqlstate("57P01"), Failure::Unreachable);
        assert_eq!(classify_sqlstate("25006"), Failure::Unreachable);
        assert_eq!(classify_sqlstate("53200"), Failure::Transient);
        assert_eq!(classify_sqlstate("25P02"), Failure::Permanent);
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
        assert_eq!(classify(&sqlx::Error::RowNotFound), Failure::Permanent);
        assert!(is_transient(&sqlx::Error::PoolTimedOut));
        assert!(!is_transient(&sqlx::Error::RowNotFound));
    }
}
