//! Sorting database errors: transient ones (the database or the path to it is unwell) are
//! retried later for the whole batch; the others (this data cannot be written) make the
//! worker split the batch so one bad event does not hold back the rest.

/// Whether an error may pass by itself: lost connections, pool exhaustion, timeouts,
/// serialization failures and deadlocks, resource shortages, operator intervention.
pub(crate) fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(database) => database
            .code()
            .is_some_and(|code| is_transient_sqlstate(&code)),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
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
    }

    #[test]
    fn connection_level_errors_are_transient() {
        assert!(is_transient(&sqlx::Error::PoolTimedOut));
        assert!(is_transient(&sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset
        ))));
        assert!(!is_transient(&sqlx::Error::RowNotFound));
    }
}
