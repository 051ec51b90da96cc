//! Which stored events `worker replay` reads, in what order: the partitions in chronological
//! order (the flat table of an earlier version is one range), each clipped to `--from` /
//! `--to`, and inside each one keyset pages along the key `(source, id, received_at)`, so a
//! page costs the same at the start and at the end, and every query is pruned to one
//! partition. Events named by `--id` are read in one query.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use sqlx::types::Json;
use webhook_shared::envelope::Envelope;

use crate::config::ReplayArgs;
use crate::partitions::catalog;

/// What to replay.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Filter {
    /// Only this source.
    pub(crate) source: Option<String>,
    /// Received at or after.
    pub(crate) from: Option<DateTime<Utc>>,
    /// Received before.
    pub(crate) to: Option<DateTime<Utc>>,
    /// Only these `(source, id)`.
    pub(crate) ids: Vec<(String, String)>,
}

impl ReplayArgs {
    /// The selection; an error when `--from` is not before `--to`.
    pub(crate) fn filter(&self) -> anyhow::Result<Filter> {
        if let (Some(from), Some(to)) = (self.from, self.to) {
            anyhow::ensure!(from < to, "--from ({from}) must be before --to ({to})");
        }
        Ok(Filter {
            source: self.source.clone(),
            from: self.from,
            to: self.to,
            ids: self.ids.clone(),
        })
    }
}

/// A range of `received_at` read as one: a partition clipped to the filter. `None` bounds are
/// open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Range {
    pub(crate) from: Option<DateTime<Utc>>,
    pub(crate) to: Option<DateTime<Utc>>,
}

impl Range {
    /// The label saved in the cursor: the lower bound, or `-infinity`.
    pub(crate) fn label(&self) -> String {
        self.from
            .map_or_else(|| "-infinity".to_owned(), |from| from.to_rfc3339())
    }
}

/// A position along the keyset of a range: the key of the last event before it (the default,
/// with no time, is the start of the range).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Key {
    pub(crate) source: String,
    pub(crate) id: String,
    pub(crate) received_at: Option<DateTime<Utc>>,
}

impl Key {
    /// The key of `event`.
    pub(crate) fn of(event: &Envelope) -> Self {
        Self {
            source: event.source.clone(),
            id: event.id.clone(),
            received_at: Some(event.received_at),
        }
    }
}

/// The ranges to read, oldest first: the partitions (or the whole flat table) clipped to the
/// filter's times.
pub(crate) async fn ranges(
    conn: &mut PgConnection,
    filter: &Filter,
) -> Result<Vec<Range>, sqlx::Error> {
    let whole = if catalog::is_partitioned(conn).await? {
        catalog::partitions(conn)
            .await?
            .into_iter()
            .map(|p| Range {
                from: p.from,
                to: p.to,
            })
            .collect()
    } else {
        vec![Range {
            from: None,
            to: None,
        }]
    };
    Ok(clip(whole, filter.from, filter.to))
}

/// `ranges` cut to `[from, to)`, the empty ones dropped, oldest first.
pub(crate) fn clip(
    ranges: Vec<Range>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Vec<Range> {
    let mut clipped: Vec<Range> = ranges
        .into_iter()
        .map(|r| Range {
            from: later(r.from, from),
            to: earlier(r.to, to),
        })
        .filter(|r| match (r.from, r.to) {
            (Some(from), Some(to)) => from < to,
            _ => true,
        })
        .collect();
    clipped.sort_by_key(|r| r.from);
    clipped
}

fn later(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    a.max(b)
}

fn earlier(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A stored row, as the handler gets it again.
type Row = (
    String,
    String,
    DateTime<Utc>,
    Json<BTreeMap<String, String>>,
    Option<String>,
    Vec<u8>,
);

fn envelope((source, id, received_at, headers, content_type, body): Row) -> Envelope {
    Envelope {
        id,
        source,
        received_at,
        headers: headers.0,
        content_type,
        body: body.into(),
    }
}

/// The next page of `range` after `after`, at most `limit` events, without those inside an
/// interval already replayed under the cursor `cursor` (see `cursor.rs`: a run stopped with
/// pages committed beyond its cursor). The intervals are compared in SQL, in the same
/// collation as the keyset.
pub(crate) async fn page(
    conn: &mut PgConnection,
    filter: &Filter,
    (range, after): (Range, &Key),
    cursor: &str,
    limit: i64,
) -> Result<Vec<Envelope>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT source, id, received_at, headers, content_type, body FROM webhook_events e
         WHERE ($1::timestamptz IS NULL OR received_at >= $1) AND ($2::timestamptz IS NULL OR received_at < $2)
           AND ($3::text IS NULL OR source = $3)
           AND (source, id, received_at) > ($4, $5, coalesce($6, '-infinity'::timestamptz))
           AND NOT EXISTS (
               SELECT FROM webhook_replay_done d
               WHERE d.cursor_name = $8 AND d.partition_from = coalesce($1, '-infinity'::timestamptz)
                 AND (e.source, e.id, e.received_at) >= (d.first_source, d.first_id, d.first_received_at)
                 AND (e.source, e.id, e.received_at) <= (d.last_source, d.last_id, d.last_received_at))
         ORDER BY source, id, received_at LIMIT $7",
    )
    .bind(range.from)
    .bind(range.to)
    .bind(filter.source.as_deref())
    .bind(&after.source)
    .bind(&after.id)
    .bind(after.received_at)
    .bind(limit)
    .bind(cursor)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(envelope).collect())
}

/// How many events of `range` match.
pub(crate) async fn count(
    conn: &mut PgConnection,
    filter: &Filter,
    range: Range,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM webhook_events
         WHERE ($1::timestamptz IS NULL OR received_at >= $1) AND ($2::timestamptz IS NULL OR received_at < $2)
           AND ($3::text IS NULL OR source = $3)",
    )
    .bind(range.from)
    .bind(range.to)
    .bind(filter.source.as_deref())
    .fetch_one(conn)
    .await
}

/// The events named in `filter.ids` (all their rows, a retry stored past the dedup horizon
/// included), in key order.
pub(crate) async fn by_ids(
    conn: &mut PgConnection,
    filter: &Filter,
) -> Result<Vec<Envelope>, sqlx::Error> {
    let (sources, ids): (Vec<&str>, Vec<&str>) = filter
        .ids
        .iter()
        .map(|(s, i)| (s.as_str(), i.as_str()))
        .unzip();
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT e.source, e.id, e.received_at, e.headers, e.content_type, e.body
         FROM webhook_events e JOIN UNNEST($1::text[], $2::text[]) AS k(source, id)
              ON e.source = k.source AND e.id = k.id
         ORDER BY e.source, e.id, e.received_at",
    )
    .bind(sources)
    .bind(ids)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(envelope).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Option<DateTime<Utc>> {
        text.parse().ok()
    }

    #[test]
    fn ranges_are_clipped_to_the_filter_and_sorted() {
        let partitions = vec![
            Range {
                from: at("2026-12-02T00:00:00Z"),
                to: at("2026-12-03T00:00:00Z"),
            },
            Range {
                from: None,
                to: at("2026-12-01T00:00:00Z"),
            },
            Range {
                from: at("2026-12-01T00:00:00Z"),
                to: at("2026-12-02T00:00:00Z"),
            },
        ];
        let clipped = clip(
            partitions,
            at("2026-11-30T12:00:00Z"),
            at("2026-12-02T06:00:00Z"),
        );
        assert_eq!(
            clipped,
            [
                Range {
                    from: at("2026-11-30T12:00:00Z"),
                    to: at("2026-12-01T00:00:00Z")
                },
                Range {
                    from: at("2026-12-01T00:00:00Z"),
                    to: at("2026-12-02T00:00:00Z")
                },
                Range {
                    from: at("2026-12-02T00:00:00Z"),
                    to: at("2026-12-02T06:00:00Z")
                },
            ]
        );
        assert_eq!(
            clip(
                vec![Range {
                    from: None,
                    to: None
                }],
                None,
                None
            )
            .len(),
            1
        );
    }
}
