//! The boundary arithmetic of a partition's width (`PARTITION_INTERVAL`, parsed in
//! `config/partitions.rs`): partitions
//! are half-open `[from, to)` ranges aligned in UTC on midnight, ISO Monday or the 1st of
//! the month, named after their lower bound.

use chrono::{DateTime, Datelike as _, Days, Months, NaiveTime, TimeZone as _, Utc};

use crate::config::PartitionInterval;

impl PartitionInterval {
    /// The start of the interval that holds `at`.
    pub(crate) fn floor(self, at: DateTime<Utc>) -> DateTime<Utc> {
        let date = at.date_naive();
        let date = match self {
            Self::Day => date,
            Self::Week => date - Days::new(u64::from(date.weekday().num_days_from_monday())),
            Self::Month => date.with_day(1).unwrap_or(date),
        };
        Utc.from_utc_datetime(&date.and_time(NaiveTime::MIN))
    }

    /// The start of the interval after the one starting at `start`.
    pub(crate) fn next(self, start: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Self::Day => start + Days::new(1),
            Self::Week => start + Days::new(7),
            Self::Month => start + Months::new(1),
        }
    }

    /// The start of the interval `count` intervals after the one that holds `at`.
    pub(crate) fn advance(self, at: DateTime<Utc>, count: u32) -> DateTime<Utc> {
        (0..count).fold(self.floor(at), |start, _| self.next(start))
    }

    /// The intervals `[from, to)` that together cover `[floor(from), to)`, in order.
    pub(crate) fn slots(
        self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> impl Iterator<Item = (DateTime<Utc>, DateTime<Utc>)> {
        let mut start = self.floor(from);
        std::iter::from_fn(move || {
            (start < to).then(|| {
                let end = self.next(start);
                let slot = (start, end);
                start = end;
                slot
            })
        })
    }
}

/// The name of the partition whose lower bound is `from`: `webhook_events_p20261206`, with
/// the time of day when the bound is not midnight (a piece that fills a gap).
pub(crate) fn partition_name(from: DateTime<Utc>) -> String {
    if from.time() == NaiveTime::MIN {
        format!("webhook_events_p{}", from.format("%Y%m%d"))
    } else {
        format!("webhook_events_p{}", from.format("%Y%m%d_%H%M%S"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap_or_else(|_| panic!("a time: {text}"))
    }

    #[test]
    fn floors_are_utc_midnight_iso_monday_and_the_first() {
        let t = at("2026-12-06T19:31:36Z"); // a Sunday
        assert_eq!(PartitionInterval::Day.floor(t), at("2026-12-06T00:00:00Z"));
        assert_eq!(PartitionInterval::Week.floor(t), at("2026-11-30T00:00:00Z"));
        assert_eq!(
            PartitionInterval::Month.floor(t),
            at("2026-12-01T00:00:00Z")
        );
        // A Monday is its own week's start.
        let monday = at("2026-11-30T00:00:00Z");
        assert_eq!(PartitionInterval::Week.floor(monday), monday);
    }

    #[test]
    fn months_and_years_roll_over() {
        let month = PartitionInterval::Month;
        assert_eq!(
            month.next(at("2026-12-01T00:00:00Z")),
            at("2027-01-01T00:00:00Z")
        );
        assert_eq!(
            month.advance(at("2027-01-31T23:00:00Z"), 1),
            at("2027-02-01T00:00:00Z")
        );
        let slots: Vec<_> = PartitionInterval::Day
            .slots(at("2026-12-31T12:00:00Z"), at("2027-01-02T00:00:01Z"))
            .map(|(from, _)| partition_name(from))
            .collect();
        assert_eq!(
            slots,
            [
                "webhook_events_p20261231",
                "webhook_events_p20270101",
                "webhook_events_p20270102"
            ]
        );
    }

    #[test]
    fn a_bound_off_midnight_gets_its_time_in_the_name() {
        assert_eq!(
            partition_name(at("2026-12-06T12:30:00Z")),
            "webhook_events_p20261206_123000"
        );
    }
}
