//! `worker replay` with the custom-handler example (`worker/examples/upsert_orders.rs`),
//! against real PostgreSQL and LocalStack: stored events in two partitions rebuild the
//! `orders` table after it was emptied; `--dry-run` counts and changes nothing; a run with
//! several writers stopped midway (SIGINT) goes on from its cursor without running any event
//! twice or skipping one, its counts exact; several of its transactions were in progress at
//! once, never more than `--concurrency`; `--id` replays one event; within a connection
//! budget the replay takes its share of the lease.

use std::time::Duration;

use chrono::{Days, Utc};
use e2e_tests::probes::DRAIN_TIMEOUT;
use e2e_tests::{TestStack, eventually};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use webhook_shared::envelope::Envelope;

const EXAMPLE: &str = "examples/upsert_orders";

/// An order event of `source`, received `days_ago` days ago.
fn order(source: &str, order_id: &str, days_ago: u64) -> Envelope {
    let mut envelope = TestStack::envelopes(source, 1).remove(0);
    envelope.received_at = Utc::now() - Days::new(days_ago);
    envelope.body = serde_json::json!({ "order_id": order_id, "status": "paid" })
        .to_string()
        .into();
    envelope
}

/// How many times each order was written (a trigger counts every insert and update).
async fn writes_per_order(stack: &TestStack) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT id, count(*) FROM order_writes GROUP BY id ORDER BY id")
        .fetch_all(&stack.db)
        .await
        .expect("reading order_writes")
}

/// The most replay transactions seen in progress at once (0 before any).
async fn most_at_once(stack: &TestStack) -> i64 {
    sqlx::query_scalar("SELECT coalesce(max(at_once), 0)::bigint FROM replay_overlap")
        .fetch_one(&stack.db)
        .await
        .expect("reading replay_overlap")
}

/// Events the cursor counts as replayed: its own count and its recorded intervals'.
async fn counted(stack: &TestStack) -> (i64, i64) {
    sqlx::query_as(
        "SELECT (c.done + coalesce(sum(d.done), 0))::bigint, (c.refused + coalesce(sum(d.refused), 0))::bigint
         FROM webhook_replay_cursors c LEFT JOIN webhook_replay_done d ON d.cursor_name = c.name
         GROUP BY c.name, c.done, c.refused",
    )
    .fetch_one(&stack.db)
    .await
    .expect("reading the cursor")
}

async fn orders(stack: &TestStack) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&stack.db)
        .await
        .expect("counting orders")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_rebuilds_the_example_handlers_table_resumably() {
    let stack = TestStack::new("replay").await;
    // 40 shop orders, half received two days ago (another partition), and 5 of another source.
    let mut events: Vec<Envelope> = (0..40)
        .map(|n| order("shop", &format!("S-{n:02}"), if n % 2 == 0 { 2 } else { 0 }))
        .collect();
    events.extend((0..5).map(|n| order("market", &format!("M-{n}"), 0)));
    stack
        .send_raw(
            &stack.queue_url,
            events.iter().map(Envelope::to_json).collect(),
        )
        .await;
    let worker = stack.spawn_worker_binary(EXAMPLE, &[]).await;
    stack.wait_for_rows(45, DRAIN_TIMEOUT).await;
    assert_eq!(orders(&stack).await, 45);
    worker.terminate(Duration::from_secs(30)).await;
    // Every write of an order is counted; every replay transaction takes a shared advisory
    // lock at its first write (held to its end) and records how many transactions hold it
    // then: the transactions in progress at once. A quarter of a second per write keeps
    // transactions long enough to overlap whenever the replay runs several at once.
    for statement in [
        "TRUNCATE orders",
        "CREATE TABLE order_writes (id text NOT NULL)",
        "CREATE TABLE replay_overlap (at_once bigint NOT NULL)",
        "CREATE FUNCTION count_order_write() RETURNS trigger LANGUAGE plpgsql AS
         $$ BEGIN
              INSERT INTO order_writes VALUES (NEW.id);
              PERFORM pg_advisory_xact_lock_shared(4242);
              INSERT INTO replay_overlap SELECT count(*) FROM pg_locks
                WHERE locktype = 'advisory' AND classid = 0 AND objid = 4242 AND objsubid = 1 AND granted;
              PERFORM pg_sleep(0.25);
              RETURN NEW;
            END $$",
        "CREATE TRIGGER count_order_write AFTER INSERT OR UPDATE ON orders
         FOR EACH ROW EXECUTE FUNCTION count_order_write()",
    ] {
        sqlx::query(statement)
            .execute(&stack.db)
            .await
            .unwrap_or_else(|error| panic!("{statement}: {error}"));
    }

    let (status, out) = stack
        .run_command(EXAMPLE, &["replay", "--source", "shop", "--dry-run"], &[])
        .await;
    assert!(status.success(), "{out}");
    assert!(out.contains("40 events would be replayed"), "{out}");
    assert_eq!(orders(&stack).await, 0, "a dry run changes nothing");

    // Stopped midway: up to three transactions at once, ten events a second, in batches of
    // two (each transaction takes half a second: the limit grows past 1 after a few).
    let args = [
        "replay",
        "--source",
        "shop",
        "--batch-size",
        "2",
        "--concurrency",
        "3",
        "--max-per-second",
        "10",
    ];
    // Within a connection budget, the replay joins the workers' lease.
    let mut first = stack.start_command(EXAMPLE, &args, &[("DATABASE_CONNECTION_BUDGET", "4")]);
    eventually(Duration::from_secs(30), "transactions at once", || async {
        Ok((most_at_once(&stack).await >= 2).then_some(()))
    })
    .await
    .expect("the limit grows past 1: several replay transactions in progress at once");
    let leases: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_worker_leases")
        .fetch_one(&stack.db)
        .await
        .expect("reading the leases");
    assert_eq!(leases, 1, "the replay holds a share of the budget");
    let pid = first.id().expect("a running replay");
    kill(Pid::from_raw(pid as i32), Signal::SIGINT).expect("SIGINT");
    let stopped = tokio::time::timeout(Duration::from_secs(20), first.wait())
        .await
        .expect("the replay stops")
        .expect("waiting for it");
    assert!(stopped.success());
    let midway = orders(&stack).await;
    assert!((6..40).contains(&midway), "stopped midway: {midway} orders");
    assert_eq!(
        counted(&stack).await,
        (midway, 0),
        "the cursor and its recorded intervals count exactly what was written"
    );

    // Resumed unpaced, still up to three at once.
    let (status, out) = stack.run_command(EXAMPLE, &args[..7], &[]).await;
    assert!(status.success(), "{out}");
    assert!(out.contains("replay: done"), "{out}");
    assert!(out.contains("limit "), "{out}");
    let writes = writes_per_order(&stack).await;
    assert_eq!(
        writes.len(),
        40,
        "every shop order rebuilt, no market one: {writes:?}"
    );
    assert!(
        writes.iter().all(|(_, n)| *n == 1),
        "none twice: {writes:?}"
    );
    assert_eq!(counted(&stack).await, (40, 0), "exact counts");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_replay_done")
        .fetch_one(&stack.db)
        .await
        .expect("reading webhook_replay_done");
    assert_eq!(left, 0, "a finished cursor has folded every interval");
    let most = most_at_once(&stack).await;
    assert!(
        (2..=3).contains(&most),
        "several transactions at once, never more than --concurrency: {most}"
    );
    let (status, out) = stack.run_command(EXAMPLE, &args[..7], &[]).await;
    assert!(status.success() && out.contains("is finished"), "{out}");

    // One event by id.
    let one = format!("shop/{}", events[3].id);
    let (status, out) = stack
        .run_command(EXAMPLE, &["replay", "--id", &one], &[])
        .await;
    assert!(status.success(), "{out}");
    let writes = writes_per_order(&stack).await;
    assert!(writes.contains(&("S-03".to_owned(), 2)), "{writes:?}");
    stack.cleanup().await;
}
