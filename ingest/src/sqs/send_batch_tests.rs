//! [`SqsBatchSender`] driven through the real SDK client against a fake SQS endpoint: a local
//! HTTP server that speaks enough of SQS's JSON protocol for `SendMessageBatch`, records every
//! call's entries and answers as each test's rule says.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use aws_sdk_sqs::config::retry::RetryConfig;
use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::*;
use crate::sqs::publisher::payload_size;

/// How the fake answers one call, given its entries.
enum Answer {
    /// 200, every entry accepted.
    AcceptAll,
    /// The whole call refused: HTTP status and `x-amzn-query-error` code.
    Refuse(u16, &'static str),
}

/// The entries of every call the fake received, in order.
type Calls = Arc<Mutex<Vec<Vec<Value>>>>;

/// Starts a fake SQS answering by `rule`; returns a sender for `queue_name` on it and the
/// record of its calls.
async fn fake_sqs(
    queue_name: &str,
    rule: impl Fn(&[Value]) -> Answer + Send + Sync + 'static,
) -> (SqsBatchSender, Calls) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let calls = Calls::default();
    let rule = Arc::new(rule);
    let recorded = Arc::clone(&calls);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (rule, recorded) = (Arc::clone(&rule), Arc::clone(&recorded));
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let (rule, recorded) = (Arc::clone(&rule), Arc::clone(&recorded));
                async move { Ok::<_, Infallible>(answer(request, &*rule, &recorded).await) }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "fake"))
        .endpoint_url(format!("http://{addr}"))
        .retry_config(RetryConfig::disabled())
        .build();
    let queue_url = format!("http://{addr}/000000000000/{queue_name}");
    let sender = SqsBatchSender::new(Client::from_conf(config), queue_url, false, None);
    (sender, calls)
}

async fn answer(
    request: Request<Incoming>,
    rule: &(dyn Fn(&[Value]) -> Answer + Send + Sync),
    recorded: &Calls,
) -> Response<Full<Bytes>> {
    let body = request
        .into_body()
        .collect()
        .await
        .expect("request body")
        .to_bytes();
    let call: Value = serde_json::from_slice(&body).expect("a JSON request");
    let entries = call["Entries"].as_array().cloned().unwrap_or_default();
    let reply = match rule(&entries) {
        Answer::AcceptAll => {
            let successful: Vec<Value> = entries
                .iter()
                .map(|entry| json!({"Id": entry["Id"], "MessageId": "m", "MD5OfMessageBody": "0"}))
                .collect();
            Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/x-amz-json-1.0")
                .body(Full::from(
                    json!({ "Successful": successful, "Failed": [] }).to_string(),
                ))
        }
        Answer::Refuse(status, code) => {
            let kind = code.rsplit('.').next().unwrap_or(code);
            let fault = if status >= 500 { "Receiver" } else { "Sender" };
            Response::builder()
                .status(status)
                .header("content-type", "application/x-amz-json-1.0")
                .header("x-amzn-query-error", format!("{code};{fault}"))
                .body(Full::from(
                    json!({"__type": format!("com.amazonaws.sqs#{kind}"), "message": "refused"})
                        .to_string(),
                ))
        }
    };
    recorded.lock().expect("calls").push(entries);
    reply.expect("a valid response")
}

fn message(event_id: &str, body: &str) -> OutgoingMessage {
    OutgoingMessage {
        event_id: event_id.to_owned(),
        source: "acme".to_owned(),
        group_id: "acme".to_owned(),
        body: body.to_owned(),
        extended_payload_size: None,
        trace: None,
    }
}

fn sizes(calls: &Calls) -> Vec<usize> {
    calls.lock().expect("calls").iter().map(Vec::len).collect()
}

/// Refuses any call carrying an entry whose body says `poison`, as SQS refuses a whole call
/// for one invalid entry.
fn refuse_poison(code: &'static str) -> impl Fn(&[Value]) -> Answer + Send + Sync + 'static {
    move |entries| {
        let poisoned = entries
            .iter()
            .any(|entry| entry["MessageBody"].as_str() == Some("poison"));
        if poisoned {
            Answer::Refuse(400, code)
        } else {
            Answer::AcceptAll
        }
    }
}

#[tokio::test]
async fn a_call_refused_for_one_entry_is_split_and_only_that_entry_is_refused() {
    for code in [
        "InvalidParameterValue",
        "InvalidMessageContents",
        "AWS.SimpleQueueService.BatchRequestTooLong",
    ] {
        let (sender, calls) = fake_sqs("q", refuse_poison(code)).await;
        let (a, bad, c) = (
            message("a", "fine"),
            message("b", "poison"),
            message("c", "ok"),
        );
        let outcomes = sender.send_batch(&[&a, &bad, &c]).await;
        assert_eq!(
            outcomes,
            Ok(vec![
                EntryOutcome::Accepted,
                EntryOutcome::Reject,
                EntryOutcome::Accepted
            ]),
            "{code}"
        );
        assert_eq!(
            sizes(&calls),
            [3, 1, 1, 1],
            "{code}: one call, then one per entry"
        );
    }
}

#[tokio::test]
async fn a_call_refused_for_the_queue_is_not_split() {
    let (sender, calls) = fake_sqs("q", |_: &[Value]| {
        Answer::Refuse(400, "AWS.SimpleQueueService.NonExistentQueue")
    })
    .await;
    let (a, b) = (message("a", "one"), message("b", "two"));
    assert_eq!(
        sender.send_batch(&[&a, &b]).await,
        Err(EntryOutcome::Reject)
    );
    assert_eq!(sizes(&calls), [2]);
}

#[tokio::test]
async fn a_call_that_may_pass_later_is_retried_whole_not_split() {
    let (sender, calls) = fake_sqs("q", |_: &[Value]| Answer::Refuse(500, "InternalError")).await;
    let (a, b) = (message("a", "one"), message("b", "two"));
    assert_eq!(sender.send_batch(&[&a, &b]).await, Err(EntryOutcome::Retry));
    assert_eq!(sizes(&calls), [2]);
}

#[tokio::test]
async fn a_lone_entry_refused_is_refused_without_another_call() {
    let (sender, calls) = fake_sqs("q", refuse_poison("InvalidParameterValue")).await;
    let bad = message("a", "poison");
    assert_eq!(sender.send_batch(&[&bad]).await, Err(EntryOutcome::Reject));
    assert_eq!(sizes(&calls), [1]);
}

#[tokio::test]
async fn entries_carry_exactly_the_attributes_that_payload_size_counts() {
    let (sender, calls) = fake_sqs("q", |_: &[Value]| Answer::AcceptAll).await;
    let sent = message("évènement-1", "{\"note\":\"ünïcode\"}");
    assert_eq!(
        sender.send_batch(&[&sent]).await,
        Ok(vec![EntryOutcome::Accepted])
    );
    let entry = calls.lock().expect("calls")[0][0].clone();
    let attributes = entry["MessageAttributes"].as_object().expect("attributes");
    let attribute_bytes: usize = attributes
        .iter()
        .map(|(name, value)| {
            name.len()
                + value["DataType"].as_str().expect("type").len()
                + value["StringValue"].as_str().expect("value").len()
        })
        .sum();
    let body_bytes = entry["MessageBody"].as_str().expect("body").len();
    assert_eq!(body_bytes + attribute_bytes, payload_size(&sent));
    assert_eq!(attributes["event_id"]["StringValue"], "évènement-1");
    assert_eq!(attributes["source"]["StringValue"], "acme");
}

#[tokio::test]
async fn fifo_deduplication_ids_stay_within_128_characters() {
    let (sender, calls) = fake_sqs("q.fifo", |_: &[Value]| Answer::AcceptAll).await;
    let long = "x".repeat(255);
    let (short, at_limit, over) = (
        message("evt_1", "a"),
        message(&"y".repeat(128 - "acme/".len()), "b"),
        message(&long, "c"),
    );
    assert!(sender.send_batch(&[&short, &at_limit, &over]).await.is_ok());
    let entries = calls.lock().expect("calls")[0].clone();
    let ids: Vec<&str> = entries
        .iter()
        .map(|entry| entry["MessageDeduplicationId"].as_str().expect("dedup id"))
        .collect();
    assert_eq!(ids[0], "acme/evt_1");
    assert_eq!(ids[1], format!("acme/{}", "y".repeat(123)));
    assert_eq!(
        ids[2],
        format!(
            "sha256:{}",
            hex::encode(Sha256::digest(format!("acme\0{long}")))
        )
    );
    assert!(ids[2].len() <= MAX_DEDUPLICATION_ID_CHARS);
    // The event id itself still travels whole, as the attribute.
    assert_eq!(
        entries[2]["MessageAttributes"]["event_id"]["StringValue"],
        long
    );
    assert_eq!(entries[2]["MessageGroupId"], "acme");
}

#[test]
fn long_event_ids_differing_anywhere_get_different_deduplication_ids() {
    let base = "a".repeat(200);
    let other = format!("{}b", &base[..199]);
    assert_ne!(deduplication_id("s", &base), deduplication_id("s", &other));
    assert_eq!(
        deduplication_id("s", &base),
        deduplication_id("s", &base.clone())
    );
    assert_eq!(deduplication_id("s", &"z".repeat(129)).len(), 71);
}

#[test]
fn two_sources_sending_one_event_id_are_not_deduplicated_together() {
    assert_ne!(
        deduplication_id("github", "1"),
        deduplication_id("stripe", "1")
    );
    let long = "x".repeat(200);
    assert_ne!(
        deduplication_id("github", &long),
        deduplication_id("stripe", &long)
    );
    // The zero byte keeps ("ab", "c") and ("a", "bc") apart once hashed.
    assert_ne!(
        deduplication_id("ab", &format!("c{long}")),
        deduplication_id("a", &format!("bc{long}"))
    );
}
