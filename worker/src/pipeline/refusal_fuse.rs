//! The refusal fuse: when many distinct events are refused for the same reason within a short
//! window while next to nothing is stored, the refusals are the database's condition (a
//! constraint or trigger deployed by mistake, a handler bug), not the events' data. The fuse
//! then trips: the circuit opens for a hold time (doubling at each trip that follows without
//! a stored event in between), those refusals are released instead of dead-lettered, and the
//! trip is logged once and counted (`webhook_worker_refusal_fuse_trips_total`, an alert).
//!
//! A provider's burst of bad events in healthy traffic does not trip it (the stored events
//! keep the refused share under [`TRIP_SHARE`]); a batch whose events are all refused alike
//! trips it before any of them is dead-lettered, since a batch's refusals are all counted
//! before any is sent (see `pipeline/write_batch.rs`). Events that are poison alone keep coming back after
//! each hold and reach the DLQ through SQS's own redrive once their receive count is used
//! up.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// How far back refusals and stores are compared.
pub(crate) const WINDOW: Duration = Duration::from_secs(10);
/// The first hold; each trip that follows without a stored event doubles it.
pub(crate) const FIRST_HOLD: Duration = Duration::from_secs(30);
/// The longest hold.
pub(crate) const MAX_HOLD: Duration = Duration::from_secs(300);
/// Share of refusals (of one reason, among refused and stored events in the window) at or
/// above which the fuse trips, in tenths.
const TRIP_SHARE: usize = 9;

/// What to do with one refused event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Its own fault: to the dead-letter queue.
    DeadLetter,
    /// This refusal tripped the fuse: pause for the hold, release the event.
    Tripped(Duration),
    /// The fuse is tripped already: release the event.
    Held,
}

/// The fuse. `threshold` 0 turns it off.
#[derive(Debug)]
pub(crate) struct RefusalFuse {
    threshold: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Refusals in the window: when, the reason's key, the event.
    refusals: VecDeque<(Instant, String, String)>,
    /// Stored events in the window: when, how many.
    stored: VecDeque<(Instant, usize)>,
    /// Trips since an event was last stored.
    trips: u32,
    /// Until when the latest trip holds.
    held_until: Option<Instant>,
    /// When the fuse last tripped.
    tripped_at: Option<Instant>,
}

impl RefusalFuse {
    /// A fuse that trips at `threshold` distinct events refused alike (0: never).
    pub(crate) fn new(threshold: usize) -> Self {
        Self {
            threshold,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes `count` events stored (new or duplicate) now.
    pub(crate) fn stored(&self, count: usize, now: Instant) {
        if count == 0 || self.threshold == 0 {
            return;
        }
        let mut state = self.state();
        state.prune(now);
        state.stored.push_back((now, count));
        if state.held_until.is_none_or(|until| now >= until) {
            state.trips = 0;
        }
    }

    /// Judges one refusal of `event` for the reason `key`.
    pub(crate) fn refused(&self, key: &str, event: &str, now: Instant) -> Verdict {
        if self.threshold == 0 {
            return Verdict::DeadLetter;
        }
        let mut state = self.state();
        if state.held_until.is_some_and(|until| now < until) {
            return Verdict::Held;
        }
        state.prune(now);
        let seen = state
            .refusals
            .iter()
            .any(|(_, k, e)| k == key && e == event);
        if !seen {
            state
                .refusals
                .push_back((now, key.to_owned(), event.to_owned()));
        }
        let alike = state.refusals.iter().filter(|(_, k, _)| k == key).count();
        let stored: usize = state.stored.iter().map(|(_, n)| n).sum();
        if alike < self.threshold || alike * 10 < TRIP_SHARE * (alike + stored) {
            return Verdict::DeadLetter;
        }
        let hold = FIRST_HOLD
            .saturating_mul(1 << state.trips.min(10))
            .min(MAX_HOLD);
        state.trips = state.trips.saturating_add(1);
        state.held_until = Some(now + hold);
        state.tripped_at = Some(now);
        state.refusals.clear();
        Verdict::Tripped(hold)
    }
}

impl RefusalFuse {
    /// Whether the fuse tripped at or after `at` (a refusal judged then is released, not
    /// dead-lettered).
    pub(crate) fn tripped_since(&self, at: Instant) -> bool {
        self.state().tripped_at.is_some_and(|tripped| tripped >= at)
    }
}

impl State {
    /// Forgets what is older than the window.
    fn prune(&mut self, now: Instant) {
        let horizon = now.checked_sub(WINDOW);
        let old = |at: &Instant| horizon.is_some_and(|h| *at < h);
        while self.refusals.front().is_some_and(|(at, ..)| old(at)) {
            self.refusals.pop_front();
        }
        while self.stored.front().is_some_and(|(at, _)| old(at)) {
            self.stored.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn many_events_refused_alike_trip_it_and_holds_double() {
        let fuse = RefusalFuse::new(5);
        let now = Instant::now();
        for i in 0..4 {
            let verdict = fuse.refused("23514 amount_check", &i.to_string(), now);
            assert_eq!(verdict, Verdict::DeadLetter);
        }
        // The same event again is not a new one.
        assert_eq!(
            fuse.refused("23514 amount_check", "3", now),
            Verdict::DeadLetter
        );
        assert!(!fuse.tripped_since(now));
        assert_eq!(
            fuse.refused("23514 amount_check", "4", now),
            Verdict::Tripped(FIRST_HOLD)
        );
        assert!(fuse.tripped_since(now), "the four before are released too");
        assert_eq!(
            fuse.refused("22P02", "5", now),
            Verdict::Held,
            "held: every refusal released"
        );
        let after = now + FIRST_HOLD;
        for i in 10..14 {
            assert_eq!(
                fuse.refused("23514 amount_check", &i.to_string(), after),
                Verdict::DeadLetter
            );
        }
        assert_eq!(
            fuse.refused("23514 amount_check", "14", after),
            Verdict::Tripped(FIRST_HOLD * 2),
            "no store in between: the hold doubles"
        );
        // A store after the hold resets the doubling.
        let later = after + MAX_HOLD;
        fuse.stored(1, later);
        let verdicts: Vec<Verdict> = (20..30)
            .map(|i| fuse.refused("23514 amount_check", &i.to_string(), later))
            .collect();
        assert_eq!(
            verdicts
                .iter()
                .position(|v| *v == Verdict::Tripped(FIRST_HOLD)),
            Some(8),
            "nine refusals against one store reach the share; the hold starts over: {verdicts:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn bad_events_among_stored_ones_and_slow_or_mixed_refusals_do_not_trip_it() {
        let fuse = RefusalFuse::new(5);
        let now = Instant::now();
        fuse.stored(100, now);
        for i in 0..20 {
            assert_eq!(
                fuse.refused("22P02", &i.to_string(), now),
                Verdict::DeadLetter
            );
        }
        // Different reasons do not add up.
        let fuse = RefusalFuse::new(5);
        for i in 0..20 {
            assert_eq!(
                fuse.refused(&format!("P0001 {i}"), "e", now),
                Verdict::DeadLetter
            );
        }
        // Spread wider than the window.
        let fuse = RefusalFuse::new(5);
        for i in 0..20_u32 {
            let at = now + WINDOW / 3 * (i + 1);
            assert_eq!(
                fuse.refused("22P02", &i.to_string(), at),
                Verdict::DeadLetter
            );
        }
        // Off.
        let fuse = RefusalFuse::new(0);
        for i in 0..20 {
            assert_eq!(
                fuse.refused("22P02", &i.to_string(), now),
                Verdict::DeadLetter
            );
        }
    }
}
