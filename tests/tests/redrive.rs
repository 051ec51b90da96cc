//! `worker redrive` against LocalStack with the real binary: filtered redrives (by source, by
//! reason, a dry run) move exactly what they select and give the rest back; `--status` and
//! `--cancel` see and stop a slow move task, and a second redrive follows the running task
//! instead of failing.

use std::time::Duration;

use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName, SendMessageBatchRequestEntry};
use e2e_tests::{TestStack, eventually};

/// A string message attribute.
fn attribute(value: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .expect("data type set")
}

/// Puts `count` envelopes of `source` on the DLQ as the worker dead-letters them (with
/// `reason`), or as SQS moves them after maxReceiveCount (without one).
async fn dead_letter(stack: &TestStack, source: &str, reason: Option<&str>, count: usize) {
    for chunk in TestStack::envelopes(source, count).chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, envelope)| {
                let entry = SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(envelope.to_json())
                    .message_attributes("source", attribute(source))
                    .message_attributes("event_id", attribute(&envelope.id));
                match reason {
                    Some(reason) => entry.message_attributes("poison_reason", attribute(reason)),
                    None => entry,
                }
                .build()
                .expect("id and body set")
            })
            .collect();
        let output = stack
            .sqs
            .send_message_batch()
            .queue_url(&stack.dlq_url)
            .set_entries(Some(entries))
            .send()
            .await
            .expect("SendMessageBatch to the DLQ");
        assert!(output.failed().is_empty(), "{:?}", output.failed());
    }
}

/// The sources and reasons of every message now on the main queue (each received once).
async fn on_main_queue(stack: &TestStack) -> Vec<(String, Option<String>)> {
    let mut found = Vec::new();
    let mut empty = 0;
    while empty < 2 {
        let output = stack
            .sqs
            .receive_message()
            .queue_url(&stack.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_attribute_names("All")
            .send()
            .await
            .expect("ReceiveMessage");
        let messages = output.messages();
        empty = if messages.is_empty() { empty + 1 } else { 0 };
        for message in messages {
            let text = |name: &str| {
                message
                    .message_attributes()
                    .and_then(|attributes| attributes.get(name)?.string_value())
                    .map(str::to_owned)
            };
            found.push((text("source").unwrap_or_default(), text("poison_reason")));
        }
    }
    found.sort();
    found
}

async fn redrive(stack: &TestStack, args: &[&str]) -> String {
    let (status, output) = stack
        .run_worker_command(&[&["redrive"], args].concat(), &[])
        .await;
    assert!(status.success(), "redrive {args:?} failed:\n{output}");
    output
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_redrives_move_only_what_they_select() {
    let stack = TestStack::new("redrive-filters").await;
    dead_letter(&stack, "a", Some("23514 refuse_a"), 3).await;
    dead_letter(&stack, "a", None, 2).await;
    dead_letter(&stack, "b", Some("not a valid envelope: x"), 4).await;
    dead_letter(&stack, "b", None, 1).await;

    let output = redrive(&stack, &["--source", "a", "--dry-run"]).await;
    assert!(
        output.contains("dry run: 10 scanned, 5 match; nothing moved, 10 given back"),
        "{output}"
    );
    assert!(output.contains("3  a  23514 refuse_a"), "{output}");
    assert!(output.contains("2  a  max-receives"), "{output}");
    assert_eq!(stack.messages_in(&stack.queue_url).await, 0);
    assert_eq!(stack.messages_in(&stack.dlq_url).await, 10);

    let output = redrive(&stack, &["--source", "a"]).await;
    assert!(
        output.contains("5 moved to the main queue, 5 given back to the DLQ (10 scanned)"),
        "{output}"
    );
    assert_eq!(stack.messages_in(&stack.dlq_url).await, 5);

    // What was given back is visible at once: the next redrive scans it all again.
    let output = redrive(&stack, &["--reason", "max-receives"]).await;
    assert!(
        output.contains("1 moved to the main queue, 4 given back to the DLQ (5 scanned)"),
        "{output}"
    );
    assert_eq!(stack.messages_in(&stack.dlq_url).await, 4);

    let moved = on_main_queue(&stack).await;
    let expected: Vec<(String, Option<String>)> = [("a", 5), ("b", 1)]
        .into_iter()
        .flat_map(|(source, n)| std::iter::repeat_n((source.to_owned(), None), n))
        .collect();
    assert_eq!(moved, expected, "a's and b's max-receives, without reasons");

    let output = redrive(&stack, &["--reason", "not a valid", "--source", "b"]).await;
    assert!(output.contains("4 moved to the main queue"), "{output}");
    assert_eq!(stack.messages_in(&stack.dlq_url).await, 0);
    stack.cleanup().await;
}

/// The status of the DLQ's newest move task, from ListMessageMoveTasks.
async fn newest_task_status(stack: &TestStack, dlq_arn: &str) -> Option<String> {
    let output = stack
        .sqs
        .list_message_move_tasks()
        .source_arn(dlq_arn)
        .send()
        .await
        .expect("ListMessageMoveTasks");
    output.results().first()?.status().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_cancel_see_and_stop_a_slow_move_that_a_second_redrive_follows() {
    let stack = TestStack::new("redrive-cancel").await;
    dead_letter(&stack, "slow", None, 40).await;
    let dlq_arn = stack
        .sqs
        .get_queue_attributes()
        .queue_url(&stack.dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("GetQueueAttributes")
        .attributes
        .and_then(|mut attributes| attributes.remove(&QueueAttributeName::QueueArn))
        .expect("the DLQ's ARN");

    let output = redrive(&stack, &["--status"]).await;
    assert!(output.contains("no message move tasks"), "{output}");

    let slow = stack.run_worker_command(&["redrive", "--max-per-second", "1"], &[]);
    let meanwhile = async {
        eventually(Duration::from_secs(20), "a running move task", || async {
            Ok(
                (newest_task_status(&stack, &dlq_arn).await.as_deref() == Some("RUNNING"))
                    .then_some(()),
            )
        })
        .await
        .expect("the move starts");
        let second = stack.run_worker_command(&["redrive"], &[]);
        let stop = async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            let status = redrive(&stack, &["--status"]).await;
            let cancel = redrive(&stack, &["--cancel"]).await;
            (status, cancel)
        };
        tokio::join!(second, stop)
    };
    let ((slow_status, slow_output), ((second_status, second_output), (status, cancel))) =
        tokio::join!(slow, meanwhile);

    assert!(status.contains("RUNNING: "), "{status}");
    assert!(status.contains(" moved, started "), "{status}");
    assert!(
        cancel.contains("cancelled the move from") && cancel.contains("messages moved"),
        "{cancel}"
    );
    assert!(
        second_output.contains("a move is already running for this DLQ; following it"),
        "{second_output}"
    );
    for (status, output) in [(slow_status, &slow_output), (second_status, &second_output)] {
        assert!(
            !status.success(),
            "a cancelled move is no success:\n{output}"
        );
        assert!(output.contains("the move ended CANCELLED"), "{output}");
    }
    let left = stack.messages_in(&stack.dlq_url).await;
    assert!((1..40).contains(&left), "some moved, not all: {left} left");

    let output = redrive(&stack, &["--cancel"]).await;
    assert!(output.contains("no move task is running"), "{output}");
    let output = redrive(&stack, &["--status"]).await;
    assert!(output.contains("CANCELLED: "), "{output}");
    stack.cleanup().await;
}
