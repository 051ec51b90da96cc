//! `FAIR_QUEUE_GROUPS` against real LocalStack: with it, ingest sends each webhook to a
//! standard queue with a MessageGroupId (the source, or `FIFO_GROUP_HEADER`'s value), which
//! makes the queue an SQS fair queue; without it, no group. LocalStack 4.13.1 keeps the
//! group and returns it, but delivers in send order whatever the groups (AWS reorders by
//! group only under a noisy group; see the README's "Fair queues").

use std::collections::BTreeMap;

use aws_sdk_sqs::types::MessageSystemAttributeName;
use e2e_tests::{Service, TestStack};

/// Posts one webhook from `source` with `headers`; its status.
async fn post(ingest: &Service, source: &str, headers: &[(&str, &str)]) -> u16 {
    let mut request = reqwest::Client::new()
        .post(ingest.url(&format!("/webhooks/{source}")))
        .header("content-type", "application/json")
        .body(r#"{"n":1}"#);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("POST").status().as_u16()
}

/// The MessageGroupId of every message on the queue, by its `source` attribute (`-` when it
/// has none).
async fn groups_by_source(stack: &TestStack, expected: usize) -> BTreeMap<String, Vec<String>> {
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut seen = 0;
    for _ in 0..10 {
        if seen >= expected {
            break;
        }
        let output = stack
            .sqs
            .receive_message()
            .queue_url(&stack.queue_url)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
            .wait_time_seconds(2)
            .send()
            .await
            .expect("ReceiveMessage");
        for message in output.messages.unwrap_or_default() {
            seen += 1;
            let source = message
                .message_attributes()
                .and_then(|attributes| attributes.get("source"))
                .and_then(|value| value.string_value())
                .unwrap_or_default()
                .to_owned();
            let group = message
                .attributes()
                .and_then(|attributes| attributes.get(&MessageSystemAttributeName::MessageGroupId))
                .cloned()
                .unwrap_or_else(|| "-".to_owned());
            groups.entry(source).or_default().push(group);
        }
    }
    assert_eq!(seen, expected, "every webhook on the queue: {groups:?}");
    groups
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fair_queue_groups_each_message_carries_its_source_as_group() {
    let stack = TestStack::new("fair-groups").await;
    let ingest = stack
        .spawn_ingest(&[
            ("FAIR_QUEUE_GROUPS", "true"),
            ("FIFO_GROUP_HEADER", "x-tenant"),
        ])
        .await;
    assert_eq!(post(&ingest, "flood", &[]).await, 202);
    assert_eq!(post(&ingest, "flood", &[]).await, 202);
    assert_eq!(post(&ingest, "quiet", &[]).await, 202);
    assert_eq!(
        post(&ingest, "shared", &[("x-tenant", "tenant-7")]).await,
        202
    );
    let groups = groups_by_source(&stack, 4).await;
    assert_eq!(
        groups,
        BTreeMap::from([
            (
                "flood".to_owned(),
                vec!["flood".to_owned(), "flood".to_owned()]
            ),
            ("quiet".to_owned(), vec!["quiet".to_owned()]),
            ("shared".to_owned(), vec!["tenant-7".to_owned()]),
        ])
    );
    drop(ingest);
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_it_a_standard_queue_gets_no_group() {
    let stack = TestStack::new("no-fair-groups").await;
    let ingest = stack.spawn_ingest(&[]).await;
    assert_eq!(post(&ingest, "flood", &[]).await, 202);
    let groups = groups_by_source(&stack, 1).await;
    assert_eq!(
        groups,
        BTreeMap::from([("flood".to_owned(), vec!["-".to_owned()])])
    );
    drop(ingest);
    stack.cleanup().await;
}
