//! The latency benchmark's floor: the least one webhook's trip can cost with the same
//! services, done the plainest way. A producer sends each message with one SDK
//! `SendMessage`; consumers keep long-polling `ReceiveMessage` (up to 10 messages, 20 s
//! wait), and for each message received, in a task of its own, run one autocommit `INSERT`
//! of its tag into `floor_events` (whose trigger notifies the commit, see `latency.rs`) and
//! then one `DeleteMessage`. No batching, no window, no limits: what the pipeline adds beyond
//! this is its own cost.

use std::time::Duration;

use anyhow::Context as _;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;

use crate::TestStack;

/// Long-poll wait of each receive.
const WAIT_SECONDS: i32 = 20;

/// The floor's queue and consumers.
#[derive(Debug)]
pub struct Floor {
    /// The floor's queue.
    pub queue_url: String,
    sqs: aws_sdk_sqs::Client,
    stop: CancellationToken,
    consumers: tokio::task::JoinSet<()>,
}

impl Floor {
    /// Creates the queue `{stack.name}-floor` and starts `consumers` receive loops, writing
    /// through a pool of `connections`.
    pub async fn start(
        stack: &TestStack,
        consumers: usize,
        connections: u32,
    ) -> anyhow::Result<Self> {
        let queue_url = stack
            .sqs
            .create_queue()
            .queue_name(format!("{}-floor", stack.name))
            .send()
            .await
            .context("creating the floor's queue")?
            .queue_url
            .context("CreateQueue returned no URL")?;
        let db = PgPoolOptions::new()
            .max_connections(connections)
            .connect(&stack.database_url)
            .await
            .context("the floor's pool")?;
        let stop = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..consumers {
            tasks.spawn(consume(
                stack.sqs.clone(),
                queue_url.clone(),
                db.clone(),
                stop.clone(),
            ));
        }
        Ok(Self {
            queue_url,
            sqs: stack.sqs.clone(),
            stop,
            consumers: tasks,
        })
    }

    /// Sends one message whose body is `{"tag": tag}`; whether SQS accepted it.
    pub fn send(&self, tag: &str) -> impl Future<Output = bool> + Send + 'static + use<> {
        let call = self
            .sqs
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(format!(r#"{{"tag":"{tag}"}}"#));
        async move { call.send().await.is_ok() }
    }

    /// Stops the consumers (their long polls are abandoned).
    pub async fn stop(mut self) {
        self.stop.cancel();
        self.consumers.abort_all();
        while self.consumers.join_next().await.is_some() {}
    }
}

/// One receive loop: every message in a task of its own, insert then delete.
async fn consume(sqs: aws_sdk_sqs::Client, queue_url: String, db: PgPool, stop: CancellationToken) {
    while !stop.is_cancelled() {
        let received = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(WAIT_SECONDS)
            .send()
            .await;
        let Ok(received) = received else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        for message in received.messages.unwrap_or_default() {
            let (sqs, queue_url, db) = (sqs.clone(), queue_url.clone(), db.clone());
            tokio::spawn(async move {
                let (Some(body), Some(handle)) = (message.body, message.receipt_handle) else {
                    return;
                };
                let Ok(parsed) = serde_json::from_str::<serde_json::Value>(&body) else {
                    return;
                };
                let tag = parsed["tag"].as_str().unwrap_or_default().to_owned();
                let inserted = sqlx::query(
                    "INSERT INTO floor_events (tag, body) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                )
                .bind(&tag)
                .bind(&parsed)
                .execute(&db)
                .await;
                if inserted.is_ok() {
                    let _ = sqs
                        .delete_message()
                        .queue_url(&queue_url)
                        .receipt_handle(handle)
                        .send()
                        .await;
                }
            });
        }
    }
}
