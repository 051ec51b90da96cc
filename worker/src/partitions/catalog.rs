//! What PostgreSQL's catalog says of `webhook_events`: whether it is partitioned, and the
//! bounds of its partitions (the catalog is the truth; names are labels). Then, from those
//! bounds alone: how far ahead writes are covered, and which pieces of a range no partition
//! covers yet.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

/// One partition of `webhook_events`, as attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Partition {
    /// The table's name.
    pub(crate) name: String,
    /// Lower bound (inclusive); `None` for MINVALUE.
    pub(crate) from: Option<DateTime<Utc>>,
    /// Upper bound (exclusive); `None` for MAXVALUE.
    pub(crate) to: Option<DateTime<Utc>>,
    /// A `DETACH … CONCURRENTLY` was cut short: its range takes no writes until `FINALIZE`.
    pub(crate) detach_pending: bool,
}

impl Partition {
    /// Whether `[from, to)` of this partition overlaps `[lo, hi)`.
    fn overlaps(&self, lo: DateTime<Utc>, hi: DateTime<Utc>) -> bool {
        self.from.is_none_or(|from| from < hi) && self.to.is_none_or(|to| to > lo)
    }
}

/// Whether `webhook_events` is a partitioned table (`false` for the flat table of earlier
/// versions, before `worker migrate-partitions`).
pub(crate) async fn is_partitioned(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT coalesce((SELECT relkind = 'p' FROM pg_class WHERE oid = to_regclass('webhook_events')), false)",
    )
    .fetch_one(conn)
    .await
}

/// The partitions of `webhook_events`, oldest first. The bounds are read back from
/// `pg_get_expr` in the same session, so its time zone cannot shift them.
pub(crate) async fn partitions(conn: &mut PgConnection) -> Result<Vec<Partition>, sqlx::Error> {
    type Row = (String, Option<DateTime<Utc>>, Option<DateTime<Utc>>, bool);
    let rows: Vec<Row> = sqlx::query_as(
        r"SELECT c.relname::text,
                 CASE WHEN b.m[1] = 'MINVALUE' THEN NULL ELSE btrim(b.m[1], '''')::timestamptz END,
                 CASE WHEN b.m[2] = 'MAXVALUE' THEN NULL ELSE btrim(b.m[2], '''')::timestamptz END,
                 i.inhdetachpending
          FROM pg_inherits i
          JOIN pg_class c ON c.oid = i.inhrelid
          CROSS JOIN LATERAL (
              SELECT regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \((.+)\) TO \((.+)\)') AS m
          ) b
          WHERE i.inhparent = to_regclass('webhook_events')
          ORDER BY 2 NULLS FIRST",
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, from, to, detach_pending)| Partition {
            name,
            from,
            to,
            detach_pending,
        })
        .collect())
}

/// The end of the range that takes writes without a gap from `now` on (`None` when no
/// partition takes a row received now). Partitions pending detach take no writes.
pub(crate) fn covered_until(partitions: &[Partition], now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let mut live: Vec<&Partition> = partitions.iter().filter(|p| !p.detach_pending).collect();
    live.sort_by_key(|p| p.from);
    let mut end = None::<DateTime<Utc>>;
    for partition in live {
        let reaches = match end {
            None => partition.from.is_none_or(|from| from <= now),
            Some(end) => partition.from.is_none_or(|from| from <= end),
        };
        let extends = partition.to.is_none_or(|to| to > end.unwrap_or(now));
        if reaches && extends {
            // MAXVALUE: covered for ever; a far date stands for it.
            end = Some(partition.to.unwrap_or(DateTime::<Utc>::MAX_UTC));
        }
    }
    end
}

/// The pieces of `[lo, hi)` that no partition (attached or pending detach) covers.
pub(crate) fn gaps(
    partitions: &[Partition],
    lo: DateTime<Utc>,
    hi: DateTime<Utc>,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let mut pieces = vec![(lo, hi)];
    for partition in partitions {
        pieces = pieces
            .into_iter()
            .flat_map(|(lo, hi)| {
                if !partition.overlaps(lo, hi) {
                    return vec![(lo, hi)];
                }
                let mut left = Vec::new();
                if let Some(from) = partition.from.filter(|&from| from > lo) {
                    left.push((lo, from));
                }
                if let Some(to) = partition.to.filter(|&to| to < hi) {
                    left.push((to, hi));
                }
                left
            })
            .collect();
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap_or_else(|_| panic!("a time: {text}"))
    }

    fn day(from: &str, to: &str) -> Partition {
        Partition {
            name: format!("p{from}"),
            from: Some(at(&format!("{from}T00:00:00Z"))),
            to: Some(at(&format!("{to}T00:00:00Z"))),
            detach_pending: false,
        }
    }

    #[test]
    fn coverage_runs_to_the_first_gap() {
        let now = at("2026-12-06T12:00:00Z");
        let partitions = [
            day("2026-12-05", "2026-12-06"),
            day("2026-12-06", "2026-12-07"),
            day("2026-12-07", "2026-12-08"),
            day("2026-12-09", "2026-12-10"),
        ];
        assert_eq!(
            covered_until(&partitions, now),
            Some(at("2026-12-08T00:00:00Z"))
        );
        // Without the current one, nothing received now can be written.
        assert_eq!(covered_until(&partitions[2..], now), None);
        assert_eq!(covered_until(&[], now), None);
    }

    #[test]
    fn a_partition_pending_detach_breaks_the_coverage() {
        let now = at("2026-12-06T12:00:00Z");
        let mut pending = day("2026-12-06", "2026-12-07");
        pending.detach_pending = true;
        assert_eq!(covered_until(std::slice::from_ref(&pending), now), None);
        // ...but it still blocks creating an overlapping partition.
        assert!(gaps(&[pending], now, at("2026-12-07T00:00:00Z")).is_empty());
    }

    #[test]
    fn open_bounds_cover_everything_on_their_side() {
        let legacy = Partition {
            name: "webhook_events_legacy".into(),
            from: None,
            to: Some(at("2026-12-07T00:00:00Z")),
            detach_pending: false,
        };
        let now = at("2026-12-06T12:00:00Z");
        assert_eq!(
            covered_until(std::slice::from_ref(&legacy), now),
            Some(at("2026-12-07T00:00:00Z"))
        );
        assert_eq!(
            gaps(
                &[legacy],
                at("2026-12-06T00:00:00Z"),
                at("2026-12-08T00:00:00Z")
            ),
            [(at("2026-12-07T00:00:00Z"), at("2026-12-08T00:00:00Z"))]
        );
    }

    #[test]
    fn gaps_are_what_no_partition_covers() {
        let partitions = [
            day("2026-12-06", "2026-12-07"),
            day("2026-12-08", "2026-12-09"),
        ];
        assert_eq!(
            gaps(
                &partitions,
                at("2026-12-05T00:00:00Z"),
                at("2026-12-10T00:00:00Z")
            ),
            [
                (at("2026-12-05T00:00:00Z"), at("2026-12-06T00:00:00Z")),
                (at("2026-12-07T00:00:00Z"), at("2026-12-08T00:00:00Z")),
                (at("2026-12-09T00:00:00Z"), at("2026-12-10T00:00:00Z")),
            ]
        );
    }
}
