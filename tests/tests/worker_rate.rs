//! The worker's optional rate limit (MAX_MESSAGES_PER_SECOND), on top of the window.
//! Asserts only a lower bound on the drain time: a slow machine can make the drain longer,
//! never shorter, so the test cannot flake from load.

use std::time::{Duration, Instant};

use e2e_tests::TestStack;

/// Drains `messages` at `per_second` and checks it took at least as long as the rate allows:
/// a full bucket (one second's worth) may go at once, the rest at `per_second`.
async fn assert_rate_kept(name: &str, messages: usize, per_second: u32) {
    let stack = TestStack::new(name).await;
    stack.preload(messages).await;
    let started = Instant::now();
    let worker = stack
        .spawn_worker(&[("MAX_MESSAGES_PER_SECOND", &per_second.to_string())])
        .await;
    stack
        .wait_for_rows(messages as i64, Duration::from_secs(60))
        .await;
    let took = started.elapsed();
    let at_least =
        Duration::from_secs_f64((messages as u32 - per_second) as f64 / f64::from(per_second));
    assert!(
        took >= at_least,
        "{messages} messages at {per_second}/s drained in {took:?}, under {at_least:?}"
    );
    drop(worker);
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_spreads_a_backlog_over_time() {
    assert_rate_kept("rate", 80, 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_below_one_receive_a_second_is_kept_too() {
    // Below 10 a second, governor refused the 10 cells a receive asked for and the refusal
    // was ignored: no limit at all. Now each receive asks for at most the rate.
    assert_rate_kept("rate-low", 20, 4).await;
}
