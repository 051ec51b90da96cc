//! Part 1: insert throughput of the table layouts and statements, one fresh database each,
//! measured in the same run in rotated order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use e2e_tests::TestStack;
use e2e_tests::report::{median, mib};
use sqlx::postgres::PgArguments;
use sqlx::query::QueryAs;
use sqlx::types::Json;
use sqlx::{Connection as _, PgConnection, Postgres};
use webhook_shared::envelope::Envelope;

/// Settings of the insert part.
#[derive(Debug, clap::Args)]
pub(crate) struct InsertArgs {
    /// Concurrent connections writing batches.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    connections: u32,
    /// Rows per batch (one transaction each).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    batch: u32,
    /// Seconds per phase (one variant).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,
    /// Rounds (every variant once each, in rotated order); medians are reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Variants measured, the first being the reference of the ratios.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Variant::Old, Variant::New])]
    variants: Vec<Variant>,
    /// Print EXPLAIN (ANALYZE, BUFFERS) of one batch on each variant after the phases.
    #[arg(long)]
    explain: bool,
}

/// A table layout and the statement that writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Variant {
    /// The first migration's flat table (PRIMARY KEY (source, id), btree on received_at, no
    /// key table) and the statement of before the partitions.
    Old,
    /// The table `worker migrate` makes (daily partitions, BRIN, the key table) and
    /// `worker::insert_events` (plain inserts in a savepoint, the sorting statement when a
    /// row exists).
    New,
    /// `new`'s layout, every batch written by the sorting statement alone
    /// (`worker::INSERT_EVENTS_SQL`: `ON CONFLICT DO NOTHING` on both tables), as before the
    /// savepoint path.
    Sorting,
    /// The flat table plus the key table, and `worker::insert_events`: an earlier version's
    /// table that had rows.
    FlatNew,
    /// `new` without the BRIN index on received_at.
    NoBrin,
    /// `new`'s layout, written with two statements (keys, then the events that were new)
    /// instead of one with a CTE.
    TwoStatements,
    /// `new` with a key table keyed by a 16-byte hash of (source, id) instead of the text.
    HashedKey,
}

/// The first migration's table, as it was created before the partitions.
const OLD_TABLE: &str = "CREATE TABLE webhook_events (
    source       text        NOT NULL,
    id           text        NOT NULL,
    received_at  timestamptz NOT NULL,
    stored_at    timestamptz NOT NULL DEFAULT now(),
    headers      jsonb       NOT NULL,
    content_type text,
    body         bytea       NOT NULL,
    payload      jsonb,
    PRIMARY KEY (source, id)
);
CREATE INDEX webhook_events_received_at_idx ON webhook_events (received_at);";

/// `insert_events`'s statement before the partitions (`git show f9ca71c^:worker/src/db/events.rs`).
const OLD_INSERT: &str = "INSERT INTO webhook_events (source, id, received_at, headers, content_type, body, payload)
     SELECT source, id, received_at, headers, content_type, body, payload::jsonb
     FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::jsonb[], $5::text[], $6::bytea[], $7::text[])
          WITH ORDINALITY AS t(source, id, received_at, headers, content_type, body, payload, n)
     ORDER BY n
     ON CONFLICT (source, id) DO NOTHING
     RETURNING source, id";

/// `two-statements`, first: the keys; the events that were new follow with [`EVENTS_INSERT`].
const KEYS_INSERT: &str = "INSERT INTO webhook_event_keys (source, id, received_at)
     SELECT source, id, received_at
     FROM UNNEST($1::text[], $2::text[], $3::timestamptz[]) WITH ORDINALITY AS t(source, id, received_at, n)
     ORDER BY n
     ON CONFLICT (source, id) DO NOTHING
     RETURNING source, id";

/// `two-statements`, second: the old statement without a conflict target.
const EVENTS_INSERT: &str = "INSERT INTO webhook_events (source, id, received_at, headers, content_type, body, payload)
     SELECT source, id, received_at, headers, content_type, body, payload::jsonb
     FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::jsonb[], $5::text[], $6::bytea[], $7::text[])
          WITH ORDINALITY AS t(source, id, received_at, headers, content_type, body, payload, n)
     ORDER BY n
     ON CONFLICT DO NOTHING
     RETURNING source, id";

/// `hashed-key`: the key table holds md5(source, id) as a uuid.
const HASHED_KEYS_TABLE: &str = "DROP TABLE webhook_event_keys;
CREATE TABLE webhook_event_keys (
    key         uuid        PRIMARY KEY,
    received_at timestamptz NOT NULL
) WITH (fillfactor = 90, autovacuum_vacuum_scale_factor = 0.02);";

/// `hashed-key`'s statement: `new`'s with the hashed key (rows sorted by (source, id) as
/// before; the keys' locks then come in hash order, which two batches share too).
const HASHED_INSERT: &str = "WITH input AS (
         SELECT t.*, md5(t.source || '/' || t.id)::uuid AS key
         FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::jsonb[], $5::text[], $6::bytea[], $7::text[])
              WITH ORDINALITY AS t(source, id, received_at, headers, content_type, body, payload, n)
     ), fresh AS (
         INSERT INTO webhook_event_keys (key, received_at)
         SELECT key, received_at FROM input ORDER BY key
         ON CONFLICT (key) DO NOTHING
         RETURNING key
     )
     INSERT INTO webhook_events (source, id, received_at, headers, content_type, body, payload)
     SELECT i.source, i.id, i.received_at, i.headers, i.content_type, i.body, i.payload::jsonb
     FROM input i JOIN fresh f USING (key)
     ORDER BY i.n
     ON CONFLICT DO NOTHING
     RETURNING source, id";

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Old => "old (flat, old statement)",
            Variant::New => "new (partitioned, insert_events)",
            Variant::Sorting => "sorting (new layout, ON CONFLICT statement only)",
            Variant::FlatNew => "flat-new (flat + keys, insert_events)",
            Variant::NoBrin => "no-brin (new without BRIN)",
            Variant::TwoStatements => "two-statements (new layout)",
            Variant::HashedKey => "hashed-key (new, uuid key)",
        }
    }

    /// What turns the database `worker migrate` made into this variant's.
    fn setup(self) -> String {
        match self {
            Variant::Old => {
                format!("DROP TABLE webhook_events; DROP TABLE webhook_event_keys; {OLD_TABLE}")
            }
            Variant::FlatNew => format!("DROP TABLE webhook_events; {OLD_TABLE}"),
            Variant::NoBrin => "DROP INDEX webhook_events_received_at_idx".to_owned(),
            Variant::HashedKey => HASHED_KEYS_TABLE.to_owned(),
            Variant::New | Variant::Sorting | Variant::TwoStatements => String::new(),
        }
    }

    /// The statements one batch runs, for EXPLAIN.
    fn statements(self) -> &'static [&'static str] {
        match self {
            Variant::Old => &[OLD_INSERT],
            Variant::New | Variant::FlatNew | Variant::NoBrin => &[worker::INSERT_NEW_EVENTS_SQL],
            Variant::Sorting => &[worker::INSERT_EVENTS_SQL],
            Variant::TwoStatements => &[KEYS_INSERT, EVENTS_INSERT],
            Variant::HashedKey => &[HASHED_INSERT],
        }
    }
}

/// One variant's database and figures.
struct Subject {
    variant: Variant,
    stack: TestStack,
    per_second: Vec<f64>,
}

pub(crate) async fn run(args: &InsertArgs) -> anyhow::Result<()> {
    println!(
        "## inserts: {} connection(s), batches of {} rows of ~1 KiB JSON, {} s per phase, {} round(s)\n",
        args.connections, args.batch, args.seconds, args.rounds
    );
    let bodies = Arc::new(bodies());
    let mut subjects = Vec::new();
    for &variant in &args.variants {
        let stack = TestStack::new("bench-partitions-inserts").await;
        sqlx::raw_sql(&variant.setup())
            .execute(&stack.db)
            .await
            .with_context(|| format!("setting up {}", variant.name()))?;
        subjects.push(Subject {
            variant,
            stack,
            per_second: Vec::new(),
        });
    }
    println!("| round | variant | rows/s | writes | mean ms per batch |");
    println!("|---|---|---|---|---|");
    for round in 0..args.rounds as usize {
        // Rotated order: each variant goes first in some round, so a drift of the machine
        // (or the tables growing) favours none.
        for k in 0..subjects.len() {
            let subject = &mut subjects[(round + k) % args.variants.len()];
            let phase = phase(subject, args, &bodies).await?;
            println!(
                "| {} | {} | {:.0} | {} | {:.1} |",
                round + 1,
                subject.variant.name(),
                phase.per_second,
                phase.writes,
                phase.mean_ms
            );
            subject.per_second.push(phase.per_second);
        }
    }
    let reference = median(&subjects[0].per_second);
    println!("\nmedians over {} round(s):", args.rounds);
    for subject in &subjects {
        let ratios: Vec<f64> = subject
            .per_second
            .iter()
            .zip(&subjects[0].per_second)
            .map(|(mine, first)| mine / first)
            .collect();
        let listed: Vec<String> = ratios.iter().map(|r| format!("{r:.3}")).collect();
        println!(
            "- {}: {:.0} rows/s; / {}: {:.3} (ratio of medians), {:.3} (median of the rounds' ratios: {})",
            subject.variant.name(),
            median(&subject.per_second),
            subjects[0].variant.name(),
            median(&subject.per_second) / reference,
            median(&ratios),
            listed.join(", ")
        );
    }
    println!("\nsizes (heap + indexes + TOAST, extrapolated from the rows written):");
    for subject in &subjects {
        let (rows, events, keys) = sizes(&subject.stack).await?;
        let per_million = |bytes: i64| mib(bytes as u64) * 1e6 / rows.max(1) as f64;
        println!(
            "- {}: {rows} rows; per 1M rows: webhook_events {:.0} MiB, webhook_event_keys {:.0} MiB, total {:.0} MiB",
            subject.variant.name(),
            per_million(events),
            per_million(keys),
            per_million(events + keys)
        );
    }
    if args.explain {
        for subject in &subjects {
            explain(subject, args, &bodies).await?;
        }
    }
    for subject in subjects {
        subject.stack.cleanup().await;
    }
    Ok(())
}

/// One phase's figures.
struct Phase {
    per_second: f64,
    writes: u64,
    mean_ms: f64,
}

/// `--connections` loops writing batches for `--seconds`.
async fn phase(
    subject: &Subject,
    args: &InsertArgs,
    bodies: &Arc<Vec<Bytes>>,
) -> anyhow::Result<Phase> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let mut loops = tokio::task::JoinSet::new();
    for _ in 0..args.connections {
        let (url, variant, bodies, batch) = (
            subject.stack.database_url.clone(),
            subject.variant,
            Arc::clone(bodies),
            args.batch as usize,
        );
        loops.spawn(async move {
            let mut conn = PgConnection::connect(&url).await?;
            let (mut rows, mut writes, mut busy) = (0_u64, 0_u64, Duration::ZERO);
            while Instant::now() < deadline {
                let events = batch_of(batch, &bodies);
                let write = Instant::now();
                rows += write_batch(&mut conn, variant, &events).await? as u64;
                busy += write.elapsed();
                writes += 1;
            }
            anyhow::Ok((rows, writes, busy))
        });
    }
    let (mut rows, mut writes, mut busy) = (0, 0, Duration::ZERO);
    for result in loops.join_all().await {
        let (r, w, b) = result?;
        (rows, writes, busy) = (rows + r, writes + w, busy + b);
    }
    Ok(Phase {
        per_second: rows as f64 / started.elapsed().as_secs_f64(),
        writes,
        mean_ms: busy.as_secs_f64() * 1000.0 / writes.max(1) as f64,
    })
}

/// Writes one batch in a transaction, as the worker does; returns the rows that were new.
async fn write_batch(
    conn: &mut PgConnection,
    variant: Variant,
    events: &[Envelope],
) -> anyhow::Result<usize> {
    let mut tx = conn.begin().await?;
    let new = match variant {
        Variant::New | Variant::FlatNew | Variant::NoBrin => worker::insert_events(&mut tx, events)
            .await?
            .into_iter()
            .filter(|new| *new)
            .count(),
        Variant::Old | Variant::HashedKey | Variant::Sorting => {
            let statement = match variant {
                Variant::Old => OLD_INSERT,
                Variant::Sorting => worker::INSERT_EVENTS_SQL,
                _ => HASHED_INSERT,
            };
            let sorted = sorted(events);
            bind_columns(sqlx::query_as::<_, Returned>(statement), &sorted)
                .fetch_all(&mut *tx)
                .await?
                .len()
        }
        Variant::TwoStatements => {
            let sorted = sorted(events);
            let fresh: Vec<(String, String)> = sqlx::query_as(KEYS_INSERT)
                .bind(sorted.iter().map(|e| e.source.as_str()).collect::<Vec<_>>())
                .bind(sorted.iter().map(|e| e.id.as_str()).collect::<Vec<_>>())
                .bind(sorted.iter().map(|e| e.received_at).collect::<Vec<_>>())
                .fetch_all(&mut *tx)
                .await?;
            let fresh: std::collections::HashSet<(String, String)> = fresh.into_iter().collect();
            let new: Vec<&Envelope> = sorted
                .into_iter()
                .filter(|e| fresh.contains(&(e.source.clone(), e.id.clone())))
                .collect();
            bind_columns(sqlx::query_as::<_, Returned>(EVENTS_INSERT), &new)
                .fetch_all(&mut *tx)
                .await?
                .len()
        }
    };
    tx.commit().await?;
    Ok(new)
}

type Returned = (String, String);

/// The events in (source, id) order, as `insert_events` sorts them.
fn sorted(events: &[Envelope]) -> Vec<&Envelope> {
    let mut sorted: Vec<&Envelope> = events.iter().collect();
    sorted.sort_by(|a, b| (&a.source, &a.id).cmp(&(&b.source, &b.id)));
    sorted
}

/// Binds the seven column arrays `insert_events` binds.
fn bind_columns<'q, O>(
    query: QueryAs<'q, Postgres, O, PgArguments>,
    events: &[&'q Envelope],
) -> QueryAs<'q, Postgres, O, PgArguments> {
    let received_at: Vec<DateTime<Utc>> = events.iter().map(|e| e.received_at).collect();
    query
        .bind(events.iter().map(|e| e.source.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>())
        .bind(received_at)
        .bind(events.iter().map(|e| Json(&e.headers)).collect::<Vec<_>>())
        .bind(
            events
                .iter()
                .map(|e| e.content_type.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            events
                .iter()
                .map(|e| e.body.as_ref())
                .collect::<Vec<&[u8]>>(),
        )
        .bind(
            events
                .iter()
                .map(|e| std::str::from_utf8(&e.body).ok())
                .collect::<Vec<_>>(),
        )
}

/// 256 JSON bodies of ~1 KiB, of hex digits that pglz cannot shrink much.
fn bodies() -> Vec<Bytes> {
    (0..256)
        .map(|n| {
            let pad: String = (0..30)
                .map(|_| uuid::Uuid::new_v4().simple().to_string())
                .collect();
            Bytes::from(format!(r#"{{"n":{n},"action":"created","pad":"{pad}"}}"#))
        })
        .collect()
}

/// A batch of envelopes with unique ids, received now.
fn batch_of(rows: usize, bodies: &[Bytes]) -> Vec<Envelope> {
    let received_at = Utc::now();
    (0..rows)
        .map(|n| {
            let id = uuid::Uuid::now_v7().to_string();
            Envelope {
                headers: BTreeMap::from([
                    ("content-type".to_owned(), "application/json".to_owned()),
                    ("user-agent".to_owned(), "bench-partitions".to_owned()),
                    ("x-delivery".to_owned(), id.clone()),
                ]),
                id,
                source: "github".to_owned(),
                received_at,
                content_type: Some("application/json".to_owned()),
                body: bodies[n % bodies.len()].clone(),
            }
        })
        .collect()
}

/// Rows, and bytes of webhook_events (all its partitions) and of webhook_event_keys.
async fn sizes(stack: &TestStack) -> anyhow::Result<(i64, i64, i64)> {
    let (rows, events, keys): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM webhook_events),
                CASE WHEN (SELECT relkind FROM pg_class WHERE oid = 'webhook_events'::regclass) = 'p'
                     THEN (SELECT coalesce(sum(pg_total_relation_size(relid)), 0)::bigint FROM pg_partition_tree('webhook_events'))
                     ELSE pg_total_relation_size('webhook_events') END,
                coalesce(pg_total_relation_size(to_regclass('webhook_event_keys')), 0)",
    )
    .fetch_one(&stack.db)
    .await?;
    Ok((rows, events, keys))
}

/// EXPLAIN (ANALYZE, BUFFERS) of one batch of each statement of the variant (after a batch
/// written the usual way, so plans and caches are warm), rolled back.
async fn explain(subject: &Subject, args: &InsertArgs, bodies: &[Bytes]) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect(&subject.stack.database_url).await?;
    write_batch(
        &mut conn,
        subject.variant,
        &batch_of(args.batch as usize, bodies),
    )
    .await?;
    let events = batch_of(args.batch as usize, bodies);
    let sorted = sorted(&events);
    let mut tx = conn.begin().await?;
    println!(
        "\nEXPLAIN (ANALYZE, BUFFERS) of one batch, {}:",
        subject.variant.name()
    );
    for statement in subject.variant.statements() {
        let text = format!("EXPLAIN (ANALYZE, BUFFERS) {statement}");
        let query = sqlx::query_as::<_, (String,)>(&text);
        let lines: Vec<(String,)> = if *statement == KEYS_INSERT {
            query
                .bind(sorted.iter().map(|e| e.source.as_str()).collect::<Vec<_>>())
                .bind(sorted.iter().map(|e| e.id.as_str()).collect::<Vec<_>>())
                .bind(sorted.iter().map(|e| e.received_at).collect::<Vec<_>>())
                .fetch_all(&mut *tx)
                .await?
        } else {
            bind_columns(query, &sorted).fetch_all(&mut *tx).await?
        };
        for (line,) in lines {
            println!("    {line}");
        }
    }
    tx.rollback().await?;
    Ok(())
}
