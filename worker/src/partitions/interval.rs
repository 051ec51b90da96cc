//! The width of a partition (`PARTITION_INTERVAL`) and the boundary arithmetic: partitions
//! are half-open `[from, to)` ranges aligned in UTC on midnight, ISO Monday or the 1st of
//! the month, named after their lower bound.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike as _, Days, Months, NaiveTime, TimeZone as _, Utc};

/// How wide one partition of `webhook_events` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PartitionInterval {
    /// A UTC day.
    #[default]
    Day,
    /// An ISO week, Monday to Monday (UTC).
    Week,
    /// A calendar month (UTC).
    Month,
}

/// The values `PARTITION_INTERVAL` accepts.
const ACCEPTED: &str = "day (1d), week (1w, 7d) or month (1mo, 1month)";

impl FromStr for PartitionInterval {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.trim().to_ascii_lowercase().as_str() {
            "day" | "daily" | "1d" => Ok(Self::Day),
            "week" | "weekly" | "1w" | "7d" => Ok(Self::Week),
            "month" | "monthly" | "1mo" | "1mon" | "1month" => Ok(Self::Month),
            other => Err(format!("`{other}` is not an interval: use {ACCEPTED}")),
        }
    }
}

impl fmt::Display for PartitionInterval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
        })
    }
}

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
    fn every_spelling_parses_and_others_name_the_choices() {
        for (text, interval) in [
            ("day", PartitionInterval::Day),
            ("1d", PartitionInterval::Day),
            ("Week", PartitionInterval::Week),
            ("7d", PartitionInterval::Week),
            ("1w", PartitionInterval::Week),
            ("1mo", PartitionInterval::Month),
            ("month", PartitionInterval::Month),
        ] {
            assert_eq!(text.parse::<PartitionInterval>(), Ok(interval), "{text}");
        }
        let error = "2d"
            .parse::<PartitionInterval>()
            .expect_err("2d is no interval");
        assert!(error.contains("day (1d)"), "{error}");
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
