//! The lease's clock: every interval, deadline and server-side limit of the lease, derived
//! from the lease period P (`DATABASE_LEASE_SECONDS`), and why they fit together.
//!
//! | what | value | P = 10 s | P = 2 s |
//! | --- | --- | --- | --- |
//! | heartbeat | P/4 | 2.5 s | 500 ms |
//! | validity of a renewed row (and of the grant, by the worker's clock) | 3P/4 | 7.5 s | 1.5 s |
//! | `lock_timeout` in the heartbeat's transactions | P/20 | 500 ms | 100 ms |
//! | `statement_timeout` in them | P/10 | 1 s | 200 ms |
//! | `idle_in_transaction_session_timeout` in them | P/10 | 1 s | 200 ms |
//! | deadline of each step: connecting, the transactions | P/8 | 1.25 s | 250 ms |
//! | wait for the backends of an expired lease to end | min(P/40, 250 ms) | 250 ms | 50 ms |
//! | wait for a connection of the grant | until P/8 before the grant lapses | ≥ 3P/8 | ≥ 750 ms |
//!
//! - The server ends every wait itself. A heartbeat waits for the fleet's lock (or a row
//!   lock) at most P/20 and runs no statement longer than P/10: PostgreSQL cancels them, so a
//!   client-side deadline is only a backstop. When one fires, the connection is dropped, and
//!   what its backend was doing ends by these same limits (a lock wait within P/20, a
//!   statement within P/10, an idle transaction at once, as it reads the closed socket).
//! - A frozen holder lets go within P/5. A worker frozen inside its heartbeat transaction
//!   (SIGSTOP, a paused VM, a partition) holds the fleet's lock only until its backend has
//!   finished the statement in progress (P/10 at most) and stayed idle in the transaction
//!   for P/10: PostgreSQL then ends the session and the lock is free.
//! - A busy lock costs no renewal. A heartbeat that cannot take the fleet's lock within P/20
//!   renews its own row without it (see `beat.rs`): P/20 plus one short transaction, within
//!   the P/8 deadline of its transactions. So no worker lapses because another session holds
//!   the lock, frozen or not, worker or not.
//! - A heartbeat waits for a connection of its grant (ahead of every write, see `gate.rs`)
//!   until P/8 before its grant would lapse, leaving P/8 for the connection and the
//!   transactions. Renewed at the start of its last heartbeat, a grant is valid for 3P/4, so
//!   the next heartbeat (P/4 later) may wait 3P/8 for one of its worker's writes to end.

use std::time::Duration;

use tokio::time::Instant;

/// Longest wait for the backends of an expired lease to end (they take milliseconds).
const END_WAIT_MAX: Duration = Duration::from_millis(250);

/// The lease's intervals, deadlines and server-side limits; see the module documentation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    period: Duration,
}

/// The limits a heartbeat transaction sets on itself (`SET LOCAL`), in whole milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ServerLimits {
    /// `lock_timeout`.
    pub(crate) lock_ms: u64,
    /// `statement_timeout`.
    pub(crate) statement_ms: u64,
    /// `idle_in_transaction_session_timeout`.
    pub(crate) idle_ms: u64,
}

impl Timing {
    /// The timing of a lease of `period` (`DATABASE_LEASE_SECONDS`).
    pub(crate) fn new(period: Duration) -> Self {
        Self { period }
    }

    /// Time between heartbeats.
    pub(crate) fn heartbeat(&self) -> Duration {
        self.period / 4
    }

    /// How long a renewed row (and this worker's grant) stays valid: the lease period less
    /// one heartbeat, so that the others take a dead worker's share back within the period.
    pub(crate) fn validity(&self) -> Duration {
        self.period - self.heartbeat()
    }

    /// The limits every transaction of the lease sets on itself.
    pub(crate) fn server_limits(&self) -> ServerLimits {
        let ms = |duration: Duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        ServerLimits {
            lock_ms: ms(self.period / 20).max(1),
            statement_ms: ms(self.period / 10).max(1),
            idle_ms: ms(self.period / 10).max(1),
        }
    }

    /// Client-side deadline of one step of a heartbeat: connecting, or its transactions.
    pub(crate) fn step_deadline(&self) -> Duration {
        self.period / 8
    }

    /// Longest wait for the backends of an expired lease to end once told to.
    pub(crate) fn end_wait(&self) -> Duration {
        (self.period / 40).min(END_WAIT_MAX)
    }

    /// How long a heartbeat may wait for a connection of a grant valid until `valid_until`
    /// (`None`: never lapses), from `now`: until one step before it lapses.
    pub(crate) fn permit_wait(&self, valid_until: Option<Instant>, now: Instant) -> Duration {
        valid_until.map_or(self.heartbeat(), |until| {
            until
                .saturating_duration_since(now)
                .saturating_sub(self.step_deadline())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lease periods `DATABASE_LEASE_SECONDS` allows (2..=300), and some in between.
    fn periods() -> impl Iterator<Item = Timing> {
        [2, 3, 4, 7, 10, 30, 60, 300]
            .into_iter()
            .map(|seconds| Timing::new(Duration::from_secs(seconds)))
    }

    fn ms(duration: Duration) -> u64 {
        duration.as_millis() as u64
    }

    #[test]
    fn the_default_lease_has_the_documented_figures() {
        let timing = Timing::new(Duration::from_secs(10));
        assert_eq!(timing.heartbeat(), Duration::from_millis(2_500));
        assert_eq!(timing.validity(), Duration::from_millis(7_500));
        assert_eq!(
            timing.server_limits(),
            ServerLimits {
                lock_ms: 500,
                statement_ms: 1_000,
                idle_ms: 1_000
            }
        );
        assert_eq!(timing.step_deadline(), Duration::from_millis(1_250));
        assert_eq!(timing.end_wait(), Duration::from_millis(250));
    }

    #[test]
    fn the_server_ends_a_lock_wait_before_the_statement_and_both_before_the_client() {
        for timing in periods() {
            let limits = timing.server_limits();
            // A lock wait ends as a lock timeout (55P03: the lock is busy), not as a
            // cancelled statement.
            assert!(limits.lock_ms < limits.statement_ms, "{timing:?}");
            // A busy lock, then the renewal of the worker's own row (which may itself wait
            // on its row's lock), fit within the client's deadline of the transactions.
            assert!(
                2 * limits.lock_ms < ms(timing.step_deadline()),
                "{timing:?}"
            );
            assert!(
                limits.statement_ms < ms(timing.step_deadline()),
                "{timing:?}"
            );
        }
    }

    #[test]
    fn a_frozen_holder_lets_go_well_within_a_heartbeat() {
        for timing in periods() {
            let limits = timing.server_limits();
            // The statement in progress, then the idle transaction.
            let held = limits.statement_ms + limits.idle_ms;
            assert!(held < ms(timing.heartbeat()), "{timing:?}");
        }
    }

    #[test]
    fn a_heartbeat_waits_for_a_connection_until_one_step_before_the_grant_lapses() {
        for timing in periods() {
            let now = Instant::now();
            // At the first tick after a renewal, the grant has 3P/4 - P/4 left.
            let until = now + timing.validity() - timing.heartbeat();
            let wait = timing.permit_wait(Some(until), now);
            assert_eq!(wait + timing.step_deadline(), until - now, "{timing:?}");
            assert!(wait >= timing.heartbeat(), "{timing:?}");
            // A heartbeat that waited all that long still ends before the grant lapses.
            assert!(now + wait + timing.step_deadline() <= until);
            // Past that point there is nothing left to wait.
            let late = until - timing.step_deadline() / 2;
            assert_eq!(timing.permit_wait(Some(until), late), Duration::ZERO);
            assert_eq!(timing.permit_wait(Some(now), now), Duration::ZERO);
        }
    }

    #[test]
    fn the_wait_for_ended_backends_fits_in_the_transactions() {
        for timing in periods() {
            let limits = timing.server_limits();
            // The lock, then the end of the backends, within the deadline.
            assert!(
                limits.lock_ms + ms(timing.end_wait()) < ms(timing.step_deadline()),
                "{timing:?}"
            );
        }
    }
}
