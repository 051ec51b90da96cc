//! The custom-handler example (`worker/examples/upsert_orders.rs`) run as a real binary:
//! events are stored as usual and an `orders` row is upserted from their payloads in the same
//! transaction, keeping the most recently received status.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use e2e_tests::TestStack;
use webhook_shared::envelope::Envelope;

fn order_event(order_id: &str, status: &str, received_ago: TimeDelta) -> Envelope {
    let mut envelope = TestStack::envelopes("shop", 1).remove(0);
    envelope.received_at = Utc::now() - received_ago;
    envelope.body = serde_json::json!({ "order_id": order_id, "status": status })
        .to_string()
        .into();
    envelope
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_handler_upserts_orders_in_the_same_transaction() {
    let stack = TestStack::new("custom-handler").await;
    let events = [
        order_event("A-1", "paid", TimeDelta::seconds(10)),
        order_event("B-2", "created", TimeDelta::seconds(5)),
        // Received earlier than "paid": must never overwrite it.
        order_event("A-1", "created", TimeDelta::seconds(60)),
    ];
    // Standard SQS does not keep order; whichever A-1 event is written last, the guard on
    // updated_at keeps the status received most recently.
    stack
        .send_raw(
            &stack.queue_url,
            events.iter().map(Envelope::to_json).collect(),
        )
        .await;
    let worker = stack
        .spawn_worker_binary("examples/upsert_orders", &[("WORKER_CONCURRENCY", "1")])
        .await;
    stack.wait_for_rows(3, Duration::from_secs(30)).await;
    let mut orders: Vec<(String, String)> = sqlx::query_as("SELECT id, status FROM orders")
        .fetch_all(&stack.db)
        .await
        .expect("the example created and filled orders");
    orders.sort();
    assert_eq!(
        orders,
        vec![
            ("A-1".to_owned(), "paid".to_owned()),
            ("B-2".to_owned(), "created".to_owned())
        ]
    );
    drop(worker);
    stack.cleanup().await;
}
