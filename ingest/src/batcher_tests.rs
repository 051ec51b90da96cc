//! Unit tests for the batcher, with a fake queue behind [`SendBatch`] and paused time.

use std::sync::Mutex;

use super::*;

/// A fake queue: each call takes `latency`; `outcome` decides each entry by its body and
/// how many times that body has been sent before.
struct FakeQueue {
    latency: Duration,
    outcome: fn(&str, usize) -> EntryOutcome,
    calls: Mutex<Vec<Vec<String>>>,
}

impl FakeQueue {
    fn new(latency: Duration, outcome: fn(&str, usize) -> EntryOutcome) -> Self {
        Self {
            latency,
            outcome,
            calls: Mutex::new(Vec::new()),
        }
    }

    fn calls(&self) -> Vec<Vec<String>> {
        self.calls.lock().expect("not poisoned").clone()
    }
}

impl SendBatch for Arc<FakeQueue> {
    async fn send_batch(
        &self,
        messages: &[&OutgoingMessage],
    ) -> Result<Vec<EntryOutcome>, EntryOutcome> {
        let bodies: Vec<String> = messages.iter().map(|m| m.body.clone()).collect();
        let previous = self
            .calls
            .lock()
            .expect("not poisoned")
            .iter()
            .flatten()
            .fold(Vec::new(), |mut seen, body| {
                seen.push(body.clone());
                seen
            });
        self.calls
            .lock()
            .expect("not poisoned")
            .push(bodies.clone());
        tokio::time::sleep(self.latency).await;
        Ok(bodies
            .iter()
            .map(|body| (self.outcome)(body, previous.iter().filter(|b| *b == body).count()))
            .collect())
    }

    async fn probe(&self) -> bool {
        true
    }
}

fn message(body: &str) -> OutgoingMessage {
    OutgoingMessage {
        event_id: format!("id-{body}"),
        source: "test".into(),
        group_id: "test".into(),
        body: body.into(),
    }
}

fn options(max_in_flight: usize) -> BatchOptions {
    BatchOptions {
        max_entries: 10,
        linger: Duration::ZERO,
        max_in_flight,
        deadline: Duration::from_secs(2),
    }
}

fn accept_all(_: &str, _: usize) -> EntryOutcome {
    EntryOutcome::Accepted
}

fn start(
    queue: &Arc<FakeQueue>,
    options: BatchOptions,
) -> (
    Arc<Batcher<Arc<FakeQueue>>>,
    JoinHandle<()>,
    CancellationToken,
) {
    let close = CancellationToken::new();
    let (batcher, dispatcher) = Batcher::start(Arc::clone(queue), options, close.clone());
    (Arc::new(batcher), dispatcher, close)
}

async fn publish_all(
    batcher: &Arc<Batcher<Arc<FakeQueue>>>,
    bodies: &[String],
) -> Vec<Result<(), PublishError>> {
    let handles: Vec<_> = bodies
        .iter()
        .map(|body| {
            let (batcher, message) = (Arc::clone(batcher), message(body));
            tokio::spawn(async move { batcher.publish(message).await })
        })
        .collect();
    let mut results = Vec::new();
    for handle in handles {
        results.push(handle.await.expect("publish task"));
    }
    results
}

#[tokio::test(start_paused = true)]
async fn a_lone_message_is_sent_at_once_without_waiting_for_a_batch() {
    let queue = Arc::new(FakeQueue::new(Duration::from_millis(10), accept_all));
    let (batcher, _, _) = start(&queue, options(4));
    let started = Instant::now();
    assert_eq!(batcher.publish(message("only")).await, Ok(()));
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(10),
        "only the call's own latency"
    );
    assert_eq!(queue.calls(), vec![vec!["only".to_owned()]]);
}

#[tokio::test(start_paused = true)]
async fn messages_arriving_during_a_call_form_full_batches() {
    let queue = Arc::new(FakeQueue::new(Duration::from_millis(10), accept_all));
    let (batcher, _, _) = start(&queue, options(1));
    let bodies: Vec<String> = (0..41).map(|n| n.to_string()).collect();
    let results = publish_all(&batcher, &bodies).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let sizes: Vec<usize> = queue.calls().iter().map(Vec::len).collect();
    assert_eq!(sizes.iter().sum::<usize>(), 41, "{sizes:?}");
    assert!(sizes.iter().all(|&n| n <= 10), "{sizes:?}");
    assert!(
        sizes.len() <= 6,
        "batches formed while calls were in flight: {sizes:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn batch_max_one_sends_one_call_per_message() {
    let queue = Arc::new(FakeQueue::new(Duration::from_millis(1), accept_all));
    let (batcher, _, _) = start(
        &queue,
        BatchOptions {
            max_entries: 1,
            ..options(2)
        },
    );
    let bodies: Vec<String> = (0..7).map(|n| n.to_string()).collect();
    assert!(
        publish_all(&batcher, &bodies)
            .await
            .iter()
            .all(Result::is_ok)
    );
    assert!(queue.calls().iter().all(|call| call.len() == 1));
    assert_eq!(queue.calls().len(), 7);
}

#[tokio::test(start_paused = true)]
async fn each_request_gets_its_own_entrys_outcome() {
    fn outcome(body: &str, sent_before: usize) -> EntryOutcome {
        match body {
            "reject" => EntryOutcome::Reject,
            "flaky" if sent_before < 2 => EntryOutcome::Retry,
            _ => EntryOutcome::Accepted,
        }
    }
    let queue = Arc::new(FakeQueue::new(Duration::from_millis(5), outcome));
    let (batcher, _, _) = start(&queue, options(1));
    let bodies: Vec<String> = ["ok-1", "reject", "flaky", "ok-2"]
        .map(str::to_owned)
        .to_vec();
    let results = publish_all(&batcher, &bodies).await;
    assert_eq!(results, vec![Ok(()), Err(PublishError), Ok(()), Ok(())]);
    let flaky_sends = queue
        .calls()
        .iter()
        .flatten()
        .filter(|b| *b == "flaky")
        .count();
    assert_eq!(flaky_sends, 3, "retried until accepted");
    let reject_sends = queue
        .calls()
        .iter()
        .flatten()
        .filter(|b| *b == "reject")
        .count();
    assert_eq!(reject_sends, 1, "a rejected entry is not retried");
}

#[tokio::test(start_paused = true)]
async fn an_entry_that_never_passes_fails_at_its_deadline() {
    let queue = Arc::new(FakeQueue::new(Duration::from_millis(5), |_, _| {
        EntryOutcome::Retry
    }));
    let (batcher, _, _) = start(&queue, options(1));
    let started = Instant::now();
    assert_eq!(batcher.publish(message("never")).await, Err(PublishError));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_millis(2100),
        "{waited:?}"
    );
    assert!(queue.calls().len() > 3, "retried with backoff meanwhile");
}

#[tokio::test(start_paused = true)]
async fn batches_stay_within_one_mebibyte() {
    let queue = Arc::new(FakeQueue::new(Duration::from_millis(5), accept_all));
    let (batcher, _, _) = start(&queue, options(1));
    // Occupy the only slot so the three large messages queue up together.
    let blocker = tokio::spawn({
        let batcher = Arc::clone(&batcher);
        async move { batcher.publish(message("blocker")).await }
    });
    tokio::task::yield_now().await;
    let large: Vec<String> = (0..3)
        .map(|n| format!("{n}{}", "x".repeat(400_000)))
        .collect();
    assert!(
        publish_all(&batcher, &large)
            .await
            .iter()
            .all(Result::is_ok)
    );
    assert_eq!(blocker.await.expect("blocker"), Ok(()));
    for call in queue.calls() {
        let bytes: usize = call.iter().map(String::len).sum();
        assert!(bytes <= MAX_MESSAGE_BYTES, "a call carried {bytes} bytes");
    }
}

#[tokio::test(start_paused = true)]
async fn closing_sends_what_was_handed_over_and_refuses_the_rest() {
    let queue = Arc::new(FakeQueue::new(Duration::from_millis(100), accept_all));
    let (batcher, dispatcher, close) = start(&queue, options(1));
    let bodies: Vec<String> = (0..15).map(|n| n.to_string()).collect();
    let waiting = tokio::spawn({
        let batcher = Arc::clone(&batcher);
        async move { publish_all(&batcher, &bodies).await }
    });
    tokio::time::sleep(Duration::from_millis(1)).await;
    close.cancel();
    assert!(waiting.await.expect("publishers").iter().all(Result::is_ok));
    dispatcher.await.expect("dispatcher ends after the flush");
    assert_eq!(batcher.publish(message("late")).await, Err(PublishError));
}
