use super::*;
use crate::testing::{FakeQueue, attribute, envelope};

/// A dead-lettered envelope of `source`: with `reason` as the worker would send it, without
/// one as SQS moves it after maxReceiveCount.
fn dead(fake: &FakeQueue, source: &str, reason: Option<&str>) -> InboundMessage {
    let mut event = envelope(&format!("{source}-{}", reason.unwrap_or("none")));
    event.source = source.to_owned();
    let mut message = fake.message(&event.to_json());
    message
        .attributes
        .insert("source".into(), attribute("String", source));
    if let Some(reason) = reason {
        message
            .attributes
            .insert("poison_reason".into(), attribute("String", reason));
    }
    message
}

fn settings(dry_run: bool) -> ScanSettings {
    ScanSettings {
        visibility: Duration::from_secs(600),
        dry_run,
        per_second: None,
        progress_every: Duration::from_secs(1),
        max_held: MAX_HELD,
    }
}

fn filter(args: &[&str]) -> Filter {
    Filter::new(&crate::testing::redrive_args(args)).expect("valid filters")
}

/// A DLQ with a, b (each with a reason and without) twice over; returns it and the ids of a's.
fn dlq_of_two_sources() -> (FakeQueue, Vec<String>) {
    let dlq = FakeQueue::default();
    let mut a_ids = Vec::new();
    let mut messages = Vec::new();
    for _ in 0..2 {
        for (source, reason) in [
            ("a", Some("23514 refuse")),
            ("b", Some("not a valid envelope")),
            ("a", None),
            ("b", None),
        ] {
            let message = dead(&dlq, source, reason);
            if source == "a" {
                a_ids.push(message.receipt.message_id.clone());
            }
            messages.push(message);
        }
    }
    dlq.push_messages(messages);
    (dlq, a_ids)
}

fn released(dlq: &FakeQueue) -> Vec<String> {
    let mut ids: Vec<String> = dlq
        .state()
        .visibility_changes
        .iter()
        .filter(|(_, visibility)| visibility.is_zero())
        .map(|(id, _)| id.clone())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(start_paused = true)]
async fn only_matching_messages_move_without_their_reason_and_the_rest_go_back() {
    let (dlq, mut a_ids) = dlq_of_two_sources();
    let main = FakeQueue::default();
    let report = scan(
        &Queue::new(dlq.clone()),
        &main,
        &filter(&["--source", "a"]),
        &settings(false),
        &CancellationToken::new(),
    )
    .await
    .expect("scanned");
    assert_eq!((report.scanned, report.moved, report.released), (8, 4, 4));
    assert_eq!(report.end, End::Drained);
    let sent = main.state().sent.clone();
    let mut sent_ids: Vec<String> = sent.iter().map(|m| m.receipt.message_id.clone()).collect();
    sent_ids.sort();
    a_ids.sort();
    assert_eq!(sent_ids, a_ids);
    assert!(
        sent.iter()
            .all(|m| !m.attributes.contains_key("poison_reason")
                && m.attributes.contains_key("source")),
        "copies keep their attributes but the reason"
    );
    let mut deleted = dlq.deleted();
    deleted.sort();
    assert_eq!(deleted, a_ids, "sent, then deleted");
    assert_eq!(released(&dlq).len(), 4, "b's given back");
    assert!(released(&dlq).iter().all(|id| !a_ids.contains(id)));
    assert_eq!(
        report.matched,
        BTreeMap::from([
            (("a".to_owned(), "23514 refuse".to_owned()), 2),
            (("a".to_owned(), "max-receives".to_owned()), 2),
        ])
    );
}

#[tokio::test(start_paused = true)]
async fn a_dry_run_counts_by_source_and_reason_and_moves_nothing() {
    let (dlq, _) = dlq_of_two_sources();
    let main = FakeQueue::default();
    let report = scan(
        &Queue::new(dlq.clone()),
        &main,
        &filter(&["--reason", "max-receives"]),
        &settings(true),
        &CancellationToken::new(),
    )
    .await
    .expect("scanned");
    assert_eq!((report.scanned, report.moved, report.released), (8, 0, 8));
    assert!(main.state().sent.is_empty() && dlq.deleted().is_empty());
    assert_eq!(
        report.matched,
        BTreeMap::from([
            (("a".to_owned(), "max-receives".to_owned()), 2),
            (("b".to_owned(), "max-receives".to_owned()), 2),
        ])
    );
}

#[tokio::test(start_paused = true)]
async fn a_copy_sqs_refuses_leaves_its_message_in_the_dlq() {
    let (dlq, a_ids) = dlq_of_two_sources();
    let main = FakeQueue::default();
    main.state().fail_sends_of.push(a_ids[0].clone());
    let report = scan(
        &Queue::new(dlq.clone()),
        &main,
        &filter(&["--source", "a"]),
        &settings(false),
        &CancellationToken::new(),
    )
    .await
    .expect("scanned");
    assert_eq!((report.moved, report.unsent, report.released), (3, 1, 5));
    assert!(!dlq.deleted().contains(&a_ids[0]), "not sent, not deleted");
    assert!(released(&dlq).contains(&a_ids[0]), "given back");
}

#[tokio::test(start_paused = true)]
async fn messages_seen_again_end_the_scan() {
    let dlq = FakeQueue::default();
    let kept: Vec<InboundMessage> = (0..10).map(|_| dead(&dlq, "b", None)).collect();
    // As if their visibility ran out: three of the same messages, received again.
    dlq.push_messages([kept.clone(), kept[..3].to_vec()].concat());
    let report = scan(
        &Queue::new(dlq.clone()),
        &FakeQueue::default(),
        &filter(&["--source", "a"]),
        &settings(false),
        &CancellationToken::new(),
    )
    .await
    .expect("scanned");
    assert_eq!(report.end, End::SeenAgain);
    assert_eq!((report.scanned, report.released), (10, 10));
    let handles: Vec<String> = dlq
        .state()
        .visibility_changes
        .iter()
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(handles.len(), 10, "each given back once");
}

#[tokio::test(start_paused = true)]
async fn the_scan_stops_at_the_held_limit_and_gives_everything_back() {
    let (dlq, _) = dlq_of_two_sources();
    let report = scan(
        &Queue::new(dlq.clone()),
        &FakeQueue::default(),
        &filter(&["--source", "nobody"]),
        &ScanSettings {
            max_held: 5,
            ..settings(false)
        },
        &CancellationToken::new(),
    )
    .await
    .expect("scanned");
    assert_eq!(report.end, End::HeldLimit);
    assert_eq!((report.scanned, report.released), (8, 8));
    let stopped = CancellationToken::new();
    stopped.cancel();
    let report = scan(
        &Queue::new(FakeQueue::default()),
        &FakeQueue::default(),
        &Filter::default(),
        &settings(false),
        &stopped,
    )
    .await
    .expect("stopped");
    assert_eq!((report.end, report.scanned), (End::Interrupted, 0));
}

#[tokio::test(start_paused = true)]
async fn sends_are_paced_in_chunks_no_larger_than_a_second_s_worth() {
    let (dlq, _) = dlq_of_two_sources();
    let main = FakeQueue::default();
    // governor's clock is real time (the fake's receives run on tokio's paused clock).
    let started = std::time::Instant::now();
    let report = scan(
        &Queue::new(dlq.clone()),
        &main,
        &Filter::default(),
        &ScanSettings {
            per_second: NonZeroU32::new(4),
            ..settings(false)
        },
        &CancellationToken::new(),
    )
    .await
    .expect("scanned");
    // 8 at 4/s with a burst of 4: the second 4 wait a second.
    assert_eq!(report.moved, 8);
    assert_eq!(main.state().sent.len(), 8);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "{took:?}");
}
